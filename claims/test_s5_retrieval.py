"""Section 5: at which granularity do transformers detect objects? (FAIR1M)"""

import pytest

from fixtures.verdicts import claim_params, conclude


@pytest.mark.parametrize("claim_id", claim_params(["S5.1", "S5.2", "S5.3", "S5.4", "S5.5", "S5.6"]))
def test_instance_retrieval(claim_id, fair1m_retrieval, claims_context, claim_recorder):
    conclude(claim_id, fair1m_retrieval, claims_context, claim_recorder)
