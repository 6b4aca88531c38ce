"""The measurement conventions a report must record: every choice the paper leaves open, as
the experiments make it, in plain words built from the constants the code uses.

    from harness.experiments import conventions
    conventions(PROFILES["paper"])   # {"corruptions.where": "...", "linear_probe": "...", ...}

Data-dependent facts are rows (the chosen learning rates: metric `lr`; D in seconds:
`gap_seconds`); per-view facts (chosen ids, video frame sizes and frame rates) go through the
view builders' `record(name, value)` callback (`harness.views.paper`).
"""

from __future__ import annotations

from harness.analyses.context import ALPHAS
from harness.experiments.association import POOLINGS
from harness.experiments.reconstruction import MASK_RATIO
from harness.experiments.segmentation import (
    BN_CONTRAST_MODELS,
    CONTEXT_CLASSES,
    CONTEXT_RANDOM_DRAWS,
    EASY_CLASSES,
    PRUNING_CURVE_MODELS,
)
from harness.probes.linear import BATCHNORM_EPS, HOLDOUT_FRACTION, LR_GRID
from harness.profiles import Profile
from harness.views.fair1m import MIN_COVER
from harness.views.frames import BDD100K_MOT_FPS
from harness.views.ops import BAND_EDGES, BAND_NOISE_STD
from harness.views.paper import ADE20K_SIZE


def _levels(pairs) -> str:
    return "; ".join(f"{kind} {', '.join(f'{level:g}' for level in levels)}" for kind, levels in pairs)


def conventions(profile: Profile) -> dict[str, str]:
    """{name: description} of the conventions of a run with `profile`."""
    out = profile.tile_out
    bands = ", ".join(f"{b}: {low:g}-{high:g}" for b, (low, high) in enumerate(BAND_EDGES, start=1))
    short_side = min(profile.video_size)
    (main_size, main_ratio), (roi_size, roi_ratio) = POOLINGS["main"], POOLINGS["roi7x7"]
    return {
        "images.resize": (
            f"Cityscapes frames cut into 256x256 tiles, each resized to {out}x{out}; ADE20K images "
            f"resized to {ADE20K_SIZE[1]}x{ADE20K_SIZE[0]} (aspect ratio not kept) and cut into "
            f"{ADE20K_SIZE[0] // 224 * ADE20K_SIZE[1] // 224} tiles of 224 (resized to {out}); FAIR1M "
            f"{out}x{out} crops, not resized. Images: PIL bilinear with antialiasing; label maps: nearest "
            "neighbour."),
        "patch_labels": (
            "the plurality class of the patch's pixels on the label tile after its resize (on each "
            "model's own patch grid); ties go to the lower class id, so a class beats 'ignore'; a patch "
            "whose plurality is 'ignore' is not used for training or scoring."),
        "tokens": (
            "patch tokens only (no class token, no registers); layers are block outputs 1..depth, each "
            "through the model's final LayerNorm, as the official get_intermediate_layers of "
            "DINO/iBOT/DINOv2 do."),
        "corruptions.where": (
            f"on the image the model sees: each {out}x{out} tile after its resize (S3) and each FAIR1M "
            f"{out}x{out} tile (S5), every tile as an image of its own, so that a level means the same "
            "in both sections; noise drawn per tile from a seed of the tile's id. S5 shifts move the "
            "crop window over real pixels instead."),
        "corruptions.levels": f"S3: {_levels(profile.corruption_levels)}; S5: {_levels(profile.retrieval_transforms)}",
        "corruptions.blur": (
            "a centred k x k box filter (mean), separable, mirrored borders; an even k is k + 1 taps with "
            "half weight at both ends, so the image does not move."),
        "corruptions.noise": "additive Gaussian noise, mean 0, std on the 0-255 scale; rounded and clipped to uint8.",
        "corruptions.band_noise": (
            f"Gaussian noise of the tile's shape, rfft2 per channel, kept inside one radial band "
            f"(cycles per pixel of the model's input; Nyquist 0.5) {bands}, back to pixels, scaled to std "
            f"{BAND_NOISE_STD:g} over the tile, added: equal energy in every band."),
        "corruptions.band_noise_literal": (
            f"variant 'literal': std {BAND_NOISE_STD:g} before the band filter (the paper's words taken "
            "literally), which leaves a std of about 3 (band 1) to 11 (band 4) in the band."),
        "knn": (
            "1-NN with squared L2 distance on the features as they are, exact, ties to the lowest train "
            "index; variant 'cosine': 1-NN by cosine distance at the main setting (last layer, middle "
            "training size)."),
        "linear_probe": (
            f"softmax classifier (Linear) on frozen patch features, AdamW (weight decay 1e-4, cosine decay, "
            f"10 epochs of batches of 1024, at least 500 steps), cross entropy; the learning rate chosen "
            f"per model and probe from {', '.join(f'{lr:g}' for lr in LR_GRID)} by mIoU on a seeded "
            f"held-out {HOLDOUT_FRACTION:.0%} of the middle train subset's images (whole images, the same "
            "for every model), then the probe refitted on all its train images; that lr serves the probe "
            "at every training size and pruning level; it is reported (metric 'lr')."),
        "linear_probe.batchnorm": (
            f"MAE's linear-probe BatchNorm: BatchNorm1d(affine=False, eps={BATCHNORM_EPS:g}), running "
            f"statistics over all training batches; the paper's probe uses it for MAE only; "
            f"{', '.join(BN_CONTRAST_MODELS)} are probed with and without it. 'knn_bn': 1-NN on the "
            "features through that BatchNorm, i.e. standardised with the train set's statistics."),
        "top_m_sets": (
            f"one top-{profile.top_m} set: the highest-variance features over every patch of the middle "
            "Cityscapes train subset's tiles, last layer (a model narrower than 768 drops the same "
            "fraction). Used by S4.1 (spectrum), S4.2-S4.4 (pruning; every m for "
            f"{', '.join(PRUNING_CURVE_MODELS)}), S4.6 (subsets), S4.7 (Cityscapes side), S4.8 (zeroed) "
            "and S5.6 (pruned MAE). S4.7's other sides: ADE20K's train subset and FAIR1M's original "
            "tiles, each its own set."),
        "s4_6": (
            f"one sample per tile the model saw: the tile's central patch (grid position g/2, g/2 on the "
            f"model's own grid) -> that tile's {', '.join(CONTEXT_CLASSES)} pixel fractions (its resized "
            f"label map, 'ignore' in the total); ridge regression, one alpha from "
            f"{', '.join(f'{a:g}' for a in ALPHAS)} chosen by 5-fold cross-validation over the middle "
            "train subset's tiles grouped by image, refitted on them, R^2 on the val tiles per class, "
            f"averaged; 'random': {CONTEXT_RANDOM_DRAWS} seeded draws, averaged. Variant 'frame': the patch "
            "holding each frame's centre pixel -> the frame's fractions, cross-validated over frames."),
        "s4_8": (
            f"MAE's own protocol: a fixed-seed {MASK_RATIO:.0%} random mask per tile (MAE's random_masking), "
            "the encoder on the visible tokens only, the chosen features zeroed in every token of its "
            "output, the pretrained decoder (mask tokens, unshuffle, decoder position embedding), "
            "norm-pix MSE over the masked patches; 'random200' zeroes as many random features (a control). "
            "Variant 'unmasked': every patch visible and scored."),
        "s3_8_classes": f"easy classes: {', '.join(EASY_CLASSES)}; hard: the other Cityscapes classes.",
        "s3_11_majority": (
            "majority_fraction: per val image, the share of its scored patches that k-NN gives that "
            "image's most frequent predicted class, averaged over images; majority_fraction_pooled: "
            "the share of all val patches given the most frequent class overall."),
        "s5_tiles": (
            f"{profile.fair1m_per_category} {out}x{out} tiles per fine category, each centred on an object "
            "of its category (rare categories choose first; tiles of one image never overlap); a patch "
            f"lies on the object covering most of its pixels if that covers at least {MIN_COVER:.0%} of the patch."),
        "s5_outcomes": (
            "original (same tile, same patch position) > same_instance (another patch of the same "
            "object) > same_fine (another instance of the fine category) > same_super > other; "
            "background if the match lies on no object."),
        "s6_queries": (
            "a query is an object at t whose track is also present at t + D; the share of objects at t "
            "left out is reported per D (left_out); variant 'all_objects' counts every object at t. "
            "category_acc_wrong: category accuracy among the wrong instance matches of counted queries."),
        "s6_frame_size": (
            f"aspect ratio kept: the short side {short_side} px, the long side the aspect-preserving "
            "length, each rounded to a multiple of the model's patch size (the resolutions are recorded "
            "per dataset and patch size)."),
        "s6_roi_align": (
            f"torchvision roi_align on the last layer's patch grid, aligned=True: main {main_size[0]}x"
            f"{main_size[1]} bin with sampling ratio {main_ratio} (adaptive; the box's mean over "
            f"patches), variant 'roi7x7' {roi_size[0]}x{roi_size[1]} bins with sampling ratio {roi_ratio}, "
            f"bins averaged."),
        "s6_fps": (
            f"gaps count annotated frames: BDD100K MOT 2020 labels at {BDD100K_MOT_FPS:g} fps, MOT17 at "
            "its sequence's seqinfo.ini frameRate; gap_seconds is D / fps averaged over the queries."),
        "few_shot_subsets": (
            "per city, the first k images of one seeded random order (nested: 2 in 4 in 8 per city); "
            "--train-seeds draws them again from other seeds (seed 0: the paper run's), val never changes."),
    }

