"""fc.int8_gemm per call on a set of shapes (uint8 a, int8 b packed once, as a layer
keeps its weights), optionally from another source tree, to compare trees in
alternating processes:

    git worktree add /tmp/base <commit>
    for t in /tmp/base . /tmp/base .; do python bench/int8_gemm_shapes.py --tree $t; done

Prints one JSON line: per shape "MxKxN", the median seconds of --repeat calls.
"""
import argparse
import json
import time

import numpy as np
from trees import use_tree

SHAPES = [(1024, 1024, 1024), (1000, 2048, 1000), (256, 512, 256), (64, 1024, 1000),
          (8, 4096, 4096), (1, 2048, 1000), (8, 2048, 1000), (1, 512, 512), (8, 512, 512),
          (4096, 256, 64)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    if args.tree:
        use_tree(args.tree)
    import fastconv as fc
    fc.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    out = {}
    for m, k, n in SHAPES:
        a = rng.integers(0, 256, (m, k)).astype(np.uint8)
        b = rng.integers(-128, 128, (k, n)).astype(np.int8)
        packed = {}
        for _ in range(5):
            fc.int8_gemm(a, b, packed=packed)
        ts = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fc.int8_gemm(a, b, packed=packed)
            ts.append(time.perf_counter() - t0)
        out[f"{m}x{k}x{n}"] = float(np.median(ts))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
