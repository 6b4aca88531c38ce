"""Per-feature variance spectrum and removal of the highest-variance features (S4.1-S4.4)."""

from __future__ import annotations

import numpy as np

from harness.probes._validate import as_feature_matrix, check_finite

CHUNK_ROWS = 65536


def feature_variances(x) -> np.ndarray:
    """Population variance (ddof=0) of every feature, float64 [D]; x is [N, D] (memmap ok).

    Two passes in float64 (mean, then squared deviations): exact enough for features whose
    variances differ by 10^4 and whose means are far from zero.
    """
    x = as_feature_matrix("x", x)
    if x.shape[0] == 0:
        raise ValueError("x is empty: variances need at least one row")
    check_finite("x", x)
    mean = np.zeros(x.shape[1])
    for s in range(0, x.shape[0], CHUNK_ROWS):
        mean += np.asarray(x[s : s + CHUNK_ROWS], np.float64).sum(0)
    mean /= x.shape[0]
    total = np.zeros(x.shape[1])
    for s in range(0, x.shape[0], CHUNK_ROWS):
        total += ((np.asarray(x[s : s + CHUNK_ROWS], np.float64) - mean) ** 2).sum(0)
    return total / x.shape[0]


def _check_m(m: int, width: int) -> None:
    if not (isinstance(m, int | np.integer) and 0 <= m <= width):
        raise ValueError(f"m must be an integer in [0, {width}] (the feature width), got {m}")


def top_variance_features(x, m: int, *, variances: np.ndarray | None = None) -> np.ndarray:
    """Indices of the m highest-variance features, highest first (ties: lowest index).

    Pass `variances` (e.g. from the train set) to reuse them; x is then only used for
    its width and may be None.
    """
    v = feature_variances(x) if variances is None else np.asarray(variances, np.float64)
    _check_m(m, v.shape[0])
    return np.argsort(-v, kind="stable")[:m].astype(np.int64)


def drop_features(x, indices) -> np.ndarray:
    """x without the given feature columns (last axis), as a new array."""
    x = np.asarray(x)
    indices = np.asarray(indices)
    if indices.size == 0:
        return x.copy()
    if not np.issubdtype(indices.dtype, np.integer) or indices.ndim != 1:
        raise ValueError("indices must be a 1-D array of integer feature indices")
    width = x.shape[-1]
    if indices.min() < 0 or indices.max() >= width:
        raise ValueError(f"feature indices must be in [0, {width}), got {indices.min()}..{indices.max()}")
    if np.unique(indices).size != indices.size:
        raise ValueError("feature indices must be unique")
    return np.delete(x, indices, axis=-1)


def variance_ratio_top_over_median(x=None, top: int = 10, *, variances: np.ndarray | None = None) -> float:
    """Mean of the `top` largest feature variances divided by the median variance (S4.1)."""
    v = feature_variances(x) if variances is None else np.asarray(variances, np.float64)
    _check_m(top, v.shape[0])
    if top == 0:
        raise ValueError("top must be at least 1")
    median = float(np.median(v))
    if median <= 0:
        raise ValueError("the median feature variance is 0; the ratio is undefined")
    return float(np.sort(v)[::-1][:top].mean() / median)
