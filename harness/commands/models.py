"""`harness models`: the registry as a table, with whether weights are on this machine."""

from __future__ import annotations

import argparse

from tabulate import tabulate


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the registered models and whether their weights are available locally",
        description=(
            "The six models of the paper. Default weights come from the Hugging Face hub "
            "(timm repos, read from the local hub cache first) or, for models without a hub "
            "copy, from the official release file saved under <cache-dir>/weights/. Another "
            "checkpoint can always be given as a file path or hub id."
        ),
    )
    parser.add_argument("--cache-dir", help="harness cache (default $VITCLAIMS_CACHE or ~/.cache/vit-local-claims)")
    parser.set_defaults(func=run)


def rows(cache_dir=None) -> list[dict[str, str]]:
    from harness.models import REGISTRY, local_status

    table = []
    for name, spec in REGISTRY.items():
        available, where = local_status(spec, cache_dir)
        table.append({
            "name": name,
            "model": spec.title,
            "family": spec.family,
            "patch": str(spec.patch_size),
            "mean/std": "0.5/0.5" if spec.mean == (0.5, 0.5, 0.5) else "ImageNet",
            "default source": spec.source,
            "local": ("yes: " if available else "no: needs ") + where,
        })
    return table


def run(args: argparse.Namespace) -> int:
    from harness.models.weights import weights_dir

    print(tabulate(rows(args.cache_dir), headers="keys"))
    print(f"\nofficial release files go in {weights_dir(args.cache_dir)}/ under the names shown; "
          "`harness doctor` says where to download each.")
    return 0
