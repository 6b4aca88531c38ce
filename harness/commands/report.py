"""`harness report RUN.json [--out DIR]`: re-render claims.md and claims.html from a claims.json."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("report", help="re-render the Markdown and HTML report from a claims.json")
    parser.add_argument("run_json", metavar="RUN.json", help="a claims.json written by a claims run")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="output folder (default: the folder of RUN.json)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from harness.report import load_report, write_report_files
    from harness.report.html import render_html
    from harness.report.markdown import render_markdown

    source = Path(args.run_json)
    report = load_report(source)
    out = Path(args.out) if args.out else source.parent
    written = write_report_files({out / f"{source.stem}.md": render_markdown(report),
                           out / f"{source.stem}.html": render_html(report)}, out)
    for path in written:
        print(path)
    return 0
