"""Domain: the reviewer-feedback kNN bank, a materialised view of the feedback topic.

The learner applies feedback records in each partition's offset order; the bank keeps
one row per content sha256 (the topic's key, so one image's records share a
partition and their order is the log's):

- **Latest label wins:** a later record for the same sha256 replaces the label (and
  the row, which is the same bytes' encoding); duplicates never grow the bank.
- **Idempotent resume:** a record at or below the last applied offset of its
  partition is ``stale`` and ignored, so redelivery after a crash changes nothing.
- **Size cap:** at most ``max_rows`` feedback rows. Over the cap, the row with the
  oldest age key goes first: the record's ``decided_at`` clamped by the caller to
  the broker timestamp (never later than when the log accepted it), the largest
  of an image's records, ties broken by sha256. The training banks of the
  artifact are a separate thing and are never evicted.
- **Deterministic:** the rows are stored sorted by (label, sha256) and eviction
  depends only on the age keys, so any interleaving of the partitions, and every
  replay from offset 0, gives the same bank bit for bit.

A checkpoint is ``feedback_bank-<version>.safetensors`` (tensor ``rows``, (n, d)
float32, in `entries` order) and ``feedback_bank.json`` (format, version, dim, cap,
last applied offset per partition, entries, file sha256, and the caller's
``admission`` state), written durably (fsync, atomic rename; the manifest last).
``admission`` is opaque here: the state of the rule that chose which records to
apply (the learner's per-reviewer rate limit), saved with the offsets it belongs to,
so a resume from the checkpoint admits what a replay from offset 0 admits. The version is a content hash, so equal banks
have equal versions.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file, save_file

from serving.errors import ArtifactMismatchError, InvalidInputError
from serving.scoring.views import FeatureLayout, FeatureView

FloatArray = npt.NDArray[np.float32]
FeedbackLabel = Literal["ai_generated", "real"]
Applied = Literal["applied", "relabelled", "duplicate", "stale"]
MANIFEST_FILE: Final = "feedback_bank.json"
FORMAT: Final = 1
_LABELS: Final = ("ai_generated", "real")


@dataclass(frozen=True)
class FeedbackRecord:
    """One decoded, encoded feedback event, as the bank applies it.

    Attributes:
        partition: Kafka partition of the feedback topic.
        offset: Offset within the partition.
        content_sha256: Hex sha256 of the image bytes.
        label: The reviewer's label.
        age_us: Eviction age key, microseconds since the epoch (see module doc).
        row: (d,) float32 feature row of the kNN head's view.
    """

    partition: int
    offset: int
    content_sha256: str
    label: FeedbackLabel
    age_us: int
    row: FloatArray


@dataclass(frozen=True)
class _Entry:
    label: FeedbackLabel
    age_us: int
    partition: int
    offset: int
    row: FloatArray


class FeedbackBank:
    """Feedback rows by content sha256; see the module doc for the policy.

    Args:
        dim: Width of every row.
        max_rows: Most feedback rows kept (>= 1).

    Raises:
        InvalidInputError: ``dim`` or ``max_rows`` below 1.
    """

    def __init__(self, dim: int, max_rows: int) -> None:
        if dim < 1 or max_rows < 1:
            raise InvalidInputError(f"dim {dim} and max_rows {max_rows} must be >= 1")
        self.dim, self.max_rows = dim, max_rows
        self.offsets: dict[int, int] = {}
        self.admission: list[Any] = []  # the caller's, checkpointed with the offsets
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def apply(self, rec: FeedbackRecord) -> Applied:
        """Apply one record (records of a partition must come in offset order).

        Raises:
            InvalidInputError: the row is not (dim,) finite values.
        """
        if rec.offset <= self.offsets.get(rec.partition, -1):
            return "stale"
        row = np.asarray(rec.row, dtype=np.float32)
        if row.shape != (self.dim,) or not np.isfinite(row).all():
            raise InvalidInputError(f"row {row.shape} is not ({self.dim},) finite")
        self.offsets[rec.partition] = rec.offset
        old = self._entries.get(rec.content_sha256)
        age = rec.age_us if old is None else max(old.age_us, rec.age_us)
        self._entries[rec.content_sha256] = _Entry(
            rec.label, age, rec.partition, rec.offset, row
        )
        if old is None:
            self._evict()
            return "applied"
        return "duplicate" if old.label == rec.label else "relabelled"

    def skip(self, partition: int, offset: int) -> None:
        """Note a record that gives no row (it went to the DLQ): replays skip it."""
        self.offsets[partition] = max(offset, self.offsets.get(partition, -1))

    def _evict(self) -> None:
        while len(self._entries) > self.max_rows:
            oldest = min(self._entries, key=lambda s: (self._entries[s].age_us, s))
            del self._entries[oldest]

    def _order(self) -> list[str]:
        return sorted(self._entries, key=lambda s: (self._entries[s].label, s))

    def rows(self, label: FeedbackLabel) -> tuple[FloatArray, tuple[str, ...]]:
        """The rows of one label, sorted by sha256, and their sha256s.

        Returns:
            (m, dim) float32 rows and m sha256s.
        """
        shas = tuple(s for s in self._order() if self._entries[s].label == label)
        return self._stack(shas), shas

    def _stack(self, shas: tuple[str, ...] | list[str]) -> FloatArray:
        if not shas:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._entries[s].row for s in shas]).astype(np.float32)

    def counts(self) -> dict[str, int]:
        """Rows per label."""
        labels = [e.label for e in self._entries.values()]
        return {label: labels.count(label) for label in _LABELS}

    def _entries_doc(self, order: list[str]) -> list[list[Any]]:
        return [
            [s, e.label, e.age_us, e.partition, e.offset]
            for s in order
            for e in (self._entries[s],)
        ]

    def version(self) -> str:
        """Content hash of the rows and entries (16 hex digits; offsets excluded)."""
        order = self._order()
        h = hashlib.sha256(json.dumps(self._entries_doc(order)).encode())
        h.update(np.ascontiguousarray(self._stack(order)).tobytes())
        return h.hexdigest()[:16]

    def save(self, directory: Path) -> str:
        """Checkpoint durably into `directory`; returns the bank version.

        Older bank files there are removed once the new manifest is in place.
        """
        directory.mkdir(parents=True, exist_ok=True)
        order, version = self._order(), self.version()
        name = f"feedback_bank-{version}.safetensors"
        tmp = directory / f".{name}.tmp"
        save_file({"rows": self._stack(order)}, str(tmp))
        _durable_replace(tmp, directory / name)
        doc = {
            "format": FORMAT,
            "version": version,
            "dim": self.dim,
            "max_rows": self.max_rows,
            "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
            "admission": self.admission,
            "entries": self._entries_doc(order),
            "file": name,
            "sha256": hashlib.sha256((directory / name).read_bytes()).hexdigest(),
        }
        tmp = directory / f".{MANIFEST_FILE}.tmp"
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        _durable_replace(tmp, directory / MANIFEST_FILE)
        for old in directory.glob("feedback_bank-*.safetensors"):
            if old.name != name:
                old.unlink()
        return version

    @classmethod
    def load(cls, directory: Path) -> FeedbackBank:
        """Rebuild the bank of the last checkpoint in `directory`.

        Raises:
            ArtifactMismatchError: missing or unreadable files, a file hash or
                version that disagrees with the manifest.
        """
        try:
            doc = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
            data = (directory / doc["file"]).read_bytes()
            if hashlib.sha256(data).hexdigest() != doc["sha256"]:
                raise ArtifactMismatchError(f"{doc['file']}: sha256 mismatch")
            rows = load_file(str(directory / doc["file"]))["rows"]
            bank = cls(int(doc["dim"]), int(doc["max_rows"]))
            bank.offsets = {int(p): int(o) for p, o in doc["offsets"].items()}
            bank.admission = list(doc.get("admission", []))
            for (sha, label, age, part, off), row in zip(
                doc["entries"], rows, strict=True
            ):
                bank._entries[str(sha)] = _Entry(label, int(age), part, off, row)
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise ArtifactMismatchError(f"feedback bank in {directory}: {exc}") from exc
        if bank.version() != doc["version"]:
            raise ArtifactMismatchError(f"feedback bank in {directory}: bad version")
        return bank

    @classmethod
    def open(cls, directory: Path, dim: int, max_rows: int) -> FeedbackBank:
        """The checkpointed bank in `directory`, or an empty one if there is none.

        Raises:
            ArtifactMismatchError: a checkpoint exists with another ``dim``.
        """
        if not (directory / MANIFEST_FILE).exists():
            return cls(dim, max_rows)
        bank = cls.load(directory)
        if bank.dim != dim:
            raise ArtifactMismatchError(f"feedback bank dim {bank.dim} != {dim}")
        bank.max_rows = max_rows
        bank._evict()
        return bank


@dataclass(frozen=True)
class BankGeometry:
    """What the learner needs of the served artifact to make rows its kNN head uses.

    Attributes:
        layout: The encoder's flat-row layout.
        view: The kNN head's view of the flat rows (the bank's width is its dim).
        policy: The versioned preprocessing policy id, e.g. ``clip_default@1``.
    """

    layout: FeatureLayout
    view: FeatureView
    policy: str


def bank_geometry(artifacts_dir: Path) -> BankGeometry:
    """Read `BankGeometry` from ``manifest.json`` (the first kNN head by name).

    Reads only these fields, without `serving.artifacts` (which loads every head
    kind, faiss and torch included), so the worker image can run the learner.

    Raises:
        ArtifactMismatchError: no readable manifest, or it has no kNN head.
    """
    path = artifacts_dir / "manifest.json"  # serving.artifacts.MANIFEST_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        enc = doc["encoder"]
        knn = sorted(n for n, h in doc["heads"].items() if h["kind"] == "knn")
        if not knn:
            raise ArtifactMismatchError(f"{path}: the artifact has no kNN head")
        return BankGeometry(
            FeatureLayout(
                int(enc["embed_dim"]), int(enc["n_blocks"]), int(enc["block_dim"])
            ),
            FeatureView.from_dict(doc["heads"][knn[0]]["params"]["view"]),
            str(enc["policy"]),
        )
    except (OSError, KeyError, TypeError, ValueError, InvalidInputError) as exc:
        raise ArtifactMismatchError(f"{path}: {exc}") from exc


def _durable_replace(tmp: Path, target: Path) -> None:
    """Flush `tmp` to disk, rename it over `target`, flush the directory."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(target)
    dfd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
