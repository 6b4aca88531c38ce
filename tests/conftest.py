"""Shared fixtures of the harness's own tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from filelock import FileLock

from harness.data.synthetic import write_world


@pytest.fixture(scope="session")
def synthetic_world(tmp_path_factory, worker_id) -> Path:
    """The synthetic world (seed 0, size 'smoke') in its five native layouts, written once per
    test run: under pytest-xdist the workers share one copy through a file lock."""
    base = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        base = base.parent  # the run's directory, shared by all xdist workers of this run
    world = base / "synthetic_world"
    with FileLock(str(base / "synthetic_world.lock")):
        if not (world / ".complete").is_file():
            write_world(world, seed=0)
            (world / ".complete").touch()
    return world


@pytest.fixture
def isolated_cli(monkeypatch, tmp_path):
    """A `harness` command as on a fresh machine: offline, its own hub and harness caches,
    no data root from the environment."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    monkeypatch.setenv("VITCLAIMS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VITCLAIMS_DATA", raising=False)
