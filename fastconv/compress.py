"""Model compression: ``fc.quantize`` (int8).

``quantize(model, calibration_batches)`` returns a copy of a fastconv Model in
which convolutions and linear layers run in int8: weights per-channel
symmetric int8, each layer's input quantized per tensor with a scale
calibrated on the batches (``minmax``, ``percentile`` or ``entropy``), int32
accumulation, and the float epilogue (bias, residual, relu/relu6) fused.  The
first convolution and the last linear layer stay float unless asked, as is
usual (they are small and the most sensitive).  With ``eval_fn`` and
``max_drop``, layers are returned to float, most sensitive first, until the
metric drops by at most ``max_drop``.  ``model.quant_report`` says, per layer,
what was done, why, and its output error on the first calibration batch.
"""
import numpy as np

from . import _checks
from .graph import Model
from .ops import OPS
from .quantization import quantize_tensor, scales_for_range

_Q_ACTS = (None, "relu", "relu6")
METHODS = ("minmax", "percentile", "entropy")


def _batches(model, calibration_batches, layer):
    if calibration_batches is None:
        raise ValueError(f"{layer}: calibration data is required (an iterable of input "
                         "batches shaped like the model's input)")
    if isinstance(calibration_batches, np.ndarray) or hasattr(calibration_batches, "shape"):
        calibration_batches = [calibration_batches]
    out = []
    want = model.input_shapes.get(model.inputs[0]) if len(model.inputs) == 1 else None
    for i, b in enumerate(calibration_batches):
        arr = _checks.as_float32(b, f"{layer}: calibration batch {i}")
        if want is not None and (len(want) != arr.ndim or any(
                w is not None and w != d for w, d in zip(want, arr.shape))):
            shown = ", ".join("*" if w is None else str(w) for w in want)
            raise ValueError(f"{layer}: calibration batch {i} has shape {tuple(arr.shape)}; "
                             f"the model's input is ({shown})")
        out.append(arr)
    if not out:
        raise ValueError(f"{layer}: calibration_batches is empty; at least one batch is needed")
    return out


def _trace(model, batch, names):
    """{node name: (its inputs, its float output)} for the nodes in ``names``."""
    values = dict(model.constants)
    values[model.inputs[0]] = batch
    seen = {}
    for node in model.nodes:
        args = [values[v] if v else None for v in node.inputs]
        res = OPS[node.op].fn(node, args, None)
        values[node.outputs[0]] = res
        if node.name in names:
            seen[node.name] = (args, res)
    return seen


class _Observer:
    """Range statistics of one layer's input over the calibration batches."""

    def __init__(self, method):
        self.method = method
        self.lo = np.inf
        self.hi = -np.inf
        self.samples = []

    def add(self, x):
        x = np.asarray(x, np.float32).reshape(-1)
        self.lo = min(self.lo, float(x.min()))
        self.hi = max(self.hi, float(x.max()))
        if self.method != "minmax":
            step = max(1, x.size // 200_000)
            self.samples.append(x[::step])

    def range(self):
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)
        if self.method == "minmax":
            return lo, hi
        v = np.concatenate(self.samples)
        if self.method == "percentile":
            return min(float(np.percentile(v, 0.01)), 0.0), max(float(np.percentile(v, 99.99)), 0.0)
        return _entropy_range(v, lo, hi)


def _entropy_range(v, lo, hi, bins=2048):
    """Clip threshold minimizing the KL divergence between the |x| histogram and its
    quantized version (the calibration TensorRT describes), applied symmetrically or to
    the positive side for non-negative inputs."""
    a = np.abs(v)
    levels = 128 if lo < 0 else 256  # int8 magnitudes, or the whole uint8 range
    amax = float(a.max()) if a.size else 0.0
    if amax == 0.0:
        return lo, hi
    hist, edges = np.histogram(a, bins=bins, range=(0, amax))
    hist = hist.astype(np.float64)
    best, best_t = np.inf, amax
    for i in range(levels, bins + 1, 16):
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()  # the reference: everything beyond clipped to the edge
        if p.sum() == 0:
            continue
        chunks = np.array_split(hist[:i], levels)  # the candidate: hist[:i] on `levels` steps
        q = np.concatenate([np.where(c > 0, c.sum() / max(1, np.count_nonzero(c)), 0.0)
                            for c in chunks])
        pn = p / p.sum()
        qn = q / q.sum() if q.sum() else q
        mask = pn > 0
        kl = np.sum(pn[mask] * np.log(pn[mask] / np.maximum(qn[mask], 1e-12)))
        if kl < best:
            best, best_t = kl, edges[i]
    return (max(lo, -best_t), min(hi, best_t)) if lo < 0 else (0.0, min(hi, best_t))


def _quantized_node(node, lo, hi, per_channel):
    """The int8 twin of a conv or linear node, for an input range [lo, hi]."""
    xdt = np.uint8 if lo >= 0 else np.int8
    sx, zx = scales_for_range(np.float64(lo), np.float64(hi), xdt)
    w = node.params["weight"]
    wq, sw, _ = quantize_tensor(w, dtype="int8", axis=0 if per_channel else None)
    if not per_channel:
        sw = np.full(w.shape[0], float(sw), np.float32)
    q = node.copy()
    q.op = "qconv" if node.op == "conv" else "qlinear"
    q.params = {"weight_q": wq, "w_scale": np.asarray(sw, np.float32)}
    if node.params.get("bias") is not None:
        q.params["bias"] = node.params["bias"]
    q.attrs = dict(node.attrs, x_scale=float(sx), x_zero_point=int(zx),
                   x_dtype=np.dtype(xdt).name, float_weight_shape=tuple(w.shape))
    q.attrs.pop("algo", None)
    return q


def quantize(model, calibration_batches, method="minmax", per_channel=True,
             quantize_first=False, quantize_last=False, eval_fn=None, max_drop=None):
    """An int8 copy of ``model`` (see the module docstring).

    ``calibration_batches``: an iterable of input arrays (or one array).
    ``eval_fn(model) -> float`` (higher is better, e.g. accuracy in points) and
    ``max_drop``: the accuracy gate.
    """
    layer = "quantize"
    if not isinstance(model, Model):
        raise TypeError(f"{layer}: expected a fastconv Model (fc.from_torch / fc.from_onnx), "
                        f"got {type(model).__name__}")
    if method not in METHODS:
        raise ValueError(f"{layer}: method must be one of {list(METHODS)}, got {method!r}")
    if len(model.inputs) != 1:
        raise ValueError(f"{layer}: models with one input are supported, this one has "
                         f"{len(model.inputs)}")
    if (eval_fn is None) != (max_drop is None):
        raise ValueError(f"{layer}: the accuracy gate needs both eval_fn and max_drop")
    batches = _batches(model, calibration_batches, layer)

    report = []
    eligible = []
    layers = [n for n in model.nodes if n.op in ("conv", "linear")]
    convs = [n for n in layers if n.op == "conv"]
    lins = [n for n in layers if n.op == "linear"]
    for n in layers:
        why = None
        if n.attrs.get("activation") not in _Q_ACTS:
            why = f"activation {n.attrs['activation']!r} has no int8 epilogue"
        elif n.attrs.get("global_pool"):
            why = "computes the global average pool after it (fc.optimize fused them)"
        elif n.op == "conv" and not quantize_first and convs and n is convs[0]:
            why = "first convolution kept float (quantize_first=True to change)"
        elif n.op == "linear" and not quantize_last and lins and n is lins[-1]:
            why = "last linear layer kept float (quantize_last=True to change)"
        elif n.op == "linear" and len(n.inputs) > 1:
            why = "linear with a residual input"
        if why:
            report.append({"layer": n.name, "op": n.op, "quantized": False, "reason": why})
        else:
            eligible.append(n)
    if not eligible:
        raise ValueError(f"{layer}: {model.name} has nothing to quantize (no convolution or "
                         "linear layer is eligible: " +
                         "; ".join(f"{r['layer']}: {r['reason']}" for r in report) + ")")

    names = {n.name for n in eligible}
    observers = {n.name: _Observer(method) for n in eligible}
    first_trace = None
    for b in batches:
        seen = _trace(model, b, names)
        first_trace = first_trace or seen
        for name, (args, _) in seen.items():
            observers[name].add(args[0])
    qnodes = {}
    errors = {}
    for n in eligible:
        lo, hi = observers[n.name].range()
        q = _quantized_node(n, lo, hi, per_channel)
        qnodes[n.name] = q
        args, yf = first_trace[n.name]
        yq = OPS[q.op].fn(q, args, None)
        errors[n.name] = float(np.linalg.norm(yq - yf) / max(np.linalg.norm(yf), 1e-30))

    kept_float = {}

    def build():
        nodes = [qnodes[n.name] if n.name in qnodes and n.name not in kept_float else n.copy()
                 for n in model.nodes]
        out = Model(nodes, model.inputs, model.outputs, model.constants, model.name,
                    model.input_shapes, model.input_dtypes)
        out.example_shapes = getattr(model, "example_shapes", None)
        return out

    qmodel = build()
    gate = None
    if eval_fn is not None:
        base = float(eval_fn(model))
        score = float(eval_fn(qmodel))
        order = sorted(qnodes, key=lambda k: -errors[k])
        i = 0
        while base - score > max_drop and i < len(order):
            kept_float[order[i]] = (f"kept float by the accuracy gate (output error rank {i + 1}: "
                                    f"{errors[order[i]]:.2e})")
            i += 1
            qmodel = build()
            score = float(eval_fn(qmodel))
        gate = {"float": base, "int8": score, "drop": base - score, "max_drop": max_drop,
                "met": base - score <= max_drop}
    for n in eligible:
        q = qnodes[n.name]
        entry = {"layer": n.name, "op": n.op, "quantized": n.name not in kept_float,
                 "reason": kept_float.get(n.name, "int8"), "x_dtype": q.attrs["x_dtype"],
                 "x_scale": q.attrs["x_scale"], "x_zero_point": q.attrs["x_zero_point"],
                 "rel_error": errors[n.name]}
        report.append(entry)
    order = {n.name: i for i, n in enumerate(model.nodes)}
    report.sort(key=lambda r: order[r["layer"]])
    qmodel.quant_report = report
    qmodel.quant_gate = gate
    return qmodel


def format_report(report, gate=None):
    """The quantization report as a table."""
    lines = [f"{'layer':28s} {'op':7s} {'int8':5s} {'input':6s} {'rel err':>9s}  reason"]
    for r in report:
        err = f"{r['rel_error']:9.2e}" if "rel_error" in r else f"{'':9s}"
        lines.append(f"{r['layer'][:28]:28s} {r['op']:7s} {'yes' if r['quantized'] else 'no':5s} "
                     f"{r.get('x_dtype', ''):6s} {err}  {r['reason']}")
    if gate:
        lines.append(f"accuracy gate: float {gate['float']:.3f}, int8 {gate['int8']:.3f}, drop "
                     f"{gate['drop']:.3f} (max {gate['max_drop']}): "
                     f"{'met' if gate['met'] else 'NOT met with every layer float'}")
    return "\n".join(lines)


# -- weight sharing (codebook) -------------------------------------------------------------------

def kmeans_1d(values, k, iters=30):
    """Centroids (k,) and the index of each value's centroid, by Lloyd's algorithm on the
    line, centroids initialised evenly over [min, max] (the initialisation Han et al.
    found best for weight sharing: it keeps the rare large weights represented)."""
    v = np.asarray(values, np.float64).reshape(-1)
    lo, hi = float(v.min()), float(v.max())
    cent = np.linspace(lo, hi, k) if hi > lo else np.full(k, lo)
    order = np.sort(v)
    for _ in range(iters):
        edges = (cent[1:] + cent[:-1]) / 2
        idx = np.searchsorted(edges, order)
        sums = np.bincount(idx, weights=order, minlength=k)
        counts = np.bincount(idx, minlength=k)
        new = np.where(counts > 0, sums / np.maximum(counts, 1), cent)
        if np.allclose(new, cent):
            break
        cent = new
    edges = (cent[1:] + cent[:-1]) / 2
    return cent.astype(np.float32), np.searchsorted(edges, v).astype(np.uint8)


def pack_indices(idx, bits):
    """uint8 indices (< 2**bits) packed: two per byte for bits <= 4, one per byte otherwise."""
    idx = np.asarray(idx, np.uint8).reshape(-1)
    if bits > 4:
        return idx.copy()
    if idx.size % 2:
        idx = np.append(idx, np.uint8(0))
    return (idx[0::2] | (idx[1::2] << 4)).astype(np.uint8)


def unpack_indices(packed, bits, count):
    if bits > 4:
        return packed[:count]
    out = np.empty(packed.size * 2, np.uint8)
    out[0::2] = packed & 0x0F
    out[1::2] = packed >> 4
    return out[:count]


def share_weights(model, bits=4, iters=30):
    """A copy of ``model`` whose conv and linear weights take 2**bits shared values per layer.

    Each layer's weights are clustered (1-D k-means) into a codebook of 2**bits
    float32 centroids; the model keeps only the codebook and the packed indices
    (4 bits per weight at bits=4, so saved files shrink about 8x), and decodes a
    layer's weights once, at its first call, into the dense kernels' cache.
    ``model.share_report``: per layer, bits, relative weight error.
    """
    layer = "share_weights"
    if not isinstance(model, Model):
        raise TypeError(f"{layer}: expected a fastconv Model, got {type(model).__name__}")
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
        raise ValueError(f"{layer}: bits must be an int in 2..8, got {bits!r}")
    nodes, report = [], []
    for n in model.nodes:
        c = n.copy()
        if n.op in ("conv", "linear") and "weight" in n.params \
                and not n.attrs.get("global_pool"):  # (a fused pool: cb_conv has none)
            w = n.params["weight"]
            cent, idx = kmeans_1d(w, 2 ** bits, iters)
            decoded = cent[idx].reshape(w.shape)
            c.op = "cb_conv" if n.op == "conv" else "cb_linear"
            c.params = {k: v for k, v in n.params.items() if k != "weight"}
            c.params["codebook"] = cent
            c.params["weight_index"] = pack_indices(idx, bits)
            c.attrs = dict(n.attrs, bits=int(bits), weight_shape=tuple(int(d) for d in w.shape))
            err = float(np.linalg.norm(decoded - w) / max(np.linalg.norm(w), 1e-30))
            report.append({"layer": n.name, "bits": int(bits), "weights": int(w.size),
                           "rel_error": err})
        nodes.append(c)
    if not report:
        raise ValueError(f"{layer}: {model.name} has no convolution or linear weights to share")
    out = Model(nodes, model.inputs, model.outputs, model.constants, model.name,
                model.input_shapes, model.input_dtypes)
    out.example_shapes = getattr(model, "example_shapes", None)
    out.share_report = report
    return out
