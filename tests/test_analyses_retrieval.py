"""Retrieval outcomes against a per-query reference loop and on planted worlds."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analyses import OUTCOMES, PatchMeta, retrieval_outcomes


def reference(base_x, base, query_x, query, exclude_source):
    counts = dict.fromkeys(OUTCOMES, 0)
    b64 = base_x.astype(np.float64)
    for j in np.flatnonzero(query["fine"] >= 0):
        d = ((b64 - query_x[j].astype(np.float64)) ** 2).sum(1)
        if exclude_source:
            d[base["source"] == query["source"][j]] = np.inf
        i = int(np.argmin(d))
        if base["source"][i] == query["source"][j] and base["position"][i] == query["position"][j]:
            counts["original"] += 1
        elif base["fine"][i] < 0:
            counts["background"] += 1
        elif base["instance"][i] == query["instance"][j]:
            counts["same_instance"] += 1
        elif base["fine"][i] == query["fine"][j]:
            counts["same_fine"] += 1
        elif base["super"][i] == query["super"][j]:
            counts["same_super"] += 1
        else:
            counts["other"] += 1
    return counts


def world(rng, n_images=8, patches=16, dim=12):
    """Patch vectors = category code + noise; fine categories grouped in supercategories."""
    n = n_images * patches
    fine = rng.integers(-1, 6, n)  # -1 = background
    sup = np.where(fine >= 0, fine // 2, -1)
    codes = rng.normal(size=(7, dim)) * 3
    x = codes[fine + 1] + rng.normal(size=(n, dim))
    meta = {
        "source": np.repeat(np.arange(n_images), patches),
        "position": np.tile(np.arange(patches), n_images),
        # one object per (image, fine category): its patches share an instance id
        "instance": np.where(fine >= 0, np.repeat(np.arange(n_images), patches) * 10 + fine, -1),
        "fine": fine,
        "super": sup,
    }
    return x.astype(np.float32), meta


@pytest.mark.parametrize("exclude_source", [False, True])
@pytest.mark.parametrize("noise", [0.01, 2.0])
def test_matches_reference(exclude_source, noise):
    rng = np.random.default_rng(0)
    base_x, meta = world(rng)
    query_x = base_x + rng.normal(scale=noise, size=base_x.shape).astype(np.float32)
    got = retrieval_outcomes(base_x, meta, query_x, meta, exclude_source=exclude_source)
    assert got.counts == reference(base_x, meta, query_x, meta, exclude_source)
    assert got.n_queries == int((meta["fine"] >= 0).sum())
    assert sum(got.counts.values()) == got.n_queries
    assert sum(got.rates.values()) == pytest.approx(1.0)


def test_planted_outcomes():
    rng = np.random.default_rng(1)
    base_x, meta = world(rng)
    faithful = retrieval_outcomes(base_x, meta, base_x + 1e-3, meta)
    assert faithful.rates["original"] == 1.0
    excluded = retrieval_outcomes(base_x, meta, base_x + 1e-3, meta, exclude_source=True)
    assert excluded.counts["original"] == 0
    # Category codes dominate the noise: without the source, same fine category wins mostly.
    assert excluded.rates["same_fine"] > 0.8
    # Queries replaced by a background code retrieve background.
    bg = meta["fine"] < 0
    query_x = base_x.copy()
    query_x[:] = base_x[bg].mean(0)
    lost = retrieval_outcomes(base_x, meta, query_x, PatchMeta.coerce("m", meta, len(base_x)))
    assert lost.rates["background"] == 1.0


def test_bad_meta():
    x = np.zeros((4, 3), np.float32)
    meta = {"source": np.zeros(4, int), "position": np.arange(4), "instance": np.zeros(4, int), "fine": np.zeros(4, int)}
    with pytest.raises(ValueError, match=r"lacks the keys \['super'\]"):
        retrieval_outcomes(x, meta, x, meta)
    meta["super"] = np.zeros(3, int)
    with pytest.raises(ValueError, match="super has 3 entries but the features have 4 rows"):
        retrieval_outcomes(x, meta, x, meta)


def test_another_patch_of_the_same_object_is_same_instance_not_same_fine():
    """R17: the paper's 'same fine-grained category' is another instance; a neighbouring
    patch of the query's own object (once counted there) is its own outcome."""
    # base: tile 0 holds one plane (instance 5) on patches 0 and 1; tile 1 another plane
    # (instance 9) of the same fine category on patch 0; everything else background
    base_x = np.array([[0, 0], [1, 0], [5, 5], [9, 9]], np.float32)
    base = {"source": np.array([0, 0, 1, 1]), "position": np.array([0, 1, 0, 1]),
            "instance": np.array([5, 5, 9, -1]), "fine": np.array([3, 3, 3, -1]),
            "super": np.array([0, 0, 0, -1])}
    # query: tile 0 shifted, so its patch 0 now looks like the original patch 1
    query_x = np.array([[1.0, 0.1], [5.1, 5.0]], np.float32)
    query = {"source": np.array([0, 1]), "position": np.array([0, 0]), "instance": np.array([5, 9]),
             "fine": np.array([3, 3]), "super": np.array([0, 0])}
    got = retrieval_outcomes(base_x, base, query_x, query)
    assert [OUTCOMES[k] for k in got.outcome] == ["same_instance", "original"]
    assert OUTCOMES == ("original", "same_instance", "same_fine", "same_super", "other", "background")
