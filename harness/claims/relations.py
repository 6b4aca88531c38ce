"""One relation per claim of CLAIMS.md: the finding, stated as comparisons of measured numbers.

Every relation has the signature ``relation(table, **thresholds) -> Outcome``; the
thresholds are the numbers of the 'assert' column, passed in by name so a user can
tighten or loosen them. A relation first looks up everything it needs (raising
`MissingMeasurements` with the full list when something is absent), then checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.claims.table import Lookup, paper_linear

# The paper's models, by family (CLAIMS.md).
CONTRASTIVE = ("dino", "dinov2", "ibot")
MIM = ("mae", "simmim")

# S3 and S4 read clean Cityscapes rows at the last layer unless they say otherwise.
CLEAN = {"dataset": "cityscapes", "layer": 12, "corruption": "none", "level": 0, "m": 0}


@dataclass
class Outcome:
    """Whether a relation holds, the numbers it compared, and a sentence saying so."""

    holds: bool
    measured: dict[str, float | None]
    message: str


@dataclass
class Checks:
    """Collects measured numbers and the comparisons made on them."""

    measured: dict[str, float | None] = field(default_factory=dict)
    results: list[tuple[bool, str]] = field(default_factory=list)

    def measure(self, key: str, value: float) -> float:
        value = float(value)
        self.measured[key] = None if math.isnan(value) or math.isinf(value) else round(value, 6)
        return value

    def check(self, ok: bool | np.bool_, text: str) -> None:
        self.results.append((bool(ok), text))

    def outcome(self) -> Outcome:
        failed = [text for ok, text in self.results if not ok]
        if failed:
            message = "does not hold: " + "; ".join(failed)
        else:
            message = "holds: " + "; ".join(text for _, text in self.results)
        return Outcome(holds=not failed, measured=dict(self.measured), message=message)


def _f(x: float) -> str:
    return f"{x:.3f}"


def _plain(x: Any) -> Any:
    """10.0 -> 10 (NaN-padded integer columns come back as floats)."""
    return int(x) if isinstance(x, (float, np.floating)) and float(x).is_integer() else x


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# ---------------------------------------------------------------- S3 patch classification


def s3_1_linear_gap_grows(table: pd.DataFrame, *, tolerance: float) -> Outcome:
    get = Lookup(table)
    models = get.models("miou", probe="knn", **CLEAN)
    sizes = get.distinct("miou", "n_train", **CLEAN)
    get.need(len(sizes) >= 2, "miou at two or more n_train (training-set sizes)")
    get.done()
    lo, hi = _plain(sizes[0]), _plain(sizes[-1])
    values = {}
    for model in models:
        for probe in ("knn", paper_linear(model)):
            for n in (lo, hi):
                values[model, probe, n] = get.value("miou", model=model, probe=probe, n_train=n, **CLEAN)
    get.done()
    c = Checks()
    for model in models:
        lin = paper_linear(model)
        gap_lo = c.measure(f"{model} linear-kNN gap @{lo}", values[model, lin, lo] - values[model, "knn", lo])
        gap_hi = c.measure(f"{model} linear-kNN gap @{hi}", values[model, lin, hi] - values[model, "knn", hi])
        knn_hi = c.measure(f"{model} kNN @{hi}", values[model, "knn", hi])
        lin_hi = c.measure(f"{model} linear @{hi}", values[model, lin, hi])
        c.check(gap_hi >= gap_lo - tolerance,
                f"{model}: gap at {hi} images {_f(gap_hi)} >= gap at {lo} {_f(gap_lo)} - {tolerance}")
        c.check(lin_hi >= knn_hi, f"{model}: linear {_f(lin_hi)} >= kNN {_f(knn_hi)} at {hi} images")
    return c.outcome()


def _knn_and_linear(get: Lookup, models: tuple[str, ...], **where: Any) -> dict[tuple[str, str], float]:
    n = get.middle_n_train("miou", **where)
    return {
        (model, probe): get.value("miou", model=model, probe=probe, n_train=n, **where)
        for model in models for probe in ("knn", paper_linear(model))
    }


def s3_2_knn_comparable(table: pd.DataFrame, *, ratio: float) -> Outcome:
    get = Lookup(table)
    models = ("dino", "dinov2", "supervised")
    v = _knn_and_linear(get, models, **CLEAN)
    get.done()
    c = Checks()
    for model in models:
        knn, lin = v[model, "knn"], v[model, "linear"]
        c.measure(f"{model} kNN", knn)
        c.measure(f"{model} linear", lin)
        c.measure(f"{model} kNN/linear", _ratio(knn, lin))
        c.check(knn >= ratio * lin, f"{model}: kNN {_f(knn)} >= {ratio} x linear {_f(lin)}")
    return c.outcome()


def s3_3_mae_knn_far_below_linear(table: pd.DataFrame, *, ratio: float) -> Outcome:
    get = Lookup(table)
    v = _knn_and_linear(get, ("mae",), **CLEAN)
    get.done()
    c = Checks()
    knn, lin = c.measure("mae kNN", v["mae", "knn"]), c.measure("mae linear", v["mae", "linear_bn"])
    c.measure("mae linear/kNN", _ratio(lin, knn))
    c.check(lin >= ratio * knn, f"mae linear {_f(lin)} >= {ratio} x mae kNN {_f(knn)}")
    return c.outcome()


def s3_4_mae_linear_near_dino(table: pd.DataFrame, *, ratio: float) -> Outcome:
    get = Lookup(table)
    v = _knn_and_linear(get, ("mae", "dino"), **CLEAN)
    get.done()
    c = Checks()
    mae, dino = c.measure("mae linear", v["mae", "linear_bn"]), c.measure("dino linear", v["dino", "linear"])
    c.measure("mae/dino linear", _ratio(mae, dino))
    c.check(mae >= ratio * dino, f"mae linear {_f(mae)} >= {ratio} x dino linear {_f(dino)}")
    return c.outcome()


def s3_5_batchnorm_helps_mae_not_simmim(table: pd.DataFrame, *, bn_gain: float) -> Outcome:
    get = Lookup(table)
    n = get.middle_n_train("miou", model=["mae", "simmim"], **CLEAN)
    v = {(model, probe): get.value("miou", model=model, probe=probe, n_train=n, **CLEAN)
         for model in MIM for probe in ("linear", "linear_bn")}
    get.done()
    c = Checks()
    mae_bn, mae = c.measure("mae linear+BN", v["mae", "linear_bn"]), c.measure("mae linear", v["mae", "linear"])
    sim_bn, sim = c.measure("simmim linear+BN", v["simmim", "linear_bn"]), c.measure("simmim linear", v["simmim", "linear"])
    c.measure("mae BN gain", _ratio(mae_bn, mae))
    c.check(mae_bn >= bn_gain * mae, f"mae linear+BN {_f(mae_bn)} >= {bn_gain} x mae linear {_f(mae)}")
    c.check(sim_bn <= sim, f"simmim linear+BN {_f(sim_bn)} <= simmim linear {_f(sim)}")
    return c.outcome()


def _layer_curves(get: Lookup, models: tuple[str, ...], layers: list[int] | None = None) -> dict[str, pd.Series]:
    """Per-layer kNN mIoU (clean Cityscapes, middle n_train) for each model."""
    where = {"dataset": "cityscapes", "corruption": "none", "level": 0, "m": 0, "probe": "knn"}
    n = get.middle_n_train("miou", **where)
    curves = {}
    for model in models:
        found = get.rows("miou", model=model, n_train=n, **where)
        if "layer" not in found.columns:
            found = found.assign(layer=np.nan)
        found = found.dropna(subset=["layer"])
        curve = found.groupby(found["layer"].astype(int))["value"].mean()
        for layer in layers or []:
            get.need(layer in curve.index, f"miou probe=knn model={model} layer={layer}")
        curves[model] = curve
    return curves


def s3_6_layer_curves_alike(
    table: pd.DataFrame, *, argmax_from: int, argmax_to: int, layer: int, layer_ratio: float, min_corr: float
) -> Outcome:
    get = Lookup(table)
    curves = _layer_curves(get, ("dino", "supervised"), layers=[layer])
    common = sorted(set(curves["dino"].index) & set(curves["supervised"].index))
    get.need(len(common) >= 3, "miou probe=knn at 3 or more layers for both dino and supervised")
    get.done()
    c = Checks()
    for model, curve in curves.items():
        best_layer = int(curve.idxmax())
        best = curve.max()
        at_layer = curve[layer]
        c.measure(f"{model} argmax layer", best_layer)
        c.measure(f"{model} layer {layer}/max", _ratio(at_layer, best))
        c.check(argmax_from <= best_layer <= argmax_to,
                f"{model}: best layer {best_layer} in {argmax_from}..{argmax_to}")
        c.check(at_layer >= layer_ratio * best,
                f"{model}: layer {layer} {_f(at_layer)} >= {layer_ratio} x max {_f(best)}")
    corr = float(np.corrcoef(curves["dino"][common], curves["supervised"][common])[0, 1])
    c.measure("corr(dino, supervised)", corr)
    c.check(corr >= min_corr, f"corr(dino, supervised) over layers {_f(corr)} >= {min_corr}")
    return c.outcome()


def s3_7_dinov2_late_bloomer(table: pd.DataFrame, *, early_from: int, early_to: int, top_layer: int) -> Outcome:
    get = Lookup(table)
    early = list(range(early_from, early_to + 1))
    curves = _layer_curves(get, ("dino", "dinov2"), layers=early + [top_layer])
    curves.update(_layer_curves(get, ("supervised",), layers=[top_layer]))
    get.done()
    c = Checks()
    for layer in early:
        v2, v1 = c.measure(f"dinov2 layer {layer}", curves["dinov2"][layer]), c.measure(f"dino layer {layer}", curves["dino"][layer])
        c.check(v2 < v1, f"layer {layer}: dinov2 {_f(v2)} < dino {_f(v1)}")
    v2 = c.measure(f"dinov2 layer {top_layer}", curves["dinov2"][top_layer])
    for other in ("dino", "supervised"):
        v = c.measure(f"{other} layer {top_layer}", curves[other][top_layer])
        c.check(v2 > v, f"layer {top_layer}: dinov2 {_f(v2)} > {other} {_f(v)}")
    return c.outcome()


def s3_8_bus_jump(table: pd.DataFrame, *, gain: float, from_layer: int, to_layer: int) -> Outcome:
    get = Lookup(table)
    where = {"model": "dinov2", "class_name": "bus", "probe": "knn", "corruption": "none", "m": 0}
    n = get.middle_n_train("iou", **where)
    early = get.value("iou", layer=from_layer, n_train=n, **where)
    late = get.value("iou", layer=to_layer, n_train=n, **where)
    get.done()
    c = Checks()
    c.measure(f"bus_iou_layer{from_layer}", early)
    c.measure(f"bus_iou_layer{to_layer}", late)
    c.check(late >= gain * early,
            f"dinov2 bus IoU layer {to_layer} {_f(late)} >= {gain} x layer {from_layer} {_f(early)}")
    return c.outcome()


def s3_9_mae_worst_knn(table: pd.DataFrame, *, mid_from: int, mid_to: int, top_layer: int) -> Outcome:
    get = Lookup(table)
    where = {"dataset": "cityscapes", "corruption": "none", "level": 0, "m": 0, "probe": "knn"}
    models = get.models("miou", required=MIM, at_least=2, **where)
    mid = list(range(mid_from, mid_to + 1))
    curves = _layer_curves(get, MIM, layers=mid + [top_layer])
    curves.update(_layer_curves(get, tuple(m for m in models if m not in MIM), layers=[top_layer]))
    get.done()
    c = Checks()
    mae = c.measure(f"mae layer {top_layer}", curves["mae"][top_layer])
    for model in models:
        if model != "mae":
            v = c.measure(f"{model} layer {top_layer}", curves[model][top_layer])
            c.check(mae < v, f"layer {top_layer}: mae kNN {_f(mae)} < {model} {_f(v)}")
    for layer in mid:
        sim, m = curves["simmim"][layer], curves["mae"][layer]
        c.measure(f"simmim-mae layer {layer}", sim - m)
        c.check(sim > m, f"layer {layer}: simmim {_f(sim)} > mae {_f(m)}")
    return c.outcome()


def _relative_drops(get: Lookup, models: list[str] | tuple[str, ...], corruption: str, levels: list[float]) -> dict[str, float]:
    """Mean over `levels` of 1 - corrupted/clean mIoU (paper linear probe), per model."""
    drops = {}
    for model in models:
        where = {"dataset": "cityscapes", "layer": 12, "m": 0, "probe": paper_linear(model), "model": model}
        n = get.middle_n_train("miou", **where)
        clean = get.value("miou", corruption="none", level=0, n_train=n, **where)
        corrupted = [get.value("miou", corruption=corruption, level=level, n_train=n, **where) for level in levels]
        drops[model] = float(np.mean([1 - _ratio(x, clean) for x in corrupted])) if corrupted else float("nan")
    return drops


def s3_10_dinov2_blur_robust(table: pd.DataFrame) -> Outcome:
    get = Lookup(table)
    models = ("dinov2", "dino", "supervised")
    levels = get.distinct("miou", "level", corruption="blur", model=list(models))
    get.need(bool(levels), "miou corruption=blur (any level) for dinov2, dino, supervised")
    get.done()
    smallest = levels[0]
    drops = _relative_drops(get, models, "blur", [smallest])
    get.done()
    c = Checks()
    for model in models:
        c.measure(f"{model} relative drop (blur {smallest:g})", drops[model])
    for other in ("dino", "supervised"):
        c.check(drops["dinov2"] < drops[other],
                f"blur {smallest:g}: dinov2 relative drop {_f(drops['dinov2'])} < {other} {_f(drops[other])}")
    return c.outcome()


def s3_11_mae_collapses(table: pd.DataFrame, *, collapse_fraction: float) -> Outcome:
    get = Lookup(table)
    models = get.models("miou", required=("mae",), at_least=2, dataset="cityscapes", corruption="none")
    kinds = [k for k in get.distinct("miou", "corruption", model="mae") if k not in ("none", "shift")]
    get.need(bool(kinds), "miou model=mae under at least one corruption (blur/noise/band_noise)")
    get.done()
    c = Checks()
    collapse = {}
    drops_by_kind = {}
    for kind in kinds:
        levels = get.distinct("miou", "level", model="mae", corruption=kind)
        drops_by_kind[kind] = _relative_drops(get, models, kind, levels)
        collapse[kind] = get.value("majority_fraction", model="mae", probe="knn", corruption=kind, level=levels[0])
    get.done()
    for kind in kinds:
        drops = drops_by_kind[kind]
        for model in models:
            c.measure(f"{model} mean relative drop ({kind})", drops[model])
        for model in models:
            if model != "mae":
                c.check(drops["mae"] > drops[model],
                        f"{kind}: mae relative drop {_f(drops['mae'])} > {model} {_f(drops[model])}")
        frac = c.measure(f"mae kNN majority-class fraction ({kind}, smallest level)", collapse[kind])
        c.check(frac >= collapse_fraction,
                f"{kind}: mae kNN predicts one class for {_f(frac)} >= {collapse_fraction} of patches")
    return c.outcome()


def s3_12_supervised_ignores_high_band(table: pd.DataFrame, *, ratio: float) -> Outcome:
    get = Lookup(table)
    where = {"dataset": "cityscapes", "layer": 12, "m": 0, "probe": "linear", "model": "supervised"}
    bands = get.distinct("miou", "level", corruption="band_noise", **where)
    get.need(bool(bands), "miou model=supervised probe=linear corruption=band_noise")
    get.done()
    n = get.middle_n_train("miou", **where)
    clean = get.value("miou", corruption="none", level=0, n_train=n, **where)
    noisy = get.value("miou", corruption="band_noise", level=bands[-1], n_train=n, **where)
    get.done()
    c = Checks()
    c.measure("supervised clean", clean)
    c.measure(f"supervised band_noise {bands[-1]:g}", noisy)
    c.measure("kept fraction", _ratio(noisy, clean))
    c.check(noisy >= ratio * clean,
            f"supervised under the highest band {_f(noisy)} >= {ratio} x clean {_f(clean)}")
    return c.outcome()


def _rank_corr(a: pd.Series, b: pd.Series) -> float:
    """Spearman's rank correlation: Pearson on (average) ranks."""
    return float(a.rank().corr(b.rank()))


def s3_13_ranking_transfers(table: pd.DataFrame, *, min_spearman: float) -> Outcome:
    get = Lookup(table)
    where = {"layer": 12, "corruption": "none", "level": 0, "m": 0}
    city = get.models("miou", dataset="cityscapes", **where)
    ade = get.models("miou", dataset="ade20k", **where)
    models = [m for m in city if m in ade]
    get.need(len(models) >= 3, f"miou on both cityscapes and ade20k for at least 3 models; found {models}")
    get.done()
    scores: dict[tuple[str, str], pd.Series] = {}
    for dataset in ("cityscapes", "ade20k"):
        n = get.middle_n_train("miou", dataset=dataset, **where)
        for kind in ("knn", "linear"):
            scores[dataset, kind] = pd.Series({
                m: get.value("miou", model=m, dataset=dataset, n_train=n,
                             probe="knn" if kind == "knn" else paper_linear(m), **where)
                for m in models})
    get.done()
    c = Checks()
    for kind in ("knn", "linear"):
        rho = c.measure(f"spearman {kind}", _rank_corr(scores["cityscapes", kind], scores["ade20k", kind]))
        c.check(rho >= min_spearman,
                f"{kind}: rank correlation of {len(models)} models between datasets {_f(rho)} >= {min_spearman}")
    return c.outcome()


# ---------------------------------------------------------------- S4 high-variance features


def s4_1_mim_variance_outliers(table: pd.DataFrame, *, ratio: float) -> Outcome:
    get = Lookup(table)
    v = {m: get.value("variance_ratio", model=m, layer=12) for m in ("mae", "simmim", "dino", "supervised")}
    get.done()
    c = Checks()
    for model, value in v.items():
        c.measure(f"{model} top-10/median variance", value)
    for mim in MIM:
        for other in ("dino", "supervised"):
            c.check(v[mim] >= ratio * v[other],
                    f"{mim} variance ratio {_f(v[mim])} >= {ratio} x {other} {_f(v[other])}")
    return c.outcome()


def _pruning_curve(get: Lookup, model: str, probe: str) -> pd.Series:
    where = {"dataset": "cityscapes", "layer": 12, "corruption": "none", "level": 0, "model": model, "probe": probe}
    n = get.middle_n_train("miou", **where)
    found = get.rows("miou", n_train=n, **where)
    m = found["m"].fillna(0) if "m" in found.columns else pd.Series(0, index=found.index)
    return found.groupby(m.astype(int))["value"].mean()


def s4_2_pruning_lifts_mae_knn(table: pd.DataFrame, *, gain_200: float, argmax_range: tuple[int, int]) -> Outcome:
    get = Lookup(table)
    curve = _pruning_curve(get, "mae", "knn")
    for m in (0, 10, 200):
        get.need(m in curve.index, f"miou model=mae probe=knn m={m}")
    get.done()
    c = Checks()
    for m, value in curve.items():
        c.measure(f"mae kNN m={m}", value)
    best = int(curve.idxmax())
    c.measure("argmax m", best)
    lo, hi = argmax_range
    c.check(curve[200] >= gain_200 * curve[0], f"kNN(m=200) {_f(curve[200])} >= {gain_200} x kNN(m=0) {_f(curve[0])}")
    c.check(curve[10] > curve[0], f"kNN(m=10) {_f(curve[10])} > kNN(m=0) {_f(curve[0])}")
    c.check(lo <= best <= hi, f"best m {best} in {lo}..{hi}")
    return c.outcome()


def _at_m(get: Lookup, model: str, probe: str, m: int) -> tuple[float, float]:
    where = {"dataset": "cityscapes", "layer": 12, "corruption": "none", "level": 0, "model": model, "probe": probe}
    n = get.middle_n_train("miou", **where)
    return get.value("miou", m=0, n_train=n, **where), get.value("miou", m=m, n_train=n, **where)


def s4_3_pruning_keeps_mae_linear(table: pd.DataFrame, *, ratio: float, m: int) -> Outcome:
    get = Lookup(table)
    full, pruned = _at_m(get, "mae", "linear_bn", m)
    get.done()
    c = Checks()
    c.measure("mae linear m=0", full)
    c.measure(f"mae linear m={m}", pruned)
    c.check(pruned >= ratio * full, f"mae linear(m={m}) {_f(pruned)} >= {ratio} x linear(m=0) {_f(full)}")
    return c.outcome()


def s4_4_pruning_neutral_elsewhere(table: pd.DataFrame, *, ratio: float, max_gain: float, m: int) -> Outcome:
    get = Lookup(table)
    models = ("dino", "dinov2", "supervised")
    v = {model: _at_m(get, model, "knn", m) for model in models}
    get.done()
    c = Checks()
    for model, (full, pruned) in v.items():
        c.measure(f"{model} kNN m=0", full)
        c.measure(f"{model} kNN m={m}", pruned)
        c.check(pruned >= ratio * full, f"{model}: kNN(m={m}) {_f(pruned)} >= {ratio} x kNN(m=0) {_f(full)}")
        c.check(pruned <= (1 + max_gain) * full,
                f"{model}: kNN(m={m}) {_f(pruned)} gains at most {max_gain:.0%} over {_f(full)}")
    return c.outcome()


def s4_5_batchnorm_knn_like_pruning(table: pd.DataFrame, *, vs_pruned: float, vs_full: float, m: int) -> Outcome:
    get = Lookup(table)
    full, pruned = _at_m(get, "mae", "knn", m)
    bn = get.value("miou", model="mae", probe="knn_bn", dataset="cityscapes", layer=12, corruption="none", m=0,
                   n_train=get.middle_n_train("miou", model="mae", probe="knn_bn"))
    get.done()
    c = Checks()
    c.measure("mae kNN(BN)", bn)
    c.measure(f"mae kNN m={m}", pruned)
    c.measure("mae kNN m=0", full)
    c.check(bn >= vs_pruned * pruned, f"kNN(BN) {_f(bn)} >= {vs_pruned} x kNN(m={m}) {_f(pruned)}")
    c.check(bn >= vs_full * full, f"kNN(BN) {_f(bn)} >= {vs_full} x kNN(m=0) {_f(full)}")
    return c.outcome()


def s4_6_no_global_context(table: pd.DataFrame, *, tolerance: float) -> Outcome:
    get = Lookup(table)
    r2 = {s: get.value("r2", model="mae", subset=s) for s in ("full", "pruned", "top", "random")}
    get.done()
    c = Checks()
    for subset, value in r2.items():
        c.measure(subset, value)
    c.check(r2["pruned"] >= r2["full"] - tolerance,
            f"R2 pruned {_f(r2['pruned'])} >= R2 full {_f(r2['full'])} - {tolerance}")
    c.check(r2["top"] < r2["random"], f"R2 top-200 {_f(r2['top'])} < R2 random-200 {_f(r2['random'])}")
    return c.outcome()


def s4_7_top_features_shared(table: pd.DataFrame, *, min_overlap: float) -> Outcome:
    get = Lookup(table)
    pairs = ("cityscapes/ade20k", "cityscapes/fair1m")
    v = {p: get.value("overlap", model="mae", pair=p) for p in pairs}
    get.done()
    c = Checks()
    for pair, value in v.items():
        c.measure(pair, value)
        c.check(value >= min_overlap, f"{pair}: {value:g} shared top features >= {min_overlap:g}")
    return c.outcome()


def s4_8_zeroing_hurts_reconstruction(table: pd.DataFrame) -> Outcome:
    get = Lookup(table)
    top = get.value("recon_mse", model="mae", zeroed="top200")
    random = get.value("recon_mse", model="mae", zeroed="random200")
    get.done()
    c = Checks()
    c.measure("mse top200 zeroed", top)
    c.measure("mse random200 zeroed", random)
    c.check(top > random, f"MSE with top-200 zeroed {top:.4g} > with 200 random zeroed {random:.4g}")
    return c.outcome()


# ---------------------------------------------------------------- S5 retrieval


def _rate_grid(
    get: Lookup, anchor: str, outcome: str, exclude_source: bool, corruption: Any = None
) -> list[tuple[str, float]]:
    """The (corruption, level) pairs measured for `anchor`: the grid every model is averaged on."""
    found = get.rows("rate", model=anchor, outcome=outcome, exclude_source=exclude_source, corruption=corruption)
    if found.empty or "corruption" not in found.columns or "level" not in found.columns:
        return []
    return sorted({(str(k), float(lv)) for k, lv in zip(found["corruption"], found["level"], strict=True)})


def _mean_rate(get: Lookup, model: str, grid: list[tuple[str, float]], outcome: str, exclude_source: bool) -> float:
    values = [get.value("rate", model=model, outcome=outcome, exclude_source=exclude_source,
                        corruption=kind, level=level) for kind, level in grid]
    return float(np.mean(values)) if values else float("nan")


def s5_1_smallest_noise_finds_original(table: pd.DataFrame, *, min_original: float, mae_max_original: float) -> Outcome:
    get = Lookup(table)
    levels = get.distinct("rate", "level", corruption="noise", outcome="original", exclude_source=False)
    get.need(bool(levels), "rate outcome=original corruption=noise (any level)")
    get.done()
    where = {"outcome": "original", "corruption": "noise", "level": levels[0], "exclude_source": False}
    v = {m: get.value("rate", model=m, **where) for m in ("dino", "dinov2", "supervised", "mae")}
    get.done()
    c = Checks()
    for model, value in v.items():
        c.measure(f"{model} original rate (noise {levels[0]:g})", value)
    for model in ("dino", "dinov2", "supervised"):
        c.check(v[model] >= min_original, f"{model}: original-match rate {_f(v[model])} >= {min_original}")
    c.check(v["mae"] <= mae_max_original, f"mae: original-match rate {_f(v['mae'])} <= {mae_max_original}")
    return c.outcome()


def s5_2_rates_fall_with_level(table: pd.DataFrame, *, tolerance: float) -> Outcome:
    get = Lookup(table)
    where = {"outcome": "original", "exclude_source": False}
    models = get.models("rate", derived=True, **where)
    get.done()
    c = Checks()
    for model in models:
        for kind in get.distinct("rate", "corruption", model=model, **where):
            found = get.rows("rate", model=model, corruption=kind, **where)
            curve = found.groupby("level")["value"].mean().sort_index()
            rise = float(curve.diff().max()) if len(curve) > 1 else 0.0
            c.measure(f"{model} {kind}: largest rise", rise)
            c.check(rise <= tolerance,
                    f"{model} {kind}: original-match rate rises by at most {tolerance} between levels (largest rise {_f(rise)})")
    return c.outcome()


def _mean_original_rates(get: Lookup, required: tuple[str, ...], derived: bool = False) -> dict[str, float]:
    where = {"outcome": "original", "exclude_source": False}
    models = get.models("rate", required=required, derived=derived, **where)
    grid = _rate_grid(get, required[0], "original", exclude_source=False)
    get.done()
    means = {m: _mean_rate(get, m, grid, "original", False) for m in models}
    get.done()
    return means


def s5_3_dino_most_robust(table: pd.DataFrame) -> Outcome:
    get = Lookup(table)
    means = _mean_original_rates(get, ("dino", "dinov2"))
    means.pop("ibot", None)  # iBOT is not in fig 5; it is compared with DINO in S5.4 (fig 10)
    c = Checks()
    for model, value in means.items():
        c.measure(f"{model} mean original rate", value)
    for model, value in means.items():
        if model != "dino":
            c.check(means["dino"] > value, f"dino mean original rate {_f(means['dino'])} > {model} {_f(value)}")
    return c.outcome()


def s5_4_ibot_like_dino(table: pd.DataFrame, *, tolerance: float) -> Outcome:
    get = Lookup(table)
    means = _mean_original_rates(get, ("dino", "ibot"))
    c = Checks()
    ibot, dino = c.measure("ibot mean original rate", means["ibot"]), c.measure("dino mean original rate", means["dino"])
    c.check(ibot >= dino - tolerance, f"ibot {_f(ibot)} >= dino {_f(dino)} - {tolerance}")
    return c.outcome()


def s5_5_dinov2_finds_category(table: pd.DataFrame) -> Outcome:
    get = Lookup(table)
    where = {"outcome": "same_fine", "exclude_source": True, "corruption": "blur"}
    models = get.models("rate", required=("dinov2", "mae"), **where)
    grid = _rate_grid(get, "dinov2", "same_fine", exclude_source=True, corruption="blur")
    get.done()
    means = {m: _mean_rate(get, m, grid, "same_fine", True) for m in models}
    get.done()
    c = Checks()
    for model, value in means.items():
        c.measure(f"{model} same-fine rate", value)
    for model, value in means.items():
        if model != "dinov2":
            c.check(means["dinov2"] > value, f"dinov2 same-fine rate {_f(means['dinov2'])} > {model} {_f(value)}")
        if model != "mae":
            c.check(means["mae"] < value, f"mae same-fine rate {_f(means['mae'])} < {model} {_f(value)}")
    return c.outcome()


def s5_6_pruned_mae_second(table: pd.DataFrame) -> Outcome:
    get = Lookup(table)
    means = _mean_original_rates(get, ("dino", "mae_pruned", "dinov2", "supervised"), derived=True)
    c = Checks()
    dino, pruned = c.measure("dino", means["dino"]), c.measure("mae_pruned", means["mae_pruned"])
    best_other = max(c.measure("dinov2", means["dinov2"]), c.measure("supervised", means["supervised"]))
    c.check(dino > pruned, f"dino {_f(dino)} > mae_pruned {_f(pruned)}")
    c.check(pruned > best_other, f"mae_pruned {_f(pruned)} > max(dinov2, supervised) {_f(best_other)}")
    return c.outcome()


# ---------------------------------------------------------------- S6 association


def _accuracy_by_gap(get: Lookup, metric: str, dataset: str, required: tuple[str, ...], at_least: int = 1) -> dict[str, pd.Series]:
    models = get.models(metric, required=required, at_least=at_least, dataset=dataset)
    get.done()
    curves = {}
    for model in models:
        found = get.rows(metric, model=model, dataset=dataset)
        if "gap" not in found.columns:
            found = found.assign(gap=np.nan)
        found = found.dropna(subset=["gap"])
        get.need(not found.empty, f"{metric} dataset={dataset} model={model} with a gap")
        curves[model] = found.groupby(found["gap"].astype(int))["value"].mean().sort_index()
    get.done()
    return curves


def _mean_on_common_gaps(curves: dict[str, pd.Series], gaps: Any = None) -> dict[str, float]:
    common = sorted(set.intersection(*(set(s.index) for s in curves.values())))
    if gaps is not None:
        common = [g for g in common if g in gaps]
    return {m: float(s[common].mean()) if common else float("nan") for m, s in curves.items()}


def s6_1_contrastive_associate_best(table: pd.DataFrame) -> Outcome:
    get = Lookup(table)
    curves = _accuracy_by_gap(get, "instance_acc", "bdd100k_mot", ("dino", "dinov2"), at_least=3)
    means = _mean_on_common_gaps(curves)
    c = Checks()
    for model, value in means.items():
        c.measure(f"{model} mean instance accuracy", value)
    others = {m: v for m, v in means.items() if m not in ("dino", "dinov2")}
    top_two = min(means["dino"], means["dinov2"])
    best_other = max(others, key=others.get)
    c.check(top_two > others[best_other],
            f"min(dino, dinov2) {_f(top_two)} > best other ({best_other}) {_f(others[best_other])}")
    return c.outcome()


def s6_2_dino_edge_short_gaps(table: pd.DataFrame, *, tolerance: float, short_gap_below: int) -> Outcome:
    get = Lookup(table)
    curves = _accuracy_by_gap(get, "instance_acc", "bdd100k_mot", ("dino", "dinov2"), at_least=2)
    curves = {m: curves[m] for m in ("dino", "dinov2")}
    short = [g for g in curves["dino"].index if g < short_gap_below]
    get.need(bool(short), f"instance_acc at a gap below {short_gap_below}")
    get.done()
    means = _mean_on_common_gaps(curves, gaps=short)
    c = Checks()
    dino, v2 = c.measure("dino short-gap mean", means["dino"]), c.measure("dinov2 short-gap mean", means["dinov2"])
    c.check(dino >= v2 - tolerance, f"gaps < {short_gap_below}: dino {_f(dino)} >= dinov2 {_f(v2)} - {tolerance}")
    return c.outcome()


def s6_3_accuracy_falls_then_flat(
    table: pd.DataFrame, *, tolerance: float, flat_d_from: int, flat_d_to: int, flat_max_change: float
) -> Outcome:
    get = Lookup(table)
    curves = _accuracy_by_gap(get, "instance_acc", "bdd100k_mot", ())
    for model, curve in curves.items():
        for gap in (flat_d_from, flat_d_to):
            get.need(gap in curve.index, f"instance_acc dataset=bdd100k_mot model={model} gap={gap}")
    get.done()
    c = Checks()
    for model, curve in curves.items():
        rise = float(curve.diff().max()) if len(curve) > 1 else 0.0
        change = float(abs(curve[flat_d_from] - curve[flat_d_to]))
        c.measure(f"{model} largest rise", rise)
        c.measure(f"{model} change {flat_d_from}->{flat_d_to}", change)
        c.check(rise <= tolerance, f"{model}: accuracy rises by at most {tolerance} with the gap (largest rise {_f(rise)})")
        c.check(change <= flat_max_change,
                f"{model}: change from gap {flat_d_from} to {flat_d_to} {_f(change)} <= {flat_max_change}")
    return c.outcome()


def s6_4_supervised_like_mae(table: pd.DataFrame, *, margin: float, mae_tolerance: float) -> Outcome:
    get = Lookup(table)
    curves = _accuracy_by_gap(get, "instance_acc", "bdd100k_mot", ("supervised", "dino", "mae"), at_least=3)
    means = _mean_on_common_gaps({m: curves[m] for m in ("supervised", "dino", "mae")})
    c = Checks()
    sup, dino, mae = (c.measure(m, means[m]) for m in ("supervised", "dino", "mae"))
    c.check(sup <= dino - margin, f"supervised {_f(sup)} <= dino {_f(dino)} - {margin}")
    c.check(abs(sup - mae) <= mae_tolerance, f"|supervised {_f(sup)} - mae {_f(mae)}| <= {mae_tolerance}")
    return c.outcome()


def s6_5_wrong_match_right_category(table: pd.DataFrame, *, min_fraction: float) -> Outcome:
    get = Lookup(table)
    curves = _accuracy_by_gap(get, "category_acc_wrong", "bdd100k_mot", ("dinov2",))
    c = Checks()
    value = c.measure("dinov2 category accuracy of wrong matches", curves["dinov2"].mean())
    c.check(value >= min_fraction, f"dinov2: wrong matches of the right category {_f(value)} >= {min_fraction}")
    return c.outcome()


def s6_6_contrastive_beat_mim_mot17(table: pd.DataFrame) -> Outcome:
    get = Lookup(table)
    models = ("dino", "dinov2", "mae", "simmim")
    curves = _accuracy_by_gap(get, "instance_acc", "mot17", models, at_least=4)
    means = _mean_on_common_gaps({m: curves[m] for m in models})
    c = Checks()
    for model in models:
        c.measure(f"{model} mean instance accuracy", means[model])
    low = min(means["dino"], means["dinov2"])
    high = max(means["mae"], means["simmim"])
    c.check(low > high, f"min(dino, dinov2) {_f(low)} > max(mae, simmim) {_f(high)}")
    return c.outcome()
