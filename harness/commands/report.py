"""`harness report RUN.json [--out DIR]`: re-render claims.md and claims.html from a claims.json."""

from __future__ import annotations

import sys
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("report", help="re-render the Markdown and HTML report from a claims.json")
    parser.add_argument("run_json", metavar="RUN.json", help="a claims.json written by a claims run")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="output folder (default: the folder of RUN.json)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from harness.report import ReportError, load_report
    from harness.report.html import render_html
    from harness.report.markdown import render_markdown

    source = Path(args.run_json)
    try:
        report = load_report(source)
    except ReportError as err:
        print(f"harness report: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else source.parent
    stem = source.stem
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for suffix, render in ((".md", render_markdown), (".html", render_html)):
            path = out / f"{stem}{suffix}"
            path.write_text(render(report))
            written.append(path)
    except OSError as err:
        print(f"harness report: cannot write into {out}: {err.strerror or err}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0
