"""``fc.tune``: measure every kernel that serves each conv layer, keep the fastest.

Results live in a persistent plan cache (a JSON file, ``$FASTCONV_CACHE_DIR``
or ``~/.cache/fastconv``, ``plans.json``).  A key is the layer's shape
(``ConvProblem``), dtype, backend, thread count, the CPU (LLVM's name and
feature string) and the fastconv and Numba versions, so a plan measured on
another machine, with other threads or by another version is never used.
``export_plans`` / ``import_plans`` move plans between machines of the same
kind (a build farm tuning once for a fleet).  ``fc.optimize`` applies cached
plans; without one, the planner's cost model decides.
"""
import hashlib
import json
import os
import tempfile
import threading
import time

import numpy as np

from . import _runtime, planner
from . import functional as F

_lock = threading.Lock()


def cache_path():
    base = os.environ.get("FASTCONV_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "fastconv")
    return os.path.join(base, "plans.json")


def fingerprint():
    """What a measured plan depends on besides the layer's shape."""
    import llvmlite.binding as llvm
    import numba

    from . import __version__
    feats = llvm.get_host_cpu_features().flatten()
    return {"cpu": llvm.get_host_cpu_name(),
            "features": hashlib.sha1(feats.encode()).hexdigest()[:12],
            "fastconv": __version__, "numba": numba.__version__}


def plan_key(prob, threads=None, backend="cpu", dtype="float32"):
    fp = fingerprint()
    parts = [prob.describe(), str((prob.n, prob.c, prob.h, prob.w, prob.k, prob.r, prob.s,
                                   prob.stride, prob.pads, prob.dilation, prob.groups)),
             dtype, backend, f"threads={threads or _runtime.get_num_threads()}",
             fp["cpu"], fp["features"], f"fastconv={fp['fastconv']}", f"numba={fp['numba']}"]
    return "|".join(parts)


def load_plans(path=None):
    path = path or cache_path()
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data.get("plans", {}) if isinstance(data, dict) else {}


def _write(plans, path):
    d = os.path.dirname(path) or "."
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".plans-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump({"format": "fastconv-plans", "version": 1, "plans": plans}, f, indent=1)
    os.replace(tmp, path)  # atomic: concurrent readers see the old or the new file


def save_plan(key, entry, path=None):
    with _lock:
        plans = load_plans(path)
        plans[key] = entry
        _write(plans, path or cache_path())


def export_plans(path):
    """Write every cached plan to ``path``; returns how many."""
    plans = load_plans()
    _write(plans, path)
    return len(plans)


def import_plans(path):
    """Merge the plans in ``path`` into the cache; returns how many were added or replaced."""
    new = load_plans(path)
    if not new and not os.path.exists(path):
        raise ValueError(f"import_plans: {path} does not exist")
    with _lock:
        plans = load_plans()
        plans.update(new)
        _write(plans, cache_path())
    return len(new)


def clear_plans():
    with _lock:
        try:
            os.remove(cache_path())
        except FileNotFoundError:
            pass


def _conv_layers(model, examples):
    """(node, ConvProblem, input shape, residual shape) for every conv node."""
    shapes = model.shapes(*examples)
    out = []
    for node in model.nodes:
        if node.op != "conv":
            continue
        a = node.attrs
        xs = shapes[node.inputs[0]][0]
        prob = F.conv_problem(xs, node.params["weight"].shape, a["stride"], tuple(a["pads"]),
                              a["dilation"], a["groups"], node.layer)
        rs = shapes[node.inputs[1]][0] if len(node.inputs) > 1 and node.inputs[1] else None
        out.append((node, prob, xs, rs))
    return out


def apply_cached(model, examples):
    """Set each conv's ``algo`` from the plan cache where this machine measured it."""
    plans = load_plans()
    hits = 0
    for node, prob, _, _ in _conv_layers(model, examples):
        entry = plans.get(plan_key(prob))
        if entry and entry.get("algo") in planner.REGISTRY:
            node.attrs["algo"] = entry["algo"]
            node.cache = {}
            hits += 1
    if hits:
        model.invalidate()
    return hits


def tune(model, example_input, budget_s=60.0, repeat=5, use_cache=True):
    """Measure each conv layer's candidate kernels and keep the fastest (in place).

    Layers already in the plan cache are not measured again (``use_cache=False``
    re-measures).  Measuring stops when ``budget_s`` seconds are spent; the
    remaining layers keep the cost model's choice.  Returns a list of dicts:
    layer, shape, chosen algorithm, per-algorithm median ms, and whether it came
    from the cache.
    """
    from .graph import Model
    if not isinstance(model, Model):
        raise TypeError(f"tune: expected a fastconv Model, got {type(model).__name__}")
    if budget_s is None or budget_s < 0:
        raise ValueError(f"tune: budget_s must be >= 0, got {budget_s!r}")
    examples = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    t_start = time.perf_counter()
    plans = load_plans() if use_cache else {}
    report = []
    rng = np.random.default_rng(0)
    for node, prob, xs, rs in _conv_layers(model, examples):
        key = plan_key(prob)
        entry = plans.get(key)
        row = {"layer": node.name, "shape": prob.describe()}
        if entry and entry.get("algo") in planner.REGISTRY:
            node.attrs["algo"] = entry["algo"]
            report.append(dict(row, algo=entry["algo"], times_ms=entry.get("times_ms", {}),
                               cached=True))
            continue
        if time.perf_counter() - t_start > budget_s:
            report.append(dict(row, algo=node.attrs.get("algo", "auto"), times_ms={},
                               cached=False, skipped="budget spent"))
            continue
        x = rng.standard_normal(xs).astype(np.float32)
        res = None if rs is None else rng.standard_normal(rs).astype(np.float32)
        a = node.attrs
        times = {}
        for name in planner.REGISTRY:
            if not planner.can_run(name, prob):
                continue
            packed = {}

            def call(name=name, packed=packed):
                return F.conv2d(x, node.params["weight"], node.params.get("bias"), a["stride"],
                                tuple(a["pads"]), a["dilation"], a["groups"], a.get("activation"),
                                name, res, packed)
            call()
            ts = []
            for _ in range(max(1, repeat)):
                t0 = time.perf_counter()
                call()
                ts.append(time.perf_counter() - t0)
            times[name] = float(np.median(ts)) * 1e3
        best = min(times, key=times.get)
        node.attrs["algo"] = best
        entry = {"algo": best, "times_ms": times, "layer": node.name}
        save_plan(key, entry)
        plans[key] = entry  # a later layer of the same shape reuses this measurement
        report.append(dict(row, algo=best, times_ms=times, cached=False))
    model.invalidate()
    return report
