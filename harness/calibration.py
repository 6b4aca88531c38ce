"""Device figures for `harness plan`'s time estimate: measured on this machine by a short
calibration (`measure`), or assumed for a named device (`assumed("h100")`), every figure
saying which and, when assumed, from where.

Measured (each a few seconds at most; nothing is downloaded, models are random-init: speed
does not depend on the weights):
- the forward rate (images/s) of each architecture of the plan at its tile size, through
  the extraction path itself (`extract.extract_into`, the run's batch size and device);
  other sizes are scaled by their FLOPs (harness.plan.ModelShape.flops);
- dense matrix-multiply rates (fp32, bf16) of the device;
- the exact 1-NN (`probes.knn_search`) at the plan's own search shape (cut to a few seconds'
  worth) on token-like data (clustered, float16): its rate per FLOP, everything included
  (GEMM, candidate selection, the float64 re-ranking); / the matmul rate: its overhead factor;
- one linear-probe optimiser step per (width, classes, BatchNorm) the plan fits;
- reading one image of each kind of view (decode, tile, resize, corrupt), on the plan's own
  views when it has data, else on a synthetic slice at the profile's sizes;
- S6's nearest-object search per frame pair and ROIAlign pooling per frame, on random
  boxes at the plan's objects per frame.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from harness.plan import ModelShape, Plan, model_shape

KNN_CALIBRATION_ROWS = (16384, 65536)  # (queries, base) at most: a few seconds on 2 CPU cores
# A named device's figures that cannot be measured here, with their sources.
ASSUMED = {
    "h100": {
        "device": "NVIDIA H100 SXM5 80GB (assumed figures)",
        "vit_b16_images_per_s": 6000.0,
        "vit_b16_how": (
            "assumed 6,000 images/s for ViT-B/16 at 224 px in bf16 autocast: 2x the 2,993 images/s timm measured "
            "on an RTX 4090 (AMP, batch 1024; huggingface/pytorch-image-models results/"
            "benchmark-infer-amp-nchw-pt291-cu128-4090.csv), where the H100 SXM has 6.0x the 4090's dense "
            "FP16/BF16 tensor peak (989 vs 165 TFLOPS) and 3.3x its memory bandwidth; 2x is deliberately "
            "conservative (21% of the H100's dense bf16 peak); other models and sizes at the same FLOP rate"),
        "fp32_tflops": 66.9,
        "bf16_tflops": 989.4,
        "matmul_how": ("NVIDIA H100 Tensor Core GPU datasheet, SXM5: FP32 67 TFLOPS; BF16 Tensor Core 1,979 "
                       "TFLOPS with 2:4 sparsity, 989 dense"),
        "knn_fraction_of_fp32": 0.5,
        "knn_how": ("exact 1-NN on the GPU is faiss-gpu's float32 brute force (GpuIndexFlatL2: cuBLAS SGEMM and "
                    "k-selection) then the float64 proof on the CPU: assumed at half the FP32 peak, 33 TFLOP/s; "
                    "the CPU side as measured here (or the defaults below)"),
    },
}
# The host-CPU figures used with an assumed device when nothing is measured (--no-calibrate):
# measured when this code was written, on a shared 2-core Xeon with AMX (load 2-4).
DEFAULT_CPU = {
    "read_seconds": {"cityscapes/train/clean": 1 / 238, "cityscapes/val/clean": 1 / 238,
                     "cityscapes/val/blur": 1 / 90, "cityscapes/val/noise": 1 / 96,
                     "cityscapes/val/band_noise": 1 / 72, "cityscapes/val/band_noise_literal": 1 / 74,
                     "ade20k/train/clean": 1 / 290, "ade20k/val/clean": 1 / 290, "fair1m/clean": 1 / 269,
                     "fair1m/shift": 1 / 360, "fair1m/blur": 1 / 150, "fair1m/noise": 1 / 135,
                     "bdd100k_mot/frames": 1 / 41, "mot17/frames": 1 / 22.5},
    "knn_row_seconds": 2.0e-9,
    "probe_step_seconds_per_mflop": 0.02e-3,  # one step's time per million (rows x dim x classes) ...
    "probe_step_overhead_seconds": 0.4e-3,  # ... plus this
    "pair_seconds": 60e-6,
    "pool_seconds": 150e-6,
    "how": "defaults measured when this code was written on a shared 2-core Xeon (AMX), not on this machine",
}


@dataclass
class DeviceFigures:
    device: str
    kind: str  # "cpu" or "cuda": how extraction overlaps reading (see plan.estimate)
    forward: dict[str, tuple[float, tuple[int, int]]] = field(default_factory=dict)  # arch -> (images/s, size)
    reference_flops_per_second: float | None = None  # every arch and size, when assumed
    matmul_tflops: dict[str, float] = field(default_factory=dict)
    knn_flops_per_second: float = 1e12
    knn_row_seconds: float = 0.0
    probe_steps: dict[tuple[int, int, bool], float] = field(default_factory=dict)
    probe_model: tuple[float, float] = (0.4e-3, 0.02e-3)  # overhead s, s per million row*dim*class
    read: dict[str, float] = field(default_factory=dict)  # read kind -> seconds per image
    pair_seconds: float = 0.0
    pool_seconds: float = 0.0
    how: dict[str, str] = field(default_factory=dict)  # part -> measured/assumed, and the source

    def flops_per_second(self, shape: ModelShape, size: tuple[int, int]) -> float:
        if shape.arch in self.forward:
            images_per_s, at = self.forward[shape.arch]
            return images_per_s * shape.flops(at)
        if self.reference_flops_per_second is None:
            raise KeyError(f"no forward rate for {shape.name} ({shape.arch}): calibrate or assume a device")
        return self.reference_flops_per_second

    def read_seconds(self, kind: str) -> float:
        if kind in self.read:
            return self.read[kind]
        same = [v for k, v in self.read.items() if k.split("/")[0] == kind.split("/")[0]]
        pool = same or list(self.read.values())
        return max(pool) if pool else 0.0  # the slowest known of its kind: the estimate errs long

    def probe_step_seconds(self, dim: int, classes: int, batchnorm: bool) -> float:
        if (dim, classes, batchnorm) in self.probe_steps:
            return self.probe_steps[(dim, classes, batchnorm)]
        overhead, per_mflop = self.probe_model
        return overhead + per_mflop * 1024 * dim * classes / 1e6

    def describe(self) -> list[str]:
        return [f"{part}: {how}" for part, how in self.how.items()]

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.device, "kind": self.kind,
            "forward_images_per_s": {arch: {"images_per_s": ips, "size": list(size)}
                                     for arch, (ips, size) in self.forward.items()},
            "reference_flops_per_second": self.reference_flops_per_second,
            "matmul_tflops": self.matmul_tflops,
            "knn_tflops": self.knn_flops_per_second / 1e12, "knn_row_seconds": self.knn_row_seconds,
            "knn_overhead_factor": self.knn_overhead_factor,
            "probe_step_seconds": {f"{d}x{c}{'+bn' if bn else ''}": s for (d, c, bn), s in self.probe_steps.items()},
            "read_images_per_s": {k: 1 / v for k, v in self.read.items() if v > 0},
            "pair_seconds": self.pair_seconds, "pool_seconds": self.pool_seconds, "how": self.how,
        }

    @property
    def knn_overhead_factor(self) -> float | None:
        """The k-NN's GEMM time over the device's plain matmul time for the same FLOPs."""
        reference = self.matmul_tflops.get("bf16" if self.kind == "cpu" and self.matmul_tflops.get("bf16", 0) >
                                           self.matmul_tflops.get("fp32", 0) else "fp32")
        return reference * 1e12 / self.knn_flops_per_second if reference else None


# ------------------------------------------------------------------------------ assumed
def assumed(name: str, cpu: DeviceFigures | None = None) -> DeviceFigures:
    """The figures of a named device (ASSUMED); the host-CPU parts (reading, probes, the
    k-NN's CPU side, S6's pairing) from `cpu` (a calibration here) or DEFAULT_CPU."""
    from harness.cli import UsageError
    from harness.profiles import PROFILES

    if name not in ASSUMED:
        raise UsageError(f"unknown device {name!r} to assume; known: {', '.join(ASSUMED)}")
    spec = ASSUMED[name]
    vit_b16 = model_shape("dino", PROFILES["paper"])  # ViT-B/16
    figures = DeviceFigures(
        device=spec["device"], kind="cuda",
        reference_flops_per_second=spec["vit_b16_images_per_s"] * vit_b16.flops((224, 224)),
        matmul_tflops={"fp32": spec["fp32_tflops"], "bf16": spec["bf16_tflops"]},
        knn_flops_per_second=spec["knn_fraction_of_fp32"] * spec["fp32_tflops"] * 1e12,
        how={"forward": spec["vit_b16_how"], "matmul": f"assumed: {spec['matmul_how']}", "knn": spec["knn_how"]})
    if cpu is not None:
        figures.knn_row_seconds, figures.read = cpu.knn_row_seconds, dict(cpu.read)
        figures.probe_steps, figures.probe_model = dict(cpu.probe_steps), cpu.probe_model
        figures.pair_seconds, figures.pool_seconds = cpu.pair_seconds, cpu.pool_seconds
        host = f"measured on this machine's CPU ({cpu.device})"
    else:
        d = DEFAULT_CPU
        figures.knn_row_seconds, figures.read = d["knn_row_seconds"], dict(d["read_seconds"])
        figures.probe_model = (d["probe_step_overhead_seconds"], d["probe_step_seconds_per_mflop"])
        figures.pair_seconds, figures.pool_seconds = d["pair_seconds"], d["pool_seconds"]
        host = d["how"]
    figures.how["host CPU (reading, probes, k-NN's CPU side, S6 pairing)"] = host
    return figures


# ------------------------------------------------------------------------------ measured
def measure(plan: Plan, device: str | None = None) -> DeviceFigures:
    """Calibrate this machine for `plan` (see the module docstring)."""
    import torch

    from harness.extract import _device_name, set_torch_threads

    set_torch_threads()
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    figures = DeviceFigures(device=_device_name(dev), kind=dev.type)
    _forward(plan, figures, dev)
    _matmul(figures, dev)
    _knn(plan, figures)
    _probes(plan, figures)
    _reads(plan, figures)
    _pairing(plan, figures)
    return figures


def _timed(fn, repeat: int = 1) -> float:
    """The fastest of `repeat` runs, in seconds (the machine's noise only ever adds)."""
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _forward(plan: Plan, figures: DeviceFigures, dev) -> None:
    from harness import models
    from harness.profiles import PROFILES

    untrained = PROFILES[plan.options.profile].untrained  # the smoke-width models, as the plan's shapes
    by_arch: dict[str, ModelShape] = {}
    for name in sorted({w.model for w in plan.work}):
        by_arch.setdefault(plan.shapes[name].arch, plan.shapes[name])
    for arch, shape in sorted(by_arch.items()):
        sizes = {e.size for w in plan.work if plan.shapes[w.model].arch == arch for e in w.extractions}
        size = min(sizes, key=lambda s: s[0] * s[1])  # the tiles: quick; larger sizes scaled by FLOPs
        gsd = models.FAIR1M_GSD_M if models.get_spec(shape.name).gsd_aware else None
        backbone = models.load(shape.name, random_init=True, smoke=untrained, device=dev, gsd=gsd)
        figures.forward[arch] = (_images_per_second(backbone, size), size)
    figures.how["forward"] = ("measured: " + ", ".join(f"{a} {ips:,.1f} images/s at {s[0]}x{s[1]}"
                                                      for a, (ips, s) in figures.forward.items())
                              + " (random-init, the extraction's batch size; other sizes scaled by FLOPs)")


def _images_per_second(backbone, size: tuple[int, int]) -> float:
    """Images/s of `extract.extract_into` (last layer) on one batch of the run's size."""
    from harness.extract import ArrayView, choose_batch_size, extract_into

    batch = choose_batch_size(backbone, size)
    images = np.random.default_rng(0).integers(0, 256, (batch, *size, 3), dtype=np.uint8)
    view = ArrayView("calibration", images, [str(i) for i in range(batch)])
    h, w = backbone.grid(*size)
    out = {backbone.depth: np.empty((batch, h, w, backbone.embed_dim), np.float16)}
    extract_into(backbone, ArrayView("warm-up", images[:2], ["0", "1"]), {backbone.depth: out[backbone.depth][:2]},
                 progress=False)
    return batch / _timed(lambda: extract_into(backbone, view, out, batch_size=batch, progress=False), repeat=2)


def _matmul(figures: DeviceFigures, dev) -> None:
    import torch

    n = 2048 if dev.type == "cpu" else 8192
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(n, n, device=dev).to(dtype)
        b = torch.randn(n, n, device=dev).to(dtype)

        def run(a=a, b=b):
            torch.mm(a, b)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)

        run()
        figures.matmul_tflops[name] = 2 * n**3 / _timed(run, repeat=3) / 1e12
    figures.how["matmul"] = (f"measured: torch.mm {n}x{n}: fp32 {figures.matmul_tflops['fp32']:.2f}, "
                             f"bf16 {figures.matmul_tflops['bf16']:.2f} TFLOP/s")


def _knn(plan: Plan, figures: DeviceFigures) -> None:
    """One exact 1-NN at the plan's own search shape (the one with the most FLOPs in all, cut
    to at most KNN_CALIBRATION_ROWS queries and base rows), on data shaped like patch tokens:
    clustered (neighbouring patches are near-duplicates) and rounded to the store's float16,
    which is what makes the search's exactness checks work (random Gaussian data, with no
    near-ties, measured half the real time). Its rate per FLOP is the estimate's."""
    from collections import Counter

    from harness.probes.knn import knn_search

    work = Counter()
    for w in plan.work:
        for k in w.knn:
            work[(k.queries, k.base, k.dim)] += k.flops
    q, b, dim = max(work, key=work.get) if work else (8192, 65536, 64)
    q, b = min(q, KNN_CALIBRATION_ROWS[0]), min(b, KNN_CALIBRATION_ROWS[1])
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((256, dim)).astype(np.float32)

    def tokens(n: int) -> np.ndarray:
        x = centres[rng.integers(0, len(centres), n)] + 0.15 * rng.standard_normal((n, dim)).astype(np.float32)
        return x.astype(np.float16).astype(np.float32)

    base, queries = tokens(b), tokens(q)
    knn_search(base[:1024], queries[:256], k=1)  # warm-up (thread pools, faiss)
    seconds = _timed(lambda: knn_search(base, queries, k=1))
    figures.knn_row_seconds = 0.0
    figures.knn_flops_per_second = 2.0 * q * b * dim / seconds
    factor = figures.knn_overhead_factor
    figures.how["knn"] = (f"measured: exact 1-NN of {q:,} x {b:,} x {dim} token-like float16 rows in {seconds:.2f} s: "
                          f"{figures.knn_flops_per_second / 1e12:.3f} TFLOP/s (overhead factor {factor:.2f} over "
                          f"the matmul rate)")


def _probes(plan: Plan, figures: DeviceFigures) -> None:
    import warnings

    from harness.probes.knn import MissingClassWarning
    from harness.probes.linear import LinearProbe

    triples = sorted({(p.dim, p.classes, p.batchnorm) for w in plan.work for p in w.probes})
    rng = np.random.default_rng(0)
    steps, rows = 40, 4096
    for dim, classes, bn in triples:
        x = rng.standard_normal((rows, dim)).astype(np.float32)
        y = rng.integers(0, classes, rows)

        def fit(x=x, y=y, bn=bn, classes=classes):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MissingClassWarning)
                LinearProbe(batchnorm=bn, epochs=1, min_steps=steps).fit(x, y, num_classes=classes)

        figures.probe_steps[(dim, classes, bn)] = _timed(fit, repeat=2) / steps
    if triples:
        shown = ", ".join(f"{d}x{c}{'+BN' if bn else ''} {s * 1e3:.2f} ms" for (d, c, bn), s in figures.probe_steps.items())
        figures.how["probes"] = f"measured: one optimiser step of 1,024 rows (width x classes): {shown}"


def _reads(plan: Plan, figures: DeviceFigures) -> None:
    kinds = sorted({e.read_kind for w in plan.work for e in w.extractions if e.runs}
                   | {kind for w in plan.work for kind, _ in w.extra_reads})
    samples = dict(plan.samples)
    where = "the plan's own views"
    with tempfile.TemporaryDirectory(prefix="harness-plan-") as tmp:
        if any(kind not in samples for kind in kinds):
            samples |= _synthetic_samples(plan, Path(tmp))
            where = "the plan's own views and a synthetic slice at the profile's sizes" if plan.samples else \
                "a synthetic slice at the profile's sizes (no data)"
        for kind in kinds:
            view = samples.get(kind)
            if view is None:
                continue
            n = min(len(view), 24 if "frames" in kind else 64)
            figures.read[kind] = _timed(lambda v=view, n=n: [np.asarray(v[i]) for i in range(n)]) / n
    shown = ", ".join(f"{k} {1 / v:,.0f}/s" for k, v in figures.read.items() if v > 0)
    figures.how["reading"] = f"measured on {where}, one reader thread as extraction has: {shown}"


def _synthetic_samples(plan: Plan, folder: Path) -> dict[str, Any]:
    """One view of each read kind, built with the plan's profile on a synthetic slice."""
    from harness.data.synthetic import SIZES, write_world
    from harness.plan import read_kind
    from harness.profiles import PROFILES
    from harness.views.paper import retrieval_views, segmentation_views, video_views

    profile = PROFILES[plan.options.profile]
    world = SIZES["paper" if plan.options.profile == "paper" else "smoke"].limited(2)
    world = replace(world, frames=12, mot_sequences=tuple(replace(q, frames=12) for q in world.mot_sequences))
    root = write_world(folder, seed=0, size=world, jobs=min(4, os.cpu_count() or 1))
    samples: dict[str, Any] = {}
    for dataset, full in (("cityscapes", True), ("ade20k", False)):
        seg, _ = segmentation_views(profile, dataset, root / dataset, full)
        for view in (seg.train, seg.val, *seg.corrupted.values()):
            samples.setdefault(read_kind(view), view)
    ret, _ = retrieval_views(profile, root / "fair1m")
    for view in (ret.original, *ret.transformed.values()):
        samples.setdefault(read_kind(view), view)
    for dataset in ("bdd100k_mot", "mot17"):
        views, _ = video_views(profile, dataset, root / dataset, 16)
        samples[f"{dataset}/frames"] = max(views, key=len)
    # the views read lazily: keep the slice until they are read (the caller's temp folder)
    return samples


def _pairing(plan: Plan, figures: DeviceFigures) -> None:
    from harness import analyses
    from harness.experiments.association import POOLINGS
    from harness.profiles import PROFILES

    pairings = [(w, w.pairing) for w in plan.work if w.pairing and w.pairing.pairs]
    if not pairings:
        return
    w, pairing = max(pairings, key=lambda item: item[1].pairs)
    shape = plan.shapes[w.model]
    n = max(1, round(pairing.objects_per_frame))
    rng = np.random.default_rng(0)
    frames = 60
    gaps = [g for g in PROFILES[plan.options.profile].frame_gaps if g < frames]
    objects = [analyses.FrameObjects(video=0, frame=t, vectors=rng.standard_normal((n, shape.width)).astype(np.float32),
                                     track_ids=np.arange(n), categories=np.zeros(n, np.int64)) for t in range(frames)]
    pairs = sum(frames - g for g in gaps)
    figures.pair_seconds = _timed(lambda: analyses.association_accuracy(objects, gaps), repeat=2) / pairs
    size = next(e.size for e in w.extractions)
    grid = rng.standard_normal((*shape.grid(size), shape.width)).astype(np.float32)
    x1 = rng.uniform(0, size[1] * 0.8, n)
    y1 = rng.uniform(0, size[0] * 0.8, n)
    boxes = np.stack([x1, y1, x1 + size[1] * 0.1, y1 + size[0] * 0.2], axis=1).astype(np.float32)
    calls = 20

    def pool():
        for _ in range(calls):
            for output_size, ratio in POOLINGS.values():
                analyses.pool_boxes(grid, boxes, size, output_size=output_size, sampling_ratio=ratio)

    figures.pool_seconds = _timed(pool, repeat=2) / (calls * len(POOLINGS))
    figures.how["S6 pairing"] = (f"measured: {figures.pair_seconds * 1e6:.0f} us per frame pair ({n} objects, width "
                                 f"{shape.width}), {figures.pool_seconds * 1e6:.0f} us per frame's pooling")
