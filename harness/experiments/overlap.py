"""S4.7: are MAE's top-variance features the same across datasets?

Each dataset's top-m set comes from every patch of its variance images (`overlap_views`):
Cityscapes' middle train subset (the one set of S4.2-S4.8 and S5.6), ADE20K's train subset,
FAIR1M's original tiles; last layer. Rows: `overlap` (shared features of the two top-m sets) per `pair`; m is the profile's top_m
(not a key column: in the table `m` means features removed).
"""

from __future__ import annotations

from harness import analyses
from harness.experiments.common import Embed, top_features
from harness.measurements import Measurement
from harness.profiles import Profile
from harness.views import VarianceSet

PAIRS = (("cityscapes", "ade20k"), ("cityscapes", "fair1m"))


def overlap_measurements(model: str, backbone, sources: dict[str, VarianceSet], embed: Embed,
                         profile: Profile) -> list[Measurement]:
    """sources: dataset name -> the images whose patch variances give its top-m set."""
    top = {name: top_features(backbone, source, embed, profile.top_m) for name, source in sources.items()}
    return [
        Measurement("overlap", model, float(analyses.feature_overlap(top[a], top[b])),
                    {"pair": f"{a}/{b}", "layer": backbone.depth})
        for a, b in PAIRS
    ]
