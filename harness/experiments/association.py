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
    frames = analyses.pooled_frames(grids, view, patch_size=backbone.patch_size)
    result = analyses.association_accuracy(frames, profile.frame_gaps)
    out = []
    for gap in profile.frame_gaps:
        per_video = result.per_video_counts(gap)  # {metric: [n_videos, 2] (hits, total)}
        for metric in METRICS:
            units = per_video[metric]
            if units[:, 1].sum() == 0:
                continue
            out.append(Measurement(
                metric, model, float(units[:, 0].sum() / units[:, 1].sum()),
                {"dataset": dataset, "gap": gap, "layer": last},
                units=units, reducer="ratio", unit_group=f"{dataset}/videos"))
    return out
