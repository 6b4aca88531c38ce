"""The claims report: claims.json (the source of truth), claims.md, claims.html, comparisons.

    report = build_report(results, run=options, run_info=info)
    write_report(report, "reports/")            # claims.json, claims.md, claims.html
    report = load_report("reports/claims.json")  # checks the schema version
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.io import atomic_write_files
from harness.report.compare import (
    DEFAULT_TOLERANCE,
    compare_reports,
    find_regressions,
    render_comparison,
)
from harness.report.json import SCHEMA_VERSION, ReportError, build_report, dumps, load_report


class ReportWriteError(OSError):
    """The report could not be written into its folder (`filename`); the files already
    there were left as they were. Keeps the errno of the failed call."""

    def __str__(self) -> str:
        return (f"cannot write the claims report into {self.filename}: {self.strerror}; "
                "the files already there are unchanged")


def write_report(report: Mapping[str, Any], out_dir: str | Path, stem: str = "claims",
                 json_only: bool = False) -> list[Path]:
    """Write <stem>.json, then .md and .html (rendered from the JSON) into `out_dir`.

    All or nothing: every file is rendered and written to a temp file first, and the old
    files are replaced only when all of them were written (harness.io.atomic_write_files),
    so a full disk or a kill leaves the previous report (perhaps someone's baseline) whole.
    Raises ReportWriteError (an OSError) when `out_dir` cannot be created or written."""
    from harness.report.html import render_html
    from harness.report.markdown import render_markdown

    out = Path(out_dir)
    files = {out / f"{stem}.json": dumps(report)}
    if not json_only:
        files[out / f"{stem}.md"] = render_markdown(report)
        files[out / f"{stem}.html"] = render_html(report)
    return write_report_files(files, out)


def write_report_files(files: Mapping[Path, str], out: Path) -> list[Path]:
    """Report files written all or nothing into `out`; ReportWriteError when that fails."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        return atomic_write_files(files)
    except OSError as err:
        if err.errno is None:
            raise
        raise ReportWriteError(err.errno, err.strerror or os.strerror(err.errno), str(out)) from err


__all__ = [
    "SCHEMA_VERSION", "ReportError", "ReportWriteError", "build_report", "load_report", "write_report",
    "write_report_files", "dumps",
    "compare_reports", "render_comparison", "find_regressions", "DEFAULT_TOLERANCE",
]
