"""Official checkpoint formats, with random ViT-B weights: each of the six is saved in its
release's exact layout (wrapper keys, prefixes, official parameter names, training-only
extras), loaded through `load(name, weights=path)`, and must give the same patch tokens as
the module it came from. Wrong keys and missing weights fail loudly, naming what to fix."""

from __future__ import annotations

import contextlib
import sys
import types
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import harness.models.weights as weights_module
from harness.models import (
    CheckpointFormatError,
    CheckpointKeyError,
    WeightsNotAvailableError,
    load,
)

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network, an empty Hugging Face cache and an empty harness cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    monkeypatch.setenv("VITCLAIMS_CACHE", str(tmp_path / "cache"))


def _image() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)


def _tokens(backbone, layers=(1, 6, 12)):
    with torch.inference_mode():
        return backbone.patch_tokens(backbone.preprocess(_image()), layers=list(layers))


def _assert_same_tokens(source, loaded):
    expected, got = _tokens(source), _tokens(loaded)
    for layer in expected:
        torch.testing.assert_close(got[layer], expected[layer], rtol=0, atol=0)


def _assert_same_weights(source, loaded):
    expected, got = source.module.state_dict(), loaded.module.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def _random_state(name: str):
    """A ViT-B of the model's architecture with seeded random weights, and its state dict.
    Constant-initialised tensors (norms, biases, layer scales) are perturbed so that a
    parameter left at its init by a faulty load would show."""
    source = load(name, random_init=True, device="cpu")
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for tensor in source.module.state_dict().values():
            if tensor.is_floating_point() and tensor.ndim == 1:
                tensor.add_(torch.randn(tensor.shape, generator=generator) * 0.1)
    return source, {k: v.clone() for k, v in source.module.state_dict().items()}


@contextlib.contextmanager
def stand_in_yacs():
    """yacs.config.CfgNode for pickling a config the way SimMIM's is pickled (a dict subclass
    whose __dict__ holds its flags). yacs is not installed: the stand-in modules exist only
    inside the block, so reading the file afterwards cannot import them."""
    class CfgNode(dict):
        pass

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    package, module = types.ModuleType("yacs"), types.ModuleType("yacs.config")
    module.CfgNode, package.config = CfgNode, module

    def node(mapping):
        out = CfgNode({k: node(v) if isinstance(v, dict) else v for k, v in mapping.items()})
        out.__dict__.update({"__immutable__": True, "__deprecated_keys__": set(), "__renamed_keys__": {}})
        return out

    assert "yacs" not in sys.modules
    sys.modules.update({"yacs": package, "yacs.config": module})
    try:
        yield node
    finally:
        del sys.modules["yacs"], sys.modules["yacs.config"]


def _official_file(name: str, state: dict, tmp_path):
    """`state` written the way the official release file of `name` is laid out."""
    dim = 768
    if name == "dino":  # flat backbone state dict, no prefix, no head
        content, filename = dict(state), "dino_vitbase16_pretrain.pth"
        assert state["pos_embed"].shape == (1, 197, dim)
    elif name == "dinov2":  # flat, 37x37 pos-embed, mask_token, LayerScale ls1/ls2.gamma
        content, filename = dict(state) | {"mask_token": torch.zeros(1, dim)}, "dinov2_vitb14_pretrain.pth"
        assert state["pos_embed"].shape == (1, 37 * 37 + 1, dim)
        assert "blocks.11.ls1.gamma" in state and "blocks.11.ls2.gamma" in state
    elif name == "mae":  # {'model': encoder}
        content, filename = {"model": dict(state)}, "mae_pretrain_vit_base.pth"
    elif name == "simmim":  # save_checkpoint of the SimMIM wrapper: encoder.* + decoder.0.*
        model = {f"encoder.{k}": v for k, v in state.items()}
        model |= {
            "encoder.mask_token": torch.zeros(1, 1, dim),
            "encoder.rel_pos_bias.relative_position_index": torch.zeros(197, 197, dtype=torch.long),
            "decoder.0.weight": torch.randn(16 * 16 * 3, dim, 1, 1),
            "decoder.0.bias": torch.zeros(16 * 16 * 3),
        }
        for key in ("encoder.blocks.0.gamma_1", "encoder.blocks.0.attn.q_bias",
                    "encoder.blocks.0.attn.v_bias", "encoder.blocks.0.attn.qkv.weight"):
            assert key in model
        assert "encoder.blocks.0.attn.qkv.bias" not in model and "encoder.pos_embed" not in model
        assert model["encoder.rel_pos_bias.relative_position_bias_table"].shape == (732, 12)
        content = {"model": model, "optimizer": {"state": {}}, "lr_scheduler": {}, "max_accuracy": 0.0,
                   "epoch": 799}
        filename = "simmim_pretrain__vit_base__img224__800ep.pth"
    elif name == "ibot":  # extract_backbone_weights output: {'state_dict': teacher backbone}
        content, filename = {"state_dict": dict(state)}, "checkpoint_teacher.pth"
    elif name == "supervised":  # flat timm/jx state dict with its 1000-class head
        content = dict(state) | {"head.weight": torch.randn(1000, dim), "head.bias": torch.zeros(1000)}
        filename = "jx_vit_base_p16_224-80ecf9dd.pth"
    else:
        raise AssertionError(name)
    path = tmp_path / filename
    if name == "simmim":  # save_checkpoint also pickles the run's yacs config
        with stand_in_yacs() as cfg_node:
            torch.save(content | {"config": cfg_node({"MODEL": {"TYPE": "vit", "VIT": {"INIT_VALUES": 0.1}}})}, path)
    else:
        torch.save(content, path)
    return path


@pytest.mark.parametrize("name", ["dino", "dinov2", "mae", "simmim", "ibot", "supervised"])
def test_official_release_format_loads_exactly(name, tmp_path):
    source, state = _random_state(name)
    path = _official_file(name, state, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback, no warning: SimMIM's yacs config is allowed
        loaded = load(name, weights=path, device="cpu")
    assert loaded.weights_id == str(path)
    assert len(loaded.weights_digest) == 16
    _assert_same_weights(source, loaded)
    _assert_same_tokens(source, loaded)


@pytest.fixture(scope="module")
def dino_state():
    return _random_state("dino")


@pytest.mark.parametrize("model_name", ["dino", "ibot"])
def test_full_training_checkpoint_uses_the_teacher(dino_state, model_name, tmp_path):
    source, state = dino_state
    student = {f"module.backbone.{k}": torch.zeros_like(v) for k, v in state.items()}
    teacher = {f"backbone.{k}": v for k, v in state.items()} | {"head.last_layer.weight_g": torch.ones(1)}
    path = tmp_path / "checkpoint.pth"
    torch.save({"student": student, "teacher": teacher, "epoch": 100}, path)
    _assert_same_weights(source, load(model_name, weights=path, device="cpu"))


def test_renamed_key_fails_naming_both_keys(dino_state, tmp_path):
    _, state = dino_state
    renamed = dict(state)
    renamed["norm.gamma"] = renamed.pop("norm.weight")
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointKeyError) as err:
        load("dino", weights=tmp_path / "renamed.pth")
    assert "norm.gamma" in str(err.value) and "norm.weight" in str(err.value)
    assert err.value.missing == ["norm.weight"] and err.value.unexpected == ["norm.gamma"]


def test_extra_key_fails_naming_it(dino_state, tmp_path):
    _, state = dino_state
    torch.save(dict(state) | {"blocks.0.attn.extra_bias": torch.zeros(3)}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointKeyError, match=r"unexpected keys: \['blocks.0.attn.extra_bias'\]"):
        load("dino", weights=tmp_path / "extra.pth")


def test_wrong_shape_and_wrong_wrapper_fail(dino_state, tmp_path):
    _, state = dino_state
    torch.save(dict(state) | {"pos_embed": torch.zeros(1, 50, 768)}, tmp_path / "shape.pth")
    with pytest.raises(CheckpointKeyError, match=r"pos_embed \(file \(1, 50, 768\) vs model \(1, 197, 768\)\)"):
        load("dino", weights=tmp_path / "shape.pth")
    torch.save({"weights": dict(state)}, tmp_path / "wrapped.pth")
    with pytest.raises(CheckpointFormatError, match=r"\['model'\].*\['weights'\]"):
        load("mae", weights=tmp_path / "wrapped.pth")


def test_transformers_format_is_named_not_half_loaded(tmp_path):
    state = {"embeddings.patch_embeddings.projection.weight": torch.zeros(768, 3, 16, 16),
             "embeddings.cls_token": torch.zeros(1, 1, 768)}
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointFormatError, match="transformers format"):
        load("dino", weights=tmp_path / "pytorch_model.bin")


def test_hub_cache_is_used_offline_and_pins_the_revision(dino_state, tmp_path):
    source, state = dino_state
    snapshot = tmp_path / "hf-hub" / "models--timm--vit_base_patch16_224.dino" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    loaded = load("dino", device="cpu")
    assert loaded.weights_id == "hf-hub:timm/vit_base_patch16_224.dino"
    assert len(loaded.weights_digest) == 16
    _assert_same_weights(source, loaded)
    assert weights_module.local_status(loaded.spec)[0] is True


@pytest.mark.parametrize("name", ["dino", "dinov2", "mae", "supervised"])
def test_no_hub_weights_offline_names_the_hub_id_and_folders(name, tmp_path):
    from harness.models import REGISTRY

    spec = REGISTRY[name]
    with pytest.raises(WeightsNotAvailableError) as err:
        load(name)
    message = str(err.value)
    assert spec.hub_id in message and str(tmp_path / "hf-hub") in message
    assert str(tmp_path / "cache" / "weights" / spec.release_file) in message


@pytest.mark.parametrize("name", ["simmim", "ibot"])
def test_no_release_file_names_the_file_url_and_folder(name, tmp_path):
    from harness.models import REGISTRY

    spec = REGISTRY[name]
    with pytest.raises(WeightsNotAvailableError) as err:
        load(name)
    message = str(err.value)
    assert spec.release_file in message and spec.release_url in message
    assert str(tmp_path / "cache" / "weights") in message


def test_release_file_in_the_weights_folder_is_the_default(dino_state, tmp_path):
    source, state = dino_state
    folder = tmp_path / "cache" / "weights"
    folder.mkdir(parents=True)
    torch.save(dict(state), folder / "dino_vitbase16_pretrain.pth")
    loaded = load("dino", device="cpu")
    assert loaded.weights_id == str(folder / "dino_vitbase16_pretrain.pth")
    _assert_same_weights(source, loaded)


def test_missing_file_and_bad_ids_are_clear(tmp_path):
    with pytest.raises(WeightsNotAvailableError, match="does not exist"):
        load("dino", weights=tmp_path / "nope.pth")
    with pytest.raises(WeightsNotAvailableError, match="timm pretrained tag"):
        load("dino", weights="not_a_model.tag")
    with pytest.raises(WeightsNotAvailableError, match="HF_HUB_OFFLINE"):
        load("dino", weights="hf-hub:someone/some-vit")


def test_failed_download_names_the_hub_id_and_does_not_hang(monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    calls = []

    def unreachable(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs.get("etag_timeout")))
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(WeightsNotAvailableError, match="download failed: ConnectionError") as err:
        load("mae")
    assert "timm/vit_base_patch16_224.mae" in str(err.value)
    assert calls == [("timm/vit_base_patch16_224.mae", "model.safetensors", 10)]  # one try, bounded
