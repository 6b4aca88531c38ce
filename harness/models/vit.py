"""The plain ViT family (timm VisionTransformer): DINO, DINOv2, MAE, iBOT, supervised.

All five keep a learned (or, for MAE, fixed sin-cos) absolute position embedding with one
class-token row and no layer scale, except DINOv2 (LayerScale, 37x37 grid). The module is
built with `dynamic_img_size=True` so any H x W that is a multiple of the patch size is
accepted, and its `_pos_embed` is replaced by `_pos_embed_any_grid`, which resizes the
embedding with the convention of the model's own code (spec.grid_resize) instead of timm's.
"""

from __future__ import annotations

import types

import timm
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed

from harness.models.spec import CheckpointFormat, ModelSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SPECS = [
    ModelSpec(
        name="dino",
        title="DINO ViT-B/16",
        family="contrastive",
        arch_family="vit",
        timm_arch="vit_base_patch16_224",
        native_grid=14,
        grid_resize="dino-offset",
        hub_id="timm/vit_base_patch16_224.dino",
        release_file="dino_vitbase16_pretrain.pth",
        release_url="https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth",
        # The release is a flat backbone state dict; the full training checkpoint keeps
        # the teacher under 'teacher' with 'backbone.' and 'head.' keys.
        checkpoint=CheckpointFormat(
            wrappers=("teacher",), prefixes=("module.", "backbone."), dropped=(r"^head\.",)
        ),
    ),
    ModelSpec(
        name="dinov2",
        title="DINOv2 ViT-B/14",
        family="contrastive",
        arch_family="vit",
        timm_arch="vit_base_patch14_dinov2",
        arch_kwargs={"img_size": 518},  # keep the released 37x37 table; resize per input
        patch_size=14,
        native_grid=37,
        grid_resize="dino-offset",
        hub_id="timm/vit_base_patch14_dinov2.lvd142m",
        release_file="dinov2_vitb14_pretrain.pth",
        release_url="https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth",
        checkpoint=CheckpointFormat(
            wrappers=("teacher",),
            prefixes=("backbone.",),
            # mask_token replaces masked patches in training only.
            dropped=(r"^mask_token$", r"^(dino_head|ibot_head)\."),
            # training checkpoints with block_chunks > 0 nest blocks as blocks.<chunk>.<i>
            renames=((r"^blocks\.\d+\.(\d+)\.", r"blocks.\1."),),
        ),
    ),
    ModelSpec(
        name="mae",
        title="MAE ViT-B/16",
        family="MIM",
        arch_family="vit",
        timm_arch="vit_base_patch16_224",
        native_grid=14,
        grid_resize="bicubic-size",
        hub_id="timm/vit_base_patch16_224.mae",
        release_file="mae_pretrain_vit_base.pth",
        release_url="https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth",
        # {'model': encoder}; the '_full' variant adds the decoder and mask_token.
        checkpoint=CheckpointFormat(
            wrappers=("model",), dropped=(r"^mask_token$", r"^decoder_")
        ),
        notes="encoder of the norm-pix-loss pretraining; run without masking",
    ),
    ModelSpec(
        name="ibot",
        title="iBOT ViT-B/16 (teacher)",
        family="contrastive",
        arch_family="vit",
        timm_arch="vit_base_patch16_224",
        native_grid=14,
        grid_resize="dino-offset",
        hub_id=None,
        release_file="ibot_vitb16_checkpoint_teacher.pth",
        release_url="https://lf3-nlp-opensource.bytetos.com/obj/nlp-opensource/archive/2022/ibot/vitb_16/checkpoint_teacher.pth",
        # {'state_dict': teacher backbone}; the full checkpoint keeps 'teacher' with
        # 'backbone.' + 'head.' keys; the student adds masked_embed.
        checkpoint=CheckpointFormat(
            wrappers=("state_dict", "teacher"),
            prefixes=("module.", "backbone."),
            dropped=(r"^head\.", r"^masked_embed$"),
        ),
        notes="published as checkpoint_teacher.pth; save it under the name shown",
    ),
    ModelSpec(
        name="supervised",
        title="Supervised ViT-B/16 (ImageNet-21k, fine-tuned 1k)",
        family="supervised",
        arch_family="vit",
        timm_arch="vit_base_patch16_224",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        native_grid=14,
        grid_resize="timm",
        hub_id="timm/vit_base_patch16_224.orig_in21k_ft_in1k",
        release_file="jx_vit_base_p16_224-80ecf9dd.pth",
        release_url="https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/jx_vit_base_p16_224-80ecf9dd.pth",
        checkpoint=CheckpointFormat(wrappers=("model", "state_dict"), dropped=(r"^head\.",)),
        notes="original ViT paper weights (not timm's default augreg2 tag)",
    ),
]


def build(spec: ModelSpec, *, embed_dim: int, num_heads: int) -> torch.nn.Module:
    """The timm module for `spec` with random weights, accepting any multiple of the patch."""
    module = timm.create_model(
        spec.timm_arch,
        pretrained=False,
        num_classes=0,
        global_pool="token",  # keeps the trained final `norm` (avg pool would drop it)
        dynamic_img_size=True,
        embed_dim=embed_dim,
        num_heads=num_heads,
        **spec.arch_kwargs,
    )
    if module.reg_token is not None or module.no_embed_class or module.cls_token is None:
        raise ValueError(f"{spec.name}: expected one class token with a pos-embed row")
    use_grid_resize(module, spec.grid_resize)
    return module


def use_grid_resize(module: torch.nn.Module, method: str) -> None:
    """Make a timm VisionTransformer bring its learned table to each input's grid with
    `method` (see spec.GridResize) instead of timm's own resampling."""
    if method not in ("dino-offset", "bicubic-size", "timm"):
        raise ValueError(f"a learned position table cannot be resized with {method!r}")
    module._pos_embed = types.MethodType(_pos_embed_any_grid, module)
    module.grid_resize = method


def set_input_grid(module: torch.nn.Module, grid: tuple[int, int]) -> None:
    """Nothing to do: the position embedding is resized from each input's shape."""


def resize_pos_embed(
    pos_embed: torch.Tensor,
    grid: tuple[int, int],
    native: tuple[int, int],
    method: str,
    num_prefix_rows: int = 1,
) -> torch.Tensor:
    """Position embedding [1, rows + h*w, D] (the prefix tokens' rows first, untouched) for a
    patch grid `grid`."""
    h, w = grid
    prefix, table = pos_embed[:, :num_prefix_rows], pos_embed[:, num_prefix_rows:]
    dim = table.shape[-1]
    if method == "dino-offset":
        m = native[0]
        # Official early-out: same token count and a square input.
        if h * w == m * m and h == w:
            return pos_embed
        table = table.float().reshape(1, m, m, dim).permute(0, 3, 1, 2)
        # The +0.1 keeps floor(m * scale) at the target size; the scale factor itself
        # (not in/out ratio) sets the sampling positions, so it changes the numbers.
        table = F.interpolate(
            table, scale_factor=((h + 0.1) / m, (w + 0.1) / m), mode="bicubic", antialias=False
        )
        assert table.shape[-2:] == (h, w), table.shape
        table = table.permute(0, 2, 3, 1).reshape(1, h * w, dim).to(pos_embed.dtype)
        return torch.cat([prefix, table], dim=1)
    if method == "bicubic-size":
        if (h, w) == tuple(native):
            return pos_embed
        table = table.float().reshape(1, native[0], native[1], dim).permute(0, 3, 1, 2)
        table = F.interpolate(table, size=(h, w), mode="bicubic", align_corners=False)
        table = table.permute(0, 2, 3, 1).reshape(1, h * w, dim).to(pos_embed.dtype)
        return torch.cat([prefix, table], dim=1)
    if method == "timm":
        return resample_abs_pos_embed(
            pos_embed, new_size=[h, w], old_size=list(native), num_prefix_tokens=num_prefix_rows
        )
    raise ValueError(f"unknown position-embedding resize method {method!r}")


def _pos_embed_any_grid(self, x: torch.Tensor) -> torch.Tensor:
    # Replaces VisionTransformer._pos_embed; x is [B, h, w, D] (dynamic_img_size=True).
    # Same token layout as timm: class token, registers, patches; the table has rows for the
    # prefix tokens unless no_embed_class (then they get no position).
    batch, h, w, dim = x.shape
    native = tuple(self.patch_embed.grid_size)
    rows = 0 if self.no_embed_class else self.num_prefix_tokens
    pos_embed = resize_pos_embed(self.pos_embed, (h, w), native, self.grid_resize, rows)
    patches = x.reshape(batch, h * w, dim)
    prefix = [t.expand(batch, -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
    if self.no_embed_class:
        tokens = torch.cat([*prefix, patches + pos_embed], dim=1)
    else:
        tokens = torch.cat([*prefix, patches], dim=1) + pos_embed
    return self.pos_drop(tokens)
