"""How a claim test is run: its body judged by the harness, and its verdict turned into the
test's outcome.

  verified                 passes
  contradicted             fails with the failing asserts (pytest's own messages)
  fragile                  passes with a PytestWarning (the report says 'fragile')
  not judged (untrained)   passes: the smoke profile proves the pipeline, not the paper
  not judged (missing)     skips, naming the missing numbers
  skipped                  skips with the reason (what to download, where to put it)
and, with --claims-baseline, any higher-is-better row the claim read that dropped by more than
the tolerance below the baseline's row fails the test as a regression.
"""

from __future__ import annotations

import json
import re
import warnings
from typing import Any

import pytest

from harness.plugin.session import ClaimsSession

CLAIM_NODE = re.compile(r"\[((?:S\d+|X)\.\d+)\]$")
RESULT_PROPERTY = "vit_local_claims_result"
RESULT_KEY = pytest.StashKey[dict]()


def claim_id_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("claim")
    if marker is None:
        return None
    return marker.args[0] if marker.args else marker.kwargs.get("id")


def thresholds_for(session: ClaimsSession, spec) -> dict[str, Any]:
    """The claim's thresholds: its defaults, the profile's overrides, then the user's."""
    from harness.profiles import PROFILES

    return {**PROFILES[session.options.profile].thresholds.get(spec.id, {}),
            **session.options.thresholds.get(spec.id, {})}


def run_claim(item: pytest.Function) -> None:
    """Judge the claim of `item` on its sections, record the result, end the test."""
    from harness.claims import catalogue, judge
    from harness.report.compare import find_regressions

    spec = item.obj.__claim__
    session = ClaimsSession.of(item.config)
    options = session.options
    fragile_below = options.thresholds.get("X.1", {}).get("fragile_below", catalogue()["X.1"].thresholds["fragile_below"])
    sections = {name: item.funcargs[name] for name in spec.fixtures}
    params = {"profile": options.profile, "models": list(options.models), "bootstrap": options.bootstrap,
              "train_seeds": options.train_seeds}
    try:
        result = judge(spec, sections, thresholds=thresholds_for(session, spec),
                       resamples=0 if spec.section == "X" else options.bootstrap,
                       untrained=options.untrained, params=params, fragile_below=fragile_below)
    except Exception as err:
        item.stash[RESULT_KEY] = _error_result(spec.id, f"the claim's test crashed: {type(err).__name__}: {err}")
        raise
    if session.baseline_rows is not None and result.rows:
        result.regressions = [r.as_dict() for r in find_regressions(result.rows, session.baseline_rows,
                                                                     options.tolerance)]
    item.stash[RESULT_KEY] = result.to_dict()
    end_test(result, options.tolerance)


def end_test(result, tolerance: float) -> None:
    """The test's outcome from the verdict (see the module docstring)."""
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


def _error_result(claim_id: str, message: str) -> dict[str, Any]:
    from harness.claims import ERROR, ClaimResult, get_claim

    try:
        spec = get_claim(claim_id)
        statement, section = spec.statement, spec.section
    except ValueError:
        statement, section = "", claim_id.split(".")[0]
    return ClaimResult(id=claim_id, statement=statement, verdict=ERROR, section=section,
                       message=message).to_dict()


def attach_result(item: pytest.Item, report: pytest.TestReport) -> None:
    """Worker side: the test's result travels with its report (to the xdist controller)."""
    claim_id = claim_id_of(item)
    if claim_id is None or report.when == "teardown":
        return
    result = item.stash.get(RESULT_KEY, None)
    if result is None and report.skipped:
        from harness.claims import skipped

        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        result = skipped(claim_id, reason.removeprefix("Skipped: ")).to_dict()
    elif result is None and report.failed:
        result = _error_result(claim_id, f"the test failed before a verdict ({report.when}): {_crash_text(report)}")
    if result is not None and (report.when == "call" or report.outcome != "passed"):
        item.stash[RESULT_KEY] = result
        report.user_properties.append((RESULT_PROPERTY, json.dumps(result)))


class ResultCollector:
    """Registered on the controller (or the only process) as a plugin of its own."""

    def __init__(self, session: ClaimsSession):
        self.session = session

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        collect_result(self.session, report)


def _crash_text(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return crash.message.splitlines()[0]
    return str(report.longrepr).strip().splitlines()[-1] if report.longrepr else "failed"


def collect_result(session: ClaimsSession, report: pytest.TestReport) -> None:
    """Store each claim test's result once; a test whose worker crashed gets an 'error'
    result, so nothing waits for it."""
    payload = next((v for k, v in report.user_properties if k == RESULT_PROPERTY), None)
    if payload is not None:
        if not session.has_result(report.nodeid):
            session.record_result(report.nodeid, json.loads(payload))
        return
    # A worker that crashed sends nothing; xdist reports the test failed, with no keywords.
    crashed = report.failed and not report.keywords and report.when not in ("setup", "call", "teardown")
    match = CLAIM_NODE.search(report.nodeid)
    if match and crashed and not session.has_result(report.nodeid):
        session.record_result(report.nodeid, _error_result(match.group(1), f"no verdict: {_crash_text(report)}"))
