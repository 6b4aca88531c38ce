"""Moved to `harness.views.paper` (experiments import views, never the reverse); this name
stays only for the old claims fixtures until they are replaced."""

from harness.views.paper import (  # noqa: F401
    ADE20K_SIZE,
    Record,
    RetrievalViews,
    SegmentationViews,
    VarianceSet,
    overlap_views,
    retrieval_views,
    segmentation_views,
    video_views,
    views_to_extract,
)
