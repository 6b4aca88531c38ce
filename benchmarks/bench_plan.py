"""`harness plan`'s time estimate against a measured run of a slice.

Run: pytest benchmarks/bench_plan.py -p no:xdist --benchmark-json=bench-plan.json -s

The slice: the paper's Cityscapes images (1024x2048 frames, 224 px tiles, every corruption)
from `harness synth --scale paper`'s world with fewer cities and images, and the smoke
models (the paper's patch sizes and layer count at a small width) so it runs on 2 cores.
The plan is built and calibrated on this machine first (`calibration.measure`, as `harness
plan` does), then the section runs for real; the ratio measured / estimated is the figure.

Target: the estimate within +-30% of the measured time (0.7 <= ratio <= 1.3); the bytes are
checked exactly, together with every unit of work, by tests/test_plan_work.py.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from harness import calibration
from harness import plan as planning
from harness.data import synthetic
from harness.data.synthetic import WorldSize, write_world
from harness.profiles import PROFILES
from harness.run import ClaimsRun

TOLERANCE = 0.30
MODELS = ("dino", "mae")  # the contrastive and the MIM path (MAE adds the pruning curve and BN fits)
SLICE_WORLD = WorldSize(city_train=("aachen", "bochum", "bremen"), city_val=("frankfurt",),
                        city_train_per_city=3, city_val_per_city=2)
SLICE = replace(PROFILES["paper"], name="slice", untrained=True, cityscapes_train_per_city=(1, 2, 3),
                cityscapes_val_per_city=2)
SECTION = "segmentation/cityscapes"


def test_plan_estimate_within_30_percent_of_the_measured_slice(benchmark, tmp_path, monkeypatch):
    world = write_world(tmp_path / "world", seed=0, size=SLICE_WORLD, names=("cityscapes",), jobs=2)
    monkeypatch.setitem(PROFILES, "slice", SLICE)
    monkeypatch.setattr(synthetic, "ensure_world", lambda cache_dir, seed=0: world)
    cache = tmp_path / "cache"

    plan = planning.build_plan(planning.PlanOptions(profile="slice", models=MODELS, cache_dir=cache,
                                                    sections=(SECTION,), workers=1))
    start = time.perf_counter()
    figures = calibration.measure(plan)
    calibrate_s = time.perf_counter() - start
    planning.estimate(plan, figures)
    estimated = planning.wall_seconds(plan)

    run = ClaimsRun(profile=SLICE, models=MODELS, cache_dir=cache)
    start = time.perf_counter()
    section = run.segmentation("cityscapes", full=True)
    measured = time.perf_counter() - start
    assert not section.failed and section.rows

    ratio = measured / estimated
    parts = {part: sum(w.time.get(part, 0.0) for w in plan.work) for part in ("extract", "knn", "probes")}
    benchmark.extra_info.update({"measured_s": measured, "estimated_s": estimated, "ratio": ratio,
                                 "calibration_s": calibrate_s, "device": figures.device,
                                 "estimate_parts_s": parts, "models": list(MODELS), "section": SECTION})
    benchmark.pedantic(lambda: None, rounds=1)  # the figures above are the measurement
    print(f"\n{SECTION} slice, {', '.join(MODELS)} on {figures.device}: estimated {estimated:.1f} s "
          f"({', '.join(f'{k} {v:.1f} s' for k, v in parts.items())}), measured {measured:.1f} s, "
          f"ratio {ratio:.2f} (calibration {calibrate_s:.1f} s)")
    assert 1 - TOLERANCE <= ratio <= 1 + TOLERANCE, f"measured {measured:.1f} s vs estimated {estimated:.1f} s"


@pytest.fixture(autouse=True)
def _one_worker(monkeypatch):
    """The slice runs in this process alone: all cores to its torch threads, as the plan assumes."""
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
