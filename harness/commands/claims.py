"""`harness claims [ID ...]`: the catalogue of the claims, read from the claims/ tests.

Without ids: one row per claim (id, the paper's finding, what the test asserts, its
thresholds, the paper's values, the test). With ids: each claim in full, with the source of
its test, which is the claim's definition.
"""

from __future__ import annotations

import argparse
import inspect


def register(subparsers) -> None:
    parser = subparsers.add_parser("claims", help="list the claims (the catalogue), or show one in full",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ids", nargs="*", help="claim ids to show in full, e.g. S4.2")
    parser.add_argument("--format", choices=("github", "plain"), default="github",
                        help="table format of the listing (default: github Markdown)")
    parser.set_defaults(func=run)


def _numbers(values) -> str:
    return "; ".join(f"{k}={v}" for k, v in values.items())


def run(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from harness.claims import catalogue

    claims = catalogue()
    unknown = [i for i in args.ids if i not in claims]
    if unknown:
        from harness.cli import UsageError

        raise UsageError(f"unknown claim id(s) {', '.join(unknown)}; known: {', '.join(claims)}")
    if not args.ids:
        rows = [(c.id, c.statement, c.assertion, _numbers(c.thresholds), _numbers(c.paper) or c.ref,
                 f"{c.test.__module__.split('.')[-1]}::{c.test.__name__}") for c in claims.values()]
        print(tabulate(rows, headers=["ID", "finding", "assert", "thresholds", "paper", "test"],
                       tablefmt=args.format, disable_numparse=True))
        return 0
    for claim_id in args.ids:
        spec = claims[claim_id]
        print(f"{spec.id} ({spec.ref}) — claims/{spec.test.__module__.split('.')[-1]}.py::{spec.test.__name__}")
        print(f"  paper: {_numbers(spec.paper) or '-'}; thresholds: {_numbers(spec.thresholds) or '-'}\n")
        print(inspect.getsource(spec.test))
    return 0
