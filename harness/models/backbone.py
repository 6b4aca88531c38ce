"""`Backbone`: one loaded model with its normalisation and per-layer patch tokens.

Conventions, the same for every model:
- layers are numbered 1..depth and mean the output of that transformer block;
- the model's final LayerNorm IS applied to every returned layer, as the official
  DINO/iBOT/DINOv2 `get_intermediate_layers` do (timm `forward_intermediates(norm=True)`);
  it is the module's `norm`, or `fc_norm` where timm keeps the trained final norm there
  (spec.final_norm);
- only patch tokens are returned (every prefix token removed: class token and registers),
  as [B, h, w, D] with h = H / patch, w = W / patch;
- any H x W that is a multiple of the patch size is accepted; the position information is
  brought to the input's grid with the model's own convention (see spec.grid_resize);
- no masking: MAE and SimMIM see all patches; mask tokens are never applied.

What the analyses need about the architecture is read from here, never assumed (ViT-B is
one case): `embed_dim`, `depth`, `num_heads`, `patch_size`, `num_prefix_tokens`, `family`,
and for GSD-aware models the `gsd` the backbone was loaded with.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harness.models.spec import ModelSpec


@dataclass(eq=False)
class Backbone:
    name: str
    spec: ModelSpec
    module: torch.nn.Module
    device: torch.device
    weights_id: str
    weights_digest: str
    embed_dim: int
    _set_input_grid: Any  # family hook: tell the module the patch grid of the next input

    @property
    def patch_size(self) -> int:
        return self.spec.patch_size

    @property
    def depth(self) -> int:
        return len(self.module.blocks)

    @property
    def num_heads(self) -> int:
        return int(self.module.blocks[0].attn.num_heads)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches (class token + registers), none of them returned."""
        return int(self.module.num_prefix_tokens)

    @property
    def family(self) -> str:
        """'contrastive', 'MIM' or 'supervised' (the spec's)."""
        return self.spec.family

    @property
    def gsd(self) -> float | None:
        """Ground sample distance (m/px) the position encoding assumes; None when the model
        takes none. Fixed at load time (it is part of weights_id and weights_digest)."""
        return getattr(self.module, "gsd", None)

    @property
    def final_norm(self) -> torch.nn.Module:
        if self.spec.final_norm == "none":
            return torch.nn.Identity()
        return getattr(self.module, self.spec.final_norm)

    def __repr__(self) -> str:
        gsd = f", gsd={self.gsd:g}" if self.gsd is not None else ""
        return (f"Backbone({self.name!r}, weights={self.weights_id!r}, "
                f"dim={self.embed_dim}, depth={self.depth}{gsd}, device={self.device})")

    def preprocess(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] -> float32 [B, 3, H, W] normalised with the model's mean/std
        (no resizing), on the backbone's device."""
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images))
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
            raise TypeError(f"preprocess expects uint8 images, got {getattr(images, 'dtype', type(images))}")
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"preprocess expects [B, H, W, 3] images, got shape {tuple(images.shape)}")
        self._check_size(images.shape[1], images.shape[2])
        x = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.spec.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.spec.std, device=self.device).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std).contiguous()

    def patch_tokens(self, x: torch.Tensor, layers: Iterable[int] | None = None) -> dict[int, torch.Tensor]:
        """{layer: [B, h, w, D]} for the requested block outputs (all when None), normed."""
        layers = self.check_layers(layers)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"patch_tokens expects [B, 3, H, W], got {tuple(x.shape)}")
        h, w = self._check_size(x.shape[2], x.shape[3])
        self._set_input_grid(self.module, (h, w))
        # Block outputs with every prefix token (module.num_prefix_tokens) removed by timm. A
        # final norm in `norm` is applied by timm inside the block loop (one copy of each
        # layer); one in `fc_norm` is applied here, per token, which is the same thing.
        in_timm = self.spec.final_norm == "norm"
        outputs = self.module.forward_intermediates(
            x,
            indices=[layer - 1 for layer in layers],
            norm=in_timm,
            stop_early=True,
            output_fmt="NLC",
            intermediates_only=True,
        )
        if len(outputs) != len(layers):
            raise RuntimeError(f"{self.name}: asked for {len(layers)} layers, got {len(outputs)}")
        batch = x.shape[0]
        norm = torch.nn.Identity() if in_timm else self.final_norm
        tokens = {}
        for index, layer in enumerate(layers):
            out, outputs[index] = outputs[index], None  # drop each raw output once normed: one copy
            if out.shape[1] != h * w:
                raise RuntimeError(f"{self.name}: layer {layer} has {out.shape[1]} tokens after removing "
                                   f"{self.num_prefix_tokens} prefix tokens, expected {h}x{w} patches")
            tokens[layer] = norm(out).reshape(batch, h, w, out.shape[-1])
            del out
        return tokens

    def check_layers(self, layers: Iterable[int] | None) -> list[int]:
        if layers is None:
            return list(range(1, self.depth + 1))
        layers = sorted({int(layer) for layer in layers})
        bad = [layer for layer in layers if not 1 <= layer <= self.depth]
        if bad or not layers:
            raise ValueError(f"layers must be in 1..{self.depth} (block outputs), got {bad or 'none'}")
        return layers

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return self._check_size(height, width)

    def _check_size(self, height: int, width: int) -> tuple[int, int]:
        p = self.patch_size
        if height % p or width % p or height < p or width < p:
            raise ValueError(
                f"{self.name}: image size {height}x{width} is not a multiple of the patch size {p} "
                f"(e.g. {p * 16}x{p * 16}); tile or resize the images first"
            )
        return height // p, width // p
