"""A zoo model's recorded kernel launches, each timed on its own, summed per kernel.

    python bench/launch_profile.py --model resnet18 --threads 2 --rounds 20
    python bench/launch_profile.py --model resnet18 --tree /tmp/base   # another source tree
    python bench/launch_profile.py --model resnet50 --each transform,gemms --alone

One inference is captured (``_runtime.capture``: the kernels and arguments the model
launches, in order) and replayed ``--rounds`` times, every launch timed; per kernel the
launches per inference and their mean time per inference (the first rounds are warm-up).
The launches run back to back in the model's order, so each sees the cache the one
before it leaves, as in the model; the sum is a little above the model's time (the
timer around every launch).  ``--tree PATH`` imports fastconv from another checkout
(e.g. a ``git worktree`` of an earlier commit) to compare kernels before and after.
``--each NAMES`` (comma-separated parts of kernel names) also lists every matching
launch with its arrays' shapes and its median time in the model; ``--alone`` adds the
same launch repeated on its own (its data then stays in the caches): what the model's
order costs each kernel.
"""
import argparse
import collections
import time

import numpy as np
from trees import use_tree


def capture_inference(model_name, size, threads):
    """The zoo model's (or, for a name ending in .onnx, that file's, imported and
    optimized) kernel launches of one warm batch-1 inference (_runtime.capture;
    .launches: (kernel, arguments) in order, .complete)."""
    import fastconv as fc
    from fastconv import _runtime, models
    fc.set_num_threads(threads)
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    if model_name.endswith(".onnx"):
        model = fc.optimize(fc.from_onnx(model_name), x)
    else:
        model = getattr(models, model_name)()
    for _ in range(3):
        model(x)
    with _runtime.capture() as cap:
        model(x)
    return cap


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--warm", type=int, default=5, help="rounds dropped first")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--tree")
    ap.add_argument("--each", default="", help="list the launches of these kernels")
    ap.add_argument("--alone", action="store_true", help="--each: also time them alone")
    args = ap.parse_args()
    if args.tree:
        use_tree(args.tree)
    cap = capture_inference(args.model, args.size, args.threads)
    launches = cap.launches
    total = collections.defaultdict(float)
    count = collections.Counter()
    timed = max(1, args.rounds - args.warm)
    each = [[] for _ in launches]
    for r in range(max(args.rounds, args.warm + 1)):
        for i, (kernel, kargs) in enumerate(launches):
            t0 = time.perf_counter()
            kernel(*kargs)
            dt = time.perf_counter() - t0
            if r >= args.warm:
                name = getattr(kernel, "__name__", str(kernel))
                total[name] += dt / timed
                count[name] += 1
                each[i].append(dt)
    print(f"{args.model}, {args.threads} threads: {len(launches)} launches an inference"
          + ("" if cap.complete else " (the capture was incomplete: not all of the model)"))
    for name, t in sorted(total.items(), key=lambda kv: -kv[1]):
        print(f"  {name:36s} {count[name] // timed:4d}  {t * 1e3:8.3f} ms")
    print(f"  {'sum':36s}       {sum(total.values()) * 1e3:8.3f} ms")
    parts = [p for p in args.each.split(",") if p]
    if parts:
        print("launch  kernel                          arrays                          "
              "in the model" + ("      alone" if args.alone else ""))
    for i, (kernel, kargs) in enumerate(launches):
        name = getattr(kernel, "__name__", str(kernel))
        if not any(p in name for p in parts):
            continue
        shapes = " ".join("x".join(map(str, a.shape)) for a in kargs
                          if isinstance(a, np.ndarray) and a.ndim > 1)[:30]
        line = f"{i:6d}  {name[:30]:30s}  {shapes:30s}  {np.median(each[i]) * 1e6:9.1f} us"
        if args.alone:
            for _ in range(5):
                kernel(*kargs)
            ts = []
            for _ in range(30):
                t0 = time.perf_counter()
                kernel(*kargs)
                ts.append(time.perf_counter() - t0)
            line += f"  {np.median(ts) * 1e6:9.1f} us"
        print(line)


if __name__ == "__main__":
    main()
