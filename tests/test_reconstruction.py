"""S4.8's MAE decoder: the official full-checkpoint format, strict loading, and the error."""

import numpy as np
import pytest
import torch

from harness.experiments import reconstruction
from harness.extract import ArrayView
from harness.models import load


@pytest.fixture(scope="module")
def full_checkpoint(tmp_path_factory):
    """A file in the layout of mae_pretrain_vit_base_full.pth: {'model': encoder + decoder}."""
    torch.manual_seed(0)
    decoder = reconstruction.MaeDecoder()
    with torch.no_grad():
        decoder.decoder_pos_embed.normal_()
    encoder = {"cls_token": torch.zeros(1, 1, 768), "blocks.0.norm1.weight": torch.ones(768)}
    path = tmp_path_factory.mktemp("mae") / reconstruction.FULL_CHECKPOINT
    torch.save({"model": {**encoder, **decoder.state_dict()}}, path)
    return path, decoder


def test_decoder_loads_strictly_from_the_full_checkpoint(full_checkpoint):
    path, original = full_checkpoint
    loaded = reconstruction.load_decoder(path)
    tokens = torch.randn(2, 197, 768)
    with torch.inference_mode():
        assert torch.equal(loaded(tokens), original.eval()(tokens))


def test_encoder_only_file_names_the_full_checkpoint(tmp_path):
    path = tmp_path / "mae_pretrain_vit_base.pth"
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 768)}}, path)
    with pytest.raises(ValueError, match="mae_pretrain_vit_base_full.pth"):
        reconstruction.load_decoder(path)


def test_renamed_decoder_key_is_named(full_checkpoint, tmp_path):
    path, decoder = full_checkpoint
    state = dict(decoder.state_dict())
    state["decoder_pred.weights"] = state.pop("decoder_pred.weight")
    bad = tmp_path / "renamed.pth"
    torch.save({"model": state}, bad)
    with pytest.raises(ValueError, match=r"decoder_pred\.weight.*decoder_pred\.weights"):
        reconstruction.load_decoder(bad)


def test_norm_pix_target_normalises_each_patch():
    images = torch.randn(2, 3, 32, 32) * 5 + 3
    target = reconstruction.norm_pix_target(images, 16)
    assert target.shape == (2, 4, 16 * 16 * 3)
    assert torch.allclose(target.mean(-1), torch.zeros(2, 4), atol=1e-5)
    assert torch.allclose(target.var(-1), torch.ones(2, 4), atol=1e-3)


def test_zeroing_features_changes_the_error_and_nothing_zeroed_is_the_baseline():
    backbone = load("mae", random_init=True, smoke=True)
    decoder = reconstruction.smoke_decoder(backbone.embed_dim, backbone.patch_size, 112, seed=0)
    rng = np.random.default_rng(0)
    view = ArrayView("recon-test", rng.integers(0, 255, (3, 112, 112, 3), dtype=np.uint8),
                     ["a", "b", "c"])
    none = reconstruction.reconstruction_errors(backbone, decoder, view, np.array([], dtype=int))
    again = reconstruction.reconstruction_errors(backbone, decoder, view, np.array([], dtype=int))
    zeroed = reconstruction.reconstruction_errors(backbone, decoder, view, np.arange(32))
    assert none.shape == (3,) and np.array_equal(none, again)
    assert not np.allclose(none, zeroed)
    rows = reconstruction.reconstruction_measurements("mae", backbone, decoder, view,
                                                      top=np.arange(16), seed=0)
    assert [r.params["zeroed"] for r in rows] == ["none", "top200", "random200"]
    assert rows[0].value == pytest.approx(float(none.mean()), rel=1e-6)
