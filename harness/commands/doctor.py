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
    """torch and CUDA versions, then one line per GPU: name, memory, compute capability and
    whether it extracts in bf16 (--precision bf16 needs it)."""
    import torch

    from harness import devices

    versions = f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none (a CPU build of torch)'}"
    found = devices.gpus()
    if not found:
        bf16 = "fp32 or bf16 (native here)" if devices.cpu_has_native_bf16() else "fp32 (no native bf16 here)"
        return [("gpu", False, f"{versions}; no CUDA device: extraction runs on CPU (slow for the paper "
                               f"profile) in {bf16}; install a CUDA build of torch on a GPU machine")]
    lines = [("gpu", True, f"{versions}; {len(found)} GPU(s): xdist worker i extracts on cuda:(i % {len(found)})")]
    for gpu in found:
        lines.append((f"gpu {gpu['index']}", True,
                      f"{gpu['name']}, {gpu['memory_gib']:.0f} GiB, compute capability {gpu['capability']}, "
                      f"bf16 {'yes' if gpu['bf16'] else 'no (fp32 only)'}"))
    return lines


FAISS_WHEELS = ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11")


def check_faiss() -> list[tuple[str, bool, str]]:
    """Which faiss wheel provides `import faiss` (faiss-cpu, faiss-gpu, none) and how many
    GPUs it sees. Without faiss-gpu the exact k-NN runs on a GPU through torch."""
    installed = {}
    for dist in FAISS_WHEELS:
        try:
            installed[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    if importlib.util.find_spec("faiss") is None:
        return [("faiss", False, "none installed: pip install -e '.[cpu]' (or '.[gpu]' on a GPU machine); "
                                 "the exact k-NN still runs (torch on a GPU, float64 on the CPU), slower")]
    import faiss

    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    variant = ", ".join(f"{d} {v}" for d, v in installed.items()) or "faiss (unknown wheel)"
    if len(installed) > 1:
        return [("faiss", False, f"{variant}: two faiss wheels share `import faiss`; keep one")]
    kind = "faiss-gpu" if any(d.startswith("faiss-gpu") for d in installed) else "faiss-cpu"
    note = "" if gpus or kind == "faiss-cpu" else " (a GPU build that sees no GPU)"
    return [("faiss", True, f"{variant} [{kind}], {gpus} GPU(s) visible to faiss{note}")]


def run(args: argparse.Namespace) -> int:
    checks = (check_weights(args.cache_dir) + check_datasets(args.data_root)
              + check_gpu() + check_faiss())
    for what, ok, detail in checks:
        print(f"[{'ok' if ok else 'missing'}] {what}: {detail}")
    missing = sum(not ok for _, ok, _ in checks)
    print(f"\n{len(checks) - missing} present, {missing} missing")
    return 0
