"""Relative drop of a metric under corruption (S3.10-S3.12)."""

from __future__ import annotations

import numpy as np


def relative_drop(clean, corrupted):
    """(clean - corrupted) / clean: 0 = fully robust, 1 = everything lost (arrays broadcast)."""
    clean_arr, corrupted_arr = np.asarray(clean, np.float64), np.asarray(corrupted, np.float64)
    if np.any(clean_arr <= 0):
        raise ValueError("clean metric must be > 0 for a relative drop")
    out = (clean_arr - corrupted_arr) / clean_arr
    return float(out) if out.ndim == 0 else out
