"""A small graph runtime: nodes in topological order over named values.

A :class:`Model` is a list of :class:`Node` (op name from :mod:`fastconv.ops`,
input and output value names, attributes, weight arrays), the names of its
inputs and outputs, and named constants.  Importers (``fc.from_torch``,
``fc.from_onnx``) build one; ``fc.optimize`` rewrites one.

Buffers are planned: the first call with a new input shape runs the graph
allocating freely and records every value's shape; from then on each
intermediate float32 result is written (``out=``) into one of a few reusable
slots chosen by liveness (a slot is free again after its value's last reader
ran; views such as reshape keep their source's slot alive; of the free slots
that fit, the one used most recently, so a result tends to land on lines still in
cache).  Steady-state calls allocate nothing but the returned outputs.  Plans and slots are kept
per Python thread, so a model may be called from several threads at once.

Models pickle (plans and caches are dropped and rebuilt on first use) and
save to a single ``.npz`` file (``model.save(path)``, ``fc.load(path)``) that
holds a JSON description and the weights; loading never unpickles.
"""
import json
import re
import threading
import time

import numpy as np

from . import _checks, _memory, _runtime, _workspace
from .ops import OPS, flops

# the dtypes of the node outputs a plan keeps in its reused buffers: float32 activations,
# and the int8 / uint8 tensors between the int8 layers of a QDQ model (optimize.fuse_qdq)
_PLANNED_DTYPES = (np.dtype(np.float32), np.dtype(np.uint8), np.dtype(np.int8))

FORMAT = "fastconv-model"
FORMAT_VERSION = 1


class Node:
    """One operation: ``outputs = op(inputs)`` with ``attrs`` and weight ``params``."""

    __slots__ = ("op", "name", "inputs", "outputs", "attrs", "params", "source", "cache")

    def __init__(self, op, name, inputs, outputs, attrs=None, params=None, source=None):
        if op not in OPS:
            raise ValueError(f"{name}: unknown op {op!r}")
        if len(outputs) != 1:
            raise ValueError(f"{name}: a node has exactly one output, got {list(outputs)}")
        self.op = op
        self.name = name
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.attrs = dict(attrs or {})
        self.params = dict(params or {})
        self.source = source  # where the node came from (torch module path, ONNX node name)
        self.cache = {}  # transformed weights (Winograd U, ...); dropped with the node

    @property
    def layer(self):
        return f"{self.name} ({self.op})"

    def copy(self):
        n = Node(self.op, self.name, self.inputs, self.outputs, dict(self.attrs),
                 dict(self.params), self.source)
        return n

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__ if k != "cache"}

    def __setstate__(self, state):
        for k, v in state.items():
            setattr(self, k, v)
        self.cache = {}

    def __repr__(self):
        return f"Node({self.op}: {', '.join(self.inputs)} -> {', '.join(self.outputs)})"


class _Plan:
    """Execution plan for one set of input shapes: value slots, buffers, output shapes."""

    __slots__ = ("steps", "nvalues", "inputs", "outputs", "consts", "slot_bytes", "naive_bytes",
                 "shapes", "direct", "program")


def _pick_slot(free, slots, touched, need):
    """The slot for a new result of ``need`` floats: of the free slots that hold it, the
    one read or written most recently (its lines the likeliest to be in cache still; of
    two freed by the same step, the larger: ResNet-50's optimized plan then needs 7.7
    MiB instead of best fit's 9.2); else the largest free slot, grown; else a new slot
    (appended to ``slots``).  ``slots``: capacities; ``touched``: slot -> last step."""
    fits = [s for s in free if slots[s] >= need]
    if fits:
        return max(fits, key=lambda s: (touched.get(s, -1), slots[s]))
    if free:
        slot = max(free, key=lambda s: slots[s])
        slots[slot] = need
        return slot
    slots.append(need)
    return len(slots) - 1


class Model:
    """A computation graph callable like a function: ``y = model(x)``.

    Inputs may be NumPy arrays or CPU torch tensors; outputs come back as the
    same type as the first input.  A model with several outputs returns a tuple.
    """

    def __init__(self, nodes, inputs, outputs, constants=None, name="model", input_shapes=None,
                 input_dtypes=None):
        self.nodes = list(nodes)
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.constants = dict(constants or {})
        self.name = name
        # declared input shapes (None for a free dimension) used to check calls
        self.input_shapes = dict(input_shapes or {})
        # inputs that are not float32: name -> dtype name ("uint8", "int8"; a quantized
        # ONNX graph's integer input), taken as exactly that type
        self.input_dtypes = dict(input_dtypes or {})
        self.backend = "cpu"  # "cuda": run device-resident (fc.optimize(..., backend="cuda"))
        self.validate()
        self._reset()

    # -- structure ------------------------------------------------------------------------
    def validate(self):
        """Every input is defined before it is read; names are unique; outputs exist."""
        defined = set(self.inputs) | set(self.constants)
        for node in self.nodes:
            for v in node.inputs:
                if v and v not in defined:
                    raise ValueError(f"{self.name}: node {node.name} ({node.op}) reads {v!r}, "
                                     "which no earlier node, input or constant defines")
            for v in node.outputs:
                if v in defined:
                    raise ValueError(f"{self.name}: value {v!r} is defined twice "
                                     f"(again by {node.name})")
                defined.add(v)
        for v in self.outputs:
            if v not in defined:
                raise ValueError(f"{self.name}: output {v!r} is not computed by any node")

    def _reset(self):
        self._local = threading.local()

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_local", None)
        state.pop("_device_buffers", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__dict__.setdefault("input_dtypes", {})
        self._reset()

    def invalidate(self):
        """Forget buffer plans and transformed weights (after editing nodes or params)."""
        for node in self.nodes:
            node.cache = {}
        self.__dict__.pop("_device_buffers", None)
        self._reset()

    # -- execution --------------------------------------------------------------------------
    def _convert_inputs(self, args, kwargs):
        if kwargs:
            unknown = [k for k in kwargs if k not in self.inputs]
            if unknown:
                raise ValueError(f"{self.name}: unknown inputs {unknown}; inputs are {self.inputs}")
            args = tuple(args) + tuple(kwargs[k] for k in self.inputs[len(args):] if k in kwargs)
        if len(args) != len(self.inputs):
            raise ValueError(f"{self.name}: expected {len(self.inputs)} input(s) "
                             f"{self.inputs}, got {len(args)}")
        arrays = []
        for name, a in zip(self.inputs, args):
            dt = self.input_dtypes.get(name)
            if dt is None:
                arr = _checks.as_float32(a, f"{self.name} input {name!r}")
            else:
                arr = a.numpy() if type(a).__module__.startswith("torch") else a
                if not isinstance(arr, np.ndarray) or arr.dtype != np.dtype(dt):
                    raise TypeError(f"{self.name}: input {name!r} must be a {dt} array (the "
                                    f"model's quantized input), got "
                                    f"{type(a).__name__} {getattr(a, 'dtype', '')}")
            want = self.input_shapes.get(name)
            if want is not None:
                ok = len(want) == arr.ndim and all(w is None or w == d for w, d in zip(want, arr.shape))
                if not ok:
                    shown = ", ".join("*" if w is None else str(w) for w in want)
                    raise ValueError(f"{self.name}: input {name!r} must have shape ({shown}) "
                                     f"(* = any size), got {tuple(arr.shape)}")
            arrays.append(arr)
        return arrays

    def __call__(self, *args, **kwargs):
        if getattr(self, "backend", "cpu") == "cuda":
            from ._device_run import run_on_device
            outs = run_on_device(self, args, kwargs)
            return outs[0] if len(outs) == 1 else tuple(outs)
        arrays = self._convert_inputs(args, kwargs)
        outs = self._run(arrays)
        first = args[0] if args else next(iter(kwargs.values()))
        outs = [_checks.wrap_like(o, first) if isinstance(o, np.ndarray) else o for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    forward = __call__

    def _plans(self):
        plans = getattr(self._local, "plans", None)
        if plans is None:
            plans = self._local.plans = {}
        return plans

    def _run(self, arrays, timings=None):
        key = tuple(a.shape for a in arrays)
        plans = self._plans()
        plan = plans.get(key)
        if plan is None:
            plan, first_outputs = self._plan(arrays)
            if len(plans) > 16:
                plans.clear()
            plans[key] = plan
            if timings is None:
                return first_outputs
        values = [None] * plan.nvalues
        for i, c in plan.consts:
            values[i] = c
        for i, a in zip(plan.inputs, arrays):
            values[i] = a
        if timings is None:
            # one BLAS pin for the whole run: per layer, pinning and restoring the
            # library's thread count costs ~2 us
            with _runtime.blas_pin:
                program = plan.program
                if program is not None and program.holds(plan):
                    program.run(plan, values)
                else:
                    plan.program = None
                    if plan.direct is None:
                        plan.direct = _direct_steps(plan)
                    _capture(plan, values)
        else:
            for fn, node, ins, o, buf in plan.steps:
                t0 = time.perf_counter()
                values[o] = fn(node, [values[i] if i >= 0 else None for i in ins], buf)
                timings.append(time.perf_counter() - t0)
        return [values[i] for i in plan.outputs]

    def _plan(self, arrays):
        """Run once allocating freely, then assign reusable slots by liveness.

        Returns (plan, outputs of this first run).
        """
        values = dict(self.constants)
        values.update(zip(self.inputs, arrays))
        results = []
        for node in self.nodes:
            args = [values[v] if v else None for v in node.inputs]
            try:
                res = OPS[node.op].fn(node, args, None)
            except (ValueError, TypeError, IndexError) as exc:
                msg = str(exc)
                if node.name not in msg:
                    msg = f"{node.layer}: {msg}"
                kind = type(exc) if isinstance(exc, (ValueError, TypeError)) else ValueError
                raise kind(msg) from None
            values[node.outputs[0]] = res
            results.append(res)

        # liveness over storage roots: views (alias ops) keep their source's slot alive
        n = len(self.nodes)
        root = {}
        last = {}
        for i, node in enumerate(self.nodes):
            for v in node.inputs:
                if v:
                    last[root.get(v, v)] = i
            out = node.outputs[0]
            src = node.inputs[0] if node.inputs else None
            if OPS[node.op].kind == "alias" and src and isinstance(results[i], np.ndarray) \
                    and np.shares_memory(results[i], values[src]):
                root[out] = root.get(src, src)
        # outputs, and values that outputs are views of, are fresh arrays every call:
        # the caller keeps them, so they must never sit in a reused slot
        returned = {root.get(v, v) for v in self.outputs}
        for v in returned:
            last[v] = n

        slots = []  # capacity of each slot, in floats
        free = []
        held = {}  # root value -> slot
        touched = {}  # slot -> the last step that read or wrote it
        assign = {}
        naive = 0
        for i, node in enumerate(self.nodes):
            out = node.outputs[0]
            res = results[i]
            if (OPS[node.op].kind == "out" and isinstance(res, np.ndarray)
                    and res.dtype in _PLANNED_DTYPES and res.size and out not in returned
                    and last.get(out, -1) > i):
                need = -(-res.nbytes // 4)   # slots hold float32s; int8 tensors use their bytes
                naive += 4 * need
                slot = _pick_slot(free, slots, touched, need)
                if slot in free:
                    free.remove(slot)
                held[out] = slot
                assign[out] = (slot, res.shape, res.dtype)
            for v in node.inputs + [out]:  # the slots this step reads or writes
                r = root.get(v, v)
                if v and r in held:
                    touched[held[r]] = i
            for r in [r for r in held if last.get(r, -1) <= i]:
                free.append(held.pop(r))

        index = {}
        for name in list(self.inputs) + list(self.constants) + [nd.outputs[0] for nd in self.nodes]:
            index.setdefault(name, len(index))
        arena = [_memory.empty(size, np.float32) for size in slots]
        steps = []
        for node in self.nodes:
            out = node.outputs[0]
            buf = None
            if out in assign:
                slot, shape, dtype = assign[out]
                n = int(np.prod(shape))
                buf = arena[slot][:-(-n * dtype.itemsize // 4)].view(dtype)[:n].reshape(shape)
            steps.append((OPS[node.op].fn, node, [index[v] if v else -1 for v in node.inputs],
                          index[out], buf))
        plan = _Plan()
        plan.direct = None
        plan.program = None
        plan.steps = steps
        plan.nvalues = len(index)
        plan.inputs = [index[v] for v in self.inputs]
        plan.outputs = [index[v] for v in self.outputs]
        plan.consts = [(index[k], v) for k, v in self.constants.items()]
        plan.slot_bytes = 4 * sum(slots)
        plan.naive_bytes = naive
        plan.shapes = {k: (tuple(np.shape(v)), getattr(v, "dtype", None)) for k, v in values.items()}
        return plan, [values[v] for v in self.outputs]

    # -- reports -------------------------------------------------------------------------------
    def memory(self, *example):
        """Planned buffer bytes for these inputs: {'planned', 'unplanned', 'slots'}."""
        arrays = self._convert_inputs(example, {})
        plan = self._plans().get(tuple(a.shape for a in arrays)) or self._plan(arrays)[0]
        return {"planned_bytes": plan.slot_bytes, "unplanned_bytes": plan.naive_bytes,
                "workspace_bytes": _workspace_bytes()}

    def shapes(self, *example):
        """value name -> (shape, dtype) for these inputs."""
        arrays = self._convert_inputs(example, {})
        return dict(self._plan(arrays)[0].shapes)

    def profile(self, *example, repeat=5):
        """Per-node median seconds over ``repeat`` runs (after one warm-up run); a model on
        the CUDA backend is timed device-resident, each node up to its synchronization."""
        if getattr(self, "backend", "cpu") == "cuda":
            from ._device_run import profile_on_device
            return profile_on_device(self, example, repeat)
        arrays = self._convert_inputs(example, {})
        self._run(arrays)
        runs = []
        for _ in range(max(1, repeat)):
            t = []
            self._run(arrays, timings=t)
            runs.append(t)
        return [float(v) for v in np.median(np.array(runs), axis=0)]

    def explain(self, *example, repeat=5, roof_gflops=None):
        """Per node: op, output shape, kernel, backend, time, GFLOP/s, % of roof; and the total.

        ``example``: the input(s) to time with (default: the example the model was
        imported or optimized with).  ``roof_gflops``: the SGEMM roof to compare
        with (default: measured once per process).
        """
        if not example:
            if getattr(self, "example_shapes", None) is None:
                raise ValueError(f"{self.name}.explain: pass an example input (this model "
                                 "was built without one)")
            rng = np.random.default_rng(0)
            example = [rng.standard_normal(s).astype(np.float32) for s in self.example_shapes]
        cuda = getattr(self, "backend", "cpu") == "cuda"
        if cuda:  # shapes and the default roof come from the host
            from . import _cuda
            example = [a.copy_to_host() if _cuda.is_device_array(a) and hasattr(a, "copy_to_host")
                       else np.asarray(a) for a in example]
        times = self.profile(*example, repeat=repeat)
        fallbacks = set(getattr(self, "device_fallbacks", ()) or ()) if cuda else set()
        arrays = self._convert_inputs(example, {})
        plan = self._plans().get(tuple(a.shape for a in arrays)) or self._plan(arrays)[0]
        if roof_gflops is not None:
            roof = roof_gflops
        else:
            roof = _cuda.sgemm_roof() if cuda else sgemm_roof()
        rows = []
        for (fn, node, ins, o, buf), t in zip(plan.steps, times):
            in_shapes = [plan.shapes[v][0] for v in node.inputs if v]
            out_shape = plan.shapes[node.outputs[0]][0]
            fl = flops(node, in_shapes, out_shape)
            where = ("host" if node.name in fallbacks else "cuda") if cuda else "cpu"
            rows.append((node, out_shape, kernel_of(node, in_shapes, where), t, fl, where))
        total = sum(r[3] for r in rows)
        total_fl = sum(r[4] for r in rows)
        where = (f"CUDA ({_cuda.device_name()}), SGEMM roof "
                 + ("not measured (needs PyTorch with CUDA)" if roof is None else
                    f"{roof:.0f} GFLOP/s")) if cuda else \
            f"{_runtime.get_num_threads()} threads, SGEMM roof {roof:.0f} GFLOP/s"
        lines = [f"{self.name}: {len(self.nodes)} nodes, input "
                 f"{', '.join(str(tuple(a.shape)) for a in arrays)}, {where}",
                 f"{'node':28s} {'op':16s} {'output':20s} {'kernel':26s} {'backend':7s} "
                 f"{'ms':>8s} {'GFLOP/s':>8s} {'% roof':>7s}"]
        lines.append("-" * len(lines[-1]))
        pct = (lambda g: "") if roof is None else (lambda g: f"{100 * g / roof:7.1f}")
        for node, shape, kern, t, fl, be in rows:
            gf = fl / t / 1e9 if fl and t > 0 else None
            lines.append(f"{node.name[:28]:28s} {_describe(node)[:16]:16s} {str(shape)[:20]:20s} "
                         f"{kern[:26]:26s} {be:7s} {t * 1e3:8.3f} "
                         f"{'' if gf is None else f'{gf:8.1f}':>8s} "
                         f"{'' if gf is None else pct(gf):>7s}")
        gf = total_fl / total / 1e9 if total > 0 else 0.0
        lines.append(f"{'total':28s} {'':16s} {'':20s} {'':26s} {'':7s} {total * 1e3:8.3f} "
                     f"{gf:8.1f} {pct(gf):>7s}")
        if any(re.search(r" \d+x\d+/\d+x\d+$", r[2]) for r in rows):
            lines.append("kernel 'NAME a x b/R x S': the kernel ran the a x b of the layer's "
                         "R x S taps that read the input; the others only ever read padding")
        mem = {"planned": plan.slot_bytes, "unplanned": plan.naive_bytes}
        lines.append(f"activation buffers: {mem['planned'] / 2**20:.1f} MiB planned "
                     f"(vs {mem['unplanned'] / 2**20:.1f} MiB without reuse); kernel workspaces "
                     f"{_workspace_bytes() / 2**20:.1f} MiB")
        if not cuda:
            lines.append(self._replay_line(arrays))
        return "\n".join(lines)

    def _replay_line(self, arrays):
        """How much of a run with these inputs replays recorded kernels (two runs first,
        the second records)."""
        for _ in range(2):
            self._run(arrays)
        plan = self._plans().get(tuple(a.shape for a in arrays))
        program = None if plan is None else plan.program
        groups = [] if program is None else [it for it in program.items
                                             if type(it) is _Replay]
        if not groups:
            return "replay: none (no convolution reads only the plan's own buffers)"
        steps = sum(len(g.steps) for g in groups)
        kernels = sum(len(g.launches) for g in groups)
        return (f"replay: {steps} of {len(plan.steps)} nodes run as {kernels} recorded kernel "
                "launches from the third call on (the times above are their planned calls')")

    def summary(self):
        """One line per node: name, op with fused parts, inputs -> output."""
        lines = [f"{self.name}: inputs {self.inputs} -> outputs {self.outputs}"]
        for node in self.nodes:
            lines.append(f"  {node.name}: {_describe(node)}({', '.join(v for v in node.inputs if v)})"
                         f" -> {node.outputs[0]}")
        return "\n".join(lines)

    def __repr__(self):
        return f"Model({self.name!r}, {len(self.nodes)} nodes, inputs={self.inputs}, " \
               f"outputs={self.outputs})"

    # -- files ---------------------------------------------------------------------------------
    def save(self, path):
        """Write the model (graph as JSON, weights as arrays) to one ``.npz`` file."""
        arrays = {}
        desc_nodes = []
        for i, node in enumerate(self.nodes):
            params = {}
            for k, v in node.params.items():
                if v is None:
                    continue
                key = f"n{i}.{k}"
                arrays[key] = np.asarray(v)
                params[k] = key
            desc_nodes.append({"op": node.op, "name": node.name, "inputs": node.inputs,
                               "outputs": node.outputs, "attrs": _jsonable(node.attrs),
                               "params": params, "source": node.source})
        consts = {}
        for j, (k, v) in enumerate(self.constants.items()):
            key = f"c{j}"
            arrays[key] = np.asarray(v)
            consts[k] = key
        desc = {"format": FORMAT, "version": FORMAT_VERSION, "name": self.name,
                "inputs": self.inputs, "outputs": self.outputs, "nodes": desc_nodes,
                "constants": consts,
                "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
                "input_dtypes": self.input_dtypes,
                "backend": getattr(self, "backend", "cpu"),
                "example_shapes": [list(s) for s in (getattr(self, "example_shapes", None) or [])]}
        arrays["__graph__"] = np.frombuffer(json.dumps(desc).encode(), np.uint8)
        with open(path, "wb") as f:
            np.savez(f, **arrays)


def load(path):
    """Read a model written by ``Model.save``."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"load: {path!s} is not a fastconv model file ({exc})") from None
    with data:
        if "__graph__" not in data.files:
            raise ValueError(f"load: {path!s} is not a fastconv model file (no graph)")
        desc = json.loads(bytes(data["__graph__"]).decode())
        if desc.get("format") != FORMAT:
            raise ValueError(f"load: {path!s} is not a fastconv model file")
        if desc.get("version", 0) > FORMAT_VERSION:
            raise ValueError(f"load: {path!s} was written by a newer fastconv "
                             f"(format {desc['version']}, this one reads {FORMAT_VERSION})")
        nodes = [Node(d["op"], d["name"], d["inputs"], d["outputs"], _tuples(d["attrs"]),
                      {k: data[v] for k, v in d["params"].items()}, d.get("source"))
                 for d in desc["nodes"]]
        consts = {k: data[v] for k, v in desc["constants"].items()}
    model = Model(nodes, desc["inputs"], desc["outputs"], consts, desc.get("name", "model"),
                  {k: tuple(v) for k, v in desc.get("input_shapes", {}).items()},
                  desc.get("input_dtypes"))
    model.example_shapes = [tuple(s) for s in desc.get("example_shapes", [])] or None
    model.backend = desc.get("backend", "cpu")
    return model


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def _tuples(v):
    if isinstance(v, dict):
        return {k: _tuples(x) for k, x in v.items()}
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    return v


def _describe(node):
    parts = [node.op]
    if node.attrs.get("folded_bn"):
        parts.append("bn")
    if node.op in ("conv", "conv_transpose", "linear", "qconv", "sparse_conv",
                   "inverted_residual") \
            and len(node.inputs) > 1 \
            and node.inputs[1]:
        parts.append("add")
    if node.attrs.get("expand_activation"):
        parts.append(node.attrs["expand_activation"])
    if node.attrs.get("activation"):
        parts.append(node.attrs["activation"])
    if node.attrs.get("global_pool"):
        parts.append("avgpool")
    if node.attrs.get("bits"):
        parts.append(f"{node.attrs['bits']}bit")
    if node.attrs.get("sparsity"):
        parts.append(f"{100 * node.attrs['sparsity']:.0f}%0")
    return "+".join(parts)


def _direct_steps(plan):
    """The plan's steps with each convolution and inverted residual block that has a
    bound call for its shapes (made by the run that planned it) calling that directly
    (functional.planned_conv, planned_inverted_residual), and each int8 conv, int8
    linear, quantized add, max pool, global average pool and fake quantization as a step
    whose kernels may be recorded (ops.planned_qconv, ops.planned_step), each alias
    (flatten, reshape) returning the same view while its input is the same object
    (_same_view): no argument handling,
    planning or key checks per run, which in a model cost far more than their warm few
    microseconds once the kernels have evicted the interpreter's data from the caches.
    Anything unexpected falls back to the op itself, and the next run rebuilds these
    steps from the layers' new bound calls."""
    from . import functional as F
    from .ops import OPS, PLANNED_OPS, planned_step
    steps = []
    for fn, node, ins, o, buf in plan.steps:
        direct = None
        if node.op == "conv" and buf is not None and ins and ins[0] >= 0:
            x_shape = plan.shapes[node.inputs[0]][0]
            direct = F.planned_conv(node.cache, node.params, x_shape, buf.shape)
        elif node.op == "inverted_residual" and buf is not None and ins and ins[0] >= 0:
            from .ops import _IR_PARAMS
            x_shape = plan.shapes[node.inputs[0]][0]
            direct = F.planned_inverted_residual(node.cache, node.params, _IR_PARAMS, x_shape,
                                                 buf.shape)
        elif node.op == "qconv" and buf is not None and ins and ins[0] >= 0:
            from .ops import planned_qconv
            x_shape, x_dtype = plan.shapes[node.inputs[0]]
            direct = planned_qconv(node, x_shape, buf.shape, x_dtype)
        elif node.op in PLANNED_OPS and buf is not None and ins and all(i >= 0 for i in ins):
            direct = planned_step(node, [plan.shapes[v] for v in node.inputs], buf)
        elif buf is None and OPS[node.op].kind == "alias":
            fn = _same_view(fn)
        if direct is not None:
            def fn(node, args, buf, _direct=direct, _op=fn):
                if _direct(args[0], buf, args[1] if len(args) > 1 else None):
                    return buf
                plan.direct = None  # the op rebinds the layer: take its new call next run
                return _op(node, args, buf)
            fn.planned = direct
        steps.append((fn, node, ins, o, buf))
    return steps


def _same_view(op):
    """An alias step (flatten, reshape, ...) that returns the view it made last while its
    inputs are the same objects: a view of a plan buffer is then as stable as the buffer,
    so that the steps after it (a classifier after the flatten) may be replayed."""
    memo = [None, None]

    def fn(node, args, buf):
        last = memo[0]
        if last is not None and len(last) == len(args) and \
                all(a is b for a, b in zip(args, last)):
            return memo[1]
        out = op(node, args, buf)
        memo[0], memo[1] = list(args), out
        return out
    fn.alias = True
    return fn


def _capture(plan, values):
    """Run the plan's direct steps, recording the kernel launches of every step that may be
    replayed, and make plan.program from them when the run kept every step's planned
    call.  A step may be replayed when it runs a planned call, reads only constants and
    slots that earlier steps wrote (the same objects every run), writes its own slot, and
    its capture stays complete (its bound call launches all its kernels through
    _runtime.launch)."""
    steps = plan.direct
    stable = {i for i, _ in plan.consts}
    items = []
    for step in steps:
        fn, node, ins, o, buf = step
        args = [values[i] if i >= 0 else None for i in ins]
        planned = getattr(fn, "planned", None)
        if planned is None or buf is None or any(i >= 0 and i not in stable for i in ins):
            values[o] = fn(node, args, buf)
            items.append(step)
        else:
            with _runtime.capture() as cap:
                values[o] = fn(node, args, buf)
            items.append((step, cap.launches if cap.complete else [], args))
        if (buf is not None and values[o] is buf) or \
                (getattr(fn, "alias", False) and all(i < 0 or i in stable for i in ins)):
            stable.add(o)   # (a view of stable slots: the same object every run)
    if plan.direct is steps:
        plan.program = _Program.build(items, steps)


class _Replay:
    """Consecutive plan steps as their recorded kernel launches.

    Holds while each value they read from outside is the object it was at capture and
    each layer's weight and bias objects are the ones its call was bound to; then the
    launches write the same slots that the steps would."""

    __slots__ = ("launches", "reads", "writes", "bound", "blas", "steps")

    def __init__(self, group):
        self.launches = [launch for _, launches, _ in group for launch in launches]
        self.steps = [step for step, _, _ in group]
        self.writes = tuple((step[3], step[4]) for step in self.steps)
        written = set()
        reads = []
        for (fn, node, ins, o, buf), _, args in group:
            reads += [(i, a) for i, a in zip(ins, args) if i >= 0 and i not in written]
            written.add(o)
        self.reads = tuple(reads)
        self.bound = tuple(e for step in self.steps for e in step[0].planned.bound_params)
        self.blas = any(step[0].planned.blas for step in self.steps)

    def holds(self, values):
        for i, a in self.reads:
            if values[i] is not a:
                return False
        for params, key, obj in self.bound:
            if params.get(key) is not obj:
                return False
        return True


class _Program:
    """A plan's run as plain steps and _Replay groups, valid while the plan keeps the direct
    steps it was captured from, for the thread count and the workspace buffers
    (``_workspace._generation``) it was captured with."""

    __slots__ = ("items", "direct", "threads", "generation")

    @classmethod
    def build(cls, items, direct):
        prog = cls()
        prog.direct = direct
        prog.items, group = [], []
        for item in items + [None]:
            if type(item) is tuple and len(item) == 3 and item[1]:
                group.append(item)
                continue
            if group:
                prog.items.append(_Replay(group))
                group = []
            if item is not None:
                prog.items.append(item if len(item) == 5 else item[0])
        prog.threads = _runtime.get_num_threads()
        prog.generation = _workspace._generation
        return prog

    def holds(self, plan):
        return (plan.direct is self.direct and self.threads == _runtime.get_num_threads()
                and self.generation == _workspace._generation)

    def run(self, plan, values):
        for item in self.items:
            if type(item) is tuple:
                _run_step(item, values)
            elif item.holds(values):
                with _runtime.kernel_scope(blas=item.blas):
                    _runtime.replay(item.launches)
                for o, buf in item.writes:
                    values[o] = buf
            else:  # a changed layer: its steps as planned, and a new capture next run
                plan.program = None
                for step in item.steps:
                    _run_step(step, values)


def _run_step(step, values):
    """A plan step (fn, node, input value indices, output index, buffer) on ``values``."""
    fn, node, ins, o, buf = step
    values[o] = fn(node, [values[i] if i >= 0 else None for i in ins], buf)


def kernel_of(node, in_shapes, backend="cpu"):
    """Which kernel a node runs for these input shapes ("cuda": the GPU family; "host": a
    device-resident model's node that runs on the host)."""
    if backend == "cuda" and node.op == "conv":
        from . import _cuda
        from . import functional as F
        from .ops import _weight_shape
        a = node.attrs
        try:
            prob = F.conv_problem(tuple(in_shapes[0]), _weight_shape(node), a["stride"],
                                  tuple(a["pads"]), a["dilation"], a["groups"])
            return _cuda.gpu_algo(prob, a.get("algo", "auto"), node.name)
        except (ValueError, TypeError):
            return "?"
    if node.op in ("conv", "cb_conv"):
        from . import functional as F
        from .ops import _weight_shape
        a = node.attrs
        try:
            alg = F._conv_plan(tuple(in_shapes[0]), _weight_shape(node), a["stride"],
                               tuple(a["pads"]), a["dilation"], a["groups"], a.get("algo", "auto"),
                               node.layer, True)[1]
            return getattr(alg, "label", alg.name)
        except (ValueError, TypeError):
            return "?"
    if node.op == "conv_transpose" and backend == "cpu":
        from . import functional as F
        a, w = node.attrs, node.params["weight"]
        try:
            return F.conv_transpose_kernel(tuple(in_shapes[0]), tuple(w.shape), a["stride"],
                                           tuple(a["pads"]), a["output_padding"], a["groups"],
                                           a["dilation"])
        except (ValueError, TypeError):
            return "?"
    if node.op == "inverted_residual":
        from . import functional as F
        a, p = node.attrs, node.params
        shape = lambda k: None if p.get(k) is None else tuple(p[k].shape)  # noqa: E731
        try:
            return F.inverted_residual_kernel(tuple(in_shapes[0]), shape("expand_weight"),
                                              shape("dw_weight"), a["stride"], tuple(a["pads"]),
                                              a["dilation"], shape("project_weight"),
                                              a.get("expand_stride"), a.get("expand_pads"))
        except (ValueError, TypeError):
            return "?"
    if node.op == "sparse_conv" and node.attrs.get("block", 1) > 1:
        m = node.attrs.get("winograd")
        return f"winograd{m}_bsr{node.attrs['block']}" if m else f"bsr{node.attrs['block']}"
    if node.op == "qconv" and node.attrs.get("groups", 1) > 1:
        from .kernels.cpu.depthwise_int8 import MAX_TAPS
        k, cg, r, s = node.params["weight_q"].shape
        if (k, cg) == (node.attrs["groups"], 1) and r * s <= MAX_TAPS:
            return "int8-depthwise"   # (quantization._dw_applies: its own kernel)
    if node.op in ("qconv", "qlinear"):
        from .kernels.cpu import vnni
        return "int8-vnni" if vnni.HAS_VNNI else "int8"
    return {"conv_transpose": "gemm+col2im", "linear": "gemm", "matmul": "blas",
            "sparse_conv": "csr", "sparse_linear": "csr",
            "max_pool": "pooling", "avg_pool": "pooling", "global_avg_pool": "pooling",
            "adaptive_avg_pool": "pooling", "fake_quant": "fakequant",
            "qadd": "fakequant"}.get(node.op, "numpy")


def _workspace_bytes():
    from . import _workspace
    pool = getattr(_workspace._local, "pool", None) or {}
    return sum(b.nbytes for b in pool.values())


_roof = {}


def sgemm_roof():
    """The machine's SGEMM GFLOP/s with fastconv's thread count (measured once per process)."""
    threads = _runtime.get_num_threads()
    if threads not in _roof:
        from .cli import measure_sgemm_roof
        _roof[threads] = measure_sgemm_roof(threads, n=1024, repeat=5)
    return _roof[threads]
