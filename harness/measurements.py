"""Measured numbers with what is needed to resample them.

A claim test produces `Measurement`s: one number each (a row of the metric table,
its columns are `harness.claims.KEY_COLUMNS`), optionally with per-unit statistics (per val image,
per video) from which the same number can be recomputed on a bootstrap resample of
the units. The table handed to `harness.claims.judge` is `to_table(measurements)`;
the resampled tables for claim X.1 come from `resampled_tables(...)`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.probes.metrics import miou_from_confusion


def _ratio_of_sums(units: np.ndarray) -> float:
    """units [n, 2]: (numerator, denominator) per unit -> sum/sum."""
    den = units[:, 1].sum()
    return float(units[:, 0].sum() / den) if den > 0 else float("nan")


# How a row's value is recomputed from its per-unit statistics.
REDUCERS = {
    "miou": lambda u, extra: float(miou_from_confusion(u.sum(0))[0]),
    "class_iou": lambda u, extra: float(miou_from_confusion(u.sum(0))[1][extra["class_index"]]),
    "ratio": lambda u, extra: _ratio_of_sums(u),
}


@dataclass
class Measurement:
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

    def row(self, value: float | None = None) -> dict[str, Any]:
        return {"metric": self.metric, "model": self.model,
                "value": self.value if value is None else value, **self.params}

    def recompute(self, unit_index: np.ndarray) -> float:
        if self.units is None or self.reducer is None:
            return self.value
        return REDUCERS[self.reducer](self.units[unit_index], self.reducer_args)


def to_table(measurements: Sequence[Measurement]) -> pd.DataFrame:
    return pd.DataFrame([m.row() for m in measurements])


def resampled_tables(
    measurements: Sequence[Measurement], n_resamples: int, seed: int
) -> Iterator[pd.DataFrame]:
    """Bootstrap: resample the units of each unit group with replacement (one draw per
    group per resample, shared by all rows of the group, so that relations between
    models compare them on the same resampled images)."""
    rng = np.random.default_rng(seed)
    groups: dict[str, int] = {}
    for m in measurements:
        if m.units is not None and m.unit_group is not None:
            n = len(m.units)
            if groups.setdefault(m.unit_group, n) != n:
                raise ValueError(f"unit group {m.unit_group!r} has rows with {groups[m.unit_group]} and {n} units")
    for _ in range(n_resamples):
        draws = {g: rng.integers(0, n, size=n) for g, n in sorted(groups.items())}
        rows = []
        for m in measurements:
            if m.units is not None and m.unit_group in draws:
                rows.append(m.row(m.recompute(draws[m.unit_group])))
            else:
                rows.append(m.row())
        yield pd.DataFrame(rows)
