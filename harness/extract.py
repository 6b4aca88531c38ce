"""The extraction core: a view of uint8 images in, per-layer patch tokens out, through the
embedding store.

    arrays = embeddings(backbone, view, store, layers=[4, 12])   # {layer: [N, h, w, D] fp16}

torch.inference_mode; bf16 autocast on CUDA, fp32 on CPU; the batch size is chosen to fit
the device; torch threads = cores / xdist workers; a tqdm bar shows images/s. The tokens
go batch by batch into the store's memory-mapped files, so memory holds one batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from tqdm.auto import tqdm

from harness import config
from harness.models import Backbone
from harness.store import EmbeddingStore, EntryKey

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


def choose_batch_size(backbone: Backbone, image_size: tuple[int, int]) -> int:
    """A batch that fits: on CUDA from free memory, on CPU a fixed small batch."""
    if backbone.device.type != "cuda":
        return CPU_BATCH
    h, w = backbone.grid(*image_size)
    tokens = h * w + backbone.num_prefix_tokens  # class token and registers
    # Peak activation per image in inference: attention scores (heads x tokens^2) plus
    # ~12 token-sized buffers (qkv, mlp hidden 4D, outputs of every requested layer),
    # in bf16, with a 2x margin.
    per_image = 2 * 2 * (backbone.num_heads * tokens * tokens + 24 * tokens * backbone.embed_dim)
    free, _ = torch.cuda.mem_get_info(backbone.device)
    return int(max(1, min(MAX_CUDA_BATCH, (free * 0.6) // per_image)))


def embeddings(
    backbone: Backbone,
    view: ImageView,
    store: EmbeddingStore,
    layers: Sequence[int] | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> dict[int, np.ndarray]:
    """{layer: read-only float16 memmap [N, h, w, D]} for the view's images, built into the
    store once (across processes) and read from it afterwards."""
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
                   view_key=view.key, image_size=image_size)
    shape = (n_images, h, w, backbone.embed_dim)

    def build(arrays: dict[int, np.ndarray]) -> dict[str, str]:
        extract_into(backbone, view, arrays, batch_size=batch_size, progress=progress)
        return {"device": _device_name(backbone.device)}

    return store.get_or_build(key, layers, shape, build, ids_digest=ids_digest(view.ids))


def extract_into(
    backbone: Backbone,
    view: ImageView,
    outputs: dict[int, np.ndarray],
    batch_size: int | None = None,
    progress: bool = True,
) -> None:
    """Fill outputs[layer][i] (writable [N, h, w, D]) with the tokens of view[i]."""
    set_torch_threads()
    layers = sorted(outputs)
    n_images = len(view)
    image_size = tuple(np.shape(view[0])[:2])
    batch_size = batch_size or choose_batch_size(backbone, image_size)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if backbone.device.type == "cuda"
                else contextlib.nullcontext())
    bar = tqdm(total=n_images, unit="img", desc=f"extract {backbone.name}", disable=not progress,
               leave=False, dynamic_ncols=True)
    with torch.inference_mode(), autocast, bar:
        for start, images in _batches(view, batch_size, image_size):
            x = backbone.preprocess(images)
            tokens = backbone.patch_tokens(x, layers)
            for layer in layers:
                _check_finite(backbone, view, layer, tokens[layer], start)
                # one pass: cast to float16 while copying into the memory-mapped file
                torch.from_numpy(outputs[layer][start:start + len(images)]).copy_(tokens[layer])
            del tokens  # not held through the next forward: memory is one batch, not two
            bar.update(len(images))


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
