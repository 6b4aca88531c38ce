"""The linear probe: learns planted structure, not noise; deterministic; BatchNorm exposed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.probes import LR_GRID, LinearProbe, MissingClassWarning, choose_lr, fit_with_chosen_lr


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


def test_batchnorm_is_maes_standardisation_with_train_statistics():
    """No affine parameters: "linear+BN" and "k-NN after BN" both see (x - mean) / sqrt(var +
    1e-6) with the train set's statistics, never a label-informed reweighting."""
    rng = np.random.default_rng(4)
    x, y = blobs(rng, n=800)
    x = x * np.linspace(1, 50, x.shape[1]).astype(np.float32) + 7
    probe = LinearProbe(batchnorm=True, seed=0, epochs=2, batch_size=100).fit(x, y)
    bn = probe.model_[0]
    assert bn.weight is None and bn.bias is None and bn.eps == 1e-6
    mean, var = probe.batchnorm_stats
    # Cumulative running statistics: close to the data's own mean and variance.
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(var, x.var(0, ddof=1), rtol=0.05)
    np.testing.assert_allclose(probe.normalize(x), (x - mean) / np.sqrt(var + 1e-6), rtol=1e-4, atol=1e-4)
    standardised = probe.normalize(x)
    np.testing.assert_allclose(standardised.mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(standardised.std(0), 1, atol=0.05)
    with pytest.raises(RuntimeError, match="no BatchNorm"):
        _ = LinearProbe().fit(x, y).batchnorm_stats


# ---------------------------------------------------------------- the learning rate
CENTRES = np.random.default_rng(99).normal(0, 1, (5, 12))


def simmim_like(seed, n_images, per_image=50):
    """A SimMIM-like representation: 4 features of huge variance that carry no label, and a
    long tail of 60 near-zero-variance features (std 0.05), 12 of which hold the class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, n_images * per_image)
    x = np.empty((y.size, 64), np.float32)
    x[:, :4] = rng.normal(0, 50, (y.size, 4))
    tail = rng.normal(0, 1, (y.size, 60))
    tail[:, :12] += CENTRES[y]
    x[:, 4:] = 0.05 * tail
    return x, y, np.repeat(np.arange(n_images), per_image)


def accuracy(probe, x, y):
    return float(np.mean(probe.predict(x) == y))


def test_with_the_lr_chosen_on_held_out_images_batchnorm_no_longer_rescues_a_quiet_tail():
    """S3.5's SimMIM half hinges on the recipe: with one fixed lr (1e-3), Adam's steps of
    about lr per weight cannot build the large weights that near-zero-variance features
    need, so BatchNorm (which scales them up) seems to help a lot; with the lr chosen per
    probe on held-out train images, the plain probe uses the tail too and the gain is gone."""
    x, y, groups = simmim_like(0, n_images=40)
    val_x, val_y, _ = simmim_like(1, n_images=20)
    fixed = {bn: accuracy(LinearProbe(batchnorm=bn, seed=0, lr=1e-3).fit(x, y), val_x, val_y)
             for bn in (False, True)}
    assert fixed[True] > fixed[False] + 0.2  # the earlier recipe: BN "helps" a lot

    chosen, lrs = {}, {}
    for bn in (False, True):
        probe, choice = fit_with_chosen_lr(x, y, groups, batchnorm=bn, num_classes=5, seed=0,
                                           split_seed=7)
        chosen[bn], lrs[bn] = accuracy(probe, val_x, val_y), choice.lr
        assert set(choice.scores) == set(LR_GRID) and choice.lr == probe.lr
    assert lrs[False] > 1e-3  # the plain probe needs a larger step than the default
    assert chosen[False] > fixed[False] + 0.2
    assert chosen[True] <= chosen[False] + 0.02  # BN no longer helps


def test_lr_is_chosen_on_whole_held_out_images_with_a_model_independent_split():
    x, y, groups = simmim_like(2, n_images=12, per_image=20)
    a = choose_lr(x, y, groups, batchnorm=True, num_classes=5, seed=0, split_seed=3, lr_grid=(1e-3, 1e-1))
    b = choose_lr(x * 3 + 1, y, groups, batchnorm=False, num_classes=5, seed=1, split_seed=3,
                  lr_grid=(1e-3, 1e-1))
    np.testing.assert_array_equal(a.held_out, b.held_out)  # the same images for every probe
    assert len(a.held_out) == 3  # a quarter of 12 images
    assert a.lr == max(a.scores, key=lambda lr: (a.scores[lr], -lr))
    single = choose_lr(x, y, groups, batchnorm=False, num_classes=5, seed=0, split_seed=3, lr_grid=(0.05,))
    assert single.lr == 0.05 and single.scores == {}
    one_image = choose_lr(x[:20], y[:20], groups[:20], batchnorm=False, num_classes=5, seed=0, split_seed=3)
    assert one_image.lr == 1e-3 and one_image.scores == {}


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
