"""int8 GEMM and convolution: u8 or s8 activations x s8 weights, exact int32 accumulation.

GEMM (dot-product form, both operands contiguous along the reduction):

    c[m, n] = sum_k int32(a[m, k]) * int32(b[n, k])

Convolution (im2col, a tile of output pixels per task), per-channel symmetric
weights wq[k] with scale sw[k], activations xq = round(x / sx) + zx:

    acc[k, p] = sum_(r,s,c) int32(wq[k, (r,s,c)]) * int32(xq[p*stride + (r,s)*dilation, c])

(the input channels-last, so each tap of a pixel's receptive field is Cg
contiguous bytes, and the weights packed in the same (r, s, c) order)
    y[k, p]   = act(float32(acc[k, p] - zx * wsum[k]) * (sx * sw[k]) + b[k] (+ res[k, p]))

with wsum[k] = sum wq[k, :]; the padded border holds zx, so it contributes
nothing after the correction.  Quantized output (chained int8 layers):
yq = saturate(round_half_even(y / sy) + zy).

Products are written int32(a) * int32(b) and truncated back to int32 after the
add (Numba types int32 arithmetic as int64); LLVM then keeps 32-bit lanes and
forms vpmaddwd-style multiply-adds.  Accumulation is exact as long as
K * 255 * 128 < 2**31 (K < 65793), which the API checks.  No fastmath here:
the float epilogue must round exactly like the integer reference.
"""
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from . import nchwc, vnni, zmm
from .tiles import gemm_task
from .vnni import (PX_MC, PX_NV, dot8x16_bcast, dot8x16_epi, dot8x16_epq, dot8x32_add_rows,
                   dot8x32_bcast, dot8x32_epi, dot8x32_epq, dot8x32_to_rows, pack4x64, px1_epi,
                   px1_epq, px2_epi, px2_epq, px3_epi, px3_epq, taps7x16_cols_epi,
                   taps7x16_cols_epq, taps7x32_cols_epi, taps7x32_cols_epq, taps8x16_epi,
                   taps8x16_epq, taps8x32_epi, taps8x32_epq)

I32 = np.int32
ONE = np.float32(1.0)   # unused scale arguments of a plain byte move
ZERO = np.float32(0.0)


@njit(inline="always")
def _dot4x4(a, i, b, j, K):
    """The 4x4 block c[i:i+4, j:j+4] of a (M, K) . b (N, K)^T, as 16 int32 scalars."""
    a0, a1, a2, a3 = a[i], a[i + 1], a[i + 2], a[i + 3]
    b0, b1, b2, b3 = b[j], b[j + 1], b[j + 2], b[j + 3]
    c00 = c01 = c02 = c03 = I32(0)
    c10 = c11 = c12 = c13 = I32(0)
    c20 = c21 = c22 = c23 = I32(0)
    c30 = c31 = c32 = c33 = I32(0)
    for k in range(K):
        x0, x1, x2, x3 = I32(a0[k]), I32(a1[k]), I32(a2[k]), I32(a3[k])
        y0, y1, y2, y3 = I32(b0[k]), I32(b1[k]), I32(b2[k]), I32(b3[k])
        c00 = I32(c00 + x0 * y0)
        c01 = I32(c01 + x0 * y1)
        c02 = I32(c02 + x0 * y2)
        c03 = I32(c03 + x0 * y3)
        c10 = I32(c10 + x1 * y0)
        c11 = I32(c11 + x1 * y1)
        c12 = I32(c12 + x1 * y2)
        c13 = I32(c13 + x1 * y3)
        c20 = I32(c20 + x2 * y0)
        c21 = I32(c21 + x2 * y1)
        c22 = I32(c22 + x2 * y2)
        c23 = I32(c23 + x2 * y3)
        c30 = I32(c30 + x3 * y0)
        c31 = I32(c31 + x3 * y1)
        c32 = I32(c32 + x3 * y2)
        c33 = I32(c33 + x3 * y3)
    return (c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33)


@njit(inline="always")
def _dot1(a, i, b, j, K):
    acc = I32(0)
    ar = a[i]
    br = b[j]
    for k in range(K):
        acc = I32(acc + I32(ar[k]) * I32(br[k]))
    return acc


@njit(parallel=True, cache=True)
def gemm_int8(a, b, c):
    """c (M, N) int32 = a (M, K) . b (N, K)^T, a and b int8 or uint8, exact.

    Tasks are blocks of 4 rows of a; each runs 4x4 register blocks over b,
    with scalar edges where M or N is not a multiple of 4.
    """
    M, K = a.shape
    N = b.shape[0]
    N4 = N - N % 4
    for t in prange((M + 3) // 4):
        i = 4 * t
        if i + 4 <= M:
            for j in range(0, N4, 4):
                r = _dot4x4(a, i, b, j, K)
                for u in range(4):
                    for v in range(4):
                        c[i + u, j + v] = r[4 * u + v]
            for j in range(N4, N):
                for u in range(4):
                    c[i + u, j] = _dot1(a, i + u, b, j, K)
        else:
            for u in range(i, M):
                for j in range(N):
                    c[u, j] = _dot1(a, u, b, j, K)


@njit(inline="always")
def _gather_pixel(row, xq, n, ih0, iw0, dh, dw, R, S, c0, Cg):
    """row[(r*S + s)*Cg + c] = xq[n, ih0 + r*dh, iw0 + s*dw, c0 + c]: one output pixel's
    receptive field from the channels-last input, Cg contiguous bytes per tap."""
    q = 0
    for r in range(R):
        line = xq[n, ih0 + r * dh]
        for s in range(S):
            src = line[iw0 + s * dw, c0:c0 + Cg]
            dst = row[q:q + Cg]
            for c in range(Cg):
                dst[c] = src[c]
            q += Cg


@njit(inline="always")
def _finish(acc, k, p, n, zx, wsum, scale, b, act, res, has_res, y, yq, quant_out, inv_sy, zy,
            qmin, qmax):
    v = np.float32(acc - zx * wsum[k]) * scale[k] + b[k]
    if has_res:
        v = v + res[n, k, p]
    if act == 1:
        v = max(v, np.float32(0))
    elif act == 2:
        v = min(max(v, np.float32(0)), np.float32(6))
    if quant_out:
        q = np.rint(v * inv_sy) + zy
        q = min(max(q, qmin), qmax)
        yq[n, k, p] = q
    else:
        y[n, k, p] = v


@njit(inline="always")
def finish_row(a, sc, bc, act, res, has_res, y, yq, quant_out, inv_sy, zy, qmin, qmax):
    """_finish over one output row's sums a (exact integers in float32, in a scratch
    row this overwrites): act(a * sc + bc (+ res)), stored in y, or requantized into yq as
    min(max(rint(v * inv_sy) + zy, qmin), qmax).  One loop a step, each branch outside
    its loop and the integers stored through int32, so that every loop vectorizes (the
    one loop with the branches inside had taken half the kernel's time)."""
    n = a.size
    if has_res:
        for i in range(n):
            a[i] = a[i] * sc + bc + res[i]
    else:
        for i in range(n):
            a[i] = a[i] * sc + bc
    zero, six = np.float32(0), np.float32(6)
    if act == 1:
        for i in range(n):
            a[i] = max(a[i], zero)
    elif act == 2:
        for i in range(n):
            a[i] = min(max(a[i], zero), six)
    if quant_out:
        for i in range(n):
            q = np.rint(a[i] * inv_sy) + zy
            q = qmin if q < qmin else q
            q = qmax if q > qmax else q
            yq[i] = np.int32(q)
    else:
        for i in range(n):
            y[i] = a[i]


@intrinsic
def finish_out(typingctx, ob, s_off, y, y_off, plane, nch, sv, sb, act, inv_sy, zy, qmin,
               qmax):
    """finish_row's arithmetic (no residual) on the 16 pixel vectors of sums at
    ob[s_off:][:256] (16 channels each, float32; sv, sb the 16 channels' scales and
    biases), transposed back to channel rows y[y_off + c*plane:][:16], c < nch: float32 y
    act(v * sv + sb) (act 1 relu, 2 relu6: the same float32 multiply, then add, no fused
    multiply-add); int8/uint8 y min(max(rint(act(v * sv + sb) * inv_sy) + zy, qmin), qmax)
    as bytes: each pixel's vnni.requantize t rounded by one vcvtps2dq, zy added in int32,
    narrowed to 16 bytes, and the 16 x 16 bytes transposed (nchwc.transpose_bytes: twelve
    shuffles, where transposing the float vectors first took 64; a 112x112 block's 784
    groups, hot, 15.4 -> 10.9 us).  One pass over the sums: finishing them in place first
    (an LLVM loop over the pixel vectors) and transposing them after had read and written each
    vector twice, 3-7 % of a large map's depthwise time; as Numba loops over a vector's
    lanes the finish had run 3x slower than finish_row's per-channel loops."""
    sig = types.void(ob, types.intp, y, types.intp, types.intp, types.intp, sv, sb,
                     types.intp, types.float32, types.float32, types.float32, types.float32)
    as_bytes = isinstance(y.dtype, types.Integer)

    def codegen(context, builder, signature, args):
        i8, i32 = ir.IntType(8), ir.IntType(32)
        v16 = ir.VectorType(ir.FloatType(), 16)
        obp = zmm._data_ptr(context, builder, signature, args, 0)
        yp = zmm._data_ptr(context, builder, signature, args, 2, i8 if as_bytes else None)
        svp = zmm._data_ptr(context, builder, signature, args, 6)
        sbp = zmm._data_ptr(context, builder, signature, args, 7)
        s_off, y_off, plane, nch, act = args[1], args[3], args[4], args[5], args[8]
        intp = s_off.type
        const = lambda v: ir.Constant(intp, v)  # noqa: E731
        scale = builder.load(zmm._at(builder, svp, const(0)), align=4)
        bias = builder.load(zmm._at(builder, sbp, const(0)), align=4)
        rows = [builder.load(zmm._at(builder, obp, builder.add(s_off, const(16 * i))),
                             align=4) for i in range(16)]
        if as_bytes:
            bounds = vnni.requant_bounds(builder, args[9:13], 16)
            vi, v8 = ir.VectorType(i32, 16), ir.VectorType(i8, 16)
            lrint = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vi, [v16]), "llvm.lrint.v16i32.v16f32")

        def variant(activate, with_res):
            vals = [builder.fadd(builder.fmul(r, scale), bias) for r in rows]
            if not as_bytes:
                nchwc._store_rows(builder, nchwc._transpose(builder, [activate(v) for v in vals]),
                                  y_off, plane, nch, lambda v, at: builder.store(
                                      v, zmm._at(builder, yp, at), align=4))
                return
            # each pixel rounded (vcvtps2dq), zy added and narrowed to its 16 bytes, then
            # the bytes transposed to channel rows
            pixels = [builder.trunc(builder.add(builder.call(lrint, [vnni.requantize(
                builder, v, activate, bounds)]), bounds[4]), v8) for v in vals]
            nchwc._store_rows(builder, nchwc.transpose_bytes(builder, pixels), y_off, plane,
                              nch, lambda q, at: builder.store(q, builder.bitcast(
                                  builder.gep(yp, [at]), v8.as_pointer()), align=1))

        zmm._emit_epilogue(builder, act, const(1), const(0), 16, variant)
        return context.get_dummy_value()

    return sig, codegen


@njit(parallel=True, cache=True)
def finish_planes(acc, scale, b, act, res, has_res, y, yq, quant_out, inv_sy, zy, qmin, qmax):
    """finish_row over whole output planes: acc (N, K, P) float32 holding exact integer
    sums acc - zx * wsum (a conv run on the float kernels: float_planes), overwritten;
    y / yq, res as conv2d_int8's.  One task a plane."""
    N, K, P = acc.shape
    for t in prange(N * K):
        n = t // K
        k = t - n * K
        finish_row(acc[n, k], scale[k], b[k], act, res[n, k] if has_res else res[0, 0, :0],
                   has_res, y[0, 0, :0] if quant_out else y[n, k],
                   yq[n, k] if quant_out else yq[0, 0, :0], quant_out, inv_sy, zy, qmin, qmax)


@njit(cache=True)
def finish_gemm(c, scale, b, act, y, yq, quant_out, inv_sy, zy, qmin, qmax):
    """The int8 linear's epilogue on c (M, N) int32 sums acc - zx * wsum: v = act(float32(c)
    * scale[n] + b[n]) into y (M, N) float32, or with quant_out min(max(rint(v * inv_sy)
    + zy, qmin), qmax) into yq (M, N) of the output's integer type: ops.qlinear's NumPy
    epilogue, the same float32 operations.  One thread (a classifier's row or few)."""
    M, N = c.shape
    zero, six = np.float32(0), np.float32(6)
    for m in range(M):
        for n in range(N):
            v = np.float32(c[m, n]) * scale[n] + b[n]
            if act == 1:
                v = max(v, zero)
            elif act == 2:
                v = min(max(v, zero), six)
            if quant_out:
                q = np.rint(v * inv_sy) + zy
                q = qmin if q < qmin else q
                yq[m, n] = qmax if q > qmax else q
            else:
                y[m, n] = v


@njit(cache=True)
def copy_rows(a, out, flip):
    """out[:M, :K] = a (M, K) one-byte integers as uint8 bytes, flipped (a ^ 0x80: int8 +
    128) with ``flip``, for an out of whole 8-row blocks and 4-byte steps (the int8 GEMM's
    input; the rows and columns past a's kept zero)."""
    for m in range(a.shape[0]):
        for k in range(a.shape[1]):
            v = np.uint8(a[m, k])
            out[m, k] = v ^ np.uint8(0x80) if flip else v


@njit(parallel=True, cache=True)
def float_planes(x, xf, zx):
    """xf[i] = float32(x[i]) - zx over flat arrays (x int8 or uint8): a quantized input as
    the float kernels read it, its zero point moved to 0 (the float conv's padding), so
    their sums of products are the integer ones, exactly, while they stay below 2**24.
    Tasks of 4096 elements."""
    n = x.size
    for t in prange((n + 4095) // 4096):
        lo = 4096 * t
        xs = x[lo:min(n, lo + 4096)]
        fs = xf[lo:min(n, lo + 4096)]
        for i in range(xs.size):
            fs[i] = np.float32(xs[i]) - zx


@njit(parallel=True, cache=True)
def conv2d_int8(xq, wq, wsum, scale, b, zx, OW, sh, sw, dh, dw, groups, R, S, act, res, has_res,
                y, yq, quant_out, inv_sy, zy, qmin, qmax, tile, cols_ws):
    """int8 im2col convolution with the epilogue above.

    xq (N, HP, WP, C): quantized input, channels last, already padded with zx;
    wq (K, R*S*Cg) int8 in (r, s, c) order;
    wsum (K,) int32; scale (K,) float32 = sx * sw[k]; b (K,) float32;
    y (N, K, P) float32 (or yq (N, K, P) int8/uint8 when quant_out); res (N, K, P) float32.
    act: 0 none, 1 relu, 2 relu6.  tile: output pixels per task (a multiple of 4);
    cols_ws: (threads, >= tile * R*S*Cg) of xq's dtype, holding the tile as (T, R*S*Cg).
    """
    N, C = xq.shape[0], xq.shape[3]
    K, CRS = wq.shape
    P = y.shape[2] if not quant_out else yq.shape[2]
    Kg = K // groups
    Cg = C // groups
    ntiles = (P + tile - 1) // tile
    for t in prange(N * groups * ntiles):
        n, g, p0, T, _, _ = gemm_task(t, groups, ntiles, 1, tile, Kg, P, Kg)
        cols = cols_ws[numba.get_thread_id(), :T * CRS].reshape((T, CRS))
        for j in range(T):
            p = p0 + j
            oh = p // OW
            ow = p - oh * OW
            _gather_pixel(cols[j], xq, n, oh * sh, ow * sw, dh, dw, R, S, g * Cg, Cg)
        wg = wq[g * Kg:(g + 1) * Kg]
        K4 = Kg - Kg % 4
        T4 = T - T % 4
        for kb in range(0, K4, 4):
            for jb in range(0, T4, 4):
                r16 = _dot4x4(wg, kb, cols, jb, CRS)
                for u in range(4):
                    for v in range(4):
                        _finish(r16[4 * u + v], g * Kg + kb + u, p0 + jb + v, n, zx, wsum, scale,
                                b, act, res, has_res, y, yq, quant_out, inv_sy, zy, qmin, qmax)
            for j in range(T4, T):
                for u in range(4):
                    _finish(_dot1(wg, kb + u, cols, j, CRS), g * Kg + kb + u, p0 + j, n, zx,
                            wsum, scale, b, act, res, has_res, y, yq, quant_out, inv_sy, zy,
                            qmin, qmax)
        for kk in range(K4, Kg):
            for j in range(T):
                _finish(_dot1(wg, kk, cols, j, CRS), g * Kg + kk, p0 + j, n, zx, wsum, scale, b,
                        act, res, has_res, y, yq, quant_out, inv_sy, zy, qmin, qmax)


# -- AVX-512 VNNI variants: u8 activations x s8 weights packed for dot8x16_bcast ----------------

@njit(parallel=True, cache=True)
def gemm_u8s8_vnni(a, wp, N, c, zc, out_ws, kc, group, band):
    """c (M, N) int32 = a (M8, Kp) uint8 . b^T + zc (a column offset, int32, >= N32
    entries), with b packed by pack_vnni as (N16/16, Kp/4, 16, 4) int8 flat; M8 >= M
    rounded up to 8 rows, Kp a multiple of 4.

    A task is (a group of ``group`` pairs of 16-column weight blocks, a band of 8*band
    rows of a).  It runs the reduction in chunks of kc bytes (a multiple of 4); in each,
    pair by pair, dot8x32 over the band's 8-row blocks: the pair's kc x 32 weight bytes
    stay in L1 while the band's rows (8*band x kc bytes, L2) stream past them, each of
    their lines serving 16 steps (the weights streaming from L2 for every 8-row block,
    the order before, ran at 283 GOP/s on one core against 416).  A whole 8 x 32 block
    goes from the accumulators straight into c's rows (dot8x32_to_rows, zc added, on the
    first chunk; dot8x32_add_rows after); the others (a last odd block, columns or rows
    short of the block) through out_ws (threads, >= 256) int32."""
    M8, Kp = a.shape
    M = c.shape[0]
    nq = Kp // 4
    nblocks = (N + 15) // 16
    npairs = (nblocks + 1) // 2
    ngroups = (npairs + group - 1) // group
    nbands = (M + 8 * band - 1) // (8 * band)
    af = a.reshape(M8 * Kp)
    cf = c.reshape(c.size)
    for t in prange(ngroups * nbands):
        grp = t // nbands
        i_lo = (t - grp * nbands) * 8 * band
        i_hi = min(M, i_lo + 8 * band)
        o = out_ws[numba.get_thread_id()]
        for k0 in range(0, Kp, kc):
            kq = min(kc, Kp - k0) // 4
            for pb in range(grp * group, min(npairs, (grp + 1) * group)):
                nb = 2 * pb
                pair = nb + 1 < nblocks
                woff = (nb * nq + k0 // 4) * 64
                whole = pair and nb * 16 + 32 <= N
                for i in range(i_lo, i_hi, 8):
                    if whole and i + 8 <= M:  # straight into c's rows
                        if k0 == 0:
                            dot8x32_to_rows(af, i * Kp, Kp, wp, woff, nq * 64, kq, cf,
                                            i * N + nb * 16, N, zc, nb * 16)
                        else:
                            dot8x32_add_rows(af, i * Kp + k0, Kp, wp, woff, nq * 64, kq, cf,
                                             i * N + nb * 16, N)
                        continue
                    if pair:
                        dot8x32_bcast(af, i * Kp + k0, Kp, wp, woff, nq * 64, kq, o)
                    else:
                        dot8x16_bcast(af, i * Kp + k0, Kp, wp, woff, kq, o)
                    for blk in range(2 if pair else 1):
                        n0 = (nb + blk) * 16
                        nl = min(16, N - n0)
                        for j in range(min(8, M - i)):
                            row = c[i + j]
                            src = o[16 * (8 * blk + j):]
                            if k0 == 0:
                                for lane in range(nl):
                                    row[n0 + lane] = src[lane] + zc[n0 + lane]
                            else:
                                for lane in range(nl):
                                    row[n0 + lane] += src[lane]


@njit(parallel=True, cache=True)
def pack_vnni_b(b, out, sums):
    """b (G, K, N) int8, any strides (per group g the reduction x output-channel matrix:
    a GEMM's b, or a conv's (Kg, R*S*Cg) weights transposed), packed in the layout the
    VNNI kernels read (dot8x16_bcast and its variants), and its column sums:

        out[g, nb, q, l, i] = b[g, 4q + i, 16nb + l]   (zero past K or N)
        sums[g, n] = sum_k b[g, k, n]

    out (G, ceil(N/16), ceil(K/4), 16, 4) int8, sums (G, N) int64.  One task per group and
    16-column block: for each reduction step the block's 4 rows are read 16 bytes at a
    time (a NumPy transpose-copy of the same layout took 2.9 ms for 1024 x 1000, the
    transposed copy it replaced first 1.9 ms more)."""
    G, K, N = b.shape
    nblk, nq = out.shape[1], out.shape[2]
    for t in prange(G * nblk):
        g = t // nblk
        nb = t - g * nblk
        acc = np.zeros(16, np.int64)
        nl = min(16, N - 16 * nb)
        for q in range(nq):
            for i in range(4):
                k = 4 * q + i
                if k < K:
                    row = b[g, k]
                    for l in range(nl):
                        v = row[16 * nb + l]
                        out[g, nb, q, l, i] = v
                        acc[l] += v
                    for l in range(nl, 16):
                        out[g, nb, q, l, i] = 0
                else:
                    for l in range(16):
                        out[g, nb, q, l, i] = 0
        for l in range(nl):
            sums[g, 16 * nb + l] = acc[l]


@njit(inline="always")
def _pixel_start(p, n, g, OW, HP, WP, sh, sw, C, Cg):
    """Where output pixel p of image n, group g starts reading the padded channels-last
    input (its first tap): byte offset of xq[n, oh*sh, ow*sw, g*Cg]."""
    oh = p // OW
    return ((n * HP + oh * sh) * WP + (p - oh * OW) * sw) * C + g * Cg


@njit(inline="always")
def _zero_point_sums(zx, wsum):
    """zx * wsum[k] per output channel, exact in int32 under the API's reduction bound."""
    zw = np.empty(wsum.shape[0], np.int32)
    for k in range(wsum.shape[0]):
        zw[k] = zx * wsum[k]
    return zw


@njit(parallel=True, cache=True)
def conv2d_int8_vnni(xq, wp, wsum, scale, b, zx, OW, sh, sw, dh, dw, groups, R, S, act, res,
                     has_res, y, yq, quant_out, inv_sy, zy, qmin, qmax, tile, width, cols_ws,
                     kblock, rows, zwr, colm, zc, move, src, dst, pt, pl):
    """With move, first nhwc_padded(src, dst, pt, pl, zx) (dst: xq, or xq's rows regrouped)
    in a parallel loop of its own, one call from Python for the layout move and the conv
    (the move's own launch had cost 7-30 us of a 0.3 ms layer).

    conv2d_int8 with uint8 xq through dot8x32_bcast / dot8x16_bcast: wp the weights
    packed by pack_vnni per group as (Kg16/16, width/4, 16, 4) int8 flat (width >=
    R*S*Cg, a multiple of 4, zero beyond R*S*Cg); cols_ws (threads, >= (tile + 8) *
    width) uint8.  Tasks: (image, group, tile of pixels, kblock output channels, a
    multiple of 32), so maps with few tiles still give every thread a share.

    Each 8-pixel x 32-channel block is transposed to channel rows in registers and the
    epilogue applied on the way to y (dot8x32_epi), or, for a quantized output, the
    epilogue and the requantization on the way to yq (dot8x32_epq): no int32 tile, no
    second pass (the per-channel epilogue pass over the tile had cost a third of a 1x1
    layer's time, a scalar scatter into that tile a fifth before it).  Same epilogue
    arithmetic as _finish, same results bit for bit.

    rows (OH, 3), when not empty (taps read in place, tasks of whole output rows):
    output row oh runs only the kernel rows [rows[oh, 0], rows[oh, 1]) -- those whose
    input row is inside the map, the others read only padding -- with the zero-point
    correction of those rows' weights, zwr[rows[oh, 2], k] = zx * (their sum for
    channel k).  A row that skips kernel rows is cut into blocks of its own; runs of
    rows that skip none are cut into 8-pixel blocks across their ends.  512@7 3x3: the
    top and bottom rows' 3 padding taps of 9 skipped, 9.5 % of the products, in the same
    7 blocks; 256@14: 4.8 % in the same 25.

    colm (classes, 2), when not empty (maps whose width is a multiple of 7, not of 8):
    every row is cut into blocks of seven pixels (taps7x32_cols_*), none across row ends,
    and a row's first and last pixels also leave out the taps that read only the padding
    left and right of the map: bit t of colm[cls, 0] (colm[cls, 1]) set for tap t of the
    row's kernel rows, the products left out added back from zc[0, cls] (zc[1, cls]),
    zx * their weights' sums per channel (zc padded 32 channels past K).  256@14 3x3:
    another 4.8 % of the products and 28 blocks of 7 for 25 of 8 (196 pixels); 512@7:
    9.5 % and no eighth lane."""
    if move:
        for t in prange(src.shape[0] * dst.shape[1]):
            _padded_row(src, dst, t, pt, pl, zx, ONE, ZERO, ZERO, ZERO)
    N, C = xq.shape[0], xq.shape[3]
    K = wsum.shape[0]
    P = y.shape[2] if not quant_out else yq.shape[2]
    Kg = K // groups
    Cg = C // groups
    nq = width // 4
    kblocks = (Kg + 15) // 16
    ntiles = (P + tile - 1) // tile
    nkb = (Kg + kblock - 1) // kblock
    # a 1x1 stride-1 conv over an unpadded input whose channels fill the packed width:
    # each pixel's row of xq is its column already, read in place (no gather)
    direct = (R == 1 and S == 1 and sh == 1 and sw == 1 and groups == 1 and width == C
              and xq.shape[1] * xq.shape[2] == P)
    # otherwise, with whole 4-byte channel steps per tap, each pixel's taps are read in
    # place too (taps8x32_*: a start offset per pixel, one per tap): no gathered columns
    HP, WP = xq.shape[1], xq.shape[2]
    taps = not direct and Cg % 4 == 0
    toff = np.empty(R * S, np.int64)
    for r in range(R):
        for s in range(S):
            toff[r * S + s] = (r * dh * WP + s * dw) * C
    nqt = Cg // 4
    xf = xq.reshape(xq.size)
    yf, yqf, rf = y.reshape(y.size), yq.reshape(yq.size), res.reshape(res.size)
    zw = _zero_point_sums(zx, wsum)
    inv32, zy32, lo32, hi32 = (np.float32(inv_sy), np.float32(zy), np.float32(qmin),
                               np.float32(qmax))
    by_rows = taps and rows.shape[0] > 0
    seven = by_rows and colm.shape[0] > 0
    rq = np.array([inv32, zy32, lo32, hi32], np.float32)
    for t in prange(N * groups * ntiles * nkb):
        n, g, p0, T, k0t, k1t = gemm_task(t, groups, ntiles, nkb, tile, kblock, P, Kg)
        kb_lo = (k0t - g * Kg) // 16
        kb_hi = (k1t - g * Kg + 15) // 16
        tid = numba.get_thread_id()
        cf = cols_ws[tid]
        cols = cf[:(tile + 8) * width].reshape((tile + 8, width))
        if by_rows:
            # the task's pixels cut at row ends: block bi is pixels [bp[bi], +bn[bi]) of
            # output row bo[bi], its 8 start offsets at pix[8*bi:] (the last repeated);
            # with seven-pixel blocks be[bi] says whether it holds the row's first (1)
            # and last (2) pixels
            bp = np.empty(T, np.int64)
            bn = np.empty(T, np.int64)
            bo = np.empty(T, np.int64)
            be = np.zeros(T, np.int64)
            pix = np.empty(8 * T, np.int64)
            nb = 0
            p = p0
            while p < p0 + T:
                oh = p // OW
                end = min(p0 + T, (oh + 1) * OW)
                if seven:
                    c = p - oh * OW
                    be[nb] = (1 if c == 0 else 0) + (2 if c + 7 >= OW else 0)
                    end = min(end, p + 7)
                elif rows[oh, 1] - rows[oh, 0] == R:  # a whole row: on into the next ones
                    q = oh + 1
                    while q * OW < p0 + T and rows[q, 1] - rows[q, 0] == R:
                        q += 1
                    end = min(p0 + T, q * OW)
                npx = min(8, end - p)
                for j in range(8):
                    pix[8 * nb + j] = _pixel_start(p + min(j, npx - 1), n, g, OW, HP, WP, sh,
                                                   sw, C, Cg)
                bp[nb], bn[nb], bo[nb] = p, npx, oh
                nb += 1
                p += npx
            for kb in range(kb_lo, kb_hi, 2):
                k0 = g * Kg + 16 * kb
                for bi in range(nb):
                    r0, r1, cls = rows[bo[bi], 0], rows[bo[bi], 1], rows[bo[bi], 2]
                    woff = ((g * kblocks + kb) * nq + r0 * S * nqt) * 64
                    if seven:
                        _taps_block7(xf, pix, 8 * bi, toff[r0 * S:r1 * S], (r1 - r0) * S, nqt,
                                     wp, woff, nq * 64, yf, yqf, (n * K + k0) * P + bp[bi], P,
                                     bn[bi], Kg - 16 * kb, zwr[cls], scale, b, k0, act, rf,
                                     has_res, quant_out, kb + 1 < kb_hi, rq, colm, zc, cls,
                                     be[bi])
                    else:
                        _taps_block(xf, pix, 8 * bi, toff[r0 * S:r1 * S], (r1 - r0) * S, nqt,
                                    wp, woff, nq * 64, yf, yqf, (n * K + k0) * P + bp[bi], P,
                                    bn[bi], Kg - 16 * kb, zwr[cls], scale, b, k0, act, rf,
                                    has_res, quant_out, kb + 1 < kb_hi, inv32, zy32, lo32, hi32)
            continue
        if taps:
            pix = np.empty(T + 8, np.int64)
            for j in range(T + 8):  # a last group short of 8 repeats its last pixel
                pix[j] = _pixel_start(p0 + min(j, T - 1), n, g, OW, HP, WP, sh, sw, C, Cg)
            for kb in range(kb_lo, kb_hi, 2):
                pair = kb + 1 < kb_hi
                woff = (g * kblocks + kb) * nq * 64
                k0 = g * Kg + 16 * kb
                for jb in range(0, T, 8):
                    _taps_block(xf, pix, jb, toff, R * S, nqt, wp, woff, nq * 64, yf, yqf,
                                (n * K + k0) * P + p0 + jb, P, min(8, T - jb), Kg - 16 * kb, zw,
                                scale, b, k0, act, rf, has_res, quant_out, pair, inv32, zy32,
                                lo32, hi32)
            continue
        # the pixels gathered into cols: all, or (direct) a last group short of 8
        j0 = (T // 8) * 8 if direct else 0
        for j in range(j0, T):
            p = p0 + j
            oh = p // OW
            ow = p - oh * OW
            row = cols[j]
            _gather_pixel(row, xq, n, oh * sh, ow * sw, dh, dw, R, S, g * Cg, Cg)
            for q in range(R * S * Cg, width):
                row[q] = 0
        for kb in range(kb_lo, kb_hi, 2):
            pair = kb + 1 < kb_hi
            woff = (g * kblocks + kb) * nq * 64
            k0 = g * Kg + 16 * kb
            for jb in range(0, T, 8):
                src = xf if jb < j0 else cf
                a_off = (n * P + p0 + jb) * width if jb < j0 else jb * width
                y_off = (n * K + k0) * P + p0 + jb
                npx = min(8, T - jb)
                if quant_out:  # the epilogue and the requantization in the block's store
                    if pair:
                        dot8x32_epq(src, a_off, width, wp, woff, nq * 64, nq, yqf, y_off, P,
                                    npx, Kg - 16 * kb, zw, scale, b, k0, act, rf, has_res,
                                    inv32, zy32, lo32, hi32)
                    else:
                        dot8x16_epq(src, a_off, width, wp, woff, nq, yqf, y_off, P, npx,
                                    Kg - 16 * kb, zw, scale, b, k0, act, rf, has_res, inv32,
                                    zy32, lo32, hi32)
                elif pair:  # float out: the epilogue in the block's store
                    dot8x32_epi(src, a_off, width, wp, woff, nq * 64, nq, yf, y_off, P, npx,
                                Kg - 16 * kb, zw, scale, b, k0, act, rf, has_res)
                else:
                    dot8x16_epi(src, a_off, width, wp, woff, nq, yf, y_off, P, npx,
                                Kg - 16 * kb, zw, scale, b, k0, act, rf, has_res)


@njit(inline="always")
def _taps_block7(xf, pix, pix_off, toff, ntaps, nqt, wp, woff, wstep, yf, yqf, y_off, P, npx,
                 nch, zw, scale, b, k0, act, rf, has_res, quant_out, pair, rq, colm, zc, cls,
                 edge):
    """_taps_block on seven pixels of one output row (taps7x32_cols_*): with bit 0 of edge
    the first leaves out the taps of colm[cls, 0], with bit 1 the last those of
    colm[cls, 1], their products added back from zc[0, cls] and zc[1, cls].  rq: the
    requantization's (inv, zy, qmin, qmax).  (Fewer than 30 arguments: a longer call is
    compiled as one with *args, which Numba does not inline.)"""
    mf = colm[cls, 0] if edge & 1 else 0
    ml = colm[cls, 1] if edge & 2 else 0
    zf, zl = zc[0, cls], zc[1, cls]
    if quant_out:
        if pair:
            taps7x32_cols_epq(xf, pix, pix_off, toff, ntaps, nqt, wp, woff, wstep, yqf, y_off,
                              P, npx, nch, zw, scale, b, k0, act, rf, has_res, rq[0], rq[1],
                              rq[2], rq[3], mf, ml, zf, zl, k0)
        else:
            taps7x16_cols_epq(xf, pix, pix_off, toff, ntaps, nqt, wp, woff, yqf, y_off, P, npx,
                              nch, zw, scale, b, k0, act, rf, has_res, rq[0], rq[1], rq[2],
                              rq[3], mf, ml, zf, zl, k0)
    elif pair:
        taps7x32_cols_epi(xf, pix, pix_off, toff, ntaps, nqt, wp, woff, wstep, yf, y_off, P,
                          npx, nch, zw, scale, b, k0, act, rf, has_res, mf, ml, zf, zl, k0)
    else:
        taps7x16_cols_epi(xf, pix, pix_off, toff, ntaps, nqt, wp, woff, yf, y_off, P, npx, nch,
                          zw, scale, b, k0, act, rf, has_res, mf, ml, zf, zl, k0)


@njit(inline="always")
def _taps_block(xf, pix, pix_off, toff, ntaps, nqt, wp, woff, wstep, yf, yqf, y_off, P, npx,
                nch, zw, scale, b, k0, act, rf, has_res, quant_out, pair, inv32, zy32, lo32,
                hi32):
    """One 8-pixel block of taps read in place (pixel j's start at pix[pix_off + j]): 32
    channels (pair) or 16, float or requantized out."""
    if quant_out:
        if pair:
            taps8x32_epq(xf, pix, pix_off, toff, ntaps, nqt, wp, woff, wstep, yqf, y_off, P,
                         npx, nch, zw, scale, b, k0, act, rf, has_res, inv32, zy32, lo32, hi32)
        else:
            taps8x16_epq(xf, pix, pix_off, toff, ntaps, nqt, wp, woff, yqf, y_off, P, npx, nch,
                         zw, scale, b, k0, act, rf, has_res, inv32, zy32, lo32, hi32)
    elif pair:
        taps8x32_epi(xf, pix, pix_off, toff, ntaps, nqt, wp, woff, wstep, yf, y_off, P, npx,
                     nch, zw, scale, b, k0, act, rf, has_res)
    else:
        taps8x16_epi(xf, pix, pix_off, toff, ntaps, nqt, wp, woff, yf, y_off, P, npx, nch, zw,
                     scale, b, k0, act, rf, has_res)


@njit(parallel=True, cache=True)
def conv1x1_int8_px(x, wp, wsum, scale, b, zx, act, res, has_res, y, yq, quant_out, inv_sy, zy,
                    qmin, qmax, tile, kblock, panel_ws):
    """A 1x1 stride-1 unpadded ungrouped conv of a uint8 NCHW x through the pixel-vector
    VNNI blocks (vnni.px*_epi / px*_epq), output pixels in the vector lanes:

        acc[k, p] = sum_c u8 x[n, c, p] * s8 w[k, c]
        y[k, p]   = act(float32(acc[k, p] - zx * wsum[k]) * scale[k] + b[k] (+ res[k, p]))

    wp: the weights packed by quantization.pack_px, (K8/8, C4/4, 8, 4) int8 flat with
    zeros past K and C.  Tasks: (image, tile of pixels, kblock output channels, a multiple
    of 8).  Each task interleaves its pixels' channel planes four at a time into
    vpdpbusd words in panel_ws[thread] (pack4x64; 64 pixels x 4 channels a step, no
    channels-last copy of the input) and runs every 8-channel strip of its channels
    over the panel in blocks of up to 48 pixels.  The epilogue is _finish's, bit for bit;
    its stores are whole channel rows of y (NCHW), no transposes."""
    N, C = x.shape[0], x.shape[1]
    P = x.shape[2] * x.shape[3]
    K = wsum.shape[0]
    nq = (C + 3) // 4
    ntiles = (P + tile - 1) // tile
    nkb = (K + kblock - 1) // kblock
    xf = x.reshape(x.size)
    yf, yqf, rf = y.reshape(y.size), yq.reshape(yq.size), res.reshape(res.size)
    zw = _zero_point_sums(zx, wsum)
    inv32, zy32, lo32, hi32 = (np.float32(inv_sy), np.float32(zy), np.float32(qmin),
                               np.float32(qmax))
    for t in prange(N * ntiles * nkb):
        n, g, p0, T, k0t, k1t = gemm_task(t, 1, ntiles, nkb, tile, kblock, P, K)
        panel = panel_ws[numba.get_thread_id()]
        lda = 4 * ((T + 63) // 64) * 64
        for q in range(nq):
            for j0 in range(0, T, 64):
                pack4x64(xf, (n * C + 4 * q) * P + p0 + j0, P, C - 4 * q, panel,
                         q * lda + 4 * j0, T - j0)
        for k0 in range(k0t, k1t, PX_MC):
            woff = (k0 // PX_MC) * nq * 4 * PX_MC
            nch = k1t - k0
            for jb in range(0, T, 16 * PX_NV):
                npx = T - jb
                nv = min(PX_NV, (npx + 15) // 16)
                y_off = (n * K + k0) * P + p0 + jb
                if quant_out:
                    if nv == 3:
                        px3_epq(panel, 4 * jb, lda, nq, wp, woff, yqf, y_off, P, npx, nch, zw,
                                scale, b, k0, act, rf, has_res, inv32, zy32, lo32, hi32)
                    elif nv == 2:
                        px2_epq(panel, 4 * jb, lda, nq, wp, woff, yqf, y_off, P, npx, nch, zw,
                                scale, b, k0, act, rf, has_res, inv32, zy32, lo32, hi32)
                    else:
                        px1_epq(panel, 4 * jb, lda, nq, wp, woff, yqf, y_off, P, npx, nch, zw,
                                scale, b, k0, act, rf, has_res, inv32, zy32, lo32, hi32)
                elif nv == 3:
                    px3_epi(panel, 4 * jb, lda, nq, wp, woff, yf, y_off, P, npx, nch, zw, scale,
                            b, k0, act, rf, has_res)
                elif nv == 2:
                    px2_epi(panel, 4 * jb, lda, nq, wp, woff, yf, y_off, P, npx, nch, zw, scale,
                            b, k0, act, rf, has_res)
                else:
                    px1_epi(panel, 4 * jb, lda, nq, wp, woff, yf, y_off, P, npx, nch, zw, scale,
                            b, k0, act, rf, has_res)


@njit(inline="always")
def _fill_border(row, h, H, pl, W, fill):
    """Set the padding of one channels-last padded row (WP, C) to ``fill``: the whole row
    when input row h is outside [0, H), else the pl columns on the left and the ones
    right of pl + W.  True if the row has an interior to fill from the input."""
    WP, C = row.shape
    if h < 0 or h >= H:
        for w in range(WP):
            for c in range(C):
                row[w, c] = fill
        return False
    for w in range(pl):
        for c in range(C):
            row[w, c] = fill
    for w in range(pl + W, WP):
        for c in range(C):
            row[w, c] = fill
    return True


@njit(inline="always")
def _row_blocks(x, out, n, i, h, pl, inv_scale, zx, qmin, qmax):
    """Padded channels-last row out[n, i, pl:pl + W] from input row h of x (N, C, H, W),
    C >= 16: 16 channels x 16 pixels a step through nchwc.to_channels_last
    (quantized when x is float; the scalar scatter, one byte store per element, took
    0.44 ms for 256x56x56).  The last channel and pixel groups start at C - 16 and
    W - 16 and rewrite a few bytes with the same values; a row narrower than 16 pixels
    (7x7, 14x14 maps) is one masked group (the scalar loop took 20-28 us of the 512@7
    and 256@14 3x3 layers)."""
    N, C, H, W = x.shape
    xf = x.reshape(N * C * H * W)
    of = out.reshape(out.size)
    orow = ((n * out.shape[1] + i) * out.shape[2] + pl) * C
    npx = min(W, nchwc.B)
    for c0 in range(0, C, nchwc.B):
        cc = min(c0, C - nchwc.B)
        for w0 in range(0, W, nchwc.B):
            ww = max(0, min(w0, W - nchwc.B))
            nchwc.to_channels_last(xf, ((n * C + cc) * H + h) * W + ww, H * W, inv_scale, zx,
                                   qmin, qmax, of, orow + ww * C + cc, C, npx)


def _as_byte(v, inv_scale, zx, qmin, qmax):
    """The byte an element of x becomes in a channels-last row (typed by _as_byte_impl)."""


@overload(_as_byte, inline="always")
def _as_byte_impl(v, inv_scale, zx, qmin, qmax):
    """float32 v: saturate(round_half_even(v * inv_scale) + zx), as
    nchwc.to_channels_last quantizes; a byte v: itself (the scale arguments unused)."""
    if isinstance(v, types.Float):
        return lambda v, inv_scale, zx, qmin, qmax: min(max(np.rint(v * inv_scale) + zx,
                                                            qmin), qmax)
    return lambda v, inv_scale, zx, qmin, qmax: v


def _words_row(x, out, n, i, h, pl):
    """Moves row h of byte planes x (N, C, H, W), C <= 4, into the padded row out[n, i]
    (N, HP, WP, 4) from column pl, if it can (typed by _words_row_impl); True if it did."""


@overload(_words_row, inline="always")
def _words_row_impl(x, out, n, i, h, pl):
    """Byte x with rows of >= 64 pixels: 64 pixels a step through vnni.pack4x64 (the four
    channel rows interleaved into four-byte words by byte shuffles; a channel past C
    repeats the last, which is what it holds then), the last step starting at W - 64 and
    rewriting a few words with the same bytes.  The RGB stems' move had run as a scalar
    loop of one byte store an element: 96 us of the 3x3/2 3->32 @224 conv's 182 at one
    thread.  Float x (quantized on the way): not here."""
    if isinstance(x.dtype, types.Float):
        return lambda x, out, n, i, h, pl: False

    def impl(x, out, n, i, h, pl):
        N, C, H, W = x.shape
        if W < 64:
            return False
        xf = x.reshape(x.size)
        of = out.reshape(out.size)
        orow = ((n * out.shape[1] + i) * out.shape[2] + pl) * 4
        for w0 in range(0, W, 64):
            w = min(w0, W - 64)
            pack4x64(xf, (n * C * H + h) * W + w, H * W, C, of, orow + 4 * w, 64)
        return True
    return impl


@njit(inline="always")
def _padded_row(x, out, t, pt, pl, fill, inv_scale, zx, qmin, qmax):
    """Row t (image t // HP, padded row t % HP) of a channels-last padded out (N, HP, WP,
    CP) from x (N, C, H, W) at offset (pt, pl): the border ``fill``, the row's pixels
    x's moved (bytes) or quantized (float32 x: _as_byte), and where out has more
    channels than x (CP > C: a conv's input padded to a multiple of 4) those ``fill``,
    or, moved four channels a pixel by _words_row, a copy of the last channel (a padded
    conv's weights for them are zero: any byte adds nothing)."""
    N, C, H, W = x.shape
    HP, CP = out.shape[1], out.shape[3]
    n = t // HP
    i = t % HP
    row = out[n, i]
    h = i - pt
    if not _fill_border(row, h, H, pl, W, fill):
        return
    if C >= nchwc.B and CP == C:
        _row_blocks(x, out, n, i, h, pl, inv_scale, zx, qmin, qmax)
        return
    if CP == 4 and _words_row(x, out, n, i, h, pl):
        return
    for c in range(C):
        src = x[n, c, h]
        for w in range(W):
            row[pl + w, c] = _as_byte(src[w], inv_scale, zx, qmin, qmax)
    for c in range(C, CP):
        for w in range(W):
            row[pl + w, c] = fill


@njit(parallel=True, cache=True)
def nhwc_padded(x, out, pt, pl, fill):
    """out (N, HP, WP, C) = x (N, C, H, W) moved channels-last at offset (pt, pl), the border
    set to ``fill`` (the zero point).  One task per output row; x and out one-byte
    integers of the same width."""
    for t in prange(x.shape[0] * out.shape[1]):
        _padded_row(x, out, t, pt, pl, fill, ONE, ZERO, ZERO, ZERO)


@njit(parallel=True, cache=True, fastmath=False)
def quantize_nhwc_padded(x, inv_scale, zx, qmin, qmax, out, pt, pl):
    """out (N, HP, WP, C) = saturate(round_half_even(x * inv_scale) + zx), channels-last at
    offset (pt, pl), the border holding zx: a float layer input quantized and laid out for
    the int8 conv in one pass.  inv_scale, zx, qmin, qmax: float32."""
    for t in prange(x.shape[0] * out.shape[1]):
        _padded_row(x, out, t, pt, pl, zx, inv_scale, zx, qmin, qmax)


@njit(parallel=True, cache=True, fastmath=False)
def quantize_flat(x, inv_scale, zx, qmin, qmax, out):
    """out[i] = saturate(round_half_even(x[i] * inv_scale) + zx) for flat float32 x: the
    arithmetic of quantize_nhwc_padded, the layout kept (the pixel-vector 1x1 kernel reads
    NCHW planes).  Tasks of 4096 elements."""
    n = x.size
    for t in prange((n + 4095) // 4096):
        lo = 4096 * t
        xs = x[lo:min(n, lo + 4096)]
        os_ = out[lo:min(n, lo + 4096)]
        for i in range(xs.size):
            q = np.rint(xs[i] * inv_scale) + zx
            q = qmin if q < qmin else q
            q = qmax if q > qmax else q
            os_[i] = np.int32(q)
