"""Section 3: can transformers recognise the semantics of patches? (Cityscapes, ADE20K)"""

import pytest

from fixtures.verdicts import claim_params, conclude

CITYSCAPES_CLAIMS = ["S3.1", "S3.2", "S3.3", "S3.4", "S3.5", "S3.6", "S3.7", "S3.8", "S3.9",
                     "S3.10", "S3.11", "S3.12"]


@pytest.mark.parametrize("claim_id", claim_params(CITYSCAPES_CLAIMS))
def test_patch_classification(claim_id, cityscapes_segmentation, claims_context, claim_recorder):
    conclude(claim_id, cityscapes_segmentation, claims_context, claim_recorder)


@pytest.mark.parametrize("claim_id", claim_params(["S3.13"]))
def test_ranking_matches_on_ade20k(claim_id, cityscapes_segmentation, ade20k_segmentation,
                                   claims_context, claim_recorder):
    conclude(claim_id, cityscapes_segmentation.extend(ade20k_segmentation), claims_context,
             claim_recorder)
