"""The BEiT-style family (timm Beit) hosting SimMIM's ViT-B/16.

SimMIM's ViT (microsoft/SimMIM models/vision_transformer.py with the vit_base 800-epoch
config) has no absolute position embedding, ONE relative position bias shared by all
blocks (window 14x14 plus 3 class entries), layer scale (init 0.1, keys gamma_1/gamma_2),
q/v biases without a k bias and a final LayerNorm `norm`. timm's Beit with
use_abs_pos_emb=False, use_rel_pos_bias=False, use_shared_rel_pos_bias=True,
init_values=0.1 and global_pool='token' has exactly these parameters under the same names.

For inputs whose patch grid differs from 14x14 the shared table is resized with timm's
resize_rel_pos_bias_table (the official code only runs at the pretraining size).
"""

from __future__ import annotations

import warnings

import timm
import torch
from timm.layers import resize_rel_pos_bias_table
from timm.models.beit import RelativePositionBias, gen_relative_position_index

from harness.models.spec import CheckpointFormat, ModelSpec

SPECS = [
    ModelSpec(
        name="simmim",
        title="SimMIM ViT-B/16 (800 ep, 224)",
        family="MIM",
        arch_family="beit",
        timm_arch="beit_base_patch16_224",
        arch_kwargs={
            "use_abs_pos_emb": False,
            "use_rel_pos_bias": False,  # per-block tables would stay zero: the bias is shared
            "use_shared_rel_pos_bias": True,
            "init_values": 0.1,
            "qkv_bias": True,
        },
        native_grid=14,
        grid_resize="rel-pos-table",
        hub_id=None,
        release_file="simmim_pretrain__vit_base__img224__800ep.pth",
        release_url="https://drive.google.com/file/d/1dJn6GYkwMIcoP3zqOEyW1_iQfpBi8UOw (microsoft/SimMIM README)",
        # save_checkpoint: {'model': SimMIM wrapper, 'optimizer', ...}; the wrapper holds
        # 'encoder.*' and the 1x1-conv decoder 'decoder.0.*'.
        checkpoint=CheckpointFormat(
            wrappers=("model",),
            prefixes=("module.", "encoder."),
            dropped=(r"^decoder\.", r"^mask_token$", r"relative_position_index$"),
        ),
        notes="run without masking; the official mask_token is never applied",
    ),
]


class AnyGridRelativePositionBias(RelativePositionBias):
    """The shared bias of `window_size`, evaluated for the grid of the current input."""

    def __init__(self, window_size: tuple[int, int], num_heads: int):
        super().__init__(window_size=window_size, num_heads=num_heads)
        self.grid = tuple(window_size)

    def forward(self) -> torch.Tensor:
        if self.grid == tuple(self.window_size):
            return super().forward()
        table = self.relative_position_bias_table
        # Resizing the table is slow-ish (scipy-style spline), so keep one per grid and
        # table version; a weight load bumps the version.
        cache_key = (self.grid, table._version, table.data_ptr(), table.device,
                     torch.is_inference_mode_enabled())
        if getattr(self, "_cached_key", None) != cache_key:
            self._cached_bias = self._bias_for_grid(self.grid)
            self._cached_key = cache_key
        return self._cached_bias

    def _bias_for_grid(self, grid: tuple[int, int]) -> torch.Tensor:
        h, w = grid
        table = self.relative_position_bias_table
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # timm interpolate's torch notices
            table = resize_rel_pos_bias_table(
                table,
                new_window_size=(h, w),
                new_bias_shape=((2 * h - 1) * (2 * w - 1) + 3, table.shape[-1]),
                old_window_size=tuple(self.window_size),
            )
        index = gen_relative_position_index((h, w), device=table.device)
        area = h * w + 1
        return table[index.view(-1)].view(area, area, -1).permute(2, 0, 1).contiguous()


def build(spec: ModelSpec, *, embed_dim: int, num_heads: int) -> torch.nn.Module:
    module = timm.create_model(
        spec.timm_arch,
        pretrained=False,
        num_classes=0,
        global_pool="token",  # 'avg' would replace the trained final norm by fc_norm
        embed_dim=embed_dim,
        num_heads=num_heads,
        **spec.arch_kwargs,
    )
    shared = module.rel_pos_bias
    any_grid = AnyGridRelativePositionBias(tuple(shared.window_size), num_heads)
    any_grid.load_state_dict(shared.state_dict())
    module.rel_pos_bias = any_grid
    module.patch_embed.strict_img_size = False
    return module


def set_input_grid(module: torch.nn.Module, grid: tuple[int, int]) -> None:
    module.rel_pos_bias.grid = tuple(grid)
