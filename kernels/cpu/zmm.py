"""A register-blocked fp32 GEMM micro-kernel written in LLVM IR.

    y[y_off + r*ldy + j] = sum_(c < nc) wp[w_off + c*MR + r] * x[x_off + c*ldx + j]
    for r < MR, j < 16*NV (and, with the roles swapped and the epilogue fused,
    ``gemm_tile_t_store``)

Numba's loops cannot keep a tile of accumulators in registers across a
reduction: LLVM sees array stores it must not reorder and spills every partial
sum to memory.  Here the MR x 16*NV tile lives in MR*NV vector registers (16
floats each, zmm on AVX-512) for the whole reduction: per reduction step, NV
vector loads of the right-hand row, MR broadcasts of packed weights, MR*NV
fused multiply-adds -- the GotoBLAS/oneDNN inner kernel.  The weights are
packed as panels (reduction, MR) so the broadcasts walk memory sequentially;
the right-hand side is read with any row stride, so a 1x1 convolution's
input (C, H*W) needs no copy where its rows are 16-float multiples apart
(gemm_block copies the others into an aligned block).  Without AVX-512 the
same tiles run on 8-lane vectors (``VW``): a tile whose accumulators do not
fit AVX2's 16 registers runs its reduction as several register groups over
blocks of steps (``_reduction``), and the transposed tile's store transposes
8 x 8 and avoids masked stores for whole tiles (docs/algorithms.md, "AVX2
machines").
"""
import llvmlite.binding as llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .epilogue import activate

# the vector width the loops run on: 16 lanes (zmm) with AVX-512, 8 (ymm) without; the
# tiles stay 16-lane values, so shapes, packing and planning are the same on both
_FEATURES = llvm.get_host_cpu_features().flatten().split(",")
VW = 16 if "+avx512f" in _FEATURES else 8
HOST_CPU = llvm.get_host_cpu_name()  # LLVM's name for the core ("znver4", "znver5", ...)
REGISTERS = 32 if VW == 16 else 16   # vector registers
GROUP_BLOCK = 64  # reduction steps per block where a tile runs as several register groups

MR = 8      # output rows (channels) per tile
NV = 2      # 16-float vectors per tile row
NR = 16 * NV  # output columns (pixels) per tile


def _register_groups(mr, nb):
    """Split a reduction's mr broadcast rows x nb VW-lane vectors of b into groups whose
    accumulators (rows x vectors), b vectors and one broadcast fit the vector registers
    (``REGISTERS``): [(rows, vectors)], cheapest first by a per-step cycle model (two
    FMAs and three loads a cycle, a 4-cycle FMA latency per accumulator chain, one
    cycle of loop control).  One group -- the whole tile -- where it fits."""
    if mr * nb + nb + 1 <= REGISTERS:
        return [(range(mr), range(nb))]
    best = None
    for gr in range(1, mr + 1):
        for gs in range(1, nb + 1):
            if gr * gs + gs + 1 > REGISTERS:
                continue
            parts = [(range(r0, min(r0 + gr, mr)), range(s0, min(s0 + gs, nb)))
                     for s0 in range(0, nb, gs) for r0 in range(0, mr, gr)]
            cost = sum(max(len(r) * len(v) / 2, (len(r) + len(v)) / 3, 4) + 1 for r, v in parts)
            if best is None or cost < best[0]:
                best = (cost, parts)
    return best[1]


def _reduction(builder, a_ptr, a_off, lda, b_ptr, b_off, ldb, nc, init, mr, nv, a_step=1,
               b_masks=None, prefetch=None, prefetch_lines=None, prefetch_step=None,
               half_last=False):
    """Emit acc[r*nv + v] = init[r*nv + v] + sum_(c < nc) a[a_off + c*lda + r*a_step] *
    b[b_off + c*ldb + 16*v : +16] (r < mr, v < nv) with the mr*nv accumulators in
    registers (a_step a Python int or an IR value); returns the final accumulators (init
    when nc <= 0).  b_masks: per v, the lanes of b to load (the others read as zero and
    touch no memory).  prefetch (an IR value): each step also prefetches
    b[b_off + c*ldb + prefetch + 16*v] (v < prefetch_lines, default nv) into L1.
    half_last (AVX-512): the last vector v = nv - 1 runs on its first 8 lanes only, as
    8-float vectors (b read 8 floats a step; its accumulators come back with lanes
    8-15 zero): a 24-channel tile on a core that splits 16-float FMAs in two halves
    (Zen 4) then costs 3/4 of a 32-channel one.

    The accumulators are 16-lane values to the caller; the loops run on VW-lane
    vectors.  Where the whole tile does not fit the registers (AVX2: 16 of 8 lanes),
    the reduction runs as several loops over nc, each over a group of rows and
    VW-lane slices that does (_register_groups); the other groups' sums wait in
    memory, touched once per loop, not once per step."""
    f32 = ir.FloatType()
    v16 = ir.VectorType(f32, 16)
    vw = ir.VectorType(f32, VW)
    i32 = ir.IntType(32)
    vp = vw.as_pointer()
    intp = a_off.type
    const = lambda v: ir.Constant(intp, v)  # noqa: E731
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vw, [vw, vw, vw]),
                                         f"llvm.fma.v{VW}f32")
    splat = ir.Constant(ir.VectorType(i32, VW), [0] * VW)
    per = 16 // VW  # slices per 16-lane vector
    nb = nv * per

    def lanes(s):
        return ir.Constant(ir.VectorType(i32, VW), list(range(VW * s, VW * s + VW)))

    half_last = half_last and per == 1 and b_masks is None
    v8 = ir.VectorType(f32, 8)
    lo8 = ir.Constant(ir.VectorType(i32, 8), list(range(8)))
    fma8 = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8, v8, v8]),
                                          "llvm.fma.v8f32") if half_last else None

    def is_half(key):
        return half_last and key % nv == nv - 1

    if per == 1:
        sliced = [builder.shuffle_vector(a, ir.Constant(v16, ir.Undefined), lo8)
                  if is_half(i) else a for i, a in enumerate(init)]
        masks = b_masks
    else:
        undef16 = ir.Constant(v16, ir.Undefined)
        sliced = [builder.shuffle_vector(a, undef16, lanes(s)) for a in init for s in range(per)]
        masks = None if b_masks is None else [
            builder.shuffle_vector(m, ir.Constant(m.type, ir.Undefined), lanes(s))
            for m in b_masks for s in range(per)]
    def group_loop(gi, rows, vecs, lo, hi, start):
        """the group's sums over lo <= c < hi, from the values ``start``"""
        pre = builder.block
        loop = builder.append_basic_block("zmm.loop")
        done = builder.append_basic_block("zmm.done")
        builder.cbranch(builder.icmp_signed("<", lo, hi), loop, done)

        builder.position_at_end(loop)
        c = builder.phi(intp)
        c.add_incoming(lo, pre)
        keys = [r * nb + b for r in rows for b in vecs]
        acc = {}
        for k in keys:
            p = builder.phi(v8 if is_half(k) else vw)
            p.add_incoming(start[k], pre)
            acc[k] = p
        brow = builder.add(b_off, builder.mul(c, ldb))
        bptrs = {b: builder.bitcast(builder.gep(b_ptr, [builder.add(brow, const(VW * b))]),
                                    v8.as_pointer() if is_half(b) else vp)
                 for b in vecs}
        if prefetch is not None and gi == 0:
            # prefetch_step (floats per step, default ldb) lets a loop spread its
            # prefetches over a span shorter or longer than the rows it reads
            prow = brow if prefetch_step is None else builder.add(b_off,
                                                                  builder.mul(c, prefetch_step))
            for v in range(nv if prefetch_lines is None else prefetch_lines):
                at = builder.gep(b_ptr, [builder.add(prow, builder.add(prefetch, const(16 * v)))])
                _prefetch(builder, at, 3)
        if masks is None:
            xv = {b: builder.load(bptrs[b], align=4) for b in vecs}
        else:
            mload = _masked_load_store(builder, VW)[0]
            xv = {b: builder.call(mload, [bptrs[b], ir.Constant(i32, 4), masks[b],
                                          ir.Constant(vw, None)]) for b in vecs}
        arow = builder.add(a_off, builder.mul(c, lda))
        new = {}
        for r in rows:
            a_r = const(r * a_step) if isinstance(a_step, int) else builder.mul(a_step, const(r))
            s = builder.load(builder.gep(a_ptr, [builder.add(arow, a_r)]), align=4)
            one = builder.insert_element(ir.Constant(vw, ir.Undefined), s, ir.Constant(i32, 0))
            bc = builder.shuffle_vector(one, ir.Constant(vw, ir.Undefined), splat)
            for b in vecs:
                if is_half(b):
                    bc8 = builder.shuffle_vector(bc, ir.Constant(vw, ir.Undefined), lo8)
                    new[r * nb + b] = builder.call(fma8, [bc8, xv[b], acc[r * nb + b]])
                else:
                    new[r * nb + b] = builder.call(fma, [bc, xv[b], acc[r * nb + b]])
        c1 = builder.add(c, const(1))
        end = builder.block
        c.add_incoming(c1, end)
        for k in keys:
            acc[k].add_incoming(new[k], end)
        builder.cbranch(builder.icmp_signed("<", c1, hi), loop, done)

        builder.position_at_end(done)
        out = list(start)
        for k in keys:  # all phis first: LLVM wants them at the top
            f = builder.phi(v8 if is_half(k) else vw)
            f.add_incoming(start[k], pre)
            f.add_incoming(new[k], end)
            out[k] = f
        return out

    groups = _register_groups(mr, nb)
    if _SLICE_FILTER:  # a tap loop per group of slices (_tap_reduction): these slices only
        out = group_loop(0, range(mr), _SLICE_FILTER[-1], const(0), nc, sliced)
    elif len(groups) == 1:
        out = group_loop(0, *groups[0], const(0), nc, sliced)
    else:
        # blocks of GROUP_BLOCK steps, every group over a block before the next block, so
        # the block's rows of a and b stay in L1 while the groups re-read them
        pre = builder.block
        loop = builder.append_basic_block("zmm.blocks")
        done = builder.append_basic_block("zmm.blocks_done")
        builder.cbranch(builder.icmp_signed(">", nc, const(0)), loop, done)
        builder.position_at_end(loop)
        cb = builder.phi(intp)
        cb.add_incoming(const(0), pre)
        vals = []
        for v in sliced:
            p = builder.phi(vw)
            p.add_incoming(v, pre)
            vals.append(p)
        phis = list(vals)
        nxt = builder.add(cb, const(GROUP_BLOCK))
        hi = builder.select(builder.icmp_signed("<", nxt, nc), nxt, nc)
        for gi, (rows, vecs) in enumerate(groups):
            vals = group_loop(gi, rows, vecs, cb, hi, vals)
        end = builder.block
        cb.add_incoming(nxt, end)
        for p, v in zip(phis, vals):
            p.add_incoming(v, end)
        builder.cbranch(builder.icmp_signed("<", nxt, nc), loop, done)
        builder.position_at_end(done)
        out = []
        for v0, v in zip(sliced, vals):
            f = builder.phi(vw)
            f.add_incoming(v0, pre)
            f.add_incoming(v, end)
            out.append(f)
    whole = ir.Constant(ir.VectorType(i32, 16), list(range(16)))
    if per == 1:
        return [builder.shuffle_vector(a, ir.Constant(v8, None), whole) if is_half(i) else a
                for i, a in enumerate(out)]
    return [builder.shuffle_vector(out[i * 2], out[i * 2 + 1], whole)
            for i in range(len(init))]


def _emit_epilogue(builder, act, final, has_res, width, body):
    """Emit ``body(activate, with_res)`` once per epilogue variant and branch to the one
    that applies: on the last reduction chunk (final != 0) act 1 relu, 2 relu6,
    3 hardswish and the residual when has_res != 0; before it, neither.  Each
    variant is straight-line code with its activation inlined (selecting among all
    of them per vector cost as much as a short reduction).  NaN passes as in
    epilogue.py."""
    intp = act.type
    vec = ir.VectorType(ir.FloatType(), width)
    vconst = lambda v: ir.Constant(vec, [v] * width)  # noqa: E731
    zero = ir.Constant(intp, 0)
    is_final = builder.icmp_signed("!=", final, zero)
    act_f = builder.select(is_final, act, zero)
    res_on = builder.and_(is_final, builder.icmp_signed("!=", has_res, zero))
    code = builder.add(builder.mul(act_f, ir.Constant(intp, 2)), builder.zext(res_on, intp))

    def clamp(v, a, b):
        v = builder.select(builder.fcmp_ordered("<", v, a), a, v)
        return builder.select(builder.fcmp_ordered(">", v, b), b, v)

    acts = [lambda v: v,
            lambda v: clamp(v, vconst(0.0), vconst(float("inf"))),
            lambda v: clamp(v, vconst(0.0), vconst(6.0)),
            lambda v: builder.fmul(builder.fmul(v, clamp(builder.fadd(v, vconst(3.0)), vconst(0.0),
                                                          vconst(6.0))), vconst(1.0 / 6.0))]
    for a in acts[1:3]:
        a.nonneg = True   # relu, relu6: no value below 0 leaves them (NaN passes)
    acts[2].six = True
    done = builder.append_basic_block("epi.done")
    blocks = [builder.append_basic_block(f"epi.{i}") for i in range(8)]
    switch = builder.switch(code, blocks[0])
    for i, block in enumerate(blocks):
        switch.add_case(ir.Constant(intp, i), block)
        builder.position_at_end(block)
        body(acts[i // 2], i % 2 == 1)
        builder.branch(done)
    builder.position_at_end(done)
    return is_final


def _masked_load_store(builder, width):
    """LLVM's masked load and store of ``width`` floats: load(ptr, align, mask, passthru),
    store(value, ptr, align, mask)."""
    vec = ir.VectorType(ir.FloatType(), width)
    vp, i32 = vec.as_pointer(), ir.IntType(32)
    mask = ir.VectorType(ir.IntType(1), width)
    mload = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vec, [vp, i32, mask, vec]),
        f"llvm.masked.load.v{width}f32.p0")
    mstore = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [vec, vp, i32, mask]),
        f"llvm.masked.store.v{width}f32.p0")
    return mload, mstore


def _lanes_in(builder, start, limit, lanes=16):
    """The 16-lane mask of the lanes k < lanes with 0 <= start + k < limit (scalar bit
    math: a kmov, not vector compares)."""
    intp = start.type
    const = lambda v: ir.Constant(intp, v)  # noqa: E731
    lo = builder.select(builder.icmp_signed("<", start, const(0)), builder.neg(start), const(0))
    hi = builder.sub(limit, start)
    hi = builder.select(builder.icmp_signed(">", hi, const(lanes)), const(lanes), hi)
    hi = builder.select(builder.icmp_signed("<", hi, lo), lo, hi)
    bits = builder.sub(builder.shl(const(1), hi), builder.shl(const(1), lo))
    return builder.bitcast(builder.trunc(bits, ir.IntType(16)), ir.VectorType(ir.IntType(1), 16))


def _vector_loop(builder, n, body, name):
    """body(i0, mask) for i0 = 0, 16, 32, ... < n, mask the lanes i0 + i < n (all but
    the last step full): a loop over 16-float vectors with a masked last one."""
    intp = n.type
    const = lambda v: ir.Constant(intp, v)  # noqa: E731
    entry = builder.block
    loop = builder.append_basic_block(f"{name}.loop")
    done = builder.append_basic_block(f"{name}.done")
    builder.cbranch(builder.icmp_signed(">", n, const(0)), loop, done)
    builder.position_at_end(loop)
    i0 = builder.phi(intp)
    i0.add_incoming(const(0), entry)
    body(i0, _lanes_in(builder, i0, n))
    i1 = builder.add(i0, const(16))
    i0.add_incoming(i1, builder.block)
    builder.cbranch(builder.icmp_signed("<", i1, n), loop, done)
    builder.position_at_end(done)


def _at(builder, base, off):
    """base + off as a pointer to 16 floats."""
    vec = ir.VectorType(ir.FloatType(), 16)
    return builder.bitcast(builder.gep(base, [off]), vec.as_pointer())


@intrinsic
def row_sum(typingctx, x, off, n):
    """sum_(i < n) x[off + i] of a float32 array x, in a vectorized sum's order, not a
    loop's: 16 lane sums over whole vectors and a masked last one, then the lanes added
    pairwise.  A Numba loop this short (a 7x7 plane: 49) never reaches LLVM's 64-wide
    vector loop, and without fastmath its scalar adds wait on each other."""
    sig = types.float32(x, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        xp = _data_ptr(context, builder, signature, args, 0)
        off, n = args[1], args[2]
        intp = off.type
        v16 = ir.VectorType(ir.FloatType(), 16)
        zero = ir.Constant(v16, None)
        i, (acc,) = _counted_loop(
            builder, ir.Constant(intp, 0), n, 16, [zero],
            lambda i, accs: [builder.fadd(accs[0], builder.load(
                _at(builder, xp, builder.add(off, i)), align=4))])
        mload, _ = _masked_load_store(builder, 16)
        tail = builder.call(mload, [_at(builder, xp, builder.add(off, i)),
                                    ir.Constant(ir.IntType(32), 4), _lanes_in(builder, i, n),
                                    zero])
        acc = builder.fadd(acc, tail)
        i32 = ir.IntType(32)
        width = 16
        while width > 1:
            width //= 2
            lo = builder.shuffle_vector(acc, acc, ir.Constant(ir.VectorType(i32, width),
                                                              list(range(width))))
            hi = builder.shuffle_vector(acc, acc, ir.Constant(ir.VectorType(i32, width),
                                                              list(range(width, 2 * width))))
            acc = builder.fadd(lo, hi)
        return builder.extract_element(acc, ir.Constant(i32, 0))

    return sig, codegen


def _splat(builder, scalar, width):
    vec = ir.VectorType(scalar.type, width)
    i32 = ir.IntType(32)
    one = builder.insert_element(ir.Constant(vec, ir.Undefined), scalar, ir.Constant(i32, 0))
    return builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined),
                                  ir.Constant(ir.VectorType(i32, width), [0] * width))


def _counted_loop(builder, lo, hi, step, init, body):
    """Emit ``for i = lo; i + step <= hi; i += step: accs = body(i, accs)`` with the
    accumulators in registers; returns (the first i not run, the final accumulators)."""
    intp = lo.type
    pre = builder.block
    loop = builder.append_basic_block("cl.loop")
    done = builder.append_basic_block("cl.done")
    step_c = ir.Constant(intp, step)
    builder.cbranch(builder.icmp_signed("<=", builder.add(lo, step_c), hi), loop, done)
    builder.position_at_end(loop)
    i = builder.phi(intp)
    i.add_incoming(lo, pre)
    accs = []
    for a in init:
        ph = builder.phi(a.type)
        ph.add_incoming(a, pre)
        accs.append(ph)
    new = body(i, accs)
    i_next = builder.add(i, step_c)
    end = builder.block
    i.add_incoming(i_next, end)
    for ph, n in zip(accs, new):
        ph.add_incoming(n, end)
    builder.cbranch(builder.icmp_signed("<=", builder.add(i_next, step_c), hi), loop, done)
    builder.position_at_end(done)
    i_out = builder.phi(intp)
    i_out.add_incoming(lo, pre)
    i_out.add_incoming(i_next, end)
    final = []
    for a, n in zip(init, new):
        ph = builder.phi(a.type)
        ph.add_incoming(a, pre)
        ph.add_incoming(n, end)
        final.append(ph)
    return i_out, final


def _lane_masks(builder, npx, nv):
    """Per 16-lane vector v < nv of a tile, the lanes 16*v + j < npx (i1 x 16)."""
    intp = npx.type
    lanes = ir.Constant(ir.VectorType(intp, 16), list(range(16)))
    return [builder.icmp_signed("<", lanes, _splat(builder, builder.sub(npx, ir.Constant(intp, 16 * v)),
                                                      16)) for v in range(nv)]


def _branch_join(builder, cond, emit, name):
    """Emit ``emit(True)`` where cond holds and ``emit(False)`` where it does not, and
    join: returns the values of the branch taken (emit returns a list of values)."""
    b_yes = builder.append_basic_block(f"{name}.yes")
    b_no = builder.append_basic_block(f"{name}.no")
    b_join = builder.append_basic_block(f"{name}.join")
    builder.cbranch(cond, b_yes, b_no)
    results = []
    for blk, flag in ((b_yes, True), (b_no, False)):
        builder.position_at_end(blk)
        vals = emit(flag)
        results.append((builder.block, vals))
        builder.branch(b_join)
    builder.position_at_end(b_join)
    joined = []
    for i in range(len(results[0][1])):
        ph = builder.phi(results[0][1][i].type)
        for blk, vals in results:
            ph.add_incoming(vals[i], blk)
        joined.append(ph)
    return joined


def _full_or_partial(builder, npx, width, emit):
    """Emit ``emit(partial)`` twice -- for a full tile (npx >= width; plain loads) and
    a partial one (masked loads) -- branch on npx and join: returns the joined values
    (emit returns a list of values)."""
    full = builder.icmp_signed(">=", npx, ir.Constant(npx.type, width))
    return _branch_join(builder, full, lambda is_full: emit(not is_full), "tile")


_SLICE_FILTER = []   # while a short-tap loop is emitted: the slices _reduction computes
SHORT_TAP = 32       # steps a tap up to which AVX2 runs the slice groups outside the taps


def _slice_groups(mr, nb):
    """The tile's VW-lane slices in groups that fit the registers with all mr rows."""
    per = max(1, (REGISTERS - 1) // (mr + 1))
    return [range(s0, min(s0 + per, nb)) for s0 in range(0, nb, per)]


def _tap_reduction(builder, t_ptr, ntaps, init, reduce_tap, tile=None, nc=None):
    """acc = init, then for t < ntaps (>= 1): acc = reduce_tap(toff[t], t, acc), the
    accumulators in registers across taps (an implicit GEMM's (tap, channel)
    reduction); t_ptr: the int64 tap-offset table.

    tile = (mr, nv), the tile's full shape, and nc, the steps of a tap: where the tile
    splits into register groups (AVX2), taps of at most SHORT_TAP steps run one tap
    loop per group of slices (all rows), so a group's sums stay in registers across
    every tap; longer taps split each tap's steps into groups (_reduction), which
    touches the other groups' sums only once per block of steps."""
    intp = ntaps.type

    def body(t, acc):
        return reduce_tap(builder.load(builder.gep(t_ptr, [t])), t, acc)

    def loop(acc):
        return _counted_loop(builder, ir.Constant(intp, 0), ntaps, 1, acc, body)[1]

    if tile is None or VW == 16:
        return loop(init)
    mr, nb = tile[0], tile[1] * 16 // VW
    if len(_register_groups(mr, nb)) == 1:
        return loop(init)

    def emit(short):
        if not short:
            return loop(init)
        acc = init
        for slices in _slice_groups(mr, nb):
            _SLICE_FILTER.append(slices)
            try:
                acc = loop(acc)
            finally:
                _SLICE_FILTER.pop()
        return acc

    short = builder.icmp_signed("<=", nc, ir.Constant(nc.type, SHORT_TAP))
    return _branch_join(builder, short, emit, "taps")


_ZIP_LO = [i // 2 + (i % 2) * 16 for i in range(16)]       # a0 b0 a1 b1 ... a7 b7
_ZIP_HI = [8 + i // 2 + (i % 2) * 16 for i in range(16)]   # a8 b8 ... a15 b15


def _zip_columns(builder, rows):
    """The 16 columns of 8 vectors of 16 lanes (any element type): column l as an 8-lane
    vector of each row's lane l, through three rounds of two-source zips (column pairs
    end in the halves of 8 vectors) -- a register transposition."""
    i32 = ir.IntType(32)
    zip_lo = ir.Constant(ir.VectorType(i32, 16), _ZIP_LO)
    zip_hi = ir.Constant(ir.VectorType(i32, 16), _ZIP_HI)
    halves = [ir.Constant(ir.VectorType(i32, 8), list(range(h * 8, h * 8 + 8))) for h in range(2)]
    for _ in range(3):
        rows = [builder.shuffle_vector(rows[i // 2], rows[i // 2 + 4],
                                       zip_lo if i % 2 == 0 else zip_hi) for i in range(8)]
    undef = ir.Constant(rows[0].type, ir.Undefined)
    return [builder.shuffle_vector(rows[ch // 2], undef, halves[ch % 2]) for ch in range(16)]


def _make_tile(mr, nv, prefetch=False):
    """The tile intrinsic for mr broadcast rows x nv vectors of 16 floats; with prefetch,
    its reduction also prefetches b's rows pf floats to the right (the next tile's)."""
    @intrinsic
    def tile(typingctx, a, a_off, lda, b, b_off, ldb, nc, y, y_off, ldy, accumulate, bias,
             bias_off, act, res, has_res, final, pf):
        """y[o] = v (+ y[o] if accumulate), v = sum_(c < nc) a[a_off + c*lda + r] *
        b[b_off + c*ldb + j], o = y_off + r*ldy + j, for r < mr, j < 16*nv: a's values
        are broadcast, b's rows are vectors.  With final != 0 the epilogue is fused:
        y[o] = act(v + bias[bias_off + r] (+ res[o] if has_res)), res in y's layout."""
        sig = types.void(a, types.intp, types.intp, b, types.intp, types.intp, types.intp, y,
                         types.intp, types.intp, types.intp, bias, types.intp, types.intp, res,
                         types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            f32 = ir.FloatType()
            v16 = ir.VectorType(f32, 16)
            fp = f32.as_pointer()
            vp = v16.as_pointer()

            def ptr(i):
                arr = context.make_array(signature.args[i])(context, builder, args[i])
                return builder.bitcast(arr.data, fp)

            a_ptr, b_ptr, y_ptr, bias_ptr, r_ptr = ptr(0), ptr(3), ptr(7), ptr(11), ptr(14)
            (a_off, lda, b_off, ldb, nc, y_off, ldy, accumulate, bias_off, act, has_res,
             final) = (args[1], args[2], args[4], args[5], args[6], args[8], args[9], args[10],
                       args[12], args[13], args[15], args[16])
            intp = a_off.type
            zero = ir.Constant(v16, None)
            const = lambda v: ir.Constant(intp, v)  # noqa: E731

            # the tile starts from zero, or from y's current values when accumulating
            # (a reduction split into cache-sized chunks)
            entry = builder.block
            load_y = builder.append_basic_block("zmm.load")
            start = builder.append_basic_block("zmm.start")
            builder.cbranch(builder.icmp_signed("!=", accumulate, const(0)), load_y, start)
            builder.position_at_end(load_y)
            loaded = []
            for r in range(mr):
                yrow = builder.add(y_off, builder.mul(ldy, const(r)))
                for v in range(nv):
                    src = builder.bitcast(builder.gep(y_ptr, [builder.add(yrow, const(16 * v))]), vp)
                    loaded.append(builder.load(src, align=4))
            builder.branch(start)
            builder.position_at_end(start)
            init = []
            for i in range(mr * nv):
                f = builder.phi(v16)
                f.add_incoming(zero, entry)
                f.add_incoming(loaded[i], load_y)
                init.append(f)

            final_acc = _reduction(builder, a_ptr, a_off, lda, b_ptr, b_off, ldb, nc, init, mr,
                                   nv, prefetch=args[17] if prefetch else None)
            is_final = builder.icmp_signed("!=", final, const(0))
            bvecs = []
            for r in range(mr):
                # bias[bias_off + r] only on the final chunk (row r may not exist before)
                bidx = builder.select(is_final, builder.add(bias_off, const(r)), const(0))
                bk = builder.select(is_final, builder.load(builder.gep(bias_ptr, [bidx])),
                                    ir.Constant(f32, 0.0))
                bvecs.append(_splat(builder, bk, 16))

            def stores(activate, with_res):
                for r in range(mr):
                    yrow = builder.add(y_off, builder.mul(ldy, const(r)))
                    for v in range(nv):
                        o = builder.add(yrow, const(16 * v))
                        val = builder.fadd(final_acc[r * nv + v], bvecs[r])
                        if with_res:
                            rp = builder.bitcast(builder.gep(r_ptr, [o]), vp)
                            val = builder.fadd(val, builder.load(rp, align=4))
                        dst = builder.bitcast(builder.gep(y_ptr, [o]), vp)
                        builder.store(activate(val), dst, align=4)

            _emit_epilogue(builder, act, final, has_res, 16, stores)
            return context.get_dummy_value()

        return sig, codegen

    return tile


gemm_tile = _make_tile(MR, NV)      # MR channels x NR pixels: weights broadcast
gemm_tile_pf = _make_tile(MR, NV, prefetch=True)  # the same, prefetching the next tile's input
MP = 7                               # pixels per transposed tile (7 divides 7x7 .. 112x112 maps)


def _bias_start(builder, b_ptr, b_off, nr, final, nv):
    """The channel-vectorized tile's starting accumulators (MP pixels x 16*nv channels):
    on the last reduction chunk (final != 0) each pixel's vectors start from the bias of
    its channels, bias[b_off + r] (r < nr: the other lanes, and every lane before the
    last chunk, start from 0), so the store adds no bias."""
    f32, i32 = ir.FloatType(), ir.IntType(32)
    v16 = ir.VectorType(f32, 16)
    intp = b_off.type
    mload = _masked_load_store(builder, 16)[0]
    on = builder.icmp_signed("!=", final, ir.Constant(intp, 0))
    starts = []
    for v in range(nv):
        lanes = _lanes_in(builder, ir.Constant(intp, 16 * v), nr)
        mask = builder.select(on, lanes, ir.Constant(lanes.type, [0] * 16))
        at = builder.bitcast(builder.gep(b_ptr, [builder.add(b_off, ir.Constant(intp, 16 * v))]),
                             v16.as_pointer())
        starts.append(builder.call(mload, [at, ir.Constant(i32, 4), mask, ir.Constant(v16, None)]))
    return [starts[v] for _ in range(MP) for v in range(nv)]


def _start_t(context, builder, signature, args, first, nv):
    """_bias_start for a tile that _store_t stores (its arguments from index ``first``)."""
    b_ptr = _data_ptr(context, builder, signature, args, first + 5)
    return _bias_start(builder, b_ptr, args[first + 6], args[first + 3], args[first + 11], nv)


def _store_t(context, builder, signature, args, accs, first):
    """The transposed tile's store (gemm_tile_t_store's docstring), its arguments from
    index ``first`` on: y, y_off, ldy, nr, npx, bias, b_off, act, res, has_res,
    accumulate, final; accs started from _start_t (the bias on the last chunk)."""
    f32 = ir.FloatType()
    v16 = ir.VectorType(f32, 16)
    v8 = ir.VectorType(f32, 8)
    i1, i32 = ir.IntType(1), ir.IntType(32)
    m8 = ir.VectorType(i1, 8)
    fp = f32.as_pointer()

    def ptr(i):
        arr = context.make_array(signature.args[i])(context, builder, args[i])
        return builder.bitcast(arr.data, fp)

    y_ptr, r_ptr = ptr(first), ptr(first + 8)
    (y_off, ldy, nr, npx, act, has_res, accumulate, final) = (
        args[first + 1], args[first + 2], args[first + 3], args[first + 4], args[first + 7],
        args[first + 9], args[first + 10], args[first + 11])
    intp = y_off.type
    const = lambda v: ir.Constant(intp, v)  # noqa: E731
    vconst = lambda v: ir.Constant(v8, [v] * 8)  # noqa: E731
    zero16 = ir.Constant(v16, None)

    vp8 = v8.as_pointer()
    mload, mstore = _masked_load_store(builder, 8)
    align = ir.Constant(i32, 4)
    lanes = ir.Constant(ir.VectorType(intp, 8), list(range(8)))
    px_mask = builder.icmp_signed("<", lanes, _splat(builder, npx, 8))
    no_lanes = ir.Constant(m8, [0] * 8)

    # channel r's MP pixels as an 8-vector (lane 7 is the zero row) and its mask: 16
    # channels at a time, through the zip transposition (the bias is already in the
    # accumulators: _bias_start)
    cols = []
    nv = len(accs) // MP
    for v in range(nv):
        rows = [accs[p * nv + v] for p in range(MP)] + [zero16] * (8 - MP)
        for ch, val in enumerate(_columns(builder, rows)):
            r = 16 * v + ch
            mask = builder.select(builder.icmp_signed("<", const(r), nr), px_mask, no_lanes)
            o = builder.add(y_off, builder.mul(const(r), ldy))
            cols.append((val, mask, o, builder.bitcast(builder.gep(y_ptr, [o]), vp8)))

    # a whole tile (all MP pixels of every channel) on AVX2 stores each channel's
    # pixels as 4 + 2 + 1 plain stores: its masked stores are slow there
    whole = None
    if VW == 8:
        whole = builder.and_(builder.icmp_signed("==", npx, const(MP)),
                             builder.icmp_signed(">=", nr, const(len(cols))))

    def finish(chans):
        def stores(activate, with_res):
            def emit(plain):
                for val, mask, o, yp in chans:
                    if with_res:
                        rp = builder.bitcast(builder.gep(r_ptr, [o]), vp8)
                        val = builder.fadd(val, builder.call(mload, [rp, align, mask,
                                                                     vconst(0.0)]))
                    if plain:
                        _store_lanes7(builder, activate(val), builder.gep(y_ptr, [o]))
                    else:
                        builder.call(mstore, [activate(val), yp, align, mask])

            if whole is None:
                emit(False)
                return
            with builder.if_else(whole) as (then, otherwise):
                with then:
                    emit(True)
                with otherwise:
                    emit(False)

        _emit_epilogue(builder, act, final, has_res, 8, stores)

    _after_partial_sums(builder, accumulate, cols, mload, finish)


def _after_partial_sums(builder, accumulate, items, mload, finish):
    """finish(items) on a reduction's first chunk; on a later one (accumulate != 0)
    finish(items) with each item's value plus y's partial sums, masked-loaded through
    mload at the item's mask (items[i][1]) and pointer (items[i][-1]): the first chunk
    reads nothing of y."""
    zero = ir.Constant(items[0][0].type, None)
    align = ir.Constant(ir.IntType(32), 4)
    acc_on = builder.icmp_signed("!=", accumulate, ir.Constant(accumulate.type, 0))
    with builder.if_else(acc_on) as (then, otherwise):
        with then:
            finish([(builder.fadd(it[0], builder.call(mload, [it[-1], align, it[1], zero])),)
                    + tuple(it[1:]) for it in items])
        with otherwise:
            finish(items)


def _store_lanes7(builder, val, at):
    """Store lanes 0..6 of an 8-float vector at ``at`` (a float pointer) as 4 + 2 + 1
    plain stores."""
    f32, i32 = ir.FloatType(), ir.IntType(32)
    undef = ir.Constant(val.type, ir.Undefined)
    idx = lambda v: ir.Constant(ir.IntType(64), v)  # noqa: E731
    for lo, n in ((0, 4), (4, 2)):
        part = builder.shuffle_vector(val, undef, ir.Constant(ir.VectorType(i32, n),
                                                              list(range(lo, lo + n))))
        dst = builder.bitcast(builder.gep(at, [idx(lo)]), ir.VectorType(f32, n).as_pointer())
        builder.store(part, dst, align=4)
    builder.store(builder.extract_element(val, ir.Constant(i32, 6)),
                  builder.gep(at, [idx(6)]), align=4)


# the 8 x 8 transposition in AVX's own shuffles: unpack lo/hi, shufps 0x44/0xee, and the
# 128-bit halves (vperm2f128 0x20/0x31)
_UNPACK = ([0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15])
_SHUFPS = ([0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15])
_HALVES = ([0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15])


def _transpose8(builder, rows):
    """Columns of 8 vectors of 8 floats: column l holds each row's lane l."""
    i32 = ir.IntType(32)
    sh = lambda a, b, m: builder.shuffle_vector(  # noqa: E731
        a, b, ir.Constant(ir.VectorType(i32, 8), m))
    t = [sh(rows[2 * (i // 2)], rows[2 * (i // 2) + 1], _UNPACK[i % 2]) for i in range(8)]
    # t[2q + h]: rows 2q, 2q+1 interleaved, lanes (2h, 2h+1) and (2h+4, 2h+5)
    u = [None] * 8
    for blk in range(2):          # rows 0-3, rows 4-7
        for h in range(2):        # unpack lo / hi
            for m in range(2):    # shufps 0x44 / 0xee
                u[4 * blk + 2 * h + m] = sh(t[4 * blk + h], t[4 * blk + 2 + h], _SHUFPS[m])
    # u[4*blk + l]: rows 4*blk..4*blk+3 of lanes l (low half) and l+4 (high half)
    return [sh(u[lane % 4], u[4 + lane % 4], _HALVES[lane // 4]) for lane in range(8)]


def _columns(builder, rows):
    """_zip_columns on AVX-512; on AVX2 the same 16 columns through two 8 x 8
    transpositions of the rows' 8-lane halves."""
    if VW == 16:
        return _zip_columns(builder, rows)
    i32 = ir.IntType(32)
    out = []
    for h in range(2):
        half = ir.Constant(ir.VectorType(i32, 8), list(range(8 * h, 8 * h + 8)))
        undef = ir.Constant(rows[0].type, ir.Undefined)
        out += _transpose8(builder, [builder.shuffle_vector(r, undef, half) for r in rows])
    return out


def _data_ptr(context, builder, signature, args, i, ty=None):
    arr = context.make_array(signature.args[i])(context, builder, args[i])
    return builder.bitcast(arr.data, (ty or ir.FloatType()).as_pointer())


def _prefetch(builder, ptr, locality):
    """llvm.prefetch of the line at ptr: a read, into the caches ``locality`` names (3 all
    levels, 2 L2 and out), data cache."""
    i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch")
    builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, locality),
                      ir.Constant(i32, 1)])


@intrinsic
def prefetch_line(typingctx, x, i):
    """Prefetch the cache line holding x[i] (float32) into L2 (llvm.prefetch, read,
    locality 2); no load, no fault on any address."""
    sig = types.void(x, i)

    def codegen(context, builder, signature, args):
        _prefetch(builder, builder.gep(_data_ptr(context, builder, signature, args, 0),
                                       [args[1]]), 2)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def gemm_tile_t_store(typingctx, x, x_off, ldx, wp, w_off, nc, y, y_off, ldy, nr, npx, bias,
                      b_off, act, res, has_res, accumulate, final, pf, pstep):
    """The transposed tile (MP pixels x NR channels: pixels broadcast, weights as vectors) stored
    straight into y's channel rows, epilogue fused:

        v = sum_(c < nc) x[x_off + c*ldx + j] * wp[w_off + c*NR + r]  (+ y[o] if accumulate)
        if final: v = act(v + bias[b_off + r] (+ res[o] if has_res))
        y[o] = v,   o = y_off + r*ldy + j,   for r < nr <= NR, j < npx <= MP

    (x must be readable for all MP pixels of a step; res has y's layout.)  The
    accumulators are moved to channel rows in registers: per 16 channels, the MP
    pixel vectors (one zero row added) go through three rounds of two-source
    shuffles, leaving channel pairs in the halves of 8 vectors; each channel's MP
    pixels then take one masked load / store (act: 0 none, 1 relu, 2 relu6,
    3 hardswish; NaN passes as in epilogue.py).  Rows r >= nr and pixels j >= npx
    are never read or written, so no scratch tile and no separate epilogue pass
    (at 14x14 these had cost as much as a third of a 1x1 layer's time).

    Each step also prefetches the cache line wp[w_off + c*NR + pf] (pf = 0: the line it
    reads anyway), so a tile can fetch another panel's weights ahead of its use.
    """
    sig = types.void(x, types.intp, types.intp, wp, types.intp, types.intp, y, types.intp,
                     types.intp, types.intp, types.intp, bias, types.intp, types.intp, res,
                     types.intp, types.intp, types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        x_ptr = _data_ptr(context, builder, signature, args, 0)
        w_ptr = _data_ptr(context, builder, signature, args, 3)
        x_off, ldx, w_off, nc = args[1], args[2], args[4], args[5]
        accs = _reduction(builder, x_ptr, x_off, ldx, w_ptr, w_off, ir.Constant(x_off.type, NR),
                          nc, _start_t(context, builder, signature, args, 6, NV), MP, NV,
                          prefetch=args[18], prefetch_lines=1, prefetch_step=args[19])
        _store_t(context, builder, signature, args, accs, 6)
        return context.get_dummy_value()

    return sig, codegen


def _taps_codegen(a_step, nv, edges, prefetch=False, half=False):
    """Codegen of gemm_tile_t_taps (``edges`` False) and gemm_tile_t_taps_edges (True: a
    tcode argument after toff, every index after it one further); ``prefetch``: two more
    arguments at the end, pf and pstep: step g of the whole reduction (tap t, step c,
    g = t*nc + c) also prefetches the line at wp[w_off + pf + g*pstep]; ``half``: the last
    16 channels on their first 8 lanes only (_reduction's half_last)."""
    e = 1 if edges else 0

    def codegen(context, builder, signature, args):
        x_ptr = _data_ptr(context, builder, signature, args, 0)
        t_ptr = _data_ptr(context, builder, signature, args, 3, ir.IntType(64))
        w_ptr = _data_ptr(context, builder, signature, args, 5 + e)
        c_ptr = _data_ptr(context, builder, signature, args, 4, ir.IntType(64)) if edges else None
        x_off, ldx, ntaps, w_off, nc = args[1], args[2], args[4 + e], args[6 + e], args[7 + e]
        intp = x_off.type
        v16 = ir.VectorType(ir.FloatType(), 16)
        nr_c = ir.Constant(intp, NR)

        pf_args = {}

        def reduce(xo, wo, acc, npix):
            return _reduction(builder, x_ptr, xo, ldx, w_ptr, wo, nr_c, nc, acc, npix, nv,
                              a_step, half_last=half, **pf_args)

        def reduce_tap(toff, t, acc):
            tnc = builder.mul(t, nc)
            wo = builder.add(w_off, builder.mul(tnc, nr_c))
            if prefetch:  # _reduction prefetches at wo + c*pstep + (this offset)
                pf, pstep = args[20 + e], args[21 + e]
                pf_args.update(prefetch=builder.add(pf, builder.mul(tnc, builder.sub(pstep, nr_c))),
                               prefetch_step=pstep, prefetch_lines=1)
            xo = builder.add(x_off, toff)
            if not edges:
                return reduce(xo, wo, acc, MP)
            code = builder.load(builder.gep(c_ptr, [t]))
            merge = builder.append_basic_block("edge.merge")
            ways = [builder.append_basic_block(f"edge.{kind}") for kind in range(3)]
            sw = builder.switch(code, ways[0])
            sw.add_case(ir.Constant(code.type, 1), ways[1])
            sw.add_case(ir.Constant(code.type, 2), ways[2])
            outs = []
            for kind, bb in enumerate(ways):
                builder.position_at_end(bb)
                if kind == 0:
                    new = reduce(xo, wo, acc, MP)
                elif kind == 1:  # pixel 0 reads padding only
                    new = acc[:nv] + reduce(builder.add(xo, ir.Constant(intp, a_step)), wo,
                                            acc[nv:], MP - 1)
                else:  # pixel MP-1 reads padding only
                    new = reduce(xo, wo, acc[:-nv], MP - 1) + acc[-nv:]
                outs.append((builder.block, new))
                builder.branch(merge)
            builder.position_at_end(merge)
            res = []
            for i in range(len(acc)):
                ph = builder.phi(v16)
                for blk, new in outs:
                    ph.add_incoming(new[i], blk)
                res.append(ph)
            return res

        new = _tap_reduction(builder, t_ptr, ntaps,
                             _start_t(context, builder, signature, args, 8 + e, nv),
                             reduce_tap, (MP, nv), nc)
        _store_t(context, builder, signature, args, new, 8 + e)
        return context.get_dummy_value()

    return codegen


def _make_taps(a_step, nv=NV, prefetch=False, half=False):
    """gemm_tile_t_taps reading pixel j of a step at ``a_step * j``, over 16*nv channels
    (the weight panels stay NR wide: nv=1 reads a panel's first 16 columns); with
    ``prefetch``, two more arguments pf and pstep; ``half``, channels 16-23 of the panel
    only on 8-float vectors (_taps_codegen)."""
    if prefetch:
        @intrinsic
        def taps_pf(typingctx, x, x_off, ldx, toff, ntaps, wp, w_off, nc, y, y_off, ldy, nr, npx,
                    bias, b_off, act, res, has_res, accumulate, final, pf, pstep):
            """gemm_tile_t_taps, each step g of its reduction also prefetching the line at
            wp[w_off + pf + g*pstep] (another panel's weights, ahead of their use)."""
            sig = types.void(x, types.intp, types.intp, toff, types.intp, wp, types.intp,
                             types.intp, y, types.intp, types.intp, types.intp, types.intp, bias,
                             types.intp, types.intp, res, types.intp, types.intp, types.intp,
                             types.intp, types.intp)
            return sig, _taps_codegen(a_step, nv, False, True)
        return taps_pf

    @intrinsic
    def taps(typingctx, x, x_off, ldx, toff, ntaps, wp, w_off, nc, y, y_off, ldy, nr, npx, bias,
             b_off, act, res, has_res, accumulate, final):
        """gemm_tile_t_store with the reduction running over ntaps taps of nc steps each, the
        accumulators kept in registers throughout (an implicit GEMM's whole (tap, channel)
        reduction in one tile, one store):

            v = sum_(t < ntaps) sum_(c < nc) x[x_off + toff[t] + c*ldx + a_step*j]
                                             * wp[w_off + (t*nc + c)*NR + r]

        then the store and epilogue as gemm_tile_t_store (ntaps >= 1; toff int64)."""
        sig = types.void(x, types.intp, types.intp, toff, types.intp, wp, types.intp,
                         types.intp, y, types.intp, types.intp, types.intp, types.intp, bias,
                         types.intp, types.intp, res, types.intp, types.intp, types.intp)
        return sig, _taps_codegen(a_step, nv, False, half=half)

    return taps


gemm_tile_t_taps = _make_taps(1)
# the same over a channel-blocked input: pixel j of a step at x[... + 16*j]
gemm_tile_t_taps_c16 = _make_taps(16)
gemm_tile_t_taps_c16_pf = _make_taps(16, prefetch=True)
# ... for a last panel of <= 16 channels (nr <= 16): half the accumulators and FMAs
gemm_tile_t_taps_c16_16 = _make_taps(16, 1)
# ... for a last panel of 17-24 channels: the second 16 on 8-float vectors
gemm_tile_t_taps_c16_24 = _make_taps(16, half=True)


def _taps_edges(prefetch):
    """gemm_tile_t_taps_edges, or with ``prefetch`` its _pf variant (two more arguments)."""
    if prefetch:
        @intrinsic
        def taps_edges_pf(typingctx, x, x_off, ldx, toff, tcode, ntaps, wp, w_off, nc, y,
                          y_off, ldy, nr, npx, bias, b_off, act, res, has_res, accumulate,
                          final, pf, pstep):
            """gemm_tile_t_taps_edges, each step g of its reduction (tap t, step c,
            g = t*nc + c) also prefetching the line at wp[w_off + pf + g*pstep] (another
            block's weights, ahead of their use)."""
            sig = types.void(x, types.intp, types.intp, toff, tcode, types.intp, wp,
                             types.intp, types.intp, y, types.intp, types.intp, types.intp,
                             types.intp, bias, types.intp, types.intp, res, types.intp,
                             types.intp, types.intp, types.intp, types.intp)
            return sig, _taps_codegen(1, NV, True, True)
        return taps_edges_pf

    @intrinsic
    def taps_edges(typingctx, x, x_off, ldx, toff, tcode, ntaps, wp, w_off, nc, y, y_off, ldy,
                   nr, npx, bias, b_off, act, res, has_res, accumulate, final):
        """gemm_tile_t_taps (pixel j of a step at x[... + j]) where a tap's first or last
        pixel may read only padding: tap t skips the products of pixel 0 when tcode[t] == 1,
        of pixel MP-1 when tcode[t] == 2 (those pixels' sums go on without the tap), and
        runs all MP pixels otherwise (tcode int64, one code per tap like toff).  A 3x3 conv
        with padding 1 has one such pixel in every tap of its left and right columns at a
        row's ends: on 7-pixel rows (7x7 maps) 2 of the 21 (pixel, column tap) pairs."""
        sig = types.void(x, types.intp, types.intp, toff, tcode, types.intp, wp, types.intp,
                         types.intp, y, types.intp, types.intp, types.intp, types.intp, bias,
                         types.intp, types.intp, res, types.intp, types.intp, types.intp)
        return sig, _taps_codegen(1, NV, True)
    return taps_edges


gemm_tile_t_taps_edges = _taps_edges(False)
gemm_tile_t_taps_edges_pf = _taps_edges(True)


def _store_blocked(builder, accs, y_ptr, y_off, bstride, nr, npx, act, accumulate, final):
    """The channel-vectorized tile's accumulators (MP pixels x 16*nv channels, started from
    _bias_start) stored into a channel-blocked output with the epilogue
    (gemm_tile_t_blocked's docstring)."""
    v16 = ir.VectorType(ir.FloatType(), 16)
    i1, i32 = ir.IntType(1), ir.IntType(32)
    m16 = ir.VectorType(i1, 16)
    intp = y_off.type
    const = lambda v: ir.Constant(intp, v)  # noqa: E731
    nv = len(accs) // MP
    mload, mstore = _masked_load_store(builder, 16)
    align = ir.Constant(i32, 4)
    ones, none = ir.Constant(m16, [1] * 16), ir.Constant(m16, [0] * 16)
    items = []
    for v in range(nv):
        block_on = builder.icmp_signed("<", const(16 * v), nr)
        for j in range(MP):
            on = builder.and_(block_on, builder.icmp_signed("<", const(j), npx))
            o = builder.add(y_off, builder.add(builder.mul(const(v), bstride), const(16 * j)))
            items.append((accs[j * nv + v], builder.select(on, ones, none),
                          builder.bitcast(builder.gep(y_ptr, [o]), v16.as_pointer())))

    def finish(items):
        def stores(activate, with_res):
            for val, mask, yp in items:
                builder.call(mstore, [activate(val), yp, align, mask])

        _emit_epilogue(builder, act, final, const(0), 16, stores)

    _after_partial_sums(builder, accumulate, items, mload, finish)


def _tile_t_blocked(prefetch, nv=NV):
    """gemm_tile_t_blocked, or with ``prefetch`` its _pf variant (two more arguments);
    nv=1: the _16 variant, a panel's first 16 channels only (nr <= 16)."""
    def codegen(context, builder, signature, args):
        x_ptr = _data_ptr(context, builder, signature, args, 0)
        w_ptr = _data_ptr(context, builder, signature, args, 3)
        y_ptr = _data_ptr(context, builder, signature, args, 6)
        b_ptr = _data_ptr(context, builder, signature, args, 11)
        (x_off, ldx, w_off, nc, y_off, bstride, nr, npx, b_off, act, accumulate,
         final) = (args[1], args[2], args[4], args[5], args[7], args[8], args[9], args[10],
                   args[12], args[13], args[14], args[15])
        pf = dict(prefetch=args[16], prefetch_lines=1, prefetch_step=args[17]) if prefetch \
            else {}
        accs = _reduction(builder, x_ptr, x_off, ldx, w_ptr, w_off, ir.Constant(x_off.type, NR),
                          nc, _bias_start(builder, b_ptr, b_off, nr, final, nv), MP, nv, **pf)
        _store_blocked(builder, accs, y_ptr, y_off, bstride, nr, npx, act, accumulate, final)
        return context.get_dummy_value()

    if prefetch:
        @intrinsic
        def tile_pf(typingctx, x, x_off, ldx, wp, w_off, nc, y, y_off, bstride, nr, npx, bias,
                    b_off, act, accumulate, final, pf, pstep):
            """gemm_tile_t_blocked, each step c also prefetching the line at
            wp[w_off + pf + c*pstep] (another panel's weights, ahead of their use)."""
            sig = types.void(x, types.intp, types.intp, wp, types.intp, types.intp, y,
                             types.intp, types.intp, types.intp, types.intp, bias, types.intp,
                             types.intp, types.intp, types.intp, types.intp, types.intp)
            return sig, codegen
        return tile_pf

    @intrinsic
    def tile(typingctx, x, x_off, ldx, wp, w_off, nc, y, y_off, bstride, nr, npx, bias, b_off,
             act, accumulate, final):
        """The transposed tile (MP pixels x NR channels) stored into a channel-blocked
        output (NCHW16c: 16 channels of a pixel side by side), no transpose needed:

            v = sum_(c < nc) x[x_off + c*ldx + j] * wp[w_off + c*NR + r]  (+ y[o] if accumulate)
            if final: v = act(v + bias[b_off + r])
            y[o] = v,   o = y_off + (r // 16)*bstride + j*16 + r % 16,   r < nr, j < npx <= MP

        (nr a multiple of 16; x readable for all MP pixels of a step.)  Each pixel's 16
        channels are one accumulator vector: one (masked) vector store each.
        """
        sig = types.void(x, types.intp, types.intp, wp, types.intp, types.intp, y, types.intp,
                         types.intp, types.intp, types.intp, bias, types.intp, types.intp,
                         types.intp, types.intp)
        return sig, codegen
    return tile


gemm_tile_t_blocked = _tile_t_blocked(False)
gemm_tile_t_blocked_pf = _tile_t_blocked(True)
# ... for a last panel of 16 channels (144 = 4 x 32 + 16): half the accumulators and FMAs
gemm_tile_t_blocked_16 = _tile_t_blocked(False, 1)


@intrinsic
def gemm_tile_t_taps_blocked(typingctx, x, x_off, ldx, toff, ntaps, a_step, wp, w_off, nc, y,
                             y_off, bstride, nr, npx, bias, b_off, act):
    """gemm_tile_t_blocked over an implicit GEMM's whole (tap, channel) reduction, pixel j
    of a step at ``a_step * j`` (a strided conv's output pixels in its padded input):

        v = sum_(t < ntaps) sum_(c < nc) x[x_off + toff[t] + c*ldx + a_step*j]
                                         * wp[w_off + (t*nc + c)*NR + r]
        y[o] = act(v + bias[b_off + r]),   o = y_off + (r // 16)*bstride + j*16 + r % 16

    for r < nr (a multiple of 16), j < npx <= MP (x readable for all MP pixels; toff
    int64, ntaps >= 1)."""
    sig = types.void(x, types.intp, types.intp, toff, types.intp, types.intp, wp, types.intp,
                     types.intp, y, types.intp, types.intp, types.intp, types.intp, bias,
                     types.intp, types.intp)

    def codegen(context, builder, signature, args):
        x_ptr = _data_ptr(context, builder, signature, args, 0)
        t_ptr = _data_ptr(context, builder, signature, args, 3, ir.IntType(64))
        w_ptr = _data_ptr(context, builder, signature, args, 6)
        y_ptr = _data_ptr(context, builder, signature, args, 9)
        b_ptr = _data_ptr(context, builder, signature, args, 14)
        (x_off, ldx, ntaps, a_step, w_off, nc, y_off, bstride, nr, npx, b_off, act) = (
            args[1], args[2], args[4], args[5], args[7], args[8], args[10], args[11], args[12],
            args[13], args[15], args[16])
        intp = x_off.type
        nr_c = ir.Constant(intp, NR)

        def reduce_tap(toff, t, acc):
            wo = builder.add(w_off, builder.mul(builder.mul(t, nc), nr_c))
            return _reduction(builder, x_ptr, builder.add(x_off, toff), ldx, w_ptr, wo, nr_c,
                              nc, acc, MP, NV, a_step)

        zero, one = ir.Constant(intp, 0), ir.Constant(intp, 1)
        accs = _tap_reduction(builder, t_ptr, ntaps,
                              _bias_start(builder, b_ptr, b_off, nr, one, NV),
                              reduce_tap, (MP, NV), nc)
        _store_blocked(builder, accs, y_ptr, y_off, bstride, nr, npx, act, zero, one)
        return context.get_dummy_value()

    return sig, codegen


KC = 256    # reduction chunk: an MR x KC weight panel (8 KiB) stays in L1
JB = 256    # column block: a KC x JB block of the right-hand side (256 KiB) stays in L2


@njit(cache=True)
def pack_panels(wmat, groups, width, chunk, out):
    """Pack wmat (K, Cr) for the micro-kernels: out (groups, npg*Cr*width), npg = ceil(Kg/width).

    Each group's output rows form npg panels of ``width`` rows (zero beyond the
    group's rows); the reduction is cut into chunks of ``chunk`` steps, and a
    chunk's panels are stored one after another, each reduction-major:

        out[g, c0*npg*width + p*kc*width + (c - c0)*width + r] = wmat[g*Kg + p*width + r, c]

    for c in the chunk starting at c0 (kc = min(chunk, Cr - c0) steps).  The
    kernels walk a chunk's panels in order, so the weights stream through the
    cache as one sequential read (at 7x7 and 14x14, 1x1 layers are bound by
    reading their weights).  width MR, chunk KC: gemm_block; width NR, chunk
    KC_T: gemm_block_t.
    """
    K, Cr = wmat.shape
    Kg = K // groups
    npg = (Kg + width - 1) // width
    for g in range(groups):
        for c0 in range(0, Cr, chunk):
            kc = min(chunk, Cr - c0)
            for p in range(npg):
                base = c0 * npg * width + p * kc * width
                for c in range(kc):
                    for r in range(width):
                        k = p * width + r
                        out[g, base + c * width + r] = wmat[g * Kg + k, c0 + c] if k < Kg else 0.0


@njit(inline="always")
def gemm_block(wp, w_base, npg, pan0, Cr, x, x_off, ldx, T, y, y_off, ldy, nrows, sc, xp,
               b, b_off, act, res, has_res, prefetch):
    """Y[r, j] = act(sum_(c < Cr) W[r, c] X[c, j] + b[b_off + r] (+ R[r, j])) for r < nrows,
    j < T (R[r, j] = res[y_off + r*ldy + j] when has_res: res has y's layout), where W's
    rows are the panels pan0, pan0 + 1, ... of a group packed by pack_panels
    (width MR, chunk KC) at wp[w_base:], npg panels in the group,
    X[c, j] = x[x_off + c*ldx + j] and Y[r, j] = y[y_off + r*ldy + j]; x, y, wp 1-D.

    Blocking (GotoBLAS order): the reduction in chunks of KC (from the second
    chunk on the tile accumulates in y), the columns in blocks of JB, so the
    X block (KC x JB, 256 KiB) stays in L2 while every MR x KC weight panel
    (8 KiB, L1) sweeps it in NR-column tiles.  X is read in place when ldx and
    x_off are multiples of 16 floats (maps of 28x28, 56x56, 112x112: every row
    then has the same alignment as the array itself); otherwise (7x7 and 14x14
    rows would split most vector loads across two cache lines) each X block is
    first copied, zero-padded to whole tiles, into the thread's 64-byte aligned
    scratch xp (>= KC*JB floats), which every panel then reuses.  In place, the
    last T % NR columns are copied the same way.  Partial row panels and the
    last column tile are computed into sc (MR x NR) and copied out, so nothing
    is written outside the caller's blocks.  The epilogue runs on the last
    reduction chunk, inside the tiles' stores (and after the copy for the
    partial ones), while the tile is in registers or L1.

    prefetch 1 (X read in place, not a tile just built in cache): the first
    row panel's tiles, the first to read each part of X, each prefetch the next tile's
    X rows as they go.  X's rows are one plane apart (a 56x56 map: 12.5 KB), so every
    row of a tile is on another page and the hardware prefetchers, which stay within
    a page, fetch nothing ahead: 1x1 256->64 @ 56x56 ran in 0.62-0.67 ms with the
    input just out of L3, 0.54-0.55 ms with this (docs/algorithms.md).  One tile ahead
    is too late for an input that streams from memory (a batch of 8 such images, 26 MB):
    the first panel then waits on every line, so with prefetch 2 the other panels' tiles
    also prefetch the next column block's X rows into L2, each a share of the rows (1x1
    256->64 @ 56, batch 8: 0.87 of the time; with the input in the caches, batch 1, the
    prefetches cost 6 %, so callers ask for them by the input's size).  0: none.
    """
    copy_all = (ldx % 16 != 0) or (x_off % 16 != 0)
    for c0 in range(0, Cr, KC):
        kc = min(KC, Cr - c0)
        acc = 1 if c0 > 0 else 0
        fin = 1 if c0 + kc >= Cr else 0
        for jb in range(0, T, JB):
            jw = min(JB, T - jb)
            nfull = jw // NR * NR
            # the part copied to xp: everything, or only the ragged tail
            cfrom = 0 if copy_all else nfull
            cw = -(-(jw - cfrom) // NR) * NR
            if cw:
                _copy_padded(x, x_off + c0 * ldx + jb + cfrom, ldx, kc, jw - cfrom, xp, cw)
            # in place from memory: the tiles of the panels after the first fetch the next
            # column block's X rows into L2, a share each (nxt: its lines a row)
            nxt = (min(JB, T - jb - JB) + 15) // 16 if prefetch >= 2 and not copy_all else 0
            tiles = -(-jw // NR)                     # column tiles of a panel in this block
            ntl = (-(-nrows // MR) - 1) * tiles      # ... of all the panels after the first
            for r0 in range(0, nrows, MR):
                wo = w_base + c0 * npg * MR + (pan0 + r0 // MR) * kc * MR
                mr = min(MR, nrows - r0)
                for j0 in range(0, jw, NR):
                    yo = y_off + r0 * ldy + jb + j0
                    nj = min(NR, jw - j0)
                    if nxt > 0 and r0 > 0:
                        u = (r0 // MR - 1) * tiles + j0 // NR
                        po = x_off + jb + JB
                        for c in range(c0 + u * kc // ntl, c0 + (u + 1) * kc // ntl):
                            for v in range(nxt):
                                prefetch_line(x, po + c * ldx + 16 * v)
                    if j0 >= cfrom:  # from the copy
                        if mr == MR and nj == NR:
                            gemm_tile(wp, wo, MR, xp, j0 - cfrom, cw, kc, y, yo, ldy, acc,
                                      b, b_off + r0, act, res, has_res, fin, 0)
                        else:
                            gemm_tile(wp, wo, MR, xp, j0 - cfrom, cw, kc, sc, 0, NR, 0,
                                      b, 0, 0, res, 0, 0, 0)
                            _merge(sc, NR, 1, y, yo, ldy, mr, nj, acc)
                            if fin:
                                _epilogue_region(y, yo, ldy, mr, nj, b, b_off + r0, act, res,
                                                 has_res)
                    else:
                        xo = x_off + c0 * ldx + jb + j0
                        if mr == MR and r0 == 0 and prefetch:
                            gemm_tile_pf(wp, wo, MR, x, xo, ldx, kc, y, yo, ldy, acc,
                                         b, b_off + r0, act, res, has_res, fin, NR)
                        elif mr == MR:
                            gemm_tile(wp, wo, MR, x, xo, ldx, kc, y, yo, ldy, acc,
                                      b, b_off + r0, act, res, has_res, fin, 0)
                        else:
                            gemm_tile(wp, wo, MR, x, xo, ldx, kc, sc, 0, NR, 0,
                                      b, 0, 0, res, 0, 0, 0)
                            _merge(sc, NR, 1, y, yo, ldy, mr, NR, acc)
                            if fin:
                                _epilogue_region(y, yo, ldy, mr, NR, b, b_off + r0, act, res,
                                                 has_res)


@njit(inline="always")
def _epilogue_region(y, yo, ldy, rows, cols, b, b_off, act, res, has_res):
    """y[o] = act(y[o] + b[b_off + r] (+ res[o])), o = yo + r*ldy + j, r < rows, j < cols:
    the epilogue of a partial tile (the full ones have it in their stores)."""
    for r in range(rows):
        base = yo + r * ldy
        bk = b[b_off + r]
        for j in range(cols):
            v = y[base + j] + bk
            if has_res:
                v += res[base + j]
            y[base + j] = activate(v, act)


@njit(inline="always")
def _merge(sc, sr, sj, y, yo, ldy, rows, cols, acc):
    """y[yo + r*ldy + j] (+)= sc[r*sr + j*sj] for r < rows, j < cols: a scratch tile
    (sr, sj = NR, 1) or a transposed one (1, NR) into y's rows."""
    for r in range(rows):
        base = yo + r * ldy
        if acc:
            for j in range(cols):
                y[base + j] += sc[r * sr + j * sj]
        else:
            for j in range(cols):
                y[base + j] = sc[r * sr + j * sj]


@njit(inline="always")
def _copy_padded(x, src, ldx, rows, cols, xp, width):
    """xp[r*width + j] = x[src + r*ldx + j] for j < cols, 0 for cols <= j < width
    (r < rows): a block of X, zero-padded to whole tiles, in the thread's scratch."""
    for r in range(rows):
        s = src + r * ldx
        d = r * width
        for j in range(cols):
            xp[d + j] = x[s + j]
        for j in range(cols, width):
            xp[d + j] = 0.0


KC_T = 1024  # reduction chunk of the transposed kernel: a KC_T x NR weight panel in L2
PF_GROUPS = 6  # pixel groups over which gemm_block_t prefetches a task's next panel


@njit(inline="always")
def tile_t_group(x, x_off, ldx, wp, w_off, nc, y, y_off, ldy, nr, npx, xp, b, b_off, act, res,
                 has_res, acc, fin, pf=0, pstep=NR):
    """gemm_tile_t_store on a group of npx <= MP pixels, x[x_off + c*ldx + j]: read in
    place when the group is whole, else first copied, zero-padded, into xp (>= nc*MP);
    pf, pstep: gemm_tile_t_store's prefetch offset and step."""
    if npx == MP:
        gemm_tile_t_store(x, x_off, ldx, wp, w_off, nc, y, y_off, ldy, nr, MP, b, b_off, act,
                          res, has_res, acc, fin, pf, pstep)
    else:
        _copy_padded(x, x_off, ldx, nc, npx, xp, MP)
        gemm_tile_t_store(xp, 0, MP, wp, w_off, nc, y, y_off, ldy, nr, npx, b, b_off, act,
                          res, has_res, acc, fin, pf, pstep)


@njit(inline="always")
def gemm_block_t(wp, w_base, npg, pan0, Cr, x, x_off, ldx, T, y, y_off, ldy, nrows, xp,
                 b, b_off, act, res, has_res):
    """The product of gemm_block, vectorized over output channels instead of pixels,
    with the epilogue fused:
    Y[r, j] = act(sum_(c < Cr) W[r, c] X[c, j] + b[b_off + r] (+ R[r, j])), W's rows the
    panels pan0, ... packed by pack_panels with width NR and chunk KC_T; X and Y as
    in gemm_block; R[r, j] = res[y_off + r*ldy + j] when has_res (res has y's layout).

    For small maps (7x7: 49 pixels = 1.5 NR-pixel tiles) the pixel-vectorized
    tile wastes a quarter of its lanes; here a tile is MP = 7 pixels (7 divides
    every map from 7x7 to 112x112) x NR channels, each pixel's value broadcast,
    stored into y's channel rows by gemm_tile_t_store (transposed in registers,
    bias, residual and activation on the last reduction chunk); pixel groups
    short of MP are copied, zero-padded, into xp (KC_T x MP) first.

    A panel (kc x NR weights, up to 128 KiB) is read from memory by its first pixel
    group and from L2 by the others, so the groups after the first (up to PF_GROUPS of
    them) prefetch the next panel in equal slices while they compute, a line every
    few steps: at 7x7 and 14x14 a 1x1's weights (1-4 MiB) are the bulk of what it
    reads, and the first group of every panel otherwise waits on them.  (Two groups
    prefetching a line a step each, as before, left 320->1280 @ 7x7 on one thread 8 %
    slower with its weights in L3 and 12 % slower from memory; docs/performance.md.)
    """
    ng = (T + MP - 1) // MP
    for c0 in range(0, Cr, KC_T):
        kc = min(KC_T, Cr - c0)
        acc = 1 if c0 > 0 else 0
        fin = 1 if c0 + kc >= Cr else 0
        for r0 in range(0, nrows, NR):
            wo = w_base + c0 * npg * NR + (pan0 + r0 // NR) * kc * NR
            nr = min(NR, nrows - r0)
            # where the panel this task computes next starts, relative to this one, and
            # its size
            nxt = 0
            span = kc * NR
            if r0 + NR < nrows:
                nxt = kc * NR
            elif c0 + kc < Cr:
                span = min(KC_T, Cr - c0 - kc) * NR
                nxt = w_base + (c0 + kc) * npg * NR + pan0 * span // NR - wo
            # the groups after the first fetch it in equal slices of sl floats, a step
            # prefetching pstep floats on from the step before (a new line every
            # 16 / pstep steps; at most a line a step, so a single prefetching group
            # fetches the first half of a panel)
            npf = min(ng - 1, PF_GROUPS)
            sl = 0
            pstep = NR
            if nxt != 0 and npf > 0:
                sl = (span + npf - 1) // npf
                pstep = min(16, (sl + kc - 1) // kc)
            for gi in range(ng):
                j0 = gi * MP
                pf = 0
                step = NR
                if sl > 0 and 1 <= gi <= npf:
                    pf = nxt + (gi - 1) * sl
                    step = pstep
                tile_t_group(x, x_off + c0 * ldx + j0, ldx, wp, wo, kc, y,
                             y_off + r0 * ldy + j0, ldy, nr, min(MP, T - j0), xp, b, b_off + r0,
                             act, res, has_res, acc, fin, pf, step)


def _make_tile_taps(nv, steps=None):
    """gemm_tile_taps over 16*nv pixels; with ``steps``, for taps of that many channels
    only (its nc argument is ignored): each tap's reduction is then a constant-count
    loop, which LLVM unrolls, where a few-channel tap (a stem's 3) otherwise runs a
    counted loop of 3 steps per tap."""
    @intrinsic
    def gemm_tile_taps(typingctx, x, x_off, ldx, toff, ntaps, wp, w_off, nc, y, y_off, ldy,
                       nr, npx, bias, b_off, act, res, has_res):
        """The pixel-vectorized tile (MR channels x NR pixels: weights broadcast, input rows
        as vectors) over an implicit GEMM's whole (tap, channel) reduction, stored straight
        into y's channel rows with the epilogue (no transposition: the right layout for a
        conv with few input channels, whose channel-vectorized tile would store after a
        handful of steps):

            v = sum_(t < ntaps) sum_(c < nc) wp[w_off + (t*nc + c)*MR + r]
                                             * x[x_off + toff[t] + c*ldx + j]
            y[o] = act(v + bias[b_off + r] (+ res[o])),   o = y_off + r*ldy + j,

        for r < nr <= MR, j < npx <= 16*nv.  A partial tile (npx < 16*nv) loads and stores
        only its npx lanes; rows r >= nr are not stored.  toff int64; act as in epilogue.py."""
        sig = types.void(x, types.intp, types.intp, toff, types.intp, wp, types.intp, types.intp, y,
                         types.intp, types.intp, types.intp, types.intp, bias, types.intp, types.intp,
                         res, types.intp)

        def codegen(context, builder, signature, args):
            f32 = ir.FloatType()
            v16 = ir.VectorType(f32, 16)
            vp = v16.as_pointer()
            i32 = ir.IntType(32)
            x_ptr = _data_ptr(context, builder, signature, args, 0)
            t_ptr = _data_ptr(context, builder, signature, args, 3, ir.IntType(64))
            w_ptr = _data_ptr(context, builder, signature, args, 5)
            y_ptr = _data_ptr(context, builder, signature, args, 8)
            b_ptr = _data_ptr(context, builder, signature, args, 13)
            r_ptr = _data_ptr(context, builder, signature, args, 16)
            (x_off, ldx, ntaps, w_off, nc, y_off, ldy, nr, npx, b_off, act, has_res) = (
                args[1], args[2], args[4], args[6], args[7], args[9], args[10], args[11], args[12],
                args[14], args[15], args[17])
            intp = x_off.type
            const = lambda v: ir.Constant(intp, v)  # noqa: E731
            if steps is not None:
                nc = const(steps)
            zero = ir.Constant(v16, None)
            masks = _lane_masks(builder, npx, nv)

            def emit(partial):
                def reduce_tap(toff, t, acc):
                    wo = builder.add(w_off, builder.mul(builder.mul(t, nc), const(MR)))
                    return _reduction(builder, w_ptr, wo, const(MR), x_ptr,
                                      builder.add(x_off, toff), ldx, nc, acc, MR, nv,
                                      b_masks=masks if partial else None)
                return _tap_reduction(builder, t_ptr, ntaps, [zero] * (MR * nv), reduce_tap,
                                      (MR, nv), nc)

            accs = _full_or_partial(builder, npx, 16 * nv, emit)
            mload, mstore = _masked_load_store(builder, 16)
            align = ir.Constant(i32, 4)
            no_lanes = ir.Constant(ir.VectorType(ir.IntType(1), 16), [0] * 16)
            rows = []
            for r in range(MR):
                inside = builder.icmp_signed("<", const(r), nr)
                bidx = builder.select(inside, builder.add(b_off, const(r)), b_off)
                bk = _splat(builder, builder.load(builder.gep(b_ptr, [bidx])), 16)
                rows.append((inside, bk, builder.add(y_off, builder.mul(ldy, const(r)))))

            def stores(activate, with_res):
                for r, (inside, bk, yrow) in enumerate(rows):
                    for v in range(nv):
                        mask = builder.select(inside, masks[v], no_lanes)
                        o = builder.add(yrow, const(16 * v))
                        val = builder.fadd(accs[r * nv + v], bk)
                        if with_res:
                            rp = builder.bitcast(builder.gep(r_ptr, [o]), vp)
                            val = builder.fadd(val, builder.call(mload, [rp, align, mask, zero]))
                        yp = builder.bitcast(builder.gep(y_ptr, [o]), vp)
                        builder.call(mstore, [activate(val), yp, align, mask])

            _emit_epilogue(builder, act, const(1), has_res, 16, stores)
            return context.get_dummy_value()

        return sig, codegen

    return gemm_tile_taps


gemm_tile_taps = _make_tile_taps(NV)      # MR channels x NR pixels
gemm_tile_taps16 = _make_tile_taps(1)     # MR channels x 16 pixels: a row's short last tile
gemm_tile_taps_c3 = _make_tile_taps(NV, 3)     # the same for taps of 3 channels (RGB stems)
gemm_tile_taps16_c3 = _make_tile_taps(1, 3)
