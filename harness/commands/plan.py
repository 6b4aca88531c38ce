"""`harness plan`: what `pytest claims/` will do and cost, before anything runs.

Per model and section: source images, views, images fed to the model, forward passes,
patches, bytes persisted in the embedding store (exact) and the scratch peak, the exact
1-NN searches (their TFLOP), the linear-probe fits and steps; then what the store already
holds, whether the rest fits the cache's filesystem, and the time from a short calibration
of this machine (or --assume h100: stated figures for an H100-class GPU, with this
machine's CPU for the host's share). Options mirror the claims run's.

Exit status 1 (after the table) when the store's new entries do not fit, as the claims run
itself would stop.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.commands.extract import positive_int


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan", help="what a claims run will extract, store, search and fit, and how long it takes",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="comma-separated models, as --claims-models (default: the run's)")
    parser.add_argument("--profile", default="paper", help="paper (default) or smoke")
    parser.add_argument("--data-root", help="folder holding the datasets (default $VITCLAIMS_DATA; without "
                                            "one the counts are the paper's nominal sizes)")
    parser.add_argument("--cache-dir", help="embedding and measurement cache (default $VITCLAIMS_CACHE or "
                                            "~/.cache/vit-local-claims)")
    parser.add_argument("--train-seeds", type=positive_int, default=1, help="as --claims-train-seeds (default 1)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="as --claims-precision: the store entries of this precision count as cached")
    parser.add_argument("--workers", type=positive_int, default=4, help="pytest -n workers (default 4)")
    parser.add_argument("--sections", nargs="+", metavar="SECTION",
                        help="only these sections (prefixes of segmentation/cityscapes, segmentation/ade20k, "
                             "overlap, reconstruction, retrieval/fair1m, association/bdd100k_mot, "
                             "association/mot17)")
    parser.add_argument("--limit", type=positive_int,
                        help="the first N source images or videos of each subset (as harness extract)")
    parser.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=True,
                        help="time this machine for the estimate (default; --no-calibrate: counts and bytes "
                             "only, or with --assume the stated host-CPU defaults)")
    parser.add_argument("--assume", metavar="DEVICE", help="also estimate for a device from stated figures: h100")
    parser.add_argument("--device", help="the device to calibrate (default: cuda when available)")
    parser.add_argument("--json", metavar="FILE", help="write the plan as JSON (atomically)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from harness import plan as planning
    from harness.commands.extract import check_device
    from harness.io import atomic_write_text

    check_device(args.device)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip()) if args.models else None
    if models:
        from harness.models import get_spec

        for name in models:
            get_spec(name)  # an unknown model is a usage error naming the known ones
    options = planning.PlanOptions(profile=args.profile, models=models, data_root=_data_root(args.data_root),
                                   cache_dir=args.cache_dir, train_seeds=args.train_seeds, precision=args.precision,
                                   limit=args.limit, sections=tuple(args.sections) if args.sections else None,
                                   workers=args.workers)
    plan = planning.build_plan(options)
    estimates = {}
    measured = None
    if args.calibrate:
        from harness import calibration

        measured = calibration.measure(plan, args.device)
        planning.estimate(plan, measured)
        estimates["measured"] = _estimate_record(plan)
    if args.assume:
        from harness import calibration

        planning.estimate(plan, calibration.assumed(args.assume, measured))
        estimates["assumed"] = _estimate_record(plan)
    print(_header(plan))
    print(planning.table(plan))
    for line in planning.summary(plan):
        print(line)
    if "measured" in estimates and "assumed" in estimates:
        m = estimates["measured"]
        print(f"on this machine ({m['device']}, measured): serial {planning.human_seconds(m['serial_seconds'])}, "
              f"with {plan.options.workers} workers about {planning.human_seconds(m['wall_seconds'])}")
    if args.json:
        record = plan.as_dict() | {"estimates": estimates}
        Path(args.json).expanduser().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.json).expanduser(), json.dumps(record, indent=1, default=str) + "\n")
        print(f"plan written to {args.json}")
    if not plan.fits:
        raise planning.NotEnoughRoomError(plan.store_root, plan.room_needed, plan.free_bytes,
                                          plan.scratch_peak * max(1, plan.options.workers))
    return 0


def _data_root(explicit: str | None) -> Path | None:
    from harness import config
    from harness.cli import UsageError

    root = config.data_root(explicit)
    if explicit and not root.is_dir():
        raise UsageError(f"--data-root {explicit!r}: not a folder")
    return root


def _estimate_record(plan) -> dict:
    totals = plan.totals()
    return {"device": plan.device.device, "figures": plan.device.as_dict(), "seconds": totals["seconds"],
            "serial_seconds": totals["serial_seconds"], "wall_seconds": totals["wall_seconds"],
            "per_section": {f"{w.model} {w.section}": dict(w.time) for w in plan.work}}


def _header(plan) -> str:
    o = plan.options
    extra = f", limit {o.limit}" if o.limit else ""
    extra += f", sections {','.join(o.sections)}" if o.sections else ""
    return (f"harness plan: profile {o.profile}, models {','.join(o.models)}, data root {o.data_root or 'unset'}, "
            f"cache {o.cache_dir}, {o.workers} workers, train seeds {o.train_seeds}{extra}\n"
            "(images: of the views each section reads; fwd passes and patches: what it extracts itself, a "
            "pass stopping at block L counting L/depth; persist: its new store entries; 1-NN TFLOP: "
            "2 x queries x base x dim)")
