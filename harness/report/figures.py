"""The paper's figures redrawn from a report's metric rows (matplotlib, Agg backend).

Each figure function takes the report's rows as one DataFrame and the paper's values by
claim id, and returns a matplotlib Figure, or raises `NoData` saying what is missing; `draw_all` turns every figure into a
PNG (bytes) or a note, so a report with missing data loses a figure, never the page.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: figures are rendered to PNG only
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from harness.measurements import RATE_OUTCOMES as OUTCOMES  # noqa: E402
from harness.measurements import row_key, select  # noqa: E402
from harness.profiles import paper_linear  # noqa: E402

Paper = Mapping[str, Mapping[str, Any]]  # claim id -> the paper's values


def middle(values) -> Any:
    """The middle of the sorted distinct values (72 of 36/72/144)."""
    ordered = sorted(set(values))
    return ordered[len(ordered) // 2]


class NoData(LookupError):
    """The rows a figure needs are not in the report."""


@dataclass
class Drawn:
    key: str
    title: str
    png: bytes | None
    note: str = ""


def report_table(report: Mapping[str, Any]) -> pd.DataFrame:
    """All metric rows of the report, each row once."""
    unique = {}
    claim_rows = [row for claim in report.get("claims", []) for row in claim.get("rows") or []]
    for row in [*report.get("rows", []), *claim_rows]:
        unique.setdefault(row_key(row), row)
    return pd.DataFrame(list(unique.values()))


def _last_layer(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows at each model's last layer (an empty layer cell counts as the last)."""
    if "layer" not in rows.columns or rows.empty:
        return rows
    last = rows.groupby("model")["layer"].transform("max")
    return rows[rows["layer"].isna() | (rows["layer"] == last)]


def _need(rows: pd.DataFrame, what: str) -> pd.DataFrame:
    if rows.empty:
        raise NoData(f"no {what} in this report")
    return rows


def _middle_n(rows: pd.DataFrame) -> pd.DataFrame:
    if "n_train" in rows.columns and rows["n_train"].notna().any():
        return rows[rows["n_train"] == middle(rows["n_train"].dropna())]
    return rows


def fig1_knn_vs_linear(t: pd.DataFrame, paper: Paper) -> plt.Figure:
    rows = _need(_last_layer(select(t, "miou", dataset="cityscapes", corruption="none", m=0, variant="main",
                                    classes="all")), "clean Cityscapes mIoU")
    if "n_train" not in rows.columns or rows["n_train"].nunique() < 2:
        raise NoData("no mIoU by training-set size")
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, model in enumerate(sorted(rows["model"].unique())):
        color = f"C{i}"
        for probe, style in (("knn", "--"), (paper_linear(model), "-")):
            curve = rows[(rows["model"] == model) & (rows["probe"] == probe)].groupby("n_train")["value"].mean()
            if not curve.empty:
                ax.plot(curve.index, curve.values, style, marker="o", color=color,
                        label=f"{model} {'kNN' if probe == 'knn' else 'linear'}")
    ax.set(xlabel="training images", ylabel="mIoU", title="Fig 1: kNN (dashed) vs linear (solid)")
    ax.legend(fontsize=7, ncol=2)
    return fig


def fig2_layers(t: pd.DataFrame, paper: Paper) -> plt.Figure:
    rows = select(t, "miou", dataset="cityscapes", probe="knn", corruption="none", m=0, variant="main", classes="all")
    if "layer" not in rows.columns or rows["layer"].nunique() < 2:
        raise NoData("no kNN mIoU at two or more layers")
    rows = _middle_n(rows.dropna(subset=["layer"]))
    bus = select(t, "iou", model="dinov2", class_name="bus")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
    for model in sorted(rows["model"].unique()):
        curve = rows[rows["model"] == model].groupby("layer")["value"].mean()
        axes[0].plot(curve.index, curve.values, marker="o", label=model)
    axes[0].set(xlabel="layer", ylabel="kNN mIoU", title="Fig 2: kNN mIoU per layer")
    axes[0].legend(fontsize=7)
    bus_paper = paper.get("S3.8", {})
    layers = [9, 12]
    axes[1].bar([x - 0.2 for x in range(2)], [bus_paper.get(f"bus_iou_layer{n}", float("nan")) for n in layers], 0.4,
                color="lightgray", label="paper")
    if "layer" in bus.columns and not bus.empty:
        measured = bus.groupby("layer")["value"].mean()
        axes[1].bar([x + 0.2 for x in range(2)], [measured.get(n, float("nan")) for n in layers], 0.4,
                    color="C1", label="measured")
    axes[1].set_xticks(range(2), [f"layer {n}" for n in layers])
    axes[1].set(title="S3.8: dinov2 'bus' IoU", ylabel="IoU")
    axes[1].legend(fontsize=7)
    return fig


def fig3_robustness(t: pd.DataFrame, paper: Paper) -> plt.Figure:
    rows = _last_layer(select(t, "miou", dataset="cityscapes", m=0, variant="main", classes="all"))
    if "corruption" not in rows.columns:
        raise NoData("no corrupted mIoU")
    kinds = [k for k in rows["corruption"].dropna().unique() if k not in ("none", "shift")]
    if not kinds:
        raise NoData("no corrupted mIoU")
    rows = _middle_n(rows)
    fig, axes = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 3.6), squeeze=False)
    for ax, kind in zip(axes[0], sorted(kinds), strict=True):
        for model in sorted(rows["model"].unique()):
            mine = rows[(rows["model"] == model) & (rows["probe"] == paper_linear(model))]
            clean = mine[mine["corruption"].isin(["none"]) | mine["corruption"].isna()]["value"]
            curve = mine[mine["corruption"] == kind].groupby("level")["value"].mean()
            if curve.empty:
                continue
            if not clean.empty:
                curve = pd.concat([pd.Series({0.0: clean.mean()}), curve])
            ax.plot(curve.index, curve.values, marker="o", label=model)
        ax.set(title=f"Fig 3: {kind}", xlabel="level (0 = clean)", ylabel="linear mIoU")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def fig4a_variance(t: pd.DataFrame, paper: Paper) -> plt.Figure:
    rows = _need(select(t, "variance_ratio"), "feature-variance ratios (S4.1)")
    ratios = rows.groupby("model")["value"].mean().sort_values()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.bar(ratios.index, ratios.values, color=["C3" if m in ("mae", "simmim") else "C0" for m in ratios.index])
    ax.set_yscale("log")
    ax.set(ylabel="mean of top-10 variances / median variance", title="Fig 4a: a few high-variance features")
    return fig


def fig4_pruning(t: pd.DataFrame, paper: Paper) -> plt.Figure:
    rows = _last_layer(select(t, "miou", dataset="cityscapes", probe="knn", corruption="none", variant="main",
                              classes="all"))
    if "m" not in rows.columns or rows["m"].dropna().nunique() < 1:
        raise NoData("no kNN mIoU after removing high-variance features (m > 0)")
    rows = _middle_n(rows.assign(m=rows["m"].fillna(0)))
    curves = {model: rows[rows["model"] == model].groupby("m")["value"].mean() for model in sorted(rows["model"].unique())}
    curves = {model: curve for model, curve in curves.items() if len(curve) > 1}
    if not curves:
        raise NoData("no model with kNN mIoU at two or more m")
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, curve in curves.items():
        ax.plot(curve.index, curve.values, marker="o", label=model)
    pruning = {int(str(k).split("=")[-1]): v for k, v in paper.get("S4.2", {}).items()}
    ax.plot(list(pruning), list(pruning.values()), "kx", markersize=9, label="paper (mae)")
    ax.set(xlabel="m (highest-variance features removed)", ylabel="kNN mIoU", title="Fig 4b/c: pruning")
    ax.legend(fontsize=7)
    return fig


def fig_s4_tables(t: pd.DataFrame, paper: Paper) -> plt.Figure:
    r2, overlap = select(t, "r2", model="mae"), select(t, "overlap", model="mae")
    if r2.empty and overlap.empty:
        raise NoData("no R^2 (S4.6) or feature overlap (S4.7)")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, rows, column, claim, title in (
        (axes[0], r2, "subset", "S4.6", "S4.6: R^2 of global context"),
        (axes[1], overlap, "pair", "S4.7", "S4.7: shared top-200 features"),
    ):
        values = paper.get(claim, {})
        labels = list(values)
        measured = rows.groupby(column)["value"].mean() if column in rows.columns else pd.Series(dtype=float)
        x = range(len(labels))
        ax.bar([i - 0.2 for i in x], [values[k] for k in labels], 0.4, color="lightgray", label="paper")
        ax.bar([i + 0.2 for i in x], [measured.get(k, float("nan")) for k in labels], 0.4, color="C0", label="measured")
        ax.set_xticks(list(x), labels, fontsize=8)
        ax.set_title(title)
        ax.legend(fontsize=7)
    return fig


def _rates(t: pd.DataFrame, exclude_source: bool, title: str) -> plt.Figure:
    rows = select(t, "rate", exclude_source=exclude_source)
    if rows.empty or not {"outcome", "corruption", "level"} <= set(rows.columns):
        raise NoData(f"no retrieval rates with exclude_source={exclude_source}")
    models = sorted(rows["model"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 3.6), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models, strict=True):
        table = (rows[rows["model"] == model].pivot_table(index=["corruption", "level"], columns="outcome",
                                                          values="value", aggfunc="mean").fillna(0.0))
        labels = [f"{k[0]} {k[1]:g}" for k in table.index]
        bottom = pd.Series(0.0, index=table.index)
        for i, outcome in enumerate(o for o in OUTCOMES if o in table.columns):
            ax.bar(labels, table[outcome], bottom=bottom, color=f"C{i}", label=outcome)
            bottom += table[outcome]
        ax.set_title(model, fontsize=9)
        ax.tick_params(axis="x", labelrotation=90, labelsize=6)
    axes[0][0].set_ylabel("fraction of matches")
    axes[0][-1].legend(fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def fig5_retrieval(t: pd.DataFrame, paper: Paper) -> plt.Figure:
    return _rates(t, False, "Fig 5: what the nearest patch is, by transformation level")


def fig6_retrieval_excluded(t: pd.DataFrame, paper: Paper) -> plt.Figure:
    return _rates(t, True, "Fig 6: the same with the source image excluded")


def fig7_association(t: pd.DataFrame, paper: Paper) -> plt.Figure:
    rows = select(t, "instance_acc")
    if rows.empty or "gap" not in rows.columns:
        raise NoData("no association accuracy by frame gap")
    datasets = sorted(rows["dataset"].dropna().unique()) if "dataset" in rows.columns else ["?"]
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.6), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        mine = rows[rows["dataset"] == dataset] if "dataset" in rows.columns else rows
        for model in sorted(mine["model"].unique()):
            curve = mine[mine["model"] == model].groupby("gap")["value"].mean()
            ax.plot(curve.index, curve.values, marker=".", label=model)
        ax.set(title=f"Fig 7: {dataset}", xlabel="frame gap", ylabel="instance accuracy")
        ax.legend(fontsize=7)
    return fig


FIGURES: list[tuple[str, str, Callable[[pd.DataFrame, Paper], plt.Figure]]] = [
    ("fig1", "Fig 1: kNN vs linear by training-set size (S3.1-S3.4)", fig1_knn_vs_linear),
    ("fig2", "Fig 2: layer curves, and the S3.8 'bus' jump", fig2_layers),
    ("fig3", "Fig 3: robustness to corruptions (S3.10-S3.12)", fig3_robustness),
    ("fig4a", "Fig 4a: feature variance outliers (S4.1)", fig4a_variance),
    ("fig4", "Fig 4b/c: removing high-variance features (S4.2-S4.4)", fig4_pruning),
    ("s4", "Tables: S4.6 global context and S4.7 shared features", fig_s4_tables),
    ("fig5", "Fig 5: retrieval outcomes by level (S5.1-S5.4)", fig5_retrieval),
    ("fig6", "Fig 6: retrieval with the source image excluded (S5.5)", fig6_retrieval_excluded),
    ("fig7", "Fig 7: association accuracy by frame gap (S6)", fig7_association),
]


def draw_all(report: Mapping[str, Any]) -> list[Drawn]:
    table = report_table(report)
    paper = {c["id"]: c.get("paper") or {} for c in report.get("claims", [])}
    drawn = []
    for key, title, draw in FIGURES:
        if table.empty:
            drawn.append(Drawn(key, title, None, "no measurements in this report"))
            continue
        try:
            with warnings.catch_warnings():  # matplotlib's layout chatter is not the user's business
                warnings.simplefilter("ignore")
                fig = draw(table, paper)
        except NoData as missing:
            drawn.append(Drawn(key, title, None, str(missing)))
            continue
        except Exception as err:  # a figure must never take the report down with it
            drawn.append(Drawn(key, title, None, f"could not be drawn: {type(err).__name__}: {err}"))
            continue
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        drawn.append(Drawn(key, title, buffer.getvalue()))
    return drawn
