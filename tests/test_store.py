"""The embedding store: keyed entries, atomic builds, verification on read, one build
across processes, and recovery from corrupt, stale or interrupted entries."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time

import numpy as np
import pytest

import harness
from harness.io import TEMP_MARK
from harness.store import STALE_BUILD_S, EmbeddingStore, EntryKey, StoreWarning, remove_dead_builds

SHAPE = (5, 2, 3, 4)
LAYERS = [1, 2, 12]


def _key(**changes) -> EntryKey:
    fields = {"model": "dino", "weights_digest": "abc", "view_key": "view-1", "image_size": (32, 48)}
    return EntryKey(**(fields | changes))


def _values(layer: int) -> np.ndarray:
    return (np.arange(np.prod(SHAPE)).reshape(SHAPE) * 0.01 + layer).astype(np.float16)


class CountingBuild:
    def __init__(self):
        self.calls: list[list[int]] = []

    def __call__(self, arrays):
        self.calls.append(sorted(arrays))
        for layer, array in arrays.items():
            array[:] = _values(layer)
        return {"device": "test-device"}


def _get(store, build, key=None, layers=LAYERS):
    return store.get_or_build(key or _key(), layers, SHAPE, build)


def test_build_once_then_read_the_same_read_only_arrays(tmp_path):
    store, build = EmbeddingStore(tmp_path), CountingBuild()
    first = _get(store, build)
    second = _get(EmbeddingStore(tmp_path), build)  # a fresh process-like store object
    assert build.calls == [LAYERS]
    for layer in LAYERS:
        assert isinstance(second[layer], np.memmap) and second[layer].dtype == np.float16
        assert not second[layer].flags.writeable
        np.testing.assert_array_equal(second[layer], _values(layer))
        np.testing.assert_array_equal(first[layer], second[layer])


def test_builds_log_records_each_build(tmp_path):
    store = EmbeddingStore(tmp_path)
    _get(store, CountingBuild())
    _get(store, CountingBuild())
    lines = (tmp_path / "builds.jsonl").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["key"]["model"] == "dino" and record["key"]["layer"] == LAYERS
    assert record["key"]["harness_version"] == harness.__version__
    assert record["device"] == "test-device" and record["pid"] == os.getpid()
    assert record["seconds"] >= 0 and "host" in record and "images_per_s" in record


def test_only_missing_layers_are_built(tmp_path):
    store, build = EmbeddingStore(tmp_path), CountingBuild()
    _get(store, build, layers=[1])
    _get(store, build, layers=[1, 2, 12])
    assert build.calls == [[1], [2, 12]]


@pytest.mark.parametrize("change", [
    {"model": "mae"}, {"weights_digest": "def"}, {"view_key": "view-2"},
    {"image_size": (48, 32)}, {"harness_version": "0.0.9"}, {"precision": "bf16"},
])
def test_every_key_field_separates_entries(tmp_path, change):
    store, build = EmbeddingStore(tmp_path), CountingBuild()
    _get(store, build)
    _get(store, build, key=_key(**change))
    assert len(build.calls) == 2
    assert _key(**change).entry_id != _key().entry_id


def _layer_files(store, layer=2):
    return store.layer_paths(_key(), layer)


def _corrupt_truncate(store):
    array_path, _ = _layer_files(store)
    data = array_path.read_bytes()
    array_path.write_bytes(data[: len(data) // 2])


def _corrupt_flip_bytes(store):
    array_path, _ = _layer_files(store)
    data = bytearray(array_path.read_bytes())
    data[-3] ^= 0xFF
    array_path.write_bytes(bytes(data))


def _corrupt_metadata_shape(store):
    _, meta_path = _layer_files(store)
    meta = json.loads(meta_path.read_text())
    meta["shape"] = [5, 2, 3, 5]
    meta_path.write_text(json.dumps(meta))


def _corrupt_array_shape(store):
    array_path, _ = _layer_files(store)
    np.save(array_path, np.zeros((4, 2, 3, 4), np.float16))


def _other_harness_version(store):
    _, meta_path = _layer_files(store)
    meta = json.loads(meta_path.read_text())
    meta["key"]["harness_version"] = "0.0.1"
    meta_path.write_text(json.dumps(meta))


def _garbled_metadata(store):
    _, meta_path = _layer_files(store)
    meta_path.write_text('{"key": ')


@pytest.mark.parametrize("damage", [
    _corrupt_truncate, _corrupt_flip_bytes, _corrupt_metadata_shape, _corrupt_array_shape,
    _other_harness_version, _garbled_metadata,
])
def test_damaged_entry_is_rebuilt_and_reported_never_used(tmp_path, damage, caplog):
    store, build = EmbeddingStore(tmp_path), CountingBuild()
    _get(store, build)
    damage(store)
    fresh = EmbeddingStore(tmp_path)  # no in-process memory of the earlier verification
    with pytest.warns(StoreWarning, match="layer-02.npy unusable"):
        arrays = _get(fresh, build)
    assert build.calls == [LAYERS, [2]]
    assert "rebuilding" in caplog.text
    np.testing.assert_array_equal(arrays[2], _values(2))
    assert fresh.read(_key(), LAYERS, SHAPE) is not None


def test_new_harness_version_builds_a_new_entry(tmp_path, monkeypatch):
    store, build = EmbeddingStore(tmp_path), CountingBuild()
    _get(store, build)
    monkeypatch.setattr(harness, "__version__", "9.9.9")
    _get(store, build)
    assert len(build.calls) == 2


def test_failed_build_leaves_nothing_that_is_read(tmp_path):
    store = EmbeddingStore(tmp_path)

    def half_then_fail(arrays):
        for array in arrays.values():
            array[:2] = 1
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _get(store, half_then_fail)
    assert store.read(_key(), LAYERS, SHAPE) is None
    assert not list(store.entry_dir(_key()).iterdir())  # temp files removed
    build = CountingBuild()
    _get(store, build)
    assert build.calls == [LAYERS]


def _killed_mid_build(root):
    store = EmbeddingStore(root)

    def build(arrays):
        for array in arrays.values():
            array[:2] = 7
            array.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    _get(store, build)


def test_process_killed_half_way_leaves_no_readable_entry(tmp_path):
    process = multiprocessing.get_context("fork").Process(target=_killed_mid_build, args=(tmp_path,))
    process.start()
    process.join(30)
    assert process.exitcode == -signal.SIGKILL
    store = EmbeddingStore(tmp_path)
    assert store.read(_key(), LAYERS, SHAPE) is None
    assert list(store.entry_dir(_key()).glob("*.tmp-*"))  # the half-written temp files
    build = CountingBuild()
    arrays = _get(store, build)
    assert build.calls == [LAYERS]
    np.testing.assert_array_equal(arrays[1], _values(1))
    assert not list(store.entry_dir(_key()).glob("*.tmp-*"))  # cleaned by the next build


def _slow_builder(root, counter_path, barrier):
    store = EmbeddingStore(root)

    def build(arrays):
        with open(counter_path, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # long enough for the other processes to reach the lock
        for layer, array in arrays.items():
            array[:] = _values(layer)

    barrier.wait()
    arrays = _get(store, build)
    assert all(np.array_equal(arrays[layer], _values(layer)) for layer in LAYERS)


def test_parallel_processes_build_an_entry_once(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(3)
    counter = tmp_path / "builds.txt"
    processes = [context.Process(target=_slow_builder, args=(tmp_path / "store", counter, barrier))
                 for _ in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    assert len(counter.read_text().splitlines()) == 1
    assert len((tmp_path / "store" / "builds.jsonl").read_text().splitlines()) == 1


# ------------------------------------------------------- many machines, no working locks
def _unlocked_builder(root, counter_path, barrier, delay):
    store = EmbeddingStore(root, lock=False)  # as on a filesystem whose locks do not work

    def build(arrays):
        with open(counter_path, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        for layer, array in arrays.items():
            for i in range(len(array)):  # slowly, row by row: a reader would catch a half entry
                array[i] = _values(layer)[i]
                time.sleep(delay)

    barrier.wait()
    arrays = _get(store, build)
    assert all(np.array_equal(arrays[layer], _values(layer)) for layer in LAYERS)


def _reader(root, stop, seen_path):
    store, complete = EmbeddingStore(root, lock=False), 0
    while not stop.is_set():
        arrays = store.read(_key(), LAYERS, SHAPE)
        if arrays is not None:
            assert all(np.array_equal(arrays[layer], _values(layer)) for layer in LAYERS)
            complete += 1
        store = EmbeddingStore(root, lock=False)  # verify afresh every time
    seen_path.write_text(str(complete))


def test_unlocked_builders_on_one_entry_give_one_valid_entry_and_no_reader_sees_half(tmp_path):
    """Two builders without the lock (two machines on NFS) both build; each layer is committed
    by one folder rename, the first wins and the other discards its copy; a reader polling
    all the while sees the entry whole or not at all."""
    context = multiprocessing.get_context("fork")
    barrier, stop = context.Barrier(2), context.Event()
    root, counter, seen = tmp_path / "store", tmp_path / "builds.txt", tmp_path / "seen.txt"
    reader = context.Process(target=_reader, args=(root, stop, seen))
    reader.start()
    builders = [context.Process(target=_unlocked_builder, args=(root, counter, barrier, delay))
                for delay in (0.02, 0.03)]
    for process in builders:
        process.start()
    for process in builders:
        process.join(60)
    time.sleep(0.2)
    stop.set()
    reader.join(60)
    assert [p.exitcode for p in builders] == [0, 0] and reader.exitcode == 0
    assert len(counter.read_text().splitlines()) == 2  # no lock: both built
    assert int(seen.read_text()) > 0  # the reader did see the finished entry
    store = EmbeddingStore(root)
    arrays = store.read(_key(), LAYERS, SHAPE)
    assert arrays is not None and all(np.array_equal(arrays[k], _values(k)) for k in LAYERS)
    assert not list(root.rglob(f"*{TEMP_MARK}*"))  # the loser's copy is gone
    assert len(store.builds()) == 2


def test_a_later_builder_keeps_the_committed_layer(tmp_path):
    store = EmbeddingStore(tmp_path, lock=False)
    _get(store, CountingBuild())
    array_path, _ = store.layer_paths(_key(), 2)
    before = array_path.stat().st_ino
    store._build(_key(), [2], SHAPE, CountingBuild(), None)  # as a second machine would
    assert array_path.stat().st_ino == before
    assert not list(tmp_path.rglob(f"*{TEMP_MARK}*"))
    # A damaged committed layer is replaced by the later builder's.
    data = bytearray(array_path.read_bytes())
    data[-1] ^= 0xFF
    array_path.write_bytes(bytes(data))
    store._build(_key(), [2], SHAPE, CountingBuild(), None)
    np.testing.assert_array_equal(EmbeddingStore(tmp_path).read(_key(), [2], SHAPE)[2], _values(2))


def test_only_dead_builders_temp_folders_are_removed(tmp_path, monkeypatch):
    import socket

    here = socket.gethostname()
    folder = tmp_path / "entry"
    folder.mkdir()
    dead = multiprocessing.get_context("fork").Process(target=lambda: None)
    dead.start()
    dead.join()
    names = {
        "dead-here": f"layer-01{TEMP_MARK}{dead.pid}-aa-{here}",
        "alive-here": f"layer-02{TEMP_MARK}{os.getpid()}-bb-{here}",
        "elsewhere": f"layer-03{TEMP_MARK}{dead.pid}-cc-other-host.example",  # may still run there
        "old-elsewhere": f"layer-04{TEMP_MARK}{dead.pid}-dd-other-host.example",
    }
    for name in names.values():
        (folder / name).mkdir()
    old = time.time() - STALE_BUILD_S - 60
    os.utime(folder / names["old-elsewhere"], (old, old))
    removed = {path.name for path in remove_dead_builds(folder)}
    assert removed == {names["dead-here"], names["old-elsewhere"]}
    assert (folder / names["alive-here"]).is_dir() and (folder / names["elsewhere"]).is_dir()


def test_filesystem_without_locks_builds_unlocked(tmp_path, monkeypatch):
    import errno

    import filelock

    def no_locks(self, *args, **kwargs):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(filelock.FileLock, "acquire", no_locks)
    build = CountingBuild()
    arrays = _get(EmbeddingStore(tmp_path), build)
    assert build.calls == [LAYERS] and np.array_equal(arrays[12], _values(12))


def test_a_builders_checksum_is_recorded_and_not_read_back(tmp_path, monkeypatch):
    import harness.store as store_module

    real, calls = store_module.array_crc32, []
    monkeypatch.setattr(store_module, "array_crc32", lambda a: calls.append(1) or real(a))

    def build(arrays):
        CountingBuild()(arrays)
        return {"crc32": {layer: real(_values(layer)) for layer in arrays}}

    store = EmbeddingStore(tmp_path)
    _get(store, build)
    assert calls == []  # given by the builder (computed while writing), not read back
    assert EmbeddingStore(tmp_path).read(_key(), LAYERS, SHAPE) is not None and len(calls) == 3

    def lying(arrays):
        CountingBuild()(arrays)
        return {"crc32": {layer: 12345 for layer in arrays}}

    other = _key(view_key="view-2")
    _get(EmbeddingStore(tmp_path), lying, key=other)
    with pytest.warns(StoreWarning, match="checksum mismatch"):  # a fresh reader checks the bytes
        _get(EmbeddingStore(tmp_path), CountingBuild(), key=other)


def test_arrays_are_flushed_before_commit_on_network_filesystems(tmp_path, monkeypatch):
    from harness.store import on_network_filesystem

    mounts = (f"server:/export {tmp_path} nfs4 rw,relatime 0 0\n"
              f"/dev/sda1 / ext4 rw 0 0\n")
    assert on_network_filesystem(tmp_path / "not" / "yet", mounts)
    assert not on_network_filesystem(tmp_path.parent, mounts)
    assert not on_network_filesystem(tmp_path, "/dev/sda1 / ext4 rw 0 0\n")
    flushed = []
    monkeypatch.setattr(np.memmap, "flush", lambda self: flushed.append(self.filename))
    _get(EmbeddingStore(tmp_path / "local", flush=False), CountingBuild())
    assert flushed == []
    _get(EmbeddingStore(tmp_path / "nfs", flush=True), CountingBuild())
    assert len(flushed) == 3 and all(".tmp-" in str(name) for name in flushed)  # before the rename
