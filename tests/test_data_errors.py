"""Bad input: every reader fails with an error that names the file and what was expected."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from harness.data import (
    DATASET_NAMES,
    HOW_TO_GET,
    DatasetFormatError,
    DatasetLayoutError,
    check_layout,
    open_dataset,
)
from harness.data.cityscapes import TRAIN_CLASSES, label_ids_to_train_ids

# The official cityscapesScripts labels.py table, id -> trainId for all 34 ids (255 = ignore),
# written out independently of the reader's (name, labelId) list.
OFFICIAL_TRAIN_ID = [255, 255, 255, 255, 255, 255, 255, 0, 1, 255, 255, 2, 3, 4, 255, 255, 255,
                     5, 255, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 255, 255, 16, 17, 18]


def test_label_id_to_train_id_matches_official_table():
    np.testing.assert_array_equal(label_ids_to_train_ids(np.arange(34, dtype=np.uint8)), OFFICIAL_TRAIN_ID)
    assert label_ids_to_train_ids(np.array([34, 200, 255], dtype=np.uint8)).tolist() == [255, 255, 255]
    assert [name for name, _ in TRAIN_CLASSES][13] == "car" and TRAIN_CLASSES[15] == ("bus", 28)


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_missing_folder_names_expected_path_and_how_to_get(name, tmp_path):
    with pytest.raises(DatasetLayoutError) as err:
        check_layout(name, tmp_path / name)
    message = str(err.value)
    assert str(tmp_path / name) in message and HOW_TO_GET[name] in message and "http" in message
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ValueError)
    (tmp_path / name).mkdir()
    with pytest.raises(DatasetLayoutError, match=str(tmp_path / name)):
        open_dataset(name, tmp_path / name, {"bdd100k_mot": "val", "mot17": "train"}.get(name, "train"))


def _cityscapes(root, label_size=(16, 8)):
    img_dir, gt_dir = root / "leftImg8bit/train/ulm", root / "gtFine/train/ulm"
    img_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    Image.new("RGB", (16, 8)).save(img_dir / "ulm_000000_000001_leftImg8bit.png")
    Image.new("L", label_size, 7).save(gt_dir / "ulm_000000_000001_gtFine_labelIds.png")
    (root / "leftImg8bit/val").mkdir()
    (root / "gtFine/val").mkdir()


def test_label_png_of_another_size_names_the_label_file(tmp_path):
    _cityscapes(tmp_path, label_size=(8, 8))
    ds = open_dataset("cityscapes", tmp_path, "train")
    with pytest.raises(DatasetFormatError, match="ulm_000000_000001_gtFine_labelIds.png.*differs"):
        ds[0]


def test_well_formed_tiny_cityscapes_reads(tmp_path):
    _cityscapes(tmp_path)
    sample = open_dataset("cityscapes", tmp_path, "train")[0]
    assert sample.id == "train/ulm_000000_000001" and (sample.labels == 0).all()


def test_empty_split_is_an_error_naming_the_split_folder(tmp_path):
    _cityscapes(tmp_path)
    with pytest.raises(DatasetLayoutError, match="empty split 'val'.*leftImg8bit/val"):
        open_dataset("cityscapes", tmp_path, "val")


@pytest.mark.parametrize(("name", "split", "folders"), [
    ("ade20k", "val", ["ADEChallengeData2016/images/validation", "ADEChallengeData2016/annotations/validation"]),
    ("fair1m", "train", ["train/part1/labelXml", "train/part1/images"]),
    ("bdd100k_mot", "val", ["labels/box_track_20/val", "images/track/val"]),
    ("mot17", "train", ["MOT17/train"]),
])
def test_empty_split_of_every_dataset(tmp_path, name, split, folders):
    for folder in folders:
        (tmp_path / folder).mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match=f"empty split '{split}'"):
        open_dataset(name, tmp_path, split)


def test_missing_label_file_is_named(tmp_path):
    _cityscapes(tmp_path)
    (tmp_path / "gtFine/train/ulm/ulm_000000_000001_gtFine_labelIds.png").unlink()
    with pytest.raises(DatasetLayoutError, match="ulm_000000_000001_gtFine_labelIds.png"):
        open_dataset("cityscapes", tmp_path, "train")


XML = """<?xml version="1.0" encoding="utf-8"?>
<annotation><size><width>100</width><height>100</height><depth>3</depth></size><objects>
<object><possibleresult><name>{name}</name></possibleresult><points>{points}</points></object>
</objects></annotation>"""
BOX = "".join(f"<point>{p}</point>" for p in ["10,10", "20,10", "20,20", "10,20", "10,10"])


def _fair1m(root, name="Small Car", points=BOX):
    for sub in ("labelXml", "images"):
        (root / "train/part1" / sub).mkdir(parents=True)
    (root / "train/part1/labelXml/5.xml").write_text(XML.format(name=name, points=points))
    Image.new("RGB", (100, 100)).save(root / "train/part1/images/5.tif")


def test_fair1m_well_formed_object(tmp_path):
    _fair1m(tmp_path)
    (obj,) = open_dataset("fair1m", tmp_path, "train")[0].objects
    assert (obj.category, obj.supercategory) == ("Small Car", "Vehicle")
    np.testing.assert_array_equal(obj.polygon, [[10, 10], [20, 10], [20, 20], [10, 20]])


@pytest.mark.parametrize("points", [
    "".join(f"<point>{p}</point>" for p in ["10,10", "20,10", "20,20"]),  # a triangle
    "".join(f"<point>{p}</point>" for p in ["10,10", "20;10", "20,20", "10,20", "10,10"]),  # bad separator
    "".join(f"<point>{p}</point>" for p in ["10,10", "20,10", "20,20", "10,20", "99,99"]),  # not closed
])
def test_xml_with_malformed_polygon_names_the_file(tmp_path, points):
    _fair1m(tmp_path, points=points)
    with pytest.raises(DatasetFormatError, match=r"5\.xml: object 0: malformed polygon"):
        open_dataset("fair1m", tmp_path, "train")[0]


def test_xml_with_unknown_category_names_the_file(tmp_path):
    _fair1m(tmp_path, name="Spaceship")
    with pytest.raises(DatasetFormatError, match=r"5\.xml: object 0: unknown category 'Spaceship'"):
        open_dataset("fair1m", tmp_path, "train")[0]


def _bdd(root, category):
    (root / "labels/box_track_20/val").mkdir(parents=True)
    (root / "images/track/val/v1").mkdir(parents=True)
    frame = {"name": "v1-0000001.jpg", "videoName": "v1", "frameIndex": 0, "labels": [
        {"id": "1", "category": category, "attributes": {"occluded": False, "truncated": False, "crowd": False},
         "box2d": {"x1": 1, "y1": 2, "x2": 30, "y2": 40}}]}
    (root / "labels/box_track_20/val/v1.json").write_text(json.dumps([frame]))


def test_json_with_unknown_category_names_the_file(tmp_path):
    _bdd(tmp_path, "spaceship")
    with pytest.raises(DatasetFormatError, match=r"v1\.json: frame v1-0000001.jpg: unknown category 'spaceship'"):
        len(open_dataset("bdd100k_mot", tmp_path, "val"))


@pytest.mark.parametrize(("category", "kept"), [("car", "car"), ("van", "car"), ("other vehicle", None)])
def test_bdd_aliases_and_distractors(tmp_path, category, kept):
    _bdd(tmp_path, category)
    objects = open_dataset("bdd100k_mot", tmp_path, "val").frames_of("v1")[0].objects
    assert [o.category for o in objects] == ([kept] if kept else [])


def _mot(root, rows):
    seq = root / "MOT17/train/MOT17-02-FRCNN"
    (seq / "gt").mkdir(parents=True)
    (seq / "img1").mkdir()
    (seq / "seqinfo.ini").write_text(
        "[Sequence]\nname=MOT17-02-FRCNN\nimDir=img1\nframeRate=30\nseqLength=2\n"
        "imWidth=64\nimHeight=48\nimExt=.jpg\n\n"
    )
    (seq / "gt/gt.txt").write_text("\n".join(rows) + "\n")


def test_gt_txt_with_short_row_names_file_and_line(tmp_path):
    _mot(tmp_path, ["1,1,10,10,5,9,1,1,1.0", "2,1,11,10,5,9,1"])
    with pytest.raises(DatasetFormatError, match=r"gt\.txt: line 2: 7 fields; expected 9"):
        len(open_dataset("mot17", tmp_path, "train"))


def test_gt_txt_pedestrian_convention(tmp_path):
    _mot(tmp_path, ["1,1,10,10,5,9,1,1,1.0", "1,2,10,10,5,9,0,1,1.0", "1,3,10,10,5,9,1,7,1.0",
                    "2,1,11,10,5,9,1,1,0.0"])
    frames = open_dataset("mot17", tmp_path, "train").frames_of("MOT17-02-FRCNN")
    assert [[o.track_id for o in f.objects] for f in frames] == [["1"], ["1"]]  # flag 0 and class 7 dropped
    np.testing.assert_array_equal(frames[1].objects[0].box, [10, 9, 15, 18])


def test_errors_survive_pickling_between_processes():
    import pickle

    layout = pickle.loads(pickle.dumps(DatasetLayoutError("mot17", "/data/mot17", "gone")))
    assert isinstance(layout, FileNotFoundError) and str(layout).startswith("gone: expected /data/mot17")
    fmt = pickle.loads(pickle.dumps(DatasetFormatError("/data/x.xml", "bad polygon")))
    assert str(fmt) == "/data/x.xml: bad polygon"
