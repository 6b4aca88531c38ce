"""The linear probe: learns planted structure, not noise; deterministic; BatchNorm exposed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.probes import LinearProbe, MissingClassWarning


def blobs(rng, n=1200, dim=16, classes=4, spread=0.5, loud=None):
    """Gaussian class blobs; `loud` adds dims with a huge variance that carry no label."""
    centres = rng.normal(size=(classes, dim)) * 2
    y = rng.integers(0, classes, n)
    x = centres[y] + rng.normal(size=(n, dim)) * spread
    if loud is not None:
        x = np.concatenate([x, rng.normal(size=(n, 4)) * loud], axis=1)
    return x.astype(np.float32), y


def test_learns_separable_classes_and_not_noise():
    rng = np.random.default_rng(0)
    x, y = blobs(rng)
    probe = LinearProbe(seed=0, epochs=20, batch_size=64).fit(x[:800], y[:800])
    assert np.mean(probe.predict(x[800:]) == y[800:]) > 0.95
    assert probe.loss_history_[-1] < probe.loss_history_[0]
    shuffled = rng.permutation(y)
    noise_probe = LinearProbe(seed=0, epochs=20, batch_size=64).fit(x[:800], shuffled[:800])
    assert np.mean(noise_probe.predict(x[800:]) == shuffled[800:]) < 0.4


def test_seeded_and_deterministic_and_leaves_global_state_alone():
    rng = np.random.default_rng(1)
    x, y = blobs(rng, n=600)
    before = torch.random.get_rng_state()
    a = LinearProbe(seed=3, epochs=2, batch_size=64).fit(x, y)
    b = LinearProbe(seed=3, epochs=2, batch_size=64).fit(x, y)
    c = LinearProbe(seed=4, epochs=2, batch_size=64).fit(x, y)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert a.loss_history_ == b.loss_history_
    for pa, pb, pc in zip(a.model_.parameters(), b.model_.parameters(), c.model_.parameters(), strict=True):
        assert torch.equal(pa, pb)
        assert not torch.equal(pa, pc)
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))


def test_ignored_rows_are_skipped():
    rng = np.random.default_rng(2)
    x, y = blobs(rng, n=600)
    x_with_ignored = np.concatenate([x, np.full((50, x.shape[1]), np.nan, np.float32)])
    y_with_ignored = np.concatenate([y, np.full(50, 255)])
    a = LinearProbe(seed=0, epochs=2, batch_size=64).fit(x_with_ignored, y_with_ignored)
    b = LinearProbe(seed=0, epochs=2, batch_size=64).fit(x, y)
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))


def test_batchnorm_rescues_features_with_huge_variance_dims():
    """The S3.5 situation: label-free dims with 10^4x variance swamp a plain probe's steps."""
    rng = np.random.default_rng(3)
    x, y = blobs(rng, n=1500, spread=1.0, loud=3000.0)
    x += 500.0  # and a large offset, as MAE embeddings have
    plain = LinearProbe(seed=0, epochs=30, batch_size=64).fit(x[:1000], y[:1000])
    normed = LinearProbe(batchnorm=True, seed=0, epochs=30, batch_size=64).fit(x[:1000], y[:1000])
    acc_plain = np.mean(plain.predict(x[1000:]) == y[1000:])
    acc_normed = np.mean(normed.predict(x[1000:]) == y[1000:])
    assert acc_normed > 0.9
    assert acc_normed > acc_plain + 0.2


def test_batchnorm_stats_and_normalize():
    rng = np.random.default_rng(4)
    x, y = blobs(rng, n=800)
    x = x * np.linspace(1, 50, x.shape[1]).astype(np.float32) + 7
    probe = LinearProbe(batchnorm=True, seed=0, epochs=2, batch_size=100).fit(x, y)
    mean, var = probe.batchnorm_stats
    # Cumulative running statistics: close to the data's own mean and variance.
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(var, x.var(0, ddof=1), rtol=0.05)
    bn = probe.model_[0]
    expect = (x - mean) / np.sqrt(var + bn.eps) * bn.weight.detach().numpy() + bn.bias.detach().numpy()
    np.testing.assert_allclose(probe.normalize(x), expect, rtol=1e-4, atol=1e-4)
    with pytest.raises(RuntimeError, match="no BatchNorm"):
        _ = LinearProbe().fit(x, y).batchnorm_stats


def test_float16_input_and_bad_inputs():
    rng = np.random.default_rng(5)
    x, y = blobs(rng, n=300)
    probe = LinearProbe(seed=0, epochs=1, batch_size=64).fit(x.astype(np.float16), y)
    assert probe.predict(x.astype(np.float16)).shape == (300,)
    with pytest.raises(ValueError, match="y has 299 labels"):
        LinearProbe().fit(x, y[:-1])
    with pytest.raises(ValueError, match="empty train set"):
        LinearProbe().fit(x, np.full(300, 255))
    bad = x.copy()
    bad[[3, 9]] = np.inf
    with pytest.raises(ValueError, match="x has 2 rows containing NaN or inf"):
        LinearProbe().fit(bad, y)
    with pytest.raises(ValueError, match="fitted on 16"):
        probe.predict(x[:, :8])
    with pytest.raises(RuntimeError, match="not fitted"):
        LinearProbe().predict(x)
    with pytest.warns(MissingClassWarning, match=r"classes \[4\]"):
        LinearProbe(epochs=1).fit(x, y, num_classes=5)
