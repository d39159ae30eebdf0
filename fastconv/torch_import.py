"""``fc.from_torch``: a torch.nn.Module traced with torch.fx into a fastconv Model.

The module is traced symbolically (``torch.fx``), shapes are propagated with
the example input, and every node is mapped to a fastconv op.  Nothing is
fused here (``fc.optimize`` does that); the imported model computes what the
torch module computes, op for op.  Every unsupported operation is collected
and reported at once with the source line torch.fx recorded for it.
"""
import operator

import numpy as np

from . import _checks
from .graph import Model, Node

_ELEMENTWISE_MODULES = {
    "ReLU": ("relu", {}), "ReLU6": ("clip", {"min": 0.0, "max": 6.0}),
    "Hardswish": ("hardswish", {}), "Hardsigmoid": ("hardsigmoid", {"alpha": 1 / 6, "beta": 0.5}),
    "SiLU": ("silu", {}), "Sigmoid": ("sigmoid", {}), "Tanh": ("tanh", {}),
    "Identity": ("identity", {}), "Dropout": ("identity", {}), "Dropout2d": ("identity", {}),
    "AlphaDropout": ("identity", {}),
}


class UnsupportedError(ValueError):
    """Raised with the list of every operation an importer cannot map."""


class _ShapeRef:
    """x.shape / x.size() during conversion: indexing it gives x.size(i) nodes."""

    def __init__(self, value, ndim):
        self.value, self.ndim = value, ndim


def _t2n(t):
    return np.array(t.detach().cpu().numpy(), copy=True)


def _where(fx_node):
    """'file:line in fn: code' of the user's frame in the stack trace torch.fx recorded."""
    import os

    import torch
    torch_dir = os.path.dirname(torch.__file__)
    trace = getattr(fx_node, "stack_trace", None) or ""
    lines = [ln.strip() for ln in trace.strip().splitlines() if ln.strip()]
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("File ") and torch_dir not in lines[i]:
            loc = lines[i][5:].replace('"', "")
            code = lines[i + 1] if i + 1 < len(lines) else ""
            return f"{loc}: {code}" if code else loc
    return "source line not recorded"


class _Converter:
    def __init__(self, gm, name):
        self.gm = gm
        self.name = name
        self.nodes = []
        self.constants = {}
        self.env = {}
        self.unsupported = []
        self.counter = 0

    # -- helpers --------------------------------------------------------------------------
    def value(self, a):
        """fx argument -> value name (tensors), Python value (literals) or _ShapeRef."""
        import torch.fx
        if isinstance(a, torch.fx.Node):
            return self.env[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self.value(e) for e in a)
        return a

    def const(self, v, hint="const"):
        name = f"{hint}_{len(self.constants)}"
        self.constants[name] = np.asarray(v)
        return name

    def tensor_input(self, a, n):
        """A value name for an operand that may be a Python scalar (typed like n's result)."""
        v = self.value(a)
        if isinstance(v, str):
            return v
        if isinstance(v, (int, float, np.number)):
            meta = n.meta.get("tensor_meta")
            floating = meta is not None and meta.dtype.is_floating_point
            return self.const(np.float32(v) if floating or isinstance(v, float) else np.int64(v))
        raise TypeError(f"unsupported operand {v!r}")

    def emit(self, op, fx_node, inputs, attrs=None, params=None, source=None):
        out = fx_node.name
        self.nodes.append(Node(op, out, inputs, [out], attrs, params,
                               source or str(fx_node.target)))
        self.env[fx_node] = out
        return out

    def fail(self, fx_node, what):
        self.unsupported.append(f"{what} (at {_where(fx_node)})")
        self.env[fx_node] = fx_node.name
        # a placeholder so later nodes still convert and report their own problems
        self.nodes.append(Node("identity", fx_node.name, [], [fx_node.name], source="unsupported"))

    # -- node kinds -------------------------------------------------------------------------
    def run(self, graph, example):
        inputs, input_shapes, outputs = [], {}, []
        ph = 0
        for n in graph.nodes:
            try:
                if n.op == "placeholder":
                    shape = tuple(example[ph].shape)
                    ph += 1
                    inputs.append(n.name)
                    input_shapes[n.name] = (None,) + shape[1:]
                    self.env[n] = n.name
                elif n.op == "get_attr":
                    t = _fetch_attr(self.gm, n.target)
                    self.constants[n.name] = _t2n(t) if hasattr(t, "detach") else np.asarray(t)
                    self.env[n] = n.name
                elif n.op == "call_module":
                    self.call_module(n)
                elif n.op == "call_function":
                    self.call_function(n)
                elif n.op == "call_method":
                    self.call_method(n)
                elif n.op == "output":
                    res = n.args[0]
                    res = res if isinstance(res, (tuple, list)) else (res,)
                    for r in res:
                        v = self.value(r)
                        if not isinstance(v, str):
                            self.unsupported.append(f"model output {r!r} is not a tensor")
                        else:
                            outputs.append(v)
            except (TypeError, ValueError, KeyError) as exc:
                self.fail(n, f"{n.op} {_target_name(n)}: {exc}")
        return inputs, input_shapes, outputs

    def call_module(self, n):
        m = self.gm.get_submodule(n.target)
        kind = type(m).__name__
        x = self.value(n.args[0]) if n.args else None
        if kind in _ELEMENTWISE_MODULES:
            op, attrs = _ELEMENTWISE_MODULES[kind]
            self.emit(op, n, [x], attrs, source=n.target)
        elif kind == "Conv2d":
            self.conv(n, x, m)
        elif kind == "ConvTranspose2d":
            if m.padding_mode != "zeros":
                raise ValueError(f"padding_mode={m.padding_mode!r} is not supported")
            pads = _pads4(m.padding)
            self.emit("conv_transpose", n, [x],
                      {"stride": tuple(m.stride), "pads": pads, "dilation": tuple(m.dilation),
                       "groups": m.groups, "output_padding": tuple(m.output_padding)},
                      _params(m), source=n.target)
        elif kind in ("BatchNorm2d", "BatchNorm1d"):
            if m.running_mean is None:
                raise ValueError("BatchNorm without running statistics (track_running_stats="
                                 "False) normalizes with batch statistics; not an inference op")
            scale, shift = _bn_affine(m)
            self.emit("affine", n, [x], {"bn": True}, {"scale": scale, "shift": shift},
                      source=n.target)
        elif kind == "LeakyReLU":
            self.emit("leaky_relu", n, [x], {"alpha": float(m.negative_slope)}, source=n.target)
        elif kind == "Hardtanh":
            self.emit("clip", n, [x], {"min": float(m.min_val), "max": float(m.max_val)},
                      source=n.target)
        elif kind == "Softmax":
            self.emit("softmax", n, [x], {"axis": -1 if m.dim is None else int(m.dim)},
                      source=n.target)
        elif kind == "MaxPool2d":
            if m.return_indices:
                raise ValueError("return_indices=True is not supported")
            self.pool(n, "max_pool", x, m.kernel_size, m.stride, m.padding, m.dilation,
                      m.ceil_mode)
        elif kind == "AvgPool2d":
            self.pool(n, "avg_pool", x, m.kernel_size, m.stride, m.padding, 1, m.ceil_mode,
                      m.count_include_pad, m.divisor_override)
        elif kind == "AdaptiveAvgPool2d":
            self.adaptive(n, x, m.output_size)
        elif kind == "AdaptiveMaxPool2d" and _is_one(m.output_size):
            self.emit("global_max_pool", n, [x], source=n.target)
        elif kind == "Linear":
            self.emit("linear", n, [x], {}, _params(m), source=n.target)
        elif kind == "Flatten":
            self.emit("flatten", n, [x], {"start": m.start_dim, "end": m.end_dim},
                      source=n.target)
        elif kind in ("Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d"):
            mode = "bilinear" if kind == "UpsamplingBilinear2d" else m.mode
            align = True if kind == "UpsamplingBilinear2d" else m.align_corners
            self.interpolate(n, x, m.size, m.scale_factor, mode, align)
        else:
            raise ValueError(f"module type {kind} is not supported")

    def conv(self, n, x, m):
        k, st, dil = tuple(m.kernel_size), tuple(m.stride), tuple(m.dilation)
        pads = _checks.padding4(m.padding if isinstance(m.padding, str) else tuple(m.padding),
                                k, dil, st, n.target)
        if m.padding_mode != "zeros" and any(pads):
            mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}[m.padding_mode]
            pad_name = f"{n.name}_pad"
            self.nodes.append(Node("pad", pad_name, [x], [pad_name],
                                   {"pads": (0, 0, pads[0], pads[2], 0, 0, pads[1], pads[3]),
                                    "mode": mode}, source=n.target))
            x, pads = pad_name, (0, 0, 0, 0)
        self.emit("conv", n, [x], {"stride": st, "pads": pads, "dilation": dil,
                                   "groups": m.groups}, _params(m), source=n.target)

    def pool(self, n, op, x, kernel, stride, padding, dilation, ceil_mode, include=True,
             divisor=None):
        k = _pair(kernel)
        st = _pair(stride) if stride not in (None, (), []) else k
        p = _pair(padding)
        attrs = {"kernel": k, "stride": st, "pads": (p[0], p[0], p[1], p[1]),
                 "ceil_mode": bool(ceil_mode)}
        if op == "max_pool":
            attrs["dilation"] = _pair(dilation)
        else:
            attrs["count_include_pad"] = bool(include)
            attrs["divisor_override"] = divisor
        self.emit(op, n, [x], attrs)

    def adaptive(self, n, x, size):
        if _is_one(size):
            self.emit("global_avg_pool", n, [x])
        else:
            size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
            self.emit("adaptive_avg_pool", n, [x], {"output_size": size})

    def interpolate(self, n, x, size, scale, mode, align_corners):
        if mode not in ("nearest", "bilinear"):
            raise ValueError(f"interpolation mode {mode!r} is not supported "
                             "(nearest, bilinear are)")
        shape = n.meta["tensor_meta"].shape
        attrs = {"mode": "nearest" if mode == "nearest" else "linear"}
        if size is not None:
            attrs["sizes"] = tuple(int(v) for v in shape[-2:])
        else:
            s = scale if isinstance(scale, (tuple, list)) else (scale, scale)
            attrs["scales"] = (float(s[0]), float(s[1]))
        if mode == "nearest":
            attrs.update(coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        else:
            attrs["coordinate_transformation_mode"] = \
                "align_corners" if align_corners else "pytorch_half_pixel"
        self.emit("resize", n, [x], attrs)

    def call_function(self, n):
        import torch
        import torch.nn.functional as tF
        f = n.target
        a = list(n.args)
        kw = dict(n.kwargs)
        binary = {operator.add: "add", torch.add: "add", operator.iadd: "add",
                  operator.sub: "sub", torch.sub: "sub", operator.mul: "mul", torch.mul: "mul",
                  operator.imul: "mul", operator.truediv: "div", torch.div: "div",
                  operator.floordiv: "div"}
        unary = {torch.relu: ("relu", {}), tF.relu: ("relu", {}),
                 tF.relu6: ("clip", {"min": 0.0, "max": 6.0}), tF.hardswish: ("hardswish", {}),
                 tF.hardsigmoid: ("hardsigmoid", {"alpha": 1 / 6, "beta": 0.5}),
                 tF.silu: ("silu", {}), torch.sigmoid: ("sigmoid", {}),
                 tF.sigmoid: ("sigmoid", {}), torch.tanh: ("tanh", {}), tF.tanh: ("tanh", {}),
                 tF.dropout: ("identity", {}), tF.dropout2d: ("identity", {})}
        if f in binary:
            if kw.get("alpha", 1) != 1:
                raise ValueError("alpha != 1 is not supported")
            if f is operator.floordiv and not all(isinstance(self.value(v), (int, np.integer))
                                                  for v in a):
                raise ValueError("floor division of tensors is not supported")
            if f is operator.floordiv:
                return self.emit("div", n, [self.tensor_input(a[0], n), self.tensor_input(a[1], n)],
                                 {"floor": True})
            return self.emit(binary[f], n, [self.tensor_input(a[0], n), self.tensor_input(a[1], n)])
        if f in unary:
            op, attrs = unary[f]
            return self.emit(op, n, [self.value(a[0])], attrs)
        if f is getattr and a[1] == "shape":
            self.env[n] = _ShapeRef(self.value(a[0]), len(n.meta.get("tensor_meta").shape)
                                    if "tensor_meta" in n.meta else None)
            return None
        if f is operator.getitem:
            src = self.value(a[0])
            if isinstance(src, _ShapeRef) and isinstance(a[1], int):
                return self.emit("size", n, [src.value], {"dim": a[1]})
            raise ValueError("indexing tensors is not supported")
        if f in (torch.flatten,):
            return self.emit("flatten", n, [self.value(a[0])],
                             {"start": _arg(a, kw, 1, "start_dim", 0),
                              "end": _arg(a, kw, 2, "end_dim", -1)})
        if f in (torch.cat, torch.concat):
            vals = [self.value(v) for v in a[0]]
            return self.emit("concat", n, vals, {"axis": _arg(a, kw, 1, "dim", 0)})
        if f is tF.adaptive_avg_pool2d:
            return self.adaptive(n, self.value(a[0]), _arg(a, kw, 1, "output_size", None))
        if f is tF.max_pool2d:
            if _arg(a, kw, 6, "return_indices", False):
                raise ValueError("return_indices=True is not supported")
            return self.pool(n, "max_pool", self.value(a[0]), _arg(a, kw, 1, "kernel_size", None),
                             _arg(a, kw, 2, "stride", None), _arg(a, kw, 3, "padding", 0),
                             _arg(a, kw, 4, "dilation", 1), _arg(a, kw, 5, "ceil_mode", False))
        if f is tF.avg_pool2d:
            return self.pool(n, "avg_pool", self.value(a[0]), _arg(a, kw, 1, "kernel_size", None),
                             _arg(a, kw, 2, "stride", None), _arg(a, kw, 3, "padding", 0), 1,
                             _arg(a, kw, 4, "ceil_mode", False),
                             _arg(a, kw, 5, "count_include_pad", True),
                             _arg(a, kw, 6, "divisor_override", None))
        if f is tF.interpolate:
            return self.interpolate(n, self.value(a[0]), _arg(a, kw, 1, "size", None),
                                    _arg(a, kw, 2, "scale_factor", None),
                                    _arg(a, kw, 3, "mode", "nearest"),
                                    _arg(a, kw, 4, "align_corners", None))
        if f in (tF.softmax, torch.softmax):
            return self.emit("softmax", n, [self.value(a[0])], {"axis": _arg(a, kw, 1, "dim", -1)})
        if f in (tF.hardtanh, torch.clamp, torch.clip):
            lo = _arg(a, kw, 1, "min_val" if f is tF.hardtanh else "min", -1.0 if f is tF.hardtanh else None)
            hi = _arg(a, kw, 2, "max_val" if f is tF.hardtanh else "max", 1.0 if f is tF.hardtanh else None)
            return self.emit("clip", n, [self.value(a[0])],
                             {"min": None if lo is None else float(lo),
                              "max": None if hi is None else float(hi)})
        if f is tF.leaky_relu:
            return self.emit("leaky_relu", n, [self.value(a[0])],
                             {"alpha": float(_arg(a, kw, 1, "negative_slope", 0.01))})
        if f is torch.reshape:
            return self.reshape(n, a[0], a[1] if isinstance(a[1], (tuple, list)) else a[1:])
        if f is torch.mean:
            return self.mean(n, a[0], _arg(a, kw, 1, "dim", None), _arg(a, kw, 2, "keepdim", False))
        if f in (torch.permute,):
            return self.emit("transpose", n, [self.value(a[0])], {"perm": tuple(a[1])})
        if f is torch.transpose:
            return self.swap(n, a[0], a[1], a[2])
        if f is tF.conv2d:
            return self.functional_conv(n, a, kw)
        if f is tF.linear:
            w = self.constants.get(self.value(a[1]))
            b = _arg(a, kw, 2, "bias", None)
            if w is None:
                raise ValueError("linear with a computed (non-parameter) weight is not supported")
            params = {"weight": w}
            if b is not None:
                params["bias"] = self.constants[self.value(b)]
            return self.emit("linear", n, [self.value(a[0])], {}, params)
        raise ValueError(f"function {_target_name(n)} is not supported")

    def functional_conv(self, n, a, kw):
        w = self.constants.get(self.value(a[1]))
        if w is None:
            raise ValueError("conv2d with a computed (non-parameter) weight is not supported")
        b = _arg(a, kw, 2, "bias", None)
        st = _pair(_arg(a, kw, 3, "stride", 1))
        pad = _arg(a, kw, 4, "padding", 0)
        dil = _pair(_arg(a, kw, 5, "dilation", 1))
        groups = _arg(a, kw, 6, "groups", 1)
        pads = _checks.padding4(pad if isinstance(pad, str) else _pair(pad), w.shape[2:], dil, st,
                                n.name)
        params = {"weight": w}
        if b is not None:
            params["bias"] = self.constants[self.value(b)]
        return self.emit("conv", n, [self.value(a[0])],
                         {"stride": st, "pads": pads, "dilation": dil, "groups": groups}, params)

    def call_method(self, n):
        m = n.target
        a = list(n.args)
        kw = dict(n.kwargs)
        x = self.value(a[0])
        if m in ("view", "reshape"):
            dims = a[1] if len(a) == 2 and isinstance(a[1], (tuple, list)) else a[1:]
            return self.reshape(n, a[0], dims)
        if m == "flatten":
            return self.emit("flatten", n, [x], {"start": _arg(a, kw, 1, "start_dim", 0),
                                                 "end": _arg(a, kw, 2, "end_dim", -1)})
        if m == "size":
            dim = _arg(a, kw, 1, "dim", None)
            if dim is None:
                self.env[n] = _ShapeRef(x, None)
                return None
            return self.emit("size", n, [x], {"dim": int(dim)})
        if m == "dim":
            raise ValueError("Tensor.dim() is not supported")
        if m in ("contiguous", "clone", "detach", "float"):
            return self.emit("identity", n, [x])
        if m in ("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_"):
            op = m.rstrip("_")
            return self.emit(op, n, [x])
        if m in ("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"):
            return self.emit(m.rstrip("_"), n, [x, self.tensor_input(a[1], n)])
        if m == "mean":
            return self.mean(n, a[0], _arg(a, kw, 1, "dim", None), _arg(a, kw, 2, "keepdim", False))
        if m == "permute":
            perm = a[1] if len(a) == 2 and isinstance(a[1], (tuple, list)) else a[1:]
            return self.emit("transpose", n, [x], {"perm": tuple(perm)})
        if m == "transpose":
            return self.swap(n, a[0], a[1], a[2])
        if m in ("squeeze", "unsqueeze"):
            dim = _arg(a, kw, 1, "dim", None)
            if m == "unsqueeze":
                return self.emit("unsqueeze", n, [x], {"axes": (int(dim),)})
            return self.emit("squeeze", n, [x], {"axes": None if dim is None else (int(dim),)})
        if m in ("clamp", "clamp_", "clip"):
            lo, hi = _arg(a, kw, 1, "min", None), _arg(a, kw, 2, "max", None)
            return self.emit("clip", n, [x], {"min": None if lo is None else float(lo),
                                              "max": None if hi is None else float(hi)})
        if m == "softmax":
            return self.emit("softmax", n, [x], {"axis": _arg(a, kw, 1, "dim", -1)})
        raise ValueError(f"Tensor.{m} is not supported")

    def swap(self, n, x, d0, d1):
        nd = len(n.meta["tensor_meta"].shape)
        perm = list(range(nd))
        d0, d1 = d0 % nd, d1 % nd
        perm[d0], perm[d1] = perm[d1], perm[d0]
        return self.emit("transpose", n, [self.value(x)], {"perm": tuple(perm)})

    def mean(self, n, x, dim, keepdim):
        nd = len(self.gm_meta_shape(x))
        axes = tuple(range(nd)) if dim is None else tuple(
            d % nd for d in (dim if isinstance(dim, (tuple, list)) else (dim,)))
        xv = self.value(x)
        if sorted(axes) == [2, 3] and nd == 4 and keepdim:
            return self.emit("global_avg_pool", n, [xv])
        return self.emit("reduce_mean", n, [xv], {"axes": axes, "keepdims": bool(keepdim)})

    def gm_meta_shape(self, fx_node):
        return tuple(fx_node.meta["tensor_meta"].shape)

    def reshape(self, n, x, dims):
        vals = [self.value(d) for d in dims]
        if all(isinstance(v, (int, np.integer)) for v in vals):
            return self.emit("reshape", n, [self.value(x)], {"shape": tuple(int(v) for v in vals)})
        items, refs = [], []
        for v in vals:
            if isinstance(v, str):
                items.append(None)
                refs.append(v)
            elif isinstance(v, (int, np.integer)):
                items.append(int(v))
            else:
                raise ValueError(f"reshape argument {v!r} is not supported")
        pk = f"{n.name}_shape"
        self.nodes.append(Node("pack", pk, refs, [pk], {"items": tuple(items)}))
        return self.emit("reshape", n, [self.value(x), pk])


def _fetch_attr(gm, target):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _target_name(n):
    t = n.target
    if isinstance(t, str):
        return t
    mod = getattr(t, "__module__", "") or ""
    return f"{mod}.{getattr(t, '__name__', repr(t))}".lstrip(".")


def _arg(a, kw, i, name, default):
    if len(a) > i:
        return a[i]
    return kw.get(name, default)


def _pair(v):
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


def _pads4(p):
    p = _pair(p)
    return (p[0], p[0], p[1], p[1])


def _is_one(size):
    return size == 1 or (isinstance(size, (tuple, list)) and tuple(size) == (1, 1))


def _params(m):
    p = {"weight": _t2n(m.weight)}
    if getattr(m, "bias", None) is not None:
        p["bias"] = _t2n(m.bias)
    return p


def _bn_affine(m):
    var = _t2n(m.running_var).astype(np.float64)
    mean = _t2n(m.running_mean).astype(np.float64)
    gamma = _t2n(m.weight).astype(np.float64) if m.weight is not None else np.ones_like(var)
    beta = _t2n(m.bias).astype(np.float64) if m.bias is not None else np.zeros_like(var)
    scale = gamma / np.sqrt(var + m.eps)
    return scale.astype(np.float32), (beta - mean * scale).astype(np.float32)


def from_torch(module, example_input, name=None):
    """Import a torch.nn.Module as a fastconv :class:`~fastconv.graph.Model`.

    ``example_input``: a tensor/array (or a tuple of them, one per forward
    argument) used to propagate shapes.  The module is traced in eval mode
    (its training flags are restored afterwards); the batch dimension of the
    result stays free.  Raises :class:`UnsupportedError` listing every
    operation fastconv cannot run, each with its source location.
    """
    try:
        import torch
        import torch.fx
        from torch.fx.passes.shape_prop import ShapeProp
    except ImportError:
        raise ImportError("from_torch needs PyTorch: pip install torch") from None
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"from_torch: expected a torch.nn.Module, got {type(module).__name__}")
    examples = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    examples = tuple(torch.as_tensor(np.asarray(_checks.as_float32(e, "from_torch", "example_input")))
                     for e in examples)
    name = name or type(module).__name__
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        tracer = torch.fx.Tracer()
        tracer.record_stack_traces = True
        try:
            graph = tracer.trace(module)
        except Exception as exc:  # torch.fx raises many types for untraceable code
            raise UnsupportedError(
                f"from_torch: torch.fx cannot trace {name}: {type(exc).__name__}: {exc}. "
                "Data-dependent control flow must be removed (or the module exported to "
                "ONNX and imported with fc.from_onnx).") from None
        gm = torch.fx.GraphModule(module, graph)
        with torch.no_grad():
            ShapeProp(gm).propagate(*examples)
        conv = _Converter(gm, name)
        inputs, input_shapes, outputs = conv.run(graph, examples)
    finally:
        for m, mode in modes.items():
            m.train(mode)
    if conv.unsupported:
        raise UnsupportedError(f"from_torch: {name} uses {len(conv.unsupported)} operation(s) "
                               "fastconv cannot run:\n  - " + "\n  - ".join(conv.unsupported))
    model = Model(conv.nodes, inputs, outputs, conv.constants, name, input_shapes)
    model.example_shapes = [tuple(e.shape) for e in examples]
    return model
