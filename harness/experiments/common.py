"""Small pieces shared by the experiments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class Embed(Protocol):
    def __call__(self, backbone, view, layers: Sequence[int]) -> dict[int, np.ndarray]: ...


def flat_patches(features: np.ndarray, keep_tiles: np.ndarray | None = None) -> np.ndarray:
    """[N, h, w, D] (fp16 memmap) -> float32 [N*h*w, D] of the selected tiles."""
    if keep_tiles is not None:
        features = features[keep_tiles]
    n, h, w, d = features.shape
    return np.asarray(features, dtype=np.float32).reshape(n * h * w, d)


def per_patch(values: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Repeat a per-tile value for each patch of the tile: [N] -> [N*h*w]."""
    return np.repeat(np.asarray(values), grid[0] * grid[1])
