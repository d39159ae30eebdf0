"""The CUDA backend: lazy detection, device arrays, and the launches of kernels/cuda.

Nothing here runs at import: ``numba.cuda`` is imported the first time a
backend decision needs it, and a missing package, driver, toolkit or GPU is
recorded once as the reason CUDA is unavailable (``status()``), never raised
at import.  Arrays: NumPy arrays are copied to the device and results copied
back; numba device arrays and any ``__cuda_array_interface__`` object (CuPy,
torch CUDA tensors) are used in place, and results stay on the device (torch
in, torch out).  Transformed weights live in the caller's ``packed`` dict like
the CPU's, so a layer copies its weights to the device once.
"""
import threading
import time

import numpy as np

_state = {"checked": False, "ok": False, "why": None, "cuda": None}
_pool = threading.local()  # a device-resident model's buffers for the node being run

# "auto" offloads a standalone NumPy call only when the modelled GPU time,
# transfers included, beats the CPU's: PCIe copies at H2D_GBS, the kernel at
# GPU_GFLOPS (conservative for these kernels), plus a fixed launch cost.
H2D_GBS = 10.0
GPU_GFLOPS = 5000.0
LAUNCH_S = 30e-6


def use_buffers(buffers, node):
    """Route this thread's output allocations to ``buffers`` (a dict kept by a model) under
    ``node``'s name, so a model in steady state reuses its device memory; None to stop."""
    _pool.buffers, _pool.node = buffers, node


def alloc(shape, dtype=np.float32, tag=""):
    """A device array: from the active model's buffers when one is running, else new."""
    cuda = _cuda()
    buffers = getattr(_pool, "buffers", None)
    shape = tuple(int(d) for d in shape)
    if buffers is None:
        return cuda.device_array(shape, dtype)
    key = (_pool.node, tag, shape, np.dtype(dtype).str)
    buf = buffers.get(key)
    if buf is None:
        buf = buffers[key] = cuda.device_array(shape, dtype)
    return buf


def status():
    """(available, reason when not)."""
    if not _state["checked"]:
        _state["checked"] = True
        try:
            from numba import cuda
            ok = bool(cuda.is_available())
            why = None if ok else ("no usable CUDA driver or GPU (numba.cuda.is_available() "
                                   "is False)")
            _state["cuda"] = cuda if ok else None
        except Exception as exc:  # ImportError, a broken driver or toolkit: all mean no GPU
            ok, why = False, (f"numba-cuda is not usable ({type(exc).__name__}: {exc}); "
                              "install fastconv[cuda12] or fastconv[cuda13]")
        _state["ok"], _state["why"] = ok, why
    return _state["ok"], _state["why"]


def reset():
    """Forget the detection result (tests; after installing a driver)."""
    _state.update(checked=False, ok=False, why=None, cuda=None)


def _cuda():
    ok, why = status()
    if not ok:
        raise ValueError(f"the 'cuda' backend is not available: {why}")
    return _state["cuda"]


def _simulated(a):
    # the CUDA simulator's device arrays carry no __cuda_array_interface__
    return type(a).__name__ == "FakeCUDAArray"


def is_device_array(a):
    if isinstance(a, np.ndarray):
        return False
    return hasattr(a, "__cuda_array_interface__") or _simulated(a)


def device_shape_dtype(a, layer, what="input"):
    if _simulated(a):
        dt, shape = a._ary.dtype, a.shape
    else:
        dt = np.dtype(a.__cuda_array_interface__["typestr"])
        shape = a.__cuda_array_interface__["shape"]
    if dt != np.float32:
        raise TypeError(f"{layer}: {what} dtype must be float32, got {dt} (device array)")
    return tuple(shape)


def to_device(a):
    cuda = _cuda()
    if _simulated(a):
        return a
    if is_device_array(a):
        d = cuda.as_cuda_array(a)
        if not d.is_c_contiguous():
            raise ValueError("device arrays must be C-contiguous")
        return d
    return cuda.to_device(np.ascontiguousarray(a, np.float32))


def wrap(dev, original):
    """The result as the caller's kind of array: NumPy in -> NumPy out, device stays device."""
    if not is_device_array(original):
        return dev.copy_to_host()
    if type(original).__module__.startswith("torch"):
        import torch
        return torch.as_tensor(dev, device=original.device)
    return dev


def cached_weight(packed, key, make):
    """A device copy of a transformed weight, kept in the layer's ``packed`` dict."""
    if packed is not None and key in packed:
        return packed[key]
    d = to_device(make())
    if packed is not None:
        packed[key] = d
    return d


def device_name():
    """The current GPU's name ("CUDA simulator" on the simulator)."""
    cuda = _cuda()
    try:
        name = cuda.get_current_device().name
    except Exception:  # the simulator's device carries no name
        return "CUDA simulator"
    return name.decode() if isinstance(name, bytes) else str(name)


_roof = {}


def sgemm_roof(n=4096, repeat=10):
    """The GPU's fp32 GEMM GFLOP/s as cuBLAS reaches it (PyTorch, TF32 off), measured once
    per process; None when PyTorch with CUDA is not installed (nothing else here calls
    cuBLAS, and fastconv's own GEMM is what is being measured, not a roof)."""
    if "gflops" not in _roof:
        _roof["gflops"] = None
        try:
            import torch
            if torch.cuda.is_available():
                old = torch.backends.cuda.matmul.allow_tf32
                torch.backends.cuda.matmul.allow_tf32 = False
                try:
                    a = torch.randn(n, n, device="cuda")
                    b = torch.randn(n, n, device="cuda")
                    for _ in range(3):
                        a @ b
                    torch.cuda.synchronize()
                    ts = []
                    for _ in range(repeat):
                        t0 = time.perf_counter()
                        a @ b
                        torch.cuda.synchronize()
                        ts.append(time.perf_counter() - t0)
                finally:
                    torch.backends.cuda.matmul.allow_tf32 = old
                _roof["gflops"] = 2.0 * n ** 3 / float(np.median(ts)) / 1e9
        except ImportError:
            pass
    return _roof["gflops"]


def worth_offloading(prob, cpu_seconds):
    """Whether a NumPy-in, NumPy-out conv is modelled faster on the GPU (transfers counted)."""
    ok, _ = status()
    if not ok:
        return False
    nbytes = 4.0 * (prob.n * prob.c * prob.h * prob.w + prob.n * prob.k * prob.oh * prob.ow)
    gpu = LAUNCH_S + nbytes / (H2D_GBS * 1e9) + prob.flops / (GPU_GFLOPS * 1e9)
    return gpu < cpu_seconds


GPU_ALGOS = ("auto", "implicit_gemm", "direct", "depthwise", "winograd_f2x2_3x3",
             "winograd_f4x4_3x3")


def gpu_algo(prob, algo, layer):
    """The CUDA family for ``algo`` ("auto" or a CPU family name with a GPU twin)."""
    depthwise = prob.groups == prob.c and prob.cg == 1
    if algo == "auto":
        return "depthwise" if depthwise else "implicit_gemm"
    if algo in ("im2col", "pointwise", "pointwise_register", "im2col_register",
                "pointwise_packed", "im2col_packed", "implicit_packed", "implicit_pixels",
                "rowdot", "grouped_blocked", "patch_packed",
                "dilated_phases"):
        return "implicit_gemm"  # the GPU family that plays their part
    if algo == "depthwise_blocked":
        algo = "depthwise"  # the GPU's depthwise kernel is already channel-parallel
    if algo not in GPU_ALGOS:
        raise ValueError(f"{layer}: algo={algo!r} has no CUDA kernel; the GPU runs "
                         f"{list(GPU_ALGOS)}")
    if algo == "depthwise" and not depthwise:
        raise ValueError(f"{layer}: algo='depthwise' needs groups == in_channels")
    if algo.startswith("winograd") and ((prob.r, prob.s) != (3, 3) or prob.stride != (1, 1)
                                        or prob.dilation != (1, 1)):
        raise ValueError(f"{layer}: algo={algo!r} needs a 3x3 kernel, stride 1, dilation 1")
    return algo


def conv2d(prob, x, w, b, act, res, packed, algo="auto"):
    """Launch the family serving ``prob`` on device arrays; returns y (N, K, OH, OW) on device."""
    _cuda()  # raises, with the reason, when no GPU is usable
    from .kernels.cuda import depthwise, direct, implicit_gemm
    family = gpu_algo(prob, algo, "conv2d")
    xd = to_device(x)
    bd = cached_weight(packed, "cuda_b", lambda: b) if packed is not None else to_device(b)
    P = prob.oh * prob.ow
    y = alloc((prob.n, prob.k, prob.oh, prob.ow))
    has_res = res is not None
    pt, _, pl, _ = prob.pads
    if family == "direct":
        wd = cached_weight(packed, "cuda_w4", lambda: np.ascontiguousarray(w, np.float32))
        rd = to_device(res) if has_res else y
        total = prob.n * prob.k * P
        direct.direct_conv2d[-(-total // 256), 256](xd, wd, bd, y, rd, has_res, act,
                                                    prob.stride[0], prob.stride[1], pt, pl,
                                                    prob.dilation[0], prob.dilation[1],
                                                    prob.groups)
        return y
    if family.startswith("winograd"):
        return _winograd(prob, xd, w, bd, y, act, res, packed, int(family[10]))
    if family == "depthwise":
        wd = cached_weight(packed, "cuda_dw", lambda: np.ascontiguousarray(
            np.asarray(w, np.float32).reshape(prob.k, prob.r, prob.s)))
        rd = to_device(res) if has_res else y
        grid = (-(-prob.ow // depthwise.TILE), -(-prob.oh // depthwise.TILE), prob.n * prob.k)
        depthwise.depthwise_conv2d[grid, (depthwise.TILE, depthwise.TILE)](
            xd, wd, bd, y, rd, has_res, act, prob.stride[0], prob.stride[1], pt, pl,
            prob.dilation[0], prob.dilation[1])
        return y
    wd = cached_weight(packed, "cuda_w", lambda: np.ascontiguousarray(
        np.asarray(w, np.float32).reshape(prob.k, -1)))
    y3 = y.reshape(prob.n, prob.k, P)
    rd = to_device(res).reshape(prob.n, prob.k, P) if has_res else y3
    g = implicit_gemm
    # 64 x 64 tiles, or 32 x 32 where few channels or pixels would idle most of a 64 tile
    small = prob.kg <= g.SMALL or P * prob.n <= 4 * g.SMALL
    tile = g.SMALL if small else g.TM
    kernel = g.conv2d_implicit_gemm_small if small else g.conv2d_implicit_gemm
    grid = (-(-P // tile), -(-prob.kg // tile), prob.n * prob.groups)
    kernel[grid, (16, 16)](xd, wd, bd, y3, rd, has_res, act, prob.r, prob.s, prob.stride[0],
                           prob.stride[1], pt, pl, prob.dilation[0], prob.dilation[1],
                           prob.groups, prob.ow)
    return y


def linear(x2, w, b, act, packed):
    """y (rows, out) = act(x2 @ w.T + b) as a 1 x rows implicit GEMM over the transposed input."""
    _cuda()  # raises, with the reason, when no GPU is usable
    from .kernels.cuda import implicit_gemm as g
    xd = to_device(x2)
    rows, f = xd.shape
    o = w.shape[0]
    xt = alloc((f, rows), tag="xt")
    g.transpose2d[(-(-f // 32), -(-rows // 32)), (32, 8)](xd, xt)
    wd = cached_weight(packed, "cuda_w", lambda: np.ascontiguousarray(w, np.float32))
    bd = cached_weight(packed, "cuda_b", lambda: b) if packed is not None else to_device(b)
    yt = alloc((1, o, rows), tag="yt")
    grid = (-(-rows // g.TN), -(-o // g.TM), 1)
    g.conv2d_implicit_gemm[grid, (16, 16)](xt.reshape(1, f, 1, rows), wd, bd, yt, yt, False,
                                           act, 1, 1, 1, 1, 0, 0, 1, 1, 1, rows)
    y = alloc((rows, o))
    g.transpose2d[(-(-rows // 32), -(-o // 32)), (32, 8)](yt.reshape(o, rows), y)
    return y


def pool(kind, x, out_shape, *args):
    """max / avg / adaptive pooling of a device array into a new (N, C, OH, OW) device array."""
    _cuda()  # raises, with the reason, when no GPU is usable
    from .kernels.cuda import pooling
    xd = to_device(x)
    y = alloc(out_shape)
    total = int(np.prod(out_shape))
    if total:
        getattr(pooling, kind)[-(-total // 256), 256](xd, y, *args)
    return y


def unary(x, act=0, lo=0.0, hi=0.0, clip=False):
    _cuda()  # raises, with the reason, when no GPU is usable
    from .kernels.cuda import elementwise
    y = alloc(x.shape)
    n = int(np.prod(x.shape))
    if n:
        elementwise.unary[-(-n // 256), 256](x.reshape(n), y.reshape(n), act, np.float32(lo),
                                             np.float32(hi), clip)
    return y


def binary(a, b, op):
    """a (op) b on the device for same shapes, or b of shape (N, C, 1, 1) against a (N, C, H, W);
    None when the shapes need general broadcasting (the caller falls back to the host)."""
    _cuda()  # raises, with the reason, when no GPU is usable
    from .kernels.cuda import elementwise
    sa, sb = tuple(a.shape), tuple(b.shape)
    per_channel = False
    if sa != sb:
        if not (len(sa) == 4 and sb == (sa[0], sa[1], 1, 1)):
            return None
        per_channel = True
    y = alloc(sa)
    n = int(np.prod(sa))
    if n:
        hw = sa[2] * sa[3] if per_channel else 1
        elementwise.binary[-(-n // 256), 256](a.reshape(n), b.reshape(int(np.prod(sb))),
                                              y.reshape(n), op, per_channel,
                                              sa[1] if per_channel else 1, hw)
    return y


def _winograd(prob, xd, w, bd, y, act, res, packed, m):
    """Winograd F(m x m, 3 x 3): the CPU family's filter transform, the GPU's three phases."""
    _cuda()  # raises, with the reason, when no GPU is usable
    from ._algorithms import Winograd
    from .kernels.cuda import winograd as wg
    fam = Winograd(m)
    a = m + 2
    Ud = cached_weight(packed, f"cuda_{fam.name}", lambda: fam.pack(np.asarray(w, np.float32)))
    BT = to_device(fam.BT)
    AT = to_device(fam.AT)
    th, tw = -(-prob.oh // m), -(-prob.ow // m)
    T = prob.n * th * tw
    V = alloc((a * a, prob.c, T), tag="V")
    M = alloc((a * a, prob.k, T), tag="M")
    pt, _, pl, _ = prob.pads
    n1 = prob.n * prob.c * th * tw
    wg.input_transform[-(-n1 // 128), 128](xd, BT, V, pt, pl, m, th, tw)
    grid = (-(-T // wg.TN), -(-prob.kg // wg.TM), a * a * prob.groups)
    wg.batched_gemm[grid, (16, 16)](Ud, V, M, prob.groups)
    has_res = res is not None
    rd = to_device(res) if has_res else y
    n2 = prob.n * prob.k * th * tw
    wg.output_transform[-(-n2 // 128), 128](M, AT, bd, y, rd, has_res, act, th, tw)
    return y


def sparse_conv2d(prob, x, csr, b, act, res, packed):
    """The CSR convolution on the device; csr as fastconv.sparse.csr_conv returns it."""
    cuda = _cuda()
    from .kernels.cuda import sparse
    xd = to_device(x)
    if packed is not None and "cuda_csr" in packed:
        parts = packed["cuda_csr"]
    else:
        parts = tuple(cuda.to_device(np.ascontiguousarray(a)) for a in csr)
        if packed is not None:
            packed["cuda_csr"] = parts
    bd = to_device(b)
    y = alloc((prob.n, prob.k, prob.oh, prob.ow))
    has_res = res is not None
    rd = to_device(res) if has_res else y
    pt, _, pl, _ = prob.pads
    grid = (-(-(prob.oh * prob.ow) // 256), prob.n * prob.k)
    sparse.sparse_conv2d[grid, 256](xd, *parts, bd, y, rd, has_res, act, prob.stride[0],
                                    prob.stride[1], pt, pl)
    return y


def int8_words_input(xp_nhwc, groups):
    """(N, HP, WP, C) uint8 channels-last -> (N, HP, WP, G, Cq) int32 words, each group's
    channels zero-padded to a multiple of four (host side)."""
    n, hp, wp, c = xp_nhwc.shape
    cg = c // groups
    c4 = -(-cg // 4) * 4
    xg = xp_nhwc.reshape(n, hp, wp, groups, cg)
    if c4 != cg:
        xg = np.concatenate([xg, np.zeros((n, hp, wp, groups, c4 - cg), xg.dtype)], axis=4)
    return np.ascontiguousarray(xg).view(np.int32)


def int8_words_weight(wq):
    """(K, Cg, R, S) int8 -> (K, R*S*Cq) int32 words in (r, s, c) order, c padded to 4."""
    k, cg, r, s = wq.shape
    c4 = -(-cg // 4) * 4
    w = np.zeros((k, r, s, c4), np.int8)
    w[..., :cg] = wq.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(w).reshape(k, -1).view(np.int32)


def int8_conv2d(prob, xp_nhwc_u8, wq, wsum, scale, b, zx, act, res, mode, inv_sy, zy, qmin, qmax,
                out_dtype, packed):
    """Launch kernels/cuda/int8.conv2d_int8; returns the host result (N, K, P)."""
    cuda = _cuda()
    from .kernels.cuda import int8
    xw = cuda.to_device(int8_words_input(xp_nhwc_u8, prob.groups))
    k = wq.shape[0]
    if packed is not None and "cuda_int8" in packed:
        ww, wsd = packed["cuda_int8"]
    else:
        ww = cuda.to_device(int8_words_weight(wq))
        wsd = cuda.to_device(np.zeros(k, np.int32) if wsum is None else wsum)
        if packed is not None:
            packed["cuda_int8"] = (ww, wsd)
    # the scales follow the input's scale, which may change from call to call
    scd = cuda.to_device(np.ones(k, np.float32) if scale is None else scale)
    if b is None:
        b = np.zeros(wq.shape[0], np.float32)
    P = prob.oh * prob.ow
    shape = (prob.n, prob.k, P)
    dummy_f = cuda.device_array((1, 1, 1), np.float32)
    y = cuda.device_array(shape, np.float32) if mode == 0 else dummy_f
    yq = cuda.device_array(shape, out_dtype) if mode == 1 else cuda.device_array((1, 1, 1), np.int8)
    ya = cuda.device_array(shape, np.int32) if mode == 2 else cuda.device_array((1, 1, 1), np.int32)
    has_res = res is not None
    rd = to_device(np.ascontiguousarray(res).reshape(shape)) if has_res else dummy_f
    grid = (-(-P // 128), prob.n * prob.k)
    int8.conv2d_int8[grid, 128](xw, ww, wsd, scd, to_device(b), zx, prob.r, prob.s,
                                prob.stride[0], prob.stride[1], prob.dilation[0],
                                prob.dilation[1], act, rd, has_res, y, yq, ya, mode, inv_sy, zy,
                                qmin, qmax)
    return (y, yq, ya)[mode].copy_to_host()
