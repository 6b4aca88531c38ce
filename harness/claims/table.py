"""Picking numbers out of a metric table (see METRICS.md: one row per measured number).

A relation asks for rows by metric and parameters. A column that is absent, or NaN in a
row, stands for that parameter's default (layer 12, no corruption, nothing pruned, source
image kept, Cityscapes), so claims/ need not spell out the obvious. Everything a relation
could not find is collected and reported together as `MissingMeasurements`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np
import pandas as pd

from harness.profiles import paper_linear  # noqa: F401  (re-exported: relations read it)

# Columns that identify a row besides `value` (the "row key" of METRICS.md).
KEY_COLUMNS = (
    "metric", "model", "dataset", "probe", "layer", "n_train", "corruption", "level",
    "m", "class_name", "subset", "pair", "outcome", "exclude_source", "gap", "zeroed",
)

# What an absent column / NaN cell means.
DEFAULTS: dict[str, Any] = {
    "layer": 12,
    "corruption": "none",
    "level": 0,
    "m": 0,
    "exclude_source": False,
    "dataset": "cityscapes",
}


# The table rows a relation read while being judged (see `tracking_used_rows`).
_used_rows: ContextVar[set | None] = ContextVar("used_rows", default=None)


@contextmanager
def tracking_used_rows() -> Iterator[set]:
    """Collect the index of every row a `Lookup` reads inside the block: a claim's own rows."""
    token = _used_rows.set(set())
    try:
        yield _used_rows.get()
    finally:
        _used_rows.reset(token)


class MissingMeasurements(LookupError):
    """Rows a relation needs are not in the table (e.g. a model whose weights were missing)."""

    def __init__(self, missing: Iterable[str]):
        self.missing = list(dict.fromkeys(missing))
        super().__init__("missing measurements: " + "; ".join(self.missing))


def describe(metric: str, where: dict[str, Any]) -> str:
    parts = [metric] + [f"{k}={_show(v)}" for k, v in where.items()]
    return " ".join(parts)


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple, set)):
        return "{" + ",".join(str(v) for v in value) + "}"
    return str(value)


def _column(table: pd.DataFrame, name: str) -> pd.Series:
    if name in table.columns:
        return table[name]
    return pd.Series([np.nan] * len(table), index=table.index, dtype=object)


def select(table: pd.DataFrame, metric: str, **where: Any) -> pd.DataFrame:
    """Rows of `metric` whose parameters equal `where` (a list/tuple/set value: any of them)."""
    mask = _column(table, "metric") == metric
    for name, wanted in where.items():
        if wanted is None:
            continue
        wanted_values = list(wanted) if isinstance(wanted, (list, tuple, set)) else [wanted]
        column = _column(table, name)
        match = column.isin(wanted_values)
        if name in DEFAULTS and DEFAULTS[name] in wanted_values:
            match |= column.isna()
        mask &= match
    return table[mask]


class _MetricRows:
    """One metric's rows with numpy columns: relations ask hundreds of small questions of a
    table (and again for each of 1000 bootstrap resamples), so filtering must be cheap."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame
        self.columns = {c: frame[c].to_numpy() for c in frame.columns}
        self.missing = {c: pd.isna(v) for c, v in self.columns.items()}

    def select(self, where: dict[str, Any]) -> pd.DataFrame:
        mask = np.ones(len(self.frame), dtype=bool)
        for name, wanted in where.items():
            if wanted is None:
                continue
            wanted_values = list(wanted) if isinstance(wanted, (list, tuple, set)) else [wanted]
            default_wanted = name in DEFAULTS and DEFAULTS[name] in wanted_values
            if name not in self.columns:
                if not default_wanted:
                    mask[:] = False
                continue
            column = self.columns[name]
            match = np.zeros(len(column), dtype=bool)
            for value in wanted_values:
                match |= column == value
            if default_wanted:
                match |= self.missing[name]
            mask &= match
        return self.frame.iloc[np.flatnonzero(mask)]


def middle(values: Iterable[Any]) -> Any:
    """The middle of the sorted distinct values (72 of 36/72/144)."""
    ordered = sorted(set(values))
    return ordered[len(ordered) // 2]


class Lookup:
    """Reads numbers from one metric table and remembers every one it could not find."""

    def __init__(self, table: pd.DataFrame):
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame metric table, got {type(table).__name__}")
        for column in ("metric", "model", "value"):
            if column not in table.columns:
                raise ValueError(
                    f"metric table lacks the column {column!r}; expected the columns of METRICS.md "
                    f"(metric, model, value, and parameters), got {list(table.columns)}"
                )
        self.table = table
        self.missing: list[str] = []
        self._by_metric = {metric: _MetricRows(rows) for metric, rows in table.groupby("metric", sort=False)}
        self._no_rows = _MetricRows(table.iloc[0:0])

    def _select(self, metric: str, where: dict[str, Any]) -> pd.DataFrame:
        return self._by_metric.get(metric, self._no_rows).select(where)

    def rows(self, metric: str, **where: Any) -> pd.DataFrame:
        found = self._select(metric, where)
        if found.empty:
            self.missing.append(describe(metric, where))
        used = _used_rows.get()
        if used is not None:
            used.update(found.index)
        return found

    def value(self, metric: str, **where: Any) -> float:
        found = self.rows(metric, **where)
        if found.empty:
            return float("nan")
        if len(found) > 1:
            raise ValueError(
                f"{len(found)} rows match {describe(metric, where)}; a relation needs exactly one. "
                f"Rows:\n{found.to_string()}"
            )
        return float(found["value"].iloc[0])

    def distinct(self, metric: str, column: str, **where: Any) -> list[Any]:
        """Sorted distinct non-NaN values of `column` among the matching rows."""
        found = self._select(metric, where)
        if column not in found.columns:
            return []
        return sorted(found[column].dropna().unique().tolist())

    def middle_n_train(self, metric: str, **where: Any) -> Any:
        """The middle training-set size among the matching rows (None: no n_train column)."""
        sizes = self.distinct(metric, "n_train", **where)
        return middle(sizes) if sizes else None

    def models(
        self, metric: str, required: Iterable[str] = (), at_least: int = 1,
        derived: bool = False, **where: Any,
    ) -> list[str]:
        """Models with rows for `metric`; every `required` one must be among them."""
        present = [m for m in self.distinct(metric, "model", **where) if derived or "_" not in m]
        for model in required:
            if model not in present:
                self.missing.append(describe(metric, {"model": model, **where}))
        if len(present) < at_least:
            self.missing.append(
                f"{metric} for at least {at_least} models ({describe(metric, where)}); "
                f"found {present or 'none'}"
            )
        return present

    def need(self, condition: bool, what: str) -> None:
        if not condition:
            self.missing.append(what)

    def done(self) -> None:
        """Raise `MissingMeasurements` listing everything not found so far."""
        if self.missing:
            raise MissingMeasurements(self.missing)
