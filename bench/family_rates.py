"""The kernel families' rates on this machine against the planner's rate tables.

    python bench/family_rates.py --threads 1              # one layer per family
    python bench/family_rates.py --threads 2 --candidates 64@56 128@28 512@7

Default: a few ResNet layers, each on the family named, hot (the weights kept packed
as a layer keeps them), median of 60 calls after 0.3 s of warm-up (``_peers.timed``); GFLOP/s and the
planner's modelled time for each table of ``planner.RATES`` that applies to this
vector width (``modelled/measured`` near 1 is a calibrated table).  This is how the
"avx512-full" table's rates were read (docs/algorithms.md, "Full-width AVX-512 cores").

``--candidates``: every algorithm that serves each named layer, taking turns call by
call in one process (so a slow phase of the shared machine moves all of them alike),
sorted by median, with the modelled cost of this machine's table in brackets.
"""
import argparse
import time

import numpy as np

import fastconv as fc
from fastconv import planner
from fastconv._peers import timed
from fastconv.planner import REGISTRY, ConvProblem

# name: (C, H, K, kernel size, stride, pad, batch)
LAYERS = {
    "stem": (3, 224, 64, 7, 2, 3, 1),
    "64@56": (64, 56, 64, 3, 1, 1, 1),
    "64-128@56/2": (64, 56, 128, 3, 2, 1, 1),
    "128@28": (128, 28, 128, 3, 1, 1, 1),
    "128-256@28/2": (128, 28, 256, 3, 2, 1, 1),
    "256@14": (256, 14, 256, 3, 1, 1, 1),
    "256-512@14/2": (256, 14, 512, 3, 2, 1, 1),
    "512@7": (512, 7, 512, 3, 1, 1, 1),
    "1x1 64-128@56/2": (64, 56, 128, 1, 2, 0, 1),
    "1x1 256-64@56": (256, 56, 64, 1, 1, 0, 1),
    "1x1 64-256@56": (64, 56, 256, 1, 1, 0, 1),
    "1x1 1024-256@14": (1024, 14, 256, 1, 1, 0, 1),
    "1x1 320-1280@7": (320, 7, 1280, 1, 1, 0, 1),
    "16@224": (16, 224, 16, 3, 1, 1, 1),
    "16-32@112": (16, 112, 32, 3, 1, 1, 1),
    "24@112": (24, 112, 24, 3, 1, 1, 1),
    "24@56": (24, 56, 24, 3, 1, 1, 1),
    "32@112": (32, 112, 32, 3, 1, 1, 1),
    "1x1 16-96@112": (16, 112, 96, 1, 1, 0, 1),
    "128@4": (128, 4, 128, 3, 1, 1, 1),
    "64@8": (64, 8, 64, 3, 1, 1, 1),
    "b8 128@28": (128, 28, 128, 3, 1, 1, 8),
    "b8 256@14": (256, 14, 256, 3, 1, 1, 8),
    "b8 512@7": (512, 7, 512, 3, 1, 1, 8),
}
FAMILY_LAYERS = [
    ("1x1 256-64@56", "pointwise_packed"), ("1x1 1024-256@14", "pointwise_packed"),
    ("1x1 64-256@56", "pointwise_packed"), ("512@7", "implicit_packed"),
    ("128@28", "implicit_packed"), ("256@14", "im2col_packed"), ("1x1 256-64@56", "pointwise"),
    ("64@56", "winograd_f2x2_3x3"), ("128@28", "winograd_f2x2_3x3"),
    ("128@28", "winograd_f4x4_3x3"), ("stem", "implicit_pixels"),
]
SKIP = ("direct", "im2col_register", "pointwise_register", "depthwise", "depthwise_blocked")


def _layer(name, rng):
    c, h, k, r, s, p, n = LAYERS[name]
    prob = ConvProblem(n, c, h, h, k, r, r, (s, s), (p,) * 4, (1, 1), 1)
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = (rng.standard_normal((k, c, r, r)) * 0.05).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    return prob, x, w, b, s, p


def rates(threads, rng):
    tables = [t for t in planner.RATES if (t == "avx2") == (planner.VECTOR_LANES == 8)]
    print(f"{threads} thread(s), this machine's table: {planner.RATE_TABLE}; "
          f"modelled / measured for " + ", ".join(tables))
    for name, algo in FAMILY_LAYERS:
        prob, x, w, b, s, p = _layer(name, rng)
        pk = {}
        med, best = timed(lambda: fc.conv2d(x, w, b, s, p, algo=algo, packed=pk), 60)
        ratios = []
        for t in tables:
            before = planner.use_rates(t)
            try:
                ratios.append(planner.modelled(REGISTRY[algo], prob, threads, True) / med)
            finally:
                planner.use_rates(before)
        print(f"  {name:17s} {algo:18s} {med * 1e3:7.3f} ms {prob.flops / med / 1e9:6.0f} "
              f"GFLOP/s (best {prob.flops / best / 1e9:4.0f})  "
              + "  ".join(f"{t} {r:.2f}" for t, r in zip(tables, ratios)))


def candidates(names, rng):
    for name in names:
        prob, x, w, b, s, p = _layer(name, rng)
        auto = planner.plan(prob, prepacked=True)
        calls = {}
        for a in REGISTRY:
            if a in SKIP or not planner.can_run(a, prob):
                continue
            pk = {}
            calls[a] = (lambda a, pk: lambda: fc.conv2d(x, w, b, s, p, algo=a, packed=pk))(a, pk)
            calls[a]()
        t_end = time.perf_counter() + 0.3
        while time.perf_counter() < t_end:
            for f in calls.values():
                f()
        ts = {a: [] for a in calls}
        for _ in range(40):
            for a, f in calls.items():
                f()
                for _ in range(3):
                    t0 = time.perf_counter()
                    f()
                    ts[a].append(time.perf_counter() - t0)
        order = sorted((float(np.median(v)), a) for a, v in ts.items())
        label = getattr(auto.algorithm, "label", auto.algorithm.name)
        print(f"{name:17s} auto={label:22s} " + "  ".join(
            f"{a} {ms * 1e3:.3f}" + (f" [{auto.costs[a] * 1e3:.3f}]" if a in auto.costs else "")
            for ms, a in order), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--candidates", nargs="*", metavar="LAYER",
                    help=f"layers of {sorted(LAYERS)}")
    a = ap.parse_args()
    fc.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    if a.candidates is None:
        rates(a.threads, rng)
    else:
        candidates(a.candidates or list(LAYERS), rng)


if __name__ == "__main__":
    main()
