"""The extraction core: a view of uint8 images in, per-layer patch tokens out, through the
embedding store.

    arrays = embeddings(backbone, view, store, layers=[4, 12])   # {layer: [N, h, w, D] fp16}
    arrays = embeddings(backbone, view, store, precision="bf16")  # the fast GPU path, opt-in

torch.inference_mode; the precision is explicit and part of the store's entry key: "fp32"
(the default: IEEE float32, TF32 off on CUDA) or "bf16" (autocast; refused with
`harness.devices.PrecisionUnavailable` where the device has no native bf16, see
harness.devices). The batch size is chosen to fit the device; torch threads = cores / xdist
workers; a tqdm bar shows images/s. The tokens go batch by batch into the store's
memory-mapped files, so memory holds one batch (two on a GPU, below).

On a GPU the extraction holds the GPU's lock (harness.devices.exclusive, taken inside the
store's build callback) and runs as a pipeline: the tokens of batch i are cast to float16
and checked on the GPU, copied into pinned host buffers on a side stream and written into
the memory maps by a thread, while the GPU computes batch i + 1 (`_Pipeline`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from tqdm.auto import tqdm

from harness import config, devices
from harness.models import Backbone
from harness.store import EmbeddingStore, EntryKey, crc32

log = logging.getLogger(__name__)

CPU_BATCH = 16  # beyond this CPU throughput is flat and memory only grows
MAX_CUDA_BATCH = 256
FLOAT16_MAX = float(torch.finfo(torch.float16).max)


class NonFiniteEmbeddingError(ValueError):
    """A NaN or inf in extracted tokens (also catches fp16 overflow of the stored copy)."""

    def __init__(self, model: str, layer: int, sample_id: str, index: int):
        self.model, self.layer, self.sample_id, self.index = model, layer, sample_id, index
        super().__init__(
            f"non-finite patch tokens from model {model!r} at layer {layer} for sample "
            f"{sample_id!r} (index {index}); the stored float16 copy would be NaN/inf"
        )


@runtime_checkable
class ImageView(Protocol):
    """What extraction reads: `key` names everything that determines the pixels; `ids`
    has one entry per image; all images are uint8 [H, W, 3] of one size."""

    key: str
    ids: Sequence[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray: ...


@dataclass(frozen=True)
class ArrayView:
    """An in-memory view: images [N, H, W, 3] uint8 (array or list of equal-size arrays)."""

    key: str
    images: np.ndarray | Sequence[np.ndarray]
    ids: Sequence[str]

    def __post_init__(self):
        if len(self.ids) != len(self.images):
            raise ValueError(f"ArrayView {self.key!r}: {len(self.ids)} ids for {len(self.images)} images")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError(f"ArrayView {self.key!r}: ids are not unique")
        shapes = {tuple(np.shape(image)) for image in self.images}
        dtypes = {np.asarray(image).dtype for image in self.images}
        if len(shapes) > 1 or any(len(s) != 3 or s[-1] != 3 for s in shapes) or dtypes - {np.dtype(np.uint8)}:
            raise ValueError(f"ArrayView {self.key!r}: images must be uint8 [H, W, 3] of one size, "
                             f"got shapes {sorted(shapes)[:3]} dtypes {sorted(map(str, dtypes))}")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> np.ndarray:
        return np.asarray(self.images[index])


def ids_digest(ids: Sequence[str]) -> str:
    sha = hashlib.sha256()
    for sample_id in ids:
        sha.update(str(sample_id).encode() + b"\0")
    return sha.hexdigest()[:16]


def set_torch_threads() -> int:
    """Cores / xdist workers, so `pytest -n 4` does not oversubscribe the CPU."""
    threads = config.torch_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def choose_batch_size(backbone: Backbone, image_size: tuple[int, int], precision: str = "bf16") -> int:
    """A batch that fits: on CUDA from free memory, on CPU a fixed small batch."""
    if backbone.device.type != "cuda":
        return CPU_BATCH
    h, w = backbone.grid(*image_size)
    tokens = h * w + backbone.num_prefix_tokens  # class token and registers
    # Peak activation per image in inference: attention scores (heads x tokens^2) plus
    # ~12 token-sized buffers (qkv, mlp hidden 4D, outputs of every requested layer),
    # at 2 (bf16) or 4 (fp32) bytes, with a 2x margin.
    itemsize = 2 if precision == "bf16" else 4
    per_image = 2 * itemsize * (backbone.num_heads * tokens * tokens + 24 * tokens * backbone.embed_dim)
    free, _ = torch.cuda.mem_get_info(backbone.device)
    return int(max(1, min(MAX_CUDA_BATCH, (free * 0.6) // per_image)))


@dataclass(frozen=True)
class Entry:
    """Where a view's tokens live in the store: key, layers, array shape, ids digest."""

    key: EntryKey
    layers: list[int]
    shape: tuple[int, int, int, int]
    ids_digest: str


def store_entry(backbone: Backbone, view: ImageView, layers: Sequence[int] | None = None,
                precision: str = "fp32") -> Entry:
    """The store entry `embeddings` reads or builds for these arguments (reads one image)."""
    layers = backbone.check_layers(layers)
    n_images = len(view)
    if n_images == 0:
        raise ValueError(f"view {view.key!r} is empty")
    if len(view.ids) != n_images:
        raise ValueError(f"view {view.key!r}: {len(view.ids)} ids for {n_images} images")
    first = np.asarray(view[0])
    if first.ndim != 3 or first.shape[-1] != 3:
        raise ValueError(f"view {view.key!r}: images must be [H, W, 3], got {first.shape}")
    image_size = (int(first.shape[0]), int(first.shape[1]))
    h, w = backbone.grid(*image_size)
    key = EntryKey(model=backbone.name, weights_digest=backbone.weights_digest,
                   view_key=view.key, image_size=image_size, precision=precision)
    return Entry(key, layers, (n_images, h, w, backbone.embed_dim), ids_digest(view.ids))


def is_stored(backbone: Backbone, view: ImageView, store: EmbeddingStore,
              layers: Sequence[int] | None = None, precision: str = "fp32") -> bool:
    """Whether every layer of the view is in the store and verifies (nothing is built)."""
    entry = store_entry(backbone, view, layers, precision)
    return store.read(entry.key, entry.layers, entry.shape, entry.ids_digest) is not None


def embeddings(
    backbone: Backbone,
    view: ImageView,
    store: EmbeddingStore,
    layers: Sequence[int] | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    precision: str = "fp32",
) -> dict[int, np.ndarray]:
    """{layer: read-only float16 memmap [N, h, w, D]} for the view's images, built into the
    store once (across processes) and read from it afterwards."""
    devices.check_precision(precision, backbone.device)
    entry = store_entry(backbone, view, layers, precision)

    def build(arrays: dict[int, np.ndarray]) -> dict[str, str]:
        # The GPU lock is taken here, after the entry lock: never around embeddings().
        with devices.exclusive(backbone.device, store.lock_dir):
            crcs = extract_into(backbone, view, arrays, batch_size=batch_size, progress=progress,
                                precision=precision)
        return {"device": _device_name(backbone.device)} | ({"crc32": crcs} if crcs else {})

    return store.get_or_build(entry.key, entry.layers, entry.shape, build, ids_digest=entry.ids_digest)


def extract_into(
    backbone: Backbone,
    view: ImageView,
    outputs: dict[int, np.ndarray],
    batch_size: int | None = None,
    progress: bool = True,
    precision: str = "fp32",
    pipelined: bool | None = None,
) -> dict[int, int] | None:
    """Fill outputs[layer][i] (writable [N, h, w, D]) with the tokens of view[i].
    pipelined: copy and write batch i while batch i + 1 runs (default: on CUDA); it returns
    {layer: CRC-32 of the bytes written}, the plain loop None."""
    set_torch_threads()
    layers = sorted(outputs)
    n_images = len(view)
    image_size = tuple(np.shape(view[0])[:2])
    batch_size = batch_size or choose_batch_size(backbone, image_size, precision)
    if pipelined is None:
        pipelined = backbone.device.type == "cuda"
    bar = tqdm(total=n_images, unit="img", desc=f"extract {backbone.name}", disable=not progress,
               leave=False, dynamic_ncols=True)
    with torch.inference_mode(), devices.autocast(precision, backbone.device), bar:
        if pipelined:
            with _Pipeline(backbone, view, outputs, batch_size) as pipeline:
                for start, images in _batches(view, batch_size, image_size):
                    pipeline.put(start, backbone.patch_tokens(backbone.preprocess(images), layers))
                    bar.update(len(images))
            return pipeline.crc32
        for start, images in _batches(view, batch_size, image_size):
            x = backbone.preprocess(images)
            tokens = backbone.patch_tokens(x, layers)
            for layer in layers:
                _check_finite(backbone, view, layer, tokens[layer], start)
                # one pass: cast to float16 while copying into the memory-mapped file
                torch.from_numpy(outputs[layer][start:start + len(images)]).copy_(tokens[layer])
            del tokens  # not held through the next forward: memory is one batch, not two
            bar.update(len(images))


class _Pipeline:
    """Batch i's tokens leave the device while batch i + 1 is computed.

    put(): on the compute stream, each layer is cast to float16 (the stored dtype: half the
    bytes to move) and checked for non-finite values (an inf here is also an fp16 overflow);
    a side stream copies tokens and flags into one of two pinned host slots; one writer
    thread per layer waits for that copy, raises NonFiniteEmbeddingError naming the sample,
    copies the slot into the layer's memory map and extends the layer's CRC-32 (the store
    then need not read the file back). A slot is reused only once its writes are done, so
    the device runs at most one batch ahead of the disk. On the CPU (tests) the same steps
    run with plain buffers and no streams."""

    SLOTS = 2

    def __init__(self, backbone: Backbone, view: ImageView, outputs: dict[int, np.ndarray], batch_size: int):
        self.backbone, self.view, self.outputs = backbone, view, outputs
        self.layers = sorted(outputs)
        device = backbone.device
        self.cuda = device.type == "cuda"
        self.copy_stream = torch.cuda.Stream(device) if self.cuda else None
        shape = (batch_size, *next(iter(outputs.values())).shape[1:])
        self.slots = [{layer: torch.empty(shape, dtype=torch.float16, pin_memory=self.cuda)
                       for layer in self.layers} for _ in range(self.SLOTS)]
        self.flags = [torch.empty(len(self.layers), dtype=torch.bool, pin_memory=self.cuda)
                      for _ in range(self.SLOTS)]
        self.pending: list[list[Future]] = [[] for _ in range(self.SLOTS)]
        # One thread per layer: a layer's batches are written, and its CRC extended, in order.
        self.writers = {layer: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"store-writer-{layer}")
                        for layer in self.layers}
        self.crc32 = {layer: 0 for layer in self.layers}
        self.count = 0

    def __enter__(self) -> _Pipeline:
        return self

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None:  # the oldest batch first: its failure is the one raised
                for k in range(self.SLOTS):
                    for future in self.pending[(self.count + k) % self.SLOTS]:
                        future.result()
        finally:
            for writer in self.writers.values():
                writer.shutdown(wait=True, cancel_futures=True)

    def put(self, start: int, tokens: dict[int, torch.Tensor]) -> None:
        slot = self.count % self.SLOTS
        self.count += 1
        for future in self.pending[slot]:
            future.result()  # its writes are done (or raise): the slot is free
        half = [tokens[layer].to(torch.float16) for layer in self.layers]
        bad = torch.stack([~torch.isfinite(t).all() for t in half])
        n = half[0].shape[0]
        event = None
        if self.cuda:
            compute = torch.cuda.current_stream(self.backbone.device)
            self.copy_stream.wait_stream(compute)
            with torch.cuda.stream(self.copy_stream):
                for layer, t in zip(self.layers, half, strict=True):
                    self.slots[slot][layer][:n].copy_(t, non_blocking=True)
                    t.record_stream(self.copy_stream)  # not reused by the allocator before the copy
                self.flags[slot].copy_(bad, non_blocking=True)
                bad.record_stream(self.copy_stream)
                event = torch.cuda.Event()
                event.record(self.copy_stream)
        else:
            for layer, t in zip(self.layers, half, strict=True):
                self.slots[slot][layer][:n].copy_(t)
            self.flags[slot].copy_(bad)
        del tokens, half
        self.pending[slot] = [self.writers[layer].submit(self._write, slot, index, layer, start, n, event)
                              for index, layer in enumerate(self.layers)]

    def _write(self, slot: int, index: int, layer: int, start: int, n: int, event) -> None:
        if event is not None:
            event.synchronize()
        host = self.slots[slot][layer][:n]
        if bool(self.flags[slot][index]):
            bad = ~torch.isfinite(host.flatten(1)).all(dim=1)
            first = start + int(bad.nonzero()[0, 0])
            raise NonFiniteEmbeddingError(self.backbone.name, layer, str(self.view.ids[first]), first)
        data = host.numpy()
        np.copyto(self.outputs[layer][start:start + n], data)  # numpy: no OpenMP team per thread
        self.crc32[layer] = crc32(data, self.crc32[layer])


def _batches(view: ImageView, batch_size: int, image_size) -> Iterator[tuple[int, np.ndarray]]:
    """(start, uint8 [B, H, W, 3]) batches; the next batch is read while this one runs."""
    def read(start: int) -> np.ndarray:
        stop = min(start + batch_size, len(view))
        images = np.stack([np.asarray(view[i]) for i in range(start, stop)])
        if images.dtype != np.uint8 or images.shape[1:] != (*image_size, 3):
            raise ValueError(f"view {view.key!r}: images {start}..{stop - 1} are {images.dtype} "
                             f"{images.shape[1:]}, expected uint8 {(*image_size, 3)} like image 0")
        return images

    starts = range(0, len(view), batch_size)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read, starts[0])
        for index, start in enumerate(starts):
            images = pending.result()
            if index + 1 < len(starts):
                pending = pool.submit(read, starts[index + 1])
            yield start, images


def _check_finite(backbone, view, layer: int, tokens: torch.Tensor, start: int) -> None:
    """Raise unless every value is finite and within float16 range (the stored dtype).
    One min/max reduction: NaN propagates into it, inf and fp16 overflow exceed the range
    (torch.isfinite on half tensors is many times slower on CPU)."""
    low, high = torch.aminmax(tokens)
    if bool(low >= -FLOAT16_MAX) and bool(high <= FLOAT16_MAX):
        return
    bad = ~(tokens.abs() <= FLOAT16_MAX)  # NaN compares False, so it counts as bad
    index = start + int(bad.flatten(1).any(dim=1).nonzero()[0, 0])
    raise NonFiniteEmbeddingError(backbone.name, layer, str(view.ids[index]), index)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
