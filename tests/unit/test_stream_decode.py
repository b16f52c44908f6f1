from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from stream.decode import DecodeLimits, decode_image
from stream.dev.testing import bomb_png, jpeg_bytes, truncated_jpeg
from stream.errors import PoisonMessageError
from stream.settings import DecodeSettings


def _encoded(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _corrupt_png() -> bytes:
    noise = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    data = bytearray(_encoded(Image.fromarray(noise), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 20 : idat + 60] = b"\xff" * 40
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "error_class"),
    [
        (b"", "empty"),
        (b"just some text, not an image", "not_an_image"),
        (truncated_jpeg(), "truncated"),
        (bomb_png(), "decompression_bomb"),  # over Pillow's own limit
        (bomb_png(8000, 6000), "decompression_bomb"),  # over ours only
        (_encoded(Image.new("RGB", (8, 8)), "BMP"), "format_not_allowed"),
        (_corrupt_png(), "corrupt"),
    ],
    ids=["empty", "text", "truncated", "bomb_pillow", "bomb_ours", "bmp", "bad_png"],
)
def test_decode_poison_classes(data: bytes, error_class: str) -> None:
    with pytest.raises(PoisonMessageError) as info:
        decode_image(data, DecodeLimits())
    assert (info.value.error_class, info.value.stage) == (error_class, "decode")


def test_decode_too_many_bytes() -> None:
    with pytest.raises(PoisonMessageError, match="bytes over") as info:
        decode_image(jpeg_bytes(), DecodeLimits(max_bytes=100))
    assert info.value.error_class == "too_large"


def test_decode_applies_exif_orientation_and_rgb() -> None:
    img = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    out = decode_image(_encoded(img, "JPEG", exif=exif), DecodeLimits())
    assert out.size == (20, 40)
    assert out.mode == "RGB"


def test_decode_converts_palette_and_alpha_to_rgb() -> None:
    rgba = Image.new("RGBA", (16, 16), (255, 0, 0, 128))
    assert decode_image(_encoded(rgba, "PNG"), DecodeLimits()).mode == "RGB"
    pal = Image.new("P", (16, 16), 3)
    assert decode_image(_encoded(pal, "PNG"), DecodeLimits()).mode == "RGB"


def test_decode_gif_by_default_on_its_first_frame() -> None:
    frames = [Image.new("RGB", (20, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = decode_image(buf.getvalue(), DecodeLimits())
    assert (out.size, out.mode) == ((20, 10), "RGB")
    assert out.getpixel((0, 0)) == (255, 0, 0)


def test_decode_default_formats_agree_with_settings() -> None:
    assert frozenset(DecodeSettings().formats) == DecodeLimits().formats


@pytest.mark.parametrize("fmt", ["TIFF", "BMP", "ICO", "JPEG2000", "AVIF"])
def test_decode_rare_formats_are_opt_in(fmt: str) -> None:
    data = _encoded(Image.new("RGB", (16, 16), (1, 2, 3)), fmt)
    with pytest.raises(PoisonMessageError) as info:
        decode_image(data, DecodeLimits())
    assert info.value.error_class == "format_not_allowed"
    opted_in = DecodeLimits(formats=frozenset({fmt}))
    assert decode_image(data, opted_in).size == (16, 16)


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


@pytest.mark.parametrize("before", [b"IDAT", b"IEND"], ids=["header", "trailer"])
def test_decode_png_text_bomb_is_too_large(before: bytes) -> None:
    png = _encoded(Image.new("RGB", (8, 8)), "PNG")
    bomb = _chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"A" * (8 << 20), 9))
    at = png.index(before) - 4
    with pytest.raises(PoisonMessageError) as info:
        decode_image(png[:at] + bomb + png[at:], DecodeLimits())
    assert info.value.error_class == "too_large"
