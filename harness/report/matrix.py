"""The backbone x finding matrix of a report: every model of the run against the per-model
form of the paper's family findings (harness.claims.families), grouped by family, the paper's
models first as the reference rows. Markdown gives a table; HTML a heat map."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from harness.claims.families import COLUMNS, FAMILIES, PAPER_FAMILIES, matrix
from harness.measurements import Measurements

TITLES = {"knn_over_linear": "kNN / linear (S3.2)", "linear_over_knn": "linear / kNN (S3.3)",
          "pruning_gain": "kNN m=200 / m=0 (S4.4, S4.2)", "variance_vs_dino": "variance ratio / dino's (S4.1)",
          "association_margin": "association - best MIM (S6.1, S6.6)"}


def matrix_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The matrix of a report (empty when the report measured no model's family findings)."""
    families = dict((report.get("run_info") or {}).get("families") or {})
    if not families or not report.get("rows"):
        return []
    x4 = next((c for c in report.get("claims", []) if c["id"] == "X.4"), {})
    thresholds = x4.get("thresholds") or _x4_defaults()
    rows = [r for r in report["rows"] if r.get("dataset") in ("cityscapes", "bdd100k_mot", "mot17")]
    if not rows:
        return []
    cells = matrix(families, thresholds, Measurements.from_table(pd.DataFrame(rows)))
    return sorted(cells, key=lambda c: (not c["paper_model"], FAMILIES.index(c["family"]), c["model"]))


def _x4_defaults() -> dict[str, float]:
    from harness.claims import catalogue

    return catalogue()["X.4"].thresholds


def _cell(cell: Mapping[str, Any]) -> str:
    if cell["value"] is None:
        return "n/a"
    text = f"{cell['value']:.3g}"
    if cell["holds"] is not None:
        text += f" {'✓' if cell['holds'] else '✗'} ({cell['relation']})"
    return text


def table(cells: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows: one row per model (family, reference or added), one column per finding."""
    by_model: dict[str, dict[str, Any]] = {}
    for c in cells:
        by_model.setdefault(c["model"], {"model": c["model"], "family": c["family"],
                                         "paper": c["paper_model"]})[c["finding"]] = c
    headers = ["model", "family", "", *(TITLES[k] for k in COLUMNS)]
    body = [[m["model"], m["family"], "paper" if m["paper"] else "added", *(_cell(m[k]) for k in COLUMNS)]
            for m in by_model.values()]
    return headers, body


def render_markdown(cells: list[dict[str, Any]]) -> list[str]:
    from tabulate import tabulate

    headers, body = table(cells)
    return ["## Backbone x finding matrix", "",
            "Each model of the run against the per-model form of the paper's family findings (X.4). A "
            "threshold and ✓/✗ are shown where the finding belongs to the model's family; the paper's "
            f"models ({', '.join(PAPER_FAMILIES)}) are the reference rows.", "",
            tabulate(body, headers=headers, tablefmt="github", disable_numparse=True), ""]


def render_html(cells: list[dict[str, Any]]) -> str:
    """A heat map: green where the finding holds, red where it does not (deeper the further the
    value is from its threshold), grey where it is not the model's family's finding."""
    import html

    by_model: dict[str, dict[str, Any]] = {}
    for c in cells:
        by_model.setdefault(c["model"], {"_": c})[c["finding"]] = c
    head = "".join(f"<th>{html.escape(TITLES[k])}</th>" for k in COLUMNS)
    rows = []
    for model, found in by_model.items():
        first = found["_"]
        tds = "".join(_heat(found[k]) for k in COLUMNS)
        kind = "paper" if first["paper_model"] else "added"
        rows.append(f"<tr><th>{html.escape(model)}</th><td>{html.escape(first['family'])}</td>"
                    f"<td>{kind}</td>{tds}</tr>")
    return ('<h2 id="matrix">Backbone x finding matrix</h2><p>Each model of the run against the per-model '
            "form of the paper's family findings (X.4): green holds, red does not (the deeper, the further "
            "from the threshold), grey: not a finding of the model's family. The paper's models are the "
            'reference rows.</p><table class="matrix"><tr><th>model</th><th>family</th><th></th>'
            f"{head}</tr>{''.join(rows)}</table>")


def _heat(cell: Mapping[str, Any]) -> str:
    import html

    text = html.escape(_cell(cell))
    if cell["value"] is None:
        return f'<td style="background:#eeeeee">{text}</td>'
    if cell["holds"] is None:
        return f'<td style="background:#f4f4f4;color:#555">{text}</td>'
    threshold = cell["threshold"] or 0.0
    distance = min(1.0, abs(cell["value"] - threshold) / (abs(threshold) or 1.0))
    light = int(225 - 90 * distance)
    colour = f"rgb({light},235,{light})" if cell["holds"] else f"rgb(245,{light},{light})"
    return f'<td style="background:{colour}">{text}</td>'
