"""S4.8: does zeroing MAE's top-variance features raise its reconstruction error?

The MAE decoder ships only in the full pretraining checkpoint
(`mae_pretrain_vit_base_full.pth`, `{'model': encoder + decoder}`); the encoder-only file
used for extraction has none. The decoder is rebuilt here with the official parameter names
(`decoder_embed`, `mask_token`, `decoder_pos_embed`, `decoder_blocks.i.*` as timm Blocks,
`decoder_norm`, `decoder_pred`) and loaded strictly, the file read through
`harness.models.checkpoint.read_checkpoint`.

Protocol (main rows): MAE's own, as in its pretraining forward pass.
- Mask: a fixed-seed 75% random mask per tile, drawn as MAE's `random_masking`: one uniform
  number per patch (seeded by the tile's id, so every run and batch draws the same mask),
  argsort, the first int(L * 0.25) patches of that order kept visible (49 of 196).
- Encoder on the visible tokens only: patch embedding plus position embedding for every
  patch, then only the kept patch tokens and the class token (with its position) through
  the blocks and the final norm.
- The chosen features set to zero in every token of that encoder output (the class token
  included, so that no copy of them reaches the decoder).
- The pretrained decoder: decoder_embed, a mask token appended for every masked patch,
  the tokens put back in patch order (ids_restore), the class token first, plus
  decoder_pos_embed, the blocks, decoder_norm and decoder_pred.
- Error: MSE against the norm-pix target (each patch's pixels normalised by their own mean
  and unbiased variance: the paper's MAE was trained with norm_pix_loss), per patch, over
  the masked patches only (MAE's loss).
Variant 'unmasked' (the earlier protocol): every patch visible, error over all patches.

Rows: `recon_mse` with `zeroed` 'none', 'top200' (the top-m set given, the Cityscapes one
of `cityscapes_top_features`), 'random200' (as many random features, one seeded draw: a
control the paper does not state), per val image units [n_img, 2] = (sum of the per-patch
MSE over the scored patches of the image's tiles, their number), reducer 'ratio'.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
from timm.models.vision_transformer import Block
from torch import nn

from harness.config import seed_for
from harness.measurements import Measurement
from harness.models.checkpoint import read_checkpoint

FULL_CHECKPOINT = "mae_pretrain_vit_base_full.pth"
DECODER_PREFIXES = ("decoder_", "mask_token")
MASK_RATIO = 0.75  # MAE's pretraining mask ratio


class MaeDecoder(nn.Module):
    def __init__(self, embed_dim=768, patch_size=16, num_patches=196, decoder_dim=512,
                 depth=8, heads=16, mlp_ratio=4.0):
        super().__init__()
        self.patch_size = patch_size
        self.decoder_embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, decoder_dim),
                                              requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_dim, heads, mlp_ratio, qkv_bias=True,
                  norm_layer=partial(nn.LayerNorm, eps=1e-6)) for _ in range(depth))
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, patch_size**2 * 3)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """latent [B, 1 + kept, D] (class token first, after the encoder's final norm), and
        ids_restore [B, L] (MAE's unshuffle order) -> predicted patches [B, L, p*p*3]."""
        x = self.decoder_embed(latent)
        n_masked = ids_restore.shape[1] + 1 - x.shape[1]
        mask_tokens = self.mask_token.expand(x.shape[0], n_masked, -1)
        patches = torch.cat([x[:, 1:], mask_tokens], dim=1)
        patches = torch.gather(patches, 1, ids_restore[..., None].expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]


def smoke_decoder(embed_dim: int, patch_size: int, image_side: int, seed: int) -> MaeDecoder:
    """A small random decoder for the smoke profile (its images may be smaller than 224)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = MaeDecoder(embed_dim, patch_size, num_patches=(image_side // patch_size) ** 2,
                             decoder_dim=32, depth=2, heads=2)
        nn.init.normal_(decoder.decoder_pos_embed, std=0.02)
        nn.init.normal_(decoder.mask_token, std=0.02)
    return decoder.eval()


def load_decoder(path: str | Path) -> MaeDecoder:
    """The decoder of the official full MAE checkpoint; strict: every decoder key must match."""
    checkpoint = read_checkpoint(path)
    state = checkpoint.get("model", checkpoint)
    decoder_state = {k: v for k, v in state.items() if k.startswith(DECODER_PREFIXES)}
    if not decoder_state:
        raise ValueError(
            f"{path} holds no MAE decoder (no 'decoder_*' keys): S4.8 needs the full "
            f"pretraining checkpoint {FULL_CHECKPOINT} from the official MAE release, "
            "not the encoder-only mae_pretrain_vit_base.pth")
    decoder = MaeDecoder()
    missing, unexpected = decoder.load_state_dict(decoder_state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: decoder keys do not match the official MAE decoder; "
                         f"missing {sorted(missing)}, unexpected {sorted(unexpected)}")
    return decoder.eval()


def norm_pix_target(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, 3, H, W] normalised images -> [B, L, p*p*3] per-patch normalised pixels."""
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    x = x.reshape(b, (h // p) * (w // p), p * p * c)
    mean, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True)
    return (x - mean) / (var + 1e-6) ** 0.5


def random_masking(n_patches: int, mask_ratio: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's random_masking for one image, from `seed`: (ids_keep [kept], ids_restore [L],
    mask [L] with 1 on masked patches, 0 on visible ones)."""
    noise = torch.rand(n_patches, generator=torch.Generator().manual_seed(seed))
    ids_shuffle = torch.argsort(noise)  # ascending: small is kept
    ids_restore = torch.argsort(ids_shuffle)
    n_keep = int(n_patches * (1 - mask_ratio))
    mask = torch.ones(n_patches)
    mask[:n_keep] = 0
    return ids_shuffle[:n_keep], ids_restore, torch.gather(mask, 0, ids_restore)


def encode_visible(module: nn.Module, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
    """MAE's forward_encoder on a timm VisionTransformer: x [B, 3, H, W] (preprocessed),
    ids_keep [B, kept] -> [B, 1 + kept, D] after the final norm (class token first)."""
    tokens = module.norm_pre(module.patch_drop(module._pos_embed(module.patch_embed(x))))
    cls_token, patches = tokens[:, :1], tokens[:, 1:]
    visible = torch.gather(patches, 1, ids_keep[..., None].expand(-1, -1, patches.shape[2]))
    return module.norm(module.blocks(torch.cat([cls_token, visible], dim=1)))


@torch.inference_mode()
def reconstruction_errors(backbone, decoder: MaeDecoder, view, zeroed: dict[str, np.ndarray],
                          mask_ratio: float | None = MASK_RATIO,
                          batch_size: int = 16) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per tile of `view`, for each named set of zeroed features: (sum over the scored
    patches of the per-patch norm-pix MSE, number of scored patches). mask_ratio None: no
    mask, every patch scored; else MAE's masking (fixed seed per tile id), the masked
    patches scored. The encoder runs once per batch for all the zeroed sets."""
    p, device = backbone.patch_size, backbone.device
    decoder = decoder.to(device)
    sums = {name: [] for name in zeroed}
    counts = []
    dims = {name: torch.as_tensor(np.asarray(d, dtype=np.int64), device=device) for name, d in zeroed.items()}
    for start in range(0, len(view), batch_size):
        index = range(start, min(start + batch_size, len(view)))
        x = backbone.preprocess(np.stack([view[i] for i in index]))
        n_patches = (x.shape[2] // p) * (x.shape[3] // p)
        if mask_ratio is None:
            ids_keep = torch.arange(n_patches).expand(len(index), -1)
            ids_restore, mask = ids_keep, torch.ones(len(index), n_patches)
        else:
            drawn = [random_masking(n_patches, mask_ratio, seed_for("mae_mask", view.ids[i])) for i in index]
            ids_keep, ids_restore, mask = (torch.stack(parts) for parts in zip(*drawn, strict=True))
        ids_keep, ids_restore, mask = ids_keep.to(device), ids_restore.to(device), mask.to(device)
        latent = encode_visible(backbone.module, x, ids_keep).float()
        target = norm_pix_target(x.float(), p)
        counts.append(mask.sum(1).cpu().numpy())
        for name, d in dims.items():
            kept = latent.clone()
            kept[..., d] = 0
            per_patch = ((decoder(kept, ids_restore) - target) ** 2).mean(-1)  # [B, L]
            sums[name].append((per_patch * mask).sum(1).cpu().numpy())
    total = np.concatenate(counts).astype(np.float64)
    return {name: (np.concatenate(s).astype(np.float64), total) for name, s in sums.items()}


def reconstruction_measurements(model: str, backbone, decoder: MaeDecoder, view, top: np.ndarray,
                                seed: int, *, dataset: str = "cityscapes",
                                mask_ratio: float = MASK_RATIO,
                                with_unmasked: bool = True) -> list[Measurement]:
    """recon_mse rows (see the module docstring) on the tiles of `view` (the val view), units
    per val image (the view's source_index; each tile its own unit without one); `top` the
    top-m set to zero; `seed` draws the random control's features."""
    random_dims = np.random.default_rng(seed).choice(backbone.embed_dim, size=len(top), replace=False)
    zeroed = {"none": np.array([], dtype=np.int64), "top200": np.asarray(top), "random200": random_dims}
    source = np.asarray(getattr(view, "source_index", np.arange(len(view))), dtype=np.int64)
    n_units = int(source.max()) + 1
    protocols = {"main": mask_ratio} | ({"unmasked": None} if with_unmasked else {})
    out = []
    for variant, ratio in protocols.items():
        errors = reconstruction_errors(backbone, decoder, view, zeroed, mask_ratio=ratio)
        for name, (sums, counts) in errors.items():
            units = np.stack([np.bincount(source, weights=sums, minlength=n_units),
                              np.bincount(source, weights=counts, minlength=n_units)], axis=1)
            params = {"dataset": dataset, "zeroed": name, "layer": backbone.depth}
            if variant != "main":
                params["variant"] = variant
            out.append(Measurement("recon_mse", model, float(units[:, 0].sum() / units[:, 1].sum()),
                                   params, units=units, reducer="ratio", unit_group=f"{dataset}/val"))
    return out
