"""Exact k-nearest-neighbour search and k-NN classification (squared L2 distance).

"Exact" means: the returned neighbours are the k base rows with the smallest float64
distance sum((q - b) ** 2) (numpy, evaluated on the input values converted to float64),
ties broken by the lowest base index. This is what a float64 brute force returns.

How it stays exact while the heavy lifting runs in low precision
-----------------------------------------------------------------
Each query goes through a cascade of stages until one can *prove* it found the answer:

1. candidates: a fast, lossy search returns k' > k candidates with approximate distances
   d~ (bf16 GEMM with float32 accumulation on CPUs with native bf16 dot products; faiss
   float32 `knn` on other CPUs; on a CUDA device a torch bf16 GEMM, then faiss-gpu where it
   is installed and sees that GPU, else a torch float32 GEMM with TF32 off). The data are
   centred on the base mean (rounded to float32) first, which shrinks the norms the error
   scales with.
2. a rigorous error bound E(q) >= |d~ - d| for every base row, from floating-point error
   analysis of ||q||^2 + ||b||^2 - 2<q, b> (E grows with (||q|| + max ||b||)^2 and the unit
   roundoff of the stage; see `_Stage`).
3. exact re-ranking of the candidates in float64 and a proof: let m~ be the k-th smallest
   d~ among the allowed candidates. The true k-th distance is <= m~ + E, so every true
   top-k row has d~ <= m~ + 2E. Each stage also returns a floor under the d~ of every row
   it did not return (faiss: the k'-th candidate's d~; bf16, which keeps only k + 7 rows per
   base block: the worst kept score of any block that was cut). If the floor exceeds
   m~ + 2E, no row left out can be in the top k: the answer is exact. Otherwise (MAE-like data: a few huge dimensions blow up E; or many near-ties)
   the query falls through to the next, more precise stage. The last stage is float64
   with a float64 bound that keeps *all* rows within the window, so it always proves.
   As a guard against a library whose arithmetic is less precise than assumed, the
   observed |d~ - d| of every re-ranked candidate is checked against E; a violation sends
   the whole chunk to the next stage (with a warning).

On a CUDA device (`device=`, else the process's pinned device, harness.devices) the base
is held on the GPU (its rows as given, plus a bf16 copy, and a float32 one only if a query
falls through to it), and the float64 re-rank of the candidates runs there too. Its float64
sums may differ from numpy's in the last bits (another summation order), so each query's
winners are taken from the candidates within a relative 3 (D + 2) 2^-52 of its k-th re-ranked
distance, re-ranked once more on the CPU by numpy: the labels and distances are exactly the
CPU path's. The float64 last stage runs on the CPU.

Memory: queries are processed in chunks of `chunk_size` rows (default 4096), so the
per-chunk buffers do not grow with the number of queries: the bf16 GEMM output is
chunk x BASE_BLOCK_ROWS (4096 x 8192 x 2 B = 64 MiB) at a time, the float64 re-rank
gathers at most RERANK_BYTES (64 MiB) per batch, and the float64 last stage works on
chunk x FP64_BLOCK_ROWS blocks (128 MiB). The base is held once in bf16 (N x 800 x 2 B)
and, only if some query falls through to it, once in float32 for faiss (N x D x 4 B):
500,000 x 500,000 x 768 needs about 2.4 GiB besides the inputs (float16 memmaps are read
block by block, never converted whole).
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from harness import devices
from harness.probes._validate import as_feature_matrix, as_labels, check_finite

BASE_BLOCK_ROWS = 8192  # bf16 stage: base rows per GEMM block (output chunk x 8192 bf16)
FP64_BLOCK_ROWS = 4096  # float64 stage: base rows per block
RERANK_BYTES = 64 * 2**20  # float64 gather budget for one re-rank batch
DEFAULT_CHUNK = 4096
PREP_ROWS = 65536  # base rows centred / converted at a time
PER_BLOCK_EXTRA = 7  # bf16 stage keeps k + 7 (+ the largest excluded group) rows per block
EXTRA_CANDIDATES = 31  # k' = k + 31 (+ the largest excluded group): ~99.7% proven at bf16
DEVICE_BLOCK_ROWS = 32768  # torch stages on a GPU: base rows per GEMM block (fewer launches)
DEVICE_RERANK_BYTES = 1 << 30  # float64 gather budget of one re-rank batch on a GPU


# How many queries each stage has settled since import (diagnostics for tests/benchmarks).
STAGE_COUNTS: Counter[str] = Counter()


class MissingClassWarning(UserWarning):
    """A class that should exist has no training example, so it can never be predicted."""


def _cpu_has_native_bf16() -> bool:
    """bf16 GEMM is only fast (and only then worth it) with avx512_bf16 / AMX dot products."""
    return devices.cpu_has_native_bf16()


def _has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _faiss_gpus() -> int:
    """GPUs faiss sees (0 with faiss-cpu, or without faiss: the GPU machine may lack it)."""
    if not _has_faiss():
        return 0
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


@dataclass
class _Base:
    """The base set: caller's rows, the centre, and lazily built search copies.

    The centre is the base mean rounded to float32: any constant centre leaves distances
    unchanged, and a float32 one makes b - centre a single float32 rounding (relative error
    <= 2^-24), which the stage bounds already allow for.
    """

    raw: np.ndarray  # the caller's array (any float dtype, may be a memmap)
    centre: np.ndarray  # float32 [D]
    max_norm: float  # an upper bound of max ||b - centre||
    groups: np.ndarray | None
    _f32: np.ndarray | None = None
    _bf16_aug: torch.Tensor | None = None
    _on_device: dict = field(default_factory=dict)  # (what, device, dtype) -> tensor

    @classmethod
    def prepare(cls, raw: np.ndarray, groups: np.ndarray | None, with_bf16: bool) -> _Base:
        """Mean in one pass; the max centred norm (and the bf16 copy) in a second."""
        total = np.zeros(raw.shape[1], dtype=np.float64)
        for s in range(0, raw.shape[0], PREP_ROWS):
            total += raw[s : s + PREP_ROWS].sum(0, dtype=np.float64)
        centre = (total / raw.shape[0]).astype(np.float32)
        base = cls(raw=raw, centre=centre, max_norm=0.0, groups=groups)
        dim = raw.shape[1]
        if with_bf16:
            base._bf16_aug = torch.zeros((base.n, -(-(dim + 1) // 32) * 32), dtype=torch.bfloat16)
        max_norm2 = 0.0
        for s in range(0, base.n, PREP_ROWS):
            block = base.centred32(s, s + PREP_ROWS)
            norms2 = (block * block).sum(1)  # float32: relative error <= gamma_D
            max_norm2 = max(max_norm2, float(norms2.max()))
            if with_bf16:
                # Rows (b, -||b||^2/2, 0...): a GEMM with (q, 1, 0...) gives <q,b> - ||b||^2/2.
                # The width is rounded up to a multiple of 32: oneDNN's bf16 GEMM is several
                # times slower on odd widths, and zero columns add nothing to the sums.
                base._bf16_aug[s : s + PREP_ROWS, :dim] = block
                base._bf16_aug[s : s + PREP_ROWS, dim] = -0.5 * norms2
        # Undo the float32 norm and centring errors generously so max_norm is an upper bound.
        base.max_norm = float(np.sqrt(max_norm2 * (1 + 2 * (dim + 2) * 2.0**-24))) * (1 + 2.0**-20)
        return base

    @property
    def n(self) -> int:
        return self.raw.shape[0]

    def centred32(self, start: int, stop: int) -> torch.Tensor:
        block = np.asarray(self.raw[start:stop])
        if block.dtype == np.float64:
            return torch.from_numpy(block - self.centre.astype(np.float64)).float()
        return torch.from_numpy(block).float() - torch.from_numpy(self.centre)

    def centred64(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.raw[start:stop], dtype=np.float64) - self.centre.astype(np.float64)

    def f32(self) -> np.ndarray:
        if self._f32 is None:
            out = np.empty(self.raw.shape, dtype=np.float32)
            for s in range(0, self.n, PREP_ROWS):
                out[s : s + PREP_ROWS] = self.centred32(s, s + PREP_ROWS).numpy()
            self._f32 = out
        return self._f32

    def bf16_aug(self) -> torch.Tensor:
        assert self._bf16_aug is not None, "prepare(with_bf16=True) builds the bf16 copy"
        return self._bf16_aug

    def aug(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Rows (b, -||b||^2/2, 0...) in `dtype` on `device` (see prepare), built on first use."""
        if device.type == "cpu" and dtype == torch.bfloat16 and self._bf16_aug is not None:
            return self._bf16_aug
        key = ("aug", str(device), dtype)
        if key not in self._on_device:
            dim = self.raw.shape[1]
            out = torch.zeros((self.n, -(-(dim + 1) // 32) * 32), dtype=dtype, device=device)
            for s in range(0, self.n, PREP_ROWS):
                block = self._centred32_on(device, s, s + PREP_ROWS)
                out[s : s + PREP_ROWS, :dim] = block
                out[s : s + PREP_ROWS, dim] = -0.5 * (block * block).sum(1)
            self._on_device[key] = out
        return self._on_device[key]

    def _centred32_on(self, device: torch.device, start: int, stop: int, from_rows: bool | None = None) -> torch.Tensor:
        """`centred32` computed on `device` from the rows held there (the same float32
        roundings: one subtraction, or a float64 one rounded once for float64 rows);
        from_rows: default on any device but the CPU."""
        if not (device.type != "cpu" if from_rows is None else from_rows):
            return self.centred32(start, stop)
        rows = self.rows_on(device)[start:stop]
        centre = torch.from_numpy(self.centre).to(device)
        if rows.dtype == torch.float64:
            return (rows - centre.double()).float()
        return rows.float() - centre

    def rows_on(self, device: torch.device) -> torch.Tensor:
        """The caller's rows, in their own dtype, on `device` (for the float64 re-rank)."""
        key = ("raw", str(device), self.raw.dtype)
        if key not in self._on_device:
            out = torch.empty(self.raw.shape, dtype=_TORCH_DTYPES[self.raw.dtype], device=device)
            for s in range(0, self.n, PREP_ROWS):
                out[s : s + PREP_ROWS] = torch.from_numpy(np.array(self.raw[s : s + PREP_ROWS])).to(device)
            self._on_device[key] = out
        return self._on_device[key]


_TORCH_DTYPES = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32,
                 np.dtype(np.float64): torch.float64}


@dataclass(frozen=True)
class _Stage:
    """A candidate generator and a rigorous bound on the error of its distances.

    `bound(qnorm, B)` bounds |d~ - d| for a centred query of norm qnorm against every base
    row (all of norm <= B), with u the unit roundoff and gamma_n = n u / (1 - n u):
    - float32 (faiss, d~ = ||q||^2 + ||b||^2 - 2<q,b>): norms and the dot product carry at
      most gamma_D relative to ||q||^2, ||b||^2, ||q||*||b||; the two additions and the
      rounding of the inputs to float32 add 4u: (D + 12) u (||q|| + B)^2, with a 1% margin.
    - bf16 (score = <q,b> - ||b||^2/2 from one GEMM of (q, 1) and (b, -||b||^2/2), exact
      bf16 products, float32 accumulation, bf16 output; d~ = ||q||^2 - 2 score):
      rounding q and b costs 2u_b ||q|| B, the last column (a float32 norm, then rounded)
      (u_b + gamma_D) B^2/2, the float32 sum gamma_(D+1) (||q|| B + B^2/2) and the output u_b (||q|| B + B^2/2); doubled for
      the factor 2 in d~, with u_b = 2^-9 (plus double rounding via float32) and margins.
    """

    name: str
    # search(centred queries, k', rows kept per base block) -> (approx, cand, floor): the
    # k' candidates by approximate distance and a floor under the d~ of every other row.
    search: Callable[[np.ndarray, int, int], SearchResult]
    bound: Callable[[np.ndarray, float], np.ndarray]
    # rerank(raw queries, candidates [n, w]) -> float64 distances on another device (whose
    # sums may differ from numpy's in the last bits); None: numpy's, on the CPU.
    rerank: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None


def _float32_bound(dim: int) -> Callable[[np.ndarray, float], np.ndarray]:
    rel = (dim + 12) * 2.0**-24 * 1.01
    return lambda qnorm, b: rel * (qnorm + b) ** 2


def _bf16_bound(dim: int) -> Callable[[np.ndarray, float], np.ndarray]:
    return _gemm_bound(dim, 2.0**-9 * (1 + 2.0**-14))


def _gemm_bound(dim: int, u_in: float) -> Callable[[np.ndarray, float], np.ndarray]:
    """The augmented GEMM's bound (see `_Stage`) for inputs and output rounded with unit
    roundoff u_in (bf16: 2^-9; float32: 2^-24) and float32 accumulation. With float32
    inputs the products are rounded too, which gamma_(D+1) already allows for."""
    gamma = (dim + 13) * 2.0**-24 * 1.01
    return lambda qnorm, b: 2 * (
        (3.02 * u_in + 1.01 * gamma) * qnorm * b + (2.02 * u_in + 2.02 * gamma) * b * b / 2
    )


FLOAT32_U = 2.0**-24 * (1 + 2.0**-20)


def _rerank_slack(dim: int) -> float:
    """Relative difference two float64 evaluations of sum((q - b)^2) may have (each within
    gamma_(D+1) of the exact sum of the float64 inputs, in any summation order)."""
    return 2.02 * (dim + 2) * 2.0**-53


SearchResult = tuple[np.ndarray, np.ndarray, np.ndarray]  # approx [n, kk], cand [n, kk], floor [n]


def _bf16_search(base: _Base) -> Callable[[np.ndarray, int, int], SearchResult]:
    return _gemm_search(base, torch.device("cpu"), torch.bfloat16, BASE_BLOCK_ROWS)


def _gemm_search(base: _Base, device: torch.device, dtype: torch.dtype,
                 block_rows: int) -> Callable[[np.ndarray, int, int], SearchResult]:
    """Scores <q,b> - ||b||^2/2 by one `dtype` GEMM per base block on `device`, the
    `per_block` best of each block kept, then the k' best of those."""

    def search(q_centred: np.ndarray, kk: int, per_block: int) -> SearchResult:
        with _exact_gemm(device):
            b_aug = base.aug(device, dtype)
            n, dim = q_centred.shape
            q_aug = torch.zeros((n, b_aug.shape[1]), dtype=dtype, device=device)
            q_aug[:, :dim] = torch.from_numpy(q_centred).to(device)
            q_aug[:, dim] = 1.0
            values, indices = [], []
            # Highest score of any row left out so far: every such row has d~ >= qn - 2 * it.
            left_out = torch.full((n,), -torch.inf, device=device)
            for s in range(0, base.n, block_rows):
                scores = q_aug @ b_aug[s : s + block_rows].T  # <q,b> - ||b||^2/2, larger = nearer
                take = min(per_block, scores.shape[1])
                v, i = torch.topk(scores, take, dim=1)
                v = v.float()
                if take < scores.shape[1]:
                    left_out = torch.maximum(left_out, v[:, -1])
                values.append(v)
                indices.append(i + s)
                del scores
            all_v, all_i = torch.cat(values, 1), torch.cat(indices, 1)
            take = min(kk, all_v.shape[1])
            v, pos = torch.topk(all_v, take, dim=1)
            if take < all_v.shape[1]:
                left_out = torch.maximum(left_out, v[:, -1])
            idx = torch.gather(all_i, 1, pos)
            v, idx, left_out = v.double().cpu().numpy(), idx.cpu().numpy(), left_out.double().cpu().numpy()
        qn = np.einsum("ij,ij->i", q_centred, q_centred)
        floor = qn - 2.0 * left_out  # +inf when nothing was left out
        return qn[:, None] - 2.0 * v, idx, floor

    return search


@contextlib.contextmanager
def _exact_gemm(device: torch.device):
    """GEMMs as the bounds assume on CUDA: float32 accumulation of bf16 products (no
    reduced-precision split-K), IEEE float32 (no TF32)."""
    if device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    saved = matmul.allow_bf16_reduced_precision_reduction
    matmul.allow_bf16_reduced_precision_reduction = False
    try:
        with devices.fp32_exact():
            yield
    finally:
        matmul.allow_bf16_reduced_precision_reduction = saved


def _device_rerank(base: _Base, device: torch.device) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """float64 sum((q - b)^2) of the candidates, computed on `device`."""

    def rerank(query_raw: np.ndarray, cand: np.ndarray) -> np.ndarray:
        rows = base.rows_on(device)
        n, width = cand.shape
        dim = rows.shape[1]
        q = torch.from_numpy(np.asarray(query_raw, dtype=np.float64)).to(device)
        c = torch.from_numpy(np.ascontiguousarray(cand)).to(device)
        out = torch.empty((n, width), dtype=torch.float64, device=device)
        step = max(1, DEVICE_RERANK_BYTES // (width * dim * 8))
        for s in range(0, n, step):
            gathered = rows[c[s : s + step].reshape(-1)].to(torch.float64).reshape(-1, width, dim)
            out[s : s + step] = ((q[s : s + step, None, :] - gathered) ** 2).sum(-1)
        return out.cpu().numpy()

    return rerank


def _faiss_search(base: _Base, gpu: bool, gpu_device: int = 0) -> Callable[[np.ndarray, int, int], SearchResult]:
    import faiss

    gpu_index = []  # built on first use: the base goes to the GPU once, not once per chunk

    def search(q_centred: np.ndarray, kk: int, per_block: int) -> SearchResult:
        q32 = np.ascontiguousarray(q_centred, dtype=np.float32)
        if gpu:
            if not gpu_index:
                resources = faiss.StandardGpuResources()
                config = faiss.GpuIndexFlatConfig()
                config.device = gpu_device  # the GPU this process is pinned to
                index = faiss.GpuIndexFlatL2(resources, q32.shape[1], config)
                index.add(base.f32())
                gpu_index.extend([resources, index])
            dist, idx = gpu_index[1].search(q32, kk)
        else:
            dist, idx = faiss.knn(q32, base.f32(), kk)
        dist = dist.astype(np.float64)
        floor = dist[:, -1] if kk < base.n else np.full(len(dist), np.inf)
        return dist, idx.astype(np.int64), floor

    return search


def _use_bf16() -> bool:
    """The CPU stages start with bf16 (only worth it with native bf16 dot products)."""
    return _cpu_has_native_bf16()


def search_device(device: str | int | torch.device | None = None) -> torch.device:
    """The device a search runs on: `device` (an int is a CUDA index), else the process's
    pinned device (harness.devices.pin), else the current CUDA device, else the CPU."""
    if device is not None:
        return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    pinned = devices.current()
    if pinned is not None:
        return pinned
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _stages(base: _Base, dim: int, device: torch.device) -> list[_Stage]:
    if device.type == "cuda":
        return _device_stages(base, dim, device)
    if _faiss_gpus() > 0:  # faiss-gpu beside a torch that sees no GPU
        return [_Stage("faiss-gpu-float32", _faiss_search(base, gpu=True), _float32_bound(dim))]
    stages = []
    if base._bf16_aug is not None:
        stages.append(_Stage("bf16", _bf16_search(base), _bf16_bound(dim)))
    if _has_faiss():
        stages.append(_Stage("faiss-float32", _faiss_search(base, gpu=False), _float32_bound(dim)))
    return stages


def _device_stages(base: _Base, dim: int, device: torch.device) -> list[_Stage]:
    """A torch bf16 GEMM, then faiss-gpu where it sees this GPU, else a torch float32 GEMM;
    candidates re-ranked in float64 on the device. Runs on any torch device (tests: CPU)."""
    rerank = _device_rerank(base, device)
    name = f"torch-{device.type}"
    stages = [_Stage(f"{name}-bf16", _gemm_search(base, device, torch.bfloat16, DEVICE_BLOCK_ROWS),
                     _bf16_bound(dim), rerank)]
    index = devices.gpu_index(device) if device.type == "cuda" else None
    if index is not None and _faiss_gpus() > index:
        stages.append(_Stage("faiss-gpu-float32", _faiss_search(base, gpu=True, gpu_device=index),
                             _float32_bound(dim), rerank))
    else:
        stages.append(_Stage(f"{name}-float32", _gemm_search(base, device, torch.float32, DEVICE_BLOCK_ROWS),
                             _gemm_bound(dim, FLOAT32_U), rerank))
    return stages


def _exact_distances(query_raw: np.ndarray, base: _Base, cand: np.ndarray) -> np.ndarray:
    """float64 sum((q - b)^2) for candidates cand [n, kk], in batches under RERANK_BYTES."""
    n, kk = cand.shape
    dim = base.raw.shape[1]
    out = np.empty((n, kk), dtype=np.float64)
    step = max(1, RERANK_BYTES // (kk * dim * 8))
    for s in range(0, n, step):
        c = cand[s : s + step]
        flat = c.reshape(-1)
        order = np.argsort(flat, kind="stable")  # sorted gathers are memmap friendly
        rows = np.empty((flat.size, dim), dtype=np.float64)
        rows[order] = base.raw[flat[order]]
        rows = rows.reshape(*c.shape, dim)
        q = np.asarray(query_raw[s : s + step], dtype=np.float64)
        out[s : s + step] = ((q[:, None, :] - rows) ** 2).sum(-1)
    return out


def _top_k_exact(dist: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k smallest (distance, index) pairs in lexicographic order."""
    order = np.lexsort((cand, dist), axis=-1)
    d = np.take_along_axis(dist, order, -1)[:, :k]
    i = np.take_along_axis(cand, order, -1)[:, :k]
    return d, i


def _excluded(base: _Base, query_groups: np.ndarray | None, cand: np.ndarray) -> np.ndarray:
    if base.groups is None or query_groups is None:
        return np.zeros(cand.shape, dtype=bool)
    return base.groups[cand] == query_groups[:, None]


def _run_stage(
    stage: _Stage,
    base: _Base,
    query_raw: np.ndarray,
    query_centred: np.ndarray,
    query_groups: np.ndarray | None,
    k: int,
    kk: int,
    per_block: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates + exact re-rank; returns (dist [n,k], idx [n,k], proven [n])."""
    approx, cand, floor = stage.search(query_centred, kk, per_block)
    qnorm = np.sqrt(np.einsum("ij,ij->i", query_centred, query_centred))
    bound = stage.bound(qnorm, base.max_norm)
    # Re-rank only the k + EXTRA allowed candidates nearest by approximate distance.
    allowed = np.where(_excluded(base, query_groups, cand), np.inf, approx)
    order = np.argsort(allowed, axis=1, kind="stable")
    returned = cand.shape[1]  # blockwise stages may return fewer than k'
    keep = min(returned, k + EXTRA_CANDIDATES)
    approx_kept = np.take_along_axis(allowed, order[:, :keep], 1)
    cand_kept = np.take_along_axis(cand, order[:, :keep], 1)
    if stage.rerank is None:
        exact, slack = _exact_distances(query_raw, base, cand_kept), 0.0
    else:
        exact = stage.rerank(query_raw, cand_kept)
        slack = _rerank_slack(query_raw.shape[1]) * exact
    checked = np.isfinite(approx_kept)
    allowance = np.broadcast_to(bound[:, None], exact.shape) + slack
    if np.any(np.abs(approx_kept - exact)[checked] > allowance[checked]):
        warnings.warn(
            f"k-NN stage {stage.name} exceeded its error bound; retrying more precisely",
            RuntimeWarning,
            stacklevel=3,
        )
        n = len(query_raw)
        return np.empty((n, k)), np.empty((n, k), dtype=np.int64), np.zeros(n, dtype=bool)
    if stage.rerank is None:
        dist, idx = _top_k_exact(np.where(checked, exact, np.inf), cand_kept, k)
    else:
        dist, idx = _numpy_winners(query_raw, base, np.where(checked, exact, np.inf), cand_kept, k)
    # Every row not re-ranked has d~ >= limit: either an allowed candidate beyond `keep`
    # or a row outside the candidate list (d~ >= floor).
    next_allowed = allowed[np.arange(len(allowed)), order[:, keep]] if keep < returned else np.inf
    limit = np.minimum(next_allowed, floor)
    kth = approx_kept[:, k - 1]  # k-th smallest allowed approximate distance
    proven = np.isfinite(kth) & (limit > kth + 2 * bound)
    return dist, idx, proven


def _numpy_winners(query_raw: np.ndarray, base: _Base, other: np.ndarray, cand: np.ndarray,
                   k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest by numpy's float64 distances, given another float64 evaluation `other`
    of the candidates' distances: only candidates within the two evaluations' possible
    difference of the k-th `other` distance can be among them (module docstring), and only
    those are evaluated again, by numpy."""
    kth = np.sort(other, axis=1)[:, k - 1]
    window = other <= (kth * (1 + 3 * _rerank_slack(query_raw.shape[1])))[:, None]
    width = int(window.sum(1).max())
    pick = np.argsort(~window, axis=1, kind="stable")[:, :width]
    valid = np.take_along_axis(window, pick, 1)
    chosen = np.take_along_axis(cand, pick, 1)
    chosen = np.where(valid, chosen, chosen[:, :1])  # padding: any real row, then set to inf
    dist = np.where(valid, _exact_distances(query_raw, base, chosen), np.inf)
    return _top_k_exact(dist, chosen, k)


def _float64_search(
    base: _Base,
    query_raw: np.ndarray,
    query_centred: np.ndarray,
    query_groups: np.ndarray | None,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Always-exact last stage: float64 GEMM distances, keep every row within the bound."""
    n, dim = query_centred.shape
    qn2 = np.einsum("ij,ij->i", query_centred, query_centred)
    bound = (dim + 12) * 2.0**-53 * 1.01 * (np.sqrt(qn2) + base.max_norm) ** 2
    running = np.full((n, k), np.inf)  # k smallest approximate distances so far
    pairs_q, pairs_b = [], []
    for s in range(0, base.n, FP64_BLOCK_ROWS):
        b = base.centred64(s, s + FP64_BLOCK_ROWS)
        approx = qn2[:, None] + np.einsum("ij,ij->i", b, b)[None, :] - 2.0 * (query_centred @ b.T)
        if base.groups is not None and query_groups is not None:
            approx[base.groups[s : s + len(b)][None, :] == query_groups[:, None]] = np.inf
        block_k = min(k, approx.shape[1])
        block_smallest = np.partition(approx, block_k - 1, axis=1)[:, :block_k]
        running = np.sort(np.concatenate([running, block_smallest], axis=1), axis=1)[:, :k]
        # The threshold only shrinks, so rows kept from earlier blocks are a superset of
        # those within the final window; the exact re-rank sorts them out.
        threshold = running[:, k - 1] + 2 * bound
        qi, bi = np.nonzero((approx <= threshold[:, None]) & np.isfinite(approx))
        pairs_q.append(qi)
        pairs_b.append(bi + s)
    qi, bi = np.concatenate(pairs_q), np.concatenate(pairs_b)
    order = np.lexsort((bi, qi))
    qi, bi = qi[order], bi[order]
    diff = np.asarray(query_raw, dtype=np.float64)[qi] - np.asarray(base.raw[bi], dtype=np.float64)
    d = (diff**2).sum(-1)
    dist = np.full((n, k), np.inf)
    idx = np.full((n, k), -1, dtype=np.int64)
    starts = np.searchsorted(qi, np.arange(n + 1))
    for q in range(n):
        lo, hi = starts[q], starts[q + 1]
        top_d, top_i = _top_k_exact(d[None, lo:hi], bi[None, lo:hi], k)
        dist[q, : top_d.shape[1]] = top_d[0]
        idx[q, : top_i.shape[1]] = top_i[0]
    return dist, idx


def _check_exclude(
    exclude, n_base: int, n_query: int, k: int
) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    """Validated (base_groups, query_groups, size of the largest base group)."""
    if exclude is None:
        return None, None, 0
    if not (isinstance(exclude, tuple | list) and len(exclude) == 2):
        raise ValueError("exclude must be a pair (base_groups [N_base], query_groups [N_query])")
    base_groups, query_groups = (np.asarray(g).reshape(-1) for g in exclude)
    for name, g, n in (("base_groups", base_groups, n_base), ("query_groups", query_groups, n_query)):
        if not np.issubdtype(g.dtype, np.integer):
            raise ValueError(f"exclude {name} must be integers, got dtype {g.dtype}")
        if g.size != n:
            raise ValueError(f"exclude {name} must have one entry per row ({n}), got {g.size}")
    groups, counts = np.unique(base_groups, return_counts=True)
    query_group_sizes = np.zeros(n_query, dtype=np.int64)
    pos = np.searchsorted(groups, query_groups)
    found = (pos < len(groups)) & (groups[np.minimum(pos, len(groups) - 1)] == query_groups)
    query_group_sizes[found] = counts[pos[found]]
    if np.any(n_base - query_group_sizes < k):
        bad = int(np.argmax(n_base - query_group_sizes < k))
        raise ValueError(
            f"query {bad} (group {query_groups[bad]}) has fewer than k={k} base rows outside its group"
        )
    return base_groups, query_groups, int(counts.max())


def knn_search(
    base_x,
    query_x,
    k: int = 1,
    exclude: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    device: str | int | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest base rows of every query row under squared L2 distance.

    base_x [N, D] and query_x [M, D]: float16/32/64 arrays (memmaps welcome). exclude:
    optional pair (base_groups [N] ints, query_groups [M] ints); query j may not return a
    base row i with base_groups[i] == query_groups[j] (e.g. the query's source image).
    Returns (distances [M, k] float64 squared L2, indices [M, k] int64), nearest first,
    ties broken by the lowest base index. See the module docstring for why it is exact.
    device: where the candidate stages run (`search_device`); the answer is the same.
    """
    base_x = as_feature_matrix("base_x", base_x)
    query_x = as_feature_matrix("query_x", query_x)
    if base_x.shape[0] == 0:
        raise ValueError("base_x is empty: the base (train) set needs at least one row")
    if base_x.shape[1] != query_x.shape[1]:
        raise ValueError(
            f"base_x and query_x must have the same width, got {base_x.shape[1]} and {query_x.shape[1]}"
        )
    if not (isinstance(k, int | np.integer) and 1 <= k <= base_x.shape[0]):
        raise ValueError(f"k must be an integer in [1, {base_x.shape[0]}] (base rows), got {k}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    check_finite("base_x", base_x)
    check_finite("query_x", query_x)
    base_groups, query_groups, largest_group = _check_exclude(
        exclude, base_x.shape[0], query_x.shape[0], k
    )
    n_query, dim = query_x.shape
    distances = np.empty((n_query, k), dtype=np.float64)
    indices = np.empty((n_query, k), dtype=np.int64)
    if n_query == 0:
        return distances, indices

    device = search_device(device)
    on_cpu = device.type == "cpu" and _faiss_gpus() == 0
    base = _Base.prepare(base_x, base_groups, with_bf16=on_cpu and _use_bf16())
    kk = min(base.n, k + EXTRA_CANDIDATES + largest_group)
    # Rows kept per base block by blockwise stages: the true top k' rarely crowd into one
    # block (and when they do, the proof fails and a later stage takes over).
    per_block = min(kk, k + PER_BLOCK_EXTRA + largest_group)
    stages = _stages(base, dim, device)
    for s in range(0, n_query, chunk_size):
        q_raw = np.asarray(query_x[s : s + chunk_size])
        q_centred = np.asarray(q_raw, dtype=np.float64) - base.centre.astype(np.float64)
        q_groups = None if query_groups is None else query_groups[s : s + chunk_size]
        todo = np.arange(len(q_raw))
        for stage in stages:
            if todo.size == 0:
                break
            g = None if q_groups is None else q_groups[todo]
            d, i, proven = _run_stage(stage, base, q_raw[todo], q_centred[todo], g, k, kk, per_block)
            done = todo[proven]
            STAGE_COUNTS[stage.name] += done.size
            distances[s + done], indices[s + done] = d[proven], i[proven]
            todo = todo[~proven]
        if todo.size:
            g = None if q_groups is None else q_groups[todo]
            d, i = _float64_search(base, q_raw[todo], q_centred[todo], g, k)
            distances[s + todo], indices[s + todo] = d, i
            STAGE_COUNTS["float64"] += todo.size
    return distances, indices


def knn_predict(
    train_x,
    train_y,
    query_x,
    k: int = 1,
    *,
    num_classes: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    device: str | int | torch.device | None = None,
) -> np.ndarray:
    """Labels of query rows by k-NN on train rows (squared L2, exact, see `knn_search`).

    k = 1: the label of the nearest train row. k > 1: majority vote; a tie between labels
    goes to the tied label whose first member is nearest (lowest rank), which is
    deterministic because the neighbours themselves are. If `num_classes` is given, classes
    in range(num_classes) with no train row trigger a MissingClassWarning (they can never be
    predicted; in few-shot subsets this can be legitimate, so it is not an error).
    """
    train_x = as_feature_matrix("train_x", train_x)
    train_y = as_labels("train_y", train_y, train_x.shape[0])
    if num_classes is not None:
        missing = np.setdiff1d(np.arange(num_classes), train_y)
        if missing.size:
            warnings.warn(
                f"classes {missing.tolist()} have no train rows and can never be predicted",
                MissingClassWarning,
                stacklevel=2,
            )
    _, idx = knn_search(train_x, query_x, k=k, chunk_size=chunk_size, device=device)
    labels = train_y[idx]
    if k == 1:
        return labels[:, 0]
    return _majority_vote(labels)


def _majority_vote(labels: np.ndarray) -> np.ndarray:
    """Row-wise most frequent label; ties go to the label that appears first (nearest)."""
    n, k = labels.shape
    same = labels[:, :, None] == labels[:, None, :]  # [n, k, k]
    votes = same.sum(-1)  # how many neighbours share the label at each rank
    first_rank = np.argmax(same, axis=-1)  # rank of that label's nearest member
    # Highest vote wins; among equal votes the smallest first_rank (nearest) wins.
    score = votes * (k + 1) - first_rank
    return labels[np.arange(n), np.argmax(score, axis=1)]
