"""S5 retrieval and S6 association experiments on planted embeddings: their rows, read as
the claims will read them (tests/metric_table.py), and their units."""

from dataclasses import dataclass, replace

import numpy as np
import pytest
from metric_table import read, recomputed

from harness.analyses.retrieval import OUTCOMES
from harness.experiments.association import association_measurements
from harness.experiments.retrieval import retrieval_measurements
from harness.profiles import PROFILES
from harness.views import FrameObjects, RetrievalViews


@dataclass
class StandIn:
    depth: int = 12
    patch_size: int = 16
    embed_dim: int = 32


# ---------------------------------------------------------------- S5
class PlantedTiles:
    """Tiles of 2 x 2 patches: patch 0 background, patches 1-3 one object of the tile's fine
    category (its instance); features planted by the test."""

    def __init__(self, key, features, fine):
        self.key, self.features = key, features
        n = len(features)
        self.source_index = np.arange(n)
        instance = np.repeat(np.arange(n)[:, None], 4, axis=1)
        instance[:, 0] = -1
        fine_map = np.repeat(np.asarray(fine)[:, None], 4, axis=1)
        fine_map[:, 0] = -1
        self.objects = {"instance": instance.reshape(n, 2, 2), "fine": fine_map.reshape(n, 2, 2),
                        "super": np.where(fine_map >= 0, fine_map // 2, -1).reshape(n, 2, 2)}

    def patch_objects(self, patch_size):
        return self.objects


def planted_retrieval(seed=0, n_tiles=12):
    """Each patch: a code of its own (identity) in 16 quiet features, and 4 loud features of
    noise that a transformation redraws: only removing the loud features keeps the identity."""
    rng = np.random.default_rng(seed)
    identity = rng.normal(0, 1, (n_tiles, 2, 2, 16))
    fine = np.arange(n_tiles) % 4

    def features(loud_seed):
        loud = np.random.default_rng(loud_seed).normal(0, 20, (n_tiles, 2, 2, 4))
        return np.concatenate([loud, identity + rng.normal(0, 0.05, identity.shape),
                               np.zeros((n_tiles, 2, 2, 12))], axis=-1).astype(np.float16)

    original = PlantedTiles("original", features(1), fine)
    transformed = {(kind, float(level)): PlantedTiles(f"{kind}{level}", features(10 + level), fine)
                   for kind in ("shift", "blur") for level in (1, 2)}
    return RetrievalViews(original, transformed)


def embed(backbone, view, layers):
    return {layer: view.features for layer in layers}


def test_retrieval_rows_with_the_pruned_variant_of_the_same_model():
    views = planted_retrieval()
    rows = retrieval_measurements("mae", StandIn(), views, embed, PROFILES["smoke"], pruned=np.arange(4))
    assert {r.model for r in rows} == {"mae"}
    assert [r.metric for r in rows].count("variance_ratio") == 1  # X.5: one number, no units
    for row in (r for r in rows if r.metric == "rate"):
        assert row.units.shape == (12, 2) and row.unit_group == "fair1m/tiles"
        assert recomputed(row) == pytest.approx(row.value)
    for variant in ("main", "pruned"):
        for kind in ("shift", "blur"):
            rates = [read(rows, "rate", "mae", corruption=kind, level=1.0, outcome=o, variant=variant)
                     for o in OUTCOMES]
            assert sum(rates) == pytest.approx(1.0)
        read(rows, "rate", "mae", corruption="blur", level=2.0, outcome="same_fine", exclude_source=True,
             variant=variant)
    with pytest.raises(LookupError):  # the source tile is only excluded for blur (fig. 6)
        read(rows, "rate", "mae", corruption="shift", level=1.0, outcome="original", exclude_source=True)
    main = read(rows, "rate", "mae", corruption="shift", level=1.0, outcome="original")
    pruned = read(rows, "rate", "mae", corruption="shift", level=1.0, outcome="original", variant="pruned")
    assert pruned == 1.0 and main < 0.5  # the loud features hide the identity
    assert not any(r.params.get("variant") == "pruned" for r in
                   retrieval_measurements("mae", StandIn(), views, embed, PROFILES["smoke"]))


# ---------------------------------------------------------------- S6
class PlantedVideo:
    """Two videos of 12 frames, three objects each; an object's vector drifts by `drift` per
    frame; with `leaves`, the third object of each video leaves the scene after frame 5."""

    size = (32, 32)

    def __init__(self, drift, leaves=False, seed=0, fps=5.0):
        rng = np.random.default_rng(seed)
        self.video_ids, self.fps = ["v0", "v1"], fps
        self.video_index = np.repeat([0, 1], 12)
        self.frame_index = np.tile(np.arange(12), 2)
        identity = rng.normal(0, 1, (2, 3, 8))
        walk = np.cumsum(rng.normal(0, drift, (2, 12, 3, 8)), axis=1)
        grids = np.zeros((24, 2, 2, 8), np.float32)
        self._objects = []
        boxes = np.array([[0, 0, 16, 16], [16, 0, 32, 16], [0, 16, 16, 32]], np.float32)
        for i in range(24):
            v, t = self.video_index[i], self.frame_index[i]
            for k, (r, c) in enumerate([(0, 0), (0, 1), (1, 0)]):
                grids[i, r, c] = identity[v, k] + walk[v, t, k]
            n = 2 if leaves and t > 5 else 3
            self._objects.append(FrameObjects(np.arange(n) + 3 * v, ("car", "car", "bus")[:n], boxes[:n]))
        self.grids = grids.astype(np.float16)

    def frame_objects(self):
        return self._objects

    def frame_rate(self, video_index):
        return self.fps


def associate(views, gaps=(1, 2, 5, 10, 11)):
    return association_measurements("dino", StandIn(), views, "bdd100k_mot",
                                    lambda b, v, layers: {12: v.grids},
                                    replace(PROFILES["smoke"], frame_gaps=gaps))


def test_association_falls_with_the_gap_only_when_appearance_drifts():
    accuracy = {}
    for drift in (0.0, 0.5):
        rows = associate([PlantedVideo(drift)])
        accuracy[drift] = {gap: read(rows, "instance_acc", "dino", gap=gap) for gap in (1, 2, 5, 10, 11)}
    assert set(accuracy[0.0].values()) == {1.0}  # identical vectors: every object finds itself
    assert accuracy[0.5][1] > accuracy[0.5][11]  # drift: nearer frames match more often


def test_an_object_that_left_the_scene_is_left_out_not_counted_wrong():
    rows = associate([PlantedVideo(0.0, leaves=True)])
    for gap in (1, 5, 10):
        assert read(rows, "instance_acc", "dino", gap=gap) == 1.0
        assert read(rows, "left_out", "dino", gap=gap) > 0
        assert read(rows, "instance_acc", "dino", gap=gap, variant="all_objects") < 1.0
        assert read(rows, "instance_acc", "dino", gap=gap, variant="roi7x7") == 1.0
        assert read(rows, "gap_seconds", "dino", gap=gap) == pytest.approx(gap / 5.0)
    # left out: objects at t whose track is gone at t + 10: the third object of frame 0 and 1
    left = next(r for r in rows if r.metric == "left_out" and r.params["gap"] == 10)
    np.testing.assert_array_equal(left.units, [[2, 6], [2, 6]])


def test_views_of_two_frame_sizes_join_as_videos_with_their_own_frame_rates():
    rows = associate([PlantedVideo(0.0, fps=5.0), PlantedVideo(0.0, seed=1, fps=30.0)], gaps=(3,))
    for row in rows:
        if row.units is not None:
            assert row.units.shape == (4, 2) and row.unit_group == "bdd100k_mot/videos"
            assert recomputed(row) == pytest.approx(row.value)
    # half the queries at 5 fps, half at 30 fps
    assert read(rows, "gap_seconds", "dino", gap=3) == pytest.approx((3 / 5 + 3 / 30) / 2)
