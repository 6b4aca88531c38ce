"""Views: tiling, patch labels against a brute-force count, corruption properties, and the
three view classes on small in-memory datasets where every answer is planted."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
from PIL import Image

from harness.data.fair1m import Fair1mLabel, Fair1mObject
from harness.data.video import FrameEntry, TrackedObject, VideoFrameSample
from harness.views import (
    BAND_EDGES,
    Fair1mTileView,
    TileView,
    VideoFrameView,
    band_mask,
    corrupt,
    frame_rate,
    majority_patch_labels,
    model_frame_size,
    tile,
    tile_labels,
)


def smooth_image(height=256, width=256, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 216, (height // 32, width // 32, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


# ---------------------------------------------------------------- tiling and patch labels
def test_tile_cuts_32_tiles_row_by_row():
    index = np.arange(32, dtype=np.uint8).reshape(4, 8)
    image = np.repeat(np.repeat(index, 256, 0), 256, 1)[..., None].repeat(3, axis=2)
    tiles = tile(image, 256, 224)
    assert tiles.shape == (32, 224, 224, 3) and tiles.dtype == np.uint8
    assert [int(t[0, 0, 0]) for t in tiles] == list(range(32))
    assert all((t == t[0, 0]).all() for t in tiles)  # a constant tile stays constant under resize
    with pytest.raises(ValueError, match="whole number of 256x256 tiles"):
        tile(image[:1000], 256, 224)


def brute_force_majority(labels, p, ignore=255):
    g_h, g_w = labels.shape[0] // p, labels.shape[1] // p
    out = np.empty((g_h, g_w), dtype=int)
    for r in range(g_h):
        for c in range(g_w):
            counts = Counter(labels[r * p : (r + 1) * p, c * p : (c + 1) * p].ravel().tolist())
            best = max(counts.values())
            out[r, c] = min(v for v, n in counts.items() if n == best)
    return out


@pytest.mark.parametrize("patch_size", [16, 14])
def test_majority_patch_labels_matches_brute_force(patch_size):
    rng = np.random.default_rng(patch_size)
    coarse = rng.choice([0, 3, 7, 18, 255], size=(28, 28))
    labels = np.repeat(np.repeat(coarse, 8, 0), 8, 1).astype(np.uint8)  # 224 x 224, blocks straddle patches
    noise = rng.random(labels.shape) < 0.2
    labels[noise] = rng.choice([1, 255], size=noise.sum())
    got = majority_patch_labels(labels, patch_size)
    assert got.shape == (224 // patch_size,) * 2 and got.dtype == np.int16
    np.testing.assert_array_equal(got, brute_force_majority(labels, patch_size))
    stacked = majority_patch_labels(np.stack([labels, labels[::-1]]), patch_size)
    np.testing.assert_array_equal(stacked[1], brute_force_majority(labels[::-1], patch_size))


def test_majority_is_ignore_only_when_ignore_wins():
    patch = np.full((16, 16), 255, dtype=np.uint8)
    patch[:7] = 4  # 112 of 256 pixels: ignore holds the majority
    assert majority_patch_labels(patch, 16)[0, 0] == 255
    patch[:8] = 4  # a tie goes to the class
    assert majority_patch_labels(patch, 16)[0, 0] == 4


# ---------------------------------------------------------------- corruptions
def test_blur_keeps_the_mean_and_removes_detail():
    image = np.random.default_rng(0).integers(0, 256, (128, 160, 3), dtype=np.uint8)
    for k in (10, 40):
        blurred = corrupt(image, "blur", k)
        assert abs(blurred.astype(float).mean() - image.mean()) < 1.0
        assert blurred.std() < image.std() / 4
    flat = np.full((64, 64, 3), 77, dtype=np.uint8)
    np.testing.assert_array_equal(corrupt(flat, "blur", 20), flat)


@pytest.mark.parametrize("std", [10, 20, 30, 40])
def test_noise_has_the_requested_std(std):
    gray = np.full((256, 256, 3), 128, dtype=np.uint8)
    noisy = corrupt(gray, "noise", std, seed=1)
    measured = (noisy.astype(float) - 128).std()
    assert abs(measured - std) < 0.05 * std
    np.testing.assert_array_equal(noisy, corrupt(gray, "noise", std, seed=1))
    assert not np.array_equal(noisy, corrupt(gray, "noise", std, seed=2))


@pytest.mark.parametrize("band", [1, 2, 3, 4])
def test_band_noise_energy_lies_inside_its_band(band):
    gray = np.full((256, 256, 3), 128, dtype=np.uint8)
    added = corrupt(gray, "band_noise", band, seed=3).astype(float) - 128
    power = np.abs(scipy.fft.rfft2(added, axes=(0, 1))) ** 2
    power[0, 0] = 0  # rounding shifts the mean a hair
    inside = power[band_mask(256, 256, band)].sum()
    assert inside / power.sum() > 0.9
    assert added.std() > 1.0  # the noise is really there
    low, high = BAND_EDGES[band - 1]
    assert 0 < low < high <= 0.5


def test_band_noise_rises_in_frequency_with_the_band():
    gray = np.full((128, 128, 3), 128, dtype=np.uint8)
    freq = np.hypot(np.fft.fftfreq(128)[:, None], np.fft.fftfreq(128)[None, :])
    centroids = []
    for band in (1, 2, 3, 4):
        power = np.abs(np.fft.fft2(corrupt(gray, "band_noise", band, seed=0).astype(float) - 128, axes=(0, 1))) ** 2
        power = power.sum(axis=2)
        centroids.append((power * freq).sum() / power.sum())
    assert centroids == sorted(centroids)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_shift_moves_content_by_exactly_k(k):
    image = smooth_image(64, 96)
    shifted = corrupt(image, "shift", k)
    np.testing.assert_array_equal(shifted[k:, k:], image[:-k, :-k])
    assert not np.array_equal(shifted, image)


def test_bad_corruption_arguments():
    image = smooth_image(32, 32)
    with pytest.raises(ValueError, match="unknown corruption 'rain'"):
        corrupt(image, "rain", 1)
    with pytest.raises(ValueError, match="band must be one of 1..4"):
        corrupt(image, "band_noise", 5)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(image.astype(float), "blur", 10)


# ---------------------------------------------------------------- TileView
@dataclass
class _Seg:
    id: str
    image: np.ndarray
    labels: np.ndarray


class FakeSegDataset:
    """Two 512x1024 images whose labels mark each 256 tile with its own class, top rows ignore."""

    name, split, class_names = "fake", "val", tuple(f"c{i}" for i in range(19))

    def __init__(self):
        grid = np.arange(8, dtype=np.uint8).reshape(2, 4)
        labels = np.repeat(np.repeat(grid, 256, 0), 256, 1)
        self.samples = {f"val/im{i}": _Seg(f"val/im{i}", smooth_image(512, 1024, seed=i), (labels + i) % 19) for i in range(2)}
        for sample in self.samples.values():
            sample.labels[:20] = 255  # 17.5 rows at 224 px: the top patch row is ignore

    def index_of(self, sample_id):
        if sample_id not in self.samples:
            raise KeyError(sample_id)
        return list(self.samples).index(sample_id)

    def get(self, sample_id):
        return self.samples[sample_id]

    def labels_of(self, sample_id):
        return self.samples[sample_id].labels


def test_tile_view_tiles_labels_and_sources():
    ds = FakeSegDataset()
    view = TileView(ds, ["val/im0", "val/im1"], tile=256, out=224)
    assert len(view) == 16 == len(view.ids) and view.ids[9] == "val/im1#0_1"
    np.testing.assert_array_equal(view[9], tile(ds.samples["val/im1"].image, 256, 224)[1])
    labels = view.patch_labels(16)
    assert labels.shape == (16, 14, 14) and labels.dtype == np.int16
    assert labels[9, 5, 5] == 2 and labels[0, 0, 0] == 255 and labels[0, 1, 0] == 0
    np.testing.assert_array_equal(view.source_index, [0] * 8 + [1] * 8)
    np.testing.assert_array_equal(view.patch_labels(14)[3], majority_patch_labels(tile_labels(ds.labels_of("val/im0"))[3], 14))
    fractions = view.class_fractions(["c0", 1])
    np.testing.assert_allclose(fractions[0], [(256 * 256 - 20 * 256) / (512 * 1024), (256 * 256 - 20 * 256) / (512 * 1024)])
    tile_index, row, col = view.central_patch(16)[1]
    assert (tile_index, row, col) == (8 + 6, 0, 0)  # centre pixel (256, 512) opens tile row 1, col 2


def test_tile_view_key_and_corruption_after_tiling():
    ds = FakeSegDataset()
    clean = TileView(ds, ["val/im0"])
    blurred = TileView(ds, ["val/im0"], corruption="blur", level=20)
    assert clean.key != blurred.key != TileView(ds, ["val/im1"]).key
    assert clean.key == TileView(ds, ["val/im0"]).key
    assert blurred.key == TileView(ds, ["val/im0"], corruption="blur", level=20.0).key
    # each 224 tile is blurred as an image of its own, after its resize
    np.testing.assert_array_equal(blurred[1], corrupt(clean[1], "blur", 20))
    whole_first = tile(corrupt(ds.samples["val/im0"].image, "blur", 20), 256, 224)
    assert not np.array_equal(blurred[1], whole_first[1])
    noisy = TileView(ds, ["val/im0"], corruption="noise", level=10, seed=1)
    assert noisy.key != TileView(ds, ["val/im0"], corruption="noise", level=10, seed=2).key
    assert not np.array_equal(noisy[0] - clean[0], noisy[1] - clean[1])  # noise drawn per tile
    shifted = TileView(ds, ["val/im0"], corruption="shift", level=3)
    assert shifted.labels(0)[3 + 20, 3 + 256] == 1 and shifted.labels(0)[22, 258] == 255
    with pytest.raises(ValueError, match="needs a level"):
        TileView(ds, ["val/im0"], corruption="noise")
    with pytest.raises(KeyError):
        TileView(ds, ["val/nope"])


# ---------------------------------------------------------------- Fair1mTileView
class FakeFair1m:
    name, split = "fair1m", "train"

    def __init__(self):
        self.img = smooth_image(448, 448, seed=5)
        square = np.array([[150, 150], [200, 150], [200, 200], [150, 200]], dtype=np.float32)
        small = np.array([[300, 300], [306, 300], [306, 306], [300, 306]], dtype=np.float32)
        self.objects = (Fair1mObject("Tennis Court", "Court", 36, 3, square), Fair1mObject("Small Car", "Vehicle", 20, 2, small))

    def index_of(self, sample_id):
        return 0

    def image(self, i):
        return self.img

    def label(self, i):
        return Fair1mLabel(448, 448, self.objects)


def test_fair1m_tile_view_patch_objects_and_shift():
    ds = FakeFair1m()
    view = Fair1mTileView(ds, ["train/0@100,100"])
    np.testing.assert_array_equal(view[0], ds.img[100:324, 100:324])
    objects = view.patch_objects(16)
    # the court spans tile pixels 50..100 -> patches 3..6 fully (6 partly: 100-96=4 px < 25%)
    inst = objects["instance"][0]
    assert (inst[3:6, 3:6] == 0).all() and inst[0, 0] == -1 and inst[6, 6] == -1
    assert objects["fine"][0][4, 4] == 36 and objects["super"][0][4, 4] == 3
    # the 6x6 px car (36 px) covers < 25% of any patch: background
    assert (objects["instance"] != 1).all()
    shifted = Fair1mTileView(ds, ["train/0@100,100"], transform="shift", level=4)
    np.testing.assert_array_equal(shifted[0][4:, 4:], view[0][:-4, :-4])
    np.testing.assert_array_equal(shifted[0][:4, :4], ds.img[96:100, 96:100])  # real pixels, not a filled border
    assert shifted.key != view.key
    blurred = Fair1mTileView(ds, ["train/0@100,100"], transform="blur", level=10)[0]
    assert abs(blurred.mean() - view[0].mean()) < 2
    np.testing.assert_array_equal(blurred, corrupt(view[0], "blur", 10))  # as a Cityscapes tile
    with pytest.raises(ValueError, match="tile id"):
        Fair1mTileView(ds, ["train/0"])


# ---------------------------------------------------------------- VideoFrameView
class FakeVideos:
    name, split = "fakevid", "val"

    def __init__(self, tmp_path: Path):
        self.frames = {}
        for v in ("a", "b"):
            entries = []
            for t in range(3):
                path = tmp_path / f"{v}{t}.png"
                Image.fromarray(smooth_image(720, 1280, seed=t)).save(path)
                objs = (TrackedObject("7", "car", np.array([128 * t, 72, 128 * t + 256, 144], dtype=np.float32)),
                        TrackedObject("8", "bus", np.array([1270, 700, 1400, 800], dtype=np.float32)),
                        TrackedObject("9", "rider", np.array([1300, 0, 1400, 5], dtype=np.float32)))
                entries.append(FrameEntry(f"val/{v}-{t}", v, t, path, objs))
            self.frames[v] = entries

    def frames_of(self, video):
        return self.frames[video]

    def read(self, frame):
        return VideoFrameSample(frame.id, np.asarray(Image.open(frame.image_path)), frame.objects, frame.video, frame.frame_index)


def test_video_frame_view_scales_boxes_and_numbers_tracks(tmp_path):
    view = VideoFrameView(FakeVideos(tmp_path), ["a", "b"], size=(336, 560))
    assert len(view) == 6 and view[4].shape == (336, 560, 3)
    np.testing.assert_array_equal(view.video_index, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(view.frame_index, [0, 1, 2, 0, 1, 2])
    objects = view.frame_objects()
    ids, cats, boxes = objects[1]
    assert cats == ("car", "bus")  # the rider box lies outside the frame: dropped
    np.testing.assert_allclose(boxes[0], [56, 33.6, 168, 67.2], rtol=1e-5)
    np.testing.assert_allclose(boxes[1], [1270 * 560 / 1280, 700 * 336 / 720, 560, 336], rtol=1e-5)
    assert objects[0].track_ids.tolist() == objects[2].track_ids.tolist() == [0, 1]
    assert objects[3].track_ids.tolist() == [2, 3]  # same track name in another video: another track
    np.testing.assert_allclose(view.grid_boxes(14)[1][0], np.array([56, 33.6, 168, 67.2]) / 14, rtol=1e-5)


@pytest.mark.parametrize(("source", "patch", "expected"), [
    ((720, 1280), 16, (336, 592)), ((720, 1280), 14, (336, 602)),  # BDD100K
    ((1080, 1920), 16, (336, 592)), ((480, 640), 16, (336, 448)),  # MOT17, MOT17-05
    ((1280, 720), 16, (592, 336)),  # portrait: the short side is the width
])
def test_model_frame_size_keeps_the_aspect_ratio_on_the_patch_grid(source, patch, expected):
    size = model_frame_size(source, 336, patch)
    assert size == expected and size[0] % patch == size[1] % patch == 0
    assert abs(size[1] / size[0] - source[1] / source[0]) < patch / 2 / min(size)


def test_frame_rate_of_an_unknown_dataset_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="frame rate of fakevid videos unknown"):
        frame_rate(FakeVideos(tmp_path), "a")
