"""FAIR1M (2.0 layout) fine-grained oriented objects, read from its native layout.

    <root>/train/part1/{images/<n>.tif, labelXml/<n>.xml}   (and part2, ...)
    <root>/train/{images,labelXml}/                           (FAIR1M-1.0/1.5 style, also read)
    <root>/validation/{images,labelXml}/

Each XML lists objects as closed rotated boxes: five "x,y" points, the fifth repeating the first.
File names restart at 0 in validation, so a sample id is "<split>/<n>" (split = train | val).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .common import DatasetFormatError, DatasetLayoutError, IndexedSplit, read_rgb, require_dir

NAME = "fair1m"
SPLIT_DIRS = {"train": "train", "val": "validation"}
LABEL_CACHE_SIZE = 1024

# Supercategory -> fine categories, exact strings of the real XML <name> fields.
SUPERCATEGORIES = {
    "Airplane": ("Boeing737", "Boeing747", "Boeing777", "Boeing787", "C919", "A220", "A321",
                 "A330", "A350", "ARJ21", "other-airplane"),
    "Ship": ("Passenger Ship", "Motorboat", "Fishing Boat", "Tugboat", "Engineering Ship",
             "Liquid Cargo Ship", "Dry Cargo Ship", "Warship", "other-ship"),
    "Vehicle": ("Small Car", "Bus", "Cargo Truck", "Dump Truck", "Van", "Trailer", "Tractor",
                "Excavator", "Truck Tractor", "other-vehicle"),
    "Court": ("Baseball Field", "Basketball Court", "Football Field", "Tennis Court"),
    "Road": ("Intersection", "Roundabout", "Bridge"),
}
SUPER_NAMES = tuple(SUPERCATEGORIES)
CLASS_NAMES = tuple(fine for fines in SUPERCATEGORIES.values() for fine in fines)  # 37
NUM_CLASSES = len(CLASS_NAMES)
FINE_INDEX = {name: i for i, name in enumerate(CLASS_NAMES)}
SUPER_OF = {fine: sup for sup, fines in SUPERCATEGORIES.items() for fine in fines}
SUPER_INDEX = {name: i for i, name in enumerate(SUPER_NAMES)}


@dataclass(frozen=True)
class Fair1mObject:
    category: str  # fine-grained category
    supercategory: str
    fine_index: int
    super_index: int
    polygon: np.ndarray  # float32 [4, 2] corners (x, y) in image pixels, any start corner


@dataclass(frozen=True)
class Fair1mSample:
    id: str
    image: np.ndarray  # uint8 [H, W, 3]
    objects: tuple[Fair1mObject, ...]


@dataclass(frozen=True)
class Fair1mLabel:
    width: int
    height: int
    objects: tuple[Fair1mObject, ...]


@dataclass(frozen=True)
class _Entry:
    id: str
    image_path: Path
    label_path: Path


def _canonical_split(split: str) -> str:
    for canonical, folder in SPLIT_DIRS.items():
        if split in (canonical, folder):
            return canonical
    raise ValueError(f"FAIR1M split must be one of {tuple(SPLIT_DIRS)}, got {split!r}")


def parse_label_xml(path: str | Path) -> Fair1mLabel:
    """Read one FAIR1M label XML; any deviation from the format is an error naming the file."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise DatasetFormatError(path, f"not well-formed XML ({err})") from err
    try:
        width = int(root.findtext("size/width"))
        height = int(root.findtext("size/height"))
    except (TypeError, ValueError):
        raise DatasetFormatError(path, "missing or non-integer <size><width>/<height>") from None
    objects = []
    for k, obj in enumerate(root.iterfind("objects/object")):
        name = (obj.findtext("possibleresult/name") or "").strip()
        if name not in FINE_INDEX:
            raise DatasetFormatError(path, f"object {k}: unknown category {name!r}; expected one of the 37 FAIR1M fine categories")
        polygon = _parse_points(path, k, [p.text or "" for p in obj.iterfind("points/point")])
        sup = SUPER_OF[name]
        objects.append(Fair1mObject(name, sup, FINE_INDEX[name], SUPER_INDEX[sup], polygon))
    return Fair1mLabel(width, height, tuple(objects))


def _parse_points(path: Path, k: int, texts: list[str]) -> np.ndarray:
    try:
        points = np.array([[float(v) for v in t.split(",")] for t in texts], dtype=np.float64)
    except ValueError:
        raise DatasetFormatError(path, f"object {k}: malformed polygon point in {texts}; expected 'x,y' numbers") from None
    if points.ndim != 2 or points.shape[1] != 2:
        raise DatasetFormatError(path, f"object {k}: malformed polygon {texts}; each point must be 'x,y'")
    if len(points) == 5 and np.allclose(points[0], points[4]):
        points = points[:4]  # the closing repeat of the first corner
    if len(points) != 4 or not np.isfinite(points).all():
        raise DatasetFormatError(
            path, f"object {k}: malformed polygon with {len(texts)} points; expected a rotated box of "
            "5 points whose last repeats the first"
        )
    return points.astype(np.float32)


class Fair1mDataset(IndexedSplit):
    name = NAME
    title = "FAIR1M"
    num_classes = NUM_CLASSES
    class_names = CLASS_NAMES

    def __init__(self, root: str | Path, split: str = "train"):
        self.root = Path(root)
        self.split = _canonical_split(split)
        self._set_entries(_scan(self.root, self.split))
        # the last parsed label files (a full split holds ~1M objects: too many to keep all)
        self._labels: OrderedDict[int, Fair1mLabel] = OrderedDict()

    def __getitem__(self, i: int) -> Fair1mSample:  # type: ignore[override]
        e = self._entries[i]
        label = self.label(i)
        image = self.image(i)
        if image.shape[:2] != (label.height, label.width):
            raise DatasetFormatError(
                e.label_path, f"<size> {label.width}x{label.height} differs from image "
                f"{e.image_path.name} ({image.shape[1]}x{image.shape[0]})"
            )
        return Fair1mSample(e.id, image, label.objects)

    def image(self, i: int) -> np.ndarray:
        e = self._entries[i]
        if not e.image_path.is_file():
            raise DatasetLayoutError(NAME, e.image_path, f"image for {e.label_path.name} not found")
        return read_rgb(e.image_path)

    def label(self, i: int) -> Fair1mLabel:
        if i in self._labels:
            self._labels.move_to_end(i)
        else:
            self._labels[i] = parse_label_xml(self._entries[i].label_path)
            if len(self._labels) > LABEL_CACHE_SIZE:
                self._labels.popitem(last=False)
        return self._labels[i]



def _part_dirs(root: Path, split: str) -> list[Path]:
    split_dir = root / SPLIT_DIRS[split]
    if (split_dir / "labelXml").is_dir():
        return [split_dir]
    return sorted(p for p in split_dir.glob("part*") if (p / "labelXml").is_dir())


def check_layout(root: str | Path, split: str | None = None) -> None:
    root = Path(root)
    for canonical in (_canonical_split(split),) if split else SPLIT_DIRS:
        split_dir = require_dir(NAME, root / SPLIT_DIRS[canonical], "FAIR1M split")
        parts = _part_dirs(root, canonical)
        if not parts:
            raise DatasetLayoutError(NAME, split_dir / "part1" / "labelXml", "FAIR1M label folder not found")
        for part in parts:
            require_dir(NAME, part / "images", "FAIR1M image")


def _scan(root: Path, split: str) -> list[_Entry]:
    check_layout(root, split)
    entries, seen = [], set()
    for part in _part_dirs(root, split):
        for label_path in sorted(part.glob("labelXml/*.xml"), key=lambda p: (len(p.stem), p.stem)):
            sample_id = f"{split}/{label_path.stem}"
            if sample_id in seen:
                raise DatasetFormatError(label_path, f"name {label_path.stem} occurs in two parts of {split}")
            seen.add(sample_id)
            entries.append(_Entry(sample_id, part / "images" / f"{label_path.stem}.tif", label_path))
    if not entries:
        raise DatasetLayoutError(NAME, root / SPLIT_DIRS[split] / "part1" / "labelXml" / "<n>.xml", f"empty split {split!r}")
    return entries


def open(root: str | Path, split: str = "train") -> Fair1mDataset:  # noqa: A001
    return Fair1mDataset(root, split)
