"""`harness plan` against the run it plans: the real sections run on a slice, instrumented,
and every unit of work the plan counts is found exactly in the run: each extraction (images,
layers, store or scratch), each exact 1-NN search (queries x base x dim), each linear-probe
fit (rows, width, classes, BatchNorm), S6's frame pairs and poolings; the store's files on
disk are the plan's bytes to the byte, and the scratch peak the plan's.

Work units, not seconds: this machine is shared and its speed varies by more than the
estimate's tolerance, so the time check (within 30%) is benchmarks/bench_plan.py.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from harness import plan as planning
from harness.data import synthetic
from harness.data.synthetic import WorldSize, write_world
from harness.profiles import PROFILES
from harness.run import ClaimsRun

# The paper's images (1024x2048 Cityscapes frames, 224 px tiles) with fewer of them: two
# train cities and one val city, two training sizes, one level of each corruption (every
# level is the same work per view; benchmarks/bench_plan.py times a larger slice).
SLICE_WORLD = WorldSize(city_train=("aachen", "bochum"), city_val=("frankfurt",),
                        city_train_per_city=2, city_val_per_city=1)
SLICE = replace(PROFILES["paper"], name="slice", untrained=True, cityscapes_train_per_city=(1, 2),
                cityscapes_val_per_city=1,
                corruption_levels=(("blur", (20,)), ("noise", (20,)), ("band_noise", (2,))))


class Recorder:
    """Wraps the run's work functions and records each call's size."""

    def __init__(self, monkeypatch, store_root: Path):
        import harness.analyses as analyses
        import harness.analyses.association as association
        import harness.analyses.retrieval as retrieval
        import harness.extract as extract
        import harness.probes.knn as knn
        from harness.probes.linear import LinearProbe

        self.extractions, self.knn, self.fits, self.pairs, self.pools = Counter(), Counter(), Counter(), 0, 0
        real_search, real_fit, real_extract = knn.knn_search, LinearProbe.fit, extract.extract_into
        real_nearest, real_pool = association._nearest_exact, analyses.pool_boxes

        def search(base_x, query_x, *args, **kwargs):
            self.knn[(len(query_x), len(base_x), np.shape(base_x)[1])] += 1
            return real_search(base_x, query_x, *args, **kwargs)

        def fit(probe, x, y, *args, **kwargs):
            self.fits[(len(x), np.shape(x)[1], kwargs.get("num_classes"), probe.batchnorm)] += 1
            return real_fit(probe, x, y, *args, **kwargs)

        def extract_into(backbone, view, outputs, *args, **kwargs):
            stored = str(next(iter(outputs.values())).filename).startswith(str(store_root))
            self.extractions[(len(view), tuple(sorted(outputs)), stored)] += 1
            return real_extract(backbone, view, outputs, *args, **kwargs)

        def nearest(query, target):
            self.pairs += 1
            return real_nearest(query, target)

        def pool(*args, **kwargs):
            self.pools += 1
            return real_pool(*args, **kwargs)

        monkeypatch.setattr(knn, "knn_search", search)
        monkeypatch.setattr(retrieval, "knn_search", search)
        monkeypatch.setattr(LinearProbe, "fit", fit)
        monkeypatch.setattr(extract, "extract_into", extract_into)
        monkeypatch.setattr(association, "_nearest_exact", nearest)
        monkeypatch.setattr(analyses, "pool_boxes", pool)


def planned(work: list[planning.SectionWork]):
    extractions = Counter((e.images, e.layers, e.persisted) for w in work for e in w.extractions if e.runs)
    searches = Counter((k.queries, k.base, k.dim) for w in work for k in w.knn)
    fits = Counter((p.rows, p.dim, p.classes, p.batchnorm) for w in work for p in w.probes)
    return extractions, searches, fits


def store_files(root: Path) -> tuple[int, list[int]]:
    arrays = sum(p.stat().st_size for p in root.rglob("layer-*.npy"))
    return arrays, [p.stat().st_size for p in root.rglob("layer-*.json")]


@pytest.fixture(scope="module")
def slice_world(tmp_path_factory) -> Path:
    return write_world(tmp_path_factory.mktemp("slice"), seed=0, size=SLICE_WORLD, names=("cityscapes",), jobs=2)


def test_the_plan_counts_the_layer_sweep_section_exactly(slice_world, tmp_path, monkeypatch):
    """S3/S4 on Cityscapes at the paper's image sizes with the smoke MAE (the most work: its
    pruning curve and BatchNorm contrast): the plan, then the real section."""
    monkeypatch.setitem(PROFILES, "slice", SLICE)
    monkeypatch.setattr(synthetic, "ensure_world", lambda cache_dir, seed=0: slice_world)
    cache = tmp_path / "cache"
    plan = planning.build_plan(planning.PlanOptions(profile="slice", models=("mae",), cache_dir=cache,
                                                    sections=("segmentation/cityscapes",)))
    assert [(w.model, w.section) for w in plan.work] == [("mae", "segmentation/cityscapes")]
    assert plan.counts_from["cityscapes"] == f"data: {slice_world / 'cityscapes'}"
    (work,) = plan.work
    assert work.source_images == 4 + 1 and work.views == 2 + 1 + 4  # train, val, the sweep's middle subset, corruptions (and the literal band noise)

    recorder = Recorder(monkeypatch, cache / "embeddings")
    run = ClaimsRun(profile=SLICE, models=("mae",), cache_dir=cache)
    section = run.segmentation("cityscapes", full=True)
    assert not section.failed and len(section.measurements) > 100

    extractions, searches, fits = planned(plan.work)
    assert recorder.extractions == extractions
    assert recorder.knn == searches and sum(searches.values()) == len(work.knn) > 0
    assert recorder.fits == fits and sum(fits.values()) == len(work.probes) > 0
    arrays, sidecars = store_files(cache / "embeddings")
    assert arrays == sum(e.bytes for e in work.extractions if e.persisted)  # to the byte
    assert len(sidecars) == 2 and all(size <= planning.SIDECAR_BYTES for size in sidecars)
    assert work.persisted_bytes == arrays + 2 * planning.SIDECAR_BYTES
    assert run._scratch.peak_bytes == work.scratch_peak > 0  # the sweep's one group: 11 layers
    assert run._scratch.live_bytes == 0 and list((cache / "scratch").iterdir()) == []
    # the store now holds it all: a second plan finds it and has nothing to write
    again = planning.build_plan(planning.PlanOptions(profile="slice", models=("mae",), cache_dir=cache,
                                                     sections=("segmentation/cityscapes",)))
    assert again.cached_bytes == again.persisted_bytes == work.persisted_bytes and again.bytes_to_write == 0
    assert all(e.cached for e in again.work[0].extractions if e.persisted)


def test_the_plan_counts_retrieval_and_association_exactly(synthetic_world, tmp_path, monkeypatch):
    """S5 (with MAE's pruned variant) and S6 (one view per video, two poolings, a search per
    frame pair with objects on both sides) on the smoke world, smoke models."""
    monkeypatch.setattr(synthetic, "ensure_world", lambda cache_dir, seed=0: synthetic_world)
    smoke = replace(PROFILES["smoke"], extra_models=())
    monkeypatch.setitem(PROFILES, "smoke-plain", replace(smoke, name="smoke-plain"))
    cache = tmp_path / "cache"
    models = ("dino", "dinov2", "mae")
    sections = ("retrieval/fair1m", "association/mot17")
    plan = planning.build_plan(planning.PlanOptions(profile="smoke-plain", models=models, cache_dir=cache,
                                                    sections=sections))
    assert sorted({w.section for w in plan.work}) == sorted(sections)

    recorder = Recorder(monkeypatch, cache / "embeddings")
    run = ClaimsRun(profile=PROFILES["smoke-plain"], models=models, cache_dir=cache)
    retrieval = run.retrieval()
    association = run.association("mot17")
    assert not retrieval.failed and not association.failed

    extractions, searches, _ = planned(plan.work)
    assert recorder.extractions == extractions
    assert recorder.knn == searches
    pairing = [w.pairing for w in plan.work if w.pairing]
    assert recorder.pairs == sum(p.pairs for p in pairing) > 0
    assert recorder.pools == sum(p.pooled_frames for p in pairing)
    arrays, _ = store_files(cache / "embeddings")
    assert arrays == sum(e.bytes for w in plan.work for e in w.extractions if e.persisted and e.first)
    assert run._scratch.peak_bytes <= plan.scratch_peak
