"""Adapter: an exact cosine-similarity bank on faiss ``IndexFlatIP``.

Vectors are L2-normalised on the way in (bank and queries), so inner product =
cosine similarity. Persistence stores the normalised vectors in safetensors and
rebuilds the flat index at load: exact, fast, and no pickle / faiss serialisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import faiss
import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file, save_file

from serving.errors import ArtifactMismatchError, InvalidInputError
from serving.scoring.knn import l2_normalize

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

VECTORS_KEY: Final = "vectors"


class FaissBank:
    """An exact cosine bank of (n, d) vectors.

    Args:
        dim: Vector dimension d (>= 1).
    """

    def __init__(self, dim: int) -> None:
        if dim < 1:
            raise InvalidInputError(f"dim must be >= 1, got {dim}")
        self._dim = dim
        self._index = faiss.IndexFlatIP(dim)

    @property
    def dim(self) -> int:
        """Vector dimension d."""
        return self._dim

    @property
    def ntotal(self) -> int:
        """Number of vectors in the bank."""
        return int(self._index.ntotal)

    def _prepare(self, x: FloatArray) -> FloatArray:
        xa = np.asarray(x, dtype=np.float32)
        if xa.ndim != 2 or xa.shape[1] != self._dim:
            raise InvalidInputError(f"need (n, {self._dim}) vectors, got {xa.shape}")
        return np.ascontiguousarray(l2_normalize(xa))

    def add(self, xb: FloatArray) -> None:
        """Add vectors to the bank.

        Args:
            xb: (n, d) vectors; L2-normalised here.

        Raises:
            InvalidInputError: Wrong shape or non-finite values.
        """
        self._index.add(self._prepare(xb))

    def search(self, xq: FloatArray, k: int) -> tuple[FloatArray, IntArray]:
        """Find the k most cosine-similar bank vectors of each query.

        Args:
            xq: (nq, d) queries; L2-normalised here.
            k: Neighbours per query, 1 <= k <= ntotal.

        Returns:
            ``(D, I)``: (nq, k) float32 cosine similarities, best first, and the
            (nq, k) int64 row numbers of those vectors in insertion order.

        Raises:
            InvalidInputError: Wrong shape, non-finite values or k out of range.
        """
        if not 1 <= k <= self.ntotal:
            raise InvalidInputError(f"k must be in [1, {self.ntotal}], got {k}")
        sims, rows = self._index.search(self._prepare(xq), k)
        return sims.astype(np.float32), rows.astype(np.int64)

    def vectors(self) -> FloatArray:
        """Return a (ntotal, d) float32 copy of the normalised bank vectors."""
        if self.ntotal == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        out: FloatArray = self._index.reconstruct_n(0, self.ntotal).astype(np.float32)
        return out

    def save(self, path: Path) -> None:
        """Write the normalised vectors to a safetensors file.

        Args:
            path: Target ``.safetensors`` file (its parent must exist).
        """
        save_file(
            {VECTORS_KEY: self.vectors()},
            str(path),
            metadata={"dim": str(self._dim), "normalisation": "l2"},
        )

    @classmethod
    def load(cls, path: Path, dim: int | None = None) -> FaissBank:
        """Rebuild a bank from a file written by `save`.

        Args:
            path: The ``.safetensors`` file.
            dim: Expected dimension, checked when given.

        Returns:
            The bank, with vectors in their saved order.

        Raises:
            ArtifactMismatchError: The file lacks the vectors or has the wrong shape.
        """
        tensors = load_file(str(path))
        xb = tensors.get(VECTORS_KEY)
        if xb is None or xb.ndim != 2 or xb.dtype != np.float32:
            raise ArtifactMismatchError(f"{path}: no (n, d) float32 {VECTORS_KEY!r}")
        if dim is not None and xb.shape[1] != dim:
            raise ArtifactMismatchError(f"{path}: dim {xb.shape[1]}, expected {dim}")
        bank = cls(int(xb.shape[1]))
        if xb.shape[0]:
            bank.add(xb)
        return bank
