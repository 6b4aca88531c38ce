"""Judging a claim on a metric table: `judge(...) -> ClaimResult`.

Verdicts:
  verified      the relation holds (and, with resamples, in >= 90% of them)
  contradicted  the relation does not hold on the full table
  fragile       it holds on the full table but in < 90% of bootstrap resamples (X.1)
  not judged    measurements are missing, or the weights are untrained (smoke profile)
  skipped       the test could not run (missing weights or dataset): see `skipped(...)`
  error         the test crashed before judging (set by the pytest plugin)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from harness.claims.catalogue import CLAIMS, Claim
from harness.claims.table import MissingMeasurements, tracking_used_rows

VERIFIED = "verified"
CONTRADICTED = "contradicted"
FRAGILE = "fragile"
NOT_JUDGED = "not judged"
SKIPPED = "skipped"
ERROR = "error"
VERDICTS = (VERIFIED, CONTRADICTED, FRAGILE, NOT_JUDGED, SKIPPED, ERROR)

FRAGILE_BELOW = 0.9  # X.1: holding in fewer resamples than this makes a claim 'fragile'
UNTRAINED_REASON = "untrained weights (smoke profile): proves the pipeline, not the paper"


@dataclass
class ClaimResult:
    id: str
    statement: str
    verdict: str
    measured: dict[str, Any] = field(default_factory=dict)
    paper: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    ci: dict[str, list[float | None]] | None = None  # 2.5/97.5 percentiles per measured number
    holds_fraction: float | None = None  # share of bootstrap resamples where the relation holds
    skip_reason: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # run parameters: profile, models, ...
    holds: bool | None = None  # the relation on the full table (also when not judged)
    missing: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # the metric rows the relation read
    context_rows: list[dict[str, Any]] = field(default_factory=list)  # the table's other rows (figures)
    nodeid: str | None = None  # the pytest test that produced it
    regressions: list[dict[str, Any]] = field(default_factory=list)  # X.2, filled by the plugin

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClaimResult:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars to Python, NaN/inf to None, tuples to lists, keys to str."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return None if math.isnan(value) or math.isinf(value) else value
    if obj is None or isinstance(obj, str):
        return obj
    if obj is pd.NA or obj is pd.NaT:
        return None
    return str(obj)


def table_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """The metric table as JSON records, without the cells that are NaN (absent parameters)."""
    return [{k: v for k, v in jsonable(row).items() if v is not None}
            for row in table.to_dict(orient="records")]


def get_claim(claim_id: str) -> Claim:
    try:
        return CLAIMS[claim_id]
    except KeyError:
        raise ValueError(f"unknown claim id {claim_id!r}; known ids: {', '.join(CLAIMS)}") from None


def resolve_thresholds(claim: Claim, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The claim's default thresholds with `overrides` applied; unknown names are an error."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(claim.thresholds))
    if unknown:
        known = ", ".join(claim.thresholds) or "none"
        raise ValueError(f"{claim.id} has no threshold {', '.join(unknown)}; its thresholds are: {known}")
    return {**claim.thresholds, **overrides}


def judge(
    claim_id: str,
    table: pd.DataFrame,
    thresholds: Mapping[str, Any] | None = None,
    resamples: Iterable[pd.DataFrame] | None = None,
    untrained: bool = False,
    params: Mapping[str, Any] | None = None,
    fragile_below: float = FRAGILE_BELOW,
) -> ClaimResult:
    """Evaluate the claim's relation on `table` (and on each bootstrap table of `resamples`)."""
    claim = get_claim(claim_id)
    if claim.relation is None:
        raise ValueError(
            f"{claim_id} is a meta-claim: X.1 is judged through `resamples` of every claim, "
            "X.2 through the plugin's --baseline comparison"
        )
    limits = resolve_thresholds(claim, thresholds)
    result = ClaimResult(
        id=claim.id, statement=claim.statement, verdict=NOT_JUDGED, paper=jsonable(claim.paper),
        thresholds=jsonable(limits), params=jsonable(dict(params or {})),
    )
    table = table.reset_index(drop=True)
    try:
        with tracking_used_rows() as used:
            outcome = claim.evaluate(table, limits)
    except MissingMeasurements as missing:
        _split_rows(result, table, used)
        result.missing = missing.missing
        result.skip_reason = f"missing measurements: {'; '.join(missing.missing)}"
        result.message = result.skip_reason
        return result
    _split_rows(result, table, used)
    result.holds = outcome.holds
    result.measured = jsonable(outcome.measured)
    result.message = outcome.message
    if resamples is not None:
        result.holds_fraction, result.ci = _bootstrap(claim, limits, resamples)
    if untrained:
        result.skip_reason = UNTRAINED_REASON
        result.message = f"untrained weights, would {'hold' if outcome.holds else 'not hold'}: {outcome.message}"
    elif not outcome.holds:
        result.verdict = CONTRADICTED
    elif result.holds_fraction is not None and result.holds_fraction < fragile_below:
        result.verdict = FRAGILE
        result.message = (f"fragile: holds in only {result.holds_fraction:.0%} of resamples "
                          f"(< {fragile_below:.0%}); {outcome.message}")
    else:
        result.verdict = VERIFIED
    return result


def _split_rows(result: ClaimResult, table: pd.DataFrame, used: set) -> None:
    """The rows the relation read are the claim's own (compared with a baseline); the rest of
    the table travels along for the report's figures."""
    mask = table.index.isin(sorted(used))
    result.rows = table_records(table[mask])
    result.context_rows = table_records(table[~mask])


def _bootstrap(
    claim: Claim, limits: dict[str, Any], resamples: Iterable[pd.DataFrame]
) -> tuple[float | None, dict[str, list[float | None]]]:
    """Share of resamples where the relation holds, and a 95% interval of each measured number.
    A resample lacking rows counts as not holding (it cannot support the claim)."""
    holds: list[bool] = []
    values: dict[str, list[float]] = {}
    for table in resamples:
        try:
            outcome = claim.evaluate(table, limits)
        except MissingMeasurements:
            holds.append(False)
            continue
        holds.append(outcome.holds)
        for key, value in outcome.measured.items():
            if value is not None:
                values.setdefault(key, []).append(float(value))
    if not holds:
        return None, {}
    ci = {key: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for key, v in values.items()}
    return float(np.mean(holds)), ci


def skipped(claim_id: str, reason: str, params: Mapping[str, Any] | None = None) -> ClaimResult:
    """A claim that could not be measured (weights or dataset missing): `reason` says what to do."""
    claim = get_claim(claim_id)
    return ClaimResult(
        id=claim.id, statement=claim.statement, verdict=SKIPPED, paper=jsonable(claim.paper),
        thresholds=jsonable(claim.thresholds), message=reason, skip_reason=reason,
        params=jsonable(dict(params or {})),
    )
