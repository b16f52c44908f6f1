"""Adapter: an autoencoder whose decoder is trained against a PatchGAN critic.

The decoders of latent generators (VQGAN, the Stable Diffusion VAE) are trained with a
reconstruction loss *plus* an adversarial loss from a patch discriminator, which is
what gives their outputs GAN-like high-frequency texture instead of the smoothness of
a pure reconstruction. This family reproduces that mechanism at small scale: the
``nnconv`` autoencoder of ``autoencoders`` (same encoder and decoder shape), trained
with :func:`autoencoders.reconstruction_loss` for the first ``WARMUP`` of the steps,
then with a hinge adversarial term from a three-layer patch critic added. Seeded,
CPU-only, bounded by the step count; weights (the generator only) saved as
safetensors.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final

import torch
from torch import nn

from serving.benchdata import autoencoders as ae
from serving.benchdata import training as tr
from serving.errors import InvalidInputError
from serving.hashing import sha256_file

UPSAMPLER: Final = "nnconv"
ADV_WEIGHT: Final = 0.02
WARMUP: Final = 0.3
LEARNING_RATE: Final = 2e-3
CRITIC_LEARNING_RATE: Final = 1e-3


class PatchCritic(nn.Module):
    """Three convolutions, 4x down: one realness logit per 4x4 output cell."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(64, 1, 3, padding=1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (n, 1, h/4, w/4) for images in [-0.5, 0.5]."""
        out: torch.Tensor = self.body(x)
        return out


def train_adversarial(
    model: nn.Module,
    pairs: tuple[torch.Tensor, torch.Tensor],
    budget: tuple[int, int],
    seed: int,
) -> float:
    """Train ``model`` (in place) and a fresh critic on (input, target) tensor pairs.

    The generator loss is :func:`autoencoders.reconstruction_loss` of its output
    against the target, plus ``ADV_WEIGHT`` x the hinge generator term after the
    first ``WARMUP`` of the steps; the critic sees targets as real, outputs as fake.

    Args:
        model: the generator, its initial weights already seeded.
        pairs: (inputs, targets), both (n, 3, h, w) in [-0.5, 0.5] (targets may
            be larger than inputs: super-resolution).
        budget: (steps, batch size).
        seed: seeds the critic's weights and the batch order.

    Returns:
        The reconstruction loss of the last batch (the model is left in eval mode).

    Raises:
        InvalidInputError: on an empty budget or no pairs.
    """
    (inputs, targets), (steps, batch) = pairs, budget
    if steps < 1 or batch < 1 or len(inputs) < 1:
        raise InvalidInputError(f"need steps, batch, pairs >= 1; got {budget}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        critic = PatchCritic()
        order = torch.Generator().manual_seed(seed)
        opt_g = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        opt_d = torch.optim.Adam(
            critic.parameters(), lr=CRITIC_LEARNING_RATE, betas=(0.5, 0.9)
        )
        model.train()
        recon = torch.zeros(())
        for step in range(steps):
            idx = torch.randint(0, len(inputs), (batch,), generator=order)
            x, target = inputs[idx], targets[idx]
            y = model(x)
            recon = ae.reconstruction_loss(y, target)
            loss = recon
            if step >= WARMUP * steps:
                d_loss = (
                    torch.relu(1.0 - critic(target)).mean()
                    + torch.relu(1.0 + critic(y.detach())).mean()
                )
                opt_d.zero_grad()
                torch.autograd.backward(d_loss)
                opt_d.step()
                loss = recon - ADV_WEIGHT * critic(y).mean()
            opt_g.zero_grad()
            torch.autograd.backward(loss)
            opt_g.step()
    model.eval()
    return float(recon.detach())


def fit_and_save(
    patches: tuple[tr.UInt8Images, tr.UInt8Images],
    budget: tuple[int, int],
    seed: int,
    path: Path,
) -> tuple[ae.ConvAutoencoder, dict[str, Any]]:
    """Train, save the generator as safetensors and describe it for the manifest.

    Returns:
        The generator and its record: sha256, held-out PSNR, seconds.
    """
    t0 = time.perf_counter()
    train, heldout = patches
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ae.ConvAutoencoder(UPSAMPLER)
    data = tr.to_tensor(train)
    loss = train_adversarial(model, (data, data), budget, seed)
    tr.save_weights(model, path, {"kind": "ae_adversarial", "seed": str(seed)})
    return model, {
        "model_id": f"synthguard/ae_adversarial@seed{seed}",
        "weights_sha256": sha256_file(path),
        "architecture": f"{UPSAMPLER} autoencoder + 3-layer PatchGAN critic (hinge)",
        "adversarial_weight": ADV_WEIGHT,
        "warmup_fraction": WARMUP,
        "steps": budget[0],
        "batch_size": budget[1],
        "final_train_loss": round(loss, 6),
        "train_patches": len(train),
        "psnr_db_heldout": round(ae.psnr_db(model, heldout), 2),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
