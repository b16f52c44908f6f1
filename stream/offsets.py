"""Domain: which offsets may be committed (pure; no Kafka import).

At-least-once means: commit a partition only up to the first offset whose verdict or
DLQ record has not been delivered yet. Offsets need not be consecutive integers
(compaction, transaction markers), so the tracker follows the offsets it was *given*,
never ``offset + 1`` arithmetic across gaps: the committable position is the lowest
outstanding offset, or one past the highest seen when nothing is outstanding.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class PartitionOffsets:
    """Outstanding and completed offsets of one partition."""

    def __init__(self) -> None:
        self._outstanding: list[int] = []  # sorted
        self._highest: int | None = None
        self._committed: int | None = None

    def add(self, offset: int) -> None:
        """Record a fetched offset; offsets must arrive in increasing order.

        Raises:
            ValueError: an offset at or below one already added.
        """
        if self._highest is not None and offset <= self._highest:
            raise ValueError(f"offset {offset} not above {self._highest}")
        self._outstanding.append(offset)
        self._highest = offset

    def done(self, offset: int) -> None:
        """Mark an offset delivered (verdict or DLQ record acknowledged).

        Raises:
            KeyError: an offset that is not outstanding.
        """
        i = bisect.bisect_left(self._outstanding, offset)
        if i == len(self._outstanding) or self._outstanding[i] != offset:
            raise KeyError(offset)
        del self._outstanding[i]

    @property
    def outstanding(self) -> int:
        """How many fetched offsets are not delivered yet."""
        return len(self._outstanding)

    def committable(self) -> int | None:
        """The position to commit (next offset to read), or None before any offset."""
        if self._outstanding:
            return self._outstanding[0]
        return None if self._highest is None else self._highest + 1

    def to_commit(self) -> int | None:
        """`committable` when it moved since the last `mark_committed`, else None."""
        pos = self.committable()
        if pos is None or (self._committed is not None and pos <= self._committed):
            return None
        return pos

    def mark_committed(self, position: int) -> None:
        """Remember a position the broker acknowledged."""
        self._committed = max(position, self._committed or position)


class OffsetTracker(Generic[K]):
    """`PartitionOffsets` per partition key (e.g. aiokafka's ``TopicPartition``)."""

    def __init__(self) -> None:
        self._parts: dict[K, PartitionOffsets] = {}

    def add(self, key: K, offsets: Iterable[int]) -> None:
        """Record fetched offsets of a partition, in increasing order."""
        part = self._parts.setdefault(key, PartitionOffsets())
        for offset in offsets:
            part.add(offset)

    def done(self, key: K, offset: int) -> None:
        """Mark one offset delivered."""
        self._parts[key].done(offset)

    def to_commit(self) -> dict[K, int]:
        """Positions that moved since last committed, by partition."""
        out = {}
        for key, part in self._parts.items():
            pos = part.to_commit()
            if pos is not None:
                out[key] = pos
        return out

    def mark_committed(self, positions: dict[K, int]) -> None:
        """Remember positions the broker acknowledged."""
        for key, pos in positions.items():
            if key in self._parts:
                self._parts[key].mark_committed(pos)

    @property
    def outstanding(self) -> int:
        """Undelivered offsets over all partitions."""
        return sum(p.outstanding for p in self._parts.values())

    def reset(self, keys: Iterable[K] | None = None) -> None:
        """Forget partitions (all when None), e.g. after they were revoked."""
        if keys is None:
            self._parts.clear()
            return
        for key in keys:
            self._parts.pop(key, None)
