"""Adapter: async gRPC client for the SynthGuard Triton models (``tritonclient.grpc.aio``).

The gRPC channel opens on the first call, on the running loop (grpc.aio binds to
it). Batches larger than a model's ``max_batch_size`` are split and sent concurrently;
calls that fail with ``UNAVAILABLE`` (server starting, queue full and rejecting,
connection refused) are retried with exponential backoff. Errors are typed:
``INVALID_ARG`` (wrong shape or dtype) raises `InvalidInputError`, which retrying
cannot fix; everything else, once retries are spent, raises `InferenceUnavailableError`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import numpy as np
import numpy.typing as npt
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from serving.encoders.base import Encoding
from serving.errors import InferenceUnavailableError, InvalidInputError
from serving.scoring.detection import N_EXEMPLARS, Detection
from serving.triton import names

logger = logging.getLogger(__name__)

T = TypeVar("T")
Arrays = dict[str, npt.NDArray[Any]]
_RETRYABLE: Final = ("StatusCode.UNAVAILABLE",)
_INVALID: Final = ("StatusCode.INVALID_ARGUMENT",)
# The call defaults (`stream.settings.TritonSettings` reads them too); two retries
# because the worker's pipeline retries each batch again on top.
TIMEOUT_S: Final = 30.0
RETRIES: Final = 2
BACKOFF_S: Final = 0.2


@dataclass(frozen=True)
class DetectorInfo:
    """What the exporter wrote into the pipeline's config parameters."""

    heads: dict[str, str]
    threshold: float
    uncertain_low: float
    versions: dict[str, Any]
    max_batch_size: int
    score_reference: dict[str, Any] | None = None  # absent from older exports


class TritonDetectorClient:
    """Async client for `names.PIPELINE_MODEL` and `names.ENCODER_MODEL`.

    Args:
        url: gRPC ``host:port``.
        timeout_s: Deadline of each call.
        retries: Extra attempts after an ``UNAVAILABLE`` failure.
        backoff_s: First retry delay; doubles per attempt, capped at 2 s.
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = TIMEOUT_S,
        retries: int = RETRIES,
        backoff_s: float = BACKOFF_S,
    ) -> None:
        self.url, self.timeout_s = url, timeout_s
        self.retries, self.backoff_s = retries, backoff_s
        self._grpc: Any = None
        self._configs: dict[str, dict[str, Any]] = {}

    @property
    def _client(self) -> Any:
        if self._grpc is None:
            self._grpc = grpcclient.InferenceServerClient(self.url)
        return self._grpc

    async def close(self) -> None:
        """Close the channel."""
        if self._grpc is not None:
            await self._grpc.close()
            self._grpc = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def wait_ready(self, timeout_s: float = 60.0, poll_s: float = 0.5) -> None:
        """Wait until the server reports ready.

        Raises:
            InferenceUnavailableError: not ready within `timeout_s`.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            try:
                if await self._client.is_server_ready(client_timeout=self.timeout_s):
                    return
            except InferenceServerException as exc:
                logger.debug("server not ready yet: %s", exc)
            await asyncio.sleep(poll_s)
        raise InferenceUnavailableError(
            f"Triton at {self.url} not ready in {timeout_s} s"
        )

    async def model_ready(self, name: str) -> bool:
        """Whether a model is loaded and ready (False when unreachable)."""
        try:
            return bool(
                await self._client.is_model_ready(name, client_timeout=self.timeout_s)
            )
        except InferenceServerException:
            return False

    async def embed(self, images: npt.NDArray[np.uint8]) -> Encoding:
        """Encode (n, 224, 224, 3) uint8 images: embeddings and per-block CLS tokens."""
        wanted = tuple(t.name for t in names.ENCODER_OUTPUTS)
        out = await self.infer(names.ENCODER_MODEL, images, wanted)
        return Encoding(
            out[names.EMBEDDING.name].astype(np.float32, copy=False),
            out[names.CLS_TOKENS.name].astype(np.float32, copy=False),
        )

    async def detect(
        self,
        images: npt.NDArray[np.uint8],
        captions: Sequence[str | None] | None = None,
    ) -> list[Detection]:
        """One `Detection` per image, as `serving.detector.Detector` gives it.

        Args:
            images: (n, 224, 224, 3) uint8 preprocessed images.
            captions: One caption per image (None: none), sent as the optional
                ``caption`` input; the pipeline reads it only when the artifact's
                text source is ``caption``. None (or all None): not sent at all.

        Raises:
            InvalidInputError: Bad images, or not one caption per image.
        """
        _check_array(images)
        info = await self.detector_info()
        names_out = tuple(t.name for t in names.PIPELINE_OUTPUTS)
        extra = _caption_input(captions, len(images))
        out = await self.infer(names.PIPELINE_MODEL, images, names_out, extra)
        return [_verdict(out, i, info) for i in range(len(images))]

    async def detector_info(self) -> DetectorInfo:
        """Served heads, thresholds and versions from the pipeline's config."""
        config = await self._config(names.PIPELINE_MODEL)
        params = {k: v.get("string_value", "") for k, v in config["parameters"].items()}
        return DetectorInfo(
            heads=json.loads(params[names.PARAM_HEADS]),
            threshold=float(params[names.PARAM_THRESHOLD]),
            uncertain_low=float(params[names.PARAM_UNCERTAIN_LOW]),
            versions=json.loads(params[names.PARAM_VERSIONS]),
            max_batch_size=int(config.get("max_batch_size", 0)),
            score_reference=(
                json.loads(params[names.PARAM_SCORE_REFERENCE])
                if params.get(names.PARAM_SCORE_REFERENCE)
                else None
            ),
        )

    async def infer(
        self,
        model: str,
        images: npt.NDArray[Any],
        outputs: tuple[str, ...],
        extra: Arrays | None = None,
    ) -> Arrays:
        """Send ``images`` as the model's first input, in chunks of its max batch.

        Args:
            model: Model name.
            images: The first input's batch.
            outputs: Output names to return.
            extra: More inputs by name, one row per image (e.g. ``caption``).

        Raises:
            InvalidInputError: not an array, or the server rejected shape/dtype.
            InferenceUnavailableError: the server failed or stayed unavailable.
        """
        _check_array(images)
        max_batch = int((await self._config(model)).get("max_batch_size", 0)) or len(
            images
        )
        inputs = {_input_name(model): images, **(extra or {})}
        chunks = [
            {k: v[i : i + max_batch] for k, v in inputs.items()}
            for i in range(0, len(images), max_batch)
        ]
        parts = await asyncio.gather(
            *(self._infer_chunk(model, c, outputs) for c in chunks)
        )
        return {n: np.concatenate([p[n] for p in parts]) for n in outputs}

    async def _infer_chunk(
        self, model: str, chunk: Arrays, outputs: tuple[str, ...]
    ) -> Arrays:
        async def call() -> Arrays:
            tensors = []
            for name, value in chunk.items():
                tensor = InferInput(
                    name, list(value.shape), np_to_triton_dtype(value.dtype)
                )
                tensor.set_data_from_numpy(np.ascontiguousarray(value))
                tensors.append(tensor)
            result = await self._client.infer(
                model,
                tensors,
                outputs=[InferRequestedOutput(n) for n in outputs],
                client_timeout=self.timeout_s,
            )
            return {n: np.asarray(result.as_numpy(n)) for n in outputs}

        return await self._retrying(call, model)

    async def _config(self, model: str) -> dict[str, Any]:
        if model not in self._configs:

            async def call() -> dict[str, Any]:
                doc = await self._client.get_model_config(
                    model, as_json=True, client_timeout=self.timeout_s
                )
                return dict(doc["config"])

            self._configs[model] = await self._retrying(call, model)
        return self._configs[model]

    async def _retrying(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return await call()
            except InferenceServerException as exc:
                status = str(exc.status())
                if status in _INVALID or exc.status() is None:
                    raise InvalidInputError(f"{what}: {exc.message()}") from exc
                if status not in _RETRYABLE or attempt == self.retries:
                    raise InferenceUnavailableError(
                        f"{what}: {status} after {attempt + 1} attempt(s): {exc.message()}"
                    ) from exc
                logger.warning(
                    "%s: %s, retry %d in %.2f s", what, status, attempt + 1, delay
                )
            await asyncio.sleep(delay)
            delay = min(2 * delay, 2.0)
        raise InferenceUnavailableError(f"{what}: no attempt made (retries < 0)")


def _check_array(images: object) -> None:
    if not isinstance(images, np.ndarray) or images.ndim < 1:
        raise InvalidInputError("images must be a numpy array (n, ...)")


def _caption_input(captions: Sequence[str | None] | None, n: int) -> Arrays | None:
    """The pipeline's optional ``caption`` input, or None when no image has one."""
    if captions is None or all(c is None for c in captions):
        return None
    if len(captions) != n:
        raise InvalidInputError(f"{len(captions)} captions for {n} images")
    column = np.array([[(c or "").encode("utf-8")] for c in captions], dtype=np.object_)
    return {names.CAPTION.name: column}


def _input_name(model: str) -> str:
    inputs, _outputs = names.MODEL_IO[model]
    return inputs[0].name


def _verdict(out: Arrays, i: int, info: DetectorInfo) -> Detection:
    exemplars = [bytes(s).decode("utf-8") for s in out[names.EXEMPLARS.name][i]]
    return Detection(
        label=bytes(out[names.LABEL.name][i, 0]).decode("utf-8"),
        probability=float(out[names.PROBABILITY.name][i, 0]),
        threshold=info.threshold,
        uncertain_low=info.uncertain_low,
        head_scores={
            info.heads[kind]: float(out[names.head_score(kind).name][i, 0])
            for kind in names.HEAD_MODELS
        },
        nearest_exemplars=tuple(exemplars[:N_EXEMPLARS]),
        versions=info.versions,
        reasons=tuple(
            r
            for r in bytes(out[names.REASONS.name][i, 0])
            .decode("utf-8")
            .split(names.REASON_SEPARATOR)
            if r
        ),
        bank_version=bytes(out[names.BANK_VERSION.name][i, 0]).decode("utf-8") or None,
    )
