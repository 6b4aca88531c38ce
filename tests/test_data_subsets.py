"""The paper's subsets: deterministic from the seed, nested, robust to a small world."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from harness.data import open_dataset
from harness.data.subsets import (
    Subset,
    ade20k_train_ids,
    ade20k_val_ids,
    cityscapes_train_ids,
    cityscapes_val_ids,
    fair1m_ids,
    video_ids,
)
from harness.views import parse_tile_id


@pytest.fixture(scope="module")
def cityscapes_train(synthetic_world):
    return open_dataset("cityscapes", synthetic_world / "cityscapes", "train")


def test_cityscapes_train_subsets_are_nested_and_reproducible(cityscapes_train):
    ds = cityscapes_train
    two, four, eight = (cityscapes_train_ids(ds, k, seed=0) for k in (2, 4, 8))
    assert (len(two), len(four), len(eight)) == (6, 12, 24)  # 3 synthetic cities
    assert set(two) < set(four) < set(eight) and not eight.notes
    assert all(sum(ds.group_of(i) == city for i in four) == 4 for city in ds.cities)
    assert cityscapes_train_ids(ds, 4, seed=0) == four
    assert cityscapes_train_ids(ds, 4, seed=1) != four
    record = four.as_record()
    assert record["ids"] == list(four) and record["notes"] == []


def test_train_seed_zero_is_the_original_draw_and_other_seeds_redraw_nested_subsets(cityscapes_train, synthetic_world):
    from harness.config import ROOT_SEED, rng

    ds = cityscapes_train
    # the draw as it was before train seeds: per city, the first k of one seeded permutation
    original = []
    for city in sorted(ds.cities):
        ids = sorted(i for i in ds.ids if ds.group_of(i) == city)
        order = rng("subset", ds.name, ds.split, city, root=ROOT_SEED).permutation(len(ids))
        original += [ids[i] for i in order[:4]]
    assert list(cityscapes_train_ids(ds, 4)) == original
    assert cityscapes_train_ids(ds, 4, train_seed=0) == cityscapes_train_ids(ds, 4)
    redrawn = {k: cityscapes_train_ids(ds, k, train_seed=1) for k in (2, 4)}
    assert redrawn[4] != cityscapes_train_ids(ds, 4)
    assert set(redrawn[2]) < set(redrawn[4])  # still nested
    assert all(sum(ds.group_of(i) == city for i in redrawn[4]) == 4 for city in ds.cities)
    assert cityscapes_train_ids(ds, 4, train_seed=2) not in (redrawn[4], cityscapes_train_ids(ds, 4))
    ade = open_dataset("ade20k", synthetic_world / "ade20k", "train")
    assert ade20k_train_ids(ade, per_class=1, train_seed=0) == ade20k_train_ids(ade, per_class=1)
    assert ade20k_train_ids(ade, per_class=1, train_seed=3) != ade20k_train_ids(ade, per_class=1)


def test_subsets_take_what_a_small_dataset_has_and_say_so(cityscapes_train, synthetic_world):
    more = cityscapes_train_ids(cityscapes_train, 10, seed=0)
    assert len(more) == 24 and len(more.notes) == 3 and "aachen: 8 images available, 10 asked" in more.notes[0]
    val = cityscapes_val_ids(open_dataset("cityscapes", synthetic_world / "cityscapes", "val"), seed=0)
    assert len(val) == 3 and "frankfurt" in val.notes[0]


def test_ade20k_subsets(synthetic_world):
    train = open_dataset("ade20k", synthetic_world / "ade20k", "train")
    chosen = ade20k_train_ids(train, per_class=4, seed=0)
    assert len(set(chosen)) == len(chosen) > 0
    assert chosen.notes and "fewer than 4 images" in chosen.notes[0]  # 20 images cannot cover 150 classes
    assert ade20k_train_ids(train, per_class=4, seed=0) == chosen
    # every chosen image shows at least one class
    assert all((train.labels_of(i) != 255).any() for i in chosen)
    # per_class=1 stops as soon as each class present is covered: never more images than classes seen
    one = ade20k_train_ids(train, per_class=1, seed=0)
    seen = set().union(*(set(np.unique(train.labels_of(i)).tolist()) for i in train.ids)) - {255}
    assert len(one) <= len(seen)
    val = open_dataset("ade20k", synthetic_world / "ade20k", "val")
    five, six = ade20k_val_ids(val, n=5, seed=0), ade20k_val_ids(val, n=6, seed=0)
    assert set(five) < set(six) and not five.notes
    assert len(ade20k_val_ids(val, seed=0)) == 8 and "300 asked" in ade20k_val_ids(val, seed=0).notes[0]


def test_fair1m_tiles_cover_their_category_without_overlap(synthetic_world):
    ds = open_dataset("fair1m", synthetic_world / "fair1m", "train")
    tiles = fair1m_ids(ds, per_category=2, seed=0)
    assert len(tiles) == 2 * 37 and not tiles.notes  # every category has 3 objects in the world
    assert fair1m_ids(ds, per_category=2, seed=0) == tiles
    by_image: dict[str, list] = {}
    for k, tile_id in enumerate(tiles):
        sample_id, y0, x0 = parse_tile_id(tile_id)
        category = ds.class_names[k // 2]  # tiles are listed category by category
        label = ds.label(ds.index_of(sample_id))
        centres = [o.polygon.mean(axis=0) for o in label.objects if o.category == category]
        assert any(x0 <= cx < x0 + 224 and y0 <= cy < y0 + 224 for cx, cy in centres)
        assert 0 <= y0 <= label.height - 224 and 0 <= x0 <= label.width - 224
        by_image.setdefault(sample_id, []).append((y0, x0))
    for origins in by_image.values():
        for a in range(len(origins)):
            for b in range(a):
                assert abs(origins[a][0] - origins[b][0]) >= 224 or abs(origins[a][1] - origins[b][1]) >= 224
    eight = fair1m_ids(ds, per_category=8, seed=0)
    assert eight.notes and len(eight) < 8 * 37


def test_video_ids_keep_one_copy_of_each_mot17_sequence(synthetic_world):
    fake = SimpleNamespace(name="mot17", split="train",
                           videos=["MOT17-02-DPM", "MOT17-02-FRCNN", "MOT17-02-SDP", "MOT17-05-DPM", "MOT17-05-SDP"])
    assert video_ids(fake) == ("MOT17-02-FRCNN", "MOT17-05-DPM")
    bdd = open_dataset("bdd100k_mot", synthetic_world / "bdd100k_mot", "val")
    assert video_ids(bdd) == tuple(bdd.videos)
    one = video_ids(bdd, n=1, seed=0)
    assert len(one) == 1 and one == video_ids(bdd, n=1, seed=0) and set(one) < set(bdd.videos)
    assert video_ids(bdd, n=5).notes
    assert isinstance(one, Subset)
