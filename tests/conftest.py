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
