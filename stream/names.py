"""Domain: the single source of the stream's Kafka and metric names.

Topics are dotted and versioned; the consumer group is the service. Metric names
carry the ``synthguard_`` prefix and base units (seconds, events), as the house
style asks; the dashboards and alert rules under ``deploy/`` use exactly these names
(``tests/contract/test_observability_contract.py`` checks them against ``/metrics``).
"""

from __future__ import annotations

from typing import Final

UPLOADS_TOPIC: Final = "synthguard.uploads.v1"
VERDICTS_TOPIC: Final = "synthguard.verdicts.v1"
DLQ_TOPIC: Final = "synthguard.uploads.dlq.v1"
GROUP_ID: Final = "synthguard-worker"
FEEDBACK_TOPIC: Final = "synthguard.feedback.v1"
FEEDBACK_DLQ_TOPIC: Final = "synthguard.feedback.dlq.v1"
LEARNER_GROUP_ID: Final = "synthguard-learner"

SCHEMA_VERSION: Final = 1
# additive, optional changes within a major version: 1.1 added ``Verdict.reasons``,
# 1.2 ``ModelVersions.knn_bank``, 1.3 ``ModelVersions.text_source``
VERDICT_SCHEMA_MINOR: Final = 3

# DLQ headers, Kafka Connect ``__connect.errors.*`` style
HEADER_ERROR_CLASS: Final = "x-error-class"
HEADER_ERROR_MESSAGE: Final = "x-error-message"
HEADER_STAGE: Final = "x-stage"
HEADER_ATTEMPTS: Final = "x-attempts"
HEADER_SOURCE_TOPIC: Final = "x-source-topic"
HEADER_SOURCE_PARTITION: Final = "x-source-partition"
HEADER_SOURCE_OFFSET: Final = "x-source-offset"
HEADER_FAILED_AT: Final = "x-failed-at"
HEADER_SCHEMA_VERSION: Final = "x-schema-version"

PREFIX: Final = "synthguard_"
METRIC_EVENTS_CONSUMED: Final = PREFIX + "events_consumed_total"
METRIC_EVENTS_PROCESSED: Final = PREFIX + "events_processed_total"
METRIC_VERDICTS: Final = PREFIX + "verdicts_total"
METRIC_DLQ: Final = PREFIX + "dlq_events_total"
METRIC_DEDUPE_HITS: Final = PREFIX + "dedupe_hits_total"
METRIC_STAGE_SECONDS: Final = PREFIX + "stage_duration_seconds"
METRIC_END_TO_END_SECONDS: Final = PREFIX + "end_to_end_seconds"
METRIC_BATCH_SIZE: Final = PREFIX + "batch_size_events"
METRIC_INFLIGHT: Final = PREFIX + "inflight_events"
METRIC_LAG: Final = PREFIX + "consumer_lag_events"
METRIC_TRITON_UP: Final = PREFIX + "triton_available"
METRIC_COMMITS: Final = PREFIX + "offset_commits_total"
METRIC_REBALANCES: Final = PREFIX + "rebalances_total"
METRIC_READY: Final = PREFIX + "ready"
METRIC_DETECTOR_FAILURES: Final = PREFIX + "detector_failures_total"
METRIC_MODEL: Final = PREFIX + "model"  # prometheus-client appends ``_info``
METRIC_BUILD: Final = PREFIX + "build"  # -> ``synthguard_build_info``
METRIC_NOVEL_VERDICTS: Final = PREFIX + "novel_verdicts_total"
METRIC_SCORE_DRIFT_PSI: Final = PREFIX + "score_drift_psi"
METRIC_SCORE_DRIFT_WINDOW: Final = PREFIX + "score_drift_window_events"
# the learner's (not the worker's: the worker dashboard contract skips them)
LEARNER_METRIC_FEEDBACK: Final = PREFIX + "feedback_events_total"  # {reviewer, outcome}
LEARNER_METRIC_BANK_ROWS: Final = PREFIX + "feedback_bank_rows"  # {label}
LEARNER_METRIC_BANK_CHECKPOINTS: Final = PREFIX + "feedback_bank_checkpoints_total"

STAGES: Final = ("fetch", "decode", "infer", "publish")
LABELS: Final = ("ai_generated", "real", "uncertain")
OUTCOMES: Final = ("verdict", "dlq")
FEEDBACK_OUTCOMES: Final = ("applied", "duplicate", "rate_limited", "dlq")
