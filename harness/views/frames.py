"""S6 views: video frames resized for the model, with their tracked boxes.

Frames keep their aspect ratio: the short side is resized to the profile's size (336 px in
the paper profile) and the long side to the aspect-preserving length, each rounded to the
nearest multiple of the model's patch size, so the views depend on the patch size (BDD100K's
1280x720 frames become 336x592 for a ViT-B/16 and 336x602 for DINOv2's patch 14; the aspect
ratio moves by at most half a patch, under 1.5%). A view holds videos of one source frame
size (MOT17's sequences come in two). Frames are resized with PIL's antialiased bilinear
filter; boxes are scaled to the resized frame and clipped to it, and boxes thinner than 1 px
after clipping are dropped.

Frame rates (a gap D counts annotated frames; the report gives D in seconds): BDD100K MOT
2020 labels are at 5 fps; a MOT17 sequence's rate is its seqinfo.ini frameRate.
"""

from __future__ import annotations

import configparser
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from harness.views.base import view_key
from harness.views.ops import resize

BDD100K_MOT_FPS = 5.0  # box_track_20 annotates every 6th frame of the 30 fps video


def model_frame_size(source: tuple[int, int], short_side: int, patch_size: int) -> tuple[int, int]:
    """(H, W) for a frame of `source` = (H, W): the short side `short_side`, the long side
    the aspect-preserving length, both rounded to the nearest multiple of `patch_size`."""
    height, width = source
    if min(height, width) < 1 or short_side < patch_size:
        raise ValueError(f"cannot size a {height}x{width} frame to a short side of {short_side} px")
    scale = short_side / min(height, width)

    def snap(length: float) -> int:
        return max(patch_size, int(round(length / patch_size)) * patch_size)

    return snap(height * scale), snap(width * scale)


def frame_rate(dataset, video: str) -> float:
    """Frames per second of `video`'s annotated frames (see the module docstring)."""
    if hasattr(dataset, "frame_rate"):
        return float(dataset.frame_rate(video))
    if dataset.name == "bdd100k_mot":
        return BDD100K_MOT_FPS
    if dataset.name == "mot17":
        # seqinfo.ini sits in the sequence folder, above the image folder (img1/)
        first = Path(dataset.frames_of(video)[0].image_path)
        for folder in first.parents:
            info = folder / "seqinfo.ini"
            if info.is_file():
                parser = configparser.ConfigParser()
                parser.optionxform = str
                parser.read(info)
                try:
                    return float(parser["Sequence"]["frameRate"])
                except (KeyError, ValueError):
                    raise ValueError(f"{info}: no numeric frameRate in its [Sequence] section") from None
        raise ValueError(f"no seqinfo.ini above {first}: the frame rate of {video} is unknown")
    raise ValueError(f"frame rate of {dataset.name} videos unknown")


def source_frame_size(dataset, video: str) -> tuple[int, int]:
    """(H, W) of a video's frames, from its first frame's header."""
    with Image.open(dataset.frames_of(video)[0].image_path) as im:  # header only
        return im.height, im.width


class FrameObjects(NamedTuple):
    track_ids: np.ndarray  # int64 [n], unique per (video, track) within the view
    categories: tuple[str, ...]
    boxes: np.ndarray  # float32 [n, 4] xyxy in resized-frame pixels


class VideoFrameView:
    """S6 view: every frame of the chosen videos, whose first frames share one size, resized
    to `size` = (H, W); by default the aspect-preserving size of the module docstring for
    `short_side` and `patch_size`."""

    def __init__(self, dataset, video_ids: Sequence[str], size: tuple[int, int] | None = None, *,
                 short_side: int = 336, patch_size: int = 16):
        self.dataset, self.video_ids = dataset, list(video_ids)
        if not self.video_ids:
            raise ValueError("a video view needs at least one video")
        self._source_size = {v: source_frame_size(dataset, v) for v in self.video_ids}
        sizes = set(self._source_size.values())
        if len(sizes) > 1:
            raise ValueError(f"the videos of a view must share one frame size, got {sorted(sizes)}")
        self.source_size = sizes.pop()
        self.size = tuple(size) if size else model_frame_size(self.source_size, short_side, patch_size)
        self.frames = [f for v in self.video_ids for f in dataset.frames_of(v)]
        self.ids = [f.id for f in self.frames]
        self.key = view_key("frames", dataset, self.video_ids, size=self.size)
        video_pos = {v: i for i, v in enumerate(self.video_ids)}
        self.video_index = np.array([video_pos[f.video] for f in self.frames])
        self.frame_index = np.array([f.frame_index for f in self.frames])
        self._frame_sizes: dict[int, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> np.ndarray:
        image = self.dataset.read(self.frames[i]).image
        self._frame_sizes.setdefault(i, image.shape[:2])
        return resize(image, *self.size, nearest=False)

    def _frame_size(self, i: int) -> tuple[int, int]:
        """(H, W) of frame i as stored (a frame may differ from its video's first frame: it is
        resized to the view's size all the same, and its boxes scaled by its own size)."""
        if i not in self._frame_sizes:
            with Image.open(self.frames[i].image_path) as im:  # header only
                self._frame_sizes[i] = (im.height, im.width)
        return self._frame_sizes[i]

    def frame_rate(self, video_index: int) -> float:
        """Frames per second of the view's `video_index`-th video (see `frame_rate`)."""
        return frame_rate(self.dataset, self.video_ids[video_index])

    def grid_boxes(self, patch_size: int) -> list[np.ndarray]:
        """Boxes of each frame on the patch grid (pixels / patch_size), as ROIAlign with
        spatial_scale=1 takes them on a [H/p, W/p] feature map."""
        return [objects.boxes / patch_size for objects in self.frame_objects()]

    def frame_objects(self) -> list[FrameObjects]:
        track_number: dict[tuple[str, str], int] = {}
        height, width = self.size
        result = []
        for i, frame in enumerate(self.frames):
            src_h, src_w = self._frame_size(i)
            scale = np.array([width / src_w, height / src_h] * 2, dtype=np.float32)
            boxes = np.array([o.box for o in frame.objects], dtype=np.float32).reshape(-1, 4) * scale
            boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
            keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
            kept = [o for o, k in zip(frame.objects, keep, strict=True) if k]
            ids = np.array([track_number.setdefault((frame.video, o.track_id), len(track_number)) for o in kept], dtype=np.int64)
            result.append(FrameObjects(ids, tuple(o.category for o in kept), boxes[keep]))
        return result
