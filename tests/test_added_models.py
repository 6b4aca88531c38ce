"""Backbones added by spec (text or TOML) with their real timm architectures at random init:
DINOv2 with 4 registers, DINOv3 (RoPE + registers), EVA-02 MIM, and timm-format files loaded
from a path and from a (fake, local) Hugging Face hub cache. The syntax tests build nothing
but meta-device modules."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from harness.models import (
    CheckpointKeyError,
    ModelSpec,
    SpecError,
    UnknownModelError,
    get_spec,
    load,
    load_model_specs,
    parse_added_model,
    register,
    unregister,
)

REG4 = "vit_base_patch14_reg4_dinov2.lvd142m"
DINOV3 = "vit_base_patch16_dinov3.lvd1689m"
EVA02 = "eva02_base_patch14_224.mim_in22k"


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network, an empty Hugging Face cache and an empty harness cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    monkeypatch.setenv("VITCLAIMS_CACHE", str(tmp_path / "cache"))


def _image(height=224, width=224, n=1) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------ text syntax
@pytest.mark.parametrize("text, hub_id, arch", [
    (f"dinov3=hf-hub:timm/{DINOV3}:contrastive", f"timm/{DINOV3}", "vit_base_patch16_dinov3"),
    (f"dinov3=timm/{DINOV3}:contrastive", f"timm/{DINOV3}", "vit_base_patch16_dinov3"),
    (f"dinov2-reg4={REG4}:Contrastive", f"timm/{REG4}", "vit_base_patch14_reg4_dinov2"),
    (f"eva02={EVA02}:mim", f"timm/{EVA02}", "eva02_base_patch14_224"),
])
def test_hub_ids_and_timm_tags_resolve_from_timm_alone(text, hub_id, arch):
    spec = parse_added_model(text)
    assert (spec.hub_id, spec.timm_arch, spec.arch_family, spec.weights_file) == (hub_id, arch, "timm", "")
    assert spec.name == text.split("=")[0]
    assert spec.family in ("contrastive", "MIM") and spec.source == f"hf-hub:{hub_id}"


def test_facts_come_from_the_timm_model_and_its_pretrained_config():
    reg4, dinov3, eva = (parse_added_model(f"m={tag}:contrastive") for tag in (REG4, DINOV3, EVA02))
    assert (reg4.patch_size, reg4.num_prefix_tokens, reg4.native_grid, reg4.grid_resize) == (14, 5, 37, "timm")
    assert (dinov3.patch_size, dinov3.num_prefix_tokens, dinov3.grid_resize) == (16, 5, "rope")
    assert (eva.patch_size, eva.num_prefix_tokens, eva.grid_resize) == (14, 1, "rope")
    for spec in (reg4, dinov3, eva):
        assert (spec.depth, spec.embed_dim, spec.num_heads) == (12, 768, 12)
    assert reg4.mean == dinov3.mean == (0.485, 0.456, 0.406)
    assert eva.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))  # CLIP statistics
    # EVA-02 MIM keeps its encoder's final norm in fc_norm (timm moves it there)
    assert (reg4.final_norm, dinov3.final_norm, eva.final_norm) == ("norm", "norm", "fc_norm")


def test_files_and_registry_formats(tmp_path):
    odd = tmp_path / "a=b@c:d"  # '=', '@' and ':' inside the path need no escaping
    spec = parse_added_model(f"mine={REG4}@{odd}/model.safetensors:contrastive")
    assert spec.weights_file == f"{odd}/model.safetensors" and spec.hub_id is None
    assert spec.timm_arch == "vit_base_patch14_reg4_dinov2" and spec.num_prefix_tokens == 5
    windows = parse_added_model(f"win={REG4}@C:\\weights\\model.safetensors:supervised")
    assert windows.weights_file == "C:\\weights\\model.safetensors" and windows.family == "supervised"
    official = parse_added_model(f"dino-ft=dino@{tmp_path}/checkpoint0100.pth:contrastive")
    assert (official.arch_family, official.timm_arch, official.checkpoint.wrappers) == ("vit", "vit_base_patch16_224", ("teacher",))
    assert official.weights_file.endswith("checkpoint0100.pth") and official.name == "dino-ft"
    scale = parse_added_model("my-scale=scale_mae@hf-hub:someone/scalemae-ft:MIM")
    assert scale.hub_id == "someone/scalemae-ft" and scale.gsd_aware and scale.checkpoint.wrappers == ("model",)


@pytest.mark.parametrize("text, expected", [
    ("dinov3", "NAME=SOURCE:FAMILY"),
    (f"dinov3=timm/{DINOV3}", "FAMILY"),
    (f"dinov3=timm/{DINOV3}:selfsup", "contrastive, MIM, supervised"),
    (f"dino v3=timm/{DINOV3}:contrastive", "letters, digits"),
    (f"dino=timm/{DINOV3}:contrastive", "registry model"),
    ("x=vit_base_patch16_224:supervised", "full timm tag"),
    ("x=timm/vit_base_patch16_224:supervised", "full timm tag"),
    ("x=not_a_vit.tag:contrastive", "no architecture 'not_a_vit'"),
    ("x=vit_base_patch14_dinov2.nope:contrastive", "no pretrained tag"),
    ("x=/weights/model.safetensors:contrastive", "ARCH.TAG@/weights/model.safetensors"),
    ("x=someone/private-vit:contrastive", "ARCH.TAG@someone/private-vit"),
    ("x=vit_base_patch16_224@/w/model.pth:contrastive", "normalisation"),
    ("x=resnet50.a1_in1k:supervised", "ViT-style"),
    (f"x=dino@{DINOV3}:contrastive", "timm tag"),
    ("x=:contrastive", "empty SOURCE"),
])
def test_bad_text_names_the_text_and_what_was_expected(text, expected):
    with pytest.raises(SpecError) as err:
        parse_added_model(text)
    assert expected in str(err.value)
    assert isinstance(err.value, ValueError)


# ------------------------------------------------------------------------------ TOML
def _write(tmp_path, text: str):
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def test_toml_specs_with_overrides(tmp_path):
    path = _write(tmp_path, f'''
[[model]]
name = "dinov3"
family = "contrastive"
source = "hf-hub:timm/{DINOV3}"

[[model]]
name = "reg4-file"
family = "contrastive"
file = "weights/pytorch_model.bin"      # relative to this file
timm_arch = "{REG4}"
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]
grid_resize = "dino-offset"
num_prefix_tokens = 5                   # checked against the model
title = "DINOv2 reg4, my copy"

[[model]]
name = "eva-mim"
family = "MIM"
hub_id = "timm/{EVA02}"
checkpoint = {{ wrappers = ["model"], dropped = ["^lm_head\\\\."] }}

[[model]]
name = "dino-teacher"
family = "contrastive"
file = "/ckpt/checkpoint.pth"
format = "dino"
''')
    dinov3, reg4, eva, dino = load_model_specs(path)
    assert dinov3.hub_id == f"timm/{DINOV3}" and dinov3.num_prefix_tokens == 5
    assert reg4.weights_file == str(tmp_path / "weights" / "pytorch_model.bin")
    assert (reg4.mean, reg4.std, reg4.grid_resize, reg4.title) == (
        (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "dino-offset", "DINOv2 reg4, my copy")
    assert eva.checkpoint.wrappers == ("model",) and eva.checkpoint.dropped == (r"^lm_head\.",)
    assert eva.family == "MIM" and eva.final_norm == "fc_norm"
    assert dino.arch_family == "vit" and dino.weights_file == "/ckpt/checkpoint.pth"


@pytest.mark.parametrize("body, expected", [
    ('name = "a"\nfamily = "MIM"\nsource = "timm/{eva}"\ncolour = "red"', "model 'a': unknown field(s) ['colour']"),
    ('name = "a"\nfamily = "MIM"', "model 'a': give exactly one of the fields 'source', 'hub_id', 'file'"),
    ('family = "MIM"\nsource = "timm/{eva}"', "model #1: field 'name' is required"),
    ('name = "a"\nfamily = "MIM"\nsource = "timm/{eva}"\npatch_size = 16', "model 'a': field 'patch_size' = 16 but the architecture has 14"),
    ('name = "a"\nfamily = "MIM"\nsource = "timm/{eva}"\nmean = [0.5, 0.5]', "model 'a': field 'mean' must be 3 numbers"),
    ('name = "a"\nfamily = "MIM"\nsource = "timm/{eva}"\ndepth = "12"', "model 'a': field 'depth' must be an integer"),
    ('name = "a"\nfamily = "MIM"\nsource = "timm/{eva}"\ngrid_resize = "dino-offset"', "model 'a': field 'grid_resize' 'dino-offset' does not fit"),
    ('name = "a"\nfamily = "MIM"\nsource = "timm/{eva}"\ncheckpoint = {{ dropped = ["(unclosed"] }}', "not a regular expression"),
    ('name = "a"\nfamily = "MIM"\nsource = "timm/{eva}"\narch_kwargs = {{ no_such = 1 }}', "timm cannot build"),
    ('name = "a"\nfamily = "MIM"\nfile = "x.pth"\nformat = "dinov9"', "field 'format' 'dinov9' is not a registry model"),
    ('name = "a"\nfamily = "art"\nsource = "timm/{eva}"', "model 'a': field 'family' 'art' must be one of"),
])
def test_bad_toml_names_the_file_the_model_and_the_field(tmp_path, body, expected):
    path = _write(tmp_path, "[[model]]\n" + body.format(eva=EVA02) + "\n")
    with pytest.raises(SpecError) as err:
        load_model_specs(path)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_bad_toml_files(tmp_path):
    with pytest.raises(SpecError, match="not valid TOML"):
        load_model_specs(_write(tmp_path, "[[model]\nname="))
    with pytest.raises(SpecError, match=r"\[\[model\]\] tables"):
        load_model_specs(_write(tmp_path, "title = 'x'\n"))
    twice = f'[[model]]\nname = "a"\nfamily = "MIM"\nsource = "timm/{EVA02}"\n' * 2
    with pytest.raises(SpecError, match="model 'a' is defined twice"):
        load_model_specs(_write(tmp_path, twice))
    with pytest.raises(SpecError, match="does not exist"):
        load_model_specs(tmp_path / "absent.toml")


def test_register_makes_an_added_model_loadable_by_name():
    spec = parse_added_model(f"dinov3-test=timm/{DINOV3}:contrastive")
    try:
        register(spec)
        assert get_spec("dinov3-test") is spec
        register(spec)  # idempotent
        with pytest.raises(ValueError, match="already added"):
            register(parse_added_model(f"dinov3-test=timm/{EVA02}:MIM"))
        with pytest.raises(ValueError, match="taken by the registry"):
            register(ModelSpec(name="dino", title="x", family="contrastive", arch_family="timm", timm_arch="x"))
        backbone = load("dinov3-test", random_init=True, smoke=True, device="cpu")
        assert backbone.spec is spec and backbone.embed_dim == 64 and backbone.num_prefix_tokens == 5
    finally:
        unregister("dinov3-test")
    with pytest.raises(UnknownModelError):
        get_spec("dinov3-test")


def test_add_models_registers_texts_and_spec_files_together(tmp_path):
    from harness.models import add_models

    path = _write(tmp_path, f'[[model]]\nname = "eva-x"\nfamily = "MIM"\nsource = "timm/{EVA02}"\n')
    try:
        specs = add_models([f"dinov3-x=timm/{DINOV3}:contrastive"], [path])
        assert [s.name for s in specs] == ["dinov3-x", "eva-x"]
        assert get_spec("eva-x").family == "MIM" and get_spec("dinov3-x").num_prefix_tokens == 5
    finally:
        unregister("dinov3-x"), unregister("eva-x")
    with pytest.raises(SpecError, match="eva-x given more than once"):
        add_models([f"eva-x=timm/{EVA02}:MIM"], [path])
    with pytest.raises(UnknownModelError):  # nothing registered when one fails
        get_spec("eva-x")


def test_gsd_is_refused_for_models_without_a_gsd_encoding():
    with pytest.raises(ValueError, match="gsd is only for"):
        load(parse_added_model(f"x={REG4}:contrastive"), random_init=True, smoke=True, gsd=0.5)


def test_position_scheme_override_uses_the_official_offset_on_a_register_model(tmp_path):
    # DINOv2 (without registers)'s own convention, asked for on a no_embed_class table
    path = _write(tmp_path, f'[[model]]\nname = "r"\nfamily = "contrastive"\nsource = "{REG4}"\n'
                            f'grid_resize = "dino-offset"\n')
    backbone = load(load_model_specs(path)[0], random_init=True, smoke=True, device="cpu")
    module = backbone.module
    x = backbone.preprocess(_image())
    with torch.inference_mode():
        ours = backbone.patch_tokens(x, layers=[12])[12]
        patches = F.conv2d(x, module.patch_embed.proj.weight, module.patch_embed.proj.bias, stride=14)
        table = module.pos_embed.reshape(1, 37, 37, -1).permute(0, 3, 1, 2)
        table = F.interpolate(table, scale_factor=(16.1 / 37, 16.1 / 37), mode="bicubic", antialias=False)
        patches = patches.flatten(2).transpose(1, 2) + table.flatten(2).transpose(1, 2)
        tokens = torch.cat([module.cls_token, module.reg_token, patches], dim=1)
        for block in module.blocks:
            tokens = block(tokens)
        expected = module.norm(tokens)[:, 5:].reshape(1, 16, 16, -1)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ real architectures
@pytest.fixture(scope="module")
def backbones():
    """Each added model at full size, random init (seeded per name), built once."""
    built = {}
    for name, tag, family in (("dinov2-reg4", REG4, "contrastive"), ("dinov3", DINOV3, "contrastive"),
                              ("eva02-mim", EVA02, "MIM")):
        built[name] = load(parse_added_model(f"{name}={tag}:{family}"), random_init=True, device="cpu")
    return built


GRIDS = {"dinov2-reg4": (14, 16, 5), "dinov3": (16, 14, 5), "eva02-mim": (14, 16, 1)}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(GRIDS))
def test_added_backbones_expose_their_architecture(backbones, name):
    backbone = backbones[name]
    patch, grid, prefix = GRIDS[name]
    assert (backbone.patch_size, backbone.num_prefix_tokens) == (patch, prefix)
    assert (backbone.embed_dim, backbone.depth, backbone.num_heads) == (768, 12, 12)
    assert backbone.family == ("MIM" if name == "eva02-mim" else "contrastive")
    assert backbone.grid(224, 224) == (grid, grid) and backbone.gsd is None


@pytest.mark.slow
@pytest.mark.parametrize("name", list(GRIDS))
def test_patch_tokens_drop_every_prefix_token_and_apply_the_final_norm(backbones, name):
    backbone = backbones[name]
    module, (_, grid, prefix) = backbone.module, GRIDS[name]
    captured = {}
    hooks = [module.blocks[i - 1].register_forward_hook(lambda m, a, out, i=i: captured.__setitem__(i, out))
             for i in (1, 7, 12)]
    x = backbone.preprocess(_image())
    with torch.inference_mode():
        tokens = backbone.patch_tokens(x)
        again = backbone.patch_tokens(x, layers=[7])
        features = module.forward_features(x)  # timm's own path: blocks, then `norm`
    for hook in hooks:
        hook.remove()
    assert sorted(tokens) == list(range(1, 13))
    assert all(t.shape == (1, grid, grid, 768) for t in tokens.values())
    norm = module.fc_norm if name == "eva02-mim" else module.norm
    for layer in (1, 7, 12):
        raw = captured[layer]
        assert raw.shape[1] == prefix + grid * grid
        expected = norm(raw[:, prefix:]).reshape(1, grid, grid, 768)
        torch.testing.assert_close(tokens[layer], expected, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(tokens[layer], raw[:, prefix:].reshape(1, grid, grid, 768), atol=1e-3)
    # the last layer is timm's forward_features with the prefix tokens sliced off
    torch.testing.assert_close(tokens[12], norm(features[:, prefix:]).reshape(1, grid, grid, 768)
                               if name == "eva02-mim" else features[:, prefix:].reshape(1, grid, grid, 768))
    assert torch.equal(again[7], tokens[7])  # deterministic


@pytest.mark.slow
def test_dinov2_reg4_uses_the_official_register_interpolation(backbones):
    # Official DINOv2 with registers (interpolate_offset 0, antialias True): the 37x37 table
    # brought to 16x16 by bicubic to an explicit size with antialiasing; class token (its
    # position row folded in, as timm's conversion does), then 4 registers without position,
    # then the patches; the blocks; the final norm.
    backbone = backbones["dinov2-reg4"]
    module = backbone.module
    x = backbone.preprocess(_image())
    with torch.inference_mode():
        ours = backbone.patch_tokens(x, layers=[12])[12]
        patches = F.conv2d(x, module.patch_embed.proj.weight, module.patch_embed.proj.bias, stride=14)
        table = module.pos_embed.reshape(1, 37, 37, 768).permute(0, 3, 1, 2)
        table = F.interpolate(table, size=(16, 16), mode="bicubic", antialias=True)
        patches = patches.flatten(2).transpose(1, 2) + table.flatten(2).transpose(1, 2)
        tokens = torch.cat([module.cls_token, module.reg_token, patches], dim=1)
        for block in module.blocks:
            tokens = block(tokens)
        expected = module.norm(tokens)[:, 5:].reshape(1, 16, 16, 768)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def _perturbed_state(backbone) -> dict[str, torch.Tensor]:
    """The backbone's weights with constant-initialised vectors perturbed, so a parameter a
    faulty load left at its init would show."""
    generator = torch.Generator().manual_seed(7)
    state = {}
    for key, tensor in backbone.module.state_dict().items():
        tensor = tensor.clone()
        if tensor.is_floating_point() and tensor.ndim == 1:
            tensor += torch.randn(tensor.shape, generator=generator) * 0.1
        state[key] = tensor.contiguous()
    return state


@pytest.fixture(scope="module")
def reg4_file(backbones, tmp_path_factory):
    """DINOv2-reg4 weights as timm's hub repo holds them: model.safetensors (and the same as
    pytorch_model.bin), flat, with timm's own names."""
    state = _perturbed_state(backbones["dinov2-reg4"])
    folder = tmp_path_factory.mktemp("reg4")
    save_file(state, str(folder / "model.safetensors"))
    return state, folder


def _assert_loaded(backbone, state):
    got = backbone.module.state_dict()
    assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)


@pytest.mark.slow
def test_timm_format_file_loads_strictly_from_a_path(backbones, reg4_file, tmp_path):
    state, folder = reg4_file
    path = folder / "model.safetensors"
    loaded = load(parse_added_model(f"mine={REG4}@{path}:contrastive"), device="cpu")
    assert loaded.weights_id == str(path) and len(loaded.weights_digest) == 16
    _assert_loaded(loaded, state)
    x = loaded.preprocess(_image())
    source = backbones["dinov2-reg4"]
    with torch.inference_mode():
        ours = loaded.patch_tokens(x, layers=[12])[12]
        source.module.load_state_dict(state)
        expected = source.patch_tokens(x, layers=[12])[12]
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    # pytorch_model.bin through a TOML spec (relative path), with the classifier head a
    # supervised hub file would carry (dropped), loads the same weights
    torch.save(state | {"head.weight": torch.zeros(1000, 768), "head.bias": torch.zeros(1000)},
               tmp_path / "pytorch_model.bin")
    (tmp_path / "models.toml").write_text(
        f'[[model]]\nname = "mine-bin"\nfamily = "contrastive"\nfile = "pytorch_model.bin"\ntimm_arch = "{REG4}"\n')
    _assert_loaded(load(load_model_specs(tmp_path / "models.toml")[0], device="cpu"), state)


@pytest.mark.slow
def test_timm_format_file_with_wrong_keys_fails_naming_them(reg4_file, tmp_path):
    state, _ = reg4_file
    broken = {k: v for k, v in state.items() if k != "reg_token"} | {"register_tokens": state["reg_token"]}
    save_file(broken, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointKeyError) as err:
        load(parse_added_model(f"mine={REG4}@{tmp_path / 'model.safetensors'}:contrastive"), device="cpu")
    assert err.value.missing == ["reg_token"] and err.value.unexpected == ["register_tokens"]


@pytest.mark.slow
def test_timm_format_file_through_a_local_hub_cache(reg4_file, tmp_path):
    state, folder = reg4_file
    repo = tmp_path / "hf-hub" / f"models--timm--{REG4}"
    snapshot = repo / "snapshots" / "c0ffee"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c0ffee")
    (snapshot / "model.safetensors").symlink_to(folder / "model.safetensors")
    spec = parse_added_model(f"dinov2-reg4=hf-hub:timm/{REG4}:contrastive")
    loaded = load(spec, device="cpu")
    assert loaded.weights_id == f"hf-hub:timm/{REG4}" and len(loaded.weights_digest) == 16
    _assert_loaded(loaded, state)
    # the snapshot folder itself, its timm config.json naming the architecture
    (snapshot / "config.json").write_text(json.dumps({
        "architecture": "vit_base_patch14_reg4_dinov2", "num_classes": 0,
        "pretrained_cfg": {"tag": "lvd142m", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}))
    from_folder = parse_added_model(f"snap={snapshot}:contrastive")
    assert from_folder.timm_arch == "vit_base_patch14_reg4_dinov2" and from_folder.num_prefix_tokens == 5
    _assert_loaded(load(from_folder, device="cpu"), state)


def test_missing_file_of_an_added_model_names_it(tmp_path):
    from harness.models import WeightsNotAvailableError

    spec = parse_added_model(f"mine={REG4}@{tmp_path / 'model.safetensors'}:contrastive")
    with pytest.raises(WeightsNotAvailableError, match=r"model.safetensors \(named by the spec of model 'mine'\) does not exist"):
        load(spec, device="cpu")
    with pytest.raises(WeightsNotAvailableError, match=f"timm/{DINOV3}"):
        load(parse_added_model(f"dinov3=timm/{DINOV3}:contrastive"), device="cpu")
