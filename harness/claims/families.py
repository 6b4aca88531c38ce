"""The paper's family findings in per-model form: what X.4 asserts for each added backbone and
what the report's backbone x finding matrix shows for every model of a run.

Families (the paper's conclusions are about them): contrastive (dino, dinov2, ibot), MIM
(pixel reconstruction: mae, simmim), supervised. Each finding is one number per model, read
through the metric-table API (so a missing number makes X.4 'not judged', never
'contradicted'), compared with a threshold of X.4:

  contrastive  knn_over_linear   kNN mIoU / linear mIoU                  >= knn_ratio (S3.2)
               pruning_gain      kNN(m=200) / kNN(m=0)                   <= 1 + max_pruning_gain (S4.4)
               association_margin instance accuracy over D minus the best
                                 MIM model of the run (BDD100K, MOT17)   > 0 (S6.1, S6.6)
  MIM          linear_over_knn   best linear probe mIoU / kNN mIoU       >= linear_ratio (S3.3)
               pruning_gain      kNN(m=200) / kNN(m=0)                   >= pruning_gain (S4.2)
               variance_vs_dino  top-10/median variance ratio / dino's   >= variance_vs_dino (S4.1)

For a MIM backbone "linear" is the better of the plain and the BatchNorm probe (the paper
uses BatchNorm for MAE and not for SimMIM, where it hurt).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

FAMILIES = ("contrastive", "MIM", "supervised")
PAPER_FAMILIES = {"dino": "contrastive", "dinov2": "contrastive", "ibot": "contrastive",
                  "mae": "MIM", "simmim": "MIM", "supervised": "supervised"}


@dataclass(frozen=True)
class Finding:
    key: str
    family: str
    claim: str  # the paper claim it is the per-model form of
    what: str
    threshold: str  # the name of X.4's threshold
    holds: Callable[[float, float], bool]
    section: str  # the section it reads: 'cityscapes' or 'association'


FINDINGS = (
    Finding("knn_over_linear", "contrastive", "S3.2", "kNN / linear mIoU", "knn_ratio",
            lambda v, t: v >= t, "cityscapes"),
    Finding("pruning_gain", "contrastive", "S4.4", "kNN(m=200) / kNN(m=0)", "max_pruning_gain",
            lambda v, t: v <= 1 + t, "cityscapes"),
    Finding("association_margin", "contrastive", "S6.1, S6.6", "instance accuracy - best MIM model",
            "association_margin", lambda v, t: v > t, "association"),
    Finding("linear_over_knn", "MIM", "S3.3", "linear / kNN mIoU", "linear_ratio",
            lambda v, t: v >= t, "cityscapes"),
    Finding("pruning_gain", "MIM", "S4.2", "kNN(m=200) / kNN(m=0)", "pruning_gain",
            lambda v, t: v >= t, "cityscapes"),
    Finding("variance_vs_dino", "MIM", "S4.1", "top-10/median variance ratio / dino's", "variance_vs_dino",
            lambda v, t: v >= t, "cityscapes"),
)


def findings_of(family: str) -> tuple[Finding, ...]:
    return tuple(f for f in FINDINGS if f.family == family)


def measure(finding: Finding, model: str, cityscapes=None, association: Mapping[str, Any] | None = None,
            families: Mapping[str, str] | None = None, m: int = 200) -> float:
    """The finding's number for `model` (NaN when its section is absent)."""
    if finding.section == "cityscapes":
        if cityscapes is None:
            return float("nan")
        return _segmentation(finding.key, model, cityscapes, m)
    return association_margin(model, association or {}, families or {})


def _segmentation(key: str, model: str, cityscapes, m: int) -> float:
    knn = cityscapes.value("miou", model=model, probe="knn")
    if key == "knn_over_linear":
        return knn / cityscapes.value("miou", model=model, probe="linear")
    if key == "linear_over_knn":
        linear = max(cityscapes.value("miou", model=model, probe="linear"),
                     cityscapes.value("miou", model=model, probe="linear_bn"))
        return linear / knn
    if key == "pruning_gain":
        return cityscapes.value("miou", model=model, probe="knn", m=m) / knn
    if key == "variance_vs_dino":
        return cityscapes.value("variance_ratio", model=model) / cityscapes.value("variance_ratio", model="dino")
    raise ValueError(f"unknown family finding {key!r}")


def association_margin(model: str, association: Mapping[str, Any], families: Mapping[str, str]) -> float:
    """The model's instance accuracy averaged over D minus the best MIM model's, on each
    association dataset present (BDD100K, MOT17); the smaller of the margins."""
    mim = [m for m, family in families.items() if family == "MIM" and m != model]
    margins = []
    for section in association.values():
        if section is None or not mim:
            continue
        mean = {m: float(section.curve("instance_acc", by="gap", model=m).mean()) for m in (model, *mim)}
        margins.append(mean[model] - max(mean[m] for m in mim))
    return min(margins) if margins else float("nan")


def matrix(models: Mapping[str, str], thresholds: Mapping[str, float], cityscapes=None,
           association: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per (model, finding of its family): value, threshold and whether it holds."""
    from harness.measurements import reported

    rows = []
    with reported():  # a number that is missing is shown as such, never an error
        for model, family in models.items():
            for finding in findings_of(family):
                value = measure(finding, model, cityscapes, association, models)
                threshold = thresholds[finding.threshold]
                rows.append({"model": model, "family": family, "finding": finding.key, "claim": finding.claim,
                             "what": finding.what, "value": None if np.isnan(value) else float(value),
                             "threshold": threshold,
                             "holds": None if np.isnan(value) else bool(finding.holds(value, threshold)),
                             "paper_model": model in PAPER_FAMILIES})
    return rows
