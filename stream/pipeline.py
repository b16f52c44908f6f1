"""Application: upload events in, a `Verdict` or a `Failure` out for every one.

Independent of Kafka: parse → fetch → hash (dedupe) → decode → preprocess with the
manifest's policy → one detector call per batch → verdict. When the served
artifact's text source is ``caption`` (`ModelVersions.text_source`), each event's
caption goes to the detector with its image and is part of the dedupe key. Failures are data
(`Failure`, the DLQ record's content); only a detector that stays unavailable
raises, as `TransientError`, so the runner stops committing and retries the batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from serving.errors import InvalidInputError
from serving.preprocessing import PolicyFn, get_policy, policy_id
from serving.text_source import CAPTION
from stream.decode import DecodeLimits, decode_image
from stream.errors import FatalError, PoisonMessageError, TransientError
from stream.events import (
    Exemplar,
    StageTimings,
    UploadEvent,
    Verdict,
    utc_now,
)
from stream.fetch import Fetcher, FetchLimits
from stream.ports import Detection, Detector, ModelInfo
from stream.records import Failure, Incoming, Outcome

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineConfig:
    """Limits, dedupe and retry settings."""

    fetch: FetchLimits = field(default_factory=FetchLimits)
    decode: DecodeLimits = field(default_factory=DecodeLimits)
    dedupe_size: int = 4096
    infer_attempts: int = 3
    infer_backoff_s: float = 0.5


@dataclass
class _Prepared:
    incoming: Incoming
    event: UploadEvent
    sha256: str
    key: str  # dedupe key: the content sha256 (+ the caption's, when read)
    pixels: npt.NDArray[np.uint8] | None
    timings: dict[str, float]


_Job = tuple[npt.NDArray[np.uint8], str | None]  # pixels and caption


def resolve_policy(model: ModelInfo) -> PolicyFn:
    """The preprocessing function the served heads were trained with.

    Raises:
        FatalError: unknown policy, or this code's version of it differs.
    """
    name = model.policy.split("@", 1)[0]
    try:
        fn, current = get_policy(name), policy_id(name)
    except InvalidInputError as exc:
        raise FatalError(f"served model needs policy {model.policy}: {exc}") from exc
    if current != model.policy:
        raise FatalError(f"served model needs {model.policy}, this code has {current}")
    return fn


def parse_exemplar(text: str) -> Exemplar:
    """``"<bank> <cosine> <id>"`` (the kNN head's format) as an `Exemplar`."""
    parts = text.split(maxsplit=2)
    if len(parts) == 3:
        try:
            return Exemplar(bank=parts[0], similarity=float(parts[1]), id=parts[2])
        except ValueError:
            pass
    return Exemplar(bank="unknown", similarity=None, id=text)


def decode_and_preprocess(
    data: bytes, limits: DecodeLimits, policy: PolicyFn
) -> npt.NDArray[np.uint8]:
    """The worker's decode + preprocess step: encoded bytes to the model's pixels.

    Memory stays bounded for any accepted image (see `serving.preprocessing`).

    Args:
        data: The encoded image.
        limits: Decoder limits.
        policy: The served model's preprocessing policy.

    Returns:
        (224, 224, 3) uint8 RGB pixels.

    Raises:
        PoisonMessageError: undecodable (see `stream.decode`), or the policy fails
            on the decoded image (``corrupt``).
    """
    img = decode_image(data, limits)
    try:
        return policy(img)
    except (OSError, ValueError, InvalidInputError) as exc:
        raise PoisonMessageError(
            f"preprocessing failed: {exc}", error_class="corrupt", stage="decode"
        ) from exc


class Pipeline:
    """Turns batches of `Incoming` records into outcomes; see the module doc."""

    def __init__(
        self,
        detector: Detector,
        model: ModelInfo,
        config: PipelineConfig | None = None,
        fetcher: Fetcher | None = None,
    ) -> None:
        self.detector, self.model = detector, model
        self.config = config or PipelineConfig()
        self.fetcher = fetcher or Fetcher(self.config.fetch)
        self._policy = resolve_policy(model)
        self._captions = model.versions.text_source == CAPTION
        self._cache: OrderedDict[str, Detection] = OrderedDict()

    @classmethod
    async def create(
        cls, detector: Detector, config: PipelineConfig | None = None
    ) -> Pipeline:
        """Ask the detector what it serves, check the policy, build the pipeline."""
        return cls(detector, await detector.info(), config)

    async def handle_batch(self, batch: Sequence[Incoming]) -> list[Outcome]:
        """One outcome per record, in order.

        Raises:
            TransientError: the detector stayed unavailable for every attempt.
        """
        t0 = time.perf_counter()
        prepared = await asyncio.gather(*(self._prepare(r) for r in batch))
        todo = {
            p.key: (p.pixels, p.event.caption)
            for p in prepared
            if isinstance(p, _Prepared) and p.pixels is not None
        }
        t_infer = time.perf_counter()
        fresh = await self._infer(todo)
        infer_s = time.perf_counter() - t_infer
        return [self._outcome(p, fresh, infer_s, t0) for p in prepared]

    async def _prepare(self, incoming: Incoming) -> _Prepared | Failure:
        where = {"stage": "parse"}
        try:
            return await self._steps(incoming, where)
        except ValidationError as exc:
            error_class = "bad_json" if _is_json_error(exc) else "schema"
            return Failure(incoming, error_class, "parse", _short(exc))
        except PoisonMessageError as exc:
            return Failure(incoming, exc.error_class, exc.stage, str(exc))
        except Exception as exc:  # a poison event must never stop the worker
            stage = where["stage"]
            logger.exception("unexpected %s error; to the DLQ", stage)
            return Failure(incoming, "internal", stage, f"{type(exc).__name__}: {exc}")

    async def _steps(self, incoming: Incoming, where: dict[str, str]) -> _Prepared:
        event = UploadEvent.model_validate_json(incoming.payload)
        where["stage"], t = "fetch", time.perf_counter()
        data = await self.fetcher.fetch(event)
        timings = {"fetch_s": time.perf_counter() - t}
        sha = hashlib.sha256(data).hexdigest()
        if event.sha256 is not None and event.sha256 != sha:
            raise PoisonMessageError(
                "sha256 mismatch", error_class="checksum_mismatch", stage="fetch"
            )
        pixels = None
        key = self._key(sha, event)
        if key not in self._cache:
            where["stage"], t = "decode", time.perf_counter()
            pixels = await asyncio.to_thread(self._decode, data)
            timings["decode_s"] = time.perf_counter() - t
        return _Prepared(incoming, event, sha, key, pixels, timings)

    def _key(self, sha: str, event: UploadEvent) -> str:
        if not self._captions:
            return sha
        caption = hashlib.sha256((event.caption or "").encode("utf-8")).hexdigest()
        return f"{sha}:{caption}"

    def _decode(self, data: bytes) -> npt.NDArray[np.uint8]:
        return decode_and_preprocess(data, self.config.decode, self._policy)

    async def _infer(
        self, todo: dict[str, _Job]
    ) -> dict[str, Detection | PoisonMessageError]:
        if not todo:
            return {}
        shas = list(todo)
        images = np.stack([todo[s][0] for s in shas]).astype(np.uint8, copy=False)
        captions = [todo[s][1] for s in shas]
        try:
            found = await self._detect_retrying(images, captions)
        except PoisonMessageError:
            if len(shas) == 1:
                raise
            # isolate the image the detector rejects; the others still get verdicts
            results: dict[str, Detection | PoisonMessageError] = {}
            for sha in shas:
                results.update(await self._infer_one(sha, todo[sha]))
            return results
        out: dict[str, Detection | PoisonMessageError] = dict(
            zip(shas, found, strict=True)
        )
        for sha, det in out.items():
            if isinstance(det, Detection):
                self._remember(sha, det)
        return out

    async def _infer_one(
        self, sha: str, job: _Job
    ) -> dict[str, Detection | PoisonMessageError]:
        try:
            return await self._infer({sha: job})
        except PoisonMessageError as exc:
            return {sha: exc}

    async def _detect_retrying(
        self, images: npt.NDArray[np.uint8], captions: list[str | None]
    ) -> Sequence[Detection]:
        delay = self.config.infer_backoff_s
        for attempt in range(1, self.config.infer_attempts + 1):
            try:
                if self._captions:
                    return await self.detector.detect(images, captions)
                return await self.detector.detect(images)
            except TransientError:
                if attempt == self.config.infer_attempts:
                    raise
                logger.warning("detector unavailable, attempt %d; retrying", attempt)
            await asyncio.sleep(delay)
            delay = min(2 * delay, 2.0)
        raise TransientError("no detector attempt made")

    def _remember(self, sha: str, det: Detection) -> None:
        if self.config.dedupe_size <= 0:
            return
        self._cache[sha] = det
        self._cache.move_to_end(sha)
        while len(self._cache) > self.config.dedupe_size:
            self._cache.popitem(last=False)

    def _outcome(
        self,
        p: _Prepared | Failure,
        fresh: dict[str, Detection | PoisonMessageError],
        infer_s: float,
        t0: float,
    ) -> Outcome:
        if isinstance(p, Failure):
            return p
        cached = p.pixels is None
        det = self._cache.get(p.key) if cached else fresh.get(p.key)
        if isinstance(det, PoisonMessageError):
            return Failure(p.incoming, det.error_class, det.stage, str(det))
        if det is None:  # evicted between prepare and now: cannot happen in one batch
            return Failure(p.incoming, "internal", "infer", "no detection")
        if cached:
            self._cache.move_to_end(p.key)
        timings = StageTimings(
            **p.timings,
            infer_s=0.0 if cached else infer_s,
            total_s=time.perf_counter() - t0,
        )
        return self._verdict(p, det, timings, cached)

    def _verdict(
        self, p: _Prepared, det: Detection, timings: StageTimings, cached: bool
    ) -> Verdict:
        return Verdict(
            image_id=p.event.image_id,
            content_sha256=p.sha256,
            label=det.label,  # validated by pydantic
            probability=det.probability,
            threshold=det.threshold,
            uncertain_low=det.uncertain_low,
            head_scores=dict(det.head_scores),
            nearest_exemplars=[parse_exemplar(e) for e in det.nearest_exemplars],
            versions=self.model.versions.with_bank(det.bank_version),
            timings=timings,
            source=p.incoming.source,
            tenant=p.event.tenant,
            trace_id=p.event.trace_id,
            cached=cached,
            decided_at=utc_now(),
            reasons=list(det.reasons),
        )

    async def close(self) -> None:
        """Close the fetcher's HTTP session."""
        await self.fetcher.close()


def _is_json_error(exc: ValidationError) -> bool:
    return any(e["type"] in ("json_invalid", "json_type") for e in exc.errors())


def _short(exc: ValidationError) -> str:
    errs = exc.errors(include_url=False, include_input=False)
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errs)[:1024]
