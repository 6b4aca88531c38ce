"""Global-context regression: finds planted information where it is, and not where it is not."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analyses import (
    context_feature_subset,
    feature_variances,
    global_context_r2,
    r2_from_units,
    tile_context_units,
)


def world(rng, n=400, dim=40, info_in_loud=False):
    """Fractions depend linearly on 5 features; 10 other features are loud (high variance)."""
    x = rng.normal(size=(n, dim))
    x[:, 30:] *= 50.0  # the 10 loud features
    informative = slice(30, 35) if info_in_loud else slice(0, 5)
    weights = rng.normal(size=(5, 3))
    signal = x[:, informative] / x[:, informative].std(0) @ weights
    fractions = 1 / (1 + np.exp(-signal)) + rng.normal(scale=0.02, size=(n, 3))
    return x.astype(np.float32), fractions


def test_information_in_quiet_features():
    rng = np.random.default_rng(0)
    x, y = world(rng)
    v = feature_variances(x)
    full = global_context_r2(x, y, "full", m=10, variances=v)
    pruned = global_context_r2(x, y, "pruned", m=10, variances=v)
    top = global_context_r2(x, y, "top", m=10, variances=v)
    assert full["r2_mean"] > 0.8 and full["r2_per_class"].shape == (3,)
    assert pruned["r2_mean"] >= full["r2_mean"] - 0.02
    assert top["r2_mean"] < 0.1
    np.testing.assert_array_equal(top["features"], np.arange(30, 40))


def test_information_in_loud_features():
    rng = np.random.default_rng(1)
    x, y = world(rng, info_in_loud=True)
    v = feature_variances(x)
    assert global_context_r2(x, y, "top", m=10, variances=v)["r2_mean"] > 0.8
    assert global_context_r2(x, y, "pruned", m=10, variances=v)["r2_mean"] < 0.1


def test_random_subset_is_seeded():
    a = context_feature_subset(50, "random", 10, None, seed=3)
    b = context_feature_subset(50, "random", 10, None, seed=3)
    c = context_feature_subset(50, "random", 10, None, seed=4)
    np.testing.assert_array_equal(a, b)
    assert a.size == 10 and np.unique(a).size == 10 and not np.array_equal(a, c)


def test_bad_inputs():
    rng = np.random.default_rng(2)
    x, y = world(rng, n=50)
    with pytest.raises(ValueError, match="needs `variances`"):
        global_context_r2(x, y, "pruned", m=5)
    with pytest.raises(ValueError, match=r"m must be an integer in \[0, 40\]"):
        global_context_r2(x, y, "random", m=41)
    with pytest.raises(ValueError, match="49 rows"):
        global_context_r2(x[:49], y)
    bad = y.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="fractions has 1 rows containing NaN or inf"):
        global_context_r2(x, bad)


def test_tile_context_units_give_the_val_r2_per_target_and_resample_by_unit():
    rng = np.random.default_rng(3)
    x, y = world(rng, n=600)
    groups = np.repeat(np.arange(60), 10)  # 60 train images of 10 tiles
    vx, vy = world(np.random.default_rng(4), n=200)
    vx[:, :] = x[:200] + rng.normal(0, 0.01, (200, x.shape[1]))  # val tiles near train tiles
    vy = y[:200]
    units_of = np.repeat(np.arange(20), 10)
    units = tile_context_units(x, y, groups, vx, vy, units_of, n_units=21)
    assert units.shape == (21, 3 * 3 + 1) and units[20].sum() == 0  # unit 20 holds no tile
    r2 = r2_from_units(units)
    assert 0.8 < r2 <= 1.0
    # R^2 = 1 - SSE / SST per target, SST about the val targets' own mean
    sse = units[:, :3].sum(0)
    sst = ((vy - vy.mean(0)) ** 2).sum(0)
    assert r2 == pytest.approx(np.mean(1 - sse / sst))
    # a resample of units is the R^2 of those images' tiles
    half = r2_from_units(units[:10])
    sse_h, sst_h = units[:10, :3].sum(0), ((vy[:100] - vy[:100].mean(0)) ** 2).sum(0)
    assert half == pytest.approx(np.mean(1 - sse_h / sst_h))


def test_tile_context_folds_keep_an_images_tiles_together():
    rng = np.random.default_rng(5)
    x, y = world(rng, n=100)
    with pytest.raises(ValueError, match=">= 2 train images"):
        tile_context_units(x, y, np.zeros(100), x, y, np.zeros(100, int), 1)
