"""Global context in a patch: ridge regression from a central patch to class pixel fractions (S4.6).

Recipe: L2-regularised linear regression (scikit-learn RidgeCV, one alpha per target
chosen by efficient leave-one-out from ALPHAS, intercept fitted, features used as they are
so that high-variance features keep their scale) evaluated out of sample by K-fold
cross-validated predictions (shuffled with `seed`); R^2 per class (scikit-learn r2_score)
and their mean.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold, cross_val_predict

from harness.analyses.variance import _check_m, top_variance_features
from harness.probes._validate import as_feature_matrix, check_finite

ALPHAS = np.logspace(-3, 5, 17)
Subset = Literal["full", "pruned", "top", "random"]


def context_feature_subset(
    width: int,
    subset: Subset | np.ndarray,
    m: int,
    variances: np.ndarray | None,
    seed: int,
) -> np.ndarray:
    """Feature indices for a subset: all; all but the top-m variance; top-m only; random m."""
    if not isinstance(subset, str):
        idx = np.asarray(subset)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer) or idx.size == 0:
            raise ValueError("an explicit subset must be a non-empty 1-D array of feature indices")
        return idx
    _check_m(m, width)
    if subset == "full":
        return np.arange(width)
    if subset == "random":
        return np.sort(np.random.default_rng(seed).choice(width, size=m, replace=False))
    if variances is None or np.shape(variances) != (width,):
        raise ValueError(f"subset {subset!r} needs `variances` of shape ({width},), e.g. from the train set")
    top = top_variance_features(None, m, variances=variances)
    if subset == "top":
        return np.sort(top)
    if subset == "pruned":
        return np.setdiff1d(np.arange(width), top)
    raise ValueError(f"subset must be 'full', 'pruned', 'top', 'random' or an index array, got {subset!r}")


def global_context_r2(
    features,
    fractions,
    subset: Subset | np.ndarray = "full",
    *,
    m: int = 200,
    variances: np.ndarray | None = None,
    seed: int = 0,
    n_splits: int = 5,
) -> dict[str, np.ndarray | float]:
    """Out-of-sample R^2 of predicting each image's class pixel fractions from one patch.

    features [n_images, D]: the central patch's embedding per image. fractions
    [n_images, n_classes]: e.g. road, building, vegetation pixel fractions. `variances`
    ([D], from the train set) defines 'pruned' (without the top-m) and 'top' (only them);
    'random' draws m features with `seed`. Returns {'r2_per_class', 'r2_mean', 'features'}.
    """
    x = as_feature_matrix("features", features)
    y = np.asarray(fractions, np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"features have {x.shape[0]} rows but fractions has {y.shape[0]}")
    if x.shape[0] < 2 * n_splits:
        raise ValueError(f"need at least {2 * n_splits} images for {n_splits}-fold R^2, got {x.shape[0]}")
    check_finite("features", x)
    check_finite("fractions", y)
    idx = context_feature_subset(x.shape[1], subset, m, variances, seed)
    model = RidgeCV(alphas=ALPHAS, alpha_per_target=True)
    folds = KFold(n_splits=n_splits, shuffle=True, random_state=seed)
    predicted = cross_val_predict(model, np.asarray(x[:, idx], np.float64), y, cv=folds)
    r2 = np.atleast_1d(r2_score(y, predicted, multioutput="raw_values"))
    return {"r2_per_class": r2, "r2_mean": float(r2.mean()), "features": idx}
