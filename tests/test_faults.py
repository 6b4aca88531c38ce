"""The fault helpers themselves (tests/faults.py): each really produces its fault, says how,
and leaves the machine as it found it."""

from __future__ import annotations

import errno
import os
import signal
import subprocess

import pytest
from faults import (
    DISK_KINDS,
    READ_ONLY_METHODS,
    KiB,
    MiB,
    can_mount_tmpfs,
    kill_when,
    python_command,
    read_only_folder,
    small_filesystem,
)

from harness.io import atomic_write_bytes, reserve_space


def _mounted(path) -> bool:
    return str(path) in open("/proc/self/mounts").read()


@pytest.mark.parametrize("kind", DISK_KINDS)
def test_small_filesystem_fills_up_and_makes_room(tmp_path, kind, record_property):
    with small_filesystem(tmp_path / "disk", 2 * MiB, kind) as disk:
        record_property("filesystem", disk.kind)
        assert disk.kind == kind and 1 * MiB < disk.free() <= 2 * MiB
        assert _mounted(disk.path) == (kind == "tmpfs")
        atomic_write_bytes(disk.path / "a", bytes(512 * KiB))
        disk.fill(leave=100 * KiB)
        assert 90 * KiB <= disk.free() <= 110 * KiB
        with pytest.raises(OSError) as caught:
            atomic_write_bytes(disk.path / "b", bytes(200 * KiB))
        assert caught.value.errno == errno.ENOSPC
        with pytest.raises(OSError, match="No space"):
            reserve_space(disk.path / "a", 0, 1 * MiB)
        disk.make_room()
        atomic_write_bytes(disk.path / "b", bytes(200 * KiB))
    assert not _mounted(tmp_path / "disk")


def test_auto_uses_tmpfs_where_it_can_be_mounted(tmp_path):
    with small_filesystem(tmp_path / "disk", 1 * MiB) as disk:
        assert disk.kind == ("tmpfs" if can_mount_tmpfs() else "patched")


@pytest.mark.parametrize("how", ["auto", *READ_ONLY_METHODS])
def test_read_only_folder_refuses_every_write_for_this_user_and_is_undone(tmp_path, how, record_property):
    folder = tmp_path / "cache"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "entry.json").write_text("{}")
    with read_only_folder(folder, how) as used:
        record_property("read_only", used)
        assert how in ("auto", used)
        for attempt in (lambda: (folder / "new").write_text("x"),
                        lambda: (folder / "sub" / "new").mkdir(),
                        lambda: os.open(folder / "sub" / "x", os.O_CREAT | os.O_WRONLY),
                        lambda: (folder / "sub" / "entry.json").unlink()):
            with pytest.raises(OSError) as caught:
                attempt()
            assert caught.value.errno in (errno.EROFS, errno.EPERM, errno.EACCES), used
        assert (folder / "sub" / "entry.json").read_text() == "{}"  # reading still works
    (folder / "sub" / "new").mkdir()
    (folder / "new").write_text("x")


def test_kill_when_kills_in_the_middle(tmp_path):
    marker = tmp_path / "started"
    code = f"import pathlib, time; pathlib.Path({str(marker)!r}).touch(); time.sleep(60)"
    killed = kill_when(python_command(code), ready=marker.exists)
    assert killed.returncode == -signal.SIGKILL and killed.seconds_to_ready < 30


def test_kill_when_fails_the_test_if_the_work_ended_first(tmp_path):
    with pytest.raises(pytest.fail.Exception, match="finished .* before it was ready"):
        kill_when(python_command("pass"), ready=lambda: False)


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs a real tmpfs (root or CAP_SYS_ADMIN)")
def test_the_real_fault_a_memory_map_written_past_a_full_disk_dies_with_sigbus(tmp_path):
    """What the store did before it reserved space: np.lib.format.open_memmap makes a
    sparse file, and writing its pages on a full filesystem kills the process with SIGBUS
    (exit 135 from a shell) instead of raising an error."""
    with small_filesystem(tmp_path / "disk", 1 * MiB, "tmpfs") as disk:
        code = ("import numpy as np; a = np.lib.format.open_memmap("
                f"{str(disk.path / 'layer.npy')!r}, mode='w+', dtype='float16', shape=(2048, 1024)); a[:] = 1")
        result = subprocess.run(python_command(code), capture_output=True, timeout=60)
        assert result.returncode == -signal.SIGBUS
