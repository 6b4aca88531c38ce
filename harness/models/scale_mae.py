"""Scale-MAE (Reed et al., "Scale-MAE: A Scale-Aware Masked Autoencoder for Multiscale
Geospatial Representation Learning", ICCV 2023): an MAE ViT-L/16 pretrained on FMoW-RGB whose
position encoding depends on the input's ground sample distance (GSD).

Facts, read in bair-climate-initiative/scale-mae at commit 89280d8 (paths under mae/):

- Encoder (models_mae.py `mae_vit_large_patch16_dec512d8b` / `MaskedAutoencoderViT`; the
  downstream copy is models_vit.py `vit_large_patch16` / `VisionTransformer`): patch 16,
  width 1024, 24 timm `Block`s with 16 heads, MLP ratio 4, qkv bias, LayerNorm eps 1e-6, one
  class token, final `norm`; no layer scale. timm's `vit_large_patch16_224` has the same
  parameters under the same names.
- Position encoding: `forward_encoder` (models_mae.py) and `forward_features` (models_vit.py)
  never read the `pos_embed` parameter (a fixed sin-cos table at resolution 1, kept in the
  state dict with requires_grad=False). Each forward recomputes the table with
  util/pos_embed.py `get_2d_sincos_pos_embed_with_resolution(D, n, input_res,
  cls_token=True)`: the patch indices 0..n-1 of an n x n grid are MULTIPLIED by the image's
  `input_res` (`torch.einsum("chw,n->cnhw", grid, res)`); the first D/2 channels encode the
  column position (`meshgrid(grid_w, grid_h, indexing="xy")`, the MAE "w goes first"
  order) and the last D/2 the row, each as [sin(p * w_k), cos(p * w_k)] with
  w_k = 10000^(-k / (D/4)), k = 0..D/4-1 (`get_1d_sincos_pos_embed_from_grid_torch`). The
  class token gets a zero row (cls_token + 0); the table is added to the patch embeddings
  before masking. The official code only builds square grids (`int(num_patches ** 0.5)`);
  here an h x w grid uses the same rule per axis (columns 0..w-1, rows 0..h-1), which is
  the official table whenever h == w.
- `input_res` is a GSD relative to a reference, never metres: in pretraining
  (dataloaders/utils.py `TransformCollateFn`, lib/transforms.py `CustomCompose`) it is
  `base_resolution` (2.5: main_pretrain.py `--base_resolution`, config/fmow.yaml) times the
  source pixels per input pixel of the random resized crop; in evaluation (eval/knn.py
  `kNN`, engine_finetune.py `evaluate`) it is `eval_base_resolution` (default 1.0), times
  224 / input size with `--eval_gsd`, so a 224 px evaluation image gets 1.0.
- Here the caller gives the input's GSD in metres per pixel (`load("scale_mae", gsd=...)`)
  and input_res = gsd / REFERENCE_GSD_M with a 1 m reference, the convention of third-party
  loaders of this release (torchgeo `ScaleMAE(res=...)`, "spatial resolution of the image
  in meters"); FAIR1M at FAIR1M_GSD_M then gets 0.8, next to the official evaluation value 1.0.
  The GSD is fixed per loaded backbone and is part of its weights digest (cache key) and
  weights id (report).
- Release file `scalemae-vitlarge-800.pth` (README "Pretrained Models", GitHub release
  "base-800"): written by util/misc.py `save_model` as {'model': state_dict, 'optimizer',
  'epoch', 'scaler', 'args' (argparse.Namespace)}; third-party loaders read
  `checkpoint["model"]`. `model` is the whole MaskedAutoencoderViT: the encoder keys above
  plus `pos_embed` (unused, see above), `mask_token`, `mask_token_decoder`,
  `decoder_embed.*`, `decoder_pos_embed`, `decoder_blocks.*`, `decoder_norm.*`, `fpn.*`
  (FPNHead), `fcn.*` or `fcn_high.*`/`fcn_low.*` (FCNHead, `independent_fcn_head`) and
  `pos_emb_projection.*` (`project_pos_emb`). The encoder keys load strictly; the others
  are dropped by name.
- Normalisation: ImageNet mean/std (config/fmow.yaml `data.mean`/`data.std`, used in
  pretraining).
"""

from __future__ import annotations

import types

import timm
import torch

from harness.models.spec import CheckpointFormat, ModelSpec

REFERENCE_GSD_M = 1.0  # metres per pixel that give input_res 1.0

# FAIR1M (Sun et al., "FAIR1M: A benchmark dataset for fine-grained object recognition in
# high-resolution remote sensing imagery", ISPRS J. Photogramm. Remote Sens. 184 (2022)
# 116-130, doi:10.1016/j.isprsjprs.2021.12.004): Gaofen satellite and Google Earth images at
# 0.3-0.8 m per pixel. The label files name the Gaofen source (`<origin>GF2/GF3</origin>`);
# 0.8 m is Gaofen-2's (pan-sharpened) resolution, the coarse end of the range. The
# images carry no per-image GSD, so one figure stands for the dataset.
FAIR1M_GSD_M = 0.8
FAIR1M_GSD_RANGE_M = (0.3, 0.8)

SPECS = [
    ModelSpec(
        name="scale_mae",
        title="Scale-MAE ViT-L/16 (FMoW-RGB, 800 ep)",
        family="MIM",
        arch_family="scale_mae",
        timm_arch="vit_large_patch16_224",
        patch_size=16,
        depth=24,
        embed_dim=1024,
        num_heads=16,
        num_prefix_tokens=1,
        native_grid=14,
        grid_resize="sincos-gsd",
        hub_id=None,
        release_file="scalemae-vitlarge-800.pth",
        release_url="https://github.com/bair-climate-initiative/scale-mae/releases/download/base-800/scalemae-vitlarge-800.pth",
        checkpoint=CheckpointFormat(
            wrappers=("model",),
            dropped=(
                r"^pos_embed$",  # the res-1 table no forward reads; recomputed per input
                r"^mask_token",  # mask_token, mask_token_decoder
                r"^decoder_",  # decoder_embed, decoder_pos_embed, decoder_blocks, decoder_norm
                r"^fpn\.",
                r"^fcn(_high|_low)?\.",
                r"^pos_emb_projection\.",
            ),
        ),
        notes="needs the input's ground sample distance: load('scale_mae', gsd=metres per pixel)",
    ),
]


def build(spec: ModelSpec, *, embed_dim: int, num_heads: int) -> torch.nn.Module:
    module = timm.create_model(
        spec.timm_arch,
        pretrained=False,
        num_classes=0,
        global_pool="token",  # keep the final `norm`
        dynamic_img_size=True,
        pos_embed="none",  # no learned table: the encoding is computed per input
        embed_dim=embed_dim,
        num_heads=num_heads,
        **spec.arch_kwargs,
    )
    module._pos_embed = types.MethodType(_pos_embed_gsd, module)
    module.gsd = module.input_res = None
    return module


def set_input_grid(module: torch.nn.Module, grid: tuple[int, int]) -> None:
    """Nothing to do: the encoding is computed from each input's shape and the GSD."""


def set_gsd(module: torch.nn.Module, gsd: float) -> None:
    gsd = check_gsd(gsd)
    module.gsd = gsd
    module.input_res = gsd / REFERENCE_GSD_M


def check_gsd(gsd) -> float:
    try:
        value = float(gsd)
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(
            f"gsd must be the input's ground sample distance in metres per pixel (> 0), got {gsd!r}; "
            f"e.g. harness.models.FAIR1M_GSD_M = {FAIR1M_GSD_M} for FAIR1M tiles at native resolution")
    return value


def sincos_gsd_table(dim: int, grid: tuple[int, int], input_res: float, device=None) -> torch.Tensor:
    """[1, 1 + h*w, dim]: a zero row for the class token, then the patches row-major."""
    h, w = grid
    quarter = dim // 4
    if dim % 4:
        raise ValueError(f"the 2-D sin-cos encoding needs a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32, device=device) / quarter)
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float32, device=device),
        torch.arange(w, dtype=torch.float32, device=device),
        indexing="ij",
    )

    def encode(positions: torch.Tensor) -> torch.Tensor:
        angles = (positions.reshape(-1) * input_res)[:, None] * omega[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    table = torch.cat([encode(cols), encode(rows)], dim=1)  # columns first (official order)
    return torch.cat([torch.zeros(1, dim, device=device), table], dim=0)[None]


def _pos_embed_gsd(self, x: torch.Tensor) -> torch.Tensor:
    # Replaces VisionTransformer._pos_embed; x is [B, h, w, D] (dynamic_img_size=True).
    if self.input_res is None:
        raise RuntimeError("Scale-MAE needs the input's GSD: set it with scale_mae.set_gsd(module, gsd)")
    batch, h, w, dim = x.shape
    table = sincos_gsd_table(dim, (h, w), self.input_res, device=x.device)
    tokens = torch.cat([self.cls_token.expand(batch, -1, -1), x.reshape(batch, h * w, dim)], dim=1)
    return self.pos_drop(tokens + table)  # promotes like timm adding its float32 table
