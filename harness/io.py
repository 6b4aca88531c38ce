"""Writing files for people so that a reader never sees half of one.

    atomic_write_text(path, text)           # the old file or the new one, never a mix
    atomic_write_files({a: text, b: data})  # all written before any is replaced
    append_record(log, {"event": ...})      # one JSON line, never glued onto a cut one
    records = read_records(log)             # skips lines cut by a full disk or a kill
    reserve_space(path, offset, length)     # blocks allocated now, not at a page fault

A file is written to a temp file in its own folder (so the rename cannot cross a
filesystem), flushed and fsynced, then renamed over the target with os.replace. On any
failure, a full disk included, the temp file is removed and the target is untouched; the
error is the OSError of the failed call, naming the target rather than the temp file.
New files get the permissions of any new file (0o666 less the umask).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TEMP_MARK = ".tmp-"  # <name>.tmp-<pid>-<random>: whose temp file it is, for cleaners
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_ZEROS = bytes(1 << 22)  # 4 MiB of zeros per write when filling a reservation by hand
_NO_FALLOCATE = {errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}

Data = bytes | bytearray | memoryview | str


def temp_sibling(path: str | os.PathLike) -> Path:
    """A fresh temp name next to `path`, tagged with this process id."""
    path = Path(path)
    return path.with_name(f"{path.name}{TEMP_MARK}{os.getpid()}-{os.urandom(4).hex()}")


def temp_owner(path: str | os.PathLike) -> int | None:
    """The process id in a temp_sibling name, None for any other name."""
    try:
        return int(Path(path).name.rsplit(TEMP_MARK, 1)[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def atomic_write_bytes(path: str | os.PathLike, data: bytes | bytearray | memoryview, *,
                       durable: bool = True) -> Path:
    """Replace `path` with `data` atomically. durable=False skips the fsyncs, for files
    whose readers verify them anyway (a crash may then lose the new version, never mix)."""
    return atomic_write_files({path: data}, durable=durable)[0]


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8",
                      durable: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode(encoding), durable=durable)


def atomic_write_files(files: Mapping[str | os.PathLike, Data], *, durable: bool = True) -> list[Path]:
    """Write every file to its temp file first and replace the targets only when all of
    them were written: a full disk half way leaves every old file as it was."""
    written: dict[Path, Path] = {}
    try:
        for path, data in files.items():
            path = Path(path)
            written[path] = _write_temp(path, data.encode() if isinstance(data, str) else data, durable)
        for path, temp in written.items():
            os.replace(temp, path)
    except BaseException:
        for temp in written.values():
            _unlink_quietly(temp)
        raise
    if durable:
        for folder in {path.parent for path in written}:
            _fsync_folder(folder)  # the renames themselves survive a crash
    return list(written)


def _write_temp(path: Path, data: bytes | bytearray | memoryview, durable: bool) -> Path:
    temp = temp_sibling(path)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o666)
    except OSError as err:
        raise _naming(err, path) from err
    try:
        try:
            _write_all(fd, memoryview(data).cast("B"))
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)  # network filesystems may report a full disk only here
    except BaseException as err:
        _unlink_quietly(temp)
        if isinstance(err, OSError):
            raise _naming(err, path) from err
        raise
    return temp


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        count = os.write(fd, view)
        if count == 0:  # a disk that takes nothing more without saying so
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[count:]


def _naming(err: OSError, path: Path) -> OSError:
    """The same error (same OSError subclass) naming the target instead of the temp file."""
    if err.errno is None:
        return err
    return OSError(err.errno, err.strerror or os.strerror(err.errno), str(path))


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
    except OSError:
        return  # not every platform opens folders; the files themselves are synced
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_temp_files(folder: str | os.PathLike, name: str = "*", *, only_dead: bool = True) -> list[Path]:
    """Remove the temp files (or folders) of `name` (default: of every file) in `folder`
    left by killed writers. only_dead: those whose process is gone on this machine; False:
    all of them, for a caller holding the lock under which they are written. Returns what
    was removed."""
    removed = []
    for path in Path(folder).glob(f"{name}{TEMP_MARK}*"):
        owner = temp_owner(path)
        if owner is None or (only_dead and process_alive(owner)):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            _unlink_quietly(path)
        removed.append(path)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this machine still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------------- JSON-lines logs
def append_record(path: str | os.PathLike, record: Mapping[str, Any] | str) -> None:
    """Append one record as one line with one O_APPEND write, so concurrent writers never
    interleave. If the file ends in a cut line (a full disk or a kill during an earlier
    append), the record starts on a new line instead of being glued onto it.

    If the disk fills during this write, the line is left cut (a short write cannot be
    taken back without risking another writer's record) and OSError(ENOSPC) is raised."""
    line = record if isinstance(record, str) else json.dumps(record)
    if "\n" in line:
        raise ValueError("a log record must be one line")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | _CLOEXEC, 0o666)
    try:
        size = os.fstat(fd).st_size
        cut = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        data = (b"\n" if cut else b"") + line.encode() + b"\n"
        if os.write(fd, data) != len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    except OSError as err:
        raise _naming(err, Path(path)) from err
    finally:
        os.close(fd)


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a JSON-lines log, skipping (with a warning in the log) lines that do
    not parse: a record cut by a full disk or a killed writer. A missing log is empty."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    records, skipped = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            skipped += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            skipped += 1
    if skipped:
        log.warning("%s: skipped %d unreadable line(s) (cut by an interrupted write)", path, skipped)
    return records


# ------------------------------------------------------------------------- space reservation
def reserve_space(path: str | os.PathLike, offset: int, length: int) -> str:
    """Allocate bytes [offset, offset + length) of an existing file on disk now, so that
    writing them later through a memory map cannot hit a full disk (which kills the process
    with SIGBUS instead of raising). Raises OSError(ENOSPC) when they do not fit.

    Uses posix_fallocate; where the platform or filesystem has none, fills the range with
    zeros by hand (the range must hold no data yet). Returns "fallocate" or "zero-fill"."""
    if length <= 0:
        return "fallocate"
    fd = os.open(path, os.O_RDWR | _CLOEXEC)
    try:
        fallocate = getattr(os, "posix_fallocate", None)
        if fallocate is not None:
            try:
                fallocate(fd, offset, length)
                return "fallocate"
            except OSError as err:
                if err.errno not in _NO_FALLOCATE:
                    raise
        _fill_zeros(fd, offset, length)
        return "zero-fill"
    except OSError as err:
        raise _naming(err, Path(path)) from err
    finally:
        os.close(fd)


def _fill_zeros(fd: int, offset: int, length: int) -> None:
    end = offset + length
    while offset < end:
        count = os.pwrite(fd, memoryview(_ZEROS)[: min(len(_ZEROS), end - offset)], offset)
        if count == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        offset += count


def free_bytes(folder: str | os.PathLike) -> int:
    """Free bytes on the filesystem that holds (or will hold) `folder`."""
    for path in (Path(folder), *Path(folder).parents):
        if path.exists():
            return shutil.disk_usage(path).free
    return 0


def safe_name(name: str) -> str:
    """`name` with anything but letters, digits, '-', '_' and '.' replaced: a file name part."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
