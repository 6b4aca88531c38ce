"""Sections 3 and 4 of the paper: few-shot patch classification on Cityscapes (and ADE20K),
layer curves, robustness to corruptions, and the high-variance-feature analyses.

Rows (the metric table of issue 8). A row of the main protocol leaves `variant` out; rows
carry dataset, probe, layer, n_train, corruption and level unless said otherwise (n_train:
the training size the probe saw; the middle size where a row does not vary it).
- `miou` and `patch_acc` (same keys), from one confusion matrix per val image:
  * layer curves: k-NN at every layer, middle size; with `classes` 'easy' (road, vegetation,
    sky, car, building) and 'hard' (the other classes) mIoU, and the IoU (`iou`) of 'bus';
  * every training size, last layer: k-NN and the paper's linear probe (`paper_linear`);
    at the middle size `linear` and `linear_bn` for MAE and SimMIM;
  * `variant='cosine'`: 1-NN by cosine distance at the main setting (last layer, middle size);
  * corruptions: k-NN and the paper's linear probe (both trained on the clean train images)
    on every corrupted val view; band noise's literal convention as `variant='literal'`;
  * pruning: k-NN without the m highest-variance features (`m`; every m of the profile for
    MAE and SimMIM, m = top_m for the others), the paper's linear probe at m = top_m;
  * `knn_bn`: k-NN on the features through the fitted `linear_bn` probe's BatchNorm, i.e.
    standardised with the train set's statistics (MAE, SimMIM).
- `n_patches` (class_name 'bus'): the number of val patches of that class.
- `majority_fraction` / `majority_fraction_pooled`: k-NN's collapse to one class (S3.11), on
  clean val images and under every corruption.
- `lr`: the learning rate of every linear probe fitted (probe, n_train, and m when pruned),
  chosen per (model, probe) on held-out images of the middle train subset with all
  features, and used for that probe at every size and m; no units.
- `variance_ratio` (S4.1): top-10 / median feature variance, no units.
- `r2` (S4.6, `subset` full/pruned/top/random): one sample per tile, ridge regression from
  the tile's central patch to its road/building/vegetation pixel fractions, fitted on the
  middle train subset's tiles, R^2 on the val tiles ('random': 10 seeded draws of m features,
  each (draw, class) a target); `variant='frame'`: the earlier one-sample-per-frame version
  (the frame's centre patch, cross-validated over the middle train subset's frames), no units.

The top-m variance set (pruning, S4.6) is the one of `cityscapes_top_features`: every patch of
the middle train subset's tiles, last layer. Units for the bootstrap (claim X.1) are val
images (unit_group '<dataset>/val'): confusion matrices [n_img, C, C] (reducers 'miou' with
reducer_args {'class_indices'} for easy/hard, 'accuracy', 'class_iou'), [n_img, 2] counts
('sum' for n_patches, 'ratio' for the majority fractions) and [n_img, 3k + 1] sums ('r2').
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from harness import analyses, probes
from harness.config import seed_for
from harness.experiments.common import (
    Embed,
    TransientEmbed,
    flat_patches,
    patch_variances,
    per_patch,
)
from harness.measurements import Measurement
from harness.profiles import Profile, paper_linear, scaled_m
from harness.scratch import SCRATCH_BUDGET_BYTES, layer_groups, scratch_bytes
from harness.views import IGNORE, SegmentationViews

# Models whose BatchNorm/no-BatchNorm contrast the paper discusses (S3.5, S4.5).
BN_CONTRAST_MODELS = ("mae", "simmim")
# Models for which every pruning level is measured (S4.2); others get m in {0, top_m}.
PRUNING_CURVE_MODELS = ("mae", "simmim")
EASY_CLASSES = ("road", "vegetation", "sky", "car", "building")  # S3.8, as the paper names them
BUS = "bus"
CONTEXT_CLASSES = ("road", "building", "vegetation")  # S4.6
CONTEXT_RANDOM_DRAWS = 10


@dataclass
class _Split:
    x: np.ndarray  # [n_patches, D] float32
    y: np.ndarray  # [n_patches]
    unit: np.ndarray  # [n_patches] source image index


def _labelled(features, labels, source, keep_tiles=None) -> _Split:
    x = flat_patches(features, keep_tiles)
    source = np.asarray(source)
    if keep_tiles is not None:
        labels, source = labels[keep_tiles], source[keep_tiles]
    y = labels.reshape(-1)
    unit = per_patch(source, labels.shape[1:])
    keep = y != IGNORE
    return _Split(x[keep], y[keep].astype(np.int64), unit[keep])


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm: L2 1-NN on them is 1-NN by cosine distance."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _corruption(kind: str, level: float) -> dict:
    if kind == "band_noise_literal":
        return {"corruption": "band_noise", "level": level, "variant": "literal"}
    return {"corruption": kind, "level": level}


class _Scorer:
    """Turns predictions on a val split into rows with per-val-image units."""

    def __init__(self, model: str, views: SegmentationViews, n_units: int):
        self.model, self.dataset, self.n_units = model, views.dataset, n_units
        self.num_classes, self.class_names = views.num_classes, tuple(views.class_names)
        self.group = f"{views.dataset}/val"
        easy = [self.class_names.index(c) for c in EASY_CLASSES if c in self.class_names]
        self.class_sets = {}
        if len(easy) == len(EASY_CLASSES):
            self.class_sets = {"easy": easy,
                               "hard": [i for i in range(self.num_classes) if i not in easy]}

    def _row(self, metric, value, params, units, reducer, reducer_args=None) -> Measurement:
        return Measurement(metric, self.model, float(value), {"dataset": self.dataset, **params},
                           units=units, reducer=reducer, reducer_args=reducer_args or {},
                           unit_group=self.group)

    def confusion(self, pred, val: _Split) -> np.ndarray:
        cm = probes.per_image_confusion(pred, val.y, val.unit, self.num_classes, IGNORE)
        out = np.zeros((self.n_units, self.num_classes, self.num_classes), np.int64)
        out[: len(cm)] = cm[: self.n_units]  # an image without scored patches adds nothing
        return out

    def rows(self, pred, val: _Split, *, classes: bool = False, class_iou=(), **params) -> list[Measurement]:
        """miou and patch_acc; with `classes` the easy/hard mIoU; the IoU of `class_iou`."""
        cm = self.confusion(pred, val)
        total = cm.sum(0)
        out = [self._row("miou", probes.miou_from_confusion(total)[0], params, cm, "miou"),
               self._row("patch_acc", probes.accuracy_from_confusion(total), params, cm, "accuracy")]
        if classes:
            for name, indices in self.class_sets.items():
                out.append(self._row("miou", probes.miou_from_confusion(total, indices)[0],
                                     {**params, "classes": name}, cm, "miou", {"class_indices": indices}))
        for name in class_iou:
            index = self.class_names.index(name)
            out.append(self._row("iou", probes.miou_from_confusion(total)[1][index],
                                 {**params, "class_name": name}, cm, "class_iou", {"class_index": index}))
        return out

    def majority(self, pred, val: _Split, **params) -> list[Measurement]:
        per_image, pooled = probes.per_image_majority(pred, val.unit, self.n_units)
        return [self._row("majority_fraction", per_image[:, 0].sum() / per_image[:, 1].sum(),
                          params, per_image, "ratio"),
                self._row("majority_fraction_pooled", pooled[:, 0].sum() / pooled[:, 1].sum(),
                          params, pooled, "ratio")]

    def n_patches(self, val: _Split, class_name: str) -> Measurement:
        index = self.class_names.index(class_name)
        counts = np.bincount(val.unit[val.y == index], minlength=self.n_units)[: self.n_units]
        units = np.stack([counts, np.ones_like(counts)], axis=1).astype(np.float64)
        return self._row("n_patches", counts.sum(), {"class_name": class_name}, units, "sum")


def _fit_linear(kind: str, train: _Split, views: SegmentationViews, seed: int, lr_grid,
                chosen: dict[str, probes.LrChoice]) -> probes.LinearProbe:
    """The `kind` probe on `train`; its learning rate chosen on held-out images the first
    time (the middle training size, all features) and kept in `chosen` for every other fit
    of that probe (other sizes, pruned features): one lr per (model, probe)."""
    batchnorm = kind == "linear_bn"
    with warnings.catch_warnings():  # few-shot sets lack rare classes; their IoU shows it
        warnings.simplefilter("ignore", probes.MissingClassWarning)
        if kind in chosen:
            return probes.LinearProbe(batchnorm=batchnorm, seed=seed, lr=chosen[kind].lr).fit(
                train.x, train.y, num_classes=views.num_classes)
        probe, chosen[kind] = probes.fit_with_chosen_lr(
            train.x, train.y, train.unit, batchnorm=batchnorm, num_classes=views.num_classes,
            seed=seed, lr_grid=lr_grid,
            # the same held-out images for every model and probe
            split_seed=seed_for("lr_holdout", views.dataset, views.middle_n_train, views.train_seed))
        return probe


def segmentation_measurements(
    model: str, backbone, views: SegmentationViews, embed: Embed, profile: Profile,
    seed: int = 0, with_layers: bool = True, with_corruptions: bool = True,
    with_variance: bool = True, lr_grid: tuple[float, ...] = probes.LR_GRID,
    transient: TransientEmbed | None = None,
) -> list[Measurement]:
    """Every segmentation number of one model on one dataset (S3.1-S3.13, S4.1-S4.6); see
    the module docstring for the rows. `seed` seeds the linear probes. The last layer comes
    from `embed`; the layer sweep's other layers from `transient(backbone, view, layers,
    tiles)` (default: `embed`, masked), only for the middle subset's train tiles and the val
    tiles, in `sweep_groups` so that one group's scratch is held at a time."""
    last = backbone.depth
    train_last = embed(backbone, views.train, [last])[last]
    val_last = embed(backbone, views.val, [last])[last]
    p = backbone.patch_size
    train_labels, val_labels = views.train.patch_labels(p), views.val.patch_labels(p)
    train_src, val_src = np.asarray(views.train.source_index), np.asarray(views.val.source_index)
    score = _Scorer(model, views, n_units=int(val_src.max()) + 1)
    middle, middle_mask = views.middle_n_train, views.middle_tiles
    clean = {"corruption": "none", "level": 0}
    bus = [BUS] if BUS in views.class_names else []
    out: list[Measurement] = []

    # Layer curves (S3.6-S3.9): k-NN at the middle training size, every layer; the layers
    # before the last from transient copies of the middle subset's tiles, a group at a time.
    def sweep(layer: int, train: _Split, val_feats) -> tuple[_Split, np.ndarray]:
        val = _labelled(val_feats, val_labels, val_src)
        pred = probes.knn_predict(train.x, train.y, val.x)
        out.extend(score.rows(pred, val, classes=True, class_iou=bus, probe="knn", layer=layer,
                              n_train=middle, **clean))
        return val, pred

    if with_layers:
        transient = transient or _masked(embed)
        middle_labels, middle_src = train_labels[middle_mask], train_src[middle_mask]
        for group in sweep_groups(int(middle_mask.sum()), len(val_src), train_last.shape[1:3],
                                  train_last.shape[3], last):
            train_group = transient(backbone, views.train, group, middle_mask)
            val_group = transient(backbone, views.val, group, None)
            for layer in group:
                sweep(layer, _labelled(train_group[layer], middle_labels, middle_src), val_group[layer])
            del train_group, val_group  # this group's scratch goes before the next is extracted
    middle_train = _labelled(train_last, train_labels, train_src, middle_mask)
    val, last_pred = sweep(last, middle_train, val_last)
    main = {"layer": last, "n_train": middle, **clean}
    out += [score.n_patches(val, name) for name in bus]
    out += score.majority(last_pred, val, probe="knn", **main)
    pred = probes.knn_predict(_unit_rows(middle_train.x), middle_train.y, _unit_rows(val.x))
    out += score.rows(pred, val, probe="knn", variant="cosine", **main)

    # k-NN vs linear by training-set size (S3.1-S3.5), last layer; the middle size first,
    # where each probe's learning rate is chosen.
    paper = paper_linear(model)
    fitted: dict[str, probes.LinearProbe] = {}
    chosen: dict[str, probes.LrChoice] = {}
    for n_train in sorted(views.train_subsets, key=lambda n: n != middle):
        if n_train == middle:
            train, kinds = middle_train, ["linear", "linear_bn"] if model in BN_CONTRAST_MODELS else [paper]
        else:
            train, kinds = _labelled(train_last, train_labels, train_src, views.train_subsets[n_train]), [paper]
            pred = probes.knn_predict(train.x, train.y, val.x)
            out += score.rows(pred, val, probe="knn", layer=last, n_train=n_train, **clean)
        for kind in kinds:
            probe = _fit_linear(kind, train, views, seed, lr_grid, chosen)
            out.append(_lr_row(model, views, chosen[kind], kind, n_train, last))
            out += score.rows(probe.predict(val.x), val, probe=kind, layer=last, n_train=n_train, **clean)
            if n_train == middle:
                fitted[kind] = probe

    # Robustness (S3.10-S3.12): the clean-trained probes on corrupted val images.
    if with_corruptions:
        for (kind, level), view in sorted(views.corrupted.items()):
            feats = embed(backbone, view, [last])[last]
            cval = _labelled(feats, view.patch_labels(p), view.source_index)
            params = {"layer": last, "n_train": middle, **_corruption(kind, level)}
            out += score.rows(fitted[paper].predict(cval.x), cval, probe=paper, **params)
            pred = probes.knn_predict(middle_train.x, middle_train.y, cval.x)
            out += score.rows(pred, cval, probe="knn", **params)
            out += score.majority(pred, cval, probe="knn", **params)
            del feats  # a transient copy: its scratch goes before the next one is extracted

    if with_variance:
        out += _variance_measurements(model, backbone, views, middle_train, val, score, fitted, chosen,
                                      profile, seed, lr_grid, train_last, val_last)
    return out


def sweep_groups(n_train_tiles: int, n_val_tiles: int, grid: tuple[int, int], width: int,
                 depth: int) -> list[list[int]]:
    """The layer sweep's layers other than the last, in the groups extracted together: as many
    as fit the scratch budget with the middle subset's train tiles and the val tiles (the last
    layer is the store's). `harness plan` counts the sweep with this same function."""
    per_layer = scratch_bytes(n_train_tiles + n_val_tiles, grid, width)
    return layer_groups(range(1, depth), per_layer, SCRATCH_BUDGET_BYTES)


def _masked(embed: Embed) -> TransientEmbed:
    """A transient embed from a plain one: the selected tiles of its arrays."""
    def transient(backbone, view, layers, tiles):
        arrays = embed(backbone, view, layers)
        return arrays if tiles is None else {layer: a[np.asarray(tiles)] for layer, a in arrays.items()}
    return transient


def _lr_row(model, views, choice: probes.LrChoice, kind: str, n_train: int, layer: int, m: int = 0) -> Measurement:
    params = {"dataset": views.dataset, "probe": kind, "n_train": n_train, "layer": layer}
    return Measurement("lr", model, choice.lr, {**params, "m": m} if m else params)


def _variance_measurements(model, backbone, views, train, val, score, fitted, chosen, profile, seed,
                           lr_grid, train_feats, val_feats) -> list[Measurement]:
    """S4.1-S4.6: variance spectrum, pruning, BatchNorm before k-NN, global context."""
    last, middle = backbone.depth, views.middle_n_train
    common = {"layer": last, "n_train": middle, "corruption": "none", "level": 0}
    # The one top-m set (cityscapes_top_features): every patch of the middle subset's tiles.
    variances = patch_variances(train_feats, views.middle_tiles)
    width = len(variances)
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
        out += score.rows(pred, val, probe="knn", m=m, **common)
        if m == profile.top_m:
            kind = paper_linear(model)
            probe = _fit_linear(kind, _Split(train_x, train.y, train.unit), views, seed, lr_grid, chosen)
            out.append(_lr_row(model, views, chosen[kind], kind, middle, last, m))
            out += score.rows(probe.predict(val_x), val, probe=kind, m=m, **common)

    if "linear_bn" in fitted:  # S4.5: the probe's BatchNorm (train standardisation) before k-NN
        bn = fitted["linear_bn"]
        pred = probes.knn_predict(bn.normalize(train.x), train.y, bn.normalize(val.x))
        out += score.rows(pred, val, probe="knn_bn", **common)

    if all(c in views.class_names for c in CONTEXT_CLASSES):
        subsets = _context_subsets(variances, scaled_m(profile.top_m, width))
        out += _tile_context(model, backbone, views, train_feats, val_feats, subsets, score)
        out += _frame_context(model, backbone, views, train_feats, subsets, seed)
    return out


def _context_subsets(variances: np.ndarray, m: int) -> dict[str, list[np.ndarray]]:
    """S4.6's feature subsets: all, all but the top m, the top m only, m random (10 draws,
    the same indices for every model)."""
    width = len(variances)
    return {
        subset: [analyses.context_feature_subset(width, subset, m, variances, seed_for("context", subset, draw))
                 for draw in range(CONTEXT_RANDOM_DRAWS if subset == "random" else 1)]
        for subset in ("full", "pruned", "top", "random")}


def _centre(features, tiles=None) -> np.ndarray:
    """float64 [n, D]: the patch at the centre of each (selected) tile's grid: (g/2, g/2),
    the patch holding the pixel just below and right of the tile's centre on the model's
    own grid (patch (7, 7) of 14 x 14, (8, 8) of DINOv2's 16 x 16)."""
    index = np.arange(len(features)) if tiles is None else np.flatnonzero(tiles)
    h, w = features.shape[1:3]
    return np.asarray(features[index, h // 2, w // 2], np.float64)


def _tile_context(model, backbone, views, train_feats, val_feats, subsets, score) -> list[Measurement]:
    """S4.6, one sample per tile the model saw (see `analyses.tile_context_units`)."""
    tiles = views.middle_tiles
    train_x, val_x = _centre(train_feats, tiles), _centre(val_feats)
    train_y = views.train.tile_class_fractions(CONTEXT_CLASSES)[tiles]
    val_y = views.val.tile_class_fractions(CONTEXT_CLASSES)
    groups = np.asarray(views.train.source_index)[tiles]
    k = len(CONTEXT_CLASSES)
    out = []
    for subset, draws in subsets.items():
        units = [analyses.tile_context_units(train_x[:, idx], train_y, groups, val_x[:, idx], val_y,
                                             views.val.source_index, score.n_units) for idx in draws]
        # several draws: each (draw, class) is a target of its own
        units = np.concatenate([np.concatenate([u[:, part * k : (part + 1) * k] for u in units], axis=1)
                                for part in range(3)] + [units[0][:, -1:]], axis=1)
        out.append(Measurement("r2", model, analyses.r2_from_units(units),
                               {"dataset": views.dataset, "subset": subset, "layer": backbone.depth,
                                "n_train": views.middle_n_train},
                               units=units, reducer="r2", unit_group=score.group))
    return out


def _frame_context(model, backbone, views, train_feats, subsets, seed) -> list[Measurement]:
    """S4.6's earlier unit (variant 'frame'): the patch holding each frame's centre pixel ->
    the frame's pixel fractions, R^2 cross-validated over the middle train subset's frames
    (the train subset of every S4 measurement)."""
    frames = np.unique(np.asarray(views.train.source_index)[views.middle_tiles])
    where = views.train.central_patch(backbone.patch_size)[frames]  # (tile, row, col) per frame
    x = np.asarray(train_feats[where[:, 0], where[:, 1], where[:, 2]], dtype=np.float32)
    fractions = views.train.class_fractions(CONTEXT_CLASSES)[frames]
    n_splits = min(5, len(x) // 2)
    if n_splits < 2:
        return []
    return [
        Measurement("r2", model, float(np.mean([
            analyses.global_context_r2(x, fractions, subset=idx, seed=seed, n_splits=n_splits)["r2_mean"]
            for idx in draws])),
            {"dataset": views.dataset, "subset": subset, "variant": "frame", "layer": backbone.depth,
             "n_train": views.middle_n_train})
        for subset, draws in subsets.items()
    ]
