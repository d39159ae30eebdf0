"""CUDA kernels on the simulator against the float64 reference; run in its own process.

    NUMBA_ENABLE_CUDASIM=1 python tests/cuda_sim_cases.py     # prints one JSON line

The simulator runs every GPU thread as a Python thread, so shapes are tiny;
each case still covers the kernel's edge handling (partial tiles, padding,
groups, dilation, multiplier, residual, every activation).
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from fastconv.kernels import reference as ref  # noqa: E402

import fastconv as fc  # noqa: E402

CONV = {  # name: (N, C, H, W, K, R, S, stride, padding, dilation, groups, activation, residual)
    "gemm_3x3_pad": (1, 3, 5, 6, 5, 3, 3, 1, 1, 1, 1, "relu", False),
    "gemm_64_tile": (1, 8, 12, 12, 40, 3, 3, 1, 1, 1, 1, None, True),
    "gemm_strided_dilated_groups": (2, 4, 7, 6, 6, 3, 2, 2, (1, 0), (2, 1), 2, None, True),
    "gemm_1x1_over_a_tile": (1, 17, 9, 9, 70, 1, 1, 1, 0, 1, 1, "relu6", False),
    "depthwise_3x3": (1, 4, 6, 5, 4, 3, 3, 1, 1, 1, 4, "hardswish", True),
    "depthwise_5x5_s2_mult2": (1, 2, 9, 8, 4, 5, 5, 2, 2, 1, 2, "relu", False),
}


def hswish(v):
    return v * np.clip(v + 3, 0, 6) / 6


def main():
    from numba import cuda
    assert cuda.is_available()
    fc.set_backend("cuda")
    rng = np.random.default_rng(0)
    out = {}
    for name, (n, c, h, w, k, r, s, st, p, d, g, act, use_res) in CONV.items():
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        wt = rng.standard_normal((k, c // g, r, s)).astype(np.float32)
        b = rng.standard_normal(k).astype(np.float32)
        e = ref.conv2d(x, wt, b, st, p, d, g)
        res = rng.standard_normal(e.shape).astype(np.float32) if use_res else None
        e = e + (res if use_res else 0)
        e = hswish(e) if act == "hardswish" else ref.activation(e, act)
        y = fc.conv2d(x, wt, b, st, p, d, g, activation=act, residual=res)
        # device in -> device out, zero copy
        yd = fc.conv2d(cuda.to_device(x), wt, b, st, p, d, g, activation=act,
                       residual=None if res is None else cuda.to_device(res))
        out[name] = max(float(np.abs(y - e).max()), float(np.abs(yd.copy_to_host() - e).max())) \
            / max(1.0, float(np.abs(e).max()))
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    x[0, 0, 1, 1] = np.nan
    y = fc.max_pool2d(x, 3, 2, 1)
    e = ref.max_pool2d(x, 3, 2, 1)
    out["max_pool"] = float(np.nanmax(np.abs(y - e))) + float(np.isnan(y).sum() != np.isnan(e).sum())
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    y = fc.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)
    out["avg_pool"] = float(np.abs(y - ref.avg_pool2d(x, 3, 2, 1, True, False)).max())
    y = fc.adaptive_avg_pool2d(x, (3, 4))
    out["adaptive_avg_pool"] = float(np.abs(y - ref.adaptive_avg_pool2d(x, (3, 4))).max())
    a = rng.standard_normal((5, 37)).astype(np.float32)
    wl = rng.standard_normal((9, 37)).astype(np.float32)
    bl = rng.standard_normal(9).astype(np.float32)
    y = fc.linear(a, wl, bl, activation="relu")
    out["linear"] = float(np.abs(y - np.maximum(a @ wl.T + bl, 0)).max()) / float(
        np.abs(a @ wl.T).max())
    # elementwise kernels of the device-resident runner
    from fastconv import _cuda
    a = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    bsame = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    bchan = rng.standard_normal((2, 3, 1, 1)).astype(np.float32)
    da = cuda.to_device(a)
    errs = [np.abs(_cuda.unary(da, act=1).copy_to_host() - np.maximum(a, 0)).max(),
            np.abs(_cuda.unary(da, act=3).copy_to_host() - hswish(a)).max(),
            np.abs(_cuda.unary(da, lo=-0.5, hi=0.5, clip=True).copy_to_host()
                   - np.clip(a, -0.5, 0.5)).max(),
            np.abs(_cuda.binary(da, cuda.to_device(bsame), 0).copy_to_host() - (a + bsame)).max(),
            np.abs(_cuda.binary(da, cuda.to_device(bsame), 1).copy_to_host() - (a - bsame)).max(),
            np.abs(_cuda.binary(da, cuda.to_device(bchan), 2).copy_to_host() - (a * bchan)).max()]
    out["elementwise"] = float(max(errs))
    out["broadcast_falls_back"] = _cuda.binary(da, cuda.to_device(bchan[:, :, 0]), 0) is None
    # a whole model, device-resident: conv+bn+relu, conv+residual+relu6, pool, flatten, linear
    from test_graph import _tiny_graph
    model = _tiny_graph(np.random.default_rng(3))
    fc.set_backend("cpu")
    xm = rng.standard_normal((2, 4, 9, 7)).astype(np.float32)
    cpu = fc.optimize(model, xm)(xm)
    fc.set_backend("auto")
    gm = fc.optimize(model, xm, backend="cuda")
    assert gm.backend == "cuda"
    ym = gm(xm)
    ymd = gm(cuda.to_device(xm)).copy_to_host()
    out["model_device_resident"] = max(float(np.abs(ym - cpu).max()),
                                       float(np.abs(ymd - cpu).max())) / float(np.abs(cpu).max())
    out["model_fallbacks"] = len(gm.device_fallbacks)
    # steady state: the model's device buffers are reused, returned arrays are fresh
    nbuf = sum(len(b) for b in gm._device_buffers.values())
    y1 = gm(cuda.to_device(xm))
    keep = y1.copy_to_host()
    gm(cuda.to_device(rng.standard_normal(xm.shape).astype(np.float32)))
    out["model_buffers_reused"] = (sum(len(b) for b in gm._device_buffers.values()) == nbuf
                                   and bool(np.array_equal(y1.copy_to_host(), keep)))
    # explain() times the device-resident run: every node on "cuda", the GPU's conv family
    text = gm.explain(xm, repeat=1, roof_gflops=1000.0)
    rows = text.splitlines()[3:-2]
    out["explain_on_device"] = (len(rows) == len(gm.nodes) and all(" cuda " in r for r in rows)
                                and sum(" implicit_gemm " in r for r in rows) == 2)
    more_families(out)
    print(json.dumps(out))



def more_families(out):
    """direct, Winograd F2/F4, sparse CSR and int8 (dp4a) kernels against the CPU results."""
    import fastconv as fc
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 5, 7, 6)).astype(np.float32)
    w3 = rng.standard_normal((6, 5, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    res = rng.standard_normal((2, 6, 7, 6)).astype(np.float32)
    e = ref.conv2d(x, w3, b, 1, 1) + res
    e = np.maximum(e, 0)
    for algo in ("direct", "winograd_f2x2_3x3", "winograd_f4x4_3x3"):
        y = fc.conv2d(x, w3, b, 1, 1, activation="relu", residual=res, algo=algo, backend="cuda")
        out[f"cuda_{algo}"] = float(np.abs(y - e).max() / np.abs(e).max())
    ws = w3.copy()
    ws[rng.random(ws.shape) < 0.7] = 0
    e = np.maximum(ref.conv2d(x, ws, b, 2, 1), 0)
    y = fc.sparse_conv2d(x, ws, b, 2, 1, activation="relu", backend="cuda")
    out["cuda_sparse"] = float(np.abs(y - e).max() / np.abs(e).max())
    for xdt in ("uint8", "int8"):
        xq, sx, zx = fc.quantize_tensor(x, dtype=xdt)
        wq, sw, _ = fc.quantize_tensor(rng.standard_normal((6, 5, 3, 3)).astype(np.float32),
                                       axis=0)
        e = ref.int8_conv2d(xq, int(zx), sx, wq, sw, b, 1, 1, 1, 1, "relu6")
        y = fc.int8_conv2d(xq, sx, zx, wq, sw, b, 1, 1, activation="relu6", backend="cuda")
        eq = ref.int8_conv2d(xq, int(zx), sx, wq, sw, b, 1, 1, 1, 1, None, out_scale=0.03,
                             out_zero_point=2)
        yq = fc.int8_conv2d(xq, sx, zx, wq, sw, b, 1, 1, out_scale=0.03, out_zero_point=2,
                            backend="cuda")
        out[f"cuda_int8_{xdt}_exact"] = bool(np.array_equal(y, e) and np.array_equal(yq, eq))
    # one layer's packed dict: another input scale, then a 1x1 map (its taps trimmed)
    wq, sw, _ = fc.quantize_tensor(rng.standard_normal((6, 5, 3, 3)).astype(np.float32), axis=0)
    pk, ok = {}, True
    for xs in (x, 3 * x, np.ascontiguousarray(x[:, :, :1, :1])):
        xq, sx, zx = fc.quantize_tensor(xs, dtype="uint8")
        y = fc.int8_conv2d(xq, sx, zx, wq, sw, b, 1, 1, packed=pk, backend="cuda")
        ok = ok and np.array_equal(y, ref.int8_conv2d(xq, int(zx), sx, wq, sw, b, 1, 1, 1, 1,
                                                      None))
    out["cuda_int8_packed_exact"] = bool(ok)
    a = rng.integers(-128, 128, (9, 37)).astype(np.int8)
    bm = rng.integers(-128, 128, (37, 6)).astype(np.int8)
    out["cuda_int8_gemm_exact"] = bool(np.array_equal(fc.int8_gemm(a, bm, backend="cuda"),
                                                      ref.int8_gemm(a, bm)))


if __name__ == "__main__":
    main()
