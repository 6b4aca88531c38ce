"""The synthetic world: written in the five native layouts, read by the real readers, with
structure a model can use (class regions, smooth motion), reproducible from its seed."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from harness.cli import main
from harness.data import DATASET_NAMES, check_layout, open_dataset
from harness.data.synthetic import write_world


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_layout_checks_pass(synthetic_world, name):
    check_layout(name, synthetic_world / name)


def test_cityscapes_world(synthetic_world):
    train = open_dataset("cityscapes", synthetic_world / "cityscapes", "train")
    val = open_dataset("cityscapes", synthetic_world / "cityscapes", "val")
    assert (len(train), len(val)) == (24, 3)
    assert train.cities == ["aachen", "bochum", "bremen"] and val.cities == ["frankfurt"]
    sample = val[0]
    assert sample.image.shape == (1024, 2048, 3) and sample.labels.shape == (1024, 2048)
    present = set()
    for s in (train[0], train[9], train[17], sample):
        present |= set(np.unique(s.labels).tolist())
    assert 255 in present and len(present - {255}) >= 12  # most train classes, and ignore regions


def _pixel_class_accuracy(image, labels):
    """Nearest-class-mean colour classification of 8x8 blocks: high when classes carry their
    own appearance."""
    h, w = labels.shape[0] // 8 * 8, labels.shape[1] // 8 * 8
    colour = image[:h, :w].reshape(h // 8, 8, w // 8, 8, 3).mean(axis=(1, 3)).reshape(-1, 3)
    label = labels[:h:8, :w:8].ravel()
    keep = label != 255
    colour, label = colour[keep], label[keep]
    classes = np.unique(label)
    means = np.stack([colour[label == c].mean(axis=0) for c in classes])
    predicted = classes[np.argmin(((colour[:, None] - means[None]) ** 2).sum(-1), axis=1)]
    return (predicted == label).mean()


@pytest.mark.parametrize(("name", "split"), [("cityscapes", "val"), ("ade20k", "train")])
def test_images_carry_class_structure(synthetic_world, name, split):
    sample = open_dataset(name, synthetic_world / name, split)[1]
    assert _pixel_class_accuracy(sample.image, sample.labels) > 0.8
    shuffled = np.random.default_rng(0).permutation(sample.labels.ravel()).reshape(sample.labels.shape)
    assert _pixel_class_accuracy(sample.image, shuffled) < 0.6  # the check can fail


def test_ade20k_world(synthetic_world):
    train = open_dataset("ade20k", synthetic_world / "ade20k", "train")
    val = open_dataset("ade20k", synthetic_world / "ade20k", "val")
    assert (len(train), len(val)) == (20, 8)
    sizes = {train[i].image.shape for i in range(4)}
    assert len(sizes) > 1  # sizes vary as in ADE20K
    labels = train[0].labels
    assert labels.max() == 255 or labels.max() < 150


def test_fair1m_world_has_every_category_and_colliding_names(synthetic_world):
    train = open_dataset("fair1m", synthetic_world / "fair1m", "train")
    val = open_dataset("fair1m", synthetic_world / "fair1m", "val")
    assert "train/0" in train.ids and "val/0" in val.ids  # names restart in validation
    counts = Counter(o.category for i in range(len(train)) for o in train.label(i).objects)
    assert set(counts) == set(train.class_names) and min(counts.values()) >= 3
    sample = train[0]
    assert sample.image.shape == (1000, 1000, 3)
    background = np.median(sample.image.reshape(-1, 3), axis=0)
    for obj in sample.objects[:5]:  # objects are painted where the label says
        cx, cy = obj.polygon.mean(axis=0).astype(int)
        assert 0 <= cx < 1000 and 0 <= cy < 1000
        assert np.abs(sample.image[cy - 1 : cy + 2, cx - 1 : cx + 2].astype(float).mean((0, 1)) - background).max() > 10


@pytest.mark.parametrize(("name", "split", "videos"), [("bdd100k_mot", "val", 2), ("mot17", "train", 2)])
def test_video_worlds_move_smoothly(synthetic_world, name, split, videos):
    ds = open_dataset(name, synthetic_world / name, split)
    assert len(ds.videos) == videos and len(ds) == 40 * videos
    frames = ds.frames_of(ds.videos[0])
    centres: dict[str, list] = {}
    for f in frames:
        for o in f.objects:
            centres.setdefault(o.track_id, []).append((f.frame_index, (o.box[:2] + o.box[2:]) / 2))
    assert len(centres) >= 5
    for track in centres.values():
        steps = [np.abs(c1 - c0).max() / (t1 - t0) for (t0, c0), (t1, c1) in zip(track, track[1:], strict=False)]
        assert max(steps, default=0) < 25  # px per frame
    first = ds[0]
    assert first.image.dtype == np.uint8 and first.objects


def test_bdd_world_drops_crowd_and_distractor_boxes(synthetic_world):
    import json

    path = next((synthetic_world / "bdd100k_mot/labels/box_track_20/val").glob("*.json"))
    raw = json.loads(path.read_text())
    ds = open_dataset("bdd100k_mot", synthetic_world / "bdd100k_mot", "val")
    kept = sum(len(f.objects) for f in ds.frames_of(path.stem))
    written = sum(len(f["labels"]) for f in raw)
    dropped = sum(1 for f in raw for lab in f["labels"] if lab["attributes"]["crowd"] or lab["category"] == "other vehicle")
    assert dropped > 0 and kept == written - dropped
    assert {o.category for f in ds.frames_of(path.stem) for o in f.objects} <= set(ds.class_names)


def test_mot17_world_gt_follows_the_pedestrian_convention(synthetic_world):
    ds = open_dataset("mot17", synthetic_world / "mot17", "train")
    assert ds.videos == ["MOT17-02-FRCNN", "MOT17-04-FRCNN"]
    frames = ds.frames_of("MOT17-02-FRCNN")
    rows = [line.split(",") for line in (synthetic_world / "mot17/MOT17/train/MOT17-02-FRCNN/gt/gt.txt").read_text().split()]
    assert {r[7] for r in rows} == {"1", "3", "7"}
    expected = sum(1 for r in rows if r[7] == "1" and r[6] != "0")
    assert sum(len(f.objects) for f in frames) == expected < len(rows)
    track1 = [f.frame_index for f in frames if any(o.track_id == "1" for o in f.objects)]
    assert track1 and max(track1) < 20  # its flag-0 second half is not ground truth


def _digest(root):
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())).hexdigest()


def test_world_is_a_function_of_its_seed(tmp_path):
    a = write_world(tmp_path / "a", seed=0, names=("fair1m", "mot17"))
    b = write_world(tmp_path / "b", seed=0, names=("fair1m", "mot17"))
    c = write_world(tmp_path / "c", seed=1, names=("fair1m",))
    assert _digest(a / "fair1m") == _digest(b / "fair1m") != _digest(c / "fair1m")
    assert _digest(a / "mot17") == _digest(b / "mot17")
    with pytest.raises(ValueError, match="unknown dataset"):
        write_world(tmp_path / "d", names=("imagenet",))


def test_synth_command_writes_readable_datasets(tmp_path):
    assert main(["synth", "--out", str(tmp_path), "--datasets", "ade20k", "bdd100k_mot"]) == 0
    assert len(open_dataset("ade20k", tmp_path / "ade20k", "val")) == 8
    assert len(open_dataset("bdd100k_mot", tmp_path / "bdd100k_mot", "val").videos) == 2
    assert not (tmp_path / "cityscapes").exists()


# ------------------------------------------------------------------------ interrupted worlds
TWO_DATASETS = ("fair1m", "mot17")  # enough to show the mechanism, written in seconds

KILL_MID_SYNTHESIS = """
import functools, sys
from harness.data import synthetic
synthetic.write_world = functools.partial(synthetic.write_world, names={names!r})
synthetic.ensure_world(sys.argv[1], seed=0)
"""


def _world_digest(root, names=TWO_DATASETS):
    return {name: _digest(root / name) for name in names}


def test_world_killed_mid_synthesis_is_never_used_and_is_rewritten(tmp_path, monkeypatch, synthetic_world):
    """SIGKILL while ensure_world writes: no world appears (it is written in a temp folder
    renamed into place at the end); the next ensure_world removes the leftovers and writes
    a world identical to one never interrupted. Before: the world was written in place, so
    a reader not holding the lock saw a half-written one."""
    import functools
    import sys

    from faults import kill_when

    from harness.data import synthetic

    cache = tmp_path / "cache"
    parent = cache / "synthetic-world"

    def half_written() -> bool:
        files = [p for p in parent.glob("seed0.tmp-*/**/*") if p.is_file()]
        return len(files) >= 5

    killed = kill_when([sys.executable, "-c", KILL_MID_SYNTHESIS.format(names=TWO_DATASETS), str(cache)],
                       ready=half_written)
    assert killed.returncode == -9
    assert not (parent / "seed0").exists()  # nothing that looks like a world
    leftovers = list(parent.glob("seed0.tmp-*"))
    assert leftovers and not any((p / ".complete").exists() for p in leftovers)

    monkeypatch.setattr(synthetic, "write_world", functools.partial(synthetic.write_world, names=TWO_DATASETS))
    world = synthetic.ensure_world(cache, seed=0)
    assert world == parent / "seed0" and (world / ".complete").is_file()
    assert not list(parent.glob("seed0.tmp-*"))
    assert _world_digest(world) == _world_digest(synthetic_world)


def test_a_world_without_its_marker_is_removed_and_written_again(tmp_path, monkeypatch):
    """A folder left by an older harness that was killed while writing in place."""
    import functools

    from harness.data import synthetic

    monkeypatch.setattr(synthetic, "write_world", functools.partial(synthetic.write_world, names=("fair1m",)))
    half = tmp_path / "synthetic-world" / "seed0"
    (half / "fair1m" / "train" / "part1" / "images").mkdir(parents=True)
    (half / "fair1m" / "train" / "part1" / "images" / "0.tif").write_bytes(b"II*\0cut")
    world = synthetic.ensure_world(tmp_path, seed=0)
    assert (world / ".complete").is_file()
    check_layout("fair1m", world / "fair1m")
    assert len(open_dataset("fair1m", world / "fair1m", "train")) == 8
    marker_time = (world / ".complete").stat().st_mtime_ns
    synthetic.ensure_world(tmp_path, seed=0)  # complete: left alone
    assert (world / ".complete").stat().st_mtime_ns == marker_time


@pytest.mark.parametrize("kind", ["tmpfs", "patched"])
def test_synth_on_a_full_disk_leaves_only_whole_files(tmp_path, kind, capsys, record_property):
    """`harness synth` into a folder that fills up: one line naming the file and why, and
    every file already there is whole (written atomically); no temp file is left."""
    from faults import MiB, small_filesystem
    from PIL import Image

    from harness.io import TEMP_MARK

    with small_filesystem(tmp_path / "disk", 8 * MiB, kind) as disk:
        record_property("filesystem", disk.kind)
        assert main(["synth", "--out", str(disk.path), "--datasets", "fair1m"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"harness synth: error: {disk.path}/fair1m/") and "No space left on device" in err
        assert len(err.splitlines()) == 1
        files = [p for p in disk.path.rglob("*") if p.is_file()]
        assert files and not [p for p in files if TEMP_MARK in p.name]
        for image in (p for p in files if p.suffix == ".tif"):
            with Image.open(image) as opened:
                opened.load()  # a cut TIFF would fail here


# ------------------------------------------------------------------------ the paper's scale
def test_paper_world_has_the_papers_counts():
    """What `harness synth --scale paper` writes in full: the counts the paper profile draws
    from (the largest Cityscapes train subset and the val subset exactly, room to spare
    elsewhere), at the datasets' own image sizes."""
    from harness.data.synthetic import PAPER_WORLD
    from harness.profiles import PROFILES

    paper = PROFILES["paper"]
    assert (len(PAPER_WORLD.city_train), len(PAPER_WORLD.city_val)) == (18, 3)
    assert PAPER_WORLD.city_train_per_city == max(paper.cityscapes_train_per_city)
    assert PAPER_WORLD.city_val_per_city == paper.cityscapes_val_per_city
    assert PAPER_WORLD.ade_val == paper.ade20k_val_images and PAPER_WORLD.ade_train >= 150 * paper.ade20k_train_per_class
    assert PAPER_WORLD.fair1m_per_category >= paper.fair1m_per_category
    assert PAPER_WORLD.bdd_videos * PAPER_WORLD.frames == 40_000
    assert sum(q.frames for q in PAPER_WORLD.mot_sequences) == 5316  # MOT17's seven train sequences


def test_a_slice_of_the_paper_world_at_the_papers_sizes(tmp_path):
    world = write_world(tmp_path, seed=0, size="paper", limit=3, names=("cityscapes", "fair1m", "bdd100k_mot", "mot17"),
                        jobs=2)
    train = open_dataset("cityscapes", world / "cityscapes", "train")
    val = open_dataset("cityscapes", world / "cityscapes", "val")
    assert (len(train.cities), len(train), len(val.cities), len(val)) == (18, 54, 3, 9)
    assert val[0].image.shape == (1024, 2048, 3)
    fair1m = open_dataset("fair1m", world / "fair1m", "train")
    assert len(fair1m) == 3 and fair1m.image(0).shape == (2000, 2000, 3)
    # a slice's image holds the objects it holds in the whole world: 370 objects over 6 images
    assert len(fair1m.label(0).objects) == 62
    bdd = open_dataset("bdd100k_mot", world / "bdd100k_mot", "val")
    assert len(bdd.videos) == 3 and {bdd[i].image.shape for i in range(len(bdd))} == {(720, 1280, 3)}
    mot = open_dataset("mot17", world / "mot17", "train")
    from harness.views.frames import frame_rate

    assert mot.videos == ["MOT17-02-FRCNN", "MOT17-04-FRCNN", "MOT17-05-FRCNN"]
    assert [frame_rate(mot, v) for v in mot.videos] == [30.0, 30.0, 14.0]
    assert mot.read(mot.frames_of("MOT17-05-FRCNN")[0]).image.shape == (480, 640, 3)
    assert len(mot.frames_of("MOT17-02-FRCNN")) == 3


def test_the_world_does_not_depend_on_the_number_of_writers(tmp_path):
    names = ("ade20k", "mot17")
    one = write_world(tmp_path / "one", seed=0, size="paper", limit=2, names=names, jobs=1)
    two = write_world(tmp_path / "two", seed=0, size="paper", limit=2, names=names, jobs=2)
    assert {n: _digest(one / n) for n in names} == {n: _digest(two / n) for n in names}


def test_paper_ade20k_images_show_every_class_in_turn(tmp_path):
    """At paper scale each image adds an object of the next class, so the 4-per-class train
    subset can fill all 150 classes."""
    from harness.data.synthetic import PAPER_WORLD

    world = write_world(tmp_path, seed=0, size="paper", limit=3, names=("ade20k",))
    train = open_dataset("ade20k", world / "ade20k", "train")
    for k in range(3):
        sample = train[k]
        h, w = sample.image.shape[:2]
        assert PAPER_WORLD.ade_height[0] <= h < PAPER_WORLD.ade_height[1]
        assert PAPER_WORLD.ade_width[0] <= w < PAPER_WORLD.ade_width[1]
        assert (sample.labels == k).mean() > 0.01  # class k (mask value k + 1)


def test_synth_command_writes_a_paper_slice(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--scale", "paper", "--limit", "1", "--datasets", "mot17"]) == 0
    assert "paper scale, limit 1" in capsys.readouterr().out
    mot = open_dataset("mot17", tmp_path / "mot17", "train")
    assert mot.videos == ["MOT17-02-FRCNN"] and mot[0].image.shape == (1080, 1920, 3)
