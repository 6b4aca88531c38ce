"""The experiments' rows read as the claims read them (harness.measurements), for the tests of
the experiments: one number per read, the key columns left out at their defaults, and a
row's value recomputed from its units by the schema's reducer."""

from __future__ import annotations

import numpy as np

from harness.measurements import Measurement, Measurements


def read(rows: list[Measurement], metric: str, model: str | None = None, **keys) -> float:
    """The value of the one row of `metric` (and `model`) whose key columns equal `keys`;
    no row, or several, is an error."""
    table = Measurements(rows)
    where = {**keys, **({"model": model} if model is not None else {})}
    value = table.value(metric, **where)
    if table.missing:
        raise LookupError(f"no row: {'; '.join(map(str, table.missing))}")
    return value


def recomputed(row: Measurement) -> float:
    """The row's value from all its units once, by the schema's reducer."""
    return float(row.recompute(np.ones((1, len(row.units))))[0])
