"""A zoo model planned with this machine's rate table against the same model planned with
another table (``planner.RATES``), alternating calls in one process.

    python bench/rates_ab.py --model resnet18 --base avx512 --rounds 150
    python bench/rates_ab.py --model resnet50 --batch 8 --rounds 20

Both are the torch twin imported and optimized.  The base model is built and called
twice with ``planner.use_rates(BASE)``, so its plan is made and its launches recorded
under that table (from its second call a model replays its recorded kernels); then the
machine's own table is restored and the second model is built.  The two then take turns,
one call each, ``--rounds`` times.  Prints which layers the tables plan differently (by
kernel name: whether Winograd F(4x4) runs its products on the micro-kernel follows the
table in use when its launches were recorded and does not show there), the
largest difference between the outputs, and the medians and minima of both, their ratio
and the median of the per-call ratios (this table / base).  On the shared 2-vCPU machine
a slow phase moves both alike, which is why this compares in one process.
"""
import argparse
import time

import numpy as np
from int8_ab import _turns

import fastconv as fc
from fastconv import models, planner
from fastconv.graph import kernel_of


def _build(name, x):
    g = fc.optimize(fc.from_torch(models.torch_twin(name), x), x)
    g(x)
    g(x)
    return g


def _kernels(g, x):
    plan = g._plans().get((x.shape,))
    out = []
    for step in plan.steps:
        node = step[1]
        if node.op == "conv":
            shapes = [plan.shapes[v][0] for v in node.inputs if v]
            out.append((node.name, kernel_of(node, shapes)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18", choices=sorted(models.ZOO))
    ap.add_argument("--base", default="avx512", choices=sorted(planner.RATES))
    ap.add_argument("--rounds", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=1)
    a = ap.parse_args()
    fc.set_num_threads(a.threads)
    x = np.random.default_rng(0).standard_normal((a.batch, 3, a.size, a.size)).astype(np.float32)
    own = planner.use_rates(a.base)
    try:
        base = _build(a.model, x)
    finally:
        planner.use_rates(own)
    new = _build(a.model, x)
    for (layer, kb), (_, kn) in zip(_kernels(base, x), _kernels(new, x)):
        if kb != kn:
            print(f"  {layer}: {kb} -> {kn}")
    print(f"max |difference| {float(np.abs(base(x) - new(x)).max()):.2e}")
    t_end = time.perf_counter() + 1.0
    while time.perf_counter() < t_end:
        base(x)
        new(x)
    sides = {"old": base, "new": new}
    tb, tn = _turns(lambda side: sides[side](x), a.rounds, 0)
    print(f"{a.model}, batch {a.batch}, {a.threads} threads: {a.base} {np.median(tb) * 1e3:.3f} ms "
          f"(min {tb.min() * 1e3:.3f}), {own} {np.median(tn) * 1e3:.3f} ms "
          f"(min {tn.min() * 1e3:.3f}); {own} / {a.base}: medians "
          f"{np.median(tn) / np.median(tb):.3f}, per call {np.median(tn / tb):.3f}")


if __name__ == "__main__":
    main()
