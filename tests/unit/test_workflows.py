import numpy as np
import pytest
from fakes import fake_info, synthetic_features

from serving.errors import InvalidInputError
from serving.heads.knn import KnnHead
from serving.workflows import (
    POOLED,
    HeadOptions,
    calibrate_heads,
    choose_decision,
    choose_operating_fpr,
    decision_label,
    decision_on_scores,
    evaluate,
    fit_decision,
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
    run = leave_one_family_out(train, cal, test, ("knn_k1",), FAST)
    ev = [r for r in run.test.results if r.head == "knn_k1"]
    assert sorted(r.domain for r in ev) == ["a", "b", "c"]
    assert all(r.n_real == 40 and r.n_fake == 40 for r in ev)
    assert np.isfinite([r.ap for r in ev]).all()
    # the selection reads the calibration split of the held-out family only
    sel = [r for r in run.selection.results if r.head == "knn_k1"]
    assert sorted(r.domain for r in sel) == ["a", "b", "c"]


def test_choose_decision_reads_only_the_selection_split() -> None:
    train, cal, test = (synthetic_features(seed=s) for s in (0, 1, 2))
    opts = HeadOptions(mlp_epochs=2, fpr_candidates=(0.05, 0.1))
    names = ("knn_k1", "linear_probe")
    run = leave_one_family_out(train, cal, test, names, opts)
    assert run.candidates == (*names, "fusion")
    labels = {decision_label(c, f) for c in run.candidates for f in (0.05, 0.1)}
    assert labels <= {r.head for r in run.selection.results}
    chosen = choose_decision(run.selection, run.candidates, opts.fpr_candidates)
    assert chosen in run.candidates
    # scrambling the test split cannot change the choice
    scrambled = leave_one_family_out(
        train, cal, synthetic_features(seed=9), names, opts
    )
    assert (
        choose_decision(scrambled.selection, scrambled.candidates, opts.fpr_candidates)
        == chosen
    )
    assert choose_operating_fpr(run.selection, chosen, opts) in (0.05, 0.1)


def test_probe_batch_keeps_sixteen_steps_per_epoch_on_small_data() -> None:
    from serving.workflows import probe_batch

    assert probe_batch(512, HeadOptions()) == 32
    assert probe_batch(100_000, HeadOptions()) == 256
    assert probe_batch(10, HeadOptions()) == 32
    assert probe_batch(10, HeadOptions(probe_batch_size=8)) == 8


def test_decision_on_scores_is_fit_decision_on_precomputed_scores() -> None:
    train, cal = synthetic_features(seed=0, shift=2.0), synthetic_features(seed=1)
    heads = fit_heads(train, ("knn_k1", "linear_probe"), FAST)
    scores = {n: h.score(cal.x) for n, h in heads.items()}
    for name in ("fusion", "linear_probe"):
        assert decision_on_scores(name, scores, cal.y, FAST) == fit_decision(
            name, heads, cal, FAST
        )
    with pytest.raises(InvalidInputError, match="not among"):
        decision_on_scores("mlp", scores, cal.y, FAST)
