"""Overlap of the top-m variance feature sets of two datasets (S4.7)."""

from __future__ import annotations

import numpy as np

from harness.analyses.variance import top_variance_features


def _index_set(name: str, a) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must be a 1-D array of integer feature indices")
    if np.unique(a).size != a.size:
        raise ValueError(f"{name} has repeated feature indices")
    return a


def feature_overlap(a, b) -> int:
    """Number of feature indices that two index sets share."""
    return int(np.intersect1d(_index_set("a", a), _index_set("b", b)).size)


def top_feature_overlap(x_a, x_b, m: int) -> int:
    """Shared features among the m highest-variance features of x_a and of x_b."""
    if np.shape(x_a)[-1] != np.shape(x_b)[-1]:
        raise ValueError(f"x_a and x_b must have the same width, got {np.shape(x_a)[-1]} and {np.shape(x_b)[-1]}")
    return feature_overlap(top_variance_features(x_a, m), top_variance_features(x_b, m))
