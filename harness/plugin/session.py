"""The state of one claims run: results, run information, the run's rows, and the report.

Under pytest-xdist every process shares one run folder (made by the controller, passed to
the workers): the controller (or the only process) writes each claim's result there as its
test report arrives, and each process writes the rows and run information of the sections
it measured. X.1 and X.2 read the folder (`RunResults.wait`) to judge the run once; at the
end the controller writes one report (claims.json, claims.md, claims.html) into the report
folder, or into the temporary directory if that cannot be written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from harness.plugin.options import RunOptions

RUN_DIR_KEY = "vit_local_claims_run_dir"
WAIT_POLL_S = 0.5


def _name(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def _write_json(path: Path, data: Any) -> None:
    """Atomic: readers of the run folder see a whole file or none."""
    from harness.io import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data), durable=False)


def _read_all(folder: Path) -> list[Any]:
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # a file being replaced: read on the next poll
    return out


def merge_run_info(target: dict[str, Any], key: str, value: Any) -> None:
    """Dicts merge key by key (e.g. 'weights' per model from several sections); others replace."""
    if isinstance(value, Mapping) and isinstance(target.get(key), dict):
        for inner_key, inner_value in value.items():
            merge_run_info(target[key], inner_key, inner_value)
    else:
        target[key] = dict(value) if isinstance(value, Mapping) else value


class ClaimsSession:
    """One per pytest process; `ClaimsSession.of(config)`."""

    def __init__(self, config: pytest.Config, options: RunOptions):
        self.config, self.options = config, options
        self.worker = getattr(config, "workerinput", None) is not None
        if self.worker:
            self.run_dir = Path(config.workerinput[RUN_DIR_KEY])
        else:
            self.run_dir = Path(tempfile.mkdtemp(prefix="vit-local-claims-run-"))
        self.baseline_rows: dict | None = None
        self.report_paths: list[Path] = []
        self.report_error: str | None = None
        self.claim_items = 0

    @staticmethod
    def of(config: pytest.Config) -> ClaimsSession:
        return config.stash[SESSION_KEY]

    # -- what the workers and the controller write -------------------------------------
    def record_result(self, nodeid: str, result: Mapping[str, Any]) -> None:
        _write_json(self.run_dir / "results" / f"{_name(nodeid)}.json", dict(result, nodeid=nodeid))

    def has_result(self, nodeid: str) -> bool:
        return (self.run_dir / "results" / f"{_name(nodeid)}.json").is_file()

    def record_rows(self, section: str, rows: list[dict[str, Any]]) -> None:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        _write_json(self.run_dir / "rows" / f"{_name(worker + section)}.json", rows)

    def record_run_info(self, key: str, value: Any) -> None:
        from harness.claims import jsonable

        path = self.run_dir / "run_info" / f"{_name(f'{os.getpid()}-{time.time_ns()}-{key}')}.json"
        _write_json(path, {"key": key, "value": jsonable(value)})

    # -- what X.1, X.2 and the report read ---------------------------------------------
    def results(self) -> list[dict[str, Any]]:
        return _read_all(self.run_dir / "results")

    def rows(self) -> list[dict[str, Any]]:
        from harness.measurements import row_key

        unique: dict = {}
        for rows in _read_all(self.run_dir / "rows"):
            for row in rows:
                unique.setdefault(row_key(row), row)
        return list(unique.values())

    def run_info(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for entry in _read_all(self.run_dir / "run_info"):
            merge_run_info(merged, entry["key"], entry["value"])
        return merged

    # -- the end of the run --------------------------------------------------------------
    def write_report(self) -> list[Path]:
        """Write the merged report into the report folder, or into the temporary directory."""
        from harness.report import build_report, write_report
        from harness.report.json import device, environment

        results = self.results()
        device_name = device(import_torch=False) or self.run_info().get("device") or "cpu (torch not loaded)"
        report = build_report(results, run=self.options.as_dict(), run_info=self.run_info(),
                              rows=self.rows(), environment=environment(device_name))
        try:
            self.report_paths = write_report(report, self.options.report_dir)
        except OSError as err:
            stem = f"vit-local-claims-report-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
            problem = f"could not write the claims report to {self.options.report_dir!r} ({err.strerror or err})"
            try:
                self.report_paths = write_report(report, tempfile.gettempdir(), stem=stem)
                self.report_error = f"{problem}; it was written to {self.report_paths[0]} instead"
            except OSError as again:
                self.report_error = (f"{problem}, nor to the temporary folder {tempfile.gettempdir()} "
                                     f"({again.strerror or again}): no report was written")
            print(f"\nERROR: {self.report_error}", file=sys.stderr)
        return self.report_paths

    def close(self) -> None:
        if not self.worker:
            shutil.rmtree(self.run_dir, ignore_errors=True)


SESSION_KEY = pytest.StashKey[ClaimsSession]()


class RunResults:
    """What X.1 and X.2 read: the verdicts of the run's other claims (waiting for them), the
    rows the run measured, and the baseline's numbers."""

    def __init__(self, session: ClaimsSession, expected: Iterable[str]):
        self.session = session
        self.expected = set(expected)
        self.baseline = session.baseline_rows

    def wait(self) -> list:
        """Every other claim of this run, once all have a verdict. Safe under xdist: X-claims
        are collected last, so every claim before them was handed to some worker already."""
        from harness.claims import ClaimResult

        while True:
            found = {r["nodeid"]: r for r in self.session.results()}
            if self.expected <= set(found):
                return [ClaimResult.from_dict(found[n]) for n in sorted(self.expected)]
            time.sleep(WAIT_POLL_S)

    def rows(self) -> list[dict[str, Any]]:
        """Every row this run measured: the sections' rows and those the claims read."""
        from harness.measurements import row_key

        unique = {row_key(row): row for row in self.session.rows()}
        for result in self.session.results():
            for row in result.get("rows") or []:
                unique.setdefault(row_key(row), row)
        return list(unique.values())

    def baseline_value(self, row: Mapping[str, Any]) -> float | None:
        from harness.measurements import row_key

        return None if self.baseline is None else self.baseline.get(row_key(row))
