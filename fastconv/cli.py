"""The ``fastconv`` command: ``fastconv info`` and ``fastconv bench``."""
import argparse
import contextlib
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


def _cuda_status():
    from fastconv import _cuda
    ok, why = _cuda.status()
    return "available" if ok else f"unavailable: {why}"


def info(args=None):
    """What fastconv runs on: versions, CPU, threads, threading layer, BLAS."""
    import llvmlite.binding as llvm
    import numba
    import scipy

    import fastconv as fc
    from fastconv import _runtime, planner
    model, feats = _cpu_features()
    out = {
        "fastconv": fc.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__, "numba": numba.__version__, "scipy": scipy.__version__,
        "cpu": model,
        "cpu_features": feats,
        "llvm_cpu": llvm.get_host_cpu_name(),
        "planner_rates": planner.RATE_TABLE,  # the cost model's table for this kind of core
        "threads": fc.get_num_threads(),
        "max_threads": _runtime.max_threads(),
        "threading_layer": fc.threading_layer(),
        "backends": {"cpu": "available", "cuda": _cuda_status()},
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


LAYER_WARM_S = 0.1  # seconds of calls before timing each (layer, algorithm) of the table


def _time(fn, repeat, warm_s=0.0):
    from ._peers import timed
    return timed(fn, repeat, warm_s)


def _capture_convs(model, x):
    """Run the model once and record every convolution call as it runs (fused or not):
    layer name, module, input, weight, bias, activation and residual."""
    from fastconv import nn
    seen = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            def hook(inp, weight, bias, activation=None, residual=None, layer=None, packed=None,
                     out=None, _m=m, _name=name, _conv=m.conv):
                keep = lambda a: None if a is None else np.array(a, np.float32)  # noqa: E731
                seen.append((_name, _m, keep(inp), keep(weight), keep(bias), activation,
                             keep(residual)))
                return _conv(inp, weight, bias, activation, residual, layer, packed, out)
            object.__setattr__(m, "conv", hook)
    try:
        model(x)
    finally:
        for _, m in model.named_modules():
            if "conv" in m.__dict__ and isinstance(m, nn.Conv2d):
                object.__delattr__(m, "conv")
    return seen


@contextlib.contextmanager
def _on_threads(threads):
    """fastconv's kernels on ``threads`` threads (BLAS pinned as in a fastconv call) for
    the block, the thread count restored after it."""
    import fastconv as fc
    from fastconv import _runtime
    old = fc.get_num_threads()
    fc.set_num_threads(threads)
    try:
        with _runtime.kernel_scope(blas=False):
            yield
    finally:
        fc.set_num_threads(old)


def measure_bandwidth(threads, mib=256, repeat=5):
    """Median GB/s of a parallel STREAM triad over ``mib`` MiB per array (12 bytes/element)."""
    from fastconv.kernels.cpu.stream import triad
    n = mib * 2 ** 20 // 4
    a = np.empty(n, np.float32)
    b = np.ones(n, np.float32)
    c = np.ones(n, np.float32)
    with _on_threads(threads):
        triad(a, b, c, np.float32(0.5), threads * 8)
        ts = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            triad(a, b, c, np.float32(0.5), threads * 8)
            ts.append(time.perf_counter() - t0)
    return 12.0 * n / float(np.median(ts)) / 1e9


def measure_handoff(threads, mib=1, repeat=20):
    """(own, other's) median seconds for every thread to read ``mib`` MiB just written by
    itself, and by the next thread (kernels/cpu/stream.py): their ratio is ~1.0 where the
    threads share their caches.  None on one thread."""
    from fastconv.kernels.cpu.stream import read_blocks, write_blocks
    if threads < 2:
        return None
    buf = np.zeros((threads, mib * 2 ** 18), np.float32)
    out = np.zeros(threads, np.float32)
    res = []
    with _on_threads(threads):
        for shift in (0, 1):
            ts = []
            for k in range(repeat + 2):
                write_blocks(buf, np.float32(k))
                t0 = time.perf_counter()
                read_blocks(buf, shift, out)
                ts.append(time.perf_counter() - t0)
            res.append(float(np.median(ts[2:])))
    return res[0], res[1]


class _Progress:
    """A one-line progress bar on stderr (nothing when quiet or not a terminal run)."""

    def __init__(self, quiet):
        self.quiet = quiet

    def __call__(self, msg, i=None, total=None):
        if self.quiet:
            return
        if i is not None and total:
            done = int(30 * i / total)
            msg = f"[{'#' * done}{'.' * (30 - done)}] {i}/{total} {msg}"
        print(msg, file=sys.stderr, flush=True)


def _zoo_layer_rows(model, x, args, roof, progress):
    """Every conv of a zoo model through every algorithm that serves it, against the reference."""
    from fastconv import functional as F
    from fastconv import planner
    from fastconv.kernels import reference as ref
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
        nbytes = 4.0 * (inp.size + w.size + expected.size)
        for algo in planner.REGISTRY:
            if not planner.can_run(algo, prob):
                continue
            progress(f"{name} {algo}", i, total)
            packed = {}
            call = (lambda a=algo, pk=packed: F.conv2d(inp, w, b, m.stride, m.padding, m.dilation,
                                                       m.groups, activation=act, algo=a,
                                                       residual=res, packed=pk))
            tc = time.perf_counter()
            y = call()
            first_s = time.perf_counter() - tc
            err = float(np.abs(y - expected).max()) / scale
            # warm for --warm seconds first: right after the single-threaded reference
            # and first call, two-thread kernels ran at one thread's speed for their
            # first calls, and with three warm-up calls the 1x1 layers' medians read
            # ~100 GFLOP/s, half of what they run at inside the model
            med, mn = _time(call, args.repeat, warm_s=args.warm)
            gflops = prob.flops / med / 1e9
            rows.append({"layer": name, "shape": prob.describe(), "algo": algo,
                         "fused": fused.replace("++", "+"),
                         "auto": algo == auto, "median_ms": med * 1e3, "min_ms": mn * 1e3,
                         "first_call_ms": first_s * 1e3, "gflops": gflops,
                         "roof_pct": 100.0 * gflops / roof, "rel_err": err,
                         "intensity": prob.flops / nbytes, "ok": err < 1e-4})
    return rows


def _graph_layer_rows(model, x, args, roof):
    """Per node of a graph model: its kernel, median time, GFLOP/s (no reference check); on
    the CUDA backend timed device-resident, nodes that run on the host marked "host:"."""
    from fastconv.graph import kernel_of
    from fastconv.ops import flops
    times = model.profile(x, repeat=args.repeat)
    cuda = getattr(model, "backend", "cpu") == "cuda"
    fallbacks = set(getattr(model, "device_fallbacks", ()) or ())
    plan = model._plans().get((x.shape,)) or model._plan([x])[0]
    rows = []
    for (fn, node, ins, o, buf), t in zip(plan.steps, times):
        in_shapes = [plan.shapes[v][0] for v in node.inputs if v]
        out_shape = plan.shapes[node.outputs[0]][0]
        fl = flops(node, in_shapes, out_shape)
        nbytes = 4.0 * (sum(int(np.prod(s)) for s in in_shapes) + int(np.prod(out_shape)) +
                        sum(int(np.size(p)) for p in node.params.values()))
        gf = fl / t / 1e9 if fl and t > 0 else 0.0
        be = ("host" if node.name in fallbacks else "cuda") if cuda else "cpu"
        kern = kernel_of(node, in_shapes, be)
        rows.append({"layer": node.name, "shape": str(out_shape),
                     "algo": ("host:" + kern) if be == "host" else kern,
                     "fused": node.op, "auto": True, "median_ms": t * 1e3, "min_ms": t * 1e3,
                     "first_call_ms": float("nan"), "gflops": gf,
                     "roof_pct": 100.0 * gf / roof if roof else float("nan"), "rel_err": 0.0,
                     "intensity": fl / nbytes if nbytes else 0.0, "ok": True})
    return rows


def _plot(rows, roof, bandwidth, path, title):
    """Roofline: each auto-chosen layer's GFLOP/s against its arithmetic intensity."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib (pip install 'fastconv[plot]'); no plot written",
              file=sys.stderr)
        return False
    pts = [r for r in rows if r["auto"] and r["gflops"] > 0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = np.logspace(-1, 3, 200)
    ax.plot(xs, np.minimum(roof, bandwidth * xs), "k-", lw=1,
            label=f"roof: SGEMM {roof:.0f} GFLOP/s, memory {bandwidth:.0f} GB/s")
    kinds = sorted({r["algo"] for r in pts})
    for kind in kinds:
        sel = [r for r in pts if r["algo"] == kind]
        ax.scatter([r["intensity"] for r in sel], [r["gflops"] for r in sel], s=18, label=kind)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (direct-convolution FLOP per byte moved)")
    ax.set_ylabel("GFLOP/s (direct-convolution equivalent)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def bench(args):
    """Per-layer table against the SGEMM roof, end-to-end latency, peers in the same run."""
    import os

    import fastconv as fc
    from fastconv import _backend, models

    if args.backend == "cuda":
        from fastconv import _cuda
        ok, why = _cuda.status()
        if not ok:
            print(f"fastconv bench: --backend cuda needs a usable GPU: {why}", file=sys.stderr)
            return 2
    _backend.resolve(args.backend, "fastconv bench")
    if args.threads:
        fc.set_num_threads(args.threads)
    threads = fc.get_num_threads()
    progress = _Progress(args.quiet)
    is_onnx = args.model.endswith(".onnx") or os.path.exists(args.model)
    if not is_onnx and args.model not in models.ZOO:
        print(f"fastconv bench: --model must be one of {sorted(models.ZOO)} or a path to an "
              f".onnx file, got {args.model!r}", file=sys.stderr)
        return 2
    peers = [p for p in (args.compare or "").split(",") if p]
    bad = [p for p in peers if p not in ("torch", "onnxruntime")]
    if bad or (is_onnx and "torch" in peers):
        print(f"fastconv bench: --compare takes torch and/or onnxruntime (torch only for "
              f"built-in models), got {args.compare!r}", file=sys.stderr)
        return 2
    if args.backend == "cuda":
        return _bench_cuda(args, is_onnx, peers, progress)

    t0 = time.perf_counter()
    fc.warmup()
    compile_s = time.perf_counter() - t0
    progress(f"kernels compiled or loaded from cache in {compile_s:.2f} s")
    roof = measure_sgemm_roof(threads)
    bandwidth = measure_bandwidth(threads)
    handoff = measure_handoff(threads)
    time.sleep(0.5)  # let NumPy's BLAS workers stop spinning before fastconv is timed
    progress(f"SGEMM roof ({threads} threads): {roof:.1f} GFLOP/s; memory {bandwidth:.1f} GB/s")

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
    if is_onnx:
        model = fc.from_onnx(args.model)
        shape = (model.example_shapes or [x.shape])[0]
        x = rng.standard_normal((args.batch,) + tuple(shape[1:])).astype(np.float32)
        model = fc.optimize(model, x)
        model_desc = os.path.basename(args.model)
        rows = _graph_layer_rows(model, x, args, roof) if args.layers else []
    else:
        widths = tuple(args.widths)
        model = (models.resnet_tiny(widths=widths) if args.model == "resnet_tiny"
                 else models.ZOO[args.model]())
        model_desc = args.model + (f" widths={widths}" if args.model == "resnet_tiny" else "")
        rows = _zoo_layer_rows(model, x, args, roof, progress) if args.layers else []
    progress("end-to-end model latency")
    model(x)
    e2e_med, e2e_min = _time(lambda: model(x), max(3, args.repeat), warm_s=0.3)

    print(f"fastconv {fc.__version__} bench: {model_desc} batch={args.batch} "
          f"input {tuple(x.shape[1:])}, {threads} threads ({fc.threading_layer()}), backend cpu")
    print(f"SGEMM roof {roof:.1f} GFLOP/s, memory bandwidth {bandwidth:.1f} GB/s; kernel "
          f"compile/cache-load {compile_s:.2f} s (reported apart from run time)")
    if handoff:
        print(f"cross-thread handoff {handoff[1] / handoff[0]:.2f}x (1 MiB another thread "
              f"just wrote read in {handoff[1] * 1e6:.0f} us, its own in "
              f"{handoff[0] * 1e6:.0f}; ~1.0x where the threads share their caches)")
    _print_rows(rows)
    print(f"end-to-end (auto, in this process): median {e2e_med * 1e3:.2f} ms, "
          f"min {e2e_min * 1e3:.2f} ms")

    e2e = {}
    if peers:
        spec = {"model": args.model, "batch": args.batch, "size": args.size, "threads": threads,
                "repeat": max(5, args.repeat),
                "kwargs": {"widths": list(args.widths)} if args.model == "resnet_tiny" else {}}
        e2e = _peer_runs(spec, peers, args, is_onnx, x, progress)
        _print_peer_runs(e2e, f"end-to-end, each runtime in its own process, {threads} threads, "
                              f"median of {spec['repeat']}{_rounds_note(args)}:")
    if args.plot and rows:
        if _plot(rows, roof, bandwidth, args.plot, f"{model_desc}, batch {args.batch}, "
                 f"{threads} threads"):
            progress(f"wrote {args.plot}")
    bad_rows = [r for r in rows if not r["ok"]]
    if args.json:
        _write_json(args.json, {"version": fc.__version__, "threads": threads, "model": args.model,
                                "sgemm_roof_gflops": roof, "bandwidth_gbs": bandwidth,
                                "handoff": None if handoff is None else handoff[1] / handoff[0],
                                "compile_s": compile_s, "batch": args.batch, "size": args.size,
                                "layers": rows, "end_to_end_ms": {"median": e2e_med * 1e3,
                                                                  "min": e2e_min * 1e3},
                                "isolated": e2e})
        progress(f"wrote {args.json}")
    if bad_rows:
        print(f"{len(bad_rows)} results did not match the reference", file=sys.stderr)
        return 1
    return 0


def _peer_runs(spec, peers, args, is_onnx, x, progress, where=""):
    """fastconv and each peer end to end, each in a process of its own
    (fastconv._peers.child, with ``spec``), in ``args.rounds`` rounds: {runtime: result}.
    A built-in model is exported to ONNX for onnxruntime (which needs torch; without it
    that peer is dropped).

    Every round runs each runtime once, the order rotated from round to round, so that
    all of them meet the machine's slow and quiet phases alike.  A runtime's result is its
    first round's dict with ``median_s`` the median of its rounds' medians, ``min_s`` the
    least minimum and ``rounds`` every round's dict; a peer's ``speed`` is the median over
    the rounds of (its median / fastconv's median in the same round), ``speed_rounds``
    those ratios.  A runtime that fails in any round is reported by its first error."""
    import os
    import tempfile

    from fastconv import _peers
    peers = list(peers)
    onnx_path = args.model if is_onnx else None
    if "onnxruntime" in peers and not is_onnx:
        progress("exporting the torch twin to ONNX for onnxruntime")
        tmp = tempfile.mkdtemp(prefix="fastconv-bench-")
        try:
            onnx_path = _peers.export_zoo_onnx(args.model, os.path.join(tmp, "model.onnx"),
                                               args.batch, args.size, **spec["kwargs"])
        except ImportError:
            print("--compare onnxruntime with a built-in model needs torch to export it",
                  file=sys.stderr)
            peers.remove("onnxruntime")
    if is_onnx:
        spec = dict(spec, input_shape=list(x.shape))
    runtimes = ["fastconv"] + peers
    runs = {rt: [] for rt in runtimes}
    rounds = args.rounds
    step = 0
    for r in range(rounds):
        for i in range(len(runtimes)):
            rt = runtimes[(i + r) % len(runtimes)]
            step += 1
            progress(f"end-to-end{where}: {rt} (own process)"
                     + (f", round {r + 1} of {rounds}" if rounds > 1 else ""),
                     step, rounds * len(runtimes))
            s = dict(spec, runtime=rt)
            if rt == "onnxruntime" or (rt == "fastconv" and is_onnx):
                s["onnx"] = onnx_path
            runs[rt].append(_peers.run_isolated(s))
    return _combine_rounds(runs)


def _combine_rounds(runs):
    """{runtime: [one dict per round]} -> {runtime: result}, as _peer_runs describes."""
    e2e = {}
    for rt, res in runs.items():
        bad = [r for r in res if "error" in r]
        if bad:
            e2e[rt] = dict(bad[0])
            continue
        e2e[rt] = dict(res[0], median_s=float(np.median([r["median_s"] for r in res])),
                       min_s=min(r["min_s"] for r in res), rounds=res)
    base = e2e.get("fastconv", {})
    if "error" not in base:
        for rt, r in e2e.items():
            if rt != "fastconv" and "error" not in r:
                ratios = [p["median_s"] / f["median_s"]
                          for p, f in zip(r["rounds"], base["rounds"])]
                r["speed_rounds"] = ratios
                r["speed"] = float(np.median(ratios))
    return e2e


def _print_peer_runs(e2e, header):
    """``header``, then each runtime's median, minimum, first call and speed ratio (over
    several rounds: the median of the same-round ratios, and their range)."""
    print(header)
    for rt, r in e2e.items():
        if "error" in r:
            print(f"  {rt:12s} failed: {r['error']}")
            continue
        ratio = ""
        if "speed" in r:
            ratio = f"   fastconv speed: {r['speed']:.2f}x {rt}"
            if len(r["speed_rounds"]) > 1:
                ratio += (f" (median of {len(r['speed_rounds'])} rounds, "
                          f"{min(r['speed_rounds']):.2f}-{max(r['speed_rounds']):.2f}x)")
        print(f"  {rt:12s} {r['median_s'] * 1e3:9.2f} ms (min {r['min_s'] * 1e3:.2f}, "
              f"first call {r['first_call_s']:.2f} s){ratio}")


def _rounds_note(args):
    return f", {args.rounds} alternating rounds" if args.rounds > 1 else ""


def _print_rows(rows):
    if not rows:
        return
    hdr = (f"{'layer':24s} {'fused':14s} {'algo':18s} {'auto':4s} {'median ms':>10s} "
           f"{'min ms':>8s} {'GFLOP/s':>8s} {'% roof':>7s} {'rel err':>8s}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['layer'][:24]:24s} {r['fused'][:14]:14s} {r['algo'][:18]:18s} "
              f"{'*' if r['auto'] else '':4s} {r['median_ms']:10.3f} "
              f"{r['min_ms']:8.3f} {r['gflops']:8.1f} {r['roof_pct']:7.1f} {r['rel_err']:8.1e}"
              f"{'' if r['ok'] else '  MISMATCH'}")


def measure_device_bandwidth(mib=256, repeat=5):
    """Median GB/s of a device-to-device copy of ``mib`` MiB (bytes read plus written)."""
    from numba import cuda
    n = mib * 2 ** 20 // 4
    a = cuda.device_array(n, np.float32)
    b = cuda.device_array(n, np.float32)
    b.copy_to_device(a)
    cuda.synchronize()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        b.copy_to_device(a)
        cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return 8.0 * n / float(np.median(ts)) / 1e9


def _bench_cuda(args, is_onnx, peers, progress):
    """``fastconv bench --backend cuda``: the model device-resident on the GPU, its nodes timed
    to their synchronization, end to end with the input on the device, checked against the
    CPU backend; peers (PyTorch on the GPU, onnxruntime's CUDA provider) in own processes."""
    import os

    import fastconv as fc
    from fastconv import _cuda, models
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
    kwargs = {"widths": list(args.widths)} if args.model == "resnet_tiny" else {}
    if is_onnx:
        graph = fc.from_onnx(args.model)
        shape = (graph.example_shapes or [x.shape])[0]
        x = rng.standard_normal((args.batch,) + tuple(shape[1:])).astype(np.float32)
        model_desc = os.path.basename(args.model)
    else:
        try:
            twin = models.torch_twin(args.model, **kwargs)
        except ImportError:
            print("fastconv bench: --backend cuda with a built-in model needs torch (the "
                  "device-resident graph is imported from the model's torch twin)",
                  file=sys.stderr)
            return 2
        graph = fc.from_torch(twin, x[:1])
        model_desc = args.model
    progress("optimizing for the CPU (reference) and the GPU")
    cpu = fc.optimize(graph, x, backend="cpu")
    gpu = fc.optimize(graph, x, backend="cuda")
    expected = cpu(x)
    got = gpu(x)
    err = float(np.abs(got - expected).max() / max(1e-30, float(np.abs(expected).max())))
    roof = _cuda.sgemm_roof()
    bandwidth = measure_device_bandwidth()
    rows = _graph_layer_rows(gpu, x, args, roof) if args.layers else []
    from numba import cuda
    xd = cuda.to_device(x)

    def run_device():
        gpu(xd)
        cuda.synchronize()
    progress("end-to-end model latency")
    med, mn = _time(run_device, max(3, args.repeat), warm_s=0.3)
    host_med, _ = _time(lambda: gpu(x), max(3, args.repeat), warm_s=0.1)
    print(f"fastconv {fc.__version__} bench: {model_desc} batch={args.batch} input "
          f"{tuple(x.shape[1:])}, backend cuda ({_cuda.device_name()})")
    print("GPU SGEMM roof " + ("not measured (needs PyTorch with CUDA)" if roof is None else
                               f"{roof:.0f} GFLOP/s (cuBLAS fp32, TF32 off)") +
          f", device copy bandwidth {bandwidth:.0f} GB/s; nodes on the host: "
          f"{gpu.device_fallbacks or 'none'}")
    _print_rows(rows)
    print(f"end-to-end, device-resident input (in this process): median {med * 1e3:.2f} ms, min "
          f"{mn * 1e3:.2f} ms; NumPy in and out (copies included): {host_med * 1e3:.2f} ms; max "
          f"rel err vs the CPU backend {err:.1e}")
    e2e = {}
    if peers:
        spec = {"model": args.model, "batch": args.batch, "size": args.size,
                "threads": fc.get_num_threads(),
                "repeat": max(5, args.repeat), "device": "cuda", "kwargs": kwargs}
        e2e = _peer_runs(spec, peers, args, is_onnx, x, progress, " on the GPU")
        _print_peer_runs(e2e, f"end-to-end on the GPU, each runtime in its own process, input "
                              f"on the device, median of {spec['repeat']} synchronized calls"
                              f"{_rounds_note(args)}:")
    if args.plot and rows and roof:
        if _plot(rows, roof, bandwidth, args.plot, f"{model_desc}, batch {args.batch}, "
                 f"{_cuda.device_name()}"):
            progress(f"wrote {args.plot}")
    elif args.plot:
        print("--plot on the GPU needs the per-layer table and a measured roof (PyTorch with "
              "CUDA); no plot written", file=sys.stderr)
    if args.json:
        _write_json(args.json, {"version": fc.__version__, "backend": "cuda",
                                "device": _cuda.device_name(), "model": args.model,
                                "sgemm_roof_gflops": roof, "bandwidth_gbs": bandwidth,
                                "batch": args.batch, "size": args.size, "layers": rows,
                                "end_to_end_ms": {"median": med * 1e3, "min": mn * 1e3,
                                                  "host_arrays": host_med * 1e3},
                                "rel_err_vs_cpu": err, "host_nodes": gpu.device_fallbacks,
                                "isolated": e2e})
        progress(f"wrote {args.json}")
    if err > 1e-4:
        print(f"the GPU result differs from the CPU backend by {err:.1e} (relative)",
              file=sys.stderr)
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
    pb.add_argument("--model", default="resnet_tiny",
                    help=f"built-in model ({', '.join(sorted(models.ZOO))}; deterministic "
                         "weights) or a path to an .onnx file")
    pb.add_argument("--batch", type=int, default=1)
    pb.add_argument("--size", type=int, default=224, help="input height and width")
    pb.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512],
                    help="channels of the four stages (resnet_tiny only)")
    pb.add_argument("--repeat", type=int, default=10, help="timed runs per layer and algorithm")
    pb.add_argument("--warm", type=float, default=LAYER_WARM_S,
                    help="seconds of calls before timing each layer and algorithm "
                         f"(default {LAYER_WARM_S})")
    pb.add_argument("--threads", type=int, default=0, help="threads (default: all)")
    pb.add_argument("--backend", default="cpu", choices=["cpu", "cuda", "auto"],
                    help="cpu, or cuda: the model device-resident on the GPU, against PyTorch "
                         "on the GPU and onnxruntime's CUDA provider")
    pb.add_argument("--compare", default="",
                    help="peers timed end to end in the same run, each in its own process: "
                         "'torch', 'onnxruntime' or 'torch,onnxruntime'")
    pb.add_argument("--rounds", type=int, default=1,
                    help="with --compare: run every runtime this many times, in rotating "
                         "order, and give each peer's speed as the median of the same-round "
                         "ratios (a machine whose speed drifts then meets all runtimes alike)")
    pb.add_argument("--plot", help="write a roofline plot (needs matplotlib) to this file")
    pb.add_argument("--no-layers", dest="layers", action="store_false",
                    help="skip the per-layer table (end-to-end numbers only)")
    pb.add_argument("--json", help="write machine-readable results to this file")
    pb.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = p.parse_args(argv)
    if args.cmd == "bench":
        if (args.batch < 1 or args.size < 32 or args.repeat < 1 or args.rounds < 1
                or not args.warm >= 0):
            p.error("--batch, --repeat and --rounds must be >= 1, --size >= 32 and --warm >= 0")
        return bench(args)
    return info(args)


if __name__ == "__main__":
    sys.exit(main())
