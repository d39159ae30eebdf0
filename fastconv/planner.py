"""Kernel registry and planner.

Each convolution algorithm registers an :class:`Algorithm`: which problems it
serves (``serves`` returns None or the reason it cannot), what it is expected to
cost (``cost``, seconds, from the model below), and how to run it.  ``plan``
picks the cheapest algorithm that serves a problem when ``algo="auto"``, or
checks the one that was asked for.

Cost model (calibrated on 2-core AVX-512 machines, Zen 4 and Zen 5, and an AVX2 one;
the compute rates per kind of core in ``RATES``, docs/algorithms.md)
-------------------------------------------------------------------------------------
Every family models the same direct-convolution flops at its own rate, the
data it moves, and a fixed cost per parallel task.

* im2col: SGEMM at ``GEMM_GFLOPS`` per thread, scaled by
  ``max(0.1, sqrt(min(1, Kg/64)) * min(1, Cg*R*S/64)**1.5)`` because a single-threaded
  SGEMM with few output channels (M) or a short reduction (K) is memory-bound,
  and by ``sqrt(min(1, tile/128))`` for narrow pixel tiles; the column copy moves
  N*G*Cg*R*S*OH*OW floats at ``COPY_GBS`` GB/s per thread; each task costs
  ``IM2COL_TASK_S`` (an SGEMM call and its packing).
* pointwise (1x1, padding 0): the same SGEMM model with no copy at stride 1
  and a copy of the subsampled input (N*C*OH*OW floats) otherwise.
* Winograd F(m x m, 3 x 3): a*a SGEMMs over the tiles (narrow tile counts cost
  efficiency), the input and output transforms at ``TRANSFORM_GFLOPS``, the
  transformed weights read at ``WEIGHT_GBS``, and the filter transform itself
  unless the caller keeps it (``prepacked``).
* pointwise_register (1x1, stride 1, padding 0, Cg <= 32 in auto) and
  im2col_register (Cg*R*S <= 32 in auto, plus im2col's column copy): a flat
  ``REGISTER_GFLOPS`` per thread (measured 30-37 at reductions of 16..32).
* pointwise_packed and im2col_packed (fastconv's own micro-kernel, zmm.py):
  ``PACKED_GFLOPS`` per thread times the fraction of the micro-kernel's tiles that
  holds real outputs, ``Cr / (Cr + 4)`` for short reductions, and, for the
  pixel-vectorized tile, ``min(1, P/784)**0.3`` on small maps (measured fall-off);
  the same copies as their SGEMM twins, weight packing unless ``prepacked``,
  ``PACKED_TASK_S`` per task, and ``PACKED_CALL_S`` more per call than the others
  (a larger parallel function to dispatch).
* implicit_packed (groups == 1; the channel-vectorized micro-kernel reading the
  padded input tap by tap): ``PACKED_GFLOPS`` times the lanes used in each
  row's 7-pixel groups, ``C / (C + 8)`` (the tile's load and store per tap and
  chunk), the transposed tile's and its own measured rates, and the L2 fit of
  a channel chunk of the input; per image and 32-channel panel, the busiest
  thread's share of the tasks.
* depthwise (groups == C): ``DEPTHWISE_GFLOPS`` per thread plus the input and
  output moved once at ``STREAM_GBS`` GB/s per thread, ``DEPTHWISE_TASK_S`` per
  (n, c) plane.
* depthwise_blocked (multiplier 1, 3x3/5x5/7x7, planes >= 16 pixels): ``DEPTHWISE_BLOCKED_GFLOPS``
  per thread, input and output once at ``BLOCKED_GBS`` (they are transposed in and out),
  ``DEPTHWISE_BLOCKED_TASK_S`` per (n, 16-channel block).
* grouped_blocked (3x3, groups of 2-64 channels in and out): the same model at
  ``GROUPED_BLOCKED_GFLOPS``.
* patch_packed (kernel == stride): pointwise_packed's model over C*R*S channels plus the
  space-to-depth copy at ``STRIDED_GATHER_GELEMS``; dilated_phases (stride 1, dilation
  > 1): the cheapest replayable family's model for the batch of dilation phases plus the
  copies in and out at the same rate (_algorithms.py).
* rowdot (groups == 1; in auto for at most 64 output pixels): the weights streamed once
  at ``ROWDOT_GBS`` or the flops at ``ROWDOT_GFLOPS`` per thread (each output's
  horizontal sum counted as ``ROWDOT_SUM_STEPS`` more reduction steps), whichever is
  slower, plus each task's gather of the receptive fields.
* Every family but rowdot is also held to a floor (``modelled``): its weights read once
  at ``weight_gbs`` GB/s per thread (``WEIGHT_STREAM_GBS``; Winograd's transformed
  weights at its own rate).  On 1x1-4x4 maps the flops are nothing and the weights are
  the cost, which the per-family models (tiles and flops) do not see.
* direct: ``DIRECT_GFLOPS`` per thread with unit-stride width loops, divided by
  ``DIRECT_STRIDED_PENALTY`` when the width loop is a gather (sw > 1); each
  task (one output row of up to 4 channels) costs ``DIRECT_TASK_S``.

Work is divided by ``min(threads, tasks)``, and every call pays
``CALL_OVERHEAD_S``.  Taps that only ever read padding are trimmed first where that
is modelled cheaper (``live_taps``, ``Trimmed``).  The planner never times anything.
"""
from dataclasses import dataclass, field

import numpy as np

from . import _runtime
from .kernels.cpu.zmm import HOST_CPU as _HOST_CPU
from .kernels.cpu.zmm import VW as _VW

COPY_GBS = 12.0
IM2COL_TASK_S = 1.5e-6
DIRECT_STRIDED_PENALTY = 3.0
DIRECT_TASK_S = 0.05e-6
STREAM_GBS = 10.0
DEPTHWISE_TASK_S = 0.1e-6
BLOCKED_GBS = 30.0
DEPTHWISE_BLOCKED_TASK_S = 0.5e-6
WEIGHT_GBS = 40.0
CALL_OVERHEAD_S = 10e-6
PACKED_TASK_S = 0.5e-6
PAD_CALL_S = 6e-6  # the padded copy some families make first: one more parallel call (measured 6.4 us)
# measured 10-20 GB/s for two threads, 1x1 and 3x3 weights of 1-2.4 MB at 1-4 pixels
WEIGHT_STREAM_GBS = 8.0
# the sparse Winograd kernel's transforms (fastconv/sparse.py, winograd_sparse_cost): V's
# and M's bytes with every tile row's tiles padded to 16-tile vectors, written and read at
# this rate whatever the thread count (Zen 4, ResNet-50's 3x3 maps, F(2x2) and F(4x4):
# 12-36 GB/s at one thread, 17-31 at two)
TRANSFORM_GBS = 22.0
# an input larger than this (a quarter of the 32 MiB L3 the two cores share, with other
# tenants) comes from memory rather than the caches: kernels that read it in short runs of
# many planes then prefetch further ahead than the hardware does (sparse tiles, the 1x1's
# column blocks; measured in kernels/cpu/sparse.py and zmm.gemm_block)
STREAMED_BYTES = 8 << 20
PACKED_CALL_S = 1e-6  # more per call than the SGEMM families (measured 11-16 us against 12-15, 1x1 on 4x4 and 8x8; 8 us before the repeat-call fast path)

# The compute rates (GFLOP/s a thread) depend on the kind of core; ``RATES`` holds one
# table per kind, chosen by ``rates_for`` from the vector width and LLVM's name of the CPU.
# "avx512" is the AVX-512 machine the model was calibrated on (Zen 4), whose cores split
# each 512-bit multiply-add into two 256-bit halves.  The other two:
#
# * "avx2" (no AVX-512): the kernels run on 8-lane vectors (kernels/cpu/zmm.py VW);
#   measured on a Zen 3 (2 threads, batch 1): SGEMM 67 GFLOP/s a thread (the measured
#   roof, 134 for two), the packed micro-kernels 47-56 in the ResNet layers (their tiles
#   run as several register groups there), the blocked depthwise rows half their AVX-512
#   rate; the plain Numba loops ~0.6 of theirs.
# * "avx512-full" (Zen 5, ``FULL_WIDTH_CPUS``): two whole 512-bit multiply-adds a cycle.
#   Measured on a Zen 5 (2 threads, batch 1, docs/performance.md): the packed
#   micro-kernel 187-250 GFLOP/s on one thread over two runs (1x1 256-64@56, 1024-256@14
#   and 64-256@56; implicit 3x3 512@7 and 128@28), where the Zen 4 table says 140; Winograd's
#   transforms about twice Zen 4's rate (the F(2x2) and F(4x4) layers' two-thread times
#   fit 30 within 10-20 %).  OpenBLAS runs its AVX2 kernels there (SGEMM 94-110 a
#   thread), so the SGEMM rate stays, and Winograd F(4x4)'s products run on the
#   micro-kernel too (``WINOGRAD_PACKED``: F(m x m) -> the tiles an image from which
#   they do): 128@28 0.48 ms against 0.69 on SGEMM, 64@56 0.59 against 0.80; on maps of
#   fewer than 32 tiles an image neither size's products do (at batch 8 F(4x4) ran
#   256@14 in 4.4 ms and 512@7 in 5.0 where the model said 2.6 and 2.8; F(2x2) 512@7
#   5.7 against implicit_packed's 4.2).  rowdot's multiply-adds speed up with the
#   micro-kernel's (80 * 235 / 140): 128@4x4 and 64@8x8 measured fastest on rowdot (39
#   and 54 us against im2col_packed's 81 and 59), as the table then plans.
#
# The sparse kernels (fastconv/sparse.py) have their own rates, per thread: SPARSE_GFLOPS
# (CSR conv: nonzero multiply-adds x 2 over every computed tile lane; one broadcast and nv
# vector loads per nonzero, so near the load ports' rate, not the FMA peak), BLOCK_GFLOPS
# (4-channel block CSR: one input read per 4 multiply-adds), SPARSE_TILE_S (per tile and
# output channel: its epilogue and call) and GATHER_GFLOPS (the few-sample sparse linear:
# x values gathered VW at a time, 2 flops per nonzero and sample).  The conv rates are
# fitted by least squares (relative error) to six ResNet-50 layers at 30-95 % sparsity,
# batch 1, two threads: on Zen 4 36 / 85 / 0.02 us; on Zen 5 (two runs, 168 timings) 55 /
# 125 / 0.04 us.  On Zen 5 Zen 4's rates modelled the kernels 1.3-1.5x too slow and chose
# the slower of sparse and dense (by over 5 %) in 24 of 168 cases, the fit in 14; on two
# later runs 25 and 15 (bench/sparse_rates.py, docs/performance.md).  GATHER_GFLOPS was
# measured on Zen 5 (3-3.6 G nonzeros a second a thread on 1000-feature layers); the other
# two tables take lower guesses, not measurements; the AVX2 table keeps Zen 4's conv rates,
# not measured there either.
#
# IMPLICIT_PIXELS_MAX_CHANNELS: the most input channels for which auto considers
# implicit_pixels (RGB stems everywhere).  On Zen 5 it also ran the 16- and 24-channel 3x3s
# of 112x112 and 224x224 maps fastest (16@224 0.85 ms against Winograd F(4x4)'s 2.18, which
# auto took; 24@112 0.50 against implicit_packed's 0.67), not 32 channels or more
# (docs/performance.md).
#
# GROUPED_BLOCKED_GFLOPS: grouped_blocked's rate (3x3 groups of 2-64 channels).  Zen 5:
# 170 fits ResNeXt's and RegNet's grouped 3x3s (2 threads, batch 1, eleven layers of
# 2-32 channels a group; the machine's phases moved single layers by up to 1.5x); the
# other two tables are guesses at half and a quarter of it (half-width vector units),
# not measurements.
#
# Bandwidths and fixed costs are the same model on all three.
RATES = {
    "avx512": {"GEMM_GFLOPS": 110.0, "PACKED_GFLOPS": 140.0, "DEPTHWISE_BLOCKED_GFLOPS": 90.0,
               "DIRECT_GFLOPS": 16.0, "DEPTHWISE_GFLOPS": 30.0, "REGISTER_GFLOPS": 35.0,
               "TRANSFORM_GFLOPS": 15.0, "ROWDOT_GFLOPS": 80.0, "WINOGRAD_PACKED": {2: 0},
               "SPARSE_GFLOPS": 36.0, "BLOCK_GFLOPS": 85.0, "SPARSE_TILE_S": 0.02e-6,
               "GATHER_GFLOPS": 4.0, "IMPLICIT_PIXELS_MAX_CHANNELS": 8,
               "GROUPED_BLOCKED_GFLOPS": 85.0},
    "avx512-full": {"GEMM_GFLOPS": 110.0, "PACKED_GFLOPS": 235.0,
                    "DEPTHWISE_BLOCKED_GFLOPS": 90.0, "DIRECT_GFLOPS": 16.0,
                    "DEPTHWISE_GFLOPS": 30.0, "REGISTER_GFLOPS": 35.0, "TRANSFORM_GFLOPS": 30.0,
                    "ROWDOT_GFLOPS": 135.0, "WINOGRAD_PACKED": {2: 32, 4: 32},
                    "SPARSE_GFLOPS": 55.0, "BLOCK_GFLOPS": 125.0, "SPARSE_TILE_S": 0.04e-6,
                    "GATHER_GFLOPS": 6.0, "IMPLICIT_PIXELS_MAX_CHANNELS": 24,
                    "GROUPED_BLOCKED_GFLOPS": 170.0},
    "avx2": {"GEMM_GFLOPS": 67.0, "PACKED_GFLOPS": 52.0, "DEPTHWISE_BLOCKED_GFLOPS": 45.0,
             "DIRECT_GFLOPS": 10.0, "DEPTHWISE_GFLOPS": 18.0, "REGISTER_GFLOPS": 21.0,
             "TRANSFORM_GFLOPS": 9.0, "ROWDOT_GFLOPS": 40.0, "WINOGRAD_PACKED": {2: 0},
             "SPARSE_GFLOPS": 36.0, "BLOCK_GFLOPS": 85.0, "SPARSE_TILE_S": 0.02e-6,
             "GATHER_GFLOPS": 3.0, "IMPLICIT_PIXELS_MAX_CHANNELS": 8,
             "GROUPED_BLOCKED_GFLOPS": 42.0},
}
FULL_WIDTH_CPUS = ("znver5",)  # LLVM's names of the measured full-width cores
VECTOR_LANES = _VW


def rates_for(cpu, lanes):
    """The name of the rate table (``RATES``) for a CPU (LLVM's name) with ``lanes``-float
    vectors."""
    if lanes == 8:
        return "avx2"
    return "avx512-full" if cpu in FULL_WIDTH_CPUS else "avx512"


def use_rates(name):
    """Set the planner's compute rates to table ``name`` and forget the plans made with the
    others; returns the name of the table that was in use (tests plan for other cores)."""
    global RATE_TABLE
    if name not in RATES:
        raise ValueError(f"use_rates: expected one of {sorted(RATES)}, got {name!r}")
    before, RATE_TABLE = RATE_TABLE, name
    globals().update(RATES[name])
    from . import _algorithms, functional
    functional._plan_cache.clear()
    for f in vars(_algorithms).values():
        if hasattr(f, "cache_clear"):
            f.cache_clear()
    return before


RATE_TABLE = rates_for(_HOST_CPU, _VW)
globals().update(RATES[RATE_TABLE])


@dataclass(frozen=True)
class ConvProblem:
    """One convolution's shape: everything a kernel choice depends on."""
    n: int
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int
    stride: tuple
    pads: tuple          # (top, bottom, left, right)
    dilation: tuple
    groups: int
    oh: int = field(init=False)
    ow: int = field(init=False)

    def __post_init__(self):
        pt, pb, pl, pr = self.pads
        oh = (self.h + pt + pb - self.dilation[0] * (self.r - 1) - 1) // self.stride[0] + 1
        ow = (self.w + pl + pr - self.dilation[1] * (self.s - 1) - 1) // self.stride[1] + 1
        object.__setattr__(self, "oh", oh)
        object.__setattr__(self, "ow", ow)

    @property
    def cg(self):
        return self.c // self.groups

    @property
    def kg(self):
        return self.k // self.groups

    @property
    def flops(self):
        """Multiply-adds counted as 2 flops, bias and activation not counted."""
        return 2 * self.n * self.k * self.cg * self.r * self.s * self.oh * self.ow

    @property
    def is_pointwise(self):
        return (self.r == 1 and self.s == 1 and self.stride == (1, 1)
                and self.pads == (0, 0, 0, 0))

    def describe(self):
        return (f"N={self.n} C={self.c} HxW={self.h}x{self.w} -> K={self.k} "
                f"{self.r}x{self.s}/s{self.stride[0]}x{self.stride[1]} "
                f"pad={self.pads} dil={self.dilation} groups={self.groups} "
                f"-> {self.oh}x{self.ow}")


class Algorithm:
    """A registered convolution algorithm (subclasses fill in the three methods)."""
    name = ""
    uses_blas = False  # True if run() calls BLAS (then fastconv pins it to one thread)
    # True if the bound call (``bind``) launches its kernels through _runtime.launch and
    # does nothing else a later call depends on: a model's plan may then record one call
    # and replay its kernels (graph.py)
    replayable = False
    # GB/s per thread at which the family reads its weights when there are too few
    # pixels to hide them behind the multiply-adds (``stream_floor``); None: its cost
    # model counts the weight reads itself
    weight_gbs = WEIGHT_STREAM_GBS

    def weight_bytes(self, prob):
        """Bytes of weights one call reads (its packed or transformed form)."""
        return 4.0 * prob.k * prob.cg * prob.r * prob.s

    def stream_floor(self, prob, threads):
        """The least a call can take: its weights read once, at ``weight_gbs`` per thread
        (on a 1x1 or 2x2 map every family is bound by this, not by its flops)."""
        if self.weight_gbs is None:
            return 0.0
        return CALL_OVERHEAD_S + self.weight_bytes(prob) / (self.weight_gbs * 1e9 * threads)

    def serves(self, prob):
        """None if this algorithm can run ``prob``, else the reason it cannot."""
        return None

    def auto_excluded(self, prob):
        """None, or why ``auto`` must not pick this algorithm for ``prob`` (e.g. accuracy)."""
        return None

    def cost(self, prob, threads, prepacked=False):
        """Modelled seconds for ``prob`` on ``threads`` threads.

        prepacked: the caller keeps transformed weights between calls (layers do),
        so one-off weight transforms are not part of the cost.
        """
        raise NotImplementedError

    def run(self, prob, x, w, b, y, act, res=None, packed=None):
        """Compute y = act(conv(x, w) + b (+ res)) into y (N, K, OH, OW).

        All arrays float32 C-contiguous; act is an epilogue code (0 none, 1 relu,
        2 relu6, 3 hardswish); res, when given, has y's shape.  packed: a dict the
        caller keeps with this weight, where the algorithm may cache a transformed
        form of it (None: transform on every call).

        Subclasses implement ``run`` or ``bind``; the default runs the bound call.
        """
        if type(self).bind is Algorithm.bind:
            raise NotImplementedError(f"{type(self).__name__} implements neither run nor bind")
        self.bind(prob, w, b, act, packed)(x, y, res)

    def bind(self, prob, w, b, act, packed=None):
        """``run`` for repeated calls: a callable ``(x, y, res)`` with everything that
        does not depend on the arrays (weights packed, blocking sized, workspace
        shapes) decided once.  Layers keep it, so a repeated call of a small layer
        costs the kernel and a few microseconds."""
        def call(x, y, res):
            self.run(prob, x, w, b, y, act, res, packed)
        return call


REGISTRY = {}


def register(algo):
    """Add an algorithm instance to the registry (name must be new)."""
    if algo.name in REGISTRY:
        raise ValueError(f"algorithm {algo.name!r} is registered already")
    REGISTRY[algo.name] = algo
    return algo


@dataclass
class Plan:
    algorithm: Algorithm
    reason: str
    costs: dict


def _live_range(size, out, k, stride, dil, pad):
    """(first, last + 1) of the kernel taps along one axis that read at least one real
    input element for some output position (tap t reads o*stride + t*dil - pad for
    o < out), or None if none does."""
    live = []
    for t in range(k):
        o = max(0, -(-(pad - t * dil) // stride))  # the first o reading a row >= 0
        if o < out and o * stride + t * dil - pad < size:
            live.append(t)
    return (live[0], live[-1] + 1) if live else None


def live_taps(prob):
    """(r0, r1, s0, s1): the smallest window of kernel taps outside which every tap reads
    only padding, widened where needed so the trimmed pads stay >= 0; None when
    nothing can be trimmed (every tap live, or none: the output is the bias alone)."""
    pt, pb, pl, pr = prob.pads
    rows = _live_range(prob.h, prob.oh, prob.r, prob.stride[0], prob.dilation[0], pt)
    cols = _live_range(prob.w, prob.ow, prob.s, prob.stride[1], prob.dilation[1], pl)
    if rows is None or cols is None:
        return None
    (dh, dw) = prob.dilation
    r0, r1 = min(rows[0], pt // dh), max(rows[1], prob.r - pb // dh)
    s0, s1 = min(cols[0], pl // dw), max(cols[1], prob.s - pr // dw)
    if (r0, r1, s0, s1) == (0, prob.r, 0, prob.s):
        return None
    return (r0, r1, s0, s1)


def trimmed(prob, taps):
    """``prob`` with only the taps [r0:r1, s0:s1]: the pads shrink by the dilated extent
    of the taps removed on each side (and the bottom/right ones to what the last output
    row/column still reads), so the output size and every output value are unchanged
    (the taps removed only ever multiplied padding)."""
    r0, r1, s0, s1 = taps
    (dh, dw), (sh, sw), (pt, pb, pl, pr) = prob.dilation, prob.stride, prob.pads
    pt, pl = pt - r0 * dh, pl - s0 * dw
    # bottom/right: no more padding than the last output row/column reads
    pb = min(pb - (prob.r - r1) * dh,
             max(0, (prob.oh - 1) * sh + dh * (r1 - r0 - 1) + 1 - prob.h - pt))
    pr = min(pr - (prob.s - s1) * dw,
             max(0, (prob.ow - 1) * sw + dw * (s1 - s0 - 1) + 1 - prob.w - pl))
    t = ConvProblem(prob.n, prob.c, prob.h, prob.w, prob.k, r1 - r0, s1 - s0, prob.stride,
                    (pt, pb, pl, pr), prob.dilation, prob.groups)
    assert (t.oh, t.ow) == (prob.oh, prob.ow) and min(t.pads) >= 0, (prob, taps)
    return t


class Trimmed(Algorithm):
    """``inner`` run on the trimmed problem with the weight's live taps only.

    On small maps a padded kernel has taps that never read the input: a 3x3 conv with
    padding 1 on a 1x1 map (a ResNet's last stage on a 32x32 image) reads the input
    with its centre tap alone, and the eight others multiply padding.  Such a
    convolution is the same convolution with fewer taps and smaller pads; the weight is
    sliced once and kept in the layer's dict (with the inner algorithm's own cache in a
    dict of its own, since it holds another weight).  ``name`` is the inner algorithm's,
    so plans and ``algo=`` requests stay registry names; ``label`` says what was cut."""

    def __init__(self, inner, full, taps):
        self.inner, self.full, self.taps = inner, full, taps
        self.prob = trimmed(full, taps)
        self.name = inner.name
        self.uses_blas = inner.uses_blas
        self.replayable = inner.replayable
        r0, r1, s0, s1 = taps
        self.label = f"{inner.name} {r1 - r0}x{s1 - s0}/{full.r}x{full.s}"  # taps run/of

    def serves(self, prob):
        return self.inner.serves(self.prob)

    def cost(self, prob, threads, prepacked=False):
        slice_s = 0.0 if prepacked else 4.0 * self.full.k * self.full.cg * self.prob.r \
            * self.prob.s / (STREAM_GBS * 1e9)
        return modelled(self.inner, self.prob, threads, prepacked) + slice_s

    def _weights(self, w, packed):
        key = ("trimmed", self.taps)
        entry = None if packed is None else packed.get(key)
        if entry is None:
            r0, r1, s0, s1 = self.taps
            entry = (np.ascontiguousarray(w[:, :, r0:r1, s0:s1]), {})
            if packed is not None:
                packed[key] = entry
        return entry[0], (None if packed is None else entry[1])

    def run(self, prob, x, w, b, y, act, res=None, packed=None):
        wt, inner_packed = self._weights(w, packed)
        self.inner.run(self.prob, x, wt, b, y, act, res, inner_packed)

    def bind(self, prob, w, b, act, packed=None):
        wt, inner_packed = self._weights(w, packed)
        return self.inner.bind(self.prob, wt, b, act, inner_packed)


def plan(prob, algo="auto", layer="conv2d", prepacked=False):
    """Choose the algorithm for ``prob``: the cheapest that serves it, or the one asked for.

    Where some taps only ever read padding (``live_taps``) the trimmed problem is
    planned too, and a :class:`Trimmed` wrapper is returned when it is modelled cheaper
    (``auto``) or when the algorithm asked for serves it."""
    taps = live_taps(prob)
    if taps is None:
        return _plan(prob, algo, layer, prepacked)
    small = trimmed(prob, taps)
    if algo != "auto":
        if algo not in REGISTRY or REGISTRY[algo].serves(small) is not None:
            return _plan(prob, algo, layer, prepacked)
        return Plan(Trimmed(REGISTRY[algo], prob, taps), "requested; " + _trim_note(prob, small),
                    {})
    full = _plan(prob, algo, layer, prepacked)
    part = _plan(small, algo, layer, prepacked)
    wrapped = Trimmed(part.algorithm, prob, taps)
    threads = _runtime.get_num_threads()
    if wrapped.cost(prob, threads, prepacked) >= modelled(full.algorithm, prob, threads,
                                                          prepacked):
        return full
    return Plan(wrapped, f"{_trim_note(prob, small)}; {part.reason}", part.costs)


def modelled(algo, prob, threads, prepacked=False):
    """The planner's estimate: the family's cost model, but never below its weight
    stream (``Algorithm.stream_floor``)."""
    return max(algo.cost(prob, threads, prepacked), algo.stream_floor(prob, threads))


def can_run(name, prob):
    """Whether ``plan(prob, name)`` succeeds: the registered algorithm serves ``prob`` as
    given or with the taps that only read padding trimmed."""
    algo = REGISTRY[name]
    if algo.serves(prob) is None:
        return True
    taps = live_taps(prob)
    return taps is not None and algo.serves(trimmed(prob, taps)) is None


def _trim_note(prob, small):
    return (f"taps reading only padding skipped: {small.r}x{small.s} of {prob.r}x{prob.s}, "
            f"pads {small.pads}")


def _plan(prob, algo, layer, prepacked):
    threads = _runtime.get_num_threads()
    if algo != "auto":
        if algo not in REGISTRY:
            raise ValueError(f"{layer}: algo must be 'auto' or one of "
                             f"{sorted(REGISTRY)}, got {algo!r}")
        chosen = REGISTRY[algo]
        why = chosen.serves(prob)
        if why is not None:
            raise ValueError(f"{layer}: algo={algo!r} cannot run this convolution: {why}")
        return Plan(chosen, "requested", {})
    costs, raw = {}, {}
    for name, a in REGISTRY.items():
        if a.serves(prob) is None and a.auto_excluded(prob) is None:
            costs[name] = modelled(a, prob, threads, prepacked)
            raw[name] = a.cost(prob, threads, prepacked)
    order = {name: i for i, name in enumerate(REGISTRY)}
    # ties (several families at their weight-stream floor) go to the lower cost model,
    # then to the later-registered, more specialised family
    best = min(costs, key=lambda name: (round(costs[name], 12), round(raw[name], 12),
                                        -order[name]))
    others = ", ".join(f"{n} {c * 1e6:.0f} us" for n, c in sorted(costs.items(), key=lambda i: i[1]))
    return Plan(REGISTRY[best], f"lowest modelled cost ({others})", costs)


def explain(prob, algo="auto", prepacked=False):
    """One line: the problem, the algorithm chosen and why."""
    p = plan(prob, algo, prepacked=prepacked)
    return f"{prob.describe()}: {getattr(p.algorithm, 'label', p.algorithm.name)} ({p.reason})"
