"""The paper's claims as tests, and how a claim is judged.

A claim is a test function in claims/ marked `@claim(ID, ...)`: its docstring the finding,
its keyword defaults the thresholds, its body plain asserts over the measured numbers (see
harness.claims.claim). The claims/ modules are the catalogue (`catalogue()`, `harness claims`).

    from harness.claims import judge
    result = judge("S3.2", table)       # table: a metric table (harness.measurements)
    result.verdict                      # 'verified', 'contradicted', 'fragile', ...
"""

from harness.claims.claim import (
    SECTIONS,
    ClaimSpec,
    NotJudged,
    catalogue,
    claim,
    claim_order,
    expect,
    get_claim,
    need,
    resolve_thresholds,
)
from harness.claims.verdict import (
    CONTRADICTED,
    ERROR,
    FRAGILE,
    FRAGILE_BELOW,
    NOT_JUDGED,
    SKIPPED,
    UNTRAINED_REASON,
    VERDICTS,
    VERIFIED,
    ClaimResult,
    jsonable,
    judge,
    skipped,
)
from harness.measurements import reported

__all__ = [
    "SECTIONS", "ClaimSpec", "NotJudged", "catalogue", "claim", "claim_order", "expect", "get_claim",
    "need", "reported", "resolve_thresholds", "ClaimResult", "judge", "skipped", "jsonable", "VERDICTS", "VERIFIED",
    "CONTRADICTED", "FRAGILE", "NOT_JUDGED", "SKIPPED", "ERROR", "FRAGILE_BELOW", "UNTRAINED_REASON",
]
