"""Reading the experiments' rows as the claims will (the metric-table schema of issue 8),
for the tests of the experiments: defaults for the key columns a read leaves out, and the
schema's reducers, so a test can check that a row's units give back its value."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.analyses import r2_from_units
from harness.measurements import Measurement, to_table
from harness.probes import accuracy_from_confusion, miou_from_confusion

# What a read means by a key column it leaves out (layer and n_train: see `read`).
DEFAULTS = {"variant": "main", "corruption": "none", "level": 0, "m": 0, "classes": "all",
            "exclude_source": False, "zeroed": "none"}


def _ratio(units):
    return units[:, 0].sum() / units[:, 1].sum()


REDUCERS = {
    "miou": lambda u, a: miou_from_confusion(u.sum(0), a.get("class_indices"))[0],
    "accuracy": lambda u, a: accuracy_from_confusion(u.sum(0)),
    "class_iou": lambda u, a: miou_from_confusion(u.sum(0))[1][a["class_index"]],
    "sum": lambda u, a: u[:, 0].sum(),
    "ratio": lambda u, a: _ratio(u),
    "r2": lambda u, a: r2_from_units(u),
}


def recomputed(row: Measurement) -> float:
    """The row's value from its units, by the schema's reducer."""
    return float(REDUCERS[row.reducer](np.asarray(row.units), row.reducer_args))


def _matches(column: pd.Series, wanted) -> pd.Series:
    """Rows whose cell equals `wanted`; an empty cell stands for the column's default."""
    if column.name in DEFAULTS and wanted == DEFAULTS[column.name]:
        return column.isna() | (column == wanted)
    return column == wanted


def read(rows: list[Measurement], metric: str, model: str | None = None, **keys) -> float:
    """The value of the one row of `metric` (and `model`) whose key columns equal `keys`,
    the columns left out taking their defaults (layer: the last present; n_train: the middle
    size present). More or fewer than one such row is an error, as in the claims."""
    table = to_table(rows)
    table = table[table.metric == metric]
    if model is not None:
        table = table[table.model == model]
    for column, default in DEFAULTS.items():
        keys.setdefault(column, default)
    for column in ("layer", "n_train"):
        if column not in keys and column in table and table[column].notna().any():
            present = sorted(table[column].dropna().unique())
            keys[column] = present[-1] if column == "layer" else present[len(present) // 2]
    for column, wanted in keys.items():
        if column not in table:
            if column in DEFAULTS and wanted == DEFAULTS[column]:
                continue
            raise LookupError(f"{metric}: no column {column!r}")
        table = table[_matches(table[column], wanted)]
    if len(table) != 1:
        raise LookupError(f"{metric} {model} {keys}: {len(table)} rows")
    value = float(table["value"].iloc[0])
    return value if not math.isnan(value) else float("nan")
