"""The views on the synthetic world, read through the real readers."""

from __future__ import annotations

import numpy as np

from harness.data import open_dataset
from harness.data.subsets import cityscapes_val_ids, fair1m_ids, video_ids
from harness.views import (
    Fair1mTileView,
    TileView,
    VideoFrameView,
    frame_rate,
    majority_patch_labels,
    tile_labels,
)


def test_cityscapes_tile_view(synthetic_world):
    ds = open_dataset("cityscapes", synthetic_world / "cityscapes", "val")
    ids = cityscapes_val_ids(ds, seed=0)
    view = TileView(ds, ids)
    assert len(view) == 3 * 32 and view.tiles_per_image == 32
    assert view[40].shape == (224, 224, 3) and view[40].dtype == np.uint8
    assert view.patch_labels(16).shape == (96, 14, 14) and view.patch_labels(14).shape == (96, 16, 16)
    labels = ds.labels_of(ids[1])
    np.testing.assert_array_equal(view.patch_labels(16)[32 + 5], majority_patch_labels(tile_labels(labels)[5], 16))
    assert view.key == TileView(ds, list(ids)).key != TileView(ds, ids, corruption="noise", level=10).key
    fractions = view.class_fractions(["road", "building", "vegetation"])
    assert fractions.shape == (3, 3) and (fractions[:, :2] > 0).all() and (fractions.sum(axis=1) < 1).all()


def test_ade20k_tile_view_resizes_to_672x448(synthetic_world):
    ds = open_dataset("ade20k", synthetic_world / "ade20k", "val")
    view = TileView(ds, ds.ids, tile=224, out=224, resize=(448, 672))
    assert len(view) == 6 * len(ds) and view[7].shape == (224, 224, 3)
    assert view.image(0).shape == (448, 672, 3)
    assert view.patch_labels(16).shape == (len(view), 14, 14)


def test_fair1m_tile_view_patches_lie_on_their_objects(synthetic_world):
    ds = open_dataset("fair1m", synthetic_world / "fair1m", "train")
    tiles = fair1m_ids(ds, per_category=2, seed=0)
    view = Fair1mTileView(ds, tiles)
    objects = view.patch_objects(16)
    assert objects["instance"].shape == (len(tiles), 14, 14)
    own_category = [(k // 2) in set(objects["fine"][k].ravel().tolist()) for k in range(len(tiles))]
    assert np.mean(own_category) > 0.8  # small vehicles may cover no patch by a quarter
    on_object = objects["instance"] >= 0
    np.testing.assert_array_equal(on_object, objects["super"] >= 0)
    # the same objects keep the same instance ids in a shifted copy (a 2 px shift can bring an
    # edge object into a border patch, so the maps agree almost everywhere, not everywhere)
    shifted = Fair1mTileView(ds, tiles, transform="shift", level=2).patch_objects(16)
    assert (shifted["instance"] == objects["instance"]).mean() > 0.95
    np.testing.assert_array_equal(view.source_index, np.arange(len(tiles)))
    assert len(set(view.source_image_index.tolist())) == len(set(t.split("@")[0] for t in tiles))


def test_video_frame_view_on_bdd_and_mot17(synthetic_world):
    for name, split in (("bdd100k_mot", "val"), ("mot17", "train")):
        ds = open_dataset(name, synthetic_world / name, split)
        view = VideoFrameView(ds, video_ids(ds), short_side=336, patch_size=16)
        height, width = view.size
        assert height == 336 and width % 16 == 0
        source_h, source_w = view.source_size
        assert abs(width - 336 * source_w / source_h) <= 8  # the aspect ratio, within half a patch
        assert len(view) == 80 and view[41].shape == (height, width, 3)
        assert VideoFrameView(ds, video_ids(ds), short_side=336, patch_size=14).size[1] % 14 == 0
        objects = view.frame_objects()
        boxes = np.concatenate([o.boxes for o in objects])
        assert (boxes >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        first_video = set(np.concatenate([o.track_ids for o in objects[:40]]).tolist())
        second_video = set(np.concatenate([o.track_ids for o in objects[40:]]).tolist())
        assert first_video and second_video and not first_video & second_video
    assert frame_rate(open_dataset("bdd100k_mot", synthetic_world / "bdd100k_mot", "val"), video_ids(
        open_dataset("bdd100k_mot", synthetic_world / "bdd100k_mot", "val"))[0]) == 5.0
    mot = open_dataset("mot17", synthetic_world / "mot17", "train")
    assert frame_rate(mot, video_ids(mot)[0]) == 30.0  # the synthetic seqinfo.ini's frameRate


def test_video_views_group_videos_by_frame_size_and_record_the_resolution(synthetic_world):
    from harness.profiles import PROFILES
    from harness.views.paper import video_views

    recorded = {}
    views, keys = video_views(PROFILES["paper"], "mot17", synthetic_world / "mot17", patch_size=14,
                              record=recorded.__setitem__)
    # one view per video (extracted transiently, one at a time); both synthetic sequences are 960x540
    assert [v.video_ids for v in views] == [["MOT17-02-FRCNN"], ["MOT17-04-FRCNN"]]
    assert keys == [v.key for v in views] and {v.size for v in views} == {(336, 602)}
    sizes = recorded["mot17/frame-sizes/patch-14"]
    assert sizes == [{"source_hw": [540, 960], "model_input_hw": [336, 602], "videos": 2, "fps": [30.0]}]
    other, _ = video_views(PROFILES["paper"], "mot17", synthetic_world / "mot17", patch_size=16)
    assert other[0].size == (336, 592) and other[0].key != views[0].key
