"""Views keep ahead of extraction: tiles (or frames) produced per second, from files on disk,
against ViT-B/16's CPU forward throughput measured in the same run on the same machine.

Run: pytest benchmarks/bench_views.py --benchmark-json=bench.json
Target: every view kind produces >= 5x as many images per second as ViT-B/16 consumes.
"""

from __future__ import annotations

import time

import pytest
import torch

from harness.config import torch_threads
from harness.data import open_dataset
from harness.data.subsets import fair1m_ids, video_ids
from harness.data.synthetic import write_world
from harness.views import Fair1mTileView, TileView, VideoFrameView

TARGET_RATIO = 5.0


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_world(tmp_path_factory.mktemp("world"), names=("cityscapes", "fair1m", "bdd100k_mot"))


@pytest.fixture(scope="module")
def vit_images_per_second() -> float:
    """ViT-B/16 (timm, random init: speed does not depend on the weights) forward passes."""
    import timm

    torch.set_num_threads(torch_threads())
    model = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    batch = torch.randn(8, 3, 224, 224)
    with torch.inference_mode():
        model.forward_features(batch)  # warm-up
        start, rounds = time.perf_counter(), 3
        for _ in range(rounds):
            model.forward_features(batch)
    return rounds * len(batch) / (time.perf_counter() - start)


def _drain(make_view) -> int:
    view = make_view()  # a fresh view each round: nothing cached from the last one
    for i in range(len(view)):
        view[i]
    return len(view)


CASES = ("cityscapes_tiles", "cityscapes_tiles_blur40", "cityscapes_tiles_band_noise4", "fair1m_tiles_shift2", "bdd_frames")


def _view_factory(world, case: str):
    """A function that builds a fresh view of `case` (datasets and subsets opened once)."""
    if case.startswith("cityscapes"):
        ds = open_dataset("cityscapes", world / "cityscapes", "val")
        corruption = {"cityscapes_tiles": (None, None), "cityscapes_tiles_blur40": ("blur", 40),
                      "cityscapes_tiles_band_noise4": ("band_noise", 4)}[case]
        return lambda: TileView(ds, ds.ids, corruption=corruption[0], level=corruption[1])
    if case == "fair1m_tiles_shift2":
        ds = open_dataset("fair1m", world / "fair1m", "train")
        tiles = fair1m_ids(ds, per_category=2)
        return lambda: Fair1mTileView(ds, tiles, transform="shift", level=2)
    ds = open_dataset("bdd100k_mot", world / "bdd100k_mot", "val")
    return lambda: VideoFrameView(ds, video_ids(ds))


@pytest.mark.benchmark(group="views")
@pytest.mark.parametrize("case", CASES)
def test_views_outpace_vit_b16_extraction(benchmark, world, vit_images_per_second, case):
    make_view = _view_factory(world, case)
    produced = benchmark.pedantic(_drain, args=(make_view,), rounds=3, iterations=1, warmup_rounds=0)
    views_per_second = produced / benchmark.stats.stats.mean
    ratio = views_per_second / vit_images_per_second
    benchmark.extra_info.update(views_per_second=views_per_second, vit_b16_images_per_second=vit_images_per_second,
                                ratio=ratio, target_ratio=TARGET_RATIO, images_per_round=produced)
    print(f"\n{case}: {views_per_second:.0f} views/s, ViT-B/16 {vit_images_per_second:.1f} img/s, ratio {ratio:.1f}")
    assert ratio >= TARGET_RATIO
