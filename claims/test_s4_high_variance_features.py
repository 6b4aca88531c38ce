"""Section 4: why reconstruction-based models fail k-NN: high-variance features."""

import pytest

from fixtures.verdicts import claim_params, conclude


@pytest.mark.parametrize("claim_id", claim_params(["S4.1", "S4.2", "S4.3", "S4.4", "S4.5", "S4.6"]))
def test_high_variance_features(claim_id, cityscapes_segmentation, claims_context, claim_recorder):
    conclude(claim_id, cityscapes_segmentation, claims_context, claim_recorder)


@pytest.mark.parametrize("claim_id", claim_params(["S4.7"]))
def test_top_features_shared_across_datasets(claim_id, feature_overlap, claims_context,
                                             claim_recorder):
    conclude(claim_id, feature_overlap, claims_context, claim_recorder)


@pytest.mark.parametrize("claim_id", claim_params(["S4.8"]))
def test_zeroing_top_features_hurts_reconstruction(claim_id, reconstruction, claims_context,
                                                   claim_recorder):
    conclude(claim_id, reconstruction, claims_context, claim_recorder)
