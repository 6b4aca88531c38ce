"""`harness models`, `harness doctor` and `harness extract`, offline, through the real CLI
entry point (harness.cli.main)."""

from __future__ import annotations

import json

import pytest

from harness.cli import main
from harness.models import REGISTRY

pytestmark = pytest.mark.usefixtures("isolated_cli")  # tests/conftest.py


def test_models_lists_the_registry_with_local_availability(capsys, tmp_path):
    weights = tmp_path / "cache" / "weights"
    weights.mkdir(parents=True)
    (weights / REGISTRY["ibot"].release_file).write_bytes(b"planted")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split()}
    for name, spec in REGISTRY.items():
        assert name in lines and spec.source in lines[name]
    assert "yes: " in lines["ibot"] and str(weights / REGISTRY["ibot"].release_file) in lines["ibot"]
    assert "no: needs" in lines["simmim"] and REGISTRY["simmim"].release_file in lines["simmim"]
    assert "hf-hub:timm/vit_base_patch16_224.dino" in lines["dino"]
    assert str(weights) in out


def test_doctor_says_what_is_missing_and_how_to_get_it(capsys, tmp_path):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for name, spec in REGISTRY.items():
        line = next(line for line in out.splitlines() if line.startswith(f"[missing] weights {name}:"))
        assert spec.release_url in line and str(tmp_path / "cache" / "weights" / spec.release_file) in line
    assert "huggingface-cli download timm/vit_base_patch14_dinov2.lvd142m" in out
    assert "[missing] dataset cityscapes: no data root" in out and "cityscapes-dataset.com" in out
    assert "] gpu:" in out and "] faiss:" in out


def test_doctor_checks_each_dataset_under_the_data_root(capsys, tmp_path):
    from harness.data import DATASET_NAMES

    (tmp_path / "data" / "ade20k").mkdir(parents=True)
    assert main(["doctor", "--data-root", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    for name in DATASET_NAMES:
        assert f"[missing] dataset {name}:" in out
    ade = next(line for line in out.splitlines() if "dataset ade20k" in line)
    assert "ADEChallengeData2016" in ade  # names the folder it expected inside ade20k/


@pytest.fixture(scope="module")
def fair1m_world(tmp_path_factory):
    from harness.data.synthetic import write_world

    return write_world(tmp_path_factory.mktemp("world"), seed=0, size="smoke", names=["fair1m"])


def test_extract_fills_the_store_once(capsys, tmp_path, fair1m_world):
    args = ["extract", "--model", "dino", "--random-init", "--smoke", "--dataset", "fair1m",
            "--data-root", str(fair1m_world), "--layers", "3", "12", "--limit", "3",
            "--profile", "smoke", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    # The smoke profile's 112 px tiles (7x7 patches): the store keeps the clean view (the
    # transformed ones are extracted transiently by the claims run, never persisted).
    views = [line for line in out.splitlines() if "layers [3, 12] of (3, 7, 7, 64) float16" in line]
    assert len(views) == 1 and all("tiles-fair1m" in line for line in views)
    builds = (tmp_path / "cache" / "embeddings" / "builds.jsonl").read_text().splitlines()
    assert len(builds) == 1 and {json.loads(b)["key"]["model"] for b in builds} == {"dino"}
    assert main(args) == 0  # second run reads the cache
    assert len((tmp_path / "cache" / "embeddings" / "builds.jsonl").read_text().splitlines()) == 1


def test_extract_synthetic_writes_the_world_once_where_the_claims_look(monkeypatch, tmp_path, capsys):
    from harness.data import synthetic

    written = []

    def write_fair1m_only(out, seed=0, size="smoke", names=()):
        written.append(out)
        return synthetic.write_world.__wrapped__(out, seed=seed, size=size, names=["fair1m"])

    write_fair1m_only.__wrapped__ = synthetic.write_world
    monkeypatch.setattr(synthetic, "write_world", write_fair1m_only)
    args = ["extract", "--model", "mae", "--random-init", "--smoke", "--dataset", "synthetic-fair1m",
            "--layers", "12", "--limit", "1", "--profile", "smoke", "--quiet"]
    assert main(args) == 0 and main(args) == 0
    world = tmp_path / "cache" / "synthetic-world" / "seed0"
    # written once, into a temp folder next to the world, then renamed into place
    assert len(written) == 1 and written[0].parent == world.parent and written[0].name.startswith("seed0.tmp-")
    assert (world / ".complete").is_file() and (world / "fair1m").is_dir() and not written[0].exists()
    assert "tiles-fair1m" in capsys.readouterr().out


def test_extract_rejects_unknown_names_as_usage_errors(capsys):
    assert main(["extract", "--model", "dino", "--random-init", "--smoke", "--dataset", "synthetic-imagenet"]) == 2
    assert capsys.readouterr().err.startswith("harness extract: error: unknown dataset 'synthetic-imagenet'")
    assert main(["extract", "--model", "dinov3", "--random-init", "--dataset", "synthetic-fair1m"]) == 2
    assert "known models: dino, dinov2, ibot, mae, scale_mae, simmim, supervised" in capsys.readouterr().err


def test_extract_without_weights_offline_names_what_to_download(capsys):
    assert main(["extract", "--model", "simmim", "--dataset", "synthetic-fair1m"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("harness extract: error: ") and len(err.splitlines()) == 1
    assert "simmim_pretrain__vit_base__img224__800ep.pth" in err


def test_extract_defaults_to_the_layers_the_claims_read(capsys, tmp_path, fair1m_world):
    """FAIR1M retrieval reads the last layer only: nothing else is extracted by default."""
    args = ["extract", "--model", "dino", "--random-init", "--smoke", "--dataset", "fair1m",
            "--data-root", str(fair1m_world), "--limit", "2", "--profile", "smoke", "--quiet"]
    assert main(args) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "tiles-fair1m" in line]
    assert len(lines) == 1 and all("layers [12] of" in line for line in lines)


def test_doctor_shows_each_gpu_and_the_faiss_wheel(capsys, monkeypatch):
    import importlib.metadata

    import faiss

    from harness import devices

    monkeypatch.setattr(devices, "gpus", lambda: [
        {"index": 0, "name": "NVIDIA H200", "memory_gib": 139.8, "capability": "9.0", "bf16": True},
        {"index": 1, "name": "Tesla V100", "memory_gib": 32.0, "capability": "7.0", "bf16": False}])
    real_version = importlib.metadata.version

    def gpu_wheel(dist):
        if dist == "faiss-gpu-cu12":
            return "1.9.0"
        if dist.startswith("faiss"):
            raise importlib.metadata.PackageNotFoundError(dist)
        return real_version(dist)

    monkeypatch.setattr(importlib.metadata, "version", gpu_wheel)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 2, raising=False)
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "[ok] gpu: torch " in out and "2 GPU(s): xdist worker i extracts on cuda:(i % 2)" in out
    assert "[ok] gpu 0: NVIDIA H200, 140 GiB, compute capability 9.0, bf16 yes" in out
    assert "[ok] gpu 1: Tesla V100, 32 GiB, compute capability 7.0, bf16 no (fp32 only)" in out
    assert "[ok] faiss: faiss-gpu-cu12 1.9.0 [faiss-gpu], 2 GPU(s) visible to faiss" in out


def test_doctor_without_faiss_says_the_knn_still_runs(capsys, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "faiss" else real_find_spec(name, *a))
    assert main(["doctor"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if "] faiss:" in line)
    assert line.startswith("[missing] faiss: none installed") and "still runs" in line
