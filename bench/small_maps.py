"""Small maps: every fastconv algorithm on the layers a 32x32 or 64x64 image reaches in
a ResNet's later stages, in one process, with the planner's choice marked.

A layer with one to sixteen output pixels costs what its weights cost to read;
``--cold`` also times 1x1 weights too large to stay cached (eight weights of 9.4 MB
in rotation, each call reading its weight from memory) and prints the GB/s of weights
each family reaches.

    python bench/small_maps.py --threads 2 --repeat 300
    python bench/small_maps.py --cold

prints the numbers docs/performance.md ("Small images") quotes.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fastconv._peers import timed  # noqa: E402

# (C, K, H=W, kernel, stride, padding)
LAYERS = [(64, 64, 8, 3, 1, 1), (128, 128, 4, 3, 1, 1), (256, 256, 2, 3, 1, 1),
          (512, 512, 1, 3, 1, 1), (256, 512, 2, 3, 2, 1), (256, 512, 2, 1, 2, 0),
          (2304, 256, 1, 1, 1, 0), (2304, 256, 2, 1, 1, 0)]


def layers(repeat):
    import fastconv as fc
    from fastconv import functional as F
    from fastconv import planner
    rng = np.random.default_rng(0)
    print(f"{'layer':24s} {'weights':>8s}  auto -> fastest algorithms (median us of {repeat})")
    for c, k, hw, r, st, pad in LAYERS:
        x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
        w = (rng.standard_normal((k, c, r, r)) / np.sqrt(c * r * r)).astype(np.float32)
        b = rng.standard_normal(k).astype(np.float32)
        prob = F.conv_problem(x.shape, w.shape, st, pad)
        auto = planner.plan(prob, prepacked=True).algorithm
        times = []
        for name in planner.REGISTRY:
            if not planner.can_run(name, prob):
                continue
            packed = {}
            med, _ = timed(lambda n=name, pk=packed: fc.conv2d(x, w, b, st, pad, activation="relu",
                                                               algo=n, packed=pk), repeat)
            times.append((med * 1e6, name))
        times.sort()
        label = getattr(auto, "label", auto.name)
        print(f"{c}->{k}@{hw}x{hw} {r}x{r}/{st}".ljust(24)
              + f" {4 * w.size / 1e3:6.0f}KB  {label} -> "
              + ", ".join(f"{n} {us:.0f}" for us, n in times[:6]))


def cold(repeat):
    import time

    import fastconv as fc
    rng = np.random.default_rng(0)
    c, k = 2304, 1024
    ws = [rng.standard_normal((k, c, 1, 1)).astype(np.float32) for _ in range(8)]
    for hw in (1, 2):
        x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
        for algo in ("rowdot", "pointwise", "pointwise_packed", "im2col"):
            packs = [{} for _ in ws]
            for w, pk in zip(ws, packs):
                fc.conv2d(x, w, algo=algo, packed=pk)
            ts = []
            for _ in range(max(1, repeat // 8)):
                for w, pk in zip(ws, packs):
                    t0 = time.perf_counter()
                    fc.conv2d(x, w, algo=algo, packed=pk)
                    ts.append(time.perf_counter() - t0)
            us = float(np.median(ts)) * 1e6
            print(f"{c}->{k} 1x1 at {hw * hw} pixel(s), {algo:16s} {us:6.0f} us "
                  f"{4 * k * c / us / 1e3:5.1f} GB/s of weights (cold)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument("--cold", action="store_true", help="the cold-weight GB/s table instead")
    a = ap.parse_args()
    import fastconv as fc
    fc.set_num_threads(a.threads)
    (cold if a.cold else layers)(a.repeat)


if __name__ == "__main__":
    main()
