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
- `TextEncoderBackend`: the CLIP text tower of the operator's Hugging Face
  directory (artifacts with a text source only): ``text`` -> ``text_embedding``.
- `DetectorPipeline`: encoder (and, with a text source, the text encoder on each
  image's caption or the fixed prompt), then every head concurrently (``head_mlp``
  also gets the text embedding), then the decision head's calibration and label,
  and novelty from the kNN head's bank similarity, as `serving.detector.Detector`
  does in-process.
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

from serving.artifacts import Manifest, check_text_tower, load_head, read_manifest
from serving.encoders.base import ImageEncoder, TextEncoder
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
from serving.scoring.views import FeatureLayout, FeatureView
from serving.text_source import TextSource, encode_distinct
from serving.triton import names

Arrays = dict[str, npt.NDArray[Any]]
InferFn = Callable[[str, Arrays, tuple[str, ...]], Awaitable[Arrays]]

__all__ = [
    "DetectorPipeline",
    "EncoderBackend",
    "HeadBackend",
    "InferenceUnavailableError",
    "PerRequestModel",
    "TextEncoderBackend",
    "error_code",
    "request_inputs",
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


def request_inputs(pb_utils: Any, request: Any, input_names: tuple[str, ...]) -> Arrays:
    """A request's input tensors by name; optional inputs it left out are absent."""
    out: Arrays = {}
    for name in input_names:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is not None:
            out[name] = tensor.as_numpy()
    return out


def decode_texts(column: npt.NDArray[Any] | None, n: int) -> list[str | None]:
    """(n, 1) BYTES as UTF-8 strings; None for every row when the input is absent.

    Raises:
        InvalidInputError: Not n rows, or not UTF-8.
    """
    if column is None:
        return [None] * n
    rows = np.asarray(column, dtype=np.object_).reshape(-1)
    if len(rows) != n:
        raise InvalidInputError(f"{len(rows)} texts for {n} images")
    try:
        return [bytes(r).decode("utf-8") for r in rows]
    except (TypeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"text is not UTF-8: {exc}") from exc


def reads_text(head: Head) -> bool:
    """Whether a head's feature view reads the text part of the rows (the MLP's)."""
    view = getattr(head, "view", None)
    return isinstance(view, FeatureView) and view.text


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


class TextEncoderBackend:
    """CLIP text tower: ``text`` (n, 1) UTF-8 -> ``text_embedding`` (n, text_dim)."""

    input_names = (names.TEXT.name,)

    def __init__(self, encoder: TextEncoder) -> None:
        self._encoder = encoder

    @classmethod
    def from_args(cls, args: dict[str, str]) -> TextEncoderBackend:
        """Load the text tower of the configured directory; check it against the manifest.

        Raises:
            MissingWeightsError: no directory configured, or no text tower in it.
            ArtifactMismatchError: not the tower the heads were trained with.
        """
        from serving.encoders.factory import load_text_encoder

        directory = model_parameters(args).get(names.PARAM_TEXT_TOWER_DIR, "")
        if not directory:
            raise MissingWeightsError(
                f"{names.TEXT_ENCODER_MODEL}: no {names.PARAM_TEXT_TOWER_DIR}; export "
                "with `synthguard export --text-tower-dir DIR`"
            )
        encoder = load_text_encoder(Path(directory))
        check_text_tower(read_manifest(version_dir(args)), encoder.info)
        return cls(encoder)

    def run(self, inputs: Arrays) -> Arrays:
        """Encode one request's texts (each distinct text once)."""
        column = inputs[names.TEXT.name]
        texts = [t or "" for t in decode_texts(column, len(column))]
        return {names.TEXT_EMBEDDING.name: encode_distinct(self._encoder, texts)}


class HeadBackend:
    """One head: ``embedding``, ``cls_tokens`` [, ``text_embedding``] -> ``score`` (n, 1).

    The kNN head also returns its exemplars, bank similarity and bank version; the
    MLP of an artifact with a text source also takes ``text_embedding``.
    """

    def __init__(
        self,
        head: Head,
        layout: FeatureLayout,
        feedback: FeedbackBankWatch | None = None,
    ) -> None:
        self._head = head
        self._layout = layout
        self._feedback = feedback
        self._text = reads_text(head)
        text = (names.TEXT_EMBEDDING.name,) if self._text else ()
        self.input_names = (*(t.name for t in names.ENCODER_OUTPUTS), *text)

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
        """Score one request's encoder outputs (and list kNN exemplars).

        Raises:
            InvalidInputError: The MLP of a text artifact got no text embedding.
        """
        text = None
        if self._text:
            if names.TEXT_EMBEDDING.name not in inputs:
                raise InvalidInputError(f"this head needs {names.TEXT_EMBEDDING.name}")
            text = np.asarray(inputs[names.TEXT_EMBEDDING.name], dtype=np.float32)
        x = self._layout.flatten(
            np.asarray(inputs[names.EMBEDDING.name], dtype=np.float32),
            np.asarray(inputs[names.CLS_TOKENS.name], dtype=np.float32),
            text,
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
    """BLS pipeline: ``image`` [+ ``caption``] -> every head score, probability, label.

    Args:
        decision: The decision rule.
        served: Head instance served per head kind.
        novelty: The novelty rule (None: off).
        text: The artifact's text source (None: ``none``; captions are ignored).
    """

    input_names = (names.IMAGE.name, names.CAPTION.name)

    def __init__(
        self,
        decision: Decision,
        served: dict[str, str],
        novelty: Novelty | None = None,
        text: TextSource | None = None,
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
        self._text = text or TextSource()

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
        return cls(
            manifest.decision(),
            served,
            manifest.novelty_rule(),
            manifest.encoder.text,
        )

    async def run_batch(self, batches: list[Arrays], infer: InferFn) -> list[Arrays]:
        """Run several requests as one: concatenate, run, split back per request.

        A request without ``caption`` counts as one without captions (``""``).
        """
        sizes = [len(b[names.IMAGE.name]) for b in batches]
        images = np.concatenate([b[names.IMAGE.name] for b in batches])
        captions = [
            c or "" for b in batches for c in _captions(b, len(b[names.IMAGE.name]))
        ]
        inputs = {
            names.IMAGE.name: images,
            names.CAPTION.name: _bytes_array([[c] for c in captions], 1),
        }
        out = await self.run(inputs, infer)
        bounds = np.cumsum([0, *sizes])
        return [
            {k: v[lo:hi] for k, v in out.items()}
            for lo, hi in itertools.pairwise(bounds)
        ]

    async def run(self, inputs: Arrays, infer: InferFn) -> Arrays:
        """Score (n, 224, 224, 3) uint8 images (and optional (n, 1) captions)."""
        features = await self._encode(inputs, infer)
        emb = features[names.EMBEDDING.name]
        kinds = tuple(names.HEAD_MODELS)
        results = await asyncio.gather(
            *(
                infer(
                    names.HEAD_MODELS[kind],
                    self._head_inputs(kind, features),
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

    async def _encode(self, inputs: Arrays, infer: InferFn) -> Arrays:
        """The encoder's outputs, plus ``text_embedding`` with a text source."""
        images = inputs[names.IMAGE.name]
        features = tuple(t.name for t in names.ENCODER_OUTPUTS)
        image = infer(names.ENCODER_MODEL, {names.IMAGE.name: images}, features)
        if not self._text.enabled:
            return await image
        texts = self._text.texts(_captions(inputs, len(images)))
        text = infer(
            names.TEXT_ENCODER_MODEL,
            {names.TEXT.name: _bytes_array([[t] for t in texts], 1)},
            (names.TEXT_EMBEDDING.name,),
        )
        enc, txt = await asyncio.gather(image, text)
        return {**{n: enc[n] for n in features}, **txt}

    def _head_inputs(self, kind: str, features: Arrays) -> Arrays:
        inputs, _outputs = names.model_io(names.HEAD_MODELS[kind], self._text.enabled)
        return {t.name: features[t.name] for t in inputs}


def _captions(inputs: Arrays, n: int) -> list[str | None]:
    return decode_texts(inputs.get(names.CAPTION.name), n)


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
            inputs = request_inputs(pb, request, self._backend.input_names)
            outputs = self._backend.run(inputs)
        except Exception as exc:  # noqa: BLE001 - every failure becomes this request's error
            code = getattr(pb.TritonError, error_code(exc))
            return pb.InferenceResponse(error=pb.TritonError(str(exc), code))
        return pb.InferenceResponse([pb.Tensor(k, v) for k, v in outputs.items()])
