"""Same-run, process-isolated layer comparison: fastconv vs PyTorch vs onnxruntime.

Each runtime runs every layer in its own child process (so no two thread pools
ever share the cores), with the same thread count, after warm-up.  The
runtimes take turns for ``--rounds`` rounds, so a slow phase of a shared
machine hits them alike; per layer the median over rounds of each round's
median of ``--repeat`` timed calls is reported, with the smallest minimum,
GFLOP/s and the fraction of the SGEMM roof measured in the same run.

    python bench/compare.py --threads 2 --batch 1 --markdown

prints the table that docs/performance.md carries.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from shapes import ALL_LAYERS, LAYERS, flops  # noqa: E402

from fastconv._peers import ort_session, timed  # noqa: E402  (timed: the same warm-up for all)


def _timeit(fn, repeat):
    return timed(fn, repeat)


def _make(spec, batch):
    c, h, w, k, r, s, p, g = spec
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((k, c // g, r, r)) / np.sqrt(c // g * r * r)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    return x, wt, b


def _block_state(k, wt, b):
    rng = np.random.default_rng(1)
    return {"0.weight": wt, "0.bias": b, "1.weight": rng.uniform(0.5, 1.5, k),
            "1.bias": rng.standard_normal(k) * 0.1, "1.running_mean": rng.standard_normal(k) * 0.1,
            "1.running_var": rng.uniform(0.5, 1.5, k), "1.num_batches_tracked": np.array(0)}


def child(runtime, threads, batch, repeat, names, block=False):
    out = {}
    if runtime.startswith("fastconv"):
        import fastconv as fc
        fc.set_num_threads(threads)
        algo = runtime.split(":")[1] if ":" in runtime else "auto"
        for name in names:
            c, h, w, k, r, s, p, g = ALL_LAYERS[name]
            x, wt, b = _make(ALL_LAYERS[name], batch)
            if block:
                net = fc.nn.Sequential(fc.nn.Conv2d(c, k, r, s, p, groups=g), fc.nn.BatchNorm2d(k),
                                       fc.nn.ReLU())
                net.load_state_dict(_block_state(k, wt, b))
                net[0].algo = algo
                out[name] = _timeit(lambda: net(x), repeat)
            else:
                packed = {}  # layers keep transformed weights; so do the peers
                out[name] = _timeit(lambda: fc.conv2d(x, wt, b, s, p, 1, g, algo=algo,
                                                      packed=packed), repeat)
    elif runtime == "torch":
        import torch
        torch.set_num_threads(threads)
        with torch.no_grad():
            for name in names:
                c, h, w, k, r, s, p, g = ALL_LAYERS[name]
                x, wt, b = (torch.from_numpy(a) for a in _make(ALL_LAYERS[name], batch))
                if block:  # eager conv -> bn -> relu, as a torch user runs it
                    net = torch.nn.Sequential(torch.nn.Conv2d(c, k, r, s, p, groups=g),
                                              torch.nn.BatchNorm2d(k), torch.nn.ReLU()).eval()
                    net.load_state_dict({kk: torch.as_tensor(v) for kk, v in
                                         _block_state(k, wt.numpy(), b.numpy()).items()})
                    out[name] = _timeit(lambda: net(x), repeat)
                else:
                    out[name] = _timeit(lambda: torch.nn.functional.conv2d(x, wt, b, s, p, 1, g),
                                        repeat)
    elif runtime == "onnxruntime":
        from onnx import TensorProto, helper, numpy_helper
        for name in names:
            c, h, w, k, r, s, p, g = ALL_LAYERS[name]
            x, wt, b = _make(ALL_LAYERS[name], batch)
            nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c" if block else "y"],
                                      kernel_shape=[r, r], strides=[s, s], pads=[p, p, p, p],
                                      group=g)]
            inits = [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(b, "b")]
            if block:  # ORT fuses this chain itself (graph optimizations on)
                st = _block_state(k, wt, b)
                for key, nm in (("1.weight", "g"), ("1.bias", "be"), ("1.running_mean", "mu"),
                                ("1.running_var", "va")):
                    inits.append(numpy_helper.from_array(np.asarray(st[key], np.float32), nm))
                nodes += [helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "va"], ["z"]),
                          helper.make_node("Relu", ["z"], ["y"])]
            graph = helper.make_graph(
                nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
            sess = ort_session(model.SerializeToString(), threads)
            out[name] = _timeit(lambda: sess.run(None, {"x": x}), repeat)
    elif runtime == "roof":
        sys.path.insert(0, os.path.dirname(HERE))
        from fastconv.cli import measure_sgemm_roof
        out["roof"] = measure_sgemm_roof(threads)
    print(json.dumps(out))


def run_child(runtime, args, names):
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, __file__, "--child", runtime, "--threads", str(args.threads),
           "--batch", str(args.batch), "--repeat", str(args.repeat), "--layers", *names]
    if args.block:
        cmd.append("--block")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if res.returncode != 0:
        print(f"{runtime}: failed\n{res.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds of every runtime (median over rounds)")
    ap.add_argument("--layers", nargs="*", default=list(LAYERS))
    ap.add_argument("--runtimes", nargs="*",
                    default=["fastconv:direct", "fastconv:im2col", "fastconv", "torch", "onnxruntime"])
    ap.add_argument("--child")
    ap.add_argument("--block", action="store_true",
                    help="time conv -> BatchNorm -> ReLU blocks instead of bare convolutions")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.threads, args.batch, args.repeat, args.layers, args.block)
    roofs = []
    rounds = {rt: [] for rt in args.runtimes}
    # Rounds interleave the runtimes, so a slow phase of the (shared) machine hits
    # every runtime alike instead of one of them; per layer, the median over rounds
    # of each round's median is reported, with the smallest minimum.
    for r in range(args.rounds):
        roofs.append(run_child("roof", args, [])["roof"])
        for rt in args.runtimes:
            print(f"round {r + 1}/{args.rounds}: {rt} ...", file=sys.stderr, flush=True)
            out = run_child(rt, args, args.layers)
            if out:
                rounds[rt].append(out)
    roof = float(np.median(roofs))
    results = {}
    for rt, outs in rounds.items():
        if outs:
            results[rt] = {name: (float(np.median([o[name][0] for o in outs])),
                                  float(min(o[name][1] for o in outs))) for name in args.layers}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"roof": roof, "threads": args.threads, "batch": args.batch,
                       "results": results}, f, indent=2)
    rts = [rt for rt in args.runtimes if results.get(rt)]
    what = "conv+BN+ReLU blocks" if args.block else "convolutions"
    print(f"\n{what}: SGEMM roof {roof:.1f} GFLOP/s, {args.threads} threads, batch {args.batch}, "
          f"median over {args.rounds} interleaved rounds of the median of {args.repeat} calls "
          f"(smallest minimum in parentheses)\n")
    head = "| layer | " + " | ".join(f"{rt} ms" for rt in rts) + " | fastconv GFLOP/s | % roof |"
    if "torch" in rts:
        head += " vs torch |"
    if "onnxruntime" in rts:
        head += " vs ort |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name in args.layers:
        cells = []
        for rt in rts:
            med, mn = results[rt][name]
            cells.append(f"{med * 1e3:.3f} ({mn * 1e3:.3f})")
        fl = flops(ALL_LAYERS[name], args.batch)
        best = results.get("fastconv", results[rts[0]])[name][0]
        line = f"| {name} | " + " | ".join(cells) + f" | {fl / best / 1e9:.1f} | {100 * fl / best / 1e9 / roof:.0f}% |"
        if "torch" in rts:
            line += f" {results['torch'][name][0] / best:.2f}x |"
        if "onnxruntime" in rts:
            line += f" {results['onnxruntime'][name][0] / best:.2f}x |"
        print(line)
    fc_rts = [rt for rt in rts if rt.startswith("fastconv")]
    if fc_rts:
        print("\nper fastconv algorithm: GFLOP/s, % of roof" + (", speed vs torch" if "torch" in rts
                                                             else "") + "\n")
        head = "| layer | " + " | ".join(fc_rts) + " |"
        print(head)
        print("|" + "---|" * (len(fc_rts) + 1))
        for name in args.layers:
            fl = flops(ALL_LAYERS[name], args.batch)
            cells = []
            for rt in fc_rts:
                med = results[rt][name][0]
                cell = f"{fl / med / 1e9:.1f} GF/s, {100 * fl / med / 1e9 / roof:.0f}%"
                if "torch" in rts:
                    cell += f", {results['torch'][name][0] / med:.2f}x"
                cells.append(cell)
            print(f"| {name} | " + " | ".join(cells) + " |")
    for peer in ("torch", "onnxruntime"):
        if peer in rts:
            ratios = [results[peer][n][0] / results.get("fastconv", results[rts[0]])[n][0]
                      for n in args.layers]
            print(f"\ngeometric mean speed vs {peer}: {np.exp(np.mean(np.log(ratios))):.2f}x")


if __name__ == "__main__":
    main()
