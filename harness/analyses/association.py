"""Object association across video frames (S6).

Boxes are pooled from the patch grid with torchvision's `roi_align` into one vector per
object; for a frame gap D each object at frame t retrieves the object at frame t + D of
the same video with the nearest vector (squared L2, exact: float64 Gram-form distances,
with near-ties re-ranked by the direct float64 sum((a - b)^2), ties to the lowest object
index within the target frame).

Which objects count: a query is an object at t whose track is also present at t + D (an
object that has left the scene cannot be matched). Every object at t of a frame pair (t,
t + D) of the video is an object "at t"; those whose track is absent at t + D are left out
(`present` False) and their share is reported. The unconditioned accuracy (every object at
t that could retrieve anything, i.e. frame t + D has objects) is kept as a variant.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import roi_align

from harness.probes._validate import as_feature_matrix, check_finite

# One bin per box with adaptive sampling (sampling_ratio=0: ceil(box side in cells) samples
# per side, evenly spaced): a box covering whole patches samples each patch centre once, so
# it pools exactly their mean; other boxes get the bilinear equivalent.
POOL_OUTPUT_SIZE = (1, 1)
POOL_SAMPLING_RATIO = 0


def pool_boxes(
    feature_grid,
    boxes,
    image_size: tuple[int, int],
    *,
    output_size: tuple[int, int] = POOL_OUTPUT_SIZE,
    sampling_ratio: int = POOL_SAMPLING_RATIO,
) -> np.ndarray:
    """One float32 [D] vector per box: ROIAlign over the patch grid, bins averaged.

    feature_grid: [h, w, D] patch embeddings of one image, or [B, h, w, D] of B images.
    boxes: [n, 4] (x1, y1, x2, y2) in pixels of the image the grid covers, or for a batch
    [n, 5] (image index, x1, y1, x2, y2). image_size: (height, width) of that image.
    Pixel boxes are mapped to grid units per axis (x * w / width, y * h / height), then
    `roi_align(..., spatial_scale=1, sampling_ratio, aligned=True)`: with aligned=True a
    grid cell i covers [i, i + 1) and its embedding sits at its centre i + 0.5. The bins
    (output_size) are averaged into one vector; with the defaults a box covering whole
    patches pools exactly the mean of their embeddings.
    """
    grid = np.asarray(feature_grid)
    if grid.ndim == 3:
        grid = grid[None]
        boxes = np.asarray(boxes, np.float64)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes for one image must be [n, 4] (x1, y1, x2, y2), got {boxes.shape}")
        boxes = np.concatenate([np.zeros((len(boxes), 1)), boxes], axis=1)
    elif grid.ndim == 4:
        boxes = np.asarray(boxes, np.float64)
        if boxes.ndim != 2 or boxes.shape[1] != 5:
            raise ValueError(f"boxes for a batch must be [n, 5] (image, x1, y1, x2, y2), got {boxes.shape}")
        if boxes.size and (boxes[:, 0].min() < 0 or boxes[:, 0].max() >= grid.shape[0]):
            raise ValueError(f"box image indices must be in [0, {grid.shape[0]})")
    else:
        raise ValueError(f"feature_grid must be [h, w, D] or [B, h, w, D], got shape {grid.shape}")
    if not np.all(np.isfinite(boxes)):
        raise ValueError("boxes contain NaN or inf")
    if boxes.size and np.any(boxes[:, 3] < boxes[:, 1]) | np.any(boxes[:, 4] < boxes[:, 2]):
        raise ValueError("boxes must have x2 >= x1 and y2 >= y1")
    height, width = image_size
    _, h, w, dim = grid.shape
    scaled = boxes.copy()
    scaled[:, [1, 3]] *= w / width
    scaled[:, [2, 4]] *= h / height
    inputs = torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32)).permute(0, 3, 1, 2)
    rois = torch.from_numpy(scaled.astype(np.float32))
    pooled = roi_align(
        inputs, rois, output_size=output_size, spatial_scale=1.0,
        sampling_ratio=sampling_ratio, aligned=True,
    )  # [n, D, oh, ow]
    return pooled.mean(dim=(2, 3)).numpy()


@dataclass(frozen=True)
class FrameObjects:
    """The objects of one video frame: pooled vectors and their annotations."""

    video: int | str
    frame: int  # frame index within the video (gaps are differences of these)
    vectors: np.ndarray  # [n_objects, D]
    track_ids: np.ndarray  # [n_objects] ints, identity across frames
    categories: np.ndarray  # [n_objects] ints


@dataclass(frozen=True)
class AssociationResult:
    """Per gap: a summary; per object at t of every frame pair (t, t + D): the raw outcomes."""

    per_gap: dict[int, dict[str, float]]
    gap: np.ndarray  # [n] the pair's gap D
    video: np.ndarray  # [n] video of the object
    present: np.ndarray  # [n] bool: its track is present at t + D (a counted query)
    queried: np.ndarray  # [n] bool: frame t + D has objects to retrieve from
    instance_correct: np.ndarray  # [n] bool: same track id retrieved (False when not queried)
    category_correct: np.ndarray  # [n] bool: same category retrieved (False when not queried)


def _nearest_exact(query: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Index of the exact nearest target row per query row (float64, ties -> lowest index)."""
    q = query - target.mean(0)
    t = target - target.mean(0)
    qn, tn = (q * q).sum(1), (t * t).sum(1)
    gram = qn[:, None] + tn[None, :] - 2.0 * q @ t.T
    # float64 Gram-form error bound; rows within 2x of it of the minimum are re-ranked.
    bound = (q.shape[1] + 12) * 2.0**-53 * 1.01 * (np.sqrt(qn)[:, None] + np.sqrt(tn.max())) ** 2
    near = gram <= gram.min(1, keepdims=True) + 2 * bound
    nearest = np.argmin(gram, axis=1)
    for i in np.flatnonzero(near.sum(1) > 1):
        cols = np.flatnonzero(near[i])
        direct = ((query[i] - target[cols]) ** 2).sum(1)
        nearest[i] = cols[np.argmin(direct)]  # argmin: first (lowest index) of equal minima
    return nearest


def _check_frame(f: FrameObjects, dim: int | None) -> int:
    v = as_feature_matrix(f"vectors of video {f.video} frame {f.frame}", f.vectors)
    for name in ("track_ids", "categories"):
        a = np.asarray(getattr(f, name))
        if a.shape != (v.shape[0],):
            raise ValueError(f"{name} of video {f.video} frame {f.frame} must have {v.shape[0]} entries")
    if dim is not None and v.shape[1] != dim:
        raise ValueError(f"video {f.video} frame {f.frame} has width {v.shape[1]}, others {dim}")
    check_finite(f"vectors of video {f.video} frame {f.frame}", v)
    return v.shape[1]


def _share(hit: np.ndarray, among: np.ndarray) -> float:
    return float(hit[among].mean()) if among.any() else float("nan")


def association_accuracy(frames: Sequence[FrameObjects], gaps: Iterable[int]) -> AssociationResult:
    """For each gap D: every object at t whose track is present at t + D retrieves its
    nearest object at t + D (same video); see the module docstring for who counts.

    per_gap[D] holds instance_accuracy, category_accuracy, category_accuracy_wrong (category
    accuracy among the wrong-instance matches; NaN if none) over the counted queries,
    n_queries, n_wrong, n_objects (objects at t), left_out (share of them whose track is
    absent at t + D), and the unconditioned all_objects_instance_accuracy,
    all_objects_category_accuracy, all_objects_category_accuracy_wrong.
    """
    gaps = [int(g) for g in gaps]
    if any(g < 1 for g in gaps):
        raise ValueError(f"gaps must be positive frame differences, got {gaps}")
    dim = None
    by_key: dict[tuple, FrameObjects] = {}
    for f in frames:
        dim = _check_frame(f, dim)
        key = (f.video, int(f.frame))
        if key in by_key:
            raise ValueError(f"video {f.video} frame {f.frame} appears twice")
        by_key[key] = f
    vectors = {k: np.asarray(f.vectors, np.float64) for k, f in by_key.items()}
    columns: dict[str, list[np.ndarray]] = {k: [] for k in ("gap", "video", "present", "queried", "inst", "cat")}
    per_gap: dict[int, dict[str, float]] = {}
    for gap in gaps:
        first = len(columns["gap"])
        for (video, t), f in by_key.items():
            g = by_key.get((video, t + gap))
            n = len(f.track_ids)
            if g is None or n == 0:  # no frame t + D in this video, or nobody at t
                continue
            inst, cat = np.zeros(n, bool), np.zeros(n, bool)
            if len(g.track_ids):
                nearest = _nearest_exact(vectors[(video, t)], vectors[(video, t + gap)])
                inst = np.asarray(g.track_ids)[nearest] == np.asarray(f.track_ids)
                cat = np.asarray(g.categories)[nearest] == np.asarray(f.categories)
            columns["gap"].append(np.full(n, gap))
            columns["video"].append(np.full(n, video, dtype=object))
            columns["present"].append(np.isin(np.asarray(f.track_ids), np.asarray(g.track_ids)))
            columns["queried"].append(np.full(n, len(g.track_ids) > 0))
            columns["inst"].append(inst)
            columns["cat"].append(cat)
        inst, cat, present, queried = (np.concatenate(columns[k][first:]) if len(columns[k]) > first
                                       else np.zeros(0, bool) for k in ("inst", "cat", "present", "queried"))
        per_gap[gap] = {
            "instance_accuracy": _share(inst, present),
            "category_accuracy": _share(cat, present),
            "category_accuracy_wrong": _share(cat, present & ~inst),
            "n_queries": int(present.sum()),
            "n_wrong": int((present & ~inst).sum()),
            "n_objects": int(present.size),
            "left_out": float((~present).mean()) if present.size else float("nan"),
            "all_objects_instance_accuracy": _share(inst, queried),
            "all_objects_category_accuracy": _share(cat, queried),
            "all_objects_category_accuracy_wrong": _share(cat, queried & ~inst),
        }

    def joined(name, dtype):
        return np.concatenate(columns[name]) if columns[name] else np.zeros(0, dtype)

    return AssociationResult(
        per_gap=per_gap, gap=joined("gap", int), video=joined("video", object),
        present=joined("present", bool), queried=joined("queried", bool),
        instance_correct=joined("inst", bool), category_correct=joined("cat", bool),
    )
