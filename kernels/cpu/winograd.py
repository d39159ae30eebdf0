"""Winograd minimal filtering F(m x m, 3 x 3) for 3x3 stride-1 convolutions (Lavin & Gray 2016).

An output tile Y (m x m) of one channel pair is computed from an input tile d
(a x a, a = m + 2) and a filter g (3 x 3) as

    Y = A^T [ (G g G^T) .* (B^T d B) ] A

so the a*a elementwise products replace m*m*9 multiply-adds (2.25x fewer for
F(2x2), 4x fewer for F(4x4)).  Summed over input channels, the elementwise
product becomes a * a independent GEMMs in the transformed domain:

    U[xi, k, c] = (G g_kc G^T)[xi]                       filter transform, once per weight
    V[xi, c, t] = (B^T d_ct B)[xi]                        input transform, every tile t
    M[xi, k, t] = sum_c U[xi, k, c] V[xi, c, t]           a*a SGEMMs of K x C x tiles
                                                          (F(2x2) with enough tiles: on the
                                                          micro-kernel, transformed_gemms_packed)
    y tile      = A^T M[:, k, t] A  (+ bias, residual, activation)

Tiles t run over the whole batch, so the SGEMMs are batched across images.
Edge tiles read the zero padding the API layer adds to round the padded input
up to whole tiles, and their outputs beyond the image are not written.

Phases: (1) input transform, parallel over (n, c) planes; (2) the a*a*groups
SGEMMs, one per task, BLAS single-threaded; (3) output transform with the
fused epilogue, parallel over (n, k).  The 1-D transforms B^T and A^T are
written out (``_bt_ir``, ``_at_ir``) and applied in LLVM IR to 16-float vectors
(``input_row_f2/f4``, ``output_row_f2/f4``: one tile row of one channel a call):
the input transform first down the tile rows' input rows along whole rows, then
along the tiles' columns, which m-way even/odd shuffles split into the vectors
u[m*t + k] of 16 tiles; the output transform down the tiles' rows on vectors of
16 tiles, along them, and shuffles the m results of each tile back into output
columns, the epilogue on the way to the output.  (Numba loops over a tile row ran
14 or 7 tiles, shorter than the 64 elements of an LLVM vector loop's step: they
ran in its scalar remainder, 2-5x slower.)  The filter transform G is applied once
per weight in float64 (``filter_transform``).

Transform matrices (wincnn's interpolation points 0, +-1 (, +-2), infinity):

    F(2x2, 3x3):  B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
                  A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]
    F(4x4, 3x3):  B^T = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                         [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
                  A^T = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                         [0, 1, -1, 8, -8, 1]]
"""
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from . import FASTMATH
from .nchwc import _ptr
from .zmm import NR, _at, _lanes_in, _masked_load_store, _vector_loop, gemm_block_t

def _consts(vt, *values):
    return {v: ir.Constant(vt, [float(v)] * vt.count) for v in values}


def _bt_ir(builder, d):
    """B^T d on IR vectors, for F(2x2) (4 vectors) or F(4x4) (6):

        F(2x2): d0 - d2, d1 + d2, d2 - d1, d1 - d3
        F(4x4): 4 d0 - 5 d2 + d4, d3 + d4 - 4 (d1 + d2), 4 (d1 - d2) + d4 - d3,
                2 (d3 - d1) + d4 - d2, 2 (d1 - d3) + d4 - d2, 4 d1 - 5 d3 + d5
    """
    add, sub, mul = builder.fadd, builder.fsub, builder.fmul
    if len(d) == 4:
        d0, d1, d2, d3 = d
        return [sub(d0, d2), add(d1, d2), sub(d2, d1), sub(d1, d3)]
    c = _consts(d[0].type, 2, 4, 5)
    d0, d1, d2, d3, d4, d5 = d
    return [add(sub(mul(c[4], d0), mul(c[5], d2)), d4),
            sub(add(d3, d4), mul(c[4], add(d1, d2))),
            sub(add(mul(c[4], sub(d1, d2)), d4), d3),
            sub(add(mul(c[2], sub(d3, d1)), d4), d2),
            sub(add(mul(c[2], sub(d1, d3)), d4), d2),
            add(sub(mul(c[4], d1), mul(c[5], d3)), d5)]


def _at_ir(builder, m):
    """A^T m on IR vectors, for F(2x2) (4 vectors) or F(4x4) (6):

        F(2x2): m0 + m1 + m2, m1 - m2 - m3
        F(4x4): with s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4:
                m0 + s12 + s34, d12 + 2 d34, s12 + 4 s34, d12 + 8 d34 + m5
    """
    add, sub, mul = builder.fadd, builder.fsub, builder.fmul
    if len(m) == 4:
        m0, m1, m2, m3 = m
        return [add(add(m0, m1), m2), sub(sub(m1, m2), m3)]
    c = _consts(m[0].type, 2, 4, 8)
    m0, m1, m2, m3, m4, m5 = m
    s12, d12, s34, d34 = add(m1, m2), sub(m1, m2), add(m3, m4), sub(m3, m4)
    return [add(add(m0, s12), s34), add(d12, mul(c[2], d34)), add(s12, mul(c[4], s34)),
            add(add(d12, mul(c[8], d34)), m5)]


def _index(values):
    return ir.Constant(ir.VectorType(ir.IntType(32), 16), values)


_EVENS = [2 * k for k in range(16)]
_ODDS = [2 * k + 1 for k in range(16)]


def _phases(builder, vs):
    """16*len(vs) consecutive columns (len 2 or 4) -> their len(vs) column phases:
    phase k lane t = column len(vs)*t + k (rounds of even/odd two-source shuffles)."""
    sh = builder.shuffle_vector
    if len(vs) == 2:
        return [sh(vs[0], vs[1], _index(_EVENS)), sh(vs[0], vs[1], _index(_ODDS))]
    e01, o01 = sh(vs[0], vs[1], _index(_EVENS)), sh(vs[0], vs[1], _index(_ODDS))
    e23, o23 = sh(vs[2], vs[3], _index(_EVENS)), sh(vs[2], vs[3], _index(_ODDS))
    return [sh(e01, e23, _index(_EVENS)), sh(o01, o23, _index(_EVENS)),
            sh(e01, e23, _index(_ODDS)), sh(o01, o23, _index(_ODDS))]


def _interleave(builder, ph):
    """The inverse of _phases: len(ph) phase vectors -> their columns, 16 a vector."""
    sh = builder.shuffle_vector
    lo = _index([k // 2 + (k % 2) * 16 for k in range(16)])
    hi = _index([8 + k // 2 + (k % 2) * 16 for k in range(16)])
    if len(ph) == 2:
        return [sh(ph[0], ph[1], lo), sh(ph[0], ph[1], hi)]
    e01, e23 = sh(ph[0], ph[2], lo), sh(ph[0], ph[2], hi)  # columns 4t, 4t + 2
    o01, o23 = sh(ph[1], ph[3], lo), sh(ph[1], ph[3], hi)  # columns 4t + 1, 4t + 3
    return [sh(e01, o01, lo), sh(e01, o01, hi), sh(e23, o23, lo), sh(e23, o23, hi)]


def _make_input_row(m):
    """The input transform of one tile row of one channel for F(m x m, 3 x 3), m = 2, 4."""
    a = m + 2

    @intrinsic
    def input_row(typingctx, xp, p_off, WP, TW, tmp, V, v_off, v_stride):
        """On 16-float vectors:

            u_i[w] = (B^T x)[i] for the a input rows x_r = xp[p_off + r*WP:][:WP] (into
                     tmp[i*WP:][:WP]), then
            V[(i*a + j)*v_stride + v_off + t] = (B^T (u_i[m*t], ..., u_i[m*t + a - 1]))[j]

        for t < TW, 16 tiles a step: their columns split into the m phases u_i[m*t + k]
        by rounds of even/odd shuffles of m vectors; the last two taps are phases 0 and
        1 one tile on.  Edges are masked loads and stores."""
        sig = types.void(xp, types.intp, types.intp, types.intp, tmp, V, types.intp,
                         types.intp)

        def codegen(context, builder, signature, args):
            xpp = _ptr(context, builder, signature.args[0], args[0])
            tp = _ptr(context, builder, signature.args[4], args[4])
            vp = _ptr(context, builder, signature.args[5], args[5])
            p_off, wp, tw, v_off, v_stride = args[1], args[2], args[3], args[6], args[7]
            const = lambda v: ir.Constant(p_off.type, v)  # noqa: E731
            mload, mstore = _masked_load_store(builder, 16)
            align = ir.Constant(ir.IntType(32), 4)
            zero = ir.Constant(ir.VectorType(ir.FloatType(), 16), [0.0] * 16)

            def rows(w0, mask):
                d = [builder.call(mload, [_at(builder, xpp, builder.add(
                    builder.add(p_off, builder.mul(const(r), wp)), w0)), align, mask, zero])
                    for r in range(a)]
                for i, u in enumerate(_bt_ir(builder, d)):
                    at = builder.add(builder.mul(const(i), wp), w0)
                    builder.call(mstore, [u, _at(builder, tp, at), align, mask])

            _vector_loop(builder, wp, rows, "btrows")

            def columns(t0, tmask):
                c0 = builder.mul(t0, const(m))  # the step's first column
                for i in range(a):
                    row = builder.mul(const(i), wp)
                    vs = []
                    for q in range(m + 1):  # the last: the next step's first columns
                        col = builder.add(c0, const(16 * q))
                        mask = _lanes_in(builder, col, wp, 16 if q < m else 2)
                        vs.append(builder.call(mload, [_at(builder, tp, builder.add(row, col)),
                                                       align, mask, zero]))
                    ph = _phases(builder, vs[:m])
                    ph += [builder.shuffle_vector(ph[k], vs[m], _index(list(range(1, 16))
                                                                       + [16 + k]))
                           for k in range(a - m)]
                    for j, v in enumerate(_bt_ir(builder, ph)):
                        at = builder.add(builder.add(builder.mul(const(i * a + j), v_stride),
                                                     v_off), t0)
                        builder.call(mstore, [v, _at(builder, vp, at), align, tmask])

            _vector_loop(builder, tw, columns, "btcols")
            return context.get_dummy_value()

        return sig, codegen

    return input_row


input_row_f2 = _make_input_row(2)
input_row_f4 = _make_input_row(4)


def _make_output_row(m):
    """The output transform of one tile row of one output channel, epilogue fused."""
    a = m + 2

    @intrinsic
    def output_row(typingctx, M, m_off, m_stride, TW, bk, act, y, y_off, OW, nrows, res,
                   has_res):
        """On 16-float vectors, for output rows r < nrows (<= m) and columns q < OW:

            y[y_off + r*OW + q] = act((A^T Mt A)[r, q % m] + bk (+ res[same index]))

        where Mt is tile t = q // m's a x a block, Mt[i, j] = M[(i*a + j)*m_stride + m_off
        + t]: 16 tiles a step, A^T down the block's rows on vectors of tiles, A^T along
        them, the m results of each tile interleaved back into m*16 output columns by
        shuffles.  act as in epilogue.activate (0 none, 1 relu, 2 relu6, 3 hardswish,
        NaN passing through); has_res: res read at the output's index."""
        sig = types.void(M, types.intp, types.intp, types.intp, types.float32, types.intp, y,
                         types.intp, types.intp, types.intp, res, types.intp)

        def codegen(context, builder, signature, args):
            mp = _ptr(context, builder, signature.args[0], args[0])
            yp = _ptr(context, builder, signature.args[6], args[6])
            rp = _ptr(context, builder, signature.args[10], args[10])
            m_off, m_stride, tw, bk, act, y_off, ow, nrows, has_res = (
                args[1], args[2], args[3], args[4], args[5], args[7], args[8], args[9],
                args[11])
            intp = m_off.type
            const = lambda v: ir.Constant(intp, v)  # noqa: E731
            vt = ir.VectorType(ir.FloatType(), 16)
            mload, mstore = _masked_load_store(builder, 16)
            align = ir.Constant(ir.IntType(32), 4)
            c = _consts(vt, 0, 3, 6)
            zero = c[0]
            ninf = ir.Constant(vt, [float("-inf")] * 16)
            inf = ir.Constant(vt, [float("inf")] * 16)
            sixth = ir.Constant(vt, [1.0 / 6.0] * 16)
            bias = builder.insert_element(ir.Constant(vt, ir.Undefined), bk,
                                          ir.Constant(ir.IntType(32), 0))
            bias = builder.shuffle_vector(bias, ir.Constant(vt, ir.Undefined), _index([0] * 16))
            lo = builder.select(builder.icmp_signed(">=", act, const(1)), zero, ninf)
            hi = builder.select(builder.icmp_signed("==", act, const(2)), c[6], inf)
            hswish = builder.icmp_signed("==", act, const(3))
            with_res = builder.icmp_signed("!=", has_res, const(0))

            def clamp(v, low, high):
                v = builder.select(builder.fcmp_ordered("<", v, low), low, v)
                return builder.select(builder.fcmp_ordered(">", v, high), high, v)

            def columns(t0, tmask):
                cols = [[None] * a for _ in range(m)]  # cols[r][j]: (A^T Mt)[r, j], tiles
                for j in range(a):
                    mv = [builder.call(mload, [_at(builder, mp, builder.add(builder.add(
                        builder.mul(const(i * a + j), m_stride), m_off), t0)), align, tmask,
                        zero]) for i in range(a)]
                    for r, v in enumerate(_at_ir(builder, mv)):
                        cols[r][j] = v
                q0 = builder.mul(t0, const(m))
                for r in range(m):
                    keep_row = builder.icmp_signed("<", const(r), nrows)
                    outs = _interleave(builder, _at_ir(builder, cols[r]))
                    for h, v in enumerate(outs):
                        q = builder.add(q0, const(16 * h))
                        mask = _lanes_in(builder, q, ow, 16)
                        mask = builder.select(keep_row, mask,
                                              ir.Constant(mask.type, [0] * 16))
                        at = builder.add(builder.add(y_off, builder.mul(const(r), ow)), q)
                        v = builder.fadd(v, bias)
                        rv = builder.call(mload, [_at(builder, rp, at), align, builder.select(
                            with_res, mask, ir.Constant(mask.type, [0] * 16)), zero])
                        v = builder.select(with_res, builder.fadd(v, rv), v)
                        g = clamp(builder.fadd(v, c[3]), zero, c[6])
                        v = builder.select(hswish, builder.fmul(builder.fmul(v, g), sixth),
                                           clamp(v, lo, hi))
                        builder.call(mstore, [v, _at(builder, yp, at), align, mask])

            _vector_loop(builder, tw, columns, "atcols")
            return context.get_dummy_value()

        return sig, codegen

    return output_row


output_row_f2 = _make_output_row(2)
output_row_f4 = _make_output_row(4)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def filter_transform(w, G, U):
    """U[i*a + j, k, c] = (G w[k, c] G^T)[i, j];  w: (K, Cg, 3, 3), G: (a, 3), U: (a*a, K, Cg)."""
    K, Cg = w.shape[0], w.shape[1]
    a = G.shape[0]
    for k in prange(K):
        tmp = np.empty((a, 3), np.float64)
        for c in range(Cg):
            g = w[k, c]
            for i in range(a):
                for j in range(3):
                    tmp[i, j] = G[i, 0] * g[0, j] + G[i, 1] * g[1, j] + G[i, 2] * g[2, j]
            for i in range(a):
                for j in range(a):
                    U[i * a + j, k, c] = tmp[i, 0] * G[j, 0] + tmp[i, 1] * G[j, 1] + tmp[i, 2] * G[j, 2]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def input_transform(xp, m, TH, TW, V, t_ws):
    """V[i*a + j, c, n*TH*TW + th*TW + tw] = (B^T d B)[i, j] for the input tile d at (th, tw).

    xp: tile-padded input (N, C, TH*m + 2, TW*m + 2), C-contiguous; V C-contiguous;
    t_ws: (threads, a, WP): the rows B^T makes of a tile row's input rows.  Tasks are
    (n, c) planes; a tile row is one input_row_f2 / input_row_f4 call (B^T down the a
    input rows along whole rows, then along the tiles' columns).
    """
    N, C = xp.shape[0], xp.shape[1]
    HPP, WP = xp.shape[2], xp.shape[3]
    T = V.shape[2]
    tiles = TH * TW
    xpf = xp.reshape(N * C * HPP * WP)
    Vf = V.reshape(V.shape[0] * C * T)
    for task in prange(N * C):
        n = task // C
        c = task % C
        flat = t_ws[numba.get_thread_id()].reshape(-1)
        for th in range(TH):
            p_off = ((n * C + c) * HPP + th * m) * WP
            v_off = c * T + n * tiles + th * TW
            if m == 2:
                input_row_f2(xpf, p_off, WP, TW, flat, Vf, v_off, C * T)
            else:
                input_row_f4(xpf, p_off, WP, TW, flat, Vf, v_off, C * T)


@njit(parallel=True, cache=True)
def transformed_gemms(U, V, M, groups):
    """M[xi, group g] = U[xi, group g] @ V[xi, group g] for every xi and group: a*a*groups SGEMMs."""
    XI, K, Cg = U.shape
    Kg = K // groups
    for task in prange(XI * groups):
        xi = task // groups
        g = task % groups
        np.dot(U[xi, g * Kg:(g + 1) * Kg], V[xi, g * Cg:(g + 1) * Cg], M[xi, g * Kg:(g + 1) * Kg])


@njit(parallel=True, cache=True)
def transformed_gemms_packed(wp, V, M, zeros, xp_ws, no_res):
    """M[xi] = U[xi] @ V[xi] for every xi (groups == 1) on fastconv's channel-vectorized
    micro-kernel (zmm.gemm_block_t: 7 tiles x 32 output channels a register tile)
    instead of SGEMM: one task per product.

    wp: (a*a, ceil(K/NR)*C*NR), U[xi] packed by zmm.pack_panels (width NR, chunk
    KC_T); zeros: K zeros (the kernel's bias); xp_ws (threads, >= KC_T*MP); no_res:
    a 1-element dummy (no residual here, nor activation: the output transform
    applies them).
    """
    XI, C, T = V.shape
    K = M.shape[1]
    npg = (K + NR - 1) // NR
    wf = wp.reshape(-1)
    for xi in prange(XI):
        gemm_block_t(wf, xi * npg * C * NR, npg, 0, C, V[xi].reshape(-1), 0, T, T,
                     M[xi].reshape(-1), 0, T, K, xp_ws[numba.get_thread_id()], zeros, 0, 0,
                     no_res, 0)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def output_transform(M, m, b, y, act, res, has_res):
    """y[n, k, tile (th, tw)] = act(A^T M[:, k, t] A + b[k] (+ res)), cropped to (OH, OW).

    M: (a*a, K, N*TH*TW); y and res (N, K, OH, OW) (res a dummy without has_res); all
    C-contiguous.  Tasks are (n, k) planes; a tile row's m output rows are one
    output_row_f2 / output_row_f4 call, the epilogue fused.
    """
    N, K, OH, OW = y.shape
    TH = (OH + m - 1) // m
    TW = (OW + m - 1) // m
    tiles = TH * TW
    T = M.shape[2]
    Mf = M.reshape(M.shape[0] * K * T)
    yf = y.reshape(N * K * OH * OW)
    rf = res.reshape(res.size)
    hr = 1 if has_res else 0
    for task in prange(N * K):
        n = task // K
        k = task % K
        bk = b[k]
        for th in range(TH):
            m_off = k * T + n * tiles + th * TW
            y_off = ((n * K + k) * OH + th * m) * OW
            nrows = min(m, OH - th * m)
            if m == 2:
                output_row_f2(Mf, m_off, K * T, TW, bk, act, yf, y_off, OW, nrows, rf, hr)
            else:
                output_row_f4(Mf, m_off, K * T, TW, bk, act, yf, y_off, OW, nrows, rf, hr)
