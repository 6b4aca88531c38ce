"""MOT17 (MOTChallenge) train sequences, read from the native layout.

    <root>/MOT17/train/<seq>/{seqinfo.ini, img1/%06d.jpg, gt/gt.txt}   (or <root>/train/<seq>/)

gt.txt rows are `frame,id,bb_left,bb_top,bb_width,bb_height,flag,class,visibility` (1-based
frame, id and pixel coordinates). As in the benchmark's evaluation, only rows with class 1
(pedestrian) and flag != 0 are ground truth; all other rows are dropped. Boxes are turned
into 0-based xyxy: x1 = bb_left - 1, x2 = x1 + bb_width (same for y).
"""

from __future__ import annotations

import configparser
from collections import defaultdict
from pathlib import Path

import numpy as np

from .common import DatasetFormatError, DatasetLayoutError, require_dir
from .video import FrameEntry, TrackedObject, VideoDataset

NAME = "mot17"
SPLITS = ("train",)
CLASS_NAMES = ("pedestrian",)
NUM_CLASSES = 1
PEDESTRIAN = 1
SEQINFO_KEYS = ("imDir", "seqLength", "imWidth", "imHeight", "imExt")


def _split_dir(root: Path, split: str) -> Path:
    nested = root / "MOT17" / split
    return nested if nested.is_dir() else root / split


def check_layout(root: str | Path, split: str = "train") -> None:
    if split not in SPLITS:
        raise ValueError(f"MOT17 split must be 'train' (only train sequences have gt), got {split!r}")
    split_dir = _split_dir(Path(root), split)
    if not split_dir.is_dir():
        raise DatasetLayoutError(NAME, Path(root) / "MOT17" / split, "MOT17 train folder not found")


def read_seqinfo(path: Path) -> dict[str, str | int]:
    if not path.is_file():
        raise DatasetLayoutError(NAME, path, "seqinfo.ini not found")
    parser = configparser.ConfigParser()
    parser.optionxform = str  # keys are camelCase
    try:
        parser.read(path)
        section = parser["Sequence"]
        info = {key: section[key] for key in SEQINFO_KEYS}
    except (KeyError, configparser.Error) as err:
        raise DatasetFormatError(path, f"expected a [Sequence] section with {SEQINFO_KEYS} ({err})") from None
    for key in ("seqLength", "imWidth", "imHeight"):
        info[key] = int(info[key])
    return info


def read_gt(path: Path) -> dict[int, list[TrackedObject]]:
    """Pedestrian boxes per 1-based frame number."""
    if not path.is_file():
        raise DatasetLayoutError(NAME, path, "gt/gt.txt not found")
    per_frame: dict[int, list[TrackedObject]] = defaultdict(list)
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) < 9:
            raise DatasetFormatError(
                path, f"line {line_no}: {len(fields)} fields; expected 9 "
                "(frame,id,bb_left,bb_top,bb_width,bb_height,flag,class,visibility)"
            )
        try:
            frame, track = int(fields[0]), int(fields[1])
            left, top, width, height = (float(v) for v in fields[2:6])
            flag, cls = int(float(fields[6])), int(float(fields[7]))
        except ValueError:
            raise DatasetFormatError(path, f"line {line_no}: non-numeric field in {line!r}") from None
        if cls != PEDESTRIAN or flag == 0:
            continue
        box = np.array([left - 1, top - 1, left - 1 + width, top - 1 + height], dtype=np.float32)
        per_frame[frame].append(TrackedObject(str(track), "pedestrian", box))
    return per_frame


class Mot17Dataset(VideoDataset):
    name = NAME
    categories = CLASS_NAMES
    num_classes = NUM_CLASSES
    class_names = CLASS_NAMES

    def __init__(self, root: str | Path, split: str = "train"):
        root = Path(root)
        check_layout(root, split)
        self._split_dir = _split_dir(root, split)
        videos = sorted(p.name for p in self._split_dir.iterdir() if (p / "seqinfo.ini").is_file())
        if not videos:
            raise DatasetLayoutError(NAME, self._split_dir / "MOT17-02-FRCNN" / "seqinfo.ini", f"empty split {split!r}")
        super().__init__(root, split, videos)

    def seqinfo(self, video: str) -> dict[str, str | int]:
        return read_seqinfo(self._split_dir / video / "seqinfo.ini")

    def _load_frames(self, video: str) -> list[FrameEntry]:
        seq_dir = self._split_dir / video
        info = self.seqinfo(video)
        image_dir = require_dir(NAME, seq_dir / str(info["imDir"]), "MOT17 image")
        boxes = read_gt(seq_dir / "gt" / "gt.txt")
        return [
            FrameEntry(
                f"{self.split}/{video}/{n:06d}", video, n - 1,
                image_dir / f"{n:06d}{info['imExt']}", tuple(boxes.get(n, ())),
            )
            for n in range(1, int(info["seqLength"]) + 1)
        ]


def open(root: str | Path, split: str = "train") -> Mot17Dataset:  # noqa: A001
    return Mot17Dataset(root, split)
