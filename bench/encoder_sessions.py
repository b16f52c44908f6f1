"""Benchmark: the int8 encoder as one multi-thread session vs single-thread sessions side by side.

Both rows run `OnnxClipEncoder` on the same random 224² images in one process,
alternating, ``--repeat`` times; each row prints images/s, and the ratio is per
repetition. The outputs must be identical bit for bit (checked on every repetition).

    python -m bench.encoder_sessions --images 48 --threads 2 --repeat 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from serving.encoders.onnx_clip import OnnxClipEncoder


def main(argv: list[str] | None = None) -> int:
    """Print img/s of 1 session × `threads` threads and `threads` sessions × 1 thread."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, (args.images, 224, 224, 3), dtype=np.uint8)
    one = OnnxClipEncoder(threads=args.threads, sessions=1)
    many = OnnxClipEncoder(threads=args.threads, sessions=args.threads)
    one.encode(px[:2]), many.encode(px[:2])  # warm-up
    print(f"{args.images} images, {args.threads} threads")
    print("| repetition | 1 session img/s | sessions side by side img/s | ratio |")
    print("|---|---|---|---|")
    for rep in range(args.repeat):
        t = time.perf_counter()
        a = one.encode(px)
        t_one = time.perf_counter() - t
        t = time.perf_counter()
        b = many.encode(px)
        t_many = time.perf_counter() - t
        if not (
            np.array_equal(a.embeds, b.embeds) and np.array_equal(a.blocks, b.blocks)
        ):
            raise SystemExit("outputs differ between the two encoders")
        print(
            f"| {rep + 1} | {args.images / t_one:.2f} | {args.images / t_many:.2f} "
            f"| {t_one / t_many:.2f}× |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
