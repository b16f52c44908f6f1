import numpy as np
import pytest
from PIL import Image

from serving.errors import InvalidInputError
from serving.preprocessing import (
    CLIP_MEAN,
    clip_default,
    get_policy,
    normalize,
    policy_id,
    resize256_crop224,
    ufd_eval,
)


def _img(w: int, h: int) -> Image.Image:
    arr = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr)


@pytest.mark.parametrize("fn", [clip_default, ufd_eval, resize256_crop224])
@pytest.mark.parametrize("size", [(640, 480), (224, 224), (100, 300)])
def test_policy_outputs_224_uint8(fn, size) -> None:
    out = fn(_img(*size))
    assert out.shape == (224, 224, 3)
    assert out.dtype == np.uint8


def test_ufd_eval_is_pure_centre_crop() -> None:
    img = _img(300, 260)
    out = ufd_eval(img)
    ref = np.asarray(img)[18:242, 38:262]
    np.testing.assert_array_equal(out, ref)


def test_ufd_eval_zero_pads_small_images() -> None:
    out = ufd_eval(_img(100, 100))
    assert out[0, 0].sum() == 0
    assert out[112, 112].sum() > 0


def test_clip_default_converts_gray_to_rgb() -> None:
    out = clip_default(Image.new("L", (300, 300), 128))
    assert out.shape == (224, 224, 3)
    assert (out == 128).all()


def test_normalize_layout_and_values() -> None:
    batch = np.zeros((2, 224, 224, 3), dtype=np.uint8)
    x = normalize(batch)
    assert x.shape == (2, 3, 224, 224)
    assert x.dtype == np.float32
    assert np.allclose(
        x[0, :, 0, 0], -CLIP_MEAN / np.array([0.26862954, 0.26130258, 0.27577711])
    )


def test_unknown_policy_is_typed_error() -> None:
    with pytest.raises(InvalidInputError, match="unknown preprocessing policy"):
        get_policy("nope")


def test_policy_id_is_versioned() -> None:
    assert policy_id("clip_default") == "clip_default@1"


def _reference_crop(img: Image.Image) -> Image.Image:
    # the policies' centre crop as first shipped (pad the whole image, then crop)
    w, h = img.size
    if w < 224 or h < 224:
        canvas = Image.new("RGB", (max(w, 224), max(h, 224)))
        canvas.paste(img, ((max(w, 224) - w) // 2, (max(h, 224) - h) // 2))
        img, (w, h) = canvas, canvas.size
    left, top = (w - 224) // 2, (h - 224) // 2
    return img.crop((left, top, left + 224, top + 224))


def _reference(img: Image.Image, short: int | None, resample: Image.Resampling):
    if short is not None:
        s = short / min(img.size)
        new = (max(short, round(img.width * s)), max(short, round(img.height * s)))
        img = img.resize(new, resample=resample)
    return np.asarray(_reference_crop(img), dtype=np.uint8)


@pytest.mark.parametrize(
    ("fn", "short", "resample"),
    [
        (clip_default, 224, Image.Resampling.BICUBIC),
        (ufd_eval, None, Image.Resampling.NEAREST),
        (resize256_crop224, 256, Image.Resampling.BILINEAR),
    ],
)
@pytest.mark.parametrize(
    "size", [(640, 480), (480, 640), (224, 224), (100, 300), (1000, 250), (37, 911)]
)
def test_policy_output_unchanged_on_normal_aspect(fn, short, resample, size) -> None:
    img = _img(*size)
    np.testing.assert_array_equal(fn(img), _reference(img, short, resample))


@pytest.mark.parametrize("fn", [clip_default, ufd_eval, resize256_crop224])
@pytest.mark.parametrize("size", [(3000, 3), (3, 3000), (40, 1)])
def test_policy_cuts_extreme_aspect_to_224(fn, size) -> None:
    img = Image.new("RGB", size, (200, 100, 50))
    out = fn(img)
    assert out.shape == (224, 224, 3)
    if fn is not ufd_eval:  # a flat image stays flat; ufd_eval zero-pads instead
        assert (out == (200, 100, 50)).all()
