"""Any timm ViT-style backbone by name (arch family "timm"): timm's VisionTransformer and Eva
modules (DINOv2 with registers, DINOv3, EVA-02, ...), for backbones added by spec.

The module is built exactly as timm defines the architecture (its default pooling, so the
keys of a timm hub file match it), with `num_classes=0` and `dynamic_img_size=True`. What
the harness needs to know about it is read from the built module by `describe`, never
assumed: patch size, prefix tokens (class token + registers), depth, width, heads, the grid
its position information was trained for, how that information reaches another grid, and
which LayerNorm closes the blocks. Position handling stays timm's own ("timm": learned
tables resampled with bicubic + antialias, which is also DINOv2-with-registers' official
convention; "rope": rotary embeddings computed for the input grid), unless the spec asks a
VisionTransformer's learned table to follow another convention ("dino-offset",
"bicubic-size"), which `vit.use_grid_resize` installs.
"""

from __future__ import annotations

from typing import Any

import timm
import torch

from harness.models import vit
from harness.models.spec import ModelSpec

SPECS: list[ModelSpec] = []  # nothing registered: these models come from users' specs

SUPPORTED_MODULES = ("VisionTransformer", "Eva")


def create(timm_arch: str, **kwargs: Any) -> torch.nn.Module:
    return timm.create_model(timm_arch, pretrained=False, num_classes=0, dynamic_img_size=True, **kwargs)


def build(spec: ModelSpec, *, embed_dim: int, num_heads: int) -> torch.nn.Module:
    kwargs = dict(spec.arch_kwargs)
    if (embed_dim, num_heads) != (spec.embed_dim, spec.num_heads):  # smoke width
        kwargs.update(embed_dim=embed_dim, num_heads=num_heads)
    module = create(spec.timm_arch, **kwargs)
    check_supported(module, spec.timm_arch)
    if spec.grid_resize in ("dino-offset", "bicubic-size"):
        if type(module).__name__ != "VisionTransformer" or module.pos_embed is None:
            raise ValueError(
                f"{spec.name}: position scheme {spec.grid_resize!r} resizes a learned table of a "
                f"timm VisionTransformer; {spec.timm_arch} is a {type(module).__name__} "
                f"({describe(module)['grid_resize']}): use its own scheme")
        vit.use_grid_resize(module, spec.grid_resize)
    return module


def set_input_grid(module: torch.nn.Module, grid: tuple[int, int]) -> None:
    """Nothing to do: timm resizes or recomputes position information per input."""


def check_supported(module: torch.nn.Module, timm_arch: str) -> None:
    kind = type(module).__name__
    if kind not in SUPPORTED_MODULES or not hasattr(module, "forward_intermediates"):
        raise ValueError(
            f"timm architecture {timm_arch!r} builds a {kind}; backbones added by spec must be "
            f"ViT-style timm modules with per-block patch tokens ({', '.join(SUPPORTED_MODULES)})")


def describe(module: torch.nn.Module) -> dict[str, Any]:
    """The facts a ModelSpec records, read from a built timm module."""
    patch = tuple(module.patch_embed.patch_size)
    grid = tuple(module.patch_embed.grid_size)
    if patch[0] != patch[1] or grid[0] != grid[1]:
        raise ValueError(f"only square patches and grids are supported, got patch {patch}, grid {grid}")
    if getattr(module, "rope", None) is not None:
        grid_resize = "rope"
    elif getattr(module, "pos_embed", None) is None:
        grid_resize = "none"
    else:
        grid_resize = "timm"
    return {
        "patch_size": int(patch[0]),
        "num_prefix_tokens": int(module.num_prefix_tokens),
        "depth": len(module.blocks),
        "embed_dim": int(module.embed_dim),
        "num_heads": int(module.blocks[0].attn.num_heads),
        "native_grid": int(grid[0]),
        "grid_resize": grid_resize,
        "final_norm": final_norm_name(module),
    }


def final_norm_name(module: torch.nn.Module) -> str:
    """'norm' when the module's `norm` is a real layer, else 'fc_norm' when timm keeps the
    trained final norm there (avg-pool configurations; EVA-02 MIM checkpoints, whose encoder
    norm timm's filter moves to fc_norm), else 'none'."""
    for name in ("norm", "fc_norm"):
        layer = getattr(module, name, None)
        if isinstance(layer, torch.nn.Module) and not isinstance(layer, torch.nn.Identity):
            return name
    return "none"
