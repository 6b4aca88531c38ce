"""Metrics against hand-computed cases and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import jaccard_score

from harness.probes import (
    accuracy_from_confusion,
    confusion_matrix,
    majority_class_fraction,
    miou,
    miou_from_confusion,
    patch_accuracy,
    per_image_confusion,
    per_image_majority,
)


def test_hand_computed_case():
    target = np.array([0, 0, 1, 1, 2, 255, 255])
    pred = np.array([0, 1, 1, 1, 0, 2, 0])
    assert patch_accuracy(pred, target) == pytest.approx(3 / 5)
    mean, per_class = miou(pred, target, num_classes=4)
    # class 0: tp 1, fp 1 (the 2 predicted as 0), fn 1 -> 1/3; class 1: tp 2, fp 1 -> 2/3;
    # class 2: tp 0, fn 1 -> 0; class 3 absent everywhere -> NaN, left out of the mean.
    np.testing.assert_allclose(per_class[:3], [1 / 3, 2 / 3, 0.0])
    assert np.isnan(per_class[3])
    assert mean == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)


def test_against_sklearn_on_random_labels():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 6, 5000)
    target[rng.random(5000) < 0.1] = 255
    pred = np.where(rng.random(5000) < 0.6, target, rng.integers(0, 6, 5000))
    pred[target == 255] = rng.integers(0, 6, (target == 255).sum())
    scored = target != 255
    cm = confusion_matrix(pred, target, 6)
    np.testing.assert_array_equal(cm, sk_confusion(target[scored], pred[scored], labels=range(6)))
    mean, per_class = miou(pred, target, 6)
    ref = jaccard_score(target[scored], pred[scored], average=None, labels=range(6))
    np.testing.assert_allclose(per_class, ref)
    assert mean == pytest.approx(ref.mean())
    assert patch_accuracy(pred, target) == pytest.approx(np.mean(pred[scored] == target[scored]))


def test_perfect_and_useless_predictions():
    target = np.repeat(np.arange(5), 20)
    assert miou(target, target, 5)[0] == 1.0
    assert miou(np.zeros_like(target), target, 5)[0] == pytest.approx(0.2 / 5)


def test_per_image_confusion_sums_to_whole_and_stacks():
    rng = np.random.default_rng(1)
    target, pred = rng.integers(0, 4, 900), rng.integers(0, 4, 900)
    target[::7] = 255
    images = np.repeat(np.arange(9), 100)
    per_image = per_image_confusion(pred, target, images, 4)
    assert per_image.shape == (9, 4, 4)
    np.testing.assert_array_equal(per_image.sum(0), confusion_matrix(pred, target, 4))
    np.testing.assert_array_equal(
        per_image[3], confusion_matrix(pred[images == 3], target[images == 3], 4)
    )
    stacked_mean, stacked_iou = miou_from_confusion(per_image)
    for i in range(9):
        m, iou = miou_from_confusion(per_image[i])
        assert stacked_mean[i] == pytest.approx(m)
        np.testing.assert_allclose(stacked_iou[i], iou)


def test_majority_class_fraction():
    assert majority_class_fraction(np.array([3, 3, 3, 1])) == 0.75
    assert majority_class_fraction(np.arange(10)) == pytest.approx(0.1)


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        miou(np.zeros(3, int), np.zeros(4, int), 2)
    with pytest.raises(ValueError, match="integer class ids"):
        patch_accuracy(np.zeros(3), np.zeros(3, int))
    with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
        miou(np.array([0, 5]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="no scored patches"):
        patch_accuracy(np.zeros(2, int), np.full(2, 255))
    with pytest.raises(ValueError, match="one entry per patch"):
        per_image_confusion(np.zeros(3, int), np.zeros(3, int), np.zeros(2, int), 2)


def test_miou_over_a_class_subset_keeps_every_confusion():
    # class 0 is confused with class 2; the subset {0, 1} still counts those confusions
    cm = np.array([[3, 0, 1], [0, 2, 0], [2, 0, 4]])
    _, iou = miou_from_confusion(cm)
    mean, _ = miou_from_confusion(cm, classes=[0, 1])
    assert mean == pytest.approx((iou[0] + iou[1]) / 2) and iou[0] == pytest.approx(3 / 6)
    assert np.isnan(miou_from_confusion(np.zeros((3, 3)), classes=[0])[0])
    assert accuracy_from_confusion(cm) == pytest.approx(9 / 12)
    stacked = accuracy_from_confusion(np.stack([cm, np.eye(3)]))
    np.testing.assert_allclose(stacked, [9 / 12, 1.0])


def test_per_image_majority_sees_a_collapse_per_image_that_pooling_hides():
    # image 0 all class 2, image 1 all class 5, image 2 mixed; image 3 has no patches
    pred = np.array([2, 2, 2, 5, 5, 1, 2, 3, 3])
    image = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    per_image, pooled = per_image_majority(pred, image, n_images=4)
    np.testing.assert_allclose(per_image, [[1, 1], [1, 1], [0.5, 1], [0, 0]])
    assert per_image[:, 0].sum() / per_image[:, 1].sum() == pytest.approx(2.5 / 3)
    np.testing.assert_allclose(pooled, [[3, 3], [0, 2], [1, 4], [0, 0]])  # pooled majority: class 2
    assert majority_class_fraction(pred) == pytest.approx(pooled[:, 0].sum() / pooled[:, 1].sum())
