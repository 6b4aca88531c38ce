"""Judging a claim: its test body run on the measured numbers, then on resamples.

    from harness.claims import judge
    result = judge("S3.2", table)          # table: a metric table (see harness.measurements)
    result.verdict                         # 'verified', 'contradicted', ...

Verdicts:
  verified      every assert of the body holds (and, with resamples, in >= 90% of them)
  contradicted  an assert fails on the measured numbers
  fragile       it holds, but in < 90% of bootstrap resamples or training subsets (X.1)
  not judged    a number the body reads is missing, `need(...)` failed, or the weights are
                untrained (smoke profile)
  skipped       the weights of a model it reads, or its dataset, are missing
  error         the test crashed (a bug, not a finding)

The harness, not the claim, tells 'not judged' from 'contradicted': when any read found
nothing, the verdict is 'not judged' whatever the asserts said, so a missing number can
never contradict a claim.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from harness.claims.claim import (
    SECTION_DATASETS,
    ClaimSpec,
    NotJudged,
    assertion_text,
    collecting_failures,
    get_claim,
    resolve_thresholds,
)
from harness.measurements import Measurements, Missing, row_label, table_records

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
    section: str = ""
    ref: str = ""
    measured: dict[str, Any] = field(default_factory=dict)  # row label -> value, for every row read
    paper: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    ci: dict[str, list[float | None]] | None = None  # 2.5/97.5 percentiles per row read
    holds_fraction: float | None = None  # share of bootstrap resamples where every assert holds
    train_holds_fraction: float | None = None  # share of few-shot training subsets (X.1)
    resamples: int = 0
    train_subsets: int = 0
    skip_reason: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # run parameters: profile, models, ...
    holds: bool | None = None  # the body on the measured numbers (also when not judged)
    missing: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # the metric rows the body read
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


# ---------------------------------------------------------------- one attempt


@dataclass
class Attempt:
    """One run of a claim's body: what failed, what was missing, what was read."""

    failures: list[str]
    missing: list[Missing]
    not_judged: str | None
    error: BaseException | None
    read: dict[str, list[int]]  # section -> row indices read

    @property
    def holds(self) -> bool:
        return not self.failures and not self.missing and self.not_judged is None and self.error is None


def attempt(spec: ClaimSpec, sections: Mapping[str, Any], thresholds: Mapping[str, Any]) -> Attempt:
    views = {name: value.fresh() if isinstance(value, Measurements) else value
             for name, value in sections.items()}
    not_judged, error = None, None
    # legacy printing: pytest's assertion messages show 0.058, not np.float64(0.058)
    with collecting_failures() as failures, np.printoptions(legacy="1.25"):
        try:
            spec.test(**views, **thresholds)
        except AssertionError as err:
            failures.append(assertion_text(err))
        except NotJudged as reason:
            not_judged = str(reason)
        except Exception as err:  # noqa: BLE001 - judged below: missing numbers, or a bug
            error = err
    measured = {name: v for name, v in views.items() if isinstance(v, Measurements)}
    missing = [m for v in measured.values() for m in v.missing]
    return Attempt(list(failures), missing, not_judged, error,
                   {name: list(v._read) for name, v in measured.items()})


# ---------------------------------------------------------------- binding sections


def bind(spec: ClaimSpec, data: Any, named: Mapping[str, Any]) -> dict[str, Any]:
    """The sections a claim reads, from a metric table (split by dataset), one Measurements
    for all, or a mapping section -> Measurements."""
    sections = dict(named)
    if isinstance(data, Mapping):
        sections.update(data)
    elif data is not None:
        for name in spec.fixtures:
            sections.setdefault(name, _section_of(data, name))
    absent = [name for name in spec.fixtures if name not in sections]
    if absent:
        raise ValueError(f"{spec.id} reads {', '.join(spec.fixtures)}; not given: {', '.join(absent)}")
    return {name: sections[name] for name in spec.fixtures}


def _section_of(data: Any, name: str) -> Any:
    dataset = SECTION_DATASETS.get(name)
    if isinstance(data, pd.DataFrame):
        if dataset is not None and "dataset" in data.columns:
            data = data[data["dataset"].isna() | (data["dataset"] == dataset)]
        return Measurements.from_table(data.reset_index(drop=True))
    if isinstance(data, Measurements) and dataset is not None:
        return data.of_dataset(dataset)
    return data


# ---------------------------------------------------------------- the verdict


def judge(
    claim: str | ClaimSpec | Any,
    data: Any = None,
    *,
    thresholds: Mapping[str, Any] | None = None,
    resamples: int = 0,
    seed: int | None = None,
    untrained: bool = False,
    params: Mapping[str, Any] | None = None,
    fragile_below: float = FRAGILE_BELOW,
    **sections: Any,
) -> ClaimResult:
    """Judge a claim (its id, or its test function) on measured numbers: `data` is a metric
    table (a DataFrame: metric, model, value and key columns), a `Measurements`, or a mapping
    from the sections the claim reads to `Measurements`; sections can also be passed by name.
    `resamples` > 0 re-runs the body on that many bootstrap resamples (X.1)."""
    from harness.config import seed_for

    spec = get_claim(claim)
    bound = bind(spec, data, sections)
    limits = resolve_thresholds(spec, thresholds)
    result = ClaimResult(id=spec.id, statement=spec.statement, verdict=NOT_JUDGED, section=spec.section,
                         ref=spec.ref, paper=jsonable(spec.paper), thresholds=jsonable(limits),
                         params=jsonable(dict(params or {})))
    full = attempt(spec, bound, limits)
    result.rows = _rows(bound, full)
    result.measured = jsonable(_labels(bound, full))
    if full.missing:
        result.missing = [str(m) for m in dict.fromkeys(full.missing)]
        failed = _failure_reason(bound, full.missing)
        weights = _weights_reason(bound, full.missing)
        if failed:
            result.verdict, result.message = ERROR, f"a measurement it reads failed: {failed}"
            return result
        if weights:
            result.verdict, result.skip_reason = SKIPPED, weights
        else:
            result.skip_reason = "missing measurements: " + "; ".join(result.missing)
        result.message = result.skip_reason
        return result
    if full.error is not None:
        raise full.error
    if full.not_judged is not None:
        result.skip_reason = result.message = full.not_judged
        return result
    result.holds = not full.failures
    result.message = ("does not hold: " + "; ".join(full.failures)) if full.failures else "holds"
    if resamples > 0:
        # One seed for every claim: claims reading a section are judged on the same draws.
        draws = {name: v.resampled(resamples, seed if seed is not None else seed_for("bootstrap"))
                 for name, v in bound.items() if isinstance(v, Measurements)}
        outcomes = [attempt(spec, {**bound, **{n: d[r] for n, d in draws.items()}}, limits)
                    for r in range(resamples)]
        result.resamples = resamples
        result.holds_fraction = float(np.mean([a.holds for a in outcomes]))
        result.ci = _intervals(full, outcomes, bound, draws)
    alternates = {name: v.alternates for name, v in bound.items() if isinstance(v, Measurements) and v.alternates}
    if alternates:
        n = min(len(a) for a in alternates.values())
        outcomes = [attempt(spec, {**bound, **{name: alt[k] for name, alt in alternates.items()}}, limits)
                    for k in range(n)]
        result.train_subsets = n + 1
        result.train_holds_fraction = float(np.mean([result.holds] + [a.holds for a in outcomes]))
    _conclude(result, spec, untrained, fragile_below)
    return result


def _conclude(result: ClaimResult, spec: ClaimSpec, untrained: bool, fragile_below: float) -> None:
    fractions = {"bootstrap resamples": result.holds_fraction, "training subsets": result.train_holds_fraction}
    shaky = {what: f for what, f in fractions.items() if f is not None and f < fragile_below}
    if untrained:
        result.skip_reason = UNTRAINED_REASON
        result.message = f"untrained weights, would {'hold' if result.holds else 'not hold'}: {result.message}"
    elif not result.holds and spec.fails_as == FRAGILE:
        result.verdict = FRAGILE
        result.message = result.message.replace("does not hold: ", "fragile: ", 1)
    elif not result.holds:
        result.verdict = CONTRADICTED
    elif shaky:
        result.verdict = FRAGILE
        result.message = "fragile: holds in only " + " and ".join(
            f"{f:.0%} of {what}" for what, f in shaky.items()) + f" (< {fragile_below:.0%})"
    else:
        result.verdict = VERIFIED


def _rows(bound: Mapping[str, Any], full: Attempt) -> list[dict[str, Any]]:
    rows = []
    for name, indices in full.read.items():
        section = bound[name]
        rows += [{**section._index.rows[i], "value": float(section._values[i])} for i in indices]
    return table_records(pd.DataFrame(rows)) if rows else []


def _labels(bound: Mapping[str, Any], full: Attempt) -> dict[str, float]:
    labels = {}
    for name, indices in full.read.items():
        section = bound[name]
        for i in indices:
            labels[row_label(section._index.rows[i])] = float(section._values[i])
    return labels


def _intervals(full: Attempt, outcomes: Sequence[Attempt], bound, draws) -> dict[str, list[float | None]]:
    """95% interval over the resamples of every row the body read on the full numbers."""
    ci = {}
    for name, indices in full.read.items():
        section, views = bound[name], draws[name]
        for i in indices:
            values = np.array([views[r]._values[i] for r in range(len(views))], dtype=np.float64)
            values = values[np.isfinite(values)]
            label = row_label(section._index.rows[i])
            ci[label] = ([float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]
                         if len(values) else [None, None])
    return ci


def _weights_reason(bound: Mapping[str, Any], missing: Sequence[Missing]) -> str | None:
    """When the numbers are missing because a model's weights are: what to download."""
    unavailable: dict[str, str] = {}
    for section in bound.values():
        if isinstance(section, Measurements):
            unavailable.update(section.unavailable)
    if not unavailable:
        return None
    needed = [m.model for m in missing if m.model in unavailable]
    if not needed and any(m.model is None for m in missing):
        needed = list(unavailable)  # e.g. 'at least 3 models' short of the unavailable ones
    return " | ".join(unavailable[m] for m in dict.fromkeys(needed)) or None


def _failure_reason(bound: Mapping[str, Any], missing: Sequence[Missing]) -> str | None:
    """When the numbers are missing because a model's measurement failed: its error."""
    failed: dict[str, str] = {}
    for section in bound.values():
        if isinstance(section, Measurements):
            failed.update(section.failed)
    needed = [m.model for m in missing if m.model in failed]
    if not needed and failed and any(m.model is None for m in missing):
        needed = list(failed)
    return " | ".join(failed[m] for m in dict.fromkeys(needed)) or None


def skipped(claim: str | ClaimSpec, reason: str, params: Mapping[str, Any] | None = None) -> ClaimResult:
    """A claim that could not be measured (weights or dataset missing): `reason` says what to do."""
    spec = get_claim(claim)
    return ClaimResult(id=spec.id, statement=spec.statement, verdict=SKIPPED, section=spec.section,
                       ref=spec.ref, paper=jsonable(spec.paper), thresholds=jsonable(spec.thresholds),
                       message=reason, skip_reason=reason, params=jsonable(dict(params or {})))
