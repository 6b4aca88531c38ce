"""The metric table's read API and its one resampling path (harness.measurements)."""

import numpy as np
import pandas as pd
import pytest

from harness.measurements import (
    AmbiguousRead,
    Measurement,
    Measurements,
    higher_is_better,
    reported,
    row_key,
    row_label,
    to_table,
)


def rows(*specs) -> Measurements:
    return Measurements([Measurement(metric, model, value, params) for metric, model, value, params in specs])


def _confusions(correct_per_image):
    """Two-class confusion matrices per image: image i has `c` correct of 10 class-0 patches."""
    cms = []
    for c in correct_per_image:
        cm = np.zeros((2, 2), int)
        cm[0, 0], cm[0, 1], cm[1, 1] = c, 10 - c, 10
        cms.append(cm)
    return np.stack(cms)


# ---------------------------------------------------------------- reads


def test_a_read_that_leaves_a_parameter_out_takes_its_default():
    m = rows(("miou", "mae", 0.10, {"probe": "knn", "layer": 12, "n_train": 72}),
             ("miou", "mae", 0.30, {"probe": "knn", "layer": 12, "n_train": 72, "m": 200}),
             ("miou", "mae", 0.05, {"probe": "knn", "layer": 12, "n_train": 72, "corruption": "blur", "level": 10}),
             ("miou", "mae", 0.09, {"probe": "knn", "layer": 12, "n_train": 72, "variant": "cosine"}))
    assert m.value("miou", model="mae", probe="knn") == 0.10  # m=0, clean, main protocol
    assert m.value("miou", model="mae", probe="knn", m=200) == 0.30
    assert m.value("miou", model="mae", probe="knn", corruption="blur", level=10) == 0.05
    assert m.value("miou", model="mae", probe="knn", variant="cosine") == 0.09
    assert not m.missing


def test_the_default_layer_is_the_models_last_and_the_default_size_the_middle():
    specs = [("miou", "dino", 0.1 * layer, {"probe": "knn", "layer": layer, "n_train": 72}) for layer in range(1, 13)]
    specs += [("miou", "big", 0.01 * layer, {"probe": "knn", "layer": layer, "n_train": 72}) for layer in (12, 24)]
    specs += [("miou", "dino", 0.5, {"probe": "knn", "layer": 12, "n_train": 36}),
              ("miou", "dino", 2.0, {"probe": "knn", "layer": 12, "n_train": 144})]
    m = rows(*specs)
    assert m.value("miou", model="dino", probe="knn") == pytest.approx(1.2)  # layer 12, 72 images
    assert m.value("miou", model="big", probe="knn") == pytest.approx(0.24)  # a 24-layer model: layer 24
    assert m.value("miou", model="dino", probe="knn", n_train=144) == 2.0
    assert m.distinct("miou", "n_train", model="dino") == [36, 72, 144]


def test_empty_cells_mean_the_default():
    table = pd.DataFrame([
        {"metric": "miou", "model": "supervised", "probe": "linear", "corruption": "none", "value": 0.50},
        {"metric": "miou", "model": "supervised", "probe": "linear", "corruption": "band_noise", "level": 4,
         "value": 0.45},
    ])
    m = Measurements.from_table(table)
    assert m.value("miou", model="supervised", probe="linear") == 0.50
    assert m.value("miou", model="supervised", probe="linear", corruption="band_noise", level=4) == 0.45


def test_a_missing_number_reads_nan_and_is_listed_with_what_was_asked():
    m = rows(("miou", "dino", 0.5, {"probe": "knn"}))
    assert np.isnan(m.value("miou", model="mae", probe="knn"))
    curve = m.curve("miou", by="m", model="dino", probe="knn", need=(0, 200))
    assert list(curve.index) == [0]
    assert [str(x) for x in m.missing] == ["miou model=mae probe=knn", "miou model=dino probe=knn m=200"]
    assert m.missing[0].model == "mae"


def test_reported_reads_never_count_as_missing():
    m = rows(("miou", "dino", 0.5, {"probe": "knn"}))
    with reported():
        m.value("miou", model="mae", probe="knn")
    assert not m.missing


def test_two_rows_for_one_number_is_an_error_not_a_guess():
    m = rows(("iou", "dinov2", 0.1, {"class_name": "bus"}), ("iou", "dinov2", 0.2, {"class_name": "car"}))
    with pytest.raises(AmbiguousRead, match="2 rows match iou model=dinov2"):
        m.value("iou", model="dinov2")
    assert m.value("iou", model="dinov2", class_name="car") == 0.2


def test_curve_grid_models_and_distinct():
    specs = [("instance_acc", model, value - 0.01 * gap, {"gap": gap})
             for model, value in (("dino", 0.9), ("mae", 0.6)) for gap in (1, 5, 10)]
    m = rows(*specs)
    curve = m.curve("instance_acc", by="gap", model="dino")
    assert list(curve.index) == [1, 5, 10] and curve[5] == pytest.approx(0.85)
    grid = m.grid("instance_acc", index="gap", need=("dino", "mae", "ibot"), at_least=3)
    assert list(grid.columns) == ["dino", "mae"] and grid.loc[10, "mae"] == pytest.approx(0.5)
    assert [str(x) for x in m.missing] == ["instance_acc model=ibot",
                                           "instance_acc (needs at least 3 models, found ['dino', 'mae'])"]
    assert m.models("instance_acc") == ["dino", "mae"]
    assert m.distinct("instance_acc", "gap", model="mae") == [1, 5, 10]


def test_every_row_read_is_listed_once():
    m = rows(("miou", "dino", 0.5, {"probe": "knn"}), ("miou", "mae", 0.1, {"probe": "knn"}))
    m.value("miou", model="dino", probe="knn")
    m.value("miou", model="dino", probe="knn")
    assert m.read == [{"metric": "miou", "model": "dino", "probe": "knn", "value": 0.5}]
    assert m.fresh().read == [], "a fresh view starts with nothing read"


def test_unknown_columns_in_a_read_are_an_error():
    m = rows(("miou", "dino", 0.5, {"probe": "knn"}))
    with pytest.raises(ValueError, match="unknown column"):
        m.value("miou", model="dino", prob="knn")


def test_from_table_needs_metric_model_value():
    with pytest.raises(ValueError, match="lacks the column 'value'"):
        Measurements.from_table(pd.DataFrame([{"metric": "miou", "model": "dino"}]))
    with pytest.raises(TypeError, match="DataFrame"):
        Measurements.from_table([{"metric": "miou"}])


def test_row_identity_and_labels_ignore_defaults_and_number_types():
    a = {"metric": "miou", "model": "mae", "probe": "knn", "layer": 12, "m": 0, "variant": "main", "value": 1}
    b = {"metric": "miou", "model": "mae", "probe": "knn", "layer": 12.0, "value": 2}
    assert row_key(a) == row_key(b)
    assert row_label(a) == "miou mae knn layer=12"
    assert row_label({**a, "m": 200, "corruption": "blur", "level": 10}) == "miou mae knn layer=12 corruption=blur level=10 m=200"


@pytest.mark.parametrize(("row", "better"), [
    ({"metric": "miou"}, True), ({"metric": "variance_ratio"}, False), ({"metric": "recon_mse"}, False),
    ({"metric": "rate", "outcome": "original"}, True), ({"metric": "rate", "outcome": "background"}, False),
    ({"metric": "instance_acc"}, True), ({"metric": "unknown"}, False),
])
def test_metric_direction_lives_with_the_metric(row, better):
    assert higher_is_better(row) is better


# ---------------------------------------------------------------- resampling


def test_table_has_one_row_per_measurement_with_params():
    table = to_table([Measurement("miou", "dino", 0.5, {"probe": "knn", "layer": 12}),
                      Measurement("miou", "mae", 0.1, {"probe": "knn", "layer": 12})])
    assert list(table["model"]) == ["dino", "mae"]
    assert set(table.columns) >= {"metric", "model", "value", "probe", "layer"}


@pytest.mark.parametrize(("reducer", "units", "args", "expected"), [
    ("miou", _confusions([10, 5, 0]), {}, np.mean([15 / 30, 30 / 45])),
    ("class_iou", _confusions([10, 5, 0]), {"class_index": 1}, 30 / 45),
    ("accuracy", _confusions([10, 5, 0]), {}, 45 / 60),
    ("ratio", np.array([[1, 2], [3, 4]]), {}, 4 / 6),
    ("sum", np.array([[1, 1], [5, 1]]), {}, 6),
    # r2 with one target: units (sse, sum_y, sum_yy, n) per image
    ("r2", np.array([[0.5, 1.0, 1.0, 2], [0.5, 3.0, 5.0, 2]]), {}, 1 - 1.0 / (6.0 - 16.0 / 4)),
])
def test_every_reducer_with_all_units_once_gives_the_value(reducer, units, args, expected):
    m = Measurement("x", "dino", float(expected), units=units, reducer=reducer, reducer_args=args, unit_group="g")
    assert m.recompute(np.ones((1, len(units))))[0] == pytest.approx(expected)


def test_a_row_with_units_needs_a_known_reducer():
    with pytest.raises(ValueError, match="reducer 'median'"):
        Measurement("miou", "dino", 0.5, units=np.ones((3, 2)), reducer="median")


def test_rows_of_one_group_share_the_draw():
    """Two models measured on the same val images are resampled together, so a relation between
    them is judged on the same images."""
    m = Measurements([Measurement("miou", name, 0.5, {"probe": "knn"}, units=_confusions([10, 0, 10, 0]),
                                  reducer="miou", unit_group="val") for name in ("a", "b")])
    for view in m.resampled(20, seed=1):
        assert view.value("miou", model="a", probe="knn") == view.value("miou", model="b", probe="knn")


def test_resamples_vary_are_seeded_and_keep_the_reads_tracking():
    m = Measurements([Measurement("rate", "dino", 0.5, {}, units=np.array([[1, 1], [0, 1], [1, 1], [0, 1]]),
                                  reducer="ratio", unit_group="tiles")])
    values = [v.value("rate", model="dino") for v in m.resampled(50, seed=3)]
    again = [v.value("rate", model="dino") for v in m.resampled(50, seed=3)]
    assert values == again and len(set(values)) > 1 and 0.3 < np.mean(values) < 0.7
    view = m.resampled(1, seed=0)[0]
    view.value("rate", model="dino")
    assert len(view.read) == 1 and not m.read


def test_rows_without_units_keep_their_value():
    m = Measurements([Measurement("variance_ratio", "mae", 42.0)])
    assert all(v.value("variance_ratio", model="mae") == 42.0 for v in m.resampled(5, seed=0))


def test_mismatched_unit_counts_in_one_group_are_rejected():
    with pytest.raises(ValueError, match="unit group 'g'"):
        Measurements([Measurement("rate", "a", 0, units=np.ones((3, 2)), reducer="ratio", unit_group="g"),
                      Measurement("rate", "b", 0, units=np.ones((4, 2)), reducer="ratio", unit_group="g")])


def test_lazy_resampling_equals_recomputing_each_draw():
    rng = np.random.default_rng(0)
    cms = rng.integers(0, 20, size=(12, 3, 3))
    m = Measurements([Measurement("miou", "dino", 0.0, {}, units=cms, reducer="miou", unit_group="val")])
    from harness.probes.metrics import miou_from_confusion

    draws = np.random.default_rng(7)
    for view in m.resampled(5, seed=7):
        picked = draws.integers(0, 12, size=12)
        assert view.value("miou", model="dino") == pytest.approx(float(miou_from_confusion(cms[picked].sum(0))[0]))
