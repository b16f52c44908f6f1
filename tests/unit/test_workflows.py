import numpy as np
import pytest
from fakes import fake_info, synthetic_features

from serving.errors import InvalidInputError
from serving.heads.knn import KnnHead
from serving.workflows import (
    POOLED,
    HeadOptions,
    calibrate_heads,
    evaluate,
    fit_heads,
    leave_one_family_out,
    make_head,
    split_train_val,
)

FAST = HeadOptions(mlp_epochs=3, mlp_batch_size=32)
HEADS = ("knn_k1", "knn_k3", "linear_probe", "mlp")


def test_make_head_parses_knn_k() -> None:
    head = make_head("knn_k9", FAST, fake_info().layout)
    assert isinstance(head, KnnHead)
    assert head.k == 9


def test_make_head_rejects_unknown() -> None:
    with pytest.raises(InvalidInputError, match="unknown head"):
        make_head("svm", FAST, fake_info().layout)


def test_split_train_val_is_stratified_and_disjoint() -> None:
    fs = synthetic_features(n_per_class=10)
    fit, val = split_train_val(fs, 0.2, seed=0)
    assert set(fit.paths).isdisjoint(val.paths)
    assert len(fit.y) + len(val.y) == len(fs.y)
    for fam in ("a", "b", "c"):
        assert (val.y[val.family_mask(fam)] == 1).sum() == 2


def test_evaluate_reports_every_family_and_pooled() -> None:
    train, cal, test = (synthetic_features(seed=s, shift=4.0) for s in (0, 1, 2))
    heads = fit_heads(train, HEADS, FAST)
    cals = calibrate_heads(heads, cal, FAST)
    ev = evaluate(heads, cals, test)
    domains = {r.domain for r in ev.results}
    assert domains == {"a", "b", "c", POOLED}
    knn = next(r for r in ev.results if r.head == "knn_k3" and r.domain == POOLED)
    assert knn.auc > 0.8


def test_calibration_threshold_bounds_fpr_on_cal() -> None:
    train, cal = synthetic_features(seed=0), synthetic_features(seed=1)
    heads = fit_heads(train, ("knn_k1",), FAST)
    c = calibrate_heads(heads, cal, FAST)["knn_k1"]
    assert c.achieved_fpr <= 0.01 + 1e-9


def test_lofo_tests_only_the_held_out_family() -> None:
    train, cal, test = (synthetic_features(seed=s) for s in (0, 1, 2))
    ev = leave_one_family_out(train, cal, test, ("knn_k1",), FAST)
    assert sorted(r.domain for r in ev.results) == ["a", "b", "c"]
    assert all(r.n_real == 40 and r.n_fake == 40 for r in ev.results)
    assert np.isfinite([r.ap for r in ev.results]).all()


def test_probe_batch_keeps_sixteen_steps_per_epoch_on_small_data() -> None:
    from serving.workflows import probe_batch

    assert probe_batch(512, HeadOptions()) == 32
    assert probe_batch(100_000, HeadOptions()) == 256
    assert probe_batch(10, HeadOptions()) == 32
    assert probe_batch(10, HeadOptions(probe_batch_size=8)) == 8
