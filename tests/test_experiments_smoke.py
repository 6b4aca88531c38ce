"""Every experiment end to end on the synthetic world: real views, smoke-sized models, the
embedding store, and the rows checked against the metric-table schema (key columns, metric
names, variants, reducers, unit groups shared across experiments)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from metric_table import read, recomputed

from harness.experiments import conventions
from harness.experiments.association import association_measurements
from harness.experiments.common import cityscapes_top_features
from harness.experiments.overlap import overlap_measurements
from harness.experiments.reconstruction import reconstruction_measurements, smoke_decoder
from harness.experiments.retrieval import retrieval_measurements
from harness.experiments.segmentation import segmentation_measurements
from harness.extract import embeddings
from harness.models import load
from harness.profiles import PROFILES
from harness.store import EmbeddingStore
from harness.views.paper import (
    overlap_views,
    retrieval_views,
    segmentation_views,
    video_views,
    views_to_extract,
)

# The smoke profile with one level per corruption, so the run stays short on two cores.
PROFILE = replace(PROFILES["smoke"], corruption_levels=(("blur", (10,)), ("noise", (10,)), ("band_noise", (4,))),
                  retrieval_transforms=(("shift", (1,)), ("blur", (10,)), ("noise", (10,))),
                  frame_gaps=(1, 5, 30))
LR_GRID = (1e-3, 1e-2)  # a choice to make, at half the cost of the paper's grid

KEY_COLUMNS = {"variant", "dataset", "probe", "layer", "n_train", "corruption", "level", "m", "classes",
               "class_name", "subset", "pair", "outcome", "exclude_source", "gap", "zeroed"}
VARIANTS = {"literal", "frame", "unmasked", "cosine", "all_objects", "roi7x7", "pruned"}
PROBES = {"knn", "linear", "linear_bn", "knn_bn"}
REDUCER = {"miou": "miou", "patch_acc": "accuracy", "iou": "class_iou", "n_patches": "sum",
           "majority_fraction": "ratio", "majority_fraction_pooled": "ratio", "variance_ratio": None,
           "r2": "r2", "overlap": None, "recon_mse": "ratio", "rate": "ratio", "instance_acc": "ratio",
           "category_acc": "ratio", "category_acc_wrong": "ratio", "left_out": "ratio",
           "gap_seconds": None, "lr": None}


def measure_everything(world, store_dir):
    store = EmbeddingStore(store_dir)

    def embed(backbone, view, layers):
        return embeddings(backbone, view, store, layers=list(layers), progress=False)

    recorded = {}
    models = {name: load(name, random_init=True, smoke=True) for name in ("dino", "dinov2", "mae")}
    seg, _ = segmentation_views(PROFILE, "cityscapes", world / "cityscapes", True, recorded.__setitem__)
    ret, _ = retrieval_views(PROFILE, world / "fair1m")
    rows = {"segmentation": segmentation_measurements("mae", models["mae"], seg, embed, PROFILE, lr_grid=LR_GRID)}
    top = cityscapes_top_features(models["mae"], seg, embed, PROFILE)
    decoder = smoke_decoder(models["mae"].embed_dim, 16, PROFILE.tile_out, seed=0)
    rows["reconstruction"] = reconstruction_measurements("mae", models["mae"], decoder, seg.val, top, seed=0)
    rows["retrieval"] = retrieval_measurements("mae", models["mae"], ret, embed, PROFILE, pruned=top)
    sources, _ = overlap_views(PROFILE, {d: world / d for d in ("cityscapes", "ade20k", "fair1m")})
    rows["overlap"] = overlap_measurements("mae", models["mae"], sources, embed, PROFILE)
    rows["association"] = []
    for name in ("dino", "dinov2"):
        videos, _ = video_views(PROFILE, "mot17", world / "mot17", models[name].patch_size, recorded.__setitem__)
        rows["association"] += association_measurements(name, models[name], videos, "mot17", embed, PROFILE)
    return rows, recorded, top, seg


def check_schema(rows):
    """Key columns, metric names, variants, probes and reducers of the schema; every row's
    units give back its value."""
    for row in (r for experiment in rows.values() for r in experiment):
        assert row.metric in REDUCER, row.metric
        assert set(row.params) <= KEY_COLUMNS, (row.metric, set(row.params) - KEY_COLUMNS)
        assert row.params.get("variant", "cosine") in VARIANTS  # main rows leave variant out
        assert row.params.get("probe", "knn") in PROBES
        unresampled = row.metric == "r2" and row.params.get("variant") == "frame"  # no units by design
        assert row.reducer == (None if unresampled else REDUCER[row.metric]), row.metric
        if row.reducer is not None:
            assert recomputed(row) == pytest.approx(row.value, nan_ok=True), (row.metric, row.params)


def check_unit_groups(rows):
    """One bootstrap draw per unit group serves every row of it, across experiments."""
    sizes = {}
    for row in (r for experiment in rows.values() for r in experiment if r.units is not None):
        sizes.setdefault(row.unit_group, set()).add(len(row.units))
    assert set(sizes) == {"cityscapes/val", "fair1m/tiles", "mot17/videos"}
    assert all(len(n) == 1 for n in sizes.values()), sizes
    assert sizes["cityscapes/val"] == {2} and sizes["mot17/videos"] == {2}  # smoke: 2 val images
    # S4.8 is resampled over the same val images as S3/S4
    assert {r.unit_group for r in rows["reconstruction"]} == {"cityscapes/val"}


def check_main_numbers(rows):
    seg = rows["segmentation"]
    read(seg, "miou", "mae", probe="knn")
    read(seg, "lr", "mae", probe="linear_bn")
    read(seg, "miou", "mae", probe="knn", m=200)
    read(seg, "miou", "mae", probe="knn_bn")
    read(seg, "iou", "mae", probe="knn", layer=9, class_name="bus")
    read(seg, "miou", "mae", probe="linear_bn", corruption="band_noise", level=4.0)
    read(seg, "miou", "mae", probe="linear_bn", corruption="band_noise", level=4.0, variant="literal")
    read(seg, "majority_fraction", "mae", probe="knn", corruption="noise", level=10.0)
    assert read(seg, "r2", "mae", subset="random") <= 1
    assert read(rows["reconstruction"], "recon_mse", "mae", zeroed="top200") > 0
    read(rows["reconstruction"], "recon_mse", "mae", zeroed="none", variant="unmasked")
    read(rows["retrieval"], "rate", "mae", corruption="noise", level=10.0, outcome="original")
    read(rows["retrieval"], "rate", "mae", corruption="noise", level=10.0, outcome="original", variant="pruned")
    assert 0 <= read(rows["overlap"], "overlap", "mae", pair="cityscapes/fair1m") <= 17
    for model in ("dino", "dinov2"):
        read(rows["association"], "instance_acc", model, gap=5)
        read(rows["association"], "instance_acc", model, gap=5, variant="roi7x7")
        assert read(rows["association"], "gap_seconds", model, gap=30) == pytest.approx(1.0)  # 30 fps


def test_every_experiment_end_to_end_on_the_synthetic_world(synthetic_world, tmp_path):
    """One test (the run is shared by every check, and a module fixture would run once per
    xdist worker)."""
    rows, recorded, top, seg = measure_everything(synthetic_world, tmp_path / "store")
    check_schema(rows)
    check_unit_groups(rows)
    check_main_numbers(rows)
    # the views recorded the chosen ids and the frame sizes; the conventions name the top set
    assert set(recorded["cityscapes/train/2-per-city"]) < set(recorded["cityscapes/train/4-per-city"])
    assert recorded["mot17/frame-sizes/patch-14"][0]["model_input_hw"] == [112, 196]
    assert recorded["mot17/frame-sizes/patch-16"][0]["model_input_hw"] == [112, 192]
    assert len(top) == 17 and seg.middle_n_train == 6  # 200 of 768 features -> 17 of 64
    assert "middle Cityscapes train subset" in conventions(PROFILE)["top_m_sets"]


def test_views_to_extract_lists_what_the_store_keeps(synthetic_world):
    """The bounded store: the last layer of the clean views; the layer sweep's other layers,
    the corrupted and transformed copies and video frames are extracted transiently."""
    extract = views_to_extract(PROFILES["smoke"], "cityscapes", synthetic_world / "cityscapes", depth=12)
    seg, _ = segmentation_views(PROFILES["smoke"], "cityscapes", synthetic_world / "cityscapes", True)
    assert [(view.key, layers) for view, layers in extract] == [(seg.train.key, [12]), (seg.val.key, [12])]
    fair1m = views_to_extract(PROFILE, "fair1m", synthetic_world / "fair1m", depth=12)
    assert [view.transform for view, _ in fair1m] == [None]
    assert views_to_extract(PROFILE, "mot17", synthetic_world / "mot17", depth=12, patch_size=14) == []
