"""A quantized zoo model (``fc.quantize`` of its torch twin, imported and optimized) end to
end: the plan replaying its int8 layers' recorded launches against the same model run
layer by layer (its qconv steps left out of the replay), in one process, taking turns.

    python bench/quant_models.py --model resnet50 --rounds 30
    python bench/quant_models.py --model resnet18 --threads 2 --batch 8

Prints the medians over the rounds and their ratio (replayed / layer by layer).  Needs
torch (the twin is imported through torch.fx).
"""
import argparse
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, default=224)
    a = ap.parse_args()
    import torch

    import fastconv as fc
    from fastconv import models, ops
    fc.set_num_threads(a.threads)
    torch.set_num_threads(a.threads)
    twin = getattr(models, a.model + "_torch")().eval()
    x = np.random.default_rng(0).standard_normal((a.batch, 3, a.size, a.size)).astype(np.float32)
    model = fc.optimize(fc.from_torch(twin, torch.from_numpy(x)), x)
    replayed, by_layer = fc.quantize(model, [x]), fc.quantize(model, [x])
    planned = ops.planned_qconv
    runs = {"int8 replayed": (replayed, planned), "int8 layer by layer": (by_layer, None)}

    def run(name):
        m, step = runs[name]
        ops.planned_qconv = step if step is not None else (lambda *args: None)
        t0 = time.perf_counter()
        m(x)
        return time.perf_counter() - t0

    names = list(runs)
    for _ in range(4):   # plans, captures, then replays
        for name in names:
            run(name)
    times = {name: [] for name in names}
    for r in range(a.rounds):
        for name in (names if r % 2 else names[::-1]):
            times[name].append(run(name))
    ops.planned_qconv = planned
    med = {name: float(np.median(v)) for name, v in times.items()}
    print(f"{a.model}, batch {a.batch}, {a.threads} threads, medians of {a.rounds} rounds (ms):")
    for name in names:
        print(f"  {name:20s} {med[name] * 1e3:8.2f}")
    print(f"  replayed / layer by layer {med['int8 replayed'] / med['int8 layer by layer']:.3f}")


if __name__ == "__main__":
    main()
