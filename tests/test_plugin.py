"""The pytest plugin, driven through pytester: the project's real claim tests run on planted
sections (fixtures that return chosen numbers), so every path from a test body to a verdict,
a test outcome and the report is exercised without data or weights."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

import harness.models  # noqa: F401  (imported once here: in-process runs must not re-import torch)
import harness.report.html  # noqa: F401  (likewise matplotlib)
from harness.claims import catalogue
from harness.report import SCHEMA_VERSION

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[1]

CONFTEST = '''
import os
import numpy as np
import pytest
from harness.measurements import Measurement, Measurements

pytest_plugins = ["harness.plugin"]


def rows(*specs):
    return Measurements([Measurement(metric, model, value, params) for metric, model, value, params in specs])


@pytest.fixture(scope="session")
def cityscapes():
    linear = float(os.environ.get("MAE_LINEAR", "0.42"))
    return rows(("miou", "mae", 0.06, {"probe": "knn", "n_train": 72}),
                ("miou", "mae", linear, {"probe": "linear_bn", "n_train": 72}),
                ("miou", "supervised", 0.50, {"probe": "linear"}),
                ("miou", "supervised", 0.30, {"probe": "linear", "corruption": "band_noise", "level": 4}))


@pytest.fixture(scope="session")
def reconstruction():
    """Zeroing the top features raises the error on the full set of images, but only image 5
    carries it: a resample without image 5 says otherwise (fragile)."""
    def row(zeroed, per_image):
        units = np.stack([per_image, np.ones(6)], axis=1)
        return Measurement("recon_mse", "mae", float(np.mean(per_image)), {"zeroed": zeroed},
                           units=units, reducer="ratio", unit_group="recon/images")
    return Measurements([row("none", np.ones(6)), row("top200", np.array([0.9] * 5 + [1.6]))])


@pytest.fixture(scope="session")
def feature_overlap():
    return rows(("overlap", "mae", 190, {"pair": "cityscapes/ade20k"}))


@pytest.fixture(scope="session")
def mot17():
    pytest.skip("MOT17 not found: put it under DATA/mot17 (motchallenge.net)")


@pytest.fixture(scope="session")
def bdd100k():
    raise RuntimeError("extraction blew up")
'''

CLAIMS = '''
from claims.test_s3_patch_classification import (  # noqa: F401
    test_mae_knn_far_below_its_linear_probe, test_supervised_robust_to_high_frequency_noise)
from claims.test_s4_high_variance_features import (  # noqa: F401
    test_mae_top_features_shared_across_datasets, test_zeroing_top_features_raises_reconstruction_error)
from claims.test_s6_association import test_contrastive_beat_mim_on_mot17, test_supervised_well_below_dino_like_mae  # noqa: F401
from claims.test_x_harness import test_no_metric_regressed_against_the_baseline, test_verdicts_are_stable_under_resampling  # noqa: F401
'''


@pytest.fixture
def planted(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_planted_claims=CLAIMS)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "--claims-cache-dir", str(pytester.path / "cache"), *args)


def subprocess_run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    os.environ.setdefault("PYTHONPATH", "")
    pytester._monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{os.environ['PYTHONPATH']}")
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--claims-cache-dir",
                                         str(pytester.path / "cache"), *args)


def load(path) -> dict:
    return json.loads(Path(path).read_text())


def by_id(report: dict) -> dict[str, dict]:
    return {c["id"]: c for c in report["claims"]}


def test_verdicts_end_tests_and_reach_the_report(planted):
    reports = planted.path / "out"
    result = run(planted, f"--claims-report-dir={reports}", "--claims-bootstrap=200", "-rs", "-W", "default")
    result.assert_outcomes(passed=3, failed=1, errors=1, skipped=3)
    result.stdout.fnmatch_lines([
        "*S3.12 contradicted: does not hold: assert 0.3 >= (0.97 * 0.5)*",
        "*PytestWarning: S4.8 fragile: holds in only *% of bootstrap resamples*",
        "*= claims =*",
        "S3.3   verified*",
        "S4.8   fragile*",
        "S6.4   error*extraction blew up*",
        "X.1    fragile       fragile: S4.8: assert 0.* >= 0.9",
        "claims report: *claims.json*",
        "*S4.7 not judged: missing measurements: overlap model=mae pair=cityscapes/fair1m*",
        "*X.2 not judged: no --claims-baseline FILE given*",
    ])
    report = load(reports / "claims.json")
    assert report["schema_version"] == SCHEMA_VERSION
    claims = by_id(report)
    assert {k: claims[k]["verdict"] for k in ("S3.3", "S3.12", "S4.8", "S4.7", "S6.6", "S6.4", "X.1", "X.2")} == {
        "S3.3": "verified", "S3.12": "contradicted", "S4.8": "fragile", "S4.7": "not judged", "S6.6": "skipped",
        "S6.4": "error", "X.1": "fragile", "X.2": "not judged"}
    assert claims["S6.6"]["skip_reason"] == "MOT17 not found: put it under DATA/mot17 (motchallenge.net)"
    assert claims["S3.1"]["verdict"] == "not run"
    assert claims["S3.3"]["nodeid"] == "test_planted_claims.py::test_mae_knn_far_below_its_linear_probe[S3.3]"
    assert claims["S3.3"]["params"]["profile"] == "paper"
    assert [r["probe"] for r in claims["S3.3"]["rows"]] == ["knn", "linear_bn"]
    assert claims["S4.8"]["holds_fraction"] < 0.9 and claims["S4.8"]["ci"]
    assert report["run"]["bootstrap"] == 200
    assert (reports / "claims.md").exists() and (reports / "claims.html").exists()


def test_untrained_weights_pass_as_not_judged(planted):
    result = run(planted, "--claims-profile=smoke", "--claims-bootstrap=0", "-k", "S3.3 or S3.12",
                 f"--claims-report-dir={planted.path / 'r'}")
    result.assert_outcomes(passed=2, deselected=6)
    claims = by_id(load(planted.path / "r" / "claims.json"))
    assert claims["S3.12"]["verdict"] == "not judged" and claims["S3.12"]["holds"] is False
    assert claims["S3.12"]["message"].startswith("untrained weights, would not hold")


def test_claims_of_the_run_itself_are_judged_last(planted):
    result = run(planted, "--co", "-q")
    ids = [line for line in result.stdout.lines if "::" in line]
    assert [i.rsplit("[", 1)[1] for i in ids[-2:]] == ["X.1]", "X.2]"]


def test_xdist_workers_share_one_run_and_x1_waits_for_every_claim(planted):
    reports = planted.path / "merged"
    result = subprocess_run(planted, "-n", "2", f"--claims-report-dir={reports}", "--claims-bootstrap=50")
    result.assert_outcomes(passed=3, failed=1, errors=1, skipped=3, warnings=2)
    claims = by_id(load(reports / "claims.json"))
    assert claims["X.1"]["verdict"] == "fragile"  # it saw S4.8, judged on another worker
    assert "S4.8" in claims["X.1"]["message"]
    nodeids = {c.get("nodeid") for c in claims.values() if c["verdict"] != "not run"}
    assert len(nodeids) == 8
    result.stdout.fnmatch_lines(["*= claims =*", "S3.12  contradicted*"])


def test_without_claim_tests_no_report_is_written(pytester):
    pytester.makeconftest('pytest_plugins = ["harness.plugin"]')
    pytester.makepyfile(test_plain="def test_ok():\n    assert True\n")
    result = run(pytester, f"--claims-report-dir={pytester.path / 'r'}")
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "r").exists()


def test_drop_below_baseline_fails_as_regression(planted, monkeypatch):
    args = ("-k", "S3.3 or X.2", "--claims-bootstrap=0")
    run(planted, "--claims-report-dir=base", *args).assert_outcomes(passed=1, skipped=1, deselected=6)
    baseline = planted.path / "base" / "claims.json"

    monkeypatch.setenv("MAE_LINEAR", "0.41")  # within the tolerance
    run(planted, "--claims-report-dir=ok", f"--claims-baseline={baseline}", *args).assert_outcomes(
        passed=2, deselected=6)

    monkeypatch.setenv("MAE_LINEAR", "0.30")  # still verified, but 0.12 below the baseline
    result = run(planted, "--claims-report-dir=new", f"--claims-baseline={baseline}", *args)
    result.assert_outcomes(failed=2, deselected=6)
    result.stdout.fnmatch_lines([
        "*S3.3 regression against the baseline:*",
        "  miou mae linear_bn n_train=72: 0.4200 -> 0.3000 (drop 0.1200 > 0.02)",
        "*X.2 contradicted: does not hold: miou mae linear_bn n_train=72: assert 0.3 >= (0.42 - 0.02)*",
    ])
    claims = by_id(load(planted.path / "new" / "claims.json"))
    assert claims["S3.3"]["verdict"] == "verified"
    assert claims["S3.3"]["regressions"][0]["old"] == 0.42
    assert claims["X.2"]["verdict"] == "contradicted"

    # a looser tolerance accepts the same drop
    run(planted, "--claims-report-dir=loose", f"--claims-baseline={baseline}", "--claims-tolerance=0.2",
        *args).assert_outcomes(passed=2, deselected=6)


def test_threshold_option_overrides_a_claims_threshold(planted):
    run(planted, "--claims-report-dir=r", "-k", "S3.3").assert_outcomes(passed=1, deselected=7)
    result = run(planted, "--claims-report-dir=r", "-k", "S3.3", "--claims-threshold", "S3.3:ratio=8")
    result.assert_outcomes(failed=1, deselected=7)
    assert by_id(load(planted.path / "r" / "claims.json"))["S3.3"]["thresholds"] == {"ratio": 8}


def test_unwritable_report_dir_falls_back_to_tempdir(planted, tmp_path, monkeypatch):
    import tempfile

    fallback = tmp_path / "tmp"
    fallback.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(fallback))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # mkdir under a regular file fails, also for root
    result = run(planted, f"--claims-report-dir={blocker / 'reports'}", "-k", "S3.3")
    result.assert_outcomes(passed=1, deselected=7)
    written = sorted(fallback.glob("vit-local-claims-report-*.json"))
    assert len(written) == 1
    result.stdout.fnmatch_lines([f"ERROR: could not write the claims report to '{blocker / 'reports'}' "
                                 f"(*); it was written to {written[0]} instead"])
    assert by_id(load(written[0]))["S3.3"]["verdict"] == "verified"


# ---------------------------------------------------------------- options validated at start-up


def usage_error(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makeconftest('pytest_plugins = ["harness.plugin"]')
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    return result


@pytest.mark.parametrize(("args", "message"), [
    (["--claims-threshold", "S6.3:tolerance=NaN"], "*S6.3:tolerance must be a finite number*"),
    (["--claims-threshold", 'S6.3:tolerance="0.02"'], "*S6.3:tolerance takes a number like 0.02, got '0.02' (str)*"),
    (["--claims-threshold", "S6.3:tolerance=[1, 2]"], "*S6.3:tolerance takes a number like 0.02, got ?1, 2? (list)*"),
    (["--claims-threshold", "S4.2:best_m=[100]"], "*S4.2:best_m takes a list of 2 numbers*"),
    (["--claims-threshold", "S3.3:gain=4"], "*S3.3 has no threshold 'gain'; it has: ratio*"),
    (["--claims-threshold", "S9.9:ratio=4"], "*unknown claim 'S9.9'*"),
    (["--claims-threshold", "S3.3 ratio 4"], "*expected ID:NAME=VALUE*"),
    (["--claims-tolerance", "nan"], "*--claims-tolerance 'nan': expected a finite number >= 0*"),
    (["--claims-tolerance", "-0.1"], "*--claims-tolerance '-0.1': expected a finite number >= 0*"),
    (["--claims-bootstrap", "-1"], "*--claims-bootstrap '-1': expected a whole number >= 0*"),
    (["--claims-bootstrap", "ten"], "*--claims-bootstrap 'ten': expected a whole number >= 0*"),
    (["--claims-train-seeds", "0"], "*--claims-train-seeds '0': expected a whole number >= 1*"),
    (["--claims-profile", "huge"], "*--claims-profile 'huge': expected one of paper, smoke*"),
    (["--claims-models", "dino,vit_huge"], "*--claims-models 'dino,vit_huge': unknown vit_huge; known models:*"),
    (["--claims-weights", "dinov3=timm/vit_base"], "*unknown model 'dinov3'; known models: *dino*mae*"),
    (["--claims-weights", "mae=./missing/mae.pth"], "*is neither an existing file or folder nor a hub id*"),
    (["--claims-weights", "mae=mae_pretrain.pth"], "*is neither an existing file or folder nor a hub id*"),
    (["--claims-weights", "mae=not a hub id!"], "*is neither an existing file or folder nor a hub id*"),
    (["--claims-weights", "mae"], "*expected NAME=PATH_OR_HUB_ID*"),
    (["--claims-precision", "fp16"], "*--claims-precision 'fp16': expected one of fp32, bf16*"),
])
def test_nonsense_option_values_are_refused_naming_option_and_value(pytester, args, message):
    usage_error(pytester, *args).stderr.fnmatch_lines([message])


def test_data_root_that_is_not_a_folder_is_refused(pytester, tmp_path):
    result = usage_error(pytester, "--claims-data-root", str(tmp_path / "nowhere"))
    result.stderr.fnmatch_lines([f"*--claims-data-root '{tmp_path / 'nowhere'}': not a folder*"])


def test_cache_dir_that_cannot_be_written_is_refused(pytester, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = usage_error(pytester, "--claims-cache-dir", str(blocker / "cache"))
    result.stderr.fnmatch_lines([f"*--claims-cache-dir '{blocker / 'cache'}': cannot write there*"])


def test_unreadable_weights_file_is_refused(pytester, tmp_path):
    # A socket exists but cannot be opened, even by root (chmod 000 would not stop root).
    path = tmp_path / "mae.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        result = usage_error(pytester, "--claims-weights", f"mae={path}")
    finally:
        server.close()
    result.stderr.fnmatch_lines([f"*--claims-weights 'mae={path}': {path} exists but cannot be read*"])


def test_a_weights_folder_must_hold_one_checkpoint(pytester, tmp_path):
    folder = tmp_path / "snapshot"
    folder.mkdir()
    result = usage_error(pytester, "--claims-weights", f"mae={folder}")
    result.stderr.fnmatch_lines([f"*the folder {folder} must hold exactly one of model.safetensors, *"])
    (folder / "model.safetensors").write_bytes(b"weights")
    pytester.makepyfile(test_plain="def test_ok():\n    assert True\n")
    result = run(pytester, "--claims-weights", f"mae={folder}", "--claims-weights", "dino=hf-hub:facebook/dino-vitb16")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"vit-local-claims weights: mae={folder / 'model.safetensors'}, "
                                 "dino=hf-hub:facebook/dino-vitb16"])


@pytest.mark.parametrize("content", [{"schema_version": SCHEMA_VERSION + 1, "claims": []}, "not json"])
def test_baseline_of_another_schema_or_invalid_json_is_refused(pytester, tmp_path, content):
    baseline = tmp_path / "old.json"
    baseline.write_text(json.dumps(content) if isinstance(content, dict) else content)
    result = usage_error(pytester, f"--claims-baseline={baseline}")
    result.stderr.fnmatch_lines(["*--claims-baseline: *old.json*"])


def test_thresholds_of_every_claim_are_accepted_at_their_defaults(pytester):
    pytester.makeconftest('pytest_plugins = ["harness.plugin"]')
    pytester.makepyfile(test_plain="def test_ok():\n    assert True\n")
    args = [f"--claims-threshold={cid}:{name}={json.dumps(list(v) if isinstance(v, tuple) else v)}"
            for cid, spec in catalogue().items() for name, v in spec.thresholds.items()]
    run(pytester, *args).assert_outcomes(passed=1)


def test_bf16_is_refused_where_the_device_has_no_native_bf16(pytester, monkeypatch):
    import harness.devices

    monkeypatch.setattr(harness.devices, "bf16_supported", lambda device: False)
    result = usage_error(pytester, "--claims-precision", "bf16")
    result.stderr.fnmatch_lines(["*--claims-precision 'bf16': bf16 extraction needs native bf16 arithmetic*"])


def test_precision_is_in_the_header_and_the_report(planted):
    reports = planted.path / "out"
    result = run(planted, "--claims-precision=fp32", f"--claims-report-dir={reports}", "-k", "S3.3")
    result.stdout.fnmatch_lines(["vit-local-claims: *precision=fp32*"])
    assert load(reports / "claims.json")["run"]["precision"] == "fp32"


def test_a_run_whose_store_would_not_fit_stops_before_it_starts(planted, monkeypatch):
    """The pre-flight (harness.plan.check_room): the smoke world's entries need a few MB; a
    cache filesystem with 1,000 bytes free stops the run before any extraction, naming the
    folder and the bytes, and writes no report."""
    import harness.plan

    reports = planted.path / "out"
    monkeypatch.setattr(harness.plan, "free_bytes", lambda folder: 1000)
    result = run(planted, "--claims-profile=smoke", f"--claims-report-dir={reports}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*the claims run needs * more in {planted.path / 'cache' / 'embeddings'}*"
                                 "0.0 MiB free; free space or pass --claims-cache-dir*harness plan*"])
    assert not (reports / "claims.json").exists() and not (planted.path / "cache" / "embeddings").exists()


def test_a_run_records_what_it_planned_to_write(planted):
    reports = planted.path / "out"
    run(planted, "--claims-profile=smoke", "--claims-bootstrap=0", f"--claims-report-dir={reports}")
    planned = load(reports / "claims.json")["run_info"]["plan"]
    assert planned["store_bytes_to_write"] > 0 and planned["free_bytes"] > planned["store_bytes_to_write"]
