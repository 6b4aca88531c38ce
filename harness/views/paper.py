"""The paper's views of each dataset for one profile: what the claims measure, which of
their embeddings the store keeps (`persisted_layers`) and so what `harness extract`
pre-fills. One place, so both find the same embedding-store entries.

Each builder takes the profile, the dataset folder and an optional `record(name, value)`
callback that receives the chosen ids (a `Subset`, which the claims put in the report) and
per-view facts such as the video frame sizes (plain JSON values), and returns the views
together with their keys (which go into the measurement cache key). `limit` keeps only the
first N source images/videos of each subset (for a quick look from the CLI).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import data
from harness.data import subsets
from harness.profiles import Profile
from harness.views.fair1m import Fair1mTileView
from harness.views.frames import VideoFrameView, frame_rate, model_frame_size, source_frame_size
from harness.views.tiles import TileView

ADE20K_SIZE = (448, 672)  # H x W, as in the paper (672x448), cut into 6 tiles of 224

Record = Callable[[str, object], None]


@dataclass
class SegmentationViews:
    """The views of one segmentation dataset: the largest train subset (each smaller one a
    mask over its tiles), val, and the corrupted copies of val keyed by (corruption, level)
    (corruption 'band_noise_literal' = band noise in its literal convention)."""

    dataset: str
    num_classes: int
    class_names: tuple[str, ...]
    train: object  # the largest train subset's view
    train_subsets: dict[int, np.ndarray]  # n_train images -> boolean mask over train tiles
    val: object
    corrupted: dict[tuple[str, float], object] = field(default_factory=dict)
    train_seed: int = 0

    @property
    def middle_n_train(self) -> int:
        """The middle training size (72 Cityscapes images in the paper): the default of every
        claim that does not name a size."""
        sizes = sorted(self.train_subsets)
        return sizes[len(sizes) // 2]

    @property
    def middle_tiles(self) -> np.ndarray:
        return self.train_subsets[self.middle_n_train]

    def variance_set(self) -> VarianceSet:
        """The images whose patch variances give this dataset's top-m features: every patch
        of the middle train subset's tiles (for Cityscapes: the one top-200 set, R29)."""
        return VarianceSet(self.train, self.middle_tiles)


@dataclass
class RetrievalViews:
    original: object
    transformed: dict[tuple[str, float], object]  # (transform, level) -> view


@dataclass
class VarianceSet:
    """A view and the tiles of it (boolean mask; None = all) whose patches define a top-m
    variance feature set."""

    view: object
    tiles: np.ndarray | None = None


def _keep(subset, limit: int | None):
    return subset if limit is None else type(subset)(list(subset)[:limit])


def _masks(view, subsets_by_size: dict[int, tuple]) -> dict[int, np.ndarray]:
    """n_train -> boolean mask over the view's tiles whose source image is in that subset."""
    source_ids = np.array(view.sample_ids)[view.source_index]
    return {n: np.isin(source_ids, list(ids)) for n, ids in subsets_by_size.items()}


def segmentation_views(profile: Profile, dataset: str, root: Path, full: bool,
                       record: Record | None = None, limit: int | None = None,
                       train_seed: int = 0) -> tuple[SegmentationViews, list[str]]:
    """S3/S4 views: the largest train subset (smaller ones are masks over it), val, and with
    `full` the corrupted val views (band noise in both conventions). `train_seed` draws the
    few-shot train subsets (0: the paper run's; val never changes)."""
    record = record or (lambda name, value: None)
    seed_tag = f"/train-seed-{train_seed}" if train_seed else ""
    train_ds = data.open_dataset(dataset, root, "train")
    val_ds = data.open_dataset(dataset, root, "val")
    if dataset == "cityscapes":
        by_size = {}
        for k in profile.cityscapes_train_per_city:
            ids = _keep(subsets.cityscapes_train_ids(train_ds, per_city=k, train_seed=train_seed), limit)
            by_size[len(ids)] = ids
            record(f"cityscapes/train/{k}-per-city{seed_tag}", ids)
        largest = by_size[max(by_size)]
        val_ids = subsets.cityscapes_val_ids(val_ds, per_city=profile.cityscapes_val_per_city)
        tile_args: dict = {"out": profile.tile_out}
    else:
        largest = _keep(subsets.ade20k_train_ids(train_ds, per_class=profile.ade20k_train_per_class,
                                                 train_seed=train_seed), limit)
        by_size = {len(largest): largest}
        record(f"{dataset}/train{seed_tag}", largest)
        val_ids = subsets.ade20k_val_ids(val_ds, n=profile.ade20k_val_images)
        tile_args = {"tile": 224, "out": profile.tile_out, "resize": ADE20K_SIZE}
    val_ids = _keep(val_ids, limit)
    record(f"{dataset}/val", val_ids)
    train = TileView(train_ds, largest, **tile_args)
    val = TileView(val_ds, val_ids, **tile_args)
    corrupted = {}
    if full:
        for kind, levels in profile.corruption_levels:
            # Band noise is measured in both conventions (std 40 in the band; the literal
            # std 40 before the band filter): 4 more views, reported as variant 'literal'.
            for name in (kind, "band_noise_literal") if kind == "band_noise" else (kind,):
                for level in levels:
                    corrupted[(name, float(level))] = TileView(
                        val_ds, val_ids, corruption=name, level=level, **tile_args)
    seg = SegmentationViews(
        dataset=dataset, num_classes=data.NUM_CLASSES[dataset],
        class_names=tuple(data.CLASS_NAMES[dataset]), train=train,
        train_subsets=_masks(train, by_size), val=val, corrupted=corrupted, train_seed=train_seed)
    return seg, [train.key, val.key] + [v.key for v in corrupted.values()]


def retrieval_views(profile: Profile, root: Path, record: Record | None = None,
                    limit: int | None = None) -> tuple[RetrievalViews, list[str]]:
    """S5 views: FAIR1M tiles and their shifted, blurred and noisy copies."""
    ds = data.open_dataset("fair1m", root, data.DEFAULT_SPLITS["fair1m"][0])
    out = profile.tile_out
    ids = _keep(subsets.fair1m_ids(ds, per_category=profile.fair1m_per_category, out=out), limit)
    if record:
        record("fair1m/tiles", ids)
    original = Fair1mTileView(ds, ids, out=out)
    transformed = {
        (kind, float(level)): Fair1mTileView(ds, ids, out=out, transform=kind, level=level)
        for kind, levels in profile.retrieval_transforms for level in levels}
    return RetrievalViews(original, transformed), [original.key] + [v.key for v in transformed.values()]


def video_views(profile: Profile, dataset: str, root: Path, patch_size: int,
                record: Record | None = None, limit: int | None = None) -> tuple[list[VideoFrameView], list[str]]:
    """S6 views for a model of `patch_size`: one view per chosen video (ordered by source
    frame size, then video id), each keeping the frames' aspect ratio with a short side of
    min(profile.video_size) (see harness.views.frames). One view per video, so a video's
    frames are extracted, pooled and let go before the next (they are never persisted:
    `persisted_layers`). Records the chosen videos and, per source frame size, the
    resolution the model sees and the frame rates."""
    ds = data.open_dataset(dataset, root, data.DEFAULT_SPLITS[dataset][0])
    ids = _keep(subsets.video_ids(ds, n=profile.video_count), limit)
    if record:
        record(f"{dataset}/videos", ids)
    short_side = min(profile.video_size)
    by_size: dict[tuple[int, int], list[str]] = {}
    for video in ids:
        by_size.setdefault(source_frame_size(ds, video), []).append(video)
    views = [VideoFrameView(ds, [video], short_side=short_side, patch_size=patch_size)
             for _, videos in sorted(by_size.items()) for video in videos]
    if record:
        record(f"{dataset}/frame-sizes/patch-{patch_size}", [
            {"source_hw": list(size), "model_input_hw": list(model_frame_size(size, short_side, patch_size)),
             "videos": len(videos), "fps": sorted({frame_rate(ds, v) for v in videos})}
            for size, videos in sorted(by_size.items())])
    return views, [view.key for view in views]


def overlap_views(profile: Profile, roots: dict[str, Path],
                  record: Record | None = None) -> tuple[dict[str, VarianceSet], list[str]]:
    """S4.7: the images whose MAE features give each dataset's top-variance set (Cityscapes:
    the middle train subset, the same set as S4.2-S4.8 and S5.6; ADE20K: its train subset;
    FAIR1M: the original tiles)."""
    city, _ = segmentation_views(profile, "cityscapes", roots["cityscapes"], False, record)
    ade, _ = segmentation_views(profile, "ade20k", roots["ade20k"], False, record)
    fair, _ = retrieval_views(profile, roots["fair1m"], record)
    chosen = {"cityscapes": city.variance_set(), "ade20k": VarianceSet(ade.train),
              "fair1m": VarianceSet(fair.original)}
    return chosen, [s.view.key for s in chosen.values()]


def persisted_layers(view, depth: int) -> list[int]:
    """The layers of `view` the embedding store keeps (the bounded store): the last layer of
    the clean views, the ones probes are fitted and scored on and other sections read
    (Cityscapes and ADE20K train and val tiles, FAIR1M's original tiles: the top-200 sets of
    S4.7, S4.8, S5.6 come from them). Nothing else is persisted: the layer sweep's
    intermediate layers, the corrupted and transformed copies and the video frames are each
    read once, by their own section, so the claims run extracts them transiently
    (harness.scratch) and keeps only the measurements (the measurement cache)."""
    if isinstance(view, TileView) and view.corruption is None:
        return [depth]
    if isinstance(view, Fair1mTileView) and view.transform is None:
        return [depth]
    return []


def views_to_extract(profile: Profile, dataset: str, root: Path, depth: int,
                     limit: int | None = None, patch_size: int | None = None) -> list[tuple[object, list[int]]]:
    """(view, layers) for every view of `dataset` whose embeddings the store keeps
    (`persisted_layers`): what `harness extract` pre-fills and the claims then read from the
    store. Video frames are never persisted, so video datasets have none (`patch_size` is
    accepted for the callers that pass it)."""
    if dataset == "cityscapes":
        seg, _ = segmentation_views(profile, dataset, root, full=True, limit=limit)
        views = [seg.train, seg.val, *seg.corrupted.values()]
    elif dataset == "ade20k":
        seg, _ = segmentation_views(profile, dataset, root, full=False, limit=limit)
        views = [seg.train, seg.val]
    elif dataset == "fair1m":
        ret, _ = retrieval_views(profile, root, limit=limit)
        views = [ret.original, *ret.transformed.values()]
    else:
        views = []
    return [(view, layers) for view in views if (layers := persisted_layers(view, depth))]


__all__ = [
    "ADE20K_SIZE",
    "Record",
    "RetrievalViews",
    "SegmentationViews",
    "VarianceSet",
    "model_frame_size",
    "overlap_views",
    "persisted_layers",
    "retrieval_views",
    "segmentation_views",
    "video_views",
    "views_to_extract",
]
