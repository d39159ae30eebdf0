"""int8: tensors, GEMM and convolution for users who bring their own scales.

* ``quantize_tensor(x, dtype="int8", axis=None)``: symmetric int8 (zero point 0)
  or asymmetric uint8, per tensor or per ``axis`` (per output channel for
  weights), scales from min/max unless given.
* ``int8_gemm(a, b)``: exact int32 ``a @ b`` of int8/uint8 matrices.
* ``int8_conv2d(xq, x_scale, x_zero_point, wq, w_scale, ...)``: convolution of
  a quantized input with per-channel symmetric int8 weights, int32
  accumulation, and the epilogue (zero-point correction, scales, bias,
  residual, relu/relu6, optional requantization to int8/uint8) fused.

All results match ``kernels/reference.py``'s integer reference bit for bit.
"""
import functools
import math
import threading

import numpy as np

from . import _backend, _checks, _cuda, _memory, _runtime, _workspace, planner
from ._algorithms import packed_form as _packed_form
from .functional import _key, conv_problem
from .kernels.cpu import depthwise_int8 as _dw8
from .kernels.cpu import int8 as _int8
from .kernels.cpu import vnni as _vnni

_QTYPES = {"int8": np.int8, "uint8": np.uint8, np.int8: np.int8, np.uint8: np.uint8}
MAX_REDUCTION = 65792  # K * 255 * 128 < 2**31: int32 accumulation cannot overflow


def _qdtype(dtype, layer):
    key = dtype if isinstance(dtype, str) else np.dtype(dtype).type
    if key not in _QTYPES:
        raise ValueError(f"{layer}: dtype must be 'int8' or 'uint8', got {dtype!r}")
    return _QTYPES[key]


def quantize_tensor(x, scale=None, zero_point=None, dtype="int8", axis=None,
                    layer="quantize_tensor"):
    """(q, scale, zero_point): q = saturate(round_half_even(x / scale) + zero_point).

    int8 is symmetric (zero point 0, scale = max|x| / 127); uint8 is asymmetric
    (scale = (max - min) / 255 over a range that includes 0).  ``axis`` gives one
    scale (and zero point) per index of that axis.  Given scales are used as they are.
    """
    xa = np.asarray(_checks.as_float32(x, layer, "input"))
    qt = _qdtype(dtype, layer)
    info = np.iinfo(qt)
    red = None
    if axis is not None:
        if not -xa.ndim <= axis < xa.ndim:
            raise ValueError(f"{layer}: axis {axis} is out of range for a {xa.ndim}-D input")
        axis = axis % xa.ndim
        red = tuple(i for i in range(xa.ndim) if i != axis)
    if scale is None:
        if xa.size == 0:
            raise ValueError(f"{layer}: cannot derive a scale from an empty tensor")
        if not np.all(np.isfinite(xa)):
            raise ValueError(f"{layer}: input holds NaN or infinity; no scale fits it")
        lo = np.minimum(xa.min(axis=red), 0).astype(np.float64)
        hi = np.maximum(xa.max(axis=red), 0).astype(np.float64)
        scale, zero_point = scales_for_range(lo, hi, qt)
    else:
        scale = np.asarray(scale, np.float32)
        if np.any(scale <= 0) or not np.all(np.isfinite(scale)):
            raise ValueError(f"{layer}: scale must be positive and finite, got {scale}")
        zero_point = np.zeros_like(scale, np.int32) if zero_point is None else \
            np.asarray(zero_point, np.int32)
        if np.any(zero_point < info.min) or np.any(zero_point > info.max):
            raise ValueError(f"{layer}: zero_point must lie in [{info.min}, {info.max}] for "
                             f"{np.dtype(qt).name}")
    shape = [1] * xa.ndim
    if axis is not None:
        shape[axis] = -1
    s = np.asarray(scale, np.float32).reshape(shape if np.ndim(scale) else ())
    z = np.asarray(zero_point, np.int32).reshape(shape if np.ndim(zero_point) else ())
    q = np.rint(xa / s) + z
    return np.clip(q, info.min, info.max).astype(qt), np.asarray(scale, np.float32), \
        np.asarray(zero_point, np.int32)


def scales_for_range(lo, hi, qt):
    """(scale, zero_point) mapping [lo, hi] (which contains 0) onto qt's range."""
    lo = np.asarray(lo, np.float64)
    hi = np.asarray(hi, np.float64)
    if qt is np.int8:
        amax = np.maximum(np.abs(lo), np.abs(hi))
        scale = np.where(amax > 0, amax / 127.0, 1.0)
        return scale.astype(np.float32), np.zeros(np.shape(scale), np.int32)
    span = hi - lo
    scale = np.where(span > 0, span / 255.0, 1.0)
    zp = np.clip(np.rint(-lo / scale), 0, 255)
    return scale.astype(np.float32), zp.astype(np.int32)


def dequantize_tensor(q, scale, zero_point=0, axis=None):
    """float32 (q - zero_point) * scale, per tensor or along ``axis``."""
    q = np.asarray(q)
    shape = [1] * q.ndim
    if axis is not None:
        shape[axis % q.ndim] = -1
    s = np.asarray(scale, np.float32)
    z = np.asarray(zero_point, np.int32)
    s = s.reshape(shape) if s.ndim else s
    z = z.reshape(shape) if z.ndim else z
    return ((q.astype(np.int32) - z) * s).astype(np.float32)


def _int_matrix(a, layer, what, contiguous=True):
    a = np.asarray(a)
    if a.dtype not in (np.int8, np.uint8):
        raise TypeError(f"{layer}: {what} must be int8 or uint8, got {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{layer}: {what} must be 2-D, got shape {a.shape}")
    return np.ascontiguousarray(a) if contiguous else a


def int8_gemm(a, b, layer="int8_gemm", backend=None, packed=None):
    """Exact int32 ``a @ b`` for int8/uint8 ``a`` (M, K) and ``b`` (K, N).

    ``packed``: a dict kept with ``b`` (the weights) where its packed form is cached, as
    layers keep theirs; pass a fresh dict whenever ``b`` changes.  With the form cached,
    ``b`` is not read again (it may be any view, e.g. a layer's (N, K) weight transposed).
    """
    a = _int_matrix(a, layer, "a")
    b = _int_matrix(b, layer, "b", contiguous=False)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"{layer}: inner dimensions differ: a is {a.shape}, b is {b.shape}")
    if a.shape[1] > MAX_REDUCTION:
        raise ValueError(f"{layer}: K={a.shape[1]} could overflow int32 accumulation "
                         f"(at most {MAX_REDUCTION})")
    c = np.empty((a.shape[0], b.shape[1]), np.int32)
    if not c.size:
        return c
    if (backend is not None or _backend._backend == "cuda") and b.dtype == np.int8 and \
            _backend.choose(backend, a, layer) == "cuda":
        # a 1 x M image of K channels against N 1x1 filters, raw int32 accumulators out
        bt = np.ascontiguousarray(b.T)
        shift = a.dtype == np.int8
        au = a.view(np.uint8) ^ np.uint8(0x80) if shift else a
        m, k = a.shape
        prob = conv_problem((1, k, 1, m), (bt.shape[0], k, 1, 1), layer=layer)
        acc = _cuda.int8_conv2d(prob, au[None, None], bt[:, :, None, None], None, None, None, 0, 0,
                                None, 2, np.float32(1), 0, np.float32(0), np.float32(0), np.int32,
                                None)
        c[...] = acc[0].T
        if shift:
            c -= (128 * bt.sum(axis=1, dtype=np.int64)).astype(np.int32)[None, :]
        return c
    with _runtime.kernel_scope(blas=False):
        if _vnni.HAS_VNNI and b.dtype == np.int8 and a.shape[1]:
            # u8 x s8 dot products; a signed a is shifted by 128 and corrected exactly,
            # (a + 128) . b - 128 * sum(b), the correction the accumulators' start
            m, k = a.shape
            wp, offsets = _packed_form(packed, "int8_gemm_vnni", lambda: _pack_gemm(b))
            shift = a.dtype == np.int8
            au = a.view(np.uint8) ^ np.uint8(0x80) if shift else a
            if m % 8 or k % 4:  # zero rows and columns to whole blocks (np.pad: ~14 us)
                padded = np.zeros((m + -m % 8, k + -k % 4), np.uint8)
                padded[:m, :k] = au
                au = padded
            _int8.gemm_u8s8_vnni(au, wp, b.shape[1], c, offsets[int(shift)],
                                 _int8_workspace(np.int32, (_runtime.max_threads(), 272)),
                                 *_gemm_blocking(m, au.shape[1], b.shape[1],
                                                 _runtime.get_num_threads()))
        else:
            _int8.gemm_int8(a, np.ascontiguousarray(b.T), c)
    return c


def _pack_gemm(b):
    """int8 b (K, N) as the VNNI GEMM reads it: (pack_vnni's layout of b.T, made from b
    as it is, and the column offsets its accumulators start from
    for a uint8 a and for a shifted int8 one (zeros, -128 * the column sums), each padded
    to whole 32-column pairs).  Called inside int8_gemm's kernel scope."""
    n = b.shape[1]
    wp, sums = _pack_vnni_groups(b[None])   # (int8_gemm's kernel scope is open)
    offsets = np.zeros((2, -(-n // 32) * 32), np.int32)
    offsets[1, :n] = -128 * sums[0]
    return wp, offsets


GEMM_KC = 1024     # reduction bytes per chunk of the VNNI GEMM (a pair's 32 KiB of weights)
GEMM_GROUP = 8     # pairs of 16-column weight blocks per task (256 columns)
GEMM_BAND = 16     # 8-row blocks of a per task (128 rows)


def _gemm_blocking(m, kp, n, threads):
    """(kc, group, band) of the VNNI GEMM (int8.gemm_u8s8_vnni): chunks of GEMM_KC
    reduction bytes, tasks of GEMM_GROUP column pairs x GEMM_BAND row blocks, smaller
    where that gives fewer than two tasks a thread (columns first: the rows' band is
    what each pair's weights are reused over).  1024^3 ran 780-840 GOP/s with kc 1024 or
    2048 and any group of 1-8 pairs and band of 4-16 blocks, 700-750 with kc 256."""
    npairs = -(-n // 32)
    blocks = -(-m // 8)
    band = min(GEMM_BAND, blocks)
    want = 2 * threads
    nbands = -(-blocks // band)
    group = min(GEMM_GROUP, npairs, max(1, npairs * nbands // want))
    if -(-npairs // group) * nbands < want:   # too few columns: thinner bands
        band = max(1, min(band, blocks * -(-npairs // group) // want))
    return GEMM_KC, group, band


_ACTS = {None: 0, "relu": 1, "relu6": 2}
_DUMMY_F = np.zeros((1, 1, 1), np.float32)
_DUMMY_Q = np.zeros((1, 1, 1), np.int8)
_NO_REQUANT = (np.float32(1), 0, np.float32(0), np.float32(0))
_RANGES = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}
_geometry_cache = {}
_GEOMETRY_CACHE_MAX = 4096


def _geometry(x_shape, w_shape, stride, padding, dilation, groups, layer, trim):
    """(ConvProblem, packed width, pixels per task, output channels per task, taps, px) of
    an int8 conv, validated and worked out once per distinct signature and thread count (the
    Python of a call had been ~30 us against ~5 for a float layer's).  With ``trim``,
    taps that only ever read padding are cut (planner.live_taps: a 3x3 on a 1x1 map
    runs its centre tap): taps is then the window (r0, r1, s0, s1) kept and the problem
    the trimmed one, else None.  px: (pixels, channels) per task of the pixel-vector 1x1
    kernel where it applies (_px_applies, an NCHW input), else None.  rows: the (rows,
    classes) of _int8_rows where the VNNI conv runs row blocks (tile and kblock are then
    its split), else None."""
    threads = _runtime.get_num_threads()
    vnni = _vnni.HAS_VNNI
    key = (x_shape, tuple(w_shape), _key(stride), _key(padding), _key(dilation), _key(groups),
           threads, trim, vnni)
    hit = None if None in key else _geometry_cache.get(key)
    if hit is None:
        prob = conv_problem(x_shape, w_shape, stride, padding, dilation, groups, layer)
        taps = planner.live_taps(prob) if trim else None
        if taps is not None:
            prob = planner.trimmed(prob, taps)
        width = -(-(prob.cg * prob.r * prob.s) // 4) * 4
        if vnni and _taps_in_place(prob, width):
            tile, kblock = _taps_split(prob, threads)
        else:
            tile = _int8_tile(prob, width, threads)
            kblock = _int8_kblock(prob, tile, threads)
        rows = _int8_rows(prob, threads, tile, kblock) if vnni else None
        if rows is not None:  # whole output rows per task
            rows, tile, kblock = rows[:3], rows[3], rows[4]
        px = _px_plan(prob, threads) if vnni and trim and _px_applies(prob) else None
        hit = (prob, width, tile, kblock, taps, px, rows)
        if None not in key:
            if len(_geometry_cache) >= _GEOMETRY_CACHE_MAX:
                _geometry_cache.clear()
            _geometry_cache[key] = hit
    return hit


def pack_weights(wq, w_scale, layer="int8_conv2d"):
    """(weights as the int8 kernel reads them, int32 row sums, float32 per-channel scales).

    Portable kernel: (K, R*S*Cg) in (r, s, c) order.  VNNI kernel: pack_vnni of that.
    """
    wq = np.asarray(wq)
    if wq.dtype != np.int8 or wq.ndim != 4:
        raise TypeError(f"{layer}: weight must be a 4-D int8 array (symmetric), got "
                        f"{wq.dtype} {wq.shape}")
    k = wq.shape[0]
    sw = np.broadcast_to(np.asarray(w_scale, np.float32).reshape(-1), (k,)) \
        if np.size(w_scale) in (1, k) else None
    if sw is None:
        raise ValueError(f"{layer}: w_scale must be a scalar or have {k} elements (one per "
                         f"output channel), got {np.size(w_scale)}")
    wmat = np.ascontiguousarray(wq.transpose(0, 2, 3, 1).reshape(k, -1))
    wsum = wmat.sum(axis=1, dtype=np.int64).astype(np.int32)
    return wmat, wsum, np.ascontiguousarray(sw)


def pack_px(wmat):
    """(K, C) int8 -> the pixel-vector 1x1 kernel's weights: output channels padded to
    vnni.PX_MC and the reduction to a multiple of 4 with zeros, laid out
    (K8/8, C4/4, 8, 4), so each step of a strip is 8 four-byte words, one per channel
    (kernels/cpu/vnni.py, _make_px)."""
    k, c = wmat.shape
    mc = _vnni.PX_MC
    k8, c4 = -(-k // mc) * mc, -(-c // 4) * 4
    w = np.zeros((k8, c4), np.int8)
    w[:k, :c] = wmat
    w = w.reshape(k8 // mc, mc, c4 // 4, 4).transpose(0, 2, 1, 3)
    return _laid_out(w)


def pack_vnni(wmat, groups):
    """(K, width0) int8 -> (flat packed weights, width): per group, output channels padded to
    16 and the reduction to a multiple of 4, laid out (Kg16/16, width/4, 16, 4) so one
    64-byte load holds four reduction bytes of 16 channels (kernels/cpu/vnni.py)."""
    k, width0 = wmat.shape
    with _runtime.kernel_scope(blas=False):
        wp, _ = _pack_vnni_groups(np.asarray(wmat).reshape(groups, k // groups, width0)
                                  .transpose(0, 2, 1))
    return wp, -(-width0 // 4) * 4


def _pack_vnni_groups(b):
    """(flat packed weights, column sums (G, N) int64) of int8 b (G, K, N): int8.pack_vnni_b
    into memory every call reads (_memory).  Call inside a kernel scope."""
    g, k, n = b.shape
    wp = _memory.empty((g, -(-n // 16), -(-k // 4), 16, 4), np.int8)
    sums = np.empty((g, n), np.int64)
    _int8.pack_vnni_b(b, wp, sums)
    return wp.reshape(-1), sums


def _laid_out(w):
    """w's elements in its (transposed) index order, flat, in memory every call reads
    (_memory: on huge pages where large)."""
    out = _memory.empty(w.shape, w.dtype)
    out[...] = w
    return out.reshape(-1)


def int8_conv2d(xq, x_scale, x_zero_point, wq, w_scale, bias=None, stride=1, padding=0,
                dilation=1, groups=1, activation=None, residual=None, out_scale=None,
                out_zero_point=0, out_dtype="int8", packed=None, layer="int8_conv2d", out=None,
                nhwc=None, backend=None):
    """Convolution of a quantized input (int8 or uint8, NCHW) with int8 weights.

    y = act((acc - x_zero_point * sum(wq[k])) * x_scale * w_scale[k] + bias[k] (+ residual)),
    acc the exact int32 sum of products.  Float32 out, or with ``out_scale`` the
    requantized int8/uint8 result.  ``packed``: a dict kept with the weights where
    the packed form is cached (``pack_weights``), and with it what a call works out
    once for its input shape and arguments (_Int8Call), so a repeated call only checks
    the bias, residual and output and launches its kernels.  ``nhwc``: the input already
    laid out channels-last and padded (``quantize_nhwc``), which ``xq`` then only
    describes.  Without it, kernel taps that only ever read padding are left out (the
    same integers: each multiplied zero-point padding, which the row-sum correction
    cancels).
    """
    xa = xq if type(xq) is np.ndarray else np.asarray(xq)
    call = key = calls = None
    if packed is not None:
        calls = packed.setdefault(_CALLS, {})
        try:  # the scales and zero points as numbers (they may come as 0-d arrays)
            key = (xa.shape, xa.dtype, float(x_scale), int(x_zero_point),
                   getattr(wq, "shape", None), _key(stride), _key(padding), _key(dilation),
                   _key(groups), activation, None if out_scale is None else float(out_scale),
                   int(out_zero_point), out_dtype, nhwc is None, backend, layer,
                   _backend._backend, _runtime.get_num_threads(), _vnni.HAS_VNNI)
            call = calls.get(key)
        except (TypeError, ValueError):  # a malformed or unhashable argument: the checks
            key = None                    # below name it
    if call is None:
        call = _Int8Call(xa, x_scale, x_zero_point, wq, w_scale, stride, padding, dilation,
                         groups, activation, out_scale, out_zero_point, out_dtype, packed,
                         layer, nhwc, backend)
        if key is not None:
            if len(calls) >= _CALLS_MAX:
                calls.clear()
            calls[key] = call
    return call.run(xa, bias, residual, out, nhwc)


_CALLS = "int8_conv2d:calls"   # packed's dict of _Int8Call by call signature
_CALLS_MAX = 16


class _Int8Call:
    """An int8_conv2d call worked out for one input shape and dtype, scales, zero points,
    geometry, activation, output type, thread count and backend: the checks of those
    arguments, the kernel's split, the weights' packed forms and the constant kernel
    arguments.  run() then checks only what may change between calls (bias, residual,
    out), moves the input to channels-last and launches the conv.

    Kept in the layer's ``packed`` dict: the Python of a call had been ~40 us against a
    ~0.3 ms ResNet-50 3x3 layer at batch 1, most of it NumPy calls made slow by the
    kernel having just flushed the caches."""

    __slots__ = ("prob", "layer", "k", "P", "quant", "qt", "gpu", "vnni", "flip", "zx", "dw",
                 "wq", "wmat", "wsum", "scale", "act", "wpx", "vp", "rows", "packed", "tile",
                 "wdw", "dwb", "fx", "wfx", "cpad",
                 "kblock", "px", "requant", "out_shape", "zero_bias")

    def __init__(self, xa, x_scale, x_zero_point, wq, w_scale, stride, padding, dilation,
                 groups, activation, out_scale, out_zero_point, out_dtype, packed, layer,
                 nhwc, backend):
        if xa.dtype not in (np.int8, np.uint8):
            raise TypeError(f"{layer}: input must be int8 or uint8 (quantized), got {xa.dtype}")
        if xa.ndim != 4:
            raise ValueError(f"{layer}: input must be 4-D (N, C, H, W), got shape {xa.shape}")
        lo, hi = _RANGES[xa.dtype]
        zx = int(x_zero_point)
        if not lo <= zx <= hi:
            raise ValueError(f"{layer}: x_zero_point {zx} is outside {xa.dtype}'s range")
        sx = float(x_scale)
        if not (sx > 0 and np.isfinite(sx)):
            raise ValueError(f"{layer}: x_scale must be positive and finite, got {x_scale}")
        self.gpu = gpu = (backend is not None or _backend._backend == "cuda") and \
            _backend.choose(backend, xa, layer) == "cuda"
        prob, width, tile, kblock, taps, px, rows = _geometry(
            xa.shape, np.shape(wq), stride, padding, dilation, groups, layer, nhwc is None)
        self.cpad = None
        if not gpu and nhwc is None and _cpad_applies(prob, px) and \
                getattr(wq, "dtype", None) == np.int8:
            # input channels padded to a multiple of 4 (zero-point channels, zero weights):
            # the problem the VNNI conv runs, its input move writing the extra channels
            self.cpad = c4 = -(-prob.c // 4) * 4
            if packed is not None:   # the padded weights' forms apart from the layer's own
                packed = packed.setdefault("int8_cpad", {})
            w0 = wq
            wq = _packed_form(packed, "weight", lambda: np.pad(
                np.asarray(w0), ((0, 0), (0, c4 - prob.c), (0, 0), (0, 0))))
            prob, width, tile, kblock, taps, px, rows = _geometry(
                (prob.n, c4, prob.h, prob.w), wq.shape, stride, padding, dilation, groups,
                layer, True)
        if taps is not None:
            r0, r1, s0, s1 = taps
            wq = np.ascontiguousarray(np.asarray(wq)[:, :, r0:r1, s0:s1])
            if packed is not None:  # the sliced weights' forms apart from the whole ones'
                packed = packed.setdefault(("int8_trimmed", taps), {})
        wmat, wsum, sw = _packed_form(packed, "int8", lambda: pack_weights(wq, w_scale, layer))
        crs = prob.cg * prob.r * prob.s
        if crs > MAX_REDUCTION:
            raise ValueError(f"{layer}: Cg*R*S={crs} could overflow int32 accumulation "
                             f"(at most {MAX_REDUCTION})")
        k = prob.k
        scale = None if packed is None else packed.get("int8_scale")
        if scale is None or scale[0] != sx:
            scale = (sx, (np.float32(sx) * sw).astype(np.float32))
            if packed is not None:
                packed["int8_scale"] = scale
        if activation not in _ACTS:
            raise ValueError(f"{layer}: activation must be None, 'relu' or 'relu6', got "
                             f"{activation!r}")
        self.quant = quant = out_scale is not None
        if quant:
            self.qt = qt = _qdtype(out_dtype, layer)
            qi = np.iinfo(qt)
            if not (float(out_scale) > 0):
                raise ValueError(f"{layer}: out_scale must be positive, got {out_scale}")
            if not qi.min <= int(out_zero_point) <= qi.max:
                raise ValueError(f"{layer}: out_zero_point {out_zero_point} is outside "
                                 f"{np.dtype(qt).name}'s range [{qi.min}, {qi.max}]")
            self.requant = (np.float32(1.0 / float(out_scale)), int(out_zero_point),
                            np.float32(qi.min), np.float32(qi.max))
        else:
            self.qt, self.requant = np.float32, _NO_REQUANT
        self.vnni = vnni = _vnni.HAS_VNNI and not gpu
        # VNNI multiplies unsigned activations: x + 128 with zero point zx + 128 gives the
        # same integers after the zero-point correction
        # a depthwise conv from the NCHW planes (its own kernel reads int8 as it is)
        self.dw = dw = not gpu and nhwc is None and _dw_applies(prob)
        # a stem-like conv (Cg % 4) on the float kernels, its sums exact (_fx_applies):
        # fx is then the float family to ask for
        self.fx = fx = _fx_algo(prob) if not gpu and nhwc is None and not dw and \
            _fx_applies(prob) else None
        self.flip = (vnni or gpu) and xa.dtype == np.int8 and nhwc is None and not dw \
            and fx is None
        if self.flip:
            zx += 128
        P = prob.oh * prob.ow
        run = prob.n and P
        self.vp = self.wpx = None
        self.px = px = px if vnni else None   # 1x1 stride 1: pixels in the lanes, from NCHW
        if px is not None and run:
            self.wpx = _packed_form(packed, "int8_px", lambda: pack_px(wmat))
        elif vnni and run and not dw:
            self.vp = _packed_form(packed, "int8_vnni", lambda: pack_vnni(wmat, prob.groups))
        # the depthwise kernel's filters: (C, 1, R, S) float32 integers (its sums are exact)
        self.wdw = _packed_form(packed, "int8_dw", lambda: wmat.astype(np.float32).reshape(
            prob.k, 1, prob.r, prob.s)) if dw and run else None
        self.dwb = _dw_blocked(prob, self.wdw, packed) if dw and run else None
        self.wfx = None
        if fx is not None and run:   # the float kernels' weights: the int8 ones as floats
            self.wfx = _packed_form(packed, "int8_fx", lambda: np.ascontiguousarray(
                wmat.reshape(prob.k, prob.r, prob.s, prob.cg).transpose(0, 3, 1, 2),
                np.float32))
        self.rows = _NO_ROWS
        if self.vp is not None and rows is not None:
            # the sums per class, keyed by the classes: another map height of the same
            # layer can number them differently
            sums = _packed_form(packed, ("int8_row_sums", rows[1]),
                                lambda: _row_sums(wmat, prob, rows[1]))
            colm, zc = _NO_ROWS[2:]
            if rows[2] is not None:   # seven-pixel blocks, the end columns' taps left out
                colm = _edge_masks(rows[1], rows[2], prob.s)
                zc = (np.int64(zx) * _packed_form(
                    packed, ("int8_edge_sums", rows[1], rows[2]),
                    lambda: _edge_sums(wmat, prob, rows[1], rows[2]))).astype(np.int32)
            self.rows = (rows[0], (np.int64(zx) * sums).astype(np.int32), colm, zc)
        self.prob, self.layer, self.k, self.P, self.zx = prob, layer, k, P, zx
        self.wq, self.wmat, self.wsum = wq, wmat, wsum
        self.scale, self.act = scale[1], _ACTS[activation]
        self.packed, self.tile, self.kblock = packed, tile, kblock
        self.out_shape = (prob.n, k, prob.oh, prob.ow)
        self.zero_bias = _workspace.zeros(k)

    def run(self, xa, bias, residual, out, nhwc):
        prob, layer, k, P, quant = self.prob, self.layer, self.k, self.P, self.quant
        b = self.zero_bias if bias is None else _checks.as_float32(bias, layer, "bias", 1)
        if b.shape != (k,):
            raise ValueError(f"{layer}: bias must have {k} elements, got {b.shape[0]}")
        res, has_res = _DUMMY_F, False
        if bias is not None and b is not bias:
            _runtime.unrecordable()   # a converted copy: a replay would read the old one
        if residual is not None:
            res = _checks.as_float32(residual, layer, "residual")
            if res is not residual:
                _runtime.unrecordable()
            if res.shape != self.out_shape:
                raise ValueError(f"{layer}: residual must have shape {self.out_shape}, "
                                 f"got {res.shape}")
            res, has_res = res.reshape(prob.n, k, P), True
        if out is None:
            _runtime.unrecordable()   # a new output every call
        else:
            if not isinstance(out, np.ndarray) or out.dtype != self.qt or \
                    not out.flags.c_contiguous or not out.flags.writeable or \
                    out.shape != self.out_shape:
                raise ValueError(f"{layer}: out must be a writeable C-contiguous "
                                 f"{np.dtype(self.qt)} array of shape {self.out_shape}")
        if quant:
            yq = np.empty((prob.n, k, P), self.qt) if out is None else out.reshape(prob.n, k, P)
            y = _DUMMY_F
        else:
            y = np.empty((prob.n, k, P), np.float32) if out is None else \
                out.reshape(prob.n, k, P)
            yq = _DUMMY_Q
        inv, zy, qmin, qmax = self.requant
        zx, px, vp = self.zx, self.px, self.vp
        if self.flip:
            _runtime.unrecordable()   # a NumPy pass
            xa = (xa.view(np.uint8) ^ np.uint8(0x80))
        pt, pb, pl, pr = prob.pads
        run = prob.n and P
        if (px is not None or self.dw or self.fx) and run and not xa.flags.c_contiguous:
            _runtime.unrecordable()
            xa = np.ascontiguousarray(xa)
        with _runtime.kernel_scope(blas=False):
            # channels last, padded with the zero point: one parallel pass over the int8
            # input (or, from a model, the float input quantized on the way: quantize_nhwc)
            move = _NO_MOVE
            if self.dw and run:   # NCHW planes in, no layout move
                (sh, sw_), (dh, dw_) = prob.stride, prob.dilation
                if self.dwb is not None:   # 16-channel blocks
                    wt, offs, band, workspaces, hp, wp = self.dwb
                    _runtime.launch(_dw8.depthwise_int8_blocked, xa, wt, np.int32(zx),
                                    self.scale, b, self.act, res, has_res, y, yq, quant, inv,
                                    zy, qmin, qmax, prob.r, sh, sw_, pt, pl, hp, wp, dh, dw_,
                                    prob.oh, prob.ow, offs, *workspaces(), band,
                                    _dw8_block_planes(prob, has_res))
                else:
                    _runtime.launch(_dw8.depthwise_int8, xa, self.wdw, np.int32(zx),
                                    self.scale, b, self.act, res, has_res, y, yq, quant, inv,
                                    zy, qmin, qmax, sh, sw_, dh, dw_, pt, pl, prob.oh,
                                    prob.ow, *_dw8_workspaces(prob, yq.dtype))
                run = False
            if self.fx is not None and run:
                self._float_conv(xa, b, res, has_res, y, yq)
                run = False
            if nhwc is not None or px is not None or not run:   # (an empty problem: no move)
                xp = nhwc
            else:
                xp = _int8_workspace(xa.dtype, (prob.n, prob.h + pt + pb, prob.w + pl + pr,
                                                prob.c), "nhwc")
                if not xa.flags.c_contiguous:
                    _runtime.unrecordable()
                    xa = np.ascontiguousarray(xa)
                src, dst = _as_rows(xa, xp, prob.pads)
                if self.vnni and not self.gpu:  # in the conv's own call
                    move = (True, src, dst, pt, pl)
                else:
                    _runtime.launch(_int8.nhwc_padded, src, dst, pt, pl, xa.dtype.type(zx))
            if self.gpu and run:
                _runtime.unrecordable()   # runs on the device
                mode = 1 if quant else 0
                res_arr = None if not has_res else res
                host = _cuda.int8_conv2d(prob, xp, np.asarray(self.wq), self.wsum, self.scale,
                                         b, zx, self.act, res_arr, mode, inv, zy, qmin, qmax,
                                         yq.dtype if quant else np.float32, self.packed)
                (yq if quant else y)[...] = host
            elif run:
                nth = _runtime.max_threads()
                common = (zx, prob.ow, prob.stride[0], prob.stride[1], prob.dilation[0],
                          prob.dilation[1], prob.groups, prob.r, prob.s, self.act, res,
                          has_res, y, yq, quant, inv, zy, qmin, qmax, self.tile)
                if px is not None:
                    cols = _int8_workspace(np.uint8, (nth, 4 * -(-prob.c // 4) *
                                                      -(-px[0] // 64) * 64), "panel")
                    _runtime.launch(_int8.conv1x1_int8_px, xa, self.wpx, self.wsum, self.scale,
                                    b, zx, self.act, res, has_res, y, yq, quant, inv, zy, qmin,
                                    qmax, px[0], px[1], cols)
                elif self.vnni:
                    cols = _int8_workspace(xp.dtype, (nth, (self.tile + 8) * vp[1]))
                    _runtime.launch(_int8.conv2d_int8_vnni, xp, vp[0], self.wsum, self.scale, b,
                                    *common, vp[1], cols, self.kblock, *self.rows, *move)
                else:
                    cols = _int8_workspace(xp.dtype, (nth, self.tile * self.wmat.shape[1]))
                    _runtime.launch(_int8.conv2d_int8, xp, self.wmat, self.wsum, self.scale, b,
                                    *common, cols)
        out_arr = yq if quant else y
        return out_arr.reshape(self.out_shape)

    def _float_conv(self, xa, b, res, has_res, y, yq):
        """The conv on the float kernels: x - zx as float32 (float_planes), the planner's
        float conv of it with the int8 filters as floats and no bias (its sums are the
        exact integers acc - zx * wsum: _fx_applies), then _finish (finish_planes)."""
        from . import functional as F
        prob = self.prob
        xf = _workspace.get("int8_fx_in", (prob.n, prob.c, prob.h, prob.w))
        acc = _workspace.get("int8_fx_sums", self.out_shape)
        _runtime.launch(_int8.float_planes, xa.reshape(-1), xf.reshape(-1),
                        np.float32(self.zx))
        F.conv2d(xf, self.wfx, None, prob.stride, prob.pads, prob.dilation, prob.groups,
                 algo=self.fx, packed=_packed_form(self.packed, "int8_fx_conv", dict),
                 layer=self.layer, out=acc)
        inv, zy, qmin, qmax = self.requant
        _runtime.launch(_int8.finish_planes, acc.reshape(prob.n, self.k, self.P), self.scale,
                        b, self.act, res, has_res, y, yq, self.quant, inv, zy, qmin, qmax)


INT8_COLS_BYTES = 16384
PX_PANEL_BYTES = 524288   # a pixel-vector task's interleaved input panel


_NO_ROWS = (np.zeros((0, 3), np.int64), np.zeros((1, 1), np.int32), np.zeros((0, 2), np.int64),
            np.zeros((2, 1, 1), np.int32))
_NO_MOVE = (False, np.zeros((0, 1, 1, 1), np.uint8), np.zeros((0, 1, 1, 1), np.uint8), 0, 0)


def _int8_rows(prob, threads, tile, kblock):
    """(rows, classes, edges, tile, kblock) for the VNNI conv's row blocks
    (int8.conv2d_int8_vnni), or None.  Output row oh runs kernel rows [lo, hi) only,
    those whose input row lies inside the map: rows[oh] = (lo, hi, index of (lo, hi) in
    classes).  A row that skips some gets blocks of its own; runs of rows that skip none
    are cut into 8-pixel blocks across their ends as before; tasks are whole rows.  The
    split (_row_plan) must beat the plain blocks' by 3 % in products and blocks, else
    None: 14x14 3x3 keeps 25 blocks and skips 4.8 % of the products, 7x7 9.5 %; a 4-wide
    row would fill half a block (128@4 ran 0.75x).  Short reductions (Cg*R*S < 1024: 64@8
    ran 0.94x, the bookkeeping of a 24 us call) and stems (Cg % 4) keep the plain ones.

    edges: on maps whose width is a multiple of 7 but not of 8 (ResNet's 7, 14 and 28)
    every row runs in blocks of seven pixels, none across row ends, and edges = (kernel
    columns that read only padding from a row's first pixel, from its last) whose taps
    those pixels leave out (_edge_columns); else None."""
    if not (prob.r > 1 and prob.cg % 4 == 0 and prob.cg * prob.r * prob.s >= 1024):
        return None
    (sh, _), (dh, _), pt = prob.stride, prob.dilation, prob.pads[0]
    rows, classes = [], []
    for oh in range(prob.oh):
        live = [r for r in range(prob.r) if 0 <= oh * sh + r * dh - pt < prob.h]
        span = (live[0], live[-1] + 1) if live else (0, 0)
        if span not in classes:
            classes.append(span)
        rows.append(span + (classes.index(span),))
    seven = prob.ow % 7 == 0 and prob.ow % 8 and prob.r * prob.s < 64   # taps: int64 bits
    edges = _edge_columns(prob) if seven else None
    if classes == [(0, prob.r)] and edges is None:
        return None
    spans = [r[1] - r[0] for r in rows]
    plan = _row_plan(prob, spans, threads, tile, kblock, edges)
    if plan is None:
        return None
    return np.array(rows, np.int64), tuple(classes), edges, plan[0], plan[1]


def _edge_columns(prob):
    """(kernel columns s whose input column is padding for output column 0, those for the
    last output column), as tuples."""
    (_, sw), (_, dw), pl = prob.stride, prob.dilation, prob.pads[2]
    last = (prob.ow - 1) * sw - pl
    return (tuple(s for s in range(prob.s) if s * dw - pl < 0),
            tuple(s for s in range(prob.s) if last + s * dw >= prob.w))


def _edge_masks(classes, edges, S):
    """(classes, 2) int64: per row class (lo, hi), bit (r - lo)*S + s set for the taps of
    the row's first pixel (column 0) and last pixel that edges leave out."""
    return np.array([[sum(1 << ((r - lo) * S + s) for r in range(lo, hi) for s in side)
                      for side in edges] for lo, hi in classes], np.int64).reshape(-1, 2)


def _edge_sums(wmat, prob, classes, edges):
    """(2, len(classes), ceil32(K) + 32) int64: per row class, each output channel's weights
    summed over the taps that the row's first (0) and last (1) pixels leave out (zeros past
    K: the kernel reads whole 32-channel blocks); the caller scales them by the zero point
    and narrows them to int32."""
    per_tap = wmat.reshape(prob.k, prob.r, prob.s, -1).sum(axis=3, dtype=np.int64)
    out = np.zeros((2, len(classes), -(-prob.k // 32) * 32 + 32), np.int64)
    for i, side in enumerate(edges):
        for c, (lo, hi) in enumerate(classes):
            if side:
                out[i, c, :prob.k] = per_tap[:, lo:hi][:, :, list(side)].sum(axis=(1, 2))
    return out


def _row_plan(prob, spans, threads, tile, kb, edges=None):
    """(pixels, channels) per task of the row blocks, or None where the plain 8-pixel
    blocks (tile pixels x kb channels a task) load the busiest thread within 3 % as little.  A
    block costs its share of the kernel rows plus 0.05 (its epilogue), times the task's
    channels (with edges, a row's OW/7 blocks of seven their share of the taps they run);
    the tasks (rows of an image x channel blocks of 32s) dealt out in equal runs of
    consecutive tasks, as Numba does."""
    R, OW, OH, P, kg = prob.r, prob.ow, prob.oh, prob.oh * prob.ow, prob.kg
    taps = R * prob.s

    def rows_cost(a, b):
        if edges is not None:
            return sum((OW * spans[oh] * prob.s - spans[oh] * (len(edges[0]) + len(edges[1])))
                       / (8 * taps) + OW // 7 * 0.05 for oh in range(a, b))
        cost, run = 0.0, 0
        for oh in range(a, b):
            if spans[oh] == R:
                run += OW
            else:
                cost += -(-run // 8) * 1.05 + -(-OW // 8) * (spans[oh] / R + 0.05)
                run = 0
        return cost + -(-run // 8) * 1.05

    def load(costs):
        return _busiest(costs * prob.n * prob.groups, threads)

    def kblocks():
        for parts in range(1, min(8, -(-kg // 32)) + 1):
            kb = -(-(-(-kg // parts)) // 32) * 32
            yield kb, [min(kb, kg - k0) for k0 in range(0, kg, kb)]

    plain = load([1.05 * -(-min(tile, P - p0) // 8) * k
                  for p0 in range(0, P, tile) for k in [min(kb, kg - k0)
                                                        for k0 in range(0, kg, kb)]])
    best = None
    for rpt in range(1, OH + 1):
        if -(-OH // rpt) * prob.n * prob.groups > 64 * threads:
            continue   # many tasks of few rows: the plain blocks
        tiles = [rows_cost(a, min(OH, a + rpt)) for a in range(0, OH, rpt)]
        for kb, kbs in kblocks():
            cost = load([t * k for t in tiles for k in kbs])
            if best is None or cost < best[0] * 0.999:
                best = (cost, rpt * OW, kb)
    if best is None or best[0] > 0.97 * plain:
        return None
    return best[1], best[2]


def _busiest(costs, threads):
    """The busiest thread's load with the tasks' costs dealt out in equal runs of
    consecutive tasks, as Numba's parallel loops deal them."""
    costs = np.asarray(costs, np.float64)
    if not costs.size:   # an empty batch
        return 0.0
    run = -(-costs.size // threads)
    return float(np.add.reduceat(costs, np.arange(0, costs.size, run)).max())


def _row_sums(wmat, prob, classes):
    """(len(classes), K) int32: each output channel's weights summed over the kernel rows
    [lo, hi) of each class (the zero-point correction of a row that skips the others)."""
    per_row = wmat.reshape(prob.k, prob.r, -1).sum(axis=2, dtype=np.int64)
    return np.stack([per_row[:, lo:hi].sum(axis=1) for lo, hi in classes]).astype(np.int32)


def _px_applies(prob):
    """The pixel-vector 1x1 kernel (int8.conv1x1_int8_px) runs this conv: 1x1, stride 1,
    unpadded, ungrouped (on an AVX-512 VNNI CPU: the caller checks)."""
    return (prob.r == 1 and prob.s == 1 and tuple(prob.stride) == (1, 1) and prob.groups == 1
            and not any(prob.pads))


def _dw8_workspaces(prob, qt):
    """The int8 depthwise plane kernel's HP, WP (the padded plane its taps read) and
    per-thread scratch: that plane and its sums, (threads, HP*WP) and (threads, OH*WP)
    float32, and (threads, OH*WP) of the output's integer type qt."""
    (sh, sw), (dh, dw), (pt, _, pl, _) = prob.stride, prob.dilation, prob.pads
    hp = max(prob.h + pt, (prob.oh - 1) * sh + (prob.r - 1) * dh + 1)
    wp = max(prob.w + pl, (prob.ow - 1) * sw + (prob.s - 1) * dw + 1)
    threads = _runtime.max_threads()
    return (hp, wp, _workspace.per_thread("int8_dw_plane", threads, (hp * wp,)),
            _workspace.per_thread("int8_dw_sums", threads, (prob.oh * wp,)),
            _int8_workspace(qt, (threads, prob.oh * wp), "dw_out"))


def _dw_blocked(prob, wdw, packed):
    """(filters, pixel offsets, band, workspaces, HP, WP) for the int8 depthwise kernel's
    16-channel-block form, where it runs this conv (the float depthwise_blocked kernel's
    geometry: a square 3x3, 5x5 or 7x7 filter, planes of >= 16 pixels in and out), else
    None: the plane-a-task form.  On MobileNetV2's layers the blocks took 0.3-0.9x the
    planes' time (a plane's short rows and tap loops against one vector FMA a tap for 16
    channels)."""
    from . import _algorithms
    from .kernels.cpu import depthwise as _depthwise
    if not ((prob.r, prob.s) in ((3, 3), (5, 5), (7, 7)) and prob.h * prob.w >= 16
            and prob.oh * prob.ow >= 16):
        return None
    pt, pb, pl, pr = prob.pads
    hp, wp = prob.h + pt + pb, prob.w + pl + pr

    def pack():
        wt = _memory.empty((-(-prob.k // 16), prob.r * prob.s, 16), np.float32)
        _depthwise.pack_blocked(wdw, wt)
        return wt
    wt = _packed_form(packed, "int8_dw_blocked", pack)
    offs, band, workspaces = _algorithms._blocked_setup(prob, hp, wp, 16, "depthwise")
    return wt, offs, band, workspaces, hp, wp


def _dw8_block_planes(prob, has_res):
    """The blocked int8 depthwise kernel's per-thread float32 planes of a block's sums,
    (threads, 16*OH*OW), which only a conv with a residual goes through (else one float a
    thread: the kernel transposes its finished pixel vectors straight into the output)."""
    return _workspace.per_thread("int8_dw_block_out", _runtime.max_threads(),
                                 (16 * prob.oh * prob.ow if has_res else 1,))


def _cpad_applies(prob, px):
    """The VNNI conv runs this conv with its input channels padded to a multiple of 4
    (int8_conv2d; on an AVX-512 VNNI CPU, not the GPU: the caller checks): an ungrouped
    conv of 2 or more input channels, not a multiple of 4, that is not the pixel-vector
    1x1 (px: it reads NCHW planes).  The move into the padded channels-last layout writes
    the extra channels (the zero point, or copies of the last channel where it moves four
    channels a pixel at once) and their weights are zero, so the sums are the same
    integers; the kernel then reads whole 4-byte steps in place instead of gathering
    columns byte by byte.  On an RGB image (uint8 out, 2 threads): ResNet's 7x7/2 -> 64
    0.67 ms on the float kernels (_fx_applies) -> 0.33, VGG's 3x3/1 -> 64 0.84 -> 0.53,
    5x5/2 0.40 -> 0.24, MobileNetV2's 3x3/2 -> 32 0.15 -> 0.13.  One channel stays on the
    float kernels: padded, it would multiply four times the products."""
    return (_vnni.HAS_VNNI and prob.groups == 1 and prob.c % 4 != 0 and prob.c > 1
            and px is None)


def _fx_applies(prob):
    """Whether int8_conv2d runs this conv on the float kernels (_Int8Call._float_conv): a
    conv whose groups have a number of input channels that is not a multiple of 4 (an RGB
    stem), which the int8 kernels gather column by column, with at most MAX_TAPS products
    a sum, so that float32 holds every partial sum exactly (depthwise_int8.MAX_TAPS: each
    product at most 255 * 128).  ResNet-50's 7x7 stem on a uint8 image: 1.5 ms gathered,
    0.8 this way (the fp32 conv alone 0.64)."""
    return prob.cg % 4 != 0 and prob.cg * prob.r * prob.s <= _dw8.MAX_TAPS


def _fx_algo(prob):
    """The float conv family for _float_conv, named so that the call never replans: the
    planner's, unless that is a Winograd one (its transforms are not sums of the
    products), then the packed im2col."""
    name = planner.plan(prob).algorithm.name
    return "im2col_packed" if "winograd" in name else name


def _dw_applies(prob):
    """The int8 depthwise kernel (kernels/cpu/depthwise_int8.py) runs this conv: one input
    and one output channel a group, a filter of at most MAX_TAPS taps (its float32 sums
    exact).  The GEMM kernels had run MobileNetV2's 144@56 in 11 ms, this one in ~0.3."""
    return (prob.cg == 1 and prob.kg == 1 and prob.groups > 1
            and prob.r * prob.s <= _dw8.MAX_TAPS)


def planes_read(x_shape, w_shape, stride, pads, dilation, groups, layer):
    """Whether int8_conv2d reads this conv's uint8 input as NCHW planes on this CPU (the
    pixel-vector 1x1 kernel, _geometry's px, the depthwise kernel or, for a stem, the
    float kernels: _fx_applies), so a model quantizes its float input in place
    (quantize_nchw) rather than channels-last (quantize_nhwc)."""
    if _backend._backend == "cuda":
        return False
    geo = _geometry(tuple(x_shape), w_shape, stride, pads, dilation, groups, layer, True)
    return geo[5] is not None or _dw_applies(geo[0]) or _fx_applies(geo[0]) or \
        _cpad_applies(geo[0], geo[5])


def _px_plan(prob, threads):
    """(pixels, output channels) per pixel-vector task: the split that loads the busiest
    thread least, the tasks dealt out in equal runs of consecutive tasks (channel blocks
    innermost).  A task's cost in cycles: per 8-channel strip and 4-channel step, each
    block of nv 16-pixel vectors (up to 3) takes 8*nv vpdpbusd and ~6 more for its weight
    broadcasts and loop; the panel interleave one 8-cycle step per 64 pixels x 4 channels;
    300 fixed.  The last tile of an image is costed as its own pixels.  Pixels in multiples
    of 16 with the panel within PX_PANEL_BYTES, channels in multiples of 8; ties go to
    fewer tasks (1x1 256->64 @ 56: one panel of 1568 pixels per thread measured fastest,
    0.154 ms against 0.159-0.162 with 64-224)."""
    P, nq, K = prob.oh * prob.ow, -(-prob.c // 4), prob.k
    mc, nv = _vnni.PX_MC, _vnni.PX_NV

    @functools.lru_cache(maxsize=None)
    def task(T, kb):
        vecs = -(-T // 16)
        blocks = (vecs // nv) * (8 * nv + 6) + (8 * (vecs % nv) + 6 if vecs % nv else 0)
        return -(-kb // mc) * nq * blocks + -(-T // 64) * nq * 8 + 300

    top = max(16, min(-(-P // 16) * 16, PX_PANEL_BYTES // (4 * nq) // 16 * 16))
    tiles = sorted({-(-(-(-P // m)) // 16) * 16 for m in range(1, min(64, -(-P // 16)) + 1)})
    best = None
    for tile in [t for t in tiles if t <= top] or [top]:
        ntiles = -(-P // tile)
        for parts in range(1, min(8, -(-K // mc)) + 1):
            kblock = -(-(-(-K // parts)) // mc) * mc
            kbs = [min(kblock, K - k0) for k0 in range(0, K, kblock)]
            last = P - (ntiles - 1) * tile
            if prob.n * ntiles * len(kbs) > 64 * threads:  # many tasks: balanced but for one
                image = sum((ntiles - 1) * task(tile, kb) + task(last, kb) for kb in kbs)
                load = prob.n * image / threads + task(tile, kbs[0])
            else:
                load = _busiest([task(min(tile, P - p0), kb) for p0 in range(0, P, tile)
                                 for kb in kbs] * prob.n, threads)
            if best is None or load < best[0] * 0.999:
                best = (load, tile, kblock)
    return best[1], best[2]


def _int8_tile(prob, width, threads):
    """Output pixels per int8 conv task: the tile's (T, R*S*Cg) columns within
    INT8_COLS_BYTES, a multiple of 8, and no more than an equal share of the pixels
    per thread."""
    tile = max(8, min(256, (INT8_COLS_BYTES // max(width, 1)) // 8 * 8))
    share = -(-prob.oh * prob.ow * prob.n * prob.groups // threads)
    return max(8, min(tile, -(-share // 8) * 8))


def _taps_in_place(prob, width):
    """The VNNI conv reads each pixel's taps in place (int8.conv2d_int8_vnni's taps: whole
    4-byte channel steps per tap, and not the unpadded 1x1 it reads as rows)."""
    direct = (prob.r == 1 and prob.s == 1 and tuple(prob.stride) == (1, 1)
              and prob.groups == 1 and width == prob.c and not any(prob.pads))
    return prob.cg % 4 == 0 and not direct


TASK_COST = 0.25   # a task's own work (its pixels' offsets, the loop) in 8x32 blocks


def _taps_split(prob, threads):
    """(pixels, output channels) per task of the VNNI conv reading taps in place: the
    largest tile (a multiple of 8, at most 256) whose busiest thread is within 1 % of the
    least loaded split, a task costing its 8-pixel x 32-channel blocks plus TASK_COST
    (_int8_kblock's channel split for each tile).  No gathered columns bound the tile
    here (_int8_tile's INT8_COLS_BYTES): 128@28 had run 8-pixel tasks, each of its
    four 32-channel pairs streaming its weights for one block, 4-7 % slower than 56."""
    P = prob.oh * prob.ow
    if not (P and prob.n):   # an empty problem runs no task
        return 8, _int8_kblock(prob, 8, threads)
    splits = []
    for tile in range(8, min(256, -(-P // 8) * 8) + 1, 8):
        kb = _int8_kblock(prob, tile, threads)
        blocks = -(-np.minimum(tile, P - np.arange(0, P, tile)) // 8)
        pairs = -(-np.minimum(kb, prob.kg - np.arange(0, prob.kg, kb)) // 32)
        costs = np.tile(np.outer(blocks, pairs).ravel() + TASK_COST, prob.n * prob.groups)
        splits.append((_busiest(costs, threads), tile, kb))
    least = min(load for load, _, _ in splits)
    return max((tile, kb) for load, tile, kb in splits if load <= 1.01 * least)


def _int8_kblock(prob, tile, threads):
    """Output channels per VNNI conv task (a multiple of 32): the split of each group's
    channels that loads the busiest thread least when the tasks are dealt out in equal
    runs, a further split only where it cuts that load by 5 % (512@7: 7 tiles of 8
    pixels, 4 and 3 per thread whole; in two halves 7 and 7)."""
    tiles = prob.n * prob.groups * -(-prob.oh * prob.ow // tile)
    best = None
    for parts in range(1, min(8, -(-prob.kg // 32)) + 1):
        per_part = -(-prob.kg // parts)
        kblock = -(-per_part // 32) * 32
        tasks = tiles * -(-prob.kg // kblock)
        load = -(-tasks // threads) * min(kblock, prob.kg)
        if best is None or load < 0.95 * best[0]:  # a split gathers the pixels again
            best = (load, kblock)
    return best[1]


_int8_ws = threading.local()


def _int8_workspace(dtype, shape, name="cols"):
    """Per-Python-thread integer buffers (the float workspaces hold float32)."""
    pool = getattr(_int8_ws, "pool", None)
    if pool is None:
        pool = _int8_ws.pool = {}
    key = (name, dtype)
    need = math.prod(shape)
    buf = pool.get(key)
    if buf is None or buf.size < need:
        buf = pool[key] = _memory.empty(need, dtype)
    return buf[:need].reshape(shape)


def _kernel_range(dtype, zero_point, layer):
    """(dtype, lo, hi, zero point) of the bytes the int8 conv reads for a quantized input of
    ``dtype``: with VNNI, int8 is shifted to uint8 (+128; the int8 range shifted is exactly
    [0, 255], and rounding happens before the shift)."""
    qt = _qdtype(dtype, layer)
    zx = int(zero_point)
    if _vnni.HAS_VNNI and qt is np.int8:
        return np.uint8, 0.0, 255.0, zx + 128
    info = np.iinfo(qt)
    return qt, float(info.min), float(info.max), zx


def quantize_nhwc(x, scale, zero_point, dtype, pads):
    """A float NCHW input quantized straight into the channels-last, zero-point-padded
    layout int8_conv2d reads, in one pass.  With VNNI, int8 is shifted to uint8 (+128).

    Returns (array, zero point as the kernel must see it)."""
    qt, lo, hi, zk = _kernel_range(dtype, zero_point, "quantize_nhwc")
    n, c, h, w = x.shape
    pt, pb, pl, pr = pads
    out = _int8_workspace(qt, (n, h + pt + pb, w + pl + pr, c), "nhwc")
    with _runtime.kernel_scope(blas=False):
        # the int8 range shifted by 128 is exactly [0, 255]; rounding happens before the shift
        xc = np.ascontiguousarray(x, np.float32)
        if xc is not x:
            _runtime.unrecordable()   # a converted copy: a replay would read the old one
        src, dst = _as_rows(xc, out, pads)
        _runtime.launch(_int8.quantize_nhwc_padded, src, np.float32(1.0 / scale),
                        np.float32(zk), np.float32(lo), np.float32(hi), dst, pt, pl)
    return out, zk


def quantize_nchw(x, scale, zero_point, dtype):
    """quantize_nhwc's bytes in x's own NCHW layout (unpadded), for the convolutions that
    read planes (_px_applies).  Returns (array, zero point as the kernel must see it)."""
    qt, lo, hi, zk = _kernel_range(dtype, zero_point, "quantize_nchw")
    out = _int8_workspace(qt, x.shape, "nchw")
    with _runtime.kernel_scope(blas=False):
        xc = np.ascontiguousarray(x, np.float32)
        if xc is not x:
            _runtime.unrecordable()
        _runtime.launch(_int8.quantize_flat, xc.reshape(-1),
                        np.float32(1.0 / scale), np.float32(zk), np.float32(lo),
                        np.float32(hi), out.reshape(-1))
    return out, zk


def _as_rows(x, out, pads):
    """Without padding, NCHW -> NHWC is a transposition of (C, H*W) whatever H and W are:
    x and out viewed with the pixels regrouped into rows of at least 16 (the width the
    16 x 16 register transposition needs; 14x14 maps otherwise took the scalar path,
    a quarter of a 1x1 layer's time), up to 8 rows so the copy still runs in parallel."""
    n, c, h, w = x.shape
    if any(pads) or w >= 16 or h * w < 16 or out.shape[3] != c:
        return x, out
    p = h * w
    rows = next(d for d in range(min(8, p // 16), 0, -1) if p % d == 0)
    return x.reshape(n, c, rows, p // rows), out.reshape(n, rows, p // rows, c)
