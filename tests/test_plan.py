"""`harness plan` as a user runs it: the paper profile's bounded store and its time on an
H100-class GPU from the stated figures, the table and the JSON, the exit status when the
store would not fit, and a calibration of this machine. (Every unit of work the plan counts
is checked against the real run in test_plan_work.py; its time against a measured slice in
benchmarks/bench_plan.py.)"""

from __future__ import annotations

import json

import pytest

from harness import calibration
from harness import plan as planning
from harness.cli import main

STORE_BUDGET = 25e9  # bytes: the paper profile's persisted store for the six models (and Scale-MAE)
H100_BUDGET_S = 3600.0  # the paper profile on one H100-class GPU


def test_the_paper_profile_keeps_its_store_bounded_and_plans_under_an_hour_on_an_h100(tmp_path):
    plan = planning.build_plan(planning.PlanOptions(profile="paper", cache_dir=tmp_path))
    assert {"dino", "dinov2", "mae", "simmim", "ibot", "supervised"} <= set(plan.shapes)
    assert all(counts.startswith("nominal") for counts in plan.counts_from.values())  # no data root
    assert 10e9 < plan.persisted_bytes <= STORE_BUDGET
    # the sweep's other layers, corruptions and frames never reach the store
    assert sum(w.transient_bytes for w in plan.work) > 10 * plan.persisted_bytes
    planning.estimate(plan, calibration.assumed("h100"))  # the stated figures; host: the defaults
    wall = planning.wall_seconds(plan)
    gpu = sum(w.time["gpu_busy"] for w in plan.work)
    assert 0 < gpu < wall <= H100_BUDGET_S


def test_plan_prints_the_table_and_writes_the_json(tmp_path, capsys):
    out_json = tmp_path / "plan.json"
    args = ["plan", "--profile", "paper", "--models", "dino,mae", "--assume", "h100", "--no-calibrate",
            "--cache-dir", str(tmp_path / "cache"), "--json", str(out_json)]
    assert main(args) == 0
    out = capsys.readouterr().out
    rows = [line.split()[:2] for line in out.splitlines() if line.startswith(("dino ", "mae "))]
    assert ["dino", "segmentation/cityscapes"] in rows and ["mae", "reconstruction"] in rows
    assert any(line.startswith("total ") for line in out.splitlines())
    assert "time on NVIDIA H100 SXM5 80GB (assumed figures)" in out and "fits" in out
    record = json.loads(out_json.read_text())
    assert len(record["sections"]) == len(rows) and record["options"]["models"] == ["dino", "mae"]
    assert record["totals"]["persisted_bytes"] == sum(s["persisted_bytes"] for s in record["sections"])
    assert record["estimates"]["assumed"]["wall_seconds"] > 0


def test_plan_exits_1_when_the_store_would_not_fit(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(planning, "free_bytes", lambda folder: 10**6)
    args = ["plan", "--profile", "paper", "--models", "dino", "--no-calibrate", "--cache-dir", str(tmp_path)]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "total " in captured.out  # the table first, then the error
    assert "the claims run needs " in captured.err and str(tmp_path / "embeddings") in captured.err


def test_a_calibration_of_this_machine_measures_every_part_it_uses(tmp_path):
    """The smoke profile's FAIR1M and MOT17 sections with dino: forward rate, matmul, 1-NN,
    reading each kind of view, S6's pairing; then an estimate from them."""
    plan = planning.build_plan(planning.PlanOptions(profile="smoke", models=("dino",), cache_dir=tmp_path,
                                                    sections=("retrieval/fair1m", "association/mot17"),
                                                    workers=1))
    figures = calibration.measure(plan, "cpu")
    assert figures.kind == "cpu" and figures.forward and all(ips > 0 for ips, _ in figures.forward.values())
    assert figures.matmul_tflops["fp32"] > 0 and figures.knn_flops_per_second > 0
    kinds = {e.read_kind for w in plan.work for e in w.extractions if e.runs}
    assert kinds <= set(figures.read) and figures.pair_seconds > 0
    assert all(how.startswith("measured") for part, how in figures.how.items() if part != "reading")
    planning.estimate(plan, figures)
    assert all(w.time["extract"] > 0 for w in plan.work)
    assert planning.wall_seconds(plan) == pytest.approx(sum(sum(v for k, v in w.time.items() if k != "gpu_busy")
                                                            for w in plan.work))  # a CPU: serial
