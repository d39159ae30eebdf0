"""Layer fusion for inference: Conv2d -> BatchNorm2d -> ReLU/ReLU6/Hardswish as one kernel call.

BatchNorm is folded into the convolution's weight and bias (``fold_batchnorm``,
in float64), the activation and an optional residual add run in the kernel's
epilogue, so a ResNet block's ``relu(bn2(conv2(x)) + identity)`` is one pass
over the output instead of four.  Folded weights are cached and re-folded when
any parameter or buffer of the model is replaced (attribute assignment or
``load_state_dict``); arrays edited in place are not seen -- call ``fuse()``
again after doing that.  Transformed weights (Winograd's U) are cached beside
the folded ones and dropped with them.

An inverted residual block's expansion (a fused 1x1 conv, stride 1), its depthwise
conv and its projection 1x1 (each a fused conv, or a Sequential that fuses into
exactly one) run as one ``functional.inverted_residual`` call: the tensors between
them stay channel-blocked, with no transposition.  ``head_block`` puts a network's
stem in front of its first such block (no expansion) as the block's head conv.
"""
import numpy as np

from . import functional as F
from . import nn
from ._algorithms import DepthwiseBlocked

ACTIVATION_OF = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardswish: "hardswish"}


def foldable(conv, bn):
    """Whether ``bn`` directly after ``conv`` can be folded into it at inference."""
    return (isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
            and bn.num_features == conv.out_channels)


class FusedConv:
    """conv [-> bn] [-> activation], with an optional residual added before the activation."""

    def __init__(self, conv, bn=None, activation=None):
        if activation is not None and conv.activation is not None:
            raise ValueError(f"{conv.layer_name}: already has activation {conv.activation!r}")
        self.conv = conv
        self.bn = bn
        self.activation = activation or conv.activation
        self._cache = None

    def folded(self):
        """(weight, bias) with the BatchNorm folded in, re-folded after parameter changes."""
        key = nn._version[0]
        if self._cache is None or self._cache[0] != key:
            w, b = self.conv.weight, self.conv.bias
            if self.bn is not None:
                bn = self.bn
                w, b = F.fold_batchnorm(w, b, bn.weight, bn.bias, bn.running_mean,
                                        bn.running_var, bn.eps)
            self._cache = (key, w, b, {})
        return self._cache[1], self._cache[2]

    def __call__(self, x, residual=None, out=None):
        w, b = self.folded()
        return self.conv.conv(x, w, b, self.activation, residual, packed=self._cache[3],
                              out=out)

    def out_shape(self, x_shape):
        """The output shape for a 4-D input of ``x_shape`` (cached per input shape)."""
        shapes = self.__dict__.setdefault("_out_shapes", {})
        shape = shapes.get(x_shape)
        if shape is None:
            c = self.conv
            prob = F.conv_problem(x_shape, (c.out_channels, c.in_channels // c.groups)
                                  + tuple(c.kernel_size), c.stride, c.padding, c.dilation,
                                  c.groups, c.layer_name)
            shape = shapes[x_shape] = (prob.n, prob.k, prob.oh, prob.ow)
        return shape

    def describe(self):
        parts = [type(self.conv).__name__]
        if self.bn is not None:
            parts.append("BatchNorm2d")
        if self.activation:
            parts.append(self.activation)
        return "+".join(parts)

    def __repr__(self):
        return f"FusedConv({self.conv.layer_name}: {self.describe()})"


def _single_fused(step):
    """The one FusedConv a step runs (itself, or a fused Sequential of one), or None."""
    if isinstance(step, FusedConv):
        return step
    if isinstance(step, nn.Sequential) and step._fuse and not step.training:
        inner = step.fused_steps()
        if len(inner) == 1 and isinstance(inner[0], FusedConv):
            return inner[0]
    return None


def _pointwise(f):
    c = f.conv
    return c.kernel_size == (1, 1) and c.stride == (1, 1) and c.padding in ((0, 0), "valid") \
        and c.groups == 1 and c.padding_mode == "zeros" and c.algo == "auto"


def _depthwise(f):
    c = f.conv
    return c.groups == c.in_channels == c.out_channels and c.out_channels % 16 == 0 \
        and tuple(c.kernel_size) in DepthwiseBlocked.SIZES and c.padding_mode == "zeros" \
        and c.algo == "auto" and not isinstance(c.padding, str)


class FusedInvertedResidual:
    """Consecutive steps -- an expansion 1x1 (optional), a depthwise conv and a projection
    1x1 (optional) -- as one functional.inverted_residual call."""

    def __init__(self, steps, expand, dw, project, live=None):
        self.steps = steps  # the steps as fuse_modules found them
        self.fused = (expand, dw, project)
        self._packed = (None, {})
        self._step = None  # (the cache it was made from, functional.planned_inverted_residual)
        # the fused convs the steps stand for now (a change since fusing: step by step)
        self._live = live or (lambda: [_single_fused(s) for s in self.steps])
        self._layer = "+".join(f.conv.layer_name for f in self.fused if f is not None)

    def __call__(self, x, residual=None, out=None):
        """The block's output: written into ``out`` (an array of its shape) when given and
        the block runs as one call, else a new array."""
        if getattr(x, "ndim", 0) != 4 or self._live() != [f for f in self.fused if f is not None]:
            for s in self.steps[:-1]:  # changed since fusing, or unbatched: step by step
                x = s(x)
            return self.steps[-1](x) if residual is None else self.steps[-1](x, residual=residual)
        key = nn._version[0]
        if self._packed[0] != key:
            self._packed = (key, {}, self._parts())
        if out is not None and type(out) is np.ndarray:
            # the planned call straight into the caller's buffer (a model's own), without
            # the argument handling functional.inverted_residual repeats; the weights are
            # this version's own parts, so no identity checks
            cache, step = self._packed[1], self._step
            if step is None or step[0] is not cache:
                step = self._step = (cache, F.planned_inverted_residual(
                    cache, {}, (), np.shape(x), out.shape), out.shape)
            if step[1] is not None and out.shape == step[2] and out.dtype == np.float32 \
                    and out.flags.c_contiguous and out.flags.writeable \
                    and type(x) is np.ndarray and not np.may_share_memory(out, x) \
                    and (residual is None or (type(residual) is np.ndarray
                                              and not np.may_share_memory(out, residual))):
                if step[1](x, out, residual):
                    return out
            self._step = None  # not planned yet, or replanned since: made again next call
        return F.inverted_residual(x, *self._packed[2], residual=residual,
                                   packed=self._packed[1], layer=self._layer, out=out)

    def out_shape(self, x_shape):
        """The output shape for an input of ``x_shape`` once a call has planned it, else
        None."""
        entry = self._packed[1].get(F._IR) if self._packed[0] == nn._version[0] else None
        return None if entry is None or entry[0][0] != tuple(x_shape) else entry[3]

    def _parts(self):
        expand, dw, project = self.fused
        part = lambda f: None if f is None else (*f.folded(), f.activation)  # noqa: E731
        w, b = dw.folded()
        c = dw.conv
        e = part(expand)
        if expand is not None and not _pointwise(expand):  # a head conv
            e = e + (expand.conv.stride, expand.conv.padding)
        return (e, (w, b, dw.activation, c.stride, c.padding, c.dilation), part(project))

    def describe(self):
        return " > ".join(f.describe() for f in self.fused if f is not None)

    def __repr__(self):
        return f"FusedInvertedResidual({self.describe()})"


def _inverted_residuals(steps):
    """Runs of [expansion 1x1] depthwise [projection 1x1] steps as FusedInvertedResidual
    (a depthwise conv alone stays as it is: functional.inverted_residual runs what it
    cannot keep channel-blocked as the separate calls)."""
    fused = [_single_fused(s) for s in steps]
    out = []
    i = 0
    while i < len(steps):
        a = fused[i]
        b = fused[i + 1] if i + 1 < len(steps) else None
        if a is not None and _depthwise(a):
            e, d = None, i
        elif (a is not None and b is not None and _depthwise(b) and _pointwise(a)
              and a.conv.out_channels == b.conv.in_channels):
            e, d = a, i + 1
        else:
            out.append(steps[i])
            i += 1
            continue
        k = fused[d].conv.out_channels
        q = fused[d + 1] if d + 1 < len(steps) else None
        if q is None or not (_pointwise(q) and q.conv.in_channels == k):
            q = None
        if e is None and q is None:
            out.append(steps[i])
            i += 1
            continue
        end = d + 2 if q is not None else d + 1
        out.append(FusedInvertedResidual(steps[i:end], e, fused[d], q))
        i = end
    return out


HEAD_MAX_CHANNELS = 8


def head_block(first, block):
    """``first`` (a step that fuses into one conv over at most HEAD_MAX_CHANNELS inputs,
    zero padding, dilation 1, groups 1: a network's stem) followed by ``block`` (a module
    whose ``conv`` Sequential fuses into a depthwise conv and a projection, no expansion,
    and that adds no residual) as one FusedInvertedResidual with the stem as its head
    conv, or None."""
    head = _single_fused(first)
    inner = getattr(block, "conv", None)
    if (head is None or not isinstance(inner, nn.Sequential) or not inner._fuse
            or getattr(block, "use_res_connect", True)):
        return None
    c = head.conv
    if not (c.in_channels <= HEAD_MAX_CHANNELS and c.groups == 1 and c.dilation == (1, 1)
            and c.padding_mode == "zeros" and c.algo == "auto" and not isinstance(c.padding, str)):
        return None

    def live():
        steps = inner.fused_steps()
        ir = steps[0] if len(steps) == 1 and isinstance(steps[0], FusedInvertedResidual) else None
        if ir is None or ir.fused[0] is not None or ir._live() != list(ir.fused[1:]):
            return None
        return [_single_fused(first)] + list(ir.fused[1:])

    now = live()
    if now is None or now[2] is None or c.out_channels != now[1].conv.in_channels:
        return None
    return FusedInvertedResidual([first, block], now[0], now[1], now[2], live=live)


def fuse_modules(modules):
    """Steps that compute the same as calling ``modules`` in order, with conv chains fused."""
    steps = []
    i = 0
    mods = list(modules)
    while i < len(mods):
        m = mods[i]
        if isinstance(m, nn.Conv2d):
            j = i + 1
            bn = None
            if j < len(mods) and foldable(m, mods[j]):
                bn = mods[j]
                j += 1
            act = None
            if j < len(mods) and type(mods[j]) in ACTIVATION_OF and m.activation is None:
                act = ACTIVATION_OF[type(mods[j])]
                j += 1
            if j > i + 1:
                steps.append(FusedConv(m, bn, act))
                i = j
                continue
        steps.append(m)
        i += 1
    return _inverted_residuals(steps)
