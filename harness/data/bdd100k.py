"""BDD100K MOT 2020 (box_track_20), read from its native layout.

    <root>/images/track/<split>/<video>/<video>-0000001.jpg   (1-based, 1280x720)
    <root>/labels/box_track_20/<split>/<video>.json           (list of frames, 0-based frameIndex)

Only the 8 evaluated tracking categories are kept (the benchmark's name aliases applied).
Boxes with crowd=true are ignore regions and the distractor classes ("other person",
"other vehicle", "trailer") are not evaluated by the benchmark: both are dropped here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .common import DatasetFormatError, DatasetLayoutError, require_dir
from .video import FrameEntry, TrackedObject, VideoDataset

NAME = "bdd100k_mot"
SPLITS = ("train", "val")
CLASS_NAMES = ("pedestrian", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
NUM_CLASSES = len(CLASS_NAMES)
SUPERCATEGORY = {"pedestrian": "human", "rider": "human", "car": "vehicle", "truck": "vehicle",
                 "bus": "vehicle", "train": "vehicle", "motorcycle": "bike", "bicycle": "bike"}
ALIASES = {"bike": "bicycle", "motor": "motorcycle", "person": "pedestrian", "caravan": "car", "van": "car"}
DISTRACTORS = ("other person", "other vehicle", "trailer")


def _base(root: Path) -> Path:
    nested = root / "bdd100k"
    return nested if (nested / "labels").is_dir() and not (root / "labels").is_dir() else root


def check_layout(root: str | Path, split: str = "val") -> None:
    base = _base(Path(root))
    require_dir(NAME, base / "labels" / "box_track_20" / split, "BDD100K box_track_20 label")
    require_dir(NAME, base / "images" / "track" / split, "BDD100K track image")


def parse_video_labels(path: Path, image_dir: Path, split: str) -> list[FrameEntry]:
    try:
        frames = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise DatasetFormatError(path, f"not valid JSON ({err})") from err
    if not isinstance(frames, list):
        raise DatasetFormatError(path, "expected a JSON list of frames")
    entries = []
    for frame in frames:
        try:
            name, video, index = frame["name"], frame["videoName"], int(frame["frameIndex"])
        except (KeyError, TypeError, ValueError):
            raise DatasetFormatError(path, "each frame needs 'name', 'videoName' and 'frameIndex'") from None
        objects = []
        for label in frame.get("labels") or []:
            obj = _parse_label(path, name, label)
            if obj is not None:
                objects.append(obj)
        entries.append(FrameEntry(f"{split}/{Path(name).stem}", video, index, image_dir / name, tuple(objects)))
    if not entries:
        raise DatasetFormatError(path, "no frames")
    entries.sort(key=lambda e: e.frame_index)
    return entries


def _parse_label(path: Path, frame_name: str, label: dict) -> TrackedObject | None:
    category = ALIASES.get(label.get("category"), label.get("category"))
    attributes = label.get("attributes") or {}
    if category in DISTRACTORS or attributes.get("crowd", False):
        return None
    if category not in CLASS_NAMES:
        raise DatasetFormatError(
            path, f"frame {frame_name}: unknown category {label.get('category')!r}; expected one of "
            f"{CLASS_NAMES} or a distractor {DISTRACTORS}"
        )
    try:
        b = label["box2d"]
        box = np.array([b["x1"], b["y1"], b["x2"], b["y2"]], dtype=np.float32)
        track_id = str(label["id"])
    except (KeyError, TypeError, ValueError):
        raise DatasetFormatError(path, f"frame {frame_name}: label needs 'id' and 'box2d' x1,y1,x2,y2") from None
    return TrackedObject(track_id, category, box)


class Bdd100kMotDataset(VideoDataset):
    name = NAME
    categories = CLASS_NAMES
    num_classes = NUM_CLASSES
    class_names = CLASS_NAMES

    def __init__(self, root: str | Path, split: str = "val"):
        if split not in SPLITS:
            raise ValueError(f"BDD100K MOT split must be one of {SPLITS}, got {split!r}")
        root = Path(root)
        check_layout(root, split)
        self._label_dir = _base(root) / "labels" / "box_track_20" / split
        self._image_dir = _base(root) / "images" / "track" / split
        videos = sorted(p.stem for p in self._label_dir.glob("*.json"))
        if not videos:
            raise DatasetLayoutError(NAME, self._label_dir / "<video>.json", f"empty split {split!r}")
        super().__init__(root, split, videos)

    def _load_frames(self, video: str) -> list[FrameEntry]:
        return parse_video_labels(self._label_dir / f"{video}.json", self._image_dir / video, self.split)


def open(root: str | Path, split: str = "val") -> Bdd100kMotDataset:  # noqa: A001
    return Bdd100kMotDataset(root, split)
