"""Running a Model device-resident on the CUDA backend.

The input is moved to the GPU once (device arrays and ``__cuda_array_interface__``
objects are used in place); every node then gets device arrays and returns one:
convolutions (dense and CSR), pooling and linear layers through their CUDA kernels (weights
copied once, into the node's cache), views by reshaping on the device, ReLU /
clip / hardswish and same-shape or per-channel add/sub/mul through elementwise
kernels.  Any other op runs on the host for that node (its inputs copied back
and its result copied up): correct, and visible in ``device_fallbacks``.
Each node writes into device buffers the model keeps per Python thread (keyed
by node and shape), so steady-state calls allocate no device memory except the
returned outputs.  Outputs come back as the caller's kind of array: NumPy for
NumPy input, fresh device arrays (or torch CUDA tensors) for device input.
"""
import threading
import time

import numpy as np

from . import _cuda
from .ops import OPS

_DEVICE = {"conv", "sparse_conv", "global_avg_pool", "adaptive_avg_pool", "linear"}
_VIEWS = {"identity", "flatten", "flatten2d", "reshape", "squeeze", "unsqueeze"}
_BINARY = {"add": 0, "sub": 1, "mul": 2}


def _host(a):
    return a.copy_to_host() if _cuda.is_device_array(a) else a


def _node_on_device(node, args):
    op = node.op
    x = args[0] if args else None
    if op in _DEVICE or (op in ("max_pool", "avg_pool") and _symmetric(node)):
        return OPS[op].fn(node, args, None)
    if op in _VIEWS and _cuda.is_device_array(x) and (len(args) == 1 or op != "reshape"
                                                       or not _cuda.is_device_array(args[1])):
        shape = tuple(x.shape)
        probe = np.broadcast_to(np.zeros((), np.float32), shape)
        new = OPS[op].fn(node, [probe] + [_host(a) for a in args[1:]], None).shape
        return x if tuple(new) == shape else x.reshape(*new)
    if not _cuda.is_device_array(x):
        return None
    if op == "relu":
        return _cuda.unary(x, act=1)
    if op == "hardswish":
        return _cuda.unary(x, act=3)
    if op == "clip":
        lo, hi = node.attrs.get("min"), node.attrs.get("max")
        return _cuda.unary(x, lo=-np.inf if lo is None else lo, hi=np.inf if hi is None else hi,
                           clip=True)
    if op in _BINARY and all(_cuda.is_device_array(a) for a in args):
        return _cuda.binary(args[0], args[1], _BINARY[op])
    return None


def _symmetric(node):
    p, k = node.attrs["pads"], node.attrs["kernel"]
    return p[0] == p[1] and p[2] == p[3] and p[0] <= k[0] // 2 and p[2] <= k[1] // 2


def run_on_device(model, args, kwargs, timings=None):
    """The model's outputs for ``args``; with ``timings`` (a list), each node's seconds up to
    its device synchronization are appended to it (the profile of ``Model.profile``)."""
    if kwargs:
        args = tuple(args) + tuple(kwargs[k] for k in model.inputs[len(args):] if k in kwargs)
    if len(args) != len(model.inputs):
        raise ValueError(f"{model.name}: expected {len(model.inputs)} input(s) "
                         f"{model.inputs}, got {len(args)}")
    values = dict(model.constants)
    for name, a in zip(model.inputs, args):
        if _cuda.is_device_array(a):
            _cuda.device_shape_dtype(a, f"{model.name} input {name!r}")
            values[name] = _cuda.to_device(a)
        else:
            from . import _checks
            values[name] = _cuda.to_device(_checks.as_float32(a, f"{model.name} input {name!r}"))
    fallbacks = []
    pools = model.__dict__.setdefault("_device_buffers", {})
    buffers = pools.setdefault(threading.get_ident(), {})
    try:
        _run_nodes(model, values, buffers, fallbacks, timings)
    finally:
        _cuda.use_buffers(None, None)
    model.device_fallbacks = fallbacks
    first = args[0]
    outs = []
    for v in model.outputs:
        o = values[v]
        if _cuda.is_device_array(o):
            if _cuda.is_device_array(first):  # the buffer is reused next call: hand out a copy
                fresh = _cuda.alloc(tuple(o.shape))
                fresh.copy_to_device(o)
                o = _cuda.wrap(fresh, first)
            else:
                from . import _checks
                o = _checks.wrap_like(o.copy_to_host(), first)
        outs.append(o)
    return outs


def _run_nodes(model, values, buffers, fallbacks, timings=None):
    sync = _cuda._cuda().synchronize if timings is not None else None
    if sync is not None:
        sync()  # the input's copy is not the first node's time
    for node in model.nodes:
        t0 = time.perf_counter()
        _cuda.use_buffers(buffers, node.name)
        ins = [values[v] if v else None for v in node.inputs]
        res = _node_on_device(node, ins)
        if res is None:
            fallbacks.append(node.name)
            res = OPS[node.op].fn(node, [_host(a) for a in ins], None)
            if isinstance(res, np.ndarray) and res.dtype == np.float32 and res.size:
                res = _cuda.to_device(res)
        values[node.outputs[0]] = res
        if sync is not None:
            sync()
            timings.append(time.perf_counter() - t0)


def profile_on_device(model, example, repeat):
    """Per-node median seconds of the device-resident run (input on the device already,
    each node timed to its synchronization), after one warm-up run."""
    args = [a if _cuda.is_device_array(a) else _cuda.to_device(np.asarray(a, np.float32))
            for a in example]
    run_on_device(model, args, {})
    runs = []
    for _ in range(max(1, repeat)):
        t = []
        run_on_device(model, args, {}, timings=t)
        runs.append(t)
    return [float(v) for v in np.median(np.array(runs), axis=0)]
