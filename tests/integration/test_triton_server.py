"""`TritonServer` start-up and shutdown on an empty repository (ready in well under 1 s)."""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving import local_process
from serving.errors import InvalidInputError, MissingWeightsError
from serving.triton import install, server
from serving.triton.server import ServerOptions, TritonServer


@pytest.fixture
def empty_repo(tmp_path: Path) -> Path:
    try:
        install.locate_triton()
    except MissingWeightsError as exc:
        pytest.skip(f"needs nvidia-pytriton: {exc}")
    (tmp_path / "repo").mkdir()
    return tmp_path / "repo"


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_server_starts_ready_and_stops_cleanly(
    empty_repo: Path, tmp_path: Path
) -> None:
    srv = TritonServer(empty_repo, work_dir=tmp_path / "work")
    with srv:
        url = f"http://{srv.http_url}/v2/health/ready"
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.status == 200
        assert srv.running
    assert not srv.running
    assert srv.log_path.is_file()
    assert not (tmp_path / "work" / "backends").exists()


def test_server_picks_new_ports_when_one_was_taken(
    empty_repo: Path, tmp_path: Path, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = iter([taken_port])
    monkeypatch.setattr(
        server, "free_port", lambda: next(ports, None) or local_process.free_port()
    )
    with TritonServer(empty_repo, work_dir=tmp_path / "work") as srv:
        assert taken_port not in (srv.http_port, srv.grpc_port, srv.metrics_port)


def test_missing_wheel_names_the_package_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(install.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        MissingWeightsError, match=r"pip install nvidia-pytriton==0\.7\.0"
    ):
        TritonServer(
            Path("unused"), ServerOptions(http_port=1, grpc_port=2, metrics_port=3)
        ).start()


def test_server_refuses_paths_the_python_backend_cannot_start_from(
    empty_repo: Path, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInputError, match="shell characters"):
        TritonServer(empty_repo, work_dir=tmp_path / "has (parens)").start()


def test_server_removes_its_own_temp_dir_on_stop(
    empty_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    with TritonServer(empty_repo) as srv:
        assert srv.work_dir.parent == tmp_path / "tmp"
    assert list((tmp_path / "tmp").iterdir()) == []


def test_server_keeps_its_temp_dir_and_log_when_it_died(
    empty_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with TritonServer(empty_repo) as srv:
        assert srv.pid is not None
        os.kill(srv.pid, signal.SIGKILL)
        while srv.running:
            time.sleep(0.05)
    assert srv.log_path.is_file()
