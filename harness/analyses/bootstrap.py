"""Bootstrap over images for any metric or relation between metrics (claim X.1).

Resamples draw n_items image indices with replacement. The same seed gives the same
resamples, so statistics of different models computed in one `statistic` are paired.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from harness.config import seed_for

Value = float | bool | np.floating | np.bool_


@dataclass(frozen=True)
class BootstrapResult:
    estimate: dict[str, float]  # the statistic on the original sample (all items once)
    samples: dict[str, np.ndarray]  # [n_resamples] per named value
    ci: dict[str, tuple[float, float]]  # percentile interval per named value
    fraction_true: dict[str, float]  # for boolean values (relations): share of resamples that hold

    def __getitem__(self, name: str) -> np.ndarray:
        return self.samples[name]


def resample_indices(n_items: int, n_resamples: int, seed: int | None = None) -> np.ndarray:
    """[n_resamples, n_items] item indices drawn with replacement."""
    if n_items < 1:
        raise ValueError(f"the bootstrap needs at least one item, got n_items={n_items}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed_for("bootstrap") if seed is None else seed)
    return rng.integers(0, n_items, size=(n_resamples, n_items))


def resample_counts(n_items: int, n_resamples: int, seed: int | None = None) -> np.ndarray:
    """[n_resamples, n_items] how often each item is drawn (same resamples as the indices)."""
    idx = resample_indices(n_items, n_resamples, seed)
    offsets = (np.arange(n_resamples) * n_items)[:, None]
    return np.bincount((idx + offsets).ravel(), minlength=n_resamples * n_items).reshape(
        n_resamples, n_items
    )


def _as_dict(value) -> dict[str, np.ndarray]:
    if isinstance(value, Mapping):
        return {str(k): np.asarray(v) for k, v in value.items()}
    return {"value": np.asarray(value)}


def bootstrap(
    statistic: Callable[[np.ndarray], Value | Mapping[str, Value]],
    n_items: int,
    n_resamples: int = 1000,
    seed: int | None = None,
    *,
    ci: tuple[float, float] = (2.5, 97.5),
    vectorized: bool = False,
) -> BootstrapResult:
    """Distribution, percentile CI and (for booleans) hold-fraction of a statistic.

    statistic(indices) gets one resample's item indices [n_items] and returns a number, a
    bool (a relation such as `miou_a > miou_b`) or a dict of them. With vectorized=True it
    gets all resamples at once as counts [n_resamples, n_items] (how often each item was
    drawn) and returns arrays [n_resamples] (or a dict of them), e.g.
    `miou_from_confusion(np.tensordot(counts, per_image_cm, 1))[0]`. The estimate is the
    statistic on the original sample (each item once). seed None -> seed_for('bootstrap').
    """
    if vectorized:
        counts = resample_counts(n_items, n_resamples, seed)
        samples = _as_dict(statistic(counts))
        estimate = {k: v[0] for k, v in _as_dict(statistic(np.ones((1, n_items), np.int64))).items()}
        for name, v in samples.items():
            if v.shape != (n_resamples,):
                raise ValueError(f"vectorized statistic {name!r} must return shape ({n_resamples},), got {v.shape}")
    else:
        indices = resample_indices(n_items, n_resamples, seed)
        estimate = _as_dict(statistic(np.arange(n_items)))
        rows = [_as_dict(statistic(idx)) for idx in indices]
        samples = {k: np.array([r[k] for r in rows]) for k in estimate}
    return _summarise(estimate, samples, ci)


def _summarise(estimate, samples, ci) -> BootstrapResult:
    lo, hi = ci
    intervals, fractions = {}, {}
    for name, v in samples.items():
        values = v.astype(np.float64)
        finite = values[np.isfinite(values)]
        intervals[name] = (
            (float(np.percentile(finite, lo)), float(np.percentile(finite, hi)))
            if finite.size
            else (float("nan"), float("nan"))
        )
        if v.dtype == bool:
            fractions[name] = float(v.mean())
    return BootstrapResult(
        estimate={k: float(np.asarray(v)) for k, v in estimate.items()},
        samples=samples,
        ci=intervals,
        fraction_true=fractions,
    )


def bootstrap_confusion(per_image_cm: np.ndarray, n_resamples: int = 1000, seed: int | None = None) -> np.ndarray:
    """[n_resamples, C, C] confusion matrices of image resamples, from [n_images, C, C]."""
    per_image_cm = np.asarray(per_image_cm)
    if per_image_cm.ndim != 3 or per_image_cm.shape[1] != per_image_cm.shape[2]:
        raise ValueError(f"per_image_cm must be [n_images, C, C], got {per_image_cm.shape}")
    counts = resample_counts(per_image_cm.shape[0], n_resamples, seed)
    return np.tensordot(counts, per_image_cm, axes=1)
