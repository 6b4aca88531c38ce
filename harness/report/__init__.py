"""The claims report: claims.json (the source of truth), claims.md, claims.html, comparisons.

    report = build_report(results, run=options, run_info=info)
    write_report(report, "reports/")            # claims.json, claims.md, claims.html
    report = load_report("reports/claims.json")  # checks the schema version
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.report.compare import (
    DEFAULT_TOLERANCE,
    compare_reports,
    find_regressions,
    render_comparison,
)
from harness.report.json import SCHEMA_VERSION, ReportError, build_report, dumps, load_report


def write_report(report: Mapping[str, Any], out_dir: str | Path, stem: str = "claims",
                 json_only: bool = False) -> list[Path]:
    """Write <stem>.json, then .md and .html (rendered from the JSON) into `out_dir`.

    Raises OSError when `out_dir` cannot be created or written."""
    from harness.report.html import render_html
    from harness.report.markdown import render_markdown

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{stem}.json"
    json_path.write_text(dumps(report))
    written = [json_path]
    if not json_only:
        for suffix, render in ((".md", render_markdown), (".html", render_html)):
            path = out / f"{stem}{suffix}"
            path.write_text(render(report))
            written.append(path)
    return written


__all__ = [
    "SCHEMA_VERSION", "ReportError", "build_report", "load_report", "write_report", "dumps",
    "compare_reports", "render_comparison", "find_regressions", "DEFAULT_TOLERANCE",
]
