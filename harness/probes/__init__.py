"""Probes on frozen patch embeddings: exact k-NN, the linear probe, and their metrics.

Plain functions on numpy arrays ([rows, features] float16/32/64 features, integer labels).
"""

from harness.probes.knn import MissingClassWarning, knn_predict, knn_search
from harness.probes.linear import LR_GRID, LinearProbe, LrChoice, choose_lr, fit_with_chosen_lr
from harness.probes.metrics import (
    accuracy_from_confusion,
    confusion_matrix,
    majority_class_fraction,
    miou,
    miou_from_confusion,
    patch_accuracy,
    per_image_confusion,
    per_image_majority,
)

__all__ = [
    "LR_GRID",
    "LinearProbe",
    "LrChoice",
    "MissingClassWarning",
    "accuracy_from_confusion",
    "choose_lr",
    "confusion_matrix",
    "fit_with_chosen_lr",
    "knn_predict",
    "knn_search",
    "majority_class_fraction",
    "miou",
    "miou_from_confusion",
    "patch_accuracy",
    "per_image_confusion",
    "per_image_majority",
]
