"""The CUDA backend without a GPU: every kernel on the CUDA simulator (its own process, so
NUMBA_ENABLE_CUDASIM never leaks into the CPU tests), every kernel compiled to PTX for
sm_80 and sm_90, and backend selection (lazy detection, clear errors, auto fallback)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv as fc

HERE = os.path.dirname(os.path.abspath(__file__))
cuda_pkg = pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")

TOL = {"max_pool": 0.0}


@pytest.fixture(scope="module")
def simulated():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    res = subprocess.run([sys.executable, os.path.join(HERE, "cuda_sim_cases.py")],
                         capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", ["gemm_3x3_pad", "gemm_64_tile", "gemm_strided_dilated_groups",
                                  "gemm_1x1_over_a_tile", "depthwise_3x3",
                                  "depthwise_5x5_s2_mult2", "max_pool", "avg_pool",
                                  "adaptive_avg_pool", "linear", "elementwise",
                                  "model_device_resident", "cuda_direct",
                                  "cuda_winograd_f2x2_3x3", "cuda_sparse"])
def test_kernel_on_the_simulator(simulated, case):
    assert simulated[case] <= TOL.get(case, 1e-5), simulated


def test_winograd_f4_on_the_simulator_within_its_bound(simulated):
    assert simulated["cuda_winograd_f4x4_3x3"] < 1e-4


@pytest.mark.parametrize("case", ["cuda_int8_uint8_exact", "cuda_int8_int8_exact",
                                  "cuda_int8_packed_exact", "cuda_int8_gemm_exact"])
def test_int8_on_the_simulator_is_exact(simulated, case):
    assert simulated[case] is True


def test_device_resident_model_needs_no_host_round_trip(simulated):
    assert simulated["explain_on_device"] is True
    assert simulated["model_fallbacks"] == 0
    assert simulated["model_buffers_reused"] is True
    assert simulated["broadcast_falls_back"] is True


F4 = "float32[:, :, :, ::1]"
F3 = "float32[:, :, ::1]"
F2 = "float32[:, ::1]"
F1 = "float32[::1]"
I = "int64"
SIGNATURES = {
    ("implicit_gemm", "conv2d_implicit_gemm"):
        f"void({F4}, {F2}, {F1}, {F3}, {F3}, boolean, {', '.join([I] * 11)})",
    ("implicit_gemm", "conv2d_implicit_gemm_small"):
        f"void({F4}, {F2}, {F1}, {F3}, {F3}, boolean, {', '.join([I] * 11)})",
    ("implicit_gemm", "transpose2d"): f"void({F2}, {F2})",
    ("depthwise", "depthwise_conv2d"):
        f"void({F4}, {F3}, {F1}, {F4}, {F4}, boolean, {', '.join([I] * 7)})",
    ("pooling", "max_pool2d"): f"void({F4}, {F4}, {', '.join([I] * 8)})",
    ("pooling", "avg_pool2d"): f"void({F4}, {F4}, {', '.join([I] * 6)}, boolean, {I})",
    ("pooling", "adaptive_avg_pool2d"): f"void({F4}, {F4})",
    ("elementwise", "unary"): f"void({F1}, {F1}, {I}, float32, float32, boolean)",
    ("direct", "direct_conv2d"): f"void({F4}, {F4}, {F1}, {F4}, {F4}, boolean, {', '.join([I] * 8)})",
    ("winograd", "input_transform"): f"void({F4}, {F2}, {F3}, {', '.join([I] * 5)})",
    ("winograd", "batched_gemm"): f"void({F3}, {F3}, {F3}, {I})",
    ("winograd", "output_transform"): f"void({F3}, {F2}, {F1}, {F4}, {F4}, boolean, {I}, {I}, {I})",
    ("sparse", "sparse_conv2d"):
        f"void({F4}, int64[::1], int64[::1], int64[::1], int64[::1], {F1}, {F1}, {F4}, {F4}, "
        f"boolean, {', '.join([I] * 5)})",
    ("int8", "conv2d_int8"):
        f"void(int32[:, :, :, :, ::1], int32[:, ::1], int32[::1], {F1}, {F1}, {', '.join([I] * 8)}, "
        f"{F3}, boolean, {F3}, int8[:, :, ::1], int32[:, :, ::1], {I}, float32, {I}, "
        f"float32, float32)",
    ("elementwise", "binary"): f"void({F1}, {F1}, {F1}, {I}, boolean, {I}, {I})",
}


def _nvvm_usable():
    try:
        cuda_pkg.compile_ptx(lambda a: None, "void(float32[::1])", cc=(8, 0))
        return True
    except Exception as exc:  # no NVVM in this environment
        return str(exc)


@pytest.mark.parametrize("cc", [(8, 0), (9, 0)], ids=["sm_80", "sm_90"])
@pytest.mark.parametrize("module, kernel", sorted(SIGNATURES))
def test_kernel_compiles_to_ptx(module, kernel, cc):
    usable = _nvvm_usable()
    if usable is not True:
        pytest.skip(f"the CUDA toolkit's NVVM is not installed: {usable}")
    import importlib
    mod = importlib.import_module(f"fastconv.kernels.cuda.{module}")
    ptx, _ = cuda_pkg.compile_ptx(getattr(mod, kernel).py_func, SIGNATURES[(module, kernel)],
                                  cc=cc)
    assert f".target sm_{cc[0]}{cc[1]}" in ptx and ".entry" in ptx
    if module == "int8":
        assert "dp4a.u32.s32" in ptx
        # bit-exactness on a GPU: the epilogue's product and sum are rounded separately, as in
        # the integer reference (a contracted fma.rn.f32 made real GPUs differ by one step)
        assert "fma.rn.f32" not in ptx and "mul.rn.f32" in ptx and "add.rn.f32" in ptx
        assert "cvt.rni.f32.f32" in ptx  # requantization rounds half to even


def test_importing_fastconv_never_touches_cuda():
    code = ("import sys, numpy as np, fastconv as fc; "
            "fc.conv2d(np.zeros((1, 2, 5, 5), np.float32), np.zeros((2, 2, 3, 3), np.float32)); "
            "print('numba.cuda' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


class _FakeDeviceArray:
    __cuda_array_interface__ = {"shape": (1, 2, 5, 5), "typestr": "<f4", "data": (0, False),
                                "version": 3}


def test_backend_selection_without_a_gpu(monkeypatch):
    from fastconv import _backend, _cuda
    monkeypatch.setattr(_cuda, "_state", {"checked": True, "ok": False, "cuda": None,
                                          "why": "no usable CUDA driver or GPU"})
    monkeypatch.setattr(_backend, "_warned", [False])
    x = np.ones((1, 2, 5, 5), np.float32)
    w = np.ones((2, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="'cuda' backend is not available: no usable CUDA"):
        fc.set_backend("cuda")
    with pytest.raises(ValueError, match="conv2d: the 'cuda' backend is not available"):
        fc.conv2d(x, w, backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        fc.conv2d(x, w, backend="tpu")
    with pytest.raises(ValueError, match="GPU array but the backend is 'cpu'"):
        fc.conv2d(_FakeDeviceArray(), w, backend="cpu")
    try:
        fc.set_backend("auto")
        with pytest.warns(RuntimeWarning, match="backend 'auto' runs on the CPU"):
            y = fc.conv2d(x, w)
        np.testing.assert_allclose(y, np.full((1, 2, 3, 3), 18.0))
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # only one warning per process
            fc.conv2d(x, w)
    finally:  # back to the default: "auto" without probing
        _backend._probe = False
        _backend._backend = "auto"
    assert fc.get_backend() == "auto"


def test_auto_offloads_only_when_the_gpu_is_modelled_faster(monkeypatch):
    from fastconv import _cuda
    from fastconv import functional as F
    monkeypatch.setattr(_cuda, "_state", {"checked": True, "ok": True, "cuda": None, "why": None})
    small = F.conv_problem((1, 8, 8, 8), (8, 8, 3, 3), 1, 1)
    big = F.conv_problem((32, 256, 56, 56), (256, 256, 3, 3), 1, 1)
    assert not _cuda.worth_offloading(small, 20e-6)
    assert _cuda.worth_offloading(big, 1.0)


def test_gpu_benchmark_script_runs_on_the_simulator():
    """bench/gpu_compare.py is ready for a GPU: its smoke mode runs end to end here."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    script = os.path.join(os.path.dirname(HERE), "bench", "gpu_compare.py")
    res = subprocess.run([sys.executable, script, "--smoke"], capture_output=True, text=True,
                         env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    row = next(ln for ln in res.stdout.splitlines() if ln.startswith("| smoke_3x3"))
    assert float(row.rstrip(" |").split("|")[-1]) < 1e-4
