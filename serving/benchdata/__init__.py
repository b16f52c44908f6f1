"""Adapter: the offline benchmark of real photos vs images from real neural generators.

``build_benchmark(out, BenchConfig())`` writes
``<out>/<split>/<family>/{0_real,1_fake}/<sha256 prefix>.<png|jpg|webp>`` (split in
train, cal, test; each split a UnivFD-style tree) and ``<out>/bench_manifest.json``.
Families: ``dcgan_faces`` (pretrained DCGAN faces), ``esrgan_x2`` (ESRGAN-slim 2x vs
bicubic 2x), ``ae_tconv`` / ``ae_nnconv`` / ``ae_pixelshuffle`` / ``ae_bilinear`` (autoencoders
trained here, differing only in their up-sampling operator), ``ae_adversarial`` (the
``nnconv`` autoencoder trained against a PatchGAN critic, as latent decoders are), ``diffusion_sdedit`` (a U-Net
denoiser trained here, sampled SDEdit-style from noised real crops), ``vae_latent``
(a VAE trained here: decoder of a sampled latent), ``espcn_x4`` (a sub-pixel 4x
super-resolution net trained here vs bicubic 4x) and three 2x super-resolution nets
trained here, each vs bicubic 2x, one per classic up-sampler: ``srgan_x2``
(transposed convolution, GAN-trained) and, opt-in (not in ``DEFAULT_FAMILIES``),
``vdsr_x2`` (bicubic pre-up-sampling, MSE) and ``resize_conv_x2`` (nearest-neighbour
2x then convolution, L1). Pairs share a format path
(``formats``); the train split is blur/JPEG-augmented (``augment``).
"""

from serving.benchdata.builder import (
    DEFAULT_FAMILIES,
    FAMILIES,
    KNOWN_CONFOUNDS,
    MANIFEST_NAME,
    BenchConfig,
    build_benchmark,
)
from serving.benchdata.photos import (
    SPLITS,
    PhotoRecord,
    discover_photos,
    find_debian_dirs,
)

__all__ = [
    "DEFAULT_FAMILIES",
    "FAMILIES",
    "KNOWN_CONFOUNDS",
    "MANIFEST_NAME",
    "SPLITS",
    "BenchConfig",
    "PhotoRecord",
    "build_benchmark",
    "discover_photos",
    "find_debian_dirs",
]
