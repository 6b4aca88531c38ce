"""S3/S4 views: segmentation images cut into tiles of the size the model sees.

Cityscapes: each 1024x2048 frame is cut into 256x256 tiles (32 per frame), each resized to
224x224 and treated as an image of its own, as in the paper. ADE20K: each image is resized to
448x672 and cut into 6 tiles of 224. A corrupted view corrupts each tile after its resize
(see `harness.views.ops`), with noise drawn per tile; only a shift moves the whole prepared
image (and its labels) before tiling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.config import seed_for
from harness.views.base import LRU, check_corruption, view_key
from harness.views.ops import (
    corrupt,
    majority_patch_labels,
    resize,
    shift,
    tile,
    tile_grid,
    tile_labels,
)

NOISY = ("noise", "band_noise", "band_noise_literal")  # corruptions that draw from a seed


class TileView:
    """S3 view of a segmentation dataset: each source image (optionally resized to `resize`
    = (H, W)) cut into `tile`-px tiles resized to `out`, then optionally corrupted per tile.

    Cityscapes: TileView(ds, ids) -> 32 tiles of 256 px per 1024x2048 frame, each 224 px.
    ADE20K: TileView(ds, ids, tile=224, out=224, resize=(448, 672)) -> 6 tiles per image.
    """

    def __init__(self, dataset, sample_ids: Sequence[str], tile: int = 256, out: int = 224,
                 corruption: str | None = None, level: float | None = None, seed: int = 0,
                 resize: tuple[int, int] | None = None):
        level = check_corruption(corruption, level)
        self.dataset, self.sample_ids = dataset, list(sample_ids)
        if not self.sample_ids:
            raise ValueError("a view needs at least one sample id")
        for sample_id in self.sample_ids:
            dataset.index_of(sample_id)  # unknown ids fail here, not mid-extraction
        self.tile_size, self.out, self.resize = tile, out, tuple(resize) if resize else None
        self.corruption, self.level, self.seed = corruption, level, seed
        shape = self.resize or self._labels(self.sample_ids[0]).shape
        self.grid = tile_grid(shape, tile)
        self.tiles_per_image = self.grid[0] * self.grid[1]
        # Corrupted views name where the corruption is applied, so that embeddings of the
        # earlier whole-frame convention are never read back for them (clean keys unchanged).
        where = {"corrupted": "per-tile"} if corruption not in (None, "shift") else {}
        self.key = view_key("tiles", dataset, self.sample_ids, tile=tile, out=out, resize=self.resize,
                            corruption=corruption, level=level,
                            seed=seed if corruption in NOISY else None, **where)
        self.ids = [f"{s}#{r}_{c}" for s in self.sample_ids for r in range(self.grid[0]) for c in range(self.grid[1])]
        self._cache = LRU()
        self._patch_labels: dict[int, np.ndarray] = {}
        self._tile_labels: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        image_index, tile_index = divmod(i % len(self), self.tiles_per_image)
        return self._cache.get(image_index, lambda: self._tiles(image_index))[tile_index]

    def image(self, image_index: int) -> np.ndarray:
        """The prepared source image before tiling: resized (ADE20K), shifted when the view
        is shifted; other corruptions are applied per tile, not here."""
        image = self.dataset.get(self.sample_ids[image_index]).image
        if self.resize:
            image = resize(image, *self.resize, nearest=False)
        if self.corruption == "shift":
            image = corrupt(image, "shift", self.level)
        return image

    def _tiles(self, image_index: int) -> np.ndarray:
        image = self.image(image_index)
        if tile_grid(image.shape, self.tile_size) != self.grid:
            raise ValueError(f"{self.sample_ids[image_index]}: size {image.shape[:2]} differs from the "
                             f"view's first image; all images of a view must share one size")
        tiles = tile(image, self.tile_size, self.out)
        if self.corruption in (None, "shift"):
            return tiles
        first = image_index * self.tiles_per_image
        return np.stack([
            corrupt(t, self.corruption, self.level,
                    seed_for("corrupt", self.corruption, self.level, self.ids[first + k], self.seed))
            for k, t in enumerate(tiles)])

    def _labels(self, sample_id: str) -> np.ndarray:
        labels = self.dataset.labels_of(sample_id)
        return resize(labels, *self.resize, nearest=True) if self.resize else labels

    def labels(self, image_index: int) -> np.ndarray:
        """Label map of a source image in the view's geometry (resized; shifted when shifted)."""
        labels = self._labels(self.sample_ids[image_index])
        return shift(labels, int(self.level)) if self.corruption == "shift" else labels

    def label_tiles(self, image_index: int) -> np.ndarray:
        """uint8 [tiles_per_image, out, out]: the label map of each tile the model sees
        (nearest-neighbour resize of the label tile)."""
        if image_index not in self._tile_labels:
            self._tile_labels.clear()  # one image at a time: a view's label maps add up
            self._tile_labels[image_index] = tile_labels(self.labels(image_index), self.tile_size, self.out)
        return self._tile_labels[image_index]

    def patch_labels(self, patch_size: int) -> np.ndarray:
        """int16 [N, out/p, out/p]: majority label per patch of each tile (255 = ignore), taken on
        the label tile after its nearest-neighbour resize to `out`."""
        if patch_size not in self._patch_labels:
            self._patch_labels[patch_size] = np.concatenate([
                majority_patch_labels(self.label_tiles(i), patch_size) for i in range(len(self.sample_ids))
            ])
        return self._patch_labels[patch_size]

    @property
    def source_index(self) -> np.ndarray:
        """[N] index of each tile's source image (for bootstrap over images)."""
        return np.repeat(np.arange(len(self.sample_ids)), self.tiles_per_image)

    def _class_ids(self, classes: Sequence[int | str]) -> list[int]:
        return [self.dataset.class_names.index(c) if isinstance(c, str) else int(c) for c in classes]

    def class_fractions(self, classes: Sequence[int | str]) -> np.ndarray:
        """[N_images, len(classes)]: share of all pixels of each source image labelled with each
        class (by id or name), on the source label map."""
        class_ids = self._class_ids(classes)
        fractions = np.empty((len(self.sample_ids), len(class_ids)))
        for i, sample_id in enumerate(self.sample_ids):
            counts = np.bincount(self.dataset.labels_of(sample_id).ravel(), minlength=256)
            fractions[i] = counts[class_ids] / counts.sum()
        return fractions

    def tile_class_fractions(self, classes: Sequence[int | str]) -> np.ndarray:
        """[N, len(classes)]: share of all pixels of each tile's label map (the `out` x `out`
        labels of the image the model sees, 'ignore' included in the total) per class."""
        class_ids = self._class_ids(classes)
        fractions = np.empty((len(self), len(class_ids)))
        for i in range(len(self.sample_ids)):
            for k, labels in enumerate(self.label_tiles(i)):
                counts = np.bincount(labels.ravel(), minlength=256)
                fractions[i * self.tiles_per_image + k] = counts[class_ids] / counts.sum()
        return fractions

    def central_patch(self, patch_size: int) -> np.ndarray:
        """int [N_images, 3]: (view index of the tile, patch row, patch col) of the patch that
        holds the centre pixel of each source image (the frame-level S4.6 variant)."""
        height, width = self.grid[0] * self.tile_size, self.grid[1] * self.tile_size
        cy, cx = height // 2, width // 2
        r, c = cy // self.tile_size, cx // self.tile_size
        scale = self.out / self.tile_size
        pr, pc = int((cy - r * self.tile_size) * scale) // patch_size, int((cx - c * self.tile_size) * scale) // patch_size
        tile_in_image = r * self.grid[1] + c
        starts = np.arange(len(self.sample_ids)) * self.tiles_per_image
        return np.stack([starts + tile_in_image, np.full_like(starts, pr), np.full_like(starts, pc)], axis=1)
