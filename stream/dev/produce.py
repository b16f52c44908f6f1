"""Adapter: publish upload events for image files (``synthguard produce``).

Each file becomes one `UploadEvent` keyed by its ``image_id``: inline base64 when
it fits under the inline cap (``mode="inline"``, or ``"auto"``), else a ``file://``
URI (claim check; the worker must be allowed to read the path).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaProducer

from stream.events import UploadEvent, utc_now

Mode = Literal["auto", "inline", "uri"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass(frozen=True)
class Published:
    """One event sent: its id, file, and when the broker acknowledged it."""

    image_id: str
    path: Path
    acked_at: float


def image_files(paths: Iterable[Path]) -> list[Path]:
    """Files as given; directories walked recursively for image suffixes."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(p)
    return out


def upload_event(
    path: Path,
    mode: Mode = "auto",
    inline_max_bytes: int = 900_000,
    tenant: str = "default",
    image_id: str | None = None,
) -> UploadEvent:
    """The upload event for one file (reads it to hash it)."""
    data = path.read_bytes()
    inline = mode == "inline" or (mode == "auto" and len(data) <= inline_max_bytes)
    source = (
        {"data_b64": base64.b64encode(data).decode("ascii")}
        if inline
        else {"uri": path.resolve().as_uri()}
    )
    return UploadEvent(
        image_id=image_id or uuid.uuid4().hex,
        sha256=hashlib.sha256(data).hexdigest(),
        content_type=_content_type(path),
        tenant=tenant,
        trace_id=uuid.uuid4().hex,
        uploaded_at=utc_now(),
        **source,
    )


def _content_type(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    return "image/jpeg" if suffix in ("jpg", "jpeg") else f"image/{suffix}"


def producer(
    bootstrap: str,
    max_request_bytes: int = 4 * 1024 * 1024,
    security: Mapping[str, Any] | None = None,
) -> AIOKafkaProducer:
    """A producer safe for Tansu: one record per batch, ``acks=all``.

    Args:
        bootstrap: ``host:port`` list.
        max_request_bytes: Largest request the producer sends.
        security: TLS/SASL keyword arguments (`stream.kafka_security`).
    """
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        max_batch_size=16,
        max_request_size=max_request_bytes,
        **(security or {}),
    )


async def publish_files(
    bootstrap: str,
    topic: str,
    paths: Sequence[Path],
    mode: Mode = "auto",
    inline_max_bytes: int = 900_000,
    tenant: str = "default",
    security: Mapping[str, Any] | None = None,
) -> list[Published]:
    """Publish one event per file and wait for every acknowledgement."""
    loop = asyncio.get_running_loop()
    prod = producer(bootstrap, security=security)
    await prod.start()
    try:
        sent = []
        for path in paths:
            event = upload_event(path, mode, inline_max_bytes, tenant)
            fut = await prod.send(
                topic, event.model_dump_json().encode(), key=event.image_id.encode()
            )
            sent.append((event.image_id, path, fut))
        out = []
        for image_id, path, fut in sent:
            await fut
            out.append(Published(image_id, path, loop.time()))
        return out
    finally:
        await prod.stop()
