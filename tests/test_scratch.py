"""Transient extraction (harness.scratch): the store's numbers, nothing left on disk, the
space given back when the arrays go, a full disk as one clear error; and the bounded store
of a claims run: the layer sweep measured at every layer with only the last one persisted."""

from __future__ import annotations

import errno
import gc
import os

import numpy as np
import pytest
from faults import DISK_KINDS, MiB, small_filesystem

from harness.extract import ArrayView, embeddings
from harness.io import TEMP_MARK, temp_sibling
from harness.models import load
from harness.scratch import Scratch, ScratchFullError, layer_groups, scratch_bytes
from harness.store import EmbeddingStore, StoreFullError


@pytest.fixture(scope="module")
def smoke_dino():
    return load("dino", random_init=True, smoke=True, device="cpu")


def _view(n=6, size=32, key="scratch-test"):
    rng = np.random.default_rng(0)
    return ArrayView(key, rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), [f"im{i}" for i in range(n)])


def test_transient_layers_hold_the_stores_numbers_and_no_file(smoke_dino, tmp_path):
    view, tiles = _view(), np.array([True, False, True, True, False, True])
    stored = embeddings(smoke_dino, view, EmbeddingStore(tmp_path / "store"), layers=[2, 12], progress=False)
    scratch = Scratch(tmp_path / "scratch")
    arrays = scratch.embed(smoke_dino, view, [2, 12], tiles)
    for layer in (2, 12):
        assert arrays[layer].dtype == np.float16 and not arrays[layer].flags.writeable
        np.testing.assert_array_equal(arrays[layer], stored[layer][tiles])
    assert os.listdir(tmp_path / "scratch") == []  # unlinked once filled: nothing to leave behind
    per_layer = scratch_bytes(4, (2, 2), smoke_dino.embed_dim)
    assert scratch.live_bytes == scratch.peak_bytes == 2 * per_layer
    kept = arrays[12][1:]  # a view of a map keeps the map
    del arrays
    gc.collect()
    assert scratch.live_bytes == per_layer
    del kept
    gc.collect()
    assert scratch.live_bytes == 0 and scratch.peak_bytes == 2 * per_layer


def test_files_of_killed_extractions_are_removed_and_live_ones_kept(smoke_dino, tmp_path):
    folder = tmp_path / "scratch"
    folder.mkdir()
    dead = folder / f"dino-layer-12.npy{TEMP_MARK}999999999-abcd"  # no such process
    dead.write_bytes(b"x" * 100)
    alive = temp_sibling(folder / "dino-layer-03.npy")  # this process: another worker's
    alive.write_bytes(b"x")
    Scratch(folder).embed(smoke_dino, _view(n=2), [12])
    assert not dead.exists() and alive.exists()


@pytest.mark.parametrize("kind", DISK_KINDS)
def test_a_full_disk_is_one_clear_error_and_leaves_nothing(smoke_dino, tmp_path, kind, record_property):
    view = _view(n=64, size=64)  # 64 x 16 patches x 64 wide x 2 B = 128 KiB a layer
    with small_filesystem(tmp_path / "disk", 1 * MiB, kind) as disk:
        record_property("filesystem", disk.kind)
        disk.fill(leave=200 * 1024)
        scratch = Scratch(disk.path / "scratch")
        with pytest.raises(ScratchFullError) as caught:
            scratch.embed(smoke_dino, view, [1, 2, 3])
        err = caught.value
        assert isinstance(err, StoreFullError) and err.errno == errno.ENOSPC
        assert err.needed == 3 * scratch_bytes(64, (4, 4), 64)
        message = str(err)
        assert str(disk.path / "scratch") in message and "--claims-cache-dir" in message
        assert len(message.splitlines()) == 1
        assert os.listdir(disk.path / "scratch") == [] and scratch.live_bytes == 0


@pytest.mark.parametrize(("per_layer", "budget", "groups"), [
    (10, 40, [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11]]),
    (10, 35, [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11]]),
    (50, 40, [[k] for k in range(1, 12)]),  # one layer over the budget still goes alone
    (1, 10**6, [list(range(1, 12))]),
])
def test_layer_groups_fit_the_budget(per_layer, budget, groups):
    assert layer_groups(range(1, 12), per_layer, budget) == groups
