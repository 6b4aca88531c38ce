"""`harness doctor`: what this machine has for a claims run (weights, datasets, GPU, faiss)
and, for everything missing, exactly how to get it. Never touches the network."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check weights, datasets, GPU and faiss; say how to get what is missing",
    )
    parser.add_argument("--cache-dir", help="harness cache (default $VITCLAIMS_CACHE or ~/.cache/vit-local-claims)")
    parser.add_argument("--data-root", help="folder holding one folder per dataset (default $VITCLAIMS_DATA)")
    parser.set_defaults(func=run)


def check_weights(cache_dir=None) -> list[tuple[str, bool, str]]:
    from harness.models import REGISTRY, local_status
    from harness.models.weights import hub_cache_folder, release_file_path

    results = []
    for name, spec in REGISTRY.items():
        available, where = local_status(spec, cache_dir)
        if available:
            results.append((f"weights {name}", True, where))
            continue
        how = []
        if spec.hub_id:
            how.append(f"`huggingface-cli download {spec.hub_id}` (into the hub cache {hub_cache_folder()})")
        how.append(f"download {spec.release_url} and save it as {release_file_path(spec, cache_dir)}")
        results.append((f"weights {name}", False, " or ".join(how)))
    return results


def check_datasets(data_root=None) -> list[tuple[str, bool, str]]:
    from harness import config

    try:
        from harness import data
    except ImportError as err:  # dataset readers not installed in this checkout
        return [("datasets", False, f"harness.data unavailable ({err})")]
    root = config.data_root(data_root)
    results = []
    for name in data.DATASET_NAMES:
        if root is None:
            results.append((f"dataset {name}", False,
                            f"no data root: pass --data-root or set ${config.DATA_ENV}. "
                            f"{data.HOW_TO_GET.get(name, '')}"))
            continue
        try:
            data.check_layout(name, root / name)
        except data.DatasetLayoutError as err:
            results.append((f"dataset {name}", False, str(err)))
        else:
            results.append((f"dataset {name}", True, str(root / name)))
    return results


def check_gpu() -> list[tuple[str, bool, str]]:
    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return [("gpu", True, f"CUDA {torch.version.cuda}: {names}")]
    return [("gpu", False, "no CUDA device: extraction runs on CPU (slow for the paper "
                           "profile); install a CUDA build of torch on a GPU machine")]


def check_faiss() -> list[tuple[str, bool, str]]:
    installed = {}
    for dist in ("faiss-gpu", "faiss-cpu", "faiss-gpu-cu12", "faiss-gpu-cu11"):
        try:
            installed[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    if importlib.util.find_spec("faiss") is None:
        return [("faiss", False, "not installed: pip install -e '.[cpu]' (or '.[gpu]' on a GPU machine)")]
    import faiss

    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    variant = ", ".join(f"{d} {v}" for d, v in installed.items()) or "faiss (unknown wheel)"
    if len([d for d in installed if d.startswith("faiss-")]) > 1:
        return [("faiss", False, f"{variant}: two faiss wheels share `import faiss`; keep one")]
    return [("faiss", True, f"{variant}, {gpus} GPU(s) visible to faiss")]


def run(args: argparse.Namespace) -> int:
    checks = (check_weights(args.cache_dir) + check_datasets(args.data_root)
              + check_gpu() + check_faiss())
    for what, ok, detail in checks:
        print(f"[{'ok' if ok else 'missing'}] {what}: {detail}")
    missing = sum(not ok for _, ok, _ in checks)
    print(f"\n{len(checks) - missing} present, {missing} missing")
    return 0
