"""Benchmark: the served kNN head, three bank searches per request vs one.

Before `KnnHead.answer`, the Triton ``head_knn`` model called `score`,
`neighbours` and `bank_similarity` for every request, and each searched both
banks. Side by side in one run on random banks of the production shape (the
12 x 768 CLS layer stack, L2-normalised per block, k = 9): time per request of
the three calls and of the one `answer` call, per batch size and bank size.

    python -m bench.knn_search [--repeat 20]
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from functools import partial

import numpy as np

from serving.heads.base import FloatArray, LabeledFeatures
from serving.heads.knn import KnnHead
from serving.scoring.views import FeatureLayout, FeatureView

LAYOUT = FeatureLayout(embed_dim=512, n_blocks=12, block_dim=768)
BATCHES, BANKS, K = (1, 8, 32), (704, 5_000), 9


def _head(rows_per_class: int, rng: np.random.Generator) -> KnnHead:
    n = 2 * rows_per_class
    x = rng.standard_normal((n, LAYOUT.width)).astype(np.float32)
    y = np.repeat(np.array([0, 1], dtype=np.int64), rows_per_class)
    data = LabeledFeatures(x=x, y=y, ids=tuple(f"train/{i}" for i in range(n)))
    head = KnnHead(FeatureView(LAYOUT, "blocks", norm="l2"), K)
    head.fit(data, data)
    return head


def _three(head: KnnHead, q: FloatArray) -> None:
    head.score(q), head.neighbours(q), head.bank_similarity(q)


def _best_ms(call: Callable[[], object], repeat: int) -> float:
    return min(timeit.repeat(call, number=1, repeat=repeat)) * 1e3


def main(argv: list[str] | None = None) -> int:
    """Print ms per request for both ways, and their ratio."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=20)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    print("| bank rows per class | batch | 3 searches ms | answer ms | ratio |")
    print("|---|---|---|---|---|")
    for rows in BANKS:
        head = _head(rows, rng)
        for batch in BATCHES:
            q = rng.standard_normal((batch, LAYOUT.width)).astype(np.float32)

            t3 = _best_ms(partial(_three, head, q), args.repeat)
            t1 = _best_ms(partial(head.answer, q), args.repeat)
            print(f"| {rows} | {batch} | {t3:.2f} | {t1:.2f} | {t3 / t1:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
