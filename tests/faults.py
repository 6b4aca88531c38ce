"""Fault injection for the harness's own tests: a small filesystem that fills up, a
read-only folder (that holds for root too), and a process killed in the middle of its work.

    with small_filesystem(tmp_path / "disk", 8 * MiB) as disk:      # disk.kind: how
        disk.fill(leave=64 * KiB)     # nearly full ...
        ...                           # ... the code under test hits ENOSPC
        disk.make_room()              # ... and now has room again

    with read_only_folder(tmp_path / "cache") as how:                # how: the method used
        ...                                                          # writes fail: EROFS/EPERM/EACCES

    result = kill_when(python_command(code), ready=lambda: marker.exists())  # SIGKILL, mid-way

Each helper uses the real thing where this machine allows it and says which one it used,
so a test can record it (`record_property("filesystem", disk.kind)`):

- small_filesystem: "tmpfs", a real tmpfs of the given size mounted on the folder (needs
  root or CAP_SYS_ADMIN; unmounted afterwards): ENOSPC comes from the kernel, and writing
  through an unreserved memory map dies with SIGBUS exactly as on a full disk. Else
  "patched": os.write, os.pwrite and os.posix_fallocate on files under the folder raise
  ENOSPC (or write short) once the files there would pass the size, and os.statvfs
  (shutil.disk_usage) reports that size; what the harness writes goes through those calls
  (harness.io, the store's reservation), other writers and memory-mapped pages are not
  seen.
- read_only_folder: "chmod" where permission bits hold (a normal user); for root, which
  ignores them, a "read-only bind mount" (EROFS, the whole tree; needs CAP_SYS_ADMIN),
  else "chattr +i" on every folder of the tree (EPERM; needs CAP_LINUX_IMMUTABLE and an
  ext/xfs/btrfs filesystem), else "patched": os.open/open/io.open for writing, os.mkdir,
  unlink, remove, rmdir, rename, replace, truncate and chmod under the folder raise EROFS
  (files already open and memory maps are not seen).
- kill_when: a real subprocess, a real signal.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import gc
import io
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

KiB, MiB = 1 << 10, 1 << 20
DISK_KINDS = ("tmpfs", "patched")


# ------------------------------------------------------------------------ small filesystem
@cache
def can_mount_tmpfs() -> bool:
    """Whether this process may mount a tmpfs (tried once, on a scratch folder)."""
    if not sys.platform.startswith("linux") or shutil.which("mount") is None:
        return False
    import tempfile

    probe = Path(tempfile.mkdtemp(prefix="tmpfs-probe-"))
    try:
        if _run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)]) != 0:
            return False
        _unmount(probe)
        return True
    finally:
        shutil.rmtree(probe, ignore_errors=True)


@dataclass
class SmallDisk:
    """A folder on a filesystem of `size` bytes. kind: "tmpfs" or "patched"."""

    path: Path
    size: int
    kind: str
    _filler: int = field(default=0, repr=False)  # patched: bytes taken by fill()

    def used(self) -> int:
        if self.kind == "tmpfs":
            usage = shutil.disk_usage(self.path)
            return usage.total - usage.free
        return _allocated_under(self.path) + self._filler

    def free(self) -> int:
        if self.kind == "tmpfs":
            return shutil.disk_usage(self.path).free
        return max(0, self.size - self.used())

    def fill(self, leave: int = 0) -> None:
        """Take up space until only `leave` bytes are free (rounded down to whole pages
        on tmpfs)."""
        self.make_room()
        take = self.free() - leave
        if take <= 0:
            return
        if self.kind == "tmpfs":
            filler = self.path / ".filler"
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, take - take % 4096 + (4096 if take % 4096 else 0))
            finally:
                os.close(fd)
        else:
            self._filler = take

    def make_room(self) -> None:
        """Give back what fill() took."""
        if self.kind == "tmpfs":
            (self.path / ".filler").unlink(missing_ok=True)
        self._filler = 0


@contextlib.contextmanager
def small_filesystem(path: str | os.PathLike, size: int, kind: str = "auto") -> Iterator[SmallDisk]:
    """A folder `path` (created) on a filesystem of `size` bytes, emptied and released at
    the end. kind "auto": tmpfs where it can be mounted, else patched; "tmpfs" skips the
    test where it cannot be mounted."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if kind == "auto":
        kind = "tmpfs" if can_mount_tmpfs() else "patched"
    if kind == "tmpfs":
        if not can_mount_tmpfs():
            pytest.skip("a real small filesystem needs permission to mount a tmpfs (root or "
                        "CAP_SYS_ADMIN); the 'patched' variant of this test runs instead")
        if _run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)]) != 0:
            pytest.fail(f"mounting a tmpfs on {path} failed although the probe succeeded")
        try:
            yield SmallDisk(path, size, "tmpfs")
        finally:
            _unmount(path)
    elif kind == "patched":
        disk = SmallDisk(path, size, "patched")
        with pytest.MonkeyPatch.context() as patch:
            _patch_writes(patch, disk)
            yield disk
    else:
        raise ValueError(f"unknown kind {kind!r}; expected auto, {' or '.join(DISK_KINDS)}")


def _patch_writes(patch: pytest.MonkeyPatch, disk: SmallDisk) -> None:
    """A file takes its size in bytes, except a sparse one, which takes only its allocated
    blocks until written or reserved (see _taken)."""
    real_write, real_pwrite, real_fallocate = os.write, os.pwrite, getattr(os, "posix_fallocate", None)

    def over_by(fd: int, end: int) -> int | None:
        """Bytes by which growing this file to `end` would pass the size (None: not ours)."""
        if _fd_path(fd, disk.path) is None:
            return None
        growth = max(0, end - _taken(os.fstat(fd)))
        return max(0, growth - disk.free())

    def limited(fd, data, position, do_write):
        view = memoryview(data).cast("B")
        over = over_by(fd, position + len(view))
        if not over:
            return do_write(view)
        if over >= len(view):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return do_write(view[: len(view) - over])  # a short write, as on a nearly full disk

    def write(fd, data):
        position = os.fstat(fd).st_size if _appending(fd) else os.lseek(fd, 0, os.SEEK_CUR)
        return limited(fd, data, position, lambda part: real_write(fd, part))

    def pwrite(fd, data, offset):
        return limited(fd, data, offset, lambda part: real_pwrite(fd, part, offset))

    def posix_fallocate(fd, offset, length):
        if over_by(fd, offset + length):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fallocate(fd, offset, length)

    real_statvfs = os.statvfs

    def statvfs(path):
        """shutil.disk_usage of the folder: the patched size (1-byte blocks)."""
        if not isinstance(path, int) and Path(os.path.abspath(path)).is_relative_to(disk.path.resolve()):
            real, free = real_statvfs(path), disk.free()
            return os.statvfs_result((1, 1, disk.size, free, free, real.f_files, real.f_ffree,
                                      real.f_favail, real.f_flag, real.f_namemax))
        return real_statvfs(path)

    patch.setattr(os, "write", write)
    patch.setattr(os, "pwrite", pwrite)
    patch.setattr(os, "statvfs", statvfs)
    if real_fallocate is not None:
        patch.setattr(os, "posix_fallocate", posix_fallocate)


def _appending(fd: int) -> bool:
    import fcntl

    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND)


def _fd_path(fd: int, under: Path) -> Path | None:
    try:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return None
    return path if path.is_relative_to(under.resolve()) else None


def _taken(st: os.stat_result) -> int:
    """Bytes a file takes on the patched disk: its size, or its allocated blocks when fewer
    (a sparse file, e.g. a fresh np.lib.format.open_memmap, takes almost nothing)."""
    return min(st.st_size, st.st_blocks * 512)


def _allocated_under(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += _taken(os.lstat(os.path.join(root, name)))
    return total


def _unmount(path: Path) -> None:
    gc.collect()  # memory maps still referenced keep a tmpfs busy
    for command in (["umount", str(path)], ["umount", "-l", str(path)]):
        if _run(command) == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"could not unmount the test filesystem at {path}")


def _run(command: Sequence[str]) -> int:
    return subprocess.run(command, capture_output=True, check=False).returncode


# ------------------------------------------------------------------------ read-only folder
READ_ONLY_METHODS = ("chmod", "read-only bind mount", "chattr +i", "patched")


@contextlib.contextmanager
def read_only_folder(path: str | os.PathLike, how: str = "auto") -> Iterator[str]:
    """Make the existing folder `path` (and everything under it) read-only for this
    process; yields the method used. how "auto": the first of READ_ONLY_METHODS that works
    here, each checked by trying to write (chmod holds for a normal user, not for root with
    CAP_DAC_OVERRIDE); one of READ_ONLY_METHODS forces it (the test skips where it does
    not work)."""
    path = Path(path)
    if how == "auto":
        methods = READ_ONLY_METHODS
    elif how in READ_ONLY_METHODS:
        methods = (how,)
    else:
        raise ValueError(f"unknown method {how!r}; expected auto or one of {READ_ONLY_METHODS}")
    for method in methods:
        undo = contextlib.ExitStack()
        if _make_read_only(method, path, undo) and (method == "patched" or not _writable(path)):
            with undo:
                yield method
            return
        undo.close()
    pytest.skip(f"cannot make a folder read-only for this process with {' or '.join(methods)} here")


def _make_read_only(method: str, path: Path, undo: contextlib.ExitStack) -> bool:
    if method == "chmod":
        modes = {p: p.stat().st_mode for p in (path, *path.rglob("*")) if not p.is_symlink()}
        undo.callback(lambda: [p.chmod(mode) for p, mode in modes.items()])
        for p, mode in modes.items():
            p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        return True
    if method == "read-only bind mount":
        if _run(["mount", "--bind", str(path), str(path)]) != 0:
            return False
        undo.callback(_unmount, path)
        return _run(["mount", "-o", "remount,bind,ro", str(path)]) == 0
    if method == "chattr +i":  # on every folder: +i on one protects only its own entries
        folders = [str(p) for p in (path, *path.rglob("*")) if p.is_dir() and not p.is_symlink()]
        if not shutil.which("chattr") or _run(["chattr", "+i", *folders]) != 0:
            return False
        undo.callback(_run, ["chattr", "-i", *folders])
        return True
    patch = undo.enter_context(pytest.MonkeyPatch.context())
    _patch_read_only(patch, path)
    return True


def _writable(path: Path) -> bool:
    probe = path / f".write-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError:
        return False
    probe.rmdir()
    return True


def _patch_read_only(patch: pytest.MonkeyPatch, folder: Path) -> None:
    folder = folder.resolve()

    def ours(target) -> bool:
        try:
            return Path(os.path.abspath(os.fspath(target))).is_relative_to(folder)
        except TypeError:  # a file descriptor
            return False

    def refuse(target):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(target))

    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    real_open, real_builtin_open = os.open, builtins.open

    def os_open(target, flags, *args, **kwargs):
        if flags & writing and ours(target):
            refuse(target)
        return real_open(target, flags, *args, **kwargs)

    def builtin_open(target, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and ours(target):
            refuse(target)
        return real_builtin_open(target, mode, *args, **kwargs)

    def refusing(real):
        def call(target, *args, **kwargs):
            if ours(target):
                refuse(target)
            return real(target, *args, **kwargs)
        return call

    patch.setattr(os, "open", os_open)
    patch.setattr(builtins, "open", builtin_open)
    patch.setattr(io, "open", builtin_open)
    for name in ("mkdir", "unlink", "remove", "rmdir", "rename", "replace", "truncate", "chmod"):
        patch.setattr(os, name, refusing(getattr(os, name)))


# ------------------------------------------------------------------------ killed mid-way
@dataclass
class Killed:
    returncode: int
    stdout: str
    stderr: str
    seconds_to_ready: float


def python_command(code: str) -> list[str]:
    """Run `code` in a fresh interpreter of this environment."""
    return [sys.executable, "-c", code]


def kill_when(command: Sequence[str], ready: Callable[[], bool], *, sig: int = signal.SIGKILL,
              timeout: float = 120.0, env: dict[str, str] | None = None,
              cwd: str | os.PathLike | None = None) -> Killed:
    """Start `command`, wait until `ready()` is true (polled every 10 ms), send `sig`
    (default SIGKILL) and wait for the process to end. Fails the test if the process ends
    before it is ready (the fault would not be in the middle of the work) or is not ready
    within `timeout` seconds."""
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, cwd=cwd)
    try:
        while not ready():
            if process.poll() is not None:
                out, err = process.communicate()
                pytest.fail(f"{command[:3]} finished (exit {process.returncode}) before it was ready "
                            f"to be interrupted:\n{out[-2000:]}\n{err[-2000:]}")
            if time.monotonic() - started > timeout:
                pytest.fail(f"{command[:3]} not ready to be interrupted after {timeout} s")
            time.sleep(0.01)
        seconds = time.monotonic() - started
        process.send_signal(sig)
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return Killed(process.returncode, out, err, seconds)
