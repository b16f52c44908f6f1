"""Domain: where the text of the Santosh et al. image ⊕ text branch comes from.

A text source is recorded in the artifact manifest (``encoder.text_source``) and is
one of:

- ``none``: no text; every head reads image features only (the default, and what
  every artifact written before the text branch has);
- ``caption``: the upload event's ``caption`` (cut to 77 characters by the text
  tower); an image without a caption gets the empty string, never an invented one;
- ``prompt:<text>``: the same fixed text for every image (e.g. ``prompt:a photo``).

`TextSource.texts` turns the captions of a batch into the strings the CLIP text
tower encodes, and `encode_texts` / `encode_distinct` encode them; the in-process
detector, the Triton models and training all call these (numpy only: the Triton
image imports this module).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from serving.encoders.base import TextEncoder
from serving.errors import InvalidInputError

TextKind = Literal["none", "caption", "prompt"]
NONE: Final[TextKind] = "none"
CAPTION: Final[TextKind] = "caption"
PROMPT: Final[TextKind] = "prompt"
PROMPT_PREFIX: Final = f"{PROMPT}:"
# what a ``caption`` source encodes for an image without a caption
MISSING_CAPTION: Final = ""
MAX_PROMPT_CHARS: Final = 1024


@dataclass(frozen=True)
class TextSource:
    """A parsed text source; `str` gives the manifest form back.

    Attributes:
        kind: ``none``, ``caption`` or ``prompt``.
        prompt: The fixed text (``prompt`` only).
    """

    kind: TextKind = NONE
    prompt: str = ""

    @classmethod
    def parse(cls, value: str) -> TextSource:
        """Parse ``none``, ``caption`` or ``prompt:<text>``.

        Raises:
            InvalidInputError: Anything else, or an empty or over-long prompt.
        """
        if value == NONE:
            return cls(NONE)
        if value == CAPTION:
            return cls(CAPTION)
        if value.startswith(PROMPT_PREFIX):
            prompt = value.removeprefix(PROMPT_PREFIX)
            if not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS:
                raise InvalidInputError(
                    f"a prompt text source needs 1-{MAX_PROMPT_CHARS} characters"
                )
            return cls(PROMPT, prompt)
        raise InvalidInputError(
            f"text source {value!r}: use {NONE!r}, {CAPTION!r} or '{PROMPT_PREFIX}<text>'"
        )

    def __str__(self) -> str:
        return f"{PROMPT_PREFIX}{self.prompt}" if self.kind == PROMPT else self.kind

    @property
    def enabled(self) -> bool:
        """Whether heads read text features at all."""
        return self.kind != NONE

    def texts(self, captions: Sequence[str | None]) -> list[str]:
        """The text to encode for each image of a batch.

        Args:
            captions: One caption per image (None: the image has none).

        Returns:
            One string per image: its caption (``""`` when missing) or the prompt.

        Raises:
            InvalidInputError: The source is ``none`` (there is nothing to encode).
        """
        if self.kind == CAPTION:
            return [MISSING_CAPTION if c is None else c for c in captions]
        if self.kind == PROMPT:
            return [self.prompt] * len(captions)
        raise InvalidInputError("text source 'none' has no text to encode")


def encode_texts(
    encoder: TextEncoder, source: TextSource, captions: Sequence[str | None]
) -> npt.NDArray[np.float32]:
    """(n, text_dim) float32 text embeddings of a batch, each distinct text once.

    Args:
        encoder: The CLIP text tower.
        source: Where the text comes from (not ``none``).
        captions: One caption per image (None: none).
    """
    return encode_distinct(encoder, source.texts(captions))


def encode_distinct(
    encoder: TextEncoder, texts: Sequence[str]
) -> npt.NDArray[np.float32]:
    """(n, text_dim) float32 embeddings of `texts`, one text-tower call per text.

    One text per call, as the int8 image encoder runs one image per call: padding a
    batch to its longest text would make a text's embedding depend on its batch-mates
    in the last float digits, and in-process and Triton batches differ. Repeated
    texts (a fixed prompt, missing captions) are encoded once.
    """
    if not texts:
        return np.zeros((0, encoder.info.text_dim), np.float32)
    distinct = {t: encoder.encode_text([t])[0] for t in sorted(set(texts))}
    out: npt.NDArray[np.float32] = np.stack([distinct[t] for t in texts]).astype(
        np.float32, copy=False
    )
    return out
