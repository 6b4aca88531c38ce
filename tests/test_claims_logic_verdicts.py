"""The judge: fragile verdicts from resamples, not-judged cases, threshold overrides."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.claims import CLAIMS, UNTRAINED_REASON, ClaimResult, judge, skipped


def s3_3_table(mae_knn: float, mae_linear: float) -> pd.DataFrame:
    return pd.DataFrame([
        {"metric": "miou", "model": "mae", "probe": "knn", "n_train": 72, "value": mae_knn},
        {"metric": "miou", "model": "mae", "probe": "linear_bn", "n_train": 72, "value": mae_linear},
    ])


def test_verified_without_resamples_has_no_ci():
    result = judge("S3.3", s3_3_table(0.06, 0.40))
    assert result.verdict == "verified"
    assert result.measured == {"mae kNN": 0.06, "mae linear": 0.40, "mae linear/kNN": pytest.approx(6.666667)}
    assert result.ci is None and result.holds_fraction is None
    assert result.thresholds == {"ratio": 2.5}


def test_holds_in_most_resamples_is_verified_with_ci():
    resamples = [s3_3_table(0.06, 0.30 + 0.01 * i) for i in range(20)]
    result = judge("S3.3", s3_3_table(0.06, 0.40), resamples=resamples)
    assert result.verdict == "verified"
    assert result.holds_fraction == 1.0
    low, high = result.ci["mae linear"]
    assert 0.30 <= low < high <= 0.49


def test_holds_in_few_resamples_is_fragile():
    # 10 of 20 resamples fall below 2.5 x kNN = 0.15.
    resamples = [s3_3_table(0.06, 0.10 if i % 2 else 0.40) for i in range(20)]
    result = judge("S3.3", s3_3_table(0.06, 0.40), resamples=resamples)
    assert result.verdict == "fragile"
    assert result.holds_fraction == pytest.approx(0.5)
    assert "50%" in result.message


def test_contradicted_stays_contradicted_whatever_the_resamples():
    resamples = [s3_3_table(0.06, 0.40)] * 5
    result = judge("S3.3", s3_3_table(0.06, 0.10), resamples=resamples)
    assert result.verdict == "contradicted"
    assert result.holds_fraction == 1.0


def test_resample_missing_rows_counts_as_not_holding():
    resamples = [s3_3_table(0.06, 0.40)] * 8 + [s3_3_table(0.06, 0.40).iloc[:1]] * 2
    result = judge("S3.3", s3_3_table(0.06, 0.40), resamples=resamples)
    assert result.holds_fraction == pytest.approx(0.8)
    assert result.verdict == "fragile"


def test_missing_model_is_not_judged_with_the_list():
    rows = [{"metric": "miou", "model": m, "probe": p, "n_train": 72, "value": 0.5}
            for m in ("dino", "supervised") for p in ("knn", "linear")]
    result = judge("S3.2", pd.DataFrame(rows))
    assert result.verdict == "not judged"
    assert result.holds is None
    assert any("model=dinov2" in item and "probe=knn" in item for item in result.missing)
    assert any("model=dinov2" in item and "probe=linear" in item for item in result.missing)
    assert not any("model=dino " in item for item in result.missing)
    assert "dinov2" in result.skip_reason


def test_untrained_is_not_judged_but_keeps_the_numbers():
    result = judge("S3.3", s3_3_table(0.06, 0.10), untrained=True)
    assert result.verdict == "not judged"
    assert result.skip_reason == UNTRAINED_REASON
    assert result.holds is False
    assert result.measured["mae linear"] == 0.10
    assert result.message.startswith("untrained weights, would not hold: does not hold: mae linear 0.100")


def test_threshold_override_changes_the_verdict():
    table = s3_3_table(0.06, 0.20)  # linear/kNN = 3.33
    assert judge("S3.3", table).verdict == "verified"
    tightened = judge("S3.3", table, thresholds={"ratio": 4.0})
    assert tightened.verdict == "contradicted"
    assert tightened.thresholds == {"ratio": 4.0}
    assert "4.0 x mae kNN" in tightened.message


def test_unknown_threshold_is_rejected_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"S3.3 has no threshold gain.*ratio"):
        judge("S3.3", s3_3_table(0.06, 0.4), thresholds={"gain": 2})


def test_unknown_claim_and_meta_claims_are_rejected():
    with pytest.raises(ValueError, match="unknown claim id 'S9.9'"):
        judge("S9.9", s3_3_table(0.06, 0.4))
    with pytest.raises(ValueError, match="meta-claim"):
        judge("X.1", s3_3_table(0.06, 0.4))


def test_table_without_required_columns_is_a_clear_error():
    with pytest.raises(ValueError, match="lacks the column 'metric'"):
        judge("S3.3", pd.DataFrame({"model": ["mae"], "value": [1.0]}))


def test_result_round_trips_through_json():
    result = judge("S4.2", pd.DataFrame([
        {"metric": "miou", "model": "mae", "probe": "knn", "m": m, "value": v}
        for m, v in {0: 0.058, 10: 0.17, 200: 0.295, 500: 0.2}.items()]))
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["paper"] == {"0": 0.058, "10": 0.17, "200": 0.295}
    assert data["thresholds"]["argmax_range"] == [100, 300]
    assert ClaimResult.from_dict(data).verdict == result.verdict == "verified"
    assert data["rows"][0] == {"metric": "miou", "model": "mae", "probe": "knn", "m": 0, "value": 0.058}


def test_skipped_result_carries_its_reason():
    result = skipped("S6.6", "MOT17 not found under DATA/mot17: download it from motchallenge.net")
    assert result.verdict == "skipped" and "motchallenge" in result.skip_reason


def test_catalogue_matches_claims_md():
    ids = list(CLAIMS)
    assert ids[:13] == [f"S3.{i}" for i in range(1, 14)]
    assert ids[-2:] == ["X.1", "X.2"]
    assert len(ids) == 13 + 8 + 6 + 6 + 2
    assert CLAIMS["S4.2"].paper == {0: 0.058, 10: 0.170, 200: 0.295}
    assert CLAIMS["S6.3"].thresholds == {"tolerance": 0.02, "flat_d_from": 30, "flat_d_to": 60, "flat_max_change": 0.05}


def test_a_claims_own_rows_are_those_its_relation_read():
    from tests.test_claims_logic import paper_world

    world = paper_world()
    result = judge("S3.3", world)
    assert {(r["model"], r["probe"], r["n_train"]) for r in result.rows} == {("mae", "knn", 72), ("mae", "linear_bn", 72)}
    assert len(result.rows) + len(result.context_rows) == len(world)
