"""Filling the cache in parallel (harness.cluster) with submitit's local executor: a sharded
extraction gives the serial one's store byte for byte, a killed shard is redone on rerun
without touching the other shards' entries, Slurm parameters are valid sbatch, and the CLI."""

from __future__ import annotations

import hashlib
import os
import signal
import sys
from dataclasses import replace

import cloudpickle
import pytest

from harness import cluster
from harness.cli import main

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the jobs unpickle KillAt by value


def _request(world, cache, **changes) -> cluster.ExtractRequest:
    datasets = tuple((name, str(world / name)) for name in ("fair1m", "cityscapes", "ade20k"))
    request = cluster.ExtractRequest(models=("dino",), datasets=datasets,
                                     profile="smoke", random_init=True, smoke=True, cache_dir=str(cache),
                                     limit=1, layers=(3, 12))
    return replace(request, **changes)


def _stored_bytes(cache) -> dict[str, str]:
    """{layer file relative to the store: sha256} of every committed layer."""
    root = cache / "embeddings"
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.glob("*/*/layer-[0-9][0-9]/*.npy"))}


class KillAt:
    """The shard task, except that the process SIGKILLs itself as it starts building
    `victim`'s entry (a node that dies mid-extraction)."""

    def __init__(self, victim: str):
        self.victim = victim

    def __call__(self, request, units):
        import harness.extract as extract

        original = extract.extract_into

        def dying(backbone, view, outputs, **kwargs):
            if view.key == self.victim:
                for array in outputs.values():
                    array[:1] = 1  # half written
                os.kill(os.getpid(), signal.SIGKILL)
            return original(backbone, view, outputs, **kwargs)

        extract.extract_into = dying
        return cluster.ShardTask()(request, units)


def test_deal_balances_bytes_and_keeps_plan_order():
    units = [cluster.Unit("m", "d", f"v{i}", 1, (12,), size) for i, size in enumerate([5, 1, 1, 3, 2, 2])]
    shards = cluster.deal(units, 3)
    assert sorted(sum(u.bytes for u in shard) for shard in shards) == [4, 5, 5]
    assert all([units.index(u) for u in shard] == sorted(units.index(u) for u in shard) for shard in shards)
    assert cluster.deal(units, 3) == shards and len(cluster.deal(units[:2], 8)) == 2
    with pytest.raises(ValueError):
        cluster.deal(units, 0)


def test_sharded_store_equals_serial_and_a_killed_shard_is_redone_alone(synthetic_world, tmp_path, capsys):
    serial = _request(synthetic_world, tmp_path / "serial")
    units = cluster.plan(serial)
    # the store keeps the clean views (FAIR1M tiles, the train and val tiles of the others)
    assert len(units) == 5 and not any(u.stored for u in units)
    outcome = cluster.run_shards(serial, [units], "serial")
    assert not outcome.failures and all(built for *_, built, _ in outcome.results[0].done)
    reference = _stored_bytes(tmp_path / "serial")
    assert len(reference) == 10 and all(u.stored for u in cluster.plan(serial))  # two layers each

    # Two local processes; the second dies building its second unit.
    sharded = _request(synthetic_world, tmp_path / "sharded")
    shards = cluster.deal(cluster.plan(sharded), 2)
    assert len(shards) == 2 and len(shards[1]) >= 2
    victim = shards[1][1]
    outcome = cluster.run_shards(sharded, shards, "local", log_folder=tmp_path / "logs", gpus=0, poll_s=0.2,
                                 task=KillAt(victim.view_key))
    assert sorted(outcome.results) == [0] and sorted(outcome.failures) == [1]
    assert "shard 2/2 failed" in capsys.readouterr().out
    store = tmp_path / "sharded" / "embeddings"
    before = {str(p): p.stat().st_ino for p in store.glob("*/*/layer-[0-9][0-9]/*.npy")}
    assert list(store.rglob("*.tmp-*"))  # the killed build's half-written temp folder
    todo = [u for u in cluster.plan(sharded) if not u.stored]
    assert todo == shards[1][1:]  # its first unit finished before the kill; nothing of shard 1 is redone

    # The rerun: only those units, and the store is the serial one byte for byte.
    outcome = cluster.run_shards(sharded, cluster.deal(todo, 1), "local", log_folder=tmp_path / "logs", gpus=0,
                                 poll_s=0.2)
    assert not outcome.failures
    assert _stored_bytes(tmp_path / "sharded") == reference
    after = {str(p): p.stat().st_ino for p in store.glob("*/*/layer-[0-9][0-9]/*.npy")}
    assert all(after[path] == inode for path, inode in before.items())  # finished entries untouched
    assert not list(store.rglob("*.tmp-*"))  # the killed build's temp folder cleaned by the rebuild


def test_slurm_options_are_valid_sbatch_parameters():
    from submitit.slurm.slurm import _get_default_parameters, _make_sbatch_string

    options = cluster.SlurmOptions(partition="gpu", gpus_per_node=4, timeout_min=90, array_parallelism=16,
                                   account="vision", mem_gb=64)
    params = options.parameters()
    assert set(params) <= set(_get_default_parameters())
    text = _make_sbatch_string(command="python -m x", folder="/logs/%j", map_count=40, **params)
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --time=90", "#SBATCH --array=0-39%16", "#SBATCH --account=vision",
                 "#SBATCH --signal=USR2@120", "#SBATCH --mem=64GB"):
        assert line in text


def test_a_request_with_weights_names_one_model(synthetic_world, tmp_path):
    with pytest.raises(ValueError, match="give one model"):
        _request(synthetic_world, tmp_path, models=("dino", "mae"), weights="x.pth")


def test_cli_local_executor_then_resume(synthetic_world, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["extract", "--model", "dino,mae", "--random-init", "--smoke", "--dataset", "fair1m",
            "--data-root", str(synthetic_world), "--cache-dir", str(tmp_path / "cache"), "--limit", "1",
            "--layers", "12", "--profile", "smoke", "--quiet", "--executor", "local", "--shards", "2",
            "--log-folder", str(tmp_path / "logs")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 units ((model, view) pairs); 0 already in the cache" in out
    assert out.count("shard ") == 2 and "failed" not in out
    assert main(args) == 0  # every unit's entries there and valid: nothing submitted
    assert "2 units ((model, view) pairs); 2 already in the cache" in capsys.readouterr().out
    assert main([*args[:-2], "--device", "cuda:1"]) == 2
    assert "only --device cpu" in capsys.readouterr().err
