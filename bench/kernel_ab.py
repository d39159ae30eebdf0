"""A zoo model's recorded kernel launches with the CPU kernels of another commit and
of this tree, alternating in one process.

    python bench/kernel_ab.py --model mobilenet_v2 --base HEAD~2 --rounds 60
    python bench/kernel_ab.py --model resnet50 --base 9203f2b --rounds 20 --threads 2
    python bench/kernel_ab.py --model mv2_q.onnx --base ea051c6 --rounds 200

(``--model`` a zoo name, or an ONNX file: bench/qdq_models.py --save writes quantized ones.)

One inference is captured (``_runtime.capture``) and replayed ``--rounds`` times,
the two kernel sets taking turns (which goes first alternates).  The base set is
every module of kernels/cpu as ``git show BASE:kernels/cpu/<module>.py`` has it,
loaded side by side with the tree's under other names (their relative imports
pointing at each other, Numba's cache off), so both run on the same arrays with the
same planning: only kernel code differs.  Launch arguments must keep their meaning
across the two commits (a change that alters a kernel's signature or its
workspaces cannot be compared this way).  Prints the medians of the whole replay per
set, their ratio and the median of the per-round ratios (new / base), then per
kernel the sums of its launches' medians.  On the shared 2-vCPU machine a slow
phase moves both sets alike, which is why this compares in one process.
"""
import argparse
import collections
import importlib.util
import os
import re
import subprocess
import sys
import time

import numpy as np
from launch_profile import capture_inference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = "fastconv.kernels.cpu"


def _sources(rev):
    """{module: source} of kernels/cpu at git revision rev."""
    names = subprocess.run(["git", "-C", ROOT, "ls-tree", "--name-only", rev, "kernels/cpu/"],
                           check=True, capture_output=True, text=True).stdout.split()
    out = {}
    for path in names:
        mod = os.path.basename(path)[:-3]
        if path.endswith(".py") and mod != "__init__":
            out[mod] = subprocess.run(["git", "-C", ROOT, "show", f"{rev}:{path}"], check=True,
                                      capture_output=True, text=True).stdout
    return out


def _relative_imports(src):
    return set(re.findall(r"^from \.(\w+) import", src, re.M)
               + re.findall(r"^from \. import (\w+)\s*$", src, re.M))


def load_side_by_side(tag, sources):
    """The modules in ``sources`` executed as fastconv.kernels.cpu._<tag>_<module>,
    importing one another (dependencies first); returns {module: module object}."""
    mods = {}

    def load(name, stack=()):
        if name in mods or name not in sources:
            return
        src = sources[name].replace("cache=True", "cache=False")
        for dep in _relative_imports(src):
            if dep not in stack:
                load(dep, stack + (name,))
        for dep in mods:
            src = re.sub(rf"^from \.{dep} import", f"from ._{tag}_{dep} import", src, flags=re.M)
            src = re.sub(rf"^from \. import {dep}\s*$", f"from . import _{tag}_{dep} as {dep}",
                         src, flags=re.M)
        full = f"{PKG}._{tag}_{name}"
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader(full, None))
        module.__package__ = PKG
        module.__file__ = os.path.join(ROOT, "kernels", "cpu", name + ".py")
        sys.modules[full] = module
        exec(compile(src, full, "exec"), module.__dict__)
        mods[name] = module

    for name in sources:
        load(name)
    return mods


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--base", required=True, help="git revision of the base kernels")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--warm", type=int, default=3, help="rounds dropped first")
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    here = {m: open(os.path.join(ROOT, "kernels", "cpu", m + ".py")).read()
            for m in _sources("HEAD")}
    sets = {"base": load_side_by_side("base", _sources(args.base)),
            "new": load_side_by_side("new", here)}
    cap = capture_inference(args.model, args.size, args.threads)

    def program(mods):
        out = []
        for kernel, kargs in cap.launches:
            mod = getattr(kernel, "py_func", kernel).__module__.rsplit(".", 1)[-1]
            out.append((getattr(mods[mod], kernel.__name__) if mod in mods else kernel, kargs))
        return out

    progs = {k: program(v) for k, v in sets.items()}
    each = {k: [[] for _ in cap.launches] for k in progs}
    total = {k: [] for k in progs}
    for r in range(args.rounds + args.warm):
        for k in (("base", "new") if r % 2 else ("new", "base")):
            t00 = time.perf_counter()
            for i, (kernel, kargs) in enumerate(progs[k]):
                t0 = time.perf_counter()
                kernel(*kargs)
                each[k][i].append(time.perf_counter() - t0)
            total[k].append(time.perf_counter() - t00)
    w = args.warm
    tb, tn = np.array(total["base"][w:]), np.array(total["new"][w:])
    print(f"{args.model}, {args.threads} threads, {args.rounds} rounds: base {args.base} "
          f"{np.median(tb) * 1e3:.3f} ms, new {np.median(tn) * 1e3:.3f} ms; new / base "
          f"{np.median(tn) / np.median(tb):.3f} by medians, {np.median(tn / tb):.3f} paired")
    per = collections.defaultdict(lambda: [0.0, 0.0, 0])
    for i, (kernel, _) in enumerate(cap.launches):
        row = per[kernel.__name__]
        row[0] += np.median(each["base"][i][w:])
        row[1] += np.median(each["new"][i][w:])
        row[2] += 1
    print(f"  {'kernel':36s} launches  base ms   new ms  new/base")
    for name, (b, n, c) in sorted(per.items(), key=lambda kv: -kv[1][0]):
        print(f"  {name:36s} {c:8d} {b * 1e3:8.3f} {n * 1e3:8.3f}  {n / b:.3f}")


if __name__ == "__main__":
    main()
