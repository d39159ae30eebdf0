"""Layer fusion for inference: Conv2d -> BatchNorm2d -> ReLU/ReLU6/Hardswish as one kernel call.

BatchNorm is folded into the convolution's weight and bias (``fold_batchnorm``,
in float64), the activation and an optional residual add run in the kernel's
epilogue, so a ResNet block's ``relu(bn2(conv2(x)) + identity)`` is one pass
over the output instead of four.  Folded weights are cached and re-folded when
any parameter or buffer of the model is replaced (attribute assignment or
``load_state_dict``); arrays edited in place are not seen -- call ``fuse()``
again after doing that.  Transformed weights (Winograd's U) are cached beside
the folded ones and dropped with them.

An inverted residual block's expansion (a fused 1x1 conv, stride 1) followed by its
depthwise conv (each a fused conv, or a Sequential that fuses into exactly one)
runs as one ``functional.pointwise_depthwise`` call: the 1x1 writes its output
channel-blocked and the depthwise reads it so, with no transposition between them.
"""
from . import functional as F
from . import nn

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

    def __call__(self, x, residual=None):
        w, b = self.folded()
        return self.conv.conv(x, w, b, self.activation, residual, packed=self._cache[3])

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


def _expansion(f):
    c = f.conv
    return (f.bn is not None or c.activation is None) and c.kernel_size == (1, 1) \
        and c.stride == (1, 1) and c.padding in ((0, 0), "valid") and c.groups == 1 \
        and c.padding_mode == "zeros" and c.algo == "auto" and c.out_channels % 16 == 0


def _depthwise_of(f, k):
    c = f.conv
    return c.groups == c.in_channels == c.out_channels == k and c.kernel_size in ((3, 3), (5, 5)) \
        and c.padding_mode == "zeros" and c.algo == "auto" and not isinstance(c.padding, str)


class FusedPointwiseDepthwise:
    """Two steps, an expansion 1x1 and the depthwise conv after it, as one call."""

    def __init__(self, first, second, pw, dw):
        self.first, self.second = first, second  # the steps, as fuse_modules found them
        self.pw, self.dw = pw, dw
        self._packed = (None, {})

    def __call__(self, x, residual=None):
        if (residual is not None or getattr(x, "ndim", 0) != 4
                or _single_fused(self.first) is not self.pw
                or _single_fused(self.second) is not self.dw):
            y = self.first(x)  # changed since fusing, unbatched, or a residual: step by step
            return self.second(y) if residual is None else self.second(y, residual=residual)
        w1, b1 = self.pw.folded()
        w2, b2 = self.dw.folded()
        key = nn._version[0]
        if self._packed[0] != key:
            self._packed = (key, {})
        c = self.dw.conv
        return F.pointwise_depthwise(x, w1, b1, self.pw.activation, w2, b2, c.stride, c.padding,
                                     c.dilation, self.dw.activation, packed=self._packed[1],
                                     layer=f"{self.pw.conv.layer_name}+{c.layer_name}")

    def describe(self):
        return f"{self.pw.describe()} > {self.dw.describe()}"

    def __repr__(self):
        return f"FusedPointwiseDepthwise({self.pw!r}, {self.dw!r})"


def _pair_pointwise_depthwise(steps):
    out = []
    i = 0
    while i < len(steps):
        a = _single_fused(steps[i])
        b = _single_fused(steps[i + 1]) if i + 1 < len(steps) else None
        if a is not None and b is not None and _expansion(a) \
                and _depthwise_of(b, a.conv.out_channels):
            out.append(FusedPointwiseDepthwise(steps[i], steps[i + 1], a, b))
            i += 2
            continue
        out.append(steps[i])
        i += 1
    return out


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
    return _pair_pointwise_depthwise(steps)
