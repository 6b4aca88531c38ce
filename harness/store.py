"""The embedding cache: one fp16 memory-mapped .npy per (model + weights digest, view,
precision, layer) with a JSON sidecar, safe for many processes on many machines sharing one
filesystem.

Layout: <root>/<model>/<entry id>/layer-NN/layer-NN.npy + layer-NN.json, where the entry
id hashes everything that changes the numbers except the layer (model name, weights digest,
view key, image size, stored dtype, extraction precision, harness version): entries are
content-addressed, so two builders of one id build the same numbers. The layer is in the
folder name and the full key, layer included, is repeated in the JSON and checked on every
read. Entries of the two precisions (fp32, bf16) have different ids and never mix.

Why it holds across machines (no lock needed for correctness):
- a layer is built in a folder of its own with a unique temp name (`<layer>.tmp-<pid>-
  <random>-<host>`), its array flushed to the file on a network filesystem (msync: on NFS,
  pages written through a memory map are not sent to the server at close; `flush`), then the
  folder, array and JSON together, is renamed to `layer-NN` in one step. rename(2) of a folder onto a non-empty one fails, so
  the first builder to finish wins; a later one finds its rename refused, checks the
  winner's layer and discards its own copy. A reader therefore sees a layer whole or not at
  all, on a local disk as on NFS (rename is atomic on the server; close-to-open consistency
  makes the flushed data visible to a reader that opens the files after the rename);
- every read checks the JSON key, the array's shape and dtype and a CRC32 of its bytes; a
  layer that fails is moved aside (renamed away, then deleted) and rebuilt, never used;
- temp folders are removed by later builds only when their writer is known dead: its host is
  this one and its process is gone, or the folder is older than STALE_BUILD_S (a builder on
  another machine is never touched while it may still run).
The per-entry file lock is an optimisation: it keeps processes of one machine (pytest-xdist
workers) from building an entry twice; the others wait on it and then read. Where the
filesystem has no working locks (some NFS setups) or the store is made with lock=False, two
builders may both build an entry, and both get a valid, identical reading of it.

Also:
- the disk space of every array is reserved (posix_fallocate, else zeros written) before it
  is written through its memory map: a full disk is an OSError there, which becomes a
  StoreFullError naming the folder and the bytes needed, with the partial files removed;
  without the reservation it would be a SIGBUS that kills the process mid-write;
- every build appends one line to <root>/builds.jsonl (harness.io.append_record). On NFS,
  appends of several machines may cut a line; the reader skips cut lines (a lost log line,
  never a wrong entry).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

import harness
from harness.io import (
    TEMP_MARK,
    append_record,
    atomic_write_text,
    free_bytes,
    process_alive,
    read_records,
    reserve_space,
    safe_name,
)

log = logging.getLogger(__name__)

STORE_DTYPE = "float16"
_CRC_BLOCK = 1 << 26  # 64 MiB per crc32 call keeps memory flat on huge arrays
_SIDECAR_BYTES = 1024  # room counted for a layer's JSON (about 450 bytes written)
STALE_BUILD_S = 2 * 86400  # a temp build folder of another machine untouched this long is dead
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}  # filesystems without file locks
_TAKEN = {errno.EEXIST, errno.ENOTEMPTY}  # rename onto a layer another builder committed


def _harness_version() -> str:
    return harness.__version__


class StoreWarning(UserWarning):
    """A cache entry was found corrupt, partial or stale and is being rebuilt, or a
    finished build could not be recorded in builds.jsonl."""


class StoreError(OSError):
    """The embedding cache cannot be written (read-only filesystem, no permission, ...).
    An OSError with the errno of the failed call and `folder` (also `filename`)."""

    @property
    def folder(self) -> str:
        return self.filename

    def __str__(self) -> str:
        return (f"cannot write the embedding cache in {self.filename}: {self.strerror}; "
                "make it writable or choose another --cache-dir")


class StoreFullError(StoreError):
    """No space left for an entry (errno ENOSPC, or EDQUOT for a quota): `folder`, `needed`
    (bytes the entry's files take) and `free` (bytes free there after the partial files of
    the failed build were removed)."""

    def __init__(self, folder: str | os.PathLike, needed: int, free: int, code: int = errno.ENOSPC):
        super().__init__(code, os.strerror(code), str(folder))
        self.needed, self.free = int(needed), int(free)

    def __reduce__(self):  # OSError would pickle (errno, strerror, filename)
        return type(self), (self.filename, self.needed, self.free, self.errno)

    def __str__(self) -> str:
        return (f"no space for the embedding cache in {self.filename}: the entry needs "
                f"{_amount(self.needed)}, {_amount(self.free)} free ({self.strerror}); free "
                "some space there or choose another --cache-dir")


@dataclass(frozen=True)
class EntryKey:
    """Everything that changes the stored numbers, except the layer."""

    model: str
    weights_digest: str
    view_key: str
    image_size: tuple[int, int]
    dtype: str = STORE_DTYPE
    precision: str = "fp32"  # the forward's arithmetic: "fp32" or "bf16" (harness.devices)
    harness_version: str = field(default_factory=_harness_version)

    def fields(self, layer: int) -> dict[str, Any]:
        out = asdict(self)
        out["image_size"] = list(self.image_size)
        out["layer"] = int(layer)
        return out

    @property
    def entry_id(self) -> str:
        text = json.dumps(self.fields(0), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]


try:  # ISA-L's CRC-32: the same values as zlib's, several times faster (SIMD)
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover - depends on the environment
    _crc32 = zlib.crc32


def crc32(data, value: int = 0) -> int:
    """zlib's CRC-32 of a contiguous buffer, continued from `value` (ISA-L's when installed)."""
    return _crc32(data, value)


def array_crc32(array: np.ndarray) -> int:
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    crc = 0
    for start in range(0, flat.size, _CRC_BLOCK):
        crc = _crc32(flat[start:start + _CRC_BLOCK], crc)
    return crc


NETWORK_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "fuse.ceph",
                       "glusterfs", "fuse.glusterfs", "9p", "afs", "panfs", "wekafs", "fuse.sshfs", "fuse.juicefs",
                       "fuse.s3fs", "fuse.gcsfuse", "fuse.mountpoint-s3"}


def on_network_filesystem(path: str | os.PathLike, mounts: str | None = None) -> bool:
    """Whether `path` (or its nearest existing parent) lies on a network filesystem, by the
    longest matching mount point in `mounts` (default /proc/mounts; False where unreadable)."""
    path = Path(path).expanduser()
    while not path.exists() and path != path.parent:
        path = path.parent
    real = os.path.realpath(path)
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return False
    best, kind = "", ""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind in NETWORK_FILESYSTEMS


class EntryCorrupt(Exception):
    """Internal: why a stored layer cannot be used."""


def default_store(cache_dir: str | os.PathLike | None = None) -> EmbeddingStore:
    """The store under the harness cache (--cache-dir, $VITCLAIMS_CACHE, ~/.cache/...)."""
    from harness import config

    return EmbeddingStore(config.cache_dir(cache_dir) / "embeddings")


class EmbeddingStore:
    """The cache under `root`. lock=False builds without the per-entry file lock (as on a
    filesystem without working locks): still correct, possibly built twice (module docstring).
    flush: msync each array before its layer is committed; needed where other machines read
    the files (NFS sends pages written through a memory map to the server only then), not on
    a local disk, whose page cache every process shares. None: on network filesystems only."""

    def __init__(self, root: str | os.PathLike, lock: bool = True, flush: bool | None = None):
        self.root = Path(root).expanduser()
        self.lock = lock
        self.flush = on_network_filesystem(self.root) if flush is None else flush
        # (path, size, mtime_ns) of files whose checksum this process already verified,
        # so repeated reads of one entry hash it once.
        self._verified: set[tuple[str, int, int]] = set()

    # -- paths -------------------------------------------------------------------------
    def entry_dir(self, key: EntryKey) -> Path:
        return self.root / safe_name(key.model) / key.entry_id

    def layer_dir(self, key: EntryKey, layer: int) -> Path:
        return self.entry_dir(key) / f"layer-{layer:02d}"

    def layer_paths(self, key: EntryKey, layer: int) -> tuple[Path, Path]:
        folder = self.layer_dir(key, layer)
        return folder / f"{folder.name}.npy", folder / f"{folder.name}.json"

    @property
    def lock_dir(self) -> Path:
        """File locks of this machine's processes: entries, and GPUs (harness.devices)."""
        return self.root / ".locks"

    def lock_path(self, key: EntryKey) -> Path:
        return self.lock_dir / f"{key.entry_id}.lock"

    @property
    def builds_log(self) -> Path:
        return self.root / "builds.jsonl"

    # -- public API --------------------------------------------------------------------
    def get_or_build(
        self,
        key: EntryKey,
        layers: Iterable[int],
        shape: tuple[int, ...],
        build: Callable[[dict[int, np.ndarray]], Mapping[str, Any] | None],
        *,
        ids_digest: str | None = None,
    ) -> dict[int, np.ndarray]:
        """Read-only memmaps {layer: array of `shape`} for `layers`, building the missing
        ones with `build(writable_arrays)`, which fills every array it is given and may
        return details for the build log (e.g. {'device': 'cuda:0'}) and, under 'crc32',
        {layer: CRC-32 of the bytes it wrote} (computed while writing: then not read again)."""
        layers = sorted({int(layer) for layer in layers})
        shape = tuple(int(s) for s in shape)
        found = self._read_valid(key, layers, shape, ids_digest, report=False)
        if len(found) == len(layers):
            return found
        with self._entry_lock(key, needed=len(layers) * _layer_bytes(shape, key.dtype)):
            # Another process may have built it while we waited for the lock.
            found = self._read_valid(key, layers, shape, ids_digest, report=True)
            missing = [layer for layer in layers if layer not in found]
            if missing:
                self._build(key, missing, shape, build, ids_digest)
                found.update(self._read_valid(key, missing, shape, ids_digest, report=True))
        if len(found) != len(layers):
            raise RuntimeError(f"store: entry {key.entry_id} unreadable right after building it")
        return found

    def read(self, key: EntryKey, layers: Iterable[int], shape: tuple[int, ...],
             ids_digest: str | None = None) -> dict[int, np.ndarray] | None:
        """The stored layers if all are present and valid, else None (never builds)."""
        layers = sorted({int(layer) for layer in layers})
        found = self._read_valid(key, layers, tuple(shape), ids_digest, report=False)
        return found if len(found) == len(layers) else None

    def builds(self) -> list[dict[str, Any]]:
        """The records of builds.jsonl (a line cut by a full disk or a kill is skipped)."""
        return read_records(self.builds_log)

    @contextlib.contextmanager
    def _entry_lock(self, key: EntryKey, needed: int):
        if not self.lock:
            yield
            return
        path = self.lock_path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(path))
            lock.acquire()
        except OSError as err:
            if err.errno in _NO_LOCKS:  # locks are an optimisation: build unlocked
                log.info("embedding store: no file locks in %s (%s); building without", path.parent, err)
                yield
                return
            raise _write_error(err, path.parent, needed) from err
        try:
            yield
        finally:
            lock.release()

    # -- reading -----------------------------------------------------------------------
    def _read_valid(self, key, layers, shape, ids_digest, *, report: bool) -> dict[int, np.ndarray]:
        found: dict[int, np.ndarray] = {}
        for layer in layers:
            array_path, meta_path = self.layer_paths(key, layer)
            if not meta_path.parent.exists():
                continue
            try:
                seen = meta_path.stat()
            except OSError:
                seen = None  # a committed layer always has its sidecar: damaged
            try:
                if seen is None:
                    raise EntryCorrupt("metadata missing")
                found[layer] = self._open_layer(key, layer, shape, ids_digest)
            except EntryCorrupt as why:
                if report:  # only when about to build, so each problem is reported once
                    message = f"embedding store: {array_path} unusable ({why}); rebuilding it"
                    log.warning(message)
                    warnings.warn(message, StoreWarning, stacklevel=4)
                    self._move_aside(self.layer_dir(key, layer), seen)
        return found

    def _open_layer(self, key, layer, shape, ids_digest) -> np.ndarray:
        array_path, meta_path = self.layer_paths(key, layer)
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as err:
            raise EntryCorrupt(f"metadata unreadable: {err}") from err
        if meta.get("key") != key.fields(layer):
            raise EntryCorrupt(f"metadata key differs: {meta.get('key')} != {key.fields(layer)}")
        if ids_digest is not None and meta.get("ids_digest") != ids_digest:
            raise EntryCorrupt("built for other image ids")
        if list(meta.get("shape", [])) != list(shape) or meta.get("dtype") != key.dtype:
            raise EntryCorrupt(f"metadata shape/dtype {meta.get('shape')}/{meta.get('dtype')} "
                               f"!= expected {list(shape)}/{key.dtype}")
        try:
            array = np.load(array_path, mmap_mode="r")
        except (OSError, ValueError) as err:  # missing, truncated or bad header
            raise EntryCorrupt(f"array unreadable: {err}") from err
        if array.shape != shape or array.dtype != np.dtype(key.dtype):
            raise EntryCorrupt(f"array is {array.shape} {array.dtype}, metadata says {shape} {key.dtype}")
        stat = array_path.stat()
        token = (str(array_path), stat.st_size, stat.st_mtime_ns)
        if token not in self._verified:
            if array_crc32(array) != meta.get("crc32"):
                raise EntryCorrupt("checksum mismatch")
            self._verified.add(token)
        return array

    def _move_aside(self, folder: Path, seen: os.stat_result | None) -> None:
        """Take a bad layer out of the way in one rename, then delete it; unless another
        process replaced it since it was checked (its sidecar is no longer the one `seen`;
        None: it had none, which no committed layer lacks)."""
        if seen is not None:
            try:
                now = (folder / f"{folder.name}.json").stat()
            except OSError:
                return  # already moved by another reader
            if (now.st_ino, now.st_mtime_ns) != (seen.st_ino, seen.st_mtime_ns):
                return
        trash = _build_folder(folder)
        try:
            os.rename(folder, trash)
        except OSError:
            return  # another reader moved it first
        shutil.rmtree(trash, ignore_errors=True)

    # -- building ----------------------------------------------------------------------
    def _build(self, key, layers, shape, build, ids_digest) -> None:
        folder = self.entry_dir(key)
        needed = len(layers) * _layer_bytes(shape, key.dtype)
        temp = {layer: _build_folder(self.layer_dir(key, layer)) for layer in layers}
        arrays: dict[int, np.ndarray] = {}
        own_io = True  # an OSError from our files, not from the build callback
        try:
            folder.mkdir(parents=True, exist_ok=True)
            remove_dead_builds(folder)
            for layer, path in temp.items():
                path.mkdir()
                arrays[layer] = _reserved_memmap(path / f"{self.layer_dir(key, layer).name}.npy",
                                                 shape, key.dtype)
            own_io = False
            started = time.perf_counter()
            details = dict(build(arrays) or {})
            seconds = time.perf_counter() - started
            own_io = True
            given = details.pop("crc32", None) or {}
            for layer in layers:
                array = arrays[layer]
                if self.flush:
                    array.flush()  # msync: a reader on another machine must find the bytes on the server
                name = self.layer_dir(key, layer).name
                crc = given[layer] if layer in given else array_crc32(array)
                meta = {"key": key.fields(layer), "shape": list(shape), "dtype": key.dtype,
                        "crc32": int(crc), "ids_digest": ids_digest, "created": time.time(),
                        "host": socket.gethostname()}
                # Not fsynced: the sidecar is verified on read like the array it describes.
                atomic_write_text(temp[layer] / f"{name}.json", json.dumps(meta, indent=1), durable=False)
            arrays.clear()  # unmapped before the folders move
            for layer in layers:
                if self._commit(key, layer, temp[layer], shape, ids_digest):
                    # Its checksum was taken from the bytes just written: no need to read them back.
                    array_path, _ = self.layer_paths(key, layer)
                    stat = array_path.stat()
                    self._verified.add((str(array_path), stat.st_size, stat.st_mtime_ns))
        except BaseException as err:
            arrays.clear()  # unmap before removing, so the space is given back
            for path in temp.values():
                shutil.rmtree(path, ignore_errors=True)
            if own_io and isinstance(err, OSError) and err.errno is not None:
                raise _write_error(err, folder, needed) from err
            raise
        self._log_build(key, layers, shape, seconds, details)

    def _commit(self, key, layer, temp: Path, shape, ids_digest) -> bool:
        """Rename the finished layer folder into place; if another builder committed first,
        keep theirs when it reads back valid (same key: the same numbers), else replace it.
        True when ours is the one in place."""
        final = self.layer_dir(key, layer)
        for _ in range(3):
            try:
                os.rename(temp, final)
                return True
            except OSError as err:
                if err.errno not in _TAKEN:
                    raise
            try:
                seen = (final / f"{final.name}.json").stat()
            except OSError:
                seen = None
            try:
                if seen is None:
                    raise EntryCorrupt("metadata missing")
                self._open_layer(key, layer, shape, ids_digest)
            except EntryCorrupt:
                self._move_aside(final, seen)
                continue
            shutil.rmtree(temp, ignore_errors=True)
            return False
        raise RuntimeError(f"store: could not commit {final}: replaced by other builders three times")

    def _log_build(self, key, layers, shape, seconds, details) -> None:
        n_images = shape[0] if shape else 0
        record = {
            "key": key.fields(layers[0]) | {"layer": list(layers)},
            "entry_id": key.entry_id,
            "seconds": round(seconds, 4),
            "images_per_s": round(n_images / seconds, 3) if seconds > 0 else None,
            "device": details.pop("device", "unknown"),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        } | details
        try:
            append_record(self.builds_log, record)
        except OSError as err:
            # The entry is complete and verified; only its line in the log is lost.
            message = (f"embedding store: could not record the build of entry {key.entry_id} in "
                       f"{self.builds_log} ({err.strerror or err})")
            log.warning(message)
            warnings.warn(message, StoreWarning, stacklevel=4)


def _build_folder(final: Path) -> Path:
    """A temp folder name next to `final`, unique across processes and machines."""
    host = safe_name(socket.gethostname())
    return final.with_name(f"{final.name}{TEMP_MARK}{os.getpid()}-{os.urandom(4).hex()}-{host}")


def _builder(path: Path) -> tuple[int, str] | None:
    """(pid, host) of a `_build_folder` name, None for any other name."""
    try:
        pid, _, host = path.name.rsplit(TEMP_MARK, 1)[1].split("-", 2)
        return int(pid), host
    except (IndexError, ValueError):
        return None


def remove_dead_builds(folder: str | os.PathLike, stale_after: float = STALE_BUILD_S) -> list[Path]:
    """Remove temp build folders in `folder` whose builder is dead: on this host with its
    process gone, or untouched for `stale_after` seconds (another machine's, or a reused pid).
    A live builder elsewhere is never touched. Returns what was removed."""
    host, now, removed = safe_name(socket.gethostname()), time.time(), []
    for path in Path(folder).glob(f"*{TEMP_MARK}*"):
        owner = _builder(path)
        if owner is None:
            continue
        pid, builder_host = owner
        try:
            age = now - path.stat().st_mtime
        except OSError:
            continue
        if (builder_host == host and not process_alive(pid)) or age > stale_after:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _reserved_memmap(path: Path, shape: tuple[int, ...], dtype: str) -> np.memmap:
    """A writable .npy memory map whose blocks are allocated on disk already."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    try:
        reserve_space(path, array.offset, array.nbytes)
    except BaseException:
        del array
        raise
    return array


def _layer_bytes(shape: tuple[int, ...], dtype: str) -> int:
    """Disk bytes of one stored layer: the .npy header and data, and its JSON sidecar."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape})
    return header.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize + _SIDECAR_BYTES


def _write_error(err: OSError, folder: Path, needed: int) -> StoreError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreFullError(folder, needed, free_bytes(folder), err.errno)
    return StoreError(err.errno, err.strerror or os.strerror(err.errno), str(folder))


def _amount(n_bytes: int) -> str:
    return f"{n_bytes:,} bytes ({n_bytes / 2**20:.1f} MiB)"
