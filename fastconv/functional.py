"""Functional API: validate once, plan, call one kernel, return the array.

Every function accepts NCHW float32 NumPy arrays or CPU torch tensors (and
returns the same type), converts float64 and non-contiguous inputs, rejects
other dtypes, and never writes to its inputs.  ``layer`` names the caller in
error messages (``fastconv.nn`` passes the module's name).
"""
import numpy as np

from . import (
    _algorithms,  # noqa: F401  (registers the CPU algorithms)
    _backend,
    _checks,
    _runtime,
    _workspace,
    planner,
)
from .kernels.cpu import conv_transpose as _convt
from .kernels.cpu import linear as _linear
from .kernels.cpu import phases as _phases
from .kernels.cpu import pooling as _pooling


def _unbatched(a, layer, what="input"):
    """(C, H, W) inputs are treated as a batch of one, as torch does."""
    if a.ndim == 3:
        return a[None], True
    if a.ndim != 4:
        raise ValueError(f"{layer}: {what} must be 4-D (N, C, H, W) or 3-D (C, H, W), "
                         f"got {a.ndim}-D with shape {tuple(a.shape)}")
    return a, False


def conv_problem(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1, layer="conv2d"):
    """Validate the geometry of a convolution and return its :class:`ConvProblem`."""
    n, c, h, w = x_shape
    if len(w_shape) != 4:
        raise ValueError(f"{layer}: weight must be 4-D (out_channels, in_channels/groups, kH, kW), "
                         f"got shape {tuple(w_shape)}")
    k, cg, r, s = w_shape
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{layer}: groups must be a positive int, got {groups!r}")
    if min(k, cg, r, s) < 1:
        raise ValueError(f"{layer}: weight dimensions must be >= 1, got shape {tuple(w_shape)}")
    if c % groups:
        raise ValueError(f"{layer}: groups={groups} must divide the input channels, got {c} channels")
    if k % groups:
        raise ValueError(f"{layer}: groups={groups} must divide the output channels "
                         f"(weight.shape[0]), got {k}")
    if c // groups != cg:
        raise ValueError(f"{layer}: expected input with {cg * groups} channels "
                         f"(weight {tuple(w_shape)}, groups={groups}), got {c} channels "
                         f"(input shape {tuple(x_shape)})")
    st = _checks.pair(stride, layer, "stride", minimum=1)
    dil = _checks.pair(dilation, layer, "dilation", minimum=1)
    pads = _checks.padding4(padding, (r, s), dil, st, layer)
    prob = planner.ConvProblem(int(n), int(c), int(h), int(w), int(k), int(r), int(s),
                               st, pads, dil, int(groups))
    if prob.oh < 1 or prob.ow < 1:
        eff = (dil[0] * (r - 1) + 1, dil[1] * (s - 1) + 1)
        raise ValueError(f"{layer}: kernel {r}x{s} (dilated extent {eff[0]}x{eff[1]}) is larger "
                         f"than the padded input {h + pads[0] + pads[1]}x{w + pads[2] + pads[3]}")
    return prob


_plan_cache = {}
_PLAN_CACHE_MAX = 4096


def _key(v):
    """v as an exact cache key, or None if it is not a plain int / tuple of ints / str."""
    t = type(v)
    if t is int or t is str:
        return v
    if (t is tuple or t is list) and all(type(e) is int for e in v):
        return tuple(v)
    return None


def _conv_plan(x_shape, w_shape, stride, padding, dilation, groups, algo, layer, prepacked=False):
    """(ConvProblem, Algorithm) for these arguments, validated once per distinct signature."""
    key = (x_shape, w_shape, _key(stride), _key(padding), _key(dilation), _key(groups),
           algo if type(algo) is str else None, _runtime.get_num_threads(), prepacked)
    hit = None if None in key else _plan_cache.get(key)
    if hit is None:
        prob = conv_problem(x_shape, w_shape, stride, padding, dilation, groups, layer)
        hit = (prob, planner.plan(prob, algo, layer, prepacked).algorithm)
        if None not in key:
            if len(_plan_cache) >= _PLAN_CACHE_MAX:
                _plan_cache.clear()
            _plan_cache[key] = hit
    return hit


def _bias(bias, k, layer):
    if bias is None:
        return _workspace.zeros(k)
    b = _checks.as_float32(bias, layer, "bias", ndim=1)
    if b.shape[0] != k:
        raise ValueError(f"{layer}: bias must have {k} elements (out_channels), got {b.shape[0]}")
    return b


def _out(out, shape, layer, inputs=()):
    """``out`` checked as a destination for a result of ``shape``, or a new array."""
    if out is None:
        return np.empty(shape, np.float32)
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != shape \
            or not out.flags.c_contiguous or not out.flags.writeable:
        desc = (f"{type(out).__name__} {getattr(out, 'dtype', '')} {tuple(getattr(out, 'shape', ()))}")
        raise ValueError(f"{layer}: out must be a writeable C-contiguous float32 NumPy array of "
                         f"shape {shape}, got {desc}")
    for a in inputs:
        if a is not None and np.may_share_memory(out, a):
            raise ValueError(f"{layer}: out must not overlap an input")
    return out



def _residual(residual, shape, layer, unbatched=False, what="the output's shape"):
    """The residual as float32 with the output's (batched) shape, or None; an unbatched
    3-D residual gains the batch axis.  A wrong shape is an error that names the layer
    and the shape wanted (unbatched: without the batch axis)."""
    if residual is None:
        return None
    res = _checks.as_float32(residual, layer, "residual")
    if unbatched and res.ndim == 3:
        res = res[None]
    if res.shape != shape:
        want = shape[1:] if unbatched else shape
        raise ValueError(f"{layer}: residual must have {what} {want}, got {tuple(res.shape)}")
    return res


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           activation=None, algo="auto", residual=None, packed=None, layer="conv2d", out=None,
           backend=None):
    """2-D convolution (cross-correlation, as torch.nn.functional.conv2d), epilogue fused.

    y = activation(conv(x, weight) + bias + residual), in one pass over y.

    padding: int, pair, (top, bottom, left, right), "same" or "valid".
    activation: None, "relu", "relu6" or "hardswish".
    algo: "auto" or a registered algorithm name ("direct", "im2col", "pointwise", "depthwise").
    residual: None or an array of the output's shape (a ResNet shortcut), added before
    the activation.
    packed: None, or a dict kept by the caller together with ``weight`` in which
    algorithms cache transformed weights (Winograd's filter transform); the caller
    must pass a fresh dict whenever the weight changes.  Layers do this for you.
    out: None, or a float32 C-contiguous array of the result's shape to write into
    (models reuse planned buffers this way); it must not overlap an input.
    backend: None (the global setting), "cpu", "cuda" or "auto" (fastconv/_backend.py).
    """
    if packed is not None and backend is None and not _backend.may_use_gpu(x):
        bound = packed.get(_BOUND)
        if bound is not None:
            y = bound(x, weight, bias, (stride, padding, dilation, groups, activation, algo,
                                        _runtime.get_num_threads()), residual, out, layer)
            if y is not None:
                return y
    if backend is not None or _backend.may_use_gpu(x):
        _runtime.unrecordable()  # may run on the device
        be = _backend.choose(backend, x, layer)
        if be != "cpu":
            y = _conv2d_gpu(x, weight, bias, stride, padding, dilation, groups, activation,
                            residual, packed, layer, be == "maybe", algo)
            if y is not None:
                return y
    _runtime.unrecordable()  # planning, conversions, binding: not only launches
    x_in = x
    xa = _checks.as_float32(x, layer, "input")
    xa, unbatched = _unbatched(xa, layer)
    w = _checks.as_float32(weight, layer, "weight")
    prob, chosen = _conv_plan(xa.shape, w.shape, stride, padding, dilation, groups, algo, layer,
                              packed is not None)
    b = _bias(bias, prob.k, layer)
    act = _checks.activation_code(activation, layer)
    out_shape = (prob.n, prob.k, prob.oh, prob.ow)
    res = _residual(residual, out_shape, layer, unbatched)
    if out is not None:
        y = _out(out, out_shape[1:] if unbatched else out_shape, layer, (xa, res))
        y = y[None] if unbatched else y
    else:
        y = np.empty(out_shape, np.float32)
    if prob.n:
        with _runtime.kernel_scope(blas=chosen.uses_blas):
            chosen.run(prob, xa, w, b, y, act, res, packed)
        if (packed is not None and backend is None and xa is x_in and w is weight
                and (bias is None or b is bias) and not unbatched):
            packed[_BOUND] = _BoundConv(
                (stride, padding, dilation, groups, activation, algo, _runtime.get_num_threads()),
                weight, bias, xa.shape, out_shape, chosen.uses_blas,
                chosen.bind(prob, w, b, act, packed), chosen.replayable)
    if unbatched:
        y = y[0]
    return _checks.wrap_like(y, x_in)


_GAP = "conv2d_global_avg_pool:bound"


def conv2d_global_avg_pool(x, weight, bias=None, activation=None, residual=None, packed=None,
                           layer="conv2d_global_avg_pool", out=None):
    """The global average pool of a stride-1 1x1 convolution's output, in one call:

        y[n, k, 0, 0] = mean_p act(conv2d(x, weight, bias)[n, k, p] (+ residual[n, k, p]))

    x (N, C, H, W), weight (K, C/groups, 1, 1), residual None or (N, K, H, W); returns
    (N, K, 1, 1).  Where pointwise_packed serves the conv each of its tasks averages
    the whole planes it has just stored, while they are in its core's cache (a
    network's last 1x1 before its classifier: no pass of its own, no cross-core read);
    otherwise (or where the planner picks rowdot: a few pixels) conv2d then
    adaptive_avg_pool2d.  ``packed``: the layer's cache.
    """
    xa = _checks.as_float32(x, layer, "input")
    w = _checks.as_float32(weight, layer, "weight")
    if xa.ndim != 4:
        raise ValueError(f"{layer}: input must be 4-D (N, C, H, W), got shape {xa.shape}")
    if w.ndim != 4 or w.shape[2:] != (1, 1):
        raise ValueError(f"{layer}: weight must be (K, C/groups, 1, 1), got {w.shape}")
    groups = xa.shape[1] // max(1, w.shape[1])
    key = (xa.shape, w.shape, activation, _runtime.get_num_threads())
    entry = None if packed is None else packed.get(_GAP)
    if entry is not None and entry[0] == key and entry[1] is weight and entry[2] is bias:
        run, conv_shape = entry[3], entry[4]
    else:
        prob = conv_problem(xa.shape, w.shape, 1, 0, 1, groups, layer)
        b = _bias(bias, prob.k, layer)
        act = _checks.activation_code(activation, layer)
        conv_shape = (prob.n, prob.k, prob.oh, prob.ow)
        alg = planner.REGISTRY["pointwise_packed"]
        run = None
        # a few pixels (a small image): the planner's rowdot streams the weights faster,
        # and the pool after it averages a handful of values
        few = planner.plan(prob, "auto", layer, packed is not None).algorithm.name == "rowdot"
        if alg.serves(prob) is None and prob.n and prob.oh * prob.ow and not few:
            run = alg.bind(prob, w, b, act, packed, pool=True)  # run(x, y, res, pooled)
        if packed is not None and xa is x and w is weight and (bias is None or b is bias):
            packed[_GAP] = (key, weight, bias, run, conv_shape)
    res = _residual(residual, conv_shape, layer, what="the convolution's output shape")
    y = _out(out, conv_shape[:2] + (1, 1), layer, (xa, res))
    if run is None:
        z = conv2d(xa, w, bias, 1, 0, 1, groups, activation, residual=res, packed=packed,
                   layer=layer)
        return _checks.wrap_like(adaptive_avg_pool2d(z, 1, layer=layer, out=y), x)
    z = _workspace.get("conv_gap_out", conv_shape)
    with _runtime.kernel_scope(blas=False):
        run(xa, z, res, y.reshape(conv_shape[:2]))
    return _checks.wrap_like(y, x)


_BOUND = "conv2d:bound"  # the packed-dict entry of a layer's repeat-call fast path
_F32 = np.dtype(np.float32)


class _BoundConv:
    """A layer's last conv2d call, planned and bound (``Algorithm.bind``): a repeat
    with the same arguments, weight and bias objects and an input of the same shape
    skips planning and conversion.  Anything else returns None and takes the full
    path, which validates it (and rebinds)."""
    __slots__ = ("key", "weight", "bias", "x_shape", "out_shape", "blas", "run", "replayable")

    def __init__(self, key, weight, bias, x_shape, out_shape, blas, run, replayable=False):
        self.key, self.weight, self.bias = key, weight, bias
        self.x_shape, self.out_shape, self.blas, self.run = x_shape, out_shape, blas, run
        self.replayable = replayable

    def __call__(self, x, weight, bias, key, residual, out, layer):
        if (type(x) is not np.ndarray or weight is not self.weight or bias is not self.bias
                or x.shape != self.x_shape or x.dtype != _F32 or not x.flags.c_contiguous
                or not x.flags.aligned or key != self.key):
            return None
        if residual is not None and (
                type(residual) is not np.ndarray or residual.dtype != _F32
                or residual.shape != self.out_shape or not residual.flags.c_contiguous
                or not residual.flags.aligned):
            return None
        if out is None:
            y = np.empty(self.out_shape, np.float32)
            _runtime.unrecordable()  # a new output every call
        else:
            y = _out(out, self.out_shape, layer, (x, residual))
            if not self.replayable:
                _runtime.unrecordable()
        with _runtime.kernel_scope(blas=self.blas):
            self.run(x, y, residual)
        return y


def _planned_array(a, shape):
    """Whether a planned step may hand ``a`` to its kernel as is: a NumPy float32 array
    of ``shape``, C-contiguous and aligned."""
    return (type(a) is np.ndarray and a.shape == shape and a.dtype == _F32
            and a.flags.c_contiguous and a.flags.aligned)


def planned_conv(packed, params, x_shape, out_shape):
    """For a caller that fixes the shapes and owns the output buffer (a Model's plan): the
    layer's bound conv2d as ``step(x, y, residual) -> bool``, or None when the layer has
    no bound call for these shapes and ``params["weight"]`` / ``params.get("bias")``.
    The step runs the kernel into y and returns True, or returns False, doing nothing,
    when anything differs from what was bound (input or residual type, dtype, shape,
    layout; the objects in params["weight"] and params["bias"]; the thread count):
    the caller then takes the full conv2d path.  y must be a C-contiguous float32 array
    of out_shape that overlaps neither input (the plan's buffers never do)."""
    bound = packed.get(_BOUND) if packed else None
    weight, bias = params.get("weight"), params.get("bias")
    if (bound is None or bound.x_shape != tuple(x_shape) or bound.out_shape != tuple(out_shape)
            or bound.weight is not weight or bound.bias is not bias):
        return None
    run, blas, threads = bound.run, bound.blas, bound.key[-1]
    x_shape, out_shape, replayable = bound.x_shape, bound.out_shape, bound.replayable

    def step(x, y, residual):
        if (not _planned_array(x, x_shape) or _runtime.get_num_threads() != threads
                or params.get("weight") is not weight or params.get("bias") is not bias
                or (residual is not None and not _planned_array(residual, out_shape))):
            return False
        if not replayable:
            _runtime.unrecordable()
        with _runtime.kernel_scope(blas=blas):
            run(x, y, residual)
        return True
    _replay_info(step, blas, ((params, "weight", weight), (params, "bias", bias)))
    return step


def _replay_info(step, blas, bound_params):
    """What a model's plan needs to replay ``step``'s recorded kernels (graph.py): whether
    they call BLAS, and the (dict, key, object) entries it was bound to, which must still
    hold.  (A step whose bound call is not only launches marks its capture incomplete.)"""
    step.blas, step.bound_params = blas, bound_params


def planned_conv2d_global_avg_pool(packed, weight, bias, x_shape):
    """planned_conv's counterpart for conv2d_global_avg_pool (no residual): the call
    bound in ``packed`` for x_shape and these weight and bias objects as ``step(x) ->
    pooled`` ((N, K, 1, 1), a new array) or None where it runs no bound pointwise_packed
    call for them; the step returns None, doing nothing, when x or the thread count
    differs from what was bound."""
    entry = packed.get(_GAP) if packed else None
    if (entry is None or entry[3] is None or entry[0][0] != tuple(x_shape)
            or entry[1] is not weight or entry[2] is not bias):
        return None
    (x_shape, threads), run, conv_shape = (entry[0][0], entry[0][3]), entry[3], entry[4]

    def step(x):
        if not _planned_array(x, x_shape) or _runtime.get_num_threads() != threads:
            return None
        y = np.empty(conv_shape[:2] + (1, 1), np.float32)
        with _runtime.kernel_scope(blas=False):
            run(x, _workspace.get("conv_gap_out", conv_shape), None, y.reshape(conv_shape[:2]))
        return y
    return step


def planned_linear(weight, bias, activation, x_shape, layer="linear"):
    """For a caller that fixes the input shape (N, F) with N <= LINEAR_ROWS_MAX: linear()
    as ``step(x) -> y`` (a new (N, K) array) running linear_rows with everything but
    x and y worked out once, or None where linear() would not run it as is (weight or
    bias not float32 C-contiguous arrays of matching shapes).  The step returns None,
    doing nothing, for any other input or thread count; the caller keeps the weight
    and bias objects (a replaced one needs a new step)."""
    if (len(x_shape) != 2 or not 0 < x_shape[0] <= LINEAR_ROWS_MAX
            or type(weight) is not np.ndarray or weight.ndim != 2
            or not _planned_array(weight, weight.shape) or weight.shape[1] != x_shape[1]
            or not weight.shape[0]):
        return None
    if bias is not None and not _planned_array(bias, (weight.shape[0],)):
        return None
    b = _bias(bias, weight.shape[0], layer)
    act = _checks.activation_code(activation, layer)
    threads = _runtime.get_num_threads()
    shape = (x_shape[0], weight.shape[0])
    block = max(16, -(-weight.shape[0] // (4 * threads)))  # as linear() picks it
    x_shape = tuple(x_shape)

    def step(x):
        if not _planned_array(x, x_shape) or _runtime.get_num_threads() != threads:
            return None
        y = np.empty(shape, np.float32)
        with _runtime.kernel_scope(blas=False):
            _linear.linear_rows(x, weight, b, y, block, act)
        return y
    return step


_IR = "inverted_residual:bound"


def planned_inverted_residual(packed, params, names, x_shape, out_shape):
    """planned_conv's counterpart for an inverted residual block: the block's planned
    call (the cache ``packed`` that inverted_residual filled) as ``step(x, y, residual)
    -> bool``, or None when it has none for x_shape and out_shape or was planned with
    weight objects other than ``params[name]`` for ``names`` (expansion weight and
    bias, depthwise weight and bias, projection weight and bias, each possibly absent).
    The step returns False, doing nothing, when anything differs from what was planned
    (input or residual type, dtype, shape, layout; the weight objects; the thread count);
    y must be a C-contiguous float32 array of out_shape that overlaps neither input."""
    entry = packed.get(_IR) if packed else None
    if entry is None or entry[0][0] != tuple(x_shape) or entry[3] != tuple(out_shape):
        return None
    expand, depthwise, project = entry[1]
    planned = (expand[:2] or (None, None)) + depthwise[:2] + (project[:2] or (None, None))
    if any(params.get(k) is not v for k, v in zip(names, planned)):
        return None
    (x_shape, threads), call, out_shape = entry[0], entry[2], entry[3]
    pairs = tuple(zip(names, planned))
    replayable = getattr(call, "replayable", False)

    def step(x, y, residual):
        if (not _planned_array(x, x_shape) or _runtime.get_num_threads() != threads
                or (residual is not None and not _planned_array(residual, out_shape))):
            return False
        for k, v in pairs:
            if params.get(k) is not v:
                return False
        if not replayable:
            _runtime.unrecordable()
        call(x, y, residual)  # it enters the kernel scope itself
        return True
    _replay_info(step, False, tuple((params, k, v) for k, v in pairs))
    return step


def inverted_residual(x, expand, depthwise, project=None, residual=None, packed=None,
                      layer="inverted_residual", out=None):
    """An inverted residual block's convolutions (MobileNetV2) in one call:

        z = act_e(conv2d(x, w_e, b_e))                                  if expand
        d = act_d(conv2d(z, w_d, b_d, stride, padding, dilation, groups=channels))
        y = act_p(conv2d(d, w_p, b_p) + residual)                       if project

    expand = (w_e, b_e, act_e) with w_e (K, C, 1, 1), or None; or a "head" conv in its
    place, (w_e, b_e, act_e, stride_e, padding_e) with w_e (K, C, R_e, S_e) (a network's
    stem before its first depthwise conv: z = act_e(conv2d(x, w_e, b_e, stride_e,
    padding_e))); depthwise = (w_d, b_d, act_d, stride, padding, dilation) with w_d
    (K, 1, R, S); project = (w_p, b_p, act_p) with w_p (K2, K, 1, 1), or None (then the
    residual, if any, is the depthwise's).  Equal to the separate conv2d calls up to
    float rounding (the same arithmetic where the tensors stay channel-blocked).  When
    the depthwise channels are a multiple of 16 and depthwise_blocked serves it (3x3 or
    5x5, planes of >= 16 pixels) the tensors between the convolutions stay
    channel-blocked (NCHW16c): no transposition between the kernels; a large block with
    a projection streams by rows, its expanded tensor never in memory
    (docs/algorithms.md); otherwise the calls run one after another.  ``packed``: the
    block's cache (the planned call with its packed weights, replanned when any of the
    weight objects changes).
    """
    xa = _checks.as_float32(x, layer, "input")
    key = (xa.shape, _runtime.get_num_threads())
    parts = (expand or (), depthwise, project or ())
    entry = None if packed is None else packed.get(_IR)
    if (entry is not None and entry[0] == key
            and all(len(a) == len(b) and all(u is v for u, v in zip(a, b))
                    for a, b in zip(entry[1], parts))):
        # the same weight objects as when the plan was made (and checked): no checks again
        call, out_shape = entry[2], entry[3]
    else:
        _runtime.unrecordable()  # checks and planning
        _check_inverted_residual(xa, expand, depthwise, project, layer)
        # packed weights live with the plan: new weight objects never meet stale panels
        weights = {}
        call, out_shape = _plan_inverted_residual(xa, expand, depthwise, project, weights, layer)
        if packed is not None and xa is x:
            packed[_IR] = (key, parts, call, out_shape, weights)
    res = _residual(residual, out_shape, layer)
    y = _out(out, out_shape, layer, (xa, res))
    if (out is None or xa is not x or res is not residual
            or not getattr(call, "replayable", False)):
        _runtime.unrecordable()  # new or converted arrays, or a call that is not only launches
    if out_shape[0]:
        call(xa, y, res)  # it enters the kernel scope itself (or conv2d does, per call)
    return _checks.wrap_like(y, x)


def _check_inverted_residual(xa, expand, depthwise, project, layer):
    """inverted_residual's argument checks (a clear error naming the layer)."""
    if xa.ndim != 4:
        raise ValueError(f"{layer}: input must be 4-D (N, C, H, W), got shape {xa.shape}")
    if len(depthwise) != 6:
        raise ValueError(f"{layer}: depthwise must be (weight, bias, activation, stride, "
                         f"padding, dilation), got {len(depthwise)} items")
    wd = _checks.as_float32(depthwise[0], layer, "depthwise weight")
    c = xa.shape[1]
    if expand is not None:
        if len(expand) not in (3, 5):
            raise ValueError(f"{layer}: expand must be (weight, bias, activation) or (weight, "
                             f"bias, activation, stride, padding), got {len(expand)} items")
        we = _checks.as_float32(expand[0], layer, "expand weight")
        if len(expand) == 3 and (we.ndim != 4 or we.shape[1:] != (c, 1, 1)):
            raise ValueError(f"{layer}: expand weight must be (K, {c}, 1, 1), got {we.shape}")
        if len(expand) == 5 and (we.ndim != 4 or we.shape[1] != c):
            raise ValueError(f"{layer}: head conv weight must be (K, {c}, R, S), got {we.shape}")
        c = we.shape[0]
    if wd.ndim != 4 or wd.shape[0] != c or wd.shape[1] != 1:
        raise ValueError(f"{layer}: depthwise weight must be ({c}, 1, R, S) (one filter per "
                         f"channel), got {wd.shape}")
    if project is not None:
        wq = _checks.as_float32(project[0], layer, "project weight")
        if wq.ndim != 4 or wq.shape[1:] != (c, 1, 1):
            raise ValueError(f"{layer}: project weight must be (K2, {c}, 1, 1), got {wq.shape}")


def _inverted_residual_path(dprob, has_expand, project_k, head=False):
    """How inverted_residual runs a block with depthwise problem ``dprob``: "rows"
    (streamed by rows, inverted_residual.py), "blocked" (channel-blocked tensors between
    the kernels), "blocked, nchw project" or "separate" (the conv2d calls; always for a
    head conv that does not stream)."""
    blocked = planner.REGISTRY["depthwise_blocked"]
    usable = dprob.c % 16 == 0 and dprob.n and blocked.serves(dprob) is None
    if usable and project_k and _algorithms.streams_rows(dprob, has_expand):
        return "rows"
    if head:
        return "separate"
    # the projection reads blocks only in whole 32-channel panels: its channel-vectorized
    # tile would leave a ragged panel's lanes idle where the NCHW path's pixel vectors do not
    # (16 or 24 outputs at 56x56: 0.44 against 0.38 ms for the block)
    blocked_project = bool(project_k) and project_k % _algorithms.NR == 0
    if usable and (has_expand or blocked_project):
        return "blocked" if blocked_project or not project_k else "blocked, nchw project"
    return "separate"


def inverted_residual_kernel(x_shape, expand_shape, dw_shape, stride, padding, dilation,
                             project_shape, expand_stride=None, expand_padding=None):
    """What inverted_residual runs for these shapes (weights' shapes; expand_shape /
    project_shape None when absent; expand_stride / expand_padding for a head conv), as
    fc.explain names it: "rows pw>dw>pw" (streamed by rows; "conv>dw>pw" with a head
    conv), "blocked pw>dw>pw" (channel-blocked between the kernels; "dw,pw": the
    projection on its own, in NCHW) or "separate pw,dw,pw" (the conv2d calls)."""
    head = expand_stride is not None
    zshape = x_shape
    if expand_shape is not None:
        e = conv_problem(tuple(x_shape), tuple(expand_shape), expand_stride or 1,
                         expand_padding or 0)
        zshape = (x_shape[0], expand_shape[0], e.oh, e.ow)
    c = zshape[1]
    dprob = conv_problem(zshape, tuple(dw_shape), stride, padding, dilation, c)
    path = _inverted_residual_path(dprob, expand_shape is not None,
                                   None if project_shape is None else project_shape[0], head)
    name, into_dw, into_pw = {"rows": ("rows", ">", ">"), "blocked": ("blocked", ">", ">"),
                              "blocked, nchw project": ("blocked", ">", ","),
                              "separate": ("separate", ",", ",")}[path]
    first = ("conv" if head else "pw") + into_dw if expand_shape is not None else ""
    return name + " " + first + "dw" + (into_pw + "pw" if project_shape is not None else "")


def _plan_inverted_residual(xa, expand, depthwise, project, packed, layer):
    """(call(x, y, residual), output shape) for inverted_residual; ``packed``: a new dict
    that the call's packed weights go into."""
    wd, bd, ad, stride, padding, dilation = depthwise
    n, c, h, w = xa.shape
    probs = {}
    head = expand is not None and len(expand) == 5
    if expand is not None:
        we = _checks.as_float32(expand[0], layer, "expand weight")
        probs["e"] = conv_problem(xa.shape, we.shape, *(expand[3:] if head else (1, 0)), 1, 1,
                                  layer)
        c, h, w = we.shape[0], probs["e"].oh, probs["e"].ow
    wd = _checks.as_float32(wd, layer, "depthwise weight")
    dprob = conv_problem((n, c, h, w), wd.shape, stride, padding, dilation, c, layer)
    out_shape = (n, c, dprob.oh, dprob.ow)
    if project is not None:
        wq = _checks.as_float32(project[0], layer, "project weight")
        probs["p"] = conv_problem(out_shape, wq.shape, 1, 0, 1, 1, layer)
        out_shape = (n, wq.shape[0], dprob.oh, dprob.ow)
    path = _inverted_residual_path(dprob, expand is not None,
                                   None if project is None else out_shape[1], head)
    blocked_project = project is not None and path != "blocked, nchw project"
    if path != "separate":
        def part(spec, prob):
            w = _checks.as_float32(spec[0], layer, "weight")
            return (prob, w, _bias(spec[1], prob.k, layer),
                    _checks.activation_code(spec[2], layer))
        cache = packed
        inner = _algorithms.bind_inverted_residual(
            None if expand is None else part(expand, probs["e"]),
            (dprob, wd, _bias(bd, c, layer), _checks.activation_code(ad, layer)),
            part(project, probs["p"]) if blocked_project else None, cache, rows=path == "rows")
        if project is None or blocked_project:
            return inner, out_shape
        mid_shape = (n, c, dprob.oh, dprob.ow)
        pcache = cache.setdefault("project", {})

        def call(x, y, res):
            d = _workspace.get("ir_depthwise_nchw", mid_shape)
            inner(x, d, None)
            conv2d(d, project[0], project[1], activation=project[2], residual=res, out=y,
                   layer=layer, packed=pcache)
        return call, out_shape
    # the separate calls, each with its own cache
    caches = packed

    def call(x, y, res):
        z = x
        if expand is not None:
            z = conv2d(z, expand[0], expand[1], *(expand[3:] if head else ()),
                       activation=expand[2], layer=layer, packed=caches.setdefault("e", {}))
        last = project is None
        z = conv2d(z, wd, bd, stride, padding, dilation, c, activation=ad, layer=layer,
                   residual=res if last else None, out=y if last else None,
                   packed=caches.setdefault("d", {}))
        if not last:
            conv2d(z, project[0], project[1], activation=project[2], residual=res, out=y,
                   layer=layer, packed=caches.setdefault("p", {}))
    return call, out_shape


def _conv2d_gpu(x, weight, bias, stride, padding, dilation, groups, activation, residual, packed,
                layer, only_if_faster, algo="auto"):
    """conv2d on the CUDA backend; None when ``only_if_faster`` and the CPU is modelled faster."""
    from . import _cuda
    x_orig = x
    if _cuda.is_device_array(x):
        x_shape = _cuda.device_shape_dtype(x, layer)
    else:
        x = _checks.as_float32(x, layer, "input")
        x_shape = x.shape
    if len(x_shape) != 4:
        raise ValueError(f"{layer}: input must be 4-D (N, C, H, W) on the GPU, got shape {x_shape}")
    w = _checks.as_float32(weight, layer, "weight")
    prob = conv_problem(x_shape, w.shape, stride, padding, dilation, groups, layer)
    if only_if_faster:
        cpu = planner.plan(prob, "auto", layer, packed is not None)
        if not _cuda.worth_offloading(prob, planner.modelled(cpu.algorithm, prob,
                                                             _runtime.get_num_threads(),
                                                             packed is not None)):
            return None
    b = _bias(bias, prob.k, layer)
    act = _checks.activation_code(activation, layer)
    res = None
    if residual is not None:
        rshape = _cuda.device_shape_dtype(residual, layer, "residual") \
            if _cuda.is_device_array(residual) else np.shape(residual)
        if tuple(rshape) != (prob.n, prob.k, prob.oh, prob.ow):
            raise ValueError(f"{layer}: residual must have the output's shape "
                             f"{(prob.n, prob.k, prob.oh, prob.ow)}, got {tuple(rshape)}")
        res = residual if _cuda.is_device_array(residual) else \
            _checks.as_float32(residual, layer, "residual")
    if prob.n == 0:
        y = np.zeros((0, prob.k, prob.oh, prob.ow), np.float32)
        return _checks.wrap_like(y, x_orig) if not _cuda.is_device_array(x_orig) else \
            _cuda.wrap(_cuda.to_device(y), x_orig)
    y = _cuda.conv2d(prob, x, w, b, act, res, packed, algo if isinstance(algo, str) else "auto")
    if _cuda.is_device_array(x_orig):
        return _cuda.wrap(y, x_orig)
    return _checks.wrap_like(y.copy_to_host(), x_orig)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, activation=None, packed=None, layer="conv_transpose2d", out=None):
    """Transposed convolution, torch.nn.functional.conv_transpose2d semantics, epilogue fused.

    weight: (in_channels, out_channels/groups, kH, kW); padding: int, pair or
    (top, bottom, left, right), cropped from the full output; output_padding adds
    rows/columns at the bottom/right (each < stride or dilation, as in PyTorch).
    """
    x_in = x
    xa, unbatched = _unbatched(_checks.as_float32(x, layer, "input"), layer)
    w = _checks.as_float32(weight, layer, "weight")
    if w.ndim != 4:
        raise ValueError(f"{layer}: weight must be 4-D (in_channels, out_channels/groups, kH, kW), "
                         f"got shape {tuple(w.shape)}")
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{layer}: groups must be a positive int, got {groups!r}")
    n, c, h, wd = xa.shape
    if w.shape[0] != c or c % groups:
        raise ValueError(f"{layer}: expected input with {w.shape[0]} channels (weight "
                         f"{tuple(w.shape)}) divisible by groups={groups}, got {c} channels "
                         f"(input shape {tuple(xa.shape)})")
    kg, r, s_ = (int(d) for d in w.shape[1:])
    if min(kg, r, s_) < 1:
        raise ValueError(f"{layer}: weight dimensions must be >= 1, got shape {tuple(w.shape)}")
    k = kg * groups
    st = _checks.pair(stride, layer, "stride", minimum=1)
    dil = _checks.pair(dilation, layer, "dilation", minimum=1)
    op = _checks.pair(output_padding, layer, "output_padding", minimum=0)
    if op[0] >= max(st[0], dil[0]) or op[1] >= max(st[1], dil[1]):
        raise ValueError(f"{layer}: output_padding {op} must be smaller than stride {st} "
                         f"or dilation {dil}")
    if isinstance(padding, str):
        raise ValueError(f"{layer}: padding must be an int, a pair or (top, bottom, left, right), "
                         f"got {padding!r}")
    pads = _checks.padding4(padding, (r, s_), dil, st, layer)
    oh, ow = _convt_size(h, wd, r, s_, st, pads, dil, op)
    if oh < 1 or ow < 1:
        raise ValueError(f"{layer}: padding {pads} crops the whole {oh + pads[0] + pads[1]}x"
                         f"{ow + pads[2] + pads[3]} output away")
    b = _bias(bias, k, layer)
    act = _checks.activation_code(activation, layer)
    shape = (n, k, oh, ow)
    if out is not None:
        y = _out(out, shape[1:] if unbatched else shape, layer, (xa,))
        y = y[None] if unbatched else y
    else:
        y = np.empty(shape, np.float32)
    phases = _convt_phases(h, wd, kg, r, s_, st, pads, dil, oh, ow)
    if phases is not None and n and h and wd:
        _conv_transpose_phases(xa, w, b, y, st, groups, activation, phases, packed, layer)
        return _checks.wrap_like(y[0] if unbatched else y, x_in)
    wt = None if packed is None else packed.get("convt")
    if wt is None:
        # (C, Kg, R, S) -> (G, Kg*R*S, Cg): the A operand of each group's SGEMM
        wt = np.ascontiguousarray(w.reshape(groups, c // groups, kg * r * s_).transpose(0, 2, 1))
        if packed is not None:
            packed["convt"] = wt
    if n and h and wd:
        threads = _runtime.get_num_threads()
        rs_hw = r * s_ * h * wd
        kblock = max(1, min(kg, (2 << 20) // (4 * rs_hw), -(-kg * n * groups // (2 * threads))))
        nthreads = _runtime.max_threads()
        cols = _workspace.per_thread("convt_cols", nthreads, (kblock * rs_hw,))
        scal = _workspace.per_thread("gemm_scalars", nthreads, (2,))
        with _runtime.kernel_scope(blas=True):
            _convt.conv_transpose2d(xa.reshape(n, c, h * wd), wt, b, y, h, wd, r, s_, st[0], st[1],
                                    pads[0], pads[2], dil[0], dil[1], kblock, act, cols, scal)
    elif y.size:
        y[...] = 0.0
        y += b.reshape(1, -1, 1, 1)
        y[...] = _ACT_NUMPY[act](y)
    return _checks.wrap_like(y[0] if unbatched else y, x_in)


# transposed convs with fewer output channels a group than this keep the col2im kernel:
# the phases' convolutions then fill few lanes of the micro-kernels' 8- and 32-channel
# panels (DCGAN's last layer, 64->3 4x4/2 @64: 1.47 ms as phases, 0.49 on col2im; with 64
# or more channels the phases ran 1.1-6.7x faster, docs/performance.md)
CONVT_PHASES_MIN_CHANNELS = 8


def _convt_size(h, w, r, s, stride, pads, dilation, output_padding):
    """(OH, OW) of a transposed convolution (before the check that they are >= 1)."""
    return tuple((size - 1) * st - p0 - p1 + d * (k - 1) + op + 1
                 for size, k, st, p0, p1, d, op in
                 ((h, r, stride[0], pads[0], pads[1], dilation[0], output_padding[0]),
                  (w, s, stride[1], pads[2], pads[3], dilation[1], output_padding[1])))


def _convt_phases(h, w, kg, r, s, stride, pads, dilation, oh, ow):
    """A transposed conv (dilation 1) as stride-1 convolutions, one per output phase (the
    adjoint of a strided conv splits by output phase: kernels/cpu/phases.py).  Per axis,
    for output phase a (outputs a, a + st, ...) the taps phi, phi + st, ... < k with
    phi = (a + pad) % st, T of them, flipped, over the input padded by lo = T - 1 -
    (a + pad) // st before and hi after, so that every phase gives the same number of
    outputs, n_out >= ceil(out / st).  Returns ((rows, cols), (HS, WS)), rows and cols
    tuples of (phi, T, lo, hi), or None where a phase has no taps (a kernel smaller than
    its stride) or would need negative padding, and for dilated transposed convs or
    fewer than CONVT_PHASES_MIN_CHANNELS output channels a group (kg): then the col2im
    kernel runs."""
    if dilation != (1, 1) or kg < CONVT_PHASES_MIN_CHANNELS:
        return None
    axes, sizes = [], []
    for size, k, st, pad, out in ((h, r, stride[0], pads[0], oh), (w, s, stride[1], pads[2], ow)):
        per = []
        for a in range(st):
            phi, taps = (a + pad) % st, -(-(k - (a + pad) % st) // st)
            lo = taps - 1 - (a + pad) // st
            if taps <= 0 or lo < 0:
                return None
            per.append((phi, taps, lo))
        n_out = max([-(-out // st)] + [size + lo - taps + 1 for _, taps, lo in per])
        axes.append(tuple((phi, taps, lo, n_out + taps - 1 - size - lo)
                          for phi, taps, lo in per))
        sizes.append(n_out)
    return tuple(axes), tuple(sizes)


def conv_transpose_kernel(x_shape, w_shape, stride, pads, output_padding, groups, dilation):
    """What conv_transpose2d runs for these shapes: "phases SHxSW" (one conv2d per output
    phase, _convt_phases) or "gemm+col2im"."""
    st, dil, op = (tuple(int(v) for v in _checks.pair(a, "conv_transpose2d", name))
                   for a, name in ((stride, "stride"), (dilation, "dilation"),
                                   (output_padding, "output_padding")))
    h, w = x_shape[-2:]
    r, s = w_shape[2:]
    oh, ow = _convt_size(h, w, r, s, st, pads, dil, op)
    if _convt_phases(h, w, w_shape[1], r, s, st, pads, dil, oh, ow) is not None:
        return f"phases {st[0]}x{st[1]}"
    return "gemm+col2im"


def _conv_transpose_phases(x, w, b, y, stride, groups, activation, phases, packed, layer):
    """y = act(conv_transpose(x, w) + b) as one conv2d per output phase (_convt_phases),
    each on the family the planner picks for it, into a workspace of phase outputs that
    phases.merge_phases interleaves into y with the activation; at stride 1 one conv2d
    straight into y where the output is the conv's whole.  The sub-kernels (K, Cg, T, T')
    are cut from w once per geometry (the pads depend on the input's size), into
    ``packed``."""
    (rows, cols), (hs, ws) = phases
    sh, sw = stride
    n, k = y.shape[0], y.shape[1]
    cache = {} if packed is None else packed.setdefault("convt_phases", {})
    subs = cache.get(phases)
    if subs is None:
        c, kg, r, s_ = w.shape
        wg = w.reshape(groups, c // groups, kg, r, s_)
        subs = {}
        for a, (pa, ta, la, ha) in enumerate(rows):
            for bb, (pb, tb, lb, hb) in enumerate(cols):
                v = wg[:, :, :, pa::sh, pb::sw][:, :, :, :ta, :tb][..., ::-1, ::-1]
                v = np.ascontiguousarray(v.transpose(0, 2, 1, 3, 4)).reshape(k, c // groups,
                                                                              ta, tb)
                subs[a, bb] = (v, (la, ha, lb, hb), {})
        cache[phases] = subs
    if sh == sw == 1 and (hs, ws) == y.shape[2:]:  # (padding that crops more at the end
        v, pads, sub = subs[0, 0]                   # than a conv's goes through the merge)
        conv2d(x, v, b, 1, pads, 1, groups, activation, packed=sub, layer=layer, out=y)
        return
    ys = _workspace.get("convt_phase_outputs", (sh * sw * n, k, hs, ws))
    for (a, bb), (v, pads, sub) in subs.items():
        i = (a * sw + bb) * n
        conv2d(x, v, b, 1, pads, 1, groups, packed=sub, layer=layer, out=ys[i:i + n])
    with _runtime.kernel_scope(blas=False):
        _phases.merge_phases(ys, y, sh, sw, _checks.ACTIVATIONS[activation], _NO_RES, False)


_NO_RES = np.zeros((1, 1, 1, 1), np.float32)
_ACT_NUMPY = {0: lambda v: v, 1: lambda v: np.maximum(v, 0), 2: lambda v: np.clip(v, 0, 6),
              3: lambda v: v * np.clip(v + 3, 0, 6) / 6}


LINEAR_ROWS_MAX = 8  # input rows up to which linear_rows (a dot per weight row) runs


def linear(x, weight, bias=None, activation=None, layer="linear", out=None, backend=None,
           packed=None):
    """y = x @ weight.T + bias over the last axis (any leading axes), activation fused."""
    if backend is not None or _backend.may_use_gpu(x):
        if _backend.choose(backend, x, layer) == "cuda":
            return _linear_gpu(x, weight, bias, activation, layer, packed)
    x_in = x
    xa = _checks.as_float32(x, layer, "input")
    w = _checks.as_float32(weight, layer, "weight", ndim=2)
    if xa.ndim < 1:
        raise ValueError(f"{layer}: input must have at least 1 dimension, got a scalar")
    if xa.shape[-1] != w.shape[1]:
        raise ValueError(f"{layer}: expected input with {w.shape[1]} features in the last "
                         f"dimension, got shape {tuple(xa.shape)}")
    b = _bias(bias, w.shape[0], layer)
    act = _checks.activation_code(activation, layer)
    lead = xa.shape[:-1]
    x2 = xa.reshape(-1, w.shape[1])
    n, f_out = x2.shape[0], w.shape[0]
    y = _out(out, lead + (f_out,), layer, (xa,)).reshape(n, f_out)
    if n and f_out:
        threads = _runtime.get_num_threads()
        if n <= LINEAR_ROWS_MAX:
            with _runtime.kernel_scope(blas=False):
                _linear.linear_rows(np.ascontiguousarray(x2), np.ascontiguousarray(w), b, y,
                                    max(16, -(-f_out // (4 * threads))),
                                    act)
        else:
            oblock = max(16, -(-f_out // threads))
            yt = _workspace.get("linear_yt", (f_out, n))
            with _runtime.kernel_scope():
                _linear.linear(x2, w, b, y, yt, oblock, act)
    return _checks.wrap_like(y.reshape(lead + (f_out,)), x_in)


def _linear_gpu(x, weight, bias, activation, layer, packed):
    from . import _cuda
    w = _checks.as_float32(weight, layer, "weight", ndim=2)
    device = _cuda.is_device_array(x)
    shape = _cuda.device_shape_dtype(x, layer) if device else np.shape(x)
    if len(shape) < 1 or shape[-1] != w.shape[1]:
        raise ValueError(f"{layer}: expected input with {w.shape[1]} features in the last "
                         f"dimension, got shape {tuple(shape)}")
    b = _bias(bias, w.shape[0], layer)
    act = _checks.activation_code(activation, layer)
    rows = int(np.prod(shape[:-1]))
    xs = _cuda.to_device(x if device else _checks.as_float32(x, layer, "input"))
    y = _cuda.linear(xs.reshape(rows, w.shape[1]), w, b, act, packed)
    y = y.reshape(tuple(shape[:-1]) + (w.shape[0],))
    return _cuda.wrap(y, x) if device else _checks.wrap_like(y.copy_to_host(), x)


def _pool_gpu(x, kind, out_hw, layer, *args):
    from . import _cuda
    device = _cuda.is_device_array(x)
    shape = _cuda.device_shape_dtype(x, layer) if device else np.shape(x)
    if len(shape) != 4:
        raise ValueError(f"{layer}: input must be 4-D (N, C, H, W) on the GPU, got {shape}")
    xd = x if device else _cuda.to_device(_checks.as_float32(x, layer, "input"))
    y = _cuda.pool(kind, xd, tuple(shape[:2]) + tuple(out_hw), *args)
    return _cuda.wrap(y, x) if device else _checks.wrap_like(y.copy_to_host(), x)


def _pool_out(size, k, s, p, d, ceil_mode):
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _pool_geometry(xa, kernel_size, stride, padding, dilation, ceil_mode, layer):
    k = _checks.pair(kernel_size, layer, "kernel_size", minimum=1)
    st = k if stride is None or stride == () or stride == [] else \
        _checks.pair(stride, layer, "stride", minimum=1)
    pad = _checks.pair(padding, layer, "padding", minimum=0)
    dil = _checks.pair(dilation, layer, "dilation", minimum=1)
    if pad[0] > k[0] // 2 or pad[1] > k[1] // 2:
        raise ValueError(f"{layer}: padding must be at most half the kernel size, "
                         f"got padding={pad} for kernel_size={k}")
    h, w = xa.shape[2], xa.shape[3]
    oh = _pool_out(h, k[0], st[0], pad[0], dil[0], ceil_mode)
    ow = _pool_out(w, k[1], st[1], pad[1], dil[1], ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError(f"{layer}: kernel {k} (dilation {dil}) is larger than the padded "
                         f"input {h + 2 * pad[0]}x{w + 2 * pad[1]}")
    return k, st, pad, dil, oh, ow


class _ShapeOnly:
    """What _pool_geometry reads of an array: its shape (device arrays stay on the device)."""

    def __init__(self, x, layer):
        from . import _cuda
        self.shape = _cuda.device_shape_dtype(x, layer) if _cuda.is_device_array(x) else \
            np.shape(x)


def _gpu_pool(x, backend, layer):
    """Pools run on the GPU for device arrays or backend='cuda' (never offloaded by 'auto':
    a pool moves as many bytes as the transfer would)."""
    if backend is None and _backend._backend == "cpu":
        return False
    from . import _cuda
    if backend is None and _backend._backend == "auto" and not _cuda.is_device_array(x):
        return False
    return _backend.choose(backend, x, "pool") == "cuda" and (
        _cuda.is_device_array(x) or backend == "cuda" or _backend._backend == "cuda")


def _pool_out_array(out, xa, hw, unbatched, layer):
    shape = xa.shape[:2] + tuple(hw)
    if out is None:
        return np.empty(shape, np.float32)
    y = _out(out, shape[1:] if unbatched else shape, layer, (xa,))
    return y[None] if unbatched else y


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               layer="max_pool2d", out=None, backend=None):
    """Max pooling, torch.nn.functional.max_pool2d semantics (NaN propagates).  A uint8 or
    int8 array (a quantized model's tensor) is pooled in its type."""
    if _gpu_pool(x, backend, layer):
        k, st, pad, dil, oh, ow = _pool_geometry(_ShapeOnly(x, layer), kernel_size, stride,
                                                 padding, dilation, ceil_mode, layer)
        return _pool_gpu(x, "max_pool2d", (oh, ow), layer, k[0], k[1], st[0], st[1],
                         pad[0], pad[1], dil[0], dil[1])
    if isinstance(x, np.ndarray) and x.dtype in (np.uint8, np.int8):
        return _max_pool2d_int(x, kernel_size, stride, padding, dilation, ceil_mode, layer, out)
    x_in = x
    xa, unbatched = _unbatched(_checks.as_float32(x, layer, "input"), layer)
    k, st, pad, dil, oh, ow = _pool_geometry(xa, kernel_size, stride, padding, dilation,
                                             ceil_mode, layer)
    y = _pool_out_array(out, xa, (oh, ow), unbatched, layer)
    if y.size:
        with _runtime.kernel_scope(blas=False):
            width = max(xa.shape[3] + 2 * pad[1], (ow - 1) * st[1] + (k[1] - 1) * dil[1] + 1,
                        2 * ow + 2)
            row = _workspace.per_thread("pool_rows", _runtime.max_threads(),
                                        (2, width + width % 2))
            _pooling.max_pool2d(xa, y, k[0], k[1], st[0], st[1], pad[0], pad[1], dil[0], dil[1],
                                row)
    return _checks.wrap_like(y[0] if unbatched else y, x_in)


def _max_pool2d_int(x, kernel_size, stride, padding, dilation, ceil_mode, layer, out):
    """max_pool2d of a uint8 / int8 array (a quantized model's tensor), in its type."""
    xa, unbatched = _unbatched(np.ascontiguousarray(x), layer)
    k, st, pad, dil, oh, ow = _pool_geometry(xa, kernel_size, stride, padding, dilation,
                                             ceil_mode, layer)
    shape = xa.shape[:2] + (oh, ow)
    if out is None:
        y = np.empty(shape, xa.dtype)
    else:
        want = shape[1:] if unbatched else shape
        if not (isinstance(out, np.ndarray) and out.dtype == xa.dtype and out.shape == want
                and out.flags.c_contiguous and out.flags.writeable) or \
                np.may_share_memory(out, xa):
            raise ValueError(f"{layer}: out must be a writeable C-contiguous {xa.dtype} array "
                             f"of shape {want} apart from the input, got "
                             f"{type(out).__name__} {getattr(out, 'dtype', '')} "
                             f"{tuple(getattr(out, 'shape', ()))}")
        y = out[None] if unbatched else out
    if y.size:
        with _runtime.kernel_scope(blas=False):
            _pooling.max_pool2d_int(xa, y, k[0], k[1], st[0], st[1], pad[0], pad[1], dil[0],
                                    dil[1], xa.dtype.type(np.iinfo(xa.dtype).min))
    return y[0] if unbatched else y


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None, layer="avg_pool2d", out=None,
               backend=None):
    """Average pooling, torch.nn.functional.avg_pool2d semantics."""
    if _gpu_pool(x, backend, layer):
        k, st, pad, _, oh, ow = _pool_geometry(_ShapeOnly(x, layer), kernel_size, stride,
                                               padding, 1, ceil_mode, layer)
        return _pool_gpu(x, "avg_pool2d", (oh, ow), layer, k[0], k[1], st[0], st[1],
                         pad[0], pad[1], bool(count_include_pad), int(divisor_override or 0))
    x_in = x
    xa, unbatched = _unbatched(_checks.as_float32(x, layer, "input"), layer)
    k, st, pad, _, oh, ow = _pool_geometry(xa, kernel_size, stride, padding, 1, ceil_mode, layer)
    if divisor_override is not None and (not isinstance(divisor_override, (int, np.integer))
                                         or divisor_override < 1):
        raise ValueError(f"{layer}: divisor_override must be a positive int or None, "
                         f"got {divisor_override!r}")
    y = _pool_out_array(out, xa, (oh, ow), unbatched, layer)
    if y.size:
        with _runtime.kernel_scope(blas=False):
            row = _workspace.per_thread("pool_row", _runtime.max_threads(), (
                max(xa.shape[3] + 2 * pad[1], (ow - 1) * st[1] + k[1]),))
            _pooling.avg_pool2d(xa, y, k[0], k[1], st[0], st[1], pad[0], pad[1],
                                bool(count_include_pad), int(divisor_override or 0), row)
    return _checks.wrap_like(y[0] if unbatched else y, x_in)


def adaptive_avg_pool2d(x, output_size, layer="adaptive_avg_pool2d", out=None, backend=None):
    """Adaptive average pooling to ``output_size`` (int, pair; None keeps that side)."""
    if _gpu_pool(x, backend, layer):
        sx = _ShapeOnly(x, layer)
        h, w = sx.shape[2], sx.shape[3]
        if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
            osz = (h if output_size[0] is None else output_size[0],
                   w if output_size[1] is None else output_size[1])
        else:
            osz = _checks.pair(output_size, layer, "output_size", minimum=1)
        return _pool_gpu(x, "adaptive_avg_pool2d", osz, layer)
    x_in = x
    xa, unbatched = _unbatched(_checks.as_float32(x, layer, "input"), layer)
    h, w = xa.shape[2], xa.shape[3]
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        oh = h if output_size[0] is None else output_size[0]
        ow = w if output_size[1] is None else output_size[1]
        osz = _checks.pair((oh, ow), layer, "output_size", minimum=1)
    else:
        osz = _checks.pair(output_size, layer, "output_size", minimum=1)
    if (h == 0 or w == 0) and xa.shape[0] * xa.shape[1]:
        raise ValueError(f"{layer}: input spatial size must be non-zero, got {h}x{w}")
    y = _pool_out_array(out, xa, osz, unbatched, layer)
    if y.size:
        with _runtime.kernel_scope(blas=False):
            if osz == (1, 1) and xa.flags.c_contiguous and y.flags.c_contiguous:
                _pooling.global_avg_pool2d(xa.reshape(-1, h * w), y.reshape(-1))
            else:
                _pooling.adaptive_avg_pool2d(xa, y)
    return _checks.wrap_like(y[0] if unbatched else y, x_in)


def fold_batchnorm(weight, bias, gamma, beta, mean, var, eps=1e-5, layer="fold_batchnorm"):
    """Fold inference BatchNorm into the preceding convolution's weight and bias.

    BN(conv(x)) = gamma * (conv(x) + b - mean) / sqrt(var + eps) + beta
                = conv'(x) with w' = w * s[k], b' = (b - mean) * s + beta, s = gamma / sqrt(var + eps).
    Computed in float64, returned as new float32 arrays (the inputs are not changed).
    """
    w = _checks.to_numpy(weight, layer, "weight")
    k = w.shape[0]
    vecs = {}
    for name, v in (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var)):
        if v is None and name in ("gamma", "beta"):
            v = np.ones(k) if name == "gamma" else np.zeros(k)
        a = np.asarray(_checks.to_numpy(v, layer, name), np.float64)
        if a.shape != (k,):
            raise ValueError(f"{layer}: {name} must have shape ({k},) to match weight "
                             f"{tuple(w.shape)}, got {tuple(a.shape)}")
        vecs[name] = a
    b = np.zeros(k) if bias is None else np.asarray(_checks.to_numpy(bias, layer, "bias"), np.float64)
    if b.shape != (k,):
        raise ValueError(f"{layer}: bias must have shape ({k},), got {tuple(b.shape)}")
    scale = vecs["gamma"] / np.sqrt(vecs["var"] + eps)
    w2 = (np.asarray(w, np.float64) * scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
    b2 = ((b - vecs["mean"]) * scale + vecs["beta"]).astype(np.float32)
    return w2, b2


def batch_norm(x, mean, var, gamma=None, beta=None, eps=1e-5, layer="batch_norm"):
    """Inference batch norm over axis 1 (a per-channel affine map)."""
    x_in = x
    xa = _checks.as_float32(x, layer, "input")
    if xa.ndim < 2:
        raise ValueError(f"{layer}: input must be at least 2-D (N, C, ...), got shape {xa.shape}")
    c = xa.shape[1]
    scale, shift = fold_batchnorm(np.ones((c, 1), np.float32), None, gamma, beta, mean, var, eps,
                                  layer=layer)
    shape = (1, c) + (1,) * (xa.ndim - 2)
    y = xa * scale.reshape(shape) + shift.reshape(shape)
    return _checks.wrap_like(y.astype(np.float32, copy=False), x_in)


def explain(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1, algo="auto",
            prepacked=True):
    """What a layer (prepacked=True) or ``conv2d`` without a weight cache would run, and why."""
    prob = conv_problem(tuple(x_shape), tuple(w_shape), stride, padding, dilation, groups)
    return planner.explain(prob, algo, prepacked)
