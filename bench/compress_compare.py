"""int8 and sparse layers against their peers, each runtime in its own process.

    python bench/compress_compare.py --threads 2 --batch 1       # int8 and sparse tables
    python bench/compress_compare.py --gemm --rounds 5           # int8 GEMM 1024^3 vs SGEMM

int8: fastconv's int8 conv (uint8 activations, per-channel int8 weights, float32
out, and requantized uint8 out as QLinearConv's) against fastconv fp32 im2col,
PyTorch's quantized conv (x86 engine, quint8 x qint8) and onnxruntime's
QLinearConv, on the ResNet-50 3x3 and 1x1 layers.  Sparse: fastconv's sparse conv
at 30-90 % magnitude sparsity against the dense conv of fastconv (auto) and PyTorch
on the same layers, pruned unstructured (CSR kernel) and in blocks of 4 output
channels (``fc.prune(..., block=4)``, block CSR kernel), and the 3x3 layers also in
blocks of 4 output channels x one input channel's whole filter (``fc.prune(..., block=4,
whole_filters=True)``, the sparse Winograd kernel where modelled faster); the break-even
sparsity is where it first beats fastconv's dense time, the dense conv timed just before
and after each sparse cell (a dense time from another process and minute had moved
break-evens by 20-60 points on the shared machine, one from the same process minutes
before still 10-30).  With ``--rounds N`` every runtime, the sparse ones
included, takes N turns and each cell is the median over them:

    python bench/compress_compare.py --threads 2 --batch 1 --rounds 3
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from shapes import RESNET50, flops  # noqa: E402

from fastconv._peers import ort_session, timed  # noqa: E402  (timed: the same warm-up for all)

LAYERS = {k: v for k, v in RESNET50.items() if "stem" not in k}
SPARSITIES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _t(fn, repeat):
    return timed(fn, repeat)[0]


def _around(fa, fb, repeat):
    """(fa's time, fb's time): fb timed (``timed``: warm-up, then the median of ``repeat``
    calls) between two timings of fa, whose mean is fa's, all within about a second, so a
    slow phase of the machine moves both alike while each runs hot, as alone.  (Alternating
    the two call by call made each read the other's workspaces back from memory: dense
    Winograd then took up to twice its time.)"""
    before = timed(fa, repeat)[0]
    t = timed(fb, repeat)[0]
    return (before + timed(fa, repeat)[0]) / 2, t


def _data(spec, batch):
    c, h, w, k, r, s, p, g = spec
    rng = np.random.default_rng(0)
    x = np.maximum(rng.standard_normal((batch, c, h, w)), 0).astype(np.float32)  # post-ReLU
    wt = (rng.standard_normal((k, c, r, r)) / np.sqrt(c * r * r)).astype(np.float32)
    return x, wt


def _pruned(fc, wt, amount, block, s, p, x):
    """wt pruned by fc.prune (magnitude, per layer, blocks of ``block`` output channels;
    "4f": 4 output channels x one input channel's whole filter)."""
    from fastconv.graph import Model, Node
    node = Node("conv", "c", ["x"], ["y"], dict(stride=(s, s), pads=(p,) * 4, dilation=(1, 1),
                                                groups=1), {"weight": wt})
    model = fc.prune(Model([node], ["x"], ["y"]), amount, block=4 if block == "4f" else block,
                     whole_filters=block == "4f", example_input=x)
    return model.nodes[0].params["weight"]


def _kernel(pk):
    """The sparse kernel sparse_conv2d chose (and cached in pk) for a weight."""
    from fastconv.sparse import _kernel_name
    m = pk.get(("winograd", None)) or 0
    return _kernel_name(4 if m else pk["csr_block"], m)


def child(runtime, threads, batch, repeat):
    out = {}
    if runtime.startswith("fastconv"):
        import fastconv as fc
        fc.set_num_threads(threads)
    for name, spec in LAYERS.items():
        c, h, w, k, r, s, p, g = spec
        x, wt = _data(spec, batch)
        if runtime == "fastconv-int8":
            xq, sx, zx = fc.quantize_tensor(x, dtype="uint8")
            wq, sw, _ = fc.quantize_tensor(wt, axis=0)
            pk = {}
            out[name] = _t(lambda: fc.int8_conv2d(xq, sx, zx, wq, sw, None, s, p, packed=pk),
                           repeat)
            # requantized uint8 out, as onnxruntime's QLinearConv below writes it
            out[name + "/u8"] = _t(lambda: fc.int8_conv2d(xq, sx, zx, wq, sw, None, s, p,
                                                          packed=pk, out_scale=0.05,
                                                          out_dtype="uint8"), repeat)
        elif runtime == "fastconv-fp32":
            pk = {}
            out[name] = {"im2col": _t(lambda: fc.conv2d(x, wt, None, s, p, algo="im2col"), repeat),
                         "auto": _t(lambda: fc.conv2d(x, wt, None, s, p, packed=pk), repeat)}
        elif runtime == "fastconv-sparse":
            # the dense conv (fastconv's auto plan) timed around each sparse one: the
            # break-even compares the two
            pkd = {}
            res = {}
            for block in (1, 4, "4f") if r > 1 else (1, 4):
                for sp in SPARSITIES:
                    ws = _pruned(fc, wt, sp, block, s, p, x)
                    pk = {}  # the kernel (CSR, block CSR, sparse Winograd): from the zeros
                    res[f"{block}/{sp}/dense"], res[f"{block}/{sp}"] = _around(
                        lambda: fc.conv2d(x, wt, None, s, p, packed=pkd),
                        lambda: fc.sparse_conv2d(x, ws, None, s, p, packed=pk), repeat)
                    res[f"{block}/{sp}/kernel"] = _kernel(pk)
            out[name] = res
        elif runtime == "torch-int8":
            import torch
            torch.set_num_threads(threads)
            torch.backends.quantized.engine = "x86" if "x86" in \
                torch.backends.quantized.supported_engines else "fbgemm"
            from torch.ao.nn.quantized import functional as qF
            xt = torch.quantize_per_tensor(torch.from_numpy(x), float(x.max() / 255), 0,
                                           torch.quint8)
            sw = torch.from_numpy(np.abs(wt).reshape(k, -1).max(1) / 127).double()
            wq = torch.quantize_per_channel(torch.from_numpy(wt), sw, torch.zeros(k).long(), 0,
                                            torch.qint8)
            out[name] = _t(lambda: qF.conv2d(xt, wq, None, s, p, scale=0.05, zero_point=0),
                           repeat)
        elif runtime == "torch":
            import torch
            torch.set_num_threads(threads)
            xt, wtt = torch.from_numpy(x), torch.from_numpy(wt)
            with torch.no_grad():
                out[name] = _t(lambda: torch.nn.functional.conv2d(xt, wtt, None, s, p), repeat)
        elif runtime == "onnxruntime-int8":
            from onnx import TensorProto, helper, numpy_helper
            sx = float(x.max() / 255)
            sw = (np.abs(wt).reshape(k, -1).max(1) / 127).astype(np.float32)
            wq = np.clip(np.rint(wt / sw[:, None, None, None]), -127, 127).astype(np.int8)
            xq = np.clip(np.rint(x / sx), 0, 255).astype(np.uint8)
            inits = [numpy_helper.from_array(np.array(sx, np.float32), "xs"),
                     numpy_helper.from_array(np.array(0, np.uint8), "xz"),
                     numpy_helper.from_array(wq, "w"), numpy_helper.from_array(sw, "ws"),
                     numpy_helper.from_array(np.zeros(k, np.int8), "wz"),
                     numpy_helper.from_array(np.array(0.05, np.float32), "ys"),
                     numpy_helper.from_array(np.array(0, np.uint8), "yz")]
            node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"],
                                    ["y"], kernel_shape=[r, r], strides=[s, s], pads=[p] * 4)
            graph = helper.make_graph([node], "q", [helper.make_tensor_value_info(
                "x", TensorProto.UINT8, xq.shape)], [helper.make_tensor_value_info(
                    "y", TensorProto.UINT8, None)], inits)
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
            sess = ort_session(model.SerializeToString(), threads)
            out[name] = _t(lambda: sess.run(None, {"x": xq}), repeat)
    print(json.dumps(out))


def gemm_child(threads, repeat, rounds):
    """The int8 GEMM 1024^3 and the SGEMM roof measured in turn, ``rounds`` times, so
    each round's ratio compares the two in the same phase of the machine."""
    import fastconv as fc
    from fastconv.cli import measure_sgemm_roof
    fc.set_num_threads(threads)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (1024, 1024)).astype(np.uint8)
    b = rng.integers(-128, 128, (1024, 1024)).astype(np.int8)
    packed = {}  # b packed once, as a layer keeps its weights
    out = {"ms": [], "int8_gops": [], "sgemm_roof": [], "ratio": []}
    for _ in range(max(1, rounds)):
        t = _t(lambda: fc.int8_gemm(a, b, packed=packed), repeat)
        roof = measure_sgemm_roof(threads)
        gops = 2 * 1024 ** 3 / t / 1e9
        for key, v in (("ms", t * 1e3), ("int8_gops", gops), ("sgemm_roof", roof),
                       ("ratio", gops / roof)):
            out[key].append(v)
    out["ms_packing_each_call"] = _t(lambda: fc.int8_gemm(a, b), repeat) * 1e3
    print(json.dumps(out))


def _median_over_rounds(results):
    """One runtime's results over rounds, each number the median of its rounds' numbers
    (None where the runtime failed in every round)."""
    results = [r for r in results if r is not None]
    if not results:
        return None
    out = {}
    for name, v in results[0].items():
        vals = [r[name] for r in results if name in r]
        if isinstance(v, (int, float)):
            out[name] = float(np.median(vals))
        elif isinstance(v, dict):
            out[name] = _median_over_rounds(vals)
        else:   # a label (the sparse kernel chosen): the most frequent
            out[name] = max(set(vals), key=vals.count)
    return out


def run(runtime, a):
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    res = subprocess.run([sys.executable, __file__, "--child", runtime, "--threads",
                          str(a.threads), "--batch", str(a.batch), "--repeat", str(a.repeat),
                          "--rounds", str(a.rounds)],
                         capture_output=True, text=True, env=env, timeout=3600)
    if res.returncode:
        print(f"{runtime} failed: {res.stderr[-1500:]}", file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--gemm", action="store_true")
    ap.add_argument("--no-sparse", action="store_true", help="the int8 table only")
    ap.add_argument("--no-int8", action="store_true", help="the sparse tables only")
    ap.add_argument("--rounds", type=int, default=1,
                    help="the runtimes take turns this many times (the sparse ones too "
                         "unless --no-sparse); per layer the median over rounds of each "
                         "round's median (--gemm: the int8 GEMM and the SGEMM roof take "
                         "turns, the ratio per round)")
    ap.add_argument("--child")
    a = ap.parse_args()
    if a.child == "gemm":
        return gemm_child(a.threads, a.repeat, a.rounds)
    if a.child:
        return child(a.child, a.threads, a.batch, a.repeat)
    if a.gemm:
        r = run("gemm", a)
        med = {k: float(np.median(v)) for k, v in r.items() if isinstance(v, list)}
        print(f"int8 GEMM 1024^3, {a.threads} threads, b packed once: {med['ms']:.2f} ms, "
              f"{med['int8_gops']:.0f} GOP/s = {med['ratio']:.2f}x the SGEMM roof "
              f"({med['sgemm_roof']:.0f} GFLOP/s), medians of {len(r['ratio'])} rounds "
              f"(per round {', '.join(f'{x:.2f}x' for x in r['ratio'])}); packing b on "
              f"every call: {r['ms_packing_each_call']:.2f} ms")
        return
    runtimes = (() if a.no_int8 else ("fastconv-int8", "fastconv-fp32", "torch-int8",
                                      "onnxruntime-int8")) + (
        () if a.no_sparse else ("fastconv-sparse", "torch"))
    rounds = [{rt: run(rt, a) for rt in runtimes} for _ in range(max(1, a.rounds))]
    res = {rt: _median_over_rounds([r[rt] for r in rounds]) for rt in runtimes}
    if not a.no_int8:
        _int8_table(res, a, len(rounds))
    if not a.no_sparse:
        _sparse_tables(res, a)


def _int8_table(res, a, nrounds):
    print(f"int8, batch {a.batch}, {a.threads} threads, median of {a.repeat} (ms; ratios are "
          "fastconv int8's speed relative to each)" +
          (f"; median over {nrounds} interleaved rounds" if nrounds > 1 else ""))
    print("| layer | int8 ms | GOP/s | vs fp32 im2col | vs fp32 auto | vs torch int8 | "
          "vs ORT QLinearConv | uint8 out ms | uint8 out vs ORT |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, spec in LAYERS.items():
        i8 = res["fastconv-int8"][name]
        f32 = res["fastconv-fp32"][name]
        ti = (res["torch-int8"] or {}).get(name)
        oi = (res["onnxruntime-int8"] or {}).get(name)
        u8 = res["fastconv-int8"][name + "/u8"]
        print(f"| {name} | {i8 * 1e3:.3f} | {flops(spec, a.batch) / i8 / 1e9:.0f} | "
              f"{f32['im2col'] / i8:.2f}x | {f32['auto'] / i8:.2f}x | "
              f"{'' if ti is None else f'{ti / i8:.2f}x'} | "
              f"{'' if oi is None else f'{oi / i8:.2f}x'} | {u8 * 1e3:.3f} | "
              f"{'' if oi is None else f'{oi / u8:.2f}x'} |")


def _kernel_runs(kernels):
    """The kernel chosen at each of SPARSITIES, as runs: "bsr4" or "winograd4_bsr4 30%-70%,
    bsr4 80%-90%"."""
    runs = []
    for s, k in zip(SPARSITIES, kernels):
        if runs and runs[-1][0] == k:
            runs[-1][2] = s
        else:
            runs.append([k, s, s])
    if len(runs) == 1:
        return runs[0][0]
    return ", ".join(f"{k} {lo:.0%}" + ("" if hi == lo else f"-{hi:.0%}") for k, lo, hi in runs)


def _sparse_tables(res, a):
    for block, title in ((1, "unstructured (CSR)"), (4, "in blocks of 4 output channels"),
                         ("4f", "in blocks of 4 output channels x whole 3x3 filters")):
        print(f"\nsparse conv, pruned {title}, batch {a.batch}: ms at each sparsity "
              "(the kernels chosen, by sparsity); ratios at 90 %; fastconv dense: the median "
              "of its times around each sparsity's, the break-even from each pair")
        print("| layer | torch dense | fastconv dense | " +
              " | ".join(f"{s:.0%}" for s in SPARSITIES) +
              " | 90 % vs torch | 90 % vs fastconv | break-even |")
        print("|---|---|---|" + "---|" * len(SPARSITIES) + "---|---|---|")
        for name in LAYERS:
            if f"{block}/0.9" not in res["fastconv-sparse"][name]:
                continue   # (whole filters: the 3x3 layers only)
            sp = {s: res["fastconv-sparse"][name][f"{block}/{s}"] for s in SPARSITIES}
            kernel = _kernel_runs([res["fastconv-sparse"][name][f"{block}/{s}/kernel"]
                                   for s in SPARSITIES])
            td = (res["torch"] or {}).get(name)
            dense = {s: res["fastconv-sparse"][name][f"{block}/{s}/dense"] for s in SPARSITIES}
            fd = float(np.median(list(dense.values())))
            even = next((f"{s:.0%}" for s in SPARSITIES if sp[s] < dense[s]), "> 90 %")
            print(f"| {name} ({kernel}) | {'' if td is None else f'{td * 1e3:.3f}'} | "
                  f"{fd * 1e3:.3f} | " + " | ".join(f"{sp[s] * 1e3:.3f}" for s in SPARSITIES) +
                  f" | {'' if td is None else f'{td / sp[0.9]:.2f}x'} | "
                  f"{dense[0.9] / sp[0.9]:.2f}x | {even} |")


if __name__ == "__main__":
    main()
