"""Test doubles shipped with the package: a deterministic in-process `Detector`.

`FakeDetector` labels an image by its mean brightness, records every call, can be
switched "down" (every call raises `TransientError`, like Triton stopped) and can
reject chosen images (``INVALID_ARG``-like `PoisonMessageError`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from serving.preprocessing import policy_id
from stream.errors import PoisonMessageError, TransientError
from stream.events import ModelVersions
from stream.ports import Detection, ModelInfo

FAKE_VERSIONS = ModelVersions(
    encoder="fake-encoder",
    policy=policy_id("clip_default"),
    heads="fake:linear_probe",
    calibration="fake@test",
    artifacts="test",
    synthguard="0.0.0",
)


@dataclass
class FakeDetector:
    """In-process `Detector`: ``ai_generated`` when the mean pixel is above 127.

    Attributes:
        down: While True every call raises `TransientError`.
        delay_s: Seconds each `detect` call takes.
        reject: Images for which this returns True make the call fail with
            `PoisonMessageError` (stage ``infer``).
        calls: Batch sizes of the `detect` calls so far.
    """

    down: bool = False
    delay_s: float = 0.0
    reject: Callable[[npt.NDArray[np.uint8]], bool] | None = None
    calls: list[int] = field(default_factory=list)
    policy: str = FAKE_VERSIONS.policy

    async def info(self) -> ModelInfo:
        """Fixed versions; unavailable while down."""
        if self.down:
            raise TransientError("fake detector down")
        return ModelInfo(
            self.policy, FAKE_VERSIONS.model_copy(update={"policy": self.policy})
        )

    async def detect(
        self,
        images: npt.NDArray[np.uint8],
        captions: Sequence[str | None] | None = None,
    ) -> Sequence[Detection]:
        """Score by brightness after `delay_s` (captions are ignored)."""
        if self.down:
            raise TransientError("fake detector down")
        if self.reject is not None and any(self.reject(img) for img in images):
            raise PoisonMessageError(
                "rejected", error_class="invalid_input", stage="infer"
            )
        self.calls.append(len(images))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return [_detection(float(img.mean()) / 255.0) for img in images]

    async def ready(self) -> bool:
        """Up unless `down`."""
        return not self.down

    async def close(self) -> None:
        """Nothing to release."""


def _detection(p: float) -> Detection:
    label = "ai_generated" if p >= 0.5 else "uncertain" if p >= 0.4 else "real"
    return Detection(
        label=label,
        probability=p,
        threshold=0.5,
        uncertain_low=0.4,
        head_scores={"linear_probe": p * 2 - 1},
        nearest_exemplars=("fake 0.9 exemplar-1", "real 0.8 exemplar-2"),
    )


def jpeg_bytes(
    color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 48)
) -> bytes:
    """A small solid-colour JPEG."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def truncated_jpeg() -> bytes:
    """A noisy JPEG cut in the middle of its entropy-coded data."""
    import io

    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    return data[: len(data) // 2]


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims ``width × height`` pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


async def read_topic(
    bootstrap: str,
    topic: str,
    partitions: int,
    until: Callable[[list[Any]], bool],
    timeout_s: float = 60.0,
) -> list[Any]:
    """Read a topic from the beginning (no group) until ``until(records)`` or timeout.

    Returns every ``ConsumerRecord`` read, in arrival order.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        records: list[Any] = []
        while not until(records) and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            records += [r for recs in batches.values() for r in recs]
        return records
    finally:
        await consumer.stop()


async def committed_offsets(
    bootstrap: str, group_id: str, topic: str, partitions: int
) -> dict[int, int | None]:
    """The group's committed position per partition (``consumer.committed``)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id)
    await consumer.start()
    try:
        return {
            p: await consumer.committed(TopicPartition(topic, p))
            for p in range(partitions)
        }
    finally:
        await consumer.stop()
