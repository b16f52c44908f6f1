from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.offsets import OffsetTracker, PartitionOffsets


def test_offsets_commit_stops_at_first_outstanding() -> None:
    part = PartitionOffsets()
    for o in (10, 11, 12):
        part.add(o)
    part.done(11)
    part.done(12)
    assert part.committable() == 10
    part.done(10)
    assert part.committable() == 13


def test_offsets_follow_given_offsets_across_gaps() -> None:
    part = PartitionOffsets()
    for o in (3, 7, 20):  # compacted or transaction-marker gaps
        part.add(o)
    part.done(3)
    assert part.committable() == 7
    part.done(20)
    assert part.committable() == 7
    part.done(7)
    assert part.committable() == 21


def test_offsets_reject_out_of_order_and_unknown() -> None:
    part = PartitionOffsets()
    part.add(5)
    with pytest.raises(ValueError, match="not above"):
        part.add(5)
    with pytest.raises(KeyError):
        part.done(6)


def test_tracker_reports_only_moved_positions() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.add("a", [0, 1])
    tracker.add("b", [0])
    tracker.done("a", 0)
    assert tracker.to_commit() == {"a": 1, "b": 0}
    tracker.mark_committed({"a": 1, "b": 0})
    assert tracker.to_commit() == {}
    tracker.done("b", 0)
    assert tracker.to_commit() == {"b": 1}
    assert tracker.outstanding == 1
    tracker.reset(["a"])
    assert tracker.outstanding == 0


@st.composite
def fetched_and_order(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    gaps = draw(st.lists(st.integers(1, 5), min_size=1, max_size=40))
    offsets, pos = [], draw(st.integers(0, 1000))
    for g in gaps:
        pos += g
        offsets.append(pos)
    order = draw(st.permutations(offsets))
    n_done = draw(st.integers(0, len(offsets)))
    return offsets, list(order[:n_done])


@settings(max_examples=300, deadline=None)
@given(fetched_and_order())
def test_tracker_never_commits_past_a_gap(case: tuple[list[int], list[int]]) -> None:
    offsets, completed = case
    part = PartitionOffsets()
    for o in offsets:
        part.add(o)
    last = part.committable()
    done: set[int] = set()
    for o in completed:
        part.done(o)
        done.add(o)
        pos = part.committable()
        assert pos is not None
        assert last is not None
        assert pos >= last
        # everything below the position is delivered, the position itself is not
        assert all(x in done for x in offsets if x < pos)
        assert pos not in done
        last = pos
    if len(done) == len(offsets):
        assert part.committable() == offsets[-1] + 1
