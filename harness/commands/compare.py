"""`harness compare A.json B.json [--tolerance T]`: verdict changes and metric deltas between two
claims reports; exit status 1 when a higher-is-better metric dropped by more than T (X.2), 2
when the comparison could not be made (a report unreadable, ...)."""

from __future__ import annotations

from harness.cli import EXIT_USAGE
from harness.report.compare import DEFAULT_TOLERANCE


def register(subparsers) -> None:
    parser = subparsers.add_parser("compare", help="compare two claims.json reports (baseline first)")
    parser.add_argument("baseline", metavar="A.json", help="the baseline claims.json")
    parser.add_argument("new", metavar="B.json", help="the claims.json to check against it")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help=f"absolute drop that counts as a regression (default {DEFAULT_TOLERANCE})")
    parser.add_argument("--all", action="store_true", help="list every metric row, not only changed ones")
    parser.set_defaults(func=run, failure_exit=EXIT_USAGE)  # exit 1 means a regression


def run(args) -> int:
    from harness.report import compare_reports, load_report, render_comparison

    old, new = load_report(args.baseline), load_report(args.new)
    comparison = compare_reports(old, new, tolerance=args.tolerance)
    print(render_comparison(comparison, all_rows=args.all))
    return 1 if comparison.regressions else 0
