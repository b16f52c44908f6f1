"""Benchmark: does a one-class model of the reals add to the probe on unseen families?

The probe learns "fake" from the training families' fakes, so a family whose traces
differ may land on the real side. A model of the reals alone does not depend on which
fakes were seen: anything far from the real distribution scores high. This fits, on
the reals of train∖F only, a Gaussian in the probe's own feature view (CLS tokens of
blocks 6-11, L2-normalised per block): standardised, PCA to ``k`` dimensions,
Ledoit-Wolf covariance; the score is the squared Mahalanobis distance. It compares,
leave one family out, with the shipped probe (`serving.workflows.fit_heads`, default
`HeadOptions`):

- ``cls``: the shipped probe;
- ``oc k``: the one-class distance alone, ``k`` principal components;
- ``cls+oc k w``: the two scores standardised on the fold's calibration reals,
  ``(1 - w) * cls + w * oc``.

Threshold at 10 % FPR on the fold's calibration reals; columns as `bench.families`
(own reals, and the acceptance-shaped native PNG 224 view).

    python -m bench.oneclass --home .synthguard                  # split cal
    python -m bench.oneclass --home .synthguard --split test     # information

Selection reads the calibration split; the test split is for information only.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from bench.families import Scores, VariantRun, probe_fold, standardised
from serving.scoring.views import FeatureLayout
from serving.workflows import HeadOptions

Floats = npt.NDArray[np.float64]
DIMS = (16, 64, 256)
WEIGHTS = (0.25, 0.5)


class RealGaussian:
    """A Gaussian fitted to real rows; scores are squared Mahalanobis distances.

    Args:
        k: Principal components kept after standardising.
    """

    def __init__(self, k: int) -> None:
        self.k = k

    def fit(self, reals: Floats) -> RealGaussian:
        """Fit the scaler, the PCA and the shrunk covariance on `reals`."""
        self.scaler = StandardScaler().fit(reals)
        z = self.scaler.transform(reals)
        self.pca = PCA(n_components=self.k, random_state=0).fit(z)
        self.cov = LedoitWolf().fit(self.pca.transform(z))
        return self

    def score(self, x: Floats) -> Scores:
        """Squared Mahalanobis distance of each row of `x` to the reals."""
        z = self.pca.transform(self.scaler.transform(x))
        return np.asarray(self.cov.mahalanobis(z), dtype=np.float64)


def main(argv: list[str] | None = None) -> int:
    """Print, per held-out family, the variants' AUC and accuracy."""
    run = VariantRun.from_argv(argv, __doc__)
    train, cal, scored = run.train, run.cal, run.scored
    view = HeadOptions().view(FeatureLayout.from_dict(train.meta.layout), "probe")
    vtrain, vcal, vscored = (
        view.apply(f.x).astype(np.float64) for f in (train, cal, scored)
    )
    table = run.table()
    for fam in run.families:
        keep_t, keep_c = run.fold_masks(fam)
        c_cal, c_s = probe_fold(train, cal, scored, fam)
        variants = {"cls": (c_cal, c_s)}
        for k in DIMS:
            oc = RealGaussian(k).fit(vtrain[keep_t & (train.y == 0)])
            o_cal, o_s = oc.score(vcal[keep_c]), oc.score(vscored)
            variants[f"oc {k}"] = (o_cal, o_s)
            for w in WEIGHTS:
                variants[f"cls+oc {k} {w}"] = (
                    (1 - w) * standardised(c_cal, c_cal)
                    + w * standardised(o_cal, o_cal),
                    (1 - w) * standardised(c_cal, c_s) + w * standardised(o_cal, o_s),
                )
        table.add(fam, variants)
    table.print_means()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
