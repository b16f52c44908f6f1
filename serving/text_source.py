"""Domain: where the text of the Santosh et al. image ⊕ text branch comes from.

A text source is recorded in the artifact manifest (``encoder.text_source``) and is
one of:

- ``none``: no text; every head reads image features only (the default, and what
  every artifact written before the text branch has);
- ``caption``: the upload event's ``caption`` (cut to 77 characters by the text
  tower); an image without a caption gets the empty string, never an invented one;
- ``prompt:<text>``: the same fixed text for every image (e.g. ``prompt:a photo``).

`TextSource.texts` turns the captions of a batch into the strings the CLIP text
tower encodes; the in-process detector, the Triton pipeline and training all call it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

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
