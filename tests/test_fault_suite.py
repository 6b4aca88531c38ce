"""The fault-injection suite: faults and bad input tried through the public interfaces, each
asserting what a user must see (a clear message naming the problem, the right exit code) and,
wherever the run can recover, the same numbers as an undisturbed run.

The claims runs here are `pytest claims/` subprocesses on the smoke profile, with cheap
sections: instance retrieval on the synthetic FAIR1M (dino and iBOT, claim S5.4), whose clean
tiles are persisted in the store, and object association on the synthetic BDD100K videos
(dino and dinov2, claim S6.2), whose frames are extracted transiently.

Index of the faults tried (this module: [F]; elsewhere: the test that tries it)
-------------------------------------------------------------------------------
Claims runs (`pytest claims/`):
 1. a flipped bit in a cached measurement (<cache>/measurements/*.npz)            [F]
 2. a full disk: refused by the pre-flight; filling in the middle of a claims run  [F]
 3. two claims runs at once on one cache                                           [F]
 4. a claims run killed (SIGKILL) during extraction, then run again                [F]
 5. random bytes as a model's weights                                              [F]
 6. a weights file whose pickle would run code                                     [F]
 7. a malformed dataset file (FAIR1M XML) under the data                           [F]
 8. a read-only cache folder                                                       [F]
 9. an empty data root                                                             [F]
10. no data root at all                                   test_claims_suite.py
11. a partial dataset (gtFine/ missing)                    test_claims_suite.py
12. weights missing, offline                               test_claims_suite.py
13. an unwritable report folder (falls back to the temp folder)   test_plugin.py
14. a report folder that fills up mid-write (old report intact)   test_report_writes.py
15-33. option values that make no sense (--claims-threshold NaN, a string, a list, a range of
    the wrong length, unknown claim/name, bad syntax; --claims-tolerance nan/negative;
    --claims-bootstrap negative/not a number; --claims-train-seeds 0; unknown profile; unknown
    models; unknown/duplicate/unreadable/nonexistent weights; a weights folder without a
    checkpoint; a data root that is not a folder; an unwritable cache)    test_plugin.py
34. a baseline of another schema version or invalid JSON                   test_plugin.py
Command line (`harness ...`):
35. NaN weights: extraction names model, layer and sample                  [F]
36. damaged checkpoints (random bytes, truncated, empty, another format)  test_cli_failures.py
37. a checkpoint of another model (wrong keys, names them)                 test_cli_failures.py
38. read-only and full caches; missing and wrong data roots                test_cli_failures.py
39. Ctrl-C in every command (exit 130), a bug (traceback), --debug         test_cli_failures.py
Python API and the caches:
40. truncated / bit-flipped store entries and sidecars                     test_store.py
41. SIGKILL mid-extraction, two extractions at once                        test_store.py
42. a full disk under the store (tmpfs and patched), no fallocate          test_full_disk.py
43. SIGKILL mid-synthesis, a world without its marker                      test_synth.py
44. damaged measurement-cache entries, one holding a pickle, two builders  test_measurement_cache.py
45. checkpoints: extra/missing/mis-shaped keys, HF format, full training checkpoints
                                                       test_checkpoints.py, test_checkpoint_safety.py
46. NaN / fp16-overflow embeddings                                          test_extract.py
47. a malformed FAIR1M XML, a label map of another size, missing labels,
    invalid BDD JSON, MOT17 gt rows and seqinfo fields, a truncated label PNG
                                                                  test_data_errors.py, [F]
48. a store that will not fit the cache's disk: stopped before it starts   test_plugin.py, [F]
49. a shard of a parallel extraction killed mid-entry, then rerun          test_cluster.py
50. a transient (scratch) extraction on a full disk                        test_scratch.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults import MiB, kill_when, read_only_folder, small_filesystem

ROOT = Path(__file__).resolve().parents[1]
# A claim whose run persists store entries (FAIR1M's clean tiles; the transformed ones and
# S6's frames are extracted transiently) and caches one measurement per model.
RETRIEVAL = ["--claims-profile", "smoke", "--claims-models", "dino,ibot", "-k", "S5.4", "--claims-bootstrap", "20"]
ASSOCIATION = ["--claims-profile", "smoke", "--claims-models", "dino,dinov2", "-k", "S6.2",
               "--claims-bootstrap", "20"]
# Loaded into a claims run (-p) to blind its pre-flight room check: the disk then fills
# after the run has started, as when another process writes to it.
BLIND_PREFLIGHT = ["-p", "tests.faults_blind_preflight"]


def claims_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "claims/", "-p", "no:cacheprovider", "-q", "-W",
            "always::UserWarning", *args]


def run_claims(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(claims_command(*args), cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def claims(report_dir: Path) -> dict[str, dict]:
    return {c["id"]: c for c in json.loads((report_dir / "claims.json").read_text())["claims"]}


def numbers(report_dir: Path) -> dict[str, object]:
    """What a user cites: each claim's verdict, measured numbers and resampling figures."""
    return {cid: (c["verdict"], c.get("measured"), c.get("holds_fraction"), c.get("ci"))
            for cid, c in claims(report_dir).items()}


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory) -> tuple[Path, Path]:
    """The cache and report of an undisturbed retrieval run (the numbers to recover)."""
    base = tmp_path_factory.mktemp("undisturbed")
    result = run_claims(*RETRIEVAL, "--claims-cache-dir", str(base / "cache"),
                        "--claims-report-dir", str(base / "report"))
    assert result.returncode == 0, output(result)[-3000:]
    assert claims(base / "report")["S5.4"]["measured"]
    return base / "cache", base / "report"


def test_a_flipped_bit_in_a_cached_measurement_is_rebuilt_never_reported(undisturbed, tmp_path):
    cache, report = undisturbed
    shutil.copytree(cache, tmp_path / "cache")
    entry = sorted((tmp_path / "cache" / "measurements").glob("*.npz"))[0]
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0x10
    entry.write_bytes(bytes(data))
    result = run_claims(*RETRIEVAL, "--claims-cache-dir", str(tmp_path / "cache"),
                        "--claims-report-dir", str(tmp_path / "report"))
    assert result.returncode == 0, output(result)[-3000:]
    assert "checksum mismatch" in output(result) and "rebuilding" in output(result)
    assert numbers(tmp_path / "report") == numbers(report)


def test_a_full_disk_mid_run_fails_only_the_claims_that_needed_the_entry(tmp_path, record_property):
    """S6.2 (dino, dinov2) is measured while there is room; the disk then fills after the
    second run's pre-flight (blinded here: another process filling the disk), and S6.4 needs
    supervised and mae, whose frames cannot be extracted: S6.4 ends in error naming the
    folder and the bytes, S6.2 is still judged, the report is written. Without the blind,
    the pre-flight refuses that run before it starts (test_the_preflight_refuses_...)."""
    with small_filesystem(tmp_path / "disk", 400 * MiB, kind="tmpfs") as disk:
        record_property("filesystem", disk.kind)
        cache, reports = disk.path / "cache", tmp_path / "reports"
        first = run_claims(*ASSOCIATION, "--claims-cache-dir", str(cache), "--claims-report-dir", str(reports / "a"))
        assert first.returncode == 0, output(first)[-3000:]
        disk.fill(leave=64 * 1024)
        args = ["--claims-profile", "smoke", "--claims-models", "dino,dinov2,supervised,mae",
                "-k", "S6.2 or S6.4", "--claims-bootstrap", "20", "--claims-cache-dir", str(cache)]
        refused = run_claims(*args, "--claims-report-dir", str(reports / "refused"))
        second = run_claims(*BLIND_PREFLIGHT, *args, "--claims-report-dir", str(reports / "b"))
    assert refused.returncode == pytest.ExitCode.USAGE_ERROR, output(refused)[-3000:]
    assert "the claims run needs" in refused.stderr and str(cache / "embeddings") in refused.stderr
    assert not (reports / "refused" / "claims.json").exists()
    assert second.returncode == 1, output(second)[-3000:]
    verdicts = claims(reports / "b")
    assert verdicts["S6.2"]["verdict"] == "not judged" and verdicts["S6.2"]["measured"]  # untrained, judged
    assert verdicts["S6.4"]["verdict"] == "error"
    assert "no space for transient embeddings in " + str(cache / "scratch") in verdicts["S6.4"]["message"]
    assert "bytes" in verdicts["S6.4"]["message"]
    assert not list(cache.rglob("*.tmp-*")), "a partial file was left behind"


def test_two_claims_runs_at_once_build_each_entry_once_and_agree(undisturbed, tmp_path):
    cache = tmp_path / "cache"
    runs = [subprocess.Popen(claims_command(*RETRIEVAL, "--claims-cache-dir", str(cache),
                                            "--claims-report-dir", str(tmp_path / f"report{i}")),
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"}) for i in (1, 2)]
    outputs = [run.communicate(timeout=900)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    builds = [json.loads(line) for line in (cache / "embeddings" / "builds.jsonl").read_text().splitlines()]
    keys = [json.dumps(b["key"], sort_keys=True) for b in builds]
    assert keys and len(keys) == len(set(keys)), "an embedding entry was built twice"
    assert len(list((cache / "measurements").glob("*.npz"))) == 2  # one per model
    assert numbers(tmp_path / "report1") == numbers(tmp_path / "report2") == numbers(undisturbed[1])


def test_a_run_killed_during_extraction_then_rerun_gives_the_undisturbed_numbers(undisturbed, tmp_path):
    cache = tmp_path / "cache"
    killed = kill_when(claims_command(*RETRIEVAL, "--claims-cache-dir", str(cache),
                                      "--claims-report-dir", str(tmp_path / "killed")),
                       ready=lambda: any((cache / "embeddings").rglob("*.tmp-*")) if cache.exists() else False,
                       cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert killed.returncode == -9
    result = run_claims(*RETRIEVAL, "--claims-cache-dir", str(cache), "--claims-report-dir", str(tmp_path / "again"))
    assert result.returncode == 0, output(result)[-3000:]
    assert numbers(tmp_path / "again") == numbers(undisturbed[1])


@pytest.fixture
def data_root(undisturbed) -> Path:
    """The synthetic world, as a user's data root (paper profile: real weights expected)."""
    return undisturbed[0] / "synthetic-world" / "seed0"


def paper_run(data_root: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return run_claims("--claims-data-root", str(data_root), "--claims-models", "dino,dinov2", "-k", "S6.2",
                      "--claims-cache-dir", str(tmp_path / "cache"), "--claims-report-dir", str(tmp_path / "report"),
                      *args, env={"HF_HOME": str(tmp_path / "hf")})


def test_random_bytes_as_weights_end_the_claims_reading_that_model_in_error(data_root, tmp_path):
    weights = tmp_path / "dino.pth"
    weights.write_bytes(os.urandom(4096))
    result = paper_run(data_root, tmp_path, "--claims-weights", f"dino={weights}")
    assert result.returncode == 1, output(result)[-3000:]
    s62 = claims(tmp_path / "report")["S6.2"]
    assert s62["verdict"] == "error" and str(weights) in s62["message"]
    assert "Traceback" not in s62["message"]


class Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_a_weights_file_that_would_run_code_is_refused_and_the_code_never_runs(data_root, tmp_path):
    import torch

    marker = tmp_path / "the-code-ran"
    weights = tmp_path / "dino.pth"
    torch.save({"model": {"cls_token": torch.zeros(1)}, "hook": Payload(str(marker))}, weights)
    result = paper_run(data_root, tmp_path, "--claims-weights", f"dino={weights}")
    assert not marker.exists(), "unpickling the weights ran code"
    assert result.returncode == 1, output(result)[-3000:]
    s62 = claims(tmp_path / "report")["S6.2"]
    assert s62["verdict"] == "error" and str(weights) in s62["message"] and "refused" in s62["message"]


def test_a_malformed_dataset_file_is_named_in_the_claims_it_breaks(undisturbed, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(undisturbed[0] / "synthetic-world", cache / "synthetic-world")
    xml = sorted((cache / "synthetic-world" / "seed0" / "fair1m").rglob("*.xml"))[0]
    xml.write_text("<annotation><objects><object>")
    result = run_claims("--claims-profile", "smoke", "--claims-models", "dino", "-k", "S5.4",
                        "--claims-cache-dir", str(cache), "--claims-report-dir", str(tmp_path / "report"))
    assert result.returncode == 1, output(result)[-3000:]
    s54 = claims(tmp_path / "report")["S5.4"]
    assert s54["verdict"] == "error" and xml.name in s54["message"]


def test_a_read_only_cache_is_refused_before_anything_runs(tmp_path, record_property):
    cache = tmp_path / "cache"
    cache.mkdir()
    with read_only_folder(cache) as how:
        record_property("read_only", how)
        result = run_claims(*ASSOCIATION, "--claims-cache-dir", str(cache), "--claims-report-dir",
                            str(tmp_path / "report"))
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert f"--claims-cache-dir '{cache}': cannot write there" in result.stderr


def test_an_empty_data_root_skips_every_claim_naming_each_dataset(tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    result = run_claims("--claims-data-root", str(empty), "--claims-cache-dir", str(tmp_path / "cache"),
                        "--claims-report-dir", str(tmp_path / "report"))
    assert result.returncode == 0, output(result)[-3000:]
    verdicts = claims(tmp_path / "report")
    for claim_id, folder in (("S3.2", "cityscapes"), ("S5.1", "fair1m"),
                             ("S6.1", "bdd100k_mot"), ("S6.6", "mot17")):
        assert verdicts[claim_id]["verdict"] == "skipped"
        assert str(empty / folder) in verdicts[claim_id]["skip_reason"], verdicts[claim_id]["skip_reason"]


def test_nan_weights_stop_an_extraction_naming_model_layer_and_sample(tmp_path, synthetic_world):
    import torch

    from harness.models import load

    state = load("dino", random_init=True).module.state_dict()
    state["blocks.3.mlp.fc1.weight"][0, 0] = float("nan")
    weights = tmp_path / "dino_vitbase16_pretrain.pth"
    torch.save(state, weights)
    result = subprocess.run([sys.executable, "-m", "harness.cli", "extract", "--model", "dino", "--weights",
                             str(weights), "--dataset", "fair1m", "--data-root", str(synthetic_world), "--limit",
                             "1", "--profile", "smoke", "--quiet", "--cache-dir", str(tmp_path / "cache")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "non-finite patch tokens from model 'dino' at layer" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_truncated_label_png_is_named(tmp_path, synthetic_world):
    from harness import data

    shutil.copytree(synthetic_world / "cityscapes", tmp_path / "cityscapes")
    label = sorted((tmp_path / "cityscapes" / "gtFine" / "val").rglob("*_labelIds.png"))[0]
    label.write_bytes(label.read_bytes()[:100])
    ds = data.open_dataset("cityscapes", tmp_path / "cityscapes", "val")
    with pytest.raises(data.DatasetFormatError, match=label.name):
        for sample_id in ds.ids:
            ds.labels_of(sample_id)


def test_invalid_bdd_json_and_a_seqinfo_without_a_field_are_named(tmp_path, synthetic_world):
    from harness import data
    from harness.views.frames import frame_rate

    shutil.copytree(synthetic_world / "bdd100k_mot", tmp_path / "bdd100k_mot")
    labels = sorted((tmp_path / "bdd100k_mot").rglob("*.json"))[0]
    labels.write_text('[{"name": ')
    with pytest.raises(data.DatasetFormatError, match=labels.name):
        bdd = data.open_dataset("bdd100k_mot", tmp_path / "bdd100k_mot", "val")
        for video in bdd.videos:
            bdd.frames_of(video)
    shutil.copytree(synthetic_world / "mot17", tmp_path / "mot17")
    seqinfo = sorted((tmp_path / "mot17").rglob("seqinfo.ini"))[0]
    lines = seqinfo.read_text().splitlines()
    seqinfo.write_text("\n".join(line for line in lines if not line.startswith("frameRate")))
    mot = data.open_dataset("mot17", tmp_path / "mot17", "train")
    with pytest.raises(ValueError, match="seqinfo.ini: no numeric frameRate"):
        [frame_rate(mot, video) for video in mot.videos]
    seqinfo.write_text("\n".join(line for line in lines if not line.startswith("imWidth")))
    with pytest.raises(data.DatasetFormatError, match=r"seqinfo.ini.*imWidth"):
        mot = data.open_dataset("mot17", tmp_path / "mot17", "train")
        for video in mot.videos:
            mot.frames_of(video)
