"""Claim X.3's library side: a seeded slice of every section's val views, extracted in bf16
and in fp32, compared by the section's own k-NN (nn_agreement per slice unit, metric_shift),
and ClaimsRun.precision_check on the smoke profile."""

from __future__ import annotations

import numpy as np
import pytest

from harness import devices
from harness.experiments import precision as slices
from harness.extract import embeddings
from harness.models import load
from harness.profiles import PROFILES
from harness.run import ClaimsRun, Unavailable
from harness.store import EmbeddingStore
from harness.views.paper import retrieval_views, segmentation_views, video_views

PROFILE = PROFILES["smoke"]


@pytest.fixture(scope="module")
def dino():
    return load("dino", random_init=True, smoke=True, device="cpu")


@pytest.fixture
def native_bf16(monkeypatch):
    """bf16 autocast allowed on this CPU whatever its instruction set (emulated if need be)."""
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)


def fp32_for_both(store, calls):
    """An embed that answers both precisions with the fp32 tokens: nothing may disagree."""

    def embed(backbone, view, layers, precision):
        calls.append((view.key, precision))
        return embeddings(backbone, view, store, layers=list(layers), progress=False)

    return embed


def perturbed(store, spoil):
    """bf16 answered with the fp32 tokens, except that `spoil(view_key)` images are replaced
    by other images' tokens: only the slice units holding them may disagree."""

    def embed(backbone, view, layers, precision):
        arrays = embeddings(backbone, view, store, layers=list(layers), progress=False)
        if precision == "fp32":
            return arrays
        out = {}
        for layer, array in arrays.items():
            array = np.array(array)
            for i in spoil(view):
                array[i] = array[(i + 1) % len(array)][::-1]  # another image's tokens, flipped
            out[layer] = array
        return out

    return embed


def test_slice_view_is_a_view_of_its_own_and_the_choice_is_seeded():
    from harness.extract import ArrayView

    images = np.arange(5 * 4 * 4 * 3, dtype=np.uint8).reshape(5, 4, 4, 3)
    view = ArrayView("base", images, [f"i{k}" for k in range(5)])
    part = slices.SliceView.of(view, [3, 1])
    assert len(part) == 2 and part.ids == ("i3", "i1") and np.array_equal(part[0], images[3])
    assert part.key.startswith("base/slice-") and part.key != slices.SliceView.of(view, [1, 3]).key
    assert np.array_equal(slices.choose(100, 8, "x"), slices.choose(100, 8, "x"))
    assert not np.array_equal(slices.choose(100, 8, "x"), slices.choose(100, 8, "y"))
    assert list(slices.choose(3, 8, "x")) == [0, 1, 2]
    with pytest.raises(ValueError, match="empty slice"):
        slices.SliceView.of(view, [])


def test_segmentation_slice(dino, synthetic_world, tmp_path):
    views, _ = segmentation_views(PROFILE, "cityscapes", synthetic_world / "cityscapes", False)
    store, calls, recorded = EmbeddingStore(tmp_path), [], {}
    rows = slices.segmentation_agreement("dino", dino, views, fp32_for_both(store, calls), size=3,
                                         record=recorded.__setitem__)
    agreement, shift = rows
    assert (agreement.metric, agreement.value, shift.metric, shift.value) == ("nn_agreement", 1.0, "metric_shift", 0.0)
    n_val = int(views.val.source_index.max()) + 1
    assert n_val >= 2 and agreement.params == {"dataset": "cityscapes"}
    assert agreement.units.shape == (min(3, n_val), 2)
    detail = recorded["precision_check"]["cityscapes"]["dino"]
    assert len(detail["val_images"]) == min(3, n_val) and detail["queries"] == agreement.units[:, 1].sum()
    assert sorted({p for _, p in calls}) == ["bf16", "fp32"] and all("/slice-" in key for key, _ in calls)

    # The first chosen val image's tiles spoiled in bf16: its unit disagrees, no other does.
    chosen = slices.choose(n_val, 3, "cityscapes")
    first_tiles = np.flatnonzero(views.val.source_index == chosen[0])

    def spoil(view):
        return range(len(first_tiles)) if view.key.startswith(views.val.key) else ()

    agreement, shift = slices.segmentation_agreement("dino", dino, views, perturbed(store, spoil), size=3)
    units = agreement.units
    assert units[0, 0] < units[0, 1] and np.array_equal(units[1:, 0], units[1:, 1])
    assert agreement.value == pytest.approx(units[:, 0].sum() / units[:, 1].sum()) and agreement.value < 1
    assert shift.value > 0


def test_retrieval_slice(dino, synthetic_world, tmp_path):
    views, _ = retrieval_views(PROFILE, synthetic_world / "fair1m")
    store = EmbeddingStore(tmp_path)
    agreement, shift = slices.retrieval_agreement("dino", dino, views, fp32_for_both(store, []), size=4)
    assert (agreement.value, shift.value) == (1.0, 0.0) and agreement.units.shape == (4, 2)
    assert agreement.units[:, 1].sum() > 0

    def spoil(view):  # the second sliced tile of every transformed view
        return [1] if "/slice-" in view.key else ()

    agreement, _ = slices.retrieval_agreement("dino", dino, views, perturbed(store, spoil), size=4)
    units = agreement.units
    assert units[1, 0] < units[1, 1]
    assert np.array_equal(np.delete(units[:, 0], 1), np.delete(units[:, 1], 1))


def test_association_slice(dino, synthetic_world, tmp_path):
    views, _ = video_views(PROFILE, "bdd100k_mot", synthetic_world / "bdd100k_mot", dino.patch_size)
    store = EmbeddingStore(tmp_path)
    gaps = (1, 2)
    agreement, shift = slices.association_agreement("dino", dino, views, "bdd100k_mot",
                                                    fp32_for_both(store, []), gaps, size=2)
    assert (agreement.value, shift.value) == (1.0, 0.0) and agreement.units[:, 1].min() > 0

    first: list[str] = []

    def spoil(view):  # every frame of the slice's first video (one view per video)
        first[:] = first or [view.key]
        return np.arange(len(view)) if view.key == first[0] else np.zeros(0, int)

    agreement, shift = slices.association_agreement("dino", dino, views, "bdd100k_mot",
                                                    perturbed(store, spoil), gaps, size=2)
    units = agreement.units
    assert units[0, 0] < units[0, 1] and units[1, 0] == units[1, 1]


@pytest.fixture
def smoke_run(tmp_path, synthetic_world):
    """A smoke ClaimsRun whose cache holds the test run's synthetic world (not written again)."""
    world = tmp_path / "cache" / "synthetic-world" / "seed0"
    world.parent.mkdir(parents=True)
    world.symlink_to(synthetic_world, target_is_directory=True)

    def make(precision, recorded):
        return ClaimsRun(profile=PROFILE, models=("dino",), cache_dir=tmp_path / "cache", precision=precision,
                         record=lambda key, value: recorded.append((key, value)))

    return make


def test_precision_check_skips_on_fp32_runs(smoke_run):
    with pytest.raises(Unavailable, match="extracts in fp32 only"):
        smoke_run("fp32", []).precision_check()


def test_precision_check_on_a_bf16_run(smoke_run, native_bf16, monkeypatch):
    monkeypatch.setattr(slices, "SLICE", {"segmentation": 2, "retrieval": 4, "association": 1})
    recorded = []
    run = smoke_run("bf16", recorded)
    measured = run.precision_check()
    agreement = measured.grid("nn_agreement", index="dataset")
    shift = measured.grid("metric_shift", index="dataset")
    datasets = {"cityscapes", "ade20k", "fair1m", "bdd100k_mot", "mot17"}
    assert set(agreement.index) == datasets == set(shift.index) and list(agreement.columns) == ["dino"]
    assert ((agreement >= 0) & (agreement <= 1)).all().all() and (shift >= 0).all().all()
    assert ("precision", "bf16") in recorded
    keys = {record["key"]["precision"] for record in run.store().builds()}
    assert keys == {"bf16", "fp32"}  # both precisions extracted, as separate entries
    # The measurement cache keeps bf16 numbers apart: the second call reads them back.
    again = smoke_run("bf16", []).precision_check()
    assert again.grid("nn_agreement", index="dataset").equals(agreement)


def test_the_claims_option_reaches_the_run(tmp_path):
    """--claims-precision bf16 -> RunOptions.precision -> ClaimsRun.precision (what X.3 reads)."""
    from types import SimpleNamespace

    from harness.plugin.options import RunOptions

    options = RunOptions(profile="smoke", models=("dino",), weights={}, added={}, data_root=None,
                         cache_dir=str(tmp_path), report_dir=str(tmp_path), baseline=None, bootstrap=0,
                         train_seeds=1, tolerance=0.02, precision="bf16")
    assert ClaimsRun.from_options(options).precision == "bf16"
    assert ClaimsRun.from_options(SimpleNamespace(**{**options.as_dict(), "precision": "fp32"})).precision == "fp32"
