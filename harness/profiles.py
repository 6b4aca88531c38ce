"""Run profiles: the sizes of every experiment.

`paper` follows the paper (the setups stated in the claims/ modules' docstrings). `smoke` runs the same
pipeline end to end on the synthetic world with small random-init models, to prove the
pipeline in minutes; its verdicts are never judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PAPER_WIDTH = 768  # ViT-B: the pruning counts m of the paper refer to 768 features


@dataclass(frozen=True)
class Profile:
    name: str
    untrained: bool  # random-init models: verdicts are 'not judged'
    cityscapes_train_per_city: tuple[int, ...] = (2, 4, 8)
    cityscapes_val_per_city: int = 10
    ade20k_train_per_class: int = 4
    ade20k_val_images: int = 300
    fair1m_per_category: int = 8
    video_count: int | None = None  # None: all val videos / all train sequences
    frame_gaps: tuple[int, ...] = (1, 2, 3, 5, 7, 9, 10, 15, 20, 30, 45, 60)
    pruning_m: tuple[int, ...] = (0, 10, 50, 100, 200, 300, 400, 500)
    top_m: int = 200  # the 'top-200 high-variance features' of S4.5-S4.8, S5.6
    corruption_levels: tuple[tuple[str, tuple[float, ...]], ...] = (
        ("blur", (10, 20, 30, 40)),
        ("noise", (10, 20, 30, 40)),
        ("band_noise", (1, 2, 3, 4)),
    )
    retrieval_transforms: tuple[tuple[str, tuple[float, ...]], ...] = (
        ("shift", (1, 2, 3, 4)),
        ("blur", (10, 20, 30, 40)),
        ("noise", (10, 20, 30, 40)),
    )
    bootstrap: int = 1000
    tile_out: int = 224  # side of the images fed to the model (tiles, FAIR1M crops)
    video_size: tuple[int, int] = (336, 560)  # H x W of video frames: multiples of 14 and 16
    # Threshold overrides where a profile's sizes differ from the paper's (claim -> name -> value).
    thresholds: dict = field(default_factory=dict)
    # Backbones every run of the profile adds (--claims-add-model texts).
    extra_models: tuple[str, ...] = ()

    @property
    def middle_train_per_city(self) -> int:
        return sorted(self.cityscapes_train_per_city)[len(self.cityscapes_train_per_city) // 2]


PROFILES = {
    "paper": Profile(name="paper", untrained=False),
    "smoke": Profile(
        name="smoke",
        untrained=True,
        cityscapes_train_per_city=(1, 2, 4),
        cityscapes_val_per_city=2,
        ade20k_train_per_class=1,
        ade20k_val_images=8,
        fair1m_per_category=2,
        video_count=2,
        frame_gaps=(1, 2, 5, 10, 20, 30),
        # Smallest and largest level of each corruption (the relations use both ends).
        corruption_levels=(("blur", (10, 40)), ("noise", (10, 40)), ("band_noise", (1, 4))),
        retrieval_transforms=(("shift", (1, 4)), ("blur", (10, 40)), ("noise", (10, 40))),
        bootstrap=100,
        # Half-size images: a quarter of the tokens, same tiling and patch grids' logic.
        tile_out=112,
        video_size=(112, 224),
        # The synthetic videos are 40 frames long: judge 'flat past a gap' on 10 -> 30.
        thresholds={"S6.3": {"flat_d_from": 10, "flat_d_to": 30}},
        # One added backbone per family (random init like the others), so X.4 and the report's
        # backbone x finding matrix run end to end.
        extra_models=(
            "dinov2_reg4=hf-hub:timm/vit_base_patch14_reg4_dinov2.lvd142m:contrastive",
            "eva02_mim=eva02_base_patch14_224.mim_in22k:MIM",
            "deit=deit_base_patch16_224.fb_in1k:supervised",
        ),
    ),
}


def paper_linear(model: str) -> str:
    """The probe the paper uses per model: BatchNorm before the linear layer for MAE only
    ('linear_bn'), a plain linear layer ('linear') for every other model."""
    return "linear_bn" if model == "mae" else "linear"


def scaled_m(m: int, width: int) -> int:
    """The paper's m counts features of a 768-wide ViT-B. Real models keep that count
    (a ViT-L's "200 highest-variance features" are 200 of its 1024); a narrower (smoke)
    model drops the same fraction of its features."""
    if width >= PAPER_WIDTH:
        return m
    return int(round(m * width / PAPER_WIDTH))
