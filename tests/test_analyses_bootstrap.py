"""Bootstrap over images: vectorised and per-resample paths agree; relations are counted."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analyses import bootstrap, bootstrap_confusion, resample_counts, resample_indices
from harness.probes import miou_from_confusion, per_image_confusion


def per_image(rng, n_images=30, quality=0.7, classes=5):
    target = rng.integers(0, classes, n_images * 50)
    pred = np.where(rng.random(target.size) < quality, target, rng.integers(0, classes, target.size))
    return per_image_confusion(pred, target, np.repeat(np.arange(n_images), 50), classes)


def test_vectorised_and_loop_paths_give_the_same_resamples():
    rng = np.random.default_rng(0)
    cms = per_image(rng)
    loop = bootstrap(lambda idx: miou_from_confusion(cms[idx].sum(0))[0], 30, 200, seed=1)
    vec = bootstrap(
        lambda counts: miou_from_confusion(np.tensordot(counts, cms, 1))[0], 30, 200, seed=1, vectorized=True
    )
    np.testing.assert_allclose(loop["value"], vec["value"])
    assert loop.estimate["value"] == pytest.approx(miou_from_confusion(cms.sum(0))[0])
    assert vec.estimate["value"] == pytest.approx(loop.estimate["value"])
    lo, hi = vec.ci["value"]
    assert lo < vec.estimate["value"] < hi
    np.testing.assert_allclose(miou_from_confusion(bootstrap_confusion(cms, 200, seed=1))[0], vec["value"])


def test_relations_hold_fraction():
    rng = np.random.default_rng(2)
    good, bad = per_image(rng, quality=0.8), per_image(rng, quality=0.5)
    same = per_image(rng, quality=0.65)
    other_same = per_image(rng, quality=0.65)

    def relations(counts):
        def m(cms):
            return miou_from_confusion(np.tensordot(counts, cms, 1))[0]

        return {"clear": m(good) > m(bad), "coin": m(same) > m(other_same), "gap": m(good) - m(bad)}

    res = bootstrap(relations, 30, 1000, seed=3, vectorized=True)
    assert res.fraction_true["clear"] == 1.0
    assert 0.02 < res.fraction_true["coin"] < 0.98
    assert res.ci["gap"][0] > 0
    assert "gap" not in res.fraction_true


def test_seeded_and_counts_match_indices():
    idx = resample_indices(10, 5, seed=7)
    np.testing.assert_array_equal(idx, resample_indices(10, 5, seed=7))
    assert not np.array_equal(idx, resample_indices(10, 5, seed=8))
    counts = resample_counts(10, 5, seed=7)
    for row, c in zip(idx, counts, strict=True):
        np.testing.assert_array_equal(np.bincount(row, minlength=10), c)


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least one item"):
        bootstrap(lambda i: 0.0, 0)
    with pytest.raises(ValueError, match=r"must return shape \(10,\)"):
        bootstrap(lambda c: np.zeros(3), 5, 10, vectorized=True)
    with pytest.raises(ValueError, match=r"\[n_images, C, C\]"):
        bootstrap_confusion(np.zeros((3, 2)))
