"""The readers on real files in each dataset's native layout (../shared/formats).

Images the samples do not carry (FAIR1M .tif, BDD100K and MOT17 frames) are written blank,
at the annotated size, into a temporary copy of the layout.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.data import open_dataset
from harness.data.cityscapes import label_ids_to_train_ids
from harness.data.fair1m import parse_label_xml

FORMATS = Path(__file__).resolve().parents[2] / "shared" / "formats"
pytestmark = pytest.mark.skipif(not FORMATS.is_dir(), reason=f"real format samples not found at {FORMATS}")


def test_cityscapes_real_frame_maps_label_ids_to_train_ids():
    ds = open_dataset("cityscapes", FORMATS / "cityscapes", "val")
    assert ds.ids == ["val/frankfurt_000000_000294"]
    sample = ds[0]
    assert sample.image.shape == (128, 256, 3) and sample.image.dtype == np.uint8
    raw = np.asarray(Image.open(FORMATS / "cityscapes/gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png"))
    np.testing.assert_array_equal(sample.labels, label_ids_to_train_ids(raw))
    # ids 1..4 (ego vehicle, border, out of roi, static) are ignore; 7 road is trainId 0
    assert (sample.labels[np.isin(raw, [1, 2, 3, 4])] == 255).all()
    assert (sample.labels[raw == 7] == 0).all()
    # mmseg's labelTrainIds differs at a few resampled boundary pixels only (see PROVENANCE)
    mmseg = np.asarray(Image.open(FORMATS / "cityscapes/gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png"))
    assert (mmseg == sample.labels).mean() > 0.99


def test_ade20k_real_masks_reduce_zero_label_and_class_names_match_devkit():
    ds = open_dataset("ade20k", FORMATS / "ade20k", "val")
    assert len(ds) == 3
    sample = ds.get("val/ADE_val_00000003")
    raw = np.asarray(Image.open(FORMATS / "ade20k/ADEChallengeData2016/annotations/validation/ADE_val_00000003.png"))
    assert sample.image.shape[:2] == raw.shape == (300, 400)
    assert (sample.labels[raw == 0] == 255).all()
    np.testing.assert_array_equal(sample.labels[raw > 0], raw[raw > 0] - 1)
    with open(FORMATS / "ade20k/devkit/objectInfo150.csv") as f:
        rows = list(csv.DictReader(f))
    devkit_first_words = [row["Name"].split(";")[0] for row in rows]
    assert [name.split()[0] for name in ds.class_names] == devkit_first_words


def _fair1m_copy(tmp_path: Path) -> Path:
    root = tmp_path / "fair1m"
    for xml in (FORMATS / "fair1m").rglob("*.xml"):
        part = xml.parent.parent.relative_to(FORMATS / "fair1m")
        (root / part / "labelXml").mkdir(parents=True, exist_ok=True)
        (root / part / "images").mkdir(parents=True, exist_ok=True)
        shutil.copy(xml, root / part / "labelXml" / xml.name)
        label = parse_label_xml(xml)
        Image.new("RGB", (label.width, label.height)).save(root / part / "images" / f"{xml.stem}.tif")
    return root


def test_fair1m_real_labels_parse_and_ids_carry_the_split(tmp_path):
    root = _fair1m_copy(tmp_path)
    train, val = open_dataset("fair1m", root, "train"), open_dataset("fair1m", root, "validation")
    assert sorted(train.ids) == ["train/0", "train/12818", "train/3250", "train/7773"]
    assert sorted(val.ids) == ["val/689", "val/7917"]
    ships = train.get("train/0")
    assert ships.image.shape == (1500, 1500, 3)
    assert [o.supercategory for o in ships.objects] == ["Ship"] * 3
    assert all(o.polygon.shape == (4, 2) for o in ships.objects)
    assert max(o.polygon[:, 1].max() for o in ships.objects) == 1531  # outside the image, kept as is
    court = train.get("train/3250")
    assert {(o.category, o.supercategory) for o in court.objects} >= {("Basketball Court", "Court"), ("Intersection", "Road")}
    assert train.get("train/7773").image.shape == (800, 600, 3)
    planes = val.get("val/7917")
    assert {o.category for o in planes.objects} == {"A220", "A321", "Boeing737", "other-airplane"}
    assert all(o.fine_index == train.class_names.index(o.category) for o in planes.objects)


def test_bdd100k_real_video_labels_drop_crowd_boxes(tmp_path):
    src = FORMATS / "bdd100k/labels/box_track_20/val/b1c66a42-6f7d68ca.json"
    root = tmp_path / "bdd100k_mot"
    (root / "labels/box_track_20/val").mkdir(parents=True)
    shutil.copy(src, root / "labels/box_track_20/val" / src.name)
    frame_dir = root / "images/track/val/b1c66a42-6f7d68ca"
    frame_dir.mkdir(parents=True)
    Image.new("RGB", (1280, 720)).save(frame_dir / "b1c66a42-6f7d68ca-0000001.jpg")

    ds = open_dataset("bdd100k_mot", root, "val")
    assert ds.videos == ["b1c66a42-6f7d68ca"] and len(ds) == 202
    raw = json.loads(src.read_text())
    expected = sum(1 for f in raw for lab in f["labels"] if not lab["attributes"]["crowd"])
    frames = ds.frames_of("b1c66a42-6f7d68ca")
    assert sum(len(f.objects) for f in frames) == expected == 3241 - 132
    assert [f.frame_index for f in frames] == list(range(202))
    first = ds[0]
    assert first.id == "val/b1c66a42-6f7d68ca-0000001" and first.image.shape == (720, 1280, 3)
    car = first.objects[0]
    assert (car.track_id, car.category) == ("00122062", "car")
    np.testing.assert_allclose(car.box, [0, 346.55482900742646, 75.41276162779963, 407.4496307987563])


def test_mot17_real_gt_keeps_only_considered_pedestrians(tmp_path):
    root = tmp_path / "mot17"
    shutil.copytree(FORMATS / "mot17", root)
    for seq in ("MOT17-05-SDP", "MOT17-09-DPM"):
        (root / "MOT17/train" / seq / "img1").mkdir()
    Image.new("RGB", (640, 480)).save(root / "MOT17/train/MOT17-05-SDP/img1/000001.jpg")

    ds = open_dataset("mot17", root, "train")
    assert ds.videos == ["MOT17-05-SDP", "MOT17-09-DPM"]
    assert ds.seqinfo("MOT17-05-SDP")["seqLength"] == 837 == len(ds.frames_of("MOT17-05-SDP"))
    # the excerpt holds 46 rows with (flag, class) = (1, 1); the (0, 9) and (0, 8) rows are dropped
    assert sum(len(f.objects) for f in ds.frames_of("MOT17-05-SDP")) == 46
    rows = [line.split(",") for line in (root / "MOT17/train/MOT17-09-DPM/gt/gt.txt").read_text().split()]
    frames = ds.frames_of("MOT17-09-DPM")
    frame, track, left, top, w, h = (float(v) for v in rows[0][:6])
    (obj,) = frames[int(frame) - 1].objects
    assert obj.track_id == str(int(track))
    np.testing.assert_allclose(obj.box, [left - 1, top - 1, left - 1 + w, top - 1 + h])
    assert ds[0].image.shape == (480, 640, 3)
