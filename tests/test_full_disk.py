"""A full disk under the embedding store: a clear StoreFullError naming the folder and the
bytes, raised before any extraction work, no partial file left, and a re-run with room gives
the same numbers. Before: the store wrote through unreserved memory maps and the process
died with SIGBUS (exit 135), leaving its temp files (see test_faults.py for that fault
reproduced on a real tmpfs)."""

from __future__ import annotations

import errno
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
from faults import DISK_KINDS, KiB, MiB, can_mount_tmpfs, read_only_folder, small_filesystem

from harness.extract import ArrayView, embeddings
from harness.io import TEMP_MARK
from harness.models import load
from harness.store import EmbeddingStore, EntryKey, StoreError, StoreFullError, StoreWarning

SHAPE = (16, 8, 8, 64)  # 128 KiB of float16 per layer
LAYERS = [1, 2, 3]


def _key() -> EntryKey:
    return EntryKey(model="dino", weights_digest="abc", view_key="view-1", image_size=(128, 128))


def _values(layer: int) -> np.ndarray:
    return (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 1000 * 0.01 + layer).astype(np.float16)


class Build:
    def __init__(self):
        self.calls = 0

    def __call__(self, arrays):
        self.calls += 1
        for layer, array in arrays.items():
            array[:] = _values(layer)


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _partial_files(folder):
    return [f for f in _files(folder) if TEMP_MARK in f or f.endswith(".npy")]


@pytest.mark.parametrize("kind", DISK_KINDS)
def test_full_store_raises_before_building_and_leaves_nothing(tmp_path, kind, record_property):
    with small_filesystem(tmp_path / "disk", 4 * MiB, kind) as disk:
        record_property("filesystem", disk.kind)
        store, build = EmbeddingStore(disk.path / "embeddings"), Build()
        disk.fill(leave=200 * KiB)  # room for one layer of three
        with pytest.raises(StoreFullError) as caught:
            store.get_or_build(_key(), LAYERS, SHAPE, build)
        err = caught.value
        assert build.calls == 0  # the space is reserved before any extraction work is done
        assert isinstance(err, OSError) and err.errno == errno.ENOSPC
        assert err.folder == str(store.entry_dir(_key()))
        per_layer = 128 + 128 * KiB + 1024  # .npy header + data, JSON sidecar
        assert err.needed == 3 * per_layer and 100 * KiB < err.free <= 200 * KiB
        message = str(err)
        assert "\n" not in message and str(store.entry_dir(_key())) in message
        assert f"{3 * per_layer:,} bytes" in message and "--cache-dir" in message
        assert not _partial_files(store.root)  # no temp file, no array without its sidecar
        assert store.builds() == []

        disk.make_room()
        arrays = store.get_or_build(_key(), LAYERS, SHAPE, build)
        assert build.calls == 1 and len(store.builds()) == 1
        for layer in LAYERS:
            np.testing.assert_array_equal(arrays[layer], _values(layer))


def test_full_disk_while_writing_the_sidecars_removes_the_arrays_too(tmp_path, record_property):
    """The arrays fit (reserved), the JSON sidecars written after them do not. Patched disk:
    it can be filled to the byte (tmpfs counts whole pages)."""
    with small_filesystem(tmp_path / "disk", 4 * MiB, "patched") as disk:
        record_property("filesystem", disk.kind)
        store = EmbeddingStore(disk.path / "embeddings")
        (store.root / ".locks").mkdir(parents=True)
        disk.fill(leave=3 * (128 + 128 * KiB) + 100)
        with pytest.raises(StoreFullError):
            store.get_or_build(_key(), LAYERS, SHAPE, Build())
        assert not _partial_files(store.root)
        assert EmbeddingStore(store.root).read(_key(), LAYERS, SHAPE) is None


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs a real tmpfs (root or CAP_SYS_ADMIN)")
def test_filesystem_without_fallocate_gets_zeros_written_and_no_sigbus(tmp_path, record_property):
    """posix_fallocate unsupported (EOPNOTSUPP): the store fills the arrays with zeros
    instead, which hits the full disk as an error, not as SIGBUS. In a subprocess, so a
    SIGBUS would fail this test rather than kill the test run."""
    with small_filesystem(tmp_path / "disk", 1 * MiB, "tmpfs") as disk:
        record_property("filesystem", disk.kind)
        code = f"""
import errno, os
def unsupported(fd, offset, length):
    raise OSError(errno.EOPNOTSUPP, "not supported")
os.posix_fallocate = unsupported
import numpy as np
from harness.store import EmbeddingStore, EntryKey, StoreFullError
store = EmbeddingStore({str(disk.path)!r})
key = EntryKey(model="dino", weights_digest="abc", view_key="v", image_size=(128, 128))
def build(arrays):
    for array in arrays.values():
        array[:] = 1
try:
    store.get_or_build(key, [1, 2, 3], (64, 8, 8, 64), build)  # 3 x 512 KiB
except StoreFullError as err:
    print("StoreFullError", err.needed)
"""
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.startswith("StoreFullError")
        assert not _partial_files(disk.path)


@pytest.fixture(scope="module")
def dino():
    return load("dino", random_init=True, smoke=True, device="cpu")


@pytest.mark.parametrize("kind", DISK_KINDS)
def test_extraction_into_a_full_cache_then_a_rerun_with_room_gives_the_same_numbers(
        tmp_path, dino, kind, record_property):
    images = np.random.default_rng(0).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    view = ArrayView("tiles-full-disk", images, [f"img-{i}" for i in range(6)])
    reference = embeddings(dino, view, EmbeddingStore(tmp_path / "reference"), progress=False)
    with small_filesystem(tmp_path / "disk", 4 * MiB, kind) as disk:
        record_property("filesystem", disk.kind)
        store = EmbeddingStore(disk.path / "embeddings")
        disk.fill(leave=40 * KiB)  # 12 layers x 12 KiB do not fit
        with pytest.raises(StoreFullError, match="no space for the embedding cache in"):
            embeddings(dino, view, store, progress=False)
        assert not _partial_files(store.root)
        disk.make_room()
        arrays = embeddings(dino, view, store, progress=False)
        for layer in range(1, 13):
            np.testing.assert_array_equal(arrays[layer], reference[layer])
        del arrays


def test_store_errors_pickle_and_read_as_one_line(tmp_path):
    full = StoreFullError(tmp_path / "cache" / "dino" / "abc", needed=3 * MiB, free=12345)
    again = pickle.loads(pickle.dumps(full))
    assert type(again) is StoreFullError and str(again) == str(full)
    assert (again.errno, again.needed, again.free, again.folder) == (errno.ENOSPC, 3 * MiB, 12345, full.folder)
    assert str(full) == (f"no space for the embedding cache in {full.folder}: the entry needs "
                         "3,145,728 bytes (3.0 MiB), 12,345 bytes (0.0 MiB) free (No space left on "
                         "device); free some space there or choose another --cache-dir")
    quota = pickle.loads(pickle.dumps(StoreFullError("/c", 1, 0, errno.EDQUOT)))
    assert quota.errno == errno.EDQUOT and "quota" in str(quota).lower()
    readonly = pickle.loads(pickle.dumps(StoreError(errno.EROFS, "Read-only file system", "/c/x")))
    assert type(readonly) is StoreError and readonly.errno == errno.EROFS
    assert str(readonly) == ("cannot write the embedding cache in /c/x: Read-only file system; "
                             "make it writable or choose another --cache-dir")


def test_read_only_cache_serves_what_it_holds_and_refuses_to_build(tmp_path, record_property):
    store = EmbeddingStore(tmp_path / "cache")
    store.get_or_build(_key(), [1], SHAPE, Build())
    with read_only_folder(store.root) as how:
        record_property("read_only", how)
        fresh = EmbeddingStore(store.root)
        np.testing.assert_array_equal(fresh.get_or_build(_key(), [1], SHAPE, Build())[1], _values(1))
        with pytest.raises(StoreError, match=r"cannot write the embedding cache in .*: ") as caught:
            fresh.get_or_build(_key(), [1, 2], SHAPE, Build())
        assert not isinstance(caught.value, StoreFullError)
        assert caught.value.errno in (errno.EROFS, errno.EPERM, errno.EACCES)


def test_a_build_log_that_cannot_be_written_warns_and_keeps_the_entry(tmp_path, monkeypatch):
    def full(path, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("harness.store.append_record", full)
    store = EmbeddingStore(tmp_path)
    with pytest.warns(StoreWarning, match="could not record the build"):
        store.get_or_build(_key(), LAYERS, SHAPE, Build())
    assert EmbeddingStore(tmp_path).read(_key(), LAYERS, SHAPE) is not None


def test_builds_log_with_a_cut_line_keeps_every_whole_record(tmp_path):
    store = EmbeddingStore(tmp_path)
    store.get_or_build(_key(), [1], SHAPE, Build())
    with open(store.builds_log, "a") as handle:
        handle.write('{"entry_id": "cut-by-a-kill", "sec')
    store.get_or_build(_key(), [2], SHAPE, Build())
    records = store.builds()
    assert [r["key"]["layer"] for r in records] == [[1], [2]]
    assert json.loads(store.builds_log.read_text().splitlines()[-1])["key"]["layer"] == [2]
