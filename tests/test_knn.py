"""Exact k-NN: equal to a float64 brute force, on easy and MAE-like data, in every stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import harness.probes.knn as knn_module
from harness.probes import knn_predict, knn_search
from harness.probes.knn import MissingClassWarning


def brute_force(base, query, k, exclude=None):
    """float64 reference: sum((q - b)^2), ties to the lowest index."""
    b64, q64 = np.asarray(base, np.float64), np.asarray(query, np.float64)
    dist = np.concatenate(
        [((q64[s : s + 16, None, :] - b64[None]) ** 2).sum(-1) for s in range(0, len(q64), 16)]
    ).reshape(len(q64), len(b64))
    if exclude is not None:
        dist[exclude[1][:, None] == exclude[0][None, :]] = np.inf
    index = np.broadcast_to(np.arange(len(base)), dist.shape)
    order = np.lexsort((index, dist), axis=-1)[:, :k]
    return np.take_along_axis(dist, order, -1), order


def mae_like(rng, n, dim=48, n_loud=4, loudness=100.0, offset=5.0, dtype=np.float32):
    """A few dimensions with 10^4 times the variance of the rest, plus a large mean offset."""
    scale = np.ones(dim)
    scale[:n_loud] = loudness
    centre = rng.normal(size=dim) * offset
    return lambda m: (rng.normal(size=(m, dim)) * scale + centre).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("loudness", [1.0, 100.0])
@pytest.mark.parametrize("k", [1, 4])
def test_matches_float64_brute_force(dtype, loudness, k):
    rng = np.random.default_rng(1)
    make = mae_like(rng, 0, loudness=loudness, dtype=dtype)
    base, query = make(1500), make(300)
    query[:10] = base[:10]  # exact hits: distance 0
    base[7] = base[8]  # a duplicate row: the tie must go to index 7
    query[10] = base[8]
    dist, idx = knn_search(base, query, k=k)
    ref_dist, ref_idx = brute_force(base, query, k)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)
    assert idx[10, 0] == 7 and (k == 1 or idx[10, 1] == 8)


def test_plain_float32_l2_is_not_exact_on_mae_like_data():
    """The reason for the re-rank: the GEMM form of L2 in float32 flips neighbours here."""
    import faiss

    rng = np.random.default_rng(2)
    make = mae_like(rng, 0, dim=768, loudness=300.0, offset=3000.0, dtype=np.float64)
    base = make(600)
    # Each query sits between two base rows that differ only slightly in quiet dimensions:
    # the true neighbour is clear in float64 but hidden under float32 rounding of ||x||^2.
    query = base[:200] + rng.normal(scale=0.3, size=(200, base.shape[1]))
    base[200:400] = base[:200] + rng.normal(scale=0.3, size=(200, base.shape[1]))
    base, query = base.astype(np.float32), query.astype(np.float32)
    _, ref = brute_force(base, query, 1)
    _, lossy = faiss.knn(query, base, 1)
    assert (lossy[:, 0] != ref[:, 0]).any()
    _, ours = knn_search(base, query, 1)
    np.testing.assert_array_equal(ours, ref)


def test_every_stage_alone_is_exact(monkeypatch):
    rng = np.random.default_rng(3)
    make = mae_like(rng, 0, loudness=100.0)
    base, query = make(1200), make(200)
    ref_dist, ref_idx = brute_force(base, query, 3)
    # Only the float64 last stage.
    monkeypatch.setattr(knn_module, "_stages", lambda base, dim, device: [])
    knn_module.STAGE_COUNTS.clear()
    dist, idx = knn_search(base, query, 3)
    assert knn_module.STAGE_COUNTS["float64"] == len(query)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)
    monkeypatch.undo()
    # Only faiss float32, then float64 for what it cannot prove.
    monkeypatch.setattr(knn_module, "_use_bf16", lambda: False)
    knn_module.STAGE_COUNTS.clear()
    dist, idx = knn_search(base, query, 3)
    assert knn_module.STAGE_COUNTS["faiss-float32"] > 0 and not knn_module.STAGE_COUNTS["bf16"]
    np.testing.assert_array_equal(idx, ref_idx)
    # bf16 first (forced, so CPUs without native bf16 test it too).
    monkeypatch.setattr(knn_module, "_use_bf16", lambda: True)
    knn_module.STAGE_COUNTS.clear()
    dist, idx = knn_search(base, query, 3)
    assert knn_module.STAGE_COUNTS["bf16"] > 0
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)


def test_gpu_code_path_wiring(monkeypatch):
    """faiss-gpu's GpuIndexFlatL2 stood in for by the CPU IndexFlatL2 (same add/search API)."""
    import faiss

    configs = []

    class Config:
        device = None

    def gpu_index(res, dim, config):
        configs.append(config.device)
        return faiss.IndexFlatL2(dim)

    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: object(), raising=False)
    monkeypatch.setattr(faiss, "GpuIndexFlatConfig", Config, raising=False)
    monkeypatch.setattr(faiss, "GpuIndexFlatL2", gpu_index, raising=False)
    monkeypatch.setattr(knn_module, "_faiss_gpus", lambda: 1)
    rng = np.random.default_rng(10)
    make = mae_like(rng, 0, loudness=100.0)
    base, query = make(1000), make(300)
    knn_module.STAGE_COUNTS.clear()
    dist, idx = knn_search(base, query, 2, chunk_size=128)
    assert knn_module.STAGE_COUNTS["faiss-gpu-float32"] > 0 and not knn_module.STAGE_COUNTS["bf16"]
    assert configs == [0]  # one index, on GPU 0, built once for every chunk
    ref_dist, ref_idx = brute_force(base, query, 2)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)


def _device_path_on_cpu(monkeypatch):
    """The CUDA path (torch GEMM stages, float64 re-rank on the device, numpy winners) run
    with CPU tensors: the same code, only the tensors' device differs."""
    monkeypatch.setattr(knn_module, "_stages",
                        lambda base, dim, device: knn_module._device_stages(base, dim, torch.device("cpu")))
    knn_module.STAGE_COUNTS.clear()


@pytest.mark.parametrize("loudness", [1.0, 100.0])
@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_device_path_matches_float64_brute_force(monkeypatch, loudness, dtype):
    _device_path_on_cpu(monkeypatch)
    monkeypatch.setattr(knn_module, "DEVICE_BLOCK_ROWS", 256)  # several blocks, as on a GPU
    rng = np.random.default_rng(11)
    make = mae_like(rng, 0, loudness=loudness, dtype=dtype)
    base, query = make(1500), make(300)
    query[:10] = base[:10]
    base[7] = base[8]  # an exact tie: index 7 wins
    query[10] = base[8]
    for k in (1, 3):
        dist, idx = knn_search(base, query, k=k, chunk_size=128)
        ref_dist, ref_idx = brute_force(base, query, k)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(dist, ref_dist)  # numpy's float64 sums, bit for bit
    counts = knn_module.STAGE_COUNTS
    assert counts["torch-cpu-bf16"] > 0 and counts["torch-cpu-bf16"] + counts["torch-cpu-float32"] \
        + counts["float64"] == 2 * len(query)
    assert not counts["bf16"] and not counts["faiss-float32"]


def test_device_path_float32_stage_proves_what_bf16_cannot(monkeypatch):
    """MAE-like data near base rows: the bf16 bound is too wide for many queries; the
    float32 GEMM stage (TF32 off on a GPU) proves them; and with groups excluded."""
    _device_path_on_cpu(monkeypatch)
    rng = np.random.default_rng(12)
    make = mae_like(rng, 0, dim=64, loudness=300.0, offset=50.0)
    base = make(2000)
    query = base[:200] + rng.normal(scale=0.3, size=(200, 64)).astype(np.float32)  # near-hits
    dist, idx = knn_search(base, query, 2)
    ref_dist, ref_idx = brute_force(base, query, 2)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)
    assert knn_module.STAGE_COUNTS["torch-cpu-float32"] > 0
    groups, query_groups = rng.integers(0, 20, len(base)), rng.integers(0, 20, len(query))
    dist, idx = knn_search(base, query, 2, exclude=(groups, query_groups))
    ref_dist, ref_idx = brute_force(base, query, 2, exclude=(groups, query_groups))
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)


def test_device_rerank_differences_are_settled_by_numpy(monkeypatch):
    """A device whose float64 sums differ from numpy's by a few ulps (another summation
    order) must not change the answer: near-ties are re-ranked by numpy."""
    _device_path_on_cpu(monkeypatch)
    real = knn_module._device_rerank
    rng = np.random.default_rng(13)

    def jittered(base, device):
        rerank = real(base, device)
        return lambda q, cand: rerank(q, cand) * (1 + rng.uniform(-4, 4, cand.shape) * 2.0**-53)

    monkeypatch.setattr(knn_module, "_device_rerank", jittered)
    base = rng.normal(size=(600, 32)).astype(np.float32)
    query = base[:100] + np.float32(1e-3)
    base[300:400] = base[:100]  # every query has two rows at the same distance: index order decides
    _, idx = knn_search(base, query, 1)
    np.testing.assert_array_equal(idx[:, 0], np.arange(100))


def test_search_device_follows_the_pinned_device(monkeypatch):
    from harness import devices

    monkeypatch.setattr(devices, "_pinned", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert knn_module.search_device() == torch.device("cpu")
    assert knn_module.search_device(2) == torch.device("cuda", 2)
    monkeypatch.setattr(devices, "_pinned", torch.device("cuda", 1))
    assert knn_module.search_device() == torch.device("cuda", 1)
    assert knn_module.search_device("cpu") == torch.device("cpu")


def test_cpu_path_runs_without_faiss(monkeypatch):
    """The GPU machine has no faiss unless carried: the CPU stages then skip faiss."""
    monkeypatch.setattr(knn_module, "_has_faiss", lambda: False)
    monkeypatch.setattr(knn_module, "_use_bf16", lambda: False)
    knn_module.STAGE_COUNTS.clear()
    rng = np.random.default_rng(14)
    base, query = rng.normal(size=(300, 8)), rng.normal(size=(40, 8))
    dist, idx = knn_search(base, query, 2, device="cpu")
    np.testing.assert_array_equal(idx, brute_force(base, query, 2)[1])
    assert knn_module.STAGE_COUNTS["float64"] == len(query)


def test_many_exact_ties_fall_through_and_stay_exact(monkeypatch):
    """More tied rows than candidates: the cheap stages cannot prove; float64 must."""
    rng = np.random.default_rng(4)
    base = rng.normal(size=(400, 16)).astype(np.float32)
    base[100:200] = base[100]  # 100 identical rows
    query = np.repeat(base[100:101], 5, axis=0) + np.float32(0)
    knn_module.STAGE_COUNTS.clear()
    dist, idx = knn_search(base, query, 2)
    np.testing.assert_array_equal(idx, [[100, 101]] * 5)
    assert knn_module.STAGE_COUNTS["float64"] == 5


def test_neighbours_crowded_into_one_block_stay_exact(monkeypatch):
    """The bf16 stage keeps few rows per block; crowding must not lose a neighbour."""
    rng = np.random.default_rng(8)
    base = rng.normal(size=(640, 16)).astype(np.float32)
    query = rng.normal(size=(40, 16)).astype(np.float32)
    base[64:128] = query[0] + rng.normal(scale=0.01, size=(64, 16))  # 64 near rows, one block
    monkeypatch.setattr(knn_module, "_use_bf16", lambda: True)
    monkeypatch.setattr(knn_module, "BASE_BLOCK_ROWS", 64)
    ref_dist, ref_idx = brute_force(base, query, 10)
    dist, idx = knn_search(base, query, 10)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)


def test_a_stage_that_breaks_its_bound_is_caught(monkeypatch):
    rng = np.random.default_rng(5)
    base, query = rng.normal(size=(500, 8)), rng.normal(size=(50, 8))
    ref_dist, ref_idx = brute_force(base, query, 1)

    def lying_search(q_centred, kk, per_block):  # far rows reported as near, at distance 0
        d = ((q_centred[:, None, :] - (base - base.mean(0))[None]) ** 2).sum(-1)
        idx = np.argsort(-d, axis=1)[:, :kk]
        return np.zeros(idx.shape), idx, np.full(len(idx), np.inf)

    liar = knn_module._Stage("liar", lying_search, lambda qn, b: np.zeros_like(qn))
    monkeypatch.setattr(knn_module, "_stages", lambda base, dim, device: [liar])
    with pytest.warns(RuntimeWarning, match="exceeded its error bound"):
        dist, idx = knn_search(base, query, 1)
    np.testing.assert_array_equal(idx, ref_idx)


def test_chunking_and_exclusion_match_reference():
    rng = np.random.default_rng(6)
    make = mae_like(rng, 0, loudness=30.0)
    base, query = make(900), make(120)
    base_groups = rng.integers(0, 12, len(base))
    query_groups = rng.integers(0, 12, len(query))
    query[:12] = base[:12]  # its own copy is in the base but may be excluded
    query_groups[:12] = base_groups[:12]
    whole = knn_search(base, query, 2, exclude=(base_groups, query_groups))
    tiny = knn_search(base, query, 2, exclude=(base_groups, query_groups), chunk_size=7)
    ref = brute_force(base, query, 2, exclude=(base_groups, query_groups))
    for got in (whole, tiny):
        np.testing.assert_array_equal(got[1], ref[1])
        np.testing.assert_array_equal(got[0], ref[0])
    assert not np.any(base_groups[whole[1]] == query_groups[:, None])
    # Without exclusion the planted copies are found at distance 0.
    _, plain = knn_search(base, query, 1)
    np.testing.assert_array_equal(plain[:12, 0], np.arange(12))


def test_small_base_with_exclusion_returns_fewer_candidates_than_asked():
    rng = np.random.default_rng(9)
    base, query = rng.normal(size=(128, 12)), rng.normal(size=(64, 12))
    groups = np.repeat(np.arange(8), 16)
    exclude = (groups, groups[:64])
    np.testing.assert_array_equal(knn_search(base, query, 1, exclude=exclude)[1], brute_force(base, query, 1, exclude)[1])


def test_knn_predict_k1_and_vote():
    train_x = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]], dtype=np.float32)
    train_y = np.array([0, 1, 1, 2, 2])
    query = np.array([[0.1], [1.6], [10.4], [5.0]], dtype=np.float32)
    np.testing.assert_array_equal(knn_predict(train_x, train_y, query), [0, 1, 2, 1])
    # k=3 at 0.1: neighbours 0 (label 0), 1, 2 (label 1) -> majority 1.
    assert knn_predict(train_x, train_y, query[:1], k=3)[0] == 1
    # k=2 at 0.4: one vote each; the nearest (label 0) wins the tie.
    assert knn_predict(train_x, train_y, np.array([[0.4]], np.float32), k=2)[0] == 0
    assert knn_predict(train_x, train_y, np.array([[0.6]], np.float32), k=2)[0] == 1


def test_majority_vote_against_a_loop():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, size=(300, 5))
    got = knn_module._majority_vote(labels)
    for row, g in zip(labels, got, strict=True):
        counts = np.bincount(row, minlength=3)
        winners = np.flatnonzero(counts == counts.max())
        expect = min(winners, key=lambda c: int(np.argmax(row == c)))
        assert g == expect


def test_bad_inputs_have_clear_errors():
    x = np.zeros((5, 3), np.float32)
    with pytest.raises(ValueError, match="train_y has 4 labels"):
        knn_predict(x, np.arange(4), x)
    with pytest.raises(ValueError, match="base_x is empty"):
        knn_search(np.zeros((0, 3), np.float32), x)
    with pytest.raises(ValueError, match="same width"):
        knn_search(x, np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"reshape patch grids"):
        knn_search(np.zeros((2, 2, 2, 3), np.float32), x)
    bad = x.copy()
    bad[1, 0], bad[3, 2] = np.nan, np.inf
    with pytest.raises(ValueError, match="query_x has 2 rows containing NaN or inf"):
        knn_search(x, bad)
    with pytest.raises(ValueError, match="k must be"):
        knn_search(x, x, k=6)
    with pytest.raises(ValueError, match="fewer than k=1 base rows outside its group"):
        knn_search(x, x, exclude=(np.zeros(5, int), np.zeros(5, int)))
    with pytest.warns(MissingClassWarning, match=r"classes \[2\]"):
        knn_predict(x, np.array([0, 1, 0, 1, 3]), x, num_classes=4)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_centring_on_the_device_rounds_as_on_the_cpu(dtype):
    """The GPU builds its search copies from the rows it holds: the same float32 values."""
    rng = np.random.default_rng(15)
    raw = (rng.normal(size=(300, 24)) * 50 + 7).astype(dtype)
    base = knn_module._Base.prepare(raw, None, with_bf16=False)
    cpu = torch.device("cpu")
    np.testing.assert_array_equal(base._centred32_on(cpu, 10, 200, from_rows=True).numpy(),
                                  base.centred32(10, 200).numpy())
