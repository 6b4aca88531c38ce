"""The pytest plugin, driven through pytester on small fake claims modules."""

from __future__ import annotations

import json
import socket

import pytest

import harness.plugin
import harness.report.html  # noqa: F401  (imported here so in-process runs do not re-import matplotlib)
from harness.report import SCHEMA_VERSION

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def light_registry(monkeypatch):
    """In-process pytester runs restore sys.modules afterwards, so a registry import inside
    them would re-import torch on every run (unsafe); the plugin sees the six names instead."""
    monkeypatch.setattr(harness.plugin, "known_models", lambda: list(harness.plugin.FALLBACK_MODELS))



FAKE_CLAIMS = '''
import pandas as pd
import pytest


def mae_table(knn, linear):
    return pd.DataFrame([
        {"metric": "miou", "model": "mae", "probe": "knn", "n_train": 72, "value": knn},
        {"metric": "miou", "model": "mae", "probe": "linear_bn", "n_train": 72, "value": linear},
    ])


def band_table(clean, noisy):
    return pd.DataFrame([
        {"metric": "miou", "model": "supervised", "probe": "linear", "value": clean},
        {"metric": "miou", "model": "supervised", "probe": "linear", "corruption": "band_noise",
         "level": 4, "value": noisy},
    ])


@pytest.fixture
def no_dataset():
    pytest.skip("MOT17 not found: put it under DATA/mot17 (motchallenge.net)")


@pytest.mark.claim("S3.3")
def test_verified(claim_recorder):
    claim_recorder.run_info("weights", {"mae": {"id": "timm/mae", "digest": "abc"}})
    claim_recorder.judge(mae_table(0.06, 0.40))


@pytest.mark.claim("S3.12")
def test_contradicted(claim_recorder):
    claim_recorder.judge(band_table(0.50, 0.30))


@pytest.mark.claim("S4.8")
def test_fragile(claim_recorder):
    def table(top, random):
        return pd.DataFrame([{"metric": "recon_mse", "model": "mae", "zeroed": "top200", "value": top},
                             {"metric": "recon_mse", "model": "mae", "zeroed": "random200", "value": random}])
    claim_recorder.judge(table(0.9, 0.3), resamples=[table(0.9, 0.3), table(0.2, 0.3)])


@pytest.mark.claim("S3.5")
def test_untrained(claim_recorder):
    claim_recorder.judge(pd.DataFrame([
        {"metric": "miou", "model": m, "probe": p, "value": 0.1} for m in ("mae", "simmim")
        for p in ("linear", "linear_bn")]), untrained=True)


@pytest.mark.claim("S4.7")
def test_missing_rows(claim_recorder):
    claim_recorder.judge(pd.DataFrame({"metric": ["overlap"], "model": ["mae"], "pair": ["cityscapes/ade20k"],
                                       "value": [190]}))


@pytest.mark.claim("S6.5")
def test_skipped_in_fixture(no_dataset, claim_recorder):
    pass


@pytest.mark.claim("S6.6")
def test_skipped_by_recorder(claim_recorder):
    claim_recorder.skip("MOT17 weights missing: pass --weights dino=...")


@pytest.mark.claim("S6.4")
def test_crashes(claim_recorder):
    raise RuntimeError("extraction blew up")
'''


def run_in_process(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def load(path) -> dict:
    return json.loads(path.read_text())


def by_id(report: dict) -> dict[str, dict]:
    return {c["id"]: c for c in report["claims"]}


def test_verdicts_end_tests_and_reach_the_report(pytester):
    pytester.makepyfile(test_fake_claims=FAKE_CLAIMS)
    reports = pytester.path / "out"
    result = run_in_process(pytester, f"--report-dir={reports}", "--bootstrap=10", "-rs", "-W", "default")
    result.assert_outcomes(passed=3, failed=2, skipped=3)  # the fragile warning is matched below; other warnings vary with import order
    result.stdout.fnmatch_lines([
        "*S3.12 contradicted: does not hold: supervised under the highest band 0.300 >= 0.97 x clean 0.500*",
        "*PytestWarning: S4.8 fragile: holds in only 50% of resamples*",
        "*= claims =*",
        "S3.3   verified*",
        "S6.4   error*extraction blew up*",
        "claims report: *claims.json*",
        "*S4.7 not judged: missing measurements: overlap model=mae pair=cityscapes/fair1m*",
    ])
    report = load(reports / "claims.json")
    assert report["schema_version"] == SCHEMA_VERSION
    claims = by_id(report)
    assert {k: claims[k]["verdict"] for k in ("S3.3", "S3.12", "S4.8", "S3.5", "S4.7", "S6.5", "S6.6", "S6.4")} == {
        "S3.3": "verified", "S3.12": "contradicted", "S4.8": "fragile", "S3.5": "not judged",
        "S4.7": "not judged", "S6.5": "skipped", "S6.6": "skipped", "S6.4": "error"}
    assert claims["S6.5"]["skip_reason"] == "MOT17 not found: put it under DATA/mot17 (motchallenge.net)"
    assert "weights missing" in claims["S6.6"]["skip_reason"]
    assert claims["S3.1"]["verdict"] == "not run"
    assert claims["S3.3"]["nodeid"] == "test_fake_claims.py::test_verified"
    assert claims["S3.3"]["params"]["profile"] == "paper"
    assert claims["S3.3"]["rows"][0]["probe"] == "knn"
    assert report["run_info"]["weights"] == {"mae": {"id": "timm/mae", "digest": "abc"}}
    assert report["run"]["bootstrap"] == 10
    assert report["meta"]["X.1"]["verdict"] == "fragile"  # S4.8 is fragile
    assert (reports / "claims.md").exists() and (reports / "claims.html").exists()


def test_xdist_workers_merge_into_one_report(pytester):
    pytester.makepyfile(test_fake_claims=FAKE_CLAIMS)
    pytester.makepyfile(test_more_claims='''
import pytest

@pytest.mark.claim("S4.1")
@pytest.mark.parametrize("n", range(3))
def test_more(n, claim_recorder):
    claim_recorder.run_info("weights", {f"model{n}": {"id": f"hub/{n}"}})
    claim_recorder.skip(f"no weights {n}")
''')
    reports = pytester.path / "merged"
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", f"--report-dir={reports}",
                                           "--bootstrap=10")
    result.assert_outcomes(passed=3, failed=2, skipped=6, warnings=1)
    report = load(reports / "claims.json")
    nodeids = {c.get("nodeid") for c in report["claims"] if c["verdict"] != "not run"}
    assert len(nodeids) == 11  # every test of both workers
    assert set(report["run_info"]["weights"]) == {"mae", "model0", "model1", "model2"}
    assert by_id(report)["S6.5"]["skip_reason"].startswith("MOT17 not found")
    result.stdout.fnmatch_lines(["*= claims =*", "S3.12  contradicted*"])


def test_without_claim_tests_no_report_is_written(pytester):
    pytester.makepyfile(test_plain="def test_ok():\n    assert True\n")
    result = run_in_process(pytester, f"--report-dir={pytester.path / 'r'}")
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "r").exists()


def test_unknown_weights_name_is_a_usage_error(pytester):
    result = run_in_process(pytester, "--weights", "dinov3=timm/vit_base")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--weights 'dinov3=timm/vit_base': unknown model 'dinov3'; known models: *dino*mae*"])


def test_unreadable_weights_file_is_a_usage_error(pytester, tmp_path):
    # A socket exists but cannot be opened, even by root (chmod 000 would not stop root).
    path = tmp_path / "mae.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        result = run_in_process(pytester, "--weights", f"mae={path}")
    finally:
        server.close()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--weights 'mae={path}': {path} exists but cannot be read*"])


@pytest.mark.parametrize("value", ["./missing/mae.pth", "mae_pretrain.pth", "not a hub id!"])
def test_weights_neither_path_nor_hub_id_is_a_usage_error(pytester, value):
    result = run_in_process(pytester, "--weights", f"mae={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*is neither an existing file or folder nor a hub id*"])


def test_hub_ids_and_existing_files_are_accepted(pytester, tmp_path):
    checkpoint = tmp_path / "mae.pth"
    checkpoint.write_bytes(b"weights")
    pytester.makepyfile(test_plain="def test_ok():\n    assert True\n")
    result = run_in_process(pytester, "--weights", f"mae={checkpoint}", "--weights", "dino=hf-hub:facebook/dino-vitb16",
                            "--weights", "dinov2=timm/vit_base_patch14_dinov2.lvd142m", "--models", "mae,dino")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["vit-local-claims: profile=paper, *models=mae,dino*",
                                 f"vit-local-claims weights: mae={checkpoint}, dino=hf-hub:facebook/dino-vitb16, *"])


def test_unknown_models_is_a_usage_error(pytester):
    result = run_in_process(pytester, "--models", "dino,vit_huge")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--models: unknown vit_huge; known models:*"])


def test_baseline_of_another_schema_version_is_a_usage_error(pytester, tmp_path):
    baseline = tmp_path / "old.json"
    baseline.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, "claims": []}))
    result = run_in_process(pytester, f"--baseline={baseline}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--baseline: {baseline} has schema_version {SCHEMA_VERSION + 1}; "
                                 f"this harness reads version {SCHEMA_VERSION}*"])


def test_unreadable_baseline_is_a_usage_error(pytester, tmp_path):
    result = run_in_process(pytester, f"--baseline={tmp_path / 'nope.json'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--baseline: cannot read the claims report*nope.json*"])


def test_unwritable_report_dir_falls_back_to_tempdir(pytester, tmp_path, monkeypatch):
    import tempfile

    fallback = tmp_path / "tmp"
    fallback.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(fallback))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # mkdir under a regular file fails, also for root
    pytester.makepyfile(test_fake_claims=FAKE_CLAIMS)
    result = run_in_process(pytester, f"--report-dir={blocker / 'reports'}", "--bootstrap=5", "-k", "verified")
    result.assert_outcomes(passed=1, deselected=7)
    written = sorted(fallback.glob("vit-local-claims-report-*.json"))
    assert len(written) == 1
    result.stdout.fnmatch_lines([f"ERROR: could not write the claims report to '{blocker / 'reports'}' "
                                 f"(*); it was written to {written[0]} instead"])
    assert by_id(load(written[0]))["S3.3"]["verdict"] == "verified"


REGRESSION_CLAIM = '''
import os
import pandas as pd
import pytest

@pytest.mark.claim("S3.3")
def test_mae(claim_recorder):
    linear = float(os.environ["MAE_LINEAR"])
    claim_recorder.judge(pd.DataFrame([
        {"metric": "miou", "model": "mae", "probe": "knn", "n_train": 72, "value": 0.06},
        {"metric": "miou", "model": "mae", "probe": "linear_bn", "n_train": 72, "value": linear}]))
'''


def test_drop_below_baseline_fails_as_regression(pytester, monkeypatch):
    pytester.makepyfile(test_regress=REGRESSION_CLAIM)
    monkeypatch.setenv("MAE_LINEAR", "0.40")
    run_in_process(pytester, "--report-dir=base").assert_outcomes(passed=1)
    baseline = pytester.path / "base" / "claims.json"

    monkeypatch.setenv("MAE_LINEAR", "0.39")  # within the tolerance
    run_in_process(pytester, "--report-dir=ok", f"--baseline={baseline}").assert_outcomes(passed=1)

    monkeypatch.setenv("MAE_LINEAR", "0.30")  # still verified, but 0.10 below the baseline
    result = run_in_process(pytester, "--report-dir=new", f"--baseline={baseline}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*S3.3 regression against the baseline:*",
        "  miou ?mae? probe=linear_bn n_train=72: 0.4000 -> 0.3000 (drop 0.1000 > 0.02)",
    ])
    report = load(pytester.path / "new" / "claims.json")
    assert by_id(report)["S3.3"]["verdict"] == "verified"
    assert by_id(report)["S3.3"]["regressions"][0]["old"] == 0.40
    assert report["meta"]["X.2"]["verdict"] == "contradicted"

    # a looser tolerance accepts the same drop
    run_in_process(pytester, "--report-dir=loose", f"--baseline={baseline}", "--tolerance=0.2").assert_outcomes(passed=1)


def test_threshold_option_overrides_and_is_validated(pytester, monkeypatch):
    pytester.makepyfile(test_regress=REGRESSION_CLAIM)
    monkeypatch.setenv("MAE_LINEAR", "0.20")  # linear/kNN = 3.3
    run_in_process(pytester, "--report-dir=r").assert_outcomes(passed=1)
    result = run_in_process(pytester, "--report-dir=r", "--threshold", "S3.3:ratio=4")
    result.assert_outcomes(failed=1)
    assert by_id(load(pytester.path / "r" / "claims.json"))["S3.3"]["thresholds"] == {"ratio": 4}
    bad = run_in_process(pytester, "--threshold", "S3.3:gain=4")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*S3.3 has no threshold 'gain'; it has: ratio*"])


def test_claim_test_without_a_verdict_fails(pytester):
    pytester.makepyfile(test_lazy='''
import pytest

@pytest.mark.claim("S4.8")
def test_forgot(claim_recorder):
    assert True
''')
    result = run_in_process(pytester, f"--report-dir={pytester.path / 'r'}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*S4.8: the test ended without recording a verdict*"])
    assert by_id(load(pytester.path / "r" / "claims.json"))["S4.8"]["verdict"] == "error"


def test_unknown_claim_marker_is_an_error(pytester):
    pytester.makepyfile(test_bad='''
import pytest

@pytest.mark.claim("S9.1")
def test_x(claim_recorder):
    pass
''')
    result = run_in_process(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*names no claim of CLAIMS.md*"])
