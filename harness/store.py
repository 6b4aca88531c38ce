"""The embedding cache: one fp16 memory-mapped .npy per (model + weights digest, view,
layer) with a JSON sidecar.

Layout: <root>/<model>/<entry id>/layer-NN.npy + layer-NN.json, where the entry
id hashes everything that changes the numbers except the layer (model name, weights
digest, view key, image size, dtype, harness version); the layer is in the file name and
the full key, layer included, is repeated in the JSON and checked on every read.

Safety:
- writes go to a temp file in the same folder, then os.replace; the JSON goes last, so
  an interrupted build leaves only temp files, which are never read and are cleaned up by
  the next build of that entry;
- the disk space of every array is reserved (posix_fallocate, else zeros written) before
  it is written through its memory map: a full disk is an OSError there, which becomes a
  StoreFullError naming the folder and the bytes needed, with the partial files removed;
  without the reservation it would be a SIGBUS that kills the process mid-write;
- a filelock per entry makes concurrent processes (pytest-xdist workers) build it once:
  the others wait on the lock and then read;
- a read checks the JSON key, the array's shape and dtype and a CRC32 of its bytes; an
  entry that fails is rebuilt (logged and warned), never used;
- every build appends one line to <root>/builds.jsonl (harness.io.append_record).
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
    append_record,
    atomic_write_text,
    read_records,
    remove_temp_files,
    reserve_space,
    temp_sibling,
)

log = logging.getLogger(__name__)

STORE_DTYPE = "float16"
_CRC_BLOCK = 1 << 26  # 64 MiB per crc32 call keeps memory flat on huge arrays
_SIDECAR_BYTES = 1024  # room counted for a layer's JSON (about 450 bytes written)


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


def array_crc32(array: np.ndarray) -> int:
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    crc = 0
    for start in range(0, flat.size, _CRC_BLOCK):
        crc = zlib.crc32(flat[start:start + _CRC_BLOCK], crc)
    return crc


class EntryCorrupt(Exception):
    """Internal: why a stored layer cannot be used."""


def default_store(cache_dir: str | os.PathLike | None = None) -> EmbeddingStore:
    """The store under the harness cache (--cache-dir, $VITCLAIMS_CACHE, ~/.cache/...)."""
    from harness import config

    return EmbeddingStore(config.cache_dir(cache_dir) / "embeddings")


class EmbeddingStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        # (path, size, mtime_ns) of files whose checksum this process already verified,
        # so repeated reads of one entry hash it once.
        self._verified: set[tuple[str, int, int]] = set()

    # -- paths -------------------------------------------------------------------------
    def entry_dir(self, key: EntryKey) -> Path:
        return self.root / _safe(key.model) / key.entry_id

    def layer_paths(self, key: EntryKey, layer: int) -> tuple[Path, Path]:
        folder = self.entry_dir(key)
        return folder / f"layer-{layer:02d}.npy", folder / f"layer-{layer:02d}.json"

    def lock_path(self, key: EntryKey) -> Path:
        return self.root / ".locks" / f"{key.entry_id}.lock"

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
        return details for the build log (e.g. {'device': 'cuda:0'})."""
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
        path = self.lock_path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(path))
            lock.acquire()
        except OSError as err:
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
            if not meta_path.exists():
                continue
            try:
                found[layer] = self._open_layer(key, layer, shape, ids_digest)
            except EntryCorrupt as why:
                if report:  # only under the lock, so each problem is reported once
                    message = f"embedding store: {array_path} unusable ({why}); rebuilding it"
                    log.warning(message)
                    warnings.warn(message, StoreWarning, stacklevel=4)
                    meta_path.unlink(missing_ok=True)
                    array_path.unlink(missing_ok=True)
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

    # -- building ----------------------------------------------------------------------
    def _build(self, key, layers, shape, build, ids_digest) -> None:
        folder = self.entry_dir(key)
        needed = len(layers) * _layer_bytes(shape, key.dtype)
        temp = {layer: temp_sibling(self.layer_paths(key, layer)[0]) for layer in layers}
        arrays: dict[int, np.ndarray] = {}
        unfinished: list[Path] = []  # arrays moved into place whose JSON is not written yet
        own_io = True  # an OSError from our files, not from the build callback
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # Under the entry's lock, any temp file here is from a build that was killed.
            remove_temp_files(folder, only_dead=False)
            for layer, path in temp.items():
                arrays[layer] = _reserved_memmap(path, shape, key.dtype)
            own_io = False
            started = time.perf_counter()
            details = dict(build(arrays) or {})
            seconds = time.perf_counter() - started
            own_io = True
            for layer in layers:
                # No msync: a killed process leaves its pages in the page cache, and a file
                # damaged by a crash fails its checksum and is rebuilt.
                crc = array_crc32(arrays[layer])
                array_path, meta_path = self.layer_paths(key, layer)
                unfinished.append(array_path)
                os.replace(temp[layer], array_path)
                meta = {"key": key.fields(layer), "shape": list(shape), "dtype": key.dtype,
                        "crc32": crc, "ids_digest": ids_digest, "created": time.time()}
                # Not fsynced: the sidecar is verified on read like the array it describes.
                atomic_write_text(meta_path, json.dumps(meta, indent=1), durable=False)
                unfinished.remove(array_path)
            arrays.clear()
        except BaseException as err:
            arrays.clear()  # unmap before removing, so the space is given back
            for path in [*temp.values(), *unfinished]:
                path.unlink(missing_ok=True)
            if own_io and isinstance(err, OSError) and err.errno is not None:
                raise _write_error(err, folder, needed) from err
            raise
        self._log_build(key, layers, shape, seconds, details)

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
        return StoreFullError(folder, needed, _free_bytes(folder), err.errno)
    return StoreError(err.errno, err.strerror or os.strerror(err.errno), str(folder))


def _free_bytes(folder: Path) -> int:
    for path in (folder, *folder.parents):
        if path.exists():
            return shutil.disk_usage(path).free
    return 0


def _amount(n_bytes: int) -> str:
    return f"{n_bytes:,} bytes ({n_bytes / 2**20:.1f} MiB)"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
