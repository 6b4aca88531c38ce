"""Retrieval granularity (S5): what a transformed patch's nearest original patch is.

Each query patch lying on an annotated object (fine category >= 0) retrieves its exact
nearest neighbour (squared L2, `knn_search`) among the base patches; the match is, in
this order of precedence:
  original       same source image and same patch position (impossible with exclude_source);
  background     the retrieved patch is on no object (fine category -1);
  same_instance  another patch of the same object (instance id), not the original position;
  same_fine      same fine-grained category: another instance;
  same_super     same supercategory;
  other          anything else.
OUTCOMES lists them from the best match to the worst.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np

from harness.probes.knn import knn_search

OUTCOMES = ("original", "same_instance", "same_fine", "same_super", "other", "background")


@dataclass(frozen=True)
class PatchMeta:
    """Per-patch annotations, one entry per row of the matching feature array."""

    source: np.ndarray  # source image index (a transformed copy keeps its source's index)
    position: np.ndarray  # flattened patch index within the tile
    instance: np.ndarray  # object instance id, -1 on background
    fine: np.ndarray  # fine-grained category, -1 on background
    super: np.ndarray  # supercategory, -1 on background

    @classmethod
    def coerce(cls, name: str, meta: PatchMeta | Mapping[str, np.ndarray], n_rows: int) -> PatchMeta:
        if isinstance(meta, Mapping):
            missing = {f.name for f in fields(cls)} - set(meta)
            if missing:
                raise ValueError(f"{name} lacks the keys {sorted(missing)}")
            meta = cls(**{f.name: meta[f.name] for f in fields(cls)})
        arrays = {}
        for f in fields(cls):
            a = np.asarray(getattr(meta, f.name)).reshape(-1)
            if not np.issubdtype(a.dtype, np.integer):
                raise ValueError(f"{name}.{f.name} must be integers, got dtype {a.dtype}")
            if a.size != n_rows:
                raise ValueError(f"{name}.{f.name} has {a.size} entries but the features have {n_rows} rows")
            arrays[f.name] = a
        return cls(**arrays)


@dataclass(frozen=True)
class RetrievalOutcomes:
    counts: dict[str, int]  # per outcome, over the evaluated queries
    n_queries: int  # query patches on an object
    query_rows: np.ndarray  # [n_queries] rows of query_x that were evaluated
    outcome: np.ndarray  # [n_queries] index into OUTCOMES per evaluated query
    retrieved: np.ndarray  # [n_queries] base row retrieved

    @property
    def rates(self) -> dict[str, float]:
        n = max(self.n_queries, 1)
        return {k: v / n for k, v in self.counts.items()}


def retrieval_outcomes(
    base_x,
    base_meta: PatchMeta | Mapping[str, np.ndarray],
    query_x,
    query_meta: PatchMeta | Mapping[str, np.ndarray],
    exclude_source: bool = False,
) -> RetrievalOutcomes:
    """Classify every on-object query patch's nearest base patch (see the module docstring).

    With exclude_source=True, base patches from the query's own source image cannot be
    retrieved (the paper's fig. 6 setting), so 'original' never occurs.
    """
    base = PatchMeta.coerce("base_meta", base_meta, np.shape(base_x)[0])
    query = PatchMeta.coerce("query_meta", query_meta, np.shape(query_x)[0])
    rows = np.flatnonzero(query.fine >= 0)
    outcome = np.empty(rows.size, dtype=np.int64)
    retrieved = np.empty(rows.size, dtype=np.int64)
    if rows.size:
        exclude = (base.source, query.source[rows]) if exclude_source else None
        _, idx = knn_search(base_x, np.asarray(query_x)[rows], k=1, exclude=exclude)
        retrieved = idx[:, 0]
        is_original = (base.source[retrieved] == query.source[rows]) & (
            base.position[retrieved] == query.position[rows]
        )
        fine_b, super_b = base.fine[retrieved], base.super[retrieved]
        instance_b = base.instance[retrieved]
        labels = [
            (is_original, "original"),
            (fine_b < 0, "background"),
            ((instance_b >= 0) & (instance_b == query.instance[rows]), "same_instance"),
            (fine_b == query.fine[rows], "same_fine"),
            (super_b == query.super[rows], "same_super"),
        ]
        outcome = np.select([condition for condition, _ in labels],
                            [OUTCOMES.index(name) for _, name in labels], default=OUTCOMES.index("other"))
    counts = {name: int(np.sum(outcome == i)) for i, name in enumerate(OUTCOMES)}
    return RetrievalOutcomes(counts, int(rows.size), rows, outcome, retrieved)
