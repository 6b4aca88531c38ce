"""claims.json: the source of truth of a run, from which Markdown, HTML and comparisons are made."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from harness.claims import SECTIONS, ClaimResult, catalogue, claim_order, jsonable
from harness.measurements import row_key

# Bump when the layout of claims.json changes; baselines of another version are refused.
# 2: one test per claim (rows read by its body), X.1/X.2 as claims, the report's conventions.
SCHEMA_VERSION = 2
NOT_RUN = "not run"

# Distributions whose versions change the numbers (faiss ships as one of two wheels).
PACKAGES = {
    "torch": ("torch",), "timm": ("timm",), "transformers": ("transformers",),
    "faiss": ("faiss-cpu", "faiss-gpu", "faiss"), "numpy": ("numpy",),
    "sklearn": ("scikit-learn",), "harness": ("vit-local-claims",),
}


class ReportError(ValueError):
    """A claims.json that cannot be read as a report of this schema version."""


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name, distributions in PACKAGES.items():
        versions[name] = None
        for dist in distributions:
            try:
                versions[name] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def git_hash() -> str | None:
    """The commit of the harness checkout, None when it is not a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def device(import_torch: bool = True) -> str | None:
    """'cuda: <name>' when torch sees a GPU, else 'cpu'. With import_torch=False, None unless
    this process already imported torch (an xdist controller asks its workers instead)."""
    if not import_torch and "torch" not in sys.modules:
        return None
    try:
        import torch
    except ImportError:
        return "cpu"
    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return "cpu"


def environment(device_name: str | None = None) -> dict[str, Any]:
    """Versions, git commit and device of this run (`device_name` overrides the probe)."""
    return {"versions": package_versions(), "git": git_hash(), "device": device_name or device(),
            "python": sys.version.split()[0]}


def _order(result: Mapping[str, Any]) -> tuple:
    return (*claim_order(result["id"]), result.get("nodeid") or "")


def build_report(
    results: Iterable[ClaimResult | Mapping[str, Any]],
    run: Mapping[str, Any] | None = None,
    run_info: Mapping[str, Any] | None = None,
    rows: Iterable[Mapping[str, Any]] = (),
    environment: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report dict: run config, environment, every claim's result (claims of the catalogue
    that no test of this run judged are listed as 'not run'), and every metric row the run
    measured (`rows`, for the figures and baselines) once.

    `environment` (versions, git, device) is measured here unless given (tests give it)."""
    claims = [r.to_dict() if isinstance(r, ClaimResult) else jsonable(dict(r)) for r in results]
    seen = {c["id"] for c in claims}
    for spec in catalogue().values():
        if spec.id not in seen:
            claims.append({
                "id": spec.id, "section": spec.section, "statement": spec.statement, "ref": spec.ref,
                "verdict": NOT_RUN, "measured": {}, "paper": jsonable(spec.paper),
                "thresholds": jsonable(spec.thresholds), "message": "no test of this claim ran in this run",
                "rows": [],
            })
    claims.sort(key=_order)
    unique: dict = {}
    for row in [*rows, *(row for claim in claims for row in claim.get("rows", []))]:
        unique.setdefault(row_key(row), jsonable(dict(row)))
    if environment is None:
        environment = globals()["environment"]()
    return {
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run": jsonable(dict(run or {})),
        **jsonable(dict(environment)),
        "run_info": jsonable(dict(run_info or {})),
        "summary": dict(Counter(c["verdict"] for c in claims)),
        "claims": claims,
        "rows": list(unique.values()),
    }


def dumps(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2, allow_nan=False) + "\n"


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a claims.json; a missing file, bad JSON or another schema version is a `ReportError`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise ReportError(f"cannot read the claims report {path}: {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise ReportError(f"{path} is not a claims report (invalid JSON: {err})") from None
    if not isinstance(data, dict) or "schema_version" not in data:
        raise ReportError(f"{path} is not a claims report: no 'schema_version' field")
    if data["schema_version"] != SCHEMA_VERSION:
        raise ReportError(
            f"{path} has schema_version {data['schema_version']!r}; this harness reads version "
            f"{SCHEMA_VERSION}. Re-create the baseline with this harness (pytest claims/ ...)."
        )
    if not isinstance(data.get("claims"), list):
        raise ReportError(f"{path} is not a claims report: no 'claims' list")
    return data


def section_title(section: str) -> str:
    return f"{section} {SECTIONS.get(section, '')}".strip()
