"""Global-context regression: finds planted information where it is, and not where it is not."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analyses import context_feature_subset, feature_variances, global_context_r2


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
