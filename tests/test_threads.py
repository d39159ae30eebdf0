"""One thread pool at a time, thread counts honoured, safe under threads and fork, cached kernels."""
import os
import subprocess
import sys
import textwrap
import threading

import numba
import numpy as np
import pytest
from conftest import rel_err
from fastconv.kernels import reference as ref

import fastconv as fc
from fastconv import _algorithms, _runtime


def _run_py(code, env=None, timeout=300):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=e)


def test_threading_layer_is_thread_and_fork_safe():
    assert fc.threading_layer() == "tbb"


@pytest.mark.parametrize("layer", ["tbb", "omp"])
def test_threading_layer_chosen_by_the_user(layer):
    """NUMBA_THREADING_LAYER is respected; asking for tbb by name still finds the
    wheel's libtbb (it is not on the loader's path inside a virtual environment)."""
    r = _run_py("""
        import numpy as np, fastconv as fc
        from fastconv import functional as F
        y = fc.conv2d(np.ones((1, 2, 5, 5), np.float32), np.ones((3, 2, 3, 3), np.float32))
        # calls that run several kernels one after another (a layer that serializes its
        # kernel calls must never wait on itself): blocked, blocked then a conv2d, separate
        o = lambda *s: np.ones(s, np.float32)
        dw = (o(16, 1, 3, 3), None, None, 1, 1, 1)
        for proj in (o(32, 16, 1, 1), o(24, 16, 1, 1)):
            F.inverted_residual(o(1, 4, 4, 4), (o(16, 4, 1, 1), None, None), dw, (proj, None, None))
        F.inverted_residual(o(1, 4, 2, 2), (o(16, 4, 1, 1), None, None), dw, (proj, None, None))
        print(fc.threading_layer(), float(y[0, 0, 2, 2]))
    """, env={"NUMBA_THREADING_LAYER": layer})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-2:] == [layer, "18.0"]


@pytest.mark.parametrize("n", [1, 2])
def test_set_num_threads_governs_numba_and_blas(monkeypatch, rng, n):
    if n > _runtime.max_threads():
        pytest.skip("machine has fewer threads")
    seen = {}
    real = _algorithms._im2col.conv2d_im2col

    def spy(*args):
        seen["numba"] = numba.get_num_threads()
        seen["blas"] = [lib.get_num_threads() for lib in _runtime.blas_pin.libraries()]
        seen["blas_raw"] = _runtime.blas_pin.current()
        return real(*args)

    monkeypatch.setattr(_algorithms._im2col, "conv2d_im2col", spy)
    old = fc.get_num_threads()
    fc.set_num_threads(n)
    try:
        x = rng.standard_normal((1, 16, 20, 20)).astype(np.float32)
        w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
        y = fc.conv2d(x, w, padding=1, algo="im2col")
    finally:
        fc.set_num_threads(old)
    assert seen["numba"] == n
    assert seen["blas"] and all(t == 1 for t in seen["blas"])  # BLAS never adds a second pool
    assert all(t == 1 for t in seen["blas_raw"])
    assert rel_err(y, ref.conv2d(x, w, padding=1)) < 1e-4


def test_blas_setting_restored_after_call(rng):
    libs = _runtime.blas_pin.libraries()
    before = [lib.get_num_threads() for lib in libs]
    fc.conv2d(rng.standard_normal((1, 8, 9, 9)).astype(np.float32),
              rng.standard_normal((8, 8, 3, 3)).astype(np.float32), algo="im2col")
    assert [lib.get_num_threads() for lib in libs] == before


def test_one_thread_means_one_busy_core():
    """With set_num_threads(1) the process uses at most ~one core: no pool spins beside the caller."""
    out = _run_py("""
        import time, numpy as np, fastconv as fc
        fc.set_num_threads(1)
        x = np.random.rand(1, 64, 56, 56).astype(np.float32)
        w = np.random.rand(64, 64, 3, 3).astype(np.float32)
        for algo in ("im2col", "direct", "im2col"):
            fc.conv2d(x, w, padding=1, algo=algo)
        c0, t0 = time.process_time(), time.perf_counter()
        for i in range(20):
            fc.conv2d(x, w, padding=1, algo="im2col" if i % 2 else "direct")
        print((time.process_time() - c0) / (time.perf_counter() - t0))
    """)
    assert out.returncode == 0, out.stderr
    ratio = float(out.stdout.split()[-1])
    assert ratio < 1.3, f"CPU time / wall time = {ratio:.2f} with one thread"


def test_blas_pinned_from_any_python_thread(rng, monkeypatch):
    """The pin works from threads other than the first one that touched BLAS."""
    seen = []
    real = _algorithms._im2col.conv2d_im2col

    def spy(*args):
        seen.append(_runtime.blas_pin.current())
        return real(*args)

    monkeypatch.setattr(_algorithms._im2col, "conv2d_im2col", spy)
    x = rng.standard_normal((1, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    fc.conv2d(x, w, algo="im2col")                     # main thread first
    t = threading.Thread(target=lambda: fc.conv2d(x, w, algo="im2col"))
    t.start()
    t.join()
    assert len(seen) == 2 and all(all(n == 1 for n in s) for s in seen)


def test_concurrent_python_threads(rng):
    x = rng.standard_normal((2, 8, 15, 15)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    expected = ref.conv2d(x, w, padding=1)
    errors = []

    def worker(algo):
        try:
            for _ in range(20):
                y = fc.conv2d(x, w, padding=1, algo=algo)
                if rel_err(y, expected) >= 1e-4:
                    errors.append(f"{algo}: wrong result")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(a,)) for a in ("direct", "im2col") * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_fork_after_use_works():
    out = _run_py("""
        import multiprocessing as mp, numpy as np, fastconv as fc
        x = np.random.rand(1, 8, 16, 16).astype(np.float32)
        w = np.random.rand(8, 8, 3, 3).astype(np.float32)
        y = fc.conv2d(x, w, padding=1)
        def child(q):
            q.put(float(np.abs(fc.conv2d(x, w, padding=1) - y).max()))
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        ps = [ctx.Process(target=child, args=(q,)) for _ in range(2)]
        for p in ps: p.start()
        res = [q.get(timeout=120) for _ in ps]
        for p in ps: p.join(timeout=120)
        print("OK", max(res), [p.exitcode for p in ps])
    """)
    assert out.returncode == 0, out.stderr
    assert "OK 0.0 [0, 0]" in out.stdout, out.stdout + out.stderr


def test_cached_kernels_survive_thread_count_changes(tmp_path):
    code = """
        import numpy as np, fastconv as fc, numba
        from fastconv.kernels import reference as ref
        x = np.random.default_rng(0).standard_normal((1, 8, 12, 12)).astype(np.float32)
        w = np.random.default_rng(1).standard_normal((8, 8, 3, 3)).astype(np.float32)
        e = ref.conv2d(x, w, padding=1)
        for n in (1, numba.config.NUMBA_NUM_THREADS, 1):
            fc.set_num_threads(n)
            for algo in ("direct", "im2col"):
                assert np.abs(fc.conv2d(x, w, padding=1, algo=algo) - e).max() < 1e-3
        print("OK")
    """
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    first = _run_py(code, env)               # builds the cache
    assert first.returncode == 0 and "OK" in first.stdout, first.stderr
    assert any(p.suffix == ".nbi" for p in tmp_path.rglob("*")), "nothing was cached"
    second = _run_py(code, dict(env, NUMBA_NUM_THREADS="1"))   # loads it, other pool size
    assert second.returncode == 0 and "OK" in second.stdout, second.stderr
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "fresh")))
             for _ in range(2)]                # two processes building one cache at once
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0 and "OK" in out, err


def test_warmup_compiles_everything():
    assert fc.warmup() >= 0.0


def test_cached_workspaces_are_per_thread_and_follow_a_grown_buffer():
    """_workspace.cached: each Python thread gets its own buffers (never another
    thread's), and a buffer that grows afterwards is fetched again, not kept stale."""
    from fastconv import _workspace
    views = _workspace.cached(lambda: _workspace.get("test_cached", (8,)))
    first = views()
    assert views() is first
    seen = []
    t = threading.Thread(target=lambda: seen.append(views()))
    t.start()
    t.join()
    assert not np.shares_memory(seen[0], first)
    _workspace.get("test_cached", (1 << 16,))  # the buffer grows: the old view is stale
    again = views()
    assert again is not first
    assert np.shares_memory(again, _workspace.get("test_cached", (8,)))
