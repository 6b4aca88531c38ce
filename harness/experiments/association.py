"""Section 6 of the paper: object association across video frames (BDD100K MOT, MOT17).

Each ground-truth box is pooled from the frame's patch grid with ROIAlign; every object at
frame t retrieves the nearest object at t + gap. Units for the bootstrap are videos.
"""

from __future__ import annotations

import numpy as np

from harness import analyses
from harness.experiments.common import Embed
from harness.measurements import Measurement
from harness.profiles import Profile

METRICS = ("instance_acc", "category_acc", "category_acc_wrong")


def association_measurements(
    model: str, backbone, view, dataset: str, embed: Embed, profile: Profile,
) -> list[Measurement]:
    last = backbone.depth
    grids = embed(backbone, view, [last])[last]  # [n_frames, h, w, D]
    frames = pooled_frames(grids, view)
    result = analyses.association_accuracy(frames, profile.frame_gaps)
    n_videos = len(view.video_ids)
    out = []
    for gap in profile.frame_gaps:
        per_video = _per_video_counts(result, gap, n_videos)
        for metric in METRICS:
            units = per_video[metric]
            if units[:, 1].sum() == 0:
                continue
            out.append(Measurement(
                metric, model, float(units[:, 0].sum() / units[:, 1].sum()),
                {"dataset": dataset, "gap": gap, "layer": last},
                units=units, reducer="ratio", unit_group=f"{dataset}/videos"))
    return out


def pooled_frames(grids: np.ndarray, view) -> list[analyses.FrameObjects]:
    """One ROIAlign-pooled vector per ground-truth box of every frame of the view."""
    categories: dict[str, int] = {}
    frames = []
    for i, objects in enumerate(view.frame_objects()):
        vectors = analyses.pool_boxes(np.asarray(grids[i], dtype=np.float32), objects.boxes,
                                      view.size) if len(objects.boxes) else np.zeros((0, grids.shape[-1]), np.float32)
        frames.append(analyses.FrameObjects(
            video=int(view.video_index[i]), frame=int(view.frame_index[i]), vectors=vectors,
            track_ids=np.asarray(objects.track_ids, dtype=np.int64),
            categories=np.array([categories.setdefault(c, len(categories)) for c in objects.categories],
                                dtype=np.int64)))
    return frames


def _per_video_counts(result, gap: int, n_videos: int) -> dict[str, np.ndarray]:
    """{metric: [n_videos, 2] (hits, total)} for one gap, so the bootstrap can resample videos."""
    at = result.gap == gap
    video = result.video[at].astype(np.int64)
    inst, cat = result.instance_correct[at], result.category_correct[at]
    wrong = ~inst

    def counts(hit, mask):
        return np.stack([np.bincount(video[mask], weights=hit[mask], minlength=n_videos),
                         np.bincount(video[mask], minlength=n_videos)], axis=1).astype(np.float64)

    everything = np.ones_like(inst)
    return {"instance_acc": counts(inst, everything), "category_acc": counts(cat, everything),
            "category_acc_wrong": counts(cat, wrong)}
