"""The experiments on planted embeddings: from features to measured rows to a verdict.

No model and no pixels: a stand-in backbone and views hand planted patch embeddings to the
real pipeline (exact k-NN, linear probe, pruning, metrics), and the real relation judges.
"""

from dataclasses import dataclass, replace

import numpy as np
import pytest

from harness.claims import CONTRADICTED, VERIFIED, judge
from harness.experiments.association import association_measurements
from harness.experiments.segmentation import segmentation_measurements
from harness.measurements import to_table
from harness.profiles import PROFILES
from harness.views import SegmentationViews

N_CLASSES, GRID, WIDTH = 5, 2, 768


@dataclass
class StandInBackbone:
    depth: int = 12
    patch_size: int = 16
    embed_dim: int = WIDTH


class PlantedView:
    """Tiles of GRID x GRID patches with labels; embeddings planted by the test."""

    def __init__(self, key, labels, features):
        self.key, self._labels, self.features = key, labels, features
        self.source_index = np.arange(len(labels))  # every tile its own image

    def patch_labels(self, patch_size):
        return self._labels


def planted_views(with_nuisance: bool, seed=0):
    """Class signal in 100 dims; with_nuisance adds 200 dims of huge variance (10 of them
    extreme), as MAE's features have; without, those dims are quiet noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (N_CLASSES, 100))

    def tiles(n):
        labels = rng.integers(0, N_CLASSES, (n, GRID, GRID))
        y = labels.reshape(-1)
        x = np.empty((y.size, WIDTH), np.float32)
        x[:, :100] = centres[y] + rng.normal(0, 1, (y.size, 100))
        if with_nuisance:
            x[:, 100:110] = rng.normal(0, 1e4, (y.size, 10))
            x[:, 110:300] = rng.normal(0, 30, (y.size, 190))
        else:
            x[:, 100:300] = rng.normal(0, 0.3, (y.size, 200))
        x[:, 300:] = rng.normal(0, 0.3, (y.size, WIDTH - 300))
        return labels, x.reshape(n, GRID, GRID, WIDTH).astype(np.float16)

    train = PlantedView(f"train-{with_nuisance}", *tiles(60))
    val = PlantedView(f"val-{with_nuisance}", *tiles(30))
    return SegmentationViews(dataset="cityscapes", num_classes=N_CLASSES,
                             class_names=tuple("abcde"), train=train,
                             train_subsets={60: np.ones(60, bool)}, val=val)


def embed(backbone, view, layers):
    return {layer: view.features for layer in layers}


@pytest.mark.parametrize("with_nuisance, verdict", [(True, VERIFIED), (False, CONTRADICTED)])
def test_pruning_lifts_knn_only_when_high_variance_nuisance_is_planted(with_nuisance, verdict):
    """S4.2-S4.5 on the same rows: with the nuisance, pruning 200 features (or BatchNorm)
    rescues k-NN and costs the linear probe nothing; without it, pruning 200 removes the
    signal itself, so every one of these relations fails."""
    rows = segmentation_measurements(
        "mae", StandInBackbone(), planted_views(with_nuisance), embed, PROFILES["paper"],
        with_layers=False, with_corruptions=False, with_variance=True)
    table = to_table(rows)
    for claim_id in ("S4.2", "S4.3", "S4.5"):
        result = judge(claim_id, table)
        assert result.verdict == verdict, f"{claim_id}: {result.message}"


def test_variance_ratio_sees_the_planted_outliers():
    ratios = {}
    for planted in (True, False):
        rows = segmentation_measurements(
            "mae", StandInBackbone(), planted_views(planted), embed, PROFILES["paper"],
            with_layers=False, with_corruptions=False, with_variance=True)
        ratios[planted] = next(r.value for r in rows if r.metric == "variance_ratio")
    assert ratios[True] > 1000 * ratios[False]


class PlantedVideo:
    """Two videos of 12 frames, three objects each; an object's vector drifts by `drift`
    per frame, so association fails more with larger gaps when the drift is large."""

    size = (32, 32)

    def __init__(self, drift, seed=0):
        rng = np.random.default_rng(seed)
        self.video_ids = ["v0", "v1"]
        self.video_index = np.repeat([0, 1], 12)
        self.frame_index = np.tile(np.arange(12), 2)
        identity = rng.normal(0, 1, (2, 3, 8))
        walk = np.cumsum(rng.normal(0, drift, (2, 12, 3, 8)), axis=1)
        grids = np.zeros((24, 2, 2, 8), np.float32)
        self._objects = []
        from harness.views import FrameObjects

        boxes = np.array([[0, 0, 16, 16], [16, 0, 32, 16], [0, 16, 16, 32]], np.float32)
        for i in range(24):
            v, t = self.video_index[i], self.frame_index[i]
            for k, (r, c) in enumerate([(0, 0), (0, 1), (1, 0)]):
                grids[i, r, c] = identity[v, k] + walk[v, t, k]
            self._objects.append(FrameObjects(np.arange(3) + 3 * v, ("car", "car", "bus"), boxes))
        self.grids = grids.astype(np.float16)

    def frame_objects(self):
        return self._objects


def test_association_falls_with_the_gap_only_when_appearance_drifts():
    profile = PROFILES["smoke"]
    gaps = (1, 2, 5, 10, 11)
    accuracy = {}
    for drift in (0.0, 0.5):
        view = PlantedVideo(drift)
        rows = association_measurements(
            "dino", StandInBackbone(), view, "bdd100k_mot", lambda b, v, layers: {12: v.grids},
            replace(profile, frame_gaps=gaps))
        table = to_table(rows)
        accuracy[drift] = table[table.metric == "instance_acc"].set_index("gap")["value"]
        assert set(accuracy[drift].index) == set(gaps)
    assert (accuracy[0.0] == 1.0).all()  # identical vectors: every object finds itself
    assert accuracy[0.5][1] > accuracy[0.5][11]  # drift: nearer frames match more often
