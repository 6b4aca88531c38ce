"""Section 6: how well do ViTs track objects? (BDD100K MOT 2020, MOT17)"""

import pytest

from fixtures.verdicts import claim_params, conclude


@pytest.mark.parametrize("claim_id", claim_params(["S6.1", "S6.2", "S6.3", "S6.4", "S6.5"]))
def test_association_bdd100k(claim_id, bdd100k_association, claims_context, claim_recorder):
    conclude(claim_id, bdd100k_association, claims_context, claim_recorder)


@pytest.mark.parametrize("claim_id", claim_params(["S6.6"]))
def test_association_mot17(claim_id, mot17_association, claims_context, claim_recorder):
    conclude(claim_id, mot17_association, claims_context, claim_recorder)
