"""pytest plugin of vit-local-claims: the hooks, in one place.

Loaded by the project's root conftest.py (`pytest_plugins`), not through an entry point:
installing the project changes no other pytest run in the environment, and every option is
namespaced `--claims-*`. The jobs live in submodules: `options` (options and their
validation), `session` (results, the run folder shared with xdist workers, the report),
`judging` (a claim test judged by the harness and its verdict turned into the outcome).
"""

from __future__ import annotations

import dataclasses

import pytest

from harness.plugin import judging
from harness.plugin.options import RunOptions, addoption, parse
from harness.plugin.session import RUN_DIR_KEY, SESSION_KEY, ClaimsSession, RunResults

__all__ = ["RunOptions", "ClaimsSession", "run_options", "record_run_info", "record_rows"]


def run_options(config: pytest.Config) -> RunOptions:
    return ClaimsSession.of(config).options


def record_run_info(config: pytest.Config, key: str, value) -> None:
    """Add run information to the report: 'weights' (id and digest per model), 'subsets'
    (ids chosen), 'conventions', ... Session fixtures call this with `pytestconfig`."""
    ClaimsSession.of(config).record_run_info(key, value)


def record_rows(config: pytest.Config, section: str, rows) -> None:
    """Every row a section measured, for the report's figures and X.2."""
    ClaimsSession.of(config).record_rows(section, rows)


def pytest_addoption(parser: pytest.Parser) -> None:
    addoption(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "claim(id): the test is claim `id` of the claims catalogue (harness claims)")
    session = ClaimsSession(config, parse(config.option))
    config.stash[SESSION_KEY] = session
    if not session.worker:  # stores each claim's result as its test report arrives
        config.pluginmanager.register(judging.ResultCollector(session), "vit_local_claims_results")
    if session.options.baseline:
        from harness.measurements import row_key
        from harness.report import ReportError, load_report
        from harness.report.compare import report_rows

        try:
            rows = report_rows(load_report(session.options.baseline))
        except ReportError as err:
            raise pytest.UsageError(f"--claims-baseline: {err}") from None
        session.baseline_rows = {row_key(dict(k)): v for k, v in rows.items()}


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist controller: every worker writes into this run's folder."""
    node.workerinput[RUN_DIR_KEY] = str(ClaimsSession.of(node.config).run_dir)


def pytest_report_header(config: pytest.Config) -> list[str]:
    o = run_options(config)
    lines = [f"vit-local-claims: profile={o.profile}, data root={o.data_root or 'unset'}, "
             f"cache dir={o.cache_dir}, models={','.join(o.models)}, precision={o.precision}, "
             f"report dir={o.report_dir}"]
    if o.weights:
        lines.append("vit-local-claims weights: " + ", ".join(f"{k}={v}" for k, v in o.weights.items()))
    if o.baseline:
        lines.append(f"vit-local-claims baseline: {o.baseline} (tolerance {o.tolerance})")
    return lines


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Claims of the run's own (X.*) go last: they judge the run from the other claims."""
    marked = [(item, judging.claim_id_of(item)) for item in items]
    if not any(claim_id for _, claim_id in marked):
        return
    for item, claim_id in marked:
        if claim_id is not None:
            item.user_properties.append(("claim", claim_id))
    from harness.claims import claim_order

    items[:] = ([item for item, cid in marked if not (cid or "").startswith("X.")]
                + sorted((item for item, cid in marked if (cid or "").startswith("X.")),
                         key=lambda item: claim_order(judging.claim_id_of(item))))
    claims = ClaimsSession.of(config)
    claims.claim_items = sum(1 for _, cid in marked if cid)
    if not claims.worker:
        _check_room(claims, _workers(config))


def _workers(config: pytest.Config) -> int:
    """The run's xdist workers (-n N; 'auto' and 'logical' as xdist counts them), 1 without."""
    n = getattr(config.option, "numprocesses", None)
    if isinstance(n, int):
        return max(1, n)
    if n in ("auto", "logical"):
        import os

        return max(1, os.cpu_count() or 1)
    return 1


def _check_room(claims: ClaimsSession, workers: int) -> None:
    """The pre-flight: a run whose store entries (plus each worker's scratch) would not fit
    the cache's filesystem stops before anything is extracted, saying what it needs where
    (`harness plan` shows the whole table)."""
    from harness.plan import NotEnoughRoomError, check_room

    try:
        plan = check_room(dataclasses.replace(claims.options, workers=workers))
    except NotEnoughRoomError as err:
        claims.claim_items = 0  # nothing ran: no report, and an earlier one stays as it was
        raise pytest.UsageError(f"{err}; `harness plan` shows what each model and section needs") from None
    claims.record_run_info("plan", {"store_bytes_to_write": plan.bytes_to_write,
                                    "scratch_peak_bytes": plan.scratch_peak, "free_bytes": plan.free_bytes})


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """A claim test is judged by the harness (its body on the measured numbers and on every
    resample); any other test is called as pytest calls it."""
    if getattr(pyfuncitem.obj, "__claim__", None) is None:
        return None
    judging.run_claim(pyfuncitem)
    return True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    judging.attach_result(item, report)
    return report




@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if SESSION_KEY not in config.stash:
        return
    claims = ClaimsSession.of(config)
    if claims.worker:
        return
    if not config.option.collectonly and (claims.results() or claims.claim_items):
        claims.write_report()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if SESSION_KEY not in config.stash:
        return
    claims = ClaimsSession.of(config)
    if claims.worker:
        return
    results = claims.results()
    if results or claims.report_paths:
        from harness.claims import claim_order

        terminalreporter.section("claims")
        for result in sorted(results, key=lambda r: claim_order(r["id"])):
            message = (result.get("message") or "").replace("\n", " ")
            terminalreporter.write_line(f"{result['id']:<6} {result['verdict']:<13} {message[:110]}")
        if claims.report_error:
            terminalreporter.write_line(f"ERROR: {claims.report_error}", red=True, bold=True)
        elif claims.report_paths:
            terminalreporter.write_line(f"claims report: {', '.join(str(p) for p in claims.report_paths)}")


def pytest_unconfigure(config: pytest.Config) -> None:
    if SESSION_KEY in config.stash:
        ClaimsSession.of(config).close()


@pytest.fixture(scope="session")
def claim_results(request: pytest.FixtureRequest) -> RunResults:
    """The verdicts of the run's other claims (X.1, X.2 read them)."""
    expected = [item.nodeid for item in request.session.items
                if (judging.claim_id_of(item) or "X.").split(".")[0] != "X"]
    return RunResults(ClaimsSession.of(request.config), expected)
