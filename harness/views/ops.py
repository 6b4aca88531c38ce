"""Image operations behind the views: corruptions, tiling, patch labels.

Conventions where the paper leaves room (`harness.experiments.conventions` hands them to
the report):
- Tiles are resized with PIL's antialiased bilinear filter, label tiles with nearest
  neighbour.
- Patch labels are taken on the label tile *after* its nearest-neighbour resize to `out`
  (the pixels the model sees): the plurality class of the patch's pixels, ties to the lower
  class id, so a class beats 'ignore' (255); a patch whose plurality is 'ignore' is ignored.
- Corruptions are applied to the image the model sees (each 224x224 Cityscapes/ADE20K tile
  after its resize, each 224x224 FAIR1M tile), each such image on its own, so that a level
  means the same number of model-input pixels (or the same noise std) in S3 and in S5.
  Filters (blur) see mirrored borders (scipy 'reflect': d c b a | a b c d).
- Blur k: a centred k x k box filter (the mean over k x k pixels), applied separably. An odd
  k is k equal taps around the pixel. An even k has no centre pixel, and the plain k-tap box
  would move the image by half a pixel; it is made centred as k + 1 taps with half weight at
  both ends (the mean of the two half-pixel-shifted k-boxes), so the filter has zero phase:
  a blurred spot keeps its centroid.
- Noise s: additive Gaussian noise, mean 0, std s on the 0-255 scale, per pixel and channel;
  the result is rounded and clipped to uint8.
- Band noise b (1..4, BAND_EDGES in cycles per pixel of the image the model sees, the top
  band just below its Nyquist frequency of 0.5): Gaussian noise of the image's shape, moved
  to the frequency domain (rfft2 per channel), kept inside the radial band, moved back, and
  scaled so that its std over the image is 40 (BAND_NOISE_STD): equal energy in every band,
  so the bands differ in frequency only. The literal reading of the paper ('band_noise_literal':
  std-40 noise before the band filter, which leaves a std of about 3-11 in the band) is a
  second convention.
- Shift k: the content moves k px right and k px down (edge pixels repeat; the FAIR1M view
  moves its crop window over real pixels instead).
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from PIL import Image
from scipy.ndimage import correlate1d

CORRUPTIONS = ("blur", "noise", "band_noise", "band_noise_literal", "shift")
# The paper's levels: blur kernel sizes, noise stds (0-255 scale), band index (low -> high),
# shift in pixels.
LEVELS = {"blur": (10, 20, 30, 40), "noise": (10, 20, 30, 40), "band_noise": (1, 2, 3, 4),
          "band_noise_literal": (1, 2, 3, 4), "shift": (1, 2, 3, 4)}
BAND_NOISE_STD = 40.0
# Radial frequency bands in cycles per pixel (0.5 = Nyquist along an axis), each 0.025 wide:
# narrow rings from coarse structure up to just below the Nyquist frequency.
BAND_EDGES = ((0.025, 0.05), (0.1, 0.125), (0.225, 0.25), (0.45, 0.475))
IGNORE = 255


# ---------------------------------------------------------------------------- corruptions
def corrupt(image: np.ndarray, kind: str, level: float, seed: int = 0) -> np.ndarray:
    """A degraded copy of a uint8 [H, W, 3] image; noise comes from `seed` alone."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; expected one of {CORRUPTIONS}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"expected a uint8 [H, W, C] image, got {image.dtype} {image.shape}")
    if kind == "blur":
        out = box_blur(image.astype(np.float32), int(level))
    elif kind == "noise":
        if level < 0:
            raise ValueError(f"noise std must be >= 0, got {level}")
        out = image + np.random.default_rng(seed).normal(0.0, float(level), image.shape)
    elif kind in ("band_noise", "band_noise_literal"):
        out = image + band_noise(image.shape, int(level), seed, literal=kind == "band_noise_literal")
    else:
        return shift(image, int(level))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def box_kernel(k: int) -> np.ndarray:
    """1-D weights of a centred k-px box (odd length, sum 1): k equal taps for an odd k;
    for an even k, k + 1 taps with half weight at both ends."""
    if k < 1:
        raise ValueError(f"blur kernel size must be >= 1, got {k}")
    if k % 2:
        return np.full(k, 1.0 / k)
    weights = np.ones(k + 1)
    weights[[0, -1]] = 0.5
    return weights / k


def box_blur(image: np.ndarray, k: int) -> np.ndarray:
    """[H, W, ...] float image through the centred k x k box, mirrored borders."""
    weights = box_kernel(k)
    out = correlate1d(image, weights, axis=0, mode="reflect")
    return correlate1d(out, weights, axis=1, mode="reflect")


def band_mask(height: int, width: int, band: int) -> np.ndarray:
    """Boolean [H, W//2+1] mask of the rfft2 bins inside radial band 1..4."""
    if band not in range(1, len(BAND_EDGES) + 1):
        raise ValueError(f"band must be one of 1..{len(BAND_EDGES)}, got {band}")
    low, high = BAND_EDGES[band - 1]
    radius = np.hypot(scipy.fft.fftfreq(height)[:, None], scipy.fft.rfftfreq(width)[None, :])
    return (radius >= low) & (radius < high)


def band_noise(shape: tuple[int, ...], band: int, seed: int = 0, std: float = BAND_NOISE_STD,
               *, literal: bool = False) -> np.ndarray:
    """Gaussian noise with every frequency outside one radial band removed (float32), scaled
    to `std` over the whole array; literal=True: `std` before the filter instead."""
    height, width = shape[:2]
    noise = np.random.default_rng(seed).normal(0.0, std if literal else 1.0, shape).astype(np.float32)
    spectrum = scipy.fft.rfft2(noise, axes=(0, 1), workers=-1)
    mask = band_mask(height, width, band)
    if not mask.any():
        raise ValueError(f"no frequency of a {height}x{width} image lies in band {band} {BAND_EDGES[band - 1]}")
    spectrum *= mask.reshape(mask.shape + (1,) * (len(shape) - 2))
    filtered = scipy.fft.irfft2(spectrum, s=(height, width), axes=(0, 1), workers=-1)
    if literal:
        return filtered
    return (filtered * (std / filtered.std())).astype(np.float32)


def shift(array: np.ndarray, k: int) -> np.ndarray:
    """Move content k px right and down; the k uncovered rows/columns repeat the edge."""
    if k < 0 or k >= min(array.shape[:2]):
        raise ValueError(f"shift must be in 0..{min(array.shape[:2]) - 1}, got {k}")
    pad = ((k, 0), (k, 0)) + ((0, 0),) * (array.ndim - 2)
    return np.pad(array, pad, mode="edge")[: array.shape[0], : array.shape[1]]


# ---------------------------------------------------------------------------- tiling and labels
def tile_grid(shape: tuple[int, ...], size: int) -> tuple[int, int]:
    height, width = shape[:2]
    if height % size or width % size:
        raise ValueError(f"image of {height}x{width} is not a whole number of {size}x{size} tiles")
    return height // size, width // size


def resize(array: np.ndarray, height: int, width: int, nearest: bool) -> np.ndarray:
    if array.shape[:2] == (height, width):
        return array
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(array).resize((width, height), resample))


def tile(image: np.ndarray, size: int = 256, out: int = 224) -> np.ndarray:
    """Cut [H, W, C] into size x size tiles, row by row, each resized to out x out (bilinear)."""
    rows, cols = tile_grid(image.shape, size)
    return np.stack([
        resize(image[r * size : (r + 1) * size, c * size : (c + 1) * size], out, out, nearest=False)
        for r in range(rows) for c in range(cols)
    ])


def tile_labels(labels: np.ndarray, size: int = 256, out: int = 224) -> np.ndarray:
    """The label tiles matching `tile`, resized with nearest neighbour: uint8 [N, out, out]."""
    rows, cols = tile_grid(labels.shape, size)
    labels = np.asarray(labels, dtype=np.uint8)
    return np.stack([
        resize(labels[r * size : (r + 1) * size, c * size : (c + 1) * size], out, out, nearest=True)
        for r in range(rows) for c in range(cols)
    ])


def patch_blocks(array: np.ndarray, patch_size: int) -> np.ndarray:
    """[..., H, W] -> [..., H/p, W/p, p*p]."""
    *lead, height, width = array.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"{height}x{width} is not a whole number of {patch_size}-px patches")
    g_h, g_w = height // patch_size, width // patch_size
    blocks = array.reshape(*lead, g_h, patch_size, g_w, patch_size)
    blocks = np.moveaxis(blocks, -3, -2)
    return blocks.reshape(*lead, g_h, g_w, patch_size * patch_size)


def block_mode(blocks: np.ndarray, n_values: int) -> tuple[np.ndarray, np.ndarray]:
    """Most frequent value (ties -> the lower value) and its count, per row of [M, P] in
    0..n_values-1; counted in chunks so memory stays bounded."""
    flat = blocks.reshape(-1, blocks.shape[-1]).astype(np.int64)
    mode = np.empty(len(flat), dtype=np.int64)
    count = np.empty(len(flat), dtype=np.int64)
    chunk = max(1, 4_000_000 // n_values)
    for start in range(0, len(flat), chunk):
        part = flat[start : start + chunk]
        offsets = np.arange(len(part))[:, None] * n_values
        counts = np.bincount((part + offsets).ravel(), minlength=len(part) * n_values).reshape(len(part), n_values)
        mode[start : start + chunk] = counts.argmax(axis=1)
        count[start : start + chunk] = counts.max(axis=1)
    return mode.reshape(blocks.shape[:-1]), count.reshape(blocks.shape[:-1])


def majority_patch_labels(labels: np.ndarray, patch_size: int, ignore_index: int = IGNORE) -> np.ndarray:
    """The most common label under each patch: int16 [..., H/p, W/p]. A patch whose majority is
    `ignore_index` is ignore_index; ties go to the lower label id (so a class beats ignore)."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError("labels must be class ids in 0..255")
    mode, _ = block_mode(patch_blocks(labels, patch_size), 256)
    return mode.astype(np.int16)
