"""What a model is, kept as data: a `ModelSpec` per model (the registry's, or one a user
adds by spec) and the description of its checkpoint format (`CheckpointFormat`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Family = Literal["contrastive", "MIM", "supervised"]
FAMILIES: tuple[str, ...] = get_args(Family)

# Which module in harness/models builds the architecture:
#   "vit": timm VisionTransformer with one class token and its position row (the paper's five);
#   "beit": timm Beit with SimMIM's shared relative position bias;
#   "timm": any timm ViT-style module (VisionTransformer, Eva) exactly as timm defines it,
#           for backbones added by spec (registers, RoPE, ...);
#   "scale_mae": Scale-MAE's encoder with its GSD-aware sin-cos position encoding.
ArchFamily = Literal["vit", "beit", "timm", "scale_mae"]
ARCH_FAMILIES: tuple[str, ...] = get_args(ArchFamily)

# How the position information reaches an input grid other than the trained one:
#   "dino-offset": bicubic with scale_factor (n + 0.1) / M per axis, no antialias
#                  (facebookresearch/dino, ibot and dinov2 `interpolate_pos_encoding`);
#   "bicubic-size": bicubic to an explicit size, no antialias (mae util/pos_embed.py);
#   "timm": timm's resample_abs_pos_embed (bicubic, size, antialias), which is also
#           DINOv2-with-registers' official convention (interpolate_offset 0, antialias);
#   "rel-pos-table": no absolute embedding; the shared relative-position-bias table is
#                    resized with timm's resize_rel_pos_bias_table (BEiT/SimMIM style);
#   "rope": rotary embeddings computed for the input's grid by the module itself (plus, in
#           modules that also have one, an absolute table resampled as "timm");
#   "sincos-gsd": a fixed 2-D sin-cos table computed for the input's grid, its positions
#                 scaled by the input's ground sample distance (Scale-MAE);
#   "none": no position information.
GridResize = Literal["dino-offset", "bicubic-size", "timm", "rel-pos-table", "rope", "sincos-gsd", "none"]
GRID_RESIZES: tuple[str, ...] = get_args(GridResize)

# The LayerNorm applied to every returned layer: the module's `norm`, or `fc_norm` where timm
# keeps the trained final norm there (avg-pool heads; EVA-02 MIM, whose encoder norm timm
# moves to fc_norm), or none.
FinalNorm = Literal["norm", "fc_norm", "none"]
FINAL_NORMS: tuple[str, ...] = get_args(FinalNorm)


@dataclass(frozen=True)
class CheckpointFormat:
    """How a checkpoint file maps onto the timm module's state_dict.

    wrappers: top-level keys that hold the state dict, tried in order (e.g. 'model',
        'teacher', 'state_dict'); a flat state dict needs none.
    prefixes: key prefixes stripped when present (e.g. 'module.', 'backbone.', 'encoder.').
    dropped: regular expressions of keys the release carries that extraction never uses
        (training-only tokens, heads, decoders, buffers timm regenerates). Only these are
        removed; anything else that does not match the module is an error.
    renames: (regex, replacement) pairs applied after stripping.
    """

    wrappers: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    renames: tuple[tuple[str, str], ...] = ()


# timm-format weights (what a timm hub repo holds): a flat state dict with the module's own
# names; a classifier head, when the file has one, is not used by extraction.
TIMM_FORMAT = CheckpointFormat(wrappers=("state_dict", "model"), dropped=(r"^head\.",))


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    family: Family
    arch_family: ArchFamily  # which module in harness/models builds it
    timm_arch: str  # timm architecture the module is built from
    arch_kwargs: dict[str, Any] = field(default_factory=dict, hash=False)
    patch_size: int = 16
    depth: int = 12
    embed_dim: int = 768
    num_heads: int = 12
    num_prefix_tokens: int = 1  # class token + registers, all removed from the patch tokens
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    native_grid: int = 14  # the patch grid the position information was trained for
    grid_resize: GridResize = "dino-offset"
    final_norm: FinalNorm = "norm"
    hub_id: str | None = None  # Hugging Face repo holding timm-format weights
    release_file: str = ""  # the official release file's name
    release_url: str = ""  # where that file is published
    weights_file: str = ""  # a file the spec itself names (models added by spec)
    checkpoint: CheckpointFormat = CheckpointFormat()
    notes: str = ""

    @property
    def source(self) -> str:
        """The default weights source, as shown to users."""
        if self.hub_id:
            return f"hf-hub:{self.hub_id}"
        return self.weights_file or self.release_file

    @property
    def gsd_aware(self) -> bool:
        """Whether the position encoding takes the input's ground sample distance."""
        return self.grid_resize == "sincos-gsd"
