"""The paper's claims: catalogue, relations over metric tables, and verdicts.

    from harness.claims import judge
    result = judge("S3.2", table)               # table: METRICS.md metric table
    result.verdict                              # 'verified', 'contradicted', ...

`CLAIMS` maps each id of shared/CLAIMS.md to its `Claim`; `judge` evaluates the claim's
relation (with thresholds overridable by name) and, given bootstrap tables, its stability.
"""

from harness.claims.catalogue import CLAIMS, SECTIONS, Claim
from harness.claims.relations import Outcome
from harness.claims.table import KEY_COLUMNS, MissingMeasurements, paper_linear
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

__all__ = [
    "CLAIMS", "SECTIONS", "Claim", "Outcome", "KEY_COLUMNS", "MissingMeasurements", "paper_linear",
    "ClaimResult", "judge", "skipped", "jsonable", "VERDICTS", "VERIFIED", "CONTRADICTED", "FRAGILE",
    "NOT_JUDGED", "SKIPPED", "ERROR", "FRAGILE_BELOW", "UNTRAINED_REASON",
]
