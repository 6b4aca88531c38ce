"""Scale-MAE: the official ViT-L/16 encoder with random weights, saved as the official release
file is laid out (util/misc.py save_model: {'model': encoder + decoder, 'optimizer', 'epoch',
'scaler', 'args'}), loaded through the harness, against a reference forward written here from
the official math (util/pos_embed.py get_2d_sincos_pos_embed_with_resolution, models_mae.py
forward_encoder): patch embedding, positions times the GSD ratio in a 2-D sin-cos table
(columns in the first half of the channels), a zero row for the class token, the 24 blocks,
the final norm."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from harness.models import (
    FAIR1M_GSD_M,
    FAIR1M_GSD_RANGE_M,
    REGISTRY,
    CheckpointKeyError,
    get_spec,
    load,
)
from harness.models.scale_mae import REFERENCE_GSD_M, sincos_gsd_table


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    monkeypatch.setenv("VITCLAIMS_CACHE", str(tmp_path / "cache"))


def official_sincos(dim: int, n: int, res: float) -> np.ndarray:
    """util/pos_embed.py's table for an n x n grid at resolution `res`, in numpy:
    [1 + n*n, dim], a zero class row first."""
    grid = np.stack(np.meshgrid(np.arange(n, dtype=np.float32), np.arange(n, dtype=np.float32)), axis=0)
    grid = grid * np.float32(res)  # einsum("chw,n->cnhw", grid, res)

    def one_axis(half: int, pos: np.ndarray) -> np.ndarray:
        omega = np.arange(half // 2, dtype=np.float32) / (half / 2.0)
        omega = 1.0 / 10000**omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    table = np.concatenate([one_axis(dim // 2, grid[0]), one_axis(dim // 2, grid[1])], axis=1)
    return np.concatenate([np.zeros((1, dim), np.float32), table], axis=0)


def _image(height=224, width=224, seed=5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (1, height, width, 3), dtype=np.uint8)


def test_the_registry_entry():
    spec = REGISTRY["scale_mae"]
    assert (spec.family, spec.patch_size, spec.depth, spec.embed_dim, spec.num_heads) == ("MIM", 16, 24, 1024, 16)
    assert spec.release_file == "scalemae-vitlarge-800.pth"
    assert spec.release_url.endswith("/releases/download/base-800/scalemae-vitlarge-800.pth")
    assert spec.gsd_aware and spec.checkpoint.wrappers == ("model",)
    assert FAIR1M_GSD_RANGE_M[0] <= FAIR1M_GSD_M <= FAIR1M_GSD_RANGE_M[1] and REFERENCE_GSD_M == 1.0


def test_table_follows_the_official_formula():
    for dim, n, res in ((16, 5, 1.0), (64, 14, 0.8), (1024, 14, 2.5)):
        ours = sincos_gsd_table(dim, (n, n), res)[0].numpy()
        # float32 sin/cos of angles up to n * res: numpy and torch reduce them differently
        np.testing.assert_allclose(ours, official_sincos(dim, n, res), rtol=0, atol=1e-5)
    # a non-square grid: the same rule per axis (columns first), the official table on squares
    table = sincos_gsd_table(16, (3, 5), 0.5)[0]
    square = torch.from_numpy(official_sincos(16, 5, 0.5))
    for r in range(3):
        for c in range(5):
            torch.testing.assert_close(table[1 + r * 5 + c], square[1 + r * 5 + c])


def test_gsd_is_explicit_and_part_of_the_identity():
    with pytest.raises(ValueError, match=r"gsd=<metres per pixel>.*FAIR1M_GSD_M"):
        load("scale_mae", random_init=True, smoke=True)
    for bad in (0, -1.0, float("nan"), "coarse"):
        with pytest.raises(ValueError, match="metres per pixel"):
            load("scale_mae", random_init=True, smoke=True, gsd=bad)
    with pytest.raises(ValueError, match="gsd is only for"):
        load("dino", random_init=True, smoke=True, gsd=0.8)
    fine = load("scale_mae", random_init=True, smoke=True, gsd=FAIR1M_GSD_M, device="cpu")
    coarse = load("scale_mae", random_init=True, smoke=True, gsd=2.4, device="cpu")
    assert fine.gsd == FAIR1M_GSD_M and "gsd 0.8 m/px" in fine.weights_id
    assert fine.weights_digest != coarse.weights_digest  # cache entries differ with the GSD
    assert (fine.depth, fine.patch_size, fine.num_prefix_tokens, fine.family) == (24, 16, 1, "MIM")
    x = fine.preprocess(_image())
    with torch.inference_mode():
        a, b = fine.patch_tokens(x, layers=[3])[3], coarse.patch_tokens(x, layers=[3])[3]
    assert a.shape == (1, 14, 14, 64) and not torch.allclose(a, b, atol=1e-3)
    with torch.inference_mode():  # any multiple of the patch
        wide = fine.patch_tokens(fine.preprocess(_image(224, 320)), layers=[24])[24]
    assert wide.shape == (1, 14, 20, 64) and torch.isfinite(wide).all()


def _decoder_keys(dim: int, depth: int = 3) -> dict[str, torch.Tensor]:
    """The non-encoder keys of MaskedAutoencoderViT as released (decoder_depth 3, independent
    FCN heads with fcn_dim 512 and 2 layers), with their shapes; values are irrelevant."""
    d = 512
    keys = {"mask_token": (1, 1, d), "mask_token_decoder": (1, 1, d), "decoder_pos_embed": (1, 197, d),
            "decoder_embed.weight": (d, dim), "decoder_embed.bias": (d,),
            "decoder_norm.weight": (d,), "decoder_norm.bias": (d,)}
    for i in range(depth):
        for part, shape in (("norm1.weight", (d,)), ("norm1.bias", (d,)), ("attn.qkv.weight", (3 * d, d)),
                            ("attn.qkv.bias", (3 * d,)), ("attn.proj.weight", (d, d)), ("attn.proj.bias", (d,)),
                            ("norm2.weight", (d,)), ("norm2.bias", (d,)), ("mlp.fc1.weight", (4 * d, d)),
                            ("mlp.fc1.bias", (4 * d,)), ("mlp.fc2.weight", (d, 4 * d)), ("mlp.fc2.bias", (d,))):
            keys[f"decoder_blocks.{i}.{part}"] = shape
    keys |= {"fpn.fpn1.0.weight": (d, d, 2, 2), "fpn.fpn1.0.bias": (d,), "fpn.fpn1.1.ln.weight": (d,),
             "fpn.fpn1.1.ln.bias": (d,), "fpn.fpn1.3.weight": (d, d, 2, 2), "fpn.fpn1.3.bias": (d,),
             "fpn.fpn2.0.weight": (d, d, 2, 2), "fpn.fpn2.0.bias": (d,)}
    for head in ("fcn_high", "fcn_low"):
        keys |= {f"{head}.proj.weight": (d, d, 1, 1), f"{head}.proj.bias": (d,)}
        for j in range(2):
            keys |= {f"{head}.conv_blocks.{j}.convs.1.weight": (d // 2, 2, 3, 3),
                     f"{head}.conv_blocks.{j}.convs.1.bias": (d // 2,),
                     f"{head}.conv_blocks.{j}.convs.3.weight": (d, d // 2, 1, 1),
                     f"{head}.conv_blocks.{j}.convs.3.bias": (d,),
                     f"{head}.conv_blocks.{j}.residual.weight": (d, d, 1, 1),
                     f"{head}.conv_blocks.{j}.residual.bias": (d,)}
        keys |= {f"{head}.pred.0.ln.weight": (d,), f"{head}.pred.0.ln.bias": (d,),
                 f"{head}.pred.1.weight": (d, d // 2, 4, 4), f"{head}.pred.1.bias": (d // 2,),
                 f"{head}.pred.3.weight": (d // 4, 2, 3, 3), f"{head}.pred.3.bias": (d // 4,),
                 f"{head}.pred.5.weight": (d // 2, d // 4, 1, 1), f"{head}.pred.5.bias": (d // 2,),
                 f"{head}.pred.7.weight": (d // 2, 3, 2, 2), f"{head}.pred.7.bias": (3,)}
    return {k: torch.zeros(shape) for k, shape in keys.items()}


def _official_content(encoder: dict[str, torch.Tensor], dim: int) -> dict:
    return {
        "model": encoder | _decoder_keys(dim),
        "optimizer": {"state": {}, "param_groups": [{"lr": 1.5e-4, "weight_decay": 0.05, "params": [0, 1]}]},
        "epoch": 799,
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000},
        "args": argparse.Namespace(model="mae_vit_large_patch16", input_size=224, target_size=[448],
                                   base_resolution=2.5, decoder_depth=3, independent_fcn_head=True,
                                   data_config={"data": {"type": "fmow", "base_resolution": 2.5}}),
    }


ENCODER_BLOCK_KEYS = {"norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                      "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
                      "mlp.fc2.weight", "mlp.fc2.bias"}


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """The official encoder (timm Blocks under the official names: timm's
    vit_large_patch16_224 module) with seeded random weights, and its release-format file."""
    with torch.device("meta"):
        reference = timm.create_model("vit_large_patch16_224", num_classes=0, global_pool="token")
    reference.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, param in reference.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1 + 0.1 * noise if name.endswith("norm1.weight") or name.endswith("norm2.weight")
                        or name == "norm.weight" else 0.02 * noise)
        reference.pos_embed.copy_(torch.from_numpy(official_sincos(1024, 14, 1.0))[None])  # res-1 init table
    encoder = {k: v for k, v in reference.state_dict().items()}
    assert {k for k in encoder if not k.startswith("blocks.")} == {
        "cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"}
    assert {k.removeprefix("blocks.0.") for k in encoder if k.startswith("blocks.0.")} == ENCODER_BLOCK_KEYS
    assert len({k.split(".")[1] for k in encoder if k.startswith("blocks.")}) == 24
    path = tmp_path_factory.mktemp("scale_mae") / "scalemae-vitlarge-800.pth"
    torch.save(_official_content(encoder, 1024), path)
    return reference.eval(), path


def reference_forward(module, x: torch.Tensor, res: float, layers=(12, 24)) -> dict[int, torch.Tensor]:
    """models_mae.py forward_encoder with mask_ratio 0: x + pos[1:], class token + pos[0],
    the blocks, the final norm (applied to each requested layer), patch tokens only."""
    n = x.shape[-1] // 16
    pos = torch.from_numpy(official_sincos(1024, n, res))[None]
    tokens = F.conv2d(x, module.patch_embed.proj.weight, module.patch_embed.proj.bias, stride=16)
    tokens = tokens.flatten(2).transpose(1, 2) + pos[:, 1:]
    tokens = torch.cat([module.cls_token + pos[:, :1], tokens], dim=1)
    out = {}
    for index, block in enumerate(module.blocks, start=1):
        tokens = block(tokens)
        if index in layers:
            out[index] = module.norm(tokens)[:, 1:].reshape(1, n, n, -1)
    return out


@pytest.mark.slow
def test_official_release_format_gives_the_official_patch_tokens(official):
    reference, path = official
    backbone = load("scale_mae", weights=path, gsd=FAIR1M_GSD_M, device="cpu")
    assert (backbone.embed_dim, backbone.depth, backbone.num_heads, backbone.patch_size) == (1024, 24, 16, 16)
    assert backbone.weights_id == f"{path} (gsd 0.8 m/px)" and len(backbone.weights_digest) == 16
    expected_state = {k: v for k, v in reference.state_dict().items() if k != "pos_embed"}
    got = backbone.module.state_dict()
    assert got.keys() == expected_state.keys()
    assert all(torch.equal(got[k], expected_state[k]) for k in got)
    x = backbone.preprocess(_image())
    with torch.inference_mode():
        ours = backbone.patch_tokens(x, layers=[12, 24])
        expected = reference_forward(reference, x, FAIR1M_GSD_M / REFERENCE_GSD_M)
        other_gsd = reference_forward(reference, x, 2.5, layers=(24,))
    for layer in (12, 24):
        assert ours[layer].shape == (1, 14, 14, 1024)
        assert (ours[layer] - expected[layer]).abs().max().item() < 1e-5
    assert (ours[24] - other_gsd[24]).abs().max().item() > 1e-3  # the GSD reaches the tokens


def test_release_format_is_strict_at_smoke_width(tmp_path):
    # the same format on a narrow copy of the architecture (width 64, 2 heads, 24 blocks)
    spec = dataclasses.replace(get_spec("scale_mae"), embed_dim=64, num_heads=2)
    source = load("scale_mae", random_init=True, smoke=True, gsd=1.0, device="cpu")
    encoder = dict(source.module.state_dict()) | {"pos_embed": torch.zeros(1, 197, 64)}
    path = tmp_path / "scalemae-vitlarge-800.pth"
    torch.save(_official_content(encoder, 64), path)
    loaded = load(spec, weights=path, gsd=1.0, device="cpu")
    assert all(torch.equal(loaded.module.state_dict()[k], v) for k, v in source.module.state_dict().items())
    content = _official_content(encoder, 64)
    content["model"]["blocks.0.attn.q_norm.weight"] = torch.ones(32)  # not in the official encoder
    del content["model"]["norm.bias"]
    torch.save(content, path)
    with pytest.raises(CheckpointKeyError) as err:
        load(spec, weights=path, gsd=1.0, device="cpu")
    assert err.value.missing == ["norm.bias"] and err.value.unexpected == ["blocks.0.attn.q_norm.weight"]
