"""Transient patch tokens: extracted exactly as the store's are (`extract.extract_into`), into
memory-mapped scratch files the store never sees, for embeddings one section reads once
(the layer sweep's intermediate layers, corrupted and transformed copies, video frames).

    scratch = Scratch(cache_dir / "scratch")
    arrays = scratch.embed(backbone, view, layers=[1, 2, 3], tiles=mask)  # {layer: [n, h, w, D] fp16}
    ...                                  # read them like the store's arrays
    del arrays                           # the disk space is back

Each layer is a float16 .npy memory map whose disk blocks are reserved before it is written
(a full disk is a StoreFullError naming the folder, never a SIGBUS), and whose file is
unlinked as soon as it is filled: the array stays readable, and the space returns when the
last reference to it goes (or the process ends, however it ends). A file left by a process
killed mid-extraction carries its pid in its name (`harness.io.temp_sibling`) and is removed
by the next Scratch on that folder. `live_bytes` / `peak_bytes` count what is held.

`layer_groups` cuts a layer sweep into groups whose scratch fits a byte budget; the claims
run and `harness plan` both use it, so the plan's scratch peak is the run's.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from harness.io import free_bytes, remove_temp_files, reserve_space, safe_name, temp_sibling
from harness.store import StoreError, StoreFullError

SCRATCH_DTYPE = np.float16  # the store's dtype: a transient layer holds the same numbers
# Scratch for one group of a layer sweep (per process: under `-n 4`, four workers may each
# hold one). Paper profile, ViT-B/16: 983 MB a layer (2,304 + 960 tiles), so groups of 4.
SCRATCH_BUDGET_BYTES = 4 * 2**30


def layer_groups(layers: Sequence[int], bytes_per_layer: int, budget: int = SCRATCH_BUDGET_BYTES) -> list[list[int]]:
    """`layers` (ascending) in consecutive groups of as many layers as fit `budget` bytes of
    scratch (at least one each). A group is one forward pass that stops at its last layer."""
    per_group = max(1, int(budget // max(1, bytes_per_layer)))
    ordered = sorted(layers)
    return [ordered[i:i + per_group] for i in range(0, len(ordered), per_group)]


def scratch_bytes(n_images: int, grid: tuple[int, int], width: int) -> int:
    """Bytes of one transient layer of `n_images` on a `grid` of `width`-wide tokens."""
    return int(n_images) * int(grid[0]) * int(grid[1]) * int(width) * np.dtype(SCRATCH_DTYPE).itemsize


class Selection:
    """The images `index` of a view, as a view of its own (an `extract.ImageView`)."""

    def __init__(self, view, index: Sequence[int]):
        self.view, self.index = view, np.asarray(index, dtype=np.int64)
        self.ids = [view.ids[i] for i in self.index]
        digest = hashlib.sha256(self.index.tobytes()).hexdigest()[:12]
        self.key = f"{view.key}/selection-{digest}"

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.view[int(self.index[i])]


class Scratch:
    """Transient extraction under `folder` (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder).expanduser()
        self.live_bytes = 0
        self.peak_bytes = 0
        self.written_bytes = 0
        self._lock = threading.Lock()
        self._cleaned = False

    def embed(self, backbone, view, layers: Sequence[int], tiles: np.ndarray | None = None,
              batch_size: int | None = None, precision: str = "fp32") -> dict[int, np.ndarray]:
        """{layer: read-only float16 [n, h, w, D]} for `view`'s images (those where the
        boolean mask `tiles` is set, in order, when given), extracted now in `precision`."""
        from harness.extract import extract_into

        layers = backbone.check_layers(layers)
        source = view if tiles is None else Selection(view, np.flatnonzero(np.asarray(tiles)))
        if len(source) == 0:
            raise ValueError(f"view {view.key!r}: no images selected to extract")
        first = np.asarray(source[0])
        h, w = backbone.grid(*first.shape[:2])
        shape = (len(source), h, w, backbone.embed_dim)
        arrays = self._allocate(backbone.name, layers, shape)
        try:
            extract_into(backbone, source, arrays, batch_size=batch_size, progress=False, precision=precision)
        except BaseException:
            arrays.clear()
            raise
        for array in arrays.values():
            array.flags.writeable = False
        return arrays

    def _allocate(self, model: str, layers: list[int], shape: tuple[int, ...]) -> dict[int, np.ndarray]:
        self._prepare()
        arrays: dict[int, np.ndarray] = {}
        paths: list[Path] = []
        try:
            for layer in layers:
                path = temp_sibling(self.folder / f"{safe_name(model)}-layer-{layer:02d}.npy")
                paths.append(path)
                array = np.lib.format.open_memmap(path, mode="w+", dtype=SCRATCH_DTYPE, shape=shape)
                reserve_space(path, array.offset, array.nbytes)
                self._hold(array)
                arrays[layer] = array
        except OSError as err:
            arrays.clear()
            raise self._error(err, len(layers) * scratch_bytes(shape[0], shape[1:3], shape[3])) from err
        finally:
            # The maps keep the data; the names go now, so nothing outlives the arrays.
            for path in paths:
                path.unlink(missing_ok=True)
        return arrays

    def _prepare(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise self._error(err, 0) from err
        if not self._cleaned:
            remove_temp_files(self.folder, only_dead=True)  # files of killed extractions
            self._cleaned = True

    def _hold(self, array: np.memmap) -> None:
        nbytes = int(array.nbytes)
        with self._lock:
            self.live_bytes += nbytes
            self.written_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        # The mapping (shared by every view of the array) is unmapped when the last one goes.
        weakref.finalize(array._mmap, self._release, nbytes)

    def _release(self, nbytes: int) -> None:
        with self._lock:
            self.live_bytes -= nbytes

    def _error(self, err: OSError, needed: int) -> OSError:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            return ScratchFullError(self.folder, needed, free_bytes(self.folder), err.errno)
        if err.errno is None:
            return err
        return StoreError(err.errno, err.strerror or os.strerror(err.errno), str(self.folder))


class ScratchFullError(StoreFullError):
    """No room for transient embeddings: a StoreFullError (the run treats both alike)."""

    def __str__(self) -> str:
        from harness.store import _amount

        return (f"no space for transient embeddings in {self.filename}: {_amount(self.needed)} needed, "
                f"{_amount(self.free)} free ({self.strerror}); free some space there or choose "
                "another --claims-cache-dir")
