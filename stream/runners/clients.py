"""Adapter: the aiokafka clients both aiokafka-based runners (worker, learner) open.

One place for the options that make a consumer safe to commit by hand (no
auto-commit, earliest reset, the group timeouts of `KafkaSettings`) and for the
producer that waits for every in-sync replica.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer

from stream.kafka_security import aiokafka_security
from stream.settings import KafkaSettings


def consumer_options(k: KafkaSettings, group_id: str) -> dict[str, Any]:
    """Keyword arguments of an `AIOKafkaConsumer` in group ``group_id``."""
    return {
        "bootstrap_servers": k.bootstrap_servers,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": k.max_partition_fetch_bytes,
        "session_timeout_ms": k.session_timeout_ms,
        "heartbeat_interval_ms": k.heartbeat_interval_ms,
        **aiokafka_security(k),
    }


def producer(k: KafkaSettings) -> AIOKafkaProducer:
    """A producer with ``acks=all`` and the batch / request limits of ``k``."""
    return AIOKafkaProducer(
        bootstrap_servers=k.bootstrap_servers,
        acks="all",
        enable_idempotence=k.enable_idempotence,
        max_batch_size=k.producer_max_batch_bytes,
        max_request_size=k.max_request_bytes,
        **aiokafka_security(k),
    )
