"""Measurements and their bootstrap resampling (the units behind claim X.1)."""

import numpy as np
import pytest

from harness.measurements import Measurement, resampled_tables, to_table


def _confusions(correct_per_image):
    """Two-class confusion matrices per image: image i has `c` correct of 10 class-0 patches."""
    cms = []
    for c in correct_per_image:
        cm = np.zeros((2, 2), int)
        cm[0, 0], cm[0, 1], cm[1, 1] = c, 10 - c, 10
        cms.append(cm)
    return np.stack(cms)


def test_table_has_one_row_per_measurement_with_params():
    rows = [Measurement("miou", "dino", 0.5, {"probe": "knn", "layer": 12}),
            Measurement("miou", "mae", 0.1, {"probe": "knn", "layer": 12})]
    table = to_table(rows)
    assert list(table["model"]) == ["dino", "mae"]
    assert set(table.columns) >= {"metric", "model", "value", "probe", "layer"}


def test_resampling_all_units_once_reproduces_the_value():
    cm = _confusions([10, 5, 0])
    m = Measurement("miou", "dino", 0.0, units=cm, reducer="miou", unit_group="val")
    full = m.recompute(np.arange(3))
    tp0, tp1 = 15, 30
    expected = np.mean([tp0 / (30 + 0), tp1 / (30 + 15)])  # union0 = 30 targets; union1 = 30 + 15 FP
    assert full == pytest.approx(expected)


def test_rows_of_one_group_share_the_draw():
    """Two models measured on the same val images must be resampled together, so that a
    relation between them is evaluated on the same images."""
    good = Measurement("miou", "a", 0, units=_confusions([10, 0, 10, 0]), reducer="miou", unit_group="val")
    same = Measurement("miou", "b", 0, units=_confusions([10, 0, 10, 0]), reducer="miou", unit_group="val")
    for table in resampled_tables([good, same], n_resamples=20, seed=1):
        a, b = table["value"]
        assert a == b


def test_resamples_vary_and_are_seeded():
    m = Measurement("rate", "dino", 0.5, units=np.array([[1, 1], [0, 1], [1, 1], [0, 1]]),
                    reducer="ratio", unit_group="tiles")
    values = [t["value"][0] for t in resampled_tables([m], 50, seed=3)]
    again = [t["value"][0] for t in resampled_tables([m], 50, seed=3)]
    assert values == again
    assert len(set(values)) > 1
    assert 0.3 < np.mean(values) < 0.7


def test_rows_without_units_keep_their_value():
    m = Measurement("variance_ratio", "mae", 42.0)
    assert all(t["value"][0] == 42.0 for t in resampled_tables([m], 5, seed=0))


def test_mismatched_unit_counts_in_one_group_are_rejected():
    a = Measurement("rate", "a", 0, units=np.ones((3, 2)), reducer="ratio", unit_group="g")
    b = Measurement("rate", "b", 0, units=np.ones((4, 2)), reducer="ratio", unit_group="g")
    with pytest.raises(ValueError, match="unit group 'g'"):
        list(resampled_tables([a, b], 1, seed=0))
