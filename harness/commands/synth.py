"""`harness synth --out DIR [--scale paper] [--limit N]`: write the synthetic world in the
five native layouts; `--scale paper` has the paper's image sizes and counts (Cityscapes
1024x2048 frames of 18 train and 3 val cities, ADE20K, FAIR1M 2000 px images, 200 BDD100K
videos of 200 frames, MOT17's seven sequences: about 6 GB), `--limit` a slice of it."""

from __future__ import annotations

import argparse
import os
import time

from harness.commands.extract import positive_int
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
    parser.add_argument("--scale", "--size", dest="size", choices=sorted(SIZES), default="smoke",
                        help="smoke (default: small, seconds) or paper (the paper's sizes and counts)")
    parser.add_argument("--limit", type=positive_int,
                        help="a slice: at most N images per city and split, ADE20K images, FAIR1M images, "
                             "videos, sequences and frames per video")
    parser.add_argument("--jobs", type=positive_int,
                        help="processes writing independent parts (default: 1 for smoke; for paper the "
                             "cores, at most 8)")
    parser.add_argument("--datasets", nargs="+", choices=DATASET_NAMES, default=list(DATASET_NAMES),
                        metavar="NAME", help=f"only these datasets (default all: {' '.join(DATASET_NAMES)})")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    jobs = args.jobs or (min(8, os.cpu_count() or 1) if args.size == "paper" else 1)
    out = write_world(args.out, seed=args.seed, size=args.size, names=args.datasets, limit=args.limit, jobs=jobs)
    for name in args.datasets:
        print(f"{name:12s} {out / name}")
    what = f"{args.size} scale" + (f", limit {args.limit}" if args.limit else "")
    print(f"synthetic world (seed {args.seed}, {what}) written in {time.perf_counter() - start:.1f} s")
    return 0
