"""Adapter: the plain classes behind the ``model_repository/*/1/model.py`` shims.

Each class takes and returns ``{tensor name: numpy array}`` (names from
`serving.triton.names`) and knows nothing of ``triton_python_backend_utils``: the shims
unpack requests, call `run`, pack responses and map errors with `error_code`. The
pipeline receives its BLS call as an injected coroutine (`InferFn`), so it runs the
same with a fake in tests.

- `EncoderBackend`: the int8 ONNX CLIP encoder, one image per onnxruntime call (its
  dynamic quantisation makes a batched call change each image's embedding), so
  Triton's dynamic batching changes throughput, never results. It returns the
  projected embedding and every block's CLS token.
- `HeadBackend`: one trained head (linear probe, MLP or kNN with exemplars), loaded by
  the same `serving.artifacts` loader as the in-process detector; it takes both
  encoder outputs and applies its own feature view.
- `DetectorPipeline`: encoder, then every head concurrently, then the decision head's
  calibration and label, and novelty from the kNN head's bank similarity, as
  `serving.detector.Detector` does in-process.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from serving.artifacts import Manifest, load_head, read_manifest
from serving.encoders.base import ImageEncoder
from serving.encoders.onnx_clip import OnnxClipEncoder
from serving.errors import (
    ArtifactMismatchError,
    InferenceUnavailableError,
    InvalidInputError,
    MissingWeightsError,
)
from serving.heads.base import Head
from serving.heads.knn import FeedbackBankWatch, KnnHead
from serving.scoring.calibration import calibrate, decide
from serving.scoring.fusion import Decision
from serving.scoring.novelty import Novelty, apply_reasons, novelty_reasons
from serving.scoring.views import FeatureLayout
from serving.triton import names

Arrays = dict[str, npt.NDArray[Any]]
InferFn = Callable[[str, Arrays, tuple[str, ...]], Awaitable[Arrays]]

__all__ = [
    "DetectorPipeline",
    "EncoderBackend",
    "HeadBackend",
    "InferenceUnavailableError",
    "PerRequestModel",
    "error_code",
]


def error_code(exc: BaseException) -> str:
    """Name of the ``pb_utils.TritonError`` code for an exception.

    Invalid input is the caller's fault (``INVALID_ARG``); an unavailable dependency
    is transient (``UNAVAILABLE``); anything else is a server fault (``INTERNAL``).
    """
    if isinstance(exc, InvalidInputError):
        return "INVALID_ARG"
    if isinstance(exc, InferenceUnavailableError):
        return "UNAVAILABLE"
    return "INTERNAL"


def model_parameters(args: dict[str, str]) -> dict[str, str]:
    """The ``parameters`` of a model's config as plain strings.

    Args:
        args: The python backend's ``initialize`` arguments.
    """
    config = json.loads(args["model_config"])
    return {
        key: str(value.get("string_value", ""))
        for key, value in config.get("parameters", {}).items()
    }


def version_dir(args: dict[str, str]) -> Path:
    """The model version directory from the python backend's ``initialize`` args."""
    return Path(args["model_repository"]) / args["model_version"]


class EncoderBackend:
    """CLIP image encoder: ``image`` (n, 224, 224, 3) uint8 -> ``embedding``, ``cls_tokens``."""

    input_names = (names.IMAGE.name,)

    def __init__(self, encoder: ImageEncoder) -> None:
        self._encoder = encoder

    @classmethod
    def from_args(cls, args: dict[str, str]) -> EncoderBackend:
        """Load the encoder placed by the exporter and check it against the manifest.

        Raises:
            MissingWeightsError: the ONNX file or manifest is absent.
            ArtifactMismatchError: the file is not the encoder the heads were trained on.
        """
        vdir = version_dir(args)
        path = vdir / names.ENCODER_CPU_FILE
        if not path.is_file():
            raise MissingWeightsError(
                f"{path} not found; write the repository with `synthguard export`"
            )
        threads = int(model_parameters(args).get(names.PARAM_THREADS) or 0)
        encoder = OnnxClipEncoder(path, threads=threads or None)
        expected = read_manifest(vdir).encoder.sha256
        if encoder.info.weights_sha256 != expected:
            raise ArtifactMismatchError(
                f"{path}: sha256 {encoder.info.weights_sha256} != manifest {expected}"
            )
        return cls(encoder)

    def run(self, inputs: Arrays) -> Arrays:
        """Encode one request's images, one onnxruntime call per image."""
        enc = self._encoder.encode(inputs[names.IMAGE.name])
        return {names.EMBEDDING.name: enc.embeds, names.CLS_TOKENS.name: enc.blocks}


class HeadBackend:
    """One head: ``embedding``, ``cls_tokens`` -> ``score`` (n, 1) [+ ``exemplars``]."""

    input_names = tuple(t.name for t in names.ENCODER_OUTPUTS)

    def __init__(
        self,
        head: Head,
        layout: FeatureLayout,
        feedback: FeedbackBankWatch | None = None,
    ) -> None:
        self._head = head
        self._layout = layout
        self._feedback = feedback

    @classmethod
    def from_args(cls, args: dict[str, str]) -> HeadBackend:
        """Load the head instance named in the config's ``synthguard_head`` parameter.

        Raises:
            MissingWeightsError: the repository was not exported.
            ArtifactMismatchError: files missing, altered or of another kind.
        """
        params = model_parameters(args)
        manifest, head = load_head(version_dir(args), params.get(names.PARAM_HEAD, ""))
        bank_dir = params.get(names.PARAM_FEEDBACK_BANK, "")
        watch = None
        if bank_dir and isinstance(head, KnnHead):
            watch = FeedbackBankWatch(head, Path(bank_dir), names.FEEDBACK_POLL_S)
        return cls(head, manifest.encoder.layout, watch)

    def run(self, inputs: Arrays) -> Arrays:
        """Score one request's encoder outputs (and list kNN exemplars)."""
        x = self._layout.flatten(
            np.asarray(inputs[names.EMBEDDING.name], dtype=np.float32),
            np.asarray(inputs[names.CLS_TOKENS.name], dtype=np.float32),
        )
        head = self._feedback.current() if self._feedback else self._head
        if not isinstance(head, KnnHead):
            return {names.SCORE.name: head.score(x).reshape(-1, 1)}
        found = head.answer(x)  # one bank search for all three outputs
        version = head.feedback_version or ""
        return {
            names.SCORE.name: found.scores.reshape(-1, 1),
            names.EXEMPLARS.name: _bytes_array(found.neighbours, 2 * head.k),
            names.BANK_SIMILARITY.name: found.similarity.reshape(-1, 1),
            names.BANK_VERSION.name: _bytes_array([[version]] * len(x), 1),
        }


class DetectorPipeline:
    """BLS pipeline: ``image`` -> embedding, every head score, probability, label."""

    input_names = (names.IMAGE.name,)

    def __init__(
        self,
        decision: Decision,
        served: dict[str, str],
        novelty: Novelty | None = None,
    ) -> None:
        missing = set(decision.members) - set(served.values())
        if missing or not set(served) <= set(names.HEAD_MODELS):
            raise ArtifactMismatchError(
                f"decision {decision.name!r} needs {sorted(missing)}, not served "
                f"(served: {served})"
            )
        self._decision = decision
        self._served = served  # kind -> head instance
        self._novelty = novelty

    @classmethod
    def from_args(cls, args: dict[str, str]) -> DetectorPipeline:
        """Read the decision (head or fusion) from the manifest in the version dir.

        Raises:
            MissingWeightsError: the repository was not exported.
            ArtifactMismatchError: the decision needs a head that is not served.
        """
        manifest: Manifest = read_manifest(version_dir(args))
        served: dict[str, str] = json.loads(
            model_parameters(args).get(names.PARAM_HEADS) or "{}"
        )
        return cls(manifest.decision(), served, manifest.novelty_rule())

    async def run_batch(self, batches: list[Arrays], infer: InferFn) -> list[Arrays]:
        """Run several requests as one: concatenate, run, split back per request."""
        sizes = [len(b[names.IMAGE.name]) for b in batches]
        images = np.concatenate([b[names.IMAGE.name] for b in batches])
        out = await self.run({names.IMAGE.name: images}, infer)
        bounds = np.cumsum([0, *sizes])
        return [
            {k: v[lo:hi] for k, v in out.items()}
            for lo, hi in itertools.pairwise(bounds)
        ]

    async def run(self, inputs: Arrays, infer: InferFn) -> Arrays:
        """Score (n, 224, 224, 3) uint8 images through the encoder and head models."""
        features = tuple(t.name for t in names.ENCODER_OUTPUTS)
        enc = await infer(names.ENCODER_MODEL, inputs, features)
        emb = enc[names.EMBEDDING.name]
        kinds = tuple(names.HEAD_MODELS)
        results = await asyncio.gather(
            *(
                infer(
                    names.HEAD_MODELS[kind],
                    {name: enc[name] for name in features},
                    tuple(t.name for t in names.HEAD_OUTPUTS[kind]),
                )
                for kind in kinds
            )
        )
        by_kind = dict(zip(kinds, results, strict=True))
        scores = {k: r[names.SCORE.name].reshape(-1) for k, r in by_kind.items()}
        by_instance = {self._served[k]: s for k, s in scores.items()}
        cal = self._decision.calibration
        probs = calibrate(cal, self._decision.score(by_instance))
        sims = by_kind["knn"][names.BANK_SIMILARITY.name].reshape(-1)
        reasons = novelty_reasons(self._novelty, sims)
        labels = apply_reasons(decide(cal, probs), reasons)
        joined = [[names.REASON_SEPARATOR.join(r)] for r in reasons]
        return {
            names.EMBEDDING.name: emb,
            **{names.head_score(k).name: s.reshape(-1, 1) for k, s in scores.items()},
            names.PROBABILITY.name: probs.astype(np.float32).reshape(-1, 1),
            names.LABEL.name: _bytes_array([[str(lb)] for lb in labels], 1),
            names.EXEMPLARS.name: by_kind["knn"][names.EXEMPLARS.name],
            names.REASONS.name: _bytes_array(joined, 1),
            names.BANK_VERSION.name: by_kind["knn"][names.BANK_VERSION.name],
        }


def _bytes_array(rows: list[list[str]], width: int) -> npt.NDArray[np.object_]:
    out = np.empty((len(rows), width), dtype=np.object_)
    for i, row in enumerate(rows):
        out[i, :] = [s.encode("utf-8") for s in row]
    return out


class RequestBackend(Protocol):
    """A backend answering one request's inputs (the encoder and the heads)."""

    input_names: tuple[str, ...]

    def run(self, inputs: Arrays) -> Arrays:
        """Compute the outputs of one request."""
        ...


class PerRequestModel:
    """The body of a non-pipeline ``TritonPythonModel``: one response per request.

    Each failure becomes that request's error (code from `error_code`); the other
    requests of the batch are answered normally.

    Args:
        pb_utils: The ``triton_python_backend_utils`` module (only importable in Triton).
        backend: What computes a request's outputs.
    """

    def __init__(self, pb_utils: Any, backend: RequestBackend) -> None:
        self._pb = pb_utils
        self._backend = backend

    def execute(self, requests: list[Any]) -> list[Any]:
        """Answer every request of a batch, in order."""
        return [self._respond(request) for request in requests]

    def _respond(self, request: Any) -> Any:
        pb = self._pb
        try:
            inputs = {
                name: pb.get_input_tensor_by_name(request, name).as_numpy()
                for name in self._backend.input_names
            }
            outputs = self._backend.run(inputs)
        except Exception as exc:  # noqa: BLE001 - every failure becomes this request's error
            code = getattr(pb.TritonError, error_code(exc))
            return pb.InferenceResponse(error=pb.TritonError(str(exc), code))
        return pb.InferenceResponse([pb.Tensor(k, v) for k, v in outputs.items()])
