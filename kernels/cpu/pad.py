"""Zero padding of an NCHW tensor into a caller-owned buffer.

The copies run on 16-float vectors with a masked last one (``copy_run``,
``zero_run``, ``split_pairs``: LLVM IR), not as Numba loops: rows of ResNet's maps
(56, 28, 14 and 7 floats) are shorter than the 64 elements LLVM's vectorized loops
take a step, so those loops ran in their scalar remainders.
"""
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .nchwc import _ptr
from .zmm import _at, _lanes_in, _masked_load_store, _vector_loop

_V = 16
_F32 = ir.FloatType()
_VT = ir.VectorType(_F32, _V)


def _contiguous(*arrays):
    for a in arrays:
        if not (isinstance(a, types.Array) and a.dtype == types.float32 and a.layout == "C"):
            raise TypeError("pad: C-contiguous float32 arrays expected")


@intrinsic
def copy_run(typingctx, src, s_off, dst, d_off, n):
    """dst[d_off + i] = src[s_off + i] for i < n."""
    _contiguous(src, dst)
    sig = types.void(src, types.intp, dst, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        sp = _ptr(context, builder, signature.args[0], args[0])
        dp = _ptr(context, builder, signature.args[2], args[2])
        s_off, d_off, n = args[1], args[3], args[4]
        mload, mstore = _masked_load_store(builder, _V)
        align = ir.Constant(ir.IntType(32), 4)
        zero = ir.Constant(_VT, [0.0] * _V)

        def body(i0, mask):
            v = builder.call(mload, [_at(builder, sp, builder.add(s_off, i0)), align, mask,
                                     zero])
            builder.call(mstore, [v, _at(builder, dp, builder.add(d_off, i0)), align, mask])

        _vector_loop(builder, n, body, "copyrun")
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def zero_run(typingctx, dst, d_off, n):
    """dst[d_off + i] = 0 for i < n."""
    _contiguous(dst)
    sig = types.void(dst, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        dp = _ptr(context, builder, signature.args[0], args[0])
        d_off, n = args[1], args[2]
        mstore = _masked_load_store(builder, _V)[1]
        align = ir.Constant(ir.IntType(32), 4)
        zero = ir.Constant(_VT, [0.0] * _V)
        _vector_loop(builder, n, lambda i0, mask: builder.call(
            mstore, [zero, _at(builder, dp, builder.add(d_off, i0)), align, mask]), "zerorun")
        return context.get_dummy_value()

    return sig, codegen


def _make_pairs(odd):
    """The stride-2 row copy: even columns only, or even and odd columns (odd)."""

    def codegen(context, builder, signature, args):
        sp = _ptr(context, builder, signature.args[0], args[0])
        dp = _ptr(context, builder, signature.args[2], args[2])
        s_off, e_off, n = args[1], args[3], args[-1]
        intp = n.type
        two = ir.Constant(intp, 2)
        mload, mstore = _masked_load_store(builder, _V)
        align = ir.Constant(ir.IntType(32), 4)
        zero = ir.Constant(_VT, [0.0] * _V)
        i32 = ir.IntType(32)
        evens = ir.Constant(ir.VectorType(i32, _V), [2 * i for i in range(_V)])
        odds = ir.Constant(ir.VectorType(i32, _V), [2 * i + 1 for i in range(_V)])
        # the source columns read: 2n of them, or up to the last even one
        span = builder.mul(n, two) if odd else builder.sub(builder.mul(n, two),
                                                            ir.Constant(intp, 1))

        def body(j0, mask):
            c0 = builder.mul(j0, two)  # outputs j0 .. j0 + 15 come from columns c0 .. c0 + 31
            vs = [builder.call(mload, [_at(builder, sp, builder.add(s_off, c)), align,
                                       _lanes_in(builder, c, span), zero])
                  for c in (c0, builder.add(c0, ir.Constant(intp, _V)))]
            builder.call(mstore, [builder.shuffle_vector(vs[0], vs[1], evens),
                                  _at(builder, dp, builder.add(e_off, j0)), align, mask])
            if odd:
                builder.call(mstore, [builder.shuffle_vector(vs[0], vs[1], odds),
                                      _at(builder, dp, builder.add(args[4], j0)), align, mask])

        _vector_loop(builder, n, body, "pairs")
        return context.get_dummy_value()

    return codegen


@intrinsic
def split_pairs(typingctx, src, s_off, dst, e_off, o_off, n):
    """dst[e_off + j] = src[s_off + 2j] and dst[o_off + j] = src[s_off + 2j + 1] for
    j < n: a row's even and odd columns, 16 of each from two vectors by shuffles."""
    _contiguous(src, dst)
    return (types.void(src, types.intp, dst, types.intp, types.intp, types.intp),
            _make_pairs(True))


@intrinsic
def take_evens(typingctx, src, s_off, dst, d_off, n):
    """dst[d_off + j] = src[s_off + 2j] for j < n (reads no column past src[s_off + 2n - 2]):
    a stride-2 gather as two vector loads and a shuffle per 16."""
    _contiguous(src, dst)
    return types.void(src, types.intp, dst, types.intp, types.intp), _make_pairs(False)


@njit(inline="always")
def split_row(xf, s0, W, dst, e0, o0):
    """An input row's even columns to dst[e0 + j], its odd ones to dst[o0 + j]: split_pairs
    and, for an odd W, its last (even) column (xf and dst flat C-contiguous float32)."""
    split_pairs(xf, s0, dst, e0, o0, W // 2)
    if W % 2:
        dst[e0 + W // 2] = xf[s0 + W - 1]


@njit(parallel=True, cache=True)
def pad_nchw(x, xp, pad_top, pad_left):
    """xp[n, c, pad_top + i, pad_left + j] = x[n, c, i, j]; every other element of xp = 0.

    x: (N, C, H, W); xp: (N, C, H + pad_top + pad_bottom, W + pad_left + pad_right),
    both C-contiguous.  A plane is one pass over its padded copy in memory order: the
    zeros up to the first row's data, then per row its W values and the zeros up to the
    next row's data (the right padding and the next row's left padding in one run), the
    last row's run reaching to the end of the plane.
    """
    N, C, H, W = x.shape
    HP, WP = xp.shape[2], xp.shape[3]
    xf = x.reshape(N * C * H * W)
    pf = xp.reshape(N * C * HP * WP)
    for t in prange(N * C):
        s = t * H * W
        d = t * HP * WP
        end = d + HP * WP
        if H == 0 or W == 0:
            zero_run(pf, d, HP * WP)
            continue
        at = d + pad_top * WP + pad_left
        zero_run(pf, d, at - d)
        for i in range(H):
            copy_run(xf, s + i * W, pf, at, W)
            at += W
            gap = WP - W if i < H - 1 else end - at
            if gap <= 2:  # the usual 1 + 1 columns: two stores
                for j in range(gap):
                    pf[at + j] = 0.0
            else:
                zero_run(pf, at, gap)
            at += gap


@njit(parallel=True, cache=True)
def pad_nchw_phased(x, xp, pad_top, pad_left, sw):
    """Zero padding with each row split into its sw column phases:

        xp[n, c, i, ph*WS + j] = xpad[n, c, i, j*sw + ph]    (ph < sw, j < WS)

    where xpad is x zero-padded (pad_top rows above, pad_left columns on the left)
    and WS = xp.shape[3] // sw; positions past the padded width are zero.  A
    stride-sw gather q*sw + s from xpad is then the unit-stride run starting at
    (s % sw)*WS + s // sw (how the strided im2col reads it).
    """
    N, C, H, W = x.shape
    HP = xp.shape[2]
    WS = xp.shape[3] // sw
    if sw == 2:
        # even input columns land in phase pad_left % 2, odd ones in the other, each a
        # unit-stride run: one split_pairs a row (x and xp C-contiguous)
        WP = xp.shape[3]
        xf = x.reshape(N * C * H * W)
        pf = xp.reshape(N * C * HP * WP)
        pe = pad_left % 2
        po = 1 - pe
        e0 = pe * WS + (pad_left - pe) // 2
        o0 = po * WS + (1 + pad_left - po) // 2
        below = max(0, HP - pad_top - H) * WP
        for t in prange(N * C):
            s = t * H * W
            d = t * HP * WP
            zero_run(pf, d, min(pad_top, HP) * WP)
            for i in range(min(H, HP - pad_top)):
                row = d + (pad_top + i) * WP
                zero_run(pf, row, WP)
                split_row(xf, s + i * W, W, pf, row + e0, row + o0)
            zero_run(pf, d + (pad_top + H) * WP, below)
        return
    for t in prange(N * C):
        n = t // C
        c = t % C
        for i in range(HP):
            row = xp[n, c, i]
            for j in range(row.shape[0]):
                row[j] = 0.0
            src = i - pad_top
            if src < 0 or src >= H:
                continue
            xrow = x[n, c, src]
            for ph in range(sw):
                # phase ph holds padded columns j*sw + ph, i.e. input columns
                # j*sw + ph - pad_left, valid for j in [jlo, jhi)
                jlo = max(0, -((ph - pad_left) // sw))
                jhi = min(WS, (W - 1 - ph + pad_left) // sw + 1)
                if jhi <= jlo:
                    continue
                dst = row[ph * WS + jlo:ph * WS + jhi]
                first = jlo * sw + ph - pad_left
                if sw == 2:
                    src2 = xrow[first:]
                    for u in range(jhi - jlo):
                        dst[u] = src2[2 * u]
                else:
                    for u in range(jhi - jlo):
                        dst[u] = xrow[first + u * sw]


@njit(parallel=True, cache=True)
def pad_space_to_depth(x, xs, pad_top, pad_left, sh, sw, as_batch=False):
    """Zero padding with rows and columns split into their sh x sw stride phases:

        xs[n, (c*sh + pr)*sw + pc, i, j] = xpad[n, c, i*sh + pr, j*sw + pc]

    (pr < sh, pc < sw, i < HS, j < WS; positions past the padded input are zero), or
    with as_batch the phases as images, phase by phase, xs[(pr*sw + pc)*N + n, c, i, j]
    (space to batch: a dilated convolution's phases, kernels/cpu/phases.py).
    A stride-(sh, sw) conv's tap (r, s) then reads, for output pixels (p, q), the
    unit-stride plane of phase (r % sh, s % sw) at (p + r // sh, q + s // sw): a
    stride-1 access on a grid of WS columns (how the sparse kernel tiles it).  A phase
    row is its zeros and one strided run of the input row: vector copies at sw 1 and 2
    (copy_run, take_evens: 0.7x the time of the element loop on 2x2/2 96@56), the
    element loop beyond (shuffles of three or four vectors measured no faster there:
    rows of 14-19 floats); x and xs C-contiguous.
    """
    N, C, H, W = x.shape
    HS, WS = xs.shape[2], xs.shape[3]
    xf = x.reshape(N * C * H * W)
    sf = xs.reshape(N * C * sh * sw * HS * WS)
    # at sw == 2 an input row's even and odd columns go to the two phases in one pass
    # (split_row) where neither phase row cuts the input row short
    pairs = sw == 2 and -(-W // 2) + pad_left // 2 <= WS and W // 2 + (pad_left + 1) // 2 <= WS
    pe = pad_left % 2  # the phase of the even input columns
    for t in prange(N * C * sh):
        n = t // (C * sh)
        c = (t // sh) % C
        pr = t % sh
        if pairs:
            p0 = (pr * 2 * N + n) * C + c if as_batch else ((n * C + c) * sh + pr) * 2
            step = N * C * HS * WS if as_batch else HS * WS
            for i in range(HS):
                r0 = (p0 * HS + i) * WS  # phase 0's row; phase 1's at r0 + step
                zero_run(sf, r0, WS)
                zero_run(sf, r0 + step, WS)
                src = i * sh + pr - pad_top
                if src < 0 or src >= H:
                    continue
                s0 = ((n * C + c) * H + src) * W
                split_row(xf, s0, W, sf, r0 + pe * step + pad_left // 2,
                          r0 + (1 - pe) * step + (pad_left + 1) // 2)
            continue
        for pc in range(sw):
            plane = ((pr * sw + pc) * N + n) * C + c if as_batch else \
                ((n * C + c) * sh + pr) * sw + pc
            jlo = min(WS, max(0, -((pc - pad_left) // sw)))
            jhi = max(jlo, min(WS, (W - 1 - pc + pad_left) // sw + 1))
            first = jlo * sw + pc - pad_left
            for i in range(HS):
                row = (plane * HS + i) * WS
                src = i * sh + pr - pad_top
                if src < 0 or src >= H or jhi == jlo:
                    zero_run(sf, row, WS)
                    continue
                zero_run(sf, row, jlo)
                s0 = ((n * C + c) * H + src) * W + first
                if sw == 1:
                    copy_run(xf, s0, sf, row + jlo, jhi - jlo)
                elif sw == 2:
                    take_evens(xf, s0, sf, row + jlo, jhi - jlo)
                else:
                    out = sf[row + jlo:row + jhi]
                    xrow = xf[s0:]
                    for u in range(jhi - jlo):
                        out[u] = xrow[u * sw]
                zero_run(sf, row + jhi, WS - jhi)
