"""Dilated convolutions as undilated ones over their dilation phases (space to batch).

A stride-1 convolution with dilation (dh, dw) reads, for output pixel (p, q), the padded
input xpad at (p + r*dh, q + s*dw).  An output pixel with p = a (mod dh) and q = b (mod dw)
reads only input pixels of the same phase (a, b), so with the phase images

    X_ab[i, j] = xpad[a + dh*i, b + dw*j]          (pad.pad_space_to_depth, as_batch)

the convolution is an undilated, unpadded one over each of them:

    y[a + dh*i, b + dw*j] = sum_(c, r, s) w[k, c, r, s] * X_ab[c, i + r, j + s]

The dh*dw phase images of every input image run as one batch through whichever
undilated family serves them best (Winograd, the packed micro-kernels), and
``merge_phases`` interleaves their outputs back, with the residual and activation.

A transposed convolution with stride (sh, sw) splits the same way on the output side:
output row o = a + sh*i (a < sh) receives only the taps r = phi + sh*t with
phi = (a + pt) % sh, so each output phase is an ordinary stride-1 convolution of the
input with the flipped sub-kernel of those taps (functional.conv_transpose2d), and the
same merge interleaves the phases.  Phase images and outputs lie phase by phase:
phase (a, b) of image n is batch entry (a*dw + b)*N + n.
"""
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .epilogue import ZERO, apply_row, apply_row_res
from .nchwc import _ptr
from .pad import _contiguous
from .zmm import _at, _lanes_in, _masked_load_store, _vector_loop

_V = 16


@intrinsic
def interleave_pairs(typingctx, src, e_off, o_off, dst, d_off, n):
    """dst[d_off + 2j] = src[e_off + j] and dst[d_off + 2j + 1] = src[o_off + j] for the
    n elements of dst: per 32 outputs a vector of each source and two shuffles."""
    _contiguous(src, dst)
    sig = types.void(src, types.intp, types.intp, dst, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        sp = _ptr(context, builder, signature.args[0], args[0])
        dp = _ptr(context, builder, signature.args[3], args[3])
        e_off, o_off, d_off, n = args[1], args[2], args[4], args[5]
        intp = n.type
        one, two = ir.Constant(intp, 1), ir.Constant(intp, 2)
        mload, mstore = _masked_load_store(builder, _V)
        align = ir.Constant(ir.IntType(32), 4)
        zero = ir.Constant(ir.VectorType(ir.FloatType(), _V), [0.0] * _V)
        i32 = ir.VectorType(ir.IntType(32), _V)
        lo = ir.Constant(i32, [i // 2 + (_V if i % 2 else 0) for i in range(_V)])
        hi = ir.Constant(i32, [_V // 2 + i // 2 + (_V if i % 2 else 0) for i in range(_V)])
        evens = builder.sdiv(builder.add(n, one), two)
        odds = builder.sdiv(n, two)

        def body(j0, mask):
            e = builder.call(mload, [_at(builder, sp, builder.add(e_off, j0)), align, mask,
                                     zero])
            o = builder.call(mload, [_at(builder, sp, builder.add(o_off, j0)), align,
                                     _lanes_in(builder, j0, odds), zero])
            q0 = builder.mul(j0, two)
            q1 = builder.add(q0, ir.Constant(intp, _V))
            builder.call(mstore, [builder.shuffle_vector(e, o, lo),
                                  _at(builder, dp, builder.add(d_off, q0)), align,
                                  _lanes_in(builder, q0, n)])
            builder.call(mstore, [builder.shuffle_vector(e, o, hi),
                                  _at(builder, dp, builder.add(d_off, q1)), align,
                                  _lanes_in(builder, q1, n)])

        _vector_loop(builder, evens, body, "interleave")
        return context.get_dummy_value()

    return sig, codegen


@njit(parallel=True, cache=True)
def merge_phases(ys, y, dh, dw, act, res, has_res):
    """y[n, k, a + dh*i, b + dw*j] = act(ys[(a*dw + b)*N + n, k, i, j]
    (+ res[n, k, a + dh*i, b + dw*j])) for every pixel of y (N, K, OH, OW); ys
    (dh*dw*N, K, >= ceil(OH/dh), >= ceil(OW/dw)) holds the phases' outputs with their
    bias.  A task per output plane: each output row gathers its dw phase rows (two by
    shuffles at dw == 2, interleave_pairs), then the residual and activation run over
    the whole plane (rows of 28 floats are too short for LLVM's vector loops).  y, ys
    and res C-contiguous."""
    N, K, OH, OW = y.shape
    HS, WS = ys.shape[2], ys.shape[3]
    yf = y.reshape(N * K * OH * OW)
    sf = ys.reshape(ys.shape[0] * K * HS * WS)
    step = N * K * HS * WS  # from phase (a, b) to (a, b + 1)
    for t in prange(N * K):
        n = t // K
        k = t % K
        for p in range(OH):
            a = p % dh
            row0 = (((a * dw * N + n) * K + k) * HS + p // dh) * WS  # phase b's: + b*step
            at = (t * OH + p) * OW
            if dw == 2:
                interleave_pairs(sf, row0, row0 + step, yf, at, OW)
                continue
            for b in range(min(dw, OW)):
                src = sf[row0 + b * step:]
                out = yf[at + b:]
                for j in range((OW - 1 - b) // dw + 1):
                    out[dw * j] = src[j]
        plane = yf[t * OH * OW:(t + 1) * OH * OW]
        if has_res:
            apply_row_res(plane, ZERO, res[n, k].reshape(OH * OW), act)
        elif act:
            apply_row(plane, ZERO, act)
