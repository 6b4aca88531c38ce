"""Analyses of patch embeddings from the paper (plain functions on numpy arrays)."""

from harness.analyses.association import (
    AssociationResult,
    FrameObjects,
    association_accuracy,
    pool_boxes,
)
from harness.analyses.bootstrap import (
    BootstrapResult,
    bootstrap,
    bootstrap_confusion,
    resample_counts,
    resample_indices,
)
from harness.analyses.context import (
    context_feature_subset,
    global_context_r2,
    r2_from_units,
    tile_context_units,
)
from harness.analyses.overlap import feature_overlap, top_feature_overlap
from harness.analyses.retrieval import OUTCOMES, PatchMeta, RetrievalOutcomes, retrieval_outcomes
from harness.analyses.robustness import relative_drop
from harness.analyses.variance import (
    drop_features,
    feature_variances,
    prune_top_variance,
    top_variance_features,
    variance_ratio_top_over_median,
)
from harness.probes.metrics import majority_class_fraction

__all__ = [
    "OUTCOMES",
    "AssociationResult",
    "BootstrapResult",
    "FrameObjects",
    "PatchMeta",
    "RetrievalOutcomes",
    "association_accuracy",
    "bootstrap",
    "bootstrap_confusion",
    "context_feature_subset",
    "drop_features",
    "feature_overlap",
    "feature_variances",
    "global_context_r2",
    "majority_class_fraction",
    "pool_boxes",
    "r2_from_units",
    "prune_top_variance",
    "relative_drop",
    "resample_counts",
    "resample_indices",
    "retrieval_outcomes",
    "tile_context_units",
    "top_feature_overlap",
    "top_variance_features",
    "variance_ratio_top_over_median",
]
