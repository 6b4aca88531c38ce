"""pytest plugin of vit-local-claims: options, the `claim` marker, the `claim_recorder`
fixture, baseline regressions (X.2) and the claims report written at the end of a run.

A claim test measures a metric table and hands it to the recorder, which judges, stores
and concludes::

    @pytest.mark.claim("S3.2")
    def test_knn_comparable(table, claim_recorder):
        claim_recorder.judge(table, resamples=tables, untrained=False)

How a verdict ends the test:
  verified                 passes
  contradicted             fails with the relation's message
  fragile                  passes with a PytestWarning (the report says 'fragile')
  not judged (untrained)   passes: the smoke profile proves the pipeline, not the paper
  not judged (missing)     skips, naming the missing measurements
  skipped                  skips with the reason (what to download, where to put it)
and, with --baseline, any higher-is-better metric row that dropped by more than
--tolerance below the baseline's row with the same key fails the test as a regression.

Under pytest-xdist each worker sends its results to the controller through
`config.workeroutput`; the controller merges them (`pytest_testnodedown`) and writes one
report (claims.json, claims.md, claims.html) into --report-dir. If that folder cannot be
written, the report goes to the temporary directory and the terminal says where.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness import config as harness_config

FALLBACK_MODELS = ("dino", "dinov2", "mae", "simmim", "ibot", "supervised")
PROFILES = ("paper", "smoke")
DEFAULT_BOOTSTRAP = {"paper": 1000, "smoke": 100}
DEFAULT_TOLERANCE = 0.02  # absolute drop of a higher-is-better metric that counts as a regression
WORKER_KEY = "vit_local_claims"
# A hub id: hf-hub:org/name, timm/name, or org/name (letters, digits, . _ -).
HUB_ID = re.compile(r"^(hf-hub:|timm/)?[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".npz", ".pkl")


# ---------------------------------------------------------------- options


def known_models() -> list[str]:
    """Model names of the registry (harness.models.REGISTRY), or the paper's six."""
    try:
        from harness.models import REGISTRY
    except Exception:  # the registry may be absent or broken; options must still parse
        return list(FALLBACK_MODELS)
    return list(REGISTRY)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vit-local-claims", "re-verifying the paper's claims")
    group.addoption("--models", default=None, metavar="A,B",
                    help="comma-separated subset of the models to measure (default: all)")
    group.addoption("--weights", action="append", default=[], metavar="NAME=PATH_OR_HUB_ID",
                    help="use these weights for model NAME: a checkpoint file/folder or a hub id "
                         "(hf-hub:org/name, timm/name, org/name); repeatable")
    group.addoption("--data-root", default=None, metavar="DIR",
                    help=f"folder holding the datasets (default: ${harness_config.DATA_ENV})")
    group.addoption("--cache-dir", default=None, metavar="DIR",
                    help=f"embedding cache (default: ${harness_config.CACHE_ENV} or ~/.cache/vit-local-claims)")
    group.addoption("--profile", default="paper", choices=PROFILES,
                    help="paper: the paper's sizes; smoke: synthetic data and untrained models (not judged)")
    group.addoption("--report-dir", default="reports", metavar="DIR",
                    help="where claims.json/.md/.html are written (default: reports/)")
    group.addoption("--baseline", default=None, metavar="FILE",
                    help="a claims.json of an earlier run: metric drops beyond --tolerance fail (X.2)")
    group.addoption("--bootstrap", type=int, default=None, metavar="N",
                    help="bootstrap resamples per claim (X.1; default 1000 on paper, 100 on smoke; 0: none)")
    group.addoption("--tolerance", type=float, default=DEFAULT_TOLERANCE, metavar="T",
                    help=f"absolute drop of a higher-is-better metric (mIoU, accuracy, R^2, retrieval "
                         f"rate of a good outcome) below --baseline that fails as a regression "
                         f"(default {DEFAULT_TOLERANCE})")
    group.addoption("--threshold", action="append", default=[], metavar="ID:NAME=VALUE",
                    help="override a claim's threshold, e.g. S3.2:ratio=0.8; repeatable")


@dataclass
class RunOptions:
    """The validated options of this run (read them with `run_options(config)`)."""

    profile: str
    models: tuple[str, ...]
    weights: dict[str, str]
    data_root: str | None
    cache_dir: str
    report_dir: str
    baseline: str | None
    bootstrap: int
    tolerance: float
    thresholds: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def untrained(self) -> bool:
        return self.profile == "smoke"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_weights(values: list[str], known: list[str]) -> dict[str, str]:
    weights = {}
    for entry in values:
        name, sep, source = entry.partition("=")
        name, source = name.strip(), source.strip()
        if not sep or not name or not source:
            raise pytest.UsageError(f"--weights {entry!r}: expected NAME=PATH_OR_HUB_ID, e.g. mae=/ckpt/mae.pth")
        if name not in known:
            raise pytest.UsageError(f"--weights {entry!r}: unknown model {name!r}; known models: {', '.join(known)}")
        path = Path(source).expanduser()
        if path.exists():
            problem = _unreadable(path)
            if problem:
                raise pytest.UsageError(f"--weights {entry!r}: {path} exists but cannot be read ({problem})")
        elif source.startswith(("/", ".", "~")) or source.endswith(CHECKPOINT_SUFFIXES) or not HUB_ID.match(source):
            raise pytest.UsageError(
                f"--weights {entry!r}: {source!r} is neither an existing file or folder nor a hub id "
                "(hf-hub:org/name, timm/name or org/name)")
        weights[name] = source
    return weights


def _unreadable(path: Path) -> str | None:
    """Why `path` cannot be read (None if it can). Opening is the test: permission bits
    say nothing for root, and a socket or broken device fails only when opened."""
    try:
        if path.is_dir():
            os.listdir(path)
        else:
            with open(path, "rb") as handle:
                handle.read(1)
    except OSError as err:
        return err.strerror or str(err)
    return None


def _parse_thresholds(values: list[str]) -> dict[str, dict[str, Any]]:
    from harness.claims import CLAIMS

    overrides: dict[str, dict[str, Any]] = {}
    for entry in values:
        match = re.fullmatch(r"\s*([A-Z][\d.]+):(\w+)=(.+)", entry)
        if not match:
            raise pytest.UsageError(f"--threshold {entry!r}: expected ID:NAME=VALUE, e.g. S3.2:ratio=0.8")
        claim_id, name, raw = match.groups()
        if claim_id not in CLAIMS:
            raise pytest.UsageError(f"--threshold {entry!r}: unknown claim {claim_id!r}")
        if name not in CLAIMS[claim_id].thresholds:
            known = ", ".join(CLAIMS[claim_id].thresholds) or "none"
            raise pytest.UsageError(f"--threshold {entry!r}: {claim_id} has no threshold {name!r}; it has: {known}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            raise pytest.UsageError(f"--threshold {entry!r}: {raw!r} is not a number or JSON list") from None
        overrides.setdefault(claim_id, {})[name] = tuple(value) if isinstance(value, list) else value
    return overrides


def _parse_options(config: pytest.Config) -> RunOptions:
    option = config.option
    # Importing the registry loads torch and timm (seconds): only when there is a name to check.
    known = known_models() if (option.models or option.weights) else list(FALLBACK_MODELS)
    models = tuple(known)
    if option.models:
        models = tuple(m.strip() for m in option.models.split(",") if m.strip())
        unknown = [m for m in models if m not in known]
        if unknown:
            raise pytest.UsageError(f"--models: unknown {', '.join(unknown)}; known models: {', '.join(known)}")
    bootstrap = DEFAULT_BOOTSTRAP[option.profile] if option.bootstrap is None else option.bootstrap
    if bootstrap < 0:
        raise pytest.UsageError(f"--bootstrap {bootstrap}: expected a number of resamples >= 0")
    if option.tolerance < 0:
        raise pytest.UsageError(f"--tolerance {option.tolerance}: expected an absolute drop >= 0")
    data_root = harness_config.data_root(option.data_root)
    return RunOptions(
        profile=option.profile, models=models, weights=_check_weights(option.weights, known),
        data_root=str(data_root) if data_root else None,
        cache_dir=str(harness_config.cache_dir(option.cache_dir)),
        report_dir=option.report_dir, baseline=option.baseline, bootstrap=bootstrap,
        tolerance=option.tolerance, thresholds=_parse_thresholds(option.threshold),
    )


# ---------------------------------------------------------------- run state


@dataclass
class RunState:
    """What this process collected: results by test node id, and run info from fixtures."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_info: dict[str, Any] = field(default_factory=dict)
    claim_tests: int = 0  # claim tests collected here (0 on an xdist controller)
    baseline_rows: dict | None = None
    report_paths: list[Path] = field(default_factory=list)
    report_error: str | None = None
    device: str | None = None  # as seen by a process that ran claims (xdist: a worker)


OPTIONS_KEY = pytest.StashKey[RunOptions]()
STATE_KEY = pytest.StashKey[RunState]()


def run_options(config: pytest.Config) -> RunOptions:
    return config.stash[OPTIONS_KEY]


def merge_run_info(target: dict[str, Any], key: str, value: Any) -> None:
    """Dicts merge key by key (e.g. 'weights' per model from several fixtures); others replace."""
    if isinstance(value, Mapping) and isinstance(target.get(key), dict):
        for inner_key, inner_value in value.items():
            merge_run_info(target[key], inner_key, inner_value)
    else:
        target[key] = dict(value) if isinstance(value, Mapping) else value


def record_run_info(config: pytest.Config, key: str, value: Any) -> None:
    """Add run information to the report: 'weights' (id and digest per model), 'subsets'
    (ids chosen), 'seeds', ... Session fixtures call this with `pytestconfig`."""
    from harness.claims import jsonable

    merge_run_info(config.stash[STATE_KEY].run_info, key, jsonable(value))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "claim(id): the test re-verifies claim `id` of shared/CLAIMS.md (e.g. 'S3.1')")
    options = _parse_options(config)
    config.stash[OPTIONS_KEY] = options
    state = RunState()
    config.stash[STATE_KEY] = state
    if options.baseline:
        from harness.report import ReportError, load_report
        from harness.report.compare import report_rows

        try:
            state.baseline_rows = report_rows(load_report(options.baseline))
        except ReportError as err:
            raise pytest.UsageError(f"--baseline: {err}") from None


def pytest_report_header(config: pytest.Config) -> list[str]:
    o = run_options(config)
    lines = [f"vit-local-claims: profile={o.profile}, data root={o.data_root or 'unset'}, "
             f"cache dir={o.cache_dir}, models={','.join(o.models)}, report dir={o.report_dir}"]
    if o.weights:
        lines.append("vit-local-claims weights: " + ", ".join(f"{k}={v}" for k, v in o.weights.items()))
    if o.baseline:
        lines.append(f"vit-local-claims baseline: {o.baseline} (tolerance {o.tolerance})")
    return lines


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [(item, claim_id_of(item)) for item in items if item.get_closest_marker("claim")]
    if not marked:
        return
    from harness.claims import CLAIMS

    for item, claim_id in marked:
        if claim_id not in CLAIMS:
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.claim({claim_id!r}) names no claim of "
                                    f"CLAIMS.md; known ids: {', '.join(CLAIMS)}")
        item.user_properties.append(("claim", claim_id))


def pytest_collection_finish(session: pytest.Session) -> None:
    session.config.stash[STATE_KEY].claim_tests = sum(
        1 for item in session.items if item.get_closest_marker("claim"))


def claim_id_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("claim")
    if marker is None:
        return None
    return marker.args[0] if marker.args else marker.kwargs.get("id")


# ---------------------------------------------------------------- the recorder


class ClaimRecorder:
    """Judges, stores and concludes the claim of one test (see the module docstring)."""

    def __init__(self, item: pytest.Item):
        self.item = item
        self.config = item.config
        self.options = run_options(item.config)
        self.state = item.config.stash[STATE_KEY]

    @property
    def claim_id(self) -> str:
        claim_id = claim_id_of(self.item)
        if claim_id is None:
            raise RuntimeError(f"{self.item.nodeid} uses claim_recorder but has no @pytest.mark.claim(id)")
        return claim_id

    def params(self) -> dict[str, Any]:
        return {"profile": self.options.profile, "models": list(self.options.models),
                "bootstrap": self.options.bootstrap}

    def judge(self, table, resamples=None, untrained: bool | None = None, thresholds=None):
        """Judge this test's claim on `table` with the run's threshold overrides, record and conclude."""
        from harness.claims import judge

        merged = {**self.options.thresholds.get(self.claim_id, {}), **dict(thresholds or {})}
        result = judge(self.claim_id, table, thresholds=merged, resamples=resamples,
                       untrained=self.options.untrained if untrained is None else untrained,
                       params=self.params())
        return self.record(result)

    def skip(self, reason: str) -> None:
        """Record the claim as skipped (missing weights or dataset) and skip the test."""
        from harness.claims import skipped

        self.record(skipped(self.claim_id, reason, params=self.params()))

    def record(self, result):
        """Store `result` for the report, compare it with the baseline, and conclude the test."""
        marked = claim_id_of(self.item)
        if marked is not None and result.id != marked:
            raise ValueError(f"{self.item.nodeid} is marked claim {marked!r} but recorded a result of {result.id!r}")
        result.nodeid = self.item.nodeid
        result.params = {**self.params(), **(result.params or {})}
        if self.state.baseline_rows is not None and result.rows:
            from harness.report.compare import find_regressions

            result.regressions = [r.as_dict() for r in find_regressions(
                result.rows, self.state.baseline_rows, self.options.tolerance)]
        self.state.results[self.item.nodeid] = result.to_dict()
        conclude(result, tolerance=self.options.tolerance)
        return result

    def run_info(self, key: str, value: Any) -> None:
        record_run_info(self.config, key, value)


def conclude(result, tolerance: float = DEFAULT_TOLERANCE) -> None:
    """End a claim test according to its verdict (and regressions); see the module docstring."""
    from harness.claims import CONTRADICTED, ERROR, FRAGILE, NOT_JUDGED, SKIPPED, UNTRAINED_REASON

    failures = []
    if result.verdict in (CONTRADICTED, ERROR):
        failures.append(f"{result.id} {result.verdict}: {result.message}")
    if result.regressions:
        lines = [f"  {r['metric']}: {r['old']:.4f} -> {r['new']:.4f} (drop {r['drop']:.4f} > {tolerance})"
                 for r in result.regressions]
        failures.append(f"{result.id} regression against the baseline:\n" + "\n".join(lines))
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)
    if result.verdict == FRAGILE:
        warnings.warn(pytest.PytestWarning(f"{result.id} {result.message}"), stacklevel=2)
    elif result.verdict == SKIPPED:
        pytest.skip(f"{result.id}: {result.skip_reason}")
    elif result.verdict == NOT_JUDGED and result.skip_reason != UNTRAINED_REASON:
        pytest.skip(f"{result.id} not judged: {result.skip_reason}")


@pytest.fixture
def claim_recorder(request: pytest.FixtureRequest) -> ClaimRecorder:
    """Judges and records the claim of the requesting test (marked @pytest.mark.claim(id))."""
    return ClaimRecorder(request.node)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A claim test that skipped or crashed before recording still gets a line in the report."""
    report = yield
    claim_id = claim_id_of(item)
    state = item.config.stash[STATE_KEY]
    if claim_id is None or item.nodeid in state.results or report.when == "teardown":
        return report
    from harness.claims import ERROR, skipped

    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        state.results[item.nodeid] = dict(skipped(claim_id, reason).to_dict(), nodeid=item.nodeid)
    elif report.failed or report.when == "call":
        if report.failed:
            message = call.excinfo.exconly() if call.excinfo else str(report.longrepr)
            message = f"the test failed before recording a verdict ({report.when}): {message}"
        else:  # a claim test must never pass without a verdict
            message = ("the test ended without recording a verdict: call claim_recorder.judge(table) "
                       "or claim_recorder.skip(reason)")
            report.outcome, report.longrepr = "failed", f"{claim_id}: {message}"
        result = skipped(claim_id, message)
        result.verdict, result.skip_reason, result.nodeid, result.message = ERROR, None, item.nodeid, message
        state.results[item.nodeid] = result.to_dict()
    return report


# ---------------------------------------------------------------- xdist and the report


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """xdist controller: merge what a worker collected."""
    payload = getattr(node, "workeroutput", {}).get(WORKER_KEY)
    if not payload:
        return
    data = json.loads(payload)
    state = node.config.stash[STATE_KEY]
    state.results.update(data["results"])
    state.claim_tests += data["claim_tests"]
    state.device = state.device or data.get("device")
    for key, value in data["run_info"].items():
        merge_run_info(state.run_info, key, value)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if STATE_KEY not in config.stash:
        return
    state = config.stash[STATE_KEY]
    if _is_worker(config):
        from harness.report.json import device

        config.workeroutput[WORKER_KEY] = json.dumps(
            {"results": state.results, "run_info": state.run_info, "claim_tests": state.claim_tests,
             "device": device(import_torch=False) if state.results else None})
        return
    if config.option.collectonly or not (state.results or state.claim_tests):
        return  # no claim ran here (e.g. the harness's own tests): no report
    write_session_report(config)


def write_session_report(config: pytest.Config) -> list[Path]:
    """Write the merged report into --report-dir, or into the temporary directory if that fails."""
    from harness.report import build_report, write_report
    from harness.report.json import device, environment

    options, state = run_options(config), config.stash[STATE_KEY]
    device_name = device(import_torch=False) or state.device or "cpu (torch not loaded)"
    report = build_report(state.results.values(), run=options.as_dict(), run_info=state.run_info,
                          environment=environment(device_name))
    try:
        state.report_paths = write_report(report, options.report_dir)
    except OSError as err:
        stem = f"vit-local-claims-report-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        state.report_paths = write_report(report, tempfile.gettempdir(), stem=stem)
        state.report_error = (
            f"could not write the claims report to {options.report_dir!r} ({err.strerror or err}); "
            f"it was written to {state.report_paths[0]} instead")
        print(f"\nERROR: {state.report_error}", file=sys.stderr)
    return state.report_paths


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if STATE_KEY not in config.stash or _is_worker(config):
        return
    state = config.stash[STATE_KEY]
    if not state.results and not state.report_paths:
        return
    terminalreporter.section("claims")
    for result in sorted(state.results.values(), key=lambda r: _claim_order(r["id"])):
        message = (result.get("message") or "").replace("\n", " ")
        terminalreporter.write_line(f"{result['id']:<6} {result['verdict']:<13} {message[:110]}")
    if state.report_error:
        terminalreporter.write_line(f"ERROR: {state.report_error}", red=True, bold=True)
    elif state.report_paths:
        terminalreporter.write_line(f"claims report: {', '.join(str(p) for p in state.report_paths)}")


def _claim_order(claim_id: str) -> tuple[int, str]:
    from harness.claims import CLAIMS

    ids = list(CLAIMS)
    return (ids.index(claim_id) if claim_id in ids else len(ids), claim_id)
