"""What the two tracking datasets share: frames with tracked boxes, grouped by video."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .common import DatasetLayoutError, read_rgb


@dataclass(frozen=True)
class TrackedObject:
    track_id: str  # unique within its video, stable across frames
    category: str
    box: np.ndarray  # float32 [4] x1, y1, x2, y2 in 0-based image pixels (may exceed the image)


@dataclass(frozen=True)
class FrameEntry:
    """A frame without its pixels."""

    id: str
    video: str
    frame_index: int  # 0-based position in the video
    image_path: Path
    objects: tuple[TrackedObject, ...]


@dataclass(frozen=True)
class VideoFrameSample:
    id: str
    image: np.ndarray  # uint8 [H, W, 3]
    objects: tuple[TrackedObject, ...]
    video: str
    frame_index: int


class VideoDataset(Sequence):
    """All frames of all videos of one split, in video order then frame order; labels are
    parsed per video on first use and pixels are read only in __getitem__."""

    name: str
    categories: tuple[str, ...]

    def __init__(self, root: Path, split: str, videos: list[str]):
        self.root = root
        self.split = split
        self.videos = videos
        self._frames: dict[str, list[FrameEntry]] = {}
        self._offsets: np.ndarray | None = None

    def _load_frames(self, video: str) -> list[FrameEntry]:
        raise NotImplementedError

    def frames_of(self, video: str) -> list[FrameEntry]:
        if video not in self._frames:
            if video not in self.videos:
                raise KeyError(f"{video!r} is not a {self.name} {self.split} video")
            self._frames[video] = self._load_frames(video)
        return self._frames[video]

    def _offsets_table(self) -> np.ndarray:
        if self._offsets is None:
            self._offsets = np.cumsum([0] + [len(self.frames_of(v)) for v in self.videos])
        return self._offsets

    def __len__(self) -> int:
        return int(self._offsets_table()[-1])

    def __getitem__(self, i: int) -> VideoFrameSample:  # type: ignore[override]
        offsets = self._offsets_table()
        if not 0 <= i < offsets[-1]:
            raise IndexError(i)
        v = int(np.searchsorted(offsets, i, side="right")) - 1
        return self.read(self.frames_of(self.videos[v])[i - offsets[v]])

    def read(self, frame: FrameEntry) -> VideoFrameSample:
        if not frame.image_path.is_file():
            raise DatasetLayoutError(self.name, frame.image_path, f"frame {frame.frame_index} of {frame.video} not found")
        return VideoFrameSample(frame.id, read_rgb(frame.image_path), frame.objects, frame.video, frame.frame_index)
