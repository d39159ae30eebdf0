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
import numpy as np

_state = {"checked": False, "ok": False, "why": None, "cuda": None}

# "auto" offloads a standalone NumPy call only when the modelled GPU time,
# transfers included, beats the CPU's: PCIe copies at H2D_GBS, the kernel at
# GPU_GFLOPS (conservative for these kernels), plus a fixed launch cost.
H2D_GBS = 10.0
GPU_GFLOPS = 5000.0
LAUNCH_S = 30e-6


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


def worth_offloading(prob, cpu_seconds):
    """Whether a NumPy-in, NumPy-out conv is modelled faster on the GPU (transfers counted)."""
    ok, _ = status()
    if not ok:
        return False
    nbytes = 4.0 * (prob.n * prob.c * prob.h * prob.w + prob.n * prob.k * prob.oh * prob.ow)
    gpu = LAUNCH_S + nbytes / (H2D_GBS * 1e9) + prob.flops / (GPU_GFLOPS * 1e9)
    return gpu < cpu_seconds


def conv2d(prob, x, w, b, act, res, packed):
    """Launch the family serving ``prob`` on device arrays; returns y (N, K, OH, OW) on device."""
    cuda = _cuda()
    from .kernels.cuda import depthwise, implicit_gemm
    xd = to_device(x)
    bd = cached_weight(packed, "cuda_b", lambda: b) if packed is not None else to_device(b)
    P = prob.oh * prob.ow
    y = cuda.device_array((prob.n, prob.k, prob.oh, prob.ow), np.float32)
    has_res = res is not None
    pt, _, pl, _ = prob.pads
    if prob.groups == prob.c and prob.cg == 1:
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
    grid = (-(-P // g.TN), -(-prob.kg // g.TM), prob.n * prob.groups)
    g.conv2d_implicit_gemm[grid, (16, 16)](xd, wd, bd, y3, rd, has_res, act, prob.r, prob.s,
                                           prob.stride[0], prob.stride[1], pt, pl,
                                           prob.dilation[0], prob.dilation[1], prob.groups,
                                           prob.ow)
    return y


def linear(x2, w, b, act, packed):
    """y (rows, out) = act(x2 @ w.T + b) as a 1 x rows implicit GEMM over the transposed input."""
    cuda = _cuda()
    from .kernels.cuda import implicit_gemm as g
    xd = to_device(x2)
    rows, f = xd.shape
    o = w.shape[0]
    xt = cuda.device_array((f, rows), np.float32)
    g.transpose2d[(-(-f // 32), -(-rows // 32)), (32, 8)](xd, xt)
    wd = cached_weight(packed, "cuda_w", lambda: np.ascontiguousarray(w, np.float32))
    bd = cached_weight(packed, "cuda_b", lambda: b) if packed is not None else to_device(b)
    yt = cuda.device_array((1, o, rows), np.float32)
    grid = (-(-rows // g.TN), -(-o // g.TM), 1)
    g.conv2d_implicit_gemm[grid, (16, 16)](xt.reshape(1, f, 1, rows), wd, bd, yt, yt, False,
                                           act, 1, 1, 1, 1, 0, 0, 1, 1, 1, rows)
    y = cuda.device_array((rows, o), np.float32)
    g.transpose2d[(-(-rows // 32), -(-o // 32)), (32, 8)](yt.reshape(o, rows), y)
    return y


def pool(kind, x, out_shape, *args):
    """max / avg / adaptive pooling of a device array into a new (N, C, OH, OW) device array."""
    cuda = _cuda()
    from .kernels.cuda import pooling
    xd = to_device(x)
    y = cuda.device_array(out_shape, np.float32)
    total = int(np.prod(out_shape))
    if total:
        getattr(pooling, kind)[-(-total // 256), 256](xd, y, *args)
    return y


def unary(x, act=0, lo=0.0, hi=0.0, clip=False):
    cuda = _cuda()
    from .kernels.cuda import elementwise
    y = cuda.device_array(x.shape, np.float32)
    n = int(np.prod(x.shape))
    if n:
        elementwise.unary[-(-n // 256), 256](x.reshape(n), y.reshape(n), act, np.float32(lo),
                                             np.float32(hi), clip)
    return y


def binary(a, b, op):
    """a (op) b on the device for same shapes, or b of shape (N, C, 1, 1) against a (N, C, H, W);
    None when the shapes need general broadcasting (the caller falls back to the host)."""
    cuda = _cuda()
    from .kernels.cuda import elementwise
    sa, sb = tuple(a.shape), tuple(b.shape)
    per_channel = False
    if sa != sb:
        if not (len(sa) == 4 and sb == (sa[0], sa[1], 1, 1)):
            return None
        per_channel = True
    y = cuda.device_array(sa, np.float32)
    n = int(np.prod(sa))
    if n:
        hw = sa[2] * sa[3] if per_channel else 1
        elementwise.binary[-(-n // 256), 256](a.reshape(n), b.reshape(int(np.prod(sb))),
                                              y.reshape(n), op, per_channel,
                                              sa[1] if per_channel else 1, hw)
    return y
