"""What a claims run will do and what it will cost, before it runs (`harness plan`).

    plan = build_plan(PlanOptions(profile="paper", cache_dir=...))      # counts and bytes
    estimate(plan, calibration.measure(plan))                           # times
    check_room(run_options)       # the claims run's pre-flight: raises when the store won't fit

Per (model, section) of the run (`harness.run.ClaimsRun`): the source images and views, the
images fed to the model and the forward passes (a layer-sweep group stops at its last
layer), the patches, the bytes persisted in the embedding store (exact: the .npy files the
store writes, plus the sidecars it reserves room for) and written transiently to scratch,
every exact 1-NN search (queries x base x dim), every linear-probe fit (rows, optimiser
steps), the association pairings, and what of it the store already holds.

The counts come from the same view builders and rules as the run's: `views.paper`'s
builders and `persisted_layers`, `experiments.segmentation.sweep_groups`, the experiments'
model lists and constants, `probes.LinearProbe`'s step rule. The structure of each
experiment (which k-NN and fits it runs) is mirrored here, once per section, and checked
against the real run: tests/test_plan_work.py runs the sections on a slice and compares
every search, fit and extraction with the plan's. A change to an experiment that this file
does not follow fails there.

Counts come from the data when there is data (a data root, or the smoke profile's synthetic
world): exact. Without a data root they come from the nominal sizes (`NOMINAL`: the paper's
subset sizes and the datasets' image sizes and counts, as `harness synth --scale paper`
writes them), with stated assumptions for what only the labels can say (the share of
labelled patches, of patches on FAIR1M objects, the objects per video frame).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from harness import config
from harness.io import free_bytes, safe_name  # free_bytes: patched by tests through this module
from harness.profiles import PROFILES, Profile, paper_linear, scaled_m
from harness.scratch import scratch_bytes
from harness.store import STORE_DTYPE, StoreFullError

SIDECAR_BYTES = 1024  # the store reserves this much for each layer's JSON (about 450 written)
# The sections of a claims run, in the order the claims first read them (S3, S4, S5, S6):
# a store entry is extracted by the first section that reads it.
SECTIONS = ("segmentation/cityscapes", "segmentation/ade20k", "overlap", "reconstruction", "retrieval/fair1m",
            "association/bdd100k_mot", "association/mot17")
SECTION_DATASETS = {"segmentation/cityscapes": ("cityscapes",), "segmentation/ade20k": ("ade20k",),
                    "overlap": ("cityscapes", "ade20k", "fair1m"), "reconstruction": ("cityscapes",),
                    "retrieval/fair1m": ("fair1m",), "association/bdd100k_mot": ("bdd100k_mot",),
                    "association/mot17": ("mot17",)}
GB = 1e9


# ------------------------------------------------------------------------------ the work
@dataclass(frozen=True)
class ModelShape:
    """What the plan needs to know about a model, from its spec (no weights loaded)."""

    name: str
    family: str
    patch: int
    depth: int
    width: int
    heads: int
    prefix: int
    arch: str  # models with one arch cost the same per image (the calibration's unit)

    def grid(self, size: tuple[int, int]) -> tuple[int, int]:
        return size[0] // self.patch, size[1] // self.patch

    def flops(self, size: tuple[int, int], layers: int | None = None) -> float:
        """Forward FLOPs of one image up to block `layers` (all by default): patch
        embedding, then per block 2 T w^2 (4 + 2 x 4) for the projections and MLP and
        4 T^2 w for attention, T the tokens (patches and prefix)."""
        h, w = self.grid(size)
        tokens = h * w + self.prefix
        embed = 2 * h * w * 3 * self.patch**2 * self.width
        block = tokens * self.width**2 * 24 + 4 * tokens**2 * self.width
        return embed + block * (self.depth if layers is None else layers)


def model_shape(name: str, profile: Profile) -> ModelShape:
    from harness.models import get_spec
    from harness.models.loader import SMOKE_EMBED_DIM, SMOKE_NUM_HEADS

    spec = get_spec(name)
    width, heads = (SMOKE_EMBED_DIM, SMOKE_NUM_HEADS) if profile.untrained else (spec.embed_dim, spec.num_heads)
    arch = f"{spec.arch_family}:{spec.timm_arch}:p{spec.patch_size}:d{spec.depth}:w{width}"
    return ModelShape(name, spec.family, spec.patch_size, spec.depth, width, heads, spec.num_prefix_tokens, arch)


@dataclass
class Extraction:
    """One embed call of a section for one model: the view's images through the model."""

    view: str  # the view key (nominal: a description standing for it)
    read_kind: str  # what reading one image costs: dataset, split and corruption
    images: int
    size: tuple[int, int]  # H x W fed to the model
    grid: tuple[int, int]
    width: int
    layers: tuple[int, ...]
    persisted: bool  # into the store (else transient, into scratch)
    blocks: int  # blocks run: the last layer asked for (a forward pass stops there)
    cached: bool = False  # a persisted entry the store already holds: no extraction
    first: bool = True  # False: an earlier section extracts the same entry
    nominal: bool = False  # counted from nominal sizes: `view` describes the view, it is not its key

    @property
    def patches(self) -> int:
        return self.images * self.grid[0] * self.grid[1]

    @property
    def bytes(self) -> int:
        """Bytes of the arrays: the store's .npy files (header and data), exactly; or the
        scratch files'."""
        if self.persisted:
            return len(self.layers) * npy_bytes((self.images, *self.grid, self.width), STORE_DTYPE)
        return len(self.layers) * scratch_bytes(self.images, self.grid, self.width)

    @property
    def sidecar_bytes(self) -> int:
        return len(self.layers) * SIDECAR_BYTES if self.persisted else 0

    @property
    def runs(self) -> bool:
        """Whether the run extracts it (not held by the store, not extracted earlier)."""
        return self.first and not self.cached


@dataclass(frozen=True)
class Knn:
    queries: int
    base: int
    dim: int
    what: str

    @property
    def flops(self) -> float:
        return 2.0 * self.queries * self.base * self.dim


@dataclass(frozen=True)
class ProbeFit:
    rows: int
    dim: int
    classes: int
    batchnorm: bool
    what: str

    @property
    def steps(self) -> int:
        return probe_steps(self.rows)


@dataclass
class Pairing:
    """S6: pooled boxes (one ROIAlign call per frame and pooling) and nearest-object
    searches between frames t and t + D (one per frame pair and pooling)."""

    pooled_frames: int = 0
    pairs: int = 0
    flops: float = 0.0
    objects_per_frame: float = 0.0


@dataclass
class SectionWork:
    section: str
    model: str
    source_images: int = 0
    extractions: list[Extraction] = field(default_factory=list)
    knn: list[Knn] = field(default_factory=list)
    probes: list[ProbeFit] = field(default_factory=list)
    pairing: Pairing | None = None
    extra_forward: float = 0.0  # full forward passes outside extraction (S4.8's encoder and decoder) ...
    extra_size: tuple[int, int] = (224, 224)  # ... of images of this size
    extra_reads: list[tuple[str, int]] = field(default_factory=list)  # (read kind, images) read outside extraction
    scratch_peak: int = 0
    time: dict[str, float] = field(default_factory=dict)  # seconds by part, from `estimate`

    @property
    def views(self) -> int:
        return len({e.view for e in self.extractions})

    @property
    def images(self) -> int:
        return sum(e.images for e in self.extractions)

    def forward_passes(self, shape: ModelShape) -> float:
        """Full-depth forward passes of the images this section extracts (a pass that stops
        at block L counts L/depth of one), plus S4.8's."""
        return sum(e.images * shape.flops(e.size, e.blocks) / shape.flops(e.size)
                   for e in self.extractions if e.runs) + self.extra_forward

    @property
    def patches(self) -> int:
        return sum(e.patches for e in self.extractions if e.runs)

    @property
    def persisted_bytes(self) -> int:
        return sum(e.bytes + e.sidecar_bytes for e in self.extractions if e.persisted and e.first)

    @property
    def bytes_to_write(self) -> int:
        return sum(e.bytes + e.sidecar_bytes for e in self.extractions if e.persisted and e.runs)

    @property
    def cached_bytes(self) -> int:
        return sum(e.bytes + e.sidecar_bytes for e in self.extractions if e.persisted and e.first and e.cached)

    @property
    def transient_bytes(self) -> int:
        return sum(e.bytes for e in self.extractions if not e.persisted)

    @property
    def knn_flops(self) -> float:
        return sum(k.flops for k in self.knn)

    @property
    def probe_steps(self) -> int:
        return sum(p.steps for p in self.probes)


def npy_bytes(shape: Sequence[int], dtype) -> int:
    """Size of the .npy file numpy writes for an array (header and data): the file the
    store's memory map is."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
        "shape": tuple(int(s) for s in shape)})
    return header.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize


def probe_steps(rows: int) -> int:
    """Optimiser steps of a LinearProbe fit on `rows` rows (its epoch and minimum-step rule)."""
    from harness.probes.linear import LinearProbe

    probe = LinearProbe()
    per_epoch = math.ceil(rows / probe.batch_size)
    return max(probe.epochs, math.ceil(probe.min_steps / max(per_epoch, 1))) * per_epoch


# ------------------------------------------------------------------------------ options
@dataclass
class PlanOptions:
    profile: str = "paper"
    models: tuple[str, ...] | None = None  # None: the claims run's default
    data_root: Path | None = None
    cache_dir: Path | None = None
    train_seeds: int = 1
    added: dict[str, str] = field(default_factory=dict)  # backbones added by spec: name -> family
    limit: int | None = None  # the first N source images / videos of each subset (as harness extract)
    sections: tuple[str, ...] | None = None  # prefixes of SECTIONS; None: all
    workers: int = 4  # pytest -n
    precision: str = "fp32"  # the store entries of this precision are the run's

    @classmethod
    def from_run_options(cls, options) -> PlanOptions:
        """From the claims run's options (plugin.options.RunOptions or anything like it)."""
        return cls(profile=options.profile, models=tuple(options.models),
                   data_root=Path(options.data_root) if getattr(options, "data_root", None) else None,
                   cache_dir=Path(options.cache_dir), train_seeds=int(getattr(options, "train_seeds", 1) or 1),
                   added=dict(getattr(options, "added", {}) or {}),
                   workers=int(getattr(options, "workers", 0) or config.xdist_workers()),
                   precision=str(getattr(options, "precision", "fp32") or "fp32"))

    def resolved(self) -> PlanOptions:
        from harness.cli import UsageError

        if self.profile not in PROFILES:
            raise UsageError(f"unknown profile {self.profile!r}; expected one of {', '.join(PROFILES)}")
        added = dict(self.added)
        profile = PROFILES[self.profile]
        if profile.extra_models:  # the profile's own added backbones, as the claims run adds them
            from harness.models import add_models

            added |= {spec.name: spec.family for spec in add_models(list(profile.extra_models), [])}
        models = self.models
        if models is None:
            from harness.run import BEYOND_THE_PAPER, PAPER_MODELS

            models = (*PAPER_MODELS, *BEYOND_THE_PAPER, *added)
        if self.sections:
            unknown = [s for s in self.sections if not any(name.startswith(s) for name in SECTIONS)]
            if unknown:
                raise UsageError(f"unknown section {unknown[0]!r}; sections: {', '.join(SECTIONS)}")
        return replace(self, models=tuple(models), added=added,
                       data_root=Path(self.data_root).expanduser() if self.data_root else None,
                       cache_dir=config.cache_dir(self.cache_dir))

    def wants(self, section: str) -> bool:
        return not self.sections or any(section.startswith(s) for s in self.sections)


# ------------------------------------------------------------------------------ the plan
@dataclass
class Plan:
    options: PlanOptions
    shapes: dict[str, ModelShape]
    work: list[SectionWork]
    counts_from: dict[str, str]  # dataset -> 'data: <root>' | 'nominal: ...' | 'unavailable: ...'
    assumptions: list[str]
    store_root: Path
    scratch_root: Path
    free_bytes: int
    device: Any = None  # calibration.DeviceFigures once estimated
    samples: dict[str, Any] = field(default_factory=dict, repr=False)  # read kind -> a view (from data)

    @property
    def persisted_bytes(self) -> int:
        return sum(w.persisted_bytes for w in self.work)

    @property
    def cached_bytes(self) -> int:
        return sum(w.cached_bytes for w in self.work)

    @property
    def bytes_to_write(self) -> int:
        return sum(w.bytes_to_write for w in self.work)

    @property
    def scratch_peak(self) -> int:
        return max((w.scratch_peak for w in self.work), default=0)

    @property
    def room_needed(self) -> int:
        """Bytes the run needs free on the cache's filesystem: the store's new entries and
        one scratch peak per worker."""
        return self.bytes_to_write + self.scratch_peak * max(1, self.options.workers)

    @property
    def fits(self) -> bool:
        return self.room_needed <= self.free_bytes

    def totals(self) -> dict[str, Any]:
        out = {
            "source_images": sum(w.source_images for w in self.work),
            "views": sum(w.views for w in self.work),
            "images": sum(w.images for w in self.work),
            "forward_passes": sum(w.forward_passes(self.shapes[w.model]) for w in self.work),
            "patches": sum(w.patches for w in self.work),
            "persisted_bytes": self.persisted_bytes,
            "cached_bytes": self.cached_bytes,
            "bytes_to_write": self.bytes_to_write,
            "transient_bytes": sum(w.transient_bytes for w in self.work),
            "scratch_peak_bytes": self.scratch_peak,
            "knn_searches": sum(len(w.knn) for w in self.work),
            "knn_flops": sum(w.knn_flops for w in self.work),
            "probe_fits": sum(len(w.probes) for w in self.work),
            "probe_steps": sum(w.probe_steps for w in self.work),
            "free_bytes": self.free_bytes,
            "room_needed_bytes": self.room_needed,
            "fits": self.fits,
        }
        if self.device is not None:
            parts = {}
            for w in self.work:
                for part, seconds in w.time.items():
                    parts[part] = parts.get(part, 0.0) + seconds
            out["seconds"] = parts
            out["serial_seconds"] = sum(v for k, v in parts.items() if k != "gpu_busy")
            out["wall_seconds"] = wall_seconds(self)
        return out

    def as_dict(self) -> dict[str, Any]:
        options = asdict(self.options)
        options.update(data_root=str(self.options.data_root) if self.options.data_root else None,
                       cache_dir=str(self.options.cache_dir))
        return {
            "options": options,
            "store": str(self.store_root), "scratch": str(self.scratch_root),
            "counts_from": self.counts_from, "assumptions": self.assumptions,
            "models": {name: asdict(shape) for name, shape in self.shapes.items()},
            "device": None if self.device is None else self.device.as_dict(),
            "sections": [section_dict(w, self.shapes[w.model]) for w in self.work],
            "totals": self.totals(),
        }


def section_dict(w: SectionWork, shape: ModelShape) -> dict[str, Any]:
    return {
        "section": w.section, "model": w.model, "source_images": w.source_images, "views": w.views,
        "images": w.images, "forward_passes": w.forward_passes(shape), "patches": w.patches,
        "persisted_bytes": w.persisted_bytes, "bytes_to_write": w.bytes_to_write, "cached_bytes": w.cached_bytes,
        "transient_bytes": w.transient_bytes, "scratch_peak_bytes": w.scratch_peak,
        "knn": [asdict(k) | {"flops": k.flops} for k in w.knn], "knn_flops": w.knn_flops,
        "probes": [asdict(p) | {"steps": p.steps} for p in w.probes], "probe_steps": w.probe_steps,
        "pairing": asdict(w.pairing) if w.pairing else None, "extra_forward": w.extra_forward,
        "extractions": [asdict(e) | {"bytes": e.bytes, "sidecar_bytes": e.sidecar_bytes} for e in w.extractions],
        "seconds": w.time,
    }


def wall_seconds(plan: Plan) -> float:
    """The run's wall-clock time with `workers` xdist workers, ideally packed: on a GPU the
    workers' CPU work (reading, probes, the k-NN's CPU side, S6's pairing) spreads over them
    while the GPU's work adds up, and no (section, model) is split between workers, so the
    longest one bounds it too. On a CPU every worker shares the same cores: the serial
    time. A lower bound of the estimate, as packing is never ideal."""
    serial = sum(_busy(w) for w in plan.work)
    if plan.device is None or plan.device.kind != "cuda":
        return serial
    gpu = sum(w.time.get("gpu_busy", 0.0) for w in plan.work)
    return max(gpu, serial / max(1, plan.options.workers), max((_busy(w) for w in plan.work), default=0.0))


def _busy(w: SectionWork) -> float:
    """Seconds a worker spends on one (section, model)."""
    return sum(v for k, v in w.time.items() if k != "gpu_busy")


# ------------------------------------------------------------------------------ nominal sizes
@dataclass(frozen=True)
class Nominal:
    """The datasets as the plan takes them without data: the synthetic world's sizes (for
    the paper profile `harness synth --scale paper`'s, which are the real datasets' own), and
    the shares only labels can tell, assumed."""

    world: Any  # harness.data.synthetic.WorldSize
    labelled_share: dict[str, float]  # share of patches with a label (not 'ignore')
    on_object_share: float  # FAIR1M: share of a tile's patches on an object
    objects_per_frame: dict[str, float]
    why: str


def nominal_for(profile: Profile) -> Nominal:
    from harness.data.synthetic import SIZES

    if profile.name == "smoke":
        return Nominal(SIZES["smoke"], {"cityscapes": 0.9, "ade20k": 0.9}, 0.15,
                       {"bdd100k_mot": 8.0, "mot17": 7.0}, "the smoke profile's synthetic world")
    return Nominal(SIZES["paper"], {"cityscapes": 0.9, "ade20k": 0.9}, 0.15,
                   {"bdd100k_mot": 15.0, "mot17": 21.0},
                   "the paper's sizes (CLAIMS.md Setup) and the datasets' own image sizes and counts")


NOMINAL_ASSUMPTIONS = (
    "labelled patches: 90% of Cityscapes and ADE20K patches have a label (void/'other' pixels are "
    "about a tenth of each); the run scores only labelled patches",
    "FAIR1M: 15% of a tile's patches lie on an object (each tile is centred on one)",
    "objects per frame: 15 in BDD100K MOT val (box_track_20), 21 in MOT17 train (pedestrians "
    "with flag 1: about 112,000 boxes over 5,316 frames)",
)


# ------------------------------------------------------------------------------ building
def build_plan(options: PlanOptions, *, from_data: bool | None = None, check_store: bool = True) -> Plan:
    """The plan of a claims run with `options`. from_data: count from the data (None: when
    there is data: a data root, or the smoke profile's synthetic world); False: from the
    nominal sizes, only for the datasets a run would find (no reading beyond folder
    checks: what the pre-flight check uses). check_store: look up what the store holds."""
    from harness.run import PAPER_MODELS, SEGMENTATION_MODELS

    options = options.resolved()
    profile = PROFILES[options.profile]
    shapes = {name: model_shape(name, profile) for name in options.models}
    roots, counts_from = _dataset_roots(options, profile, from_data)
    builder = _Builder(options, profile, shapes, roots)
    seg_models = [m for m in (*SEGMENTATION_MODELS, *options.added) if m in shapes]
    work: list[SectionWork] = []
    for section in SECTIONS:
        datasets = SECTION_DATASETS[section]
        if not options.wants(section) or any(roots.get(d) is None for d in datasets):
            continue
        if section.startswith("segmentation/"):
            dataset = datasets[0]
            for seed in range(options.train_seeds):
                work += [builder.segmentation(m, dataset, dataset == "cityscapes", seed) for m in seg_models]
        elif section == "overlap" and "mae" in shapes:
            work.append(builder.overlap("mae"))
        elif section == "reconstruction" and "mae" in shapes:
            work.append(builder.reconstruction("mae"))
        elif section == "retrieval/fair1m":
            from harness.run import BEYOND_THE_PAPER

            models = [m for m in (*PAPER_MODELS, *BEYOND_THE_PAPER, *options.added) if m in shapes]
            work += [builder.retrieval(m) for m in models]
        elif section.startswith("association/"):
            work += [builder.association(m, datasets[0]) for m in seg_models]
    _mark_first(work)
    for e in (e for w in work for e in w.extractions):
        e.nominal = roots.get(e.read_kind.split("/")[0]) == "nominal"
    cache_dir = Path(options.cache_dir)
    plan = Plan(options, shapes, work, counts_from,
                list(NOMINAL_ASSUMPTIONS) if builder.used_nominal else [],
                cache_dir / "embeddings", cache_dir / "scratch", free_bytes(cache_dir), samples=builder.samples)
    if check_store:
        mark_cached(plan)
    return plan


def _dataset_roots(options: PlanOptions, profile: Profile, from_data: bool | None) -> tuple[dict, dict]:
    """dataset -> its folder (data), 'nominal', or None (a run would not find it)."""
    from harness import data

    roots: dict[str, Any] = {}
    counts_from: dict[str, str] = {}
    for name in data.DATASET_NAMES:
        if profile.untrained:
            world = options.cache_dir / "synthetic-world" / f"seed{config.ROOT_SEED}"
            if from_data is False:
                roots[name], counts_from[name] = "nominal", f"nominal: {nominal_for(profile).why}"
            else:
                from harness.data import synthetic

                world = synthetic.ensure_world(options.cache_dir, seed=config.ROOT_SEED)
                roots[name], counts_from[name] = world / name, f"data: {world / name}"
            continue
        if options.data_root is None:
            if from_data is False:
                roots[name], counts_from[name] = None, "unavailable: no data root (the run skips it)"
            else:
                roots[name], counts_from[name] = "nominal", f"nominal: {nominal_for(profile).why}"
            continue
        root = options.data_root / name
        try:
            data.check_layout(name, root)
        except data.DatasetLayoutError:
            roots[name], counts_from[name] = None, f"unavailable: {root} is not in its native layout (the run skips it)"
            continue
        if from_data is False:
            roots[name], counts_from[name] = "nominal", f"nominal (present at {root}): {nominal_for(profile).why}"
        else:
            roots[name], counts_from[name] = root, f"data: {root}"
    return roots, counts_from


def _mark_first(work: list[SectionWork]) -> None:
    """A persisted entry is extracted once: by the first section that reads it."""
    seen: set[tuple] = set()
    for w in work:
        for e in w.extractions:
            if e.persisted:
                key = (w.model, e.view, e.layers)
                e.first = key not in seen
                seen.add(key)


# ---------------------------------------------------------------- per-section structure
@dataclass
class _SegCounts:
    """What a segmentation section's work depends on, for one patch size."""

    dataset: str
    num_classes: int
    train_key: str
    val_key: str
    tile_out: int
    source_train: int
    source_val: int
    train_tiles: int
    val_tiles: int
    subset_tiles: dict[int, int]  # n_train -> tiles
    middle: int
    labelled: dict[int, int]  # n_train -> labelled train patches
    labelled_val: int
    lr_fit_rows: int  # labelled rows the lr choice fits on (the middle subset less the held-out images)
    lr_groups: int  # images of the middle subset (fewer than 2: no lr choice)
    corrupted: list[tuple[str, str, int]]  # (view key, read kind, labelled patches)
    train_read: str
    val_read: str


class _Builder:
    def __init__(self, options: PlanOptions, profile: Profile, shapes: dict[str, ModelShape], roots: dict):
        self.options, self.profile, self.shapes, self.roots = options, profile, shapes, roots
        self.nominal = nominal_for(profile)
        self.used_nominal = False
        self.samples: dict[str, Any] = {}  # read kind -> a view of it (data only), for the read rates
        self._cache: dict[tuple, Any] = {}

    def _memo(self, key: tuple, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _nominal(self, dataset: str) -> bool:
        if self.roots.get(dataset) == "nominal":
            self.used_nominal = True
            return True
        return False

    # -- S3/S4 -----------------------------------------------------------------------
    def segmentation(self, model: str, dataset: str, full: bool, train_seed: int) -> SectionWork:
        """Mirror of experiments.segmentation.segmentation_measurements (with_layers,
        with_corruptions and with_variance all `full`)."""
        from harness.experiments.segmentation import (
            BN_CONTRAST_MODELS,
            PRUNING_CURVE_MODELS,
            sweep_groups,
        )
        from harness.probes.linear import LR_GRID

        shape = self.shapes[model]
        counts = self._memo(("seg", dataset, full, train_seed, shape.patch),
                            lambda: self._seg_counts(dataset, full, train_seed, shape.patch))
        size = (counts.tile_out, counts.tile_out)
        grid, depth, width = shape.grid(size), shape.depth, shape.width
        tag = f"/train-seed-{train_seed}" if train_seed else ""
        w = SectionWork(f"segmentation/{dataset}{tag}", model, counts.source_train + counts.source_val)

        def stored(key, read, images):
            return Extraction(key, read, images, size, grid, width, (depth,), True, depth)

        w.extractions += [stored(counts.train_key, counts.train_read, counts.train_tiles),
                          stored(counts.val_key, counts.val_read, counts.val_tiles)]
        mid_rows, val_rows, middle = counts.labelled[counts.middle], counts.labelled_val, counts.middle
        sweep = sweep_groups(counts.subset_tiles[middle], counts.val_tiles, grid, width, depth) if full else []
        peak = 0
        for group in sweep:
            for key, read, images in ((f"{counts.train_key}/middle", counts.train_read, counts.subset_tiles[middle]),
                                      (counts.val_key, counts.val_read, counts.val_tiles)):
                w.extractions.append(Extraction(key, read, images, size, grid, width, tuple(group), False, max(group)))
            peak = max(peak, len(group) * scratch_bytes(counts.subset_tiles[middle] + counts.val_tiles, grid, width))
        layers = [layer for group in sweep for layer in group] + [depth]
        w.knn += [Knn(val_rows, mid_rows, width, f"layer {layer}, n_train {middle}") for layer in layers]
        w.knn.append(Knn(val_rows, mid_rows, width, "cosine"))
        # k-NN vs linear by training size, the middle size first (where each lr is chosen)
        paper = paper_linear(model)
        chosen: set[str] = set()
        lr_choice = len(LR_GRID) > 1 and counts.lr_groups >= 2

        def fit(kind: str, rows: int, dim: int, what: str) -> None:
            if kind not in chosen and lr_choice:
                w.probes.extend(ProbeFit(counts.lr_fit_rows, dim, counts.num_classes, kind == "linear_bn",
                                         f"{kind} lr choice {lr}") for lr in LR_GRID)
            chosen.add(kind)
            w.probes.append(ProbeFit(rows, dim, counts.num_classes, kind == "linear_bn", what))

        for n_train in sorted(counts.subset_tiles, key=lambda n: n != middle):
            kinds = ["linear", "linear_bn"] if (n_train == middle and model in BN_CONTRAST_MODELS) else [paper]
            if n_train != middle:
                w.knn.append(Knn(val_rows, counts.labelled[n_train], width, f"n_train {n_train}"))
            for kind in kinds:
                fit(kind, counts.labelled[n_train], width, f"{kind}, n_train {n_train}")
        fitted = ({"linear", "linear_bn"} if model in BN_CONTRAST_MODELS else {paper})
        if full:
            for key, read, labelled in counts.corrupted:
                w.extractions.append(Extraction(key, read, counts.val_tiles, size, grid, width, (depth,), False, depth))
                w.knn.append(Knn(labelled, mid_rows, width, f"corrupted {key}"))
            if counts.corrupted:
                peak = max(peak, scratch_bytes(counts.val_tiles, grid, width))
            ms = self.profile.pruning_m if model in PRUNING_CURVE_MODELS else (0, self.profile.top_m)
            for m in ms:
                if m == 0:
                    continue
                dim = width - scaled_m(m, width)
                w.knn.append(Knn(val_rows, mid_rows, dim, f"pruned m={m}"))
                if m == self.profile.top_m:
                    fit(paper, mid_rows, dim, f"{paper}, pruned m={m}")
            if "linear_bn" in fitted:
                w.knn.append(Knn(val_rows, mid_rows, width, "knn after BN"))
        w.scratch_peak = peak
        return w

    def _seg_counts(self, dataset: str, full: bool, train_seed: int, patch: int) -> _SegCounts:
        if self._nominal(dataset):
            return self._seg_counts_nominal(dataset, full, train_seed, patch)
        from harness import data
        from harness.views import IGNORE
        from harness.views.paper import segmentation_views

        views, _ = segmentation_views(self.profile, dataset, self.roots[dataset], full, limit=self.options.limit,
                                      train_seed=train_seed)
        labels = views.train.patch_labels(patch) != IGNORE
        val_labels = views.val.patch_labels(patch) != IGNORE
        per_tile = labels.sum(axis=(1, 2))
        middle = views.middle_n_train
        fit_rows, groups = _lr_split(views, labels, middle)
        corrupted = []
        for _, view in sorted(views.corrupted.items()):
            # every corruption but a shift leaves the labels as they are (views.tiles)
            labelled = int(val_labels.sum()) if view.corruption != "shift" else int(
                (view.patch_labels(patch) != IGNORE).sum())
            corrupted.append((view.key, read_kind(view), labelled))
            self.samples.setdefault(read_kind(view), view)
        self.samples.setdefault(read_kind(views.train), views.train)
        self.samples.setdefault(read_kind(views.val), views.val)
        return _SegCounts(
            dataset, data.NUM_CLASSES[dataset], views.train.key, views.val.key, views.train.out,
            len(views.train.sample_ids), len(views.val.sample_ids), len(views.train), len(views.val),
            {n: int(mask.sum()) for n, mask in views.train_subsets.items()}, middle,
            {n: int(per_tile[mask].sum()) for n, mask in views.train_subsets.items()}, int(val_labels.sum()),
            fit_rows, groups, corrupted, read_kind(views.train), read_kind(views.val))

    def _seg_counts_nominal(self, dataset: str, full: bool, train_seed: int, patch: int) -> _SegCounts:
        from harness import data
        from harness.views.paper import ADE20K_SIZE

        world, profile, limit = self.nominal.world, self.profile, self.options.limit
        share = self.nominal.labelled_share[dataset]
        out = profile.tile_out
        patches = (out // patch) ** 2
        cap = (lambda n: n) if limit is None else (lambda n: min(n, limit))
        if dataset == "cityscapes":
            cities, val_cities = len(world.city_train), len(world.city_val)
            per_image = (1024 // 256) * (2048 // 256)
            sizes = {k: cap(min(k, world.city_train_per_city) * cities) for k in profile.cityscapes_train_per_city}
            sources = {n: n for n in sizes.values()}  # n_train (images) -> images
            source_val = cap(min(profile.cityscapes_val_per_city, world.city_val_per_city) * val_cities)
        else:
            per_image = (ADE20K_SIZE[0] // 224) * (ADE20K_SIZE[1] // 224)
            n = cap(min(profile.ade20k_train_per_class * data.NUM_CLASSES["ade20k"], world.ade_train))
            sources = {n: n}
            source_val = cap(min(profile.ade20k_val_images, world.ade_val))
        largest = max(sources)
        subset_tiles = {n: images * per_image for n, images in sources.items()}
        labelled = {n: int(round(tiles * patches * share)) for n, tiles in subset_tiles.items()}
        middle = sorted(subset_tiles)[len(subset_tiles) // 2]
        groups = sources[middle]
        fit_groups = groups - math.ceil(0.25 * groups)
        seed_tag = f"/train-seed-{train_seed}" if train_seed else ""
        train_key = f"{dataset}/train/{largest} images{seed_tag}"
        val_key = f"{dataset}/val/{source_val} images"
        val_tiles = source_val * per_image
        val_labelled = int(round(val_tiles * patches * share))
        corrupted = []
        if full:
            for kind, levels in profile.corruption_levels:
                for name in (kind, "band_noise_literal") if kind == "band_noise" else (kind,):
                    corrupted += [(f"{val_key}/{name}-{float(level):g}", f"{dataset}/val/{name}", val_labelled)
                                  for level in levels]
            corrupted.sort()
        return _SegCounts(dataset, data.NUM_CLASSES[dataset], train_key, val_key, out, largest, source_val,
                          largest * per_image, val_tiles, subset_tiles, middle, labelled, val_labelled,
                          int(round(labelled[middle] * fit_groups / max(groups, 1))), groups, corrupted,
                          f"{dataset}/train/clean", f"{dataset}/val/clean")

    # -- S4.7, S4.8 ------------------------------------------------------------------------
    def overlap(self, model: str) -> SectionWork:
        """Mirror of experiments.overlap: each dataset's top-m set from its variance images
        (the store's last layer: Cityscapes' and ADE20K's train tiles, FAIR1M's originals)."""
        shape = self.shapes[model]
        w = SectionWork("overlap", model)
        for dataset in ("cityscapes", "ade20k"):
            counts = self._memo(("seg", dataset, False, 0, shape.patch),
                                lambda d=dataset: self._seg_counts(d, False, 0, shape.patch))
            size = (counts.tile_out, counts.tile_out)
            w.extractions.append(Extraction(counts.train_key, counts.train_read, counts.train_tiles, size,
                                            shape.grid(size), shape.width, (shape.depth,), True, shape.depth))
        w.extractions.append(self._fair1m(shape)[0])
        return w

    def reconstruction(self, model: str) -> SectionWork:
        """Mirror of run.reconstruction: the top-m set (the store's Cityscapes train tiles),
        then MAE's encoder and pretrained decoder on every val tile, masked (49 of 196
        patches visible) and unmasked, each with three zeroed feature sets."""
        from harness.experiments.reconstruction import MASK_RATIO, MaeDecoder

        shape = self.shapes[model]
        counts = self._memo(("seg", "cityscapes", False, 0, shape.patch),
                            lambda: self._seg_counts("cityscapes", False, 0, shape.patch))
        size = (counts.tile_out, counts.tile_out)
        w = SectionWork("reconstruction", model, counts.source_val)
        w.extractions.append(Extraction(counts.train_key, counts.train_read, counts.train_tiles, size,
                                        shape.grid(size), shape.width, (shape.depth,), True, shape.depth))
        h, wd = shape.grid(size)
        patches = h * wd
        if self.profile.untrained:
            decoder = ModelShape("decoder", "", shape.patch, 2, 32, 2, 1, "")
        else:
            defaults = MaeDecoder.__init__.__defaults__  # embed_dim, patch, patches, dim, depth, heads, mlp
            decoder = ModelShape("decoder", "", shape.patch, defaults[4], defaults[3], defaults[5], 1, "")
        full = shape.flops(size)
        visible = replace(shape, prefix=shape.prefix + int(patches * (1 - MASK_RATIO)) - patches)
        decode = decoder.flops(size) - 2 * patches * 3 * shape.patch**2 * decoder.width  # no patch embedding
        per_tile = (visible.flops(size) + 3 * decode) / full + (1 + 3 * decode / full)  # masked, then unmasked
        w.extra_forward, w.extra_size = counts.val_tiles * per_tile, size
        w.extra_reads.append((counts.val_read, 2 * counts.val_tiles))
        return w

    # -- S5 ------------------------------------------------------------------------------
    def _fair1m(self, shape: ModelShape) -> list[Extraction]:
        """The original tiles (persisted) and every transformed copy (transient)."""
        views = self._memo(("fair1m", shape.patch), lambda: self._fair1m_counts(shape.patch))
        out = []
        for key, read, tiles, size, _queries in views:
            persisted = read.endswith("/clean")
            out.append(Extraction(key, read, tiles, size, shape.grid(size), shape.width, (shape.depth,),
                                  persisted, shape.depth))
        return out

    def _fair1m_counts(self, patch: int) -> list[tuple[str, str, int, tuple[int, int], int]]:
        """(view key, read kind, tiles, size, on-object patches) for the original tiles and
        each transformed copy, in the experiment's order (sorted by transform and level)."""
        out = self.profile.tile_out
        if self._nominal("fair1m"):
            from harness.data.fair1m import CLASS_NAMES

            per_category = min(self.profile.fair1m_per_category, self.nominal.world.fair1m_per_category)
            tiles = per_category * len(CLASS_NAMES)
            if self.options.limit is not None:
                tiles = min(tiles, self.options.limit)
            queries = int(round(tiles * (out // patch) ** 2 * self.nominal.on_object_share))
            rows = [(f"fair1m/{tiles} tiles", "fair1m/clean", tiles, (out, out), queries)]
            for kind, level in sorted((k, float(v)) for k, levels in self.profile.retrieval_transforms for v in levels):
                rows.append((f"fair1m/{tiles} tiles/{kind}-{level:g}", f"fair1m/{kind}", tiles, (out, out), queries))
            return rows
        from harness.views.paper import retrieval_views

        views, _ = retrieval_views(self.profile, self.roots["fair1m"], limit=self.options.limit)
        rows = [(views.original.key, read_kind(views.original), len(views.original), (out, out), 0)]
        self.samples.setdefault(read_kind(views.original), views.original)
        for _, view in sorted(views.transformed.items()):
            self.samples.setdefault(read_kind(view), view)
            queries = int((view.patch_objects(patch)["fine"] >= 0).sum())
            rows.append((view.key, read_kind(view), len(view), (out, out), queries))
        return rows

    def retrieval(self, model: str) -> SectionWork:
        """Mirror of experiments.retrieval (and run.retrieval's pruned variants)."""
        from harness.run import PRUNED_ON_FAIR1M

        shape = self.shapes[model]
        rows = self._memo(("fair1m", shape.patch), lambda: self._fair1m_counts(shape.patch))
        w = SectionWork("retrieval/fair1m", model, rows[0][2])
        w.extractions += self._fair1m(shape)
        pruned = None
        if model == "mae":
            if self.roots.get("cityscapes") is not None:  # the Cityscapes top-200 set, from the store
                counts = self._memo(("seg", "cityscapes", False, 0, shape.patch),
                                    lambda: self._seg_counts("cityscapes", False, 0, shape.patch))
                size = (counts.tile_out, counts.tile_out)
                w.extractions.append(Extraction(counts.train_key, counts.train_read, counts.train_tiles, size,
                                                shape.grid(size), shape.width, (shape.depth,), True, shape.depth))
            pruned = scaled_m(self.profile.top_m, shape.width)
        elif model in PRUNED_ON_FAIR1M:
            pruned = scaled_m(self.profile.top_m, shape.width)
        base = rows[0][2] * shape.grid(rows[0][3])[0] * shape.grid(rows[0][3])[1]
        variants = {"main": shape.width} | ({"pruned": shape.width - pruned} if pruned is not None else {})
        transient_peak = 0
        for key, read, tiles, size, queries in rows[1:]:
            transient_peak = max(transient_peak, scratch_bytes(tiles, shape.grid(size), shape.width))
            for variant, dim in variants.items():
                for exclude in ((False, True) if "/blur" in read else (False,)):
                    w.knn.append(Knn(queries, base, dim, f"{key} {variant}{' source excluded' if exclude else ''}"))
        w.scratch_peak = transient_peak
        return w

    # -- S6 ------------------------------------------------------------------------------
    def association(self, model: str, dataset: str) -> SectionWork:
        """Mirror of experiments.association: each video's frames (transient, one view per
        video), pooled twice (POOLINGS), and per gap and pooling one nearest-object search
        per frame pair with objects on both sides."""
        from harness.experiments.association import POOLINGS

        shape = self.shapes[model]
        videos = self._memo(("videos", dataset, shape.patch), lambda: self._video_counts(dataset, shape.patch))
        w = SectionWork(f"association/{dataset}", model, len(videos))
        pairing = Pairing()
        objects = frames = 0
        for key, size, per_frame in videos:
            grid = shape.grid(size)
            w.extractions.append(Extraction(key, f"{dataset}/frames", len(per_frame), size, grid, shape.width,
                                            (shape.depth,), False, shape.depth))
            counts = np.asarray(per_frame, dtype=np.float64)
            pairing.pooled_frames += len(POOLINGS) * int((counts > 0).sum())
            for gap in self.profile.frame_gaps:
                if gap < len(counts):
                    both = (counts[:-gap] > 0) & (counts[gap:] > 0)
                    pairing.pairs += len(POOLINGS) * int(both.sum())
                    pairing.flops += len(POOLINGS) * float(2 * shape.width * (counts[:-gap] * counts[gap:]).sum())
            objects += counts.sum()
            frames += len(counts)
        # the previous video's frames are still held while the next one is extracted: at
        # most the two largest videos at once
        sizes = sorted((scratch_bytes(len(p), shape.grid(s), shape.width) for _, s, p in videos), reverse=True)
        w.scratch_peak = sum(sizes[:2])
        pairing.objects_per_frame = objects / max(frames, 1)
        w.pairing = pairing
        return w

    def _video_counts(self, dataset: str, patch: int) -> list[tuple[str, tuple[int, int], list[int]]]:
        """Per video view: (key, frame size fed to the model, objects in each frame)."""
        from harness.views.frames import model_frame_size

        short = min(self.profile.video_size)
        limit = self.options.limit
        if self._nominal(dataset):
            world = self.nominal.world
            if dataset == "bdd100k_mot":
                from harness.data.synthetic import BDD_SIZE

                videos = [(f"bdd-{v}", world.frames, (BDD_SIZE[1], BDD_SIZE[0])) for v in range(world.bdd_videos)]
            else:
                videos = [(q.name, q.frames, (q.height, q.width)) for q in world.mot_sequences]
            if self.profile.video_count is not None:
                videos = videos[: self.profile.video_count]
            if limit is not None:
                videos = videos[:limit]
            per_frame = self.nominal.objects_per_frame[dataset]
            return [(f"{dataset}/{name}", model_frame_size(source, short, patch), [per_frame] * frames)
                    for name, frames, source in videos]
        from harness.views.paper import video_views

        views, _ = video_views(self.profile, dataset, self.roots[dataset], patch, limit=limit)
        self.samples.setdefault(f"{dataset}/frames", max(views, key=len))
        return [(view.key, tuple(view.size), [len(f.track_ids) for f in view.frame_objects()]) for view in views]


def _lr_split(views, labelled: np.ndarray, middle: int) -> tuple[int, int]:
    """(rows the lr choice fits on, images of the middle subset): the held-out split of
    probes.choose_lr, drawn as it draws it."""
    from sklearn.model_selection import GroupShuffleSplit

    from harness.config import seed_for
    from harness.probes.linear import HOLDOUT_FRACTION

    mask = views.train_subsets[middle]
    source = np.asarray(views.train.source_index)[mask]
    groups = np.repeat(source, labelled[mask].sum(axis=(1, 2)))
    unique = np.unique(groups)
    if len(unique) < 2:
        return len(groups), len(unique)
    split_seed = seed_for("lr_holdout", views.dataset, views.middle_n_train, views.train_seed)
    splitter = GroupShuffleSplit(n_splits=1, test_size=HOLDOUT_FRACTION, random_state=split_seed)
    fit_rows, _ = next(splitter.split(np.zeros(len(groups)), groups=groups))
    return len(fit_rows), len(unique)


def read_kind(view) -> str:
    """What reading one of the view's images costs depends on: its dataset, split and
    corruption or transform (for the calibration's read rates)."""
    dataset = view.dataset
    how = getattr(view, "corruption", None) or getattr(view, "transform", None) or "clean"
    if hasattr(view, "frames"):
        return f"{dataset.name}/frames"
    if dataset.name == "fair1m":
        return f"fair1m/{how}"
    return f"{dataset.name}/{dataset.split}/{how}"


# ------------------------------------------------------------------------------ the store
def mark_cached(plan: Plan) -> None:
    """Mark the persisted extractions the store already holds, verified quickly by their
    sidecars: the key (model, view, layer, dtype, harness version; weights as the profile
    loads them), the shape, and an array file of the right size. With views from the data
    the view key is matched; with nominal counts (no views), the dataset and split in the
    key and the shape."""
    import harness

    root = plan.store_root
    if not root.is_dir():
        return
    untrained = PROFILES[plan.options.profile].untrained
    present: dict[tuple, set] = {}
    for model in plan.shapes:
        folder = root / safe_name(model)
        if not folder.is_dir():
            continue
        for sidecar in folder.glob("*/layer-*/layer-*.json"):  # <entry>/layer-NN/layer-NN.json
            try:
                meta = json.loads(sidecar.read_text())
                key = meta["key"]
                array = sidecar.with_suffix(".npy")
                digest = str(key["weights_digest"])
                if (key.get("harness_version") != harness.__version__ or key.get("dtype") != STORE_DTYPE
                        or key.get("precision", "fp32") != plan.options.precision
                        or digest.startswith("random-init") != untrained
                        or array.stat().st_size != npy_bytes(meta["shape"], meta["dtype"])):
                    continue
            except (OSError, ValueError, KeyError, TypeError):
                continue
            present.setdefault((model, int(key["layer"]), tuple(meta["shape"])), set()).add(str(key["view_key"]))
    for w in plan.work:
        for e in w.extractions:
            if not e.persisted:
                continue
            keys = set()
            for layer in e.layers:
                keys = present.get((w.model, layer, (e.images, *e.grid, e.width)), set())
                if not keys:
                    break
            e.cached = bool(keys) and (_nominal_match(e.view, keys) if e.nominal else e.view in keys)


def _nominal_match(view: str, keys: set[str]) -> bool:
    """A nominal view ('cityscapes/train/144 images') against stored view keys
    ('tiles-cityscapes-train-<digest>', 'fair1m-tiles-fair1m-train-<digest>')."""
    dataset, split = view.split("/")[:2]
    if dataset == "fair1m":
        return any(k.startswith("fair1m-tiles-fair1m-") for k in keys)
    return any(k.startswith(f"tiles-{dataset}-{split}-") for k in keys)


# ------------------------------------------------------------------------------ pre-flight
class NotEnoughRoomError(StoreFullError):
    """The claims run's new store entries (and its scratch) do not fit the cache's disk."""

    def __init__(self, folder, needed: int, free: int, scratch: int = 0):
        super().__init__(folder, needed, free)
        self.scratch = scratch

    def __reduce__(self):
        return type(self), (self.filename, self.needed, self.free, self.scratch)

    def __str__(self) -> str:
        scratch = (f" ({human_bytes(self.needed - self.scratch)} of embeddings to persist and "
                   f"{human_bytes(self.scratch)} of transient scratch)" if self.scratch else "")
        return (f"the claims run needs {human_bytes(self.needed)} more in {self.filename}{scratch}, "
                f"{human_bytes(self.free)} free; free space or pass --claims-cache-dir")


def check_room(options) -> Plan:
    """The claims run's pre-flight check: raise NotEnoughRoomError (an OSError, ENOSPC)
    when the store entries the run would write, plus one scratch peak per xdist worker, do
    not fit the free space of the cache's filesystem. `options`: the run's options
    (profile, models, data_root, cache_dir; train_seeds, added, workers when known).

    Quick: no model is loaded and no image read. Counts are the nominal sizes of the
    datasets the run would find (folder checks only); a store entry already there is
    recognised by its sidecar (model, dataset and split, layer, shape). Returns the plan."""
    plan = build_plan(PlanOptions.from_run_options(options), from_data=False)
    if not plan.fits:
        raise NotEnoughRoomError(plan.store_root, plan.room_needed, plan.free_bytes,
                                 plan.scratch_peak * max(1, plan.options.workers))
    return plan


# ------------------------------------------------------------------------------ time
def estimate(plan: Plan, device) -> Plan:
    """Fill every section's time (seconds by part) from `device` (calibration.DeviceFigures):
    extraction = forward passes / the model's images/s (scaled by FLOPs from the size it was
    measured at) and reading / the view's read rate, overlapped on a GPU (one reader thread
    feeds the device) and added on a CPU (they share the cores); 1-NN = FLOPs / the exact
    search's GEMM rate + its per-row CPU work; probes = optimiser steps x the step time;
    S6 pairing and pooling per pair and frame; S4.8 as forward passes."""
    plan.device = device
    for w in plan.work:
        shape = plan.shapes[w.model]
        forward = read = 0.0
        extract = 0.0
        for e in w.extractions:
            if not e.runs:
                continue
            f = e.images * shape.flops(e.size, e.blocks) / device.flops_per_second(shape, e.size)
            r = e.images * device.read_seconds(e.read_kind)
            forward, read = forward + f, read + r
            extract += max(f, r) if device.kind == "cuda" else f + r
        recon = (w.extra_forward * shape.flops(w.extra_size) / device.flops_per_second(shape, w.extra_size)
                 if w.extra_forward else 0.0)
        recon_read = sum(n * device.read_seconds(kind) for kind, n in w.extra_reads)
        knn_gemm = sum(k.flops for k in w.knn) / device.knn_flops_per_second
        knn_cpu = sum((k.queries + k.base) * k.dim for k in w.knn) * device.knn_row_seconds
        probes = sum(p.steps * device.probe_step_seconds(p.dim, p.classes, p.batchnorm) for p in w.probes)
        pairing = 0.0
        if w.pairing:
            pairing = w.pairing.pairs * device.pair_seconds + w.pairing.pooled_frames * device.pool_seconds
        w.time = {"extract": extract, "reconstruction": recon + recon_read, "knn": knn_gemm + knn_cpu,
                  "probes": probes, "pairing": pairing}
        # what the GPU itself is busy with (the rest runs on the host's CPU)
        w.time["gpu_busy"] = (forward + recon + knn_gemm) if device.kind == "cuda" else 0.0
    return plan


# ------------------------------------------------------------------------------ output
def human_bytes(n: float) -> str:
    return f"{n / GB:,.2f} GB" if n >= 0.01 * GB else f"{n / 2**20:,.1f} MiB"


def human_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 2 * 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def table(plan: Plan) -> str:
    """The plan as text: one row per (model, section), then totals and the facts."""
    timed = plan.device is not None
    head = ["model", "section", "src", "views", "images", "fwd passes", "patches", "persist", "scratch pk",
            "1-NN", "1-NN TFLOP", "fits", "steps"]
    if timed:
        head += ["extract", "1-NN t", "probes", "other", "total"]
    rows = []
    for w in sorted(plan.work, key=lambda w: (list(plan.shapes).index(w.model), SECTIONS.index(_base(w.section)))):
        shape = plan.shapes[w.model]
        row = [w.model, w.section, f"{w.source_images:,}", f"{w.views:,}", f"{w.images:,}",
               f"{w.forward_passes(shape):,.0f}", f"{w.patches / 1e6:,.2f}M", human_bytes(w.persisted_bytes),
               human_bytes(w.scratch_peak), f"{len(w.knn)}", f"{w.knn_flops / 1e12:,.1f}", f"{len(w.probes)}",
               f"{w.probe_steps:,}"]
        if timed:
            t = w.time
            row += [human_seconds(t["extract"]), human_seconds(t["knn"]), human_seconds(t["probes"]),
                    human_seconds(t["pairing"] + t["reconstruction"]),
                    human_seconds(_busy(w))]
        rows.append(row)
    totals = plan.totals()
    total = ["total", "", f"{totals['source_images']:,}", f"{totals['views']:,}", f"{totals['images']:,}",
             f"{totals['forward_passes']:,.0f}", f"{totals['patches'] / 1e6:,.2f}M",
             human_bytes(totals["persisted_bytes"]), human_bytes(totals["scratch_peak_bytes"]),
             f"{totals['knn_searches']}", f"{totals['knn_flops'] / 1e12:,.1f}", f"{totals['probe_fits']}",
             f"{totals['probe_steps']:,}"]
    if timed:
        s = totals["seconds"]
        total += [human_seconds(s["extract"]), human_seconds(s["knn"]), human_seconds(s["probes"]),
                  human_seconds(s["pairing"] + s["reconstruction"]), human_seconds(totals["serial_seconds"])]
    widths = [max(len(str(r[i])) for r in [head, *rows, total]) for i in range(len(head))]
    lines = []
    for r in [head, *rows, total]:
        lines.append("  ".join(str(c).ljust(widths[i]) if i < 2 else str(c).rjust(widths[i]) for i, c in enumerate(r)))
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


def _base(section: str) -> str:
    return section.split("/train-seed-")[0]


def summary(plan: Plan) -> list[str]:
    """The facts under the table: store, scratch, room, time, and where the numbers come from."""
    t = plan.totals()
    workers = max(1, plan.options.workers)
    lines = [
        f"store: {human_bytes(t['persisted_bytes'])} persisted in {plan.store_root} (the .npy files exactly, "
        f"plus {SIDECAR_BYTES} B reserved per layer's sidecar); already there: {human_bytes(t['cached_bytes'])}; "
        f"to write: {human_bytes(t['bytes_to_write'])}",
        f"scratch: peak {human_bytes(t['scratch_peak_bytes'])} per worker in {plan.scratch_root} "
        f"({human_bytes(t['transient_bytes'])} written transiently in all, each file gone once read)",
        f"room: {human_bytes(t['room_needed_bytes'])} needed (to write + {workers} worker(s) x scratch peak), "
        f"{human_bytes(t['free_bytes'])} free there: {'fits' if t['fits'] else 'DOES NOT FIT'}",
    ]
    if plan.device is not None:
        s = t["seconds"]
        parts = ", ".join(f"{k} {human_seconds(s[k])}" for k in ("extract", "knn", "probes", "pairing", "reconstruction"))
        lines.append(f"time on {plan.device.device}: {parts}; serial {human_seconds(t['serial_seconds'])}; "
                     f"with {workers} workers about {human_seconds(t['wall_seconds'])}"
                     + (" (GPU busy " + human_seconds(s["gpu_busy"]) + ")" if plan.device.kind == "cuda" else ""))
        lines += [f"  {line}" for line in plan.device.describe()]
    lines.append("counts: " + "; ".join(f"{d} {how}" for d, how in plan.counts_from.items()))
    lines += [f"assumed: {a}" for a in plan.assumptions]
    lines.append("not counted (small): view building, patch labels, S4.6's ridge regressions, variances, "
                 "bootstrap and report; a warm measurement cache skips a section's whole work")
    return lines


def selected(plan: Plan, sections: Iterable[str]) -> list[SectionWork]:
    return [w for w in plan.work if any(w.section.startswith(s) for s in sections)]
