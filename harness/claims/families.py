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

from harness.measurements import Measurements

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


ASSOCIATION_DATASETS = ("bdd100k_mot", "mot17")


def measure(finding: Finding, model: str, measured, families: Mapping[str, str], m: int = 200) -> float:
    """The finding's number for `model`, read from `measured` (Cityscapes and association rows;
    every read names its dataset)."""
    if finding.section == "cityscapes":
        return _segmentation(finding.key, model, measured, m)
    return association_margin(model, measured, families)


def _segmentation(key: str, model: str, measured, m: int) -> float:
    city = {"dataset": "cityscapes"}
    knn = measured.value("miou", model=model, probe="knn", **city)
    if key == "knn_over_linear":
        return knn / measured.value("miou", model=model, probe="linear", **city)
    if key == "linear_over_knn":
        with_bn = measured.value("miou", model=model, probe="linear_bn", **city)
        linear = measured.value("miou", model=model, probe="linear", **city)
        return np.nanmax([with_bn, linear]) / knn if not np.isnan(linear) else float("nan")
    if key == "pruning_gain":
        return measured.value("miou", model=model, probe="knn", m=m, **city) / knn
    if key == "variance_vs_dino":
        return (measured.value("variance_ratio", model=model, **city)
                / measured.value("variance_ratio", model="dino", **city))
    raise ValueError(f"unknown family finding {key!r}")


def association_margin(model: str, measured, families: Mapping[str, str]) -> float:
    """The model's instance accuracy averaged over D minus the best MIM model's, on each
    association dataset measured (BDD100K, MOT17); the smaller of the margins."""
    datasets = [d for d in ASSOCIATION_DATASETS if d in measured.distinct("instance_acc", "dataset")]
    margins = []
    for dataset in datasets or ASSOCIATION_DATASETS[:1]:  # none measured: the read below is missing
        tracked = measured.models("instance_acc", dataset=dataset)  # the run's models measured there
        mim = [m for m, family in families.items() if family == "MIM" and m != model and m in tracked]
        mean = {m: float(measured.curve("instance_acc", by="gap", model=m, dataset=dataset).mean())
                for m in (model, *mim)}
        if mim:
            margins.append(mean[model] - max(mean[m] for m in mim))
    return min(margins) if margins else float("nan")


class Backbones(Measurements):
    """X.4's numbers: the Cityscapes and association rows of the run, with the backbones added
    to it (`added`: name -> family) and the family of every model of the run (`families`)."""

    added: dict[str, str]
    families: dict[str, str]

    @classmethod
    def of(cls, measured: Measurements, added: Mapping[str, str], families: Mapping[str, str]) -> Backbones:
        view = object.__new__(cls)
        view.__dict__.update(measured.fresh().__dict__)
        view.added, view.families = dict(added), {**PAPER_FAMILIES, **families}
        return view

    def findings(self, model: str) -> dict[str, float]:
        """The numbers of the findings of the model's family (reads tracked like any read)."""
        return {f.key: measure(f, model, self, self.families) for f in findings_of(self.added[model])}


COLUMNS = ("knn_over_linear", "linear_over_knn", "pruning_gain", "variance_vs_dino", "association_margin")


def matrix(families: Mapping[str, str], thresholds: Mapping[str, float], measured) -> list[dict[str, Any]]:
    """The backbone x finding matrix: one row per (model, finding key) with the measured value,
    and, where the finding belongs to the model's family, its threshold and whether it holds."""
    from harness.measurements import reported

    families = {**{m: f for m, f in PAPER_FAMILIES.items() if m in families}, **families}
    rows = []
    with reported():  # a number that is missing is shown as such, never an error
        for model, family in families.items():
            for key in COLUMNS:
                own = next((f for f in FINDINGS if f.key == key and f.family == family), None)
                finding = own or next(f for f in FINDINGS if f.key == key)
                value = measure(finding, model, measured, families)
                known = value is not None and not np.isnan(value)
                threshold = thresholds.get(own.threshold) if own else None
                rows.append({
                    "model": model, "family": family, "finding": key, "what": finding.what,
                    "claim": own.claim if own else finding.claim, "value": float(value) if known else None,
                    "threshold": threshold, "relation": _relation(own, threshold) if own else None,
                    "holds": bool(own.holds(value, threshold)) if own and known else None,
                    "paper_model": model in PAPER_FAMILIES})
    measured_models = {r["model"] for r in rows if r["value"] is not None}
    return [r for r in rows if r["model"] in measured_models]  # models of the run measured here


def _relation(finding: Finding, threshold: float) -> str:
    """The relation in words, for the report: '>= 0.75', '<= 1.1', '> 0'."""
    if finding.key == "pruning_gain" and finding.family == "contrastive":
        return f"<= {1 + threshold:g}"
    return f"{'>' if finding.key == 'association_margin' else '>='} {threshold:g}"
