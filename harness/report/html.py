"""claims.html: one self-contained page (inline CSS, figures as base64 PNG, no external resource)."""

from __future__ import annotations

import base64
import html as _html
from collections.abc import Mapping
from typing import Any

from tabulate import tabulate

from harness.report.figures import draw_all
from harness.report.json import section_title
from harness.report.markdown import (
    conventions_rows,
    fmt_numbers,
    fmt_value,
    overview_rows,
    sections,
)

STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.5em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
.verified { color: #17692f; font-weight: bold; } .contradicted { color: #b00020; font-weight: bold; }
.fragile { color: #a15c00; font-weight: bold; } .note { color: #777; font-style: italic; }
figure { margin: 1em 0; } img { max-width: 100%; }
"""


def _esc(text: Any) -> str:
    return _html.escape(str(text if text is not None else ""))


def render_html(report: Mapping[str, Any]) -> str:
    run = report.get("run", {})
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>Claims report</title>", f"<style>{STYLE}</style></head><body>",
        "<h1>Claims report</h1>",
        f"<p>created {_esc(report.get('created'))}; profile {_esc(run.get('profile'))}; "
        f"models {_esc(run.get('models'))}; git {_esc(report.get('git') or 'n/a')}; "
        f"device {_esc(report.get('device'))}</p>",
        "<p>verdicts: " + _esc(", ".join(f"{k} {v}" for k, v in report.get("summary", {}).items())) + "</p>",
    ]
    headers = ["ID", "finding", "verdict", "measured", "paper"]
    for section in sections(report):
        rows = overview_rows(report["claims"], section)
        parts.append(f"<h2>{_esc(section_title(section))}</h2>")
        table = tabulate(rows, headers=headers, tablefmt="html")
        for verdict in ("verified", "contradicted", "fragile"):  # colour the verdict cells
            table = table.replace(f"<td>{verdict}</td>", f'<td class="{verdict}">{verdict}</td>')
        parts.append(table)
    from harness.report.matrix import matrix_rows
    from harness.report.matrix import render_html as matrix_html

    cells = matrix_rows(report)
    if cells:
        parts.append(matrix_html(cells))
    conventions = conventions_rows(report)
    if conventions:
        parts.append("<h2>Conventions of this run</h2><p>Where the paper leaves room, the choices the "
                     "numbers were measured with.</p>")
        parts.append(tabulate(conventions, headers=["what", "convention"], tablefmt="html"))
    parts.append("<h2>Figures</h2>")
    for drawn in draw_all(report):
        if drawn.png is None:
            parts.append(f'<p class="note">{_esc(drawn.title)}: omitted ({_esc(drawn.note)})</p>')
        else:
            data = base64.b64encode(drawn.png).decode("ascii")
            parts.append(f'<figure id="{drawn.key}"><img alt="{_esc(drawn.title)}" '
                         f'src="data:image/png;base64,{data}"><figcaption>{_esc(drawn.title)}</figcaption></figure>')
    parts.append("<h2>Details</h2>")
    for claim in report["claims"]:
        parts.append(f"<h3>{_esc(claim['id'])}: <span class=\"{_esc(claim['verdict'])}\">"
                     f"{_esc(claim['verdict'])}</span></h3><p>{_esc(claim.get('message'))}</p><ul>")
        for label in ("measured", "paper", "thresholds"):
            if claim.get(label):
                parts.append(f"<li>{label}: {_esc(fmt_numbers(claim[label], limit=None))}</li>")
        if claim.get("holds_fraction") is not None:
            parts.append(f"<li>holds in {claim['holds_fraction']:.1%} of bootstrap resamples</li>")
        if claim.get("train_holds_fraction") is not None:
            parts.append(f"<li>holds on {claim['train_holds_fraction']:.1%} of few-shot training subsets</li>")
        if claim.get("ci"):
            parts.append("<li>95% intervals: " + _esc("; ".join(
                f"{k}: {fmt_value(v)}" for k, v in claim["ci"].items())) + "</li>")
        for regression in claim.get("regressions") or []:
            parts.append(f"<li class=\"contradicted\">regression: {_esc(regression['metric'])} "
                         f"{regression['old']:.4f} -> {regression['new']:.4f}</li>")
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
