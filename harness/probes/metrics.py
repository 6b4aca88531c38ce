"""Patch-classification metrics: accuracy, confusion matrix, per-class IoU and mIoU.

Conventions (used by every claim that reports an mIoU):
- `target == ignore_index` marks a patch that is not scored (majority 'ignore' pixels).
- A class's IoU is TP / (TP + FP + FN) over the scored patches. A class whose union
  TP + FP + FN is zero (absent from both target and prediction) has IoU NaN and is left
  out of the mean; a class that is in the target but never predicted (or predicted but
  not in the target) counts with IoU 0. This is the usual "classes present" mIoU.
- Every scored patch must be predicted as a real class (0..num_classes-1).
"""

from __future__ import annotations

import numpy as np


def _labels(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class ids, got dtype {a.dtype}")
    return a.reshape(-1)


def _pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    pred_arr, target_arr = np.asarray(pred), np.asarray(target)
    if pred_arr.shape != target_arr.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {pred_arr.shape} and {target_arr.shape}"
        )
    return _labels("pred", pred_arr), _labels("target", target_arr)


def _check_range(name: str, a: np.ndarray, num_classes: int) -> None:
    if a.size and (a.min() < 0 or a.max() >= num_classes):
        raise ValueError(
            f"{name} has class ids outside [0, {num_classes}) (min {a.min()}, max {a.max()}); "
            "pass the right num_classes or mark unlabeled patches with ignore_index"
        )


def patch_accuracy(pred, target, ignore_index: int = 255) -> float:
    """Fraction of scored patches (target != ignore_index) whose prediction equals the target."""
    pred, target = _pair(pred, target)
    scored = target != ignore_index
    if not scored.any():
        raise ValueError("no scored patches: every target equals ignore_index")
    return float(np.mean(pred[scored] == target[scored]))


def confusion_matrix(pred, target, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """[num_classes, num_classes] int64 counts; rows are targets, columns predictions.

    Only scored patches count. A prediction outside [0, num_classes) on a scored patch is
    an error: every scored patch must be predicted as a real class.
    """
    pred, target = _pair(pred, target)
    scored = target != ignore_index
    pred, target = pred[scored], target[scored]
    _check_range("target", target, num_classes)
    _check_range("pred (on scored patches)", pred, num_classes)
    flat = target.astype(np.int64) * num_classes + pred.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def miou_from_confusion(cm: np.ndarray, classes=None) -> tuple[np.ndarray, np.ndarray]:
    """(mIoU, per-class IoU) from a confusion matrix [..., C, C] (rows targets, columns preds).

    Works on a stack of matrices (e.g. [n_resamples, C, C] in the bootstrap) at once; the
    mIoU is the NaN-ignoring mean over classes with a non-zero union (NaN if none has).
    `classes` (indices) restricts the mean to those classes, each IoU still counting every
    confusion with the other classes (the 'easy'/'hard' split of S3.8).
    """
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim < 2 or cm.shape[-1] != cm.shape[-2]:
        raise ValueError(f"confusion matrix must be [..., C, C], got shape {cm.shape}")
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    union = cm.sum(axis=-1) + cm.sum(axis=-2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    present = union > 0
    if classes is not None:
        chosen = np.zeros(cm.shape[-1], bool)
        chosen[np.asarray(classes, dtype=np.int64)] = True
        present = present & chosen
    n_present = present.sum(axis=-1)
    total = np.where(present, iou, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n_present > 0, total / np.maximum(n_present, 1), np.nan)
    return mean, iou


def accuracy_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Patch accuracy (trace / sum) of a confusion matrix [..., C, C]; NaN if it is empty."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.trace(cm, axis1=-2, axis2=-1) / np.maximum(total, 1), np.nan)


def miou(pred, target, num_classes: int, ignore_index: int = 255) -> tuple[float, np.ndarray]:
    """(mIoU over classes present in target or prediction, per-class IoU with NaN for absent)."""
    mean, iou = miou_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index))
    return float(mean), iou


def per_image_confusion(
    pred, target, image_index, num_classes: int, ignore_index: int = 255
) -> np.ndarray:
    """[n_images, C, C] confusion matrices, one per image id in 0..max(image_index).

    Summing any multiset of these (a bootstrap resample of images) gives that resample's
    confusion matrix, so an mIoU per resample costs a sum, not a pass over the patches.
    """
    pred, target = _pair(pred, target)
    image_index = np.asarray(image_index).reshape(-1)
    if image_index.shape != pred.shape:
        raise ValueError(
            f"image_index must have one entry per patch ({pred.size}), got {image_index.size}"
        )
    if image_index.size and image_index.min() < 0:
        raise ValueError("image_index must be non-negative image ids")
    n_images = int(image_index.max()) + 1 if image_index.size else 0
    scored = target != ignore_index
    pred, target, image_index = pred[scored], target[scored], image_index[scored]
    _check_range("target", target, num_classes)
    _check_range("pred (on scored patches)", pred, num_classes)
    c2 = num_classes * num_classes
    flat = image_index.astype(np.int64) * c2 + target.astype(np.int64) * num_classes + pred
    counts = np.bincount(flat, minlength=n_images * c2)
    return counts.reshape(n_images, num_classes, num_classes)


def majority_class_fraction(pred) -> float:
    """Fraction of patches predicted as the single most frequent predicted class (S3.11)."""
    pred = _labels("pred", np.asarray(pred))
    if pred.size == 0:
        raise ValueError("pred is empty")
    _, counts = np.unique(pred, return_counts=True)
    return float(counts.max() / pred.size)


def per_image_majority(pred, image_index, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """The collapse of S3.11 per image: (per image [n_images, 2] (share of the image's
    patches predicted as that image's most frequent predicted class, 1), pooled
    [n_images, 2] (patches of the image predicted as the most frequent class over all
    images, the image's patch count)). An image without patches gets a row of zeros."""
    pred = _labels("pred", np.asarray(pred)).astype(np.int64)
    image_index = np.asarray(image_index, dtype=np.int64).reshape(-1)
    if image_index.shape != pred.shape:
        raise ValueError(f"image_index must have one entry per patch ({pred.size}), got {image_index.size}")
    if pred.size == 0:
        raise ValueError("pred is empty")
    n_classes = int(pred.max()) + 1
    counts = np.zeros((n_images, n_classes), np.int64)
    np.add.at(counts, (image_index, pred), 1)
    n_patches = counts.sum(axis=1)
    has = n_patches > 0
    share = np.where(has, counts.max(axis=1) / np.maximum(n_patches, 1), 0.0)
    per_image = np.stack([share, has.astype(np.float64)], axis=1)
    pooled_class = int(counts.sum(axis=0).argmax())
    pooled = np.stack([counts[:, pooled_class], n_patches], axis=1).astype(np.float64)
    return per_image, pooled
