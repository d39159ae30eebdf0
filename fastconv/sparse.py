"""Pruned layers: CSR weights, the sparse kernels, and ``fc.prune``.

``sparse_conv2d`` / ``sparse_linear`` run a layer from its zeros-included dense
weight (the CSR form is built once and cached in ``packed``).  ``prune(model,
amount)`` zeroes the smallest-magnitude weights of every conv (depthwise
excepted: a 3x3 depthwise filter has nine taps to lose) and linear layer,
per layer or globally, and switches each layer to the CSR kernel where the
cost model says it is faster than the best dense kernel for that shape; the
rest keep their dense kernels with the pruned weights.  ``amount=0`` prunes
nothing and only switches layers whose weights are already sparse (a torch
model pruned with ``torch.nn.utils.prune`` imports with its zeros).
"""
import numpy as np

from . import _backend, _checks, _cuda, _runtime, _workspace, planner
from ._algorithms import packed_form, padded_input
from .functional import _bias, _out, _residual, _unbatched, conv_problem
from .graph import Model
from .kernels.cpu import pad as _pad
from .kernels.cpu import sparse as _sparse

# The sparse kernels' rates (SPARSE_GFLOPS, BLOCK_GFLOPS, SPARSE_TILE_S, GATHER_GFLOPS)
# depend on the kind of core and live in planner.RATES with the dense ones.
# input channels per chunk: a tile's input for one chunk (the chunk's channels, every stride
# phase, the rows the taps reach) within this many bytes, so it stays in L1 while every
# output channel's nonzeros of the chunk stream past
SPARSE_CHUNK_BYTES = 16384
# an input larger than planner.STREAMED_BYTES comes from memory rather than the caches: the
# tiled kernels then prefetch each plane's run SPARSE_PREFETCH_TILES tiles ahead
# (Zen 4, 2 threads, 90 %, blocks / CSR, paired in one process: 1x1 256->64 @ 56 batch 8,
# 26 MB, 0.57 / 0.68 of the time; 512->128 @ 28 batch 8, 13 MB, 1.08 / 0.86; 64->256 @ 56
# batch 8, 6.4 MB, 0.91 / 0.98; batch 1, 3.2 MB, 1.04 / 1.06: a cost where the lines are
# in the caches; 3x3 64@56 batch 8 level)
SPARSE_PREFETCH_TILES = 2
# the block sizes sparse_conv2d runs (output channels per block)
BLOCKS = (1, 4)
# ... and at least this many stored blocks of a block row per chunk (fewer chunks where the
# weight is sparser: measured on ResNet-50 layers, 1x1 256-64@56 at 90 % CSR 0.29 ms with
# 16 KiB chunks, 0.215 unchunked; at 50 % 0.77 chunked, 0.99 unchunked)
SPARSE_CHUNK_BLOCKS = 32
# the Winograd tile sizes F(m x m, 3 x 3) of the sparse Winograd kernel (winograd_block_products)
WINOGRAD_M = (2, 4)
# ... F(4x4) chosen only where the batch has at least this many of its tiles: with fewer,
# the transforms' 16-tile vectors run mostly empty and outweigh its fewer products (Zen 4, 2
# threads, filter blocks at 30-70 %, batch 1: 256@14 (16 tiles) F(4x4) 0.67-0.87 ms against
# F(2x2)'s 0.61-0.79, 512@7 (4) 1.08-1.97 against 0.70-1.30; 128@28 (49) 0.26-0.51 against
# 0.33-0.75; batch 8: 256@14 (128) 3.2-4.8 against 3.0-5.5, 512@7 (32) 4.2-5.4 against 4.5-7.3)
WINOGRAD_F4_MIN_TILES = 32
# fc.prune switches a layer to the sparse Winograd kernel only where it is modelled at most
# this fraction of the time of dense and of itself over every filter block
WINOGRAD_PRUNE_GAIN = 0.95


def _grid(prob):
    """(HS, WS): the stride-phase planes' size (kernels/cpu/pad.pad_space_to_depth)."""
    (sh, sw), (pt, pb, pl, pr) = prob.stride, prob.pads
    return -(-(prob.h + pt + pb) // sh), -(-(prob.w + pl + pr) // sw)


def _strided_pointwise(prob):
    """A strided 1x1 conv without padding reads only every sh-th row and sw-th column:
    (the equivalent stride-1 problem on that subsampled input, the subsampling), else
    (None, None)."""
    if prob.r == prob.s == 1 and not any(prob.pads) and prob.stride != (1, 1):
        (sh, sw) = prob.stride
        sub = (slice(None), slice(None), slice(None, sh * (prob.oh - 1) + 1, sh),
               slice(None, sw * (prob.ow - 1) + 1, sw))
        eq = conv_problem((prob.n, prob.c, prob.oh, prob.ow), (prob.k, prob.cg, 1, 1), 1, 0, 1,
                          prob.groups)
        return eq, sub
    return None, None


def _tiling(prob, threads):
    """sparse_conv2d_tiles' (nv, tiles, tgroup, kblock): 64-pixel tiles, but 32 for 1x1
    convs on maps narrower than 28 columns (measured, single-threaded at 90 %: 3x3 on
    14x14 0.68 vs 0.71 ms and on 7x7 0.69 vs 0.76 with 64; 1024-256@14 0.30 vs 0.36 with
    32); about eight tasks per thread, the output channels split where the map has too
    few tiles for that."""
    ws = _grid(prob)[1]
    nv = 4 if prob.ow >= 28 or prob.r * prob.s > 1 else 2
    ntiles = -(-((prob.oh - 1) * ws + prob.ow) // (16 * nv))
    want = 8 * threads
    units = max(1, prob.n) * ntiles
    tgroup = max(1, units // want)
    nkb = 1 if units >= 4 * threads else min(prob.k, -(-4 * threads // units))
    return nv, ntiles, tgroup, -(-prob.k // nkb)


def _chunk(prob, nv, kb=1, per_row=None):
    """Input channels per chunk of sparse_conv2d_tiles' reduction: a tile's input for one
    chunk within SPARSE_CHUNK_BYTES (times kb: a block row reads the input a quarter as
    often per multiply-add), but at least enough channels that a block row has
    SPARSE_CHUNK_BLOCKS stored blocks in each chunk on average (per_row: the weight's
    blocks per block row), since every chunk but the last costs a row its partial sums'
    trip through memory."""
    (sh, sw), (dh, dw) = prob.stride, prob.dilation
    hs, ws = _grid(prob)
    span = 16 * nv + ((prob.r - 1) * dh // sh) * ws + (prob.s - 1) * dw // sw
    per_channel = 4 * sh * sw * min(span, hs * ws)
    chunk = SPARSE_CHUNK_BYTES * kb // per_channel
    if per_row is not None and per_row > 0:
        chunk = max(chunk, int(np.ceil(SPARSE_CHUNK_BLOCKS * prob.c / per_row)))
    return max(1, min(prob.c, chunk))


def _prefetch_distance(prob, nv, nbytes):
    """The tiled kernels' pf: 0 for an input of nbytes within planner.STREAMED_BYTES, else
    the floats from a tile's first position to the input that tile + SPARSE_PREFETCH_TILES
    reads first (its own first run plus the taps' largest shift in the phase planes)."""
    if nbytes <= planner.STREAMED_BYTES:
        return 0
    (sh, sw), (dh, dw) = prob.stride, prob.dilation
    lead = ((prob.r - 1) * dh // sh) * _grid(prob)[1] + (prob.s - 1) * dw // sw
    return SPARSE_PREFETCH_TILES * 16 * nv + lead


def _chunk_pointers(csr, k, c, chunk):
    """(K, nch + 1) int64: row k's nonzeros of input channels [j*chunk, (j+1)*chunk) are
    cptr[k, j] .. cptr[k, j + 1] (the CSR rows are sorted by channel)."""
    indptr, chan = csr[0], csr[1]
    nch = -(-c // chunk)
    rows = np.repeat(np.arange(k), np.diff(indptr))
    counts = np.bincount(rows * nch + chan // chunk, minlength=k * nch).reshape(k, nch)
    cptr = np.empty((k, nch + 1), np.int64)
    cptr[:, 0] = indptr[:-1]
    np.cumsum(counts, axis=1, out=cptr[:, 1:])
    cptr[:, 1:] += indptr[:-1, None]
    return cptr


def csr_conv(w, dilation, groups, kb=1):
    """Block CSR of a (K, Cg, R, S) weight: rows of kb consecutive output channels, one block
    per (row, tap) where any of the row's channels is nonzero: indptr (ceil(K/kb) + 1), the
    block's absolute input channel, r*dh, s*dw, and values (nblocks*kb: block i's at
    [kb*i, kb*i + kb), zeros past K and for the block's zero members).  kb 1 is plain CSR.
    A block never spans two groups (kb > 1 needs K/groups % kb == 0, or groups == 1)."""
    k, cg, r, s = w.shape
    kg = k // groups
    kr = -(-k // kb)
    wm = w.reshape(k, -1)
    if kb > 1:
        wp = np.zeros((kr * kb, wm.shape[1]), np.float32)
        wp[:k] = wm
        wb = wp.reshape(kr, kb, -1)
        rows, cols = np.nonzero(np.any(wb != 0, axis=1))
        vals = np.ascontiguousarray(wb[rows, :, cols]).reshape(-1)
    else:
        rows, cols = np.nonzero(wm)
        vals = wm[rows, cols].astype(np.float32)
    c, rr, ss = np.unravel_index(cols, (cg, r, s))
    chan = ((rows * kb) // kg) * cg + c
    indptr = np.zeros(kr + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=kr), out=indptr[1:])
    return (indptr, chan.astype(np.int64), (rr * dilation[0]).astype(np.int64),
            (ss * dilation[1]).astype(np.int64), vals)


def block_counts(w, groups, kb):
    """(nonzeros, nonzero kb-channel blocks) of a (K, Cg, R, S) weight; the block count is
    None where blocks would span groups."""
    k = w.shape[0]
    nnz = int(np.count_nonzero(w))
    if kb == 1:
        return nnz, nnz
    if groups > 1 and (k // groups) % kb:
        return nnz, None
    kr = -(-k // kb)
    wp = np.zeros((kr * kb, w[0].size), bool)
    wp[:k] = w.reshape(k, -1) != 0
    return nnz, int(np.count_nonzero(wp.reshape(kr, kb, -1).any(axis=1)))


def sparse_cost_terms(prob, nnz, threads):
    """sparse_cost's terms, the model linear in its rates: (fixed seconds, seconds per
    1/rate with the rate in GFLOP/s a thread, seconds per second of tile cost)."""
    copy = planner.PAD_CALL_S if any(prob.pads) or prob.stride != (1, 1) else 0.0
    eq = _strided_pointwise(prob)[0]
    if eq is not None:  # the subsampled input, copied
        copy += eq.n * eq.c * eq.h * eq.w * 4 / (planner.COPY_GBS * 1e9)
        prob = eq
    elif prob.stride != (1, 1):  # the stride phases, written
        hs, ws = _grid(prob)
        copy += prob.n * prob.c * hs * ws * prob.stride[0] * prob.stride[1] * 4 / (
            planner.COPY_GBS * 1e9)
    nv, ntiles, tgroup, kblock = _tiling(prob, threads)
    lanes = max(1, prob.n) * ntiles * 16 * nv
    tasks = max(1, prob.n) * -(-ntiles // tgroup) * -(-prob.k // kblock)
    calls = max(1, prob.n) * ntiles * prob.k
    par = min(threads, tasks)
    return planner.CALL_OVERHEAD_S + copy, 2.0 * nnz * lanes / 1e9 / par, calls / par


def sparse_cost(prob, nnz, threads, kb=1):
    """Modelled seconds of sparse_conv2d: the stored values' multiply-adds (nnz: the
    nonzeros, or with kb-channel blocks the blocks times kb) over every computed tile lane
    (partial tiles and, flat, the padding columns count) at planner.SPARSE_GFLOPS (CSR) or
    BLOCK_GFLOPS (blocks), plus SPARSE_TILE_S per tile call, spread over the tasks'
    threads."""
    fixed, per_rate, per_tile = sparse_cost_terms(prob, nnz, threads)
    rate = planner.SPARSE_GFLOPS if kb == 1 else planner.BLOCK_GFLOPS
    return fixed + per_rate / rate + per_tile * planner.SPARSE_TILE_S


def sparse_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                  activation=None, residual=None, packed=None, layer="sparse_conv2d", out=None,
                  backend=None, block=None, winograd=None):
    """conv2d (same arguments and result) computed from the nonzeros of ``weight`` only.

    block: 1 runs the weight as CSR (one row per output channel), 4 as block CSR (a block
    is one tap of 4 consecutive output channels; zeros inside a kept block are computed);
    None (default) picks the one modelled faster for this weight's zero pattern -- blocks
    where the weight was pruned in blocks (``fc.prune(..., block=4)``), CSR for scattered
    zeros.  winograd: a 3x3 stride-1 undilated ungrouped conv can also run as Winograd
    F(2x2) or F(4x4) whose a*a products skip the blocks of 4 output channels x one input
    channel's whole filter that are all zero (``fc.prune(..., block=4,
    whole_filters=True)`` prunes that way): None (default) where block is None or 4 and
    it is modelled faster, True always (an error where it does not apply; 2 or 4: with
    that tile size; a map so small that taps are left out, below, runs block CSR), False
    never.
    The CPU kernels only: the GPU runs every weight as CSR.  Kernel taps that only ever
    read padding (a 3x3 on a 1x1 map) are left out, as conv2d does."""
    if block is not None and (isinstance(block, bool) or block not in BLOCKS):
        raise ValueError(f"{layer}: block must be one of {BLOCKS} (output channels per "
                         f"block) or None, got {block!r}")
    if not (winograd is None or isinstance(winograd, bool) or winograd in WINOGRAD_M):
        raise ValueError(f"{layer}: winograd must be None, True, False or a tile size in "
                         f"{WINOGRAD_M}, got {winograd!r}")
    if winograd and block == 1:
        raise ValueError(f"{layer}: winograd={winograd!r} runs blocks of 4 output "
                         "channels; block=1 asks for CSR")
    if backend is not None or _backend._backend == "cuda" or _cuda.is_device_array(x):
        if _backend.choose(backend, x, layer) == "cuda":
            return _sparse_gpu(x, weight, bias, stride, padding, dilation, groups, activation,
                               residual, packed, layer)
    x_in = x
    xa, unbatched = _unbatched(_checks.as_float32(x, layer, "input"), layer)
    w = _checks.as_float32(weight, layer, "weight")
    prob = conv_problem(xa.shape, w.shape, stride, padding, dilation, groups, layer)
    b = _bias(bias, prob.k, layer)
    act = _checks.activation_code(activation, layer)
    if winograd:
        why = winograd_serves(prob)
        if why is not None:
            raise ValueError(f"{layer}: winograd={winograd!r}: the sparse Winograd kernel "
                             f"{why}")
    taps = planner.live_taps(prob)
    if taps is not None:  # taps that only ever read padding are left out: the same sums
        r0, r1, s0, s1 = taps
        prob = planner.trimmed(prob, taps)
        w = np.ascontiguousarray(w[:, :, r0:r1, s0:s1])
        if packed is not None:  # the sliced weight's forms apart from the whole one's
            packed = packed.setdefault(("trimmed", taps), {})
        if winograd:   # no longer a 3x3: its blocks on block CSR
            winograd, block = False, 4
    kb, m = _kernel(w, prob, block, winograd, packed, layer)
    shape = (prob.n, prob.k, prob.oh, prob.ow)
    res = _residual(residual, shape, layer, unbatched)
    if out is not None:
        y = _out(out, shape[1:] if unbatched else shape, layer, (xa,))
        y = y[None] if unbatched else y
    else:
        y = np.empty(shape, np.float32)
    if m:  # the Winograd domain's products over the stored filter blocks
        if prob.n:
            with _runtime.kernel_scope(blas=False):
                _winograd_run(prob, xa, w, b, y, act, res, m, packed)
        return _checks.wrap_like(y[0] if unbatched else y, x_in)
    key = "csr" if kb == 1 else f"bsr{kb}"
    csr = None if packed is None else packed.get(key)
    if csr is None:
        csr = csr_conv(w, prob.dilation, prob.groups, kb)
        if packed is not None:
            packed[key] = csr
    has_res = res is not None
    if res is None:
        res = np.zeros((1, 1, 1, 1), np.float32)
    if prob.n:
        eq, sub = _strided_pointwise(prob)
        if eq is not None:  # only every sh-th row and sw-th column is read: copy those
            xa = np.ascontiguousarray(xa[sub])
            prob = eq
        nv, _, tgroup, kblock = _tiling(prob, _runtime.get_num_threads())
        rows = -(-kblock // kb)  # block rows per task
        with _runtime.kernel_scope(blas=False):
            xs = _phase_planes(prob, xa)
            offs = _tap_offsets(csr, prob, packed, layer, kb)
            chunk = _chunk(prob, nv, kb, (len(csr[4]) // kb) / (len(csr[0]) - 1))
            cached = None if packed is None else packed.get("csr_chunks")
            if cached is None or cached[0] != (chunk, prob.c, kb):
                cached = ((chunk, prob.c, kb),
                          _chunk_pointers(csr, len(csr[0]) - 1, prob.c, chunk))
                if packed is not None:
                    packed["csr_chunks"] = cached
            line = _workspace.per_thread("sparse_line", _runtime.max_threads(),
                                         (rows * kb * 16 * nv,))
            run = _sparse.sparse_conv2d_tiles if kb == 1 else _sparse.block_conv2d_tiles
            run(xs, cached[1], offs, csr[4], b, y, act, res, has_res, nv, tgroup, rows, line,
                _prefetch_distance(prob, nv, xs.nbytes))
    return _checks.wrap_like(y[0] if unbatched else y, x_in)


def _kernel(w, prob, block, winograd, packed, layer):
    """(output channels per block, Winograd m or 0) for this weight: ``block`` checked
    (sparse_conv2d checked ``winograd``), or where left None the choice of lower modelled
    cost for the weight's zero pattern, cached in packed ("csr_block": the block size;
    ("winograd", block): m, 0 where the block kernels are modelled faster)."""
    if block is not None and block > 1 and prob.groups > 1 and (prob.k // prob.groups) % block:
        raise ValueError(f"{layer}: block={block} needs each group's output channels "
                         f"({prob.k // prob.groups}) to be a multiple of {block}")
    threads = _runtime.get_num_threads()
    if winograd is True:
        return 4, packed_form(packed, "winograd_m",
                              lambda: winograd_choice(w, prob, threads)[1])
    if winograd:   # a tile size
        return 4, winograd
    kb = block if block is not None else packed_form(
        packed, "csr_block", lambda: best_block(w, prob, threads)[1])
    if kb == 1 or winograd is False:
        return kb, 0

    def choose():
        wino = winograd_choice(w, prob, threads)
        stored = block_counts(w, prob.groups, kb)[1]
        return wino[1] if wino is not None and wino[0] < sparse_cost(
            prob, stored * kb, threads, kb) else 0
    m = packed_form(packed, ("winograd", block), choose)
    return (4, m) if m else (kb, 0)


def best_block(w, prob, threads):
    """(modelled seconds, block size) of the sparse kernel that runs this weight's zero
    pattern fastest: CSR over its nonzeros or block CSR over its nonzero blocks."""
    best = None
    for size in BLOCKS:
        stored = block_counts(w, prob.groups, size)[1]
        if stored is not None:
            cost = sparse_cost(prob, stored * size, threads, size)
            if best is None or cost < best[0]:
                best = (cost, size)
    return best


def winograd_serves(prob):
    """None where the sparse Winograd kernel runs this problem (a 3x3 stride-1 undilated
    ungrouped convolution), else the reason it does not."""
    if (prob.r, prob.s) != (3, 3) or prob.stride != (1, 1) or prob.dilation != (1, 1):
        return (f"needs a 3x3 kernel with stride 1 and dilation 1, got {prob.r}x{prob.s}, "
                f"stride {prob.stride}, dilation {prob.dilation}")
    if prob.groups != 1:
        return f"needs groups=1, got {prob.groups}"
    return None


def filter_blocks(w):
    """(ceil(K/4), Cg) bool: whether the block of 4 consecutive output channels x input
    channel c's whole R x S filter holds a nonzero weight (a block the Winograd domain
    keeps: the transformed filters of an all-zero block are zero)."""
    k, cg = w.shape[:2]
    kr = -(-k // 4)
    nz = np.zeros((kr * 4, cg), bool)
    nz[:k] = (w.reshape(k, cg, -1) != 0).any(axis=2)
    return nz.reshape(kr, 4, cg).any(axis=1)


def _winograd_tiling(tiles, xi, kr, threads):
    """winograd_block_products' (nv, tgroup, kblock) for ``tiles`` Winograd tiles: the tile
    width (16*nv lanes) that leaves the fewest lanes idle (the wider on ties), tasks of
    every block row (xi alone gives 16 or 36 tasks) and about eight tasks a thread."""
    nv = min((4, 2, 1), key=lambda v: -(-tiles // (16 * v)) * 16 * v)
    ntiles = -(-tiles // (16 * nv))
    tgroup = max(1, xi * ntiles // (8 * threads))
    return nv, tgroup, kr


def winograd_sparse_cost(prob, blocks, threads, m):
    """Modelled seconds of the sparse Winograd kernel, F(m x m): the input and output
    transforms as V's and M's bytes, each tile row's tiles padded to 16-tile vectors, at
    planner.TRANSFORM_GBS (they scale little with threads: measured), and the a*a products
    over the ``blocks`` stored filter blocks (4 multiply-adds a tile lane each, at
    planner.BLOCK_GFLOPS, SPARSE_TILE_S a tile call), spread over the tasks' threads."""
    a = m + 2
    xi = a * a
    th, tw = -(-prob.oh // m), -(-prob.ow // m)
    tiles = prob.n * th * tw
    kr = -(-prob.k // 4)
    nv, tgroup, _ = _winograd_tiling(tiles, xi, kr, threads)
    ntiles = -(-tiles // (16 * nv))
    lanes = ntiles * 16 * nv
    transform = 4.0 * xi * (prob.c + prob.k) * prob.n * th * -(-tw // 16) * 16
    products = (2.0 * xi * blocks * 4 * lanes / (planner.BLOCK_GFLOPS * 1e9)
                + xi * ntiles * kr * planner.SPARSE_TILE_S)
    par = max(1, min(threads, xi * -(-ntiles // tgroup)))
    return (3 * planner.CALL_OVERHEAD_S + planner.PAD_CALL_S
            + transform / (planner.TRANSFORM_GBS * 1e9) + products / par)


def winograd_choice(w, prob, threads):
    """(modelled seconds, m) of the faster sparse Winograd tile size for this weight's
    filter blocks, or None where the kernel does not serve the problem."""
    if winograd_serves(prob) is not None:
        return None
    blocks = int(np.count_nonzero(filter_blocks(w)))
    f4 = prob.n * (-(-prob.oh // 4)) * (-(-prob.ow // 4)) >= WINOGRAD_F4_MIN_TILES and \
        prob.cg <= planner.REGISTRY["winograd_f4x4_3x3"].F4_AUTO_MAX_CG
    return min((winograd_sparse_cost(prob, blocks, threads, m), m) for m in WINOGRAD_M
               if m == 2 or f4)


def winograd_blocks(w, m):
    """The sparse Winograd kernel's weights: (indptr over block rows, each stored block's
    input channel, values (a*a, 4 * blocks)): the filter transform U = G g G^T of every
    3x3 filter (planner's winograd_f{m}x{m}_3x3, in float64), and of U the 4-channel
    blocks over input channels that filter_blocks keeps, in CSR order (zeros past K)."""
    k, cg = w.shape[:2]
    kr = -(-k // 4)
    rows, chan = np.nonzero(filter_blocks(w))
    U = planner.REGISTRY[f"winograd_f{m}x{m}_3x3"].pack(np.ascontiguousarray(w))
    up = np.zeros((U.shape[0], kr * 4, cg), np.float32)
    up[:, :k] = U
    # (blocks, xi, 4) -> (xi, blocks * 4)
    vals = up.reshape(U.shape[0], kr, 4, cg)[:, rows, :, chan].transpose(1, 0, 2)
    indptr = np.zeros(kr + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=kr), out=indptr[1:])
    return indptr, chan.astype(np.int64), np.ascontiguousarray(vals.reshape(U.shape[0], -1))


def _winograd_run(prob, xa, w, b, y, act, res, m, packed):
    """y = act(conv(xa, w) + b (+ res)) through the sparse Winograd kernel, F(m x m): the
    dense Winograd's phases (_algorithms.Winograd.phases: the padding to whole tiles, the
    chunks of images, the transforms and the epilogue) with winograd_block_products over
    the stored filter blocks as its products."""
    indptr, chan, vals = packed_form(packed, ("winograd_bsr4", m),
                                     lambda: winograd_blocks(w, m))
    alg = planner.REGISTRY[f"winograd_f{m}x{m}_3x3"]
    xi = alg.a * alg.a
    kr = len(indptr) - 1

    def products(V, M, T):
        nv, tgroup, kblock = _winograd_tiling(T, xi, kr, _runtime.get_num_threads())
        cached = None if packed is None else packed.get("winograd_chunks")
        ckey = (m, T, nv)
        if cached is None or cached[0] != ckey:
            per_row = len(chan) / max(1, kr)
            cw = max(1, min(prob.c, max(SPARSE_CHUNK_BYTES * 4 // (64 * nv),
                                        int(np.ceil(SPARSE_CHUNK_BLOCKS * prob.c / per_row))
                                        if per_row else 1)))
            cached = (ckey, _chunk_pointers((indptr, chan), kr, prob.c, cw),
                      (chan * T).astype(np.int32))
            if packed is not None:
                packed["winograd_chunks"] = cached
        line = _workspace.per_thread("sparse_line", _runtime.max_threads(),
                                     (kblock * 4 * 16 * nv,))
        _runtime.launch(_sparse.winograd_block_products, V, cached[1], cached[2], vals, M,
                        nv, tgroup, kblock, line)
    alg.phases(prob, xa, b, y, act, res, products)


def _phase_planes(prob, x):
    """The kernel's input: x (no padding, stride 1), the padded input (stride 1), or the
    padded input split into its stride phases, in a workspace."""
    if prob.stride == (1, 1):
        return padded_input(prob, x)
    sh, sw = prob.stride
    hs, ws = _grid(prob)
    xs = _workspace.get("sparse_phases", (prob.n, prob.c * sh * sw, hs, ws))
    _pad.pad_space_to_depth(x, xs, prob.pads[0], prob.pads[2], sh, sw)
    return xs


def _tap_offsets(csr, prob, packed, layer, kb):
    """Each nonzero's int32 offset into one image of the phase planes: tap (c, r, s)
    reads phase (r*dh % sh, s*dw % sw) of channel c, shifted by (r*dh // sh, s*dw // sw);
    cached with the weights per input size."""
    hs, ws = _grid(prob)
    (sh, sw), key = prob.stride, (prob.h, prob.w, prob.pads, prob.stride, kb)
    cached = None if packed is None else packed.get("csr_offsets")
    if cached is not None and cached[0] == key:
        return cached[1]
    if prob.c * sh * sw * hs * ws >= 2 ** 31:
        raise ValueError(f"{layer}: the sparse kernel addresses one image's padded input "
                         f"with 32-bit offsets; {prob.c}x{hs * sh}x{ws * sw} floats is too "
                         "large")
    _, chan, roff, coff, _ = csr
    plane = ((chan * sh + roff % sh) * sw + coff % sw) * (hs * ws)
    offs = (plane + (roff // sh) * ws + coff // sw).astype(np.int32)
    if packed is not None:
        packed["csr_offsets"] = (key, offs)
    return offs


def _sparse_gpu(x, weight, bias, stride, padding, dilation, groups, activation, residual, packed,
                layer):
    device = _cuda.is_device_array(x)
    shape = _cuda.device_shape_dtype(x, layer) if device else np.shape(x)
    w = _checks.as_float32(weight, layer, "weight")
    prob = conv_problem(tuple(shape), w.shape, stride, padding, dilation, groups, layer)
    b = _bias(bias, prob.k, layer)
    act = _checks.activation_code(activation, layer)
    csr = None if packed is None else packed.get("csr")
    if csr is None:
        csr = csr_conv(w, prob.dilation, prob.groups)
        if packed is not None:
            packed["csr"] = csr
    res = None
    if residual is not None:
        res = residual if _cuda.is_device_array(residual) else \
            _checks.as_float32(residual, layer, "residual")
    xs = x if device else _checks.as_float32(x, layer, "input")
    y = _cuda.sparse_conv2d(prob, xs, csr, b, act, res, packed)
    return _cuda.wrap(y, x) if device else _checks.wrap_like(y.copy_to_host(), x)


def _linear_csr(w, packed):
    """The linear weight's CSR form (int64 row pointers, int32 columns, values), cached in
    packed."""
    csr = None if packed is None else packed.get("csr")
    if csr is None:
        rows, cols = np.nonzero(w)
        indptr = np.zeros(w.shape[0] + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=w.shape[0]), out=indptr[1:])
        csr = (indptr, cols.astype(np.int32), w[rows, cols].astype(np.float32))
        if packed is not None:
            packed["csr"] = csr
    return csr


def _linear_as_conv(w, samples):
    """The 1x1 convolution a linear of weight (O, F) is over ``samples`` inputs: the
    features as channels, the samples as the pixels of one image."""
    return conv_problem((1, w.shape[1], 1, samples), (w.shape[0], w.shape[1], 1, 1), 1, 0, 1,
                        1)


def linear_costs(w, samples, threads):
    """Modelled seconds of a sparse linear over ``samples`` inputs: {"gather": the
    few-sample kernel, "conv": the 1x1 sparse convolution over the samples (CSR or block
    CSR, whichever is modelled faster, plus the transposes in and out)}; each never below
    the stored weights (8 bytes a nonzero) read once at planner.WEIGHT_STREAM_GBS."""
    nnz = int(np.count_nonzero(w))
    par = min(threads, max(1, w.shape[0]))
    floor = planner.CALL_OVERHEAD_S + 8.0 * nnz / (planner.WEIGHT_STREAM_GBS * 1e9 * par)
    gather = planner.CALL_OVERHEAD_S + 2.0 * samples * nnz / (planner.GATHER_GFLOPS * 1e9 * par)
    conv = best_block(w.reshape(w.shape + (1, 1)), _linear_as_conv(w, max(1, samples)),
                      threads)[0]
    conv += samples * (w.shape[0] + w.shape[1]) * 4 / (planner.COPY_GBS * 1e9)
    return {"gather": max(gather, floor), "conv": max(conv, floor)}


def dense_linear_cost(w, samples, threads):
    """Modelled seconds of the dense (SGEMM) linear over ``samples`` inputs, never below its
    weights read once at planner.WEIGHT_STREAM_GBS (one sample is a matrix-vector product,
    bound by them)."""
    par = min(threads, max(1, w.shape[0]))
    return planner.CALL_OVERHEAD_S + max(
        2.0 * samples * w.size / (planner.GEMM_GFLOPS * 1e9 * par),
        4.0 * w.size / (planner.WEIGHT_STREAM_GBS * 1e9 * par))


def sparse_linear(x, weight, bias=None, activation=None, packed=None, layer="sparse_linear"):
    """linear (same arguments and result) from the nonzeros of ``weight`` only.

    Few samples run a gathered dot product per output feature and sample
    (kernels/cpu/sparse.sparse_linear_rows); more run as a 1x1 sparse convolution with the
    samples as pixels (sparse_conv2d: CSR or block CSR); the one modelled faster
    (``linear_costs``) for the number of samples, chosen once per count and cached."""
    x_in = x
    xa = _checks.as_float32(x, layer, "input")
    w = _checks.as_float32(weight, layer, "weight", ndim=2)
    if xa.shape[-1] != w.shape[1]:
        raise ValueError(f"{layer}: expected input with {w.shape[1]} features in the last "
                         f"dimension, got shape {tuple(xa.shape)}")
    b = _bias(bias, w.shape[0], layer)
    act = _checks.activation_code(activation, layer)
    x2 = xa.reshape(-1, w.shape[1])
    samples = x2.shape[0]
    path = None if packed is None else packed.get(("linear_path", samples))
    if path is None:
        costs = linear_costs(w, samples, _runtime.get_num_threads())
        path = min(costs, key=costs.get)
        if packed is not None:
            packed[("linear_path", samples)] = path
    out_shape = xa.shape[:-1] + (w.shape[0],)
    if path == "conv" and samples:
        xT = np.ascontiguousarray(x2.T).reshape(1, w.shape[1], 1, samples)
        y4 = sparse_conv2d(xT, w.reshape(w.shape + (1, 1)), b, activation=activation,
                           packed=None if packed is None else packed.setdefault("conv", {}),
                           layer=layer)
        y = np.ascontiguousarray(y4.reshape(w.shape[0], samples).T)
    else:
        csr = _linear_csr(w, packed)
        y = np.empty((samples, w.shape[0]), np.float32)
        if y.size:
            with _runtime.kernel_scope(blas=False):
                _sparse.sparse_linear_rows(x2, *csr, b, y, act)
    return _checks.wrap_like(y.reshape(out_shape), x_in)


def _kernel_name(kb, m=0):
    """The sparse conv kernel's name in reports: csr, bsr4, winograd{m}_bsr4."""
    name = "csr" if kb == 1 else f"bsr{kb}"
    return f"winograd{m}_{name}" if m else name


def _eligible(node):
    if node.op == "conv":
        w = node.params["weight"]
        # not depthwise; not a conv that computes the global average pool after it
        return not (node.attrs["groups"] > 1 and w.shape[1] == 1) \
            and not node.attrs.get("global_pool")
    return node.op == "linear"


def _prune_block(node, block):
    """The block size a layer is pruned with: ``block``, or 1 where its groups' output
    channels are not a multiple of it."""
    w = node.params["weight"]
    groups = node.attrs.get("groups", 1) if node.op == "conv" else 1
    return block if (w.shape[0] // groups) % block == 0 or groups == 1 else 1


def _block_scores(w, kb, span=1):
    """(scores, count) of a weight's blocks of kb consecutive output channels x ``span``
    consecutive columns (1: one tap; a conv's R*S: an input channel's whole filter):
    their root-mean-square (the magnitude for kb 1, span 1), shape (ceil(K/kb),
    columns/span), and how many weights each block holds (kb*span, fewer in a last
    partial block)."""
    k = w.shape[0]
    wm = w.reshape(k, -1, span).astype(np.float64)
    kr = -(-k // kb)
    sq = np.zeros((kr * kb,) + wm.shape[1:])
    sq[:k] = wm * wm
    count = np.minimum(kb, k - np.arange(kr) * kb) * span
    return np.sqrt(sq.reshape(kr, kb, -1, span).sum(axis=(1, 3)) / count[:, None]), count


def _quantile(scores, amount):
    """The score below or at which ``amount`` of the weights lie, each block counted by
    its weights (scores: (block scores, weights per block row) pairs)."""
    vals = np.concatenate([sc.reshape(-1) for sc, _ in scores])
    weights = np.concatenate([np.repeat(cnt, sc.shape[1]) for sc, cnt in scores])
    order = np.argsort(vals, kind="stable")
    cum = np.cumsum(weights[order])
    i = int(np.searchsorted(cum, amount * cum[-1], side="left"))
    return vals[order[min(i, len(order) - 1)]]


def _expand_blocks(keep, shape, kb, span=1):
    """The (K, ...) weight mask of a (ceil(K/kb), columns/span) block mask."""
    k = shape[0]
    return np.repeat(np.repeat(keep, kb, axis=0)[:k], span, axis=1).reshape(shape)


def prune(model, amount=0.9, method="magnitude", scope="layer", example_input=None, block=1,
          whole_filters=False):
    """A pruned copy of ``model`` with sparse kernels where they are modelled faster.

    amount: fraction of each eligible layer's weights (``scope="layer"``) or of all
    of them together (``scope="global"``) set to zero, in [0, 1).  block: 1 zeroes single
    weights (unstructured); 4 zeroes whole blocks of one tap (conv) or input feature
    (linear) across 4 consecutive output channels, the blocks of smallest root-mean-square
    first, so the block-CSR conv kernel (one input read per 4 multiply-adds, ~1.7x the
    speed per stored value) runs them (a grouped conv whose groups' output channels are
    not a multiple of 4 is pruned unstructured).  whole_filters (with block 4): a conv's
    blocks are 4 output channels x one input channel's whole R x S filter, so a 3x3
    stride-1 layer keeps its zeros in the Winograd domain and the sparse Winograd kernel
    (sparse_conv2d's ``winograd``) can run it at a fraction of dense Winograd's
    multiply-adds; coarser blocks lose more accuracy for the same amount.
    ``example_input`` gives the shapes the kernel choice needs (default: the model's
    example).  ``model.prune_report`` lists per layer: sparsity, block, kernel ("csr",
    "bsr4", "winograd2_bsr4", "winograd4_bsr4" or "dense"), modelled dense and sparse
    milliseconds.
    """
    layer = "prune"
    if not isinstance(model, Model):
        raise TypeError(f"{layer}: expected a fastconv Model, got {type(model).__name__}")
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 <= amount < 1:
        raise ValueError(f"{layer}: amount must be a fraction in [0, 1), got {amount!r}")
    if method != "magnitude":
        raise ValueError(f"{layer}: method must be 'magnitude', got {method!r}")
    if scope not in ("layer", "global"):
        raise ValueError(f"{layer}: scope must be 'layer' or 'global', got {scope!r}")
    if isinstance(block, bool) or block not in BLOCKS:
        raise ValueError(f"{layer}: block must be one of {BLOCKS} (output channels pruned "
                         f"together), got {block!r}")
    if not isinstance(whole_filters, bool):
        raise ValueError(f"{layer}: whole_filters must be True or False, got "
                         f"{whole_filters!r}")
    if whole_filters and block == 1:
        raise ValueError(f"{layer}: whole_filters=True prunes blocks of 4 output channels; "
                         "pass block=4")
    examples = example_input if isinstance(example_input, (tuple, list)) else (
        (example_input,) if example_input is not None else None)
    if examples is None:
        if not getattr(model, "example_shapes", None):
            raise ValueError(f"{layer}: pass example_input (the model has no example shapes)")
        examples = tuple(np.zeros(s, np.float32) for s in model.example_shapes)
    nodes = [n.copy() for n in model.nodes]
    targets = [n for n in nodes if _eligible(n)]
    if not targets:
        raise ValueError(f"{layer}: {model.name} has no convolution or linear layer to prune")
    if amount > 0:
        sizes = {n.name: _prune_block(n, block) for n in targets}
        spans = {n.name: int(np.prod(n.params["weight"].shape[2:])) if whole_filters
                 and n.op == "conv" and sizes[n.name] > 1 else 1 for n in targets}
        scores = {n.name: _block_scores(n.params["weight"], sizes[n.name], spans[n.name])
                  for n in targets}
        if scope == "global":
            thr = _quantile(list(scores.values()), amount)
            thresholds = {n.name: thr for n in targets}
        else:
            thresholds = {n.name: _quantile([scores[n.name]], amount) for n in targets}
        for n in targets:
            w = n.params["weight"]
            keep = _expand_blocks(scores[n.name][0] > thresholds[n.name], w.shape,
                                  sizes[n.name], spans[n.name])
            n.params = dict(n.params, weight=np.where(keep, w, np.float32(0)).astype(
                np.float32))
    tmp = Model(nodes, model.inputs, model.outputs, model.constants, model.name,
                model.input_shapes, model.input_dtypes)
    shapes = tmp.shapes(*examples)
    threads = _runtime.get_num_threads()
    report = []
    for n in targets:
        w = n.params["weight"]
        nnz = int(np.count_nonzero(w))
        sparsity = 1.0 - nnz / w.size
        xs = shapes[n.inputs[0]][0]
        kb, m, bar = 1, 0, None
        if n.op == "conv":
            a = n.attrs
            prob = conv_problem(xs, w.shape, a["stride"], tuple(a["pads"]), a["dilation"],
                                a["groups"], n.layer)
            chosen = planner.plan(prob, a.get("algo", "auto"), n.layer, True).algorithm
            dense = planner.modelled(chosen, prob, threads, True)
            sparse, kb = best_block(w, prob, threads)
            wino = winograd_choice(w, prob, threads)
            if wino is not None and wino[0] < sparse:
                (sparse, m), kb = wino, 4
                # against dense, the same kernel over every block stands for dense Winograd
                # (the transforms modelled alike): only the blocks pruned away count, and
                # by at least WINOGRAD_PRUNE_GAIN (tap blocks at 50 % leave ~0.2 % of the
                # filter blocks empty: no reason to switch a layer)
                bar = WINOGRAD_PRUNE_GAIN * min(dense, winograd_choice(
                    np.ones(w.shape[:2] + (1, 1), np.float32), prob, threads)[0])
        else:
            rows = int(np.prod(xs[:-1]))
            dense = dense_linear_cost(w, rows, threads)
            sparse = min(linear_costs(w, rows, threads).values())
        use = sparse < (dense if bar is None else bar)
        if use:
            n.op = "sparse_conv" if n.op == "conv" else "sparse_linear"
            n.attrs = {k: v for k, v in n.attrs.items() if k != "algo"}
            if n.op == "sparse_conv":
                n.attrs["block"] = kb
                n.attrs["winograd"] = m
        n.attrs["sparsity"] = round(sparsity, 4)
        n.cache = {}
        report.append({"layer": n.name, "sparsity": sparsity,
                       "block": sizes[n.name] if amount > 0 else 1,
                       "kernel": _kernel_name(kb, m) if use else "dense",
                       "dense_ms": dense * 1e3, "sparse_ms": sparse * 1e3})
    out = Model(nodes, model.inputs, model.outputs, model.constants, model.name,
                model.input_shapes, model.input_dtypes)
    out.example_shapes = getattr(model, "example_shapes", None)
    out.prune_report = report
    return out
