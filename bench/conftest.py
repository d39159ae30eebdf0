"""Benchmark fixtures.  Peers share the process, so every pool is made passive
and sized to fastconv's thread count (OpenMP's spin-wait would otherwise steal
the cores fastconv's pool needs right after a torch call, and vice versa)."""
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch/onnxruntime load GNU OpenMP

import numpy as np  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))

import fastconv as fc  # noqa: E402


@pytest.fixture(scope="session")
def threads():
    return fc.get_num_threads()


@pytest.fixture(scope="session")
def sgemm_roof(threads):
    import time

    from fastconv.cli import measure_sgemm_roof
    roof = measure_sgemm_roof(threads)
    time.sleep(0.5)
    return roof


@pytest.fixture(scope="session")
def torch_mod(threads):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(threads)
    return torch


def annotate(benchmark, flop, roof):
    """GFLOP/s and % of the SGEMM roof from the median, into extra_info (nothing when
    the run only checks the benchmarks, --benchmark-disable: then there are no stats)."""
    if benchmark.stats is None:
        return
    med = benchmark.stats.stats.median
    benchmark.extra_info["gflops"] = round(flop / med / 1e9, 2)
    benchmark.extra_info["roof_pct"] = round(100 * flop / med / 1e9 / roof, 1)
    benchmark.extra_info["sgemm_roof_gflops"] = round(roof, 1)


def make_layer(spec, batch, seed=0):
    c, h, w, k, r, s, p, g = spec
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((k, c // g, r, r)) / np.sqrt(c // g * r * r)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    return x, wt, b
