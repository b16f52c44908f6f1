"""Application: the stream demo's live lines and final summary (pure formatting).

Accuracy counts a verdict right when ``ai_generated`` meets a fake or ``real`` meets
a real; ``uncertain`` is reported apart (neither right nor wrong) and also folded
into a stricter accuracy that counts it as wrong.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.events import Verdict

TRUTH = {0: "real", 1: "ai_generated"}


@dataclass(frozen=True)
class LabelledImage:
    """A benchmark image with its known label (1 = AI-generated) and family."""

    path: Path
    label: int
    family: str


@dataclass(frozen=True)
class Arrival:
    """A verdict (or DLQ record) received for a published image."""

    image_id: str
    image: LabelledImage
    label: str  # a verdict label, or "dlq"
    probability: float
    latency_s: float
    received_at: float
    detail: str = ""

    @classmethod
    def from_record(
        cls,
        value: bytes,
        key: bytes | None,
        is_verdict: bool,
        by_id: dict[str, tuple[LabelledImage, float]],
        now: float,
    ) -> Arrival | None:
        """Parse a verdict or a DLQ record; None when not one of ours."""
        label: str
        if is_verdict:
            v = Verdict.model_validate_json(value)
            image_id, label, prob = v.image_id, v.label, v.probability
            detail = "cached" if v.cached else ""
        else:
            image_id = (key or b"").decode(errors="replace")
            label, prob, detail = "dlq", float("nan"), _dlq_id(value)
        if image_id not in by_id:
            return None
        image, sent_at = by_id[image_id]
        return cls(image_id, image, label, prob, now - sent_at, now, detail)

    @property
    def correct(self) -> bool | None:
        """Right, wrong, or None for ``uncertain`` / DLQ."""
        if self.label not in ("ai_generated", "real"):
            return None
        return self.label == TRUTH[self.image.label]

    def line(self) -> str:
        """One live line for the terminal."""
        mark = {True: "ok ", False: "XX ", None: " ? "}[self.correct]
        return (
            f"{mark} {TRUTH[self.image.label]:>12} -> {self.label:<12} "
            f"p={self.probability:5.3f} {self.latency_s * 1000:7.0f} ms  "
            f"{self.image.family}/{self.image.path.name} {self.detail}"
        )


def _dlq_id(value: bytes) -> str:
    try:
        return str(json.loads(value).get("image_id", ""))
    except (ValueError, AttributeError):
        return ""


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (linear interpolation); NaN for no values."""
    return float(np.percentile(values, q)) if values else float("nan")


def summary_text(
    arrivals: Sequence[Arrival], sent: Sequence[tuple[LabelledImage, float]]
) -> str:
    """The Markdown summary printed at the end of the demo."""
    labels = Counter(a.label for a in arrivals)
    truth = Counter(TRUTH[img.label] for img, _t in sent)
    decided = [a for a in arrivals if a.correct is not None]
    right = sum(1 for a in decided if a.correct)
    latencies = [a.latency_s for a in arrivals]
    first_sent = min((t for _img, t in sent), default=0.0)
    last = max((a.received_at for a in arrivals), default=first_sent)
    span = max(last - first_sent, 1e-9)
    lines = [
        "",
        "## Stream demo summary",
        "",
        f"- events: {len(sent)} ({truth['real']} real, {truth['ai_generated']} "
        f"AI-generated); answered: {len(arrivals)}; missing: {len(sent) - len(arrivals)}",
        "- labels: " + " · ".join(f"{k} {v}" for k, v in sorted(labels.items())),
        f"- accuracy on decided verdicts: {_pct(right, len(decided))} "
        f"({right}/{len(decided)}); counting uncertain as wrong: "
        f"{_pct(right, len(arrivals))}",
        f"- throughput: {len(arrivals) / span:.2f} events/s over {span:.1f} s",
        f"- event→verdict latency: p50 {percentile(latencies, 50):.2f} s, "
        f"p99 {percentile(latencies, 99):.2f} s",
        "",
    ]
    return "\n".join(lines)


def _pct(num: int, den: int) -> str:
    return f"{100.0 * num / den:.1f} %" if den else "n/a"
