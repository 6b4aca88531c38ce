"""Section 5: at which granularity do transformers detect objects? (FAIR1M)

Setup: FAIR1M 224 px tiles, 8 per fine-grained category (37 categories, 5
supercategories); transformed copies by diagonal shifts of 1-4 px, the S3 blurs and
Gaussian noises. Each query patch (a patch of a transformed tile on an annotated object)
retrieves its nearest patch among all patches of all original tiles; the `rate` of each
outcome is the share of queries: original (same tile, same position), same_instance
(another patch of the same object), same_fine (another instance of the fine category),
same_super, other, background.

One test per finding (see claims/test_s3_patch_classification.py for the reading rules).
"""

import numpy as np

from harness.claims import claim, expect, need

FIG5_MODELS = ("dino", "dinov2", "mae", "supervised")
TRANSFORMS = ("shift", "blur", "noise")


def mean_original_rate(fair1m, model: str, transform: str | None = None, variant: str = "main") -> float:
    """The original-match rate averaged over the levels of one transformation (or of all)."""
    kinds = [transform] if transform else TRANSFORMS
    rates = [fair1m.curve("rate", by="level", model=model, variant=variant, outcome="original", corruption=kind)
             for kind in kinds]
    for kind, curve in zip(kinds, rates, strict=True):
        need(len(curve), f"needs original-match rates of {model} under {kind}")
    return float(np.mean(np.concatenate([curve.to_numpy() for curve in rates])))


@claim("S5.1", paper={"mae_original_rate": (0.4, 0.5)}, ref="fig 5")
def test_smallest_noise_finds_the_original_except_mae(fair1m, min_original=0.9, mae_max_original=0.7):
    """Under the smallest transformation the match is almost always the original patch, except
    MAE (40-50% original, the rest background).

    The original-match rate at noise 10 is >= 0.9
    for dino, dinov2 and supervised; mae's is <= 0.7."""
    levels = fair1m.distinct("rate", "level", outcome="original", corruption="noise")
    need(levels, "needs original-match rates under Gaussian noise")
    rate = {m: fair1m.value("rate", model=m, outcome="original", corruption="noise", level=levels[0])
            for m in FIG5_MODELS}
    for model in ("dino", "dinov2", "supervised"):
        with expect(model):
            assert rate[model] >= min_original
    with expect("mae"):
        assert rate["mae"] <= mae_max_original


@claim("S5.2", ref="fig 5")
def test_rates_fall_as_degradation_grows(fair1m, tolerance=0.02):
    """All rates fall as degradation grows.

    The original-match rate is non-increasing in the level for every model of the paper (and
    pruned MAE) and every transformation (tolerance 0.02)."""
    checked = 0
    for model, variant in [*((m, "main") for m in (*FIG5_MODELS, "ibot")), ("mae", "pruned")]:
        if model in fair1m.models("rate", variant=variant, outcome="original"):  # those measured
            for kind in TRANSFORMS:
                curve = fair1m.curve("rate", by="level", model=model, variant=variant, outcome="original",
                                     corruption=kind)
                if len(curve) < 2:
                    continue
                checked += 1
                with expect(f"{model} {variant} {kind}"):
                    assert curve.diff().max() <= tolerance
    need(checked, "needs original-match rates at two or more levels")


@claim("S5.3", ref="fig 5")
def test_dino_most_robust_dinov2_like_supervised(fair1m):
    """DINO is the most robust across all transformations; DINOv2 is less robust, about like
    supervised.

    For each transformation (shift, blur, noise), dino has the highest mean
    original-match rate over its levels among dino, dinov2, mae and supervised; dinov2 < dino."""
    for kind in TRANSFORMS:
        mean = {m: mean_original_rate(fair1m, m, kind) for m in FIG5_MODELS}
        for model in ("dinov2", "mae", "supervised"):
            with expect(f"{kind}: dino vs {model}"):
                assert mean["dino"] > mean[model]


@claim("S5.4", ref="fig 10")
def test_ibot_does_slightly_better_than_dino(fair1m, tolerance=0.02):
    """iBOT does slightly better than DINO (so the patch-level loss is not to blame).

    ibot's
    mean original-match rate >= dino's - 0.02."""
    ibot, dino = mean_original_rate(fair1m, "ibot"), mean_original_rate(fair1m, "dino")
    assert ibot >= dino - tolerance


@claim("S5.5", ref="fig 6")
def test_without_the_source_image_dinov2_leads(fair1m):
    """With the source image excluded, DINOv2 leads; MAE is poor.

    Among dino, dinov2,
    supervised and mae (the models the figure shows), dinov2 has the highest
    same-fine-category rate (mean over the blur levels) and mae the lowest."""
    same_fine = {m: fair1m.curve("rate", by="level", model=m, outcome="same_fine", corruption="blur",
                                 exclude_source=True).mean() for m in FIG5_MODELS}
    for model in ("dino", "supervised", "mae"):
        with expect(f"dinov2 vs {model}"):
            assert same_fine["dinov2"] > same_fine[model]
    for model in ("dino", "dinov2", "supervised"):
        with expect(f"mae vs {model}"):
            assert same_fine["mae"] < same_fine[model]


@claim("S5.6", ref="text")
def test_pruned_mae_second_only_to_dino(fair1m):
    """MAE with its 200 highest-variance features removed beats dinov2 and supervised, behind
    only dino.

    The mean original-match rates rank dino > mae-pruned > max(dinov2, supervised)."""
    dino = mean_original_rate(fair1m, "dino")
    mae_pruned = mean_original_rate(fair1m, "mae", variant="pruned")
    best_other = max(mean_original_rate(fair1m, "dinov2"), mean_original_rate(fair1m, "supervised"))
    assert dino > mae_pruned
    assert mae_pruned > best_other
