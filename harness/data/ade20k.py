"""ADE20K SceneParsing (ADEChallengeData2016, 150 classes), read from its native layout.

    <root>/ADEChallengeData2016/images/{training,validation}/ADE_*_%08d.jpg
    <root>/ADEChallengeData2016/annotations/{training,validation}/ADE_*_%08d.png

(`<root>` may also be the ADEChallengeData2016 folder itself.) Mask value 0 is "other" and is
not evaluated; values 1..150 are the classes of objectInfo150. Labels are exposed the way
mmsegmentation's `reduce_zero_label` does: 0 -> 255 (ignore), k -> k-1, so classes are 0..149.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cityscapes import SegSample
from .common import (
    DatasetLayoutError,
    IndexedSplit,
    check_same_size,
    read_label_png,
    read_rgb,
    require_dir,
)

NAME = "ade20k"
IGNORE = 255
# canonical split name -> the folder name of the native layout
SPLIT_DIRS = {"train": "training", "val": "validation"}

# objectInfo150 names (first synonym, spaces restored), index = class id after reduce_zero_label.
CLASS_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)
NUM_CLASSES = len(CLASS_NAMES)  # 150

# mask value -> exposed class id (reduce_zero_label)
MASK_TO_CLASS = np.full(256, IGNORE, dtype=np.uint8)
MASK_TO_CLASS[1 : NUM_CLASSES + 1] = np.arange(NUM_CLASSES, dtype=np.uint8)


@dataclass(frozen=True)
class _Entry:
    id: str
    image_path: Path
    label_path: Path


def _base(root: Path) -> Path:
    """The ADEChallengeData2016 folder: either under root or root itself."""
    nested = root / "ADEChallengeData2016"
    return nested if nested.is_dir() or not (root / "images").is_dir() else root


def _canonical_split(split: str) -> str:
    for canonical, folder in SPLIT_DIRS.items():
        if split in (canonical, folder):
            return canonical
    raise ValueError(f"ADE20K split must be one of {tuple(SPLIT_DIRS)} (or {tuple(SPLIT_DIRS.values())}), got {split!r}")


class Ade20kDataset(IndexedSplit):
    name = NAME
    title = "ADE20K"
    num_classes = NUM_CLASSES
    class_names = CLASS_NAMES

    def __init__(self, root: str | Path, split: str = "train"):
        self.root = Path(root)
        self.split = _canonical_split(split)
        self._set_entries(_scan(self.root, self.split))

    def __getitem__(self, i: int) -> SegSample:  # type: ignore[override]
        e = self._entries[i]
        image = read_rgb(e.image_path)
        labels = self._labels(e)
        check_same_size(image, labels, e.label_path, e.image_path)
        return SegSample(e.id, image, labels, "")

    def _labels(self, e: _Entry) -> np.ndarray:
        return MASK_TO_CLASS[read_label_png(e.label_path)]


    def labels_of(self, sample_id: str) -> np.ndarray:
        return self._labels(self._entries[self.index_of(sample_id)])

    def group_of(self, sample_id: str) -> str:
        return ""


def check_layout(root: str | Path, split: str | None = None) -> None:
    base = _base(Path(root))
    for canonical in (_canonical_split(split),) if split else SPLIT_DIRS:
        require_dir(NAME, base / "images" / SPLIT_DIRS[canonical], "ADE20K image")
        require_dir(NAME, base / "annotations" / SPLIT_DIRS[canonical], "ADE20K annotation")


def _scan(root: Path, split: str) -> list[_Entry]:
    check_layout(root, split)
    base = _base(root)
    folder = SPLIT_DIRS[split]
    image_dir = base / "images" / folder
    entries = []
    for image_path in sorted(image_dir.glob("*.jpg")):
        label_path = base / "annotations" / folder / f"{image_path.stem}.png"
        if not label_path.is_file():
            raise DatasetLayoutError(NAME, label_path, f"annotation for {image_path.name} not found")
        entries.append(_Entry(f"{split}/{image_path.stem}", image_path, label_path))
    if not entries:
        raise DatasetLayoutError(NAME, image_dir / "ADE_*.jpg", f"empty split {split!r}")
    return entries


def open(root: str | Path, split: str = "train") -> Ade20kDataset:  # noqa: A001
    return Ade20kDataset(root, split)
