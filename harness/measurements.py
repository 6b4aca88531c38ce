"""The metric table: what the experiments measure and what the claims read.

One row per measured number. The experiments (harness/experiments/) write rows as
`Measurement`s; the claims (claims/test_*.py) read them through `Measurements`, a small
read API in the words the paper states its findings in::

    knn = cityscapes.curve("miou", by="m", model="mae", probe="knn", need=(0, 10, 200))
    linear = cityscapes.value("miou", model="mae", probe="linear_bn")
    acc = bdd100k.grid("instance_acc", index="gap", need=("dino", "dinov2"))

This docstring is the schema of the table (the one place it is written down).

Key columns (a row's identity; `value` holds the number)
---------------------------------------------------------
=============== ====================================================== =======================
column          meaning                                                a read that leaves it
                                                                       out means
=============== ====================================================== =======================
metric          the kind of number (see Metrics below)                 (always given)
model           registry name: dino, dinov2, mae, simmim, ibot, ...    any model
variant         the protocol: ``main``, or a secondary variant          ``main``
dataset         cityscapes, ade20k, fair1m, bdd100k_mot, mot17          any (one per fixture)
probe           ``knn`` (1-NN, L2), ``linear``, ``linear_bn``,          any
                ``knn_bn`` (k-NN after the probe's BatchNorm)
layer           block output 1..depth                                   the model's last layer
n_train         train images of the few-shot subset                     the middle size present
corruption      none, blur, noise, band_noise (S3); shift, blur, noise  ``none``
level           corruption level (px, std, band 1..4, px)               0
m               highest-variance features removed                       0
classes         all; easy (road, vegetation, sky, car, building); hard  ``all``
class_name      one class (per-class rows)                              any
subset          S4.6 feature subset: full, pruned, top, random          any
pair            S4.7 dataset pair, e.g. cityscapes/ade20k                any
outcome         S5: original, same_instance, same_fine, same_super,     any
                other, background
exclude_source  S5: the query's own tile removed from the gallery       False
gap             S6 frame gap D (annotated frames)                       any
zeroed          S4.8: none, top200, random200                           ``none``
=============== ====================================================== =======================

A cell left empty (NaN) means the column's default. Secondary variants: ``literal`` (band
noise with std 40 before the band filter), ``frame`` (S4.6 one sample per frame),
``unmasked`` (S4.8 without masking), ``cosine`` (1-NN by cosine distance), ``all_objects``
(S6 counting objects that left the scene), ``roi7x7`` (S6 ROIAlign with 7x7 bins),
``pruned`` (the model with its top-200 variance features removed).

Metrics: see `METRICS` (each with its direction: whether higher is better, which decides
what counts as a regression against a baseline).

Units and the bootstrap
-----------------------
A row may carry per-unit statistics (`Measurement.units`, first axis = units such as val
images, FAIR1M tiles or videos) and the name of a reducer that recomputes the number from
any weighted sum of them. Every reducer is a function of the units' sum (a confusion
matrix, hits and totals, R^2 sums), so a bootstrap resample costs one matrix product.
Rows of one `unit_group` share each draw: models are compared on the same resampled
images. `Measurements.resampled(n, seed)` is the one resampling path of the harness.

Reads and verdicts
------------------
A read that finds nothing returns NaN and is listed in `missing`; the harness then judges
the claim 'not judged' (or 'skipped', when the missing model's weights are unavailable),
never 'contradicted'. Two rows for one read is an error in the claim, not a guess. Every
row read is listed in `read`: the claim's own rows in the report and against a baseline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

KEY_COLUMNS = (
    "metric", "model", "variant", "dataset", "probe", "layer", "n_train", "corruption", "level",
    "m", "classes", "class_name", "subset", "pair", "outcome", "exclude_source", "gap", "zeroed",
)

# The outcomes of S5's retrieval, from best to worst (the `rate` rows' `outcome`).
RATE_OUTCOMES = ("original", "same_instance", "same_fine", "same_super", "other", "background")

# What a read that leaves a column out asks for (an empty cell counts as this value).
DEFAULTS: dict[str, Any] = {
    "variant": "main",
    "corruption": "none",
    "level": 0,
    "m": 0,
    "classes": "all",
    "exclude_source": False,
    "zeroed": "none",
}
# Defaults computed from the rows present: the model's last layer, the middle train size.
COMPUTED_DEFAULTS = ("layer", "n_train")


@dataclass(frozen=True)
class Metric:
    description: str
    higher_is_better: bool = False  # a drop of more than the tolerance is a regression
    good_outcomes: tuple[str, ...] = ()  # 'rate': the outcomes for which higher is better


METRICS: dict[str, Metric] = {
    "miou": Metric("mIoU over the val patches (one confusion matrix per val image)", True),
    "patch_acc": Metric("patch accuracy over the val patches", True),
    "iou": Metric("IoU of one class (class_name)", True),
    "n_patches": Metric("val patches of one class (class_name)"),
    "majority_fraction": Metric("mean over val images of the share of patches k-NN gives the image's most frequent class"),
    "majority_fraction_pooled": Metric("share of all val patches k-NN gives the most frequent class"),
    "variance_ratio": Metric("mean of the top-10 feature variances / median variance (train patches)"),
    "r2": Metric("R^2 of road/building/vegetation fractions from the central patch, averaged", True),
    "overlap": Metric("shared top-m variance features of two datasets (pair)"),
    "recon_mse": Metric("MAE norm-pix reconstruction MSE on masked patches"),
    "rate": Metric("share of query patches whose nearest patch has this outcome",
                   good_outcomes=RATE_OUTCOMES[:4]),
    "instance_acc": Metric("share of objects whose nearest object at t+D is the same track", True),
    "category_acc": Metric("share of objects whose nearest object at t+D has their category", True),
    "category_acc_wrong": Metric("category accuracy among wrong instance matches", True),
    "left_out": Metric("share of objects at t whose track is absent at t+D (not queried)"),
    "gap_seconds": Metric("mean of D / fps over the queries of a gap"),
    "lr": Metric("linear-probe learning rate chosen on held-out train images"),
    "nn_agreement": Metric("share of 1-NN predictions equal under bf16 and fp32 extraction", True),
    "metric_shift": Metric("largest |bf16 - fp32| difference of a metric on the precision slice"),
}


# A higher-is-better metric that drops by more than this below a baseline is a regression (X.2).
DEFAULT_TOLERANCE = 0.02


def higher_is_better(row: Mapping[str, Any]) -> bool:
    metric = METRICS.get(str(row.get("metric")))
    if metric is None:
        return False
    if metric.good_outcomes:
        return row.get("outcome") in metric.good_outcomes
    return metric.higher_is_better


# ---------------------------------------------------------------- reducers


def _miou(total: np.ndarray, extra: Mapping[str, Any]) -> np.ndarray:
    """mIoU; with reducer_args {'class_indices': [...]} over those classes (S3.8's easy/hard)."""
    from harness.probes.metrics import miou_from_confusion

    return miou_from_confusion(total, extra.get("class_indices"))[0]


def _class_iou(total: np.ndarray, extra: Mapping[str, Any]) -> np.ndarray:
    from harness.probes.metrics import miou_from_confusion

    return miou_from_confusion(total)[1][..., extra["class_index"]]


def _accuracy(total: np.ndarray, extra: Mapping[str, Any]) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.trace(total, axis1=-2, axis2=-1) / total.sum(axis=(-2, -1))


def _ratio(total: np.ndarray, extra: Mapping[str, Any]) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total[..., 1] > 0, total[..., 0] / np.where(total[..., 1] > 0, total[..., 1], 1), np.nan)


def _sum(total: np.ndarray, extra: Mapping[str, Any]) -> np.ndarray:
    return total[..., 0]


def _r2(total: np.ndarray, extra: Mapping[str, Any]) -> np.ndarray:
    """total [..., 3k + 1]: (sse_1..k, sum_y_1..k, sum_yy_1..k, n) -> mean over k of
    1 - sse / (syy - sy^2 / n), the out-of-sample R^2 with the evaluation set's mean."""
    k = (total.shape[-1] - 1) // 3
    sse, sy, syy = total[..., :k], total[..., k:2 * k], total[..., 2 * k:3 * k]
    n = total[..., -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        sst = syy - sy * sy / n
        return np.mean(1.0 - sse / sst, axis=-1)


# reducer name -> f(sum of the units over a resample [..., *unit shape], args) -> value [...]
REDUCERS = {
    "miou": _miou, "class_iou": _class_iou, "accuracy": _accuracy, "ratio": _ratio,
    "sum": _sum, "r2": _r2,
}


@dataclass
class Measurement:
    """One row of the metric table, as an experiment writes it."""

    metric: str
    model: str
    value: float
    params: dict[str, Any] = field(default_factory=dict)
    # Per-unit statistics, first axis = units (e.g. val images) shared by every row of
    # the same `unit_group`; None when the number cannot be resampled (e.g. a variance).
    units: np.ndarray | None = None
    reducer: str | None = None
    reducer_args: dict[str, Any] = field(default_factory=dict)
    unit_group: str | None = None

    def __post_init__(self):
        if self.units is not None and self.reducer not in REDUCERS:
            raise ValueError(f"{self.metric} [{self.model}]: reducer {self.reducer!r} is not one of {sorted(REDUCERS)}")

    def row(self, value: float | None = None) -> dict[str, Any]:
        return {"metric": self.metric, "model": self.model,
                "value": self.value if value is None else value, **self.params}

    def recompute(self, weights: np.ndarray) -> np.ndarray:
        """The value under unit weights [..., n_units] (a bootstrap draw as counts)."""
        if self.units is None or self.reducer is None:
            return np.broadcast_to(np.float64(self.value), np.shape(weights)[:-1]).copy()
        units = np.asarray(self.units, dtype=np.float64)
        total = (np.asarray(weights, np.float64) @ units.reshape(len(units), -1)).reshape(
            *np.shape(weights)[:-1], *units.shape[1:])
        return np.asarray(REDUCERS[self.reducer](total, self.reducer_args), dtype=np.float64)


def to_table(measurements: Iterable[Measurement]) -> pd.DataFrame:
    return pd.DataFrame([m.row() for m in measurements])


def table_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """A metric table as JSON records, without the empty cells (absent parameters)."""
    from harness.claims.verdict import jsonable

    return [{k: v for k, v in jsonable(row).items() if v is not None}
            for row in table.to_dict(orient="records")]


def row_key(row: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The identity of a row across runs and reports: its key columns with a value, numbers as
    floats, columns at their static default left out (an empty cell and the default are one)."""
    key = []
    for column in KEY_COLUMNS:
        value = _plain(row.get(column))
        if value is None or (column in DEFAULTS and value == _plain(DEFAULTS[column])):
            continue
        key.append((column, value))
    return tuple(key)


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    return str(value)


def row_label(row: Mapping[str, Any]) -> str:
    """A short name of a row for people: 'miou mae knn layer=12 n_train=72 m=200'."""
    parts = [str(row.get("metric")), str(row.get("model"))]
    for column in KEY_COLUMNS[2:]:
        value = _plain(row.get(column))
        if value is None or column == "dataset" or (column in DEFAULTS and value == _plain(DEFAULTS[column])):
            continue
        shown = int(value) if isinstance(value, float) and value.is_integer() else value
        parts.append(str(shown) if column in ("probe", "variant", "outcome") else f"{column}={shown}")
    return " ".join(parts)


def select(table: pd.DataFrame, metric: str, **where: Any) -> pd.DataFrame:
    """Rows of `metric` whose parameters equal `where` (a list/tuple value: any of them); an
    empty cell matches a wanted static default. For figures; claims use `Measurements`."""
    mask = table["metric"] == metric if "metric" in table.columns else pd.Series(False, index=table.index)
    for name, wanted in where.items():
        if wanted is None:
            continue
        values = list(wanted) if isinstance(wanted, (list, tuple, set)) else [wanted]
        if name not in table.columns:
            if not (name in DEFAULTS and DEFAULTS[name] in values):
                mask &= False
            continue
        match = table[name].isin(values)
        if name in DEFAULTS and DEFAULTS[name] in values:
            match |= table[name].isna()
        mask &= match
    return table[mask]


# ---------------------------------------------------------------- the read API


_reported_only: ContextVar[bool] = ContextVar("reported_only", default=False)


@contextmanager
def reported() -> Iterator[None]:
    """Reads in this block are reported beside a claim, not asserted: they are listed with
    the claim's rows, and a number that is missing does not keep the claim from a verdict."""
    token = _reported_only.set(True)
    try:
        yield
    finally:
        _reported_only.reset(token)


class AmbiguousRead(ValueError):
    """A read that should name one number matched several rows: the claim must say which."""


@dataclass(frozen=True)
class Missing:
    """A read that found nothing: the metric and what was asked."""

    metric: str
    where: tuple[tuple[str, Any], ...]
    note: str = ""

    @property
    def model(self) -> str | None:
        return dict(self.where).get("model")

    def __str__(self) -> str:
        text = " ".join([self.metric] + [f"{k}={_show(v)}" for k, v in self.where])
        return f"{text} ({self.note})" if self.note else text


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple, set, frozenset)):
        return "{" + ",".join(str(v) for v in value) + "}"
    return str(value)


def _frozen(where: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, _hashable(v)) for k, v in where.items()))


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, tuple, set, frozenset)):
        return tuple(value)
    return value


class _Index:
    """The rows of one table with numpy columns per metric, the computed defaults and a cache
    of resolved reads. Claims ask hundreds of small questions of a table, and the same ones
    again for each of 1000 bootstrap resamples, so a read must cost a dict lookup."""

    def __init__(self, measurements: Sequence[Measurement]):
        self.measurements = list(measurements)
        self.rows = [m.row() for m in self.measurements]
        self.values = np.array([float(m.value) for m in self.measurements], dtype=np.float64)
        self.by_metric: dict[str, np.ndarray] = {}
        for i, row in enumerate(self.rows):
            self.by_metric.setdefault(str(row["metric"]), []).append(i)
        self.by_metric = {k: np.asarray(v) for k, v in self.by_metric.items()}
        self.columns: dict[str, np.ndarray] = {}
        self.empty: dict[str, np.ndarray] = {}
        self.at_default: dict[str, np.ndarray] = {}
        for column in KEY_COLUMNS[1:]:
            cells = np.array([_cell(row.get(column)) for row in self.rows], dtype=object)
            self.columns[column] = cells
            self.empty[column] = _empty(cells)
            if column in DEFAULTS:
                self.at_default[column] = self.empty[column] | _equal(cells, _cell(DEFAULTS[column]))
        self.last_layer = self._last_layers()
        self.middle_n = self._middle_sizes()
        self.cache: dict[tuple, np.ndarray] = {}
        self.layouts: dict[tuple, tuple] = {}  # curve/grid reads: rows in order and their labels
        self.subsets: dict[str, Measurements] = {}
        self.groups = self._unit_groups()

    def _last_layers(self) -> np.ndarray:
        """Per row: is its layer the last layer its (metric, model) has (or empty)?"""
        layer = [v if isinstance(v, float) else None for v in self.columns["layer"]]  # a non-number is no layer
        last: dict[tuple, float] = {}
        for i, row in enumerate(self.rows):
            if layer[i] is not None:
                k = (row["metric"], row["model"])
                last[k] = max(last.get(k, -math.inf), layer[i])
        return np.array([self.columns["layer"][i] is None
                         or (layer[i] is not None and layer[i] == last[(row["metric"], row["model"])])
                         for i, row in enumerate(self.rows)], dtype=bool)

    def _middle_sizes(self) -> dict[str, float]:
        """Per metric: the middle of the training-set sizes it was measured at (72 of 36/72/144)."""
        sizes: dict[str, set] = {}
        for i, row in enumerate(self.rows):
            n = self.columns["n_train"][i]
            if n is not None:
                sizes.setdefault(str(row["metric"]), set()).add(float(n))
        return {metric: sorted(s)[len(s) // 2] for metric, s in sizes.items()}

    def _unit_groups(self) -> dict[str, int]:
        groups: dict[str, int] = {}
        for m in self.measurements:
            if m.units is not None and m.unit_group is not None:
                n = len(m.units)
                if groups.setdefault(m.unit_group, n) != n:
                    raise ValueError(f"unit group {m.unit_group!r} has rows with {groups[m.unit_group]} and {n} units")
        return groups

    def select(self, metric: str, where: Mapping[str, Any], free: tuple[str, ...] = ()) -> np.ndarray:
        key = (metric, _frozen(where), free)
        found = self.cache.get(key)
        if found is None:
            found = self._select(metric, where, free)
            self.cache[key] = found
        return found

    def _select(self, metric: str, where: Mapping[str, Any], free: tuple[str, ...]) -> np.ndarray:
        rows = self.by_metric.get(metric)
        if rows is None:
            return np.zeros(0, dtype=np.int64)
        unknown = sorted(set(where) - set(KEY_COLUMNS))
        if unknown:
            raise ValueError(f"unknown column(s) {unknown} in a read of {metric!r}; the key columns are {KEY_COLUMNS[1:]}")
        mask = np.ones(len(rows), dtype=bool)
        for column in KEY_COLUMNS[1:]:
            if column in where:
                cells = self.columns[column][rows]
                wanted = where[column]
                values = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
                match = np.zeros(len(rows), dtype=bool)
                for value in values:
                    match |= _equal(cells, _cell(value))
                if column in DEFAULTS and any(_cell(v) == _cell(DEFAULTS[column]) for v in values):
                    match |= self.empty[column][rows]
                mask &= match
            elif column in free:
                continue
            elif column in DEFAULTS:
                mask &= self.at_default[column][rows]
            elif column == "layer":
                mask &= self.last_layer[rows]
            elif column == "n_train" and metric in self.middle_n:
                mask &= self.empty[column][rows] | _equal(self.columns[column][rows], self.middle_n[metric])
        return rows[mask]


def _cell(value: Any) -> Any:
    """Cells compared as plain values: numbers as floats, empty as None."""
    plain = _plain(value)
    return plain


def _equal(cells: np.ndarray, value: Any) -> np.ndarray:
    if value is None:
        return _empty(cells)
    return np.fromiter((c == value and c is not None for c in cells), dtype=bool, count=len(cells))


def _empty(cells: np.ndarray) -> np.ndarray:
    return np.fromiter((c is None for c in cells), dtype=bool, count=len(cells))


class Measurements:
    """The numbers one experiment measured, read the way the paper states its findings.

    A parameter a read leaves out takes its default (see the module docstring: clean images,
    the last layer, m = 0, the middle training size, the main protocol). A number that is not
    there reads as NaN and is listed in `missing`, so a claim with incomplete numbers is 'not
    judged', never 'contradicted'. Every row read is listed in `read`. `unavailable` names
    models whose weights are missing (a read of one of them makes the claim skip, naming the
    weights). `alternates` are the same measurements on other few-shot training subsets
    (--claims-train-seeds).
    """

    def __init__(self, measurements: Sequence[Measurement] = (), unavailable: Mapping[str, str] | None = None,
                 name: str = "", failed: Mapping[str, str] | None = None):
        self._index = _Index(measurements)
        self._values = self._index.values
        self.unavailable: dict[str, str] = dict(unavailable or {})
        self.failed: dict[str, str] = dict(failed or {})
        self.name = name
        self.alternates: list[Measurements] = []
        self._read: dict[int, None] = {}
        self.missing: list[Missing] = []
        self._resamples: dict[tuple[int, int], list[Measurements]] = {}

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_table(cls, table: pd.DataFrame, unavailable: Mapping[str, str] | None = None) -> Measurements:
        """A metric table (one row per number: metric, model, value and key columns) without
        per-unit statistics: for judging a claim on numbers from elsewhere, and for tests."""
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame metric table, got {type(table).__name__}")
        for column in ("metric", "model", "value"):
            if column not in table.columns:
                raise ValueError(f"metric table lacks the column {column!r}; expected metric, model, value "
                                 f"and key columns ({', '.join(KEY_COLUMNS[2:])}), got {list(table.columns)}")
        rows = []
        for record in table.to_dict(orient="records"):
            params = {k: v for k, v in record.items()
                      if k not in ("metric", "model", "value") and _plain(v) is not None}
            rows.append(Measurement(str(record["metric"]), str(record["model"]), float(record["value"]), params))
        return cls(rows, unavailable)

    def fresh(self) -> Measurements:
        """The same numbers with empty `read`/`missing` tracking (one judging attempt)."""
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view._read, view.missing = {}, []
        return view

    def of_dataset(self, dataset: str) -> Measurements:
        """The rows of one dataset (and those without a dataset); the same object each time,
        so its reads and resamples are computed once."""
        found = self._index.subsets.get(dataset)
        if found is None:
            kept = [m for m in self._index.measurements if m.params.get("dataset") in (None, dataset)]
            found = Measurements(kept, self.unavailable, name=self.name, failed=self.failed)
            found.alternates = [alternate.of_dataset(dataset) for alternate in self.alternates]
            self._index.subsets[dataset] = found
        return found

    def extend(self, other: Measurements) -> Measurements:
        return Measurements(self._index.measurements + other._index.measurements,
                            {**self.unavailable, **other.unavailable}, name=self.name or other.name,
                            failed={**self.failed, **other.failed})

    # -- reading -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._values)

    def _mark(self, rows: np.ndarray) -> None:
        for i in rows.tolist():
            self._read[i] = None

    def _miss(self, metric: str, where: Mapping[str, Any], note: str = "") -> None:
        if _reported_only.get():
            return
        self.missing.append(Missing(metric, tuple((k, _hashable(v)) for k, v in where.items()), note))

    def value(self, metric: str, **where: Any) -> float:
        """Exactly one number; two matching rows are an error, not a guess."""
        rows = self._index.select(metric, where)
        if len(rows) == 0:
            self._miss(metric, where)
            return float("nan")
        if len(rows) > 1:
            raise AmbiguousRead(self._ambiguous(metric, where, rows))
        self._mark(rows)
        return float(self._values[rows[0]])

    def curve(self, metric: str, by: str, need: Iterable[Any] = (), **where: Any) -> pd.Series:
        """One number per value of `by` (layer, m, gap, level), sorted by it; every value in
        `need` must be present."""
        key = ("curve", metric, _frozen(where), by)
        layout = self._index.layouts.get(key)
        if layout is None:
            rows = self._index.select(metric, where, free=(by,))
            keys = [self._key(by, i) for i in rows.tolist()]
            if len(set(keys)) != len(keys) or None in keys:
                raise AmbiguousRead(self._ambiguous(metric, {**where, "by": by}, rows))
            order = sorted(range(len(keys)), key=lambda j: keys[j])
            index = pd.Index([_number(keys[j]) for j in order], name=by)
            layout = (rows[order] if len(rows) else rows, index, set(index))
            self._index.layouts[key] = layout
        rows, index, present = layout
        self._mark(rows)
        series = pd.Series(self._row_values(rows), index=index, dtype=float, copy=False)
        if not len(rows):
            self._miss(metric, {**where, by: "any"})
        for wanted in need:
            if _number(_cell(wanted)) not in present:
                self._miss(metric, {**where, by: wanted})
        return series

    def grid(self, metric: str, index: str, need: Iterable[str] = (), at_least: int = 1,
             **where: Any) -> pd.DataFrame:
        """`index` x model: one column per model (those in `need` must be there, and at least
        `at_least` models)."""
        key = ("grid", metric, _frozen(where), index)
        layout = self._index.layouts.get(key)
        if layout is None:
            free = (index,) if "model" in where else (index, "model")
            rows = self._index.select(metric, where, free=free)
            keys = [(self._key(index, i), self.model_of(i)) for i in rows.tolist()]
            if len(set(keys)) != len(keys) or any(k[0] is None for k in keys):
                raise AmbiguousRead(self._ambiguous(metric, {**where, "by": index}, rows))
            index_values = sorted({_number(k[0]) for k in keys})
            models = sorted({k[1] for k in keys})
            position_i = {v: i for i, v in enumerate(index_values)}
            position_m = {m: j for j, m in enumerate(models)}
            cells = (np.array([position_i[_number(k[0])] for k in keys], dtype=np.int64),
                     np.array([position_m[k[1]] for k in keys], dtype=np.int64))
            layout = (rows, cells, pd.Index(index_values, name=index), models)
            self._index.layouts[key] = layout
        rows, cells, index_values, models = layout
        self._mark(rows)
        table = np.full((len(index_values), len(models)), np.nan)
        table[cells] = self._row_values(rows)
        grid = pd.DataFrame(table, index=index_values, columns=models, copy=False)
        for model in need:
            if model not in models:
                self._miss(metric, {**where, "model": model})
        if len(models) < at_least:
            self._miss(metric, where, f"needs at least {at_least} models, found {models or 'none'}")
        return grid

    def _row_values(self, rows: np.ndarray) -> np.ndarray:
        if isinstance(self._values, np.ndarray):
            return self._values[rows]
        return np.fromiter((self._values[i] for i in rows.tolist()), dtype=np.float64, count=len(rows))

    def models(self, metric: str, **where: Any) -> list[str]:
        """The models with any row of `metric` matching `where` (columns it leaves out are
        not narrowed to their defaults: this asks what exists)."""
        rows = self._index.select(metric, where, free=KEY_COLUMNS[1:])
        return sorted({self.model_of(i) for i in rows.tolist()})

    def distinct(self, metric: str, column: str, **where: Any) -> list[Any]:
        """Sorted distinct values of `column` among the rows of `metric` matching `where` (e.g.
        the corruption levels measured; columns it leaves out are not narrowed to defaults)."""
        rows = self._index.select(metric, where, free=KEY_COLUMNS[1:])
        values = {self._key(column, i) for i in rows.tolist()} - {None}
        return sorted(_number(v) for v in values)

    def _key(self, column: str, i: int) -> Any:
        """Row i's value of `column`; an empty cell of a column with a default is that default."""
        value = self._index.columns[column][i]
        return _cell(DEFAULTS[column]) if value is None and column in DEFAULTS else value

    def model_of(self, i: int) -> str:
        return str(self._index.rows[i]["model"])

    def _ambiguous(self, metric: str, where: Mapping[str, Any], rows: np.ndarray) -> str:
        shown = "\n".join(f"  {row_label(self._index.rows[i])}" for i in rows.tolist()[:10])
        text = " ".join(f"{k}={_show(v)}" for k, v in where.items())
        return (f"{len(rows)} rows match {metric} {text}; a read must name exactly one number per key "
                f"(add the parameter that tells them apart). Rows:\n{shown}")

    # -- what was read -------------------------------------------------------------------
    @property
    def read(self) -> list[dict[str, Any]]:
        """The rows read so far (each once), with their values in this (resampled) view."""
        return [{**self._index.rows[i], "value": float(self._values[i])} for i in self._read]

    @property
    def read_labels(self) -> dict[str, float]:
        return {row_label(self._index.rows[i]): float(self._values[i]) for i in self._read}

    def rows(self) -> list[dict[str, Any]]:
        """Every row (for the report's figures and baselines)."""
        return [dict(row) for row in self._index.rows]

    @property
    def measurements(self) -> list[Measurement]:
        return list(self._index.measurements)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows())

    # -- the bootstrap -------------------------------------------------------------------
    def resampled(self, n: int, seed: int) -> list[Measurements]:
        """n bootstrap resamples: each unit group (val images, tiles, videos) is drawn once per
        resample and shared by every row of the group, so models are compared on the same
        draw. Values are recomputed lazily, all n at once, for the rows a claim reads."""
        if n <= 0:
            return []
        if (n, seed) not in self._resamples:  # shared by every claim that reads this section
            resampler = _Resampler(self._index, n, seed)
            views = []
            for r in range(n):
                view = self.fresh()
                view._values = _LazyValues(resampler, r)
                views.append(view)
            self._resamples[(n, seed)] = views
        return [view.fresh() for view in self._resamples[(n, seed)]]


def _number(value: Any) -> Any:
    """Float cells that hold whole numbers read back as ints (layer 12, m 200, gap 30)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class _Resampler:
    """Draws for every unit group (as counts per unit) and each row's n resampled values,
    computed on first use."""

    def __init__(self, index: _Index, n: int, seed: int):
        self.index, self.n = index, n
        rng = np.random.default_rng(seed)
        self.weights: dict[str, np.ndarray] = {g: np.zeros((n, size)) for g, size in sorted(index.groups.items())}
        for r in range(n):  # one draw per group per resample, in a fixed group order
            for group, size in sorted(index.groups.items()):
                self.weights[group][r] = np.bincount(rng.integers(0, size, size=size), minlength=size)
        self.cache: dict[int, np.ndarray] = {}

    def row_values(self, i: int) -> np.ndarray:
        found = self.cache.get(i)
        if found is None:
            m = self.index.measurements[i]
            if m.units is None or m.unit_group is None:
                found = np.full(self.n, float(m.value))
            else:
                found = m.recompute(self.weights[m.unit_group])
            self.cache[i] = found
        return found


class _LazyValues:
    """values[i] of one resample, as `Measurements` reads them."""

    def __init__(self, resampler: _Resampler, r: int):
        self.resampler, self.r = resampler, r

    def __getitem__(self, i):
        if isinstance(i, (np.ndarray, list)):
            return np.array([self.resampler.row_values(j)[self.r] for j in np.asarray(i).tolist()])
        return self.resampler.row_values(i)[self.r]

    def __len__(self) -> int:
        return len(self.resampler.index.values)
