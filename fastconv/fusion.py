"""Layer fusion for inference: Conv2d -> BatchNorm2d -> ReLU/ReLU6/Hardswish as one kernel call.

BatchNorm is folded into the convolution's weight and bias (``fold_batchnorm``,
in float64), the activation and an optional residual add run in the kernel's
epilogue, so a ResNet block's ``relu(bn2(conv2(x)) + identity)`` is one pass
over the output instead of four.  Folded weights are cached and re-folded when
any parameter or buffer of the model is replaced (attribute assignment or
``load_state_dict``); arrays edited in place are not seen -- call ``fuse()``
again after doing that.  Transformed weights (Winograd's U) are cached beside
the folded ones and dropped with them.
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
    return steps
