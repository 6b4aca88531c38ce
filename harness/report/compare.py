"""Comparing two claims reports (X.2): verdict changes and per-row metric deltas.

A row is matched across reports by its row key (metric, model and every key column of the
metric table, harness.measurements). A drop larger than the tolerance is a regression only
for metrics where higher is better (`harness.measurements.METRICS`); the others (variance
ratios, feature overlaps, reconstruction MSE, the majority-class fraction, background/other
retrieval rates) describe the model rather than rank it, so a change in them is shown but
never fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tabulate import tabulate

from harness.measurements import DEFAULT_TOLERANCE, row_key, row_label
from harness.measurements import higher_is_better as _higher_is_better

RowKey = tuple[tuple[str, Any], ...]


def key_text(key: RowKey) -> str:
    return row_label(dict(key))


def higher_is_better(key: RowKey) -> bool:
    return _higher_is_better(dict(key))


def row_values(rows: Iterable[Mapping[str, Any]]) -> dict[RowKey, float]:
    return {row_key(r): float(r["value"]) for r in rows if r.get("value") is not None}


def report_rows(report: Mapping[str, Any]) -> dict[RowKey, float]:
    """Every metric row of a report: its run-wide rows and each claim's own."""
    claim_rows = (row for claim in report["claims"] for row in claim.get("rows") or [])
    return row_values([*report.get("rows", []), *claim_rows])


@dataclass
class Regression:
    metric: str
    old: float
    new: float

    @property
    def drop(self) -> float:
        return self.old - self.new

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "old": self.old, "new": self.new, "drop": round(self.drop, 6)}

    def __str__(self) -> str:
        return f"{self.metric}: {self.old:.4f} -> {self.new:.4f} (drop {self.drop:.4f})"


def find_regressions(
    new_rows: Iterable[Mapping[str, Any]], baseline: Mapping[RowKey, float], tolerance: float = DEFAULT_TOLERANCE
) -> list[Regression]:
    """Rows of `new_rows` whose higher-is-better value fell more than `tolerance` below the baseline's."""
    found = []
    for key, new in row_values(new_rows).items():
        old = baseline.get(key)
        if old is not None and higher_is_better(key) and old - new > tolerance:
            found.append(Regression(key_text(key), old, new))
    return found


@dataclass
class Comparison:
    tolerance: float
    verdicts: list[dict[str, Any]] = field(default_factory=list)  # id, old, new verdict
    rows: list[dict[str, Any]] = field(default_factory=list)  # claim, metric, old, new, delta, regression

    @property
    def regressions(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["regression"]]


def _results_by_id(report: Mapping[str, Any]) -> dict[str, list[Mapping[str, Any]]]:
    by_id: dict[str, list[Mapping[str, Any]]] = {}
    for claim in report["claims"]:
        by_id.setdefault(claim["id"], []).append(claim)
    return by_id


def compare_reports(old: Mapping[str, Any], new: Mapping[str, Any], tolerance: float = DEFAULT_TOLERANCE) -> Comparison:
    """Per claim: verdict change and its own rows; then the run's other rows (claim '-')."""
    comparison = Comparison(tolerance)
    covered: set[RowKey] = set()
    old_by_id, new_by_id = _results_by_id(old), _results_by_id(new)
    for claim_id in list(dict.fromkeys([*old_by_id, *new_by_id])):
        old_results, new_results = old_by_id.get(claim_id, []), new_by_id.get(claim_id, [])
        old_verdict = ", ".join(r["verdict"] for r in old_results) or "absent"
        new_verdict = ", ".join(r["verdict"] for r in new_results) or "absent"
        comparison.verdicts.append({"id": claim_id, "old": old_verdict, "new": new_verdict,
                                    "changed": old_verdict != new_verdict})
        old_rows = row_values(row for r in old_results for row in r.get("rows") or [])
        new_rows = row_values(row for r in new_results for row in r.get("rows") or [])
        _compare_rows(comparison, claim_id, old_rows, new_rows)
        covered.update(old_rows, new_rows)
    old_rest = {k: v for k, v in report_rows(old).items() if k not in covered}
    new_rest = {k: v for k, v in report_rows(new).items() if k not in covered}
    _compare_rows(comparison, "-", old_rest, new_rest)
    return comparison


def _compare_rows(comparison: Comparison, claim_id: str, old_rows: dict, new_rows: dict) -> None:
    for key in list(dict.fromkeys([*old_rows, *new_rows])):
        a, b = old_rows.get(key), new_rows.get(key)
        delta = None if a is None or b is None else b - a
        comparison.rows.append({
            "claim": claim_id, "metric": key_text(key), "old": a, "new": b, "delta": delta,
            "regression": delta is not None and higher_is_better(key) and -delta > comparison.tolerance,
        })


def render_comparison(comparison: Comparison, all_rows: bool = False) -> str:
    """The verdict table, then the metric rows that changed (all rows with `all_rows`)."""
    verdicts = tabulate(
        [(v["id"], v["old"], v["new"], "changed" if v["changed"] else "") for v in comparison.verdicts],
        headers=["claim", "baseline", "new", ""], tablefmt="github", disable_numparse=True)
    shown = [r for r in comparison.rows if all_rows or r["delta"] is None or abs(r["delta"]) > 1e-12]
    rows = tabulate(
        [(r["claim"], r["metric"], _num(r["old"]), _num(r["new"]), _num(r["delta"], signed=True),
          "REGRESSION" if r["regression"] else "") for r in shown],
        headers=["claim", "metric row", "baseline", "new", "delta", ""], tablefmt="github",
        disable_numparse=True)
    lines = ["Verdicts", verdicts, "", f"Metric rows ({'all' if all_rows else 'changed'}; "
             f"regression = a higher-is-better metric dropped by more than {comparison.tolerance})",
             rows if shown else "(no metric row changed)", ""]
    n = len(comparison.regressions)
    lines.append(f"{n} regression{'s' if n != 1 else ''} found." if n else "No regression found.")
    return "\n".join(lines)


def _num(x: float | None, signed: bool = False) -> str:
    return "-" if x is None else f"{x:+.4f}" if signed else f"{x:.4f}"
