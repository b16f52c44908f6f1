"""Adapter: a Hugging Face CLIP checkpoint on local disk (e.g. ``openai/clip-vit-large-patch14``).

Loads from a directory only (no hub access) and only from safetensors. When the
directory holds a full ``CLIPModel`` (image and text towers, plus a tokenizer), text
features are available too; a ``CLIPVisionModelWithProjection`` directory gives images
only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from serving.encoders.base import EncoderInfo, Encoding
from serving.encoders.layer_graph import DEFAULT_TOKEN, Token
from serving.errors import InvalidInputError, MissingWeightsError
from serving.hashing import sha256_file, sha256_strings
from serving.preprocessing import SIZE, normalize

CLIP_CONTEXT_TOKENS = 77
TEXT_MAX_CHARS = 77  # Santosh et al. cut captions to 77 characters before tokenising


def weights_sha256(directory: Path) -> str:
    """sha256 over the directory's ``*.safetensors`` files (name and content)."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise MissingWeightsError(
            f"no *.safetensors weights in {directory}; export the checkpoint with "
            "`save_pretrained(dir, safe_serialization=True)` (pickled .bin is refused)"
        )
    return sha256_strings(f"{f.name}:{sha256_file(f)}" for f in files)


class HfClipEncoder:
    """CLIP from a local Hugging Face directory, run with torch on the CPU.

    Args:
        directory: Directory with ``config.json`` and ``*.safetensors``.
        batch_size: Images per forward pass.
        threads: torch intra-op threads (None keeps torch's default).
        token: CLS token per block: ``residual`` (``output_hidden_states``) or
            ``ln_2`` (forward hooks on each block's ``layer_norm2``, as RINE).
    """

    def __init__(
        self,
        directory: Path,
        batch_size: int = 16,
        threads: int | None = None,
        token: Token = DEFAULT_TOKEN,
    ) -> None:
        import torch  # heavy imports, deferred to construction
        from transformers import CLIPModel, CLIPVisionModelWithProjection

        config_path = directory / "config.json"
        if not config_path.is_file():
            raise MissingWeightsError(
                f"{config_path} not found: point SYNTHGUARD_HF_CLIP_DIR (or --hf-clip-dir) "
                "at a CLIP directory downloaded with `huggingface-cli download "
                "openai/clip-vit-large-patch14 --local-dir DIR`"
            )
        if threads:
            torch.set_num_threads(threads)
        sha = weights_sha256(directory)
        model_type = json.loads(config_path.read_text()).get("model_type", "")
        self._full = model_type == "clip"
        cls = CLIPModel if self._full else CLIPVisionModelWithProjection
        # Typed as Any: the two model classes share the calls we use but no base type.
        self._model: Any = cast(
            Any,
            cls.from_pretrained(directory, use_safetensors=True, local_files_only=True),
        )
        self._model.eval()
        self._tokenizer = self._load_tokenizer(directory) if self._full else None
        proj_dim = int(self._model.config.projection_dim)
        text_dim = proj_dim if self._tokenizer is not None else 0
        self._batch_size = batch_size
        vision_cfg = getattr(self._model.config, "vision_config", self._model.config)
        self._info = EncoderInfo(
            encoder_id=f"hf-clip:{directory.name}",
            weights_sha256=sha,
            embed_dim=proj_dim,
            text_dim=text_dim,
            n_blocks=int(vision_cfg.num_hidden_layers),
            block_dim=int(vision_cfg.hidden_size),
            token=token,
        )

    @staticmethod
    def _load_tokenizer(directory: Path) -> object | None:
        from transformers import CLIPTokenizer

        if not (directory / "vocab.json").is_file():
            return None
        tokenizer: object = CLIPTokenizer.from_pretrained(
            directory, local_files_only=True
        )
        return tokenizer

    @property
    def info(self) -> EncoderInfo:
        """Identity and dimensions of this encoder."""
        return self._info

    @property
    def text_tower(self) -> str:
        """Name of the text tower, or ``none``."""
        return "clip_text_tower" if self._tokenizer is not None else "none"

    def encode(self, pixels: npt.NDArray[np.uint8]) -> Encoding:
        """Encode (n, 224, 224, 3) uint8 images: embeddings and per-block CLS tokens."""
        import torch

        if pixels.ndim != 4 or pixels.shape[1:] != (SIZE, SIZE, 3):
            raise InvalidInputError(
                f"expected (n, 224, 224, 3) uint8, got {pixels.shape}"
            )
        embs: list[npt.NDArray[np.float32]] = []
        blocks: list[npt.NDArray[np.float32]] = []
        with torch.inference_mode():
            for i in range(0, len(pixels), self._batch_size):
                x = torch.from_numpy(normalize(pixels[i : i + self._batch_size]))
                emb, cls = self._forward(x)
                embs.append(emb)
                blocks.append(cls)
        info = self._info
        if not embs:
            return Encoding(
                np.zeros((0, info.embed_dim), np.float32),
                np.zeros((0, info.n_blocks, info.block_dim), np.float32),
            )
        return Encoding(np.concatenate(embs), np.concatenate(blocks))

    def _forward(
        self, x: Any
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        vision = self._model.vision_model
        captured: list[Any] = []
        hooks = []
        if self._info.token == "ln_2":
            hooks = [
                layer.layer_norm2.register_forward_hook(
                    lambda _m, _i, out: captured.append(out[:, 0])
                )
                for layer in vision.encoder.layers
            ]
        try:
            out = vision(pixel_values=x, output_hidden_states=True)
        finally:
            for hook in hooks:
                hook.remove()
        if self._info.token != "ln_2":
            # hidden_states[0] is the embedding output; [i + 1] is block i's output
            captured = [h[:, 0] for h in out.hidden_states[1:]]
        # both model classes project the pooled (post-LayerNorm) CLS the same way
        emb = self._model.visual_projection(out.pooler_output)
        cls = np.stack([_as_numpy(c) for c in captured], axis=1)
        return _as_numpy(emb), cls

    def encode_text(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Encode captions with the CLIP text tower (cut to 77 characters first)."""
        import torch

        if self._tokenizer is None:
            raise MissingWeightsError(
                f"{self._info.encoder_id} has no text tower/tokenizer"
            )
        clipped = [t[:TEXT_MAX_CHARS] for t in texts]
        tok = self._tokenizer(  # type: ignore[operator]
            clipped,
            padding=True,
            truncation=True,
            max_length=CLIP_CONTEXT_TOKENS,
            return_tensors="pt",
        )
        with torch.inference_mode():
            emb = self._model.get_text_features(**tok)
        return _as_numpy(emb)


def _as_numpy(t: object) -> npt.NDArray[np.float32]:
    # transformers 5 may wrap outputs; the pooled tensor is what we need.
    tensor = getattr(t, "pooler_output", t)
    return np.asarray(tensor.detach().cpu().numpy(), dtype=np.float32)  # type: ignore[attr-defined]
