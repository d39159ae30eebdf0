"""A zoo model with and without the grouped-conv families, in alternating processes.

    python bench/grouped_ab.py --model resnext50 --rounds 5

"without" plans as fastconv did before ``grouped_blocked`` existed and ``implicit_pixels``
ran groups: both are switched off for grouped convs (groups > 1, channels a group > 1),
so the grouped 3x3s go to the next family in the model (``im2col_packed`` for
ResNeXt-50).  Each round runs both sides once, each in a fresh process (two threads,
batch 1, 224x224, the median of --repeat calls after two warm-up calls); prints each
side's per-round medians, the median over rounds and the per-round ratios.  Separate
processes because two models of this size in one process slowed each other alike and
hid the difference.
"""
import argparse
import json
import subprocess
import sys

import numpy as np

_CHILD = r"""
import json, sys, time
import numpy as np
import fastconv as fc
from fastconv import _algorithms, models
side, name, repeat, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
fc.set_num_threads(threads)
if side == "without":
    _algorithms.GroupedBlocked.serves = lambda self, prob: "switched off"
    excluded = _algorithms.ImplicitPixels.auto_excluded
    _algorithms.ImplicitPixels.auto_excluded = lambda self, prob: (
        "switched off" if prob.groups > 1 and prob.cg > 1 else excluded(self, prob))
x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
m = models.ZOO[name]()
m(x); m(x)
ts = []
for _ in range(repeat):
    t0 = time.perf_counter(); m(x); ts.append(time.perf_counter() - t0)
print(json.dumps(float(np.median(ts))))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnext50")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    res = {"without": [], "with": []}
    for r in range(a.rounds):
        for side in (("without", "with") if r % 2 == 0 else ("with", "without")):
            out = subprocess.run([sys.executable, "-c", _CHILD, side, a.model, str(a.repeat),
                                  str(a.threads)], check=True, capture_output=True, text=True)
            res[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{a.model}, batch 1, {a.threads} threads, {a.rounds} alternating rounds "
          f"(ms: each process's median of {a.repeat})")
    for side, ts in res.items():
        print(f"{side:8s} " + " ".join(f"{t * 1e3:.2f}" for t in ts)
              + f" | median {np.median(ts) * 1e3:.2f}")
    ratios = [w / wo for w, wo in zip(res["with"], res["without"])]
    print("with / without per round: " + " ".join(f"{q:.2f}" for q in ratios)
          + f"; by medians {np.median(res['with']) / np.median(res['without']):.3f}")


if __name__ == "__main__":
    main()
