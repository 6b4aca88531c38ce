"""Which device a process computes on, which precision it may extract in, and one
extraction per GPU at a time.

    device = devices.device_for_worker(worker_index)   # cuda:(i % k), or cpu without GPUs
    devices.pin(device)                                # this process's GPU (k-NN uses it too)
    devices.check_precision("bf16", device)            # PrecisionUnavailable where unsupported
    with devices.exclusive(device, lock_dir):          # one extraction per GPU, across processes
        ...

Precision. "fp32" runs every operation in IEEE float32 (TF32 switched off on CUDA, for
the convolution too: torch allows TF32 convolutions by default). "bf16" runs the forward
under bf16 autocast and is allowed only where the device computes bf16 natively: a CUDA GPU
for which torch reports bf16 support (compute capability 8.0 and up) or a CPU with bf16 dot
products (avx512_bf16 or AMX). Elsewhere bf16 would be emulated: slower than fp32 and no
use to anyone, so it is refused with a message naming the device. The paper profile's
default is fp32: bf16 noise can flip near-ties between neighbours; bf16 is the opt-in fast
GPU path, and claim X.3 checks that it agrees with fp32.

The GPU lock is a file lock per (host, GPU index) under the lock folder the caller gives
(the store's `.locks`); the host is in the name because machines sharing one cache have
GPUs of their own. Take it only where the extraction runs, inside the store's build callback
(after the entry lock): around a whole `embeddings()` call it would deadlock against the
entry lock (A holds the GPU and waits for entry E, B holds E and waits for the GPU).
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import torch
from filelock import FileLock

from harness.io import safe_name

PRECISIONS = ("fp32", "bf16")

_pinned: torch.device | None = None  # the device this process was pinned to (pin())


class PrecisionUnavailable(ValueError):
    """bf16 asked for on a device without native bf16 arithmetic (or an unknown precision)."""


def gpu_count() -> int:
    """CUDA devices torch sees here (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def device_for_worker(worker_index: int, count: int | None = None) -> torch.device:
    """Round robin: xdist worker i computes on cuda:(i % k) with k GPUs, on the CPU without."""
    count = gpu_count() if count is None else count
    if count <= 0:
        return torch.device("cpu")
    return torch.device("cuda", int(worker_index) % count)


def pin(device: str | torch.device) -> torch.device:
    """Make `device` this process's device: torch's current CUDA device, and the default of
    the k-NN (`current()`)."""
    global _pinned
    device = torch.device(device)
    if device.type == "cuda":
        device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
        torch.cuda.set_device(device)
    _pinned = device
    return device


def current() -> torch.device | None:
    """The device pinned with `pin()`, or None (then callers choose their own default)."""
    return _pinned


@functools.cache
def cpu_has_native_bf16() -> bool:
    """bf16 dot products in hardware (avx512_bf16 or AMX) and oneDNN to use them."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return torch.backends.mkldnn.is_available() and ("avx512_bf16" in flags or "amx_bf16" in flags)


def bf16_supported(device: str | torch.device) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        with torch.cuda.device(device):
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def check_precision(precision: str, device: str | torch.device) -> str:
    """`precision` if `device` can extract in it, else PrecisionUnavailable saying why."""
    if precision not in PRECISIONS:
        raise PrecisionUnavailable(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and not bf16_supported(device):
        where = describe(device)
        raise PrecisionUnavailable(
            f"bf16 extraction needs native bf16 arithmetic, which {where} lacks (CUDA: compute "
            "capability 8.0 or later; CPU: avx512_bf16 or AMX); use fp32 here")
    return precision


@contextlib.contextmanager
def fp32_exact() -> Iterator[None]:
    """IEEE float32 matmuls and convolutions on CUDA while inside (no TF32), restored after."""
    matmul = torch.backends.cuda.matmul
    conv = getattr(torch.backends.cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and conv is not None and hasattr(conv, "fp32_precision"):
        # torch >= 2.9: the new flags only (mixing them with allow_tf32 is an error there)
        saved = (matmul.fp32_precision, conv.fp32_precision)
        matmul.fp32_precision, conv.fp32_precision = "ieee", "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision, conv.fp32_precision = saved
        return
    saved_legacy = (matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, False
    try:
        yield
    finally:
        matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved_legacy


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward's numeric context for `precision` on `device`."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return fp32_exact() if device.type == "cuda" else contextlib.nullcontext()


def gpu_index(device: str | torch.device) -> int | None:
    """The CUDA index an extraction on `device` occupies; None for the CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return device.index if device.index is not None else torch.cuda.current_device()


def gpu_lock_path(lock_dir: str | os.PathLike, index: int) -> Path:
    return Path(lock_dir) / f"gpu-{safe_name(socket.gethostname())}-{index}.lock"


@contextlib.contextmanager
def exclusive(device: str | torch.device, lock_dir: str | os.PathLike) -> Iterator[None]:
    """Hold `device`'s GPU lock (no-op on the CPU): one extraction per GPU at a time across
    the processes of this machine. Take it inside the store's build callback (module docstring)."""
    index = gpu_index(device)
    if index is None:
        yield
        return
    path = gpu_lock_path(lock_dir, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path)):
        yield


def describe(device: str | torch.device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        index = gpu_index(device)
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"{device.type} ({os.cpu_count()} cores)"


def gpus() -> list[dict]:
    """Name, memory, compute capability and bf16 support of every GPU torch sees."""
    found = []
    for index in range(gpu_count()):
        props = torch.cuda.get_device_properties(index)
        found.append({"index": index, "name": props.name, "memory_gib": props.total_memory / 2**30,
                      "capability": f"{props.major}.{props.minor}",
                      "bf16": bf16_supported(torch.device("cuda", index))})
    return found
