"""Kernel registry and planner.

Each convolution algorithm registers an :class:`Algorithm`: which problems it
serves (``serves`` returns None or the reason it cannot), what it is expected to
cost (``cost``, seconds, from the model below), and how to run it.  ``plan``
picks the cheapest algorithm that serves a problem when ``algo="auto"``, or
checks the one that was asked for.

Cost model (calibrated on a 2-core AVX-512 machine, see docs/algorithms.md)
---------------------------------------------------------------------------
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
* depthwise_blocked (multiplier 1, 3x3/5x5, planes >= 16 pixels): ``DEPTHWISE_BLOCKED_GFLOPS``
  per thread, input and output once at ``BLOCKED_GBS`` (they are transposed in and out),
  ``DEPTHWISE_BLOCKED_TASK_S`` per (n, 16-channel block).
* direct: ``DIRECT_GFLOPS`` per thread with unit-stride width loops, divided by
  ``DIRECT_STRIDED_PENALTY`` when the width loop is a gather (sw > 1); each
  task (one output row of up to 4 channels) costs ``DIRECT_TASK_S``.

Work is divided by ``min(threads, tasks)``, and every call pays
``CALL_OVERHEAD_S``.  The planner never times anything.
"""
from dataclasses import dataclass, field

from . import _runtime

GEMM_GFLOPS = 110.0
COPY_GBS = 12.0
IM2COL_TASK_S = 1.5e-6
DIRECT_GFLOPS = 16.0
DIRECT_STRIDED_PENALTY = 3.0
DIRECT_TASK_S = 0.05e-6
DEPTHWISE_GFLOPS = 30.0
REGISTER_GFLOPS = 35.0
STREAM_GBS = 10.0
DEPTHWISE_TASK_S = 0.1e-6
DEPTHWISE_BLOCKED_GFLOPS = 90.0
BLOCKED_GBS = 30.0
DEPTHWISE_BLOCKED_TASK_S = 0.5e-6
TRANSFORM_GFLOPS = 15.0
WEIGHT_GBS = 40.0
CALL_OVERHEAD_S = 10e-6
PACKED_GFLOPS = 140.0
PACKED_TASK_S = 0.5e-6
PAD_CALL_S = 6e-6  # the padded copy some families make first: one more parallel call (measured 6.4 us)
PACKED_CALL_S = 1e-6  # more per call than the SGEMM families (measured 11-16 us against 12-15, 1x1 on 4x4 and 8x8; 8 us before the repeat-call fast path)


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


def plan(prob, algo="auto", layer="conv2d", prepacked=False):
    """Choose the algorithm for ``prob``: the cheapest that serves it, or the one asked for."""
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
    costs = {}
    for name, a in REGISTRY.items():
        if a.serves(prob) is None and a.auto_excluded(prob) is None:
            costs[name] = a.cost(prob, threads, prepacked)
    order = {name: i for i, name in enumerate(REGISTRY)}
    # ties go to the later-registered, more specialised family
    best = min(costs, key=lambda name: (round(costs[name], 12), -order[name]))
    others = ", ".join(f"{n} {c * 1e6:.0f} us" for n, c in sorted(costs.items(), key=lambda i: i[1]))
    return Plan(REGISTRY[best], f"lowest modelled cost ({others})", costs)


def explain(prob, algo="auto", prepacked=False):
    """One line: the problem, the algorithm chosen and why."""
    p = plan(prob, algo, prepacked=prepacked)
    return f"{prob.describe()}: {p.algorithm.name} ({p.reason})"
