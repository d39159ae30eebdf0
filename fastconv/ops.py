"""The operations a :class:`fastconv.graph.Model` runs, one function each.

Every op is ``fn(node, args, out) -> value``: ``args`` are the values of the
node's inputs, ``out`` is either None or a preallocated float32 array of the
result's shape that the op writes into (the model's buffer plan hands these
out, so a model in steady state allocates nothing but its outputs).  Ops of
kind ``"alias"`` return a view of their first input; ops of kind ``"alloc"``
return new arrays (small shape arithmetic, softmax, resize).

Convolutions, pooling and linear layers go through :mod:`fastconv.functional`
(validation happens once per shape there, then the plan cache answers);
everything else is NumPy ufuncs with ``out=``.
"""
import math
from dataclasses import dataclass

import numpy as np

from . import _workspace
from . import functional as F

_F32 = np.float32


@dataclass(frozen=True)
class Op:
    fn: object
    kind: str = "out"  # "out": writes into out when given; "alias": a view; "alloc": new array


OPS = {}


def op(name, kind="out"):
    def deco(fn):
        OPS[name] = Op(fn, kind)
        return fn
    return deco


def _act(node):
    return node.attrs.get("activation")


# -- convolution, linear --------------------------------------------------------------

def _cache(node, key="weight"):
    """node.cache for the objects now in node.params[key] (a key, or a tuple of keys whose
    objects the cached forms all depend on): a new, empty one when any of them was
    replaced since the cache was filled (the transformed and packed forms of the old
    weight must not be used for the new one)."""
    cache = node.cache
    held = tuple(node.params.get(k) for k in key) if type(key) is tuple else \
        (node.params.get(key),)
    was = cache.get(_CACHE_FOR)
    if not cache or was is None or len(was) != len(held) or \
            any(a is not b for a, b in zip(was, held)):
        cache = node.cache = {_CACHE_FOR: held}
    return cache


_CACHE_FOR = "node.cache:for"  # the params objects a node's cache was filled for


@op("conv")
def conv(node, args, out):
    a = node.attrs
    res = args[1] if len(args) > 1 else None
    if a.get("global_pool"):  # fc.optimize fused the global average pool after it
        return F.conv2d_global_avg_pool(args[0], node.params["weight"], node.params.get("bias"),
                                        _act(node), res, _cache(node), layer=node.layer,
                                        out=out)
    return F.conv2d(args[0], node.params["weight"], node.params.get("bias"), a["stride"],
                    a["pads"], a["dilation"], a["groups"], _act(node), a.get("algo", "auto"),
                    res, _cache(node), layer=node.layer, out=out)


_IR_PARAMS = ("expand_weight", "expand_bias", "dw_weight", "dw_bias", "project_weight",
              "project_bias")


@op("inverted_residual")
def inverted_residual(node, args, out):
    """An inverted residual block's expansion 1x1 (optional), depthwise and projection 1x1
    (optional) in one call (fc.optimize fuses them: functional.inverted_residual)."""
    a, p = node.attrs, node.params
    objs = tuple(p.get(k) for k in _IR_PARAMS)
    parts = node.cache.get("ir_parts")  # the same tuples each call: the planned call is kept
    if parts is None or any(u is not v for u, v in zip(parts[0], objs)):
        expand = None if objs[0] is None else (objs[0], objs[1], a.get("expand_activation")) + (
            (a["expand_stride"], a["expand_pads"]) if "expand_stride" in a else ())
        depthwise = (objs[2], objs[3], a.get("activation"), a["stride"], a["pads"], a["dilation"])
        project = None if objs[4] is None else (objs[4], objs[5], a.get("project_activation"))
        parts = node.cache["ir_parts"] = (objs, expand, depthwise, project)
    res = args[1] if len(args) > 1 else None
    return F.inverted_residual(args[0], parts[1], parts[2], parts[3], residual=res,
                               packed=node.cache, layer=node.layer, out=out)


@op("conv_transpose")
def conv_transpose(node, args, out):
    a = node.attrs
    return F.conv_transpose2d(args[0], node.params["weight"], node.params.get("bias"),
                              a["stride"], a["pads"], a["output_padding"], a["groups"],
                              a["dilation"], _act(node), _cache(node), layer=node.layer,
                              out=out)


@op("linear")
def linear(node, args, out):
    return F.linear(args[0], node.params["weight"], node.params.get("bias"), _act(node),
                    layer=node.layer, out=out, packed=_cache(node))


@op("matmul")
def matmul(node, args, out):
    return np.matmul(args[0], args[1], out=out)


# -- normalisation and activations ------------------------------------------------------

@op("affine")
def affine(node, args, out):
    """y = x * scale[c] + shift[c] over axis 1 (inference BatchNorm)."""
    x = args[0]
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = np.multiply(x, node.params["scale"].reshape(shape), out=out)
    return np.add(y, node.params["shift"].reshape(shape), out=y)


@op("relu")
def relu(node, args, out):
    return np.maximum(args[0], _F32(0), out=out)


@op("clip")
def clip(node, args, out):
    lo, hi = node.attrs.get("min"), node.attrs.get("max")
    x = args[0]
    rng = np.iinfo(x.dtype) if x.dtype.kind in "iu" else None   # (an integer tensor)
    lo = (-np.inf if rng is None else rng.min) if lo is None else lo
    hi = (np.inf if rng is None else rng.max) if hi is None else hi
    return np.clip(x, x.dtype.type(lo), x.dtype.type(hi), out=out)


@op("leaky_relu")
def leaky_relu(node, args, out):
    """x where x >= 0, alpha * x elsewhere."""
    x = args[0]
    y = np.multiply(x, _F32(node.attrs.get("alpha", 0.01)), out=out)
    np.copyto(y, x, where=x >= 0)
    return y


@op("hardswish")
def hardswish(node, args, out):
    x = args[0]
    y = np.add(x, _F32(3), out=out)
    np.clip(y, _F32(0), _F32(6), out=y)
    np.multiply(y, x, out=y)
    return np.divide(y, _F32(6), out=y)


@op("hardsigmoid")
def hardsigmoid(node, args, out):
    x = args[0]
    y = np.multiply(x, _F32(node.attrs.get("alpha", 0.2)), out=out)
    np.add(y, _F32(node.attrs.get("beta", 0.5)), out=y)
    return np.clip(y, _F32(0), _F32(1), out=y)


def _sigmoid_into(x, out):
    with np.errstate(over="ignore"):
        y = np.negative(x, out=out)
        np.exp(y, out=y)
        np.add(y, _F32(1), out=y)
        return np.reciprocal(y, out=y)


@op("sigmoid")
def sigmoid(node, args, out):
    return _sigmoid_into(args[0], out)


@op("silu")
def silu(node, args, out):
    y = _sigmoid_into(args[0], out)
    return np.multiply(y, args[0], out=y)


@op("tanh")
def tanh(node, args, out):
    return np.tanh(args[0], out=out)


@op("softmax", "alloc")
def softmax(node, args, out):
    x = args[0]
    axis = node.attrs.get("axis", -1)
    if node.attrs.get("coerce2d"):  # ONNX opset < 13: over all axes from ``axis`` on
        axis = axis + x.ndim if axis < 0 else axis
        flat = x.reshape(math.prod(x.shape[:axis]), -1)
        y = flat - flat.max(axis=1, keepdims=True)
        np.exp(y, out=y)
        y /= y.sum(axis=1, keepdims=True)
        return y.reshape(x.shape)
    y = x - x.max(axis=axis, keepdims=True)
    np.exp(y, out=y)
    y /= y.sum(axis=axis, keepdims=True)
    return y


# -- elementwise binary (NumPy broadcasting) ----------------------------------------------

def _binary(ufunc):
    def fn(node, args, out):
        a, b = args
        if out is not None:
            return ufunc(a, b, out=out)
        r = ufunc(a, b)
        return r
    return fn


for _name, _uf in (("add", np.add), ("sub", np.subtract), ("mul", np.multiply)):
    op(_name)(_binary(_uf))


@op("div")
def div(node, args, out):
    a, b = args
    if np.issubdtype(np.result_type(a, b), np.integer):
        return np.floor_divide(a, b) if node.attrs.get("floor") else np.trunc(
            np.true_divide(a, b)).astype(np.result_type(a, b))
    return np.true_divide(a, b, out=out)


# -- pooling ------------------------------------------------------------------------------

def _symmetric(pads):
    return pads[0] == pads[1] and pads[2] == pads[3]


@op("max_pool")
def max_pool(node, args, out):
    a = node.attrs
    x, pads, k = args[0], a["pads"], a["kernel"]
    if _symmetric(pads) and pads[0] <= k[0] // 2 and pads[2] <= k[1] // 2:
        return F.max_pool2d(x, k, a["stride"], (pads[0], pads[2]), a.get("dilation", 1),
                            a.get("ceil_mode", False), layer=node.layer, out=out)
    low = np.iinfo(x.dtype).min if x.dtype.kind in "iu" else -np.inf
    xp = np.pad(x, ((0, 0), (0, 0), pads[:2], pads[2:]), constant_values=low)
    return F.max_pool2d(xp, k, a["stride"], 0, a.get("dilation", 1), a.get("ceil_mode", False),
                        layer=node.layer, out=out)


@op("avg_pool")
def avg_pool(node, args, out):
    a = node.attrs
    x, pads, k = args[0], a["pads"], a["kernel"]
    include = a.get("count_include_pad", True)
    if _symmetric(pads) and pads[0] <= k[0] // 2 and pads[2] <= k[1] // 2:
        return F.avg_pool2d(x, k, a["stride"], (pads[0], pads[2]), a.get("ceil_mode", False),
                            include, a.get("divisor_override"), layer=node.layer, out=out)
    spec = ((0, 0), (0, 0), pads[:2], pads[2:])
    xp = np.pad(x, spec)
    if include:
        return F.avg_pool2d(xp, k, a["stride"], 0, a.get("ceil_mode", False), True,
                            layer=node.layer, out=out)
    sums = F.avg_pool2d(xp, k, a["stride"], 0, a.get("ceil_mode", False), True, 1,
                        layer=node.layer, out=out)
    ones = np.pad(np.ones((1, 1) + x.shape[2:], _F32), spec)
    counts = F.avg_pool2d(ones, k, a["stride"], 0, a.get("ceil_mode", False), True, 1,
                          layer=node.layer)
    return np.divide(sums, counts, out=sums)


@op("global_avg_pool")
def global_avg_pool(node, args, out):
    return F.adaptive_avg_pool2d(args[0], 1, layer=node.layer, out=out)


@op("adaptive_avg_pool")
def adaptive_avg_pool(node, args, out):
    return F.adaptive_avg_pool2d(args[0], node.attrs["output_size"], layer=node.layer, out=out)


@op("global_max_pool", "alloc")
def global_max_pool(node, args, out):
    return args[0].max(axis=(2, 3), keepdims=True)


@op("reduce_mean", "alloc")
def reduce_mean(node, args, out):
    x = args[0]
    return x.mean(axis=tuple(node.attrs["axes"]), keepdims=node.attrs.get("keepdims", True),
                  dtype=np.float64 if x.dtype == np.float64 else None).astype(x.dtype, copy=False)


# -- layout ---------------------------------------------------------------------------------

def _c(x):
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


@op("identity", "alias")
def identity(node, args, out):
    return args[0]


@op("flatten", "alias")
def flatten(node, args, out):
    """torch.flatten(x, start_dim, end_dim)."""
    x = args[0]
    nd = x.ndim
    s, e = node.attrs.get("start", 1), node.attrs.get("end", -1)
    s, e = (s + nd if s < 0 else s), (e + nd if e < 0 else e)
    if nd == 0:
        return x.reshape(1)
    return _c(x).reshape(x.shape[:s] + (math.prod(x.shape[s:e + 1]),) + x.shape[e + 1:])


@op("flatten2d", "alias")
def flatten2d(node, args, out):
    """ONNX Flatten: (prod(shape[:axis]), prod(shape[axis:]))."""
    x = args[0]
    axis = node.attrs.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    # math.prod, not np.prod: a NumPy reduction costs 5 us, 50-70 us when a model's
    # kernels have just pushed NumPy's code out of the caches
    return _c(x).reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def target_shape(x_shape, shape, allowzero=False, onnx=False):
    shape = [int(v) for v in np.asarray(shape).reshape(-1)]
    if onnx and not allowzero:
        shape = [x_shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return tuple(shape)


@op("reshape", "alias")
def reshape(node, args, out):
    x = args[0]
    shape = args[1] if len(args) > 1 else node.attrs["shape"]
    if isinstance(shape, (list, tuple)):
        shape = [int(v) for v in shape]
    return _c(x).reshape(target_shape(x.shape, shape, node.attrs.get("allowzero", False),
                                      node.attrs.get("onnx", False)))


@op("squeeze", "alias")
def squeeze(node, args, out):
    axes = args[1] if len(args) > 1 else node.attrs.get("axes")
    x = args[0]
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(int(a) for a in np.asarray(axes).reshape(-1)))


@op("unsqueeze", "alias")
def unsqueeze(node, args, out):
    axes = args[1] if len(args) > 1 else node.attrs["axes"]
    x = args[0]
    axes = sorted(int(a) + (x.ndim + len(np.atleast_1d(axes))) * (int(a) < 0)
                  for a in np.asarray(axes).reshape(-1))
    for ax in axes:
        x = np.expand_dims(x, ax)
    return x


@op("transpose")
def transpose(node, args, out):
    x = args[0]
    perm = node.attrs.get("perm") or tuple(reversed(range(x.ndim)))
    t = x.transpose(perm)
    if out is None:
        return np.ascontiguousarray(t)
    np.copyto(out, t)
    return out


@op("concat")
def concat(node, args, out):
    arrays = [np.asarray(a) for a in args]
    if out is not None and all(a.dtype == out.dtype for a in arrays):
        return np.concatenate(arrays, axis=node.attrs.get("axis", 1), out=out)
    return np.concatenate(arrays, axis=node.attrs.get("axis", 1))


@op("pad", "alloc")
def pad(node, args, out):
    """ONNX-style pads [begin_0, ..., begin_n, end_0, ..., end_n]; negative pads crop."""
    x = args[0]
    pads = [int(v) for v in (args[1] if len(args) > 1 and args[1] is not None
                             else node.attrs["pads"])]
    value = node.attrs.get("value", 0.0)
    if len(args) > 2 and args[2] is not None and np.size(args[2]):
        value = float(np.asarray(args[2]).reshape(-1)[0])
    nd = x.ndim
    begin, end = pads[:nd], pads[nd:]
    crop = tuple(slice(max(0, -b), x.shape[i] - max(0, -e)) for i, (b, e) in
                 enumerate(zip(begin, end)))
    x = x[crop]
    spec = [(max(0, b), max(0, e)) for b, e in zip(begin, end)]
    mode = node.attrs.get("mode", "constant")
    if mode == "constant":
        return np.pad(x, spec, constant_values=x.dtype.type(value))
    return np.pad(x, spec, mode=mode)


# -- resize ---------------------------------------------------------------------------------

def _source_coords(out_len, in_len, scale, mode):
    o = np.arange(out_len, dtype=np.float64)
    if mode == "align_corners":  # ONNX uses the unrounded output length in_len * scale
        span = in_len * scale - 1
        return o * ((in_len - 1) / span) if out_len > 1 and span > 0 else np.zeros(out_len)
    if mode == "half_pixel_symmetric":
        offset = in_len / 2 * (1 - out_len / (scale * in_len))
        return offset + (o + 0.5) / scale - 0.5
    if mode == "asymmetric":
        return o / scale
    if mode == "pytorch_half_pixel":
        return (o + 0.5) / scale - 0.5 if out_len > 1 else np.zeros(out_len)
    if mode == "tf_half_pixel_for_nn":
        return (o + 0.5) / scale
    return (o + 0.5) / scale - 0.5  # half_pixel


def _nearest_index(coord, in_len, nearest_mode):
    if nearest_mode == "floor":
        idx = np.floor(coord)
    elif nearest_mode == "ceil":
        idx = np.ceil(coord)
    elif nearest_mode == "round_prefer_ceil":
        idx = np.floor(coord + 0.5)
    else:  # round_prefer_floor
        idx = np.ceil(coord - 0.5)
    return np.clip(idx, 0, in_len - 1).astype(np.intp)


@op("resize", "alloc")
def resize(node, args, out):
    """Resize the last two axes (nearest or bilinear), ONNX Resize / torch interpolate."""
    x = args[0]
    a = node.attrs
    h, w = x.shape[-2:]
    if a.get("sizes") is not None:
        oh, ow = a["sizes"][-2:]
        sh, sw = (oh / h, ow / w)
    else:
        sh, sw = a["scales"][-2:]
        oh, ow = int(np.floor(h * sh)), int(np.floor(w * sw))
    mode = a.get("coordinate_transformation_mode", "half_pixel")
    cy, cx = _source_coords(oh, h, sh, mode), _source_coords(ow, w, sw, mode)
    if a.get("mode", "nearest") == "nearest":
        nm = a.get("nearest_mode", "round_prefer_floor")
        iy, ix = _nearest_index(cy, h, nm), _nearest_index(cx, w, nm)
        return np.ascontiguousarray(x[..., iy[:, None], ix[None, :]])
    y = _lerp_axis(x, cy, h, -2)
    return np.ascontiguousarray(_lerp_axis(y, cx, w, -1)).astype(x.dtype, copy=False)


def _lerp_axis(x, coord, n, axis):
    coord = np.clip(coord, 0, n - 1)
    lo = np.floor(coord).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    frac = (coord - lo).astype(x.dtype)
    shape = [1] * x.ndim
    shape[axis] = -1
    frac = frac.reshape(shape)
    a = np.take(x, lo, axis=axis)
    b = np.take(x, hi, axis=axis)
    return a + (b - a) * frac


# -- shape arithmetic (tiny integer arrays) ----------------------------------------------------

@op("shape", "alloc")
def shape(node, args, out):
    s = np.asarray(args[0]).shape
    return np.array(s[node.attrs.get("start", 0):node.attrs.get("end")], np.int64)


@op("size", "alloc")
def size(node, args, out):
    """torch's x.size(dim): a Python int."""
    return int(np.asarray(args[0]).shape[node.attrs["dim"]])


@op("pack", "alloc")
def pack(node, args, out):
    """A 1-D int64 vector from scalars and constants (torch's view(n, -1) arguments)."""
    vals = []
    it = iter(args)
    for item in node.attrs["items"]:
        vals.append(int(np.asarray(next(it)).reshape(())) if item is None else int(item))
    return np.array(vals, np.int64)


@op("gather", "alloc")
def gather(node, args, out):
    return np.take(np.asarray(args[0]), np.asarray(args[1]).astype(np.intp),
                   axis=node.attrs.get("axis", 0))


@op("cast", "alloc")
def cast(node, args, out):
    return np.asarray(args[0]).astype(np.dtype(node.attrs["to"]))


@op("slice", "alloc")
def slice_(node, args, out):
    x = np.asarray(args[0])
    starts, ends = np.asarray(args[1]).reshape(-1), np.asarray(args[2]).reshape(-1)
    axes = (np.asarray(args[3]).reshape(-1) if len(args) > 3 and args[3] is not None
            else np.arange(len(starts)))
    steps = (np.asarray(args[4]).reshape(-1) if len(args) > 4 and args[4] is not None
             else np.ones(len(starts), np.int64))
    idx = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        ax = int(ax) + x.ndim * (int(ax) < 0)
        n = x.shape[ax]
        s, e, st = int(s), int(e), int(st)
        s = min(max(s + n if s < 0 else s, 0), n if st > 0 else n - 1)
        if e < -n - 1 or (st < 0 and e < -n):
            e = -1 if st < 0 else 0
            e = None if st < 0 else e
        else:
            e = min(max(e + n if e < 0 else e, 0 if st > 0 else -1), n)
            e = None if (st < 0 and e < 0) else e
        idx[ax] = slice(s, e, st)
    return np.ascontiguousarray(x[tuple(idx)])


@op("constant", "alloc")
def constant(node, args, out):
    return node.params["value"]


@op("range", "alloc")
def range_(node, args, out):
    return np.arange(np.asarray(args[0]).item(), np.asarray(args[1]).item(),
                     np.asarray(args[2]).item()).astype(np.asarray(args[0]).dtype)


# -- work per node (for explain) ------------------------------------------------------------------

def _weight_shape(node):
    p = node.params
    if "weight" in p:
        return p["weight"].shape
    if "weight_q" in p:
        return p["weight_q"].shape
    return tuple(node.attrs["weight_shape"])


def flops(node, in_shapes, out_shape):
    """Multiply-adds x 2 of a node, in direct-convolution terms; 0 where not meaningful."""
    if node.op in ("conv", "qconv", "sparse_conv", "cb_conv"):
        w = _weight_shape(node)
        if node.attrs.get("global_pool"):  # the conv's own output: every input pixel
            return 2.0 * np.prod(in_shapes[0], dtype=np.float64) / in_shapes[0][1] * w[0] * w[1]
        return 2.0 * np.prod(out_shape, dtype=np.float64) * w[1] * w[2] * w[3]
    if node.op == "conv_transpose":
        w = node.params["weight"].shape
        return 2.0 * np.prod(in_shapes[0], dtype=np.float64) * w[1] * w[2] * w[3]
    if node.op == "inverted_residual":
        p = node.params
        pixels_in = np.prod(in_shapes[0], dtype=np.float64) / in_shapes[0][1]
        pixels_out = np.prod(out_shape, dtype=np.float64) / out_shape[1]
        kd, _, r, s = p["dw_weight"].shape
        total = pixels_out * kd * r * s
        if "expand_weight" in p:
            we = p["expand_weight"].shape
            if "expand_stride" in node.attrs:  # a head conv: its own output map
                e = F.conv_problem(tuple(in_shapes[0]), we, node.attrs["expand_stride"],
                                   tuple(node.attrs["expand_pads"]))
                total += e.flops / 2.0
            else:
                total += pixels_in * we[0] * we[1]
        if "project_weight" in p:
            total += pixels_out * p["project_weight"].shape[0] * p["project_weight"].shape[1]
        return 2.0 * total
    if node.op in ("linear", "qlinear", "sparse_linear", "cb_linear"):
        return 2.0 * np.prod(out_shape, dtype=np.float64) * _weight_shape(node)[1]
    if node.op == "matmul":
        return 2.0 * np.prod(out_shape, dtype=np.float64) * in_shapes[0][-1]
    return 0.0


# -- quantize / dequantize (ONNX QDQ), computed in float ------------------------------------------

def _per_axis(v, x, axis):
    v = np.asarray(v)
    if v.ndim == 0 or v.size == 1:
        return v.reshape(())
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    return v.reshape(shape)


@op("dequantize_linear", "alloc")
def dequantize_linear(node, args, out):
    """y = (x - zero_point) * scale, per tensor or along ``axis``."""
    x = np.asarray(args[0])
    axis = node.attrs.get("axis", 1)
    scale = _per_axis(args[1], x, axis).astype(np.float32)
    zp = _per_axis(args[2], x, axis) if len(args) > 2 and args[2] is not None else 0
    return ((x.astype(np.int32) - np.asarray(zp, np.int32)) * scale).astype(np.float32)


@op("quantize_linear", "alloc")
def quantize_linear(node, args, out):
    """y = saturate(round_half_even(x / scale) + zero_point) as the zero point's type."""
    x = np.asarray(args[0], np.float32)
    axis = node.attrs.get("axis", 1)
    scale = _per_axis(args[1], x, axis).astype(np.float32)
    if len(args) > 2 and args[2] is not None:
        zp = np.asarray(args[2])
        dtype = zp.dtype
        zp = _per_axis(zp, x, axis).astype(np.int32)
    else:
        dtype, zp = np.dtype(np.uint8), 0
    info = np.iinfo(dtype)
    q = np.rint(x / scale) + zp
    return np.clip(q, info.min, info.max).astype(dtype)


def _fq_args(fq, mode=1):
    """(s, z, lo, hi, mode) float32 for a (scale, zero point, dtype name) fake quantization
    (mode: kernels/cpu/fakequant.fake_quant_add's), or an all-zero row (off) for None."""
    if fq is None:
        return np.zeros(5, np.float32)
    s, z, dt = fq
    info = np.iinfo(np.dtype(dt))
    return np.array([s, z, info.min, info.max, mode], np.float32)


@op("fake_quant")
def fake_quant(node, args, out):
    """QuantizeLinear -> DequantizeLinear (per tensor) in one pass (fastconv.optimize's
    fuse_qdq): x snapped to the int8 grid of attrs ``fq`` = (scale, zero point, dtype)."""
    from .kernels.cpu.fakequant import fake_quant as run
    x = np.ascontiguousarray(args[0], np.float32)
    y = np.empty_like(x) if out is None else out
    s, z, lo, hi, _ = _fq_args(node.attrs["fq"])
    if x.size:
        run(x.reshape(-1), y.reshape(-1), s, z, lo, hi)
    return y


@op("qadd")
def qadd(node, args, out):
    """q_out(act(q_a(a) + q_b(b))): a QDQ graph's add with its operands' and its sum's
    fake quantizations (attrs fq_a, fq_b, fq_out: (scale, zero point, dtype) or None) and
    an optional relu, in one pass (operands of two shapes are broadcast first).  With
    attrs int_a / int_b an operand is an integer array on its grid; with int_out the sum
    is stored as its integers (an array of fq_out's dtype) for the int8 layers that read
    it.  An imported QLinearAdd is one with all three."""
    at = node.attrs
    a, b = (x if at.get(f"int_{k}") else np.ascontiguousarray(x, np.float32)
            for k, x in zip("ab", args))
    if a.shape != b.shape:   # (an imported QLinearAdd may broadcast; fuse_qdq's never do)
        try:
            a, b = (np.ascontiguousarray(v) for v in np.broadcast_arrays(a, b))
        except ValueError:
            raise ValueError(f"{node.layer}: the operands' shapes {args[0].shape} and "
                             f"{args[1].shape} do not broadcast") from None
    dt = np.dtype(at["fq_out"][2]) if at.get("int_out") else np.float32
    y = np.empty(a.shape, dt) if out is None else out
    if a.size:
        run, consts = _qadd_kernel(at)
        run(np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1),
            y.reshape(-1), *consts)
    return y


def _qadd_kernel(at):
    """(kernel, its arguments after a, b, y) for a qadd with attrs ``at``: quant_add when
    both operands and the sum are integers, else fake_quant_add; the three (s, z, lo, hi,
    mode) rows and the relu flag."""
    from .kernels.cpu.fakequant import fake_quant_add, quant_add
    run = quant_add if at.get("int_a") and at.get("int_b") and at.get("int_out") else \
        fake_quant_add
    return run, tuple(_fq_args(at.get(f"fq_{k}"), 2 if at.get(f"int_{k}") else 1)
                      for k in ("a", "b", "out")) + (1 if at.get("activation") == "relu" else 0,)


@op("constant_of_shape", "alloc")
def constant_of_shape(node, args, out):
    value = node.params.get("value", np.zeros(1, np.float32))
    return np.full(tuple(int(v) for v in np.asarray(args[0]).reshape(-1)), value.reshape(-1)[0],
                   value.dtype)


# -- int8 layers (fc.quantize) ------------------------------------------------------------------

def _quantize_input(x, node):
    a = node.attrs
    info = np.iinfo(np.dtype(a["x_dtype"]))
    q = np.rint(x * np.float32(1.0 / a["x_scale"]))
    if a["x_zero_point"]:
        q += np.float32(a["x_zero_point"])
    np.clip(q, info.min, info.max, out=q)
    return q.astype(a["x_dtype"])


@op("qconv")
def qconv(node, args, out):
    """int8 conv of a float input quantized on the way (per tensor, calibrated scale), or of
    an integer input already on its grid (fuse_qdq's uint8 tensors); float32 epilogue, or
    the requantized integers with attrs out_scale / out_zero_point / out_dtype."""
    from .quantization import int8_conv2d, planes_read, quantize_nchw, quantize_nhwc
    a = node.attrs
    res = args[1] if len(args) > 1 else None
    if "weight_q_rest" in node.params:
        y = _qconv_parts(node, args[0], res)
        if out is None:
            return y
        out[...] = y
        return out
    oq = {} if a.get("out_scale") is None else dict(
        out_scale=a["out_scale"], out_zero_point=a["out_zero_point"], out_dtype=a["out_dtype"])
    xn = None
    if args[0].dtype == np.dtype(a["x_dtype"]):
        # an integer tensor on the input's grid (fuse_qdq: the producer stored its integers)
        x = np.ascontiguousarray(args[0])
        xq = xb = x[None] if x.ndim == 3 else x
        zk = a["x_zero_point"]
    else:
        x = np.ascontiguousarray(args[0], np.float32)
        xb = x[None] if x.ndim == 3 else x
        if planes_read(xb.shape, node.params["weight_q"].shape, a["stride"], a["pads"],
                       a["dilation"], a["groups"], node.layer):
            # read from NCHW planes (a 1x1, a depthwise conv): quantized in place, no move
            xq, zk = quantize_nchw(xb, a["x_scale"], a["x_zero_point"], a["x_dtype"])
        else:
            # quantized straight into the kernel's channels-last padded layout, in one pass
            xn, zk = quantize_nhwc(xb, a["x_scale"], a["x_zero_point"], a["x_dtype"],
                                   tuple(a["pads"]))
            xq = np.broadcast_to(np.zeros((), xn.dtype), xb.shape)
    y = int8_conv2d(xq, a["x_scale"], zk, node.params["weight_q"],
                    node.params["w_scale"], node.params.get("bias"), a["stride"], a["pads"],
                    a["dilation"], a["groups"], a.get("activation"), res,
                    packed=_cache(node, ("weight_q", "w_scale")),  # forms with the scales
                    layer=node.layer, nhwc=xn,
                    out=None if out is None else out.reshape((xb.shape[0],) + out.shape[-3:]),
                    **oq)
    return y[0] if x.ndim == 3 else y


def _planned(a, shape, dtype):
    """Whether a planned step may hand ``a`` to its kernels as is: a NumPy array of this
    shape and dtype, C-contiguous and aligned (functional._planned_array for any dtype)."""
    return (type(a) is np.ndarray and a.shape == shape and a.dtype == dtype
            and a.flags.c_contiguous and a.flags.aligned)


def planned_step(node, inputs, buf):
    """For a Model's plan (graph._direct_steps): a qadd, max_pool, qglobal_avg_pool,
    global_avg_pool, fake_quant or qlinear node as ``step(x, y, other) -> bool`` into the
    plan's buffer y, or None where the node does not run its kernels on its inputs as
    they come (broadcast operands, a max pool's pads that need a padded copy, a
    channels-last pool, weights int8 does not hold).  ``inputs``: the (shape, dtype)
    of each input.  The step checks that its inputs are C-contiguous arrays of those
    shapes and dtypes and that the thread count is the planned one, then launches the
    kernel through _runtime.launch with the arguments worked out here once, so the plan
    records and replays it; it returns False, doing nothing, otherwise.  Between the
    replayed convs of a quantized ResNet-50 these ops had each spent 30-60 us of Python
    on a kernel of 10-50 (the argument handling made slow by the caches the convs had
    just flushed)."""
    from . import _backend, _runtime
    from .kernels.cpu import fakequant, pooling
    if _backend._backend == "cuda":   # (the ops themselves go to the device then)
        return None
    a = node.attrs
    specs = [(tuple(shape), np.dtype(dtype)) for shape, dtype in inputs]
    threads = _runtime.get_num_threads()
    if node.op == "qadd":
        if len(specs) != 2 or any(shape != buf.shape for shape, _ in specs):
            return None
        want = [np.dtype(np.float32) if not a.get(f"int_{k}") else dt
                for k, (_, dt) in zip("ab", specs)]
        out_dt = np.dtype(a["fq_out"][2]) if a.get("int_out") else np.dtype(np.float32)
        if [dt for _, dt in specs] != want or buf.dtype != out_dt:
            return None
        run, consts = _qadd_kernel(a)

        def launch(x, y, other):
            _runtime.launch(run, x.reshape(-1), other.reshape(-1), y.reshape(-1), *consts)
    elif node.op == "max_pool":
        (shape, dt), = specs
        pads, k = a["pads"], a["kernel"]
        if len(shape) != 4 or not (_symmetric(pads) and pads[0] <= k[0] // 2
                                   and pads[2] <= k[1] // 2) or buf.dtype != dt:
            return None
        k, st, pad, dil, oh, ow = F._pool_geometry(
            np.broadcast_to(np.zeros((), dt), shape), k, a["stride"], (pads[0], pads[2]),
            a.get("dilation", 1), a.get("ceil_mode", False), node.layer)
        if buf.shape != shape[:2] + (oh, ow) or not buf.size:
            return None
        geo = (k[0], k[1], st[0], st[1], pad[0], pad[1], dil[0], dil[1])
        if dt.kind in "iu":
            low = dt.type(np.iinfo(dt).min)

            def launch(x, y, other):
                _runtime.launch(pooling.max_pool2d_int, x, y, *geo, low)
        elif dt == np.float32:
            width = max(shape[3] + 2 * pad[1], (ow - 1) * st[1] + (k[1] - 1) * dil[1] + 1,
                        2 * ow + 2)
            rows = _workspace.per_thread("pool_rows", _runtime.max_threads(),
                                         (2, width + width % 2))

            def launch(x, y, other):
                _runtime.launch(pooling.max_pool2d, x, y, *geo, rows)
        else:
            return None
    elif node.op == "qglobal_avg_pool":
        (shape, dt), = specs
        n = int(np.prod(shape[2:]))
        if a.get("channels_last") or len(shape) < 3 or not n or dt.kind not in "iu" or \
                buf.dtype != np.dtype(a["fq_out"][2]) or \
                buf.shape != shape[:2] + (1,) * (len(shape) - 2):
            return None
        consts = _qgap_args(a, n)

        def launch(x, y, other):
            _runtime.launch(pooling.global_avg_pool_int, x.reshape(-1, n), y.reshape(-1),
                            *consts)
    elif node.op == "global_avg_pool":
        (shape, dt), = specs
        if len(shape) != 4 or dt != np.float32 or buf.dtype != np.float32 or \
                buf.shape != shape[:2] + (1, 1) or not buf.size or not shape[2] * shape[3]:
            return None
        hw = shape[2] * shape[3]

        def launch(x, y, other):
            _runtime.launch(pooling.global_avg_pool2d, x.reshape(-1, hw), y.reshape(-1))
    elif node.op == "fake_quant":
        (shape, dt), = specs
        if dt != np.float32 or buf.dtype != np.float32 or buf.shape != shape or not buf.size:
            return None
        consts = tuple(_fq_args(a["fq"])[:4])

        def launch(x, y, other):
            _runtime.launch(fakequant.fake_quant, x.reshape(-1), y.reshape(-1), *consts)
    elif node.op == "qlinear":
        return _planned_qlinear(node, specs[0], buf, threads)
    else:
        return None

    def step(x, y, other):
        if not _planned(x, *specs[0]) or (len(specs) > 1 and not _planned(other, *specs[1])) \
                or _runtime.get_num_threads() != threads:
            return False
        with _runtime.kernel_scope(blas=False):
            launch(x, y, other)
        return True
    F._replay_info(step, False, ())
    return step


PLANNED_OPS = ("qadd", "max_pool", "qglobal_avg_pool", "global_avg_pool", "fake_quant",
               "qlinear")


def _planned_qlinear(node, spec, buf, threads):
    """planned_step's qlinear (on an AVX-512 VNNI CPU; weights int8 holds): its input rows
    quantized (a float input: int8.quantize_flat) or copied (copy_rows, int8 flipped to
    uint8) into whole 8-row blocks, the VNNI GEMM with its accumulators starting from
    -zx * wsum (so its sums are acc - zx * wsum), then finish_gemm's epilogue into y:
    qlinear's arithmetic, its NumPy passes (~0.1 ms of a quantized classifier's 1280 ->
    1000 in a model) now three launches the plan replays.  Also holds the layer's
    weight_q, w_scale and bias objects, as planned_qconv."""
    from . import _runtime
    from . import quantization as Q
    from .kernels.cpu import int8 as I8
    a, p = node.attrs, node.params
    shape, dt = spec
    wq = p.get("weight_q")
    if not Q._vnni.HAS_VNNI or "weight_q_rest" in p or len(shape) < 2 or wq is None or \
            wq.ndim != 2 or wq.shape[1] != shape[-1] or shape[-1] > Q.MAX_REDUCTION:
        return None
    M, K, N = int(np.prod(shape[:-1])), shape[-1], wq.shape[0]
    x_dt = np.dtype(a["x_dtype"])
    quant = a.get("out_scale") is not None
    out_dt = np.dtype(a["out_dtype"]) if quant else np.dtype(np.float32)
    if not M or not K or (dt != x_dt and (dt != np.float32 or K % 4)) or \
            buf.dtype != out_dt or buf.shape != tuple(shape[:-1]) + (N,):
        return None
    held = tuple((p, key, p.get(key)) for key in ("weight_q", "w_scale", "bias"))
    cache = _cache(node, "weight_q")
    with _runtime.kernel_scope(blas=False):
        wp, _ = Q._packed_form(cache, "int8_gemm_vnni", lambda: Q._pack_gemm(wq.T))
    qt, lo, hi, zk = Q._kernel_range(x_dt, a["x_zero_point"], node.layer)
    rows = np.zeros((M + -M % 8, K + -K % 4), np.uint8)
    offsets = np.zeros(-(-N // 32) * 32, np.int32)
    offsets[:N] = -zk * wq.sum(axis=1, dtype=np.int64)
    acc = np.empty((M, N), np.int32)
    ws = np.empty((_runtime.max_threads(), 272), np.int32)
    blocking = Q._gemm_blocking(rows.shape[0], rows.shape[1], N, threads)
    scale = np.ascontiguousarray(np.broadcast_to(
        (np.float32(a["x_scale"]) * p["w_scale"]).astype(np.float32), (N,)))
    bias = np.zeros(N, np.float32) if p.get("bias") is None else \
        np.asarray(p["bias"], np.float32)
    act = {None: 0, "relu": 1, "relu6": 2}.get(a.get("activation"))
    if act is None or scale.shape != (N,) or bias.shape != (N,):
        return None
    if quant:
        info = np.iinfo(out_dt)
        req = (np.float32(1.0 / a["out_scale"]), np.float32(a["out_zero_point"]),
               np.float32(info.min), np.float32(info.max))
    else:
        req = (np.float32(1), np.float32(0), np.float32(0), np.float32(0))
    y2 = buf.reshape(M, N)
    y, yq = (np.zeros((1, 1), np.float32), y2) if quant else (y2, np.zeros((1, 1), np.uint8))
    flip = dt == np.int8
    quantize = (np.float32(1.0 / a["x_scale"]), np.float32(zk), np.float32(lo), np.float32(hi))

    def step(x, out, other):
        if not _planned(x, shape, dt) or _runtime.get_num_threads() != threads or \
                any(d.get(key) is not obj for d, key, obj in held):
            return False
        x2 = x.reshape(M, K)
        with _runtime.kernel_scope(blas=False):
            if dt == np.float32:
                _runtime.launch(I8.quantize_flat, x2.reshape(-1), *quantize,
                                rows[:M].reshape(-1))
            else:
                _runtime.launch(I8.copy_rows, x2, rows, flip)
            _runtime.launch(I8.gemm_u8s8_vnni, rows, wp, N, acc, offsets, ws, *blocking)
            _runtime.launch(I8.finish_gemm, acc, scale, bias, act, y, yq, quant, *req)
        return True
    F._replay_info(step, False, held)
    return step


def _qconv_parts(node, x, res):
    """qconv of a weight that int8 does not hold (an imported uint8 weight far from its
    zero point): weight_q plus the parts in weight_q_rest.  Each part is one exact int8
    conv with unit scales, no bias and float out (float32(acc - zx * wsum), exact while
    below 2**24 in magnitude); the sums are added and _finish's epilogue (scale, bias,
    residual, activation, requantization) runs in NumPy.  A fallback: no replay
    (planned_qconv leaves it to the op)."""
    from .quantization import int8_conv2d
    a, p = node.attrs, node.params
    xb = x[None] if x.ndim == 3 else x
    if xb.dtype != np.dtype(a["x_dtype"]):
        xb = _quantize_input(np.asarray(xb, np.float32), node)
    parts = [p["weight_q"]] + list(p["weight_q_rest"])
    ones = np.ones(parts[0].shape[0], np.float32)
    total = None
    for i, wq in enumerate(parts):
        y = int8_conv2d(xb, 1.0, a["x_zero_point"], wq, ones, None, a["stride"], a["pads"],
                        a["dilation"], a["groups"], layer=node.layer,
                        packed=_cache(node, ("weight_q", "weight_q_rest")).setdefault(i, {}))
        total = y.astype(np.float64) if total is None else total + y
    k = (1, -1, 1, 1)
    scale = (np.float32(a["x_scale"]) * p["w_scale"]).astype(np.float32)
    v = total.astype(np.float32) * scale.reshape(k)
    if p.get("bias") is not None:
        v += np.asarray(p["bias"], np.float32).reshape(k)
    if res is not None:
        v += np.asarray(res, np.float32).reshape(v.shape)
    v = _act_requant(v, a)
    return v[0] if x.ndim == 3 else v


def planned_qconv(node, x_shape, out_shape, x_dtype=np.float32):
    """For a Model's plan (graph._direct_steps): the qconv node as ``step(x, y, residual)
    -> bool`` into the plan's buffer y, or None (an unbatched input).  The step runs the
    node as qconv does and returns True, or returns False, doing nothing, when the input
    is not a C-contiguous array of the planned shape and dtype (float32, or the uint8 a
    QDQ model's int8 layers pass on), the residual not a float32 one, the thread
    count changed or the node's weight_q, w_scale or bias object was replaced.  Its
    kernels (the quantizing move and the int8 conv) all go through _runtime.launch, so
    the plan replays them: a quantized model's layers had each spent ~50 us in Python
    between kernels, an eighth of an int8 ResNet-50 at batch 1."""
    from . import _runtime
    if len(x_shape) != 4 or len(out_shape) != 4 or "weight_q_rest" in node.params:
        return None
    params = node.params
    held = tuple((params, key, params.get(key)) for key in ("weight_q", "w_scale", "bias"))
    x_shape, out_shape, x_dtype = tuple(x_shape), tuple(out_shape), np.dtype(x_dtype)

    threads = _runtime.get_num_threads()

    def step(x, y, residual):
        if (not _planned(x, x_shape, x_dtype) or _runtime.get_num_threads() != threads
                or any(d.get(key) is not obj for d, key, obj in held)
                or (residual is not None and not F._planned_array(residual, out_shape))):
            return False
        qconv(node, [x] if residual is None else [x, residual], y)
        return True
    F._replay_info(step, False, held)
    return step


@op("qlinear")
def qlinear(node, args, out):
    """Exact int8 GEMM of the input rows, quantized on the way (per tensor) or already
    integers on the input's grid (an imported QLinearMatMul / QGemm); float32 epilogue,
    or with attrs out_scale / out_zero_point / out_dtype the requantized integers."""
    from .quantization import int8_gemm
    a = node.attrs
    x = args[0]
    x2 = x.reshape(-1, x.shape[-1])
    xq = np.ascontiguousarray(x2) if x2.dtype == np.dtype(a["x_dtype"]) else \
        _quantize_input(x2, node)
    wq = node.params["weight_q"]  # (out, in) int8
    cache = _cache(node, "weight_q")  # wq's packed form, read in place of wq.T from then on
    acc = int8_gemm(xq, wq.T, packed=cache)
    wsum = cache.get("qlinear_wsum")
    if wsum is None:
        wsum = cache["qlinear_wsum"] = wq.sum(axis=1, dtype=np.int64)
    rest = node.params.get("weight_q_rest")   # (an imported weight int8 does not hold)
    if rest is not None:
        for i, part in enumerate(rest):   # exact int32 sums, one part at a time
            acc = acc + int8_gemm(xq, part.T, packed=cache.setdefault(("rest", i), {}))
        wsum = cache.get("qlinear_wsum_all")
        if wsum is None:
            wsum = cache["qlinear_wsum_all"] = (wq.sum(axis=1, dtype=np.int64)
                                                + rest.sum(axis=(0, 2), dtype=np.int64))
    scale = (np.float32(a["x_scale"]) * node.params["w_scale"]).astype(np.float32)
    y = (acc - a["x_zero_point"] * wsum).astype(np.float32) * scale
    if node.params.get("bias") is not None:
        y += node.params["bias"]
    y = _act_requant(y, a).reshape(x.shape[:-1] + (wq.shape[0],))
    if out is not None and out.shape == y.shape and out.dtype == y.dtype:
        out[...] = y   # (a plan's buffer: planned_step writes it directly)
        return out
    return y


def _act_requant(v, a):
    """The tail of _finish's epilogue in NumPy on float32 v (modified): attrs
    ``activation`` (relu, relu6), then with ``out_scale`` the requantized integers
    min(max(rint(v * (1 / out_scale)) + out_zero_point, lo), hi) of ``out_dtype``."""
    if a.get("activation") == "relu":
        np.maximum(v, 0, out=v)
    elif a.get("activation") == "relu6":
        np.clip(v, 0, 6, out=v)
    if a.get("out_scale") is None:
        return v
    info = np.iinfo(np.dtype(a["out_dtype"]))
    v = np.rint(v * np.float32(1.0 / a["out_scale"]))
    v += np.float32(a["out_zero_point"])
    return np.clip(v, info.min, info.max, out=v).astype(a["out_dtype"])


def _requantize(q, src, dst):
    """Integers q on grid src = (scale, zero point, dtype) moved to grid dst, as ONNX's
    DequantizeLinear then QuantizeLinear compute it (float32, division, half to even)."""
    if tuple(src) == tuple(dst):
        return q
    v = (q.astype(np.int32) - np.int32(src[1])).astype(np.float32) * np.float32(src[0])
    info = np.iinfo(np.dtype(dst[2]))
    v = np.rint(v / np.float32(dst[0]))
    v += np.float32(dst[1])
    return np.clip(v, info.min, info.max, out=v).astype(dst[2])


@op("qglobal_avg_pool")
def qglobal_avg_pool(node, args, out):
    """The mean over the spatial axes of integers on grid attrs ``fq_x``, quantized on
    grid ``fq_out`` (onnxruntime's QLinearGlobalAveragePool): y = saturate(round((sum -
    n*zx) * (sx / (sy*n))) + zy), n the pixels pooled, in float32 as it computes it;
    attrs ``channels_last`` for NHWC input."""
    a = node.attrs
    x = np.asarray(args[0])
    dt = a["fq_out"][2]
    axes = tuple(range(1, x.ndim - 1)) if a.get("channels_last") else tuple(range(2, x.ndim))
    n = int(np.prod([x.shape[i] for i in axes]))
    zx, scale, zy, lo, hi = _qgap_args(a, n)
    if a.get("channels_last") or not n:
        total = x.sum(axis=axes, keepdims=True, dtype=np.int64) - n * zx
        v = np.rint(total.astype(np.float32) * scale)
        v += zy
        return np.clip(v, lo, hi, out=v).astype(dt)
    from .kernels.cpu.pooling import global_avg_pool_int
    shape = x.shape[:2] + (1,) * (x.ndim - 2)
    y = np.empty(shape, dt) if out is None or out.shape != shape or out.dtype != dt else out
    if y.size:
        global_avg_pool_int(np.ascontiguousarray(x).reshape(-1, n), y.reshape(-1), zx, scale,
                            zy, lo, hi)
    return y


def _qgap_args(a, n):
    """(zx, scale, zy, lo, hi) of a qglobal_avg_pool with attrs ``a`` over n pixels:
    scale = sx / (sy * n) in float32 as onnxruntime computes it, zy and the output type's
    range as float32 (pooling.global_avg_pool_int's arguments after x, y)."""
    (sx, zx, _), (sy, zy, dt) = a["fq_x"], a["fq_out"]
    info = np.iinfo(np.dtype(dt))
    return (int(zx), np.float32(sx) / (np.float32(sy) * np.float32(n)), np.float32(zy),
            np.float32(info.min), np.float32(info.max))


@op("qmul", "alloc")
def qmul(node, args, out):
    """The product of two integer tensors on grids attrs ``fq_a`` and ``fq_b``, quantized
    on ``fq_out`` (onnxruntime's QLinearMul): each operand dequantized in float32, the
    product divided by the output's scale, rounded half to even; broadcasting."""
    a = node.attrs
    (sa, za, _), (sb, zb, _), (sc, zc, dt) = a["fq_a"], a["fq_b"], a["fq_out"]
    va = (np.asarray(args[0]).astype(np.int32) - np.int32(za)).astype(np.float32)
    vb = (np.asarray(args[1]).astype(np.int32) - np.int32(zb)).astype(np.float32)
    v = np.rint((va * np.float32(sa)) * (vb * np.float32(sb)) / np.float32(sc))
    v += np.float32(zc)
    info = np.iinfo(np.dtype(dt))
    return np.clip(v, info.min, info.max, out=v).astype(dt)


@op("qavg_pool", "alloc")
def qavg_pool(node, args, out):
    """Average pooling of integers on grid attrs ``fq_x`` into grid ``fq_out``
    (onnxruntime's QLinearAveragePool): the pool of x - zx in float32 (avg_pool's
    attributes and kernel), times sx / sy, rounded half to even."""
    a = node.attrs
    (sx, zx, _), (sy, zy, dt) = a["fq_x"], a["fq_out"]
    xf = (np.asarray(args[0]).astype(np.int32) - np.int32(zx)).astype(np.float32)
    v = np.rint(avg_pool(node, [xf], None) * (np.float32(sx) / np.float32(sy)))
    v += np.float32(zy)
    info = np.iinfo(np.dtype(dt))
    return np.clip(v, info.min, info.max, out=v).astype(dt)


@op("qlookup", "alloc")
def qlookup(node, args, out):
    """y = params ``table`` at x's byte: a unary function of one integer tensor, every
    value its type holds looked up (an imported QLinearSigmoid / QLinearLeakyRelu)."""
    x = np.ascontiguousarray(args[0])
    return node.params["table"][x.view(np.uint8)]


@op("qconcat", "alloc")
def qconcat(node, args, out):
    """Concatenation of integer tensors along attrs ``axis``, each moved from its grid
    (attrs ``grids``) to the output's (``fq_out``) first (onnxruntime's QLinearConcat)."""
    a = node.attrs
    parts = [_requantize(np.asarray(x), g, a["fq_out"]).astype(a["fq_out"][2], copy=False)
             for x, g in zip(args, a["grids"])]
    return np.concatenate(parts, axis=a["axis"])


# -- pruned layers (fc.prune) ---------------------------------------------------------------------

@op("sparse_conv")
def sparse_conv(node, args, out):
    from .sparse import sparse_conv2d
    a = node.attrs
    res = args[1] if len(args) > 1 else None
    return sparse_conv2d(args[0], node.params["weight"], node.params.get("bias"), a["stride"],
                         a["pads"], a["dilation"], a["groups"], _act(node), res, _cache(node),
                         layer=node.layer, out=out, block=a.get("block"),
                         # fc.prune chose the sparse Winograd kernel: still the modelled
                         # choice at this input's shape (a 3x3 on a 1x1 map runs its centre)
                         winograd=None if a.get("winograd") else False)


@op("sparse_linear", "alloc")
def sparse_linear(node, args, out):
    from .sparse import sparse_linear as run
    return run(args[0], node.params["weight"], node.params.get("bias"), _act(node), _cache(node),
               layer=node.layer)


# -- shared weights (fc.share_weights) ---------------------------------------------------------------

def _decoded(node):
    """The layer's dense weight, decoded from codebook + packed indices once and cached (for
    the index and codebook objects both)."""
    w = _cache(node, ("weight_index", "codebook")).get("decoded")
    if w is None:
        from .compress import unpack_indices
        shape = tuple(node.attrs["weight_shape"])
        idx = unpack_indices(node.params["weight_index"], node.attrs["bits"],
                             int(np.prod(shape)))
        w = node.cache["decoded"] = np.ascontiguousarray(node.params["codebook"][idx].reshape(shape))
    return w


@op("cb_conv")
def cb_conv(node, args, out):
    a = node.attrs
    res = args[1] if len(args) > 1 else None
    return F.conv2d(args[0], _decoded(node), node.params.get("bias"), a["stride"], a["pads"],
                    a["dilation"], a["groups"], _act(node), a.get("algo", "auto"), res,
                    node.cache, layer=node.layer, out=out)


@op("cb_linear")
def cb_linear(node, args, out):
    return F.linear(args[0], _decoded(node), node.params.get("bias"), _act(node),
                    layer=node.layer, out=out)
