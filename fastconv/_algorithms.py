"""The CPU convolution algorithms, registered with the planner.

Each class adapts one kernel family to the planner's interface: it says which
problems it serves, models its cost, sizes the kernel's blocking and
workspaces, and calls the kernel.  No loops over data live here.
"""
import functools

import numpy as np

from . import _memory, _runtime, _workspace, planner
from .kernels.cpu import depthwise as _depthwise
from .kernels.cpu import direct as _direct
from .kernels.cpu import grouped as _grouped
from .kernels.cpu import im2col as _im2col
from .kernels.cpu import inverted_residual as _inverted_residual
from .kernels.cpu import pad as _pad
from .kernels.cpu import phases as _phases
from .kernels.cpu import pointwise as _pointwise
from .kernels.cpu import rowdot as _rowdot
from .kernels.cpu import winograd as _winograd
from .kernels.cpu import nchwc as _nchwc
from .kernels.cpu import zmm as _zmm

COLS_TILE_BYTES = 2 * 1024 * 1024  # column tile per task: about the L2 of two cores (measured best)
MIN_TILE = 32  # narrower SGEMMs run far below peak; split output channels instead
WINOGRAD_CHUNK_BYTES = 6 * 1024 * 1024  # V + M per chunk of images: stays in the 32 MiB L3
PACKED_TILE = 2048  # pixels per micro-kernel task at most
PACKED_COLS_BYTES = 1024 * 1024  # im2col column tile for the micro-kernel: an L2
PACKED_TILE_OVERHEAD = 4.0  # reduction steps' worth of a tile's load and store
# the channel-vectorized kernel: its rate next to the pixel-vectorized one (broadcast
# loads of strided activations), and its 7 x 32 transposed store (shuffles, masked
# stores, epilogue fused) in reduction steps
PACKED_TRANSPOSED_RATE = 0.95
PACKED_TRANSPOSED_STORE_STEPS = 4.0
IM2COL_NR_MAX_PIXELS = 256
IM2COL_NR_RATE = 0.75
# below 28x28 the pixel-vectorized kernel loses speed beyond its ragged lanes (measured
# 0.75x at 7x7 next to 56x56): (pixels / 784) ** 0.3
PACKED_FULL_SPEED_PIXELS = 784
PACKED_SMALL_MAP_EXP = 0.3
# im2col_packed's pixel vectors run 1.4-2.3x their modelled time on 3x3 layers into
# 28x28 maps (128@56/2 1.56-1.62 ms, 128@28 1.42-1.83, 96@28 1.37 against 1.0, 1.0,
# 0.6 modelled) and within 1.1x of it on 56x56 and larger ones: (pixels / 3136) ** 0.3
IM2COL_MR_FULL_SPEED_PIXELS = 3136
# Winograd F(2x2)'s products on the channel-vectorized tile: 0.65-0.75 of the
# micro-kernel rate (256@14: 49 tiles, 0.49 ms; 128@28: 196 tiles, 0.57 ms)
WINOGRAD_PACKED_RATE = 0.75
# output rows per band of the blocked depthwise kernel: a band's input and output rows
# stay in L2 (a 112x112 plane of pixel vectors alone is 800 KiB)
DEPTHWISE_BAND_PIXELS = 2048
# inverted residual blocks stream by rows (expanded rows in a per-thread ring) from
# IR_ROWS_MIN_BYTES of expanded tensor an image, in bands of rows where at most
# IR_ROWS_MAX_REDO of the rows are expanded twice, else in channel groups (else bands of
# >= IR_ROWS_MIN_BAND rows); IR_RING_SLOTS rows in the ring (fewer row copies for the
# windows that wrap).  Under 1 MiB (MobileNetV2's 28x28, 14x14 and 7x7 blocks) each
# thread's half of the expanded tensor stays in its core's L2 between the
# channel-blocked kernels, which then run 3-8 % faster than the ring's row-by-row steps
# (whole model 4.54 against 4.69-4.86 ms with the 256 KiB of an earlier round)
IR_ROWS_MIN_BYTES = 1 << 20
IR_ROWS_MAX_REDO = 0.1
IR_ROWS_MIN_BAND = 4
IR_RING_SLOTS = 8
# a channel-blocked block's expansion and depthwise run as one parallel region, a task
# per this many expanded channels (a multiple of 32; 0: the two separate kernels)
IR_EXPAND_DW_GROUP = 32
# the element-by-element strided copies (pad.pad_nchw_phased at sw > 2,
# pad.pad_space_to_depth), G elements a second a thread: 0.8-2.2 measured on Zen 5 (2
# threads, 3x3/3 64@57, 16x16/16 and 4x4/4 3@224, 2x2/2 96@56)
STRIDED_GATHER_GELEMS = 1.0
_NO_RESIDUAL = np.zeros((1, 1, 1, 1), np.float32)
_NO_WEIGHTS = np.zeros((1, 1), np.float32)
_NO_TAPS = np.zeros(1, np.int64)


def _res(res, ndim):
    """The residual argument of a kernel: the array, or a dummy with has_res False."""
    if res is None:
        return _NO_RESIDUAL.reshape((1,) * ndim), False
    return res, True


def padded_input(prob, x):
    """x itself when no padding is needed, else a zero-padded copy in a workspace."""
    pt, pb, pl, pr = prob.pads
    if pt == pb == pl == pr == 0:
        return x
    xp = _workspace.get("padded_input", (prob.n, prob.c, prob.h + pt + pb, prob.w + pl + pr))
    _runtime.launch(_pad.pad_nchw, x, xp, pt, pl)
    return xp


def phased_input(prob, x):
    """The im2col families' input: padded_input at column stride 1; for sw > 1 a padded
    copy whose rows are split into sw column phases (pad.pad_nchw_phased)."""
    sw = prob.stride[1]
    if sw == 1:
        return padded_input(prob, x)
    pt, pb, pl, pr = prob.pads
    ws = -(-(prob.w + pl + pr) // sw)
    xp = _workspace.get("padded_input", (prob.n, prob.c, prob.h + pt + pb, ws * sw))
    _runtime.launch(_pad.pad_nchw_phased, x, xp, pt, pl, sw)
    return xp


def pad_call_s(prob, phased=False, threads=1):
    """PAD_CALL_S when the family first makes a padded (or, phased and sw > 1, a
    phase-split) copy of the input: one more parallel kernel call.  Phase splits of
    sw > 2 are element by element (pad.pad_nchw_phased), at STRIDED_GATHER_GELEMS a
    thread: 3x3/3 64@57's took 134 us where sw == 2's vector split of the same bytes
    takes 29."""
    if phased and prob.stride[1] > 2:
        pt, pb, pl, pr = prob.pads
        elems = prob.n * prob.c * (prob.h + pt + pb) * (prob.w + pl + pr)
        return planner.PAD_CALL_S + elems / (STRIDED_GATHER_GELEMS * 1e9) / min(
            threads, max(1, prob.n * prob.c))
    if any(prob.pads) or (phased and prob.stride[1] > 1):
        return planner.PAD_CALL_S
    return 0.0


def _split_tasks(units, ntiles, threads):
    """Round a tile count up so few tasks spread evenly over the threads."""
    if units * ntiles < 4 * threads:
        while (units * ntiles) % threads:
            ntiles += 1
    return ntiles


class Direct(planner.Algorithm):
    name = "direct"

    def cost(self, prob, threads, prepacked=False):
        gflops = planner.DIRECT_GFLOPS
        if prob.stride[1] != 1:
            gflops /= planner.DIRECT_STRIDED_PENALTY
        tasks = prob.n * prob.groups * -(-prob.kg // _direct.KB) * prob.oh
        par = min(threads, max(1, tasks))
        return planner.CALL_OVERHEAD_S + pad_call_s(prob) + (prob.flops / (gflops * 1e9)
                                          + tasks * planner.DIRECT_TASK_S) / par

    def run(self, prob, x, w, b, y, act, res=None, packed=None):
        xp = padded_input(prob, x)
        acc = _workspace.per_thread("direct_acc", _runtime.max_threads(), (_direct.KB, prob.ow))
        r, has_res = _res(res, 4)
        _direct.conv2d_direct(xp, w, b, y, prob.stride[0], prob.stride[1],
                              prob.dilation[0], prob.dilation[1], prob.groups, act,
                              r, has_res, acc)


def im2col_blocking(prob, threads):
    """(pixel tile, output-channel block) per task.

    Pixel tiles are as wide as fits ``COLS_TILE_BYTES`` of columns; their count is
    rounded up so that every thread gets the same number of tasks (a 2-task problem on
    2 threads beats a 3-task one).  When that would make tiles narrower than
    ``MIN_TILE``, output channels are split instead (the column copy is repeated,
    which is cheap next to the SGEMM at such shapes).
    """
    crs = prob.cg * prob.r * prob.s
    P = prob.oh * prob.ow
    units = max(1, prob.n * prob.groups)
    ntiles = _split_tasks(units, max(1, -(-P * crs * 4 // COLS_TILE_BYTES)), threads)
    kblocks = 1
    if -(-P // ntiles) < MIN_TILE and ntiles > 1:
        ntiles = max(1, P // MIN_TILE)
        while (units * ntiles * kblocks) % threads and kblocks < prob.kg:
            kblocks += 1
    tile = -(-P // ntiles)
    kblock = -(-prob.kg // kblocks)
    return tile, kblock


def _gemm_efficiency(m, k):
    """Fraction of GEMM_GFLOPS a single-threaded SGEMM with M = m, K = k reaches.

    A short reduction (K < 64) costs more than in proportion: SGEMM then spends
    its time packing and writing the output (measured 6-8 GFLOP/s per thread at
    K = 16..24, i.e. efficiency 0.11-0.16, about (K/64)**1.5).
    """
    return max(0.1, min(1.0, m / 64.0) ** 0.5 * min(1.0, k / 64.0) ** 1.5)


class Im2col(planner.Algorithm):
    name = "im2col"
    uses_blas = True

    def cost(self, prob, threads, prepacked=False):
        crs = prob.cg * prob.r * prob.s
        P = prob.oh * prob.ow
        tile, kblock = im2col_blocking(prob, threads)
        # narrow pixel tiles (7x7 maps) leave OpenBLAS's N dimension short as well
        eff = _gemm_efficiency(prob.kg, crs) * min(1.0, tile / 128.0) ** 0.5
        gemm = prob.flops / (planner.GEMM_GFLOPS * 1e9 * eff)
        copy = prob.n * prob.groups * crs * P * 4 / (planner.COPY_GBS * 1e9)
        tasks = max(1, prob.n * prob.groups * -(-P // tile) * -(-prob.kg // kblock))
        par = min(threads, tasks)
        return (planner.CALL_OVERHEAD_S + pad_call_s(prob, True, threads)
                + (gemm + copy + tasks * planner.IM2COL_TASK_S) / par)

    def run(self, prob, x, w, b, y, act, res=None, packed=None):
        threads = _runtime.get_num_threads()
        wmat = w.reshape(prob.k, -1)
        y3 = y.reshape(prob.n, prob.k, prob.oh * prob.ow)
        r3, has_res = _res(None if res is None else res.reshape(y3.shape), 3)
        xp = phased_input(prob, x)
        tile, kblock = im2col_blocking(prob, threads)
        crs = wmat.shape[1]
        nthreads = _runtime.max_threads()
        cols = _workspace.per_thread("gemm_cols", nthreads, (crs * tile,))
        scal = _workspace.per_thread("gemm_scalars", nthreads, (2,))
        _im2col.conv2d_im2col(xp, wmat, b, y3, prob.ow, prob.stride[0], prob.stride[1],
                              prob.dilation[0], prob.dilation[1], prob.groups,
                              prob.r, prob.s, act, r3, has_res, tile, kblock, cols, scal)


class Pointwise(planner.Algorithm):
    """1x1 convolutions: SGEMM on the input in place (stride 1) or on a subsampled copy."""
    name = "pointwise"
    uses_blas = True

    def serves(self, prob):
        if prob.r != 1 or prob.s != 1:
            return f"needs a 1x1 kernel, got {prob.r}x{prob.s}"
        if prob.pads != (0, 0, 0, 0):
            return f"needs padding 0, got {prob.pads}"
        return None

    def _blocking(self, prob, threads):
        """(pixel tile, output-channel block): tiles of <= 2 MiB of input, spread evenly."""
        units = max(1, prob.n * prob.groups)
        P = prob.oh * prob.ow
        ntiles = _split_tasks(units, max(1, -(-P * prob.cg * 4 // COLS_TILE_BYTES)), threads)
        kblocks = 1
        if -(-P // ntiles) < MIN_TILE and ntiles > 1:
            ntiles = max(1, P // MIN_TILE)
            while (units * ntiles * kblocks) % threads and kblocks < prob.kg:
                kblocks += 1
        return -(-P // ntiles), -(-prob.kg // kblocks)

    def cost(self, prob, threads, prepacked=False):
        P = prob.oh * prob.ow
        tile, kblock = self._blocking(prob, threads)
        # narrow pixel tiles leave SGEMM's N dimension short, as for Im2col
        eff = _gemm_efficiency(prob.kg, prob.cg) * min(1.0, tile / 128.0) ** 0.5
        gemm = prob.flops / (planner.GEMM_GFLOPS * 1e9 * eff)
        copy = 0.0 if prob.stride == (1, 1) else prob.n * prob.c * P * 4 / (planner.COPY_GBS * 1e9)
        tasks = prob.n * prob.groups * -(-P // tile) * -(-prob.kg // kblock)
        par = min(threads, max(1, tasks))
        return planner.CALL_OVERHEAD_S + (gemm + copy + tasks * planner.IM2COL_TASK_S) / par

    def bind(self, prob, w, b, act, packed=None):
        wmat = w.reshape(prob.k, prob.cg)
        y3_shape = (prob.n, prob.k, prob.oh * prob.ow)
        tile, kblock = self._blocking(prob, _runtime.get_num_threads())
        threads = _runtime.max_threads()
        groups, per_thread = prob.groups, _workspace.per_thread
        if prob.stride == (1, 1):
            x3_shape = (prob.n, prob.c, prob.h * prob.w)
            kernel = _pointwise.pointwise_conv2d

            def call(x, y, res):
                y3 = y.reshape(y3_shape)
                r3, has_res = _res(None if res is None else res.reshape(y3_shape), 3)
                kernel(x.reshape(x3_shape), wmat, b, y3, groups, act, r3, has_res, tile, kblock,
                       per_thread("gemm_scalars", threads, (2,)))
            return call
        (sh, sw), ow, cols_shape = prob.stride, prob.ow, (prob.cg * tile,)
        kernel = _pointwise.pointwise_conv2d_strided

        def call_strided(x, y, res):
            y3 = y.reshape(y3_shape)
            r3, has_res = _res(None if res is None else res.reshape(y3_shape), 3)
            kernel(x, wmat, b, y3, ow, sh, sw, groups, act, r3, has_res, tile, kblock,
                   per_thread("gemm_cols", threads, cols_shape),
                   per_thread("gemm_scalars", threads, (2,)))
        return call_strided


def _depthwise_cost(prob, threads, tasks, gflops, gbs, task_s):
    """Both depthwise families: compute at ``gflops`` and the input and output moved once
    at ``gbs`` per thread, ``task_s`` per task, over min(threads, tasks)."""
    moved = 4 * (prob.n * prob.c * prob.h * prob.w + prob.n * prob.k * prob.oh * prob.ow)
    par = min(threads, max(1, tasks))
    return planner.CALL_OVERHEAD_S + (prob.flops / (gflops * 1e9) + moved / (gbs * 1e9)
                                      + tasks * task_s) / par


class Depthwise(planner.Algorithm):
    """groups == C: one padded plane per task, all taps fused, memory-bound by design."""
    name = "depthwise"

    def serves(self, prob):
        if prob.groups != prob.c or prob.cg != 1:
            return f"needs groups == in_channels (depthwise), got groups={prob.groups}, C={prob.c}"
        return None

    def cost(self, prob, threads, prepacked=False):
        return _depthwise_cost(prob, threads, prob.n * prob.c, planner.DEPTHWISE_GFLOPS,
                               planner.STREAM_GBS, planner.DEPTHWISE_TASK_S)

    def run(self, prob, x, w, b, y, act, res=None, packed=None):
        pt, pb, pl, pr = prob.pads
        hp, wp = prob.h + pt + pb, prob.w + pl + pr
        threads = _runtime.max_threads()
        plane = _workspace.per_thread("depthwise_plane", threads, (hp * wp,))
        plane.fill(0.0)  # the kernel writes interiors only: borders stay zero
        out = _workspace.per_thread("depthwise_out", threads, (prob.oh * wp,))
        deint = _workspace.per_thread("depthwise_deint", threads,
                                      (hp * wp if prob.stride[1] == 2 else 1,))
        deint.fill(0.0)
        r, has_res = _res(res, 4)
        _depthwise.depthwise_conv2d(x, w, b, y, prob.stride[0], prob.stride[1], pt, pl, hp, wp,
                                    prob.dilation[0], prob.dilation[1], act, r, has_res,
                                    plane, out, deint)


class DepthwiseBlocked(planner.Algorithm):
    """Depthwise through 16-channel blocks (NCHW16c inside the call): one task per
    (image, block), every tap one vector FMA for 16 channels."""
    name = "depthwise_blocked"
    replayable = True
    SIZES = ((3, 3), (5, 5), (7, 7))  # square: the kernels take R only

    def serves(self, prob):
        if prob.groups != prob.c or prob.cg != 1 or prob.kg != 1:
            return ("needs groups == in_channels == out_channels (depthwise, multiplier 1), "
                    f"got groups={prob.groups}, C={prob.c}, K={prob.k}")
        if (prob.r, prob.s) not in self.SIZES:
            return f"needs a 3x3, 5x5 or 7x7 filter, got {prob.r}x{prob.s}"
        return _blocked_planes_reason(prob)

    def cost(self, prob, threads, prepacked=False):
        return _depthwise_cost(prob, threads, prob.n * -(-prob.c // 16),
                               planner.DEPTHWISE_BLOCKED_GFLOPS, planner.BLOCKED_GBS,
                               planner.DEPTHWISE_BLOCKED_TASK_S)

    def bind(self, prob, w, b, act, packed=None, blocked_in=False, blocked_out=False):
        """blocked_in / blocked_out: the call's x / y is channel-blocked (N, C/16, H*W, 16),
        viewed as (N, C, H, W) (C a multiple of 16; blocked_out takes no residual)."""
        pt, pb, pl, pr = prob.pads
        hp, wp = prob.h + pt + pb, prob.w + pl + pr
        wt = _depthwise_blocked_weights(prob, w, packed)
        offs, band, workspaces = _blocked_setup(prob, hp, wp, 16, "depthwise")
        (sh, sw), (dh, dw), R = prob.stride, prob.dilation, prob.r
        kernel = _depthwise.depthwise_conv2d_blocked

        def call(x, y, res):
            r, has_res = _res(res, 4)
            _runtime.launch(kernel, x, wt, b, y, R, sh, sw, pt, pl, hp, wp, dh, dw, act, r,
                            has_res, offs, *workspaces(), band, blocked_in, blocked_out)
        return call


class GroupedBlocked(planner.Algorithm):
    """Grouped 3x3 convs with 2, 4, 8, 16, 32 or 64 channels a group, in and out, through
    16-channel blocks (kernels/cpu/grouped.py): every tap cg vector FMAs for 16 output
    channels, the tasks and transposes of depthwise_blocked."""
    name = "grouped_blocked"
    replayable = True

    def serves(self, prob):
        if prob.groups == 1 or prob.cg != prob.kg or prob.cg not in _nchwc.GROUPED_CG:
            return ("needs groups of 2, 4, 8, 16, 32 or 64 input and output channels each, got "
                    f"groups={prob.groups} of {prob.cg} in, {prob.kg} out")
        if (prob.r, prob.s) != (3, 3):
            return f"needs a 3x3 filter, got {prob.r}x{prob.s}"
        return _blocked_planes_reason(prob)

    def cost(self, prob, threads, prepacked=False):
        return _depthwise_cost(prob, threads, prob.n * -(-prob.c // 16),
                               planner.GROUPED_BLOCKED_GFLOPS, planner.BLOCKED_GBS,
                               planner.DEPTHWISE_BLOCKED_TASK_S)

    def bind(self, prob, w, b, act, packed=None):
        pt, pb, pl, pr = prob.pads
        hp, wp = prob.h + pt + pb, prob.w + pl + pr
        wt = None if packed is None else packed.get(self.name)
        if wt is None:
            wt = _memory.empty((-(-prob.c // 16), 9 * prob.cg, 16), np.float32)
            _grouped.pack_grouped(w, prob.cg, wt)
            if packed is not None:
                packed[self.name] = wt
        unit = max(16, prob.cg)  # the channels of a task and of a pixel of its padded plane
        offs, band, workspaces = _blocked_setup(prob, hp, wp, unit, "grouped")
        (sh, sw), (dh, dw), cg = prob.stride, prob.dilation, prob.cg
        kernel = _grouped.grouped_conv2d_blocked

        def call(x, y, res):
            r, has_res = _res(res, 4)
            _runtime.launch(kernel, x, wt, b, y, cg, sh, sw, pt, pl, hp, wp, dh, dw, act, r,
                            has_res, offs, *workspaces(), band)
        return call


def _blocked_planes_reason(prob):
    """None, or why the channel-blocked families cannot run prob: their transposes move 16
    pixels at a time, so both planes need at least 16."""
    if prob.h * prob.w < 16 or prob.oh * prob.ow < 16:
        return (f"needs input and output planes of >= 16 pixels, got {prob.h}x{prob.w} -> "
                f"{prob.oh}x{prob.ow}")
    return None


def _blocked_setup(prob, hp, wp, unit, name):
    """What a channel-blocked call (depthwise_blocked, grouped_blocked) needs besides its
    weights: the offset of every input pixel in the padded plane (pixels ``unit``
    channels apart), the output rows a band, and its per-thread workspaces (padded plane,
    output rows of ``unit`` channels, 16 biases), looked up once per Python thread."""
    threads = _runtime.max_threads()
    plane_shape, out_shape = (hp * wp * unit,), (prob.oh * prob.ow * unit,)
    offs = _blocked_offsets(prob.h, prob.w, prob.pads[0], prob.pads[2], wp) * (unit // 16)
    band = max(1, DEPTHWISE_BAND_PIXELS // prob.ow)
    per_thread = _workspace.per_thread
    workspaces = _workspace.cached(lambda: (
        per_thread(f"{name}_plane", threads, plane_shape),
        per_thread(f"{name}_out", threads, out_shape),
        per_thread("depthwise_bias", threads, (16,))))
    return offs, band, workspaces


def _depthwise_blocked_weights(prob, w, packed):
    """depthwise.pack_blocked of w, cached in the layer's dict."""
    wt = None if packed is None else packed.get(DepthwiseBlocked.name)
    if wt is None:
        wt = _memory.empty((-(-prob.c // 16), prob.r * prob.s, 16), np.float32)
        _depthwise.pack_blocked(w, wt)
        if packed is not None:
            packed[DepthwiseBlocked.name] = wt
    return wt


@functools.lru_cache(maxsize=128)
def _blocked_offsets(h, w, pt, pl, wp):
    """Vector offset of every input pixel in the padded blocked plane (shared: never written)."""
    f = np.arange(h * w, dtype=np.intp)
    return ((f // w + pt) * wp + f % w + pl) * 16


class Winograd(planner.Algorithm):
    """F(m x m, 3 x 3) for 3x3 stride-1 undilated convolutions (any padding, groups)."""
    uses_blas = True
    replayable = True  # run() launches every kernel; packing fills `packed` once
    # Lavin & Gray 2016, and the F(4x4) points 0, +-1, +-2 of wincnn
    MATRICES = {
        2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32),
            np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float64),
            np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)),
        4: (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                      [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float32),
            np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                      [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64),
            np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                      [0, 1, -1, 8, -8, 1]], np.float32)),
    }

    weight_gbs = 13.0  # the transformed weights of 256x256 on a 2x2 map: 26 GB/s, two threads

    def weight_bytes(self, prob):
        return 4.0 * prob.k * prob.cg * self.a * self.a

    def __init__(self, m):
        self.m = m
        self.a = m + 2
        self.name = f"winograd_f{m}x{m}_3x3"
        self.BT, self.G, self.AT = self.MATRICES[m]

    def serves(self, prob):
        if (prob.r, prob.s) != (3, 3):
            return f"needs a 3x3 kernel, got {prob.r}x{prob.s}"
        if prob.stride != (1, 1) or prob.dilation != (1, 1):
            return f"needs stride 1 and dilation 1, got stride {prob.stride}, dilation {prob.dilation}"
        return None

    # F(4x4)'s error grows like sqrt(C*9): measured max|err| / max|y| <= 4e-5 up to
    # 2048 input channels per group (docs/algorithms.md); beyond that auto avoids it.
    F4_AUTO_MAX_CG = 2048

    def auto_excluded(self, prob):
        if self.m == 4 and prob.cg > self.F4_AUTO_MAX_CG:
            return (f"F(4x4) error bound only established up to {self.F4_AUTO_MAX_CG} "
                    f"channels per group, got {prob.cg}")
        return None

    def tiles(self, prob):
        return -(-prob.oh // self.m), -(-prob.ow // self.m)

    # F(2x2)'s products on the channel-vectorized micro-kernel from this many tiles up
    # (a chunk's): 256@14 (49 tiles) 0.49 ms against SGEMM's 0.65, 128@28 (196) 0.57
    # against 0.63; on Zen 4 F(4x4)'s 36 products and products of 16 tiles ran slower
    # there (F(4x4) 128@28 0.29 vs 0.28, 64@56 0.33 vs 0.28; F(2x2) 512@7 1.83 vs 1.59).
    # Where the micro-kernel runs at twice SGEMM's rate (planner.RATES "avx512-full")
    # F(4x4)'s products move too, and both sizes' only on maps of 32 tiles an image or
    # more (planner.WINOGRAD_PACKED): on Zen 5 at batch 8 the packed F(4x4) ran 256@14
    # (16 tiles) in 4.4 ms and 512@7 (4) in 5.0 where the model said 2.6 and 2.8, and
    # F(2x2) 512@7 (16) 5.7 where implicit_packed takes 4.2.
    PACKED_MIN_TILES = 32

    def packed_gemms(self, prob, tiles):
        """Whether the products of a chunk of ``tiles`` tiles run on the micro-kernel."""
        per_image = planner.WINOGRAD_PACKED.get(self.m)
        if per_image is None or prob.groups != 1:
            return False
        th, tw = self.tiles(prob)
        return tiles >= self.PACKED_MIN_TILES and th * tw >= per_image

    def cost(self, prob, threads, prepacked=False):
        th, tw = self.tiles(prob)
        T = prob.n * th * tw
        a, m = self.a, self.m
        xi = a * a
        transform_flops = (prob.n * prob.c * th * tw * 2 * a ** 3
                           + prob.n * prob.k * th * tw * 2 * (m * a * a + m * m * a))
        gemm_flops = 2.0 * xi * prob.k * prob.cg * T
        # narrow products run below the SGEMM rate, and batching does not widen them
        # in practice: per image, 512@7 F(2x2) measured 1.65, 1.84, 1.37, 1.59 ms at
        # batch 1, 2, 4, 8 (the tile count of one image decides, not of the batch)
        eff = _gemm_efficiency(prob.kg, prob.cg) * min(1.0, th * tw / 64.0) ** 0.5
        per_image = xi * (prob.c + prob.k) * th * tw * 4
        chunk_tiles = th * tw * max(1, min(prob.n, WINOGRAD_CHUNK_BYTES // max(per_image, 1)))
        if self.packed_gemms(prob, chunk_tiles):
            eff_p = (_lanes_used(chunk_tiles, _zmm.MP) * _lanes_used(prob.k, _zmm.NR)
                     * prob.c / (prob.c + PACKED_TRANSPOSED_STORE_STEPS)
                     * PACKED_TRANSPOSED_RATE * WINOGRAD_PACKED_RATE)
            gemm_s = gemm_flops / (planner.PACKED_GFLOPS * 1e9 * eff_p)
        else:
            gemm_s = gemm_flops / (planner.GEMM_GFLOPS * 1e9 * max(eff, 0.02))
        seconds = (transform_flops / (planner.TRANSFORM_GFLOPS * 1e9)
                   + gemm_s
                   + 4.0 * xi * prob.k * prob.cg / (planner.WEIGHT_GBS * 1e9)
                   + xi * prob.groups * planner.IM2COL_TASK_S)
        if not prepacked:
            seconds += prob.k * prob.cg * (18 * a + 6 * a * a) / (planner.TRANSFORM_GFLOPS * 1e9)
        # the input is always copied, padded to whole tiles
        return (planner.CALL_OVERHEAD_S + planner.PAD_CALL_S
                + seconds / min(threads, max(1, prob.n * prob.c)))

    def pack(self, w):
        """The transformed filters U (a*a, K, Cg) of a 3x3 weight."""
        U = _memory.empty((self.a * self.a, w.shape[0], w.shape[1]), np.float32)
        _winograd.filter_transform(w, self.G, U)
        return U

    def run(self, prob, x, w, b, y, act, res=None, packed=None):
        U = None if packed is None else packed.get(self.name)
        if U is None:
            U = self.pack(w)
            if packed is not None:
                packed[self.name] = U
        xi = self.a * self.a

        def products(V, M, T):
            if self.packed_gemms(prob, T):
                wz = None if packed is None else packed.get(self.name + "_zmm")
                if wz is None:
                    wz = _memory.empty((xi, -(-prob.k // _zmm.NR) * prob.c * _zmm.NR),
                                       np.float32)
                    for i in range(xi):
                        _zmm.pack_panels(U[i], 1, _zmm.NR, _zmm.KC_T, wz[i:i + 1])
                    if packed is not None:
                        packed[self.name + "_zmm"] = wz
                _runtime.launch(_winograd.transformed_gemms_packed, wz, V, M,
                                _workspace.zeros(prob.k), _workspace.per_thread(
                                    "winograd_edge", _runtime.max_threads(),
                                    (_zmm.KC_T * _zmm.MP,)),
                                _res(None, 1)[0])
            else:
                _runtime.launch(_winograd.transformed_gemms, U, V, M, prob.groups)
        self.phases(prob, x, b, y, act, res, products)

    def phases(self, prob, x, b, y, act, res, products):
        """The input padded to whole tiles, then per chunk of images the input transform,
        ``products(V, M, T)`` (launches M[xi] = U[xi] V[xi] over the chunk's T tiles) and
        the output transform with the epilogue (bias, residual, activation)."""
        th, tw = self.tiles(prob)
        pt, pb, pl, pr = prob.pads
        hp, wp = th * self.m + 2, tw * self.m + 2
        tiled = planner.ConvProblem(prob.n, prob.c, prob.h, prob.w, prob.k, 3, 3, (1, 1),
                                    (pt, hp - prob.h - pt, pl, wp - prob.w - pl), (1, 1), prob.groups)
        xp = padded_input(tiled, x)
        xi = self.a * self.a
        # Images go through in chunks whose transformed data (V and M) stays within
        # WINOGRAD_CHUNK_BYTES, so a batch streams through the cache image by image
        # instead of spilling V and M to memory.
        per_image = xi * (prob.c + prob.k) * th * tw * 4
        chunk = max(1, min(prob.n, WINOGRAD_CHUNK_BYTES // max(per_image, 1)))
        V = _workspace.get("winograd_V", (xi, prob.c, chunk * th * tw))
        M = _workspace.get("winograd_M", (xi, prob.k, chunk * th * tw))
        threads = _runtime.max_threads()
        t = _workspace.per_thread("winograd_t", threads, (self.a, tw * self.m + 2))
        for n0 in range(0, prob.n, chunk):
            n1 = min(prob.n, n0 + chunk)
            T = (n1 - n0) * th * tw
            Vc = V if n1 - n0 == chunk else V[:, :, :T]
            Mc = M if n1 - n0 == chunk else M[:, :, :T]
            if Vc is not V:  # the kernels want contiguous blocks
                Vc = _workspace.get("winograd_V_tail", (xi, prob.c, T))
                Mc = _workspace.get("winograd_M_tail", (xi, prob.k, T))
            r, has_res = _res(None if res is None else res[n0:n1], 4)
            _runtime.launch(_winograd.input_transform, xp[n0:n1], self.m, th, tw, Vc, t)
            products(Vc, Mc, T)
            _runtime.launch(_winograd.output_transform, Mc, self.m, b, y[n0:n1], act, r, has_res)


class PointwiseRegister(planner.Algorithm):
    """Stride-1 1x1 convolutions with short reductions: accumulators in L1, no BLAS."""
    name = "pointwise_register"
    uses_blas = False

    def serves(self, prob):
        if not prob.is_pointwise or prob.stride != (1, 1):
            return f"needs a 1x1 kernel, stride 1 and padding 0, got {prob.describe()}"
        return None

    def auto_excluded(self, prob):
        if prob.cg > 32:
            return f"Cg={prob.cg} > 32: SGEMM is faster for longer reductions"
        return None

    @staticmethod
    def tile(prob, threads):
        """Pixels per task: the tile's Cg x T inputs within 32 KiB, enough tasks to share."""
        P = prob.oh * prob.ow
        t = max(64, min(1024, (8192 // prob.cg) // 64 * 64))
        return max(1, min(t, -(-P * prob.n * prob.groups // threads)))

    def cost(self, prob, threads, prepacked=False):
        P = prob.oh * prob.ow
        tasks = prob.n * prob.groups * -(-P // self.tile(prob, threads))
        par = min(threads, max(1, tasks))
        return planner.CALL_OVERHEAD_S + prob.flops / (planner.REGISTER_GFLOPS * 1e9 * par)

    def run(self, prob, x, w, b, y, act, res=None, packed=None):
        tile = self.tile(prob, _runtime.get_num_threads())
        y3 = y.reshape(prob.n, prob.k, prob.oh * prob.ow)
        r3, has_res = _res(None if res is None else res.reshape(y3.shape), 3)
        acc = _workspace.per_thread("pointwise_acc", _runtime.max_threads(), (4, tile))
        _pointwise.pointwise_conv2d_register(x.reshape(prob.n, prob.c, prob.h * prob.w),
                                             w.reshape(prob.k, prob.cg), b, y3, prob.groups,
                                             act, r3, has_res, tile, acc)


class Im2colRegister(planner.Algorithm):
    """im2col whose product is accumulated in L1 instead of SGEMM: short reductions
    (a 3-channel stem's Cg*R*S = 27)."""
    name = "im2col_register"
    uses_blas = False

    def auto_excluded(self, prob):
        crs = prob.cg * prob.r * prob.s
        if crs > 32:
            return f"Cg*R*S={crs} > 32: SGEMM is faster for longer reductions"
        if prob.cg == 1 and prob.groups == prob.c:
            return "depthwise convolutions run the depthwise kernel (measured 2x faster)"
        return None

    @staticmethod
    def tile(prob, threads):
        crs = prob.cg * prob.r * prob.s
        P = prob.oh * prob.ow
        t = max(64, min(1024, (8192 // crs) // 64 * 64))
        return max(1, min(t, -(-P * prob.n * prob.groups // threads)))

    def cost(self, prob, threads, prepacked=False):
        crs = prob.cg * prob.r * prob.s
        P = prob.oh * prob.ow
        tasks = prob.n * prob.groups * -(-P // self.tile(prob, threads))
        par = min(threads, max(1, tasks))
        copy = prob.n * prob.groups * crs * P * 4 / (planner.COPY_GBS * 1e9)
        return (planner.CALL_OVERHEAD_S + pad_call_s(prob, True, threads)
                + (prob.flops / (planner.REGISTER_GFLOPS * 1e9) + copy) / par)

    def run(self, prob, x, w, b, y, act, res=None, packed=None):
        threads = _runtime.get_num_threads()
        wmat = w.reshape(prob.k, -1)
        y3 = y.reshape(prob.n, prob.k, prob.oh * prob.ow)
        r3, has_res = _res(None if res is None else res.reshape(y3.shape), 3)
        xp = phased_input(prob, x)
        tile = self.tile(prob, threads)
        nthreads = _runtime.max_threads()
        cols = _workspace.per_thread("gemm_cols", nthreads, (wmat.shape[1] * tile,))
        acc = _workspace.per_thread("pointwise_acc", nthreads, (4, tile))
        _im2col.conv2d_im2col_register(xp, wmat, b, y3, prob.ow, prob.stride[0], prob.stride[1],
                                       prob.dilation[0], prob.dilation[1], prob.groups,
                                       prob.r, prob.s, act, r3, has_res, tile, cols, acc)


def packed_form(packed, key, make):
    """packed[key], made by make() and kept there at the first call (packed: the layer's
    dict of weight forms and choices, or None to keep nothing)."""
    form = None if packed is None else packed.get(key)
    if form is None:
        form = make()
        if packed is not None:
            packed[key] = form
    return form


def packed_weights(packed, key, wmat, groups, width=None):
    """zmm.pack_panels of wmat (K, Cr) in panels of width rows (default MR),
    cached under key in the layer's dict."""
    width = width or _zmm.MR
    wp = None if packed is None else packed.get(key)
    if wp is None:
        K, Cr = wmat.shape
        wp = _memory.empty((groups, -(-(K // groups) // width) * Cr * width), np.float32)
        chunk = _zmm.KC if width == _zmm.MR else _zmm.KC_T
        _zmm.pack_panels(np.ascontiguousarray(wmat), groups, width, chunk, wp)
        if packed is not None:
            packed[key] = wp
    return wp


def packed_blocking(prob, threads, cols_per_pixel, width=None):
    """(pixel tile, output-channel block) for the micro-kernel families.

    As few tasks as keep every thread busy (measured best: each task's weight
    panels and input rows stay hot in its core's caches): pixel tiles of at most
    PACKED_TILE pixels, or as many as keep an im2col column tile (cols_per_pixel
    floats a pixel) within PACKED_COLS_BYTES.  Then the operand that is larger
    per task decides the split: with more pixels than output channels the tile
    count is rounded up to spread evenly; otherwise (small maps: 7x7, 14x14)
    output channels split in multiples of the panel width (MR, or NR for the
    channel-vectorized kernel) until there are as many tasks as threads.
    """
    width = width or _zmm.MR
    P = prob.oh * prob.ow
    units = max(1, prob.n * prob.groups)
    tile = min(P, PACKED_TILE)
    if cols_per_pixel:
        # at least two pixel tiles' worth: with long reductions (512@7: 4608 columns a
        # pixel) narrower tiles would make every task stream all the weights
        fit = (PACKED_COLS_BYTES // (4 * cols_per_pixel)) // _zmm.NR * _zmm.NR
        tile = min(tile, max(2 * _zmm.NR, fit))
    ntiles = -(-P // tile)
    if prob.kg < tile:
        # more pixels than output channels: split pixels (every task then reads all the
        # weights, the smaller operand)
        ntiles = _split_tasks(units, ntiles, threads)
    # otherwise split output channels below (every task then reads all the pixels):
    # splitting a 7x7 map's 49 pixels in two made each task stream all of a 960x160
    # weight and ran at 1.3x the time
    tile = -(-P // ntiles)
    if ntiles > 1:
        # whole NR-pixel tiles: every task but the last then starts on a vector boundary
        # (in place and aligned) and has no ragged tail (192->32 @ 28x28: 392-pixel
        # halves ran in 139 us, 416 + 368 in 77 us); the channel-vectorized kernel
        # steps MP pixels (576->96 @ 14x14: 98 + 98 pixels, not 128 + 68)
        step = _zmm.MP if width == _zmm.NR else _zmm.NR
        tile = -(-tile // step) * step
    panels = -(-prob.kg // width)
    nkb = 1
    while nkb < panels:
        tasks = units * ntiles * nkb
        if tasks >= threads and (tasks % threads == 0 or tasks >= 4 * threads):
            break
        nkb += 1
    return tile, -(-panels // nkb) * width


def _lanes_used(n, width):
    return n / (-(-n // width) * width)


def _packed_efficiency(prob, tile, cr, width=None):
    """Useful fraction of the micro-kernel's work: ragged pixel tiles and channel
    panels do full-tile work, and a short reduction pays the tile's loads and stores.
    width NR: the channel-vectorized kernel (pixels in groups of MP, plus the
    transposed store of each tile)."""
    short = cr / (cr + PACKED_TILE_OVERHEAD)
    if width == _zmm.NR:
        # each tile's transposed store costs about PACKED_TRANSPOSED_STORE_STEPS reduction steps
        store = cr / (cr + PACKED_TRANSPOSED_STORE_STEPS)
        return (_lanes_used(tile, _zmm.MP) * _lanes_used(prob.kg, _zmm.NR) * store
                * PACKED_TRANSPOSED_RATE)
    small_map = min(1.0, prob.oh * prob.ow / PACKED_FULL_SPEED_PIXELS) ** PACKED_SMALL_MAP_EXP
    return _lanes_used(tile, _zmm.NR) * _lanes_used(prob.kg, _zmm.MR) * short * small_map


@functools.lru_cache(maxsize=1024)
def _pointwise_layout(prob, threads):
    """PointwisePacked's (modelled seconds, width, tile, kblock), cached per problem:
    every call of a layer needs it, and working it out costs ~10 us of Python."""
    strided = prob.stride != (1, 1)
    best = None
    for width in (_zmm.MR, _zmm.NR):
        tile, kblock = packed_blocking(prob, threads, prob.cg if strided else 0, width)
        eff = _packed_efficiency(prob, tile, prob.cg, width)
        seconds = prob.flops / (planner.PACKED_GFLOPS * 1e9 * eff)
        if best is None or seconds < best[0]:
            best = (seconds, width, tile, kblock)
    return best


class PointwisePacked(Pointwise):
    """1x1 convolutions on fastconv's own micro-kernel: weights packed once, no BLAS.

    Two orientations: pixel vectors (MR-channel panels) for large maps, channel
    vectors (NR-channel panels, MP-pixel tiles) where a map's pixel count leaves
    NR-wide pixel vectors ragged (7x7, 14x14); the one with the higher modelled
    efficiency runs.
    """
    name = "pointwise_packed"
    replayable = True
    uses_blas = False

    def _layout(self, prob, threads):
        """(seconds of modelled work, width, tile, kblock) of the better orientation."""
        return _pointwise_layout(prob, threads)

    def cost(self, prob, threads, prepacked=False):
        P = prob.oh * prob.ow
        seconds, width, tile, kblock = self._layout(prob, threads)
        if prob.stride != (1, 1):
            seconds += prob.n * prob.c * P * 4 / (planner.COPY_GBS * 1e9)
        if not prepacked:
            seconds += prob.k * prob.cg * 8 / (planner.COPY_GBS * 1e9)
        tasks = prob.n * prob.groups * -(-P // tile) * -(-prob.kg // kblock)
        par = min(threads, max(1, tasks))
        return (planner.CALL_OVERHEAD_S + planner.PACKED_CALL_S
                + (seconds + tasks * planner.PACKED_TASK_S) / par)

    def bind(self, prob, w, b, act, packed=None, pool=False):
        """pool: the call is call(x, y, res, pooled): it also writes the global average of
        every output plane into pooled (N, K), each task averaging the planes it has just
        stored (its pixel tile then a whole plane)."""
        threads_now = _runtime.get_num_threads()
        _, width, tile, kblock = self._layout(prob, threads_now)
        P = prob.oh * prob.ow
        if pool and tile < P:  # whole planes; the output channels give the tasks
            tile = P
            panels = -(-prob.kg // width)
            kblock = -(-panels // max(1, -(-threads_now // (prob.n * prob.groups)))) * width
        wp = packed_weights(packed, f"{self.name}_{width}", w.reshape(prob.k, prob.cg),
                            prob.groups, width)
        strided = prob.stride != (1, 1)
        y3_shape = (prob.n, prob.k, P)
        threads = _runtime.max_threads()
        cols_shape = (prob.cg * -(-tile // 16) * 16 if strided else 1,)
        (sh, sw), groups, ow = prob.stride, prob.groups, prob.ow
        kernel = _pointwise.pointwise_conv2d_packed
        # read in place (stride 1): prefetch the next tile's rows; from memory, also the
        # next column block's (zmm.gemm_block)
        prefetch = 0 if strided else (
            2 if prob.n * prob.c * prob.h * prob.w * 4 > planner.STREAMED_BYTES else 1)

        def call(x, y, res, pooled=_NO_WEIGHTS):
            y3 = y.reshape(y3_shape)
            r3, has_res = _res(None if res is None else res.reshape(y3_shape), 3)
            sc, xpk = _packed_scratch(threads)
            _runtime.launch(kernel, x, wp, width, b, y3, ow, sh, sw, groups, act, r3, has_res,
                            tile, kblock, _workspace.per_thread("gemm_cols", threads, cols_shape),
                            sc, xpk, pooled, pooled is not _NO_WEIGHTS, prefetch)
        return call


def _phase_copy_s(elems, step, par):
    """Seconds of a copy of elems elements into or out of column phases ``step`` apart on par
    threads: vector copies and shuffles at steps 1 and 2, 4x the element loop's rate
    (STRIDED_GATHER_GELEMS) beyond (Zen 5: 2x2/2 96@56's planes 64 us on one thread, 256@28's
    rate-2 phases split in 30 us and merged in 27-42 on two)."""
    return elems * (0.25 if step <= 2 else 1.0) / (STRIDED_GATHER_GELEMS * 1e9) / par


class PatchPacked(planner.Algorithm):
    """Convolutions whose windows tile the input: the kernel equal to the stride (ViT's and
    Swin's 16x16/16 and 4x4/4 patch embeddings, ConvNeXt's 4x4/4 stem and 2x2/2
    downsamplings, a 3x3/3).  Each input element then falls in one window, so
    rearranging the (padded) input into (N, C*R*S, OH, OW) planes
    (pad.pad_space_to_depth: plane (c, r, s) holds tap (r, s) of every window) copies it
    once, without im2col's duplication, and the convolution is a 1x1 over C*R*S channels
    on pointwise_packed, with the weight (K, Cg, R, S) read as (K, Cg*R*S) as it lies.
    Groups stay contiguous planes, so grouped convs run the same way."""
    name = "patch_packed"
    replayable = True
    _pointwise = PointwisePacked()

    def serves(self, prob):
        if (prob.r, prob.s) != prob.stride or prob.r * prob.s == 1:
            return ("needs a kernel equal to its stride (windows that tile the input) and "
                    f"larger than 1x1, got {prob.r}x{prob.s} at stride {prob.stride}")
        if prob.dilation != (1, 1):
            return f"needs dilation 1, got {prob.dilation}"
        return None

    @staticmethod
    def inner(prob):
        """The 1x1 convolution over the rearranged input."""
        return planner.ConvProblem(prob.n, prob.c * prob.r * prob.s, prob.oh, prob.ow, prob.k,
                                   1, 1, (1, 1), (0, 0, 0, 0), (1, 1), prob.groups)

    def cost(self, prob, threads, prepacked=False):
        elems = prob.n * prob.c * prob.r * prob.s * prob.oh * prob.ow
        gather = _phase_copy_s(elems, prob.stride[1], min(threads, max(1, prob.n * prob.c
                                                                        * prob.r)))
        return (planner.PAD_CALL_S + gather
                + self._pointwise.cost(self.inner(prob), threads, prepacked))

    def bind(self, prob, w, b, act, packed=None):
        inner = self.inner(prob)
        sub = None if packed is None else packed.setdefault(self.name, {})
        wmat = np.ascontiguousarray(w).reshape(prob.k, inner.cg, 1, 1)
        call_inner = self._pointwise.bind(inner, wmat, b, act, sub)
        (sh, sw), pt, pl = prob.stride, prob.pads[0], prob.pads[2]
        shape = (prob.n, inner.c, prob.oh, prob.ow)
        kernel = _pad.pad_space_to_depth
        planes = _workspace.cached(lambda: _workspace.get("patch_planes", shape))

        def call(x, y, res):
            xs = planes()
            _runtime.launch(kernel, x, xs, pt, pl, sh, sw)
            call_inner(xs, y, res)
        return call


@functools.lru_cache(maxsize=256)
def _phase_family(inner, threads, prepacked):
    """(algorithm, modelled seconds) of the cheapest replayable family for a dilated conv's
    phase batch (DilatedPhases.inner): replayable, so the dilated call is too."""
    best = None
    for a in planner.REGISTRY.values():
        if a.replayable and a.serves(inner) is None and a.auto_excluded(inner) is None:
            seconds = planner.modelled(a, inner, threads, prepacked)
            if best is None or seconds < best[1]:
                best = (a, seconds)
    return best


class DilatedPhases(planner.Algorithm):
    """Stride-1 dilated convolutions (DeepLab's atrous 3x3s) as undilated ones over their
    dh*dw dilation phases (kernels/cpu/phases.py): the padded input split into phase
    images (pad.pad_space_to_depth, as a batch), those run as one unpadded, undilated
    batch on the family the planner models cheapest for it (Winograd, the packed
    micro-kernels: the dilated conv otherwise has implicit_packed and im2col only), the
    outputs interleaved back with the residual and activation (phases.merge_phases)."""
    name = "dilated_phases"
    replayable = True  # its inner family is chosen among the replayable ones
    uses_blas = True  # ... some of which call BLAS

    def serves(self, prob):
        if prob.dilation == (1, 1):
            return "needs a dilation > 1"
        if prob.stride != (1, 1):
            return f"needs stride 1, got {prob.stride}"
        if _phase_family(self.inner(prob), 1, True) is None:
            return "no replayable family serves its batch of phase images"
        return None

    @staticmethod
    def inner(prob):
        """The undilated, unpadded batch of phase images: ceil(OH/dh) x ceil(OW/dw) outputs
        each (the phases with fewer output rows or columns compute a spare one)."""
        (dh, dw), r, s = prob.dilation, prob.r, prob.s
        ohs, ows = -(-prob.oh // dh), -(-prob.ow // dw)
        return planner.ConvProblem(prob.n * dh * dw, prob.c, ohs + r - 1, ows + s - 1, prob.k,
                                   r, s, (1, 1), (0, 0, 0, 0), (1, 1), prob.groups)

    def cost(self, prob, threads, prepacked=False):
        inner = self.inner(prob)
        moved = inner.n * inner.c * inner.h * inner.w + prob.n * prob.k * prob.oh * prob.ow
        par = min(threads, max(1, prob.n * prob.k))
        return (2 * planner.PAD_CALL_S + _phase_copy_s(moved, prob.dilation[1], par)
                + _phase_family(inner, threads, prepacked)[1])

    def bind(self, prob, w, b, act, packed=None):
        inner = self.inner(prob)
        family = _phase_family(inner, _runtime.get_num_threads(), packed is not None)[0]
        sub = None if packed is None else packed.setdefault((self.name, family.name), {})
        call_inner = family.bind(inner, w, b, 0, sub)
        (dh, dw), pt, pl = prob.dilation, prob.pads[0], prob.pads[2]
        xs_shape = (inner.n, inner.c, inner.h, inner.w)
        ys_shape = (inner.n, inner.k, inner.oh, inner.ow)
        workspaces = _workspace.cached(lambda: (_workspace.get("phase_inputs", xs_shape),
                                                _workspace.get("phase_outputs", ys_shape)))
        split, merge = _pad.pad_space_to_depth, _phases.merge_phases

        def call(x, y, res):
            xs, ys = workspaces()
            _runtime.launch(split, x, xs, pt, pl, dh, dw, True)
            call_inner(xs, ys, None)
            r, has_res = _res(res, 4)
            _runtime.launch(merge, ys, y, dh, dw, act, r, has_res)
        return call


NR = _zmm.NR  # the channel-vectorized tile's panel width


def bind_inverted_residual(expand, dw, project, packed, rows=False):
    """An inverted residual block's convolutions as one call(x, y, residual): the
    optional expansion 1x1 ``expand``, the depthwise ``dw`` and the optional projection
    1x1 ``project``, each ``(prob, w, b, act)``, with the tensors between them kept
    channel-blocked (NCHW16c) in workspaces: the expansion writes blocks
    (pointwise.pointwise_conv2d_to_blocked), depthwise_blocked reads and writes them
    without transposing, the projection reads them (pointwise_conv2d_from_blocked)
    and writes y in NCHW with the residual; with both 1x1s the expansion and the
    depthwise are one kernel instead (inverted_residual.expand_depthwise_blocked: a task
    per IR_EXPAND_DW_GROUP expanded channels, their padded planes in the thread's
    cache, no expanded tensor in memory).  Needs the depthwise channels a multiple
    of 16, stride-1 1x1s (groups 1) and what depthwise_blocked serves; weights are
    packed into ``packed`` once (a 1x1's under its own key).  The call enters the
    kernel scope itself.  ``rows`` (with a projection; streams_rows): one call streamed
    by rows instead, nothing channel-blocked in memory (inverted_residual.py)."""
    if rows:
        return _bind_inverted_residual_rows(expand, dw, project, packed)
    threads = _runtime.get_num_threads()
    max_threads = _runtime.max_threads()
    dprob, w2, b2, a2 = dw
    expand_call = project_call = None
    # with both 1x1s, the expansion and the depthwise run as one kernel
    fused = expand is not None and project is not None and IR_EXPAND_DW_GROUP
    if expand is not None and not fused:
        pw, w1, b1, a1 = expand
        tile1, kblock1 = packed_blocking(pw, threads, 0, _zmm.NR)
        tile1 = max(_zmm.MP, tile1 // _zmm.MP * _zmm.MP)
        wp1 = packed_weights(packed, f"expand_{_zmm.NR}", w1.reshape(pw.k, pw.c), 1, _zmm.NR)
        mid_shape = (pw.n, pw.k // 16, pw.oh * pw.ow * 16)
        edge1 = (_zmm.KC_T * _zmm.MP,)
        k1 = _pointwise.pointwise_conv2d_to_blocked
        mid_dims = (dprob.n, dprob.c, dprob.h, dprob.w)
        ws1 = _workspace.cached(lambda: (
            _workspace.get("ir_expanded", mid_shape),
            _workspace.per_thread("ir_edge", max_threads, edge1)))

        def expand_call(x):
            mid, edge = ws1()
            _runtime.launch(k1, x, wp1, b1, mid, a1, tile1, kblock1, edge)
            return mid.reshape(mid_dims)
    if fused:
        dcall = _bind_expand_depthwise(expand, dw, packed, max_threads)
    else:
        dcall = planner.REGISTRY["depthwise_blocked"].bind(
            dprob, w2, b2, a2, packed, blocked_in=expand is not None,
            blocked_out=project is not None)
    if project is not None:
        pp, w3, b3, a3 = project
        tile3, kblock3 = packed_blocking(pp, threads, 0, _zmm.NR)
        tile3 = max(_zmm.MP, tile3 // _zmm.MP * _zmm.MP)
        wp3 = packed.get("project_from_blocked")
        if wp3 is None:
            wp3 = packed["project_from_blocked"] = _memory.empty(
                (1, -(-pp.k // _zmm.NR) * pp.c * _zmm.NR), np.float32)
            _zmm.pack_panels(np.ascontiguousarray(w3.reshape(pp.k, pp.c)), 1, _zmm.NR, pp.c,
                             wp3)
        dw_out_shape = (dprob.n, dprob.k // 16, dprob.oh * dprob.ow * 16)
        y3_shape = (pp.n, pp.k, pp.oh * pp.ow)
        edge3 = (pp.c * _zmm.MP,)
        k3 = _pointwise.pointwise_conv2d_from_blocked
        d_dims = (dprob.n, dprob.k, dprob.oh, dprob.ow)
        ws3 = _workspace.cached(lambda: (
            _workspace.get("ir_depthwise", dw_out_shape),
            _workspace.per_thread("ir_edge3", max_threads, edge3)))

        def project_call(z, y, res):
            r3, has_res = _res(None if res is None else res.reshape(y3_shape), 3)
            _runtime.launch(k3, z, wp3, b3, y.reshape(y3_shape), a3, r3, has_res, tile3, kblock3,
                            ws3()[1])

    def call(x, y, res):
        with _runtime.kernel_scope(blas=False):
            z = expand_call(x) if expand_call is not None else x
            if project_call is None:
                dcall(z, y, res)
                return
            d = ws3()[0]
            dcall(z, d.reshape(d_dims), None)
            project_call(d, y, res)
    call.replayable = True
    return call


def _bind_expand_depthwise(expand, dw, packed, threads):
    """The expansion and depthwise of a channel-blocked block as one
    inverted_residual.expand_depthwise_blocked call(x, d, None), d the channel-blocked
    depthwise output viewed as (N, K, OH, OW); a task per IR_EXPAND_DW_GROUP expanded
    channels."""
    pw, w1, b1, a1 = expand
    dprob, w2, b2, a2 = dw
    wp1 = packed_weights(packed, f"expand_{_zmm.NR}", w1.reshape(pw.k, pw.c), 1, _zmm.NR)
    wt2 = _depthwise_blocked_weights(dprob, w2, packed)
    pt, pb, pl, pr = dprob.pads
    hp, wp = dprob.h + pt + pb, dprob.w + pl + pr
    (sh, sw), (dh, dwl), R = dprob.stride, dprob.dilation, dprob.r
    group = IR_EXPAND_DW_GROUP
    kernel, per_thread = _inverted_residual.expand_depthwise_blocked, _workspace.per_thread
    workspaces = _workspace.cached(lambda: (
        per_thread("ir_planes", threads, (group // 16 * hp * wp * 16,)),
        per_thread("ir_edge", threads, (_zmm.KC_T * _zmm.MP,))))
    h, w, oh, ow = dprob.h, dprob.w, dprob.oh, dprob.ow

    def call(x, d, res):
        n, c = x.shape[0], x.shape[1]
        _runtime.launch(kernel, x.reshape(-1), n, c, h, w, wp1, b1, a1, wt2, b2, a2, R, sh, sw,
                        pt, pl, hp, wp, dh, dwl, oh, ow, d, group, *workspaces())
    return call


def streams_rows(dprob, expand=True):
    """Whether an inverted residual block (with a projection) runs streamed by rows
    (inverted_residual.py): rows_split is not None."""
    return rows_split(dprob, expand) is not None


def rows_split(dprob, expand=True):
    """How a block streamed by rows splits an image over the threads: (bands, channel
    groups), or None when it does not stream -- when the depthwise input (the expanded
    tensor, or x itself without an expansion) is under IR_ROWS_MIN_BYTES an image (it
    stays in a core's L2 between separate kernels), or, without an expansion, its rows
    are under 16 pixels (they are transposed 16 at a time).  Bands of output rows
    expand the rows where they meet twice: where that is more than IR_ROWS_MAX_REDO of
    the map's rows (14x14 and 7x7 maps, stride 1) each thread takes a group of the
    expanded channels instead (for all rows; a multiple of 32 channels each), and the
    groups' partial projections are added in a second pass."""
    threads = _runtime.get_num_threads()
    if 4 * dprob.c * dprob.h * dprob.w < IR_ROWS_MIN_BYTES or not (expand or dprob.w >= 16):
        return None
    parts = max(1, -(-threads // dprob.n))
    if parts == 1:
        return 1, 1
    span = (dprob.r - 1) * dprob.dilation[0] + 1
    redo = (parts - 1) * max(0, span - dprob.stride[0]) / dprob.h
    if redo <= IR_ROWS_MAX_REDO and dprob.oh >= parts:
        return parts, 1
    if dprob.c % (32 * parts) == 0:
        return 1, parts
    if dprob.oh >= parts * IR_ROWS_MIN_BAND:
        return parts, 1
    return None


def _bind_inverted_residual_rows(expand, dw, project, packed):
    """bind_inverted_residual's call for a block streamed by rows: one
    inverted_residual.inverted_residual_rows call, a band of output rows per task.  An
    expansion whose problem is not a stride-1 unpadded 1x1 is a head conv (its input
    zero-padded into a workspace first)."""
    dprob, w2, b2, a2 = dw
    pp, w3, b3, a3 = project
    toff1, sh1, sw1, fill, edge_shape, head = _NO_TAPS, 1, 1, 0, (1,), None
    wp1, b1, a1 = _NO_WEIGHTS, _NO_WEIGHTS[0], 0
    if expand is not None:
        pe, w1, b1, a1 = expand
        if pe.r == pe.s == 1 and pe.stride == (1, 1) and not any(pe.pads):
            fill = 1
            wp1 = packed_weights(packed, f"expand_{_zmm.NR}", w1.reshape(pe.k, pe.c), 1,
                                 _zmm.NR)
            edge_shape = (min(pe.c, _zmm.KC_T) * _zmm.MP,)
        else:
            fill = 2
            wp1 = packed.get("head_rows")
            if wp1 is None:  # columns (tap, channel): the taps tile's step order
                wmat = np.ascontiguousarray(w1.transpose(0, 2, 3, 1).reshape(pe.k, -1))
                wp1 = packed["head_rows"] = _memory.empty(
                    (1, -(-pe.k // _zmm.NR) * wmat.shape[1] * _zmm.NR), np.float32)
                _zmm.pack_panels(wmat, 1, _zmm.NR, wmat.shape[1], wp1)
            head = pe
            hx, wx = pe.h + pe.pads[0] + pe.pads[1], pe.w + pe.pads[2] + pe.pads[3]
            (sh1, sw1), (dh1, dw1) = pe.stride, pe.dilation
            toff1 = np.array([r * dh1 * wx + s * dw1 for r in range(pe.r) for s in range(pe.s)],
                             np.int64)
            x_size = pe.n * pe.c * hx * wx
            slack = _zmm.MP * sw1 + wx
    wt2 = _depthwise_blocked_weights(dprob, w2, packed)
    wp3 = packed.get("project_from_blocked")
    if wp3 is None:
        wp3 = packed["project_from_blocked"] = _memory.empty(
            (1, -(-pp.k // _zmm.NR) * pp.c * _zmm.NR), np.float32)
        _zmm.pack_panels(np.ascontiguousarray(w3.reshape(pp.k, pp.c)), 1, _zmm.NR, pp.c, wp3)
    pt, pb, pl, pr = dprob.pads
    wpad = dprob.w + pl + pr
    (sh, sw), (dh, dwl), R = dprob.stride, dprob.dilation, dprob.r
    span = (R - 1) * dh + 1
    ring_slots = max(span, IR_RING_SLOTS)
    nb = dprob.c // 16
    threads = _runtime.max_threads()
    bands, csplit = rows_split(dprob, expand is not None) or (1, 1)
    part_shape = (csplit, pp.n, pp.k, pp.oh * pp.ow) if csplit > 1 else (1, 1, 1, 1)
    ring_shape = (nb * (ring_slots + span - 1) * wpad * 16,)
    row_shape = (nb * -(-dprob.ow // _zmm.MP) * _zmm.MP * 16,)
    kernel, per_thread = _inverted_residual.inverted_residual_rows, _workspace.per_thread
    h, w = dprob.h, dprob.w
    workspaces = _workspace.cached(lambda: (
        per_thread("ir_ring", threads, ring_shape), per_thread("ir_row", threads, row_shape),
        per_thread("ir_rows_edge", threads, edge_shape),
        _workspace.get("ir_partials", part_shape)))

    def call(x, y, res):
        r, has_res = _res(res, 4)
        n, c, hx_, wx_ = x.shape
        with _runtime.kernel_scope(blas=False):
            xf = x.reshape(-1)
            if head is not None:  # the head conv reads a zero-padded copy, slack after it
                xf = _workspace.get("ir_head_input", (x_size + slack,))
                xf[x_size:] = 0.0
                hx_, wx_ = hx, wx
                _pad.pad_nchw(x, xf[:x_size].reshape(n, c, hx, wx), head.pads[0], head.pads[2])
            _runtime.launch(kernel, xf, n, c, hx_, wx_, fill, wp1, b1, a1, toff1, sh1, sw1, h, w,
                            wt2, b2, a2, R, sh, sw, pt, pl, wpad, dh, dwl, wp3, b3, a3, y, r,
                            has_res, bands, csplit, ring_slots, *workspaces())
    call.replayable = head is None  # a head's input padding also clears the slack in NumPy
    return call


def _packed_scratch(threads):
    return (_workspace.per_thread("zmm_tile", threads, (_zmm.MR * _zmm.NR,)),
            _workspace.per_thread("zmm_cols", threads, (_zmm.KC * _zmm.JB,)))


@functools.lru_cache(maxsize=1024)
def _im2col_packed_layout(prob, threads):
    """Im2colPacked's (modelled seconds, width, tile, kblock): the orientation with the
    lower modelled time, column copies included (repeated for every output-channel
    block), cached per problem."""
    crs = prob.cg * prob.r * prob.s
    P = prob.oh * prob.ow
    best = None
    # channel vectors only for maps of up to 16x16 (with the epilogue fused into their
    # transposed store: 0.78-0.80x the time of pixel vectors at 14x14, even at 28x28),
    # at IM2COL_NR_RATE of their 1x1 rate: every step broadcasts from the column tile
    # and the long-reduction weights stream from memory
    widths = (_zmm.MR, _zmm.NR) if P <= IM2COL_NR_MAX_PIXELS else (_zmm.MR,)
    for width in widths:
        tile, kblock = packed_blocking(prob, threads, crs, width)
        eff = _packed_efficiency(prob, tile, crs, width)
        if width == _zmm.NR:
            eff *= IM2COL_NR_RATE
        elif P < IM2COL_MR_FULL_SPEED_PIXELS:
            # the pixel-vectorized product over a column tile falls off from 56x56
            # down, beyond the 1x1 kernel's small-map factor
            eff *= (min(1.0, P / IM2COL_MR_FULL_SPEED_PIXELS)
                    / min(1.0, P / PACKED_FULL_SPEED_PIXELS)) ** PACKED_SMALL_MAP_EXP
        seconds = (prob.flops / (planner.PACKED_GFLOPS * 1e9 * eff)
                   + prob.n * prob.groups * crs * P * 4 / (planner.COPY_GBS * 1e9)
                   * -(-prob.kg // kblock))
        if best is None or seconds < best[0]:
            best = (seconds, width, tile, kblock)
    return best


class Im2colPacked(Im2col):
    """im2col tiles multiplied by fastconv's own micro-kernel, weights packed once
    (pixel- or channel-vectorized, as for PointwisePacked)."""
    name = "im2col_packed"
    replayable = True
    uses_blas = False

    def cost(self, prob, threads, prepacked=False):
        crs = prob.cg * prob.r * prob.s
        P = prob.oh * prob.ow
        seconds, width, tile, kblock = _im2col_packed_layout(prob, threads)
        if not prepacked:
            seconds += prob.k * crs * 8 / (planner.COPY_GBS * 1e9)
        tasks = prob.n * prob.groups * -(-P // tile) * -(-prob.kg // kblock)
        par = min(threads, max(1, tasks))
        return (planner.CALL_OVERHEAD_S + planner.PACKED_CALL_S
                + pad_call_s(prob, True, threads)
                + (seconds + tasks * planner.PACKED_TASK_S) / par)

    def bind(self, prob, w, b, act, packed=None):
        crs = prob.cg * prob.r * prob.s
        _, width, tile, kblock = _im2col_packed_layout(prob, _runtime.get_num_threads())
        wp = packed_weights(packed, f"{self.name}_{width}", w.reshape(prob.k, crs), prob.groups,
                            width)
        y3_shape = (prob.n, prob.k, prob.oh * prob.ow)
        threads = _runtime.max_threads()
        cols_shape = (crs * -(-tile // 16) * 16,)
        (sh, sw), (dh, dw) = prob.stride, prob.dilation
        kernel = _im2col.conv2d_im2col_packed

        def call(x, y, res):
            y3 = y.reshape(y3_shape)
            r3, has_res = _res(None if res is None else res.reshape(y3_shape), 3)
            xp = phased_input(prob, x)
            sc, xpk = _packed_scratch(threads)
            _runtime.launch(kernel, xp, wp, width, b, y3, prob.ow, sh, sw, dh, dw, prob.groups,
                            prob.r, prob.s, act, r3, has_res, tile, kblock,
                            _workspace.per_thread("gemm_cols", threads, cols_shape), sc, xpk)
        return call


# implicit_packed: the channel-vectorized tile's rate here, with every tap inside its
# reduction (the tile is loaded and stored once per channel chunk: IMPLICIT_STORE_STEPS
# reduction steps' worth); measured 0.85-0.95 of the micro-kernel rate on 3x3 layers
# from 7x7 to 112x112 maps (512@7 1.15 ms, 256@14 1.16, 128@28 1.19, 64@56 1.27,
# 512@14/2 1.27, 256@28/2 1.22, 128@56/2 1.28, 64@112/2 1.48, 256@56/2 5.1).  A
# chunk's weights per 32-channel panel stay within IMPLICIT_PANEL_BYTES (L2).
IMPLICIT_RATE = 0.88
IMPLICIT_STORE_STEPS = 8.0
IMPLICIT_PANEL_BYTES = 320 * 1024


def _implicit_chunk(prob):
    """Input channels per implicit_packed pass: balanced chunks whose R*S taps of weights
    for one NR-channel panel fit IMPLICIT_PANEL_BYTES."""
    per_channel = prob.r * prob.s * _zmm.NR * 4
    chunks = max(1, -(-prob.c * per_channel // IMPLICIT_PANEL_BYTES))
    return -(-prob.c // chunks)


def _live_tap_fraction(prob):
    """The share of implicit_packed's (pixel, tap) products that run: an output row skips
    the kernel rows that read only padding (im2col.live_rows; a row of padding alone
    keeps them all), and a whole pixel group at a row's end the products of its first or
    last pixel in the column taps where that pixel reads only padding (im2col.edge_codes)."""
    if not prob.oh or not prob.ow or not prob.r or not prob.s:
        return 1.0
    (sh, sw), (dh, dw) = prob.stride, prob.dilation
    pt, pl = prob.pads[0], prob.pads[2]
    live = 0
    for p in range(prob.oh):
        top = p * sh - pt
        rows = sum(1 for r in range(prob.r) if 0 <= top + r * dh < prob.h)
        live += rows or prob.r
    skipped = 0
    for g in range(prob.ow // _zmm.MP):
        q0 = g * _zmm.MP
        skipped += sum(1 for s in range(prob.s)
                       if q0 * sw + s * dw - pl < 0
                       or (q0 + _zmm.MP - 1) * sw + s * dw - pl >= prob.w)
    return live / (prob.oh * prob.r) * (1 - skipped / (prob.ow * prob.s))


def _implicit_blocking(prob, threads):
    """(output channels, output rows) per implicit_packed task: whole NR panels, split
    so that images x channel blocks give every thread a task, and where there are too
    few panels for that (a 32-channel stem at batch 1) the rows split as well."""
    npg = -(-prob.k // _zmm.NR)
    want = max(1, -(-threads // max(1, prob.n)))
    splits = min(npg, want)
    # rows split four ways per thread left idle, so a late-waking thread costs little
    rsplits = 1 if splits >= want else min(prob.oh, 4 * -(-want // splits))
    return -(-npg // splits) * _zmm.NR, -(-prob.oh // rsplits)


# in auto: grouped 3x3s with at most this many input channels a group on implicit_pixels
# (ResNeXt's and RegNet's groups of 8-32 channels; each group's rows their own panels)
IMPLICIT_PIXELS_GROUP_CHANNELS = 32
# grouped convs ran 1.4-2.8x the time the model gives the same flops with groups == 1
# (Zen 5, eleven grouped 3x3s of 2-32 channels a group, three runs: a tile per group
# panel and row, its loads and stores every few steps); 1.8 fits the stride-1 layers
# within ~15 %, and the stride-2 ones ran 1.9x that again (their phase-split input)
IMPLICIT_PIXELS_GROUP_SLOWDOWN = 1.8
IMPLICIT_PIXELS_GROUP_STRIDED = 1.9


class ImplicitPacked(planner.Algorithm):
    """The channel-vectorized micro-kernel reading the (padded, phase-split) input in
    place, tap by tap: im2col_packed's product with no column matrix (an implicit
    GEMM).  groups == 1."""
    name = "implicit_packed"
    replayable = True
    uses_blas = False

    def serves(self, prob):
        if prob.groups != 1:
            return "implicit_packed needs groups == 1"
        return None

    def cost(self, prob, threads, prepacked=False):
        steps = prob.r * prob.s * _implicit_chunk(prob)
        eff = (_lanes_used(prob.ow, _zmm.MP) * steps / (steps + IMPLICIT_STORE_STEPS)
               * PACKED_TRANSPOSED_RATE * IMPLICIT_RATE)
        # per image and 32-channel panel (a ragged last panel does full-panel work),
        # and the busiest thread's share of the (image, channel block) tasks
        npg = -(-prob.k // _zmm.NR)
        panel = (prob.flops * _live_tap_fraction(prob) / max(1, prob.n) / prob.k * _zmm.NR
                 / (planner.PACKED_GFLOPS * 1e9 * eff))
        kblock, rblock = _implicit_blocking(prob, threads)
        nrb = -(-prob.oh // rblock) if prob.oh else 1
        tasks = prob.n * -(-prob.k // kblock) * nrb
        per_thread = -(-tasks // threads) if tasks else 0
        seconds = per_thread * (min(kblock // _zmm.NR, npg) * panel / nrb
                                + planner.PACKED_TASK_S)
        if not prepacked:
            seconds += prob.k * prob.cg * prob.r * prob.s * 8 / (planner.COPY_GBS * 1e9)
        return (planner.CALL_OVERHEAD_S + planner.PACKED_CALL_S
                + pad_call_s(prob, True, threads)
                + seconds)

    def pack(self, w, packed=None, kch=None):
        """W arranged as (K, R*S*C) with columns in (channel chunk, tap, channel) order,
        packed by zmm.pack_panels (width NR, chunk R*S*kch): per panel and chunk, tap t's
        kc x NR weights at t*kc*NR (kernels/cpu/im2col.conv2d_implicit_packed)."""
        wp = None if packed is None else packed.get(self.name)
        if wp is None:
            K, C, R, S = w.shape
            kch = kch or C
            w3 = np.asarray(w, np.float32).reshape(K, C, R * S)
            wm = np.concatenate([w3[:, c0:c0 + kch].transpose(0, 2, 1).reshape(K, -1)
                                 for c0 in range(0, C, kch)], axis=1)
            wp = _memory.empty((1, -(-K // _zmm.NR) * R * S * C * _zmm.NR), np.float32)
            _zmm.pack_panels(np.ascontiguousarray(wm), 1, _zmm.NR, R * S * kch, wp)
            if packed is not None:
                packed[self.name] = wp
        return wp

    def bind(self, prob, w, b, act, packed=None):
        kch = _implicit_chunk(prob)
        wp = self.pack(w, packed, kch)
        kblock, rblock = _implicit_blocking(prob, _runtime.get_num_threads())
        y3_shape = (prob.n, prob.k, prob.oh * prob.ow)
        threads = _runtime.max_threads()
        (sh, sw), (dh, dw) = prob.stride, prob.dilation
        kernel = _im2col.conv2d_implicit_packed
        edge = (prob.r * prob.s * kch * _zmm.MP,)

        def call(x, y, res):
            y3 = y.reshape(y3_shape)
            r3, has_res = _res(None if res is None else res.reshape(y3_shape), 3)
            _runtime.launch(kernel, phased_input(prob, x), wp, b, y3, prob.ow, sh, sw, dh, dw,
                            prob.r, prob.s, act, r3, has_res, kblock, rblock, kch,
                            _workspace.per_thread("implicit_edge", threads, edge), prob.pads[0],
                            prob.h, prob.pads[2], prob.w)
        return call


# implicit_pixels: the pixel-vectorized tile with every tap in its reduction; its rate
# relative to the micro-kernel's, and the tile's store in reduction steps (MR*NV masked
# stores with the epilogue, once per tile)
# On AVX2 its 8 x 32 tile runs as four register groups inside every tap, over the
# few channels of a tap (3 for an RGB stem): measured 1.5-2x slower than the model's
# packed rate there (7x7 stem 5.5-5.8 ms against im2col_packed's 3.0).
IMPLICIT_PIXELS_RATE = 1.0 if planner.VECTOR_LANES == 16 else 0.55
IMPLICIT_PIXELS_STORE_STEPS = 4.0
# The most input channels for which auto considers it is per kind of core
# (planner.IMPLICIT_PIXELS_MAX_CHANNELS), but 8 for 1x1s everywhere: on Zen 5 the 16- and
# 24-channel 1x1s measured level with pointwise_packed or up to 15 % slower (16->96@56
# 40 us against 34), so the 1x1 families keep them.
IMPLICIT_PIXELS_1X1_CHANNELS = 8


def _pixel_tile_lanes(ow):
    """Lanes used by implicit_pixels' tiles along a row of ow pixels: NR-pixel tiles, the
    last one 16 pixels wide where at most 16 are left."""
    full, rest = divmod(ow, _zmm.NR)
    if not rest:
        return 1.0
    return ow / (full * _zmm.NR + (16 if rest <= 16 else _zmm.NR))


class ImplicitPixels(planner.Algorithm):
    """zmm.gemm_tile_taps over the (padded, phase-split) input in place: MR output channels
    x NR pixels of an output row per tile, every (tap, channel) step in registers, the
    tile stored straight into y's rows, each group's rows in panels of their own.  In
    ``auto`` only for inputs of at most planner.IMPLICIT_PIXELS_MAX_CHANNELS channels a
    group (stems; on full-width cores also the 16- and 24-channel 3x3s of large maps;
    1x1s up to IMPLICIT_PIXELS_1X1_CHANNELS), where implicit_packed's channel-vectorized
    tile stores after a handful of steps, and for grouped 3x3s of up to
    IMPLICIT_PIXELS_GROUP_CHANNELS a group."""
    name = "implicit_pixels"
    replayable = True
    uses_blas = False

    def auto_excluded(self, prob):
        most = planner.IMPLICIT_PIXELS_MAX_CHANNELS if prob.r * prob.s > 1 else \
            IMPLICIT_PIXELS_1X1_CHANNELS
        if prob.groups > 1 and prob.cg > 1 and prob.r * prob.s > 1:  # grouped, not depthwise
            most = max(most, IMPLICIT_PIXELS_GROUP_CHANNELS)
        if prob.cg > most:
            return (f"implicit_pixels is for few input channels (<= {most} a group for a "
                    f"{prob.r}x{prob.s} kernel), not {prob.cg}")
        return None

    @staticmethod
    def rblock(prob, threads):
        """Output rows per task: about four tasks per thread."""
        tasks = max(1, -(-4 * threads // max(1, prob.n)))
        return max(1, -(-prob.oh // tasks))

    def cost(self, prob, threads, prepacked=False):
        steps = prob.r * prob.s * prob.cg
        eff = (_pixel_tile_lanes(prob.ow) * _lanes_used(prob.kg, _zmm.MR)
               * steps / (steps + IMPLICIT_PIXELS_STORE_STEPS) * IMPLICIT_PIXELS_RATE)
        rblock = self.rblock(prob, threads)
        tasks = max(1, prob.n) * -(-prob.oh // rblock)
        seconds = prob.flops / (planner.PACKED_GFLOPS * 1e9 * eff)
        if prob.groups > 1:
            seconds *= IMPLICIT_PIXELS_GROUP_SLOWDOWN * (
                IMPLICIT_PIXELS_GROUP_STRIDED if prob.stride[1] > 1 else 1.0)
        seconds = seconds / min(threads, tasks) + planner.PACKED_TASK_S * -(-tasks // threads)
        if not prepacked:
            seconds += prob.k * prob.cg * prob.r * prob.s * 8 / (planner.COPY_GBS * 1e9)
        return (planner.CALL_OVERHEAD_S + planner.PACKED_CALL_S
                + pad_call_s(prob, True, threads)
                + seconds)

    def pack(self, w, groups, packed=None):
        """W as (K, R*S*Cg) with columns in (tap, channel) order, packed by zmm.pack_panels
        (width MR, one chunk, ``groups`` groups of ppg = ceil(Kg/MR) panels): panel p's
        step t*Cg + c at p*R*S*Cg*MR + (t*Cg + c)*MR, p counting over all groups."""
        wp = None if packed is None else packed.get(self.name)
        if wp is None:
            K, Cg, R, S = w.shape
            wm = np.ascontiguousarray(np.asarray(w, np.float32).reshape(K, Cg, R * S)
                                      .transpose(0, 2, 1).reshape(K, R * S * Cg))
            ppg = -(-(K // groups) // _zmm.MR)
            wp = _memory.empty((groups, ppg * R * S * Cg * _zmm.MR), np.float32)
            _zmm.pack_panels(wm, groups, _zmm.MR, R * S * Cg, wp)
            if packed is not None:
                packed[self.name] = wp
        return wp

    def bind(self, prob, w, b, act, packed=None):
        wp = self.pack(w, prob.groups, packed)
        rblock = self.rblock(prob, _runtime.get_num_threads())
        y3_shape = (prob.n, prob.k, prob.oh * prob.ow)
        (sh, sw), (dh, dw) = prob.stride, prob.dilation
        kernel = _im2col.conv2d_implicit_pixels

        def call(x, y, res):
            y3 = y.reshape(y3_shape)
            r3, has_res = _res(None if res is None else res.reshape(y3_shape), 3)
            _runtime.launch(kernel, phased_input(prob, x), wp, b, y3, prob.ow, sh, sw, dh, dw,
                            prob.r, prob.s, prob.groups, act, r3, has_res, rblock)
        return call


# rowdot: each weight row dotted with the gathered receptive fields of a few pixels.
# Its rate while the weights stream (GB/s per thread, measured from L3: 512x256x3x3 at
# one to four pixels) and its multiply-add rate (GFLOP/s per thread, 4x4 register blocks)
ROWDOT_GBS = 30.0
ROWDOT_MAX_PIXELS = 64  # in auto: an 8x8 map at most (64@8x8: 58 us, the next 67-72)
ROWDOT_MIN_ROWS = 16  # output channels per task at least
ROWDOT_SUM_STEPS = 64  # an output's horizontal sum, in reduction steps


class RowDot(planner.Algorithm):
    """kernels/cpu/rowdot.py: y[k, p] = w[k, :] . f[p, :] over the gathered receptive fields,
    the weight in its own (K, C*R*S) layout streamed once.  groups == 1; in ``auto`` for
    at most ROWDOT_MAX_PIXELS output pixels (a small image's last stages)."""
    name = "rowdot"
    replayable = True
    weight_gbs = None  # its cost is the weight stream

    def serves(self, prob):
        if prob.groups != 1:
            return "rowdot needs groups == 1"
        return None

    def auto_excluded(self, prob):
        if prob.n * prob.oh * prob.ow > ROWDOT_MAX_PIXELS:
            return f"rowdot is for a few output pixels (<= {ROWDOT_MAX_PIXELS})"
        return None

    @staticmethod
    def kblock(prob, threads):
        """Output channels per task: one block per thread, a multiple of 4."""
        per = -(-prob.k // max(1, threads))
        return max(ROWDOT_MIN_ROWS, -(-per // 4) * 4)

    def cost(self, prob, threads, prepacked=False):
        kb = self.kblock(prob, threads)
        par = min(threads, -(-prob.k // kb))
        cr = prob.c * prob.r * prob.s
        pixels = prob.n * prob.oh * prob.ow
        stream = 4.0 * prob.k * cr / (ROWDOT_GBS * 1e9)
        # each output ends in a horizontal sum of its vector accumulator: about 64
        # reduction steps' worth, which short reductions (a 64-channel 1x1) feel
        compute = prob.flops / (planner.ROWDOT_GFLOPS * 1e9) * (cr + ROWDOT_SUM_STEPS) / cr
        gather = 4.0 * pixels * cr / (planner.COPY_GBS * 1e9)  # per task, in parallel
        return planner.CALL_OVERHEAD_S + gather + max(stream, compute) / par

    def bind(self, prob, w, b, act, packed=None):
        w2 = np.ascontiguousarray(w).reshape(prob.k, prob.c * prob.r * prob.s)
        kb = self.kblock(prob, _runtime.get_num_threads())
        ntasks = -(-prob.k // kb)
        f_shape = (ntasks, prob.n * prob.oh * prob.ow, prob.c * prob.r * prob.s)
        (sh, sw), (dh, dw) = prob.stride, prob.dilation
        pt, pl = prob.pads[0], prob.pads[2]

        def call(x, y, res):
            r, has_res = _res(res, 4)
            _runtime.launch(_rowdot.conv2d_rowdot, x, w2, b, y,
                            _workspace.get("rowdot_fields", f_shape), sh, sw, dh, dw, pt, pl,
                            prob.r, prob.s, act, r, has_res, kb)
        return call


planner.register(Direct())
planner.register(Im2col())
planner.register(Im2colRegister())
planner.register(Pointwise())
planner.register(PointwiseRegister())
planner.register(Im2colPacked())
planner.register(PointwisePacked())  # after im2col_packed: a strided 1x1 ties, and gathers less
planner.register(ImplicitPacked())
planner.register(ImplicitPixels())
planner.register(Depthwise())
planner.register(DepthwiseBlocked())
planner.register(GroupedBlocked())
planner.register(Winograd(2))
planner.register(Winograd(4))
planner.register(RowDot())
planner.register(PatchPacked())
planner.register(DilatedPhases())
