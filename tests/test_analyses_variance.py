"""Variance spectrum, pruning and overlap on planted features."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analyses import (
    drop_features,
    feature_overlap,
    feature_variances,
    top_variance_features,
    variance_ratio_top_over_median,
)


def loud(rng, n, dim=32, loud_dims=(3, 7, 20), loudness=100.0, offset=1000.0):
    scale = np.ones(dim)
    scale[list(loud_dims)] = loudness * np.linspace(1, 2, len(loud_dims))
    return (rng.normal(size=(n, dim)) * scale + offset).astype(np.float16)


def test_variances_match_float64_numpy_with_large_offset():
    rng = np.random.default_rng(0)
    x = loud(rng, 3000)
    np.testing.assert_allclose(feature_variances(x), x.astype(np.float64).var(0), rtol=1e-10)


def test_top_features_found_and_ordered():
    rng = np.random.default_rng(1)
    x = loud(rng, 2000)
    np.testing.assert_array_equal(top_variance_features(x, 3), [20, 7, 3])
    assert top_variance_features(x, 0).size == 0
    # Ties go to the lowest index.
    np.testing.assert_array_equal(top_variance_features(None, 2, variances=np.ones(5)), [0, 1])
    # Without loud dimensions the planted indices are not special.
    quiet = rng.normal(size=(2000, 32))
    assert set(top_variance_features(quiet, 3)) != {3, 7, 20}


def test_drop_and_prune_use_train_variances():
    rng = np.random.default_rng(2)
    train = loud(rng, 1000, loud_dims=(1, 2))
    test = loud(rng, 500, loud_dims=(5, 6))
    top = top_variance_features(train, 2)
    np.testing.assert_array_equal(drop_features(test, top), np.delete(test, [1, 2], axis=1))
    assert drop_features(train, top).shape == (1000, 30)
    grid = rng.normal(size=(2, 3, 3, 8))
    assert drop_features(grid, [0, 5]).shape == (2, 3, 3, 6)
    np.testing.assert_array_equal(drop_features(grid, [0, 5])[..., 0], grid[..., 1])


def test_variance_ratio_separates_mae_like_from_uniform():
    rng = np.random.default_rng(3)
    mae_like = variance_ratio_top_over_median(loud(rng, 2000, loud_dims=tuple(range(10))), top=10)
    uniform = variance_ratio_top_over_median(rng.normal(size=(2000, 32)), top=10)
    assert mae_like > 1000
    assert 1 <= uniform < 1.5


def test_overlap():
    rng = np.random.default_rng(4)
    a, b = loud(rng, 1000, loud_dims=(1, 2, 3)), loud(rng, 800, loud_dims=(1, 2, 9))
    assert feature_overlap(top_variance_features(a, 3), top_variance_features(b, 3)) == 2
    assert feature_overlap(top_variance_features(a, 3), top_variance_features(a, 3)) == 3
    assert feature_overlap([1, 2, 3], [4, 5]) == 0


def test_bad_inputs():
    x = np.ones((10, 4), np.float32)
    with pytest.raises(ValueError, match=r"m must be an integer in \[0, 4\]"):
        top_variance_features(x, 5)
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="x has 1 rows containing NaN or inf"):
        feature_variances(bad)
    with pytest.raises(ValueError, match="unique"):
        drop_features(x, [1, 1])
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        drop_features(x, [4])
    with pytest.raises(ValueError, match="repeated"):
        feature_overlap([1, 1], [2])
