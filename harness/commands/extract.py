"""`harness extract --model M --dataset D`: fill the embedding cache ahead of a claims run.

The views are the ones the claims read (harness.views.paper with the chosen profile), so
their store entries are the ones a later `pytest claims/` finds. `--model` and `--dataset`
take comma-separated lists; the work is one unit per (model, view).
`--dataset synthetic-<name>` extracts from the synthetic world (written on first use under
<cache-dir>/synthetic-world/) and needs no download; with `--random-init --smoke` it also
needs no weights.

Executors (harness.cluster): `serial` (default) extracts here, one unit after the other;
`local` runs --shards processes on this machine (default one per GPU, shard i on GPU i);
`slurm` submits a Slurm array job through submitit, one task per shard (default one shard
per unit), with --partition, --gpus-per-node, --timeout-min, --array-parallelism and logs
under --log-folder. Units whose entries are all in the cache and verify are skipped, so
rerunning a command redoes only what is missing (a killed shard's unfinished units). Jobs on
several machines may share one cache folder: harness.store's guarantees hold across machines.

`--precision fp32` (default) or `bf16` (autocast; refused where the device has no native
bf16): the precision is part of each entry's key, and a claims run reads the entries of
its own precision.

A failure is one line on stderr and a non-zero exit (see `harness --help`): a full cache
names the folder and the bytes needed, and leaves no partial files; Ctrl-C exits 130 and
also leaves none. Entries finished before the failure stay in the cache.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from harness import config
from harness.cli import UsageError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "extract",
        help="extract per-layer patch embeddings of a dataset's claim views into the cache",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="registry name(s), comma-separated (see `harness models`)")
    parser.add_argument("--dataset", required=True,
                        help="cityscapes, ade20k, fair1m, bdd100k_mot, mot17, or synthetic-<one of these>; "
                             "comma-separated for several")
    parser.add_argument("--layers", type=int, nargs="+",
                        help="block outputs 1..12 (default: the layers the claims read from each view)")
    parser.add_argument("--weights", help="checkpoint file or hub id instead of the default source (one model)")
    parser.add_argument("--random-init", action="store_true", help="untrained model (seeded)")
    parser.add_argument("--smoke", action="store_true", help="with --random-init: small width-64 model")
    parser.add_argument("--profile", default="paper", help="subset sizes: paper (default) or smoke")
    parser.add_argument("--limit", type=positive_int, help="only the first N source images/videos of each view")
    parser.add_argument("--batch-size", type=positive_int, help="images per batch (default: chosen to fit)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available; local and "
                                         "slurm jobs use their own GPU, or cpu if given)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                        help="fp32 (default, the paper profile's) or bf16 (the fast GPU path)")
    parser.add_argument("--cache-dir", help="harness cache (default $VITCLAIMS_CACHE or ~/.cache/vit-local-claims)")
    parser.add_argument("--data-root", help="folder holding one folder per dataset (default $VITCLAIMS_DATA)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    cluster = parser.add_argument_group("parallel extraction (harness.cluster, through submitit)")
    cluster.add_argument("--executor", default="serial", choices=("serial", "local", "slurm"),
                         help="serial (default): here; local: processes on this machine; slurm: an array job")
    cluster.add_argument("--shards", type=positive_int,
                         help="jobs to deal the units into (default: local one per GPU, slurm one per unit)")
    cluster.add_argument("--partition", help="slurm: partition")
    cluster.add_argument("--account", help="slurm: account")
    cluster.add_argument("--qos", help="slurm: quality of service")
    cluster.add_argument("--gpus-per-node", type=positive_int, default=1,
                         help="slurm: GPUs per array task, one process each (default 1)")
    cluster.add_argument("--cpus-per-task", type=positive_int, default=10, help="slurm: CPUs per process (default 10)")
    cluster.add_argument("--timeout-min", type=positive_int, default=240,
                         help="slurm: time limit per task in minutes (a task that hits it is requeued; default 240)")
    cluster.add_argument("--array-parallelism", type=positive_int, default=64,
                         help="slurm: array tasks running at once (default 64)")
    cluster.add_argument("--log-folder", help="local and slurm: job logs (default <cache-dir>/cluster-logs)")
    parser.set_defaults(func=run)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def dataset_root(dataset: str, data_root, cache_dir) -> tuple[str, Path]:
    """(dataset name, its folder): a real dataset under the data root, or the synthetic world."""
    from harness import data

    name = dataset.removeprefix("synthetic-")
    if name not in data.DATASET_NAMES:
        raise UsageError(f"unknown dataset {dataset!r}; expected one of {', '.join(data.DATASET_NAMES)} "
                         "or synthetic-<name>")
    if dataset.startswith("synthetic-"):
        from harness.data import synthetic

        world = synthetic.ensure_world(config.cache_dir(cache_dir), seed=config.ROOT_SEED)
    else:
        root = config.data_root(data_root)
        if root is None:
            raise UsageError(f"no data root: pass --data-root or set ${config.DATA_ENV} to the folder "
                             f"holding '{name}/'. {data.HOW_TO_GET.get(name, '')}")
        world = root
    data.check_layout(name, world / name)
    return name, world / name


def run(args: argparse.Namespace) -> int:
    from harness import cluster
    from harness.profiles import PROFILES
    from harness.store import default_store

    if args.profile not in PROFILES:
        raise UsageError(f"unknown profile {args.profile!r}; expected one of {', '.join(PROFILES)}")
    if args.executor != "serial" and args.device not in (None, "cpu"):
        raise UsageError(f"--device {args.device}: {args.executor} jobs each use their own GPU; "
                         "only --device cpu can be given with them")
    check_device(args.device)
    models = [name for name in args.model.split(",") if name]
    if args.weights and len(models) != 1:
        raise UsageError(f"--weights names one checkpoint: give one --model, not {args.model}")
    request = cluster.ExtractRequest(
        models=tuple(models),
        datasets=tuple((name, str(folder)) for name, folder in
                       (dataset_root(d, args.data_root, args.cache_dir) for d in args.dataset.split(",") if d)),
        profile=args.profile, weights=args.weights, random_init=args.random_init, smoke=args.smoke,
        cache_dir=str(config.cache_dir(args.cache_dir)), limit=args.limit,
        layers=tuple(args.layers) if args.layers else None, batch_size=args.batch_size,
        precision=args.precision, device=args.device, progress=not args.quiet)
    store = default_store(args.cache_dir)
    if args.executor == "serial":
        return _serial(request, store)

    units = cluster.plan(request)
    todo = [unit for unit in units if not unit.stored]
    print(f"{len(units)} units ((model, view) pairs); {len(units) - len(todo)} already in the cache {store.root}")
    if not todo:
        return 0
    from harness import devices

    shards = cluster.deal(todo, args.shards or (max(1, devices.gpu_count()) if args.executor == "local"
                                                 else len(todo)))
    slurm = cluster.SlurmOptions(partition=args.partition, gpus_per_node=args.gpus_per_node,
                                 cpus_per_task=args.cpus_per_task, timeout_min=args.timeout_min,
                                 array_parallelism=args.array_parallelism, account=args.account, qos=args.qos)
    log_folder = Path(args.log_folder).expanduser() if args.log_folder else Path(request.cache_dir) / "cluster-logs"
    outcome = cluster.run_shards(request, shards, args.executor, log_folder=log_folder, slurm=slurm)
    if outcome.failures:
        failed = "; ".join(f"shard {i + 1}: {why}" for i, why in sorted(outcome.failures.items()))
        print(f"harness extract: error: {len(outcome.failures)} of {len(shards)} shards failed ({failed}); "
              f"rerun the same command to redo their units (logs in {log_folder})", file=sys.stderr)
        return 1
    return 0


def _serial(request, store) -> int:
    """Every unit here, on --device: the models loaded once each, entries read or built."""
    from harness import cluster, devices

    device = request.device or ("cuda" if devices.gpu_count() else "cpu")
    for name in request.models:
        backbone = cluster.load_model(request, name, device)
        devices.check_precision(request.precision, backbone.device)
        print(f"{backbone!r}\nstore {store.root}")
        one = replace(request, models=(name,))
        units = cluster.plan(one, {name: backbone}, check_stored=False)
        cluster.extract_units(one, units, device=str(backbone.device), backbones={name: backbone})
    return 0


def check_device(device: str | None) -> None:
    """A device torch can use here, before minutes of loading fail on it."""
    if device is None:
        return
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError as err:
        raise UsageError(f"--device {device}: {str(err).splitlines()[0]}") from err
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: torch sees no CUDA device on this machine; use --device cpu")
