"""Global context in a patch: ridge regression from a central patch to class pixel fractions (S4.6).

Two units, one recipe: L2-regularised linear regression (scikit-learn Ridge, intercept
fitted, features used as they are so that high-variance features keep their scale) with the
regularisation strength chosen from ALPHAS by cross-validation.

- `tile_context_units` (the main protocol): one sample per tile the model saw (its central
  patch -> the tile's class pixel fractions). The alpha (one for all targets) is chosen by
  group K-fold cross-validation on the train tiles, the folds keeping each train image's
  tiles together (neighbouring tiles of one frame are alike); the model is refitted on all
  train tiles and evaluated on the val tiles. It returns per-unit sums (val images) from
  which R^2 per target, and its mean, is recomputed on any resample (`r2_from_units`).
- `global_context_r2` (the frame-level variant): one sample per image, R^2 from K-fold
  cross-validated predictions over the images (shuffled with `seed`), one alpha per target
  chosen by efficient leave-one-out; R^2 per class (scikit-learn r2_score) and their mean.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupKFold, KFold, cross_val_predict

from harness.analyses.variance import _check_m, top_variance_features
from harness.probes._validate import as_feature_matrix, check_finite

ALPHAS = np.logspace(-3, 5, 9)  # one per decade
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


def _columns(a) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return a[:, None] if a.ndim == 1 else a


def tile_context_units(
    train_x,
    train_y,
    train_groups,
    val_x,
    val_y,
    val_units,
    n_units: int,
    *,
    n_splits: int = 5,
    alphas: np.ndarray = ALPHAS,
) -> np.ndarray:
    """Ridge from train samples to targets, scored on val: float64 [n_units, 3k + 1] =
    (sse_1..sse_k, sum_y_1..sum_y_k, sum_yy_1..sum_yy_k, n_samples) per val unit.

    train_x [n, D], train_y [n, k], train_groups [n] (the image of each sample: the
    cross-validation folds keep groups together); val_x [m, D], val_y [m, k], val_units [m]
    in 0..n_units-1 (e.g. the val image of each tile)."""
    x = np.asarray(as_feature_matrix("train_x", train_x), np.float64)
    vx = np.asarray(as_feature_matrix("val_x", val_x), np.float64)
    y, vy = _columns(train_y), _columns(val_y)
    groups, units = np.asarray(train_groups).reshape(-1), np.asarray(val_units, np.int64).reshape(-1)
    if y.shape[0] != x.shape[0] or groups.shape[0] != x.shape[0]:
        raise ValueError(f"train_x has {x.shape[0]} rows, train_y {y.shape[0]}, train_groups {groups.shape[0]}")
    if vy.shape[0] != vx.shape[0] or units.shape[0] != vx.shape[0] or vx.shape[1] != x.shape[1]:
        raise ValueError("val_x, val_y and val_units must describe the same samples, with train_x's width")
    for name, a in (("train_x", x), ("train_y", y), ("val_x", vx), ("val_y", vy)):
        check_finite(name, a)
    n_groups = np.unique(groups).size
    if n_groups < 2:
        raise ValueError(f"choosing alpha by group cross-validation needs >= 2 train images, got {n_groups}")
    folds = list(GroupKFold(n_splits=min(n_splits, n_groups)).split(x, y, groups))
    model = RidgeCV(alphas=alphas, cv=folds).fit(x, y)
    residual = vy - model.predict(vx).reshape(vy.shape)
    out = np.zeros((n_units, 3 * vy.shape[1] + 1))
    for column, values in enumerate((residual**2, vy, vy**2)):
        np.add.at(out[:, column * vy.shape[1] : (column + 1) * vy.shape[1]], units, values)
    out[:, -1] = np.bincount(units, minlength=n_units)
    return out


def r2_from_units(units) -> float:
    """Mean over targets of 1 - SSE / SST from summed units [.., 3k + 1] (see
    `tile_context_units`): the R^2 of the pooled val samples, averaged over the targets."""
    totals = np.asarray(units, np.float64).reshape(-1, np.shape(units)[-1]).sum(axis=0)
    k = (totals.size - 1) // 3
    sse, sy, syy, n = totals[:k], totals[k : 2 * k], totals[2 * k : 3 * k], totals[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.mean(1.0 - sse / (syy - sy**2 / n)))
