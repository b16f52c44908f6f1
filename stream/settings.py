"""Configuration: the stream worker's settings, read once from ``SYNTHGUARD_*``.

Nested groups use ``__``: ``SYNTHGUARD_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092``,
``SYNTHGUARD_TRITON__URL=127.0.0.1:8001``,
``SYNTHGUARD_FETCH__ALLOWED_HOSTS='["images.example.com"]'`` (lists as JSON). The
defaults suit the embedded Tansu broker; on a real Kafka cluster set
``SYNTHGUARD_KAFKA__ENABLE_IDEMPOTENCE=true`` and
``SYNTHGUARD_KAFKA__PRODUCER_MAX_BATCH_BYTES=16384``, plus the security group
(``SYNTHGUARD_KAFKA__SECURITY_PROTOCOL=SASL_SSL``, ``..._SASL_USERNAME``,
``..._SASL_PASSWORD``, ``..._SSL_CAFILE``) and, on Kubernetes,
``SYNTHGUARD_KAFKA__GROUP_INSTANCE_ID`` from the pod name (static membership).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving.triton import client as triton_client
from stream import names
from stream.decode import DEFAULT_FORMATS
from stream.drift import DEFAULT_MAX_TENANTS, DEFAULT_WINDOW
from stream.fetch import FetchLimits
from stream.pipeline import PipelineConfig

MiB = 1024 * 1024
# The limits' dataclass defaults are the single source of these settings' defaults
_FETCH, _PIPELINE = FetchLimits(), PipelineConfig()


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Group):
    """Broker, topics and client tuning.

    Attributes:
        producer_max_batch_bytes: 16 puts every record in its own batch: Tansu's
            ListOffsets answers the last batch's base offset + 1, so multi-record
            batches break ``end_offsets`` for every later reader.
        enable_idempotence: Off by default because Tansu rejects InitProducerId;
            turn on against real Kafka (then ``acks=all`` is implied).
        partitions: Partitions for topics this service creates (``up``, demo).
        partition_assignor: Group protocol of both runners (``roundrobin`` or
            ``range``). Every member of a group must use the same one, or the
            broker refuses the join (``InconsistentGroupProtocolError``); the faust
            runner supports ``roundrobin`` only.
        session_timeout_ms: How long the group waits for a silent member. 6 s is
            Kafka's smallest accepted (``group.min.session.timeout.ms``); a crashed
            dynamic member holds its partitions that long before a rebalance.
        heartbeat_interval_ms: At most a third of the session timeout.
        group_instance_id: Static group membership (KIP-345), both runners: a
            worker that restarts within the session timeout takes its member's
            place and partitions back without waiting out the dead member.
            Kubernetes sets it to the pod name; None for dynamic. Two live
            workers must never share one (the broker fences the older).
        security_protocol: ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT``, ``SASL_SSL``.
        sasl_mechanism: ``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``.
        sasl_username: SASL user (required with a ``SASL_*`` protocol).
        sasl_password: SASL password (a Secret in Kubernetes; never logged).
        ssl_cafile: CA bundle that signed the brokers' certificates (None: the
            system trust store).
    """

    bootstrap_servers: str = "127.0.0.1:9092"
    uploads_topic: str = names.UPLOADS_TOPIC
    verdicts_topic: str = names.VERDICTS_TOPIC
    dlq_topic: str = names.DLQ_TOPIC
    group_id: str = names.GROUP_ID
    enable_idempotence: bool = False
    producer_max_batch_bytes: int = Field(16, ge=1)
    max_request_bytes: int = Field(4 * MiB, ge=1024)
    max_partition_fetch_bytes: int = Field(4 * MiB, ge=1024)
    session_timeout_ms: int = Field(6_000, ge=1000)
    heartbeat_interval_ms: int = Field(1_000, ge=100)
    rebalance_timeout_ms: int = Field(10_000, ge=1000)
    partitions: int = Field(4, ge=1)
    partition_assignor: Literal["roundrobin", "range"] = "roundrobin"
    group_instance_id: str | None = None
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = (
        "PLAINTEXT"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: SecretStr = SecretStr("")
    ssl_cafile: Path | None = None

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_") and not (
            self.sasl_username and self.sasl_password.get_secret_value()
        ):
            msg = f"{self.security_protocol} needs sasl_username and sasl_password"
            raise ValueError(msg)
        return self


class TritonSettings(_Group):
    """Where Triton listens (gRPC) and how the client retries."""

    url: str = "127.0.0.1:8001"
    timeout_s: float = Field(triton_client.TIMEOUT_S, gt=0)
    retries: int = Field(triton_client.RETRIES, ge=0)
    backoff_s: float = Field(triton_client.BACKOFF_S, gt=0)


class FetchSettings(_Group):
    """Claim-check fetching limits.

    Attributes:
        allowed_hosts: ``https`` hosts to fetch from; ``*.example.com`` matches
            subdomains. Empty: no https fetching.
        file_roots: Directories ``file://`` URIs must lie under; empty: anywhere
            (development). Set it in production.
        allow_file: Whether ``file://`` URIs are accepted at all.
    """

    allowed_hosts: list[str] = Field(default_factory=list)
    file_roots: list[Path] = Field(default_factory=list)
    allow_file: bool = _FETCH.allow_file
    max_bytes: int = Field(_FETCH.max_bytes, ge=1)
    inline_max_bytes: int = Field(_FETCH.inline_max_bytes, ge=1)
    timeout_s: float = Field(_FETCH.timeout_s, gt=0)
    attempts: int = Field(_FETCH.attempts, ge=1)


class DecodeSettings(_Group):
    """Decoder limits against hostile images.

    Attributes:
        max_pixels: Width × height above which an image is a ``decompression_bomb``.
        formats: Pillow format names accepted; GIF is scored on its first frame.
            ``TIFF``, ``BMP``, ``ICO``, ``JPEG2000``, ``AVIF`` are opt-in.
    """

    max_pixels: int = Field(_PIPELINE.decode.max_pixels, ge=1)
    formats: list[str] = Field(default_factory=lambda: list(DEFAULT_FORMATS))


class WorkerSettings(_Group):
    """Batching, backpressure, retries and shutdown.

    Attributes:
        batch_max: Most events per pipeline batch (one Triton call).
        batch_wait_ms: How long a poll waits to fill a batch.
        max_in_flight: Fetched-but-unfinished events above which partitions pause.
        max_concurrent_batches: Batches processed at once (overlaps decode and
            inference).
        drain_timeout_s: How long SIGTERM and revocation wait for in-flight work.
        dedupe_size: LRU entries of content-hash dedupe (0 disables it).
        infer_attempts: Pipeline attempts per batch before reporting a transient
            failure to the runner (which then pauses and retries until Triton is back).
        infer_backoff_s: First delay between those attempts (doubles, capped 2 s).
        outage_poll_s: How often a paused runner probes Triton, and a starting
            one the broker.
    """

    batch_max: int = Field(16, ge=1)
    batch_wait_ms: int = Field(50, ge=0)
    max_in_flight: int = Field(64, ge=1)
    max_concurrent_batches: int = Field(2, ge=1)
    drain_timeout_s: float = Field(20.0, ge=0)
    dedupe_size: int = Field(_PIPELINE.dedupe_size, ge=0)
    infer_attempts: int = Field(_PIPELINE.infer_attempts, ge=1)
    infer_backoff_s: float = Field(_PIPELINE.infer_backoff_s, ge=0)
    outage_poll_s: float = Field(1.0, gt=0)


class MetricsSettings(_Group):
    """The ``/metrics``, ``/healthz``, ``/readyz`` endpoint (port 0: a free port)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)
    # score drift (`stream.drift.DriftMonitor`): verdicts per tenant window, and
    # tenants with their own window (the label's cardinality; the rest: ``other``)
    drift_window: int = Field(DEFAULT_WINDOW, ge=1, le=100_000)
    drift_max_tenants: int = Field(DEFAULT_MAX_TENANTS, ge=0, le=1_000)


class LearnerSettings(_Group):
    """The feedback learner (``synthguard learner``; see ``docs/feedback.md``).

    Attributes:
        feedback_topic: Reviewer feedback (`stream.events.FeedbackEvent`).
        dlq_topic: Bad feedback events, in the uploads' DLQ record shape.
        group_id: The learner's own consumer group.
        artifacts_dir: The served artifacts (manifest: encoder layout, kNN view).
        bank_dir: Where the feedback bank is checkpointed.
        max_rows: Feedback rows kept (oldest evicted first; training rows never).
        reviewer_max_events: Events one reviewer may send per window and
            partition; more go to the DLQ as ``rate_limited``.
        reviewer_window_s: The rate limit's window, on the records' timestamps.
        poll_max_records: Records per poll, and so per checkpoint at most.
    """

    feedback_topic: str = names.FEEDBACK_TOPIC
    dlq_topic: str = names.FEEDBACK_DLQ_TOPIC
    group_id: str = names.LEARNER_GROUP_ID
    artifacts_dir: Path = Path(".synthguard/artifacts")
    bank_dir: Path = Path(".synthguard/feedback_bank")
    max_rows: int = Field(10_000, ge=1)
    reviewer_max_events: int = Field(120, ge=1)
    reviewer_window_s: float = Field(60.0, gt=0)
    poll_max_records: int = Field(64, ge=1)


class StreamSettings(BaseSettings):
    """Everything the worker needs, frozen after reading."""

    model_config = SettingsConfigDict(
        env_prefix="SYNTHGUARD_", env_nested_delimiter="__", frozen=True
    )

    runner: Literal["aiokafka", "faust"] = "aiokafka"
    kafka: KafkaSettings = KafkaSettings()
    triton: TritonSettings = TritonSettings()
    fetch: FetchSettings = FetchSettings()
    decode: DecodeSettings = DecodeSettings()
    worker: WorkerSettings = WorkerSettings()
    metrics: MetricsSettings = MetricsSettings()
    learner: LearnerSettings = LearnerSettings()
