"""A claims run as library code: which models, which data, where the cache is, and each
section of the paper measured once per (section, model) through the measurement cache.

    run = ClaimsRun.from_options(options)
    cityscapes = run.segmentation("cityscapes", full=True)    # a Measurements
    cityscapes.value("miou", model="mae", probe="knn")

The claims' session fixtures (fixtures/plugin.py) are glue over this; `harness extract`
uses the same dataset roots and store. A missing dataset raises `Unavailable` (the claims
that read the section skip with what to download); a model whose weights are missing, or
that the run leaves out, is listed in `Measurements.unavailable` (the claims that read it
skip, naming the weights); a model whose measurement failed (a bad checkpoint, a full disk,
a NaN embedding) is listed in `Measurements.failed` (those claims end in error, the others
are still judged).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import config
from harness.measurements import Measurement, Measurements
from harness.profiles import PROFILES, Profile

PAPER_MODELS = ("dino", "dinov2", "mae", "simmim", "ibot", "supervised")
# iBOT appears only in the retrieval experiment of the paper (S5.4).
SEGMENTATION_MODELS = ("dino", "dinov2", "mae", "simmim", "supervised")
BEYOND_THE_PAPER = ("scale_mae",)  # X.5, on FAIR1M
PRUNED_ON_FAIR1M = ("scale_mae",)  # models pruned by FAIR1M's own top-200 set (X.5)
GSD_SOURCE = ("FAIR1M: Gaofen and Google Earth imagery at 0.3-0.8 m (Sun et al. 2022); 0.8 m, Gaofen-2's, "
              "for tiles cut at native resolution")
TOP_SET_SOURCES = {"cityscapes": "the top-200 set of Cityscapes' middle train subset (as S4)",
                   "fair1m": "the top-200 set of FAIR1M's original tiles"}


class Unavailable(Exception):
    """A dataset or a model's weights is missing: the reason says what to get and where."""


@dataclass
class ClaimsRun:
    profile: Profile
    models: tuple[str, ...]
    weights: dict[str, str] = field(default_factory=dict)
    added: dict[str, str] = field(default_factory=dict)  # backbones added by spec: name -> family
    data_root: Path | None = None
    cache_dir: Path = field(default_factory=config.cache_dir)
    train_seeds: int = 1
    worker_index: int = 0  # xdist worker number: workers start on different models, GPU i % k
    record: Callable[[str, Any], None] = lambda key, value: None  # run information for the report
    precision: str = "fp32"  # extraction arithmetic: fp32 (the paper profile's) or bf16 (X.3 judged)
    _backbones: dict = field(default_factory=dict)
    _scratch: Any = None
    _device: Any = None

    @classmethod
    def from_options(cls, options, worker_index: int = 0,
                     record: Callable[[str, Any], None] | None = None) -> ClaimsRun:
        return cls(profile=PROFILES[options.profile], models=tuple(options.models),
                   weights=dict(options.weights), added=dict(getattr(options, "added", {}) or {}),
                   data_root=Path(options.data_root) if options.data_root else None,
                   cache_dir=Path(options.cache_dir), train_seeds=options.train_seeds,
                   worker_index=worker_index, record=record or (lambda key, value: None),
                   precision=getattr(options, "precision", "fp32") or "fp32")

    # -- the device ----------------------------------------------------------------------
    def device(self):
        """This worker's device, pinned once: cuda:(worker_index % k) on a machine with k
        GPUs (extraction and the k-NN run there), else the CPU. PrecisionUnavailable when the
        run's precision is bf16 and that device has no native bf16."""
        if self._device is None:
            from harness import devices

            device = devices.device_for_worker(self.worker_index)
            devices.check_precision(self.precision, device)
            self._device = devices.pin(device)
            self.record("devices", {f"worker {self.worker_index}": devices.describe(self._device)})
            self.record("precision", self.precision)
        return self._device

    # -- models --------------------------------------------------------------------------
    def backbone(self, name: str):
        """The loaded model, or Unavailable with what to download and where to put it."""
        if name not in self.models:
            raise Unavailable(f"{name}: not among this run's models (--claims-models {','.join(self.models)})")
        if name not in self._backbones:
            from harness import models

            # Scale-MAE's position encoding takes the input's ground sample distance: it runs on
            # FAIR1M tiles at native resolution (X.5).
            gsd = models.FAIR1M_GSD_M if models.get_spec(name).gsd_aware else None
            try:
                if self.profile.untrained:
                    backbone = models.load(name, random_init=True, smoke=True, gsd=gsd, device=self.device())
                else:
                    backbone = models.load(name, weights=self.weights.get(name), cache_dir=self.cache_dir, gsd=gsd,
                                           device=self.device())
            except models.WeightsNotAvailableError as err:
                backbone = Unavailable(str(err))
            self._backbones[name] = backbone
            if not isinstance(backbone, Unavailable):
                self.record("weights", {name: {"id": backbone.weights_id, "digest": backbone.weights_digest}})
                self.record("families", {name: backbone.family})
                if gsd is not None:
                    self.record("gsd", {name: {"metres_per_pixel": gsd, "source": GSD_SOURCE}})
        backbone = self._backbones[name]
        if isinstance(backbone, Unavailable):
            raise backbone
        return backbone

    def families(self) -> dict[str, str]:
        """The family (contrastive, MIM, supervised) of every model of the run."""
        from harness import models

        return {name: models.get_spec(name).family for name in self.models}

    # -- datasets --------------------------------------------------------------------------
    def dataset_root(self, name: str) -> Path:
        from harness import data

        if self.profile.untrained:
            from harness.data import synthetic

            return synthetic.ensure_world(self.cache_dir, seed=config.ROOT_SEED) / name
        if self.data_root is None:
            raise Unavailable(
                f"no data root: set --claims-data-root or ${config.DATA_ENV} to the folder holding "
                f"'{name}/'. {data.HOW_TO_GET[name]}")
        root = self.data_root / name
        try:
            data.check_layout(name, root)
        except data.DatasetLayoutError as err:
            raise Unavailable(str(err)) from None
        return root

    def record_subset(self, name: str, value) -> None:
        """What a view builder chose, for the report's run_info.subsets: ids (and notes on any
        shortfall), or plain facts such as the frame sizes the models see."""
        self.record("subsets", {name: value.as_record() if hasattr(value, "as_record") else value})

    # -- embeddings and measurements --------------------------------------------------------
    def store(self):
        from harness.store import EmbeddingStore

        return EmbeddingStore(self.cache_dir / "embeddings")

    def embed(self, backbone, view, layers, precision: str | None = None):
        """{layer: [N, h, w, D] fp16} in the run's precision unless one is named: the layers
        the store keeps of this view (`views.paper.persisted_layers`) from the store, built
        once; any other layer extracted transiently (`transient_embed`), so the store stays
        bounded."""
        from harness.extract import embeddings
        from harness.views.paper import persisted_layers

        precision = precision or self.precision
        kept = set(persisted_layers(view, backbone.depth))
        stored, other = [layer for layer in layers if layer in kept], [layer for layer in layers if layer not in kept]
        arrays = (embeddings(backbone, view, self.store(), layers=stored, progress=False, precision=precision)
                  if stored else {})
        return arrays | (self.transient_embed(backbone, view, other, precision=precision) if other else {})

    def transient_embed(self, backbone, view, layers, tiles=None, precision: str | None = None):
        """{layer: [n, h, w, D] fp16} of the view's (selected) images in scratch under
        <cache-dir>/scratch, never persisted: the space returns when the arrays are dropped."""
        if self._scratch is None:
            from harness.scratch import Scratch

            self._scratch = Scratch(self.cache_dir / "scratch")
        return self._scratch.embed(backbone, view, layers, tiles, precision=precision or self.precision)

    def measure(self, section: str, models: Sequence[str], build_views: Callable[[Any], tuple[Any, list[str]]],
                per_model: Callable[[str, Any, Any], list[Measurement]]) -> Measurements:
        """`build_views(backbone)` -> (views, view keys), then `per_model(model, backbone, views)`
        for each available model through the measurement cache (views that depend on the model,
        e.g. on its patch size, are built per model; the others once). Workers start on
        different models (rotated by worker number), so under -n 4 they build different
        entries at once."""
        from harness import measurement_cache

        wanted = list(models)
        k = self.worker_index % max(1, len(wanted))
        unavailable: dict[str, str] = {}
        failed: dict[str, str] = {}
        found: dict[str, list[Measurement]] = {}
        for model in wanted[k:] + wanted[:k]:
            try:
                backbone = self.backbone(model)
                views, view_keys = build_views(backbone)
                key = {"section": section, "model": model, "weights": backbone.weights_digest,
                       "views": view_keys, "profile": self.profile.name}
                if self.precision != "fp32":  # fp32 keys as before; bf16 numbers never read for fp32
                    key["precision"] = self.precision
                found[model] = measurement_cache.get_or_build(
                    self.cache_dir, key, lambda m=model, b=backbone, v=views: per_model(m, b, v))
            except Unavailable as err:
                unavailable[model] = str(err)
            except _expected_failures() as err:
                failed[model] = f"{model}: {type(err).__name__}: {err}"
        rows = [m for model in wanted for m in found.get(model, [])]  # table order independent of the worker
        return Measurements(rows, unavailable, name=section, failed=failed)

    # -- the paper's sections ------------------------------------------------------------------
    def segmentation(self, dataset: str, full: bool) -> Measurements:
        """S3/S4 on Cityscapes (full: every layer, corruption and the variance analyses) or
        ADE20K (the last layer); with --claims-train-seeds N, the same on N-1 more few-shot
        training subsets as `alternates` (X.1)."""
        sections = [self._segmentation(dataset, full, seed) for seed in range(self.train_seeds)]
        sections[0].alternates = sections[1:]
        return sections[0]

    def _segmentation(self, dataset: str, full: bool, train_seed: int) -> Measurements:
        from harness.experiments.segmentation import segmentation_measurements
        from harness.views.paper import segmentation_views

        root = self.dataset_root(dataset)
        built = once(lambda: segmentation_views(self.profile, dataset, root, full,
                                                self.record_subset if train_seed == 0 else None,
                                                train_seed=train_seed))

        def per_model(model, backbone, views):
            return segmentation_measurements(model, backbone, views, self.embed, self.profile,
                                             seed=config.seed_for("probe"), with_layers=full,
                                             with_corruptions=full, with_variance=full,
                                             transient=self.transient_embed)

        seed_tag = f"/train-seed-{train_seed}" if train_seed else ""
        return self.measure(f"segmentation/{dataset}/{'full' if full else 'last-layer'}{seed_tag}",
                            (*SEGMENTATION_MODELS, *self.added), lambda backbone: built(), per_model)

    def retrieval(self) -> Measurements:
        """S5 on FAIR1M; MAE is measured again without the claims' top-200 set (the Cityscapes
        set of S4, as the paper's 'shortened embeddings'; FAIR1M's own set where Cityscapes is
        absent), Scale-MAE without FAIR1M's own top-200 set (X.5)."""
        from harness.experiments.common import cityscapes_top_features, top_features
        from harness.experiments.retrieval import retrieval_measurements
        from harness.views.paper import VarianceSet, retrieval_views, segmentation_views

        root = self.dataset_root("fair1m")
        built = once(lambda: retrieval_views(self.profile, root, self.record_subset))

        def pruning_source(model: str) -> str | None:
            if model == "mae":
                return "cityscapes" if self._has("cityscapes") else "fair1m"
            return "fair1m" if model in PRUNED_ON_FAIR1M else None

        def views_and_keys(backbone):
            views, keys = built()
            source = pruning_source(backbone.name)
            if source is None:
                return (views, None), keys
            self.record("top_m_sets", {f"S5 {backbone.name} pruned": TOP_SET_SOURCES[source]})
            return (views, source), [*keys, f"pruned-by-{source}"]

        def per_model(model, backbone, built_views):
            views, source = built_views
            pruned = None
            if source == "cityscapes":
                city, _ = segmentation_views(self.profile, "cityscapes", self.dataset_root("cityscapes"), False)
                pruned = cityscapes_top_features(backbone, city, self.embed, self.profile)
            elif source == "fair1m":
                pruned = top_features(backbone, VarianceSet(views.original), self.embed, self.profile.top_m)
            return retrieval_measurements(model, backbone, views, self.embed, self.profile, pruned=pruned)

        return self.measure("retrieval/fair1m", (*PAPER_MODELS, *BEYOND_THE_PAPER, *self.added), views_and_keys,
                            per_model)

    def association(self, dataset: str) -> Measurements:
        from harness.experiments.association import association_measurements
        from harness.views.paper import video_views

        root = self.dataset_root(dataset)
        by_patch: dict[int, tuple] = {}

        def views(backbone):  # frame sizes follow the model's patch grid
            if backbone.patch_size not in by_patch:
                by_patch[backbone.patch_size] = video_views(self.profile, dataset, root, backbone.patch_size,
                                                            self.record_subset)
            return by_patch[backbone.patch_size]

        def per_model(model, backbone, built):
            return association_measurements(model, backbone, built, dataset, self.embed, self.profile)

        return self.measure(f"association/{dataset}", (*SEGMENTATION_MODELS, *self.added), views, per_model)

    def feature_overlap(self) -> Measurements:
        from harness.experiments.overlap import overlap_measurements
        from harness.views.paper import overlap_views

        roots = {d: self.dataset_root(d) for d in ("cityscapes", "ade20k", "fair1m")}
        built = once(lambda: overlap_views(self.profile, roots, self.record_subset))

        def per_model(model, backbone, sources):
            return overlap_measurements(model, backbone, sources, self.embed, self.profile)

        return self.measure("overlap", ("mae",), lambda backbone: built(), per_model)

    def reconstruction(self) -> Measurements:
        from harness.experiments import reconstruction
        from harness.experiments.common import cityscapes_top_features
        from harness.views.paper import segmentation_views

        root = self.dataset_root("cityscapes")
        decoder_path = self.mae_decoder_path()  # Unavailable (skip with instructions) before any work
        built = once(lambda: segmentation_views(self.profile, "cityscapes", root, False, self.record_subset))

        def per_model(model, backbone, seg):
            decoder = self.mae_decoder(backbone, decoder_path)
            top = cityscapes_top_features(backbone, seg, self.embed, self.profile)
            return reconstruction.reconstruction_measurements(model, backbone, decoder, seg.val, top,
                                                              seed=config.seed_for("recon"))

        return self.measure("reconstruction", ("mae",), lambda backbone: built(), per_model)

    def precision_check(self) -> Measurements:
        """X.3: judged where the run extracts in bf16: every section whose dataset is here, on
        a fixed slice of its val views extracted in bf16 and in fp32
        (harness.experiments.precision); Unavailable (the claim skips, saying so) on an fp32 run."""
        if self.precision == "fp32":
            raise Unavailable("X.3 is judged where extraction runs in bf16 (the fast GPU path); this run "
                              "extracts in fp32 only, so no verdict can depend on precision")
        from harness.experiments import precision as slices
        from harness.views.paper import retrieval_views, segmentation_views, video_views

        embed_at, record = self.embed, self.record  # embed(backbone, view, layers, precision)
        protocol = f"precision-slice {sorted(slices.SLICE.items())}"  # in the measurement key
        sections: list[Measurements] = []
        missing: list[str] = []
        for dataset in ("cityscapes", "ade20k"):
            try:
                root = self.dataset_root(dataset)
            except Unavailable as why:
                missing.append(str(why))
                continue
            built = once(lambda d=dataset, r=root: segmentation_views(self.profile, d, r, False))

            def per_model(model, backbone, views):
                return slices.segmentation_agreement(model, backbone, views, embed_at, record=record)

            sections.append(self.measure(f"precision/{dataset}", (*SEGMENTATION_MODELS, *self.added),
                                         lambda backbone, b=built: (b()[0], [*b()[1], protocol]), per_model))
        try:
            fair1m = self.dataset_root("fair1m")
        except Unavailable as why:
            missing.append(str(why))
        else:
            built = once(lambda: retrieval_views(self.profile, fair1m))

            def per_model(model, backbone, views):
                return slices.retrieval_agreement(model, backbone, views, embed_at, record=record)

            sections.append(self.measure("precision/fair1m", (*PAPER_MODELS, *BEYOND_THE_PAPER, *self.added),
                                         lambda backbone: (built()[0], [*built()[1], protocol]), per_model))
        for dataset in ("bdd100k_mot", "mot17"):
            try:
                root = self.dataset_root(dataset)
            except Unavailable as why:
                missing.append(str(why))
                continue

            def video(backbone, d=dataset, r=root):
                views, keys = video_views(self.profile, d, r, backbone.patch_size)
                return views, [*keys, protocol]

            def per_model(model, backbone, views, d=dataset):
                return slices.association_agreement(model, backbone, views, d, embed_at,
                                                    self.profile.frame_gaps, record=record)

            sections.append(self.measure(f"precision/{dataset}", (*SEGMENTATION_MODELS, *self.added), video,
                                         per_model))
        if not sections:
            raise Unavailable("X.3: no section's dataset is here to take a precision slice from: "
                              + "; ".join(missing[:1]))
        measured = sections[0]
        for section in sections[1:]:
            measured = measured.extend(section)
        return measured

    def _has(self, dataset: str) -> bool:
        try:
            self.dataset_root(dataset)
        except Unavailable:
            return False
        return True

    # -- the MAE decoder (S4.8) ------------------------------------------------------------------
    def mae_decoder_path(self) -> Path | None:
        """The full MAE checkpoint (encoder + decoder); None on the smoke profile."""
        from harness.experiments.reconstruction import FULL_CHECKPOINT

        if self.profile.untrained:
            return None
        swapped = Path(self.weights.get("mae", ""))
        if swapped.is_file() and holds_decoder(swapped):  # a swapped full checkpoint serves
            return swapped
        path = self.cache_dir / "weights" / FULL_CHECKPOINT
        if path.is_file():
            return path
        raise Unavailable(
            f"S4.8 needs the MAE decoder, shipped only in the full pretraining checkpoint "
            f"{FULL_CHECKPOINT} of the official MAE release (facebookresearch/mae, "
            f"'pretrain' table): put it at {path}")

    def mae_decoder(self, backbone, path: Path | None):
        from harness.experiments import reconstruction

        if path is None:
            return reconstruction.smoke_decoder(backbone.embed_dim, backbone.patch_size, self.profile.tile_out,
                                                seed=config.seed_for("random_init", "mae_decoder"))
        return reconstruction.load_decoder(path)


def once(build: Callable[[], Any]) -> Callable[[], Any]:
    """`build()` the first time, its result afterwards (views shared by every model)."""
    cache: list = []

    def get():
        if not cache:
            cache.append(build())
        return cache[0]
    return get


def _expected_failures() -> tuple[type[BaseException], ...]:
    """Failures of one model's measurement that must not take the other claims down: a bad
    checkpoint, a NaN embedding, a full or unwritable disk."""
    from harness.extract import NonFiniteEmbeddingError
    from harness.models import CheckpointError

    return (CheckpointError, NonFiniteEmbeddingError, OSError)


def holds_decoder(path: Path) -> bool:
    """Whether a checkpoint file holds MAE's decoder (the full pretraining checkpoint)."""
    from harness.models.checkpoint import read_checkpoint

    try:
        raw = read_checkpoint(path)
    except Exception:  # noqa: BLE001 - not a readable checkpoint: loading the encoder says why
        return False
    state = raw.get("model", raw) if isinstance(raw, dict) else {}
    return any(str(k).startswith("decoder_") for k in state)
