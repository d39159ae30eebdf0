"""The CPU convolution algorithms, registered with the planner.

Each class adapts one kernel family to the planner's interface: it says which
problems it serves, models its cost, sizes the kernel's blocking and
workspaces, and calls the kernel.  No loops over data live here.
"""
import numpy as np

from . import _runtime, _workspace, planner
from .kernels.cpu import direct as _direct
from .kernels.cpu import im2col as _im2col
from .kernels.cpu import pad as _pad

COLS_TILE_BYTES = 2 * 1024 * 1024  # column tile per task: about the L2 of two cores (measured best)
MIN_TILE = 32  # narrower SGEMMs run far below peak; split output channels instead


def padded_input(prob, x):
    """x itself when no padding is needed, else a zero-padded copy in a workspace."""
    pt, pb, pl, pr = prob.pads
    if pt == pb == pl == pr == 0:
        return x
    xp = _workspace.get("padded_input", (prob.n, prob.c, prob.h + pt + pb, prob.w + pl + pr))
    _pad.pad_nchw(x, xp, pt, pl)
    return xp


class Direct(planner.Algorithm):
    name = "direct"

    def cost(self, prob, threads):
        gflops = planner.DIRECT_GFLOPS
        if prob.stride[1] != 1:
            gflops /= planner.DIRECT_STRIDED_PENALTY
        tasks = prob.n * prob.groups * -(-prob.kg // _direct.KB) * prob.oh
        par = min(threads, max(1, tasks))
        return planner.CALL_OVERHEAD_S + (prob.flops / (gflops * 1e9)
                                          + tasks * planner.DIRECT_TASK_S) / par

    def run(self, prob, x, w, b, y, act, workspace=None):
        xp = padded_input(prob, x)
        acc = _workspace.get("direct_acc", (_runtime.max_threads(), _direct.KB, prob.ow))
        _direct.conv2d_direct(xp, w, b, y, prob.stride[0], prob.stride[1],
                              prob.dilation[0], prob.dilation[1], prob.groups, act, acc)


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
    units = prob.n * prob.groups
    ntiles = max(1, -(-P * crs * 4 // COLS_TILE_BYTES))
    if units * ntiles < 4 * threads:
        while (units * ntiles) % threads:
            ntiles += 1
    kblocks = 1
    if -(-P // ntiles) < MIN_TILE and ntiles > 1:
        ntiles = max(1, P // MIN_TILE)
        while (units * ntiles * kblocks) % threads and kblocks < prob.kg:
            kblocks += 1
    tile = -(-P // ntiles)
    kblock = -(-prob.kg // kblocks)
    return tile, kblock


class Im2col(planner.Algorithm):
    name = "im2col"
    uses_blas = True

    def cost(self, prob, threads):
        crs = prob.cg * prob.r * prob.s
        P = prob.oh * prob.ow
        eff = max(0.1, (min(1.0, prob.kg / 64.0) * min(1.0, crs / 64.0)) ** 0.5)
        gemm = prob.flops / (planner.GEMM_GFLOPS * 1e9 * eff)
        copy = 0.0 if prob.is_pointwise else prob.n * prob.groups * crs * P * 4 / (planner.COPY_GBS * 1e9)
        tile, kblock = im2col_blocking(prob, threads)
        tasks = max(1, prob.n * prob.groups * -(-P // tile) * -(-prob.kg // kblock))
        par = min(threads, tasks)
        return planner.CALL_OVERHEAD_S + (gemm + copy + tasks * planner.IM2COL_TASK_S) / par

    def run(self, prob, x, w, b, y, act, workspace=None):
        threads = _runtime.get_num_threads()
        wmat = w.reshape(prob.k, -1)
        y3 = y.reshape(prob.n, prob.k, prob.oh * prob.ow)
        if prob.is_pointwise:
            kblock = prob.kg
            tasks = prob.n * prob.groups
            if tasks < threads:
                kblock = max(8, -(-prob.kg // -(-threads // tasks)))
            x3 = x.reshape(prob.n, prob.c, prob.h * prob.w)
            _im2col.conv2d_gemm_1x1(x3, wmat, b, y3, prob.groups, act, kblock)
            return
        xp = padded_input(prob, x)
        tile, kblock = im2col_blocking(prob, threads)
        crs = wmat.shape[1]
        nthreads = _runtime.max_threads()
        cols = _workspace.get("im2col_cols", (nthreads, crs * tile))
        acc = _workspace.get("im2col_acc", (nthreads, kblock * tile))
        _im2col.conv2d_im2col(xp, wmat, b, y3, prob.ow, prob.stride[0], prob.stride[1],
                              prob.dilation[0], prob.dilation[1], prob.groups,
                              prob.r, prob.s, act, tile, kblock, cols, acc)


planner.register(Direct())
planner.register(Im2col())
