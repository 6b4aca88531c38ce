"""Registry, loading and the patch-token conventions, on small random-init models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.models import REGISTRY, UnknownModelError, get_spec, load
from harness.models.vit import resize_pos_embed

PAPER_MODELS = ["dino", "dinov2", "mae", "simmim", "ibot", "supervised"]


def _images(n: int, height: int = 224, width: int = 224, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def smoke_models():
    return {name: load(name, random_init=True, smoke=True, device="cpu") for name in PAPER_MODELS}


def test_registry_holds_the_six_models_with_their_facts():
    assert set(PAPER_MODELS) <= set(REGISTRY)
    families = {name: REGISTRY[name].family for name in PAPER_MODELS}
    assert families == {"dino": "contrastive", "dinov2": "contrastive", "ibot": "contrastive",
                        "mae": "MIM", "simmim": "MIM", "supervised": "supervised"}
    assert {name: REGISTRY[name].patch_size for name in PAPER_MODELS} == {
        "dino": 16, "dinov2": 14, "mae": 16, "simmim": 16, "ibot": 16, "supervised": 16}
    for name in PAPER_MODELS:
        spec = REGISTRY[name]
        assert (spec.depth, spec.embed_dim, spec.num_heads) == (12, 768, 12)
        assert spec.release_file and spec.release_url
        expected_stats = (0.5, 0.5, 0.5) if name == "supervised" else (0.485, 0.456, 0.406)
        assert spec.mean == expected_stats
    # the default timm tag of vit_base_patch16_224 is supervised: DINO/MAE must name theirs
    assert REGISTRY["dino"].hub_id.endswith(".dino") and REGISTRY["mae"].hub_id.endswith(".mae")


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(UnknownModelError) as err:
        get_spec("dino-v3")
    for name in PAPER_MODELS:
        assert name in str(err.value)
    with pytest.raises(UnknownModelError):
        load("resnet50", random_init=True)


def test_random_init_is_seeded_per_model():
    first = load("dino", random_init=True, smoke=True).module.state_dict()
    again = load("dino", random_init=True, smoke=True).module.state_dict()
    other = load("ibot", random_init=True, smoke=True).module.state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["blocks.0.attn.qkv.weight"], other["blocks.0.attn.qkv.weight"])


def test_backbone_attributes(smoke_models):
    backbone = smoke_models["dinov2"]
    assert backbone.name == "dinov2" and backbone.spec is REGISTRY["dinov2"]
    assert (backbone.patch_size, backbone.depth, backbone.embed_dim) == (14, 12, 64)
    assert (backbone.num_heads, backbone.num_prefix_tokens, backbone.family, backbone.gsd) == (2, 1, "contrastive", None)
    assert backbone.device == torch.device("cpu")
    assert backbone.weights_id == "random-init-smoke"
    assert backbone.weights_digest.startswith("random-init-") and backbone.weights_digest.endswith("-smoke")
    assert isinstance(backbone.module, torch.nn.Module) and not backbone.module.training


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_every_paper_model_has_one_prefix_token_and_its_family(smoke_models, name):
    backbone = smoke_models[name]
    assert backbone.num_prefix_tokens == 1 and backbone.family == REGISTRY[name].family
    assert backbone.final_norm is backbone.module.norm


def test_smoke_requires_random_init():
    with pytest.raises(ValueError, match="random_init"):
        load("dino", smoke=True)


@pytest.mark.parametrize("name", PAPER_MODELS)
@pytest.mark.parametrize("size", [(224, 224), (336, 560)])
def test_patch_tokens_shapes_for_tiles_and_video_frames(smoke_models, name, size):
    backbone = smoke_models[name]
    p = backbone.patch_size
    # multiples of the patch: 224x224 tiles, and frames of 336x560 rounded to the patch
    height, width = (size[0] // p) * p, (size[1] // p) * p
    with torch.inference_mode():
        tokens = backbone.patch_tokens(backbone.preprocess(_images(2, height, width)), layers=[1, 7, 12])
    assert sorted(tokens) == [1, 7, 12]
    for out in tokens.values():
        assert out.shape == (2, height // p, width // p, 64)
        assert torch.isfinite(out).all()


def test_dinov2_gives_a_16x16_grid_at_224(smoke_models):
    with torch.inference_mode():
        tokens = smoke_models["dinov2"].patch_tokens(smoke_models["dinov2"].preprocess(_images(1)))
    assert sorted(tokens) == list(range(1, 13))
    assert tokens[12].shape == (1, 16, 16, 64)


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_last_layer_equals_timm_forward_features_patch_tokens(smoke_models, name):
    # forward_features is timm's own path (blocks then final norm), independent of
    # forward_intermediates: layer 12 must be its patch part, i.e. the final norm applied.
    backbone = smoke_models[name]
    with torch.inference_mode():
        x = backbone.preprocess(_images(2))
        ours = backbone.patch_tokens(x, layers=[12])[12]
        reference = backbone.module.forward_features(x)[:, 1:]
    h = 224 // backbone.patch_size
    torch.testing.assert_close(ours, reference.reshape(2, h, h, -1), rtol=1e-5, atol=1e-5)


def test_intermediate_layers_are_normed_block_outputs(smoke_models):
    backbone = smoke_models["mae"]
    module = backbone.module
    captured = {}
    hook = module.blocks[3].register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    with torch.inference_mode():
        tokens = backbone.patch_tokens(backbone.preprocess(_images(1)), layers=[4])[4]
    hook.remove()
    expected = module.norm(captured["out"])[:, 1:].reshape(1, 14, 14, -1)  # MAE: no masking
    torch.testing.assert_close(tokens, expected)


def test_preprocess_normalises_with_the_models_own_statistics(smoke_models):
    white = np.full((1, 224, 224, 3), 255, np.uint8)
    for name in ("dino", "supervised"):
        spec = REGISTRY[name]
        x = smoke_models[name].preprocess(white)
        assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
        expected = [(1 - m) / s for m, s in zip(spec.mean, spec.std, strict=True)]
        torch.testing.assert_close(x[0, :, 0, 0], torch.tensor(expected))
    assert torch.allclose(smoke_models["supervised"].preprocess(white), torch.ones(1))


def test_preprocess_and_patch_tokens_reject_bad_input(smoke_models):
    backbone = smoke_models["dino"]
    with pytest.raises(TypeError, match="uint8"):
        backbone.preprocess(np.zeros((1, 224, 224, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        backbone.preprocess(np.zeros((224, 224, 3), np.uint8))
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        backbone.preprocess(np.zeros((1, 230, 224, 3), np.uint8))
    with pytest.raises(ValueError, match="1..12"):
        backbone.patch_tokens(torch.zeros(1, 3, 224, 224), layers=[0, 13])


def _cubic_weight(distance: float, a: float = -0.75) -> float:
    # Keys' cubic convolution kernel with PyTorch's a = -0.75
    d = abs(distance)
    if d <= 1:
        return (a + 2) * d**3 - (a + 3) * d**2 + 1
    if d < 2:
        return a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    return 0.0


def test_dinov2_position_embedding_follows_the_official_offset_convention():
    # Plant a table whose value is its row index, and check every interior output row r
    # against bicubic sampling written out at the source row (r + 0.5) / s - 0.5, with the
    # official scale factor s = (16 + 0.1) / 37 (not the 16 / 37 of an explicit size).
    m, h, dim = 37, 16, 3
    rows = torch.arange(m, dtype=torch.float32).view(m, 1, 1).expand(m, m, dim)
    pos = torch.cat([torch.full((1, 1, dim), -7.0), rows.reshape(1, m * m, dim)], dim=1)
    out = resize_pos_embed(pos, (h, h), (m, m), "dino-offset")
    assert out.shape == (1, 1 + h * h, dim)
    assert torch.equal(out[:, 0], pos[:, 0])  # class row untouched
    grid = out[0, 1:, 0].reshape(h, h)
    scale = (h + 0.1) / m
    for r in range(1, h - 1):
        source = (r + 0.5) / scale - 0.5
        base = int(np.floor(source))
        expected = sum(_cubic_weight(source - k) * k for k in range(base - 1, base + 3))
        assert grid[r, 5].item() == pytest.approx(expected, abs=1e-4)
        assert torch.allclose(grid[r], grid[r, 5])  # rows only vary with the row
    # the size= convention (HF) and timm's antialiased resampling give other numbers
    for method in ("bicubic-size", "timm"):
        assert not torch.allclose(resize_pos_embed(pos, (h, h), (m, m), method), out, atol=1e-3)


def test_dino_position_embedding_is_untouched_at_its_native_grid_and_resized_otherwise():
    pos = torch.randn(1, 1 + 14 * 14, 8)
    assert resize_pos_embed(pos, (14, 14), (14, 14), "dino-offset") is pos
    wide = resize_pos_embed(pos, (21, 35), (14, 14), "dino-offset")
    assert wide.shape == (1, 1 + 21 * 35, 8)
    # official formula written out: per-axis scale factor with the +0.1 offset
    table = pos[:, 1:].reshape(1, 14, 14, 8).permute(0, 3, 1, 2)
    expected = F.interpolate(table, scale_factor=(21.1 / 14, 35.1 / 14), mode="bicubic")
    torch.testing.assert_close(wide[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, -1, 8))


def test_simmim_uses_one_shared_relative_position_bias_and_layer_scale(smoke_models):
    backbone = load("simmim", random_init=True, smoke=True)
    module = backbone.module
    keys = module.state_dict().keys()
    assert "rel_pos_bias.relative_position_bias_table" in keys
    assert module.rel_pos_bias.relative_position_bias_table.shape == ((2 * 14 - 1) ** 2 + 3, 2)
    assert not any("attn.relative_position_bias_table" in k for k in keys)  # not per block
    assert "pos_embed" not in keys and module.pos_embed is None
    assert all(torch.allclose(block.gamma_1, torch.tensor(0.1)) for block in module.blocks)
    x = backbone.preprocess(_images(1))
    with torch.inference_mode():
        before = backbone.patch_tokens(x, layers=[12])[12]
    with torch.no_grad():
        module.rel_pos_bias.relative_position_bias_table.normal_(0, 1.0)
    with torch.inference_mode():
        after = backbone.patch_tokens(x, layers=[12])[12]
        wide = backbone.patch_tokens(backbone.preprocess(_images(1, 336, 560)), layers=[12])[12]
    assert not torch.allclose(before, after, atol=1e-3)  # the shared bias is used
    assert wide.shape == (1, 21, 35, 64) and torch.isfinite(wide).all()


def test_dinov2_forward_adds_the_officially_interpolated_table(smoke_models):
    # The whole forward written out with the official DINOv2 recipe: patch embedding, class
    # token, the 37x37 table brought to 16x16 by bicubic with scale (16 + 0.1) / 37 and no
    # antialias, the blocks, the final norm.
    backbone = smoke_models["dinov2"]
    module = backbone.module
    x = backbone.preprocess(_images(2))
    with torch.inference_mode():
        ours = backbone.patch_tokens(x, layers=[12])[12]
        patches = F.conv2d(x, module.patch_embed.proj.weight, module.patch_embed.proj.bias, stride=14)
        patches = patches.flatten(2).transpose(1, 2)  # [B, 256, D]
        table = module.pos_embed[:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2)
        table = F.interpolate(table, scale_factor=(16.1 / 37, 16.1 / 37), mode="bicubic", antialias=False)
        pos = torch.cat([module.pos_embed[:, :1], table.flatten(2).transpose(1, 2)], dim=1)
        tokens = torch.cat([module.cls_token.expand(2, -1, -1), patches], dim=1) + pos
        for block in module.blocks:
            tokens = block(tokens)
        expected = module.norm(tokens)[:, 1:].reshape(2, 16, 16, -1)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
