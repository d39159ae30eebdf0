"""Sparse (pruned) convolution and linear layers with CSR weights.

Convolution: row k of the CSR matrix holds output channel k's nonzero taps,
column = (absolute input channel c, r, s), so

    y[n, k, p, q] = act(b[k] + sum_(i in row k) vals[i] * xp[n, c_i, p*sh + r_i*dh,
                                                            q*sw + s_i*dw] (+ res))

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

Block sparsity (kb = 4): rows of the matrix are blocks of kb consecutive output
channels, a stored block one tap (c, r, s) of all kb of them,

    acc[u][0:16*nv] += vals[kb*i + u] * x[x_off + offs[i] : +16*nv]   for u < kb,

so one input read feeds kb accumulator rows (nv loads, kb broadcasts, kb*nv FMAs per
block: the FMA ports, not the loads, set the pace); zeros inside a stored block are
multiplied like any value.

Linear, for few samples: y[n, o] = act(b[o] + sum_(i in row o) vals[i] * x[n, col_i]), the
x values gathered VW at a time (``sparse_linear_rows``); for many samples the API runs a
linear as the 1x1 convolution above over the samples as pixels.
"""
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import FASTMATH
from .epilogue import activate
from .zmm import (_counted_loop, _data_ptr, _emit_epilogue, _full_or_partial, _lane_masks,
                  _masked_load_store, _splat, prefetch_line, VW)


def _imax(builder, a, b):
    return builder.select(builder.icmp_signed(">", a, b), a, b)


def _imin(builder, a, b):
    return builder.select(builder.icmp_signed("<", a, b), a, b)


PART, RUN, ROWS = 0, 1, 2  # what a tile call stores (see _make_spmm)


def _each_channel(builder, kb, nk, body):
    """Emit body(u) for the block's channels u < kb, those past the first only where
    u < nk (a partial last block)."""
    for u in range(kb):
        if u == 0:
            body(u)
        else:
            with builder.if_then(builder.icmp_signed("<", ir.Constant(nk.type, u), nk)):
                body(u)


def _make_spmm(nv, sets, kb, mode):
    """The sparse tile intrinsic for 16*nv pixels and kb output channels (a row of kb-channel
    blocks), the row's blocks taken ``sets`` at a time into as many accumulator sets (so
    enough independent FMA chains are in flight).  mode ROWS: the last chunk, stored with
    the epilogue into y's rows as below; RUN: the same where y has the grid's layout
    (ws == ow), one run of npx lanes; PART: a partial sum of a chunk that is not the last,
    stored raw at y[y_off + u*ystride + j] (f0, ws, ow, p0, prows, bias, act and res
    unused).  Each is its own code, so a call site carries only the stores it makes."""
    @intrinsic
    def spmm(typingctx, x, x_off, offs, vals, i0, i1, y, y_off, ystride, f0, ws, ow, p0, prows,
             nk, npx, bias, b_off, act, res, has_res, init, init_off, istride, accumulate):
        """For channels u < nk <= kb of the row and lanes j < npx <= 16*nv, grid position
        f = f0 + j = p*ws + q with q < ow (lanes with q >= ow are dropped; the tile's lanes
        lie in rows p0 .. p0 + prows - 1, passed so no division runs here):
        y[y_off + u*ystride + p*ow + q] = act(bias[b_off + u] + a_uj
            + sum_(i0 <= i < i1) vals[kb*i + u] * x[x_off + offs[i] + j] (+ res[same index])),
        a_uj = init[init_off + u*istride + j] when accumulate (a reduction split into channel
        chunks), else 0; offs int32.  So the tile's lanes land in y's rows straight from the
        registers, one masked store per row the tile touches (ws == ow: y is the grid's own
        layout).  A partial tile (npx < 16*nv) reads and writes only its npx lanes (masked)
        and channels u >= nk are neither read nor written, so nothing past x's, y's or
        bias's end is touched; act as in epilogue.py."""
        sig = types.void(x, types.intp, offs, vals, types.intp, types.intp, y, types.intp,
                         types.intp, types.intp, types.intp, types.intp, types.intp, types.intp,
                         types.intp, types.intp, bias, types.intp, types.intp, res, types.intp,
                         init, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            f32 = ir.FloatType()
            v16 = ir.VectorType(f32, 16)
            vp = v16.as_pointer()
            i32 = ir.IntType(32)
            x_ptr = _data_ptr(context, builder, signature, args, 0)
            o_ptr = _data_ptr(context, builder, signature, args, 2, i32)
            v_ptr = _data_ptr(context, builder, signature, args, 3)
            y_ptr = _data_ptr(context, builder, signature, args, 6)
            b_ptr = _data_ptr(context, builder, signature, args, 16)
            r_ptr = _data_ptr(context, builder, signature, args, 19)
            a_ptr = _data_ptr(context, builder, signature, args, 21)
            (x_off, i0, i1, y_off, ystride, f0, ws, ow, p0, prows, nk, npx, b_off, act, has_res,
             init_off, istride, accumulate) = (
                args[1], args[4], args[5], args[7], args[8], args[9], args[10], args[11],
                args[12], args[13], args[14], args[15], args[17], args[18], args[20], args[22],
                args[23], args[24])
            intp = x_off.type
            const = lambda v: ir.Constant(intp, v)  # noqa: E731
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(v16, [v16, v16, v16]), "llvm.fma.v16f32")
            mload, mstore = _masked_load_store(builder, 16)
            align = ir.Constant(i32, 4)
            masks = _lane_masks(builder, npx, nv)
            zero = ir.Constant(v16, None)
            na = kb * nv  # accumulators per set: channel u, vector v at u*nv + v

            def step(masked):
                def body(i, accs):
                    accs = list(accs)
                    for t in range(len(accs) // na):
                        it = builder.add(i, const(t))
                        o = builder.sext(builder.load(builder.gep(o_ptr, [it])), intp)
                        base = builder.add(x_off, o)
                        xs = []
                        for v in range(nv):
                            xo = builder.add(base, const(16 * v))
                            xp = builder.bitcast(builder.gep(x_ptr, [xo]), vp)
                            if masked:
                                xs.append(builder.call(mload, [xp, align, masks[v], zero]))
                            else:
                                xs.append(builder.load(xp, align=4))
                        for u in range(kb):
                            w = _splat(builder, builder.load(builder.gep(
                                v_ptr, [builder.add(builder.mul(it, const(kb)), const(u))])), 16)
                            for v in range(nv):
                                a = t * na + u * nv + v
                                accs[a] = builder.call(fma, [w, xs[v], accs[a]])
                    return accs
                return body

            # the starting sums: zero, or init's (masked to the tile's lanes and the channels)
            acc_on = builder.icmp_signed("!=", accumulate, const(0))
            no_lanes = ir.Constant(ir.VectorType(ir.IntType(1), 16), [0] * 16)
            start = []
            for u in range(kb):
                on = builder.and_(acc_on, builder.icmp_signed("<", const(u), nk))
                for v in range(nv):
                    ao = builder.add(init_off, builder.add(builder.mul(const(u), istride),
                                                           const(16 * v)))
                    ap = builder.bitcast(builder.gep(a_ptr, [ao]), vp)
                    start.append(builder.call(mload, [ap, align, builder.select(on, masks[v],
                                                                                no_lanes), zero]))

            def emit(masked):
                i, accs = _counted_loop(builder, i0, i1, sets, start + [zero] * ((sets - 1) * na),
                                        step(masked))
                acc = accs[:na]
                for t in range(1, sets):
                    acc = [builder.fadd(a, accs[t * na + j]) for j, a in enumerate(acc)]
                return _counted_loop(builder, i, i1, 1, acc, step(masked))[1]

            acc = _full_or_partial(builder, npx, 16 * nv, emit)
            if mode == PART:
                def store_raw(u):
                    for v in range(nv):
                        o = builder.add(y_off, builder.add(builder.mul(const(u), ystride),
                                                           const(16 * v)))
                        yp = builder.bitcast(builder.gep(y_ptr, [o]), vp)
                        builder.call(mstore, [acc[u * nv + v], yp, align, masks[v]])
                _each_channel(builder, kb, nk, store_raw)
                return context.get_dummy_value()
            biased = []  # acc + bias; channels u >= nk (never stored) do not read bias
            for u in range(kb):
                if u == 0:
                    bu = builder.load(builder.gep(b_ptr, [b_off]))
                else:
                    on = builder.icmp_signed("<", const(u), nk)
                    bo = builder.select(on, builder.add(b_off, const(u)), b_off)
                    bu = builder.load(builder.gep(b_ptr, [bo]))
                bk = _splat(builder, bu, 16)
                biased += [builder.fadd(acc[u * nv + v], bk) for v in range(nv)]
            lanes = ir.Constant(ir.VectorType(intp, 16), list(range(16)))

            def store_run(activate, with_res, base, lane_masks):
                # lane j of every channel u < nk goes to y[base + u*ystride + j]
                def store_channel(u):
                    for v in range(nv):
                        o = builder.add(base, builder.add(builder.mul(const(u), ystride),
                                                          const(16 * v)))
                        val = biased[u * nv + v]
                        if with_res:
                            rp = builder.bitcast(builder.gep(r_ptr, [o]), vp)
                            val = builder.fadd(val, builder.call(
                                mload, [rp, align, lane_masks[v], zero]))
                        yp = builder.bitcast(builder.gep(y_ptr, [o]), vp)
                        builder.call(mstore, [activate(val), yp, align, lane_masks[v]])
                _each_channel(builder, kb, nk, store_channel)

            def stores(activate, with_res):
                if mode == RUN:  # y has the grid's layout: one run of npx lanes
                    store_run(activate, with_res, builder.add(y_off, f0), masks)
                    return
                with cgutils.for_range(builder, prows) as loop:  # a store per output row
                    p = builder.add(p0, loop.index)
                    row = builder.mul(p, ws)
                    lo = builder.sub(_imax(builder, row, f0), f0)
                    hi = builder.sub(_imin(builder, builder.add(row, ow),
                                           builder.add(f0, npx)), f0)
                    with builder.if_then(builder.icmp_signed("<", lo, hi), likely=True):
                        seg = []
                        for v in range(nv):
                            j = builder.add(lanes, _splat(builder, const(16 * v), 16))
                            seg.append(builder.and_(
                                builder.icmp_signed(">=", j, _splat(builder, lo, 16)),
                                builder.icmp_signed("<", j, _splat(builder, hi, 16))))
                        base = builder.add(y_off, builder.add(f0, builder.mul(
                            p, builder.sub(ow, ws))))
                        store_run(activate, with_res, base, seg)

            _emit_epilogue(builder, act, const(1), has_res, 16, stores)
            return context.get_dummy_value()

        return sig, codegen

    return spmm


# one intrinsic per (channels per block, vectors per tile, mode), with enough accumulator
# sets that 8 or more independent FMA chains are in flight
spmm_k1_v1 = _make_spmm(1, 4, 1, ROWS)
spmm_k1_v2 = _make_spmm(2, 4, 1, ROWS)
spmm_k1_v4 = _make_spmm(4, 2, 1, ROWS)
spmm_k4_v1 = _make_spmm(1, 2, 4, ROWS)
spmm_k4_v2 = _make_spmm(2, 1, 4, ROWS)
spmm_k4_v4 = _make_spmm(4, 1, 4, ROWS)
spmm_k1_v1_run = _make_spmm(1, 4, 1, RUN)
spmm_k1_v2_run = _make_spmm(2, 4, 1, RUN)
spmm_k1_v4_run = _make_spmm(4, 2, 1, RUN)
spmm_k4_v1_run = _make_spmm(1, 2, 4, RUN)
spmm_k4_v2_run = _make_spmm(2, 1, 4, RUN)
spmm_k4_v4_run = _make_spmm(4, 1, 4, RUN)
spmm_k1_v1_part = _make_spmm(1, 4, 1, PART)
spmm_k1_v2_part = _make_spmm(2, 4, 1, PART)
spmm_k1_v4_part = _make_spmm(4, 2, 1, PART)
spmm_k4_v1_part = _make_spmm(1, 2, 4, PART)
spmm_k4_v2_part = _make_spmm(2, 1, 4, PART)
spmm_k4_v4_part = _make_spmm(4, 1, 4, PART)


@njit(inline="always")
def _spmm(kb, nv, mode, x, x_off, offs, vals, i0, i1, y, y_off, ystride, f0, ws, ow, p0,
          prows, nk, npx, bias, b_off, act, res, has_res, init, init_off, istride, accumulate):
    """The intrinsic for (kb, nv, mode); each call site passes constant kb and mode, so
    only its own intrinsics are compiled in."""
    if mode == 2:
        if kb == 4:
            if nv == 4:
                spmm_k4_v4(x, x_off, offs, vals, i0, i1, y, y_off, ystride,
                           f0, ws, ow, p0, prows, nk, npx, bias, b_off, act, res,
                           has_res, init, init_off, istride, accumulate)
            elif nv == 2:
                spmm_k4_v2(x, x_off, offs, vals, i0, i1, y, y_off, ystride,
                           f0, ws, ow, p0, prows, nk, npx, bias, b_off, act, res,
                           has_res, init, init_off, istride, accumulate)
            else:
                spmm_k4_v1(x, x_off, offs, vals, i0, i1, y, y_off, ystride,
                           f0, ws, ow, p0, prows, nk, npx, bias, b_off, act, res,
                           has_res, init, init_off, istride, accumulate)
        elif nv == 4:
            spmm_k1_v4(x, x_off, offs, vals, i0, i1, y, y_off, ystride,
                       f0, ws, ow, p0, prows, nk, npx, bias, b_off, act, res,
                       has_res, init, init_off, istride, accumulate)
        elif nv == 2:
            spmm_k1_v2(x, x_off, offs, vals, i0, i1, y, y_off, ystride,
                       f0, ws, ow, p0, prows, nk, npx, bias, b_off, act, res,
                       has_res, init, init_off, istride, accumulate)
        else:
            spmm_k1_v1(x, x_off, offs, vals, i0, i1, y, y_off, ystride,
                       f0, ws, ow, p0, prows, nk, npx, bias, b_off, act, res,
                       has_res, init, init_off, istride, accumulate)
    elif mode == 1:
        if kb == 4:
            if nv == 4:
                spmm_k4_v4_run(x, x_off, offs, vals, i0, i1, y, y_off, ystride,
                               f0, ws, ow, p0, prows, nk, npx, bias, b_off, act, res,
                               has_res, init, init_off, istride, accumulate)
            elif nv == 2:
                spmm_k4_v2_run(x, x_off, offs, vals, i0, i1, y, y_off, ystride,
                               f0, ws, ow, p0, prows, nk, npx, bias, b_off, act, res,
                               has_res, init, init_off, istride, accumulate)
            else:
                spmm_k4_v1_run(x, x_off, offs, vals, i0, i1, y, y_off, ystride,
                               f0, ws, ow, p0, prows, nk, npx, bias, b_off, act, res,
                               has_res, init, init_off, istride, accumulate)
        elif nv == 4:
            spmm_k1_v4_run(x, x_off, offs, vals, i0, i1, y, y_off, ystride,
                           f0, ws, ow, p0, prows, nk, npx, bias, b_off, act, res,
                           has_res, init, init_off, istride, accumulate)
        elif nv == 2:
            spmm_k1_v2_run(x, x_off, offs, vals, i0, i1, y, y_off, ystride,
                           f0, ws, ow, p0, prows, nk, npx, bias, b_off, act, res,
                           has_res, init, init_off, istride, accumulate)
        else:
            spmm_k1_v1_run(x, x_off, offs, vals, i0, i1, y, y_off, ystride,
                           f0, ws, ow, p0, prows, nk, npx, bias, b_off, act, res,
                           has_res, init, init_off, istride, accumulate)
    else:
        if kb == 4:
            if nv == 4:
                spmm_k4_v4_part(x, x_off, offs, vals, i0, i1, y, y_off, ystride,
                                f0, ws, ow, p0, prows, nk, npx, bias, b_off, act, res,
                                has_res, init, init_off, istride, accumulate)
            elif nv == 2:
                spmm_k4_v2_part(x, x_off, offs, vals, i0, i1, y, y_off, ystride,
                                f0, ws, ow, p0, prows, nk, npx, bias, b_off, act, res,
                                has_res, init, init_off, istride, accumulate)
            else:
                spmm_k4_v1_part(x, x_off, offs, vals, i0, i1, y, y_off, ystride,
                                f0, ws, ow, p0, prows, nk, npx, bias, b_off, act, res,
                                has_res, init, init_off, istride, accumulate)
        elif nv == 4:
            spmm_k1_v4_part(x, x_off, offs, vals, i0, i1, y, y_off, ystride,
                            f0, ws, ow, p0, prows, nk, npx, bias, b_off, act, res,
                            has_res, init, init_off, istride, accumulate)
        elif nv == 2:
            spmm_k1_v2_part(x, x_off, offs, vals, i0, i1, y, y_off, ystride,
                            f0, ws, ow, p0, prows, nk, npx, bias, b_off, act, res,
                            has_res, init, init_off, istride, accumulate)
        else:
            spmm_k1_v1_part(x, x_off, offs, vals, i0, i1, y, y_off, ystride,
                            f0, ws, ow, p0, prows, nk, npx, bias, b_off, act, res,
                            has_res, init, init_off, istride, accumulate)


@njit(inline="always")
def _tile_task(t, kb, xs, cptr, offs, vals, b, y, act, res, has_res, nv, tgroup, kblock,
               line_ws, zero_b, pf):
    """Task t of the tiled sparse conv (image, group of tgroup tiles, kblock rows of
    kb-channel blocks); kb is a constant at each call site, so each kernel compiles only
    its own intrinsics."""
    N, CS, HS, WS = xs.shape
    K, OH, OW = y.shape[1], y.shape[2], y.shape[3]
    nch = cptr.shape[1] - 1
    KR = cptr.shape[0]
    NB = 16 * nv
    img = CS * HS * WS
    L = (OH - 1) * WS + OW
    ntiles = (L + NB - 1) // NB
    ngr = (ntiles + tgroup - 1) // tgroup
    nkb = (KR + kblock - 1) // kblock
    xf = xs.reshape(-1)
    yf = y.reshape(-1)
    rf = res.reshape(-1)
    n = t // (ngr * nkb)
    g = (t // nkb) % ngr
    r0 = (t % nkb) * kblock
    r1 = min(KR, r0 + kblock)
    line = line_ws[numba.get_thread_id()]
    plane = HS * WS
    for tile in range(g * tgroup, min(ntiles, (g + 1) * tgroup)):
        f0 = tile * NB
        npx = min(NB, L - f0)
        xo = n * img + f0
        ahead = pf > 0 and f0 + pf < plane  # prefetch the run pf floats on in every plane
        for j in range(nch - 1):  # partial sums of the first chunks, in line
            for r in range(r0, r1):
                lo = (r - r0) * kb * NB
                _spmm(kb, nv, 0, xf, xo, offs, vals, cptr[r, j], cptr[r, j + 1], line, lo,
                      NB, 0, NB, NB, 0, 1, min(kb, K - r * kb), npx, zero_b, 0, 0, rf, 0, line,
                      lo, NB, j)
        p0 = f0 // WS  # the output rows the tile's lanes fall in
        prows = (f0 + npx - 1) // WS - p0 + 1
        for r in range(r0, r1):  # the last chunk, with the epilogue, into y's rows
            if ahead:  # a share of the planes per block row
                _prefetch_planes(xf, xo + pf, plane, (r - r0) * CS // (r1 - r0),
                                 (r - r0 + 1) * CS // (r1 - r0), nv)
            if WS == OW:  # y has the grid's layout (a 1x1 conv without padding)
                _spmm(kb, nv, 1, xf, xo, offs, vals, cptr[r, nch - 1], cptr[r, nch], yf,
                      (n * K + r * kb) * OH * OW, OH * OW, f0, WS, OW, p0, prows,
                      min(kb, K - r * kb), npx, b, r * kb, act, rf, has_res, line,
                      (r - r0) * kb * NB, NB, nch - 1)
            else:
                _spmm(kb, nv, 2, xf, xo, offs, vals, cptr[r, nch - 1], cptr[r, nch], yf,
                      (n * K + r * kb) * OH * OW, OH * OW, f0, WS, OW, p0, prows,
                      min(kb, K - r * kb), npx, b, r * kb, act, rf, has_res, line,
                      (r - r0) * kb * NB, NB, nch - 1)


@njit(inline="always")
def _prefetch_planes(xf, po, plane, c0, c1, nv):
    """Prefetch xf[po + c*plane : + 16*nv] into L2 for the planes c0 <= c < c1: nv lines,
    one more where the runs are not 16-float aligned in the array."""
    lines = nv + (1 if po % 16 or plane % 16 else 0)
    for c in range(c0, c1):
        o = po + c * plane
        for v in range(lines):
            prefetch_line(xf, o + 16 * v)


@njit(inline="always")
def _task_count(xs, cptr, y, nv, tgroup, kblock):
    WS = xs.shape[3]
    L = (y.shape[2] - 1) * WS + y.shape[3]
    ntiles = (L + 16 * nv - 1) // (16 * nv)
    return xs.shape[0] * ((ntiles + tgroup - 1) // tgroup) * (
        (cptr.shape[0] + kblock - 1) // kblock)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def sparse_conv2d_tiles(xs, cptr, offs, vals, b, y, act, res, has_res, nv, tgroup, kblock,
                        line_ws, pf):
    """The register-tiled sparse conv on a stride-1 grid.  xs (N, C*sh*sw, HS, WS): the
    padded input split into its stride phases (pad.pad_space_to_depth; at stride 1 the
    padded input itself), so tap (c, r, s) of output pixels (p, q) is one unit-stride run
    at offs[i] + p*WS + q of the image (offs int32: the tap's phase plane and its shift
    r//sh, s//sw in it); y/res (N, K, OH, OW).  The weights are CSR rows, one per output
    channel: cptr (K, nch + 1), row k's nonzeros of input-channel chunk j are cptr[k, j] ..
    cptr[k, j + 1] (sorted by channel), their values vals[i] (block_conv2d_tiles: rows of
    4-channel blocks).

    A tile is 16*nv consecutive positions f = p*WS + q of that grid, so on narrow maps
    one tile spans several output rows (columns q >= OW are computed and dropped).  The
    tile runs chunk by chunk, every block row of the task per chunk, its partial sums kept
    in line_ws (threads, >= kb*kblock*16*nv, kb = 1 here): a chunk's input (its channels' few rows
    around the tile) stays in L1 while all the rows' blocks of that chunk stream past.
    The last chunk's sums go from the registers into y with the epilogue, one masked
    store per output row the tile touches (no row buffer, no per-row loop; with a single
    chunk the line is never used).  Tasks: (image, group of tgroup tiles, kblock block
    rows).

    pf > 0: each block row of a tile first prefetches into L2 its share of the planes'
    runs of 16*nv floats that start pf floats after the tile's (the caller passes a few
    tiles on plus the taps' largest shift: the input no tile before it has read).  A
    tile reads a short run of every plane (a 1x1 over 256 channels: 256 runs of four
    lines, 12.5 KB apart), more streams than the hardware prefetchers follow, so an
    input that comes from memory rather than the caches is otherwise read at the
    latency of each line (1x1 256->64 @ 56, batch 8, 90 % in blocks: 1.3-1.9 ms against
    0.8-1.1 with it).  0: no prefetches (an input in the caches: they cost 4-7 %).
    """
    zero_b = np.zeros(4, np.float32)
    for t in prange(_task_count(xs, cptr, y, nv, tgroup, kblock)):
        _tile_task(t, 1, xs, cptr, offs, vals, b, y, act, res, has_res, nv, tgroup, kblock,
                   line_ws, zero_b, pf)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def block_conv2d_tiles(xs, cptr, offs, vals, b, y, act, res, has_res, nv, tgroup, kblock,
                       line_ws, pf):
    """sparse_conv2d_tiles on rows of 4-channel blocks (block CSR): each block the same tap
    of 4 consecutive output channels, one input read feeding 4 accumulator rows; cptr
    (ceil(K/4), nch + 1) over block rows, block i's values vals[4*i : 4*i + 4] (zeros past
    K); kblock counts block rows, line_ws holds >= 4*kblock*16*nv floats per thread."""
    zero_b = np.zeros(4, np.float32)
    for t in prange(_task_count(xs, cptr, y, nv, tgroup, kblock)):
        _tile_task(t, 4, xs, cptr, offs, vals, b, y, act, res, has_res, nv, tgroup, kblock,
                   line_ws, zero_b, pf)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def winograd_block_products(V, cptr, offs, vals, M, nv, tgroup, kblock, line_ws):
    """The a*a products of a Winograd convolution (winograd.py) whose filters are sparse in
    blocks of 4 output channels x one input channel's whole 3x3 filter (such a block's
    transformed filters are zero for every xi when its 36 weights are):

        M[xi, k, t] = sum_(i in block row k // 4) vals[xi, 4*i + k % 4] * V[xi, chan_i, t]

    V (a*a, C, T) and M (a*a, K, T) as winograd.input_transform / output_transform use
    them; the stored blocks are one block CSR for every xi (cptr (ceil(K/4), nch + 1)
    chunk pointers over block rows as block_conv2d_tiles', offs[i] = chan_i * T int32),
    their values per xi in vals (a*a, 4 * blocks).  Each xi's product is
    block_conv2d_tiles' 1x1 case over the T tiles as pixels (the same tile intrinsics,
    no bias or activation: the output transform applies those).  Tasks: (xi, group of
    tgroup tiles of 16*nv tiles, kblock block rows); line_ws (threads, >= 4*kblock*16*nv).
    """
    XI, C, T = V.shape
    K = M.shape[1]
    KR = cptr.shape[0]
    nch = cptr.shape[1] - 1
    NB = 16 * nv
    ntiles = (T + NB - 1) // NB
    ngr = (ntiles + tgroup - 1) // tgroup
    nkb = (KR + kblock - 1) // kblock
    vf = V.reshape(-1)
    mf = M.reshape(-1)
    zero_b = np.zeros(4, np.float32)
    for t in prange(XI * ngr * nkb):
        xi = t // (ngr * nkb)
        g = (t // nkb) % ngr
        r0 = (t % nkb) * kblock
        r1 = min(KR, r0 + kblock)
        vx = vals[xi]
        line = line_ws[numba.get_thread_id()]
        for tile in range(g * tgroup, min(ntiles, (g + 1) * tgroup)):
            f0 = tile * NB
            npx = min(NB, T - f0)
            xo = xi * C * T + f0
            for j in range(nch - 1):  # partial sums of the first chunks, in line
                for r in range(r0, r1):
                    lo = (r - r0) * 4 * NB
                    _spmm(4, nv, 0, vf, xo, offs, vx, cptr[r, j], cptr[r, j + 1], line, lo,
                          NB, 0, NB, NB, 0, 1, min(4, K - r * 4), npx, zero_b, 0, 0, mf, 0,
                          line, lo, NB, j)
            for r in range(r0, r1):  # the last chunk into M's rows
                _spmm(4, nv, 1, vf, xo, offs, vx, cptr[r, nch - 1], cptr[r, nch], mf,
                      (xi * K + r * 4) * T, T, f0, T, T, 0, 1, min(4, K - r * 4), npx,
                      zero_b, 0, 0, mf, 0, line, (r - r0) * 4 * NB, NB, nch - 1)


def _vector_gep(builder, base, idx):
    """&base[idx[j]] for every lane j of the i32 vector idx: one getelementptr with a vector
    index (llvmlite's builder only takes scalar ones), so the backend sees 32-bit offsets
    from one base and emits vgatherdps rather than gathers of 64-bit addresses."""
    from llvmlite.ir.instructions import GEPInstr
    vpt = ir.VectorType(base.type, idx.type.count)
    try:
        gep = GEPInstr(builder.block, base, [idx], True, "", source_etype=ir.FloatType())
    except TypeError:  # an llvmlite without source_etype: the addresses as integers
        i64 = ir.IntType(64)
        vi64 = ir.VectorType(i64, idx.type.count)
        off = builder.shl(builder.sext(idx, vi64), ir.Constant(vi64, [2] * idx.type.count))
        return builder.inttoptr(builder.add(_splat(builder, builder.ptrtoint(base, i64),
                                                   idx.type.count), off), vpt)
    gep.type = vpt
    builder._insert(gep)
    return gep


@intrinsic
def gather_dot(typingctx, x, x_off, cols, vals, i0, i1):
    """sum_(i0 <= i < i1) vals[i] * x[x_off + cols[i]] (cols int32), VW lanes at a time:
    VW columns and values loaded as vectors, the x values they name gathered, two
    accumulators (the last step masked), then a tree of halving adds."""
    sig = types.float32(x, x_off, cols, vals, i0, i1)

    def codegen(context, builder, signature, args):
        f32, i32 = ir.FloatType(), ir.IntType(32)
        vf, vi = ir.VectorType(f32, VW), ir.VectorType(i32, VW)
        vm = ir.VectorType(ir.IntType(1), VW)
        x_ptr = _data_ptr(context, builder, signature, args, 0)
        c_ptr = _data_ptr(context, builder, signature, args, 2, i32)
        v_ptr = _data_ptr(context, builder, signature, args, 3)
        x_off, i0, i1 = args[1], args[4], args[5]
        intp = i0.type
        base = builder.gep(x_ptr, [x_off])
        mod = builder.module
        gather = cgutils.get_or_insert_function(mod, ir.FunctionType(
            vf, [ir.VectorType(f32.as_pointer(), VW), i32, vm, vf]),
            f"llvm.masked.gather.v{VW}f32.v{VW}p0")
        fma = cgutils.get_or_insert_function(mod, ir.FunctionType(vf, [vf, vf, vf]),
                                             f"llvm.fma.v{VW}f32")
        loadf = cgutils.get_or_insert_function(mod, ir.FunctionType(
            vf, [vf.as_pointer(), i32, vm, vf]), f"llvm.masked.load.v{VW}f32.p0")
        loadi = cgutils.get_or_insert_function(mod, ir.FunctionType(
            vi, [vi.as_pointer(), i32, vm, vi]), f"llvm.masked.load.v{VW}i32.p0")
        align = ir.Constant(i32, 4)
        zero = ir.Constant(vf, None)
        every = ir.Constant(vm, [1] * VW)

        def step(i, acc, mask=None):
            cp = builder.bitcast(builder.gep(c_ptr, [i]), vi.as_pointer())
            vp = builder.bitcast(builder.gep(v_ptr, [i]), vf.as_pointer())
            if mask is None:
                idx, v, mask = builder.load(cp, align=4), builder.load(vp, align=4), every
            else:
                idx = builder.call(loadi, [cp, align, mask, ir.Constant(vi, None)])
                v = builder.call(loadf, [vp, align, mask, zero])
            g = builder.call(gather, [_vector_gep(builder, base, idx), align, mask, zero])
            return builder.call(fma, [v, g, acc])

        def pair(i, accs):
            return [step(i, accs[0]), step(builder.add(i, ir.Constant(intp, VW)), accs[1])]
        i, (a0, a1) = _counted_loop(builder, i0, i1, 2 * VW, [zero, zero], pair)
        i, (a0,) = _counted_loop(builder, i, i1, VW, [a0], lambda i, a: [step(i, a[0])])
        lanes = ir.Constant(ir.VectorType(intp, VW), list(range(VW)))
        acc = builder.fadd(a0, step(i, a1, builder.icmp_signed(
            "<", lanes, _splat(builder, builder.sub(i1, i), VW))))
        w = VW
        while w > 1:
            w //= 2
            halves = [builder.shuffle_vector(acc, acc, ir.Constant(
                ir.VectorType(i32, w), list(range(h * w, h * w + w)))) for h in (0, 1)]
            acc = builder.fadd(*halves)
        return builder.extract_element(acc, ir.Constant(i32, 0))
    return sig, codegen


@njit(parallel=True, cache=True)
def sparse_linear_rows(x2, indptr, cols, vals, b, y, act):
    """y (N, O) = act(x2 (N, F) @ W_csr (O, F)^T + b) for few samples (cols int32): one
    output feature per task, for each sample a gathered dot product over the row's
    nonzeros,

        y[n, o] = act(b[o] + sum_(i in row o) vals[i] * x2[n, cols[i]]),

    the row's values and columns read from L1 after the first sample.  (Many samples run
    as a 1x1 sparse convolution over the samples instead: fastconv.sparse.sparse_linear.)"""
    N, F = x2.shape
    xf = x2.reshape(-1)
    for o in prange(y.shape[1]):
        for n in range(N):
            s = gather_dot(xf, n * F, cols, vals, indptr[o], indptr[o + 1])
            y[n, o] = activate(s + b[o], act)
