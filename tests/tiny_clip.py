"""Test fixture helper: write a tiny, randomly initialised CLIP checkpoint to disk."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

PROJ_DIM = 32


def _byte_chars() -> list[str]:
    # GPT-2 / CLIP byte-to-unicode table: printable stand-ins for all 256 bytes.
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(extra))]


def _write_tokenizer(directory: Path) -> None:
    # A character-level BPE vocabulary: every word splits into its bytes; enough to
    # exercise the real CLIPTokenizer loading path without any downloaded files.
    chars = _byte_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({f"{c}</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")


def write_tiny_clip(directory: Path, with_text: bool = True, seed: int = 0) -> Path:
    """Save a tiny CLIPModel (safetensors) plus a tokenizer into `directory`."""
    torch.manual_seed(seed)
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=224,
        patch_size=32,
        projection_dim=PROJ_DIM,
    )
    text = CLIPTextConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        vocab_size=514,
        max_position_embeddings=77,
        projection_dim=PROJ_DIM,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
    )
    cfg = CLIPConfig(
        text_config=text.to_dict(),
        vision_config=vision.to_dict(),
        projection_dim=PROJ_DIM,
    )
    model = CLIPModel(cfg).eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    if with_text:
        _write_tokenizer(directory)
    return directory
