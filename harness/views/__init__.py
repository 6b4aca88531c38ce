"""Views: the exact pixels and labels each claim feeds to a model, prepared as the paper says.

Every view is a pure function of (dataset, chosen ids, parameters, seed): the same inputs give
the same bytes, and `view.key` names them for the embedding cache. Views read lazily, one
source image at a time (a small LRU keeps the last decoded images, since 32 tiles come from
one Cityscapes frame).

    ops.py     corruptions, tiling, patch labels (the conventions are in its docstring)
    tiles.py   TileView: S3/S4 segmentation tiles
    fair1m.py  Fair1mTileView: S5 FAIR1M tiles and their transformed copies
    frames.py  VideoFrameView: S6 video frames with tracked boxes
    paper.py   the paper's views of each dataset per profile (and their containers)
"""

from harness.views.fair1m import Fair1mTileView, parse_tile_id
from harness.views.frames import FrameObjects, VideoFrameView, frame_rate, model_frame_size
from harness.views.ops import (
    BAND_EDGES,
    BAND_NOISE_STD,
    CORRUPTIONS,
    IGNORE,
    LEVELS,
    band_mask,
    band_noise,
    corrupt,
    majority_patch_labels,
    shift,
    tile,
    tile_labels,
)
from harness.views.paper import RetrievalViews, SegmentationViews, VarianceSet
from harness.views.tiles import TileView

__all__ = [
    "BAND_EDGES",
    "BAND_NOISE_STD",
    "CORRUPTIONS",
    "IGNORE",
    "LEVELS",
    "Fair1mTileView",
    "FrameObjects",
    "RetrievalViews",
    "SegmentationViews",
    "TileView",
    "VarianceSet",
    "VideoFrameView",
    "band_mask",
    "band_noise",
    "corrupt",
    "frame_rate",
    "majority_patch_labels",
    "model_frame_size",
    "parse_tile_id",
    "shift",
    "tile",
    "tile_labels",
]
