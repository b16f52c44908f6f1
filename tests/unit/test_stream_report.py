from __future__ import annotations

import math
from pathlib import Path

from stream.dev.report import Arrival, LabelledImage, percentile, summary_text


def _arrival(truth: int, label: str, latency: float) -> Arrival:
    img = LabelledImage(Path(f"{truth}.jpg"), truth, "fam")
    return Arrival("id", img, label, 0.5, latency, 10.0 + latency)


def test_summary_counts_accuracy_and_latency() -> None:
    arrivals = [
        _arrival(1, "ai_generated", 1.0),
        _arrival(0, "real", 2.0),
        _arrival(0, "ai_generated", 3.0),
        _arrival(1, "uncertain", 4.0),
    ]
    sent = [(a.image, 10.0) for a in arrivals]
    text = summary_text(arrivals, sent)
    assert "accuracy on decided verdicts: 66.7 % (2/3)" in text
    assert "counting uncertain as wrong: 50.0 %" in text
    assert "throughput: 1.00 events/s over 4.0 s" in text
    assert "p50 2.50 s" in text
    assert [a.correct for a in arrivals] == [True, True, False, None]


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile([], 50))
