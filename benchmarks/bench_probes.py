"""Probe speed, each figure measured within one run on one machine.

Run: pytest benchmarks/bench_probes.py --benchmark-json=bench-probes.json -s
(pytest-benchmark switches itself off under xdist: run without -n.)

Targets:
- exact 1-NN (`knn_predict`) >= 3 x scikit-learn's brute-force KNeighborsClassifier on
  20,000 queries x 100,000 base x 768 float32, with identical labels (one round each:
  scikit-learn alone takes about half a minute on 2 cores);
- the linear probe on 450,000 x 768 float16 patches (the 72-image Cityscapes train set)
  within LINEAR_PROBE_BUDGET_S; the figure is reported, with and without BatchNorm.
Sizes can be shrunk with BENCH_KNN_QUERIES / BENCH_KNN_BASE / BENCH_PROBE_ROWS.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

import harness.probes.knn as knn_module
from harness.probes import LinearProbe, knn_predict

KNN_SPEEDUP = 3.0
LINEAR_PROBE_BUDGET_S = 300.0  # "a few minutes" on 2 cores
N_QUERIES = int(os.environ.get("BENCH_KNN_QUERIES", "20000"))
N_BASE = int(os.environ.get("BENCH_KNN_BASE", "100000"))
N_PROBE_ROWS = int(os.environ.get("BENCH_PROBE_ROWS", "450000"))
DIM = 768
N_CLASSES = 19


def test_exact_knn_vs_sklearn_brute_force(benchmark):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((N_BASE, DIM), dtype=np.float32)
    query = rng.standard_normal((N_QUERIES, DIM), dtype=np.float32)
    labels = rng.integers(0, N_CLASSES, N_BASE)

    start = time.perf_counter()
    reference = KNeighborsClassifier(n_neighbors=1, algorithm="brute").fit(base, labels).predict(query)
    sklearn_s = time.perf_counter() - start

    knn_module.STAGE_COUNTS.clear()
    start = time.perf_counter()
    ours = knn_predict(base, labels, query, k=1)
    ours_s = time.perf_counter() - start

    speedup = sklearn_s / ours_s
    stages = dict(knn_module.STAGE_COUNTS)
    benchmark.extra_info.update(
        {"sklearn_s": sklearn_s, "ours_s": ours_s, "speedup": speedup, "target": KNN_SPEEDUP,
         "queries": N_QUERIES, "base": N_BASE, "dim": DIM, "stages": stages}
    )
    benchmark.pedantic(lambda: None, rounds=1)  # the figures above are the measurement
    print(f"\nsklearn brute {sklearn_s:.1f} s, exact k-NN {ours_s:.1f} s: {speedup:.2f}x; stages {stages}")
    np.testing.assert_array_equal(ours, reference)
    assert speedup >= KNN_SPEEDUP


@pytest.mark.parametrize("batchnorm", [False, True], ids=["plain", "batchnorm"])
def test_linear_probe_on_cityscapes_sized_train_set(benchmark, batchnorm):
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((N_CLASSES, DIM), dtype=np.float32)
    y = rng.integers(0, N_CLASSES, N_PROBE_ROWS)
    x = np.empty((N_PROBE_ROWS, DIM), dtype=np.float16)
    for s in range(0, N_PROBE_ROWS, 50_000):
        noise = rng.standard_normal((len(y[s : s + 50_000]), DIM), dtype=np.float32)
        x[s : s + 50_000] = centres[y[s : s + 50_000]] * 0.3 + noise
    y[::17] = 255  # ignored patches, as in real label maps

    start = time.perf_counter()
    probe = LinearProbe(batchnorm=batchnorm, seed=0).fit(x, y)
    fit_s = time.perf_counter() - start
    scored = y[:20_000] != 255
    accuracy = float(np.mean(probe.predict(x[:20_000])[scored] == y[:20_000][scored]))
    benchmark.extra_info.update(
        {"fit_s": fit_s, "rows": N_PROBE_ROWS, "dim": DIM, "batchnorm": batchnorm,
         "train_accuracy_20k": accuracy, "budget_s": LINEAR_PROBE_BUDGET_S}
    )
    benchmark.pedantic(lambda: None, rounds=1)
    print(f"\nlinear probe (batchnorm={batchnorm}) on {N_PROBE_ROWS} x {DIM}: {fit_s:.1f} s")
    assert accuracy > 0.9  # the planted classes were learnt
    assert fit_s <= LINEAR_PROBE_BUDGET_S
