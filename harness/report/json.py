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

from harness.claims import CLAIMS, SECTIONS, ClaimResult, jsonable
from harness.report.compare import row_key

# Bump when the layout of claims.json changes; baselines of another version are refused.
SCHEMA_VERSION = 1
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


def _order(result: Mapping[str, Any]) -> tuple[int, str]:
    ids = list(CLAIMS)
    return (ids.index(result["id"]) if result["id"] in CLAIMS else len(ids), result.get("nodeid") or "")


def build_report(
    results: Iterable[ClaimResult | Mapping[str, Any]],
    run: Mapping[str, Any] | None = None,
    run_info: Mapping[str, Any] | None = None,
    environment: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report dict: run config, environment, every claim's result, and the claims not run.

    `environment` (versions, git, device) is measured here unless given (tests give it)."""
    claims = [r.to_dict() if isinstance(r, ClaimResult) else jsonable(dict(r)) for r in results]
    for claim in claims:
        claim.setdefault("section", CLAIMS[claim["id"]].section if claim["id"] in CLAIMS else "")
    seen = {c["id"] for c in claims}
    for claim in CLAIMS.values():
        if claim.relation is not None and claim.id not in seen:
            claims.append({
                "id": claim.id, "section": claim.section, "statement": claim.statement,
                "verdict": NOT_RUN, "measured": {}, "paper": jsonable(claim.paper),
                "thresholds": jsonable(claim.thresholds), "message": "no test of this claim ran in this run",
                "rows": [],
            })
    claims.sort(key=_order)
    rows: dict = {}  # every metric row of the run once, for figures and baselines
    for claim in claims:
        for row in [*claim.get("rows", []), *claim.pop("context_rows", [])]:
            rows.setdefault(row_key(row), row)
    if environment is None:
        environment = globals()["environment"]()
    report = {
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run": jsonable(dict(run or {})),
        **jsonable(dict(environment)),
        "run_info": jsonable(dict(run_info or {})),
        "summary": dict(Counter(c["verdict"] for c in claims)),
        "claims": claims,
        "rows": list(rows.values()),
    }
    report["meta"] = meta_claims(report)
    return report


def meta_claims(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """X.1 and X.2 summarised over the run's claims (stability under resampling, regressions),
    for those of the two that no claim test of this run recorded itself."""
    claims = report["claims"]
    recorded = {c["id"] for c in claims}
    bootstrapped = [c for c in claims if c.get("holds_fraction") is not None]
    fragile = [c["id"] for c in claims if c["verdict"] == "fragile"]
    if not bootstrapped:
        x1 = {"verdict": "not judged", "message": "no claim was judged with bootstrap resamples"}
    elif fragile:
        x1 = {"verdict": "fragile", "message": f"fragile under resampling: {', '.join(fragile)}"}
    else:
        x1 = {"verdict": "verified",
              "message": f"{len(bootstrapped)} claims judged with resamples; none fragile"}
    regressions = [dict(r, claim=c["id"]) for c in claims for r in c.get("regressions") or []]
    if not report["run"].get("baseline"):
        x2 = {"verdict": "skipped", "message": "no --baseline given"}
    elif regressions:
        x2 = {"verdict": "contradicted",
              "message": f"{len(regressions)} metrics dropped by more than the tolerance",
              "regressions": regressions}
    else:
        x2 = {"verdict": "verified", "message": "no metric dropped by more than the tolerance"}
    meta = {"X.1": x1, "X.2": x2}
    return {cid: {"statement": CLAIMS[cid].statement, **v} for cid, v in meta.items() if cid not in recorded}


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
