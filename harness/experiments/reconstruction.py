"""S4.8: does zeroing MAE's top-variance features raise its reconstruction error?

The MAE decoder ships only in the full pretraining checkpoint
(`mae_pretrain_vit_base_full.pth`, `{'model': encoder + decoder}`); the encoder-only file
used for extraction has none. The decoder is rebuilt here with the official parameter names
(`decoder_embed`, `mask_token`, `decoder_pos_embed`, `decoder_blocks.i.*` as timm Blocks,
`decoder_norm`, `decoder_pred`) and loaded strictly.

Protocol: no masking (every patch visible, as at extraction); the encoder output after its
final norm, with the chosen feature dimensions set to zero on every token, goes through the
decoder; the error is the MSE against the norm-pix target (each patch's pixels normalised
by their own mean and variance: the MAE model of the paper was trained with norm_pix_loss),
averaged over all patches. Reference: the same with as many random dimensions zeroed.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
from timm.models.vision_transformer import Block
from torch import nn

from harness.measurements import Measurement

FULL_CHECKPOINT = "mae_pretrain_vit_base_full.pth"
DECODER_PREFIXES = ("decoder_", "mask_token")


class MaeDecoder(nn.Module):
    def __init__(self, embed_dim=768, patch_size=16, num_patches=196, decoder_dim=512,
                 depth=8, heads=16, mlp_ratio=4.0):
        super().__init__()
        self.patch_size = patch_size
        self.decoder_embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))  # unused: nothing is masked
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, decoder_dim),
                                              requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_dim, heads, mlp_ratio, qkv_bias=True,
                  norm_layer=partial(nn.LayerNorm, eps=1e-6)) for _ in range(depth))
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, patch_size**2 * 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, 1 + L, D] (cls first, after the encoder's final norm) -> [B, L, p*p*3]."""
        x = self.decoder_embed(tokens) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]


def smoke_decoder(embed_dim: int, patch_size: int, image_side: int, seed: int) -> MaeDecoder:
    """A small random decoder for the smoke profile (its images may be smaller than 224)."""
    torch.manual_seed(seed)
    return MaeDecoder(embed_dim, patch_size, num_patches=(image_side // patch_size) ** 2,
                      decoder_dim=32, depth=2, heads=2).eval()


def load_decoder(path: str | Path) -> MaeDecoder:
    """The decoder of the official full MAE checkpoint; strict: every decoder key must match."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
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


@torch.inference_mode()
def reconstruction_errors(backbone, decoder: MaeDecoder, view, zeroed: np.ndarray,
                          batch_size: int = 16) -> np.ndarray:
    """Per-image reconstruction MSE with the `zeroed` feature dimensions set to 0."""
    errors = []
    zeroed_t = torch.as_tensor(np.asarray(zeroed, dtype=np.int64))
    for start in range(0, len(view), batch_size):
        images = np.stack([view[i] for i in range(start, min(start + batch_size, len(view)))])
        x = backbone.preprocess(images).to(backbone.device)
        tokens = backbone.module.forward_features(x).clone()  # [B, 1 + L, D], final norm applied
        tokens[..., zeroed_t] = 0
        pred = decoder(tokens.float().cpu())
        target = norm_pix_target(x.float().cpu(), backbone.patch_size)
        errors.append(((pred - target) ** 2).mean(dim=(1, 2)).numpy())
    return np.concatenate(errors)


def reconstruction_measurements(model: str, backbone, decoder: MaeDecoder, view,
                                top: np.ndarray, seed: int) -> list[Measurement]:
    width = backbone.embed_dim
    rng = np.random.default_rng(seed)
    random_dims = rng.choice(width, size=len(top), replace=False)
    out = []
    for zeroed, dims in (("none", np.array([], dtype=np.int64)), ("top200", top),
                         ("random200", random_dims)):
        err = reconstruction_errors(backbone, decoder, view, dims)
        units = np.stack([err, np.ones_like(err)], axis=1)
        out.append(Measurement("recon_mse", model, float(err.mean()), {"zeroed": zeroed},
                               units=units, reducer="ratio", unit_group="recon/images"))
    return out
