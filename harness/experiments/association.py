"""Section 6 of the paper: object association across video frames (BDD100K MOT, MOT17).

Each ground-truth box is pooled from the frame's patch grid (last layer) with ROIAlign; for a
gap D (annotated frames), every object at frame t whose track is also present at t + D
retrieves the nearest object at t + D (`harness.analyses.association`).

Rows per `gap`, units per video [n_videos, 2] (hits, queries), reducer 'ratio', unit_group
'<dataset>/videos' (videos in the order of the views given):
- `instance_acc`, `category_acc`, `category_acc_wrong` (category accuracy among the wrong
  instance matches) over the counted queries, boxes pooled to one bin (the box mean);
- `left_out`: the share of objects at t whose track is absent at t + D;
- `gap_seconds`: the mean of D / fps over the counted queries (BDD100K MOT labels at 5 fps,
  MOT17 at its sequence's frameRate), no units;
- `variant='all_objects'`: the three accuracies counting every object at t (the earlier,
  unconditioned protocol);
- `variant='roi7x7'`: the three accuracies with ROIAlign to 7 x 7 bins (sampling ratio 2),
  the bins averaged (a reuse of the same embeddings).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness import analyses
from harness.analyses.association import POOL_OUTPUT_SIZE, POOL_SAMPLING_RATIO
from harness.experiments.common import Embed
from harness.measurements import Measurement
from harness.profiles import Profile

ACCURACIES = ("instance_acc", "category_acc", "category_acc_wrong")
# name -> (ROIAlign output size, sampling ratio); the main one pools each box to its mean.
POOLINGS = {"main": (POOL_OUTPUT_SIZE, POOL_SAMPLING_RATIO), "roi7x7": ((7, 7), 2)}


def association_measurements(
    model: str, backbone, views: Sequence, dataset: str, embed: Embed, profile: Profile,
) -> list[Measurement]:
    """S6 rows (see the module docstring) over the videos of `views` (one view per frame
    size, e.g. from `harness.views.paper.video_views`)."""
    last = backbone.depth
    frames: dict[str, list[analyses.FrameObjects]] = {name: [] for name in POOLINGS}
    fps: list[float] = []
    for view in views:
        grids = embed(backbone, view, [last])[last]  # [n_frames, h, w, D]
        for name, pooled in pooled_frames(grids, view, video_offset=len(fps)).items():
            frames[name] += pooled
        fps += [view.frame_rate(i) for i in range(len(view.video_ids))]
    n_videos = len(fps)
    results = {name: analyses.association_accuracy(f, profile.frame_gaps) for name, f in frames.items()}
    out = []
    for gap in profile.frame_gaps:
        main = _per_video(results["main"], gap, n_videos)
        for variant, counts in (("main", main), ("all_objects", _per_video(results["main"], gap, n_videos, True)),
                                ("roi7x7", _per_video(results["roi7x7"], gap, n_videos))):
            names = ACCURACIES + (("left_out",) if variant == "main" else ())
            for metric in names:
                out += _ratio_row(metric, model, counts[metric], dataset, gap, last, variant)
        seconds = _gap_seconds(results["main"], gap, fps)
        if seconds is not None:
            out.append(Measurement("gap_seconds", model, seconds, {"dataset": dataset, "gap": gap}))
    return out


def _ratio_row(metric, model, units, dataset, gap, layer, variant) -> list[Measurement]:
    if units[:, 1].sum() == 0:
        return []
    params = {"dataset": dataset, "gap": gap, "layer": layer}
    if variant != "main":
        params["variant"] = variant
    return [Measurement(metric, model, float(units[:, 0].sum() / units[:, 1].sum()), params,
                        units=units, reducer="ratio", unit_group=f"{dataset}/videos")]


def pooled_frames(grids: np.ndarray, view, video_offset: int = 0) -> dict[str, list[analyses.FrameObjects]]:
    """For each pooling of POOLINGS: one ROIAlign-pooled vector per ground-truth box of every
    frame of the view (videos numbered from `video_offset`, so several views can be joined)."""
    categories: dict[str, int] = {}
    out: dict[str, list[analyses.FrameObjects]] = {name: [] for name in POOLINGS}
    for i, objects in enumerate(view.frame_objects()):
        grid = np.asarray(grids[i], dtype=np.float32)
        track_ids = np.asarray(objects.track_ids, dtype=np.int64)
        cats = np.array([categories.setdefault(c, len(categories)) for c in objects.categories], dtype=np.int64)
        for name, (output_size, sampling_ratio) in POOLINGS.items():
            vectors = (analyses.pool_boxes(grid, objects.boxes, view.size, output_size=output_size,
                                           sampling_ratio=sampling_ratio)
                       if len(objects.boxes) else np.zeros((0, grid.shape[-1]), np.float32))
            out[name].append(analyses.FrameObjects(
                video=video_offset + int(view.video_index[i]), frame=int(view.frame_index[i]),
                vectors=vectors, track_ids=track_ids, categories=cats))
    return out


def _per_video(result, gap: int, n_videos: int, all_objects: bool = False) -> dict[str, np.ndarray]:
    """{metric: [n_videos, 2] (hits, total)} for one gap, so the bootstrap can resample videos."""
    at = result.gap == gap
    video = result.video[at].astype(np.int64)
    inst, cat = result.instance_correct[at], result.category_correct[at]
    counted = result.queried[at] if all_objects else result.present[at]

    def counts(hit, mask):
        return np.stack([np.bincount(video[mask], weights=hit[mask], minlength=n_videos),
                         np.bincount(video[mask], minlength=n_videos)], axis=1).astype(np.float64)

    everyone = np.ones_like(counted)
    return {"instance_acc": counts(inst, counted), "category_acc": counts(cat, counted),
            "category_acc_wrong": counts(cat, counted & ~inst),
            "left_out": counts(~result.present[at], everyone)}


def _gap_seconds(result, gap: int, fps: list[float]) -> float | None:
    counted = (result.gap == gap) & result.present
    if not counted.any():
        return None
    rates = np.asarray(fps)[result.video[counted].astype(np.int64)]
    return float(np.mean(gap / rates))
