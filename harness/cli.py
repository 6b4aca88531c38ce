"""The `harness` command: one subcommand per module in harness/commands/."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines `register(subparsers)` which adds its parser and sets `func`.
COMMAND_MODULES = [
    "harness.commands.models",
    "harness.commands.doctor",
    "harness.commands.extract",
    "harness.commands.synth",
    "harness.commands.show_views",
    "harness.commands.report",
    "harness.commands.compare",
    "harness.commands.claims",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="vit-local-claims: models, datasets, extraction and claims reports.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # a real import error inside the module: surface it
                raise
            continue  # subcommand not written yet
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
