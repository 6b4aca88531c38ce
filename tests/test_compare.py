"""Comparing two claims reports: verdict changes, metric deltas, regressions and the CLI."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.claims import judge
from harness.cli import main
from harness.report import (
    SCHEMA_VERSION,
    build_report,
    compare_reports,
    find_regressions,
    render_comparison,
    write_report,
)
from harness.report.compare import higher_is_better, report_rows, row_key

ENVIRONMENT = {"versions": {}, "git": None, "device": "cpu", "python": "3"}


def run_report(mae_linear: float, variance_ratio: float = 50.0, background: float = 0.5) -> dict:
    s33 = pd.DataFrame([
        {"metric": "miou", "model": "mae", "probe": "knn", "n_train": 72, "value": 0.06},
        {"metric": "miou", "model": "mae", "probe": "linear_bn", "n_train": 72, "value": mae_linear}])
    s41 = pd.DataFrame([{"metric": "variance_ratio", "model": m, "value": v}
                        for m, v in {"mae": variance_ratio, "simmim": 30, "dino": 2, "supervised": 1.5}.items()])
    s51 = pd.DataFrame([{"metric": "rate", "model": m, "outcome": "background", "corruption": "noise", "level": 10,
                         "value": background} for m in ("mae",)])
    results = [judge("S3.3", s33), judge("S4.1", s41), judge("S5.1", s51)]
    rows = pd.concat([s33, s41, s51]).to_dict(orient="records")
    return build_report(results, run={"profile": "paper"}, rows=rows, environment=ENVIRONMENT)


def test_row_key_ignores_absent_parameters_and_number_types():
    a = {"metric": "miou", "model": "mae", "n_train": 72, "layer": None, "value": 0.3}
    b = {"metric": "miou", "model": "mae", "n_train": 72.0, "value": 0.4}
    assert row_key(a) == row_key(b)
    assert row_key(a) != row_key({**b, "probe": "knn"})


@pytest.mark.parametrize("row, better", [
    ({"metric": "miou"}, True), ({"metric": "instance_acc"}, True), ({"metric": "r2"}, True),
    ({"metric": "rate", "outcome": "original"}, True), ({"metric": "rate", "outcome": "background"}, False),
    ({"metric": "recon_mse"}, False), ({"metric": "variance_ratio"}, False), ({"metric": "majority_fraction"}, False),
])
def test_which_metrics_can_regress(row, better):
    assert higher_is_better(row_key({"model": "m", **row})) is better


def test_drop_beyond_tolerance_is_a_regression_and_within_is_not():
    old, new = run_report(0.40), run_report(0.30)
    comparison = compare_reports(old, new, tolerance=0.02)
    assert [(r["claim"], r["old"], r["new"]) for r in comparison.regressions] == [("S3.3", 0.40, 0.30)]
    assert compare_reports(old, run_report(0.39), tolerance=0.02).regressions == []
    assert compare_reports(old, new, tolerance=0.2).regressions == []
    assert compare_reports(old, run_report(0.60)).regressions == []  # a gain is no regression


def test_descriptive_metrics_never_regress():
    comparison = compare_reports(run_report(0.4, variance_ratio=50, background=0.5),
                                 run_report(0.4, variance_ratio=5, background=0.1))
    assert comparison.regressions == []
    changed = {r["metric"].split(" ")[0] for r in comparison.rows if r["delta"]}
    assert changed == {"variance_ratio", "rate"}


def test_verdict_changes_are_listed():
    comparison = compare_reports(run_report(0.40), run_report(0.10))  # 0.10 < 2.5 x 0.06
    s33 = next(v for v in comparison.verdicts if v["id"] == "S3.3")
    assert (s33["old"], s33["new"], s33["changed"]) == ("verified", "contradicted", True)
    text = render_comparison(comparison)
    assert "REGRESSION" in text and "1 regression found." in text
    assert "miou mae linear_bn n_train=72" in text


def test_find_regressions_against_a_baseline_names_the_row():
    baseline = report_rows(run_report(0.40))
    found = find_regressions([{"metric": "miou", "model": "mae", "probe": "linear_bn", "n_train": 72,
                               "value": 0.2}], baseline, tolerance=0.02)
    assert [str(r) for r in found] == ["miou mae linear_bn n_train=72: 0.4000 -> 0.2000 (drop 0.2000)"]


def test_compare_command_exit_codes(tmp_path, capsys):
    a = write_report(run_report(0.40), tmp_path / "a", json_only=True)[0]
    b = write_report(run_report(0.30), tmp_path / "b", json_only=True)[0]
    assert main(["compare", str(a), str(a)]) == 0
    assert "No regression found." in capsys.readouterr().out
    assert main(["compare", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "0.4000" in out and "0.3000" in out and "-0.1000" in out and "REGRESSION" in out
    assert main(["compare", str(a), str(b), "--tolerance", "0.5"]) == 0
    capsys.readouterr()
    other = tmp_path / "v99.json"
    other.write_text(json.dumps({"schema_version": 99, "claims": []}))
    assert main(["compare", str(other), str(b)]) == 2
    assert f"schema_version 99; this harness reads version {SCHEMA_VERSION}" in capsys.readouterr().err
