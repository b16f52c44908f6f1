"""End to end: REAL Tansu broker, REAL tritonserver, the worker as a subprocess.

Every test runs for both runners (aiokafka and faust) with the same assertions.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from stream_harness import (
    PARTITIONS,
    StreamCase,
    WorkerProcess,
    file_events,
    forwarder,
    inline_event,
    uri_event,
)

from serving.local_process import free_port
from serving.triton.server import ServerOptions, TritonServer
from stream.dev.broker import TansuBroker
from stream.dev.testing import bomb_png, truncated_jpeg
from stream.runners.common import ASSIGNORS

RUNNERS = ("aiokafka", "faust")
HEADS = {"knn_k1", "linear_probe", "mlp", "rine"}


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.ensure_stopped()


def _images(images_dir: Path, n: int) -> list[Path]:
    reals, fakes = sorted(images_dir.glob("real_*")), sorted(images_dir.glob("fake_*"))
    mixed = [p for pair in zip(reals, fakes, strict=False) for p in pair]
    return mixed[:n]


def _poison() -> dict[str, tuple[bytes, str]]:
    return {
        "p-truncated": (inline_event("p-truncated", truncated_jpeg()), "truncated"),
        "p-zero": (inline_event("p-zero", b""), "empty"),
        "p-text": (inline_event("p-text", b"not an image at all"), "not_an_image"),
        "p-b64": (
            inline_event("p-b64", b"x" * 30).replace(b'"eHh4', b'"!Hh4'),
            "bad_base64",
        ),
        "p-oversize": (inline_event("p-oversize", b"\xff" * 300_000), "too_large"),
        "p-bomb": (inline_event("p-bomb", bomb_png()), "decompression_bomb"),
        "p-json": (b'{"image_id": "p-json", "uri": ', "bad_json"),
        "p-fields": (json.dumps({"image_id": "p-fields"}).encode(), "schema"),
        "p-host": (
            uri_event("p-host", "https://evil.example.net/a.jpg"),
            "uri_not_allowed",
        ),
    }


@pytest.mark.parametrize("runner", RUNNERS)
async def test_e2e_n_images_in_n_verdicts_out_and_poison_to_dlq(
    runner: str,
    broker: TansuBroker,
    triton: TritonServer,
    images_dir: Path,
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    case = StreamCase(broker.bootstrap, triton.grpc_url)
    await case.create_topics()
    good, ids = file_events(_images(images_dir, 8), "img-")
    poison = _poison()
    # poison in the middle: good events after it must still get verdicts
    await case.produce(good[:4] + [p for p, _c in poison.values()] + good[4:])
    workers.append(WorkerProcess(runner, case.env(), tmp_path))
    verdicts = await case.verdicts_read(len(good), 120)
    assert sorted(v["image_id"] for v in verdicts) == sorted(ids), workers[0].log_tail()
    for v in verdicts:
        assert v["versions"]["policy"] == "clip_default@1"
        assert set(v["head_scores"]) == HEADS
        assert v["nearest_exemplars"]
        assert v["source"]["topic"] == case.uploads
    dlq = await case.dlq_read(len(poison), 60)
    by_class = sorted(h.error_class for _v, h in dlq)
    assert by_class == sorted(c for _p, c in poison.values())
    assert {value for value, _h in dlq} == {p for p, _c in poison.values()}
    total = len(good) + len(poison)
    assert await case.committed_total_reaches(total) == total
    assert workers[0].terminate() == 0


@pytest.mark.parametrize("runner", RUNNERS)
async def test_e2e_sigkill_mid_batch_then_restart_loses_nothing(
    runner: str,
    broker: TansuBroker,
    triton: TritonServer,
    images_dir: Path,
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    case = StreamCase(broker.bootstrap, triton.grpc_url)
    await case.create_topics()
    payloads, ids = file_events(_images(images_dir, 14), "k-")
    await case.produce(payloads)
    env = case.env(SYNTHGUARD_WORKER__MAX_CONCURRENT_BATCHES="1")
    workers.append(WorkerProcess(runner, env, tmp_path))
    first = await case.verdicts_read(4, 120)
    workers[0].kill()  # SIGKILL: no drain, no commit, no LeaveGroup
    assert 4 <= len(first) < len(ids), "kill came too late to be mid-stream"
    workers.append(WorkerProcess(runner, env, tmp_path))
    counts = await case.ids_verdicted(set(ids), 180)
    assert set(counts) == set(ids), workers[-1].log_tail()
    duplicates = sum(counts.values()) - len(ids)
    # only what was in flight when killed: at most two batches of 4
    assert duplicates <= 8, counts
    assert await case.committed_total_reaches(len(ids)) == len(ids)
    assert workers[-1].terminate() == 0


# a bug in our code, loaded into the worker process through a sitecustomize module
BUG = """
from stream.pipeline import Pipeline

async def _bug(self, batch):
    raise RuntimeError("injected bug")

Pipeline.handle_batch = _bug
"""


@pytest.mark.parametrize("runner", RUNNERS)
async def test_e2e_a_bug_stops_without_commit_then_restart_redelivers(
    runner: str,
    broker: TansuBroker,
    triton: TritonServer,
    images_dir: Path,
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    case = StreamCase(broker.bootstrap, triton.grpc_url)
    await case.create_topics()
    payloads, ids = file_events(_images(images_dir, 4), "bug-")
    await case.produce(payloads)
    (tmp_path / "bug").mkdir()
    (tmp_path / "bug" / "sitecustomize.py").write_text(BUG)
    env = case.env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "bug"), env["PYTHONPATH"]])
    workers.append(WorkerProcess(runner, env, tmp_path))
    # generous: faust's start + group join + clean stop on 2 loaded cores
    assert await asyncio.to_thread(workers[0].proc.wait, 240) == 2  # FatalError
    assert "injected bug" in workers[0].err.read_text(errors="replace")
    assert await case.committed_total() == 0  # the batch is not skipped
    assert await case.dlq_read(1, 2) == []  # nor turned into DLQ records
    workers.append(WorkerProcess(runner, case.env(), tmp_path))
    counts = await case.ids_verdicted(set(ids), 240)  # redelivered after the restart
    assert set(counts) == set(ids), workers[-1].log_tail()
    assert await case.committed_total_reaches(len(ids)) == len(ids)
    assert workers[-1].terminate() == 0


@pytest.fixture
def own_triton(model_repo: Path, tmp_path: Path) -> Iterator[TritonServer]:
    """A Triton of this test's own, restartable on the same ports."""
    first = TritonServer(model_repo, ServerOptions(), work_dir=tmp_path / "triton")
    with first:
        yield first


@pytest.mark.parametrize("runner", RUNNERS)
async def test_e2e_triton_outage_holds_commits_then_resumes(
    runner: str,
    broker: TansuBroker,
    own_triton: TritonServer,
    model_repo: Path,
    images_dir: Path,
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    case = StreamCase(broker.bootstrap, own_triton.grpc_url)
    await case.create_topics()
    files = _images(images_dir, 10)
    before, before_ids = file_events(files[:4], "b-")
    during, during_ids = file_events(files[4:], "d-")
    await case.produce(before)
    workers.append(WorkerProcess(runner, case.env(), tmp_path))
    ready_url = (await workers[0].endpoints())["ready"]
    assert len(await case.verdicts_read(4, 120)) == 4
    assert await case.committed_total_reaches(4) == 4
    ports = (own_triton.http_port, own_triton.grpc_port, own_triton.metrics_port)
    own_triton.stop()
    await case.produce(during)
    await asyncio.sleep(4.0)  # consumed, retried, held
    assert len(await case.verdicts_read(5, 1)) == 4  # nothing new
    assert await case.committed_total() == 4  # nothing committed past held events
    assert await _status(ready_url) == 503
    again = ServerOptions(http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2])
    with TritonServer(model_repo, again, work_dir=tmp_path / "triton2"):
        counts = await case.ids_verdicted(set(before_ids) | set(during_ids), 120)
        assert set(counts) == set(before_ids) | set(during_ids), workers[0].log_tail()
        assert await case.committed_total_reaches(10) == 10
        assert await _status(ready_url) == 200
        assert workers[0].terminate() == 0


@pytest.mark.parametrize("runner", RUNNERS)
async def test_e2e_fatal_group_error_exits_nonzero(
    runner: str,
    broker: TansuBroker,
    triton: TritonServer,
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    # the group's other member speaks only "range", which the worker's assignor
    # is not: the broker refuses the worker's join (InconsistentGroupProtocol)
    from aiokafka import AIOKafkaConsumer

    case = StreamCase(broker.bootstrap, triton.grpc_url)
    await case.create_topics()
    member = AIOKafkaConsumer(
        case.uploads, bootstrap_servers=broker.bootstrap, group_id=case.group,
        partition_assignment_strategy=(ASSIGNORS["range"],),
        session_timeout_ms=10_000, heartbeat_interval_ms=500,
    )  # fmt: skip
    await member.start()
    try:
        while len(member.assignment()) < PARTITIONS:
            await member.getmany(timeout_ms=200)
        workers.append(WorkerProcess(runner, case.env(), tmp_path))
        waited = asyncio.create_task(asyncio.to_thread(workers[0].proc.wait, 120))
        while not waited.done():
            await member.getmany(timeout_ms=200)  # keeps the other member alive
        assert waited.result() == 2, workers[0].log_tail()
        if runner == "aiokafka":  # faust words the broker's error its own way
            err = workers[0].err.read_text(errors="replace")
            assert "InconsistentGroupProtocol" in err
        assert await case.committed_total() == 0
    finally:
        await member.stop()


@pytest.mark.parametrize("runner", RUNNERS)
async def test_e2e_worker_started_before_its_broker_waits_then_serves(
    runner: str,
    broker: TansuBroker,
    triton: TritonServer,
    images_dir: Path,
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    # nothing listens at the worker's bootstrap address until a forwarder to the
    # real broker opens there (so the topics exist before anything answers)
    case = StreamCase(broker.bootstrap, triton.grpc_url)
    await case.create_topics()
    events, ids = file_events(_images(images_dir, 4), "late-")
    await case.produce(events)
    late = free_port()
    env = case.env(SYNTHGUARD_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{late}")
    workers.append(WorkerProcess(runner, env, tmp_path))
    ready_url = (await workers[0].endpoints())["ready"]
    await asyncio.sleep(8.0)  # a bootstrap on a closed port fails within a second
    assert workers[0].proc.poll() is None, workers[0].log_tail()
    assert await _status(ready_url.replace("/readyz", "/healthz")) == 200
    assert await _status(ready_url) == 503
    async with forwarder(late, broker.port):
        counts = await case.ids_verdicted(set(ids), 120)
        assert set(counts) == set(ids), workers[0].log_tail()
        assert await case.committed_total_reaches(len(ids)) == len(ids)
        assert await _status(ready_url) == 200
        assert workers[0].terminate() == 0


@pytest.mark.parametrize("runner", RUNNERS)
async def test_e2e_sigterm_while_waiting_for_the_broker_exits_cleanly(
    runner: str, triton: TritonServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    case = StreamCase(f"127.0.0.1:{free_port()}", triton.grpc_url)  # nothing there
    workers.append(WorkerProcess(runner, case.env(), tmp_path))
    ready_url = (await workers[0].endpoints())["ready"]
    await asyncio.sleep(5.0)
    assert await _status(ready_url) == 503
    assert workers[0].terminate() == 0, workers[0].log_tail()


async def _status(url: str) -> int:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status
