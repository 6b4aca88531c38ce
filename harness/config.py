"""Where things live and where randomness comes from: the one place for paths and seeds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# Every random choice (subset selection, probe init, noise, bootstrap) derives its seed
# from this root through `seed_for`, so one number reproduces a whole run.
ROOT_SEED = 0

CACHE_ENV = "VITCLAIMS_CACHE"
DATA_ENV = "VITCLAIMS_DATA"


def cache_dir(explicit: str | os.PathLike | None = None) -> Path:
    """--cache-dir, else $VITCLAIMS_CACHE, else ~/.cache/vit-local-claims."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path.home() / ".cache" / "vit-local-claims"


def data_root(explicit: str | os.PathLike | None = None) -> Path | None:
    """--data-root, else $VITCLAIMS_DATA; None when neither is set."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return None


def seed_for(*names: object, root: int = ROOT_SEED) -> int:
    """A stable 32-bit seed for a named random choice, e.g. seed_for('subset', 'cityscapes')."""
    # SeedSequence hashes the entropy deterministically (unlike Python's salted hash()).
    words = [root] + [int.from_bytes(str(n).encode(), "little") % (2**63) for n in names]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def rng(*names: object, root: int = ROOT_SEED) -> np.random.Generator:
    return np.random.default_rng(seed_for(*names, root=root))


def xdist_workers() -> int:
    """Number of pytest-xdist workers sharing this machine (1 outside xdist)."""
    return max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


def torch_threads() -> int:
    """Cores divided among xdist workers, so `-n 4` does not oversubscribe the CPU."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // xdist_workers())
