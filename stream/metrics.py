"""Adapter: Prometheus metrics of the worker on an injected `CollectorRegistry`.

Names come from `stream.names` (``synthguard_`` prefix, base units: seconds and
events); labels are bounded (stage, label, error class, topic, partition, and the
drift gauges' tenant, capped by `stream.drift.DriftMonitor` with an ``other``
bucket): never an image id or URI.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from serving import __version__
from serving.scoring.drift import ScoreReference
from serving.scoring.novelty import REASON_NOVEL
from stream import names
from stream.drift import DEFAULT_MAX_TENANTS, DEFAULT_WINDOW, DriftMonitor
from stream.events import ModelVersions, Verdict
from stream.records import Failure, Outcome

STAGE_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
)  # fmt: skip
E2E_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class StreamMetrics:
    """Every metric the worker exports.

    Args:
        registry: Where to register (a fresh one per test; the default per process).
        drift_window: Verdicts per tenant in a drift window.
        drift_max_tenants: Tenants with their own drift window.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        drift_window: int = DEFAULT_WINDOW,
        drift_max_tenants: int = DEFAULT_MAX_TENANTS,
    ) -> None:
        self.registry = registry
        self._drift_shape = (drift_window, drift_max_tenants)
        self._counters(registry)
        self._distributions(registry)
        self._drift(registry)
        self.drift_monitor: DriftMonitor | None = None
        # known label values start at 0, so rate() sees the first increase
        for outcome in names.OUTCOMES:
            self.processed.labels(outcome)
        for label in names.LABELS:
            self.verdicts.labels(label)
        for stage in names.STAGES:
            self.stage_seconds.labels(stage)

    def _counters(self, r: CollectorRegistry) -> None:
        self.consumed = Counter(
            names.METRIC_EVENTS_CONSUMED, "Events read", ["topic"], registry=r
        )
        self.processed = Counter(
            names.METRIC_EVENTS_PROCESSED,
            "Events finished, by outcome (verdict or dlq)",
            ["outcome"],
            registry=r,
        )
        self.verdicts = Counter(
            names.METRIC_VERDICTS, "Verdicts published", ["label"], registry=r
        )
        self.dlq = Counter(
            names.METRIC_DLQ, "DLQ records", ["error_class", "stage"], registry=r
        )
        self.dedupe_hits = Counter(
            names.METRIC_DEDUPE_HITS, "Verdicts served from the hash cache", registry=r
        )
        self.commits = Counter(
            names.METRIC_COMMITS, "Offset commits acknowledged", registry=r
        )
        self.rebalances = Counter(
            names.METRIC_REBALANCES, "Partition revocations", registry=r
        )
        self.detector_failures = Counter(
            names.METRIC_DETECTOR_FAILURES,
            "Detector (Triton) calls that failed; the batch is held and retried",
            ["error_class"],
            registry=r,
        )
        self.model = Info(names.METRIC_MODEL, "Served model versions", registry=r)
        self.build = Info(names.METRIC_BUILD, "Worker code version", registry=r)
        self.build.info({"version": __version__})

    def _distributions(self, r: CollectorRegistry) -> None:
        self.stage_seconds = Histogram(
            names.METRIC_STAGE_SECONDS,
            "Seconds per stage (fetch, decode per event; infer, publish per batch)",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.end_to_end = Histogram(
            names.METRIC_END_TO_END_SECONDS,
            "Seconds from the record's timestamp to its verdict or DLQ delivery",
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            names.METRIC_BATCH_SIZE,
            "Events per pipeline batch",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            names.METRIC_INFLIGHT, "Fetched events not yet delivered", registry=r
        )
        self.lag = Gauge(
            names.METRIC_LAG,
            "Fetch highwater minus position",
            ["topic", "partition"],
            registry=r,
        )
        self.triton_up = Gauge(
            names.METRIC_TRITON_UP, "1 when the detector answers", registry=r
        )
        self.ready = Gauge(
            names.METRIC_READY,
            "1 when the worker's readiness holds (evaluated at each scrape)",
            registry=r,
        )

    def _drift(self, r: CollectorRegistry) -> None:
        self.novel_verdicts = Counter(
            names.METRIC_NOVEL_VERDICTS,
            "Verdicts answered uncertain because the image is unlike both kNN banks",
            registry=r,
        )
        self.drift_psi = Gauge(
            names.METRIC_SCORE_DRIFT_PSI,
            "PSI of the tenant's recent decision probabilities vs the calibration split",
            ["tenant"],
            registry=r,
        )
        self.drift_window = Gauge(
            names.METRIC_SCORE_DRIFT_WINDOW,
            "Verdicts in the tenant's drift window",
            ["tenant"],
            registry=r,
        )

    def set_model(
        self, versions: ModelVersions, reference: ScoreReference | None = None
    ) -> None:
        """Publish the served model's versions; start drift windows if it has a reference."""
        self.model.info(versions.model_dump())
        if reference is not None and (
            self.drift_monitor is None or self.drift_monitor.reference != reference
        ):
            self.drift_monitor = DriftMonitor(reference, *self._drift_shape)

    def observe_batch(
        self, outcomes: Sequence[Outcome], timestamps_ms: Sequence[int | None]
    ) -> None:
        """Record one delivered batch (outcomes and their record timestamps)."""
        self.batch_size.observe(len(outcomes))
        now_ms = time.time() * 1000.0
        inferred = False
        tenants: set[str] = set()
        for outcome, ts in zip(outcomes, timestamps_ms, strict=True):
            if ts is not None:
                self.end_to_end.observe(max(0.0, now_ms - ts) / 1000.0)
            if isinstance(outcome, Failure):
                self.processed.labels("dlq").inc()
                self.dlq.labels(outcome.error_class, outcome.stage).inc()
                continue
            self._verdict(outcome)
            if self.drift_monitor is not None:
                tenants.add(
                    self.drift_monitor.observe(outcome.tenant, outcome.probability)
                )
            inferred = inferred or not outcome.cached
        self._export_drift(tenants)
        if inferred:
            infer_s = max(o.timings.infer_s for o in outcomes if isinstance(o, Verdict))
            self.stage_seconds.labels("infer").observe(infer_s)

    def _verdict(self, v: Verdict) -> None:
        self.processed.labels("verdict").inc()
        self.verdicts.labels(v.label).inc()
        if REASON_NOVEL in v.reasons:
            self.novel_verdicts.inc()
        self.stage_seconds.labels("fetch").observe(v.timings.fetch_s)
        if v.cached:
            self.dedupe_hits.inc()
        else:
            self.stage_seconds.labels("decode").observe(v.timings.decode_s)

    def _export_drift(self, tenants: set[str]) -> None:
        if self.drift_monitor is None:
            return
        for d in self.drift_monitor.drift(tenants):
            self.drift_psi.labels(d.tenant).set(d.psi)
            self.drift_window.labels(d.tenant).set(d.window_events)
