"""The harness's own findings (same form as the paper's): stability under resampling (X.1)
and regressions of a swapped checkpoint against a baseline report (X.2)."""

import pytest

from fixtures.verdicts import claim_params, judge_meta


@pytest.fixture(scope="session")
def all_sections(cityscapes_segmentation, ade20k_segmentation, feature_overlap, reconstruction,
                 fair1m_retrieval, bdd100k_association, mot17_association):
    """Every section with its paper claims (cached: measured once by the section tests)."""
    return {
        "cityscapes": (cityscapes_segmentation, [f"S3.{i}" for i in range(1, 13)] + [f"S4.{i}" for i in range(1, 7)]),
        "ade20k": (cityscapes_segmentation.extend(ade20k_segmentation), ["S3.13"]),
        "overlap": (feature_overlap, ["S4.7"]),
        "reconstruction": (reconstruction, ["S4.8"]),
        "fair1m": (fair1m_retrieval, [f"S5.{i}" for i in range(1, 7)]),
        "bdd100k": (bdd100k_association, [f"S6.{i}" for i in range(1, 6)]),
        "mot17": (mot17_association, ["S6.6"]),
    }


@pytest.mark.parametrize("claim_id", claim_params(["X.1", "X.2"]))
def test_harness_claims(claim_id, all_sections, claims_context, claim_recorder):
    judge_meta(claim_id, all_sections, claims_context, claim_recorder)
