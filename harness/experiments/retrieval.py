"""Section 5 of the paper: instance and fine-grained patch retrieval on FAIR1M tiles.

Every patch of a transformed tile that lies on an object retrieves its nearest patch among
all patches of all original tiles (exact 1-NN, squared L2, last layer); the match is one of
the OUTCOMES of `harness.analyses.retrieval` (original, same_instance, same_fine,
same_super, other, background).

Rows: `rate` per transform (`corruption`: shift, blur, noise), `level` and `outcome`, with
`exclude_source` False, and for blur also True (the query's own tile removed from the
gallery, fig. 6); units per original tile [n_tiles, 2] (queries with that outcome, queries),
reducer 'ratio', unit_group 'fair1m/tiles'. With `pruned` (feature indices), the same rows
once more without those features, as `variant='pruned'` of the same model (S5.6: MAE without
the Cityscapes top-200 set of `cityscapes_top_features`).
"""

from __future__ import annotations

import numpy as np

from harness import analyses
from harness.analyses.retrieval import OUTCOMES
from harness.experiments.common import Embed, flat_patches
from harness.measurements import Measurement
from harness.profiles import Profile
from harness.views import RetrievalViews


def _patch_meta(view, patch_size: int) -> dict[str, np.ndarray]:
    objects = view.patch_objects(patch_size)
    n, h, w = objects["instance"].shape
    return {
        "source": np.repeat(np.asarray(view.source_index), h * w),
        "position": np.tile(np.arange(h * w), n),
        "instance": objects["instance"].reshape(-1),
        "fine": objects["fine"].reshape(-1),
        "super": objects["super"].reshape(-1),
    }


def retrieval_measurements(
    model: str, backbone, views: RetrievalViews, embed: Embed, profile: Profile,
    pruned: np.ndarray | None = None,
) -> list[Measurement]:
    """Outcome rates per transform and level (S5.1-S5.6), with and without the source tile;
    `pruned`: feature indices whose removal gives the variant='pruned' rows; and the feature
    variance ratio of the original tiles (X.5)."""
    last = backbone.depth
    p = backbone.patch_size
    base_x = flat_patches(embed(backbone, views.original, [last])[last])
    base_meta = _patch_meta(views.original, p)
    n_units = int(np.max(base_meta["source"])) + 1
    variants = {"main": None} | ({"pruned": np.asarray(pruned)} if pruned is not None else {})
    # The variance spectrum of the original tiles' patches (X.5 compares Scale-MAE's with DINO's).
    ratio = analyses.variance_ratio_top_over_median(variances=analyses.feature_variances(base_x), top=10)
    out: list[Measurement] = [Measurement("variance_ratio", model, float(ratio), {"dataset": "fair1m", "layer": last})]
    for (transform, level), view in sorted(views.transformed.items()):
        query_x = flat_patches(embed(backbone, view, [last])[last])
        query_meta = _patch_meta(view, p)
        for variant, dropped in variants.items():
            bx, qx = base_x, query_x
            if dropped is not None:
                bx, qx = analyses.drop_features(bx, dropped), analyses.drop_features(qx, dropped)
            excludes = (False, True) if transform == "blur" else (False,)
            for exclude_source in excludes:
                result = analyses.retrieval_outcomes(bx, base_meta, qx, query_meta,
                                                     exclude_source=exclude_source)
                # Per source tile and outcome, so the bootstrap can resample tiles.
                source = query_meta["source"][result.query_rows]
                counts = np.zeros((n_units, len(OUTCOMES)), dtype=np.int64)
                np.add.at(counts, (source, result.outcome), 1)
                total = counts.sum(1)
                params = {"dataset": "fair1m", "corruption": transform, "level": level,
                          "exclude_source": exclude_source, "layer": last}
                if variant != "main":
                    params["variant"] = variant
                for k, outcome in enumerate(OUTCOMES):
                    units = np.stack([counts[:, k], total], axis=1)
                    value = float(units[:, 0].sum() / max(units[:, 1].sum(), 1))
                    out.append(Measurement("rate", model, value, {**params, "outcome": outcome},
                                           units=units, reducer="ratio", unit_group="fair1m/tiles"))
    return out
