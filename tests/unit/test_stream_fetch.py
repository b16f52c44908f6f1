from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from stream.dev.testing import jpeg_bytes
from stream.errors import PoisonMessageError
from stream.events import UploadEvent, utc_now
from stream.fetch import Fetcher, FetchLimits, host_allowed

JPEG = jpeg_bytes()


def _event(**source: str) -> UploadEvent:
    return UploadEvent(image_id="i", uploaded_at=utc_now(), **source)


async def _fetch_error(fetcher: Fetcher, event: UploadEvent) -> str:
    with pytest.raises(PoisonMessageError) as info:
        await fetcher.fetch(event)
    assert info.value.stage == "fetch"
    return info.value.error_class


async def test_fetch_inline_and_its_limits() -> None:
    fetcher = Fetcher(FetchLimits(inline_max_bytes=len(JPEG)))
    assert await fetcher.fetch(_event(data_b64=base64.b64encode(JPEG).decode())) == JPEG
    big = base64.b64encode(JPEG + b"x" * 10).decode()
    assert await _fetch_error(fetcher, _event(data_b64=big)) == "too_large"
    assert await _fetch_error(fetcher, _event(data_b64="%%%not base64")) == "bad_base64"


async def test_fetch_file_uri_and_its_limits(tmp_path: Path) -> None:
    img = tmp_path / "in" / "a b.jpg"  # a space: URI-quoted
    img.parent.mkdir()
    img.write_bytes(JPEG)
    fetcher = Fetcher(FetchLimits(file_roots=(img.parent,), max_bytes=len(JPEG)))
    assert await fetcher.fetch(_event(uri=img.as_uri())) == JPEG
    missing = (img.parent / "nope.jpg").as_uri()
    assert await _fetch_error(fetcher, _event(uri=missing)) == "not_found"
    outside = tmp_path / "x.jpg"
    outside.write_bytes(JPEG)
    assert (
        await _fetch_error(fetcher, _event(uri=outside.as_uri())) == "uri_not_allowed"
    )
    (img.parent / "big.jpg").write_bytes(JPEG + b"x")
    big = (img.parent / "big.jpg").as_uri()
    assert await _fetch_error(fetcher, _event(uri=big)) == "too_large"
    remote = "file://otherhost/etc/passwd"
    assert await _fetch_error(fetcher, _event(uri=remote)) == "uri_not_allowed"
    no_files = Fetcher(FetchLimits(allow_file=False))
    assert await _fetch_error(no_files, _event(uri=img.as_uri())) == "uri_not_allowed"


def _unblock_fifo(fifo: Path) -> None:
    # a reader stuck in open() (the old code) returns once a writer comes and goes
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


async def test_fetch_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    fetcher = Fetcher(FetchLimits(file_roots=(tmp_path,)))
    try:
        error = await asyncio.wait_for(
            _fetch_error(fetcher, _event(uri=fifo.as_uri())), 3
        )
    finally:
        _unblock_fifo(fifo)
    assert error == "uri_not_allowed"


async def test_fetch_refuses_sockets_devices_and_directories(tmp_path: Path) -> None:
    sock_path = tmp_path / "s.jpg"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        fetcher = Fetcher(FetchLimits(file_roots=(tmp_path,)))
        assert await _fetch_error(fetcher, _event(uri=sock_path.as_uri())) == (
            "uri_not_allowed"
        )
    anywhere = Fetcher(FetchLimits())
    assert await _fetch_error(anywhere, _event(uri="file:///dev/zero")) == (
        "uri_not_allowed"
    )
    assert await _fetch_error(anywhere, _event(uri=tmp_path.as_uri())) == "not_found"


async def test_fetch_file_read_has_a_deadline(tmp_path: Path) -> None:
    class _Stuck(Fetcher):
        def _read_file(self, path: Path) -> bytes:
            time.sleep(1)
            return b""

    fetcher = _Stuck(FetchLimits(timeout_s=0.05))
    uri = (tmp_path / "a.jpg").as_uri()
    assert await _fetch_error(fetcher, _event(uri=uri)) == "fetch_unavailable"


@pytest.mark.parametrize(
    "uri",
    ["https://evil.example.net/a.jpg", "http://images.example.com/a.jpg", "ftp://x/y"],
)
async def test_fetch_refuses_disallowed_hosts_and_schemes(uri: str) -> None:
    fetcher = Fetcher(FetchLimits(allowed_hosts=("images.example.com",)))
    assert await _fetch_error(fetcher, _event(uri=uri)) == "uri_not_allowed"


def test_host_allowlist_wildcards() -> None:
    allowed = ("cdn.example.com", "*.uploads.example.org")
    assert host_allowed("CDN.example.com.", allowed)
    assert host_allowed("eu.uploads.example.org", allowed)
    assert not host_allowed("uploads.example.org.evil.com", allowed)
    assert not host_allowed("example.com", allowed)


@pytest.fixture
def tls_cert(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def https_server(
    tls_cert: tuple[Path, Path],
) -> AsyncIterator[tuple[str, ssl.SSLContext]]:
    cert, key = tls_cert
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_get("/ok.jpg", lambda _r: _response(web.Response(body=JPEG)))
    app.router.add_get("/gone.jpg", lambda _r: _response(web.Response(status=404)))
    app.router.add_get("/boom.jpg", lambda _r: _response(web.Response(status=503)))
    app.router.add_get("/big.jpg", lambda _r: _response(web.Response(body=JPEG * 4)))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx).start()
    port = runner.addresses[0][1]
    yield f"https://127.0.0.1:{port}", ssl.create_default_context(cafile=str(cert))
    await runner.cleanup()


async def _response(resp: web.Response) -> web.Response:
    return resp


async def test_fetch_https_from_an_allowed_host(
    https_server: tuple[str, ssl.SSLContext],
) -> None:
    base, client_ctx = https_server
    limits = FetchLimits(
        allowed_hosts=("127.0.0.1",), max_bytes=2 * len(JPEG), attempts=2, backoff_s=0
    )
    fetcher = Fetcher(limits, ssl_context=client_ctx)
    try:
        assert await fetcher.fetch(_event(uri=f"{base}/ok.jpg")) == JPEG
        cases = {"gone": "http_status", "boom": "fetch_unavailable", "big": "too_large"}
        for name, error_class in cases.items():
            event = _event(uri=f"{base}/{name}.jpg")
            assert await _fetch_error(fetcher, event) == error_class
    finally:
        await fetcher.close()
    untrusting = Fetcher(limits)  # the system store does not trust the test CA
    try:
        event = _event(uri=f"{base}/ok.jpg")
        assert await _fetch_error(untrusting, event) == "fetch_unavailable"
    finally:
        await untrusting.close()
