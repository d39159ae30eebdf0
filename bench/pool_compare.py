"""ResNet's max pool (3x3, stride 2, padding 1 on the stem's 64 x 112 x 112 output) in
fastconv, onnxruntime and PyTorch, each runtime in its own process, alternating rounds.

    python bench/pool_compare.py --rounds 3 --repeat 100
    python bench/pool_compare.py --runtimes fastconv fastconv=/tmp/base   # a tree against another

``fastconv=PATH`` runs fastconv from another source tree (e.g. a ``git worktree`` of an
earlier commit).  Per runtime: the median over rounds of each round's median call (the smallest minimum
in parentheses), NCHW float32 in and out, the same thread count for all.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
from trees import use_tree

SHAPE = (1, 64, 112, 112)


def child(runtime, threads, repeat):
    if runtime.startswith("fastconv="):
        use_tree(runtime.split("=", 1)[1])
    from fastconv._peers import ort_session, timed
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    if runtime.startswith("fastconv"):
        import fastconv as fc
        fc.set_num_threads(threads)
        y = np.empty(SHAPE[:2] + (SHAPE[2] // 2, SHAPE[3] // 2), np.float32)
        run = lambda: fc.max_pool2d(x, 3, 2, 1, out=y)  # noqa: E731  (as the zoo calls it)
    elif runtime == "torch":
        import torch
        torch.set_num_threads(threads)
        xt = torch.from_numpy(x)
        run = lambda: torch.nn.functional.max_pool2d(xt, 3, 2, 1)  # noqa: E731
    else:
        from onnx import TensorProto, helper
        node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                pads=[1, 1, 1, 1])
        out = SHAPE[:2] + (SHAPE[2] // 2, SHAPE[3] // 2)
        graph = helper.make_graph(
            [node], "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        sess = ort_session(model.SerializeToString(), threads)
        run = lambda: sess.run(None, {"x": x})  # noqa: E731
    med, mn = timed(run, repeat)
    print(json.dumps({"median": med, "min": mn}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runtimes", nargs="*", default=["fastconv", "onnxruntime", "torch"])
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.threads, args.repeat)
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    res = {r: [] for r in args.runtimes}
    for i in range(args.rounds):
        for r in args.runtimes:
            print(f"round {i + 1}/{args.rounds}: {r} ...", file=sys.stderr)
            out = subprocess.run([sys.executable, __file__, "--child", r, "--threads",
                                  str(args.threads), "--repeat", str(args.repeat)],
                                 capture_output=True, text=True, env=env, timeout=600)
            if out.returncode != 0:
                print(f"{r}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            res[r].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"max pool 3x3/2 pad 1 on {SHAPE}, {args.threads} threads, median over "
          f"{args.rounds} rounds of the median of {args.repeat} calls (smallest minimum)")
    base = None
    for r, rows in res.items():
        if not rows:
            continue
        med = float(np.median([row["median"] for row in rows])) * 1e6
        mn = min(row["min"] for row in rows) * 1e6
        base = base or med
        print(f"  {r:22s} {med:8.1f} us ({mn:.1f})   fastconv's speed: {med / base:.2f}x")


if __name__ == "__main__":
    main()
