"""Input checks shared by the probes and analyses: clear errors at the boundary."""

from __future__ import annotations

import numpy as np

CHECK_ROWS = 65536  # rows per block when scanning (possibly memory-mapped) features


def as_feature_matrix(name: str, x) -> np.ndarray:
    """x as an [N, D] float array, without copying a memmap."""
    x = x if isinstance(x, np.ndarray) else np.asarray(x)
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D [rows, features] array, got shape {x.shape}; "
            "reshape patch grids [N, h, w, D] to [N*h*w, D]"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be a float16/32/64 array, got dtype {x.dtype}")
    return x


def check_finite(name: str, x: np.ndarray) -> None:
    """ValueError naming the array and the number of rows holding NaN or inf."""
    bad = 0
    for s in range(0, x.shape[0], CHECK_ROWS):
        bad += int((~np.isfinite(x[s : s + CHECK_ROWS])).any(axis=1).sum())
    if bad:
        raise ValueError(f"{name} has {bad} rows containing NaN or inf; clean or drop them first")


def as_labels(name: str, y, n_rows: int | None = None) -> np.ndarray:
    """y as a 1-D integer array, optionally with exactly n_rows entries."""
    y = np.asarray(y)
    if y.ndim != 1:
        y = y.reshape(-1)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must hold integer labels, got dtype {y.dtype}")
    if n_rows is not None and y.shape[0] != n_rows:
        raise ValueError(f"features have {n_rows} rows but {name} has {y.shape[0]} labels")
    return y
