"""Adapter: get an upload's bytes: inline base64, ``file://`` or allowlisted ``https://``.

Every refusal is a typed `PoisonMessageError` (stage ``fetch``) with a stable error
class: ``bad_base64``, ``too_large``, ``uri_not_allowed``, ``not_found``,
``http_status``, ``fetch_unavailable``. ``file://`` reads regular files only (a FIFO,
device or socket is ``uri_not_allowed``, a directory ``not_found``): opened
non-blocking, checked with ``fstat``, size capped before reading, read under the
fetch timeout. An https host that stays unreachable after
the configured attempts is poison too, not transient: one dead link must not stall
its partition, and the DLQ record can be replayed. Redirects are not followed (they
would bypass the allowlist).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import ssl
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiohttp

from stream.decode import MAX_IMAGE_BYTES
from stream.errors import PoisonMessageError

logger = logging.getLogger(__name__)
_STAGE = "fetch"
_CHUNK = 1024 * 1024
# non-blocking: opening a FIFO must not wait for a writer; no controlling terminal
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY


class ImageRef(Protocol):
    """Where an event's image is: exactly one of ``uri`` and ``data_b64``.

    `stream.events.UploadEvent` and `stream.events.FeedbackEvent` both are one.
    """

    @property
    def uri(self) -> str | None:
        """``file://`` or ``https://`` claim check."""
        ...

    @property
    def data_b64(self) -> str | None:
        """Inline base64 bytes."""
        ...


@dataclass(frozen=True)
class FetchLimits:
    """What may be fetched, and how much (see `stream.settings.FetchSettings`)."""

    allowed_hosts: tuple[str, ...] = ()
    file_roots: tuple[Path, ...] = ()
    allow_file: bool = True
    max_bytes: int = MAX_IMAGE_BYTES
    inline_max_bytes: int = 900_000
    timeout_s: float = 10.0
    attempts: int = 3
    backoff_s: float = 0.2


def _poison(message: str, error_class: str) -> PoisonMessageError:
    return PoisonMessageError(message, error_class=error_class, stage=_STAGE)


def _check_regular(path: Path, mode: int) -> None:
    """Only regular files are read: a FIFO or a device could block or never end."""
    if stat.S_ISDIR(mode):
        raise _poison(f"{path}: is a directory", "not_found")
    if not stat.S_ISREG(mode):
        raise _poison(f"{path}: not a regular file", "uri_not_allowed")


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Whether ``host`` is listed, exactly or under a ``*.domain`` entry."""
    host = host.lower().rstrip(".")
    for entry in (a.lower().rstrip(".") for a in allowed):
        if entry.startswith("*.") and host.endswith(entry[1:]):
            return True
        if host == entry:
            return True
    return False


@dataclass
class Fetcher:
    """Fetches image bytes for upload events.

    Args:
        limits: Allowlists and size caps.
        ssl_context: TLS settings for https (None: the system trust store).
    """

    limits: FetchLimits = field(default_factory=FetchLimits)
    ssl_context: ssl.SSLContext | None = None
    _session: aiohttp.ClientSession | None = field(default=None, init=False)

    async def fetch(self, event: ImageRef) -> bytes:
        """The image bytes of `event`.

        Raises:
            PoisonMessageError: the bytes cannot (ever) be fetched; see module doc.
        """
        if event.data_b64 is not None:
            return self._inline(event.data_b64)
        uri = event.uri or ""  # the events guarantee exactly one source
        parts = urlsplit(uri)
        if parts.scheme == "file" and self.limits.allow_file:
            return await self._file(parts.netloc, unquote(parts.path))
        if parts.scheme == "https" and parts.hostname:
            if not host_allowed(parts.hostname, self.limits.allowed_hosts):
                raise _poison(f"host {parts.hostname!r} not allowed", "uri_not_allowed")
            return await self._https(uri)
        raise _poison(f"URI scheme {parts.scheme!r} not allowed", "uri_not_allowed")

    def _inline(self, data_b64: str) -> bytes:
        if len(data_b64) * 3 // 4 > self.limits.inline_max_bytes + 3:
            raise _poison(
                f"inline image over {self.limits.inline_max_bytes} bytes", "too_large"
            )
        try:
            data = base64.b64decode(data_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _poison(f"data_b64 is not base64: {exc}", "bad_base64") from exc
        if len(data) > self.limits.inline_max_bytes:
            raise _poison(
                f"inline image over {self.limits.inline_max_bytes} bytes", "too_large"
            )
        return data

    async def _file(self, host: str, raw_path: str) -> bytes:
        if host not in ("", "localhost"):
            raise _poison(f"file URI host {host!r} not allowed", "uri_not_allowed")
        path = Path(raw_path)
        if not path.is_absolute():
            raise _poison("file URI path must be absolute", "uri_not_allowed")
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._read_file, path), self.limits.timeout_s
            )
        except TimeoutError as exc:
            raise _poison(
                f"{path}: no data within {self.limits.timeout_s} s", "fetch_unavailable"
            ) from exc

    def _read_file(self, path: Path) -> bytes:
        resolved = path.resolve()
        roots = self.limits.file_roots
        if roots and not any(resolved.is_relative_to(r.resolve()) for r in roots):
            raise _poison(f"{path} is outside the allowed roots", "uri_not_allowed")
        try:
            # refuse before opening: opening a device can have side effects
            _check_regular(path, resolved.stat().st_mode)
            fd = os.open(resolved, _OPEN_FLAGS)
        except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
            raise _poison(f"{path}: {exc.strerror}", "not_found") from exc
        except OSError as exc:  # ENXIO (a socket), ELOOP (swapped for a symlink)
            raise _poison(f"{path}: {exc.strerror}", "uri_not_allowed") from exc
        try:
            info = os.fstat(fd)  # the file actually opened, not the one stat()ed
            _check_regular(path, info.st_mode)
            if info.st_size > self.limits.max_bytes:
                raise _poison(
                    f"{info.st_size} bytes over the {self.limits.max_bytes} limit",
                    "too_large",
                )
            return self._read_fd(path, fd)
        finally:
            os.close(fd)

    def _read_fd(self, path: Path, fd: int) -> bytes:
        limit, deadline = (
            self.limits.max_bytes,
            time.monotonic() + self.limits.timeout_s,
        )
        chunks, total = [], 0
        while chunk := os.read(fd, min(_CHUNK, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # the file grew after fstat
                raise _poison(f"{path}: over the {limit} byte limit", "too_large")
            if time.monotonic() > deadline:
                raise _poison(f"{path}: read too slow", "fetch_unavailable")
        return b"".join(chunks)

    async def _https(self, uri: str) -> bytes:
        delay = self.limits.backoff_s
        for attempt in range(1, self.limits.attempts + 1):
            try:
                return await self._get(uri)
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt == self.limits.attempts:
                    raise _poison(
                        f"unreachable after {attempt} attempts: {exc!r}",
                        "fetch_unavailable",
                    ) from exc
                logger.warning("fetch attempt %d failed: %r", attempt, exc)
            await asyncio.sleep(delay)
            delay = min(2 * delay, 2.0)
        raise _poison("no fetch attempt made", "fetch_unavailable")

    async def _get(self, uri: str) -> bytes:
        limit = self.limits.max_bytes
        async with self._client().get(uri, allow_redirects=False) as resp:
            if resp.status >= 500:
                raise aiohttp.ClientResponseError(
                    resp.request_info, (), status=resp.status
                )
            if resp.status != 200:
                raise _poison(f"HTTP {resp.status}", "http_status")
            if (resp.content_length or 0) > limit:
                raise _poison(f"Content-Length over the {limit} limit", "too_large")
            chunks, total = [], 0
            async for chunk in resp.content.iter_chunked(64 * 1024):
                total += len(chunk)
                if total > limit:
                    raise _poison(f"body over the {limit} byte limit", "too_large")
                chunks.append(chunk)
        return b"".join(chunks)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.limits.timeout_s)
            connector = aiohttp.TCPConnector(ssl=self.ssl_context or True)
            self._session = aiohttp.ClientSession(timeout=timeout, connector=connector)
        return self._session

    async def close(self) -> None:
        """Close the HTTP session, if one was opened."""
        if self._session is not None:
            await self._session.close()
            self._session = None
