"""A row's score must not depend on which other rows share its batch.

Triton's dynamic batcher groups concurrent requests, so a float32 score that moved
with the batch size (BLAS sums in a shape-dependent order) gave the same image
slightly different scores. CI caught a 1.1e-6 MLP drift; the heads accumulate in
float64 now. Real-sized shapes (d = 512, the benchmark's weights), since tiny ones hide the effect.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.head_precision import D, random_params
from serving.index.faiss_index import FaissBank
from serving.scoring.mlp import mlp_logit
from serving.scoring.probe import probe_logit


@pytest.mark.parametrize("n", [2, 6, 64])
def test_mlp_logit_of_a_row_is_independent_of_its_batch(n: int) -> None:
    rng = np.random.default_rng(n)
    params = random_params(rng)
    x = (rng.standard_normal((n, D)) * 0.5).astype(np.float32)
    singles = np.concatenate([mlp_logit(x[i : i + 1], params) for i in range(n)])
    np.testing.assert_array_max_ulp(mlp_logit(x, params), singles, maxulp=1)


@pytest.mark.parametrize("n", [2, 6, 64])
def test_probe_logit_of_a_row_is_independent_of_its_batch(n: int) -> None:
    rng = np.random.default_rng(n)
    w = (rng.standard_normal(D) / np.sqrt(D)).astype(np.float32)
    x = (rng.standard_normal((n, D)) * 3.0).astype(np.float32)
    singles = np.concatenate([probe_logit(x[i : i + 1], w, 0.2) for i in range(n)])
    np.testing.assert_array_max_ulp(probe_logit(x, w, 0.2), singles, maxulp=1)


@pytest.mark.parametrize("n", [6, 64])  # 64: past faiss's BLAS threshold (20 queries)
def test_faiss_bank_similarities_of_a_row_are_independent_of_its_batch(n: int) -> None:
    rng = np.random.default_rng(n)
    bank = FaissBank(D)
    bank.add(rng.standard_normal((500, D)).astype(np.float32))
    x = rng.standard_normal((n, D)).astype(np.float32)
    sims, ids = bank.search(x, 5)
    singles = [bank.search(x[i : i + 1], 5) for i in range(n)]
    np.testing.assert_array_max_ulp(
        sims, np.concatenate([s for s, _ in singles]), maxulp=1
    )
    assert np.array_equal(ids, np.concatenate([i for _, i in singles]))
