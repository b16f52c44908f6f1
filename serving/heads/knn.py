"""Adapter: the UnivFD nearest-neighbour head, faiss banks of real and fake exemplars.

The head reads its `FeatureView` of the flat feature rows (by default every block's
CLS token, each block L2-normalised, concatenated); those vectors are L2-normalised
into two exact cosine banks (reals, fakes). The score is ``mean top-k cos(fakes) - mean top-k cos(reals)`` (`knn_score`); for k=1
this is UnivFD's ``min d(reals) - min d(fakes)`` with ``d = 1 - cos``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from serving.errors import ArtifactMismatchError, InvalidInputError
from serving.feedback_bank import MANIFEST_FILE as FEEDBACK_MANIFEST
from serving.feedback_bank import FeedbackBank, FeedbackLabel
from serving.heads.base import FloatArray, LabeledFeatures
from serving.index.faiss_index import FaissBank, IntArray
from serving.scoring.knn import knn_score
from serving.scoring.views import FeatureView

SUPPORTED_K: Final = (1, 3, 5, 9)
BANK_FILES: Final = {"real": "knn_real.safetensors", "fake": "knn_fake.safetensors"}
IDS_FILE: Final = "knn_ids.json"
_LABELS: Final = {"real": 0, "fake": 1}
_FEEDBACK_LABELS: Final[dict[str, FeedbackLabel]] = {
    "real": "real",
    "fake": "ai_generated",
}
logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class KnnAnswer:
    """What one bank search gives the served head.

    Attributes:
        scores: (n,) float32 similarity margins (`KnnHead.score`).
        similarity: (n,) float32 largest cosine to either bank (novelty).
        neighbours: Per query, its exemplars (`KnnHead.neighbours`).
    """

    scores: FloatArray
    similarity: FloatArray
    neighbours: list[list[str]]


def _check_k(k: int) -> int:
    if k not in SUPPORTED_K:
        raise InvalidInputError(f"k must be one of {SUPPORTED_K}, got {k!r}")
    return k


class KnnHead:
    """UnivFD NN head; `score` returns a similarity margin, higher = more likely fake.

    Args:
        view: The part of the flat feature rows the banks hold.
        k: Neighbours per bank, one of 1, 3, 5, 9.

    Raises:
        InvalidInputError: Unsupported `k`.
    """

    name: str = "knn"

    def __init__(self, view: FeatureView, k: int = 1) -> None:
        self.view = view
        self.k = _check_k(k)
        self._banks: dict[str, FaissBank] = {}
        self._ids: dict[str, tuple[str, ...]] = {}
        self.feedback_version: str | None = None

    def fit(self, train: LabeledFeatures, val: LabeledFeatures) -> None:
        """Build the real and fake banks from `train` (`val` is unused).

        Raises:
            InvalidInputError: A class has fewer than k training rows.
        """
        del val
        ids = train.ids or tuple(f"train/{i}" for i in range(train.x.shape[0]))
        x = self.view.apply(train.x)
        banks, bank_ids = {}, {}
        for label, value in _LABELS.items():
            rows = np.flatnonzero(train.y == value)
            if rows.size < self.k:
                raise InvalidInputError(f"{rows.size} {label} rows, k={self.k}")
            banks[label] = FaissBank(x.shape[1])
            banks[label].add(x[rows])
            bank_ids[label] = tuple(ids[i] for i in rows)
        self._banks, self._ids = banks, bank_ids

    def _search(self, x: FloatArray) -> dict[str, tuple[FloatArray, IntArray]]:
        if not self._banks:
            raise InvalidInputError("the kNN head is not fitted")
        q = self.view.apply(x)
        return {label: bank.search(q, self.k) for label, bank in self._banks.items()}

    def answer(self, x: FloatArray) -> KnnAnswer:
        """Score, bank similarity and exemplars of (n, width) rows from one search.

        The served head needs all three per request; `score`, `bank_similarity`
        and `neighbours` are this one search read three ways.
        """
        found = self._search(x)
        best = np.max([sims.max(axis=1) for sims, _rows in found.values()], axis=0)
        return KnnAnswer(
            scores=knn_score(found["real"][0], found["fake"][0], self.k),
            similarity=np.asarray(best, dtype=np.float32),
            neighbours=self._exemplars(found, np.asarray(x).shape[0]),
        )

    def score(self, x: FloatArray) -> FloatArray:
        """Score (n, width) flat feature rows; returns (n,) float32 in [-2, 2]."""
        found = self._search(x)
        return knn_score(found["real"][0], found["fake"][0], self.k)

    def bank_similarity(self, x: FloatArray) -> FloatArray:
        """Largest cosine similarity of each query to any exemplar of either bank.

        Args:
            x: (n, width) flat feature rows.

        Returns:
            (n,) float32 in [-1, 1] (`serving.scoring.novelty` thresholds it).
        """
        return self.answer(x).similarity

    def neighbours(self, x: FloatArray) -> list[list[str]]:
        """Nearest exemplars of each query, as evidence.

        Args:
            x: (n, width) flat feature rows.

        Returns:
            Per query, its k nearest reals and k nearest fakes, most similar first,
            each as ``"<real|fake> <cosine:.4f> <id>"``.
        """
        return self.answer(x).neighbours

    def _exemplars(
        self, found: dict[str, tuple[FloatArray, IntArray]], n: int
    ) -> list[list[str]]:
        out: list[list[str]] = []
        for q in range(n):
            hits = [
                (float(sims[q, j]), label, self._ids[label][int(rows[q, j])])
                for label, (sims, rows) in found.items()
                for j in range(self.k)
            ]
            hits.sort(key=lambda h: -h[0])
            out.append([f"{label} {sim:.4f} {img}" for sim, label, img in hits])
        return out

    def with_feedback(self, bank: FeedbackBank) -> KnnHead:
        """A new head: these banks plus the feedback rows (``feedback/<sha256>`` ids).

        Raises:
            InvalidInputError: not fitted, or the feedback rows are of another width.
        """
        if not self._banks:
            raise InvalidInputError("the kNN head is not fitted")
        head = KnnHead(self.view, self.k)
        for label, wire in _FEEDBACK_LABELS.items():
            rows, shas = bank.rows(wire)
            merged = FaissBank(self._banks[label].dim)
            merged.add(self._banks[label].vectors())
            if shas:
                merged.add(rows)
            head._banks[label] = merged
            head._ids[label] = self._ids[label] + tuple(f"feedback/{s}" for s in shas)
        head.feedback_version = bank.version()
        return head

    def save(self, directory: Path) -> dict[str, Any]:
        """Write both banks (safetensors) and their ids (JSON) into `directory`.

        Returns:
            Manifest parameters: k, dim, normalisation, bank sizes, file names.
        """
        if not self._banks:
            raise InvalidInputError("the kNN head is not fitted")
        directory.mkdir(parents=True, exist_ok=True)
        for label, bank in self._banks.items():
            bank.save(directory / BANK_FILES[label])
        ids = {label: list(v) for label, v in self._ids.items()}
        (directory / IDS_FILE).write_text(json.dumps(ids), encoding="utf-8")
        return {
            "head": self.name,
            "k": self.k,
            "dim": self._banks["real"].dim,
            "view": self.view.to_dict(),
            "normalisation": "l2",
            "score": "mean_topk_cos_fake_minus_real",
            "bank_sizes": {label: b.ntotal for label, b in self._banks.items()},
            "files": {**BANK_FILES, "ids": IDS_FILE},
        }

    @classmethod
    def load(cls, directory: Path, params: dict[str, Any]) -> KnnHead:
        """Rebuild a head written by `save`.

        Raises:
            ArtifactMismatchError: Files disagree with `params` (dim, sizes, ids).
        """
        try:
            view = FeatureView.from_dict(params["view"])
            head, dim = cls(view, int(params["k"])), int(params["dim"])
            sizes = {label: int(params["bank_sizes"][label]) for label in BANK_FILES}
            ids = json.loads((directory / IDS_FILE).read_text(encoding="utf-8"))
            for label, file in BANK_FILES.items():
                head._banks[label] = FaissBank.load(directory / file, dim)
                head._ids[label] = tuple(str(i) for i in ids[label])
        except (KeyError, TypeError, ValueError, OSError, InvalidInputError) as exc:
            raise ArtifactMismatchError(f"kNN head in {directory}: {exc}") from exc
        if view.dim != dim:
            raise ArtifactMismatchError(f"kNN view width {view.dim} != bank dim {dim}")
        for label, bank in head._banks.items():
            if not bank.ntotal == len(head._ids[label]) == sizes[label]:
                raise ArtifactMismatchError(f"{label} bank size disagrees with params")
        return head


class FeedbackBankWatch:
    """The served kNN head, reloaded when the feedback bank's checkpoint changes.

    Polls the bank manifest at most every ``poll_s`` (a stat and a small JSON
    read), so a new bank version is served within ``poll_s`` without a Triton
    restart; the merged head is swapped in whole, so a request sees one version.
    A checkpoint that fails to load keeps the previous head (and is logged).

    Args:
        base: The artifact's head (training banks); feedback is merged onto it.
        directory: The learner's bank directory.
        poll_s: Seconds between checks.
    """

    def __init__(self, base: KnnHead, directory: Path, poll_s: float) -> None:
        self.base, self.directory, self.poll_s = base, directory, poll_s
        self.head = base
        self._checked = -float("inf")

    def current(self) -> KnnHead:
        """The head to score with now."""
        now = time.monotonic()
        if now - self._checked >= self.poll_s:
            self._checked = now
            self._reload()
        return self.head

    def _reload(self) -> None:
        path = self.directory / FEEDBACK_MANIFEST
        try:
            version = json.loads(path.read_text(encoding="utf-8"))["version"]
            if version != self.head.feedback_version:
                self.head = self.base.with_feedback(FeedbackBank.load(self.directory))
                logger.info("serving feedback bank %s", self.head.feedback_version)
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, ArtifactMismatchError) as exc:
            logger.warning("feedback bank in %s not loaded: %s", self.directory, exc)
