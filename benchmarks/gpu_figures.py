"""GPU figures, each measured in this one run on one GPU, within a time budget (default 470 s).

    python3 benchmarks/gpu_figures.py --budget-s 470     # from the repository root

Prints one table (figure, value, target, met?) and writes it as JSON to $OUT/gpu_figures.json
when $OUT is set. benchmarks/README-gpu.md says how to run it on a lent machine. Phases,
each skipped (saying so) when the time left cannot hold it:

1. extraction, ViT-B/16 (DINO's architecture at random init: speed does not depend on the
   weights), 224 px tiles held in memory, on cuda:0, bf16 then fp32: images/s of the bare
   `forward_features` (preprocessing included), of last-layer extraction into the store, and
   their ratio (targets: bf16 >= 3,000 images/s on an H100-class GPU, ratio >= 0.9); then all
   12 layers into the store (bf16, arrays flushed to disk as on a network filesystem) against
   the disk's sequential write rate, measured in the same folder the same way (write and
   fsync; target >= 0.8);
2. exact 1-NN at the S3 scale: 451,000 base x 188,000 queries x 768 (Cityscapes' patches),
   float16 MAE-like data (a few loud dimensions, 19 classes), on the GPU (torch path, or
   faiss-gpu where it sees the GPU), target <= 10 s; then the CPU path on a seeded subset of
   the queries: neighbours, distances and labels must be identical;
3. the smoke profile of the claims (`pytest claims/ -n 4 --claims-profile smoke`) on the CPU
   (CUDA_VISIBLE_DEVICES='') and on CUDA: every verdict identical; the largest difference of a
   metric row is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the GPU machine runs the checkout as it is, not installed

import numpy as np  # noqa: E402
import torch  # noqa: E402

RESULTS: list[dict] = []
DEVICE = torch.device("cuda", 0)  # --device cpu: a dry run of the code paths, figures meaningless


def row(figure: str, value, unit: str = "", target: str = "", met: bool | None = None, **extra) -> None:
    entry = {"figure": figure, "value": value, "unit": unit, "target": target, "met": met, **extra}
    RESULTS.append(entry)
    shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
    mark = "" if met is None else ("yes" if met else "NO")
    print(f"| {figure:<58} | {shown:>14} {unit:<10} | {target:<22} | {mark:<3} |", flush=True)


class Budget:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def allows(self, seconds: float, what: str) -> bool:
        if self.left() >= seconds:
            return True
        row(what, "skipped", target=f"needs ~{seconds:.0f} s, {self.left():.0f} s left")
        return False


def environment() -> dict:
    from harness import devices
    from harness.commands.doctor import check_faiss
    from harness.store import _crc32

    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": devices.describe(DEVICE),
           "bf16": devices.bf16_supported(DEVICE), "cpus": os.cpu_count(), "faiss": check_faiss()[0][2],
           "crc32": _crc32.__module__}
    if DEVICE.type == "cuda":
        props = torch.cuda.get_device_properties(DEVICE)
        env |= {"gpu_memory_gib": round(props.total_memory / 2**30, 1), "capability": f"{props.major}.{props.minor}"}
    for key, value in env.items():
        row(f"env {key}", value)
    return env


# ----------------------------------------------------------------------------- 1. extraction
def _images(n: int, size: int = 224) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def _bare(backbone, images: np.ndarray, batch: int, precision: str) -> float:
    from harness import devices

    with torch.inference_mode(), devices.autocast(precision, backbone.device):
        backbone.module.forward_features(backbone.preprocess(images[:batch]))  # warm-up
        _sync()
        started = time.perf_counter()
        for s in range(0, len(images), batch):
            backbone.module.forward_features(backbone.preprocess(images[s:s + batch]))
        _sync()
    return len(images) / (time.perf_counter() - started)


def _into_store(backbone, view, folder: Path, batch: int, precision: str, layers, flush: bool) -> tuple[float, int]:
    from harness.extract import embeddings
    from harness.store import EmbeddingStore

    store = EmbeddingStore(folder, flush=flush)
    started = time.perf_counter()
    arrays = embeddings(backbone, view, store, layers=layers, batch_size=batch, progress=False, precision=precision)
    seconds = time.perf_counter() - started
    written = sum(a.nbytes for a in arrays.values())
    del arrays
    shutil.rmtree(folder, ignore_errors=True)
    return len(view) / seconds, written / seconds


def _disk_write_rate(folder: Path, nbytes: int) -> float:
    """Sequential write of `nbytes` in 64 MiB blocks, then fsync: bytes/s."""
    block = np.random.default_rng(1).integers(0, 256, 64 * 2**20, dtype=np.uint8).tobytes()
    path = folder / "disk-rate.bin"
    started = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(max(1, nbytes // len(block))):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    rate = max(1, nbytes // len(block)) * len(block) / (time.perf_counter() - started)
    path.unlink()
    return rate


def extraction(budget: Budget, scratch: Path, n_images: int, batch: int | None) -> None:
    from harness.extract import ArrayView, choose_batch_size
    from harness.models import load

    backbone = load("dino", random_init=True, device=DEVICE)
    batch = batch or choose_batch_size(backbone, (224, 224), "bf16")
    row("ViT-B/16 batch", batch, "images")
    images = _images(n_images)
    for precision in ("bf16", "fp32"):
        n = n_images if precision == "bf16" else max(batch, n_images // 4)
        if not budget.allows(25 if precision == "bf16" else 40, f"extraction {precision}"):
            continue
        bare = _bare(backbone, images[:n], batch, precision)
        view = ArrayView(f"gpu-figures-{precision}-{n}", images[:n], [f"tile-{i}" for i in range(n)])
        stored, _ = _into_store(backbone, view, scratch / f"store-{precision}", batch, precision, [12], flush=False)
        target_rate = ">= 3,000 (H100 class)" if precision == "bf16" else ""
        row(f"{precision} bare forward_features", bare, "images/s")
        row(f"{precision} last layer into the store", stored, "images/s", target_rate,
            stored >= 3000 if precision == "bf16" else None)
        row(f"{precision} store / bare", stored / bare, "ratio", ">= 0.9", stored / bare >= 0.9)
    n12 = min(n_images, 2048)  # 2,048 x 12 layers x 196 x 768 x 2 B = 7.4 GB
    if budget.allows(60, "all 12 layers into the store (bf16)"):
        view = ArrayView(f"gpu-figures-all-{n12}", images[:n12], [f"tile-{i}" for i in range(n12)])
        disk = _disk_write_rate(scratch, n12 * 12 * 196 * 768 * 2)
        rate, written = _into_store(backbone, view, scratch / "store-all", batch, "bf16", list(range(1, 13)),
                                    flush=True)
        row("disk sequential write (write + fsync)", disk / 2**30, "GiB/s", "", None, folder=str(scratch))
        row("bf16 all 12 layers into the store (flushed)", written / 2**30, "GiB/s")
        row("bf16 all 12 layers into the store", rate, "images/s")
        row("all-12-layer capture / disk write", written / disk, "ratio", ">= 0.8", written / disk >= 0.8)
    del backbone
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- 2. exact 1-NN
def _s3_features(n_base: int, n_query: int, dim: int = 768, classes: int = 19):
    """MAE-like float16 patch features with labels: class centres, a few loud dimensions."""
    g = torch.Generator(device=DEVICE).manual_seed(0)
    scale = torch.ones(dim, device=DEVICE)
    scale[:8] = 30.0
    centres = torch.randn(classes, dim, device=DEVICE, generator=g) * 2.0

    def draw(n):
        labels = torch.randint(0, classes, (n,), device=DEVICE, generator=g)
        x = (centres[labels] + torch.randn(n, dim, device=DEVICE, generator=g)) * scale
        return x.half().cpu().numpy(), labels.cpu().numpy()

    return (*draw(n_base), *draw(n_query))


def exact_knn(budget: Budget, n_base: int, n_query: int, subset: int) -> None:
    import harness.probes.knn as knn

    if not budget.allows(90, "exact 1-NN at the S3 scale"):
        return
    base, base_y, query, query_y = _s3_features(n_base, n_query)
    knn.STAGE_COUNTS.clear()
    _sync()
    started = time.perf_counter()
    dist, idx = knn.knn_search(base, query, k=1, device=DEVICE)
    seconds = time.perf_counter() - started
    stages = dict(knn.STAGE_COUNTS)
    row(f"exact 1-NN on the GPU ({n_query:,} x {n_base:,} x 768)", seconds, "s", "<= 10 s", seconds <= 10,
        stages=stages)
    row("  settled by stage", json.dumps(stages))
    if not budget.allows(60, "exact 1-NN on the CPU (subset)"):
        return
    pick = np.sort(np.random.default_rng(2).choice(n_query, size=subset, replace=False))
    knn.STAGE_COUNTS.clear()
    started = time.perf_counter()
    cpu_dist, cpu_idx = knn.knn_search(base, query[pick], k=1, device="cpu")
    cpu_seconds = time.perf_counter() - started
    same_idx = bool(np.array_equal(cpu_idx, idx[pick]))
    same_dist = bool(np.array_equal(cpu_dist, dist[pick]))
    same_labels = bool(np.array_equal(base_y[cpu_idx[:, 0]], base_y[idx[pick, 0]]))
    row(f"CPU exact path on {subset:,} queries", cpu_seconds, "s", "", None, stages=dict(knn.STAGE_COUNTS))
    row("GPU labels identical to the CPU exact path", same_labels, "", "identical", same_labels)
    row("GPU neighbours and distances identical", same_idx and same_dist, "", "identical", same_idx and same_dist)
    row("1-NN label accuracy (sanity)", float(np.mean(base_y[idx[:, 0]] == query_y)), "")
    del base, query


# ----------------------------------------------------------------------------- 3. smoke claims
def _smoke(cache: Path, report: Path, gpu: bool, timeout: float) -> tuple[dict, float]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               HF_HUB_OFFLINE="1")
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    command = [sys.executable, "-m", "pytest", "claims/", "-n", "4", "-q", "-p", "no:cacheprovider",
               "--claims-profile", "smoke", "--claims-cache-dir", str(cache), "--claims-report-dir", str(report)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, timeout=timeout, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    path = report / "claims.json"
    if not path.is_file():
        raise RuntimeError(f"no claims.json from the {'CUDA' if gpu else 'CPU'} smoke run (exit {done.returncode}):"
                           f"\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads(path.read_text()), seconds


def _verdicts(report: dict) -> dict[str, str]:
    return {claim["id"]: claim.get("verdict") for claim in report.get("claims", [])}


def _rows(report: dict) -> dict:
    from harness.measurements import row_key

    return {row_key(r): r["value"] for r in report.get("rows", []) if isinstance(r, dict) and "value" in r}


def smoke(budget: Budget, scratch: Path) -> None:
    from harness.data import synthetic

    if DEVICE.type != "cuda":
        row("smoke profile, CPU and CUDA", "skipped", target="needs a GPU")
        return
    if not budget.allows(150, "smoke profile, CPU and CUDA"):
        return
    world = synthetic.ensure_world(scratch / "world-cache")
    runs = {}
    for name, gpu in (("cpu", False), ("cuda", True)):
        cache = scratch / f"smoke-{name}"
        (cache / "synthetic-world").mkdir(parents=True, exist_ok=True)
        (cache / "synthetic-world" / world.name).symlink_to(world, target_is_directory=True)
        try:
            runs[name], seconds = _smoke(cache, scratch / f"report-{name}", gpu, timeout=max(30, budget.left() - 10))
        except (subprocess.TimeoutExpired, RuntimeError) as err:
            row(f"smoke claims on {name}", "failed", target=str(err).splitlines()[0][:60])
            return
        row(f"smoke claims on {name.upper()} (pytest -n 4)", seconds, "s")
    cpu, cuda = _verdicts(runs["cpu"]), _verdicts(runs["cuda"])
    differing = sorted(k for k in cpu.keys() | cuda.keys() if cpu.get(k) != cuda.get(k))
    row("smoke verdicts identical on CPU and CUDA", not differing, f"{len(cpu)} claims", "identical",
        not differing, differing=differing)
    a, b = _rows(runs["cpu"]), _rows(runs["cuda"])
    common = [k for k in a.keys() & b.keys() if isinstance(a[k], (int, float)) and isinstance(b[k], (int, float))]
    diffs = [abs(a[k] - b[k]) for k in common if np.isfinite(a[k]) and np.isfinite(b[k])]
    row("smoke metric rows: largest |CPU - CUDA|", max(diffs, default=0.0), f"{len(common)} rows")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=470.0, help="stop starting phases after this (s)")
    parser.add_argument("--images", type=int, default=8192, help="tiles for the extraction figures")
    parser.add_argument("--batch", type=int, help="extraction batch (default: chosen to fit)")
    parser.add_argument("--base", type=int, default=451_000, help="1-NN base rows (S3: Cityscapes train patches)")
    parser.add_argument("--queries", type=int, default=188_000, help="1-NN queries (S3: val patches)")
    parser.add_argument("--cpu-subset", type=int, default=2000, help="queries checked against the CPU path")
    parser.add_argument("--scratch", help="folder for stores and the disk figure (default: a temp folder "
                                          "in the repository, on the machine's disk)")
    parser.add_argument("--only", nargs="+", choices=("extraction", "knn", "smoke"), help="run only these phases")
    parser.add_argument("--device", default="cuda:0", help="cuda:0 (default); cpu: a dry run of the code paths")
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        print("gpu_figures: torch sees no CUDA device here; run it on a GPU machine (benchmarks/README-gpu.md)")
        return 2
    budget = Budget(args.budget_s)
    scratch = Path(tempfile.mkdtemp(prefix="gpu-figures-", dir=args.scratch or ROOT))
    print(f"| {'figure':<58} | {'value':>14} {'unit':<10} | {'target':<22} | met |")
    print(f"|{'-' * 60}|{'-' * 27}|{'-' * 24}|-----|")
    phases = args.only or ["extraction", "knn", "smoke"]
    try:
        environment()
        for phase in phases:
            try:
                if phase == "extraction":
                    extraction(budget, scratch, args.images, args.batch)
                elif phase == "knn":
                    exact_knn(budget, args.base, args.queries, args.cpu_subset)
                else:
                    smoke(budget, scratch)
            except Exception as err:  # noqa: BLE001 - one phase failing still reports the others
                row(f"{phase} failed", type(err).__name__, target=str(err).splitlines()[0][:60] if str(err) else "")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        out = os.environ.get("OUT")
        if out:
            Path(out, "gpu_figures.json").write_text(json.dumps(RESULTS, indent=1, default=str))
    unmet = [r["figure"] for r in RESULTS if r["met"] is False]
    print(f"\n{len(RESULTS)} figures; targets not met: {', '.join(unmet) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
