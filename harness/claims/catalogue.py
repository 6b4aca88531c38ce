"""The claims catalogue: one `Claim` per row of shared/CLAIMS.md.

A claim carries the paper's finding, the values the paper reports (shown beside the
measured ones in the report, asserted only where the 'assert' text says so), the assert
text, and its default thresholds: every number of the assert text that a user may
tighten or loosen, passed by name to the claim's relation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from harness.claims import relations as r
from harness.claims.relations import Outcome

Relation = Callable[..., Outcome]


@dataclass(frozen=True)
class Claim:
    id: str
    section: str
    statement: str
    assertion: str
    relation: Relation | None  # None for the meta-claims X.1 and X.2
    thresholds: dict[str, Any] = field(default_factory=dict)
    paper: dict[Any, Any] = field(default_factory=dict)
    paper_ref: str = ""  # where the paper shows it: 'fig 1', 'table 6', 'text'

    def evaluate(self, table: pd.DataFrame, thresholds: dict[str, Any]) -> Outcome:
        if self.relation is None:
            raise ValueError(f"{self.id} is a meta-claim with no relation of its own")
        return self.relation(table, **thresholds)


SECTIONS = {
    "S3": "Few-shot patch classification",
    "S4": "Why MIM models fail k-NN: high-variance features",
    "S5": "Instance and fine-grained retrieval",
    "S6": "Object association across video frames",
    "X": "Beyond the paper",
}

_CLAIMS = [
    # ---- S3
    Claim("S3.1", "S3", "Linear probing beats k-NN, more so with more training images",
          "for every model, linear mIoU - kNN mIoU grows (or holds) from 36 to 144 images; linear >= kNN at 144",
          r.s3_1_linear_gap_grows, {"tolerance": 0.0}, paper_ref="fig 1"),
    Claim("S3.2", "S3", "For dino, dinov2 and supervised, k-NN and linear are comparable",
          "kNN mIoU >= 0.75 x linear mIoU at 72 images",
          r.s3_2_knn_comparable, {"ratio": 0.75}, paper_ref="fig 1"),
    Claim("S3.3", "S3", "MAE k-NN is about 4x worse than its own linear probe",
          "mae linear mIoU >= 2.5 x mae kNN mIoU",
          r.s3_3_mae_knn_far_below_linear, {"ratio": 2.5}, {"linear_over_knn": 4.0}, "fig 1, 'about 4 times'"),
    Claim("S3.4", "S3", "MAE linear is only slightly below DINO linear",
          "mae linear mIoU >= 0.8 x dino linear mIoU",
          r.s3_4_mae_linear_near_dino, {"ratio": 0.8}, paper_ref="fig 1"),
    Claim("S3.5", "S3", "BatchNorm before the linear layer helps MAE about 2.5x; it hurts SimMIM",
          "mae linear+BN >= 1.5 x mae linear; simmim linear+BN <= simmim linear",
          r.s3_5_batchnorm_helps_mae_not_simmim, {"bn_gain": 1.5}, {"mae_bn_gain": 2.5}, "text, 'almost 2.5x'"),
    Claim("S3.6", "S3", "supervised and dino layer curves are alike: rise to layer 8, then flat, slight drop in the last two",
          "per-layer kNN mIoU: argmax layer in 8..12; layer 8 >= 0.9 x max; corr(dino, supervised) over layers >= 0.9",
          r.s3_6_layer_curves_alike,
          {"argmax_from": 8, "argmax_to": 12, "layer": 8, "layer_ratio": 0.9, "min_corr": 0.9}, paper_ref="fig 2"),
    Claim("S3.7", "S3", "dinov2 is worse than dino in early layers and best in layers 11-12",
          "dinov2 < dino at layers 1-4; dinov2 > dino and > supervised at layer 12",
          r.s3_7_dinov2_late_bloomer, {"early_from": 1, "early_to": 4, "top_layer": 12}, paper_ref="fig 2"),
    Claim("S3.8", "S3", "dinov2's gain comes from the hard classes; IoU of 'bus' jumps from 0.059 (layer 9) to 0.729 (layer 12)",
          "dinov2 bus IoU at layer 12 >= 3 x layer 9",
          r.s3_8_bus_jump, {"gain": 3.0, "from_layer": 9, "to_layer": 12},
          {"bus_iou_layer9": 0.059, "bus_iou_layer12": 0.729}, "text, fig 2"),
    Claim("S3.9", "S3", "MAE has the worst k-NN at every layer; SimMIM beats MAE only in middle layers, last three layers alike",
          "mae kNN is min over models at layer 12; simmim > mae at layers 5-8",
          r.s3_9_mae_worst_knn, {"mid_from": 5, "mid_to": 8, "top_layer": 12}, paper_ref="fig 2"),
    Claim("S3.10", "S3", "Under the smallest blur, dinov2 keeps relatively more of its mIoU than dino and supervised",
          "relative drop (blur 10) dinov2 < dino and < supervised (linear)",
          r.s3_10_dinov2_blur_robust, {}, paper_ref="fig 3"),
    Claim("S3.11", "S3", "MAE degrades fastest; under any degradation its k-NN collapses to one class",
          "mae relative drop is the largest per corruption; mae kNN at the smallest level predicts one class for >= 90% of patches",
          r.s3_11_mae_collapses, {"collapse_fraction": 0.9}, paper_ref="fig 3"),
    Claim("S3.12", "S3", "supervised is (almost) fully robust to high-frequency noise",
          "supervised mIoU under the highest frequency band >= 0.97 x clean",
          r.s3_12_supervised_ignores_high_band, {"ratio": 0.97}, {"kept_fraction": 1.0}, "text, '100% robust'"),
    Claim("S3.13", "S3", "The ranking of models on ADE20K matches Cityscapes",
          "Spearman rank correlation of model mIoU (kNN and linear) between datasets >= 0.8",
          r.s3_13_ranking_transfers, {"min_spearman": 0.8}, paper_ref="table 2"),
    # ---- S4
    Claim("S4.1", "S4", "MAE and SimMIM have a few features with very high variance and a long tail near zero; supervised and dino are uniform",
          "ratio of the top-10 feature variances' mean to the median variance: mae and simmim >= 10 x that of dino and supervised",
          r.s4_1_mim_variance_outliers, {"ratio": 10.0}, paper_ref="fig 4a"),
    Claim("S4.2", "S4", "Removing the m highest-variance features lifts MAE k-NN: 0.058 (m=0) -> 0.170 (m=10) -> 0.295 (m=200), then it declines",
          "mae kNN(m=200) >= 3 x kNN(m=0); kNN(m=10) > kNN(m=0); argmax over m in {0,10,50,100,200,300,400,500} is in 100..300",
          r.s4_2_pruning_lifts_mae_knn, {"gain_200": 3.0, "argmax_range": (100, 300)},
          {0: 0.058, 10: 0.170, 200: 0.295}, "fig 4b"),
    Claim("S4.3", "S4", "... without hurting MAE's linear probe",
          "mae linear(m=200) >= 0.95 x linear(m=0)",
          r.s4_3_pruning_keeps_mae_linear, {"ratio": 0.95, "m": 200}, paper_ref="fig 4b"),
    Claim("S4.4", "S4", "Pruning helps only reconstruction-trained models and does not hurt the others",
          "for dino, dinov2, supervised: kNN(m=200) >= 0.95 x kNN(m=0) and no gain > 10%",
          r.s4_4_pruning_neutral_elsewhere, {"ratio": 0.95, "max_gain": 0.10, "m": 200}, paper_ref="fig 4c"),
    Claim("S4.5", "S4", "Normalising features (BatchNorm from the linear probe) before k-NN helps MAE about as much as pruning 200",
          "mae kNN(BN) >= 0.7 x mae kNN(m=200) and >= 2 x kNN(m=0)",
          r.s4_5_batchnorm_knn_like_pruning, {"vs_pruned": 0.7, "vs_full": 2.0, "m": 200}, paper_ref="text"),
    Claim("S4.6", "S4", "High-variance features hold no extra global context: R^2 of predicting road/building/vegetation pixel fractions from a central patch",
          "R2(pruned) >= R2(full) - 0.02; R2(top-200) < R2(random 200)",
          r.s4_6_no_global_context, {"tolerance": 0.02},
          {"full": 0.676, "pruned": 0.672, "top": 0.55, "random": 0.666}, "table 6"),
    Claim("S4.7", "S4", "MAE's top-200 features are the same across datasets: 196 shared Cityscapes/ADE20K, 192 Cityscapes/FAIR1M",
          "overlap >= 170 of 200 for each pair",
          r.s4_7_top_features_shared, {"min_overlap": 170},
          {"cityscapes/ade20k": 196, "cityscapes/fair1m": 192}, "text"),
    Claim("S4.8", "S4", "Zeroing those 200 features raises MAE's reconstruction error (pretrained decoder)",
          "reconstruction MSE with zeroed features > MSE with 200 random features zeroed",
          r.s4_8_zeroing_hurts_reconstruction, {}, paper_ref="table 4"),
    # ---- S5
    Claim("S5.1", "S5", "Under the smallest transformation the match is almost always the original patch, except MAE (40-50% original, the rest background)",
          "original-match rate at noise 10 >= 0.9 for dino, dinov2, supervised; mae <= 0.7",
          r.s5_1_smallest_noise_finds_original, {"min_original": 0.9, "mae_max_original": 0.7},
          {"mae_original_rate": (0.4, 0.5)}, "fig 5"),
    Claim("S5.2", "S5", "All rates fall as degradation grows",
          "original-match rate is non-increasing in the level for every model and transformation (tolerance 0.02)",
          r.s5_2_rates_fall_with_level, {"tolerance": 0.02}, paper_ref="fig 5"),
    Claim("S5.3", "S5", "DINO is the most robust; DINOv2 is less robust, about like supervised",
          "dino has the highest mean original-match rate over all levels; dinov2 < dino",
          r.s5_3_dino_most_robust, {}, paper_ref="fig 5"),
    Claim("S5.4", "S5", "iBOT does slightly better than DINO (so the patch-level loss is not to blame)",
          "ibot mean original-match rate >= dino - 0.02",
          r.s5_4_ibot_like_dino, {"tolerance": 0.02}, paper_ref="fig 10"),
    Claim("S5.5", "S5", "With the source image excluded, DINOv2 leads; MAE is poor",
          "dinov2 has the highest same-fine-category rate; mae the lowest",
          r.s5_5_dinov2_finds_category, {}, paper_ref="fig 6"),
    Claim("S5.6", "S5", "MAE with its 200 highest-variance features removed beats dinov2 and supervised, behind only dino",
          "ranking of mean original-match rate: dino > mae-pruned > max(dinov2, supervised)",
          r.s5_6_pruned_mae_second, {}, paper_ref="text"),
    # ---- S6
    Claim("S6.1", "S6", "dino and dinov2 are the best at association",
          "instance accuracy averaged over D: dino and dinov2 are the top two",
          r.s6_1_contrastive_associate_best, {}, paper_ref="fig 7"),
    Claim("S6.2", "S6", "dino has a slight edge over dinov2 for short gaps (D < 10)",
          "mean over D in 1..9: dino >= dinov2 - 0.01",
          r.s6_2_dino_edge_short_gaps, {"tolerance": 0.01, "short_gap_below": 10}, paper_ref="fig 7"),
    Claim("S6.3", "S6", "Accuracy falls with D and is flat past about 30 frames",
          "monotone non-increasing (tolerance 0.02); change from D=30 to D=60 <= 0.05",
          r.s6_3_accuracy_falls_then_flat,
          {"tolerance": 0.02, "flat_d_from": 30, "flat_d_to": 60, "flat_max_change": 0.05}, paper_ref="fig 7"),
    Claim("S6.4", "S6", "supervised is well below dino, about like MAE",
          "supervised <= dino - 0.05; abs(supervised - mae) <= 0.05",
          r.s6_4_supervised_like_mae, {"margin": 0.05, "mae_tolerance": 0.05}, paper_ref="fig 7"),
    Claim("S6.5", "S6", "A wrong match is still the right category in > 95% of cases for dinov2",
          "dinov2 category accuracy among wrong matches >= 0.95",
          r.s6_5_wrong_match_right_category, {"min_fraction": 0.95}, {"category_acc_wrong": 0.95},
          "text, 'more than 95%'"),
    Claim("S6.6", "S6", "On MOT17, contrastive models clearly beat MIM models",
          "min(dino, dinov2) > max(mae, simmim) on instance accuracy",
          r.s6_6_contrastive_beat_mim_mot17, {}, paper_ref="appendix"),
    # ---- beyond the paper (judged through every other claim)
    Claim("X.1", "X", "Every claim's verdict is stable under resampling: bootstrap over val images (1000 resamples)",
          "report each relation's confidence interval; a claim whose relation holds in < 90% of resamples is reported as 'fragile'",
          None, {"fragile_below": 0.9, "resamples": 1000}),
    Claim("X.2", "X", "A swapped checkpoint (--weights NAME=PATH or a hub id) is judged against a stored baseline report",
          "a metric that drops by more than its tolerance fails as a regression",
          None, {"tolerance": 0.02}),
]

CLAIMS: dict[str, Claim] = {claim.id: claim for claim in _CLAIMS}
