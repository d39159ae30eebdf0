"""Sparse (pruned) convolution and linear layers with CSR weights.

Convolution: row k of the CSR matrix holds output channel k's nonzero taps,
column = (absolute input channel c, r, s), so

    y[n, k, p, q] = act(b[k] + sum_(i in row k) vals[i] * xp[n, c_i, p*sh + r_i*dh, q*sw + s_i*dw] (+ res))

Work is proportional to the nonzeros: at 90 % sparsity a tenth of the dense
multiply-adds, with no im2col copy.

The kernel (``sparse_conv2d_tiles``; strided convs on their input's stride
phases, so every conv is a stride-1 product) is a sparse-times-dense
product as NCHW inference libraries run it: a tile of
16*nv output pixels lives in nv vector registers while one output channel's
nonzeros stream past it,

    acc[0:16*nv] += vals[i] * x[x_off + offs[i] : +16*nv]   for i in row k,

one broadcast and nv vector loads per nonzero and no accumulator traffic,
then the epilogue stores the tile once.  The reduction runs in input-channel
chunks whose share of the tile's input stays in L1 while every output
channel's nonzeros of the chunk stream past (partial sums wait in a
per-thread line), and the CSR stream (int32 offsets, float32 values) is
reused by all the tiles of a task.

Linear: yT[o, n] = act(b[o] + sum_(i in row o) vals[i] * xT[col_i, n]).
"""
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import FASTMATH
from .epilogue import apply_row, store_row, store_row_res
from .zmm import (_counted_loop, _data_ptr, _emit_epilogue, _full_or_partial, _lane_masks,
                  _masked_load_store, _splat)


def _make_spmm(nv, sets):
    """The sparse tile intrinsic for 16*nv pixels, nonzeros taken ``sets`` at a time into
    as many accumulator sets (so enough independent FMA chains are in flight)."""
    @intrinsic
    def spmm(typingctx, x, x_off, offs, vals, i0, i1, y, y_off, npx, bias, b_off, act, res,
             has_res, init, init_off, accumulate):
        """y[y_off + j] = act(bias[b_off] + a_j + sum_(i0 <= i < i1) vals[i] * x[x_off + offs[i] + j]
        (+ res[y_off + j])) for j < npx <= 16*nv, a_j = init[init_off + j] when accumulate
        (a reduction split into channel chunks), else 0; offs int32.  A partial tile
        (npx < 16*nv) reads and writes only its npx lanes (masked), so nothing past x's or
        y's end is touched; act as in epilogue.py."""
        sig = types.void(x, types.intp, offs, vals, types.intp, types.intp, y, types.intp,
                         types.intp, bias, types.intp, types.intp, res, types.intp, init,
                         types.intp, types.intp)

        def codegen(context, builder, signature, args):
            f32 = ir.FloatType()
            v16 = ir.VectorType(f32, 16)
            vp = v16.as_pointer()
            i32 = ir.IntType(32)
            x_ptr = _data_ptr(context, builder, signature, args, 0)
            o_ptr = _data_ptr(context, builder, signature, args, 2, i32)
            v_ptr = _data_ptr(context, builder, signature, args, 3)
            y_ptr = _data_ptr(context, builder, signature, args, 6)
            b_ptr = _data_ptr(context, builder, signature, args, 9)
            r_ptr = _data_ptr(context, builder, signature, args, 12)
            a_ptr = _data_ptr(context, builder, signature, args, 14)
            x_off, i0, i1, y_off, npx, b_off, act, has_res, init_off, accumulate = (
                args[1], args[4], args[5], args[7], args[8], args[10], args[11], args[13],
                args[15], args[16])
            intp = x_off.type
            const = lambda v: ir.Constant(intp, v)  # noqa: E731
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(v16, [v16, v16, v16]), "llvm.fma.v16f32")
            mload, mstore = _masked_load_store(builder, 16)
            align = ir.Constant(i32, 4)
            masks = _lane_masks(builder, npx, nv)
            zero = ir.Constant(v16, None)

            def step(masked):
                def body(i, accs):
                    accs = list(accs)
                    for u in range(len(accs) // nv):
                        iu = builder.add(i, const(u))
                        o = builder.sext(builder.load(builder.gep(o_ptr, [iu])), intp)
                        w = _splat(builder, builder.load(builder.gep(v_ptr, [iu])), 16)
                        base = builder.add(x_off, o)
                        for v in range(nv):
                            xp = builder.bitcast(builder.gep(x_ptr, [builder.add(base, const(16 * v))]),
                                                 vp)
                            if masked:
                                xv = builder.call(mload, [xp, align, masks[v], zero])
                            else:
                                xv = builder.load(xp, align=4)
                            accs[u * nv + v] = builder.call(fma, [w, xv, accs[u * nv + v]])
                    return accs
                return body

            # the starting sums: zero, or init's (masked to the tile's lanes)
            acc_on = builder.icmp_signed("!=", accumulate, const(0))
            no_lanes = ir.Constant(ir.VectorType(ir.IntType(1), 16), [0] * 16)
            start = []
            for v in range(nv):
                ap = builder.bitcast(builder.gep(a_ptr, [builder.add(init_off, const(16 * v))]), vp)
                start.append(builder.call(mload, [ap, align, builder.select(acc_on, masks[v],
                                                                            no_lanes), zero]))

            def emit(masked):
                i, accs = _counted_loop(builder, i0, i1, sets, start + [zero] * ((sets - 1) * nv),
                                        step(masked))
                acc = accs[:nv]
                for u in range(1, sets):
                    acc = [builder.fadd(a, accs[u * nv + v]) for v, a in enumerate(acc)]
                return _counted_loop(builder, i, i1, 1, acc, step(masked))[1]

            acc = _full_or_partial(builder, npx, 16 * nv, emit)
            bk = _splat(builder, builder.load(builder.gep(b_ptr, [b_off])), 16)

            def stores(activate, with_res):
                for v in range(nv):
                    o = builder.add(y_off, const(16 * v))
                    val = builder.fadd(acc[v], bk)
                    if with_res:
                        rp = builder.bitcast(builder.gep(r_ptr, [o]), vp)
                        val = builder.fadd(val, builder.call(mload, [rp, align, masks[v], zero]))
                    yp = builder.bitcast(builder.gep(y_ptr, [o]), vp)
                    builder.call(mstore, [activate(val), yp, align, masks[v]])

            _emit_epilogue(builder, act, const(1), has_res, 16, stores)
            return context.get_dummy_value()

        return sig, codegen

    return spmm


spmm_tile1 = _make_spmm(1, 4)
spmm_tile2 = _make_spmm(2, 4)
spmm_tile4 = _make_spmm(4, 2)


@njit(inline="always")
def _spmm(nv, x, x_off, offs, vals, i0, i1, y, y_off, npx, bias, b_off, act, res, has_res, init,
          init_off, accumulate):
    if nv == 4:
        spmm_tile4(x, x_off, offs, vals, i0, i1, y, y_off, npx, bias, b_off, act, res, has_res,
                   init, init_off, accumulate)
    elif nv == 2:
        spmm_tile2(x, x_off, offs, vals, i0, i1, y, y_off, npx, bias, b_off, act, res, has_res,
                   init, init_off, accumulate)
    else:
        spmm_tile1(x, x_off, offs, vals, i0, i1, y, y_off, npx, bias, b_off, act, res, has_res,
                   init, init_off, accumulate)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def sparse_conv2d_tiles(xs, cptr, offs, vals, b, y, act, res, has_res, nv, tgroup, kblock,
                        line_ws):
    """The register-tiled sparse conv on a stride-1 grid.  xs (N, C*sh*sw, HS, WS): the
    padded input split into its stride phases (pad.pad_space_to_depth; at stride 1 the
    padded input itself), so tap (c, r, s) of output pixels (p, q) is one unit-stride run
    at offs[i] + p*WS + q of the image (offs int32: the tap's phase plane and its shift
    r//sh, s//sw in it); y/res (N, K, OH, OW).  cptr (K, nch + 1): row k's nonzeros of
    input-channel chunk j are cptr[k, j] .. cptr[k, j + 1] (CSR sorted by channel).

    A tile is 16*nv consecutive positions f = p*WS + q of that grid, so on narrow maps
    one tile spans several output rows (columns q >= OW are computed and dropped).  The
    tile runs chunk by chunk, every output channel of the task per chunk, its partial
    sums kept in line_ws (threads, >= kblock*16*nv): a chunk's input (its channels'
    few rows around the tile) stays in L1 while all the channels' nonzeros of that chunk
    stream past.  Then each output row's part is stored with the epilogue; where
    WS == OW (a 1x1 conv without padding: the grid is y's own layout) the last chunk
    stores straight into y with the epilogue instead.  Tasks: (image, group of tgroup
    tiles, block of kblock output channels).
    """
    N, CS, HS, WS = xs.shape
    K, OH, OW = y.shape[1], y.shape[2], y.shape[3]
    nch = cptr.shape[1] - 1
    NB = 16 * nv
    img = CS * HS * WS
    L = (OH - 1) * WS + OW
    ntiles = (L + NB - 1) // NB
    ngr = (ntiles + tgroup - 1) // tgroup
    nkb = (K + kblock - 1) // kblock
    direct = WS == OW
    xf = xs.reshape(-1)
    yf = y.reshape(-1)
    rf = res.reshape(-1)
    zero_b = np.zeros(1, np.float32)
    for t in prange(N * ngr * nkb):
        n = t // (ngr * nkb)
        g = (t // nkb) % ngr
        k0 = (t % nkb) * kblock
        k1 = min(K, k0 + kblock)
        line = line_ws[numba.get_thread_id()]
        for tile in range(g * tgroup, min(ntiles, (g + 1) * tgroup)):
            f0 = tile * NB
            npx = min(NB, L - f0)
            xo = n * img + f0
            last = nch - 1 if direct else nch
            for j in range(last):
                for k in range(k0, k1):
                    _spmm(nv, xf, xo, offs, vals, cptr[k, j], cptr[k, j + 1], line,
                          (k - k0) * NB, npx, zero_b, 0, 0, rf, 0, line, (k - k0) * NB, j)
            if direct:
                for k in range(k0, k1):
                    _spmm(nv, xf, xo, offs, vals, cptr[k, last], cptr[k, last + 1], yf,
                          (n * K + k) * OH * OW + f0, npx, b, k, act, rf, has_res, line,
                          (k - k0) * NB, last)
                continue
            for p in range(f0 // WS, min(OH, (f0 + NB - 1) // WS + 1)):
                lo = max(p * WS, f0)
                hi = min(p * WS + OW, f0 + NB)
                if lo >= hi:
                    continue
                for k in range(k0, k1):
                    src = line[(k - k0) * NB + lo - f0:(k - k0) * NB + hi - f0]
                    dst = y[n, k, p, lo - p * WS:hi - p * WS]
                    if has_res:
                        store_row_res(dst, src, b[k], res[n, k, p, lo - p * WS:hi - p * WS], act)
                    else:
                        store_row(dst, src, b[k], act)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def sparse_linear(xT, indptr, cols, vals, b, yT, act):
    """yT (O, N) = act(W_csr (O, F) @ xT (F, N) + b), one output feature per task."""
    O = yT.shape[0]
    for o in prange(O):
        acc = yT[o]
        for j in range(acc.shape[0]):
            acc[j] = 0.0
        for i in range(indptr[o], indptr[o + 1]):
            v = vals[i]
            src = xT[cols[i]]
            for j in range(acc.shape[0]):
                acc[j] += v * src[j]
        apply_row(acc, b[o], act)
