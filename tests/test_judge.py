"""How a claim is judged (harness.claims.judge): its body on the numbers, then on resamples.

The claims here are small specs built in the test (not registered), so each rule of the
verdict is shown on the smallest body that exercises it.
"""

import ast
import inspect
import json

import numpy as np
import pandas as pd
import pytest

from harness.claims import ClaimResult, ClaimSpec, catalogue, expect, judge, need, skipped
from harness.claims.claim import SECTION_DATASETS
from harness.measurements import AmbiguousRead, Measurement, Measurements


def spec(test, claim_id="S3.99", **kw) -> ClaimSpec:
    return ClaimSpec(claim_id, test, **kw)


def mae_ratio(cityscapes, ratio=2.5):
    """MAE k-NN is far below its linear probe.

    mae linear >= 2.5 x mae kNN."""
    knn = cityscapes.value("miou", model="mae", probe="knn")
    linear = cityscapes.value("miou", model="mae", probe="linear_bn")
    assert linear >= ratio * knn


def mae(knn, linear, **kw) -> Measurements:
    return Measurements([Measurement("miou", "mae", knn, {"probe": "knn"}),
                         Measurement("miou", "mae", linear, {"probe": "linear_bn"})], **kw)


def test_verified_when_every_assert_holds():
    result = judge(spec(mae_ratio), mae(0.06, 0.40))
    assert result.verdict == "verified" and result.holds is True
    assert result.measured == {"miou mae knn": 0.06, "miou mae linear_bn": 0.4}
    assert [r["probe"] for r in result.rows] == ["knn", "linear_bn"]
    assert result.statement == "MAE k-NN is far below its linear probe."


def test_contradicted_with_the_failing_assert_and_its_numbers():
    result = judge(spec(mae_ratio), mae(0.20, 0.40))
    assert result.verdict == "contradicted" and result.holds is False
    assert "0.4" in result.message and "2.5" in result.message and "0.2" in result.message


def test_a_missing_number_never_contradicts():
    """The body goes on with NaN and its assert fails; the harness still says 'not judged'."""
    result = judge(spec(mae_ratio), Measurements([Measurement("miou", "mae", 0.4, {"probe": "linear_bn"})]))
    assert result.verdict == "not judged"
    assert result.missing == ["miou model=mae probe=knn"]
    assert result.skip_reason == "missing measurements: miou model=mae probe=knn"


def test_missing_numbers_of_a_model_without_weights_skip_naming_the_weights():
    section = Measurements([Measurement("miou", "mae", 0.4, {"probe": "linear_bn"})],
                           unavailable={"mae": "weights hf-hub:timm/mae are not in the local cache ...",
                                        "dino": "dino weights missing"})
    result = judge(spec(mae_ratio), section)
    assert result.verdict == "skipped"
    assert result.skip_reason == "weights hf-hub:timm/mae are not in the local cache ..."


def test_a_model_the_claim_does_not_read_is_not_needed():
    result = judge(spec(mae_ratio), mae(0.06, 0.40, unavailable={"dino": "dino weights missing"}))
    assert result.verdict == "verified"


def test_a_failed_measurement_ends_the_claim_in_error_with_its_message():
    section = Measurements([], failed={"mae": "mae: StoreFullError: no space left in /cache (needs 3 GB)"})
    result = judge(spec(mae_ratio), section)
    assert result.verdict == "error" and "no space left in /cache" in result.message


def test_need_makes_a_claim_not_judged_with_its_reason():
    def few_bus(cityscapes, min_bus_patches=50):
        """Bus.

        Needs buses."""
        n = cityscapes.value("n_patches", model="dinov2", class_name="bus")
        need(n >= min_bus_patches, f"{n:.0f} bus patches")
        raise AssertionError("never reached")

    section = Measurements([Measurement("n_patches", "dinov2", 12, {"class_name": "bus"})])
    result = judge(spec(few_bus), section)
    assert result.verdict == "not judged" and result.skip_reason == "12 bus patches"


def test_expect_reports_every_failing_model_not_only_the_first():
    def comparable(cityscapes, ratio=0.75):
        """Comparable.

        kNN >= 0.75 x linear for each model."""
        for model in ("dino", "dinov2", "supervised"):
            knn = cityscapes.value("miou", model=model, probe="knn")
            linear = cityscapes.value("miou", model=model, probe="linear")
            with expect(model):
                assert knn >= ratio * linear

    section = Measurements([Measurement("miou", m, k, {"probe": p}) for m, values in
                            {"dino": (0.2, 0.5), "dinov2": (0.5, 0.5), "supervised": (0.1, 0.5)}.items()
                            for p, k in zip(("knn", "linear"), values, strict=True)])
    result = judge(spec(comparable), section)
    assert result.verdict == "contradicted"
    assert "dino: " in result.message and "supervised: " in result.message and "dinov2" not in result.message


def test_expect_outside_a_judged_attempt_is_a_plain_assertion():
    with pytest.raises(AssertionError), expect("dino"):
        assert 1 > 2


def test_a_bug_in_a_claim_is_raised_not_judged():
    def buggy(cityscapes):
        """Buggy.

        Divides by zero."""
        cityscapes.value("miou", model="mae", probe="knn")
        return 1 / 0

    with pytest.raises(ZeroDivisionError):
        judge(spec(buggy), mae(0.1, 0.4))


def test_an_ambiguous_read_is_an_error_of_the_claim():
    def ambiguous(cityscapes):
        """Ambiguous.

        Reads two rows as one."""
        assert cityscapes.value("miou", model="mae") > 0

    with pytest.raises(AmbiguousRead):
        judge(spec(ambiguous), mae(0.1, 0.4))


# ---------------------------------------------------------------- resamples


def per_image(hits_per_image) -> np.ndarray:
    """Two-class confusion matrices: image i gets `h` of 10 class-0 patches right."""
    cms = np.zeros((len(hits_per_image), 2, 2))
    for i, h in enumerate(hits_per_image):
        cms[i] = [[h, 10 - h], [0, 10]]
    return cms


def bootstrap_section(knn_hits, linear_hits) -> Measurements:
    def row(probe, hits):
        from harness.probes.metrics import miou_from_confusion

        cm = per_image(hits)
        return Measurement("miou", "mae", float(miou_from_confusion(cm.sum(0))[0]), {"probe": probe},
                           units=cm, reducer="miou", unit_group="val")
    return Measurements([row("knn", knn_hits), row("linear_bn", linear_hits)])


def test_holding_in_most_resamples_is_verified_with_intervals_of_the_rows_read():
    section = bootstrap_section([1, 1, 1, 1, 1, 1], [9, 9, 9, 9, 9, 9])
    result = judge(spec(mae_ratio), section, resamples=200, seed=1, thresholds={"ratio": 1.2})
    assert result.verdict == "verified" and result.holds_fraction == 1.0 and result.resamples == 200
    assert set(result.ci) == {"miou mae knn", "miou mae linear_bn"}
    low, high = result.ci["miou mae knn"]
    assert low <= result.measured["miou mae knn"] <= high


def test_holding_in_few_resamples_is_fragile():
    # linear equals kNN on the full set; a draw with image 5 twice or more drops linear below
    section = bootstrap_section([9, 9, 9, 9, 9, 9], [10, 10, 10, 10, 10, 4])
    result = judge(spec(mae_ratio), section, resamples=300, seed=2, thresholds={"ratio": 0.99})
    assert result.holds is True
    assert 0 < result.holds_fraction < 0.9
    assert result.verdict == "fragile" and "resamples" in result.message


def test_contradicted_stays_contradicted_whatever_the_resamples():
    section = bootstrap_section([9, 9, 9, 9], [9, 9, 9, 9])
    result = judge(spec(mae_ratio), section, resamples=50, seed=0)
    assert result.verdict == "contradicted" and result.holds_fraction == 0.0


def test_training_subsets_are_judged_like_resamples():
    section = mae(0.06, 0.40)
    section.alternates = [mae(0.06, 0.40), mae(0.30, 0.40), mae(0.30, 0.40)]
    result = judge(spec(mae_ratio), section)
    assert result.train_subsets == 4 and result.train_holds_fraction == 0.5
    assert result.verdict == "fragile" and "training subsets" in result.message


def test_untrained_weights_are_not_judged_but_keep_the_numbers():
    result = judge(spec(mae_ratio), mae(0.06, 0.40), untrained=True)
    assert result.verdict == "not judged" and result.holds is True
    assert result.measured and result.message.startswith("untrained weights, would hold")


# ---------------------------------------------------------------- thresholds


def test_a_threshold_override_changes_the_verdict():
    assert judge(spec(mae_ratio), mae(0.1, 0.4)).verdict == "verified"
    result = judge(spec(mae_ratio), mae(0.1, 0.4), thresholds={"ratio": 5})
    assert result.verdict == "contradicted" and result.thresholds == {"ratio": 5}


@pytest.mark.parametrize(("value", "message"), [
    (float("nan"), "finite"), ("0.02", "takes a number"), ([1, 2], "takes a number"), (True, "takes a number"),
])
def test_nonsense_thresholds_are_refused(value, message):
    with pytest.raises(ValueError, match=message):
        judge(spec(mae_ratio), mae(0.1, 0.4), thresholds={"ratio": value})


def test_unknown_threshold_names_the_known_ones():
    with pytest.raises(ValueError, match="has no threshold 'ration'; its thresholds are: ratio"):
        judge(spec(mae_ratio), mae(0.1, 0.4), thresholds={"ration": 3})


def test_a_range_threshold_takes_a_list_of_as_many_numbers():
    s42 = catalogue()["S4.2"]
    from harness.claims import resolve_thresholds

    assert resolve_thresholds(s42, {"best_m": [50, 300]})["best_m"] == (50, 300)
    with pytest.raises(ValueError, match="list of 2 numbers"):
        resolve_thresholds(s42, {"best_m": [50]})


# ---------------------------------------------------------------- the documented API


def test_judge_by_id_on_a_metric_table():
    table = pd.DataFrame([{"metric": "miou", "model": "mae", "probe": "knn", "value": 0.06},
                          {"metric": "miou", "model": "mae", "probe": "linear_bn", "value": 0.42}])
    result = judge("S3.3", table)
    assert result.verdict == "verified" and result.id == "S3.3" and result.ref.startswith("fig 1")


def test_a_table_is_split_by_dataset_between_the_sections_a_claim_reads():
    models = ("dino", "dinov2", "supervised", "mae", "simmim")
    rows = [{"metric": "miou", "model": m, "probe": p, "dataset": d, "value": v * (1 if d == "cityscapes" else 0.5)}
            for d in ("cityscapes", "ade20k") for m, v in zip(models, (0.5, 0.6, 0.4, 0.1, 0.2), strict=True)
            for p in ("knn", "linear", "linear_bn")]
    assert judge("S3.13", pd.DataFrame(rows)).verdict == "verified"
    rows[-1]["value"] = 0.9  # ade20k simmim linear_bn: does not change the linear ranking of MAE's probe
    rows[5 * 3 + 3 * 3 + 2]["value"] = 5.0  # ade20k mae linear_bn jumps to the top
    assert judge("S3.13", pd.DataFrame(rows)).verdict == "contradicted"


def test_unknown_claim_ids_are_rejected():
    with pytest.raises(ValueError, match="unknown claim id 'S9.9'"):
        judge("S9.9", pd.DataFrame([{"metric": "miou", "model": "m", "value": 1}]))


def test_result_round_trips_through_json():
    result = judge(spec(mae_ratio), mae(0.06, 0.4))
    again = ClaimResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result


def test_skipped_result_carries_its_reason():
    result = skipped("S6.6", "MOT17 not found: put it under DATA/mot17")
    assert result.verdict == "skipped" and result.skip_reason.startswith("MOT17 not found")


# ---------------------------------------------------------------- the catalogue


def test_the_catalogue_is_the_claims_tests_in_order():
    claims = catalogue()
    assert len(claims) == 38
    assert list(claims)[:3] == ["S3.1", "S3.2", "S3.3"] and list(claims)[10:13] == ["S3.11", "S3.12", "S3.13"]
    assert list(claims)[-5:] == ["X.1", "X.2", "X.3", "X.4", "X.5"]


@pytest.mark.parametrize("claim_id", list(catalogue()))
def test_every_claim_reads_as_a_finding_thresholds_and_asserts(claim_id):
    claim = catalogue()[claim_id]
    assert claim.statement and claim.assertion, "the docstring has the finding, then what is asserted"
    body = ast.parse(inspect.getsource(claim.test).lstrip())
    assert any(isinstance(node, ast.Assert) for node in ast.walk(body)), "the relation is plain asserts"
    for name in claim.fixtures:
        assert name in SECTION_DATASETS or name == "claim_results", f"unknown section {name!r}"
    for name, default in claim.thresholds.items():
        assert isinstance(default, (int, float, tuple)), f"threshold {name} is a number or a range"
