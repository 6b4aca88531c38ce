"""The metric-table reading under the relations: defaults, ambiguity, missing rows, edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.claims import judge
from harness.claims.relations import Checks, _rank_corr
from harness.claims.table import Lookup, MissingMeasurements, middle, paper_linear, select


def table(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def test_absent_or_nan_parameters_mean_their_defaults():
    t = table({"metric": "miou", "model": "dino", "value": 0.5},
              {"metric": "miou", "model": "dino", "layer": 9, "value": 0.4},
              {"metric": "miou", "model": "dino", "corruption": "blur", "level": 10, "value": 0.3})
    assert select(t, "miou", model="dino", layer=12, corruption="none")["value"].tolist() == [0.5]
    assert select(t, "miou", layer=9)["value"].tolist() == [0.4]
    assert select(t, "miou", corruption="blur", level=[10, 20])["value"].tolist() == [0.3]
    # a parameter without a default must be present
    assert select(t, "miou", probe="knn").empty


def test_lookup_collects_every_missing_row_before_raising():
    get = Lookup(table({"metric": "miou", "model": "dino", "probe": "knn", "value": 0.5}))
    assert get.value("miou", model="dino", probe="knn") == 0.5
    assert np.isnan(get.value("miou", model="mae", probe="knn"))
    get.models("miou", required=("dino", "dinov2", "supervised"))
    with pytest.raises(MissingMeasurements) as err:
        get.done()
    assert err.value.missing == ["miou model=mae probe=knn", "miou model=dinov2", "miou model=supervised"]


def test_two_rows_for_one_number_is_an_error_not_a_guess():
    get = Lookup(table({"metric": "iou", "model": "dinov2", "value": 0.1}, {"metric": "iou", "model": "dinov2", "value": 0.2}))
    with pytest.raises(ValueError, match="2 rows match iou model=dinov2"):
        get.value("iou", model="dinov2")


def test_middle_training_size_and_paper_linear():
    assert middle([144, 36, 72, 72]) == 72
    assert middle([10]) == 10
    assert paper_linear("mae") == "linear_bn" and paper_linear("simmim") == "linear"


def test_derived_models_are_not_counted_as_models_unless_asked():
    t = table({"metric": "rate", "model": "mae", "value": 1.0}, {"metric": "rate", "model": "mae_pruned", "value": 1.0})
    assert Lookup(t).models("rate") == ["mae"]
    assert Lookup(t).models("rate", derived=True) == ["mae", "mae_pruned"]


def test_nan_measurement_never_holds_and_is_reported_as_none():
    c = Checks()
    value = c.measure("x", float("nan"))
    c.check(value >= 0.0, "x >= 0")
    outcome = c.outcome()
    assert not outcome.holds and outcome.measured == {"x": None}
    assert outcome.message == "does not hold: x >= 0"


def test_rank_correlation_is_spearman():
    a = pd.Series({"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0})
    assert _rank_corr(a, a ** 3) == pytest.approx(1.0)
    assert _rank_corr(a, -a) == pytest.approx(-1.0)
    assert np.isnan(_rank_corr(a, pd.Series({"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0})))


def pruning_table(curve: dict[int, float]) -> pd.DataFrame:
    return pd.DataFrame([{"metric": "miou", "model": "mae", "probe": "knn", "m": m, "value": v} for m, v in curve.items()])


@pytest.mark.parametrize("curve, verdict", [
    ({0: 0.058, 10: 0.170, 200: 0.295, 500: 0.2}, "verified"),
    ({0: 0.058, 10: 0.170, 200: 0.150, 500: 0.2}, "contradicted"),  # m=200 not 3x and argmax 500
    ({0: 0.058, 10: 0.050, 200: 0.295}, "contradicted"),  # m=10 below m=0
    ({0: 0.058, 200: 0.295}, "not judged"),  # m=10 not measured
])
def test_s4_2_pruning_curve_cases(curve, verdict):
    assert judge("S4.2", pruning_table(curve)).verdict == verdict


def test_s4_2_argmax_range_is_a_threshold():
    curve = {0: 0.058, 10: 0.170, 200: 0.295, 400: 0.30}
    assert judge("S4.2", pruning_table(curve)).verdict == "contradicted"
    assert judge("S4.2", pruning_table(curve), thresholds={"argmax_range": (100, 400)}).verdict == "verified"


def association(models: dict[str, list[float]], gaps=(1, 5, 30, 60)) -> pd.DataFrame:
    return pd.DataFrame([{"metric": "instance_acc", "model": m, "dataset": "bdd100k_mot", "gap": g, "value": v}
                         for m, values in models.items() for g, v in zip(gaps, values, strict=True)])


def test_s6_3_tolerates_small_rises_but_not_large_ones():
    flat = {"dino": [0.9, 0.8, 0.7, 0.68]}
    assert judge("S6.3", association(flat)).verdict == "verified"
    assert judge("S6.3", association({"dino": [0.9, 0.91, 0.7, 0.68]})).verdict == "verified"  # +0.01 <= 0.02
    assert judge("S6.3", association({"dino": [0.9, 0.95, 0.7, 0.68]})).verdict == "contradicted"
    result = judge("S6.3", association(flat, gaps=(1, 5, 10, 20)))
    assert result.verdict == "not judged" and "gap=30" in result.skip_reason


def test_s6_1_needs_a_third_model_to_rank():
    result = judge("S6.1", association({"dino": [0.9] * 4, "dinov2": [0.8] * 4}))
    assert result.verdict == "not judged" and "at least 3 models" in result.skip_reason
    both = association({"dino": [0.9] * 4, "dinov2": [0.8] * 4, "mae": [0.5] * 4})
    assert judge("S6.1", both).verdict == "verified"


def test_s5_models_are_averaged_on_the_same_levels():
    rows = [{"metric": "rate", "model": m, "outcome": "original", "corruption": "noise", "level": lv, "value": v}
            for m, values in {"dino": (0.9, 0.8), "ibot": (0.9, 0.8)}.items() for lv, v in zip((10, 20), values, strict=True)]
    rows.append({"metric": "rate", "model": "ibot", "outcome": "original", "corruption": "noise", "level": 30, "value": 0.1})
    result = judge("S5.4", pd.DataFrame(rows))
    assert result.verdict == "verified"  # ibot's extra level 30 is not averaged in
    assert result.measured == {"ibot mean original rate": pytest.approx(0.85), "dino mean original rate": pytest.approx(0.85)}
