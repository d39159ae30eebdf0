"""Two (or more) fastconv source trees on a zoo model, in alternating isolated rounds.

Each round runs every tree once in a fresh process (fastconv._peers.child: 2 threads,
0.3 s of warm-up, median of --repeat calls), so a change is measured against its base
in the same phases of a noisy machine.  A tree is ``label=path`` (a checkout, e.g. a
``git worktree`` of the base commit; its kernels compile into its own cache) with
optional environment settings after a colon:

    git worktree add /tmp/base <commit>
    python bench/tree_compare.py --model mobilenet_v2 --rounds 6 base=/tmp/base new=.
    python bench/tree_compare.py small=.:FASTCONV_HUGE_PAGES=0 huge=.    # one tree, two settings

Prints each tree's per-round medians, the median of them and the best minimum, and
each tree's time relative to the first's (per round and by medians).
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[3])
from trees import use_tree
use_tree(sys.argv[1])
from fastconv import _peers
_peers.child(json.loads(sys.argv[2]))
"""
HERE = os.path.dirname(os.path.abspath(__file__))


def _parse(spec):
    label, _, rest = spec.partition("=")
    path, _, env = rest.partition(":")
    settings = dict(kv.split("=", 1) for kv in env.split(",") if kv)
    return label, os.path.abspath(path or "."), settings


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trees", nargs="+", help="label=path[:VAR=value,...]")
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    a = ap.parse_args()
    trees = [_parse(t) for t in a.trees]
    spec = {"runtime": "fastconv", "model": a.model, "batch": a.batch, "size": 224,
            "threads": a.threads, "repeat": a.repeat, "kwargs": {}, "onnx": None}
    res = {label: [] for label, _, _ in trees}
    for _ in range(a.rounds):
        for label, path, settings in trees:
            env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), **settings)
            out = subprocess.run([sys.executable, "-c", _CHILD, path, json.dumps(spec), HERE],
                                 capture_output=True, text=True, env=env, cwd=path)
            if out.returncode != 0:
                sys.exit(f"{label}: {(out.stderr.strip().splitlines() or ['failed'])[-1]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            res[label].append((r["median_s"] * 1e3, r["min_s"] * 1e3))
    print(f"{a.model}, batch {a.batch}, {a.threads} threads, {a.rounds} alternating rounds "
          f"(ms: each round's median of {a.repeat})")
    first = np.array([m for m, _ in res[trees[0][0]]])
    for label, path, settings in trees:
        med = np.array([m for m, _ in res[label]])
        mins = np.array([b for _, b in res[label]])
        rel = med / first
        ratio = np.median(med) / np.median(first)
        print(f"{label:10s} {' '.join(f'{m:.2f}' for m in med)} | median {np.median(med):.2f}, "
              f"best min {mins.min():.2f}; time vs {trees[0][0]}: {ratio:.3f} by medians, "
              f"per round {' '.join(f'{v:.2f}' for v in rel)}")


if __name__ == "__main__":
    main()
