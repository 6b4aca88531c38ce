"""S4.8 in MAE's masked protocol: the official decoder format and strict loading; MAE's
random masking (fixed seed, 25% visible); the encoder on the visible tokens only; the error
on the masked patches only; the rows (with a random tiny encoder and decoder)."""

import numpy as np
import pytest
import torch

from harness.experiments import reconstruction
from harness.extract import ArrayView
from harness.models import load

SIDE = 112  # smoke images: a 7 x 7 patch grid for patch 16


@pytest.fixture(scope="module")
def full_checkpoint(tmp_path_factory):
    """A file in the layout of mae_pretrain_vit_base_full.pth: {'model': encoder + decoder}."""
    torch.manual_seed(0)
    decoder = reconstruction.MaeDecoder()
    with torch.no_grad():
        decoder.decoder_pos_embed.normal_()
        decoder.mask_token.normal_()
    encoder = {"cls_token": torch.zeros(1, 1, 768), "blocks.0.norm1.weight": torch.ones(768)}
    path = tmp_path_factory.mktemp("mae") / reconstruction.FULL_CHECKPOINT
    torch.save({"model": {**encoder, **decoder.state_dict()}}, path)
    return path, decoder


@pytest.fixture(scope="module")
def mae():
    backbone = load("mae", random_init=True, smoke=True)
    decoder = reconstruction.smoke_decoder(backbone.embed_dim, backbone.patch_size, SIDE, seed=0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, SIDE, SIDE, 3), dtype=np.uint8)
    view = ArrayView("recon-test", images, ["im0#0", "im0#1", "im1#0", "im1#1"])
    return backbone, decoder, view


def test_decoder_loads_strictly_from_the_full_checkpoint(full_checkpoint):
    path, original = full_checkpoint
    loaded = reconstruction.load_decoder(path)
    latent = torch.randn(2, 1 + 49, 768)
    _, ids_restore, _ = reconstruction.random_masking(196, 0.75, seed=1)
    ids_restore = ids_restore.expand(2, -1)
    with torch.inference_mode():
        assert torch.equal(loaded(latent, ids_restore), original.eval()(latent, ids_restore))


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


# ---------------------------------------------------------------- MAE's masking
def test_random_masking_is_maes_fixed_seed_25_percent_visible():
    ids_keep, ids_restore, mask = reconstruction.random_masking(196, 0.75, seed=5)
    again = reconstruction.random_masking(196, 0.75, seed=5)
    other = reconstruction.random_masking(196, 0.75, seed=6)
    assert all(torch.equal(a, b) for a, b in zip((ids_keep, ids_restore, mask), again, strict=True))
    assert not torch.equal(mask, other[2])
    assert len(ids_keep) == 49 and mask.sum() == 147  # 25% of 196 visible
    assert (mask[ids_keep] == 0).all()  # the kept patches are the visible ones
    # ids_restore undoes the shuffle: kept tokens first, then the masked ones, back in order
    shuffled = torch.cat([ids_keep, torch.nonzero(mask).flatten()[torch.argsort(ids_restore[mask.bool()])]])
    assert torch.equal(shuffled[ids_restore], torch.arange(196))


def test_encoder_on_all_tokens_in_order_is_the_plain_forward(mae):
    backbone, _, view = mae
    x = backbone.preprocess(np.stack([view[0], view[1]]))
    with torch.inference_mode():
        everything = reconstruction.encode_visible(backbone.module, x, torch.arange(49).expand(2, -1))
        torch.testing.assert_close(everything, backbone.module.forward_features(x))
        _, ids_restore, mask = reconstruction.random_masking(49, 0.75, seed=0)
        ids_keep = torch.argsort(ids_restore)[: 12]
        visible = reconstruction.encode_visible(backbone.module, x, ids_keep.expand(2, -1))
    assert visible.shape == (2, 1 + 12, backbone.embed_dim)  # the class token and 12 of 49


class VisibleGarbage(torch.nn.Module):
    """The decoder, but with nonsense predicted for every visible patch."""

    def __init__(self, decoder, n_keep):
        super().__init__()
        self.decoder, self.n_keep = decoder, n_keep

    def forward(self, latent, ids_restore):
        pred = self.decoder(latent, ids_restore)
        visible = (ids_restore < self.n_keep)[..., None]
        return torch.where(visible, torch.full_like(pred, 1e3), pred)


def test_error_is_scored_on_the_masked_patches_only(mae):
    backbone, decoder, view = mae
    none = {"none": np.array([], dtype=np.int64)}
    masked = reconstruction.reconstruction_errors(backbone, decoder, view, none)["none"]
    garbage = reconstruction.reconstruction_errors(backbone, VisibleGarbage(decoder, 12), view, none)["none"]
    np.testing.assert_allclose(garbage[0], masked[0], rtol=1e-6)  # visible predictions do not count
    np.testing.assert_array_equal(masked[1], [37] * 4)  # 49 - 12 masked patches per image
    unmasked = reconstruction.reconstruction_errors(backbone, decoder, view, none, mask_ratio=None)["none"]
    np.testing.assert_array_equal(unmasked[1], [49] * 4)
    assert not np.allclose(unmasked[0] / unmasked[1], masked[0] / masked[1])
    again = reconstruction.reconstruction_errors(backbone, decoder, view, none, batch_size=3)["none"]
    np.testing.assert_allclose(again[0], masked[0], rtol=1e-5)  # the mask follows the tile, not the batch


def test_rows_zero_features_in_both_protocols_with_units_per_image(mae):
    backbone, decoder, tiles = mae

    class TwoImages:  # the four tiles as two images of two tiles each
        key, ids, source_index = tiles.key, tiles.ids, np.array([0, 0, 1, 1])

        def __len__(self):
            return len(tiles)

        def __getitem__(self, i):
            return tiles[i]

    rows = reconstruction.reconstruction_measurements("mae", backbone, decoder, TwoImages(),
                                                      top=np.arange(16), seed=0)
    keys = [(r.params["zeroed"], r.params.get("variant", "main")) for r in rows]
    assert keys == [(z, v) for v in ("main", "unmasked") for z in ("none", "top200", "random200")]
    by_key = dict(zip(keys, rows, strict=True))
    for row in rows:
        assert row.units.shape == (2, 2) and row.reducer == "ratio" and row.unit_group == "cityscapes/val"
        assert row.value == pytest.approx(row.units[:, 0].sum() / row.units[:, 1].sum())
    np.testing.assert_array_equal(by_key[("none", "main")].units[:, 1], [74, 74])
    assert by_key[("top200", "main")].value != by_key[("none", "main")].value  # zeroing changes it
