"""AVX-512 VNNI int8 dot products (``vpdpbusd``) reached through an LLVM intrinsic.

``vpdpbusd acc, a, b`` adds, to each 32-bit lane of acc, the four products of
that lane's unsigned bytes of ``a`` with the signed bytes of ``b``: 64 u8 x s8
multiply-adds per instruction, four times what ``vpmaddwd`` does.  LLVM does
not form it from plain loops, so ``dot8x16_bcast`` is written in LLVM IR: an
8 pixel x 16 output channel block in eight zmm accumulators, lane l holding
channel l, the weights packed (reduction/4, 16, 4) and each pixel's four
activation bytes broadcast, so no horizontal reduction is ever needed.
Callers pad the reduction to a multiple of 4 and the channels to 16 with zeros,
and must only call this on CPUs with ``avx512vnni`` (``HAS_VNNI``); cached code
is keyed by the CPU, so the cache never hands it to another machine.
"""
import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .zmm import (_branch_join, _counted_loop, _data_ptr, _emit_epilogue, _lane_masks,
                  _masked_load_store, _splat, _zip_columns)

HAS_VNNI = "+avx512vnni" in llvm.get_host_cpu_features().flatten().split(",")


def _store_epilogue(context, builder, signature, args, finals, nblk, first, quant=False,
                    npix=8):
    """The float epilogue fused into the block's store, its arguments from index ``first``:
    y, y_off, ldy, npx, nch, zw, scale, bias, k_off, act, res, has_res.  For channel
    c < nch of the block (16*blk + l) and pixel j < npx:

        y[y_off + c*ldy + j] = act(float32(acc - zw[k]) * scale[k] + bias[k] (+ res[same]))

    k = k_off + c; each step rounded separately (no fused multiply-add), as the integer
    reference does; act 0 none, 1 relu, 2 relu6 (NaN passes).  quant: y is int8 or uint8
    and four more float32 arguments follow (inv, zy, qmin, qmax): the value stored is
    min(max(rint(v * inv) + zy, qmin), qmax), as int8.int8's _finish_row rounds it.
    npix: the block's pixels (7: lane 7 is never stored)."""
    i32, f32 = ir.IntType(32), ir.FloatType()
    m8 = ir.VectorType(ir.IntType(1), 8)

    def ptr(i, ty):
        return _data_ptr(context, builder, signature, args, i, ty)

    y_ptr, zw_ptr, sc_ptr, b_ptr, r_ptr = (ptr(first, ir.IntType(8) if quant else f32),
                                           ptr(first + 5, i32),
                                           ptr(first + 6, f32), ptr(first + 7, f32),
                                           ptr(first + 10, f32))
    y_off, ldy, npx, nch, k_off, act, has_res = (args[first + 1], args[first + 2],
                                                 args[first + 3], args[first + 4],
                                                 args[first + 8], args[first + 9],
                                                 args[first + 11])
    intp = y_off.type
    const = lambda v: ir.Constant(intp, v)  # noqa: E731
    lanes = ir.Constant(ir.VectorType(intp, 8), list(range(8)))
    px_mask = builder.icmp_signed("<", lanes, _splat(builder, npx, 8))
    no_lanes = ir.Constant(m8, [0] * 8)
    all_lanes = ir.Constant(m8, [1] * npix + [0] * (8 - npix))
    columns = [iv for blk in range(nblk)
               for iv in _zip_columns(builder, finals[blk * 8:blk * 8 + 8])]
    quant_args = [args[first + 12 + i] for i in range(4)] if quant else None

    def emit(whole):
        # whole: all npix pixels and 16*nblk channels exist -- no lane masks to work out,
        # no per-channel check (the selects and masks of a partial block cost a fifth of
        # the epilogue)
        chans = []
        for c_i, iv in enumerate(columns):
            c = const(c_i)
            inside, correct = _channel(builder, c, nch, k_off, zw_ptr, sc_ptr, b_ptr, 8, whole)
            mask = all_lanes if whole else builder.select(inside, px_mask, no_lanes)
            chans.append((correct(iv), mask, builder.add(y_off, builder.mul(c, ldy))))
        _stores(builder, act, has_res, chans, 8, y_ptr, r_ptr, quant_args)

    whole = builder.and_(builder.icmp_signed("==", npx, const(npix)),
                         builder.icmp_signed(">=", nch, const(16 * nblk)))
    with builder.if_else(whole) as (then, otherwise):
        with then:
            emit(True)
        with otherwise:
            emit(False)


def _channel_index(builder, c, nch, k_off, whole=False):
    """(inside, k) for channel c of a block: inside c < nch, k = k_off + c, else k_off (so
    nothing is read past the channels).  whole: the caller knows c < nch."""
    if whole:
        return ir.Constant(ir.IntType(1), 1), builder.add(k_off, c)
    inside = builder.icmp_signed("<", c, nch)
    return inside, builder.select(inside, builder.add(k_off, c), k_off)


def _channel(builder, c, nch, k_off, zw_ptr, sc_ptr, b_ptr, width, whole=False):
    """Channel c of a block (_channel_index) and its correction of an int32 vector of
    ``width`` sums: float32(acc - zw[k]) * scale[k] + bias[k], each step rounded on its own
    as the integer reference rounds it.  Returns (inside, correct).  zw_ptr None: the sums
    started from -zw[k] (acc - zw already; int32 sums wrap alike in any order)."""
    inside, k = _channel_index(builder, c, nch, k_off, whole)
    sc, bb = (_splat(builder, builder.load(builder.gep(ptr, [k])), width)
              for ptr in (sc_ptr, b_ptr))
    fv = ir.VectorType(ir.FloatType(), width)
    if zw_ptr is None:
        return inside, lambda acc: builder.fadd(builder.fmul(builder.sitofp(acc, fv), sc), bb)
    zw = _splat(builder, builder.load(builder.gep(zw_ptr, [k])), width)
    return inside, lambda acc: builder.fadd(builder.fmul(builder.sitofp(
        builder.sub(acc, zw), fv), sc), bb)


def requant_bounds(builder, quant, width):
    """The requantization's constants for vectors of ``width`` floats, quant = (inv, zy,
    qmin, qmax) float32 scalars (zy >= qmin, as int8_conv2d checks): (inv, lo, hi, hi6,
    zy as int32 lanes) for requantize.  hi6 = min(fl(6 * inv), hi)."""
    i32 = ir.IntType(32)
    hi_s = builder.fsub(quant[3], quant[1])
    six_s = builder.fmul(quant[0], ir.Constant(ir.FloatType(), 6.0))
    hi6_s = builder.select(builder.fcmp_ordered("<", six_s, hi_s), six_s, hi_s)
    inv, lo, hi, hi6 = (_splat(builder, v, width) for v in (
        quant[0], builder.fsub(quant[2], quant[1]), hi_s, hi6_s))
    return inv, lo, hi, hi6, _splat(builder, builder.fptosi(quant[1], i32), width)


def requantize(builder, v, activate, bounds):
    """act(v) requantized, before the rounding: t with rint(t) + zy equal to
    min(max(rint(act(v) * inv) + zy, qmin), qmax) for every v (finish_row's integer):
    rint is monotonic and the bounds are integers, so the clamps move before the rounding
    as t = min(max(act(v) * inv, qmin - zy), qmax - zy).  After relu (t >= 0 >= lo) the
    lower bound goes; after relu6 (v <= 6, so t <= fl(6 * inv)) hi6, the lower of the two
    upper bounds, does both upper clamps (the values above it are the ones either clamp
    sets to it).  NaN passes."""
    inv, lo, hi, hi6, _ = bounds
    if getattr(activate, "six", False):
        zero = ir.Constant(v.type, None)
        v = builder.select(builder.fcmp_ordered("<", v, zero), zero, v)
        t = builder.fmul(v, inv)
        return builder.select(builder.fcmp_ordered(">", t, hi6), hi6, t)
    t = builder.fmul(activate(v), inv)
    if not getattr(activate, "nonneg", False):
        t = builder.select(builder.fcmp_ordered("<", t, lo), lo, t)
    return builder.select(builder.fcmp_ordered(">", t, hi), hi, t)


def _stores(builder, act, has_res, outs, width, y_ptr, r_ptr, quant):
    """The epilogue's tail for (value, lane mask, offset) vectors of ``width`` floats:
    v (+ res[o] if has_res), activated (act as in zmm._emit_epilogue), stored at y[o]
    under the mask; with quant = (inv, zy, qmin, qmax) float32 scalars, y is int8 or uint8
    and min(max(rint(v * inv) + zy, qmin), qmax) is stored, as int8.int8's _finish_row
    rounds it: requantize's t, rounded and converted by one vcvtps2dq (lrint, in the
    current rounding mode as rint), zy added in int32."""
    i32 = ir.IntType(32)
    fv = ir.VectorType(ir.FloatType(), width)
    mload, mstore = _masked_load_store(builder, width)
    align = ir.Constant(i32, 4)
    if quant is not None:
        bounds = requant_bounds(builder, quant, width)
        vi = ir.VectorType(i32, width)
        bv = ir.VectorType(ir.IntType(8), width)
        lrint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vi, [fv]),
                                               f"llvm.lrint.v{width}i32.v{width}f32")
        qstore = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [
                bv, bv.as_pointer(), i32, ir.VectorType(ir.IntType(1), width)]),
            f"llvm.masked.store.v{width}i8.p0")

    def stores(activate, with_res):
        for v, mask, o in outs:
            if with_res:
                rp = builder.bitcast(builder.gep(r_ptr, [o]), fv.as_pointer())
                v = builder.fadd(v, builder.call(mload, [rp, align, mask,
                                                         ir.Constant(fv, [0.0] * width)]))
            if quant is not None:
                t = requantize(builder, v, activate, bounds)
                qb = builder.trunc(builder.add(builder.call(lrint, [t]), bounds[4]), bv)
                yp = builder.bitcast(builder.gep(y_ptr, [o]), bv.as_pointer())
                builder.call(qstore, [qb, yp, ir.Constant(i32, 1), mask])
            else:
                yp = builder.bitcast(builder.gep(y_ptr, [o]), fv.as_pointer())
                builder.call(mstore, [activate(v), yp, align, mask])

    _emit_epilogue(builder, act, ir.Constant(act.type, 1), has_res, width, stores)


def _vpdpbusd(builder):
    """llvm.x86.avx512.vpdpbusd.512(acc, u8 bytes, s8 bytes), 16 x int32 each."""
    v16 = ir.VectorType(ir.IntType(32), 16)
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16, [v16, v16, v16]),
                                          "llvm.x86.avx512.vpdpbusd.512")


def _dot_step(builder, a_ptr, starts, w_ptr, wpos, w_step, nblk, acc, pixels=range(8)):
    """One four-byte reduction step of an 8-pixel x 16*nblk-channel block: block blk's 64
    weight bytes at w_ptr[wpos + blk*w_step], pixel j's four activation bytes at
    a_ptr[starts[j]] broadcast to all lanes, acc[blk*8 + j] += vpdpbusd of the two, for
    the pixels j in ``pixels`` (the others' accumulators pass through); returns the new
    accumulators in the same order."""
    i32 = ir.IntType(32)
    v16 = ir.VectorType(i32, 16)
    dp = _vpdpbusd(builder)
    splat = ir.Constant(ir.VectorType(i32, 16), [0] * 16)
    wv = []
    for blk in range(nblk):
        pos = wpos if blk == 0 else builder.add(wpos, builder.mul(
            w_step, ir.Constant(w_step.type, blk)))
        wv.append(builder.load(builder.bitcast(builder.gep(w_ptr, [pos]), v16.as_pointer()),
                               align=1))
    new = list(acc)
    for j in pixels:
        word = builder.load(builder.bitcast(builder.gep(a_ptr, [starts[j]]), i32.as_pointer()),
                            align=1)
        one = builder.insert_element(ir.Constant(v16, ir.Undefined), word, ir.Constant(i32, 0))
        bc = builder.shuffle_vector(one, ir.Constant(v16, ir.Undefined), splat)
        for blk in range(nblk):
            new[blk * 8 + j] = builder.call(dp, [acc[blk * 8 + j], bc, wv[blk]])
    return new


def _make_dot(nblk, epilogue=False, rows=False, quant=False, accumulate=False):
    """dot8x16_bcast (nblk 1) or dot8x32_bcast (nblk 2): 8 pixels x 16*nblk channels,
    8*nblk zmm accumulators.  Two weight blocks per activation broadcast halve the
    broadcasts per vpdpbusd: 8 broadcasts + nblk weight loads feed 8*nblk of them.
    epilogue: the float epilogue fused into the
    store (_store_epilogue), the out argument replaced by its 12 (16 with quant: the
    requantized int8/uint8 store).  rows: pixel j's
    16*nblk sums stored at out[o_off + j*ldo : +16*nblk] (a row-major int32 result),
    the accumulators starting from a column offset zc[z_off : +16*nblk] (the last two
    arguments); with accumulate, from what is in those rows instead."""

    def codegen(context, builder, signature, args):
        a_arr = context.make_array(signature.args[0])(context, builder, args[0])
        w_arr = context.make_array(signature.args[3])(context, builder, args[3])
        a_off, lda, w_off = args[1], args[2], args[4]
        if nblk == 1:
            w_step, nq = None, args[5]
        else:
            w_step, nq = args[5], args[6]
        first = 6 if nblk == 1 else 7
        o_arr = context.make_array(signature.args[first])(context, builder, args[first])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        v16 = ir.VectorType(i32, 16)
        intp = a_off.type
        a_ptr = builder.bitcast(a_arr.data, i8p)
        w_ptr = builder.bitcast(w_arr.data, i8p)
        const = lambda v: ir.Constant(intp, v)  # noqa: E731

        def step(q, acc):
            apos = builder.add(a_off, builder.mul(q, const(4)))
            starts = [builder.add(apos, builder.mul(lda, const(j))) for j in range(8)]
            return _dot_step(builder, a_ptr, starts, w_ptr,
                             builder.add(w_off, builder.mul(q, const(64))), w_step, nblk, acc)

        init = [ir.Constant(v16, None)] * (8 * nblk)
        if rows:
            o_ptr = builder.bitcast(o_arr.data, i32.as_pointer())
            o_off, ldo = args[first + 1], args[first + 2]
            row_at = [[builder.bitcast(builder.gep(o_ptr, [builder.add(o_off, builder.add(
                builder.mul(ldo, const(j)), const(16 * blk)))]), v16.as_pointer())
                for j in range(8)] for blk in range(nblk)]
            if accumulate:
                init = [builder.load(row_at[blk][j], align=4) for blk in range(nblk)
                        for j in range(8)]
            else:
                z_ptr = builder.bitcast(_data_ptr(context, builder, signature, args, first + 3),
                                        i32.as_pointer())
                zv = [builder.load(builder.bitcast(builder.gep(z_ptr, [builder.add(
                    args[first + 4], const(16 * blk))]), v16.as_pointer()), align=4)
                    for blk in range(nblk)]
                init = [zv[blk] for blk in range(nblk) for j in range(8)]
        finals = _counted_loop(builder, const(0), nq, 1, init, step)[1]
        if epilogue:
            _store_epilogue(context, builder, signature, args, finals, nblk, first, quant)
            return context.get_dummy_value()
        if rows:
            for blk in range(nblk):
                for j in range(8):
                    builder.store(finals[blk * 8 + j], row_at[blk][j], align=4)
            return context.get_dummy_value()
        o_ptr = builder.bitcast(o_arr.data, v16.as_pointer())
        for i, f in enumerate(finals):
            builder.store(f, builder.gep(o_ptr, [ir.Constant(intp, i)]), align=1)
        return context.get_dummy_value()

    return codegen


@intrinsic
def dot8x16_bcast(typingctx, a, a_off, lda, w, w_off, nq, out):
    """out[16*j + l] = sum_(q < nq) sum_(i < 4) u8 a[a_off + j*lda + 4q + i] * s8 w[w_off + 64q + 4l + i]
    for 8 pixels j and 16 output channels l.

    The oneDNN arrangement: weights packed as (reduction/4, 16 channels, 4 bytes), so one
    64-byte load holds four reduction bytes of 16 channels; each pixel's four
    activation bytes are broadcast to all lanes, and one vpdpbusd adds 64 products into
    that pixel's 16 channel accumulators.  No horizontal reductions: lane l is channel l.
    """
    sig = types.void(a, types.intp, types.intp, w, types.intp, types.intp, out)
    return sig, _make_dot(1)


@intrinsic
def dot8x32_bcast(typingctx, a, a_off, lda, w, w_off, w_step, nq, out):
    """Two 16-channel blocks at once: out[16*(8*blk + j) + l] = dot8x16_bcast's sum with the
    weights of block blk at w_off + blk*w_step (blk = 0, 1)."""
    sig = types.void(a, types.intp, types.intp, w, types.intp, types.intp, types.intp, out)
    return sig, _make_dot(2)


def _epilogue_sig(head, y, zw, scale, bias, res):
    return types.void(*head, y, types.intp, types.intp, types.intp, types.intp, zw, scale, bias,
                      types.intp, types.intp, res, types.intp)


@intrinsic
def dot8x16_epi(typingctx, a, a_off, lda, w, w_off, nq, y, y_off, ldy, npx, nch, zw, scale, bias,
                k_off, act, res, has_res):
    """dot8x16_bcast with the float epilogue fused into its store (_store_epilogue): the
    block's 8 pixels x 16 channels go straight to y's channel rows, no int32 tile."""
    return _epilogue_sig((a, types.intp, types.intp, w, types.intp, types.intp), y, zw, scale,
                         bias, res), _make_dot(1, epilogue=True)


@intrinsic
def dot8x32_epi(typingctx, a, a_off, lda, w, w_off, w_step, nq, y, y_off, ldy, npx, nch, zw,
                scale, bias, k_off, act, res, has_res):
    """dot8x32_bcast with the float epilogue fused into its store."""
    return _epilogue_sig((a, types.intp, types.intp, w, types.intp, types.intp, types.intp), y,
                         zw, scale, bias, res), _make_dot(2, epilogue=True)


def _quant_sig(head, y, zw, scale, bias, res):
    return types.void(*_epilogue_sig(head, y, zw, scale, bias, res).args, types.float32,
                      types.float32, types.float32, types.float32)


@intrinsic
def dot8x16_epq(typingctx, a, a_off, lda, w, w_off, nq, y, y_off, ldy, npx, nch, zw, scale, bias,
                k_off, act, res, has_res, inv, zy, qmin, qmax):
    """dot8x16_epi storing the requantized result into an int8/uint8 y:
    min(max(rint(v * inv) + zy, qmin), qmax) of the float epilogue's v."""
    return _quant_sig((a, types.intp, types.intp, w, types.intp, types.intp), y, zw, scale,
                      bias, res), _make_dot(1, epilogue=True, quant=True)


@intrinsic
def dot8x32_epq(typingctx, a, a_off, lda, w, w_off, w_step, nq, y, y_off, ldy, npx, nch, zw,
                scale, bias, k_off, act, res, has_res, inv, zy, qmin, qmax):
    """dot8x32_epi storing the requantized result (dot8x16_epq)."""
    return _quant_sig((a, types.intp, types.intp, w, types.intp, types.intp, types.intp), y,
                      zw, scale, bias, res), _make_dot(2, epilogue=True, quant=True)


@intrinsic
def dot8x32_to_rows(typingctx, a, a_off, lda, w, w_off, w_step, nq, out, o_off, ldo, zc, z_off):
    """dot8x32_bcast's sums plus a column offset stored straight into a row-major result:
    pixel (row) j's 32 sums + zc[z_off : +32] at out[o_off + j*ldo : +32] (all 8 rows and
    32 columns must exist; zc int32)."""
    sig = types.void(a, types.intp, types.intp, w, types.intp, types.intp, types.intp, out,
                     types.intp, types.intp, zc, types.intp)
    return sig, _make_dot(2, rows=True)


@intrinsic
def dot8x32_add_rows(typingctx, a, a_off, lda, w, w_off, w_step, nq, out, o_off, ldo):
    """dot8x32_to_rows adding its sums to the result's rows instead (a reduction run in
    chunks: the accumulators start from the rows' partial sums)."""
    sig = types.void(a, types.intp, types.intp, w, types.intp, types.intp, types.intp, out,
                     types.intp, types.intp)
    return sig, _make_dot(2, rows=True, accumulate=True)


def _make_dot_taps(nblk, quant=False, cols=False):
    """The block of _make_dot(nblk, epilogue=True) read straight from a channels-last
    input (an implicit GEMM, no gathered columns): pixel j's receptive field starts at
    a[pix[pix_off + j]], tap t is toff[t] bytes further, and each tap is nqt steps of four
    bytes (channels), its weights following the previous tap's:

        acc[j, l] = sum_(t < ntaps) sum_(q < nqt) sum_(i < 4)
                    u8 a[pix[pix_off + j] + toff[t] + 4q + i] * s8 w[w_off + 64(t*nqt + q) + 4l + i]

    (block blk's weights at w_off + blk*w_step), then the float epilogue, or with quant
    the requantization, fused into the store as in _store_epilogue.

    cols: seven pixels, one output row's columns, whose first and last may sit on the
    row's ends; five more arguments after the epilogue's, mf, ml, zf, zl, z_off.  Pixel 0
    runs no tap t with bit t of mf set and pixel 6 none with bit t of ml set (taps that
    read only the padding left or right of the map), and where mf (ml) is not zero their
    sums start from zf[z_off + 16*blk + l] (zl[...]) instead of zero (read in any case:
    the caller pads zf and zl a block of 32 past the channels): the products left out,
    zero point x weights, so the sums are those of every tap and the epilogue's
    correction stays the row's.  Each tap runs one of four copies of its loop, chosen by
    its two bits."""
    npix = 7 if cols else 8

    def codegen(context, builder, signature, args):
        i8p = ir.IntType(8).as_pointer()
        i32, i64 = ir.IntType(32), ir.IntType(64)
        v16 = ir.VectorType(i32, 16)

        def data(i, ty):
            arr = context.make_array(signature.args[i])(context, builder, args[i])
            return builder.bitcast(arr.data, ty)

        a_ptr, px_ptr, t_ptr = data(0, i8p), data(1, i64.as_pointer()), data(3, i64.as_pointer())
        w_ptr = data(6, i8p)
        pix_off, ntaps, nqt, w_off = args[2], args[4], args[5], args[7]
        w_step = args[8] if nblk == 2 else None
        first = 9 if nblk == 2 else 8
        intp = pix_off.type
        const = lambda v: ir.Constant(intp, v)  # noqa: E731
        bases = [builder.load(builder.gep(px_ptr, [builder.add(pix_off, const(j))]))
                 for j in range(npix)]
        zero = ir.Constant(v16, None)
        init = [zero] * (8 * nblk)
        if cols:
            c0 = first + 12 + (4 if quant else 0)
            mf, ml, z_off = args[c0], args[c0 + 1], args[c0 + 4]
            for j, flags, zi in ((0, mf, c0 + 2), (npix - 1, ml, c0 + 3)):
                zp = data(zi, i32.as_pointer())
                edge = builder.icmp_signed("!=", flags, const(0))
                for blk in range(nblk):
                    at = builder.gep(zp, [builder.add(z_off, const(16 * blk))])
                    init[blk * 8 + j] = builder.select(edge, builder.load(
                        builder.bitcast(at, v16.as_pointer()), align=4), zero)

        def tap(t, accs):
            to = builder.load(builder.gep(t_ptr, [t]))
            wt = builder.add(w_off, builder.mul(builder.mul(t, nqt), const(64)))
            starts = [builder.add(b, to) for b in bases]

            def run(pixels):
                def step(q, acc):
                    q4 = builder.mul(q, const(4))
                    return _dot_step(builder, a_ptr, [builder.add(st, q4) for st in starts],
                                     w_ptr, builder.add(wt, builder.mul(q, const(64))), w_step,
                                     nblk, acc, pixels)

                return _counted_loop(builder, const(0), nqt, 1, accs, step)[1]

            if not cols:
                return run(range(8))

            def bit(flags):
                return builder.icmp_signed("!=", builder.and_(builder.ashr(flags, t), const(1)),
                                           const(0))

            return _branch_join(builder, bit(mf), lambda skip0: _branch_join(
                builder, bit(ml), lambda skip6: run(
                    [j for j in range(npix) if not (skip0 and j == 0)
                     and not (skip6 and j == npix - 1)]), "tap.last"), "tap.first")

        finals = _counted_loop(builder, const(0), ntaps, 1, init, tap)[1]
        _store_epilogue(context, builder, signature, args, finals, nblk, first, quant, npix)
        return context.get_dummy_value()

    return codegen


def _taps_head(nblk, a, pix, toff, w):
    head = (a, pix, types.intp, toff, types.intp, types.intp, w, types.intp)
    return head + ((types.intp,) if nblk == 2 else ())


@intrinsic
def taps8x16_epi(typingctx, a, pix, pix_off, toff, ntaps, nqt, w, w_off, y, y_off, ldy, npx,
                 nch, zw, scale, bias, k_off, act, res, has_res):
    """dot8x16_epi reading each pixel's taps in place (_make_dot_taps)."""
    return _epilogue_sig(_taps_head(1, a, pix, toff, w), y, zw, scale, bias, res), \
        _make_dot_taps(1)


@intrinsic
def taps8x32_epi(typingctx, a, pix, pix_off, toff, ntaps, nqt, w, w_off, w_step, y, y_off, ldy,
                 npx, nch, zw, scale, bias, k_off, act, res, has_res):
    """dot8x32_epi reading each pixel's taps in place (_make_dot_taps)."""
    return _epilogue_sig(_taps_head(2, a, pix, toff, w), y, zw, scale, bias, res), \
        _make_dot_taps(2)


@intrinsic
def taps8x16_epq(typingctx, a, pix, pix_off, toff, ntaps, nqt, w, w_off, y, y_off, ldy, npx,
                 nch, zw, scale, bias, k_off, act, res, has_res, inv, zy, qmin, qmax):
    """dot8x16_epq reading each pixel's taps in place (_make_dot_taps)."""
    return _quant_sig(_taps_head(1, a, pix, toff, w), y, zw, scale, bias, res), \
        _make_dot_taps(1, quant=True)


@intrinsic
def taps8x32_epq(typingctx, a, pix, pix_off, toff, ntaps, nqt, w, w_off, w_step, y, y_off, ldy,
                 npx, nch, zw, scale, bias, k_off, act, res, has_res, inv, zy, qmin, qmax):
    """dot8x32_epq reading each pixel's taps in place (_make_dot_taps)."""
    return _quant_sig(_taps_head(2, a, pix, toff, w), y, zw, scale, bias, res), \
        _make_dot_taps(2, quant=True)


def _cols_sig(sig, zf, zl):
    return types.void(*sig.args, types.intp, types.intp, zf, zl, types.intp)


@intrinsic
def taps7x16_cols_epi(typingctx, a, pix, pix_off, toff, ntaps, nqt, w, w_off, y, y_off, ldy,
                      npx, nch, zw, scale, bias, k_off, act, res, has_res, mf, ml, zf, zl,
                      z_off):
    """taps8x16_epi on seven pixels of one output row, the row's end columns leaving out
    the taps that read only padding (_make_dot_taps, cols)."""
    return _cols_sig(_epilogue_sig(_taps_head(1, a, pix, toff, w), y, zw, scale, bias, res),
                     zf, zl), _make_dot_taps(1, cols=True)


@intrinsic
def taps7x32_cols_epi(typingctx, a, pix, pix_off, toff, ntaps, nqt, w, w_off, w_step, y, y_off,
                      ldy, npx, nch, zw, scale, bias, k_off, act, res, has_res, mf, ml, zf, zl,
                      z_off):
    """taps8x32_epi on seven pixels of one output row (_make_dot_taps, cols)."""
    return _cols_sig(_epilogue_sig(_taps_head(2, a, pix, toff, w), y, zw, scale, bias, res),
                     zf, zl), _make_dot_taps(2, cols=True)


@intrinsic
def taps7x16_cols_epq(typingctx, a, pix, pix_off, toff, ntaps, nqt, w, w_off, y, y_off, ldy,
                      npx, nch, zw, scale, bias, k_off, act, res, has_res, inv, zy, qmin, qmax,
                      mf, ml, zf, zl, z_off):
    """taps8x16_epq on seven pixels of one output row (_make_dot_taps, cols)."""
    return _cols_sig(_quant_sig(_taps_head(1, a, pix, toff, w), y, zw, scale, bias, res),
                     zf, zl), _make_dot_taps(1, quant=True, cols=True)


@intrinsic
def taps7x32_cols_epq(typingctx, a, pix, pix_off, toff, ntaps, nqt, w, w_off, w_step, y, y_off,
                      ldy, npx, nch, zw, scale, bias, k_off, act, res, has_res, inv, zy, qmin,
                      qmax, mf, ml, zf, zl, z_off):
    """taps8x32_epq on seven pixels of one output row (_make_dot_taps, cols)."""
    return _cols_sig(_quant_sig(_taps_head(2, a, pix, toff, w), y, zw, scale, bias, res),
                     zf, zl), _make_dot_taps(2, quant=True, cols=True)


# ---- pixels in the lanes: 1x1 convolutions straight from NCHW planes ----------------------

PX_MC = 8   # output channels per strip of the pixel-vector kernels
PX_NV = 3   # pixel vectors (16 pixels each) per block, at most


@intrinsic
def pack4x64(typingctx, x, x_off, plane, nrows, out, o_off, npx):
    """Four channel rows of up to 64 pixels interleaved into vpdpbusd words, for i < 4,
    j < 64:

        out[o_off + 4*j + i] = x[x_off + min(i, nrows - 1)*plane + j]   (j < npx, else 0)

    so 16 consecutive pixels' four channel bytes are one 64-byte vector (pixel l in
    lane l).  Rows past nrows repeat the last one: their weights are packed as zeros.
    Two rounds of two-source byte/word shuffles (vpermt2b / vpermt2w with VBMI)."""
    sig = types.void(x, types.intp, types.intp, types.intp, out, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        i8, i16, i32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)
        v64 = ir.VectorType(i8, 64)
        xp = _data_ptr(context, builder, signature, args, 0, i8)
        op = _data_ptr(context, builder, signature, args, 4, i8)
        x_off, plane, nrows, o_off, npx = args[1], args[2], args[3], args[5], args[6]
        intp = x_off.type
        const = lambda v: ir.Constant(intp, v)  # noqa: E731
        m64 = ir.VectorType(ir.IntType(1), 64)
        lanes = ir.Constant(ir.VectorType(intp, 64), list(range(64)))
        mask = builder.icmp_signed("<", lanes, _splat(builder, npx, 64))
        mload = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v64, [v64.as_pointer(), i32, m64, v64]),
            "llvm.masked.load.v64i8.p0")
        last = builder.sub(nrows, const(1))
        rows = []
        for i in range(4):
            r = builder.select(builder.icmp_signed("<", const(i), last), const(i), last)
            src = builder.bitcast(builder.gep(xp, [builder.add(x_off, builder.mul(r, plane))]),
                                  v64.as_pointer())
            rows.append(builder.call(mload, [src, ir.Constant(i32, 1), mask,
                                             ir.Constant(v64, None)]))
        pair = lambda a, b, h, n: builder.shuffle_vector(  # noqa: E731
            a, b, ir.Constant(ir.VectorType(i32, n), [h * n // 2 + k // 2 + n * (k % 2)
                                                      for k in range(n)]))
        v32w = ir.VectorType(i16, 32)
        words = [[builder.bitcast(pair(rows[2 * u], rows[2 * u + 1], h, 64), v32w)
                  for h in range(2)] for u in range(2)]   # (row pair, half of the pixels)
        for h in range(2):
            for q in range(2):
                v = pair(words[0][h], words[1][h], q, 32)
                dst = builder.gep(op, [builder.add(o_off, const(128 * h + 64 * q))])
                builder.store(builder.bitcast(v, v64), builder.bitcast(dst, v64.as_pointer()),
                              align=1)
        return context.get_dummy_value()

    return sig, codegen


def _make_px(nv, quant):
    """The pixel-vector block: nv vectors of 16 pixels x PX_MC output channels in
    nv*PX_MC zmm accumulators, lane l of vector v pixel 16v + l of one channel:

        acc[m, 16v + l] = sum_(q < nq) sum_(i < 4)
                          u8 a[a_off + q*lda + 64v + 4l + i] * s8 w[w_off + 4*PX_MC*q + 4m + i]

    (a packed by pack4x64, the weights (nq, PX_MC, 4) per strip), each step nv vector
    loads and PX_MC four-byte weight broadcasts feeding nv*PX_MC vpdpbusd.  The lanes
    are output pixels, so the epilogue needs no transposes: channel m < nch's vectors
    go to y[y_off + m*ldy + 16v + l] for 16v + l < npx, through _store_epilogue's
    arithmetic (and with quant its requantization); a block whose pixels and channels
    all exist stores through constant masks, the others through run-time ones."""
    def codegen(context, builder, signature, args):
        i8, i32 = ir.IntType(8), ir.IntType(32)
        f32 = ir.FloatType()
        v16 = ir.VectorType(i32, 16)

        def data(i, ty):
            return _data_ptr(context, builder, signature, args, i, ty)

        a_ptr, w_ptr = data(0, i8), data(4, i8)
        y_ptr = data(6, i8 if quant else f32)
        zw_ptr, sc_ptr, b_ptr, r_ptr = data(11, i32), data(12, f32), data(13, f32), data(16, f32)
        a_off, lda, nq, w_off = args[1], args[2], args[3], args[5]
        y_off, ldy, npx, nch, k_off, act, has_res = (args[7], args[8], args[9], args[10],
                                                     args[14], args[15], args[17])
        intp = a_off.type
        const = lambda v: ir.Constant(intp, v)  # noqa: E731
        dp = _vpdpbusd(builder)

        def step(q, acc):
            ap = builder.add(a_off, builder.mul(q, lda))
            av = [builder.load(builder.bitcast(builder.gep(a_ptr, [builder.add(ap, const(64 * v))]),
                                               v16.as_pointer()), align=1) for v in range(nv)]
            wq = builder.add(w_off, builder.mul(q, const(4 * PX_MC)))
            new = list(acc)
            for m in range(PX_MC):
                wp = builder.gep(w_ptr, [builder.add(wq, const(4 * m))])
                word = builder.load(builder.bitcast(wp, i32.as_pointer()), align=1)
                wb = _splat(builder, word, 16)
                for v in range(nv):
                    new[m * nv + v] = builder.call(dp, [acc[m * nv + v], av[v], wb])
            return new

        start = []   # each channel's sums start from -zw[k]: the epilogue subtracts nothing
        for m in range(PX_MC):
            k = _channel_index(builder, const(m), nch, k_off)[1]
            zw = builder.load(builder.gep(zw_ptr, [k]))
            start += [_splat(builder, builder.sub(ir.Constant(i32, 0), zw), 16)] * nv
        finals = _counted_loop(builder, const(0), nq, 1, start, step)[1]
        m16 = ir.VectorType(ir.IntType(1), 16)
        no_lanes = ir.Constant(m16, [0] * 16)
        all_lanes = ir.Constant(m16, [1] * 16)

        def emit(whole):
            # whole: all 16*nv pixels and PX_MC channels exist -- constant masks (plain
            # stores), no per-channel checks
            px_masks = [all_lanes] * nv if whole else _lane_masks(builder, npx, nv)
            outs = []
            for m in range(PX_MC):
                c = const(m)
                inside, correct = _channel(builder, c, nch, k_off, None, sc_ptr, b_ptr, 16,
                                           whole)
                row = builder.add(y_off, builder.mul(c, ldy))
                for v in range(nv):
                    outs.append((correct(finals[m * nv + v]),
                                 px_masks[v] if whole else
                                 builder.select(inside, px_masks[v], no_lanes),
                                 builder.add(row, const(16 * v))))
            _stores(builder, act, has_res, outs, 16, y_ptr, r_ptr,
                    [args[18 + i] for i in range(4)] if quant else None)

        whole = builder.and_(builder.icmp_signed(">=", npx, const(16 * nv)),
                             builder.icmp_signed(">=", nch, const(PX_MC)))
        with builder.if_else(whole) as (then, otherwise):
            with then:
                emit(True)
            with otherwise:
                emit(False)
        return context.get_dummy_value()

    return codegen


def _px_sig(a, w, y, zw, scale, bias, res, quant):
    head = (a, types.intp, types.intp, types.intp, w, types.intp, y, types.intp, types.intp,
            types.intp, types.intp, zw, scale, bias, types.intp, types.intp, res, types.intp)
    return types.void(*head, *((types.float32,) * 4 if quant else ()))


def _make_px_intrinsics(nv):
    @intrinsic
    def px_epi(typingctx, a, a_off, lda, nq, w, w_off, y, y_off, ldy, npx, nch, zw, scale, bias,
               k_off, act, res, has_res):
        return _px_sig(a, w, y, zw, scale, bias, res, False), _make_px(nv, False)

    @intrinsic
    def px_epq(typingctx, a, a_off, lda, nq, w, w_off, y, y_off, ldy, npx, nch, zw, scale, bias,
               k_off, act, res, has_res, inv, zy, qmin, qmax):
        return _px_sig(a, w, y, zw, scale, bias, res, True), _make_px(nv, True)

    return px_epi, px_epq


# px{nv}_epi / px{nv}_epq: _make_px's block of nv pixel vectors, float or requantized out
(px1_epi, px1_epq), (px2_epi, px2_epq), (px3_epi, px3_epq) = (_make_px_intrinsics(nv)
                                                              for nv in (1, 2, 3))
