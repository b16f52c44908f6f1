"""Hostile-input suite: generated files through the real worker, one at a time.

Every case is made by this script (nothing binary is committed) and names its
expected outcome next to it: ``verdict`` or the DLQ class. Each is sent as a
``file://`` claim check under the worker's single allowed root (special files,
symlinks and paths outside the root included). Per case: the answer, the time from
publish acknowledged to answer sent, and the worker's peak RSS during the case
(``VmHWM`` reset before each case) and its growth over the RSS before it.

    python -m bench.hostile [--runner aiokafka|faust] [--fast]

``--fast`` is the subset the integration test runs. Exit 1 if any outcome differs.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__":  # run as a script: bench/ would shadow the packages
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]

import numpy as np
from PIL import Image, features

from bench.rig import Rig, reset_peak, stop_on_sigterm, tiny_repo, vm_kib
from stream.events import UploadEvent, utc_now

VERDICT = "verdict"
Maker = Callable[[Path], Path]  # writes the case under the root, returns its path


@dataclass(frozen=True)
class Case:
    """One hostile input: how to make it and what the worker must answer."""

    name: str
    expected: str  # "verdict" or a DLQ error class
    make: Maker
    fast: bool = True  # part of the integration test's subset


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _save(img: Image.Image, fmt: str, **kw: object) -> Maker:
    def make(path: Path) -> Path:
        img.save(path, format=fmt, **kw)
        return path

    return make


def _raw(data: bytes | Callable[[], bytes]) -> Maker:
    def make(path: Path) -> Path:
        path.write_bytes(data() if callable(data) else data)
        return path

    return make


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _png_with(chunks: list[bytes]) -> bytes:
    """A valid 32x32 PNG with `chunks` inserted before its image data."""
    png = _encode(_noise(32, 32), "PNG")
    idat = png.index(b"IDAT") - 4
    return png[:idat] + b"".join(chunks) + png[idat:]


def _ztxt_bomb(mib: int) -> bytes:
    """One zTXt chunk that inflates to `mib` MiB (Pillow's chunk limit is 1 MiB)."""
    body = b"Comment\x00\x00" + zlib.compress(b"A" * (mib << 20), 9)
    return _png_with([_chunk(b"zTXt", body)])


def _ztxt_many(n: int) -> bytes:
    """`n` zTXt chunks of 1 MiB - 1 each: past Pillow's 64 MiB text total."""
    body = b"Comment\x00\x00" + zlib.compress(b"A" * ((1 << 20) - 1), 9)
    return _png_with([_chunk(b"zTXt", body)] * n)


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + _chunk(b"IEND", b"")
    )


def _png_rows(width: int, height: int) -> bytes:
    """A real ``width × height`` greyscale PNG, written row by row (tiny, zeros)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", data)
        + _chunk(b"IEND", b"")
    )


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose SOF0 header is patched to claim ``width × height``."""
    data = bytearray(_encode(_noise(16, 16), "JPEG", quality=90))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _gif_claiming(width: int, height: int) -> bytes:
    data = bytearray(_encode(_noise(8, 8).convert("P"), "GIF"))
    struct.pack_into("<HH", data, 6, width, height)
    return bytes(data)


def _jpeg_with_segments(n: int) -> bytes:
    """A JPEG carrying `n` 64 KiB COM segments before its image data."""
    jpeg = _encode(_noise(64, 64), "JPEG", quality=90)
    seg = b"\xff\xfe" + struct.pack(">H", 65535) + b"x" * 65533
    return jpeg[:2] + seg * n + jpeg[2:]


def _gif_animated(path: Path) -> Path:
    frames = [_noise(64, 48, seed=i).convert("P") for i in range(12)]
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:])
    return path


def _webp_animated(path: Path) -> Path:
    frames = [_noise(64, 48, seed=i) for i in range(6)]
    frames[0].save(path, format="WEBP", save_all=True, append_images=frames[1:])
    return path


def _apng(path: Path) -> Path:
    frames = [_noise(64, 48, seed=i) for i in range(4)]
    frames[0].save(path, format="PNG", save_all=True, append_images=frames[1:])
    return path


def _jpeg_rotated(path: Path) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    _noise(64, 32).save(path, format="JPEG", exif=exif.tobytes())
    return path


def _fifo(path: Path) -> Path:
    import os

    os.mkfifo(path)
    return path


def _socket(path: Path) -> Path:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))  # left bound: the file stays a socket
    _SOCKETS.append(sock)
    return path


_SOCKETS: list[socket.socket] = []


def _device(path: Path) -> Path:
    path.symlink_to("/dev/zero")  # resolves outside the root and to a device
    return path


def _link_escape(path: Path) -> Path:
    path.symlink_to("/etc/hostname")
    return path


def _link_inside(path: Path) -> Path:
    target = path.with_name(path.name + ".target.jpg")
    _noise(64, 48).save(target, format="JPEG")
    path.symlink_to(target.name)
    return path


def _directory(path: Path) -> Path:
    path.mkdir()
    return path


def _missing(path: Path) -> Path:
    return path


def _outside(path: Path) -> Path:
    del path
    return Path("/etc/hostname")


def _truncate(data: bytes, keep: float) -> Maker:
    return _raw(lambda: data[: max(1, int(len(data) * keep))])


# Every Pillow format it can identify and write; the worker's default allowlist is
# JPEG, PNG, WebP and GIF (MPO: a JPEG with a multi-picture index, what many
# cameras write, identified by Pillow as MPO).
ALLOWED = {"JPEG", "PNG", "WEBP", "GIF", "MPO"}


def _pillow_formats() -> list[Case]:
    Image.init()
    img = _noise(64, 48)
    skip = {"PDF", "PALM", "XVTHUMB", "EPS", "H5", "HDF5", "BUFR", "GRIB", "FITS"}
    cases = []
    for fmt in sorted(set(Image.SAVE) & set(Image.OPEN)):
        if fmt in skip:
            continue
        if fmt == "AVIF" and not features.check("avif"):
            continue
        src = img
        if fmt in ("XBM",):
            src = img.convert("1")
        elif fmt in ("BLP", "SPIDER", "MSP"):
            src = img.convert({"BLP": "P", "SPIDER": "F", "MSP": "1"}[fmt])
        elif fmt == "DDS":
            src = img.convert("RGBA")
        try:
            _encode(src, fmt)
        except (OSError, ValueError, KeyError):
            continue  # no encoder in this build (e.g. WMF)
        expected = VERDICT if fmt in ALLOWED else "format_not_allowed"
        cases.append(Case(f"format_{fmt.lower()}", expected, _save(src, fmt)))
    return cases


def cases() -> list[Case]:
    """Every case, with its expected outcome."""
    jpeg = _encode(_noise(256, 256), "JPEG", quality=95)
    png = _encode(_noise(128, 128), "PNG")
    gif = _encode(_noise(128, 128).convert("P"), "GIF")
    webp = _encode(_noise(128, 128), "WEBP")
    return [
        # extreme aspect ratios: scored with bounded memory (issue 11.1)
        Case("aspect_png_100000x1", VERDICT, _raw(lambda: _png_rows(100_000, 1))),
        Case("aspect_png_1x100000", VERDICT, _raw(lambda: _png_rows(1, 100_000))),
        Case("aspect_png_1x1", VERDICT, _save(_noise(1, 1), "PNG")),
        Case("aspect_jpeg_65000x2", VERDICT, _save(_noise(65000, 2), "JPEG")),
        Case("aspect_gif_20000x3", VERDICT, _save(_noise(20000, 3).convert("P"), "GIF")),
        Case("big_png_6000x6000", VERDICT, _raw(lambda: _png_rows(6000, 6000)), False),
        # special files under the root (issue 11.2)
        Case("special_fifo", "uri_not_allowed", _fifo),
        Case("special_socket", "uri_not_allowed", _socket),
        Case("special_device_link", "uri_not_allowed", _device),
        Case("special_directory", "not_found", _directory),
        Case("special_missing", "not_found", _missing),
        Case("special_link_escape", "uri_not_allowed", _link_escape),
        Case("special_outside_root", "uri_not_allowed", _outside),
        Case("special_link_inside", VERDICT, _link_inside),
        # metadata bombs (issue 11.3)
        Case("meta_png_ztxt_64mib", "too_large", _raw(lambda: _ztxt_bomb(64))),
        Case("meta_png_ztxt_70x1mib", "too_large", _raw(lambda: _ztxt_many(70))),
        Case("meta_jpeg_com_150x64kib", VERDICT, _raw(lambda: _jpeg_with_segments(150))),
        Case("meta_jpeg_exif_rotated", VERDICT, _jpeg_rotated),
        # decompression bombs: refused from the header, before pixels
        Case("bomb_png_header_100k", "decompression_bomb", _raw(lambda: _png_header(100_000, 100_000))),
        Case("bomb_png_real_8000x8000", "decompression_bomb", _raw(lambda: _png_rows(8000, 8000)), False),
        Case("bomb_jpeg_header_60000", "decompression_bomb", _raw(lambda: _jpeg_claiming(60000, 60000))),
        Case("bomb_gif_header_65535", "decompression_bomb", _raw(lambda: _gif_claiming(65535, 65535))),
        Case("too_large_30mib", "too_large", _raw(lambda: jpeg + b"\x00" * (30 << 20)), False),
        # polyglots: an image with something else appended is scored; the reverse is not
        Case("poly_gif_js", VERDICT, _raw(gif + b"\n/*/=alert(1)//*/\n")),
        Case("poly_jpeg_zip", VERDICT, _raw(jpeg + b"PK\x03\x04" + b"\x00" * 26 + b"PK\x05\x06" + b"\x00" * 18)),
        Case("poly_png_html", VERDICT, _raw(png + b"<html><script>alert(1)</script></html>")),
        Case("poly_pdf_then_jpeg", "not_an_image", _raw(b"%PDF-1.4\n%\xe2\xe3\n" + jpeg)),
        Case("poly_html", "not_an_image", _raw(b"<html><img src=x onerror=alert(1)></html>")),
        Case("poly_svg", "not_an_image", _raw(b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>')),
        # truncated and empty
        Case("trunc_jpeg_half", "truncated", _truncate(jpeg, 0.5)),
        Case("trunc_png_half", "truncated", _truncate(png, 0.5)),
        Case("trunc_gif_half", "truncated", _truncate(gif, 0.5)),
        # libwebp reports a cut file as a generic decode failure, not "truncated"
        Case("trunc_webp_half", "corrupt", _truncate(webp, 0.5)),
        Case("trunc_jpeg_header_only", "truncated", _truncate(jpeg, 0.02)),
        Case("empty_file", "empty", _raw(b"")),
        # modes and animation: first frame, RGB
        Case("anim_gif_12_frames", VERDICT, _gif_animated),
        Case("anim_webp_6_frames", VERDICT, _webp_animated),
        Case("anim_apng_4_frames", VERDICT, _apng),
        Case("mode_jpeg_cmyk", VERDICT, _save(_noise(64, 48).convert("CMYK"), "JPEG")),
        Case("mode_png_16bit", VERDICT, _save(Image.fromarray(np.full((48, 64), 40000, np.uint16)), "PNG")),
        Case("mode_png_palette_alpha", VERDICT, _save(_noise(64, 48).convert("P"), "PNG", transparency=0)),
        Case("mode_png_1bit", VERDICT, _save(_noise(64, 48).convert("1"), "PNG")),
        Case("mode_png_la", VERDICT, _save(_noise(64, 48).convert("LA"), "PNG")),
        *_pillow_formats(),
    ]  # fmt: skip


@dataclass
class Result:
    """What the worker answered for one case."""

    case: Case
    outcome: str
    answer_s: float | None
    peak_rss_mib: float
    growth_mib: float

    @property
    def ok(self) -> bool:
        """Whether the outcome is the expected one."""
        return self.outcome == self.case.expected


async def run_cases(
    rig: Rig, runner: str, chosen: list[Case], timeout_s: float = 60.0
) -> list[Result]:
    """Send each case to one worker process, in turn; collect the results.

    Args:
        rig: A `bench.rig.Rig` whose topics are created.
        runner: ``aiokafka`` or ``faust``.
        chosen: The cases.
        timeout_s: How long to wait for one answer (``none`` after it).
    """
    root = rig.work / "root"
    root.mkdir(parents=True, exist_ok=True)
    env = rig.worker_env(
        runner,
        SYNTHGUARD_FETCH__FILE_ROOTS=f'["{root}"]',
        SYNTHGUARD_WORKER__BATCH_MAX="1",
    )
    worker = rig.start_worker(env)
    try:
        await asyncio.to_thread(worker.endpoints)
        await _warm_up(rig, root)
        results = []
        for i, case in enumerate(chosen):
            path = case.make(root / f"{i:03d}-{case.name}")
            image_id = f"hostile-{i:03d}-{case.name}"
            event = UploadEvent(
                image_id=image_id, uri=path.as_uri(), uploaded_at=utc_now()
            )
            pid = worker.proc.pid
            before = (vm_kib(pid, "VmRSS") or 0) / 1024
            reset_peak(pid)
            (acked,) = await rig.publish([(image_id, event.model_dump_json().encode())])
            outcome, answer_s = await _answer(rig, image_id, acked, timeout_s)
            peak = (vm_kib(pid, "VmHWM") or 0) / 1024
            results.append(Result(case, outcome, answer_s, peak, peak - before))
            if not worker.alive:
                worker = rig.start_worker(env)
                await asyncio.to_thread(worker.endpoints)
        return results
    finally:
        worker.kill()
        for sock in _SOCKETS:
            sock.close()


async def _warm_up(rig: Rig, root: Path) -> None:
    path = root / "warm-up.jpg"
    _noise(64, 48).save(path, format="JPEG")
    event = UploadEvent(image_id="warm-up", uri=path.as_uri(), uploaded_at=utc_now())
    (acked,) = await rig.publish([("warm-up", event.model_dump_json().encode())])
    await _answer(rig, "warm-up", acked, 180.0)


async def _answer(
    rig: Rig, image_id: str, acked: float, timeout_s: float
) -> tuple[str, float | None]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = rig.answers.by_id().get(image_id)
        if got:
            a = got[0]
            return a.dlq_class or VERDICT, max(0.0, a.sent - acked)
        await asyncio.sleep(0.02)
    return "none", None


def table(results: list[Result]) -> str:
    """The per-case table (markdown)."""
    lines = [
        "| case | expected | answered | answer s | peak RSS MiB | growth MiB |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in results:
        mark = "" if r.ok else " **(differs)**"
        t = f"{r.answer_s:.2f}" if r.answer_s is not None else "-"
        lines.append(
            f"| {r.case.name} | {r.case.expected} | {r.outcome}{mark} | {t} | "
            f"{r.peak_rss_mib:.0f} | {r.growth_mib:+.0f} |"
        )
    return "\n".join(lines)


async def _main(args: argparse.Namespace, work: Path) -> int:
    chosen = [c for c in cases() if c.fast or not args.fast]
    with Rig.local(tiny_repo(work), work, partitions=1) as rig:
        await rig.create_topics()
        try:
            results = await run_cases(rig, args.runner, chosen)
        finally:
            await rig.answers.stop()
    print(table(results), flush=True)
    bad = [r.case.name for r in results if not r.ok]
    print(f"{len(results) - len(bad)}/{len(results)} as expected; differ: {bad}")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the cases, print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runner", choices=("aiokafka", "faust"), default="aiokafka")
    p.add_argument("--fast", action="store_true", help="the integration subset")
    args = p.parse_args(argv)
    stop_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="synthguard-hostile-") as tmp:
        return asyncio.run(_main(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
