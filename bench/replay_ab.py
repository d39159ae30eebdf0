"""A model with and without the replay of its recorded kernel launches, alternating in
one process (docs/algorithms.md, "Recorded launches").

    python bench/replay_ab.py --model mobilenet_v2 --threads 2 --rounds 12
    python bench/replay_ab.py --model resnet50 --graph          # the imported graph

"without" drops the record before every call, so that call runs the planned path and
records again (the recording itself is a list append per kernel); "with" puts the
record back first.  Prints per-mode medians over rounds (each round the median of
--repeat calls) and the per-round time ratio with / without.
"""
import argparse
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=0, help="calls per round (default by model)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--graph", action="store_true",
                    help="the torch twin imported and optimized (fc.from_torch + fc.optimize)")
    args = ap.parse_args()
    import fastconv as fc
    from fastconv import models
    fc.set_num_threads(args.threads)
    x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    if args.graph:
        m = fc.optimize(fc.from_torch(models.torch_twin(args.model), x), x)
    else:
        m = models.ZOO[args.model]()
    for _ in range(4):
        m(x)
    if args.graph:
        plan = m._plans()[(x.shape,)]
        rec = plan.program

        def put(r):
            plan.program = r
    else:
        records = m.__dict__["_records"]
        rec = records.get()
        put = records.set
    if rec is None:
        raise SystemExit(f"{args.model}: nothing recorded at {args.size}x{args.size}")
    repeat = args.repeat or (20 if "mobilenet" in args.model or args.size < 128 else 8)
    times = {"without": [], "with": []}
    for _ in range(args.rounds):
        for mode, r in (("without", None), ("with", rec)):
            for _ in range(2):
                put(r)
                m(x)
            ts = []
            for _ in range(repeat):
                put(r)
                t0 = time.perf_counter()
                m(x)
                ts.append(time.perf_counter() - t0)
            times[mode].append(float(np.median(ts)) * 1e3)
    kind = "graph" if args.graph else "zoo"
    for mode, v in times.items():
        print(f"{args.model} ({kind}), {args.threads} threads, {mode} replay: "
              f"median {np.median(v):.3f} ms, best round {min(v):.3f} ms")
    ratio = np.array(times["with"]) / np.array(times["without"])
    print("time ratio with / without per round:", " ".join(f"{r:.3f}" for r in ratio),
          f"; median {np.median(ratio):.3f}")


if __name__ == "__main__":
    main()
