"""Application: feedback events in, rows of the feedback kNN bank out.

Independent of Kafka: parse (`stream.events.parse_feedback`) → per-reviewer rate
limit → fetch (`stream.fetch.Fetcher`, the worker's limits) → sha256 check → decode
and preprocess (`stream.pipeline.decode_and_preprocess`, the worker's limits and the
artifact's policy) → encode (a `RowEncoder`, Triton's encoder model in production)
→ `serving.feedback_bank.FeedbackBank.apply`. A bad event is a `Failure` (the
uploads' DLQ record shape); an unavailable encoder raises `TransientError`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge

from serving.errors import InvalidInputError
from serving.feedback_bank import Applied, FeedbackBank, FeedbackRecord
from serving.preprocessing import PolicyFn, get_policy
from stream import names
from stream.decode import DecodeLimits
from stream.errors import FatalError, PoisonMessageError
from stream.events import FeedbackEvent, parse_feedback
from stream.fetch import Fetcher
from stream.pipeline import decode_and_preprocess
from stream.records import Failure, Incoming

logger = logging.getLogger(__name__)
MAX_REVIEWER_LABELS: Final = 256  # metric label values; later reviewers: ``other``


class RowEncoder(Protocol):
    """Encodes preprocessed images into the kNN head's feature rows."""

    async def rows(self, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """(n, 224, 224, 3) uint8 to (n, d) float32 rows."""
        ...


@dataclass
class ReviewerRateLimit:
    """At most ``max_events`` per reviewer, partition and window of record time.

    Windows are fixed and keyed by the records' timestamps, so a replay of the
    topic admits exactly what the first pass admitted (per partition, because
    partitions interleave differently on every run).
    """

    max_events: int
    window_ms: int
    _counts: dict[tuple[str, int, int], int] = field(default_factory=dict)

    def admit(self, reviewer: str, partition: int, timestamp_ms: int) -> bool:
        """Count one event; False when the reviewer is over the limit."""
        window = timestamp_ms // self.window_ms
        key = (reviewer, partition, window)
        self._counts = {k: v for k, v in self._counts.items() if k[2] >= window - 1}
        self._counts[key] = self._counts.get(key, 0) + 1
        return self._counts[key] <= self.max_events

    def state(self) -> list[list[str | int]]:
        """The open windows' counts as JSON rows ``[reviewer, partition, window, n]``.

        Checkpointed with the bank's offsets (`FeedbackBank.admission`): without
        it a restart mid-window would start the reviewer's count at zero and admit
        what a replay from offset 0 rejects.
        """
        return [[r, p, w, n] for (r, p, w), n in sorted(self._counts.items())]

    def restore(self, rows: list[Any]) -> None:
        """Resume from `state` rows (a checkpoint's).

        Raises:
            FatalError: rows not of the `state` shape.
        """
        try:
            self._counts = {(str(r), int(p), int(w)): int(n) for r, p, w, n in rows}
        except (TypeError, ValueError) as exc:
            raise FatalError(
                f"bad rate-limit state in the bank checkpoint: {exc}"
            ) from exc


class LearnerMetrics:
    """The learner's Prometheus metrics (names in `stream.names`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events = Counter(
            names.LEARNER_METRIC_FEEDBACK.removesuffix("_total"),
            "Feedback events by reviewer and outcome",
            ["reviewer", "outcome"],
            registry=registry,
        )
        self.rows = Gauge(
            names.LEARNER_METRIC_BANK_ROWS,
            "Rows in the feedback kNN bank",
            ["label"],
            registry=registry,
        )
        self.checkpoints = Counter(
            names.LEARNER_METRIC_BANK_CHECKPOINTS.removesuffix("_total"),
            "Durable feedback bank checkpoints",
            registry=registry,
        )
        self._reviewers: set[str] = set()

    def count(self, reviewer: str, outcome: str) -> None:
        """Count one event; reviewers beyond the cap share the ``other`` label."""
        if reviewer not in self._reviewers and len(self._reviewers) < (
            MAX_REVIEWER_LABELS
        ):
            self._reviewers.add(reviewer)
        label = reviewer if reviewer in self._reviewers else "other"
        self.events.labels(label, outcome).inc()


@dataclass
class Learner:
    """Applies feedback records to a `FeedbackBank`; see the module doc."""

    bank: FeedbackBank
    encoder: RowEncoder
    policy: PolicyFn
    limit: ReviewerRateLimit
    metrics: LearnerMetrics
    fetcher: Fetcher = field(default_factory=Fetcher)
    decode: DecodeLimits = field(default_factory=DecodeLimits)

    @classmethod
    def policy_of(cls, policy: str) -> PolicyFn:
        """The preprocessing function of a versioned policy id.

        Raises:
            FatalError: unknown policy.
        """
        try:
            return get_policy(policy.split("@", 1)[0])
        except InvalidInputError as exc:
            raise FatalError(f"learner needs policy {policy}: {exc}") from exc

    async def handle(self, incoming: Incoming) -> Applied | Failure:
        """Apply one record, or say why it goes to the DLQ.

        Raises:
            TransientError: the encoder stayed unavailable (nothing was applied).
        """
        src = incoming.source
        if src.offset <= self.bank.offsets.get(src.partition, -1):
            return "stale"
        try:
            event = parse_feedback(incoming.payload)
        except PoisonMessageError as exc:
            return self._failed(incoming, "unknown", exc)
        ts_ms = incoming.timestamp_ms or 0
        if not self.limit.admit(event.reviewer, src.partition, ts_ms):
            self.bank.skip(src.partition, src.offset)
            self.metrics.count(event.reviewer, "rate_limited")
            return Failure(incoming, "rate_limited", "pipeline", event.reviewer)
        try:
            row = await self._row(event)
        except PoisonMessageError as exc:
            return self._failed(incoming, event.reviewer, exc)
        age_us = int(event.decided_at.timestamp() * 1_000_000)
        if incoming.timestamp_ms is not None:  # never younger than the log says
            age_us = min(age_us, incoming.timestamp_ms * 1000)
        outcome = self.bank.apply(
            FeedbackRecord(
                src.partition,
                src.offset,
                event.content_sha256,
                event.label,
                age_us,
                row,
            )
        )
        self.metrics.count(
            event.reviewer, "applied" if outcome != "duplicate" else outcome
        )
        return outcome

    def _failed(
        self, incoming: Incoming, reviewer: str, exc: PoisonMessageError
    ) -> Failure:
        self.bank.skip(incoming.source.partition, incoming.source.offset)
        self.metrics.count(reviewer, "dlq")
        return Failure(incoming, exc.error_class, exc.stage, str(exc))

    async def _row(self, event: FeedbackEvent) -> npt.NDArray[np.float32]:
        data = await self.fetcher.fetch(event)
        if hashlib.sha256(data).hexdigest() != event.content_sha256:
            raise PoisonMessageError(
                "content_sha256 mismatch",
                error_class="checksum_mismatch",
                stage="fetch",
            )
        pixels = await asyncio.to_thread(
            decode_and_preprocess, data, self.decode, self.policy
        )
        # one image per call: a row must not depend on its batch (bit-identical replay)
        rows = await self.encoder.rows(pixels[None])
        return np.asarray(rows[0], dtype=np.float32)

    def checkpoint(self, directory: Path) -> str:
        """Save the bank durably; returns its version."""
        self.bank.admission = self.limit.state()
        version = self.bank.save(directory)
        self.metrics.checkpoints.inc()
        for label, n in self.bank.counts().items():
            self.metrics.rows.labels(label).set(n)
        return version
