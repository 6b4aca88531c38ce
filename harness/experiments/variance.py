"""S4.7: are MAE's top-variance features the same across datasets?"""

from __future__ import annotations

from harness import analyses
from harness.experiments.common import Embed, flat_patches
from harness.measurements import Measurement
from harness.profiles import Profile, scaled_m

PAIRS = (("cityscapes", "ade20k"), ("cityscapes", "fair1m"))


def overlap_measurements(model: str, backbone, views: dict, embed: Embed,
                         profile: Profile) -> list[Measurement]:
    """views: dataset name -> view of that dataset's (train) images."""
    last = backbone.depth
    top = {}
    for name, view in views.items():
        x = flat_patches(embed(backbone, view, [last])[last])
        top[name] = analyses.top_variance_features(x, scaled_m(profile.top_m, x.shape[1]))
    return [
        Measurement("overlap", model, float(analyses.feature_overlap(top[a], top[b])),
                    {"pair": f"{a}/{b}", "layer": last, "m": profile.top_m})
        for a, b in PAIRS
    ]
