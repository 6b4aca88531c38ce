"""`harness extract --model M --dataset D`: fill the embedding cache ahead of a claims run.

The views are the ones the claims read (harness.views.paper with the chosen profile),
so their store entries are the ones a later `pytest claims/` finds.
`--dataset synthetic-<name>` extracts from the synthetic world (written on first use under
<cache-dir>/synthetic-world/) and needs no download; with `--random-init --smoke` it also
needs no weights.

A failure is one line on stderr and a non-zero exit (see `harness --help`): a full cache
names the folder and the bytes needed, and leaves no partial files; Ctrl-C exits 130 and
also leaves none. Entries finished before the failure stay in the cache.
"""

from __future__ import annotations

import argparse
import pickle
import time
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
    parser.add_argument("--model", required=True, help="registry name (see `harness models`)")
    parser.add_argument("--dataset", required=True,
                        help="cityscapes, ade20k, fair1m, bdd100k_mot, mot17, or synthetic-<one of these>")
    parser.add_argument("--layers", type=int, nargs="+",
                        help="block outputs 1..12 (default: the layers the claims read from each view)")
    parser.add_argument("--weights", help="checkpoint file or hub id instead of the default source")
    parser.add_argument("--random-init", action="store_true", help="untrained model (seeded)")
    parser.add_argument("--smoke", action="store_true", help="with --random-init: small width-64 model")
    parser.add_argument("--profile", default="paper", help="subset sizes: paper (default) or smoke")
    parser.add_argument("--limit", type=positive_int, help="only the first N source images/videos of each view")
    parser.add_argument("--batch-size", type=positive_int, help="images per batch (default: chosen to fit)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--cache-dir", help="harness cache (default $VITCLAIMS_CACHE or ~/.cache/vit-local-claims)")
    parser.add_argument("--data-root", help="folder holding one folder per dataset (default $VITCLAIMS_DATA)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
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
    from harness.extract import embeddings
    from harness.profiles import PROFILES
    from harness.store import default_store
    from harness.views.paper import views_to_extract

    if args.profile not in PROFILES:
        raise UsageError(f"unknown profile {args.profile!r}; expected one of {', '.join(PROFILES)}")
    check_device(args.device)
    backbone = load_backbone(args)
    name, root = dataset_root(args.dataset, args.data_root, args.cache_dir)
    store = default_store(args.cache_dir)
    print(f"{backbone!r}\nstore {store.root}")
    for view, layers in views_to_extract(PROFILES[args.profile], name, root, backbone.depth,
                                         limit=args.limit):
        started = time.perf_counter()
        arrays = embeddings(backbone, view, store, layers=args.layers or layers,
                            batch_size=args.batch_size, progress=not args.quiet)
        first = next(iter(arrays.values()))
        print(f"{view.key}: {len(view)} images -> layers {sorted(arrays)} of {tuple(first.shape)} "
              f"float16 ({time.perf_counter() - started:.1f} s)")
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


def load_backbone(args: argparse.Namespace):
    """The model, with a damaged --weights file reported as a CheckpointFormatError: torch
    and safetensors say so with errors of their own (a truncated zip is a RuntimeError)."""
    from safetensors import SafetensorError

    from harness.models import CheckpointFormatError, load

    try:
        return load(args.model, weights=args.weights, device=args.device,
                    random_init=args.random_init, smoke=args.smoke, cache_dir=args.cache_dir)
    except (pickle.UnpicklingError, EOFError, RuntimeError, SafetensorError) as err:
        if not (args.weights and Path(args.weights).expanduser().is_file()):
            raise
        reason = "the file ends too early" if isinstance(err, EOFError) else str(err).strip().splitlines()[0]
        raise CheckpointFormatError(f"cannot read the checkpoint {args.weights} (damaged, cut short "
                                    f"or not a checkpoint): {reason}") from err
