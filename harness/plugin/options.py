"""The claims run's options: registered in one place, namespaced `--claims-*` (like
pytest-benchmark's `--benchmark-*`), and validated at start-up with a message that names the
option and the value."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness import config as harness_config
from harness.measurements import DEFAULT_TOLERANCE

PAPER_MODELS = ("dino", "dinov2", "mae", "simmim", "ibot", "supervised")
BEYOND_THE_PAPER = ("scale_mae",)  # X.5: run on FAIR1M when its weights are there
PROFILES = ("paper", "smoke")
# A hub id: hf-hub:org/name, timm/name, org/name or a timm tag (letters, digits, . _ -).
HUB_ID = re.compile(r"^(hf-hub:|timm/)?[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".npz", ".pkl")
FOLDER_CHECKPOINTS = ("model.safetensors", "pytorch_model.bin")  # a hub snapshot folder


def addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vit-local-claims", "re-verifying the paper's claims (pytest claims/)")
    group.addoption("--claims-models", default=None, metavar="A,B",
                    help="comma-separated subset of the models to measure (default: the paper's six)")
    group.addoption("--claims-add-model", action="append", default=[], metavar="NAME=SOURCE:FAMILY",
                    help="add a backbone to the run, e.g. dinov3=hf-hub:timm/vit_base_patch16_dinov3.lvd1689m:"
                         "contrastive (FAMILY: contrastive, MIM or supervised); repeatable (X.4)")
    group.addoption("--claims-model-spec", action="append", default=[], metavar="FILE",
                    help="add the backbones of a TOML spec file ([[model]] tables); repeatable (X.4)")
    group.addoption("--claims-weights", action="append", default=[], metavar="NAME=PATH_OR_HUB_ID",
                    help="use these weights for model NAME: a checkpoint file, a folder holding one "
                         "(model.safetensors, pytorch_model.bin or the official release file), or a hub "
                         "id (hf-hub:org/name, timm/name, org/name); repeatable")
    group.addoption("--claims-data-root", default=None, metavar="DIR",
                    help=f"folder holding the datasets (default: ${harness_config.DATA_ENV})")
    group.addoption("--claims-cache-dir", default=None, metavar="DIR",
                    help=f"embedding and measurement cache (default: ${harness_config.CACHE_ENV} or "
                         "~/.cache/vit-local-claims)")
    group.addoption("--claims-profile", default="paper", metavar="NAME",
                    help="paper (default): the paper's sizes; smoke: a synthetic world and untrained "
                         "models (verdicts not judged)")
    group.addoption("--claims-report-dir", default="reports", metavar="DIR",
                    help="where claims.json/.md/.html are written (default: reports/)")
    group.addoption("--claims-baseline", default=None, metavar="FILE",
                    help="a claims.json of an earlier run: metric drops beyond --claims-tolerance fail (X.2)")
    group.addoption("--claims-bootstrap", default=None, metavar="N",
                    help="bootstrap resamples per claim (X.1; default 1000 on paper, 100 on smoke; 0: none)")
    group.addoption("--claims-train-seeds", default="1", metavar="N",
                    help="X.1: judge the few-shot claims on N independently drawn training subsets (default 1)")
    group.addoption("--claims-precision", default="fp32", metavar="fp32|bf16",
                    help="extraction arithmetic: fp32 (default, the paper's) or bf16 where the device has "
                         "it natively (then X.3 compares a fixed slice of every section with fp32)")
    group.addoption("--claims-tolerance", default=None, metavar="T",
                    help=f"absolute drop of a higher-is-better metric (mIoU, accuracy, R^2, rate of a "
                         f"good retrieval outcome) below --claims-baseline that fails as a regression "
                         f"(default {DEFAULT_TOLERANCE}; the same as --claims-threshold X.2:tolerance=T)")
    group.addoption("--claims-threshold", action="append", default=[], metavar="ID:NAME=VALUE",
                    help="override a claim's threshold, e.g. S3.2:ratio=0.8; repeatable (`harness claims` "
                         "lists them)")


@dataclass
class RunOptions:
    """The validated options of a claims run."""

    profile: str
    models: tuple[str, ...]
    weights: dict[str, str]
    added: dict[str, str]  # backbones added by spec: name -> family
    data_root: str | None
    cache_dir: str
    report_dir: str
    baseline: str | None
    bootstrap: int
    train_seeds: int
    tolerance: float
    thresholds: dict[str, dict[str, Any]] = field(default_factory=dict)
    precision: str = "fp32"
    workers: int = 1  # xdist workers (the pre-flight counts one scratch peak each)

    @property
    def untrained(self) -> bool:
        return self.profile == "smoke"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse(option: Any) -> RunOptions:
    """RunOptions from pytest's parsed options; `pytest.UsageError` for anything invalid."""
    profile = option.claims_profile
    if profile not in PROFILES:
        raise pytest.UsageError(f"--claims-profile {profile!r}: expected one of {', '.join(PROFILES)}")
    from harness.profiles import PROFILES as SIZES

    bootstrap = _count("--claims-bootstrap", option.claims_bootstrap, SIZES[profile].bootstrap, minimum=0)
    train_seeds = _count("--claims-train-seeds", option.claims_train_seeds, 1, minimum=1)
    tolerance = _tolerance(option.claims_tolerance)
    thresholds = parse_thresholds(option.claims_threshold)
    if tolerance is not None:
        thresholds.setdefault("X.2", {})["tolerance"] = tolerance
    tolerance = thresholds.get("X.2", {}).get("tolerance", DEFAULT_TOLERANCE)
    added = _add_models(option.claims_add_model, option.claims_model_spec, SIZES[profile].extra_models)
    models = _models(option.claims_models, added)
    data_root = harness_config.data_root(option.claims_data_root)
    if option.claims_data_root and not Path(option.claims_data_root).expanduser().is_dir():
        raise pytest.UsageError(f"--claims-data-root {option.claims_data_root!r}: not a folder")
    cache_dir = harness_config.cache_dir(option.claims_cache_dir)
    _check_writable("--claims-cache-dir", cache_dir)
    return RunOptions(
        profile=profile, models=models, weights=_weights(option.claims_weights), added=added,
        data_root=str(data_root) if data_root else None, cache_dir=str(cache_dir),
        report_dir=option.claims_report_dir, baseline=option.claims_baseline, bootstrap=bootstrap,
        train_seeds=train_seeds, tolerance=tolerance, thresholds=thresholds,
        precision=_precision(option.claims_precision),
    )


def _precision(raw: Any) -> str:
    """fp32, or bf16 where the run's first device (what worker 0 is pinned to) has it."""
    from harness import devices

    value = str(raw).strip().lower()
    if value not in devices.PRECISIONS:
        raise pytest.UsageError(f"--claims-precision {raw!r}: expected one of {', '.join(devices.PRECISIONS)}")
    try:
        devices.check_precision(value, devices.device_for_worker(0))
    except devices.PrecisionUnavailable as err:
        raise pytest.UsageError(f"--claims-precision {raw!r}: {err}") from None
    return value


def _count(name: str, raw: Any, default: int, minimum: int) -> int:
    if raw is None:
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise pytest.UsageError(f"{name} {raw!r}: expected a whole number >= {minimum}") from None
    if value < minimum:
        raise pytest.UsageError(f"{name} {raw!r}: expected a whole number >= {minimum}")
    return value


def _tolerance(raw: Any) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise pytest.UsageError(f"--claims-tolerance {raw!r}: expected a number >= 0") from None
    if not math.isfinite(value) or value < 0:
        raise pytest.UsageError(f"--claims-tolerance {raw!r}: expected a finite number >= 0")
    return value


def known_models() -> list[str]:
    """The registry's model names and the added ones (importing the registry loads torch and
    timm: only when needed)."""
    from harness.models import all_specs

    return list(all_specs())


def _add_models(texts: list[str], files: list[str], profile_texts: tuple[str, ...]) -> dict[str, str]:
    """Register the added backbones in this process (every xdist worker does the same)."""
    if not (texts or files or profile_texts):
        return {}
    from harness.models import SpecError, add_models

    for path in files:
        if not Path(path).expanduser().is_file():
            raise pytest.UsageError(f"--claims-model-spec {path!r}: no such file")
    try:
        specs = add_models([*profile_texts, *texts], [Path(f).expanduser() for f in files])
    except (SpecError, ValueError) as err:
        raise pytest.UsageError(f"--claims-add-model/--claims-model-spec: {err}") from None
    return {spec.name: spec.family for spec in specs}


def _models(raw: str | None, added: dict[str, str]) -> tuple[str, ...]:
    if not raw:
        return (*PAPER_MODELS, *BEYOND_THE_PAPER, *added)
    models = tuple(dict.fromkeys(m.strip() for m in raw.split(",") if m.strip()))
    known = known_models()
    unknown = [m for m in models if m not in known]
    if unknown or not models:
        raise pytest.UsageError(f"--claims-models {raw!r}: unknown {', '.join(unknown) or 'empty list'}; "
                                f"known models: {', '.join(known)}")
    return models


def _weights(values: list[str]) -> dict[str, str]:
    weights: dict[str, str] = {}
    known = known_models() if values else []
    for entry in values:
        name, sep, source = entry.partition("=")
        name, source = name.strip(), source.strip()
        where = f"--claims-weights {entry!r}"
        if not sep or not name or not source:
            raise pytest.UsageError(f"{where}: expected NAME=PATH_OR_HUB_ID, e.g. mae=/ckpt/mae.pth")
        if name not in known:
            raise pytest.UsageError(f"{where}: unknown model {name!r}; known models: {', '.join(known)}")
        if name in weights:
            raise pytest.UsageError(f"{where}: weights for {name!r} given twice")
        path = Path(source).expanduser()
        if path.is_dir():
            path = _checkpoint_in(path, name, where)
        if path.exists():
            problem = _unreadable(path)
            if problem:
                raise pytest.UsageError(f"{where}: {path} exists but cannot be read ({problem})")
            weights[name] = str(path)
        elif source.startswith(("/", ".", "~")) or source.endswith(CHECKPOINT_SUFFIXES) or not HUB_ID.match(source):
            raise pytest.UsageError(
                f"{where}: {source!r} is neither an existing file or folder nor a hub id "
                "(hf-hub:org/name, timm/name or org/name)")
        else:
            weights[name] = source
    return weights


def _checkpoint_in(folder: Path, model: str, where: str) -> Path:
    """The one checkpoint file a weights folder holds: a hub snapshot's weights file or the
    model's official release file."""
    from harness.models import get_spec

    names = (*FOLDER_CHECKPOINTS, get_spec(model).release_file)
    found = [folder / n for n in names if n and (folder / n).is_file()]
    if len(found) != 1:
        listing = sorted(p.name for p in folder.iterdir())[:10] if os.access(folder, os.R_OK) else "unreadable"
        raise pytest.UsageError(
            f"{where}: the folder {folder} must hold exactly one of {', '.join(n for n in names if n)}; "
            f"it holds {listing}")
    return found[0]


def _unreadable(path: Path) -> str | None:
    """Why `path` cannot be read (None if it can). Opening is the test: permission bits
    say nothing for root, and a socket or broken device fails only when opened."""
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as err:
        return err.strerror or str(err)
    return None


def _check_writable(name: str, folder: Path) -> None:
    """The cache must be writable (locks, entries): say so now, not mid-extraction."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise pytest.UsageError(f"{name} {str(folder)!r}: cannot write there ({err.strerror or err}); "
                                "pass a writable folder") from None


def parse_thresholds(values: list[str]) -> dict[str, dict[str, Any]]:
    """ID:NAME=VALUE entries, checked against the claims' own thresholds (name, type, finite)."""
    from harness.claims import catalogue
    from harness.claims.claim import check_threshold

    overrides: dict[str, dict[str, Any]] = {}
    claims = catalogue() if values else {}
    for entry in values:
        where = f"--claims-threshold {entry!r}"
        match = re.fullmatch(r"\s*([A-Z][\d.]+):(\w+)=(.+)", entry)
        if not match:
            raise pytest.UsageError(f"{where}: expected ID:NAME=VALUE, e.g. S3.2:ratio=0.8")
        claim_id, name, raw = match.groups()
        if claim_id not in claims:
            raise pytest.UsageError(f"{where}: unknown claim {claim_id!r}")
        defaults = claims[claim_id].thresholds
        if name not in defaults:
            known = ", ".join(defaults) or "none"
            raise pytest.UsageError(f"{where}: {claim_id} has no threshold {name!r}; it has: {known}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            raise pytest.UsageError(f"{where}: {raw!r} is not a number or a JSON list of numbers") from None
        try:
            overrides.setdefault(claim_id, {})[name] = check_threshold(claim_id, name, defaults[name], value)
        except ValueError as err:
            raise pytest.UsageError(f"{where}: {err}") from None
    return overrides
