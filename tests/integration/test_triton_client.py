"""`TritonDetectorClient` error handling without a server: retries, typed errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from serving.errors import InferenceUnavailableError, InvalidInputError
from serving.local_process import free_port
from serving.triton.client import TritonDetectorClient


async def test_client_retries_unavailable_then_raises_typed_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"127.0.0.1:{free_port()}"  # nothing listens there
    caplog.set_level(logging.WARNING, logger="serving.triton.client")
    async with TritonDetectorClient(
        url, timeout_s=2.0, retries=2, backoff_s=0.01
    ) as client:
        with pytest.raises(InferenceUnavailableError, match="after 3 attempt"):
            await client.embed(np.zeros((1, 224, 224, 3), np.uint8))
    assert sum("retry" in r.getMessage() for r in caplog.records) == 2


async def test_client_model_ready_is_false_when_unreachable() -> None:
    async with TritonDetectorClient(
        f"127.0.0.1:{free_port()}", timeout_s=1.0
    ) as client:
        assert not await client.model_ready("clip_image_encoder")
        with pytest.raises(InferenceUnavailableError, match="not ready"):
            await client.wait_ready(timeout_s=0.5, poll_s=0.1)


async def test_client_rejects_non_arrays_without_a_call() -> None:
    async with TritonDetectorClient(f"127.0.0.1:{free_port()}") as client:
        with pytest.raises(InvalidInputError):
            await client.detect([[1, 2, 3]])  # type: ignore[arg-type]
