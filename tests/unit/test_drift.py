import numpy as np
import pytest

from serving.errors import InvalidInputError
from serving.scoring.drift import ScoreReference, fit_score_reference, psi
from stream.drift import OTHER_TENANT, DriftMonitor


def _reference(seed: int = 0) -> ScoreReference:
    rng = np.random.default_rng(seed)
    return fit_score_reference(rng.uniform(size=1000), n_bins=10)


def test_reference_bins_hold_equal_shares_of_the_calibration_split() -> None:
    ref = _reference()
    assert len(ref.edges) == 9
    np.testing.assert_allclose(ref.proportions, 0.1, atol=0.002)
    assert ScoreReference.from_dict(ref.to_dict()) == ref


def test_saturated_scores_merge_tied_bins() -> None:
    ref = fit_score_reference([0.0] * 50 + [1.0] * 50)
    assert ref.edges == (1.0,)
    assert ref.proportions == (0.5, 0.5)


def test_psi_is_small_for_the_same_distribution_and_large_after_a_shift() -> None:
    ref = _reference()
    rng = np.random.default_rng(1)
    assert psi(ref, rng.uniform(size=500)) < 0.05
    assert psi(ref, rng.uniform(0.8, 1.0, size=500)) > 0.25


def test_psi_rejects_empty_or_non_finite_scores() -> None:
    with pytest.raises(InvalidInputError):
        psi(_reference(), [])
    with pytest.raises(InvalidInputError):
        psi(_reference(), [float("nan")])


def test_monitor_window_is_bounded_and_follows_the_latest_scores() -> None:
    mon = DriftMonitor(_reference(), window=100)
    for s in np.linspace(0, 1, 300):
        mon.observe("t1", float(s))
    for _ in range(100):
        mon.observe("t1", 0.99)
    (d,) = mon.drift(["t1"])
    assert d.window_events == 100
    assert d.psi > 1.0


def test_monitor_caps_tenants_into_other() -> None:
    mon = DriftMonitor(_reference(), max_tenants=2)
    buckets = [mon.observe(t, 0.5) for t in ("a", "b", "c", "d", "a")]
    assert buckets == ["a", "b", OTHER_TENANT, OTHER_TENANT, "a"]
    assert [d.tenant for d in mon.drift(buckets)] == ["a", "b", OTHER_TENANT]
