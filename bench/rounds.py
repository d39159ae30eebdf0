"""fastconv against onnxruntime on a zoo model, in alternating isolated rounds: each
round runs each runtime once in a fresh process (fastconv._peers.run_isolated, as
``fastconv bench --compare`` does: 2 threads, 0.3 s of warm-up, median of --repeat
calls), so that both meet the machine's slow and quiet phases alike.

    python bench/rounds.py --model mobilenet_v2 --rounds 4            # the nn zoo model
    python bench/rounds.py --model mobilenet_v2 --rounds 4 --graph    # the ONNX export,
                                                                      # fc.optimize'd
"""
import argparse
import os
import tempfile

import numpy as np

from fastconv import _peers


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--graph", action="store_true",
                    help="fastconv runs the ONNX export through fc.from_onnx + fc.optimize")
    a = ap.parse_args()
    onnx = _peers.export_zoo_onnx(a.model, os.path.join(tempfile.mkdtemp(), "m.onnx"), 1, 224)
    spec = {"model": a.model, "batch": 1, "size": 224, "threads": a.threads,
            "repeat": a.repeat, "kwargs": {}}
    res = {"fastconv": [], "onnxruntime": []}
    for _ in range(a.rounds):
        for rt in res:
            s = dict(spec, runtime=rt,
                     onnx=onnx if (rt == "onnxruntime" or a.graph) else None)
            out = _peers.run_isolated(s)
            res[rt].append((out["median_s"] * 1e3, out["min_s"] * 1e3))
    for rt, v in res.items():
        print(f"{rt:12s}", " ".join(f"{m:.2f} (min {b:.2f})" for m, b in v))
    f, o = (np.array([m for m, _ in res[k]]) for k in ("fastconv", "onnxruntime"))
    fm, om = (np.array([b for _, b in res[k]]) for k in ("fastconv", "onnxruntime"))
    print(f"{a.model}: onnxruntime / fastconv per round {np.round(o / f, 2)}; median of "
          f"medians {np.median(o) / np.median(f):.2f}x; best minima {om.min() / fm.min():.2f}x")


if __name__ == "__main__":
    main()
