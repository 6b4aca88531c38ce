"""Claim X.3: does bf16 extraction change what the claims measure?

On a fixed small slice of each section's val views (seeded, recorded), the tokens are
extracted twice, in bf16 and in fp32 (two store entries: the precision is in the entry key),
and the section's own k-NN protocol runs on both:

- segmentation (Cityscapes, ADE20K): base = every labelled patch of the middle train
  subset, queries = the labelled patches of SLICE["segmentation"] val images (all their
  tiles), last layer, exact 1-NN (`knn_predict`); prediction = the predicted class;
  metrics = mIoU and patch accuracy of the slice;
- retrieval (FAIR1M): base = every patch of every original tile, queries = the on-object
  patches of SLICE["retrieval"] tiles in every transformed view; prediction = the retrieved
  base patch; metric = the original-match rate of each transform and level;
- association (BDD100K MOT, MOT17): SLICE["association"] videos, the main pooling (box
  mean); prediction = the object at t + D each object at t matches (float64, ties to the
  lowest index, as `harness.analyses.association`); metric = the instance accuracy per gap.

Rows, one per (model, dataset): `nn_agreement`, the share of queries whose prediction is the
same under both precisions (units per slice unit: [n, 2] agreeing, queries; reducer
'ratio'), and `metric_shift`, the largest |bf16 - fp32| over the section's metrics on the
slice (no units). `record(name, value)` receives the slice's ids and every metric pair.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness import analyses, probes
from harness.analyses.retrieval import OUTCOMES
from harness.config import seed_for
from harness.experiments.association import pooled_frames
from harness.experiments.common import flat_patches, per_patch
from harness.measurements import Measurement
from harness.views import IGNORE, RetrievalViews, SegmentationViews, VideoFrameView

SLICE = {"segmentation": 8, "retrieval": 64, "association": 2}  # val images, tiles, videos
BOTH = ("bf16", "fp32")

# embed(backbone, view, layers, precision) -> {layer: [N, h, w, D]}
EmbedAt = Callable[[Any, Any, Sequence[int], str], dict]
Record = Callable[[str, Any], None]


@dataclass(frozen=True)
class SliceView:
    """Images `indices` of `view` as a view of their own (store entries of their own)."""

    view: Any
    indices: tuple[int, ...]
    key: str
    ids: tuple[str, ...]

    @classmethod
    def of(cls, view, indices) -> SliceView:
        indices = tuple(int(i) for i in indices)
        if not indices:
            raise ValueError(f"an empty slice of view {view.key!r}")
        digest = hashlib.sha256(",".join(map(str, indices)).encode()).hexdigest()[:12]
        return cls(view, indices, f"{view.key}/slice-{digest}", tuple(str(view.ids[i]) for i in indices))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.view[self.indices[i]]


def choose(n_units: int, size: int, *names: object) -> np.ndarray:
    """Sorted indices of min(size, n_units) units drawn with seed_for('precision-slice', ...)."""
    rng = np.random.default_rng(seed_for("precision-slice", *names))
    return np.sort(rng.choice(n_units, size=min(size, n_units), replace=False))


def _rows(model: str, dataset: str, agree: np.ndarray, shift: float) -> list[Measurement]:
    agreement = agree[:, 0].sum() / max(agree[:, 1].sum(), 1)
    return [Measurement("nn_agreement", model, float(agreement), {"dataset": dataset}, units=agree,
                        reducer="ratio", unit_group=f"precision/{dataset}"),
            Measurement("metric_shift", model, float(shift), {"dataset": dataset})]


def _per_unit(same: np.ndarray, unit: np.ndarray, n_units: int) -> np.ndarray:
    """[n_units, 2]: (queries agreeing, queries) per unit."""
    return np.stack([np.bincount(unit, weights=same.astype(np.float64), minlength=n_units),
                     np.bincount(unit, minlength=n_units).astype(np.float64)], axis=1)


def _shift(pairs: dict[str, dict[str, float]]) -> float:
    """Largest |bf16 - fp32| over the metrics (NaN metrics, e.g. nothing to score, skipped)."""
    diffs = [abs(v["bf16"] - v["fp32"]) for v in pairs.values()
             if np.isfinite(v["bf16"]) and np.isfinite(v["fp32"])]
    return max(diffs, default=0.0)


# ----------------------------------------------------------------------------- segmentation
def segmentation_agreement(model: str, backbone, views: SegmentationViews, embed: EmbedAt,
                           size: int = SLICE["segmentation"], record: Record | None = None) -> list[Measurement]:
    last, p = backbone.depth, backbone.patch_size
    val_source = np.asarray(views.val.source_index)
    chosen = choose(int(val_source.max()) + 1, size, views.dataset)
    val_tiles = np.flatnonzero(np.isin(val_source, chosen))
    train_tiles = np.flatnonzero(views.middle_tiles)
    train_view, val_view = SliceView.of(views.train, train_tiles), SliceView.of(views.val, val_tiles)
    train_y = views.train.patch_labels(p)[train_tiles].reshape(-1)
    val_labels = views.val.patch_labels(p)[val_tiles]
    val_y = val_labels.reshape(-1)
    unit = per_patch(np.searchsorted(chosen, val_source[val_tiles]), val_labels.shape[1:])
    keep_train, keep_val = train_y != IGNORE, val_y != IGNORE
    predictions, pairs = {}, {"miou": {}, "patch_acc": {}}
    for precision in BOTH:
        train_x = flat_patches(embed(backbone, train_view, [last], precision)[last])[keep_train]
        val_x = flat_patches(embed(backbone, val_view, [last], precision)[last])[keep_val]
        with np.errstate(all="ignore"):
            pred = probes.knn_predict(train_x, train_y[keep_train].astype(np.int64), val_x)
        cm = probes.per_image_confusion(pred, val_y[keep_val], unit[keep_val], views.num_classes, IGNORE).sum(0)
        pairs["miou"][precision] = float(probes.miou_from_confusion(cm)[0])
        pairs["patch_acc"][precision] = float(probes.accuracy_from_confusion(cm))
        predictions[precision] = pred
    agree = _per_unit(predictions["bf16"] == predictions["fp32"], unit[keep_val], len(chosen))
    if record:
        record("precision_check", {views.dataset: {model: {
            "val_images": [views.val.sample_ids[i] for i in chosen], "train_tiles": len(train_tiles),
            "queries": int(keep_val.sum()), "metrics": pairs}}})
    return _rows(model, views.dataset, agree, _shift(pairs))


# ----------------------------------------------------------------------------- retrieval
def _tile_meta(view, patch_size: int, tiles: np.ndarray) -> dict[str, np.ndarray]:
    """Per-patch annotations of `tiles` of a FAIR1M view (tile index kept as the source)."""
    objects = view.patch_objects(patch_size)
    n, h, w = objects["instance"].shape
    meta = {"source": np.repeat(np.asarray(view.source_index), h * w), "position": np.tile(np.arange(h * w), n),
            **{name: objects[name].reshape(-1) for name in ("instance", "fine", "super")}}
    rows = (tiles[:, None] * (h * w) + np.arange(h * w)[None, :]).reshape(-1)
    return {name: values[rows] for name, values in meta.items()}


def retrieval_agreement(model: str, backbone, views: RetrievalViews, embed: EmbedAt,
                        size: int = SLICE["retrieval"], record: Record | None = None) -> list[Measurement]:
    last, p = backbone.depth, backbone.patch_size
    all_tiles = np.arange(len(views.original))
    tiles = choose(len(all_tiles), size, "fair1m")
    base_meta = _tile_meta(views.original, p, all_tiles)
    base_x = {precision: flat_patches(embed(backbone, views.original, [last], precision)[last])
              for precision in BOTH}
    same, units, pairs = [], [], {}
    for (transform, level), view in sorted(views.transformed.items()):
        query_view = SliceView.of(view, tiles)
        query_meta = _tile_meta(view, p, tiles)
        found = {}
        for precision in BOTH:
            query_x = flat_patches(embed(backbone, query_view, [last], precision)[last])
            found[precision] = analyses.retrieval_outcomes(base_x[precision], base_meta, query_x, query_meta)
        b, f = found["bf16"], found["fp32"]
        same.append(b.retrieved == f.retrieved)  # the same on-object queries under both
        units.append(np.searchsorted(tiles, query_meta["source"][b.query_rows]))
        original = OUTCOMES.index("original")
        pairs[f"{transform} {level:g}"] = {precision: float(np.mean(found[precision].outcome == original))
                                           if found[precision].n_queries else float("nan") for precision in BOTH}
    agree = _per_unit(np.concatenate(same), np.concatenate(units), len(tiles))
    if record:
        record("precision_check", {"fair1m": {model: {
            "tiles": [views.original.ids[i] for i in tiles], "queries": int(agree[:, 1].sum()),
            "original_rate": pairs}}})
    return _rows(model, "fair1m", agree, _shift(pairs))


# ----------------------------------------------------------------------------- association
def _matches(frames: list, gaps: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """For every object at t whose frame t + D has objects: the index (within t + D) of its
    nearest object (float64, ties to the lowest index) and its video, in a fixed order."""
    by_key = {(f.video, int(f.frame)): f for f in frames}
    nearest, video = [], []
    for gap in gaps:
        for (v, t), frame in sorted(by_key.items()):
            target = by_key.get((v, t + gap))
            if target is None or not len(frame.track_ids) or not len(target.track_ids):
                continue
            q, b = np.asarray(frame.vectors, np.float64), np.asarray(target.vectors, np.float64)
            dist = np.stack([((row - b) ** 2).sum(-1) for row in q])
            nearest.append(np.argmin(dist, axis=1))  # the first of equal minima: lowest index
            video.append(np.full(len(q), v))
    if not nearest:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(nearest), np.concatenate(video).astype(np.int64)


def association_agreement(model: str, backbone, views: Sequence[VideoFrameView], dataset: str,
                          embed: EmbedAt, gaps: Sequence[int], size: int = SLICE["association"],
                          record: Record | None = None) -> list[Measurement]:
    last = backbone.depth
    videos = [(v, i) for v, view in enumerate(views) for i in range(len(view.video_ids))]
    chosen = [videos[j] for j in choose(len(videos), size, dataset)]
    sliced = [VideoFrameView(view.dataset, [view.video_ids[i] for v2, i in chosen if v2 == v], size=view.size)
              for v, view in enumerate(views) if any(v2 == v for v2, _ in chosen)]
    results, matches = {}, {}
    for precision in BOTH:
        frames, offset = [], 0
        for view in sliced:
            grids = embed(backbone, view, [last], precision)[last]
            frames += pooled_frames(grids, view, video_offset=offset)["main"]
            offset += len(view.video_ids)
        results[precision] = analyses.association_accuracy(frames, gaps)
        matches[precision] = _matches(frames, gaps)
    (b, video), (f, _) = matches["bf16"], matches["fp32"]
    agree = _per_unit(b == f, video, len(chosen))
    pairs = {f"instance_acc gap {gap}": {p: float(results[p].per_gap[gap]["instance_accuracy"]) for p in BOTH}
             for gap in gaps}
    if record:
        record("precision_check", {dataset: {model: {
            "videos": [v for view in sliced for v in view.video_ids], "queries": int(agree[:, 1].sum()),
            "metrics": pairs}}})
    return _rows(model, dataset, agree, _shift(pairs))
