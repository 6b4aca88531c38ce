"""Several GPUs on one machine, with stand-ins on the CPU: each xdist worker pinned to one GPU
(round robin) for extraction and k-NN, bf16 only where native, and a GPU never holding two
extractions at once, its lock taken inside the entry lock (no deadlock under contention)."""

from __future__ import annotations

import multiprocessing
import os
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from harness import devices, extract
from harness.extract import ArrayView, embeddings
from harness.profiles import PROFILES
from harness.run import ClaimsRun
from harness.store import EmbeddingStore


@pytest.fixture
def three_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(devices, "bf16_supported", lambda device: True)
    monkeypatch.setattr(devices, "describe", lambda device: f"fake {device}")
    monkeypatch.setattr(devices, "_pinned", None)


def test_workers_are_pinned_round_robin(three_gpus):
    assert [str(devices.device_for_worker(i)) for i in range(7)] == [
        "cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    assert devices.device_for_worker(5, count=0) == torch.device("cpu")


def test_cpu_only_machines_compute_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.gpu_count() == 0 and devices.device_for_worker(3) == torch.device("cpu")


def test_claims_run_loads_each_model_on_its_workers_gpu(three_gpus, monkeypatch, tmp_path):
    from harness import models

    loaded, recorded = [], []

    def fake_load(name, **kwargs):
        loaded.append((name, kwargs["device"]))
        return SimpleNamespace(name=name, weights_id="w", weights_digest="d", family="contrastive")

    monkeypatch.setattr(models, "load", fake_load)
    run = ClaimsRun(profile=PROFILES["smoke"], models=("dino", "mae"), cache_dir=tmp_path, worker_index=4,
                    record=lambda key, value: recorded.append((key, value)))
    run.backbone("dino")
    run.backbone("mae")
    assert loaded == [("dino", torch.device("cuda", 1)), ("mae", torch.device("cuda", 1))]
    assert devices.current() == torch.device("cuda", 1)  # the k-NN of this worker uses it too
    from harness.probes.knn import search_device

    assert search_device() == torch.device("cuda", 1)
    assert ("devices", {"worker 4": "fake cuda:1"}) in recorded and ("precision", "fp32") in recorded


def test_bf16_is_refused_where_it_is_not_native(monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(devices.PrecisionUnavailable, match="bf16 extraction needs native bf16.*use fp32 here"):
        devices.check_precision("bf16", "cpu")
    assert devices.check_precision("fp32", "cpu") == "fp32"
    with pytest.raises(devices.PrecisionUnavailable, match="unknown precision 'fp16'"):
        devices.check_precision("fp16", "cpu")
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert devices.check_precision("bf16", "cpu") == "bf16"


def test_claims_run_refuses_bf16_on_a_device_without_it(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(devices, "_pinned", None)
    run = ClaimsRun(profile=PROFILES["smoke"], models=("dino",), cache_dir=tmp_path, precision="bf16")
    with pytest.raises(devices.PrecisionUnavailable):
        run.device()


def test_fp32_exact_switches_tf32_off_and_restores_it():
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = (matmul.fp32_precision, conv.fp32_precision)
    with devices.fp32_exact():
        assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
    assert (matmul.fp32_precision, conv.fp32_precision) == before


# ------------------------------------------------------------- one extraction per GPU
def _tiny_view(key: str, n: int = 2) -> ArrayView:
    return ArrayView(key, np.zeros((n, 16, 16, 3), np.uint8), [f"{key}-{i}" for i in range(n)])


def _fake_backbone():
    return SimpleNamespace(name="fake", weights_digest="d", embed_dim=4, depth=1, device=torch.device("cuda", 0),
                           check_layers=lambda layers: [1], grid=lambda h, w: (2, 2))


def _contender(root, order, log_path, barrier):
    """Extract the views of `order` on 'GPU 0' (a stand-in: the work is a sleep); log when the
    GPU lock is held."""
    def fake_extract(backbone, view, outputs, **kwargs):
        with open(log_path, "a") as log:
            log.write(f"start {time.monotonic()} {os.getpid()} {view.key}\n")
        time.sleep(0.15)
        for array in outputs.values():
            array[:] = 1
        with open(log_path, "a") as log:
            log.write(f"end {time.monotonic()} {os.getpid()} {view.key}\n")

    extract.extract_into = fake_extract  # in this forked child only
    extract._device_name = lambda device: "fake GPU"
    devices.check_precision = lambda precision, device: precision
    store = EmbeddingStore(root)
    barrier.wait()
    for key in order:
        arrays = embeddings(_fake_backbone(), _tiny_view(key), store, progress=False)
        assert float(arrays[1].sum()) == 2 * 2 * 2 * 4


def test_a_gpu_holds_one_extraction_at_a_time_and_contention_does_not_deadlock(tmp_path):
    """Three workers on one GPU, wanting shared entries in opposite orders (the deadlock a GPU
    lock around embeddings() would make: A holds the GPU and waits for entry E, B holds E
    and waits for the GPU). All finish; the GPU-held intervals never overlap; each entry is
    built once."""
    context = multiprocessing.get_context("fork")
    orders = [["a", "b", "c"], ["c", "b", "a"], ["b", "d", "a"]]
    barrier, log = context.Barrier(len(orders)), tmp_path / "gpu.log"
    workers = [context.Process(target=_contender, args=(tmp_path / "store", order, log, barrier))
               for order in orders]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    events = sorted((float(t), kind) for kind, t, *_ in (line.split() for line in log.read_text().splitlines()))
    depth = 0
    for _, kind in events:
        depth += 1 if kind == "start" else -1
        assert depth in (0, 1)  # never two extractions inside the GPU lock
    assert sum(kind == "start" for _, kind in events) == 4  # a, b, c, d: once each
    assert (tmp_path / "store" / ".locks").glob("gpu-*-0.lock")


def test_the_gpu_lock_is_taken_inside_the_entry_lock(monkeypatch, tmp_path):
    import contextlib

    events = []
    store = EmbeddingStore(tmp_path)
    entry_lock = store._entry_lock

    @contextlib.contextmanager
    def logged_entry_lock(key, needed):
        with entry_lock(key, needed):
            events.append("entry+")
            yield
            events.append("entry-")

    @contextlib.contextmanager
    def logged_gpu(device, lock_dir):
        events.append("gpu+")
        yield
        events.append("gpu-")

    monkeypatch.setattr(store, "_entry_lock", logged_entry_lock)
    monkeypatch.setattr(devices, "exclusive", logged_gpu)
    monkeypatch.setattr(extract, "extract_into", lambda backbone, view, outputs, **kw: None)
    monkeypatch.setattr(extract, "_device_name", lambda device: "fake GPU")
    monkeypatch.setattr(devices, "check_precision", lambda precision, device: precision)
    embeddings(_fake_backbone(), _tiny_view("x"), store, progress=False)
    assert events == ["entry+", "gpu+", "gpu-", "entry-"]
    embeddings(_fake_backbone(), _tiny_view("x"), store, progress=False)  # cached: no lock at all
    assert events == ["entry+", "gpu+", "gpu-", "entry-"]


def test_gpu_lock_names_the_host_and_is_a_no_op_on_the_cpu(tmp_path):
    import socket

    with devices.exclusive("cpu", tmp_path):
        pass
    assert not list(tmp_path.iterdir())
    path = devices.gpu_lock_path(tmp_path, 2)
    assert path.name.startswith("gpu-") and path.name.endswith("-2.lock")
    assert socket.gethostname().replace(" ", "_")[:5] in path.name
