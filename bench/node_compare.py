"""Per-node times of a zoo model in fastconv and in onnxruntime, convolution by
convolution, each runtime in its own process with the same thread count.

    python bench/node_compare.py --model resnet50 --threads 2 --repeat 30

fastconv: the torch twin imported and optimized (``model.profile``: each node timed
inside whole-model runs, medians).  onnxruntime: the same twin exported to ONNX,
all graph optimizations on, its own profiler (``enable_profiling``), medians of the
kernel times over the timed runs.  Both fuse BatchNorm, activations and residual adds
into the convolutions, so the convolutions pair up in order (a fastconv node that runs a
whole inverted residual block with the sum of its convolutions); everything else (pooling,
the classifier, layout reorders) is summed as "other".
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np


def _input(size):
    return np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)


def child_fastconv(model, threads, repeat, size):
    import fastconv as fc
    from fastconv import models
    from fastconv.graph import kernel_of
    fc.set_num_threads(threads)
    x = _input(size)
    g = fc.optimize(fc.from_torch(models.torch_twin(model), x), x)
    times = g.profile(x, repeat=repeat)
    plan = g._plans().get((x.shape,))
    rows = []
    for (fn, node, ins, o, buf), t in zip(plan.steps, times):
        shapes = [plan.shapes[v][0] for v in node.inputs if v]
        block = node.op == "inverted_residual"
        rows.append({"name": node.name, "conv": node.op.startswith("conv") or block,
                     "convs": len(node.name.split("+")) if block else 1,
                     "kernel": kernel_of(node, shapes, "cpu"), "ms": t * 1e3})
    return rows


def child_onnxruntime(model, threads, repeat, size, path):
    from fastconv._peers import export_zoo_onnx, ort_session
    export_zoo_onnx(model, path, 1, size)
    sess = ort_session(path, threads, enable_profiling=True,
                       profile_file_prefix=os.path.join(os.path.dirname(path), "ort_profile"))
    name = sess.get_inputs()[0].name
    x = _input(size)
    warm = max(10, repeat)
    for _ in range(warm + repeat):
        sess.run(None, {name: x})
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    per = {}
    order = []
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            key = e["name"][:-len("_kernel_time")]
            if key not in per:
                per[key] = (e["args"].get("op_name", ""), [])
                order.append(key)
            per[key][1].append(e["dur"] / 1e3)
    return [{"name": k, "conv": per[k][0] in ("Conv", "FusedConv"), "kernel": per[k][0],
             "ms": float(np.median(per[k][1][-repeat:]))} for k in order]


def _grouped(rows, counts):
    """onnxruntime's convolutions summed in runs of ``counts`` (a fastconv node that runs
    a whole inverted residual block stands for its two or three convolutions); ``rows``
    unchanged when the counts do not add up to them."""
    if sum(counts) != len(rows) or all(c == 1 for c in counts):
        return rows
    out, i = [], 0
    for c in counts:
        run = rows[i:i + c]
        out.append({"name": "+".join(r["name"] for r in run), "conv": True,
                    "kernel": "+".join(r["kernel"] for r in run),
                    "ms": sum(r["ms"] for r in run)})
        i += c
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--child")
    ap.add_argument("--onnx")
    a = ap.parse_args()
    if a.child == "fastconv":
        print(json.dumps(child_fastconv(a.model, a.threads, a.repeat, a.size)))
        return
    if a.child == "onnxruntime":
        print(json.dumps(child_onnxruntime(a.model, a.threads, a.repeat, a.size, a.onnx)))
        return
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rt in ("fastconv", "onnxruntime"):
            out = subprocess.run([sys.executable, __file__, "--child", rt, "--model", a.model,
                                  "--threads", str(a.threads), "--repeat", str(a.repeat),
                                  "--size", str(a.size), "--onnx",
                                  os.path.join(tmp, "model.onnx")],
                                 capture_output=True, text=True,
                                 env=dict(os.environ, OMP_NUM_THREADS=str(a.threads)))
            if out.returncode:
                sys.exit(f"{rt} failed: {out.stderr[-1500:]}")
            res[rt] = json.loads(out.stdout.strip().splitlines()[-1])
    fcv = [r for r in res["fastconv"] if r["conv"]]
    orv = _grouped([r for r in res["onnxruntime"] if r["conv"]], [f["convs"] for f in fcv])
    if len(fcv) != len(orv):
        sys.exit(f"{len(fcv)} fastconv convolutions against {len(orv)} in onnxruntime: "
                 "they do not pair up (a fused node whose convolutions onnxruntime does "
                 "not run as separate nodes in the same order; compare such models end to "
                 "end with fastconv bench --compare)")
    print(f"{a.model}, batch 1, {a.threads} threads, per-node medians of {a.repeat} runs (ms)")
    print(f"{'node':28s} {'fastconv kernel':26s} {'fastconv':>9s} {'ort':>9s} {'ort/fc':>7s}")
    for f, o in zip(fcv, orv):
        print(f"{f['name'][:28]:28s} {f['kernel'][:26]:26s} {f['ms']:9.3f} {o['ms']:9.3f} "
              f"{o['ms'] / f['ms']:6.2f}x")
    sums = {}
    for f, o in zip(fcv, orv):
        s = sums.setdefault(f["kernel"], [0.0, 0.0, 0])
        s[0] += f["ms"]
        s[1] += o["ms"]
        s[2] += 1
    print("\nby fastconv kernel (the same convolutions in onnxruntime):")
    for k, (fs, os_, n) in sorted(sums.items(), key=lambda i: -i[1][0]):
        print(f"  {k:26s} {n:3d} convs  fastconv {fs:7.2f}  ort {os_:7.2f}  ({fs - os_:+.2f} ms)")
    fo = sum(r["ms"] for r in res["fastconv"] if not r["conv"])
    oo = sum(r["ms"] for r in res["onnxruntime"] if not r["conv"])
    ft = sum(r["ms"] for r in res["fastconv"])
    ot = sum(r["ms"] for r in res["onnxruntime"])
    print(f"  {'other nodes':26s}            fastconv {fo:7.2f}  ort {oo:7.2f}  "
          f"({fo - oo:+.2f} ms)")
    print(f"  {'total':26s}            fastconv {ft:7.2f}  ort {ot:7.2f}  ({ft - ot:+.2f} ms)")


if __name__ == "__main__":
    main()
