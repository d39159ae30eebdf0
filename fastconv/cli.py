"""The ``fastconv`` command: ``fastconv info`` and ``fastconv bench``."""
import argparse
import json
import platform
import sys
import time

import numpy as np


def _cpu_features():
    flags = set()
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
                elif line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    wanted = ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
              "avx512_bf16", "amx_tile"]
    return model, [f for f in wanted if f in flags]


def info(args=None):
    """What fastconv runs on: versions, CPU, threads, threading layer, BLAS."""
    import llvmlite.binding as llvm
    import numba
    import scipy

    import fastconv as fc
    from fastconv import _runtime
    model, feats = _cpu_features()
    out = {
        "fastconv": fc.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__, "numba": numba.__version__, "scipy": scipy.__version__,
        "cpu": model,
        "cpu_features": feats,
        "llvm_cpu": llvm.get_host_cpu_name(),
        "threads": fc.get_num_threads(),
        "max_threads": _runtime.max_threads(),
        "threading_layer": fc.threading_layer(),
        "backends": {"cpu": "available", "cuda": "no CUDA kernels in this version"},
        "blas": _runtime.blas_info(),
        "numba_cache_dir": numba.config.CACHE_DIR or "(next to the kernel sources, or the user cache)",
    }
    if args is not None and getattr(args, "json", None):
        _write_json(args.json, out)
    for k, v in out.items():
        if k == "blas":
            for lib in v:
                print(f"{'blas':16s} {lib['internal_api']} {lib['version']} "
                      f"({lib.get('architecture')}) {lib['filepath']}")
        else:
            print(f"{k:16s} {', '.join(v) if isinstance(v, list) else v}")
    return 0


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, default=str)


def measure_sgemm_roof(threads, n=2048, repeat=5):
    """Median GFLOP/s of an n^3 float32 matmul with ``threads`` BLAS threads.

    n = 2048: at 1024 the two-thread OpenBLAS split is unstable on a 2-core VM
    (100 to 195 GFLOP/s run to run); at 2048 it reads 195-203 every time.
    """
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    c = np.empty((n, n), np.float32)
    with threadpool_limits(limits=threads, user_api="blas"):
        np.matmul(a, b, out=c)
        ts = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            np.matmul(a, b, out=c)
            ts.append(time.perf_counter() - t0)
    return 2.0 * n ** 3 / float(np.median(ts)) / 1e9


def _time(fn, repeat):
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), float(np.min(ts))


def _capture_convs(model, x):
    """Run the model once and record every convolution call as it runs (fused or not):
    layer name, module, input, weight, bias, activation and residual."""
    from fastconv import nn
    seen = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            def hook(inp, weight, bias, activation=None, residual=None, layer=None, packed=None,
                     _m=m, _name=name, _conv=m.conv):
                keep = lambda a: None if a is None else np.array(a, np.float32)  # noqa: E731
                seen.append((_name, _m, keep(inp), keep(weight), keep(bias), activation,
                             keep(residual)))
                return _conv(inp, weight, bias, activation, residual, layer, packed)
            object.__setattr__(m, "conv", hook)
    try:
        model(x)
    finally:
        for _, m in model.named_modules():
            if "conv" in m.__dict__ and isinstance(m, nn.Conv2d):
                object.__delattr__(m, "conv")
    return seen


def bench(args):
    """Run the built-in model through every algorithm; per-layer table against the SGEMM roof."""
    import fastconv as fc
    from fastconv import functional as F
    from fastconv import models, planner
    from fastconv.kernels import reference as ref

    if args.threads:
        fc.set_num_threads(args.threads)
    threads = fc.get_num_threads()
    progress = (lambda msg: print(msg, file=sys.stderr, flush=True)) if not args.quiet else (lambda m: None)

    t0 = time.perf_counter()
    fc.warmup()
    compile_s = time.perf_counter() - t0
    progress(f"kernels compiled or loaded from cache in {compile_s:.2f} s")
    roof = measure_sgemm_roof(threads)
    time.sleep(0.5)  # let NumPy's BLAS workers stop spinning before fastconv is timed
    progress(f"SGEMM roof ({threads} threads): {roof:.1f} GFLOP/s")

    widths = tuple(args.widths)
    if args.model == "resnet_tiny":
        model = models.resnet_tiny(widths=widths, num_classes=1000)
        model_desc = f"resnet_tiny widths={widths}"
    else:
        model = models.ZOO[args.model]()
        model_desc = args.model
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
    convs = _capture_convs(model, x)
    rows = []
    total = len(convs)
    for i, (name, m, inp, w, b, act, res) in enumerate(convs, 1):
        prob = F.conv_problem(inp.shape, w.shape, m.stride, m.padding, m.dilation, m.groups)
        auto = planner.plan(prob, prepacked=True).algorithm.name
        expected = ref.conv2d(inp, w, b, m.stride, prob.pads, m.dilation, m.groups)
        if res is not None:
            expected = expected + res
        expected = ref.activation(expected, act) if act != "hardswish" else \
            expected * np.clip(expected + 3, 0, 6) / 6
        scale = max(1.0, float(np.abs(expected).max()))
        fused = "+".join(["bn" if not np.array_equal(w, m.weight) else ""] +
                         [act or ""] + ["res" if res is not None else ""]).strip("+")
        for algo in planner.REGISTRY:
            if planner.REGISTRY[algo].serves(prob) is not None:
                continue
            progress(f"[{i}/{total}] {name} {algo}")
            packed = {}
            call = (lambda a=algo, pk=packed: F.conv2d(inp, w, b, m.stride, m.padding, m.dilation,
                                                       m.groups, activation=act, algo=a,
                                                       residual=res, packed=pk))
            tc = time.perf_counter()
            y = call()
            first_s = time.perf_counter() - tc
            err = float(np.abs(y - expected).max()) / scale
            med, mn = _time(call, args.repeat)
            gflops = prob.flops / med / 1e9
            rows.append({"layer": name, "shape": prob.describe(), "algo": algo,
                         "fused": fused.replace("++", "+"),
                         "auto": algo == auto, "median_ms": med * 1e3, "min_ms": mn * 1e3,
                         "first_call_ms": first_s * 1e3, "gflops": gflops,
                         "roof_pct": 100.0 * gflops / roof, "rel_err": err,
                         "ok": err < 1e-4})
    progress("end-to-end model latency")
    model(x)
    e2e_med, e2e_min = _time(lambda: model(x), max(3, args.repeat // 2))

    hdr = f"{'layer':24s} {'fused':12s} {'algo':9s} {'auto':4s} {'median ms':>10s} {'min ms':>8s} {'GFLOP/s':>8s} {'% roof':>7s} {'rel err':>8s}"
    print(f"fastconv {fc.__version__} bench: {model_desc} batch={args.batch} "
          f"{args.size}x{args.size}, {threads} threads ({fc.threading_layer()})")
    print(f"SGEMM roof {roof:.1f} GFLOP/s; kernel compile/cache-load {compile_s:.2f} s "
          f"(reported apart from run time)")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['layer']:24s} {r['fused']:12s} {r['algo']:9s} {'*' if r['auto'] else '':4s} {r['median_ms']:10.3f} "
              f"{r['min_ms']:8.3f} {r['gflops']:8.1f} {r['roof_pct']:7.1f} {r['rel_err']:8.1e}"
              f"{'' if r['ok'] else '  MISMATCH'}")
    print(f"end-to-end (auto): median {e2e_med * 1e3:.2f} ms, min {e2e_min * 1e3:.2f} ms")
    bad = [r for r in rows if not r["ok"]]
    if args.json:
        _write_json(args.json, {"version": fc.__version__, "threads": threads, "model": args.model,
                                "sgemm_roof_gflops": roof, "compile_s": compile_s,
                                "batch": args.batch, "size": args.size, "widths": widths,
                                "layers": rows, "end_to_end_ms": {"median": e2e_med * 1e3,
                                                                  "min": e2e_min * 1e3}})
        progress(f"wrote {args.json}")
    if bad:
        print(f"{len(bad)} results did not match the reference", file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    from fastconv import models
    p = argparse.ArgumentParser(prog="fastconv", description="fast CNN inference kernels in Numba")
    sub = p.add_subparsers(dest="cmd", required=True)
    pi = sub.add_parser("info", help="version, CPU features, threads, threading layer, BLAS")
    pi.add_argument("--json", help="also write the information to this file")
    pb = sub.add_parser("bench", help="benchmark a built-in model layer by layer (default: "
                                      "a ResNet-style network)")
    pb.add_argument("--model", default="resnet_tiny", choices=sorted(models.ZOO),
                    help="built-in model (deterministic weights)")
    pb.add_argument("--batch", type=int, default=1)
    pb.add_argument("--size", type=int, default=224, help="input height and width")
    pb.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512],
                    help="channels of the four stages (resnet_tiny only)")
    pb.add_argument("--repeat", type=int, default=10, help="timed runs per layer and algorithm")
    pb.add_argument("--threads", type=int, default=0, help="threads (default: all)")
    pb.add_argument("--json", help="write machine-readable results to this file")
    pb.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = p.parse_args(argv)
    if args.cmd == "bench":
        if args.batch < 1 or args.size < 32 or args.repeat < 1:
            p.error("--batch and --repeat must be >= 1 and --size >= 32")
        return bench(args)
    return info(args)


if __name__ == "__main__":
    sys.exit(main())
