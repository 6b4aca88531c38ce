"""S5 views: FAIR1M tiles and their transformed copies, with per-patch object ownership.

Tiles are 224x224 crops of the FAIR1M images (no resize: the crop is the image the model
sees), chosen by `harness.data.subsets.fair1m_ids`: each centred on an object of its fine
category, never overlapping another chosen tile of the same image. A patch lies on the object
covering most of its pixels if that object covers at least `min_cover` (25%) of the patch.
Blur and noise are applied to the tile as an image of its own, exactly as to a Cityscapes
tile (see `harness.views.ops`); a shift moves the crop window over real pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from harness.config import seed_for
from harness.views.base import LRU, check_corruption, view_key
from harness.views.ops import block_mode, corrupt, patch_blocks


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


MIN_COVER = 0.25  # share of a patch an object must cover for the patch to lie on it


class Fair1mTileView:
    """S5 view: `out` x `out` FAIR1M tiles named '<sample id>@<y0>,<x0>' (see
    subsets.fair1m_ids), optionally transformed: 'shift' k (the window moves k px up-left over
    the real image, so content moves k px right and down with no filled border), 'blur' and
    'noise' (on the tile itself, mirrored borders for the blur, as for a Cityscapes tile)."""

    def __init__(self, dataset, tile_ids: Sequence[str], out: int = 224, transform: str | None = None,
                 level: float | None = None, seed: int = 0, min_cover: float = MIN_COVER):
        level = check_corruption(transform, level)
        if transform not in (None, "shift", "blur", "noise"):
            raise ValueError("FAIR1M views take 'shift', 'blur' or 'noise'")
        self.dataset, self.ids = dataset, list(tile_ids)
        self.tiles = [parse_tile_id(t) for t in self.ids]
        for sample_id, _, _ in self.tiles:
            dataset.index_of(sample_id)
        self.out, self.transform, self.level, self.seed, self.min_cover = out, transform, level, seed, min_cover
        # The blur once read a margin of real pixels around the tile: its views name the
        # new convention, so that old embeddings are never read back for them.
        blur = {"blur": "centred-box-on-tile"} if transform == "blur" else {}
        self.key = view_key("fair1m-tiles", dataset, self.ids, out=out, transform=transform, level=level,
                            seed=seed if transform == "noise" else None, **blur)
        sources = list(dict.fromkeys(s for s, _, _ in self.tiles))
        self._source_of = {s: i for i, s in enumerate(sources)}
        self._cache = LRU()
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
        window = _crop(image, y0 - k, x0 - k, n, n)
        if self.transform == "blur":
            window = corrupt(window, "blur", self.level)
        elif self.transform == "noise":
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
            mode, count = block_mode(patch_blocks(local + 1, patch_size), len(objects) + 1)
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
