"""Layer shapes off the model zoo's path, planned by fastconv against PyTorch, in one process.

    python bench/shape_sweep.py                 # every shape
    python bench/shape_sweep.py --only dw7      # names containing "dw7"
    python bench/shape_sweep.py --only grouped --families grouped_blocked,implicit_pixels
                                                # and those families forced, in the same turns
    python bench/shape_sweep.py --only grouped --isolated 3 --rounds 4 --warm 3 --burst 10

Grouped (ResNeXt, RegNet), dilated, 5x5 and 7x7, depthwise 7x7 (ConvNeXt), strided by 3,
few channels on large maps, odd sizes and large batches: ``fc.conv2d`` with its plan
(``auto``, the packed forms kept) and ``torch.nn.functional.conv2d`` take turns, 30
rounds; prints the medians, PyTorch's time over fastconv's, the plan and the largest
difference of the outputs (relative to the output's scale).  Batch 1 and two threads
unless given.

A turn is ``--warm`` untimed calls, then ``--burst`` timed ones back to back, then a
``--pause`` (10 ms): PyTorch's OpenMP threads spin for a while after a call, on the cores
fastconv's next call needs (back-to-back single calls had fastconv's large layers at a
third of their speed), but after a pause the cores are slow to wake (a 0.16 ms grouped
layer took 0.25-0.5 ms for several calls after a 10 ms sleep), which short layers feel
most.  ``--isolated N`` avoids both: PyTorch runs in a process of its own, N times, taking
turns with fastconv's runs in this one, each with no pauses.
"""
import argparse
import json
import subprocess
import sys
import time
import zlib

import numpy as np

# name: (N, C, H, W, K, R, stride, padding, dilation, groups)
SHAPES = {
    "grouped 32g 128@56 (resnext)": (1, 128, 56, 56, 128, 3, 1, 1, 1, 32),
    "grouped 32g 256@28": (1, 256, 28, 28, 256, 3, 1, 1, 1, 32),
    "grouped 32g 512@14": (1, 512, 14, 14, 512, 3, 1, 1, 1, 32),
    "grouped 32g 1024@7": (1, 1024, 7, 7, 1024, 3, 1, 1, 1, 32),
    "grouped 32g 256@56/2": (1, 256, 56, 56, 256, 3, 2, 1, 1, 32),
    "grouped 32g 512@28/2": (1, 512, 28, 28, 512, 3, 2, 1, 1, 32),
    "grouped 32g 1024@14/2": (1, 1024, 14, 14, 1024, 3, 2, 1, 1, 32),
    "grouped 32g 2048@7 (64 a group)": (1, 2048, 7, 7, 2048, 3, 1, 1, 1, 32),
    "grouped 64g 128@56 (2 a group)": (1, 128, 56, 56, 128, 3, 1, 1, 1, 64),
    "grouped 8g 64@56 (regnet)": (1, 64, 56, 56, 64, 3, 1, 1, 1, 8),
    "grouped 12g 192@28 (16 a group)": (1, 192, 28, 28, 192, 3, 1, 1, 1, 12),
    "grouped 2g 64@56": (1, 64, 56, 56, 64, 3, 1, 1, 1, 2),
    "grouped 8g 1x1 256@14": (1, 256, 14, 14, 256, 1, 1, 0, 1, 8),
    "dilated 2 256@28": (1, 256, 28, 28, 256, 3, 1, 2, 2, 1),
    "dilated 4 512@28 (deeplab)": (1, 512, 28, 28, 512, 3, 1, 4, 4, 1),
    "dilated 2 128@56": (1, 128, 56, 56, 128, 3, 1, 2, 2, 1),
    "dilated 12 256@28 (aspp)": (1, 256, 28, 28, 256, 3, 1, 12, 12, 1),
    "patch 4x4/4 3->96@224 (convnext stem)": (1, 3, 224, 224, 96, 4, 4, 0, 1, 1),
    "patch 2x2/2 96->192@56": (1, 96, 56, 56, 192, 2, 2, 0, 1, 1),
    "patch 16x16/16 3->768@224 (vit)": (1, 3, 224, 224, 768, 16, 16, 0, 1, 1),
    "5x5 64@56": (1, 64, 56, 56, 64, 5, 1, 2, 1, 1),
    "5x5/2 32@112": (1, 32, 112, 112, 64, 5, 2, 2, 1, 1),
    "3x3/3 64@57": (1, 64, 57, 57, 64, 3, 3, 0, 1, 1),
    "dw5 240@14": (1, 240, 14, 14, 240, 5, 1, 2, 1, 240),
    "dw3/2 96@112": (1, 96, 112, 112, 96, 3, 2, 1, 1, 96),
    "dw7 96@56 (convnext)": (1, 96, 56, 56, 96, 7, 1, 3, 1, 96),
    "dw7 192@28": (1, 192, 28, 28, 192, 7, 1, 3, 1, 192),
    "dw7 384@14": (1, 384, 14, 14, 384, 7, 1, 3, 1, 384),
    "dw7 768@7": (1, 768, 7, 7, 768, 7, 1, 3, 1, 768),
    "dw7/2 96@56": (1, 96, 56, 56, 96, 7, 2, 3, 1, 96),
    "16@224": (1, 16, 224, 224, 16, 3, 1, 1, 1, 1),
    "24@112": (1, 24, 112, 112, 24, 3, 1, 1, 1, 1),
    "odd 37@45 -> 53": (1, 37, 45, 45, 53, 3, 1, 1, 1, 1),
    "1x1 b32 256@14": (32, 256, 14, 14, 256, 1, 1, 0, 1, 1),
    "3x3 b32 64@28": (32, 64, 28, 28, 64, 3, 1, 1, 1, 1),
    "3x3/2 3@512 (seg stem)": (1, 3, 512, 512, 32, 3, 2, 1, 1, 1),
    "rect 64@32x256": (1, 64, 32, 256, 64, 3, 1, 1, 1, 1),
}


def turns(calls, rounds, pause=0.0, burst=1, warm=1):
    """{name: median seconds} of the calls taking turns for ``rounds`` rounds: in a turn
    ``warm`` untimed calls, then ``burst`` timed ones back to back, then ``pause`` seconds
    of sleep."""
    times = {key: [] for key in calls}
    for _ in range(rounds):
        for key, f in calls.items():
            for _ in range(warm):
                f()
            for _ in range(burst):
                t0 = time.perf_counter()
                f()
                times[key].append(time.perf_counter() - t0)
            if pause:
                time.sleep(pause)
    return {key: float(np.median(v)) for key, v in times.items()}


def _inputs(name):
    """The shape's input and weight, the same in every process (seeded by the name)."""
    n, c, h, w, k, r, s, p, d, g = SHAPES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((k, c // g, r, r)) / np.sqrt(c // g * r * r)).astype(np.float32)
    return x, wt


def _torch_side(a, names):
    """--side torch: PyTorch alone in this process; one JSON line {name: median seconds}."""
    import torch
    import torch.nn.functional as TF
    torch.set_num_threads(a.threads)
    out = {}
    for name in names:
        s, p, d, g = SHAPES[name][6:]
        xt, wtt = (torch.from_numpy(v) for v in _inputs(name))

        def theirs():
            with torch.no_grad():
                return TF.conv2d(xt, wtt, None, s, p, d, g)
        out[name] = turns({"torch": theirs}, a.rounds, pause=0, burst=a.burst,
                          warm=a.warm)["torch"]
    print(json.dumps(out), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--only", default="")
    ap.add_argument("--pause", type=float, default=0.01, help="seconds of sleep after a turn")
    ap.add_argument("--warm", type=int, default=1, help="untimed calls starting a turn")
    ap.add_argument("--burst", type=int, default=5,
                    help="timed calls back to back in a turn (a layer's call in a model follows "
                    "another; the first after a pause wakes the threads, and a short layer "
                    "took 2-3x its time)")
    ap.add_argument("--families", default="",
                    help="comma-separated families to time as well (where they serve)")
    ap.add_argument("--isolated", type=int, default=0, metavar="N",
                    help="PyTorch in a process of its own, N times, taking turns with this "
                    "process's fastconv runs (no turns within a process, no pauses: neither "
                    "side's spinning threads or woken cores touch the other's times)")
    ap.add_argument("--side", choices=["torch"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    names = [name for name in SHAPES if any(o in name for o in a.only.split(","))]
    if a.side == "torch":
        return _torch_side(a, names)
    import fastconv as fc
    from fastconv import planner
    from fastconv.functional import conv_problem
    from fastconv.kernels import reference
    fc.set_num_threads(a.threads)
    if a.isolated:
        return _isolated(a, names, fc, planner, conv_problem, reference)
    import torch
    import torch.nn.functional as TF
    torch.set_num_threads(a.threads)
    print(f"{a.threads} threads, {a.rounds} rounds; us: fastconv, PyTorch, PyTorch / fastconv")
    for name in names:
        n, c, h, w, k, r, s, p, d, g = SHAPES[name]
        x, wt = _inputs(name)
        packed = {}
        ours = lambda: fc.conv2d(x, wt, None, s, p, d, g, packed=packed)  # noqa: E731
        xt, wtt = torch.from_numpy(x), torch.from_numpy(wt)

        def theirs():
            with torch.no_grad():
                return TF.conv2d(xt, wtt, None, s, p, d, g)
        want = theirs().numpy()
        err = float(np.abs(ours() - want).max() / max(1.0, np.abs(want).max()))
        prob = conv_problem(x.shape, wt.shape, s, p, d, g, name)
        calls = {"fc": ours, "torch": theirs}
        calls.update(_forced(a, prob, fc, planner, x, wt))
        # the pool just used stops spinning before the other runs
        times = turns(calls, a.rounds, pause=a.pause, burst=a.burst, warm=a.warm)
        tf, tt = times.pop("fc"), times.pop("torch")
        plan = planner.plan(prob, prepacked=True)
        more = "".join(f"  {fam} {v * 1e6:.1f}" for fam, v in times.items())
        print(f"{name:30s} {tf * 1e6:8.1f} {tt * 1e6:8.1f}  {tt / tf:5.2f}x  "
              f"{plan.algorithm.name:18s} err {err:.1e}{more}", flush=True)


def _forced(a, prob, fc, planner, x, wt):
    """The --families calls that serve prob, each with its own packed weights."""
    s, p, d, g = prob.stride, prob.pads, prob.dilation, prob.groups
    calls = {}
    for fam in filter(None, a.families.split(",")):
        if planner.REGISTRY[fam].serves(prob) is None:
            calls[fam] = (lambda fam, kept: lambda: fc.conv2d(  # noqa: E731
                x, wt, None, s, p, d, g, algo=fam, packed=kept))(fam, {})
    return calls


def _isolated(a, names, fc, planner, conv_problem, reference):
    """--isolated N: N rounds of (PyTorch's process, then fastconv's turn here); medians."""
    ours_t = {name: [] for name in names}
    theirs_t = {name: [] for name in names}
    more_t = {name: {} for name in names}
    setups = {}
    for name in names:
        n, c, h, w, k, r, s, p, d, g = SHAPES[name]
        x, wt = _inputs(name)
        prob = conv_problem(x.shape, wt.shape, s, p, d, g, name)
        packed = {}
        ours = (lambda x, wt, s, p, d, g, packed: lambda: fc.conv2d(  # noqa: E731
            x, wt, None, s, p, d, g, packed=packed))(x, wt, s, p, d, g, packed)
        want = reference.conv2d(x, wt, None, s, p, d, g)
        err = float(np.abs(ours() - want).max() / max(1.0, np.abs(want).max()))
        calls = {"fc": ours}
        calls.update(_forced(a, prob, fc, planner, x, wt))
        setups[name] = (calls, planner.plan(prob, prepacked=True).algorithm.name, err)
    cmd = [sys.executable, __file__, "--side", "torch", "--only", a.only, "--threads",
           str(a.threads), "--rounds", str(a.rounds), "--warm", str(a.warm),
           "--burst", str(a.burst)]
    for _ in range(a.isolated):
        got = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                        text=True).stdout.strip().splitlines()[-1])
        for name in names:
            theirs_t[name].append(got[name])
            calls = setups[name][0]
            times = turns(calls, a.rounds, pause=0, burst=a.burst, warm=a.warm)
            ours_t[name].append(times.pop("fc"))
            for fam, v in times.items():
                more_t[name].setdefault(fam, []).append(v)
    print(f"{a.threads} threads, {a.isolated} x (PyTorch's process, fastconv's), {a.rounds} "
          "rounds each; us, medians: fastconv, PyTorch, PyTorch / fastconv (per round)")
    for name in names:
        tf, tt = np.median(ours_t[name]), np.median(theirs_t[name])
        per = " ".join(f"{b / o:.2f}" for o, b in zip(ours_t[name], theirs_t[name]))
        more = "".join(f"  {fam} {np.median(v) * 1e6:.1f}" for fam, v in more_t[name].items())
        plan, err = setups[name][1:]
        print(f"{name:30s} {tf * 1e6:8.1f} {tt * 1e6:8.1f}  {tt / tf:5.2f}x ({per})  "
              f"{plan:18s} err {err:.1e}{more}", flush=True)


if __name__ == "__main__":
    main()
