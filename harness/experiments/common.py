"""Small pieces shared by the experiments, and the one definition of a top-m feature set."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from harness import analyses
from harness.profiles import Profile, scaled_m
from harness.views import SegmentationViews, VarianceSet


class Embed(Protocol):
    def __call__(self, backbone, view, layers: Sequence[int]) -> dict[int, np.ndarray]: ...


class TransientEmbed(Protocol):
    """Like Embed, for embeddings read once (see harness.scratch): only the images where the
    boolean mask `tiles` is set (all when None), and never kept by the store."""

    def __call__(self, backbone, view, layers: Sequence[int], tiles: np.ndarray | None) -> dict[int, np.ndarray]: ...


def flat_patches(features: np.ndarray, keep_tiles: np.ndarray | None = None) -> np.ndarray:
    """[N, h, w, D] (fp16 memmap) -> float32 [N*h*w, D] of the selected tiles."""
    if keep_tiles is not None:
        features = features[keep_tiles]
    n, h, w, d = features.shape
    return np.asarray(features, dtype=np.float32).reshape(n * h * w, d)


def per_patch(values: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Repeat a per-tile value for each patch of the tile: [N] -> [N*h*w]."""
    return np.repeat(np.asarray(values), grid[0] * grid[1])


def patch_variances(features: np.ndarray, tiles: np.ndarray | None = None) -> np.ndarray:
    """float64 [D]: the variance of every feature over all patches of the selected tiles of
    [N, h, w, D] features (float16 memmaps are read as they are, converted in chunks)."""
    selected = features if tiles is None else features[np.asarray(tiles)]
    selected = np.asarray(selected)
    return analyses.feature_variances(selected.reshape(-1, selected.shape[-1]))


def top_features(backbone, source: VarianceSet, embed: Embed, m: int) -> np.ndarray:
    """The m highest-variance features (highest first) of `backbone`'s last layer over every
    patch of `source`; m counts features of a 768-wide model (scaled_m)."""
    last = backbone.depth
    variances = patch_variances(embed(backbone, source.view, [last])[last], source.tiles)
    return analyses.top_variance_features(None, scaled_m(m, len(variances)), variances=variances)


def cityscapes_top_features(backbone, views: SegmentationViews, embed: Embed,
                            profile: Profile) -> np.ndarray:
    """The one top-m set of the claims (R29): the profile's top_m (200) highest-variance
    features over every patch of the middle Cityscapes train subset, last layer. S4.2-S4.6
    (in segmentation_measurements), S4.7, S4.8 and S5.6 all use it."""
    return top_features(backbone, views.variance_set(), embed, profile.top_m)
