"""End-to-end latency of one runtime on one model, in a process of its own.

``fastconv bench --compare`` and ``bench/model_compare.py`` start one child per
runtime (fastconv, torch, onnxruntime) so no two thread pools share the cores;
each child builds the model, warms up, times ``repeat`` calls and prints one
JSON line: median and minimum seconds and the first call's seconds.

    python -m fastconv._peers '{"runtime": "torch", "model": "resnet18", ...}'
"""
import json
import os
import subprocess
import sys
import time

import numpy as np


def _input(spec):
    """The timed input: of ``spec["input_shape"]`` (an ONNX model's), else an image batch."""
    shape = spec.get("input_shape") or (spec["batch"], 3, spec["size"], spec["size"])
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


WARM_S = 0.3  # seconds of calls before timing, in every runtime


def timed(fn, repeat, warm_s=WARM_S):
    """(median, minimum) seconds of ``repeat`` calls of ``fn`` after ``warm_s`` seconds
    (and at least three calls) of warm-up.

    A fixed count of warm-up calls is not enough in a fresh process: there the
    first ~0.1 s of two-thread kernels with few long tasks (im2col_packed on the
    stem and on 512@7: 2.4-2.6 ms, then 1.25-1.3 ms) run at one thread's speed
    until the thread pool has settled, so medians of a short run mixed the two.
    Every runtime gets the same warm-up.
    """
    t_end = time.perf_counter() + warm_s
    n = 0
    while n < 3 or time.perf_counter() < t_end:
        fn()
        n += 1
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), float(np.min(ts))


def child(spec):
    """Build the runtime's model, warm up, time it; prints one JSON line."""
    x = _input(spec)
    t0 = time.perf_counter()
    run = (_gpu_runner if spec.get("device") == "cuda" else _cpu_runner)(spec, x)
    run()
    first = time.perf_counter() - t0
    med, mn = timed(run, spec["repeat"])
    print(json.dumps({"median_s": med, "min_s": mn, "first_call_s": first}))


def _cpu_runner(spec, x):
    """One call of the model in the runtime ``spec["runtime"]`` on the CPU."""
    runtime, threads = spec["runtime"], spec["threads"]
    onnx_path = spec.get("onnx")
    if runtime == "fastconv":
        import fastconv as fc
        fc.set_num_threads(threads)
        if onnx_path:
            model = fc.optimize(fc.from_onnx(onnx_path), x)
        else:
            from fastconv import models
            model = models.ZOO[spec["model"]](**spec.get("kwargs", {}))
        run = lambda: model(x)  # noqa: E731
    elif runtime == "torch":
        import torch
        torch.set_num_threads(threads)
        from fastconv import models
        twin = models.torch_twin(spec["model"], **spec.get("kwargs", {}))
        xt = torch.from_numpy(x)

        def run():
            with torch.no_grad():
                return twin(xt)
    elif runtime == "onnxruntime":
        sess = ort_session(onnx_path, threads)
        name = sess.get_inputs()[0].name
        run = lambda: sess.run(None, {name: x})  # noqa: E731
    else:
        raise ValueError(f"unknown runtime {runtime!r}")
    return run


def _gpu_runner(spec, x):
    """The GPU twin of _cpu_runner: input on the device, every call synchronized. fastconv
    runs device-resident (``fc.optimize(..., backend="cuda")``), PyTorch on CUDA with TF32
    off, onnxruntime with its CUDA execution provider (an error when that is not installed)."""
    runtime = spec["runtime"]
    onnx_path = spec.get("onnx")
    if runtime == "fastconv":
        import fastconv as fc
        from numba import cuda
        fc.set_num_threads(spec["threads"])
        if onnx_path:
            graph = fc.from_onnx(onnx_path)
        else:
            from fastconv import models
            graph = fc.from_torch(models.torch_twin(spec["model"], **spec.get("kwargs", {})),
                                  x[:1])
        model = fc.optimize(graph, x, backend="cuda")
        xd = cuda.to_device(x)

        def run():
            model(xd)
            cuda.synchronize()
    elif runtime == "torch":
        import torch
        from fastconv import models
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        twin = models.torch_twin(spec["model"], **spec.get("kwargs", {})).cuda()
        xt = torch.from_numpy(x).cuda()

        def run():
            with torch.no_grad():
                twin(xt)
            torch.cuda.synchronize()
    elif runtime == "onnxruntime":
        import onnxruntime as ort
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError("this onnxruntime has no CUDAExecutionProvider "
                               "(install onnxruntime-gpu)")
        sess = ort.InferenceSession(onnx_path, providers=["CUDAExecutionProvider"])
        io = sess.io_binding()
        xo = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
        io.bind_ortvalue_input(sess.get_inputs()[0].name, xo)
        for o in sess.get_outputs():
            io.bind_output(o.name, "cuda")

        def run():
            sess.run_with_iobinding(io)  # returns once the outputs are ready
    else:
        raise ValueError(f"unknown runtime {runtime!r}")
    return run


def run_isolated(spec, timeout=1800):
    """Run ``child(spec)`` in a fresh interpreter; returns its dict or {'error': ...}."""
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    res = subprocess.run([sys.executable, "-m", "fastconv._peers", json.dumps(spec)],
                         capture_output=True, text=True, env=env, timeout=timeout)
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1][-300:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def ort_session(model, threads, **options):
    """An onnxruntime CPU session of ``model`` (a path or serialized bytes) on ``threads``
    intra-op threads and one inter-op thread, all graph optimizations on; ``options``
    are further SessionOptions attributes (e.g. enable_profiling)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for key, value in options.items():
        setattr(opts, key, value)
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def export_zoo_onnx(name, path, batch, size, **kwargs):
    """The zoo model's torch twin exported to ONNX (opset 17, dynamic batch)."""
    import warnings

    import torch

    from fastconv import models
    twin = models.torch_twin(name, **kwargs)
    x = torch.zeros((batch, 3, size, size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(twin, (x,), path, input_names=["x"], output_names=["y"],
                          opset_version=17, dynamo=False, dynamic_axes={"x": {0: "N"}})
    return path


if __name__ == "__main__":
    child(json.loads(sys.argv[1]))
