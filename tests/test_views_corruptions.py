"""Corruptions act on the image the model sees (issue 8, item 4): a level means the same in
S3 (Cityscapes tiles resized 256 -> 224) and S5 (FAIR1M 224 crops); an even blur kernel does
not move the image; band noise lies in its band, below Nyquist, at std 40 at the model input.

Each test plants data on which the earlier protocol (corruption on the 1024x2048 frame before
the 256 -> 224 resize; an uncentred even box; std 40 before the band filter) measurably
differs from the new one, and checks the new one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import scipy.fft
from scipy.ndimage import uniform_filter

from harness.views import BAND_EDGES, TileView, band_mask, corrupt, tile
from harness.views.ops import box_blur, box_kernel

GRAY = 128


@dataclass
class _Sample:
    image: np.ndarray


class GrayFrames:
    """Two mid-gray 512x1024 frames (8 tiles of 256 each), every pixel labelled road."""

    name, split, class_names = "gray", "val", ("road",)

    def __init__(self):
        self.ids = ["val/a", "val/b"]

    def index_of(self, sample_id):
        return self.ids.index(sample_id)

    def get(self, sample_id):
        return _Sample(np.full((512, 1024, 3), GRAY, np.uint8))

    def labels_of(self, sample_id):
        return np.zeros((512, 1024), np.uint8)


def added_noise(view) -> np.ndarray:
    """[N, 224, 224, 3] what the corruption added to each tile the model sees."""
    return np.stack([view[i].astype(np.float64) - GRAY for i in range(len(view))])


def centroid(image: np.ndarray) -> np.ndarray:
    weights = image.astype(np.float64).sum(axis=2)
    ys, xs = np.indices(weights.shape)
    return np.array([(ys * weights).sum(), (xs * weights).sum()]) / weights.sum()


# ---------------------------------------------------------------- a level means the same everywhere
@pytest.mark.parametrize("std", [10, 40])
def test_noise_has_its_std_at_the_model_input(std):
    view = TileView(GrayFrames(), ["val/a", "val/b"], corruption="noise", level=std)
    assert view[0].shape == (224, 224, 3)
    assert abs(added_noise(view).std() - std) < 0.02 * std
    # The earlier protocol added the noise to the frame before the 256 -> 224 resize, whose
    # antialiasing filter averages it away: the model saw a much weaker corruption.
    frame = GrayFrames().get("val/a").image
    earlier = tile(corrupt(frame, "noise", std, seed=0), 256, 224).astype(np.float64) - GRAY
    assert earlier.std() < 0.7 * std


def test_blur_kernel_is_counted_in_model_input_pixels():
    """A 20-px blur of a 224 tile is the 20-px blur of that very tile (not of the frame)."""
    rng = np.random.default_rng(0)

    class Textured(GrayFrames):
        frame = rng.integers(0, 256, (512, 1024, 3), dtype=np.uint8)

        def get(self, sample_id):
            return _Sample(self.frame)

    clean = TileView(Textured(), ["val/a"])
    blurred = TileView(Textured(), ["val/a"], corruption="blur", level=20)
    for i in (0, 5):
        np.testing.assert_array_equal(blurred[i], corrupt(clean[i], "blur", 20))


# ---------------------------------------------------------------- centred box blur
@pytest.mark.parametrize("k", [10, 11, 20, 40])
def test_blurred_spot_keeps_its_centroid(k):
    image = np.zeros((224, 224, 3), np.uint8)
    image[100:110, 60:70] = 255  # a bright 10 x 10 spot, centroid (104.5, 64.5)
    before = centroid(image)
    after = centroid(corrupt(image, "blur", k))
    np.testing.assert_allclose(after, before, atol=0.05)
    if k % 2 == 0:  # the plain even box (the earlier blur) moves it by half a pixel
        plain = uniform_filter(image.astype(np.float32), size=(k, k, 1), mode="reflect")
        assert np.abs(centroid(plain) - before).min() > 0.45


@pytest.mark.parametrize("k", [10, 40])
def test_blurred_edge_stays_in_place(k):
    step = np.zeros((1, 224, 1), np.float64)
    step[:, 112:] = 255.0  # an edge between pixels 111 and 112
    profile = box_blur(step, k)[0, :, 0]
    # symmetric about the edge: the value at 111 - j mirrors the value at 112 + j
    np.testing.assert_allclose(profile[112 - k : 112][::-1], 255.0 - profile[112 : 112 + k], atol=1e-9)


@pytest.mark.parametrize("k", [1, 2, 7, 10])
def test_box_kernel_is_a_mean_over_k_pixels(k):
    weights = box_kernel(k)
    np.testing.assert_allclose(weights, weights[::-1])  # symmetric: zero phase
    assert np.isclose(weights.sum(), 1.0)
    if k % 2:
        np.testing.assert_allclose(weights, np.full(k, 1 / k))
    else:  # k + 1 taps: k - 1 whole ones and two halves, k pixels' worth in all
        np.testing.assert_allclose(weights * k, [0.5] + [1.0] * (k - 1) + [0.5])
    with pytest.raises(ValueError, match=">= 1"):
        box_kernel(0)


# ---------------------------------------------------------------- band noise
def test_top_band_noise_at_the_model_input_has_std_40_below_nyquist():
    view = TileView(GrayFrames(), ["val/a", "val/b"], corruption="band_noise", level=4)
    added = added_noise(view)
    assert abs(added.std() - 40.0) < 1.0  # rounding and (rare) clipping at 128 +- 3.2 std
    power = np.abs(scipy.fft.fft2(added, axes=(1, 2))) ** 2
    radius = np.hypot(np.fft.fftfreq(224)[:, None], np.fft.fftfreq(224)[None, :])
    power = power.sum(axis=(0, 3))
    assert power[radius >= 0.5].sum() / power.sum() < 1e-3  # below the tile's Nyquist
    low, high = BAND_EDGES[3]
    assert power[(radius >= low) & (radius < high)].sum() / power.sum() > 0.99
    assert high < 0.5


@pytest.mark.parametrize("band", [1, 2, 3, 4])
def test_every_band_adds_the_same_energy_and_the_literal_convention_does_not(band):
    view = TileView(GrayFrames(), ["val/a"], corruption="band_noise", level=band)
    assert abs(added_noise(view).std() - 40.0) < 1.0
    literal = TileView(GrayFrames(), ["val/a"], corruption="band_noise_literal", level=band)
    assert literal.key != view.key
    # std 40 before the filter leaves 40 * sqrt(ring area / spectrum area) in the band
    low, high = BAND_EDGES[band - 1]
    expected = 40.0 * np.sqrt(np.pi * (high**2 - low**2))
    assert 2.5 < expected < 11.5
    assert abs(added_noise(literal).std() - expected) < 0.1 * expected + 0.3


def test_band_noise_is_seeded_per_tile_and_rises_in_frequency():
    a = TileView(GrayFrames(), ["val/a"], corruption="band_noise", level=2, seed=0)
    b = TileView(GrayFrames(), ["val/a"], corruption="band_noise", level=2, seed=0)
    np.testing.assert_array_equal(a[3], b[3])
    assert not np.array_equal(a[3], a[4])
    freq = np.hypot(np.fft.fftfreq(224)[:, None], np.fft.fftfreq(224)[None, :])
    centroids = []
    for band in (1, 2, 3, 4):
        power = np.abs(np.fft.fft2(added_noise(TileView(GrayFrames(), ["val/a"], corruption="band_noise",
                                                        level=band))[:2], axes=(1, 2))) ** 2
        power = power.sum(axis=(0, 3))
        centroids.append((power * freq).sum() / power.sum())
    assert centroids == sorted(centroids)


def test_band_noise_on_an_image_too_small_for_the_band_is_an_error():
    with pytest.raises(ValueError, match="no frequency"):
        corrupt(np.full((2, 2, 3), GRAY, np.uint8), "band_noise", 1)
    assert band_mask(224, 224, 4).any()
