"""The claims suite end to end: `pytest claims/` on the smoke profile, a partial data root,
and the report it writes. Each run is a subprocess, as a user would start it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_claims(*args, cwd=ROOT, env=None):
    cmd = [sys.executable, "-m", "pytest", "claims/", "-p", "no:cacheprovider", "-q", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def builds(cache: Path) -> list[dict]:
    path = cache / "embeddings" / "builds.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
def test_smoke_profile_runs_end_to_end_and_a_warm_rerun_extracts_nothing(tmp_path):
    cache, reports = tmp_path / "cache", tmp_path / "reports"
    args = ["--claims-profile", "smoke", "--claims-models", "dino,mae", "-k", "S3.3 or S4.2 or S5.1",
            "--claims-cache-dir", str(cache), "--claims-report-dir", str(reports)]
    cold = run_claims(*args)
    assert cold.returncode == 0, cold.stdout[-3000:] + cold.stderr[-3000:]
    report = json.loads((reports / "claims.json").read_text())
    by_id = {c["id"]: c for c in report["claims"]}
    # S3.3 and S4.2 need only MAE: measured and (untrained) not judged, with numbers.
    for claim_id in ("S3.3", "S4.2"):
        assert by_id[claim_id]["verdict"] == "not judged"
        assert by_id[claim_id]["measured"], claim_id
    # S5.1 compares dino, dinov2, supervised and mae: it skips naming a model left out.
    assert by_id["S5.1"]["verdict"] == "skipped"
    assert "not among this run's models" in by_id["S5.1"]["skip_reason"]
    first = builds(cache)
    keys = [json.dumps(b["key"], sort_keys=True) for b in first]
    assert first and len(keys) == len(set(keys)), "an embedding entry was built twice"
    assert "S3.3" in (reports / "claims.md").read_text()

    warm = run_claims(*args)
    assert warm.returncode == 0, warm.stdout[-3000:]
    assert len(builds(cache)) == len(first), "the warm run extracted again"


def test_a_partial_dataset_skips_with_what_is_missing(tmp_path):
    data = tmp_path / "data"
    (data / "cityscapes" / "leftImg8bit" / "train").mkdir(parents=True)  # no gtFine/
    result = run_claims("-k", "S3.2", "-rs", "--claims-data-root", str(data),
                        "--claims-cache-dir", str(tmp_path / "cache"), "--claims-report-dir", str(tmp_path / "r"))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 skipped" in result.stdout
    assert "gtFine" in result.stdout
    report = json.loads((tmp_path / "r" / "claims.json").read_text())
    s32 = next(c for c in report["claims"] if c["id"] == "S3.2")
    assert s32["verdict"] == "skipped" and "gtFine" in s32["skip_reason"]


def test_no_data_root_skips_every_claim_and_still_writes_the_report(tmp_path):
    env = {"VITCLAIMS_DATA": ""}
    result = run_claims("--claims-report-dir", str(tmp_path / "r"), "--claims-cache-dir", str(tmp_path / "c"), env=env)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "38 skipped" in result.stdout
    report = json.loads((tmp_path / "r" / "claims.json").read_text())
    verdicts = {c["id"]: c["verdict"] for c in report["claims"]}
    assert {v for k, v in verdicts.items() if k.startswith("S")} == {"skipped"}
    assert all("no data root" in c["skip_reason"] for c in report["claims"] if c["id"].startswith("S"))
    assert verdicts["X.1"] == verdicts["X.2"] == "not judged"  # nothing was measured


def test_missing_weights_skip_naming_what_to_download(tmp_path):
    """Data present (the synthetic world in its native layouts), weights absent and no
    network: the claims that need those models skip, naming the hub id or release file."""
    from harness.data.synthetic import write_world

    data = write_world(tmp_path / "data", seed=0, names=["cityscapes"])
    result = run_claims("-k", "S3.3", "-rs", "--claims-data-root", str(data), "--claims-cache-dir",
                        str(tmp_path / "cache"), "--claims-report-dir", str(tmp_path / "r"),
                        env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 skipped" in result.stdout
    report = json.loads((tmp_path / "r" / "claims.json").read_text())
    s33 = next(c for c in report["claims"] if c["id"] == "S3.3")
    assert s33["verdict"] == "skipped"
    assert "vit_base_patch16_224.mae" in s33["skip_reason"]  # MAE's hub id
    assert str(tmp_path / "cache" / "weights") in s33["skip_reason"]  # where a release file goes
