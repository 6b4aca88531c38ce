"""The `harness` command: one subcommand per module in harness/commands/.

Exit status:
  0    success
  1    an expected failure, printed as one line `harness <command>: error: <what and why>`
       on stderr: a missing or damaged dataset or checkpoint, missing weights, a cache or
       report folder that is read-only or full (any OSError), a bad value in the data or
       the arguments (any ValueError: CheckpointError, DatasetFormatError, ...)
  2    a usage error: argparse's own, a bad option value found by a command (UsageError:
       an unknown dataset, profile or device), an unknown model, a file that is not a
       claims report (ReportError); `harness compare` exits 1 for a regression, so every
       failure of its own is 2
  130  interrupted (Ctrl-C): `harness <command>: interrupted`
`--debug` (before or after the command) adds the traceback. Any other exception is a bug
and shows its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

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
    "harness.commands.plan",
]

EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
EXPECTED = (OSError, ValueError)
# Usage errors defined in modules the CLI does not import for itself (harness.models
# imports torch): looked up only when already loaded, since only then can one be raised.
USAGE_ELSEWHERE = {"harness.models.registry": "UnknownModelError", "harness.report.json": "ReportError"}


class UsageError(ValueError):
    """A bad option value found by a command, e.g. an unknown dataset (exit status 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="vit-local-claims: models, datasets, extraction and claims reports.",
        epilog="Exit status: 0 ok, 1 failed (one line on stderr), 2 usage error, 130 interrupted.",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # a real import error inside the module: surface it
                raise
            continue  # subcommand not written yet
        module.register(sub)
    for subparser in sub.choices.values():
        # SUPPRESS: when not given after the command, the global flag's value stands.
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                               help="show the traceback of a failure")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return _fail(args, "interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        _silence_stdout()  # whoever read our output has gone: nothing left to say
        return EXIT_FAILURE
    except EXPECTED as err:
        code = EXIT_USAGE if isinstance(err, _usage_errors()) else getattr(args, "failure_exit", EXIT_FAILURE)
        return _fail(args, f"error: {one_line(err)}", code)
    except Exception as err:
        if isinstance(err, _usage_errors()):
            return _fail(args, f"error: {one_line(err)}", EXIT_USAGE)
        raise


def one_line(err: BaseException) -> str:
    """The error as one line: an errno-style OSError as 'PATH: reason', any other as its
    message with line breaks folded."""
    if isinstance(err, OSError) and type(err).__str__ is OSError.__str__ and err.strerror:
        where = f"{err.filename}: " if err.filename else ""
        text = where + err.strerror + (f" (and {err.filename2})" if err.filename2 else "")
    else:
        text = str(err).strip() or type(err).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _usage_errors() -> tuple[type[BaseException], ...]:
    found = [UsageError]
    for module, name in USAGE_ELSEWHERE.items():
        if module in sys.modules and hasattr(sys.modules[module], name):
            found.append(getattr(sys.modules[module], name))
    return tuple(found)


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    if getattr(args, "debug", False):
        traceback.print_exc()
    print(f"harness {args.command}: {message}", file=sys.stderr)
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    # Run the imported module, not __main__, so that the UsageError the commands import
    # from harness.cli is the class main() checks against.
    from harness.cli import main as harness_main

    sys.exit(harness_main())
