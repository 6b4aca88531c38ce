"""Filling the embedding cache in parallel: the work cut into (model, view) units, the units
dealt into shards, each shard run as one job by an executor.

    request = ExtractRequest(models=("dino", "mae"), datasets=(("cityscapes", "/data/cityscapes"),))
    units = plan(request)                   # every (model, view) the claims read, with its layers
    todo = [u for u in units if not u.stored]   # resume: a unit whose entries all verify is done
    shards = deal(todo, 8)                  # balanced by the bytes each unit writes
    outcome = run_shards(request, shards, "slurm", SlurmOptions(partition="gpu"), log_folder)

Executors (all through submitit, the way the official DINO, DINOv2, MAE and iBOT
repositories launch their jobs, except `serial`):
- serial: the shards one after the other in this process;
- local: one process per shard on this machine (submitit's LocalExecutor), shard i on GPU
  i % k with k GPUs (its CUDA_VISIBLE_DEVICES), all at once;
- slurm: one Slurm array task per shard (submitit's SlurmExecutor), each with
  --gpus-per-node GPUs and as many tasks, task r extracting units r, r + n, ... on its
  GPU; at most --array-parallelism tasks run at once; a task stopped by its time limit or
  preempted is requeued (submitit's Checkpointable) and skips the entries it finished.

Why jobs on many machines may share one cache: see harness.store (content-addressed
entries, each layer committed by one folder rename, verified on every read; the file locks
only save duplicate work on one machine). A unit is extracted by `embeddings()`, which reads
an entry that is there and builds one that is not, so a rerun of the same command redoes
exactly the units whose entries are missing or damaged, whatever killed them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import submitit

log = logging.getLogger(__name__)

EXECUTORS = ("serial", "local", "slurm")


@dataclass(frozen=True)
class ExtractRequest:
    """What to extract: the same for every shard (it travels to the jobs pickled)."""

    models: tuple[str, ...]
    datasets: tuple[tuple[str, str], ...]  # (name, folder): resolved by the caller
    profile: str = "paper"
    weights: str | None = None  # a checkpoint or hub id, with a single model only
    random_init: bool = False
    smoke: bool = False
    cache_dir: str | None = None
    limit: int | None = None
    layers: tuple[int, ...] | None = None  # None: the layers the claims read from each view
    batch_size: int | None = None
    precision: str = "fp32"
    device: str | None = None  # None: the job's first GPU, else the CPU
    progress: bool = False

    def __post_init__(self):
        if self.weights and len(self.models) != 1:
            raise ValueError(f"--weights names one checkpoint: give one model, not {', '.join(self.models)}")


@dataclass(frozen=True)
class Unit:
    """One (model, view) to extract, as planned: the view is found again by its key."""

    model: str
    dataset: str
    view_key: str
    images: int
    layers: tuple[int, ...]
    bytes: int  # what its entries take on disk (float16 tokens)
    stored: bool = False  # every layer already in the cache and verified

    def __str__(self) -> str:
        return f"{self.model} {self.view_key}"


@dataclass
class ShardResult:
    """What one shard did: per unit (model, view key, built?, seconds)."""

    done: list[tuple[str, str, bool, float]] = field(default_factory=list)


def load_model(request: ExtractRequest, name: str, device: str | None):
    """The backbone `name` of the request on `device` (a damaged --weights file is a
    CheckpointError naming it: harness.models.checkpoint.read_checkpoint)."""
    from harness import models

    gsd = models.FAIR1M_GSD_M if models.get_spec(name).gsd_aware else None  # as the claims load it
    return models.load(name, weights=request.weights, device=device, random_init=request.random_init,
                       smoke=request.smoke, cache_dir=request.cache_dir, gsd=gsd)


def views_of(request: ExtractRequest, backbone, dataset: str, folder: str) -> list[tuple[Any, list[int]]]:
    """(view, layers) of `dataset` for this backbone, as the claims read them."""
    from harness.profiles import PROFILES
    from harness.views.paper import views_to_extract

    found = views_to_extract(PROFILES[request.profile], dataset, Path(folder), backbone.depth,
                             limit=request.limit, patch_size=backbone.patch_size)
    return [(view, list(request.layers) if request.layers else layers) for view, layers in found]


def plan(request: ExtractRequest, backbones: dict[str, Any] | None = None,
         check_stored: bool = True) -> list[Unit]:
    """Every unit of the request, in a fixed order (model, dataset, view), each marked
    `stored` when all its layers are in the cache and verify. `backbones`: models already
    loaded (else each is loaded on the CPU, which is enough to know its keys)."""
    from harness.extract import is_stored, store_entry
    from harness.store import default_store

    store = default_store(request.cache_dir)
    units = []
    for name in request.models:
        backbone = (backbones or {}).get(name) or load_model(request, name, "cpu")
        for dataset, folder in request.datasets:
            for view, layers in views_of(request, backbone, dataset, folder):
                entry = store_entry(backbone, view, layers, request.precision)
                size = 2 * len(entry.layers) * int(_product(entry.shape))
                stored = check_stored and is_stored(backbone, view, store, layers, request.precision)
                units.append(Unit(name, dataset, view.key, len(view), tuple(entry.layers), size, stored))
    return units


def deal(units: Sequence[Unit], shards: int) -> list[list[Unit]]:
    """At most `shards` non-empty shards with about equal bytes to write (largest first onto
    the lightest shard); each shard in plan order, so a model is loaded once per shard."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    order = {unit: i for i, unit in enumerate(units)}
    bins: list[list[Unit]] = [[] for _ in range(min(shards, len(units)))]
    loads = [0] * len(bins)
    for unit in sorted(units, key=lambda u: (-u.bytes, order[u])):
        lightest = loads.index(min(loads))
        bins[lightest].append(unit)
        loads[lightest] += unit.bytes
    return [sorted(b, key=order.__getitem__) for b in bins]


def extract_units(request: ExtractRequest, units: Sequence[Unit], device: str | None = None,
                  say: Callable[[str], None] = print, backbones: dict[str, Any] | None = None) -> ShardResult:
    """The body of every shard: load each model once on `device` (unless given loaded), find
    each unit's view by its key, and extract it through the store (read if it is there,
    built if not)."""
    from harness import devices
    from harness.extract import embeddings, is_stored
    from harness.store import default_store

    device = device or request.device or ("cuda:0" if devices.gpu_count() else "cpu")
    devices.pin(device)
    devices.check_precision(request.precision, device)
    store = default_store(request.cache_dir)
    folders = dict(request.datasets)
    result = ShardResult()
    for name in dict.fromkeys(unit.model for unit in units):
        backbone = (backbones or {}).get(name) or load_model(request, name, device)
        mine = [unit for unit in units if unit.model == name]
        for dataset in dict.fromkeys(unit.dataset for unit in mine):
            views = {view.key: view for view, _ in views_of(request, backbone, dataset, folders[dataset])}
            for unit in (u for u in mine if u.dataset == dataset):
                view = views.get(unit.view_key)
                if view is None:
                    raise LookupError(f"{unit}: no such view of {dataset} any more (the data or the harness "
                                      "changed since the plan): plan again")
                started = time.perf_counter()
                built = not is_stored(backbone, view, store, unit.layers, request.precision)
                arrays = embeddings(backbone, view, store, layers=unit.layers, batch_size=request.batch_size,
                                    progress=request.progress, precision=request.precision)
                seconds = time.perf_counter() - started
                first = next(iter(arrays.values()))
                say(f"{view.key}: {len(view)} images -> layers {sorted(arrays)} of {tuple(first.shape)} "
                    f"float16 ({seconds:.1f} s{'' if built else ', from the cache'})")
                result.done.append((name, unit.view_key, built, seconds))
    return result


class ShardTask(submitit.helpers.Checkpointable):
    """A shard as a submitit job. With several tasks per job (--gpus-per-node G on Slurm:
    G tasks), task r extracts units r, r + G, ... on its node's GPU r. Checkpointable: a
    job stopped by its time limit or preemption is requeued with the same units, and the
    entries it finished are read, not built again."""

    def __call__(self, request: ExtractRequest, units: Sequence[Unit]) -> ShardResult:
        try:
            env = submitit.JobEnvironment()
            rank, tasks = env.global_rank, env.num_tasks
            local = env.local_rank
        except RuntimeError:  # not inside a submitit job
            rank, tasks, local = 0, 1, 0
        from harness import devices

        device = request.device or (f"cuda:{local}" if devices.gpu_count() > local else "cpu")
        return extract_units(request, list(units)[rank::tasks], device=device)


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    gpus_per_node: int = 1
    cpus_per_task: int = 10  # DINOv2's launcher asks for 10 per GPU task
    timeout_min: int = 240
    array_parallelism: int = 64
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    mem_gb: int | None = None

    def parameters(self) -> dict[str, Any]:
        """submitit's SlurmExecutor parameters (sbatch's names): one task per GPU, as
        DINOv2's launcher does, and a signal 120 s before the time limit (requeue)."""
        params: dict[str, Any] = {
            "gpus_per_node": self.gpus_per_node, "ntasks_per_node": max(1, self.gpus_per_node),
            "cpus_per_task": self.cpus_per_task, "nodes": 1, "time": self.timeout_min,
            "array_parallelism": self.array_parallelism, "signal_delay_s": 120, "job_name": "harness-extract",
        }
        for name in ("partition", "account", "qos", "constraint"):
            if getattr(self, name):
                params[name] = getattr(self, name)
        if self.mem_gb is not None:
            params["mem"] = f"{self.mem_gb}GB"
        return params


def slurm_executor(log_folder: str | os.PathLike, options: SlurmOptions) -> submitit.SlurmExecutor:
    executor = submitit.SlurmExecutor(folder=str(log_folder), max_num_timeout=30)
    executor.update_parameters(**options.parameters())
    return executor


@dataclass
class Outcome:
    """Per shard: its result, or why it failed."""

    results: dict[int, ShardResult] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)


def run_shards(request: ExtractRequest, shards: Sequence[Sequence[Unit]], executor: str,
               log_folder: str | os.PathLike | None = None, slurm: SlurmOptions | None = None,
               task: Callable | None = None, gpus: int | None = None,
               say: Callable[[str], None] = print, poll_s: float = 2.0) -> Outcome:
    """Run every shard with `executor` and wait for them all. `task(request, units)` is the
    job body (default ShardTask()); `gpus` the GPUs of this machine (local executor)."""
    outcome = Outcome()
    if executor == "serial":
        for index, units in enumerate(shards):
            outcome.results[index] = extract_units(request, units, say=say)
        return outcome
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; expected one of {', '.join(EXECUTORS)}")
    task = task or ShardTask()
    folder = Path(log_folder or Path(request.cache_dir or ".") / "cluster-logs") / "%j"
    jobs: dict[int, Any] = {}
    if executor == "local":
        from harness import devices

        gpus = devices.gpu_count() if gpus is None else gpus
        for index, units in enumerate(shards):
            local = submitit.LocalExecutor(folder=str(folder))
            if gpus:
                local.update_parameters(gpus_per_node=1, visible_gpus=[index % gpus], timeout_min=7 * 24 * 60)
            else:
                local.update_parameters(timeout_min=7 * 24 * 60)
            jobs[index] = local.submit(task, replace(request, device=None), list(units))
    else:
        cluster = slurm_executor(folder, slurm or SlurmOptions())
        submitted = cluster.map_array(task, [replace(request, device=None)] * len(shards), [list(u) for u in shards])
        jobs = dict(enumerate(submitted))
        say(f"submitted Slurm array job {submitted[0].job_id.split('_')[0]} ({len(shards)} shards); "
            f"logs in {str(folder).replace('%j', '<job id>')}")
    for index in _in_order_of_completion(jobs, poll_s):
        job = jobs[index]
        try:
            results = job.results()
        except Exception as err:  # noqa: BLE001 - a failed shard is reported, the others go on
            outcome.failures[index] = f"job {job.job_id}: {_why(err)}"
            say(f"shard {index + 1}/{len(shards)} failed ({outcome.failures[index]})")
            continue
        merged = ShardResult([done for result in results for done in result.done])
        outcome.results[index] = merged
        built = sum(b for _, _, b, _ in merged.done)
        say(f"shard {index + 1}/{len(shards)} done: {len(merged.done)} units, {built} built (job {job.job_id})")
    return outcome


def _in_order_of_completion(jobs: dict[int, Any], poll_s: float):
    waiting = dict(jobs)
    while waiting:
        finished = [index for index, job in waiting.items() if job.done()]
        for index in finished:
            del waiting[index]
            yield index
        if waiting and not finished:
            time.sleep(poll_s)


def _why(err: BaseException) -> str:
    """One line: submitit's own errors say first what happened (killed, timed out ...)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0][:300]}" if lines else type(err).__name__


def _product(shape) -> int:
    total = 1
    for n in shape:
        total *= int(n)
    return total
