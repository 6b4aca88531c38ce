"""Overlap of the top-m variance feature sets of two datasets (S4.7)."""

from __future__ import annotations

import numpy as np


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
