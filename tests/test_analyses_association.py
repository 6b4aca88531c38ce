"""ROIAlign pooling and association across frames on planted videos."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analyses import FrameObjects, association_accuracy, pool_boxes


def test_pool_boxes_covering_whole_patches_is_their_mean():
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(14, 14, 8)).astype(np.float32)  # a 224x224 image, 16 px patches
    boxes = np.array([[32, 48, 48, 64], [0, 0, 32, 32], [16, 16, 64, 48]], dtype=np.float64)
    pooled = pool_boxes(grid, boxes, (224, 224))
    np.testing.assert_allclose(pooled[0], grid[3, 2], rtol=1e-6)
    np.testing.assert_allclose(pooled[1], grid[:2, :2].mean((0, 1)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled[2], grid[1:3, 1:4].mean((0, 1)), rtol=1e-5, atol=1e-6)
    # Non-square images scale each axis; batches index the image.
    wide = rng.normal(size=(2, 4, 8, 5)).astype(np.float32)  # 64 x 128 image, 16 px
    got = pool_boxes(wide, np.array([[1, 112, 48, 128, 64]]), (64, 128))
    np.testing.assert_allclose(got[0], wide[1, 3, 7], rtol=1e-6)
    with pytest.raises(ValueError, match=r"\[n, 5\]"):
        pool_boxes(wide, np.array([[112, 48, 128, 64]]), (64, 128))
    with pytest.raises(ValueError, match="x2 >= x1"):
        pool_boxes(grid, np.array([[10, 0, 5, 5]]), (224, 224))


def video(rng, name, n_frames=12, n_tracks=6, drift=0.05, dim=16, categories=None, presence=0.9):
    """Each track keeps an identity vector plus noise that grows with time."""
    identity = rng.normal(size=(n_tracks, dim))
    cats = np.arange(n_tracks) % 2 if categories is None else categories
    frames = []
    for t in range(n_frames):
        present = np.flatnonzero(rng.random(n_tracks) < presence)
        vectors = identity[present] + rng.normal(scale=drift * np.sqrt(t + 1), size=(len(present), dim))
        frames.append(FrameObjects(name, t, vectors.astype(np.float32), present, cats[present]))
    return frames


def reference(frames, gap, conditioned=True):
    """Per-query loop: with `conditioned`, only objects whose track is present at t + gap."""
    by = {(f.video, f.frame): f for f in frames}
    inst, cat, objects, left_out = [], [], 0, 0
    for (v, t), f in by.items():
        g = by.get((v, t + gap))
        if g is None:
            continue
        for q, tid, c in zip(f.vectors, f.track_ids, f.categories, strict=True):
            objects += 1
            present = tid in set(g.track_ids.tolist())
            left_out += not present
            if (conditioned and not present) or not len(g.track_ids):
                continue
            i = int(np.argmin(((g.vectors.astype(np.float64) - q) ** 2).sum(1)))
            inst.append(g.track_ids[i] == tid)
            cat.append(g.categories[i] == c)
    return np.mean(inst), np.mean(cat), len(inst), left_out / objects


def test_matches_reference_and_planted_identity():
    rng = np.random.default_rng(1)
    frames = video(rng, "a") + video(rng, "b", drift=2.0)
    result = association_accuracy(frames, gaps=[1, 3, 8])
    for gap in (1, 3, 8):
        inst, cat, n, left_out = reference(frames, gap)
        assert result.per_gap[gap]["instance_accuracy"] == pytest.approx(inst)
        assert result.per_gap[gap]["category_accuracy"] == pytest.approx(cat)
        assert result.per_gap[gap]["n_queries"] == n
        assert result.per_gap[gap]["left_out"] == pytest.approx(left_out) and left_out > 0
        inst, cat, _, _ = reference(frames, gap, conditioned=False)
        assert result.per_gap[gap]["all_objects_instance_accuracy"] == pytest.approx(inst)
        assert result.per_gap[gap]["all_objects_category_accuracy"] == pytest.approx(cat)
    easy = association_accuracy(video(rng, "c", drift=0.01, presence=1.0), gaps=[1, 5])
    assert easy.per_gap[1]["instance_accuracy"] == 1.0 and easy.per_gap[5]["instance_accuracy"] == 1.0
    assert np.isnan(easy.per_gap[1]["category_accuracy_wrong"])
    # Vectors unrelated to identity: accuracy near chance (1 in ~6).
    noise = association_accuracy(video(rng, "d", drift=50.0, n_frames=30, presence=1.0), gaps=[1])
    assert noise.per_gap[1]["instance_accuracy"] < 0.4
    assert result.present.sum() == sum(result.per_gap[g]["n_queries"] for g in (1, 3, 8))
    assert len(result.present) == sum(result.per_gap[g]["n_objects"] for g in (1, 3, 8))


def test_an_object_leaving_the_scene_no_longer_lowers_instance_accuracy():
    """R1: identities are perfectly kept (no drift), but one object leaves after frame 4. It
    cannot be matched at t + D once gone, so counting it would read as a failure that grows
    with D; it is left out (and its share reported) instead."""
    rng = np.random.default_rng(3)
    identity = rng.normal(size=(4, 8))
    frames = []
    for t in range(12):
        tracks = np.arange(4) if t <= 4 else np.arange(3)  # track 3 leaves the scene
        frames.append(FrameObjects("v", t, identity[tracks], tracks, tracks % 2))
    result = association_accuracy(frames, gaps=[1, 3, 6])
    for gap in (1, 3, 6):
        assert result.per_gap[gap]["instance_accuracy"] == 1.0
        assert result.per_gap[gap]["left_out"] > 0
        assert result.per_gap[gap]["all_objects_instance_accuracy"] < 1.0  # the earlier count
    # the longer the gap, the more pairs see the object gone, the more the earlier count fell
    assert (result.per_gap[6]["all_objects_instance_accuracy"]
            < result.per_gap[1]["all_objects_instance_accuracy"])


def test_wrong_matches_keep_category_when_categories_cluster():
    rng = np.random.default_rng(2)
    dim, n_tracks = 16, 8
    cats = np.repeat([0, 1], 4)
    centre = rng.normal(size=(2, dim)) * 20
    frames = []
    identity = centre[cats] + rng.normal(size=(n_tracks, dim))
    for t in range(10):
        vectors = identity + rng.normal(scale=1.5, size=identity.shape)
        frames.append(FrameObjects(0, t, vectors, np.arange(n_tracks), cats))
    res = association_accuracy(frames, gaps=[2]).per_gap[2]
    assert res["n_wrong"] > 0
    assert res["category_accuracy_wrong"] == 1.0


def test_bad_inputs():
    f = FrameObjects(0, 0, np.zeros((2, 3), np.float32), np.arange(2), np.arange(3))
    with pytest.raises(ValueError, match="categories of video 0 frame 0 must have 2 entries"):
        association_accuracy([f], [1])
    with pytest.raises(ValueError, match="positive"):
        association_accuracy([], [0])
    nan = FrameObjects(0, 0, np.full((2, 3), np.nan), np.arange(2), np.arange(2))
    with pytest.raises(ValueError, match="2 rows containing NaN"):
        association_accuracy([nan], [1])
