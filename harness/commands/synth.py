"""`harness synth --out DIR`: write the synthetic world in the five native layouts."""

from __future__ import annotations

import argparse
import time

from harness.data import DATASET_NAMES
from harness.data.synthetic import SIZES, write_world


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write the synthetic world (all five datasets in their native layouts)",
        description="Write DIR/<name>/ for each dataset, readable by open_dataset(name, DIR/name, split).",
    )
    parser.add_argument("--out", required=True, help="folder to write into (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    parser.add_argument("--size", choices=sorted(SIZES), default="smoke", help="world size (default smoke)")
    parser.add_argument("--datasets", nargs="+", choices=DATASET_NAMES, default=list(DATASET_NAMES),
                        metavar="NAME", help=f"only these datasets (default all: {' '.join(DATASET_NAMES)})")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    out = write_world(args.out, seed=args.seed, size=args.size, names=args.datasets)
    for name in args.datasets:
        print(f"{name:12s} {out / name}")
    print(f"synthetic world (seed {args.seed}) written in {time.perf_counter() - start:.1f} s")
    return 0
