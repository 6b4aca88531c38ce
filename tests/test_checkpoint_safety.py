"""Reading checkpoints never unpickles them in full: only the globals the official release
files hold (argparse.Namespace 'args', SimMIM's yacs 'config') are rebuilt; a file that
would run code is refused, naming the file and the global, and the code does not run."""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
from test_checkpoints import stand_in_yacs

from harness.models import ALLOWED_GLOBAL_NAMES, CheckpointError, read_checkpoint


class MakesDirectory:
    """Unpickling this calls os.makedirs(marker): the stand-in for any code a file could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


@pytest.fixture(autouse=True)
def no_global_allowlist_change():
    before = set(torch.serialization.get_safe_globals())
    yield
    assert set(torch.serialization.get_safe_globals()) == before


def _no_warnings(action):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return action()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_a_file_that_would_run_code_is_refused_and_the_code_never_runs(tmp_path, legacy):
    marker = tmp_path / "code-ran"
    path = tmp_path / "checkpoint.pth"
    content = {"model": {"cls_token": torch.zeros(1, 1, 8)}, "extra": MakesDirectory(marker)}
    torch.save(content, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError) as err:
        _no_warnings(lambda: read_checkpoint(path))
    message = str(err.value)
    assert str(path) in message and "os.makedirs" in message and "refused" in message
    assert not marker.exists()
    # control: a full unpickle of the same file runs the code (so the test can fail)
    torch.load(path, weights_only=False)
    assert marker.is_dir()


def test_random_bytes_give_one_clear_error_naming_the_file(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint") as err:
        _no_warnings(lambda: read_checkpoint(path))
    assert str(path) in str(err.value)
    tensors = tmp_path / "model.safetensors"
    tensors.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(CheckpointError, match="safetensors") as err:
        read_checkpoint(tensors)
    assert str(tensors) in str(err.value)


def test_a_truncated_archive_is_named(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save({"w": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert str(path) in str(err.value)


def test_training_checkpoint_with_argparse_args_loads(tmp_path):
    # DINO/iBOT/MAE/Scale-MAE training checkpoints pickle their argparse 'args'
    args = argparse.Namespace(arch="vit_base", lr=5e-4, patch_size=16, data_path="/data", out_dim=65536,
                              pred_ratio=[0.0, 0.3], use_fp16=True)
    path = tmp_path / "checkpoint.pth"
    torch.save({"teacher": {"backbone.cls_token": torch.ones(1, 1, 4)}, "epoch": 100, "args": args}, path)
    content = _no_warnings(lambda: read_checkpoint(path))
    assert isinstance(content["args"], argparse.Namespace) and vars(content["args"]) == vars(args)
    assert torch.equal(content["teacher"]["backbone.cls_token"], torch.ones(1, 1, 4))


def test_simmim_yacs_config_loads_as_a_plain_stand_in_without_yacs(tmp_path):
    path = tmp_path / "simmim.pth"
    with stand_in_yacs() as cfg_node:
        config = cfg_node({"MODEL": {"TYPE": "vit", "VIT": {"INIT_VALUES": 0.1, "USE_SHARED_RPB": True}},
                           "DATA": {"IMG_SIZE": 224, "MASK_RATIO": 0.6}})
        torch.save({"model": {"encoder.cls_token": torch.zeros(1, 1, 4)}, "config": config,
                    "max_accuracy": 0.0, "epoch": 799}, path)
    assert "yacs" not in sys.modules
    content = _no_warnings(lambda: read_checkpoint(path))
    assert "yacs" not in sys.modules  # rebuilt as the stand-in, nothing imported
    loaded = content["config"]
    assert type(loaded) is OrderedDict and type(loaded["MODEL"]["VIT"]) is OrderedDict
    assert loaded["MODEL"]["VIT"]["INIT_VALUES"] == 0.1 and loaded["DATA"]["IMG_SIZE"] == 224
    assert loaded.__dict__["__immutable__"] is True


def test_the_allowlist_is_exactly_what_the_official_files_hold(tmp_path):
    assert ALLOWED_GLOBAL_NAMES == ("argparse.Namespace", "yacs.config.CfgNode")
    path = tmp_path / "metrics.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "max_accuracy": np.float64(81.2)}, path)
    with pytest.raises(CheckpointError, match=r"numpy\._core\.multiarray\.scalar|numpy\.core\.multiarray\.scalar"):
        read_checkpoint(path)


def test_mae_full_checkpoint_is_readable_with_its_args(tmp_path):
    # mae_pretrain_vit_base_full.pth: {'model': encoder + decoder}, possibly with 'args'
    from harness.models import load

    source = load("mae", random_init=True, smoke=True, device="cpu")
    encoder = dict(source.module.state_dict())
    decoder = {"mask_token": torch.zeros(1, 1, 32), "decoder_embed.weight": torch.randn(32, 64),
               "decoder_pos_embed": torch.zeros(1, 197, 32), "decoder_blocks.0.norm1.weight": torch.ones(32),
               "decoder_norm.weight": torch.ones(32), "decoder_pred.weight": torch.randn(768, 32)}
    path = tmp_path / "mae_pretrain_vit_base_full.pth"
    torch.save({"model": encoder | decoder, "optimizer": {"state": {}, "param_groups": []}, "epoch": 1599,
                "args": argparse.Namespace(model="mae_vit_base_patch16", norm_pix_loss=True, mask_ratio=0.75)}, path)
    content = read_checkpoint(path)
    assert set(content["model"]) == set(encoder) | set(decoder)
    assert content["args"].norm_pix_loss is True
    # the encoder of the same file loads strictly through the registry format
    from harness.models.checkpoint import convert
    from harness.models.registry import REGISTRY

    state = convert(content, REGISTRY["mae"].checkpoint, str(path))
    assert set(state) == set(encoder)


def test_plain_pickles_are_refused_too(tmp_path):
    # not a torch.save file at all, but a pickle stream naming a callable
    path = tmp_path / "weights.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"w": MakesDirectory(tmp_path / "ran")}, handle, protocol=2)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert str(path) in str(err.value) and "os.makedirs" in str(err.value)
    assert not (tmp_path / "ran").exists()
