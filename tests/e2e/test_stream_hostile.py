"""Hostile inputs through the REAL worker (subprocess), REAL Tansu and tritonserver.

The fast subset of `bench.hostile` (``make hostile`` runs them all); each case's
expected outcome (a verdict or its DLQ class) is written next to it there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.hostile import VERDICT, cases, run_cases
from bench.rig import Rig
from serving.triton.server import TritonServer
from stream.dev.broker import TansuBroker


@pytest.mark.parametrize("runner", ["aiokafka"])
async def test_hostile_inputs_get_their_expected_outcome(
    runner: str, broker: TansuBroker, triton: TritonServer, tmp_path: Path
) -> None:
    chosen = [c for c in cases() if c.fast]
    rig = Rig(broker, triton, tmp_path, partitions=1)
    await rig.create_topics()
    try:
        results = await run_cases(rig, runner, chosen, timeout_s=30.0)
    finally:
        await rig.answers.stop()
    got = {r.case.name: r.outcome for r in results}
    assert got == {c.name: c.expected for c in chosen}
    assert VERDICT in got.values()
