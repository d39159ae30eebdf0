"""Pooling kernels: max, average and adaptive average over NCHW planes.

Window (p, q) of a plane covers rows p*sh - ph + i*dh, i < kh, and columns
q*sw - pw + j*dw, j < kw; positions outside the plane are padding.

    max:  y = max over the in-plane positions (padding is -inf); NaN wins, as in PyTorch
          (integer tensors, max_pool2d_int: padding never wins)
    avg:  y = sum over in-plane positions / divisor, divisor = divisor_override, or the
          window clipped to the padded plane (count_include_pad), or the in-plane count
    adaptive avg: bin p spans rows [floor(p*H/OH), ceil((p+1)*H/OH)), likewise columns
    global avg:   y[p] = sum_(j < H*W) x[p, j] / (H*W) over flat planes p (the 1x1 case)

Max and average pooling are computed separably (a vertical pass over the
window's rows, then a horizontal pass over its columns); tasks are (n, c)
planes (adaptive pooling: planes and output rows).  The 3x3 stride-2 max pool
(ResNet's) runs a whole output row as vectors in LLVM IR (max_row3x3_s2): the
loops' 56- and 112-long rows ran mostly in the scalar remainders of LLVM's
64-wide vector loops.
"""
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from . import FASTMATH
from .nchwc import _ptr
from .tiles import copy_strided
from .zmm import _lanes_in, _masked_load_store, row_sum

NEG_INF = np.float32(-np.inf)


@njit(inline="always")
def _vmax(dst, src, n):
    """dst[j] = max(dst[j], src[j]) with NaN winning (v != v), a branch-free select."""
    for j in range(n):
        v = src[j]
        cur = dst[j]
        dst[j] = v if (v > cur) | (v != v) else cur


@njit(inline="always")
def _horizontal(vb, hb, vb64, hb32, out, kw, sw, dw, span, OW):
    """out[q] = max over j < kw of vb[q*sw + j*dw], first tap winning ties.  The 3-wide,
    stride-2 window (ResNet's pool) splits vb into its even and odd columns through a
    64-bit view (each pair's low and high halves: unit-stride loads and truncations,
    where a stride-2 gather ran scalar, 1.4 cycles an element) and takes
    max(even[q], odd[q], even[q + 1]); other windows: the unit-stride max over the
    taps, then every sw-th.  hb: (>= 2*OW + 2) scratch; vb: >= 2*OW + 2 when split;
    vb64, hb32: vb and hb viewed as uint64 and uint32 (made once per plane: a view
    costs as much as the loops here)."""
    if kw == 3 and sw == 2 and dw == 1:
        for q in range(OW + 1):
            hb32[q] = np.uint32(vb64[q] & np.uint64(0xFFFFFFFF))
        for q in range(OW + 1):
            hb32[OW + 1 + q] = np.uint32(vb64[q] >> np.uint64(32))
        e = hb[:OW + 1]
        o = hb[OW + 1:2 * OW + 2]
        for q in range(OW):
            m = e[q]
            v = o[q]
            m = v if (v > m) | (v != v) else m
            v = e[q + 1]
            out[q] = v if (v > m) | (v != v) else m
        return
    for j in range(span):
        hb[j] = vb[j]
    for j in range(1, kw):
        _vmax(hb, vb[j * dw:], span)
    copy_strided(out, hb, OW, sw)


@intrinsic
def max_row3x3_s2(typingctx, x, o0, o1, o2, c0, W, y, y_off, nq):
    """y[y_off + q] = max over rows o0, o1, o2 (offsets of column 0 in x) and columns
    c0 + 2q + j, j < 3, of the columns inside [0, W), for q < nq: ResNet's 3x3 stride-2
    pool, one output row, 16 outputs a step as vectors.

    Each step loads the 32 columns its 16 windows start on from each row (masked:
    columns outside the row read as -inf), takes the vertical max of the three rows,
    splits it into even and odd columns with two-source shuffles and takes
    max(even[q], odd[q], even[q + 1]), lane 15's even[q + 1] being the next step's first
    even column (steps carry their columns into the next; after the last, one lane).
    Every max lets the newer value win where it is greater or NaN, in
    the order rows o0, o1, o2, then columns left to right (so NaN propagates and ties
    keep the first value, as the loops of max_pool2d do).  A window needs one column
    inside the row; rows are whole rows of the plane (a caller passes a row twice for
    one that is padding)."""
    sig = types.void(x, types.intp, types.intp, types.intp, types.intp, types.intp, y,
                     types.intp, types.intp)

    def codegen(context, builder, signature, args):
        xp = _ptr(context, builder, signature.args[0], args[0])
        yp = _ptr(context, builder, signature.args[6], args[6])
        o0, o1, o2, c0, width, y_off, nq = args[1:6] + args[7:9]
        intp = c0.type
        const = lambda v: ir.Constant(intp, v)  # noqa: E731
        i32 = ir.IntType(32)
        V = 16
        vt = ir.VectorType(ir.FloatType(), V)
        mload, mstore = _masked_load_store(builder, V)
        align = ir.Constant(i32, 4)
        ninf = ir.Constant(vt, [float("-inf")] * V)
        evens = ir.Constant(ir.VectorType(i32, V), [2 * i for i in range(V)])
        odds = ir.Constant(ir.VectorType(i32, V), [2 * i + 1 for i in range(V)])

        def newer(cur, new):  # a max instruction, then NaN in ``new`` put back
            m = builder.select(builder.fcmp_ordered(">", new, cur), new, cur)
            return builder.select(builder.fcmp_unordered("uno", new, new), new, m)

        def vertical(k, nvec, lanes_last):
            """the vertical max of step k's columns c0 + 32k + j, j < 16*nvec (the last
            vector's first lanes_last lanes), as vectors"""
            base = builder.add(c0, builder.mul(k, const(2 * V)))
            vert = [None] * nvec
            for j in range(nvec):
                col = builder.add(base, const(V * j))
                mask = _lanes_in(builder, col, width, lanes_last if j == nvec - 1 else V)
                for o in (o0, o1, o2):
                    at = builder.gep(xp, [builder.add(o, col)])
                    v = builder.call(mload, [builder.bitcast(at, vt.as_pointer()), align, mask,
                                             ninf])
                    vert[j] = v if vert[j] is None else newer(vert[j], v)
            return vert

        def finish(k, even, odd, even_next):
            """outputs 16k .. 16k + 15: max(even[q], odd[q], even[q + 1]), where lane 15's
            even[q + 1] is the next step's first even column"""
            nxt = builder.shuffle_vector(even, even_next, shift)
            out = newer(newer(even, odd), nxt)
            q0 = builder.mul(k, const(V))
            at = builder.gep(yp, [builder.add(y_off, q0)])
            builder.call(mstore, [out, builder.bitcast(at, vt.as_pointer()), align,
                                  _lanes_in(builder, q0, nq)])

        shift = ir.Constant(ir.VectorType(i32, V), list(range(1, V + 1)))
        steps = builder.sdiv(builder.add(nq, const(V - 1)), const(V))
        with builder.if_then(builder.icmp_signed(">", steps, const(0))):
            # step k's even and odd columns are carried into step k + 1, which finishes
            # step k's outputs with its first even column
            v0 = vertical(const(0), 2, V)
            e0 = builder.shuffle_vector(v0[0], v0[1], evens)
            o0v = builder.shuffle_vector(v0[0], v0[1], odds)
            before = builder.block
            loop = builder.append_basic_block("maxrow.loop")
            tail = builder.append_basic_block("maxrow.tail")
            builder.cbranch(builder.icmp_signed(">", steps, const(1)), loop, tail)
            builder.position_at_end(loop)
            k = builder.phi(intp)
            pe = builder.phi(vt)
            po = builder.phi(vt)
            k.add_incoming(const(1), before)
            pe.add_incoming(e0, before)
            po.add_incoming(o0v, before)
            v = vertical(k, 2, V)
            e = builder.shuffle_vector(v[0], v[1], evens)
            o = builder.shuffle_vector(v[0], v[1], odds)
            finish(builder.sub(k, const(1)), pe, po, e)
            k1 = builder.add(k, const(1))
            loop_end = builder.block
            k.add_incoming(k1, loop_end)
            pe.add_incoming(e, loop_end)
            po.add_incoming(o, loop_end)
            builder.cbranch(builder.icmp_signed("<", k1, steps), loop, tail)
            builder.position_at_end(tail)
            last_e = builder.phi(vt)
            last_o = builder.phi(vt)
            last_e.add_incoming(e0, before)
            last_o.add_incoming(o0v, before)
            last_e.add_incoming(e, loop_end)
            last_o.add_incoming(o, loop_end)
            # the column after the last step: one lane
            (after_col,) = vertical(steps, 1, 1)
            finish(builder.sub(steps, const(1)), last_e, last_o, after_col)
        return context.get_dummy_value()

    return sig, codegen


@njit(parallel=True, cache=True)
def max_pool2d(x, y, kh, kw, sh, sw, ph, pw, dh, dw, row_ws):
    """Max pooling of x (N, C, H, W) into y (N, C, OH, OW), separably.

    For each output row, a vertical pass takes the max of the kh in-plane input
    rows into a row buffer (row_ws[t, 0]) that carries pw columns of -inf padding
    on the left and -inf beyond the right edge; a horizontal pass then takes,
    at unit stride, the max over the kw taps for every column a window can
    start on (row_ws[t, 1], (OW-1)*sw + 1 of them), and the output row picks
    every sw-th.  kh + kw comparisons per output instead of kh * kw, and only
    unit-stride vector loops but the last pick (a stride-sw gather per tap had
    cost 1.8x the time on ResNet's 3x3/2 pool).  Tasks are (n, c) planes.
    row_ws: (threads, 2, >= max(W + 2*pw, (OW-1)*sw + (kw-1)*dw + 1, 2*OW + 2)), each
    row starting 8-byte aligned (an even length).  3 x 3 windows at column stride 2
    (any row stride and dilation) go a row at a time through max_row3x3_s2 instead,
    a padding row of the window replaced by one of its rows in the plane.
    """
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    span = (OW - 1) * sw + 1
    rows3s2 = kh == 3 and kw == 3 and sw == 2 and dw == 1
    xf = x.reshape(N * C * H * W)
    yf = y.reshape(N * C * OH * OW)
    for t in prange(N * C):
        n = t // C
        c = t % C
        plane = x[n, c]
        if rows3s2:  # ResNet's pool: whole rows as vectors (max_row3x3_s2)
            for p in range(OH):
                first = -1
                for i in range(3):
                    hi = p * sh - ph + i * dh
                    if first < 0 and hi >= 0 and hi < H:
                        first = hi
                if first < 0:  # no row of the window is in the plane
                    for q in range(OW):
                        y[n, c, p, q] = NEG_INF
                    continue
                h0 = p * sh - ph
                h1 = h0 + dh
                h2 = h1 + dh
                h0 = h0 if h0 >= 0 and h0 < H else first
                h1 = h1 if h1 >= 0 and h1 < H else first
                h2 = h2 if h2 >= 0 and h2 < H else first
                max_row3x3_s2(xf, (t * H + h0) * W, (t * H + h1) * W, (t * H + h2) * W, -pw, W,
                              yf, (t * OH + p) * OW, OW)
            continue
        buf = row_ws[numba.get_thread_id()]
        vb = buf[0]
        hb = buf[1]
        vb64 = vb.view(np.uint64)
        hb32 = hb.view(np.uint32)
        for j in range(vb.shape[0]):
            vb[j] = NEG_INF
        inner = vb[pw:pw + W]
        for p in range(OH):
            h0 = p * sh - ph
            if kh == 3 and h0 >= 0 and h0 + 2 * dh < H:
                # the common 3-row window inside the plane: one pass, first row wins ties
                r0, r1, r2 = plane[h0], plane[h0 + dh], plane[h0 + 2 * dh]
                for j in range(W):
                    m = r0[j]
                    v = r1[j]
                    m = v if (v > m) | (v != v) else m
                    v = r2[j]
                    inner[j] = v if (v > m) | (v != v) else m
                _horizontal(vb, hb, vb64, hb32, y[n, c, p], kw, sw, dw, span, OW)
                continue
            first = True
            for i in range(kh):
                hi = p * sh - ph + i * dh
                if hi >= 0 and hi < H:
                    if first:
                        src = plane[hi]
                        for j in range(W):
                            inner[j] = src[j]
                        first = False
                    else:
                        _vmax(inner, plane[hi], W)
            if first:  # no row of the window is in the plane
                for j in range(W):
                    inner[j] = NEG_INF
            _horizontal(vb, hb, vb64, hb32, y[n, c, p], kw, sw, dw, span, OW)


@njit(parallel=True, cache=True)
def max_pool2d_int(x, y, kh, kw, sh, sw, ph, pw, dh, dw, lowest):
    """Max pooling of an integer x (N, C, H, W; uint8 or int8) into y (N, C, OH, OW) of its
    type: y = max over the window's in-plane positions (padding never wins), ``lowest``
    (the type's minimum) for a window with none.  Separable as the float kernel: the
    vertical max of the window's in-plane rows into a row carrying pw columns of
    ``lowest`` on the left and enough on the right, then at unit stride the max over the
    kw taps for every column a window may start on, of which the output row takes every
    sw-th (unit-stride loops vectorize; a strided gather per tap had made it slower than
    the float kernel).  Tasks are (n, c) planes; integers are exact, so the max of a
    quantized tensor is the quantized max."""
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    span = (OW - 1) * sw + 1
    width = max(W + pw, span + (kw - 1) * dw)
    for t in prange(N * C):
        n = t // C
        c = t % C
        plane = x[n, c]
        row = np.empty(width, x.dtype)
        hor = np.empty(span, x.dtype)
        for j in range(width):
            row[j] = lowest
        inner = row[pw:pw + W]   # (slices: indices LLVM knows are in range, so it vectorizes)
        for p in range(OH):
            yrow = y[n, c, p]
            first = True
            for i in range(kh):
                hi = p * sh - ph + i * dh
                if hi >= 0 and hi < H:
                    src = plane[hi]
                    if first:
                        for j in range(W):
                            inner[j] = src[j]
                        first = False
                    else:
                        for j in range(W):
                            v = src[j]
                            r = inner[j]
                            inner[j] = v if v > r else r
            if first:   # no row of the window is in the plane
                for q in range(OW):
                    yrow[q] = lowest
                continue
            for j in range(span):
                hor[j] = row[j]
            for tap in range(1, kw):
                shifted = row[tap * dw:tap * dw + span]
                for j in range(span):
                    v = shifted[j]
                    h = hor[j]
                    hor[j] = v if v > h else h
            for q in range(OW):
                yrow[q] = hor[q * sw]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def avg_pool2d(x, y, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override, row_ws):
    """Average pooling of x (N, C, H, W) into y (N, C, OH, OW); divisor_override 0 = none.

    Separable like max pooling: a vertical sum of the in-plane rows into a
    zero-padded row buffer, a horizontal sum over kw strided taps, then one
    division per output by the PyTorch divisor of its window.
    row_ws: (threads, >= max(W + 2*pw, (OW-1)*sw + kw)).
    """
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    for t in prange(N * C):
        n = t // C
        c = t % C
        plane = x[n, c]
        buf = row_ws[numba.get_thread_id()]
        for j in range(buf.shape[0]):
            buf[j] = 0.0
        inner = buf[pw:pw + W]
        for p in range(OH):
            h0 = p * sh - ph
            h1 = min(h0 + kh, H + ph)
            hc0 = max(h0, 0)
            hc1 = min(h1, H)
            for j in range(W):
                inner[j] = 0.0
            for hi in range(hc0, hc1):
                xr = plane[hi]
                for j in range(W):
                    inner[j] += xr[j]
            yrow = y[n, c, p]
            for q in range(OW):
                yrow[q] = 0.0
            for j in range(kw):
                src = buf[j:]
                if sw == 1:
                    for q in range(OW):
                        yrow[q] += src[q]
                elif sw == 2:
                    for q in range(OW):
                        yrow[q] += src[2 * q]
                else:
                    for q in range(OW):
                        yrow[q] += src[q * sw]
            for q in range(OW):
                w0 = q * sw - pw
                w1 = min(w0 + kw, W + pw)
                if divisor_override > 0:
                    div = divisor_override
                elif count_include_pad:
                    div = (h1 - h0) * (w1 - w0)
                else:
                    div = (hc1 - hc0) * (min(w1, W) - max(w0, 0))
                yrow[q] = yrow[q] / np.float32(div)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def adaptive_avg_pool2d(x, y):
    """Adaptive average pooling of x (N, C, H, W) into y (N, C, OH, OW)."""
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    for t in prange(N * C * OH):
        p = t % OH
        nc = t // OH
        n = nc // C
        c = nc % C
        plane = x[n, c]
        h0 = (p * H) // OH
        h1 = ((p + 1) * H + OH - 1) // OH
        for q in range(OW):
            w0 = (q * W) // OW
            w1 = ((q + 1) * W + OW - 1) // OW
            acc = np.float32(0.0)
            for i in range(h0, h1):
                for j in range(w0, w1):
                    acc += plane[i, j]
            y[n, c, p, q] = acc / np.float32((h1 - h0) * (w1 - w0))


GLOBAL_PLANES = 64  # planes per task of the global average


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def global_avg_pool2d(x, y):
    """y (P,) = the mean of each row of x (P, H*W), C-contiguous: planes in tasks of
    GLOBAL_PLANES, each row summed on 16-float vectors (zmm.row_sum: the adaptive
    kernel's row-by-row sums of 7 run at the latency of a scalar add, and a loop over
    a 7x7 plane's 49 never reaches LLVM's 64-wide vector loop)."""
    P, HW = x.shape
    xf = x.reshape(P * HW)
    nb = (P + GLOBAL_PLANES - 1) // GLOBAL_PLANES
    for t in prange(nb):
        for p in range(t * GLOBAL_PLANES, min(P, (t + 1) * GLOBAL_PLANES)):
            y[p] = row_sum(xf, p * HW, HW) / np.float32(HW)


@njit(cache=True, fastmath=False)
def global_avg_pool_int(x, y, zx, scale, zy, qmin, qmax):
    """y[p] = saturate(round_half_even((sum_j x[p, j] - n*zx) * scale) + zy) for integer
    rows x (P, n) (planes of n = H*W pixels, uint8 or int8), y (P,) of the output's
    integer type; scale = sx / (sy * n), zy, qmin, qmax float32: onnxruntime's
    QLinearGlobalAveragePool, the sum exact (int64), then float32 as it computes it.
    One thread: a network's last map is small (ResNet-50's 2048 x 7x7 in 11-12 us), and
    a parallel launch cost as much again whenever the pool's threads had gone to sleep
    (NumPy's row sums had taken 0.13-0.16 ms of it, ten times onnxruntime's node)."""
    P, n = x.shape
    for p in range(P):
        row = x[p]
        total = np.int64(0)
        for j in range(n):
            total += np.int64(row[j])
        q = np.rint(np.float32(total - n * np.int64(zx)) * scale) + zy
        q = qmin if q < qmin else q
        y[p] = qmax if q > qmax else q
