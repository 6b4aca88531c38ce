"""Section 3 and 4 of the paper: few-shot patch classification on Cityscapes (and ADE20K),
layer curves, robustness to corruptions, and the high-variance-feature analyses.

Units for the bootstrap (claim X.1) are val images: every mIoU row carries one confusion
matrix per val image.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from harness import analyses, probes
from harness.experiments.common import Embed, flat_patches, per_patch
from harness.measurements import Measurement
from harness.profiles import Profile, paper_linear, scaled_m
from harness.views import IGNORE, SegmentationViews

# Models whose BatchNorm/no-BatchNorm contrast the paper discusses (S3.5, S4.5).
BN_CONTRAST_MODELS = ("mae", "simmim")
# Models for which every pruning level is measured (S4.2); others get m in {0, top_m}.
PRUNING_CURVE_MODELS = ("mae", "simmim")
CONTEXT_CLASSES = ("road", "building", "vegetation")  # S4.6


@dataclass
class _Split:
    x: np.ndarray  # [n_patches, D] float32
    y: np.ndarray  # [n_patches]
    unit: np.ndarray  # [n_patches] val image index


def _labelled(features, labels, source, keep_tiles=None) -> _Split:
    x = flat_patches(features, keep_tiles)
    if keep_tiles is not None:
        labels, source = labels[keep_tiles], source[keep_tiles]
    y = labels.reshape(-1)
    unit = per_patch(source, labels.shape[1:])
    keep = y != IGNORE
    return _Split(x[keep], y[keep].astype(np.int64), unit[keep])


class _Scorer:
    """Turns predictions on the val split into mIoU / per-class IoU measurements."""

    def __init__(self, model: str, dataset: str, num_classes: int, class_names, n_units: int):
        self.model, self.dataset = model, dataset
        self.num_classes, self.class_names, self.n_units = num_classes, class_names, n_units
        self.group = f"{dataset}/val"

    def miou(self, pred, val: _Split, **params) -> list[Measurement]:
        cm = probes.per_image_confusion(pred, val.y, val.unit, self.num_classes, IGNORE)[: self.n_units]
        value = float(probes.miou_from_confusion(cm.sum(0))[0])
        base = {"dataset": self.dataset, **params}
        return [Measurement("miou", self.model, value, base, units=cm, reducer="miou",
                            unit_group=self.group)]

    def class_iou(self, pred, val: _Split, class_name: str, **params) -> Measurement:
        cm = probes.per_image_confusion(pred, val.y, val.unit, self.num_classes, IGNORE)[: self.n_units]
        idx = self.class_names.index(class_name)
        value = float(probes.miou_from_confusion(cm.sum(0))[1][idx])
        return Measurement("iou", self.model, value,
                           {"dataset": self.dataset, "class_name": class_name, **params},
                           units=cm, reducer="class_iou", reducer_args={"class_index": idx},
                           unit_group=self.group)


def _fit_linear(kind: str, train: _Split, seed: int, num_classes: int) -> probes.LinearProbe:
    with warnings.catch_warnings():  # few-shot sets lack rare classes; their IoU shows it
        warnings.simplefilter("ignore", probes.MissingClassWarning)
        return probes.LinearProbe(batchnorm=(kind == "linear_bn"), seed=seed).fit(
            train.x, train.y, num_classes=num_classes)


def segmentation_measurements(
    model: str, backbone, views: SegmentationViews, embed: Embed, profile: Profile,
    seed: int = 0, with_layers: bool = True, with_corruptions: bool = True,
    with_variance: bool = True,
) -> list[Measurement]:
    """Every segmentation number of one model on one dataset (S3.1-S3.13, S4.1-S4.6)."""
    depth, last = backbone.depth, backbone.depth
    layers = list(range(1, depth + 1)) if with_layers else [last]
    train_feats = embed(backbone, views.train, layers)
    val_feats = embed(backbone, views.val, layers)
    p = backbone.patch_size
    train_labels, val_labels = views.train.patch_labels(p), views.val.patch_labels(p)
    train_src, val_src = np.asarray(views.train.source_index), np.asarray(views.val.source_index)
    n_val_images = int(val_src.max()) + 1
    score = _Scorer(model, views.dataset, views.num_classes, views.class_names, n_val_images)
    sizes = sorted(views.train_subsets)
    middle = sizes[len(sizes) // 2]
    middle_mask = views.train_subsets[middle]
    out: list[Measurement] = []

    # Layer curves (S3.6-S3.9): k-NN at the middle training size.
    for layer in layers:
        train = _labelled(train_feats[layer], train_labels, train_src, middle_mask)
        val = _labelled(val_feats[layer], val_labels, val_src)
        pred = probes.knn_predict(train.x, train.y, val.x)
        out += score.miou(pred, val, probe="knn", layer=layer, n_train=middle,
                          corruption="none", level=0)
        if "bus" in views.class_names:
            out.append(score.class_iou(pred, val, "bus", probe="knn", layer=layer,
                                       n_train=middle, corruption="none", level=0))

    # k-NN vs linear by training-set size (S3.1-S3.5), last layer.
    val = _labelled(val_feats[last], val_labels, val_src)
    kinds = [paper_linear(model)]
    if model in BN_CONTRAST_MODELS:
        kinds = ["linear", "linear_bn"]
    fitted: dict[str, probes.LinearProbe] = {}
    middle_train = None
    for n_train in sizes:
        train = _labelled(train_feats[last], train_labels, train_src, views.train_subsets[n_train])
        if n_train == middle:
            middle_train = train
        if n_train != middle:  # the middle size's k-NN is already in the layer curve
            pred = probes.knn_predict(train.x, train.y, val.x)
            out += score.miou(pred, val, probe="knn", layer=last, n_train=n_train,
                              corruption="none", level=0)
        for kind in kinds if n_train == middle else [paper_linear(model)]:
            probe = _fit_linear(kind, train, seed, views.num_classes)
            if n_train == middle:
                fitted[kind] = probe
            out += score.miou(probe.predict(val.x), val, probe=kind, layer=last,
                              n_train=n_train, corruption="none", level=0)
    assert middle_train is not None
    linear = fitted[paper_linear(model)]

    # Robustness (S3.10-S3.12): the clean-trained paper linear probe on corrupted val images.
    if with_corruptions:
        for (kind, level), view in sorted(views.corrupted.items()):
            feats = embed(backbone, view, [last])[last]
            cval = _labelled(feats, view.patch_labels(p), np.asarray(view.source_index))
            out += score.miou(linear.predict(cval.x), cval, probe=paper_linear(model),
                              layer=last, n_train=middle, corruption=kind, level=level)
            pred = probes.knn_predict(middle_train.x, middle_train.y, cval.x)
            out += score.miou(pred, cval, probe="knn", layer=last, n_train=middle,
                              corruption=kind, level=level)
            out.append(Measurement("majority_fraction", model,
                                   probes.majority_class_fraction(pred),
                                   {"dataset": views.dataset, "probe": "knn", "layer": last,
                                    "n_train": middle, "corruption": kind, "level": level}))

    if with_variance:
        out += _variance_measurements(model, backbone, views, middle, middle_train, val, score,
                                      fitted, profile, seed, embed)
    return out


def _variance_measurements(model, backbone, views, middle, train, val, score, fitted, profile,
                           seed, embed) -> list[Measurement]:
    """S4.1-S4.6: variance spectrum, pruning, BatchNorm before k-NN, global context."""
    width = train.x.shape[1]
    last = backbone.depth
    common = {"dataset": views.dataset, "layer": last, "n_train": middle,
              "corruption": "none", "level": 0}
    # One pass over the train patches: every top-m set and the ratio come from these.
    variances = analyses.feature_variances(train.x)
    out = [Measurement("variance_ratio", model,
                       float(analyses.variance_ratio_top_over_median(variances=variances, top=10)),
                       {"dataset": views.dataset, "layer": last, "n_train": middle})]
    ms = profile.pruning_m if model in PRUNING_CURVE_MODELS else (0, profile.top_m)
    for m in ms:
        if m == 0:  # the unpruned k-NN and linear rows are measured above (m defaults to 0)
            continue
        top = analyses.top_variance_features(None, scaled_m(m, width), variances=variances)
        train_x, val_x = analyses.drop_features(train.x, top), analyses.drop_features(val.x, top)
        pred = probes.knn_predict(train_x, train.y, val_x)
        out += score.miou(pred, val, probe="knn", m=m, **common)
        if m == profile.top_m:
            kind = paper_linear(model)
            probe = _fit_linear(kind, _Split(train_x, train.y, train.unit), seed, views.num_classes)
            out += score.miou(probe.predict(val_x), val, probe=kind, m=m, **common)

    if "linear_bn" in fitted:  # S4.5: the probe's BatchNorm applied before k-NN
        bn = fitted["linear_bn"]
        pred = probes.knn_predict(bn.normalize(train.x), train.y, bn.normalize(val.x))
        out += score.miou(pred, val, probe="knn_bn", **common)

    if all(c in views.class_names for c in CONTEXT_CLASSES):
        out += _context_measurements(model, backbone, views, variances, profile, seed, embed)
    return out


def _context_measurements(model, backbone, views, variances, profile, seed,
                          embed) -> list[Measurement]:
    """S4.6: ridge regression (cross-validated over train images) from the patch at the centre
    of each image to the image's road/building/vegetation pixel fractions."""
    last = backbone.depth
    tiles = embed(backbone, views.train, [last])[last]
    where = views.train.central_patch(backbone.patch_size)  # (tile, row, col) per image
    x = np.asarray(tiles[where[:, 0], where[:, 1], where[:, 2]], dtype=np.float32)
    fractions = views.train.class_fractions(CONTEXT_CLASSES)
    m = scaled_m(profile.top_m, len(variances))
    n_splits = min(5, len(x) // 2)
    return [
        Measurement("r2", model, float(analyses.global_context_r2(
            x, fractions, subset=subset, m=m, variances=variances, seed=seed,
            n_splits=n_splits)["r2_mean"]), {"dataset": views.dataset, "subset": subset})
        for subset in ("full", "pruned", "top", "random")
    ]
