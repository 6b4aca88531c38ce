"""The extraction core on small random-init models: values equal the backbone's own
tokens, the store is used, bad input and non-finite tokens fail with clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness import extract
from harness.extract import ArrayView, ImageView, NonFiniteEmbeddingError, embeddings
from harness.models import load
from harness.store import EmbeddingStore, array_crc32


@pytest.fixture(scope="module")
def dino():
    return load("dino", random_init=True, smoke=True, device="cpu")


def _view(n=7, height=224, width=224, key="tiles-a", seed=0) -> ArrayView:
    images = np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)
    return ArrayView(key, images, [f"img-{i}" for i in range(n)])


def test_array_view_is_an_image_view_and_validates():
    view = _view(2)
    assert isinstance(view, ImageView) and len(view) == 2 and view[1].shape == (224, 224, 3)
    with pytest.raises(ValueError, match="2 ids for 3 images"):
        ArrayView("k", np.zeros((3, 8, 8, 3), np.uint8), ["a", "b"])
    with pytest.raises(ValueError, match="uint8"):
        ArrayView("k", np.zeros((1, 8, 8, 3), np.float32), ["a"])
    with pytest.raises(ValueError, match="one size"):
        ArrayView("k", [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 16, 3), np.uint8)], ["a", "b"])
    with pytest.raises(ValueError, match="not unique"):
        ArrayView("k", np.zeros((2, 8, 8, 3), np.uint8), ["a", "a"])


def test_embeddings_equal_the_backbones_tokens_and_are_cached(dino, tmp_path):
    view, store = _view(), EmbeddingStore(tmp_path)
    arrays = embeddings(dino, view, store, layers=[3, 12], batch_size=3, progress=False)
    assert sorted(arrays) == [3, 12]
    with torch.inference_mode():
        reference = dino.patch_tokens(dino.preprocess(np.stack([view[i] for i in range(7)])), [3, 12])
    for layer in (3, 12):
        assert arrays[layer].shape == (7, 14, 14, 64) and arrays[layer].dtype == np.float16
        assert not arrays[layer].flags.writeable
        np.testing.assert_allclose(arrays[layer], reference[layer].numpy(), rtol=2e-3, atol=2e-3)
    again = embeddings(dino, view, store, layers=[3, 12], progress=False)
    np.testing.assert_array_equal(again[12], arrays[12])
    builds = (tmp_path / "builds.jsonl").read_text().splitlines()
    assert len(builds) == 1 and json.loads(builds[0])["device"].startswith("cpu")


def test_default_layers_are_all_blocks_and_video_frames_work(dino, tmp_path):
    arrays = embeddings(dino, _view(2, 336, 560, key="frames"), EmbeddingStore(tmp_path), progress=False)
    assert sorted(arrays) == list(range(1, 13))
    assert arrays[7].shape == (2, 21, 35, 64)


def test_store_key_separates_views_and_weights(dino, tmp_path):
    store = EmbeddingStore(tmp_path)
    a = embeddings(dino, _view(2, key="a", seed=1), store, layers=[12], progress=False)
    b = embeddings(dino, _view(2, key="b", seed=2), store, layers=[12], progress=False)
    other = load("ibot", random_init=True, smoke=True, device="cpu")
    c = embeddings(other, _view(2, key="a", seed=1), store, layers=[12], progress=False)
    assert not np.array_equal(a[12], b[12]) and not np.array_equal(a[12], c[12])
    assert len((tmp_path / "builds.jsonl").read_text().splitlines()) == 3


def test_non_finite_tokens_name_model_layer_and_sample(dino, tmp_path, monkeypatch):
    original = dino.patch_tokens
    calls = []

    def poisoned(x, layers=None):
        tokens = original(x, layers)
        calls.append(x.shape[0])
        if len(calls) == 2:  # the second batch of 3: sample img-4 is its second image
            tokens[5] = tokens[5].clone()
            tokens[5][1, 2, 3, 0] = float("nan")
        return tokens

    monkeypatch.setattr(dino, "patch_tokens", poisoned)
    with pytest.raises(NonFiniteEmbeddingError) as err:
        embeddings(dino, _view(6, key="nan"), EmbeddingStore(tmp_path), layers=[5, 9],
                   batch_size=3, progress=False)
    assert isinstance(err.value, ValueError)
    assert (err.value.model, err.value.layer, err.value.sample_id) == ("dino", 5, "img-4")
    for text in ("'dino'", "layer 5", "'img-4'"):
        assert text in str(err.value)
    assert EmbeddingStore(tmp_path).read(_entry(dino, "nan"), [5, 9], (6, 14, 14, 64)) is None


def _entry(backbone, view_key):
    from harness.store import EntryKey

    return EntryKey(backbone.name, backbone.weights_digest, view_key, (224, 224))


def test_float16_overflow_is_non_finite(dino, tmp_path, monkeypatch):
    original = dino.patch_tokens
    monkeypatch.setattr(dino, "patch_tokens",
                        lambda x, layers=None: {k: v * 1e6 for k, v in original(x, layers).items()})
    with pytest.raises(NonFiniteEmbeddingError, match="sample 'img-0'"):
        embeddings(dino, _view(2, key="big"), EmbeddingStore(tmp_path), layers=[12], progress=False)


def test_bad_views_are_rejected(dino, tmp_path):
    store = EmbeddingStore(tmp_path)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        embeddings(dino, _view(1, 200, 200), store, progress=False)

    class ShiftingView:  # image sizes change half-way
        key, ids = "shifting", ["a", "b", "c"]

        def __len__(self):
            return 3

        def __getitem__(self, i):
            return np.zeros((224 if i < 2 else 240, 224, 3), np.uint8)

    with pytest.raises(ValueError, match="images 2..2"):
        embeddings(dino, ShiftingView(), store, layers=[1], batch_size=2, progress=False)
    assert store.read(_entry(dino, "shifting"), [1], (3, 14, 14, 64)) is None


def test_threads_are_shared_among_xdist_workers(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)
    try:
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
        assert extract.set_torch_threads() == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "16")
        assert extract.set_torch_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_cpu_batch_size(dino):
    assert extract.choose_batch_size(dino, (224, 224)) == extract.CPU_BATCH


# ------------------------------------------------------------------------- precision
def test_precisions_are_separate_entries(dino, tmp_path, monkeypatch):
    from harness import devices

    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)  # emulated if need be
    store, view = EmbeddingStore(tmp_path), _view(4, key="prec")
    fp32 = embeddings(dino, view, store, layers=[12], progress=False)
    bf16 = embeddings(dino, view, store, layers=[12], progress=False, precision="bf16")
    assert [b["key"]["precision"] for b in store.builds()] == ["fp32", "bf16"]
    assert not np.array_equal(fp32[12], bf16[12])  # bf16 arithmetic really ran
    np.testing.assert_allclose(bf16[12], fp32[12], atol=0.1)
    assert embeddings(dino, view, store, layers=[12], progress=False, precision="bf16")[12].filename == bf16[12].filename
    assert len(store.builds()) == 2


def test_bf16_without_native_support_is_refused_before_any_work(dino, tmp_path, monkeypatch):
    from harness import devices

    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    store = EmbeddingStore(tmp_path)
    with pytest.raises(devices.PrecisionUnavailable, match="lacks"):
        embeddings(dino, _view(2), store, layers=[12], progress=False, precision="bf16")
    assert store.builds() == [] and not (tmp_path / "dino").exists()


# ------------------------------------------------------------------------- the GPU pipeline
def test_pipelined_extraction_writes_what_the_plain_loop_writes(dino):
    """The GPU path's pipeline (float16 on the device, two host slots, a writer thread) run
    on the CPU: the same bytes as the plain loop, with a short last batch."""
    view = _view(7, key="pipe")
    shape = (7, 14, 14, 64)
    plain = {layer: np.zeros(shape, np.float16) for layer in (2, 12)}
    piped = {layer: np.zeros(shape, np.float16) for layer in (2, 12)}
    assert extract.extract_into(dino, view, plain, batch_size=3, progress=False, pipelined=False) is None
    crcs = extract.extract_into(dino, view, piped, batch_size=3, progress=False, pipelined=True)
    for layer in (2, 12):
        assert np.abs(plain[layer]).max() > 0
        np.testing.assert_array_equal(piped[layer], plain[layer])
        assert crcs[layer] == array_crc32(plain[layer])  # extended batch by batch, in order


def test_pipelined_extraction_names_a_non_finite_sample(dino, monkeypatch):
    original = dino.patch_tokens
    calls = []

    def poisoned(x, layers=None):
        tokens = original(x, layers)
        calls.append(x.shape[0])
        if len(calls) == 3:  # the third batch of 2: sample img-5 is its second image
            tokens[12] = tokens[12].clone()
            tokens[12][1, 0, 0, 0] = float("inf")
        return tokens

    monkeypatch.setattr(dino, "patch_tokens", poisoned)
    outputs = {12: np.zeros((7, 14, 14, 64), np.float16)}
    with pytest.raises(NonFiniteEmbeddingError) as err:
        extract.extract_into(dino, _view(7), outputs, batch_size=2, progress=False, pipelined=True)
    assert (err.value.layer, err.value.sample_id, err.value.index) == (12, "img-5", 5)


def test_store_entry_and_is_stored(dino, tmp_path):
    store, view = EmbeddingStore(tmp_path), _view(3, key="probe")
    entry = extract.store_entry(dino, view, [3, 12], precision="fp32")
    assert entry.shape == (3, 14, 14, 64) and entry.layers == [3, 12] and entry.key.view_key == "probe"
    assert not extract.is_stored(dino, view, store, [3, 12])
    embeddings(dino, view, store, layers=[3, 12], progress=False)
    assert extract.is_stored(dino, view, store, [3, 12]) and not extract.is_stored(dino, view, store, [4])
