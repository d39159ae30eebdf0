"""Layer shapes off the model zoo's path, planned by fastconv against PyTorch, in one process.

    python bench/shape_sweep.py                 # every shape
    python bench/shape_sweep.py --only dw7      # names containing "dw7"

Grouped (ResNeXt), dilated, 5x5 and 7x7, depthwise 7x7 (ConvNeXt), strided by 3, few
channels on large maps, odd sizes and large batches: ``fc.conv2d`` with its plan
(``auto``, the packed forms kept) and ``torch.nn.functional.conv2d`` take turns, 30
rounds, with a 10 ms pause after each (PyTorch's OpenMP threads spin for a while after a
call, on the cores fastconv's next call needs, and back-to-back turns had fastconv's
large layers at a third of their speed); prints the medians, PyTorch's time over fastconv's, the plan and the largest
difference of the outputs (relative to the output's scale).  Batch 1 and two threads unless
given.
"""
import argparse
import time

import numpy as np

# name: (N, C, H, W, K, R, stride, padding, dilation, groups)
SHAPES = {
    "grouped 32g 128@56 (resnext)": (1, 128, 56, 56, 128, 3, 1, 1, 1, 32),
    "grouped 32g 256@28": (1, 256, 28, 28, 256, 3, 1, 1, 1, 32),
    "grouped 2g 64@56": (1, 64, 56, 56, 64, 3, 1, 1, 1, 2),
    "grouped 8g 1x1 256@14": (1, 256, 14, 14, 256, 1, 1, 0, 1, 8),
    "dilated 2 256@28": (1, 256, 28, 28, 256, 3, 1, 2, 2, 1),
    "5x5 64@56": (1, 64, 56, 56, 64, 5, 1, 2, 1, 1),
    "5x5/2 32@112": (1, 32, 112, 112, 64, 5, 2, 2, 1, 1),
    "3x3/3 64@57": (1, 64, 57, 57, 64, 3, 3, 0, 1, 1),
    "dw5 240@14": (1, 240, 14, 14, 240, 5, 1, 2, 1, 240),
    "dw3/2 96@112": (1, 96, 112, 112, 96, 3, 2, 1, 1, 96),
    "dw7 96@56 (convnext)": (1, 96, 56, 56, 96, 7, 1, 3, 1, 96),
    "dw7 192@28": (1, 192, 28, 28, 192, 7, 1, 3, 1, 192),
    "dw7 384@14": (1, 384, 14, 14, 384, 7, 1, 3, 1, 384),
    "dw7 768@7": (1, 768, 7, 7, 768, 7, 1, 3, 1, 768),
    "dw7/2 96@56": (1, 96, 56, 56, 96, 7, 2, 3, 1, 96),
    "16@224": (1, 16, 224, 224, 16, 3, 1, 1, 1, 1),
    "24@112": (1, 24, 112, 112, 24, 3, 1, 1, 1, 1),
    "odd 37@45 -> 53": (1, 37, 45, 45, 53, 3, 1, 1, 1, 1),
    "1x1 b32 256@14": (32, 256, 14, 14, 256, 1, 1, 0, 1, 1),
    "3x3 b32 64@28": (32, 64, 28, 28, 64, 3, 1, 1, 1, 1),
    "3x3/2 3@512 (seg stem)": (1, 3, 512, 512, 32, 3, 2, 1, 1, 1),
    "rect 64@32x256": (1, 64, 32, 256, 64, 3, 1, 1, 1, 1),
}


def turns(calls, rounds, pause=0.0):
    """{name: median seconds} of the calls taking turns for ``rounds`` rounds, each timed
    call after an untimed one and followed by ``pause`` seconds of sleep."""
    times = {key: [] for key in calls}
    for _ in range(rounds):
        for key, f in calls.items():
            f()
            t0 = time.perf_counter()
            f()
            times[key].append(time.perf_counter() - t0)
            if pause:
                time.sleep(pause)
    return {key: float(np.median(v)) for key, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    import torch
    import torch.nn.functional as TF

    import fastconv as fc
    from fastconv import planner
    from fastconv.functional import conv_problem
    fc.set_num_threads(a.threads)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    print(f"{a.threads} threads, {a.rounds} rounds; us: fastconv, PyTorch, PyTorch / fastconv")
    for name, (n, c, h, w, k, r, s, p, d, g) in SHAPES.items():
        if a.only not in name:
            continue
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        wt = (rng.standard_normal((k, c // g, r, r)) / np.sqrt(c // g * r * r)).astype(np.float32)
        packed = {}
        ours = lambda: fc.conv2d(x, wt, None, s, p, d, g, packed=packed)  # noqa: E731
        xt, wtt = torch.from_numpy(x), torch.from_numpy(wt)

        def theirs():
            with torch.no_grad():
                return TF.conv2d(xt, wtt, None, s, p, d, g)
        want = theirs().numpy()
        err = float(np.abs(ours() - want).max() / max(1.0, np.abs(want).max()))
        # the pool just used stops spinning before the other runs
        tf, tt = turns({"fc": ours, "torch": theirs}, a.rounds, pause=0.01).values()
        plan = planner.plan(conv_problem(x.shape, wt.shape, s, p, d, g, name), prepacked=True)
        print(f"{name:30s} {tf * 1e6:8.1f} {tt * 1e6:8.1f}  {tt / tf:5.2f}x  "
              f"{plan.algorithm.name:18s} err {err:.1e}", flush=True)


if __name__ == "__main__":
    main()
