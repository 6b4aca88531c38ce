"""S6 views: video frames resized for the model, with their tracked boxes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image

from harness.views.base import view_key
from harness.views.ops import resize


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
        self.key = view_key("frames", dataset, self.video_ids, size=self.size)
        video_pos = {v: i for i, v in enumerate(self.video_ids)}
        self.video_index = np.array([video_pos[f.video] for f in self.frames])
        self.frame_index = np.array([f.frame_index for f in self.frames])
        self._source_size: dict[str, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> np.ndarray:
        image = self.dataset.read(self.frames[i]).image
        self._source_size.setdefault(self.frames[i].video, image.shape[:2])
        return resize(image, *self.size, nearest=False)

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
