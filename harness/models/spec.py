"""What a model is, kept as data: a `ModelSpec` per registry entry and the description of
its official checkpoint format (`CheckpointFormat`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Family = Literal["contrastive", "MIM", "supervised"]

# How a position embedding trained on one grid is brought to another grid:
#   "dino-offset": bicubic with scale_factor (n + 0.1) / M per axis, no antialias
#                  (facebookresearch/dino, ibot and dinov2 `interpolate_pos_encoding`);
#   "bicubic-size": bicubic to an explicit size, no antialias (mae util/pos_embed.py);
#   "timm": timm's resample_abs_pos_embed (bicubic, size, antialias);
#   "rel-pos-table": no absolute embedding; the shared relative-position-bias table is
#                    resized with timm's resize_rel_pos_bias_table (BEiT/SimMIM style).
GridResize = Literal["dino-offset", "bicubic-size", "timm", "rel-pos-table"]


@dataclass(frozen=True)
class CheckpointFormat:
    """How an official release file maps onto the timm module's state_dict.

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


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    family: Family
    arch_family: Literal["vit", "beit"]  # which module in harness/models builds it
    timm_arch: str  # timm architecture the module is built from
    arch_kwargs: dict[str, Any] = field(default_factory=dict, hash=False)
    patch_size: int = 16
    depth: int = 12
    embed_dim: int = 768
    num_heads: int = 12
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    native_grid: int = 14  # the patch grid the position information was trained for
    grid_resize: GridResize = "dino-offset"
    hub_id: str | None = None  # Hugging Face repo holding timm-format weights
    release_file: str = ""  # the official release file's name
    release_url: str = ""  # where that file is published
    checkpoint: CheckpointFormat = CheckpointFormat()
    notes: str = ""

    @property
    def source(self) -> str:
        """The default weights source, as shown to users."""
        return f"hf-hub:{self.hub_id}" if self.hub_id else self.release_file
