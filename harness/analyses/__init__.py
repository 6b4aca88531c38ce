"""Analyses of patch embeddings from the paper (plain functions on numpy arrays)."""

from harness.analyses.association import (
    AssociationResult,
    FrameObjects,
    association_accuracy,
    pool_boxes,
)
from harness.analyses.context import (
    context_feature_subset,
    global_context_r2,
    r2_from_units,
    tile_context_units,
)
from harness.analyses.overlap import feature_overlap
from harness.analyses.retrieval import OUTCOMES, PatchMeta, RetrievalOutcomes, retrieval_outcomes
from harness.analyses.variance import (
    drop_features,
    feature_variances,
    top_variance_features,
    variance_ratio_top_over_median,
)
from harness.probes.metrics import majority_class_fraction

__all__ = [
    "OUTCOMES",
    "AssociationResult",
    "FrameObjects",
    "PatchMeta",
    "RetrievalOutcomes",
    "association_accuracy",
    "context_feature_subset",
    "drop_features",
    "feature_overlap",
    "feature_variances",
    "global_context_r2",
    "majority_class_fraction",
    "pool_boxes",
    "r2_from_units",
    "retrieval_outcomes",
    "tile_context_units",
    "top_variance_features",
    "variance_ratio_top_over_median",
]
