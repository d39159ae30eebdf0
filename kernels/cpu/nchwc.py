"""16-channel blocked (NCHW16c) building blocks in LLVM IR: transposes, depthwise tap rows.

    to_blocked:    dst[offs[o_off + i] + c]   = x[x_off + c*plane + i]          (i, c < 16)
                   (to_blocked_int: float32 of one-byte integers, minus a zero point)
    from_blocked:  y[y_off + c*plane + i]     = src[s_off + 16*i + c]           (i < 16, c < nch)
    to_channels_last: the same 16 x 16 move into channels-last int8/uint8 rows (the int8
                   conv's layout), quantizing float inputs on the way
    depthwise row: out[o_off + 16*q + c] = act(bias[b_off + c] + sum_(r<R, s<S)
                       wt[w_off + 16*(r*S + s) + c] * p[p_off + q*qstep + r*rs + s*cs + c])
    grouped row:   the same with cg (2, 4 or 8) input channels per output channel, the
                   group's channels in the same vector: for c' = c - c%cg + (c%cg + j)%cg
                   out[o_off + 16*q + c] = act(bias[b_off + c] + sum_(j<cg, r<R, s<S)
                       wt[w_off + 16*(j*R*S + r*S + s) + c] * p[p_off + ... + c'])
    broadcast row: cg = 16, 32 or 64 channels a pixel of p, one group, broadcast:
                   out[o_off + 16*q + c] = act(bias[b_off + c] + sum_(j<cg, r<R, s<S)
                       wt[w_off + 16*(j*R*S + r*S + s) + c] * p[p_off + q*qstep + r*rs + s*cs + j])

In a blocked plane every pixel holds 16 consecutive channels, so one 64-byte
aligned vector load is one tap for 16 channels, and a depthwise filter's taps
are whole vectors kept in registers (the NCHWc layout of oneDNN and
onnxruntime).  Numba's loops over 16 channels do not vectorize (LLVM cannot
prove the output slice does not alias the inputs, and a 16-iteration loop is
not worth its run-time checks), so these pieces are written as intrinsics,
the route of ``zmm.py``.  The transposes move 16 x 16 floats with four rounds
of two-source shuffles (64 ``vpermt2ps`` on AVX-512) instead of 256 scalar
loads and stores.  Everything is target independent; without AVX-512 the
depthwise rows run as two 8-channel passes (``_HALVES``) so their taps stay in
registers.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .zmm import VW, _lane_masks, _splat

B = 16   # channels per block: one 16-float vector

_F32 = ir.FloatType()
_V16 = ir.VectorType(_F32, B)
_ZIP_LO = [i // 2 + (i % 2) * B for i in range(B)]        # a0 b0 a1 b1 ... a7 b7
_ZIP_HI = [B // 2 + i // 2 + (i % 2) * B for i in range(B)]  # a8 b8 ... a15 b15


def _transpose(builder, rows):
    """16 vectors of 16 (any element type) -> their transpose: four rounds of zipping
    row i with row i + 8 (after round k every vector holds 2^k-element runs of the
    transposed order)."""
    i32 = ir.IntType(32)
    lo = ir.Constant(ir.VectorType(i32, B), _ZIP_LO)
    hi = ir.Constant(ir.VectorType(i32, B), _ZIP_HI)
    for _ in range(4):
        new = [None] * B
        for i in range(B // 2):
            new[2 * i] = builder.shuffle_vector(rows[i], rows[i + B // 2], lo)
            new[2 * i + 1] = builder.shuffle_vector(rows[i], rows[i + B // 2], hi)
        rows = new
    return rows


def _ptr(context, builder, aty, val, elem=None):
    """An array argument's data pointer, as a pointer to its elements."""
    arr = context.make_array(aty)(context, builder, val)
    return builder.bitcast(arr.data, (elem or _F32).as_pointer())


def _vload(builder, base, off):
    return builder.load(builder.bitcast(builder.gep(base, [off]), _V16.as_pointer()), align=4)


def _vstore(builder, val, base, off):
    builder.store(val, builder.bitcast(builder.gep(base, [off]), _V16.as_pointer()), align=4)


def _channel_rows(builder, x_off, plane, nch, load_row):
    """load_row(start) of channel c's row for c < 16, start = x_off + c*plane (channels
    from nch on repeating nch - 1)."""
    intp = x_off.type
    last = builder.sub(nch, ir.Constant(intp, 1))
    rows = []
    for c in range(B):
        cc = ir.Constant(intp, c)
        ch = builder.select(builder.icmp_signed("<", cc, nch), cc, last)
        rows.append(load_row(builder.add(x_off, builder.mul(ch, plane))))
    return rows


def _store_rows(builder, chans, y_off, plane, nch, store):
    """store(chans[c], y_off + c*plane) for the channel rows c < nch."""
    intp = y_off.type
    for c in range(B):
        cc = ir.Constant(intp, c)
        with builder.if_then(builder.icmp_signed("<", cc, nch), likely=True):
            store(chans[c], builder.add(y_off, builder.mul(cc, plane)))


@intrinsic
def to_blocked(typingctx, x, x_off, plane, nch, dst, offs, o_off):
    """Pixels x_off .. x_off + 15 of channels 0 .. 15 (channel stride ``plane``) into
    pixel vectors at dst[offs[o_off + i]:][:16].  Channels from nch on repeat channel
    nch - 1 (their lanes are never read back); all 16 pixels must exist."""
    sig = types.void(x, types.intp, types.intp, types.intp, dst, offs, types.intp)

    def codegen(context, builder, signature, args):
        xp = _ptr(context, builder, signature.args[0], args[0])
        dp = _ptr(context, builder, signature.args[4], args[4])
        x_off, plane, nch, o_off = args[1], args[2], args[3], args[6]
        intp = x_off.type
        op = _ptr(context, builder, signature.args[5], args[5], intp)
        cols = _transpose(builder, _channel_rows(builder, x_off, plane, nch,
                                                 lambda at: _vload(builder, xp, at)))
        for i in range(B):
            off = builder.load(builder.gep(op, [builder.add(o_off, ir.Constant(intp, i))]))
            _vstore(builder, cols[i], dp, off)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def to_blocked_int(typingctx, x, x_off, plane, nch, dst, offs, o_off, zx):
    """to_blocked from one-byte integers x (uint8 or int8), each converted on the way:
    dst[offs[o_off + i] + c] = float32(x[x_off + c*plane + i]) - zx (the int8 depthwise
    kernel's x - zx, exact).  The 16 x 16 block is transposed as bytes (four 64-byte
    registers, twelve two-source byte shuffles) and each pixel's 16 bytes converted after,
    where converting the rows first left a transpose of 16 float vectors (64 shuffles).
    A pass writing the block's planes as floats first had cost MobileNetV2's int8 144@56
    a third more than the fp32 kernel."""
    sig = types.void(x, types.intp, types.intp, types.intp, dst, offs, types.intp,
                     types.float32)
    signed = x.dtype.signed

    def codegen(context, builder, signature, args):
        i8 = ir.IntType(8)
        v8 = ir.VectorType(i8, B)
        xp = _ptr(context, builder, signature.args[0], args[0], i8)
        dp = _ptr(context, builder, signature.args[4], args[4])
        x_off, plane, nch, o_off = args[1], args[2], args[3], args[6]
        intp = x_off.type
        op = _ptr(context, builder, signature.args[5], args[5], intp)
        vz = _splat(builder, args[7], B)
        rows = _channel_rows(builder, x_off, plane, nch, lambda at: builder.load(
            builder.bitcast(builder.gep(xp, [at]), v8.as_pointer()), align=1))
        for i, v in enumerate(transpose_bytes(builder, rows)):
            v = builder.sitofp(v, _V16) if signed else builder.uitofp(v, _V16)
            off = builder.load(builder.gep(op, [builder.add(o_off, ir.Constant(intp, i))]))
            _vstore(builder, builder.fsub(v, vz), dp, off)
        return context.get_dummy_value()

    return sig, codegen


def transpose_bytes(builder, rows):
    """The 16 x 16 bytes of rows (16 vectors of 16 bytes) transposed: out[i][r] =
    rows[r][i].  Four rows a 64-byte register, then two rounds of two-source byte
    shuffles: half[g][h] holds columns 8h .. 8h + 7 of rows 8g .. 8g + 7, each column's
    eight bytes together; q columns 4m .. 4m + 3, 16 bytes each (twelve shuffles of 64
    bytes, where a transpose of 16 float vectors takes 64).  to_blocked_int's way in
    (channel rows to pixel vectors) and finish_out's way out (pixels to channel rows)."""
    def shuffle(a, b, idx):
        return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32),
                                                                      len(idx)), idx))
    z = [shuffle(shuffle(rows[4 * k], rows[4 * k + 1], list(range(32))),
                 shuffle(rows[4 * k + 2], rows[4 * k + 3], list(range(32))),
                 list(range(64))) for k in range(4)]
    half = [[shuffle(z[2 * g], z[2 * g + 1],
                     [64 * (c // 4) + 16 * (c % 4) + 8 * h + p
                      for p in range(8) for c in range(8)]) for h in range(2)]
            for g in range(2)]
    out = []
    for m in range(4):
        h, p0 = m // 2, 4 * (m % 2)
        q = shuffle(half[0][h], half[1][h], [8 * (p0 + j) + c if c < 8 else
                                             64 + 8 * (p0 + j) + c - 8
                                             for j in range(4) for c in range(B)])
        out += [shuffle(q, q, list(range(16 * j, 16 * j + 16))) for j in range(4)]
    return out


@intrinsic
def copy_vector(typingctx, src, s_off, dst, d_off):
    """dst[d_off:][:16] = src[s_off:][:16]: one pixel's 16 channels, one vector move."""
    sig = types.void(src, types.intp, dst, types.intp)

    def codegen(context, builder, signature, args):
        sp = _ptr(context, builder, signature.args[0], args[0])
        dp = _ptr(context, builder, signature.args[2], args[2])
        _vstore(builder, _vload(builder, sp, args[1]), dp, args[3])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def from_blocked(typingctx, src, s_off, y, y_off, plane, nch):
    """The 16 pixel vectors at src[s_off:][:256] back to channel rows:
    y[y_off + c*plane:][:16] for c < nch."""
    sig = types.void(src, types.intp, y, types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        sp = _ptr(context, builder, signature.args[0], args[0])
        yp = _ptr(context, builder, signature.args[2], args[2])
        s_off, y_off, plane, nch = args[1], args[3], args[4], args[5]
        intp = s_off.type
        rows = [_vload(builder, sp, builder.add(s_off, ir.Constant(intp, B * i)))
                for i in range(B)]
        _store_rows(builder, _transpose(builder, rows), y_off, plane, nch,
                    lambda v, at: _vstore(builder, v, yp, at))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def to_channels_last(typingctx, x, x_off, plane, inv_scale, zx, qmin, qmax, out, o_off, ldo,
                     npx):
    """npx <= 16 pixels of 16 channel planes stored channels-last as bytes (16 a pixel, rows
    ldo bytes apart; out int8 or uint8), for i < npx, c < 16:

        x float32:       out[o_off + i*ldo + c] = clamp(rint(x[...] * inv_scale) + zx, qmin, qmax)
        x int8 / uint8:  out[o_off + i*ldo + c] = x[x_off + c*plane + i]   (scale args unused)

    The element type picks the code at compile time.  The float math is the scalar
    kernel's (float32 product, round half to even, float32 add), so the bytes are
    identical; all 16 channels must exist.  A run of fewer than 16 pixels (rows of 7x7
    and 14x14 maps) reads only its pixels (masked loads) and writes only its rows."""
    sig = types.void(x, types.intp, types.intp, types.float32, types.float32, types.float32,
                     types.float32, out, types.intp, types.intp, types.intp)
    quantize = isinstance(x.dtype, types.Float)

    def codegen(context, builder, signature, args):
        i8 = ir.IntType(8)
        v8 = ir.VectorType(i8, B)
        op = _ptr(context, builder, signature.args[7], args[7], i8)
        x_off, plane, inv, zx, qmin, qmax, o_off, ldo, npx = (
            args[1], args[2], args[3], args[4], args[5], args[6], args[8], args[9], args[10])
        intp = x_off.type
        starts = [builder.add(x_off, builder.mul(ir.Constant(intp, c), plane)) for c in range(B)]
        mask = _lane_masks(builder, npx, 1)[0]  # pixels i < npx
        if quantize:
            xp = _ptr(context, builder, signature.args[0], args[0])
            vinv, vzx, vlo, vhi = (_splat(builder, v, B) for v in (inv, zx, qmin, qmax))
            rint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V16, [_V16]),
                                                  "llvm.rint.v16f32")
            vec, align = _V16, 4
        else:
            xp = _ptr(context, builder, signature.args[0], args[0], i8)
            vec, align = v8, 1
        mload = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vec, [vec.as_pointer(), ir.IntType(32),
                                                  mask.type, vec]),
            f"llvm.masked.load.v{B}{'f32' if quantize else 'i8'}.p0")

        def move(partial):
            rows = []
            for o in starts:
                ptr = builder.bitcast(builder.gep(xp, [o]), vec.as_pointer())
                if partial:
                    rows.append(builder.call(mload, [ptr, ir.Constant(ir.IntType(32), align),
                                                     mask, ir.Constant(vec, None)]))
                else:
                    rows.append(builder.load(ptr, align=align))
            for i, v in enumerate(_transpose(builder, rows)):
                if quantize:
                    q = builder.fadd(builder.call(rint, [builder.fmul(v, vinv)]), vzx)
                    q = builder.select(builder.fcmp_ordered("<", q, vlo), vlo, q)
                    q = builder.select(builder.fcmp_ordered(">", q, vhi), vhi, q)
                    v = builder.trunc(builder.fptosi(q, ir.VectorType(ir.IntType(32), B)), v8)
                dst = builder.gep(op, [builder.add(o_off, builder.mul(ir.Constant(intp, i), ldo))])
                if partial:
                    with builder.if_then(builder.icmp_signed("<", ir.Constant(intp, i), npx)):
                        builder.store(v, builder.bitcast(dst, v8.as_pointer()), align=1)
                else:
                    builder.store(v, builder.bitcast(dst, v8.as_pointer()), align=1)

        with builder.if_else(builder.icmp_signed(">=", npx, ir.Constant(intp, B)),
                             likely=True) as (full, part):
            with full:
                move(False)
            with part:
                move(True)
        return context.get_dummy_value()

    return sig, codegen


QB = 4   # output pixels per step of the strided-constant row kernels
# the row kernels' lane ranges: the 16 channels at once on AVX-512; on AVX2 two
# 8-channel passes, each with its R*S taps in registers (16 lanes' taps would not fit)
_HALVES = ((0, B),) if VW == 16 else ((0, 8), (8, 8))


def _make_row(R, S, stride=None, qb=QB, cg=1, jloop=False):
    """The depthwise row intrinsic for an R x S filter (R*S weight vectors in registers).

    With ``stride`` given (dilation 1 and that column stride assumed, so ``cs`` must be
    16 and ``qstep`` 16*stride), each step computes ``qb`` neighbouring pixels and loads
    every input column they share once: a 3x3 stride-1 step of 4 reads 3 x 6 vectors for
    4 x 9 FMAs instead of 36 (the row's last step starts at nq - qb, recomputing a
    few pixels).  Without it, one pixel a step with any cs and qstep.

    ``cg`` 2, 4 or 8: a grouped conv's row, cg input channels per output channel,
    all of them in the output's 16-channel block (the grouped row in the module
    docstring).  Each input vector is used as cg copies, copy j rotated by j lanes within
    every run of cg lanes (one constant shuffle), each with its own R*S weight vectors.
    ``jloop`` (with ``stride``): the copies in a loop, copy j + 1 made from copy j by a
    rotation of one lane, the weights read in the loop and a pixel's sums in S chains;
    unrolled, the cg*R*S weight vectors were hoisted out of the row and spilled, and the
    R chains of a pixel left the FMA pipes idle.

    ``cg`` 16, 32 or 64 (``bcast``): the grouped row of whole 16-channel blocks, every pixel
    of p holding cg channels (the group) and the 16 outputs one block of the group:
    input channel j of a pixel broadcast to all lanes, times weight vector j*R*S + t;
    qb pixels a step, the channels in a loop that reads each iteration's weights.
    Without ``stride`` any cs and qstep (strides and dilations alike); with it, cs = cg
    and qstep = cg*stride are compile-time constants (the arguments unused)."""
    bcast = cg >= B
    assert cg in (1, 2, 4, 8) or bcast
    # copy j, lane o: lane o - o%cg + (o%cg + j)%cg (within AVX2's 8-lane halves)
    rot = [[o - o % cg + (o % cg + j) % cg for o in range(B)] for j in range(1 if bcast else cg)]
    # a grouped row's cg*R*S FMAs a pixel in R chains (one a filter row; S chains, one a
    # filter column, in the copy loop), added at the end: with one chain a pixel, QB
    # pixels a step kept 4 FMAs in flight, not the 8 that two FMA pipes of 4 cycles'
    # latency need (1 FMA a cycle at most)
    parts = 1 if cg == 1 else R

    @intrinsic
    def row(typingctx, p, p_off, rs, cs, qstep, nq, wt, w_off, bias, b_off, act, out, o_off):
        """out[o_off + 16*q:][:16] = act(bias + sum of the taps) for q < nq (module docstring);
        act 0 none, 1 relu, 2 relu6, 3 hardswish, NaN passing through as in epilogue.py."""
        sig = types.void(p, types.intp, types.intp, types.intp, types.intp, types.intp, wt,
                         types.intp, bias, types.intp, types.intp, out, types.intp)

        def codegen(context, builder, signature, args):
            pp = _ptr(context, builder, signature.args[0], args[0])
            wp = _ptr(context, builder, signature.args[6], args[6])
            bp = _ptr(context, builder, signature.args[8], args[8])
            yp = _ptr(context, builder, signature.args[11], args[11])
            p_off, rs, cs, qstep, nq, w_off, b_off, act, o_off = (
                args[1], args[2], args[3], args[4], args[5], args[7], args[9], args[10], args[12])

            def emit_half(lane0, L):
                """the row over channel lanes lane0 .. lane0 + L - 1 of every 16-channel
                vector"""
                vt = ir.VectorType(_F32, L)

                def vload(base, off):
                    at = builder.gep(base, [builder.add(off, ir.Constant(off.type, lane0))])
                    return builder.load(builder.bitcast(at, vt.as_pointer()), align=4)

                def vstore(val, off):
                    at = builder.gep(yp, [builder.add(off, ir.Constant(off.type, lane0))])
                    builder.store(val, builder.bitcast(at, vt.as_pointer()), align=4)

                intp = p_off.type
                const = lambda v: ir.Constant(intp, v)  # noqa: E731
                vconst = lambda v: ir.Constant(vt, [v] * L)  # noqa: E731
                fma = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(vt, [vt, vt, vt]), f"llvm.fma.v{L}f32")
                if not bcast and not jloop:
                    taps = [vload(wp, builder.add(w_off, const(B * t)))
                            for t in range(R * S * cg)]
                undef = ir.Constant(vt, None)
                zero = vconst(0.0)

                def total(acc):
                    """the partial sums of a pixel added up"""
                    v = acc[0]
                    for a in acc[1:]:
                        v = builder.fadd(v, a)
                    return v

                def counted_loop(n, carried, step, name):
                    """``for j in range(n): carried = step(j, carried)`` as an IR loop (n >=
                    1, the carried values as phis); returns the last iteration's values"""
                    pre = builder.block
                    loop = builder.append_basic_block(f"{name}.loop")
                    after = builder.append_basic_block(f"{name}.after")
                    builder.branch(loop)
                    builder.position_at_end(loop)
                    j = builder.phi(intp)
                    j.add_incoming(const(0), pre)
                    phis = [builder.phi(v.type) for v in carried]
                    for ph, v in zip(phis, carried):
                        ph.add_incoming(v, pre)
                    out = step(j, phis)
                    j1 = builder.add(j, const(1))
                    j.add_incoming(j1, builder.block)
                    for ph, v in zip(phis, out):
                        ph.add_incoming(v, builder.block)
                    builder.cbranch(builder.icmp_signed("<", j1, const(n)), loop, after)
                    builder.position_at_end(after)
                    return out
                masks = [ir.Constant(ir.VectorType(ir.IntType(32), L),
                                     [v - lane0 for v in rot[j][lane0:lane0 + L]])
                         for j in range(len(rot))]

                def copies(x):
                    """x as its cg rotated copies (copy 0 is x)"""
                    return [x] + [builder.shuffle_vector(x, undef, masks[j]) for j in range(1, cg)]
                bv = vload(bp, b_off)
                # relu / relu6 / none as one clamp: v < lo -> lo, v > hi -> hi (NaN stays)
                lo = builder.select(builder.icmp_signed(">=", act, const(1)), vconst(0.0),
                                    vconst(float("-inf")))
                hi = builder.select(builder.icmp_signed("==", act, const(2)), vconst(6.0),
                                    vconst(float("inf")))

                def clamp(v, a, b):
                    v = builder.select(builder.fcmp_ordered("<", v, a), a, v)
                    return builder.select(builder.fcmp_ordered(">", v, b), b, v)

                def finish(acc, q, hswish):
                    if hswish:
                        g = clamp(builder.fadd(acc, vconst(3.0)), vconst(0.0), vconst(6.0))
                        acc = builder.fmul(builder.fmul(acc, g), vconst(1.0 / 6.0))
                    else:
                        acc = clamp(acc, lo, hi)
                    vstore(acc, builder.add(o_off, builder.mul(q, const(B))))

                if bcast:
                    steps = builder.sdiv(builder.add(nq, const(qb - 1)), const(qb))
                    last = builder.sub(nq, const(qb))
                    # with ``stride`` given the column and pixel steps are constants (cg
                    # and cg*stride), so that every load's address is a base register and
                    # a displacement: with them in registers the row ran ~1.3x as long
                    cs_, qstep_ = (cs, qstep) if stride is None else (const(cg),
                                                                      const(cg * stride))
                    offs = [builder.add(builder.mul(const(r), rs), builder.mul(const(s), cs_))
                            for r in range(R) for s in range(S)]
                    splat0 = ir.Constant(ir.VectorType(ir.IntType(32), L), [0] * L)

                    def body(k, hswish):
                        """qb pixels; the input channels j in a loop (not unrolled: its
                        R*S weights are read once an iteration, where cg*R*S unrolled
                        ones were hoisted out of the row loop and spilled)"""
                        q0 = builder.mul(k, const(qb))
                        q0 = builder.select(builder.icmp_signed(">", q0, last), last, q0)
                        base = builder.add(p_off, builder.mul(q0, qstep_))
                        pix = [builder.add(base, builder.mul(const(i), qstep_)) for i in range(qb)]

                        def step(j, carried):
                            accs = [carried[i * parts:(i + 1) * parts] for i in range(qb)]
                            wj = builder.add(w_off, builder.mul(j, const(B * R * S)))
                            for t in range(R * S):
                                a = (t // S) % parts
                                w = vload(wp, builder.add(wj, const(B * t)))
                                tj = builder.add(offs[t], j)
                                for i in range(qb):
                                    at = builder.gep(pp, [builder.add(pix[i], tj)])
                                    x = builder.insert_element(
                                        undef, builder.load(at, align=4),
                                        ir.Constant(ir.IntType(32), 0))
                                    x = builder.shuffle_vector(x, undef, splat0)
                                    accs[i][a] = builder.call(fma, [w, x, accs[i][a]])
                            return [v for row in accs for v in row]

                        init = ([bv] + [zero] * (parts - 1)) * qb
                        flat = counted_loop(cg, init, step, f"bcast{lane0}")
                        accs = [flat[i * parts:(i + 1) * parts] for i in range(qb)]
                        for i in range(qb):
                            finish(total(accs[i]), builder.add(q0, const(i)), hswish)
                elif stride is None:
                    steps = nq
                    offs = [builder.add(builder.mul(const(r), rs), builder.mul(const(s), cs))
                            for r in range(R) for s in range(S)]

                    def body(k, hswish):
                        base = builder.add(p_off, builder.mul(k, qstep))
                        acc = [bv] + [zero] * (parts - 1)
                        for t in range(R * S):
                            xs = copies(vload(pp, builder.add(base, offs[t])))
                            for j in range(cg):
                                a = (t // S) % parts
                                acc[a] = builder.call(fma, [taps[j * R * S + t], xs[j], acc[a]])
                        finish(total(acc), k, hswish)
                else:
                    ncol = (qb - 1) * stride + S
                    steps = builder.sdiv(builder.add(nq, const(qb - 1)), const(qb))
                    last = builder.sub(nq, const(qb))

                    def body(k, hswish):
                        q0 = builder.mul(k, const(qb))
                        q0 = builder.select(builder.icmp_signed(">", q0, last), last, q0)
                        base = builder.add(p_off, builder.mul(q0, const(B * stride)))
                        if jloop:
                            return body_jloop(q0, base, hswish)
                        accs = [[bv] + [zero] * (parts - 1) for _ in range(qb)]
                        for r in range(R):
                            rb = builder.add(base, builder.mul(const(r), rs))
                            cols = [copies(vload(pp, builder.add(rb, const(B * c))))
                                    for c in range(ncol)]
                            a = r % parts
                            for j in range(cg):
                                for i in range(qb):
                                    for s in range(S):
                                        accs[i][a] = builder.call(fma, [
                                            taps[j * R * S + r * S + s],
                                            cols[i * stride + s][j], accs[i][a]])
                        for i in range(qb):
                            finish(total(accs[i]), builder.add(q0, const(i)), hswish)

                    def body_jloop(q0, base, hswish):
                        """the copies in a loop: copy j + 1 is copy j rotated by one lane
                        more, the step's columns carried from one copy to the next; a
                        pixel's FMAs in S chains (one a filter column)"""
                        accs = [[bv] + [zero] * (S - 1) for _ in range(qb)]
                        rot1 = masks[1] if cg > 1 else None
                        for r in range(R):
                            rb = builder.add(base, builder.mul(const(r), rs))
                            cols = [vload(pp, builder.add(rb, const(B * c))) for c in range(ncol)]

                            def step(j, carried, r=r):
                                cols, acc = carried[:ncol], carried[ncol:]
                                wj = builder.add(w_off, builder.mul(j, const(B * R * S)))
                                ws = [vload(wp, builder.add(wj, const(B * (r * S + s))))
                                      for s in range(S)]
                                acc = [builder.call(fma, [ws[s], cols[i * stride + s],
                                                          acc[i * S + s]])
                                       for i in range(qb) for s in range(S)]
                                return [builder.shuffle_vector(c, undef, rot1)
                                        for c in cols] + acc
                            flat = counted_loop(cg, cols + [v for row in accs for v in row],
                                                step, f"rot{lane0}")[ncol:]
                            accs = [flat[i * S:(i + 1) * S] for i in range(qb)]
                        for i in range(qb):
                            finish(total(accs[i]), builder.add(q0, const(i)), hswish)

                done = builder.append_basic_block(f"dwrow.done{lane0}")
                pick = builder.append_basic_block(f"dwrow.pick{lane0}")
                builder.cbranch(builder.icmp_signed(">", steps, const(0)), pick, done)
                builder.position_at_end(pick)
                loops = [builder.append_basic_block(f"dwrow.loop{lane0}.{h}") for h in range(2)]
                builder.cbranch(builder.icmp_signed("==", act, const(3)), loops[1], loops[0])
                for h, loop in enumerate(loops):
                    builder.position_at_end(loop)
                    k = builder.phi(intp)
                    k.add_incoming(const(0), pick)
                    body(k, h == 1)
                    k1 = builder.add(k, const(1))
                    k.add_incoming(k1, builder.block)
                    builder.cbranch(builder.icmp_signed("<", k1, steps), loop, done)
                builder.position_at_end(done)

            for lane0, lanes in _HALVES:
                emit_half(lane0, lanes)
            return context.get_dummy_value()

        return sig, codegen

    return row


depthwise_row3x3 = _make_row(3, 3)
depthwise_row5x5 = _make_row(5, 5)
depthwise_row3x3_s1 = _make_row(3, 3, 1)
depthwise_row3x3_s2 = _make_row(3, 3, 2)
depthwise_row5x5_s1 = _make_row(5, 5, 1)
depthwise_row5x5_s2 = _make_row(5, 5, 2)
# 7x7 (ConvNeXt-style blocks): 49 taps do not fit the registers with a step's columns and
# accumulators, so LLVM keeps them on the stack and the FMAs read them from L1; stride 1
# shares each filter row's input columns between the pixels of a step, seven on AVX-512
# (13 columns and 7 accumulators in registers, each tap read once for 7 FMAs)
Q7X7 = 7 if VW == 16 else QB
depthwise_row7x7 = _make_row(7, 7)
depthwise_row7x7_s1 = _make_row(7, 7, 1, Q7X7)
# 3x3 stride-1 rows of 7 and 14 pixels (MobileNetV2's 7x7 and 14x14 maps), where steps of 4
# computed 8 and 16 pixels: seven a step, with 7 accumulators, 9 taps and 9 columns in 25
# of AVX-512's 32 vector registers (AVX2's 16 would spill: not used there).  Hot rows,
# one thread: 7 wide 3.07 -> 2.55 ns a pixel vector, 14 wide 3.02 -> 2.48; rows that are
# multiples of 4 keep steps of 4 (28 wide 2.50 against 2.54)
ROW7 = VW == 16
depthwise_row3x3_s1_q7 = _make_row(3, 3, 1, 7)
# grouped 3x3 rows (grouped.py), cg = 2, 4, 8 channels a group (rotated copies): any
# stride and dilation one pixel a step; stride 1 and 2 (dilation 1) QB pixels a step, for
# 4 and 8 a group with the copies in a loop (hot rows on one Zen 5 thread, 28 wide, FMA
# vectors a ns: stride 1 cg 8 5.0 -> 6.5, cg 4 6.1 -> 7.1; stride 2 cg 8 3.3 -> 6.0, cg 4
# 4.8 -> 7.3; cg 2 6.0 either way)
GROUPED_CG = (2, 4, 8, 16, 32, 64)
grouped_row3x3_g2 = _make_row(3, 3, cg=2)
grouped_row3x3_g4 = _make_row(3, 3, cg=4)
grouped_row3x3_g8 = _make_row(3, 3, cg=8)
grouped_row3x3_s1_g2 = _make_row(3, 3, 1, cg=2)
grouped_row3x3_s1_g4 = _make_row(3, 3, 1, cg=4, jloop=True)
grouped_row3x3_s1_g8 = _make_row(3, 3, 1, cg=8, jloop=True)
grouped_row3x3_s2_g2 = _make_row(3, 3, 2, cg=2)
grouped_row3x3_s2_g4 = _make_row(3, 3, 2, cg=4, jloop=True)
grouped_row3x3_s2_g8 = _make_row(3, 3, 2, cg=8, jloop=True)
# whole-block groups (16, 32, 64 channels), input channels broadcast: QB pixels a step, or
# one (rows shorter than QB); any stride and dilation, or stride 1 and 2 at dilation 1
# with the steps constants
grouped_row3x3_b16 = _make_row(3, 3, cg=16, qb=QB)
grouped_row3x3_b32 = _make_row(3, 3, cg=32, qb=QB)
grouped_row3x3_s1_b16 = _make_row(3, 3, 1, cg=16)
grouped_row3x3_s1_b32 = _make_row(3, 3, 1, cg=32)
grouped_row3x3_s2_b16 = _make_row(3, 3, 2, cg=16)
grouped_row3x3_s2_b32 = _make_row(3, 3, 2, cg=32)
grouped_row3x3_b64 = _make_row(3, 3, cg=64, qb=QB)
grouped_row3x3_b64_q1 = _make_row(3, 3, cg=64, qb=1)
grouped_row3x3_s1_b64 = _make_row(3, 3, 1, cg=64)
grouped_row3x3_s2_b64 = _make_row(3, 3, 2, cg=64)
grouped_row3x3_b16_q1 = _make_row(3, 3, cg=16, qb=1)
grouped_row3x3_b32_q1 = _make_row(3, 3, cg=32, qb=1)
