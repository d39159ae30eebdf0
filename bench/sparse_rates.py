"""The sparse kernels against their cost model (fastconv/sparse.py, planner.RATES).

    python bench/sparse_rates.py --json /tmp/b1.json            # conv: time, fit, choices
    python bench/sparse_rates.py --fit /tmp/b1.json /tmp/b1b.json  # refit saved runs
    python bench/sparse_rates.py --linear                         # linear: both paths
    python bench/sparse_rates.py --plain      # linear: fc.sparse_linear as it is, hot and cold
    python bench/sparse_rates.py --winograd --batch 8   # 3x3 in filter blocks: each kernel

Conv: the ResNet-50 layers of bench/compress_compare.py pruned by fc.prune at 30-95 %,
unstructured (CSR) and in 4-channel blocks, each timed in turns with the layer's dense
plan (three rounds of ten calls, medians), then the rates that fit the timings best
(relative least squares, the tile cost held at each of a few values) and, per rate set,
how often the sparse-or-dense choice it models (every table of planner.RATES
against this machine's dense plan, and the fits) is the slower one by more than 5 % and
the time that costs.  Linear: fc.sparse_linear on both of its paths (the gathered dot
product and the 1x1 conv over the samples) against the modelled costs, the path it
takes, and the dense linear.  Plain: fc.sparse_linear as any tree has it (no forced path,
so the loop runs on older trees too) against fc.linear, on a 2048->1000 layer, with its
weights hot and cold (a 64 MB buffer rewritten before each call, as the rest of a model
would evict them).  Winograd: the ResNet-50 3x3 layers pruned in blocks of 4 output
channels x whole filters (``fc.prune(..., block=4, whole_filters=True)``) at 30-90 %,
the dense plan, block CSR and the sparse Winograd kernel at both tile sizes timed call by
call in turns (medians), each beside its modelled time, the kernel sparse_conv2d picks,
and how often its pick is the slower by more than 5 %.
"""
import time
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from compress_compare import LAYERS, _data, _pruned  # noqa: E402

import fastconv as fc  # noqa: E402
from fastconv import planner  # noqa: E402
from fastconv import sparse as fs  # noqa: E402
from fastconv._peers import timed  # noqa: E402
from fastconv.functional import conv_problem  # noqa: E402

SPARSITIES = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def measure(batch, threads):
    rows = []
    for name, spec in LAYERS.items():
        c, h, w, k, r, s, p, g = spec
        x, wt = _data(spec, batch)
        prob = conv_problem(x.shape, wt.shape, s, p, 1, 1, name)
        pk = {}
        algo = planner.plan(prob, "auto", name, True).algorithm
        for block in fs.BLOCKS:
            for sp in SPARSITIES:
                ws = _pruned(fc, wt, sp, block, s, p, x)
                pk2 = {}
                turns = {"dense": [], "sparse": []}
                for _ in range(3):  # in turns, so the machine's phases hit both alike
                    turns["dense"].append(timed(
                        lambda: fc.conv2d(x, wt, None, s, p, packed=pk), 10)[0])
                    turns["sparse"].append(timed(
                        lambda: fc.sparse_conv2d(x, ws, None, s, p, packed=pk2, block=block,
                                                 winograd=False), 10)[0])
                stored = fs.block_counts(ws, 1, block)[1] * block
                base, per_rate, per_tile = fs.sparse_cost_terms(prob, stored, threads)
                rows.append(dict(layer=name, block=block, sparsity=sp,
                                 sparse=float(np.median(turns["sparse"])),
                                 dense=float(np.median(turns["dense"])),
                                 dense_model=planner.modelled(algo, prob, threads, True),
                                 algo=algo.name, base=base, per_rate=per_rate,
                                 per_tile=per_tile))
                t = rows[-1]
                print(f"{name:20s} block {block} {sp:.0%}: sparse {t['sparse'] * 1e3:.3f} ms, "
                      f"dense ({algo.name}) {t['dense'] * 1e3:.3f}", flush=True)
    return rows


def winograd(batch, threads, repeat=20):
    """Filter-block-pruned 3x3 layers: dense, block CSR, F(2x2), F(4x4) and the automatic
    pick, alternating call by call; measured ms [modelled ms]."""
    wrong = cases = 0
    for name, spec in LAYERS.items():
        c, h, w, k, r, s, p, g = spec
        if r != 3 or s != 1:
            continue
        x, wt = _data(spec, batch)
        prob = conv_problem(x.shape, wt.shape, s, p, 1, 1, name)
        pd = {}
        for sp in (0.3, 0.5, 0.7, 0.9):
            ws = _pruned(fc, wt, sp, "4f", s, p, x)
            pk = {key: {} for key in ("bsr4", 2, 4, "auto")}
            runs = {"dense": lambda: fc.conv2d(x, wt, None, s, p, packed=pd),
                    "bsr4": lambda: fc.sparse_conv2d(x, ws, None, s, p, packed=pk["bsr4"],
                                                     block=4, winograd=False),
                    "F2": lambda: fc.sparse_conv2d(x, ws, None, s, p, packed=pk[2], winograd=2),
                    "F4": lambda: fc.sparse_conv2d(x, ws, None, s, p, packed=pk[4], winograd=4),
                    "auto": lambda: fc.sparse_conv2d(x, ws, None, s, p, packed=pk["auto"])}
            times = {key: [] for key in runs}

            def turn():
                for key, f in runs.items():
                    t0 = time.perf_counter()
                    f()
                    times[key].append(time.perf_counter() - t0)
            timed(turn, repeat)
            med = {key: float(np.median(v[-repeat:])) for key, v in times.items()}
            blocks = int(np.count_nonzero(fs.filter_blocks(ws)))
            model = {"bsr4": fs.sparse_cost(prob, fs.block_counts(ws, 1, 4)[1] * 4, threads, 4),
                     "F2": fs.winograd_sparse_cost(prob, blocks, threads, 2),
                     "F4": fs.winograd_sparse_cost(prob, blocks, threads, 4)}
            m = pk["auto"].get(("winograd", None)) or 0
            picked = {0: "bsr4", 2: "F2", 4: "F4"}[m]
            cases += 1
            if med[picked] > 1.05 * min(med[key] for key in model):
                wrong += 1
            print(f"{name:16s} {sp:.0%}: " + "  ".join(
                f"{key} {v * 1e3:.3f}" + (f" [{model[key] * 1e3:.3f}]" if key in model else "")
                for key, v in med.items()) + f"  picks {picked}", flush=True)
    print(f"the pick slower than the fastest sparse kernel by > 5 %: {wrong} of {cases}")


def _fit(rows, tile):
    """The rate (GFLOP/s a thread) that fits rows best with the tile cost held at tile."""
    a = np.array([r["per_rate"] / r["sparse"] for r in rows])
    y = np.array([(r["sparse"] - r["base"] - tile * r["per_tile"]) / r["sparse"] for r in rows])
    return 1.0 / float(a @ y / (a @ a))


def report(rows):
    sets = {f"table {t}": {kb: (rates["SPARSE_GFLOPS" if kb == 1 else "BLOCK_GFLOPS"],
                                rates["SPARSE_TILE_S"]) for kb in fs.BLOCKS}
            for t, rates in planner.RATES.items()}
    for tile in (0.02e-6, 0.04e-6, 0.06e-6):
        sets[f"fit, tile {tile * 1e6:.2f} us"] = {
            kb: (_fit([r for r in rows if r["block"] == kb], tile), tile) for kb in fs.BLOCKS}
    for label, rates in sets.items():
        def model(r):
            rate, tile = rates[r["block"]]
            return r["base"] + r["per_rate"] / rate + r["per_tile"] * tile
        err = np.array([np.log(model(r) / r["sparse"]) for r in rows])
        wrong = lost = 0.0
        for r in rows:
            took = r["sparse"] if model(r) < r["dense_model"] else r["dense"]
            best = min(r["sparse"], r["dense"])
            if took > 1.05 * best:
                wrong += 1
                lost += took - best
        total = sum(min(r["sparse"], r["dense"]) for r in rows)
        print(f"{label:22s} CSR {rates[1][0]:6.1f}, blocks {rates[4][0]:6.1f} GFLOP/s, "
              f"tile {rates[1][1] * 1e6:.2f} us: model/measured log rms "
              f"{np.sqrt(np.mean(err ** 2)):.3f} (mean {err.mean():+.3f}); "
              f"slower side chosen {int(wrong)}/{len(rows)}, "
              f"{lost * 1e3:.2f} of {total * 1e3:.2f} ms")


def linear(threads):
    rng = np.random.default_rng(0)
    print(f"sparse linear, {threads} threads: us measured [modelled]")
    for cin, cout in ((2048, 1000), (1280, 1000), (512, 512)):
        w = rng.standard_normal((cout, cin)).astype(np.float32)
        for sp in (0.5, 0.7, 0.9, 0.95):
            ws = np.where(np.abs(w) > np.quantile(np.abs(w), sp), w, 0).astype(np.float32)
            for n in (1, 2, 4, 8, 16, 64, 256):
                x = rng.standard_normal((n, cin)).astype(np.float32)
                got = {}
                for path in ("gather", "conv"):
                    pk = {("linear_path", n): path}
                    got[path] = timed(lambda: fc.sparse_linear(x, ws, packed=pk), 20)[0]
                pk = {}
                fc.sparse_linear(x, ws, packed=pk)
                model = fs.linear_costs(ws, n, threads)
                dense = timed(lambda: fc.linear(x, w), 20)[0]
                print(f"{cin}->{cout} {sp:.0%} N {n:3d}: " + "  ".join(
                    f"{p} {got[p] * 1e6:7.1f} [{model[p] * 1e6:7.1f}]" for p in got)
                    + f"  takes {pk[('linear_path', n)]:6s}  dense {dense * 1e6:7.1f} "
                    f"[{fs.dense_linear_cost(w, n, threads) * 1e6:7.1f}]", flush=True)


def plain():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((1000, 2048)).astype(np.float32)
    junk = np.zeros(64 << 18, np.float32)

    def cold(f, calls=20):
        ts = []
        for _ in range(calls):
            np.add(junk, 1.0, out=junk)
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts))
    print("2048->1000: us, medians of 20 calls, weights hot / cold")
    for sp in (0.5, 0.7, 0.8, 0.9):
        ws = np.where(np.abs(w) > np.quantile(np.abs(w), sp), w, 0).astype(np.float32)
        for n in (1, 8, 64):
            x = rng.standard_normal((n, 2048)).astype(np.float32)
            pk = {}
            sparse = lambda: fc.sparse_linear(x, ws, packed=pk)  # noqa: E731
            dense = lambda: fc.linear(x, w)  # noqa: E731
            print(f"{sp:.0%} N {n:2d}: sparse {timed(sparse, 20)[0] * 1e6:7.1f} / "
                  f"{cold(sparse) * 1e6:7.1f}  dense {timed(dense, 20)[0] * 1e6:7.1f} / "
                  f"{cold(dense) * 1e6:7.1f}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--json", help="also save the conv timings here")
    ap.add_argument("--fit", nargs="+", metavar="JSON", help="refit saved conv timings")
    ap.add_argument("--linear", action="store_true")
    ap.add_argument("--plain", action="store_true")
    ap.add_argument("--winograd", action="store_true")
    a = ap.parse_args()
    fc.set_num_threads(a.threads)
    print(f"rate table {getattr(planner, 'RATE_TABLE', '-')}")
    if a.plain:
        return plain()
    if a.linear:
        return linear(a.threads)
    if a.winograd:
        return winograd(a.batch, a.threads)
    if a.fit:
        rows = sum((json.load(open(f)) for f in a.fit), [])
    else:
        rows = measure(a.batch, a.threads)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(rows, f)
    report(rows)


if __name__ == "__main__":
    main()
