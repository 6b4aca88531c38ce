"""Cityscapes gtFine semantic segmentation, read from its native layout.

    <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

labelIds are mapped to the 19 train classes (trainIds) with the official table of
cityscapesScripts' labels.py; every other id becomes 255 (ignore).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .common import (
    DatasetFormatError,
    DatasetLayoutError,
    IndexedSplit,
    check_same_size,
    read_label_png,
    read_rgb,
    require_dir,
)

NAME = "cityscapes"
SPLITS = ("train", "val")
IGNORE = 255

# (trainId order) name and the labelId it comes from -- cityscapesScripts helpers/labels.py.
TRAIN_CLASSES = (
    ("road", 7), ("sidewalk", 8), ("building", 11), ("wall", 12), ("fence", 13), ("pole", 17),
    ("traffic light", 19), ("traffic sign", 20), ("vegetation", 21), ("terrain", 22), ("sky", 23),
    ("person", 24), ("rider", 25), ("car", 26), ("truck", 27), ("bus", 28), ("train", 31),
    ("motorcycle", 32), ("bicycle", 33),
)
CLASS_NAMES = tuple(name for name, _ in TRAIN_CLASSES)
NUM_CLASSES = len(CLASS_NAMES)

# 256-entry lookup: labelId -> trainId; ids 0..33 outside the 19 train classes (and any
# value a PNG could hold beyond 33) map to ignore.
LABEL_TO_TRAIN = np.full(256, IGNORE, dtype=np.uint8)
for _train_id, (_name, _label_id) in enumerate(TRAIN_CLASSES):
    LABEL_TO_TRAIN[_label_id] = _train_id

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    return LABEL_TO_TRAIN[label_ids]


@dataclass(frozen=True)
class SegSample:
    """One segmentation image: `labels` are class indices (0..C-1) with 255 = ignore."""

    id: str
    image: np.ndarray  # uint8 [H, W, 3]
    labels: np.ndarray  # uint8 [H, W]
    group: str  # city for Cityscapes, "" for ADE20K


@dataclass(frozen=True)
class _Entry:
    id: str
    city: str
    image_path: Path
    label_path: Path


class CityscapesDataset(IndexedSplit):
    """A sized, lazily read sequence of SegSample for one split."""

    name = NAME
    title = "Cityscapes"
    num_classes = NUM_CLASSES
    class_names = CLASS_NAMES

    def __init__(self, root: str | Path, split: str = "train"):
        if split not in SPLITS:
            raise ValueError(f"Cityscapes split must be one of {SPLITS}, got {split!r}")
        self.root = Path(root)
        self.split = split
        self._set_entries(_scan(self.root, split))

    def __getitem__(self, i: int) -> SegSample:  # type: ignore[override]
        e = self._entries[i]
        image = read_rgb(e.image_path)
        labels = label_ids_to_train_ids(read_label_png(e.label_path))
        check_same_size(image, labels, e.label_path, e.image_path)
        return SegSample(e.id, image, labels, e.city)


    def labels_of(self, sample_id: str) -> np.ndarray:
        """trainId labels only, without decoding the image."""
        return label_ids_to_train_ids(read_label_png(self._entries[self.index_of(sample_id)].label_path))

    def group_of(self, sample_id: str) -> str:
        return self._entries[self.index_of(sample_id)].city

    @property
    def cities(self) -> list[str]:
        return sorted({e.city for e in self._entries})


def check_layout(root: str | Path, split: str | None = None) -> None:
    root = Path(root)
    for split_name in (split,) if split else SPLITS:
        require_dir(NAME, root / "leftImg8bit" / split_name, "Cityscapes image")
        require_dir(NAME, root / "gtFine" / split_name, "Cityscapes gtFine label")


def _scan(root: Path, split: str) -> list[_Entry]:
    check_layout(root, split)
    image_dir = root / "leftImg8bit" / split
    entries = []
    for image_path in sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}")):
        city = image_path.parent.name
        stem = image_path.name[: -len(IMAGE_SUFFIX)]
        if not stem.startswith(city + "_"):
            raise DatasetFormatError(image_path, f"file name must start with its city folder name {city!r}")
        label_path = root / "gtFine" / split / city / f"{stem}{LABEL_SUFFIX}"
        if not label_path.is_file():
            raise DatasetLayoutError(NAME, label_path, f"label file for {image_path.name} not found")
        entries.append(_Entry(f"{split}/{stem}", city, image_path, label_path))
    if not entries:
        raise DatasetLayoutError(
            NAME, image_dir / "<city>" / f"<city>_<seq>_<frame>{IMAGE_SUFFIX}", f"empty split {split!r}"
        )
    return entries


def open(root: str | Path, split: str = "train") -> CityscapesDataset:  # noqa: A001 - the reader API name
    return CityscapesDataset(root, split)
