"""The segmentation experiment on planted embeddings: from features to the rows of the metric
table, read as the claims will read them (tests/metric_table.py).

No model and no pixels: a stand-in backbone and views hand planted patch embeddings to the
real pipeline (exact k-NN, linear probe with its lr choice, pruning, ridge regression,
metrics), and each test checks the relation the planted structure implies.
"""

from dataclasses import dataclass

import numpy as np
import pytest
from metric_table import read, recomputed

from harness.data.cityscapes import CLASS_NAMES as CITYSCAPES_CLASSES
from harness.experiments.segmentation import EASY_CLASSES, segmentation_measurements
from harness.profiles import PROFILES
from harness.views import SegmentationViews

N_CLASSES, GRID, WIDTH = 5, 2, 768
FIXED_LR = (1e-3,)  # one lr: nothing to choose, the tests of the choice are in test_linear_probe


@dataclass
class StandInBackbone:
    depth: int = 12
    patch_size: int = 16
    embed_dim: int = WIDTH


class PlantedView:
    """Tiles of patches with labels; embeddings planted by the test."""

    def __init__(self, key, labels, features, source_index=None):
        self.key, self._labels, self.features = key, labels, features
        self.source_index = np.arange(len(labels)) if source_index is None else source_index

    def patch_labels(self, patch_size):
        return self._labels


def embed(backbone, view, layers):
    return {layer: view.features for layer in layers}


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


def measure(views, model="mae", **options):
    options = {"with_layers": False, "with_corruptions": False, "with_variance": True,
               "lr_grid": FIXED_LR, **options}
    return segmentation_measurements(model, StandInBackbone(), views, embed, PROFILES["paper"], **options)


@pytest.fixture(scope="module")
def planted_rows():
    return {planted: measure(planted_views(planted)) for planted in (True, False)}


@pytest.mark.parametrize("with_nuisance", [True, False])
def test_pruning_and_standardising_lift_knn_only_when_high_variance_nuisance_is_planted(planted_rows, with_nuisance):
    """S4.2-S4.5 on the same rows: with the nuisance, pruning 200 features (or standardising
    them, k-NN after BN) rescues k-NN and costs the linear probe nothing; without it,
    pruning 200 removes the signal itself and nothing is rescued."""
    rows = planted_rows[with_nuisance]
    knn = {m: read(rows, "miou", "mae", probe="knn", m=m) for m in (0, 10, 200)}
    linear = {m: read(rows, "miou", "mae", probe="linear_bn", m=m) for m in (0, 200)}
    knn_bn = read(rows, "miou", "mae", probe="knn_bn")
    if with_nuisance:
        assert knn[200] >= 3 * knn[0] and knn[10] > knn[0]
        assert linear[200] >= 0.95 * linear[0]
        assert knn_bn >= 2 * knn[0] and knn_bn >= 0.7 * knn[200]
    else:
        assert knn[200] < 0.9 * knn[0]
        assert knn_bn < 2 * knn[0]


def test_variance_ratio_sees_the_planted_outliers(planted_rows):
    ratios = {planted: read(rows, "variance_ratio", "mae") for planted, rows in planted_rows.items()}
    assert ratios[True] > 1000 * ratios[False]


# ---------------------------------------------------------------- the rows of S3 on a Cityscapes-like world
class PlantedTiles(PlantedView):
    """Tiles of `per_image` tiles per image, 3 x 3 patches, with the label maps S4.6 needs:
    the tile's pixel fractions of road/building/vegetation are planted in its central patch
    (in 8 quiet features); the frame-level fractions are the mean over the frame's tiles."""

    def __init__(self, key, labels, features, per_image, fractions):
        super().__init__(key, labels, features, np.repeat(np.arange(len(labels) // per_image), per_image))
        self.per_image, self.fractions = per_image, fractions
        self.sample_ids = [f"im{i}" for i in range(len(labels) // per_image)]

    def tile_class_fractions(self, classes):
        return self.fractions

    def class_fractions(self, classes):
        return self.fractions.reshape(-1, self.per_image, len(classes)).mean(axis=1)

    def central_patch(self, patch_size):
        """The frame's centre falls on a corner patch of the frame's first tile."""
        starts = np.arange(len(self.sample_ids)) * self.per_image
        return np.stack([starts, np.zeros_like(starts), np.zeros_like(starts)], axis=1)


CITY_WIDTH, CITY_GRID, PER_IMAGE = 64, 3, 8
CLASSES = tuple(CITYSCAPES_CLASSES)


def cityscapes_like(seed=0, n_train_images=24, n_val_images=10):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (len(CLASSES), 32))
    mixing = rng.normal(0, 1, (3, 8))

    def world(n_images, name):
        n = n_images * PER_IMAGE
        labels = rng.integers(0, len(CLASSES), (n, CITY_GRID, CITY_GRID))
        labels[: n // 3, 0, 0] = CLASSES.index("bus")
        y = labels.reshape(-1)
        x = np.zeros((y.size, CITY_WIDTH), np.float32)
        x[:, :32] = centres[y] + rng.normal(0, 1, (y.size, 32))
        x[:, 32:40] = rng.normal(0, 300, (y.size, 8))  # loud, label-free
        x[:, 40:] = rng.normal(0, 0.1, (y.size, CITY_WIDTH - 40))
        x = x.reshape(n, CITY_GRID, CITY_GRID, CITY_WIDTH)
        fractions = rng.dirichlet(np.ones(4), n)[:, :3]
        x[:, 1, 1, 48:56] = fractions @ mixing + rng.normal(0, 0.02, (n, 8))  # the tile's context
        return PlantedTiles(name, labels, x.astype(np.float16), PER_IMAGE, fractions)

    train, val = world(n_train_images, f"train{seed}"), world(n_val_images, f"val{seed}")
    subsets = {k * 3: np.isin(train.source_index, np.arange(k * 3)) for k in (2, 4, 8)}
    return SegmentationViews(dataset="cityscapes", num_classes=len(CLASSES), class_names=CLASSES,
                             train=train, train_subsets=subsets, val=val)


@pytest.fixture(scope="module")
def cityscapes_rows():
    views = cityscapes_like()
    val = views.val
    # corrupted val views: a blurred one (features nudged) and a collapsed one in which every
    # patch of val image i is a copy of one train patch of class c_i, a class per image
    blurred = PlantedView("blur", val._labels, (val.features + 0.5).astype(np.float16), val.source_index)
    train_x = views.train.features.reshape(-1, CITY_WIDTH)
    train_y = views.train._labels.reshape(-1)
    collapsed = np.empty_like(val.features)
    for image in range(len(val.sample_ids)):
        source = np.flatnonzero(train_y == image % len(CLASSES))[0]
        collapsed[val.source_index == image] = train_x[source]
    views.corrupted = {("blur", 10.0): blurred,
                       ("band_noise_literal", 4.0): PlantedView("collapsed", val._labels, collapsed,
                                                                val.source_index)}
    rows = segmentation_measurements("dino", StandInBackbone(depth=3, embed_dim=CITY_WIDTH), views,
                                     embed, PROFILES["smoke"], lr_grid=FIXED_LR)
    return views, rows


def test_every_row_with_units_gives_back_its_value_by_the_schemas_reducer(cityscapes_rows):
    _, rows = cityscapes_rows
    groups = {}
    for row in rows:
        if row.units is None:
            continue
        assert row.unit_group == "cityscapes/val"
        groups.setdefault(row.unit_group, set()).add(len(row.units))
        assert recomputed(row) == pytest.approx(row.value, nan_ok=True), (row.metric, row.params)
    assert groups == {"cityscapes/val": {10}}  # every row: the 10 val images, one draw serves all


def test_s3_rows_are_all_there(cityscapes_rows):
    views, rows = cityscapes_rows
    for layer in (1, 2, 3):
        for classes in ("all", "easy", "hard"):
            read(rows, "miou", "dino", probe="knn", layer=layer, classes=classes)
        read(rows, "patch_acc", "dino", probe="knn", layer=layer)
        read(rows, "iou", "dino", probe="knn", layer=layer, class_name="bus")
    assert read(rows, "n_patches", "dino", class_name="bus") == (views.val._labels == CLASSES.index("bus")).sum()
    for n_train in (6, 12, 24):
        for metric in ("miou", "patch_acc"):
            read(rows, metric, "dino", probe="knn", n_train=n_train)
            read(rows, metric, "dino", probe="linear", n_train=n_train)
        assert read(rows, "lr", "dino", probe="linear", n_train=n_train) == FIXED_LR[0]
    read(rows, "miou", "dino", probe="knn", variant="cosine")
    for corruption, level, variant in (("blur", 10.0, "main"), ("band_noise", 4.0, "literal")):
        for probe in ("knn", "linear"):
            read(rows, "miou", "dino", probe=probe, corruption=corruption, level=level, variant=variant)
        for metric in ("majority_fraction", "majority_fraction_pooled"):
            read(rows, metric, "dino", probe="knn", corruption=corruption, level=level, variant=variant)
    read(rows, "majority_fraction", "dino", probe="knn")  # clean images too


def test_easy_and_hard_classes_split_the_classes(cityscapes_rows):
    _, all_rows = cityscapes_rows
    rows = [r for r in all_rows if r.metric == "miou" and r.params.get("classes") == "easy"]
    easy = rows[0].reducer_args["class_indices"]
    assert sorted(CLASSES[i] for i in easy) == sorted(EASY_CLASSES)
    hard = next(r for r in all_rows if r.params.get("classes") == "hard").reducer_args["class_indices"]
    assert sorted(easy + hard) == list(range(len(CLASSES)))


def test_majority_fraction_is_per_image_so_a_collapse_to_a_class_per_image_shows(cityscapes_rows):
    """S3.11 (R3c): k-NN that gives every patch of an image one class, a different class per
    image, has collapsed; pooled over all images the same predictions look diverse."""
    _, rows = cityscapes_rows
    where = {"probe": "knn", "corruption": "band_noise", "level": 4.0, "variant": "literal"}
    assert read(rows, "majority_fraction", "dino", **where) == 1.0
    assert read(rows, "majority_fraction_pooled", "dino", **where) <= 0.2
    assert read(rows, "majority_fraction", "dino", probe="knn") < 0.5  # clean: no collapse


def test_s4_6_reads_the_context_of_the_tile_the_model_saw(cityscapes_rows):
    """R7: per tile, the central patch's planted context gives a high R^2; pruning the loud
    features keeps it, the loud features alone hold none of it (random features do). The
    frame-level unit asks one tile's patch for the whole frame's fractions and finds little."""
    _, rows = cityscapes_rows
    r2 = {s: read(rows, "r2", "dino", subset=s) for s in ("full", "pruned", "top", "random")}
    assert r2["full"] > 0.8
    assert r2["pruned"] >= r2["full"] - 0.02
    assert r2["top"] < 0.1 < r2["random"]
    frame = read(rows, "r2", "dino", subset="full", variant="frame")
    assert frame < r2["full"] - 0.3
    random_row = next(r for r in rows if r.metric == "r2" and r.params["subset"] == "random"
                      and "variant" not in r.params)
    assert random_row.units.shape == (10, 3 * 30 + 1)  # 10 draws x 3 classes as targets


def test_one_top_m_set_every_patch_of_the_middle_train_subset():
    """R29: S4.2-S4.8 and S5.6 drop the same features: the top-m by variance over every patch
    (labelled or not) of the middle Cityscapes train subset's tiles; S4.7 compares it with
    other datasets' sets."""
    from harness.analyses import feature_overlap, top_variance_features
    from harness.experiments.common import cityscapes_top_features, top_features
    from harness.experiments.overlap import overlap_measurements
    from harness.views import VarianceSet

    views, backbone, profile = cityscapes_like(), StandInBackbone(depth=3, embed_dim=CITY_WIDTH), PROFILES["smoke"]
    top = cityscapes_top_features(backbone, views, embed, profile)
    middle = views.train.features[views.middle_tiles].reshape(-1, CITY_WIDTH)
    assert views.middle_n_train == 12 and len(top) == 17  # 200 of 768 -> 17 of 64
    np.testing.assert_array_equal(top, top_variance_features(middle, 17))
    assert set(range(32, 40)) <= set(top.tolist())  # the planted loud features lead it
    sources = {"cityscapes": views.variance_set(), "ade20k": VarianceSet(views.train),
               "fair1m": VarianceSet(views.val)}
    rows = overlap_measurements("mae", backbone, sources, embed, profile)
    expected = feature_overlap(top, top_features(backbone, VarianceSet(views.val), embed, 200))
    assert read(rows, "overlap", "mae", pair="cityscapes/fair1m") == expected
    assert read(rows, "overlap", "mae", pair="cityscapes/ade20k") >= 8


def test_the_learning_rate_is_chosen_once_per_model_and_probe():
    """On held-out images of the middle train subset, all features; the probe keeps it at
    every training size and pruning level, and every fit reports it as an `lr` row."""
    views = cityscapes_like(seed=3)
    rows = segmentation_measurements("mae", StandInBackbone(depth=3, embed_dim=CITY_WIDTH), views, embed,
                                     PROFILES["smoke"], with_layers=False, with_corruptions=False,
                                     lr_grid=(1e-3, 1e-1))
    lrs = {(r.params["probe"], r.params["n_train"], r.params.get("m", 0)): r.value for r in rows if r.metric == "lr"}
    assert set(lrs) == {("linear_bn", 6, 0), ("linear_bn", 12, 0), ("linear_bn", 24, 0), ("linear", 12, 0),
                        ("linear_bn", 12, 200)}
    assert len({v for (probe, _, _), v in lrs.items() if probe == "linear_bn"}) == 1
    assert set(lrs.values()) <= {1e-3, 1e-1}
