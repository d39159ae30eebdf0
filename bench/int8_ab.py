"""ResNet-50's int8 3x3 layers with and without the seven-pixel row blocks, in one process.

    python bench/int8_ab.py --batch 1 --rounds 60
    python bench/int8_ab.py --batch 8 --rounds 16 --threads 1
    python bench/int8_ab.py --model resnet50 --rounds 60   # a quantized zoo model (torch)

"old" is the same tree with ``quantization._edge_columns`` answering None: no row of
seven-pixel blocks, so the row blocks and task splits the conv had before them.  Each
layer gets a packed dict per side (its planned call kept there), the two outputs are
checked equal, then the calls alternate (which side goes first alternates too).  Prints
the medians (the first four rounds dropped), their ratio new / old, the median of the
per-round ratios (paired) and each side's plan (pixels and channels per task, the row
classes and the edge columns).  With --model, the zoo model's torch twin imported,
optimized and quantized (``fc.quantize``) twice, once per side, each run whole (its plan
replaying the int8 layers), alternating.
"""
import argparse
import time

import numpy as np

import fastconv as fc
from fastconv import quantization as Q

LAYERS = [(128, 28, 1), (256, 14, 1), (512, 7, 1), (128, 56, 2), (256, 28, 2), (512, 14, 2)]


def _turns(run, rounds, warm):
    """(old, new) arrays of the times of run("old") and run("new") taking turns, which goes
    first alternating, the first ``warm`` rounds dropped."""
    times = {"old": [], "new": []}
    for r in range(rounds):
        for side in (("old", "new") if r % 2 else ("new", "old")):
            t0 = time.perf_counter()
            run(side)
            times[side].append(time.perf_counter() - t0)
    return np.array(times["old"][warm:]), np.array(times["new"][warm:])


def _model(a):
    import torch

    from fastconv import models
    torch.set_num_threads(a.threads)
    twin = getattr(models, a.model + "_torch")().eval()
    x = np.random.default_rng(0).standard_normal((a.batch, 3, 224, 224)).astype(np.float32)
    model = fc.optimize(fc.from_torch(twin, torch.from_numpy(x)), x)
    edges, sides, outs = Q._edge_columns, {}, {}
    try:
        for side in ("old", "new"):
            Q._edge_columns = edges if side == "new" else (lambda prob: None)
            Q._geometry_cache.clear()
            sides[side] = fc.quantize(model, [x])
            for _ in range(4):   # planned, captured, replayed
                outs[side] = sides[side](x)
    finally:
        Q._edge_columns = edges
        Q._geometry_cache.clear()
    assert np.array_equal(outs["old"], outs["new"])
    old, new = _turns(lambda side: sides[side](x), a.rounds, 0)
    print(f"int8 {a.model}, batch {a.batch}, {a.threads} threads: old {np.median(old) * 1e3:.2f}"
          f" ms  new {np.median(new) * 1e3:.2f} ms  new/old {np.median(new) / np.median(old):.3f}"
          f" paired {np.median(new / old):.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--model", help="a zoo model quantized whole (needs torch)")
    a = ap.parse_args()
    fc.set_num_threads(a.threads)
    if a.model:
        return _model(a)
    rng = np.random.default_rng(0)
    edges = Q._edge_columns
    for c, h, st in LAYERS:
        x = np.maximum(rng.standard_normal((a.batch, c, h, h)), 0).astype(np.float32)
        wt = (rng.standard_normal((c, c, 3, 3)) / np.sqrt(c * 9)).astype(np.float32)
        xq, sx, zx = fc.quantize_tensor(x, dtype="uint8")
        wq, sw, _ = fc.quantize_tensor(wt, axis=0)
        packed, outs, plans = {}, {}, {}
        try:
            for side in ("old", "new"):
                Q._edge_columns = edges if side == "new" else (lambda prob: None)
                Q._geometry_cache.clear()
                packed[side] = {}
                outs[side] = fc.int8_conv2d(xq, sx, zx, wq, sw, None, st, 1,
                                            packed=packed[side])
                g = Q._geometry(xq.shape, wq.shape, st, 1, 1, 1, "t", True)
                plans[side] = (g[2], g[3], None if g[6] is None else (len(g[6][1]), g[6][2]))
        finally:
            Q._edge_columns = edges
            Q._geometry_cache.clear()
        assert np.array_equal(outs["old"], outs["new"])
        old, new = _turns(lambda side: fc.int8_conv2d(xq, sx, zx, wq, sw, None, st, 1,
                                                      packed=packed[side]), a.rounds, 4)
        print(f"batch {a.batch}, {a.threads} threads, {c}@{h}/{st}: old {np.median(old) * 1e6:.0f}"
              f" us {plans['old']}  new {np.median(new) * 1e6:.0f} us {plans['new']}  new/old "
              f"{np.median(new) / np.median(old):.3f} paired {np.median(new / old):.3f}",
              flush=True)


if __name__ == "__main__":
    main()
