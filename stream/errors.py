"""Domain: the one error root of the `stream` package and its typed children.

A poison message can never succeed and goes to the DLQ; a transient error may succeed
later and must never be skipped; a fatal error stops the worker at start-up.
"""

from __future__ import annotations


class StreamError(Exception):
    """Root of every error raised on purpose by `stream`."""


class PoisonMessageError(StreamError):
    """An event that can never be processed: it goes to the dead-letter topic.

    Args:
        message: What is wrong, without image bytes or secrets.
        error_class: Stable, low-cardinality class (``truncated``, ``schema``, ...),
            used as a metric label and the ``x-error-class`` DLQ header.
        stage: Where it failed: ``parse``, ``fetch``, ``decode`` or ``infer``.
    """

    def __init__(self, message: str, *, error_class: str, stage: str) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.stage = stage


class TransientError(StreamError):
    """A dependency (Triton, the broker) is unavailable; retry, never skip."""


class FatalError(StreamError):
    """A configuration or deployment problem; the worker must not start."""
