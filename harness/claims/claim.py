"""A claim of the paper is a test: `@claim(ID, ...)` on a function in claims/test_*.py.

    @claim("S4.2", paper={"m=0": 0.058, "m=10": 0.170, "m=200": 0.295}, ref="fig 4b")
    def test_pruning_lifts_mae_knn(cityscapes, gain_200=3.0, best_m=(100, 300)):
        '''Removing the m highest-variance features lifts MAE k-NN ...'''
        knn = cityscapes.curve("miou", by="m", model="mae", probe="knn", need=(0, 10, 200))
        assert knn[200] >= gain_200 * knn[0]

The docstring is the finding (its first sentence the statement shown in reports), the
parameters without defaults are the measured sections it reads (session fixtures, each a
`harness.measurements.Measurements`), the keyword defaults are its thresholds (a user
overrides them with --claims-threshold ID:NAME=VALUE), and the asserts are the relation.
The harness calls the body on the measured numbers (the verdict) and again on every
bootstrap resample and every extra few-shot training subset (X.1), so a body must only read
and assert: no side effects. `expect(label)` turns an assert into a soft one, so a loop over
models reports every model that fails; `need(condition, reason)` says the claim cannot be
judged on these numbers (e.g. too few 'bus' patches).

The claims/ modules are the catalogue: `catalogue()` imports them and returns every claim
in order; `harness claims` prints it.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SECTIONS = {
    "S3": "Few-shot patch classification",
    "S4": "Why MIM models fail k-NN: high-variance features",
    "S5": "Instance and fine-grained retrieval",
    "S6": "Object association across video frames",
    "X": "Beyond the paper",
}
CLAIM_ID = re.compile(r"^(S[3-6]|X)\.\d+$")

# The measured sections a claim can read (session fixtures in fixtures/plugin.py) and the
# dataset of their rows: a metric table given to `judge` is split by it (None: every row).
SECTION_DATASETS: dict[str, str | None] = {
    "cityscapes": "cityscapes", "ade20k": "ade20k", "fair1m": "fair1m",
    "bdd100k": "bdd100k_mot", "mot17": "mot17", "feature_overlap": None,
    "reconstruction": None, "precision": None, "backbones": None,
}


@dataclass(frozen=True)
class ClaimSpec:
    id: str
    test: Callable[..., None] = field(repr=False)
    paper: Mapping[str, Any] = field(default_factory=dict)
    ref: str = ""  # where the paper shows it: 'fig 1', 'table 6', 'text'
    fails_as: str = "contradicted"  # X.1: a failed assert means 'fragile', not 'contradicted'

    @property
    def section(self) -> str:
        return self.id.split(".")[0]

    @property
    def finding(self) -> str:
        return inspect.cleandoc(self.test.__doc__ or "")

    @property
    def statement(self) -> str:
        """The finding's first paragraph on one line: the paper's finding."""
        return " ".join(self.finding.split("\n\n")[0].split())

    @property
    def assertion(self) -> str:
        """The rest of the docstring on one line: what the body asserts, in words."""
        return " ".join(" ".join(self.finding.split("\n\n")[1:]).split())

    @property
    def fixtures(self) -> tuple[str, ...]:
        return tuple(p.name for p in inspect.signature(self.test).parameters.values()
                     if p.default is inspect.Parameter.empty)

    @property
    def thresholds(self) -> dict[str, Any]:
        return {p.name: p.default for p in inspect.signature(self.test).parameters.values()
                if p.default is not inspect.Parameter.empty}

    @property
    def nodeid_hint(self) -> str:
        return f"{self.test.__module__.replace('.', '/')}.py::{self.test.__name__}[{self.id}]"


_REGISTRY: dict[str, ClaimSpec] = {}


def claim(claim_id: str, *, paper: Mapping[str, Any] | None = None, ref: str = "",
          fails_as: str = "contradicted") -> Callable:
    """Mark a test function as the claim `claim_id` (see the module docstring)."""
    if not CLAIM_ID.match(claim_id):
        raise ValueError(f"claim id {claim_id!r} is not of the form S3.1 .. S6.9 or X.1")

    def decorate(test: Callable[..., None]) -> Callable[..., None]:
        spec = ClaimSpec(claim_id, test, dict(paper or {}), ref, fails_as)
        if not spec.finding:
            raise ValueError(f"{test.__qualname__}: a claim's docstring is its finding; it has none")
        known = _REGISTRY.get(claim_id)
        if known is not None and (known.test.__module__, known.test.__qualname__) != (test.__module__, test.__qualname__):
            raise ValueError(f"claim {claim_id} is defined twice: {known.test.__module__}.{known.test.__qualname__} "
                             f"and {test.__module__}.{test.__qualname__}")
        _REGISTRY[claim_id] = spec
        test.__claim__ = spec
        # pytest glue (claims/ modules are pytest modules): the node id carries the claim id,
        # test_x[S4.2], so -k selects it; the id is not an argument of the body.
        import pytest

        test = pytest.mark.claim(claim_id)(test)
        test = pytest.mark.usefixtures("claim_id")(test)
        return pytest.mark.parametrize("claim_id", [claim_id], ids=[claim_id])(test)

    return decorate


def claim_order(claim_id: str) -> tuple[int, int, str]:
    """S3.2 < S3.10 < S4.1 < X.1; unknown ids last."""
    match = re.match(r"^S(\d+)\.(\d+)$|^X\.(\d+)$", claim_id)
    if not match:
        return (99, 0, claim_id)
    if match.group(3):
        return (90, int(match.group(3)), "")
    return (int(match.group(1)), int(match.group(2)), "")


# ---------------------------------------------------------------- the catalogue


def claims_folder() -> Path:
    """The claims/ folder of this checkout (next to the harness package)."""
    return Path(__file__).resolve().parents[2] / "claims"


def catalogue() -> dict[str, ClaimSpec]:
    """Every claim, in order, from the claims/ modules (imported on first use)."""
    folder = claims_folder()
    if not (folder / "__init__.py").is_file():
        raise FileNotFoundError(
            f"the claims live in the claims/ folder of a vit-local-claims checkout; none at {folder} "
            "(install the project from its repository with `pip install -e .`)")
    root = str(folder.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    for path in sorted(folder.glob("test_*.py")):
        importlib.import_module(f"claims.{path.stem}")
    return {cid: _REGISTRY[cid] for cid in sorted(_REGISTRY, key=claim_order)}


def get_claim(claim: str | ClaimSpec | Callable) -> ClaimSpec:
    if isinstance(claim, ClaimSpec):
        return claim
    if callable(claim):
        spec = getattr(claim, "__claim__", None)
        if spec is None:
            raise ValueError(f"{getattr(claim, '__qualname__', claim)!r} is not a claim test (no @claim)")
        return spec
    known = catalogue() if claim not in _REGISTRY else _REGISTRY
    if claim not in known:
        raise ValueError(f"unknown claim id {claim!r}; known ids: {', '.join(catalogue())}")
    return known[claim]


def resolve_thresholds(spec: ClaimSpec, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The claim's thresholds with `overrides` applied, each checked against its default's
    type: a finite number for a number, a list of as many finite numbers for a tuple."""
    defaults = spec.thresholds
    resolved = dict(defaults)
    for name, value in (overrides or {}).items():
        if name not in defaults:
            known = ", ".join(defaults) or "none"
            raise ValueError(f"{spec.id} has no threshold {name!r}; its thresholds are: {known}")
        resolved[name] = check_threshold(spec.id, name, defaults[name], value)
    return resolved


def check_threshold(claim_id: str, name: str, default: Any, value: Any) -> Any:
    where = f"{claim_id}:{name}"
    if isinstance(default, (tuple, list)):
        if not isinstance(value, (tuple, list)) or len(value) != len(default):
            raise ValueError(f"{where} takes a list of {len(default)} numbers like {list(default)}, got {value!r}")
        return tuple(check_threshold(claim_id, name, d, v) for d, v in zip(default, value, strict=True))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where} takes a number like {default!r}, got {value!r} ({type(value).__name__})")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    return type(default)(value) if isinstance(default, int) and float(value).is_integer() else value


# ---------------------------------------------------------------- soft asserts, need


class NotJudged(Exception):
    """The claim cannot be judged on these numbers (raised by `need`)."""


def need(condition: Any, reason: str) -> None:
    """Judge the claim only if `condition` holds; otherwise it is 'not judged' because `reason`."""
    if not condition:
        raise NotJudged(reason)


_failures: ContextVar[list[str] | None] = ContextVar("claim_failures", default=None)


@contextmanager
def collecting_failures() -> Iterator[list[str]]:
    failures: list[str] = []
    token = _failures.set(failures)
    try:
        yield failures
    finally:
        _failures.reset(token)


@contextmanager
def expect(label: str = "") -> Iterator[None]:
    """A soft assertion: a failing assert in the block is recorded (prefixed with `label`) and
    the body goes on, so the verdict names every model that fails. Outside a judged attempt it
    is a plain assertion."""
    failures = _failures.get()
    if failures is None:
        yield
        return
    try:
        yield
    except AssertionError as err:
        failures.append(f"{label}: {assertion_text(err)}" if label else assertion_text(err))


def assertion_text(err: AssertionError) -> str:
    """pytest's rewritten message (`assert 0.1475 >= (3.0 * 0.058)`); outside pytest's
    rewriting, the source line of the failing assert."""
    text = str(err).strip()
    if text:
        return text
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        import linecache

        line = linecache.getline(tb.tb_frame.f_code.co_filename, tb.tb_lineno).strip()
        if line:
            return line
    return "assertion failed"
