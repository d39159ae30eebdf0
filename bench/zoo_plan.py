"""The zoo MobileNetV2's planned forward against its module walk, alternating in one process.

Two instances of the model with the same weights: one runs its plan (the head's, the
blocks', the pooled last 1x1's and the classifier's bound calls, models.MobileNetV2._planned)
from its second call on, the other has the plan switched off and walks its modules on
every call.  Rounds of 20 calls alternate; medians and minima of the rounds' medians.

    python bench/zoo_plan.py --threads 2 --rounds 30
"""
import argparse
import time

import numpy as np

import fastconv as fc
from fastconv import models


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--size", type=int, default=224)
    a = ap.parse_args()
    fc.set_num_threads(a.threads)
    x = np.random.default_rng(0).standard_normal((1, 3, a.size, a.size)).astype(np.float32)
    planned, walk = models.ZOO["mobilenet_v2"](), models.ZOO["mobilenet_v2"]()
    object.__setattr__(walk, "_planned", lambda x: None)  # the module walk on every call
    runs = {"planned": lambda: planned(x), "module walk": lambda: walk(x)}
    for f in runs.values():
        for _ in range(100):
            f()
    np.testing.assert_array_equal(planned(x), walk(x))
    res = {k: [] for k in runs}
    for _ in range(a.rounds):
        for k, f in runs.items():
            ts = []
            for _ in range(20):
                t0 = time.perf_counter()
                f()
                ts.append(time.perf_counter() - t0)
            res[k].append(np.median(ts))
    p, w = np.array(res["planned"]) * 1e3, np.array(res["module walk"]) * 1e3
    print(f"mobilenet_v2 {a.size}x{a.size}, {a.threads} threads, {a.rounds} alternating rounds: "
          f"planned {np.median(p):.3f} ms (min {p.min():.3f}), module walk {np.median(w):.3f} ms "
          f"(min {w.min():.3f}); planned / walk {np.median(p) / np.median(w):.3f} by medians, "
          f"planned faster in {(p < w).sum()} of {a.rounds} rounds")


if __name__ == "__main__":
    main()
