"""claims.md: the report as Markdown tables grouped by section."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tabulate import tabulate

from harness.report.json import section_title

MAX_SHOWN = 6  # measured numbers shown in the overview row; all of them are in the details


def fmt_value(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(fmt_value(v) for v in value) + "]"
    return str(value)


def fmt_numbers(numbers: Mapping[str, Any] | None, limit: int | None = MAX_SHOWN) -> str:
    if not numbers:
        return ""
    items = [f"{k}: {fmt_value(v)}" for k, v in numbers.items()]
    if limit is not None and len(items) > limit:
        items = items[:limit] + [f"... (+{len(items) - limit})"]
    return "; ".join(items)


def overview_rows(claims: list[Mapping[str, Any]], section: str) -> list[tuple[str, ...]]:
    return [
        (c["id"], c["statement"], c["verdict"], fmt_numbers(c.get("measured")) or c.get("skip_reason") or "",
         fmt_numbers(c.get("paper")) or c.get("ref") or "")
        for c in claims if c.get("section") == section
    ]


def conventions_rows(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    conventions = (report.get("run_info") or {}).get("conventions") or {}
    return [(str(k), fmt_value(v)) for k, v in sorted(conventions.items())]


def sections(report: Mapping[str, Any]) -> list[str]:
    return list(dict.fromkeys(c.get("section", "") for c in report["claims"]))


def render_markdown(report: Mapping[str, Any]) -> str:
    run = report.get("run", {})
    lines = [
        "# Claims report",
        "",
        f"- created: {report.get('created', '?')}",
        f"- profile: {run.get('profile', '?')}; models: {run.get('models', '?')}",
        f"- harness git: {report.get('git') or 'not a git checkout'}; device: {report.get('device', '?')}",
        "- verdicts: " + ", ".join(f"{k} {v}" for k, v in report.get("summary", {}).items()),
        "",
    ]
    headers = ["ID", "finding", "verdict", "measured", "paper"]
    for section in sections(report):
        lines += [f"## {section_title(section)}", "",
                  tabulate(overview_rows(report["claims"], section), headers=headers, tablefmt="github"), ""]
    from harness.report.matrix import matrix_rows
    from harness.report.matrix import render_markdown as matrix_markdown

    cells = matrix_rows(report)
    if cells:
        lines += matrix_markdown(cells)
    conventions = conventions_rows(report)
    if conventions:
        lines += ["## Conventions of this run", "",
                  "Where the paper leaves room, the choices the numbers were measured with.", "",
                  tabulate(conventions, headers=["what", "convention"], tablefmt="github"), ""]
    lines += ["## Details", ""]
    for claim in report["claims"]:
        lines += [f"### {claim['id']} — {claim['verdict']}", "", claim.get("message") or "", ""]
        for label, key in (("measured", "measured"), ("paper", "paper"), ("thresholds", "thresholds")):
            if claim.get(key):
                lines.append(f"- {label}: {fmt_numbers(claim[key], limit=None)}")
        if claim.get("holds_fraction") is not None:
            lines.append(f"- holds in {claim['holds_fraction']:.1%} of {claim.get('resamples') or ''} bootstrap resamples")
        if claim.get("train_holds_fraction") is not None:
            lines.append(f"- holds on {claim['train_holds_fraction']:.1%} of {claim.get('train_subsets')} "
                         "few-shot training subsets")
        if claim.get("ci"):
            lines.append("- 95% intervals: " + "; ".join(f"{k}: {fmt_value(v)}" for k, v in claim["ci"].items()))
        for regression in claim.get("regressions") or []:
            lines.append(f"- REGRESSION {regression['metric']}: {regression['old']:.4f} -> {regression['new']:.4f}")
        if claim.get("nodeid"):
            lines.append(f"- test: `{claim['nodeid']}`")
        lines.append("")
    return "\n".join(lines)
