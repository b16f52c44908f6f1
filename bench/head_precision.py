"""Benchmark: float32 vs float64 accumulation in the MLP head, drift and cost.

Side by side in one run on real-sized random weights (d = 512, hidden 512 -> 256):
for each batch size, the largest difference between a row's logit scored in the batch
and scored alone (the drift Triton's dynamic batching exposes), and the time per call
of the float32 formula (the one shipped before) and of `serving.scoring.mlp.mlp_logit`
(float64 accumulation). The real int8 CLIP encoder's time for the same batch is
printed for scale when its weights are installed.

    python -m bench.head_precision [--repeat 200]
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from serving.errors import MissingWeightsError
from serving.scoring.mlp import MlpParams, mlp_logit

D, HIDDEN, BATCHES = 512, (512, 256), (1, 8, 64)
FloatArray = npt.NDArray[np.float32]


def random_params(rng: np.random.Generator) -> MlpParams:
    """Folded MLP weights of the production shape, scaled like a trained head."""
    weights, biases, d_in = [], [], D
    for d_out in HIDDEN:
        w = rng.standard_normal((d_out, d_in)) / np.sqrt(d_in)
        weights.append(w.astype(np.float32))
        biases.append((rng.standard_normal(d_out) * 0.1).astype(np.float32))
        d_in = d_out
    return MlpParams(
        input_mean=(rng.standard_normal(D) * 0.1).astype(np.float32),
        input_std=(rng.random(D) * 0.3 + 0.05).astype(np.float32),
        hidden_weights=tuple(weights),
        hidden_biases=tuple(biases),
        out_weight=(rng.standard_normal(d_in) / np.sqrt(d_in)).astype(np.float32),
        out_bias=0.1,
    )


def float32_logit(x: FloatArray, p: MlpParams) -> FloatArray:
    """The formula as shipped before: every product and sum in float32."""
    h = (x - p.input_mean) / p.input_std
    for w, b in zip(p.hidden_weights, p.hidden_biases, strict=True):
        h = h @ w.T + b
        h = np.where(h >= 0, h, np.float32(p.negative_slope) * h)
    return (h @ p.out_weight + np.float32(p.out_bias)).astype(np.float32)


def _per_call(
    fn: Callable[[FloatArray, MlpParams], FloatArray],
    x: FloatArray,
    params: MlpParams,
    repeat: int,
) -> float:
    """Best-of-5 seconds per call of ``fn(x, params)``."""
    return min(timeit.repeat(lambda: fn(x, params), number=repeat, repeat=5)) / repeat


def _encoder_seconds(n: int, repeat: int) -> float | None:
    try:
        from serving.encoders.onnx_clip import OnnxClipEncoder

        enc = OnnxClipEncoder(threads=2)
    except MissingWeightsError:
        return None
    px = np.random.default_rng(0).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)
    enc.encode(px)
    return min(
        timeit.repeat(lambda: enc.encode(px), number=1, repeat=max(2, repeat // 100))
    )


def main() -> None:
    """Print a Markdown table: batch size, drift and time per call for both."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    params = random_params(rng)
    x = (rng.standard_normal((max(BATCHES), D)) * 0.5).astype(np.float32)
    print(
        "| batch | float32 drift | float64 drift | float32 ms | float64 ms | ratio | CLIP encode ms |"
    )
    print("|---|---|---|---|---|---|---|")
    for n in BATCHES:
        row: list[str] = [str(n)]
        for fn in (float32_logit, mlp_logit):
            alone = np.concatenate([fn(x[i : i + 1], params) for i in range(n)])
            row.append(f"{np.abs(fn(x[:n], params) - alone).max():.1e}")
        times = [
            _per_call(fn, x[:n], params, args.repeat)
            for fn in (float32_logit, mlp_logit)
        ]
        enc = _encoder_seconds(n, args.repeat)
        row += [f"{t * 1e3:.3f}" for t in times] + [f"{times[1] / times[0]:.2f}"]
        row.append("n/a" if enc is None else f"{enc * 1e3:.0f}")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
