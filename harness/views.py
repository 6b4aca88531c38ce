"""Views: the exact pixels and labels each claim feeds to a model, prepared as the paper says.

Every view is a pure function of (dataset, chosen ids, parameters, seed): the same inputs give
the same bytes, and `view.key` names them for the embedding cache. Views read lazily, one
source image at a time (a small LRU keeps the last decoded images, since 32 tiles come from
one Cityscapes frame).

Choices where the paper leaves room (each documented where it is made):
- tiles are resized with PIL's antialiased bilinear filter, label tiles with nearest neighbour;
- patch labels are taken on the label tile *after* its nearest-neighbour resize to `out`
  (the pixels the model sees), majority class per patch, ties to the lower class id;
- blur k = a k x k box (mean) filter with mirrored borders;
- band noise = std-40 Gaussian noise kept in one radial frequency band (BAND_EDGES);
- a diagonal shift by k moves the content k px right and k px down.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import scipy.fft
from PIL import Image, ImageDraw
from scipy.ndimage import uniform_filter

from harness.config import seed_for

CORRUPTIONS = ("blur", "noise", "band_noise", "shift")
# The paper's levels: blur kernel sizes, noise stds (0-255 scale), band index (low -> high),
# shift in pixels.
LEVELS = {"blur": (10, 20, 30, 40), "noise": (10, 20, 30, 40), "band_noise": (1, 2, 3, 4), "shift": (1, 2, 3, 4)}
BAND_NOISE_STD = 40.0
# Radial frequency bands in cycles per pixel (0.5 = Nyquist along an axis), each 0.025 wide:
# narrow rings from coarse structure up to the finest pixel-level detail.
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
        k = int(level)
        if k < 1:
            raise ValueError(f"blur kernel size must be >= 1, got {level}")
        out = uniform_filter(image.astype(np.float32), size=(k, k, 1), mode="reflect")
    elif kind == "noise":
        if level < 0:
            raise ValueError(f"noise std must be >= 0, got {level}")
        out = image + np.random.default_rng(seed).normal(0.0, float(level), image.shape)
    elif kind == "band_noise":
        out = image + band_noise(image.shape, int(level), seed)
    else:
        return shift(image, int(level))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def band_mask(height: int, width: int, band: int) -> np.ndarray:
    """Boolean [H, W//2+1] mask of the rfft2 bins inside radial band 1..4."""
    if band not in range(1, len(BAND_EDGES) + 1):
        raise ValueError(f"band must be one of 1..{len(BAND_EDGES)}, got {band}")
    low, high = BAND_EDGES[band - 1]
    radius = np.hypot(scipy.fft.fftfreq(height)[:, None], scipy.fft.rfftfreq(width)[None, :])
    return (radius >= low) & (radius < high)


def band_noise(shape: tuple[int, ...], band: int, seed: int = 0, std: float = BAND_NOISE_STD) -> np.ndarray:
    """Gaussian noise of `std` with every frequency outside one radial band removed (float32)."""
    height, width = shape[:2]
    noise = np.random.default_rng(seed).normal(0.0, std, shape).astype(np.float32)
    spectrum = scipy.fft.rfft2(noise, axes=(0, 1), workers=-1)
    mask = band_mask(height, width, band)
    spectrum *= mask.reshape(mask.shape + (1,) * (len(shape) - 2))
    return scipy.fft.irfft2(spectrum, s=(height, width), axes=(0, 1), workers=-1)


def shift(array: np.ndarray, k: int) -> np.ndarray:
    """Move content k px right and down; the k uncovered rows/columns repeat the edge."""
    if k < 0 or k >= min(array.shape[:2]):
        raise ValueError(f"shift must be in 0..{min(array.shape[:2]) - 1}, got {k}")
    pad = ((k, 0), (k, 0)) + ((0, 0),) * (array.ndim - 2)
    return np.pad(array, pad, mode="edge")[: array.shape[0], : array.shape[1]]


# ---------------------------------------------------------------------------- tiling and labels
def _grid(shape: tuple[int, ...], size: int) -> tuple[int, int]:
    height, width = shape[:2]
    if height % size or width % size:
        raise ValueError(f"image of {height}x{width} is not a whole number of {size}x{size} tiles")
    return height // size, width // size


def _resize(array: np.ndarray, height: int, width: int, nearest: bool) -> np.ndarray:
    if array.shape[:2] == (height, width):
        return array
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(array).resize((width, height), resample))


def tile(image: np.ndarray, size: int = 256, out: int = 224) -> np.ndarray:
    """Cut [H, W, C] into size x size tiles, row by row, each resized to out x out (bilinear)."""
    rows, cols = _grid(image.shape, size)
    return np.stack([
        _resize(image[r * size : (r + 1) * size, c * size : (c + 1) * size], out, out, nearest=False)
        for r in range(rows) for c in range(cols)
    ])


def tile_labels(labels: np.ndarray, size: int = 256, out: int = 224) -> np.ndarray:
    """The label tiles matching `tile`, resized with nearest neighbour: uint8 [N, out, out]."""
    rows, cols = _grid(labels.shape, size)
    labels = np.asarray(labels, dtype=np.uint8)
    return np.stack([
        _resize(labels[r * size : (r + 1) * size, c * size : (c + 1) * size], out, out, nearest=True)
        for r in range(rows) for c in range(cols)
    ])


def _blocks(array: np.ndarray, patch_size: int) -> np.ndarray:
    """[..., H, W] -> [..., H/p, W/p, p*p]."""
    *lead, height, width = array.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"{height}x{width} is not a whole number of {patch_size}-px patches")
    g_h, g_w = height // patch_size, width // patch_size
    blocks = array.reshape(*lead, g_h, patch_size, g_w, patch_size)
    blocks = np.moveaxis(blocks, -3, -2)
    return blocks.reshape(*lead, g_h, g_w, patch_size * patch_size)


def _block_mode(blocks: np.ndarray, n_values: int) -> tuple[np.ndarray, np.ndarray]:
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
    mode, _ = _block_mode(_blocks(labels, patch_size), 256)
    return mode.astype(np.int16)


# ---------------------------------------------------------------------------- view plumbing
class _LRU:
    """The last few decoded source images, so tiles of one image decode it once."""

    def __init__(self, capacity: int = 4):
        self.capacity = capacity
        self._items: OrderedDict = OrderedDict()

    def get(self, key, make: Callable):
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = make()
        self._items[key] = value
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return value


def _view_key(kind: str, dataset, ids: Sequence[str], **params) -> str:
    """Stable name of a view: everything that determines its pixels, hashed."""
    ids_digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    payload = json.dumps({"view": kind, "dataset": dataset.name, "split": dataset.split,
                          "ids": ids_digest, **params}, sort_keys=True)
    return f"{kind}-{dataset.name}-{dataset.split}-{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


def _check_corruption(kind: str | None, level) -> float | None:
    """The level as a float, so that 10 and 10.0 name the same view and draw the same noise."""
    if kind is None:
        if level is not None:
            raise ValueError("a corruption level was given without a corruption kind")
        return None
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; expected one of {CORRUPTIONS}")
    if level is None:
        raise ValueError(f"corruption {kind!r} needs a level, e.g. one of {LEVELS[kind]}")
    return float(level)


# ---------------------------------------------------------------------------- S3: tiles
class TileView:
    """S3 view of a segmentation dataset: each source image (optionally resized to `resize`
    = (H, W), then optionally corrupted as a whole) cut into `tile`-px tiles resized to `out`.

    Cityscapes: TileView(ds, ids) -> 32 tiles of 256 px per 1024x2048 frame, each 224 px.
    ADE20K: TileView(ds, ids, tile=224, out=224, resize=(448, 672)) -> 6 tiles per image.
    """

    def __init__(self, dataset, sample_ids: Sequence[str], tile: int = 256, out: int = 224,
                 corruption: str | None = None, level: float | None = None, seed: int = 0,
                 resize: tuple[int, int] | None = None):
        level = _check_corruption(corruption, level)
        self.dataset, self.sample_ids = dataset, list(sample_ids)
        if not self.sample_ids:
            raise ValueError("a view needs at least one sample id")
        for sample_id in self.sample_ids:
            dataset.index_of(sample_id)  # unknown ids fail here, not mid-extraction
        self.tile_size, self.out, self.resize = tile, out, tuple(resize) if resize else None
        self.corruption, self.level, self.seed = corruption, level, seed
        shape = self.resize or self._labels(self.sample_ids[0]).shape
        self.grid = _grid(shape, tile)
        self.tiles_per_image = self.grid[0] * self.grid[1]
        self.key = _view_key("tiles", dataset, self.sample_ids, tile=tile, out=out, resize=self.resize,
                             corruption=corruption, level=level,
                             seed=seed if corruption in ("noise", "band_noise") else None)
        self.ids = [f"{s}#{r}_{c}" for s in self.sample_ids for r in range(self.grid[0]) for c in range(self.grid[1])]
        self._cache = _LRU()
        self._patch_labels: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        image_index, tile_index = divmod(i % len(self), self.tiles_per_image)
        return self._cache.get(image_index, lambda: self._tiles(image_index))[tile_index]

    def image(self, image_index: int) -> np.ndarray:
        """The full prepared (resized, corrupted) source image before tiling."""
        sample_id = self.sample_ids[image_index]
        image = self.dataset.get(sample_id).image
        if self.resize:
            image = _resize(image, *self.resize, nearest=False)
        if self.corruption:
            image = corrupt(image, self.corruption, self.level,
                            seed_for("corrupt", self.corruption, self.level, sample_id, self.seed))
        return image

    def _tiles(self, image_index: int) -> np.ndarray:
        image = self.image(image_index)
        if _grid(image.shape, self.tile_size) != self.grid:
            raise ValueError(f"{self.sample_ids[image_index]}: size {image.shape[:2]} differs from the "
                             f"view's first image; all images of a view must share one size")
        return tile(image, self.tile_size, self.out)

    def _labels(self, sample_id: str) -> np.ndarray:
        labels = self.dataset.labels_of(sample_id)
        return _resize(labels, *self.resize, nearest=True) if self.resize else labels

    def labels(self, image_index: int) -> np.ndarray:
        """Label map of a source image in the view's geometry (resized; shifted when shifted)."""
        labels = self._labels(self.sample_ids[image_index])
        return shift(labels, int(self.level)) if self.corruption == "shift" else labels

    def patch_labels(self, patch_size: int) -> np.ndarray:
        """int16 [N, out/p, out/p]: majority label per patch of each tile (255 = ignore), taken on
        the label tile after its nearest-neighbour resize to `out`."""
        if patch_size not in self._patch_labels:
            self._patch_labels[patch_size] = np.concatenate([
                majority_patch_labels(tile_labels(self.labels(i), self.tile_size, self.out), patch_size)
                for i in range(len(self.sample_ids))
            ])
        return self._patch_labels[patch_size]

    @property
    def source_index(self) -> np.ndarray:
        """[N] index of each tile's source image (for bootstrap over images)."""
        return np.repeat(np.arange(len(self.sample_ids)), self.tiles_per_image)

    def class_fractions(self, classes: Sequence[int | str]) -> np.ndarray:
        """[N_images, len(classes)]: share of all pixels of each source image labelled with each
        class (by id or name), on the source label map."""
        class_ids = [self.dataset.class_names.index(c) if isinstance(c, str) else int(c) for c in classes]
        fractions = np.empty((len(self.sample_ids), len(class_ids)))
        for i, sample_id in enumerate(self.sample_ids):
            counts = np.bincount(self.dataset.labels_of(sample_id).ravel(), minlength=256)
            fractions[i] = counts[class_ids] / counts.sum()
        return fractions

    def central_patch(self, patch_size: int) -> np.ndarray:
        """int [N_images, 3]: (view index of the tile, patch row, patch col) of the patch that
        holds the centre pixel of each source image."""
        height, width = self.grid[0] * self.tile_size, self.grid[1] * self.tile_size
        cy, cx = height // 2, width // 2
        r, c = cy // self.tile_size, cx // self.tile_size
        scale = self.out / self.tile_size
        pr, pc = int((cy - r * self.tile_size) * scale) // patch_size, int((cx - c * self.tile_size) * scale) // patch_size
        tile_in_image = r * self.grid[1] + c
        starts = np.arange(len(self.sample_ids)) * self.tiles_per_image
        return np.stack([starts + tile_in_image, np.full_like(starts, pr), np.full_like(starts, pc)], axis=1)


# ---------------------------------------------------------------------------- S5: FAIR1M tiles
def parse_tile_id(tile_id: str) -> tuple[str, int, int]:
    """'<sample id>@<y0>,<x0>' -> (sample id, y0, x0)."""
    try:
        sample_id, origin = tile_id.rsplit("@", 1)
        y0, x0 = (int(v) for v in origin.split(","))
    except ValueError:
        raise ValueError(f"tile id {tile_id!r} is not '<sample id>@<y0>,<x0>'") from None
    return sample_id, y0, x0


def _crop(image: np.ndarray, y0: int, x0: int, height: int, width: int) -> np.ndarray:
    """A window that may reach past the image; outside pixels repeat the nearest edge."""
    h, w = image.shape[:2]
    ys = np.clip(np.arange(y0, y0 + height), 0, h - 1)
    xs = np.clip(np.arange(x0, x0 + width), 0, w - 1)
    return image[ys[:, None], xs[None, :]]


class Fair1mTileView:
    """S5 view: `out` x `out` FAIR1M tiles named '<sample id>@<y0>,<x0>' (see
    subsets.fair1m_ids), optionally transformed: 'shift' k (the window moves k px up-left over
    the real image, so content moves k px right and down with no filled border), 'blur' and
    'noise' (blur is computed with a margin of real pixels around the tile)."""

    def __init__(self, dataset, tile_ids: Sequence[str], out: int = 224, transform: str | None = None,
                 level: float | None = None, seed: int = 0, min_cover: float = 0.25):
        level = _check_corruption(transform, level)
        if transform == "band_noise":
            raise ValueError("FAIR1M views take 'shift', 'blur' or 'noise'")
        self.dataset, self.ids = dataset, list(tile_ids)
        self.tiles = [parse_tile_id(t) for t in self.ids]
        for sample_id, _, _ in self.tiles:
            dataset.index_of(sample_id)
        self.out, self.transform, self.level, self.seed, self.min_cover = out, transform, level, seed, min_cover
        self.key = _view_key("fair1m-tiles", dataset, self.ids, out=out, transform=transform, level=level,
                             seed=seed if transform == "noise" else None)
        sources = list(dict.fromkeys(s for s, _, _ in self.tiles))
        self._source_of = {s: i for i, s in enumerate(sources)}
        self._cache = _LRU()
        self._objects: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def _shift(self) -> int:
        return int(self.level) if self.transform == "shift" else 0

    def __getitem__(self, i: int) -> np.ndarray:
        sample_id, y0, x0 = self.tiles[i]
        image = self._cache.get(sample_id, lambda: self.dataset.image(self.dataset.index_of(sample_id)))
        k, n = self._shift, self.out
        if self.transform == "blur":
            margin = int(self.level)
            window = _crop(image, y0 - margin, x0 - margin, n + 2 * margin, n + 2 * margin)
            return corrupt(window, "blur", self.level)[margin : margin + n, margin : margin + n]
        window = _crop(image, y0 - k, x0 - k, n, n)
        if self.transform == "noise":
            window = corrupt(window, "noise", self.level, seed_for("corrupt", "noise", self.level, self.ids[i], self.seed))
        return np.ascontiguousarray(window)

    @property
    def source_index(self) -> np.ndarray:
        """[N] arange: as in the paper, each tile is an image of its own (the unit of 'same
        image' in retrieval and of the bootstrap); the same tile keeps its index in every
        transformed copy, since copies share the tile list."""
        return np.arange(len(self.ids))

    @property
    def source_image_index(self) -> np.ndarray:
        """[N] index of the FAIR1M image each tile was cut from."""
        return np.array([self._source_of[s] for s, _, _ in self.tiles])

    def instance_map(self, i: int) -> tuple[np.ndarray, list]:
        """int32 [out, out] local object index per pixel (-1 background) and the objects.
        Larger objects are drawn first so a small one on top of a large one stays visible."""
        sample_id, y0, x0 = self.tiles[i]
        objects = self.dataset.label(self.dataset.index_of(sample_id)).objects
        canvas = Image.new("I", (self.out, self.out), -1)
        draw = ImageDraw.Draw(canvas)
        offset = np.array([x0 - self._shift, y0 - self._shift], dtype=np.float32)
        order = sorted(range(len(objects)), key=lambda j: -_polygon_area(objects[j].polygon))
        for j in order:
            draw.polygon([tuple(p) for p in (objects[j].polygon - offset).tolist()], fill=j)
        return np.asarray(canvas, dtype=np.int32), objects

    def patch_objects(self, patch_size: int) -> dict[str, np.ndarray]:
        """Per patch: 'instance' (id unique per original object within this view's tile list,
        -1 background), 'fine' and 'super' category index (-1 background); each int32 [N, g, g].
        A patch lies on the object covering most of its pixels, if that covers at least
        `min_cover` of the patch."""
        if patch_size in self._objects:
            return self._objects[patch_size]
        global_id: dict[tuple[str, int], int] = {}
        instance, fine, sup = [], [], []
        for i, (sample_id, _, _) in enumerate(self.tiles):
            local, objects = self.instance_map(i)
            mode, count = _block_mode(_blocks(local + 1, patch_size), len(objects) + 1)
            owner = np.where(count >= self.min_cover * patch_size**2, mode - 1, -1)
            lookup_inst = np.array([global_id.setdefault((sample_id, j), len(global_id)) for j in range(len(objects))] + [-1])
            lookup_fine = np.array([o.fine_index for o in objects] + [-1])
            lookup_sup = np.array([o.super_index for o in objects] + [-1])
            instance.append(lookup_inst[owner])  # owner -1 picks the trailing -1
            fine.append(lookup_fine[owner])
            sup.append(lookup_sup[owner])
        result = {k: np.stack(v).astype(np.int32) for k, v in (("instance", instance), ("fine", fine), ("super", sup))}
        self._objects[patch_size] = result
        return result


def _polygon_area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


# ---------------------------------------------------------------------------- S6: video frames
class FrameObjects(NamedTuple):
    track_ids: np.ndarray  # int64 [n], unique per (video, track) within the view
    categories: tuple[str, ...]
    boxes: np.ndarray  # float32 [n, 4] xyxy in resized-frame pixels


class VideoFrameView:
    """S6 view: every frame of the chosen videos resized to `size` = (H, W) (336x560 is a
    multiple of both 14 and 16, so ROIAlign's spatial_scale is 1/patch_size). Boxes are scaled
    to the resized frame and clipped to it; boxes thinner than 1 px after clipping are dropped."""

    def __init__(self, dataset, video_ids: Sequence[str], size: tuple[int, int] = (336, 560)):
        self.dataset, self.video_ids, self.size = dataset, list(video_ids), tuple(size)
        if not self.video_ids:
            raise ValueError("a video view needs at least one video")
        self.frames = [f for v in self.video_ids for f in dataset.frames_of(v)]
        self.ids = [f.id for f in self.frames]
        self.key = _view_key("frames", dataset, self.video_ids, size=self.size)
        video_pos = {v: i for i, v in enumerate(self.video_ids)}
        self.video_index = np.array([video_pos[f.video] for f in self.frames])
        self.frame_index = np.array([f.frame_index for f in self.frames])
        self._source_size: dict[str, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> np.ndarray:
        image = self.dataset.read(self.frames[i]).image
        self._source_size.setdefault(self.frames[i].video, image.shape[:2])
        return _resize(image, *self.size, nearest=False)

    def _frame_size(self, video: str) -> tuple[int, int]:
        if video not in self._source_size:
            first = next(f for f in self.frames if f.video == video)
            with Image.open(first.image_path) as im:  # header only
                self._source_size[video] = (im.height, im.width)
        return self._source_size[video]

    def grid_boxes(self, patch_size: int) -> list[np.ndarray]:
        """Boxes of each frame on the patch grid (pixels / patch_size), as ROIAlign with
        spatial_scale=1 takes them on a [H/p, W/p] feature map."""
        return [objects.boxes / patch_size for objects in self.frame_objects()]

    def frame_objects(self) -> list[FrameObjects]:
        track_number: dict[tuple[str, str], int] = {}
        height, width = self.size
        result = []
        for frame in self.frames:
            src_h, src_w = self._frame_size(frame.video)
            scale = np.array([width / src_w, height / src_h] * 2, dtype=np.float32)
            boxes = np.array([o.box for o in frame.objects], dtype=np.float32).reshape(-1, 4) * scale
            boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
            keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
            kept = [o for o, k in zip(frame.objects, keep, strict=True) if k]
            ids = np.array([track_number.setdefault((frame.video, o.track_id), len(track_number)) for o in kept], dtype=np.int64)
            result.append(FrameObjects(ids, tuple(o.category for o in kept), boxes[keep]))
        return result
