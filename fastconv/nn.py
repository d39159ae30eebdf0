"""torch.nn-shaped layers for inference.

Constructor signatures, defaults, attribute names and ``state_dict()`` keys
follow torch.nn, so a torch model's ``state_dict()`` loads into the fastconv
model of the same structure.  Modules compute in float32 on NCHW arrays
(NumPy or CPU torch tensors; the same type comes back).  There is no autograd:
``train()`` exists for compatibility and changes nothing but the flag.
"""
import math
from collections import OrderedDict

import numpy as np

from . import _checks, _runtime
from . import functional as F

_version = [0]  # bumped whenever a parameter or buffer is replaced: fused forms re-fold
# bumped whenever a module's submodules, flags or other attributes are assigned, and by
# train() and fuse(): a model's planned forward (models.MobileNetV2) is made again
_structure = [0]


def _bump():
    _version[0] += 1


__all__ = ["Module", "Conv2d", "BatchNorm2d", "ReLU", "ReLU6", "Hardswish", "Hardsigmoid",
           "Sigmoid", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Linear", "Flatten",
           "Dropout", "Identity", "Sequential"]


class Module:
    """Base class: parameters, buffers and submodules registered by attribute assignment."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_name", "")
        object.__setattr__(self, "training", False)

    # -- registration -------------------------------------------------------
    def __setattr__(self, name, value):
        if "_modules" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call Module.__init__() before "
                                 "assigning attributes")
        if isinstance(value, Module):
            self._modules[name] = value
            value._set_name(self._child_name(name))
            _structure[0] += 1
        elif name in self._parameters:
            self._parameters[name] = value
            _bump()
        elif name in self._buffers:
            self._buffers[name] = value
            _bump()
        else:
            object.__setattr__(self, name, value)
            _structure[0] += 1

    def __getattr__(self, name):
        for store in ("_parameters", "_buffers", "_modules"):
            d = self.__dict__.get(store)
            if d is not None and name in d:
                return d[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def register_parameter(self, name, value):
        self._parameters[name] = value
        _bump()

    def register_buffer(self, name, value):
        self._buffers[name] = value
        _bump()

    def add_module(self, name, module):
        setattr(self, name, module)

    def _child_name(self, name):
        return f"{self._name}.{name}" if self._name else name

    def _set_name(self, name):
        object.__setattr__(self, "_name", name)
        for child, m in self._modules.items():
            m._set_name(self._child_name(child))

    @property
    def layer_name(self):
        """How errors name this layer: its path in the model and its type."""
        return f"{self._name} ({type(self).__name__})" if self._name else type(self).__name__

    # -- traversal ----------------------------------------------------------
    def children(self):
        return iter(self._modules.values())

    def named_children(self):
        return iter(self._modules.items())

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self, prefix=""):
        for mname, m in self.named_modules(prefix):
            for pname, p in m._parameters.items():
                if p is not None:
                    yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self):
        return (p for _, p in self.named_parameters())

    def eval(self):
        return self.train(False)

    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        _structure[0] += 1
        return self

    # -- state --------------------------------------------------------------
    def state_dict(self):
        """OrderedDict of every parameter and buffer, keyed as torch.nn does."""
        out = OrderedDict()
        for mname, m in self.named_modules():
            pre = f"{mname}." if mname else ""
            for d in (m._parameters, m._buffers):
                for k, v in d.items():
                    if v is not None:
                        out[pre + k] = v
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Load parameters and buffers from NumPy arrays or torch tensors (copied)."""
        own = self.state_dict()
        given = OrderedDict((k, v) for k, v in state_dict.items())
        missing = [k for k in own if k not in given]
        unexpected = [k for k in given if k not in own]
        if strict and (missing or unexpected):
            raise ValueError(f"{self.layer_name}.load_state_dict: keys do not match; "
                             f"missing: {missing}; unexpected: {unexpected}")
        errors = []
        updates = []
        for key, value in given.items():
            if key not in own:
                continue
            cur = own[key]
            try:
                arr = np.array(_checks.to_numpy(value, key, "value"), copy=True)
            except (TypeError, ValueError) as exc:
                errors.append(f"{key}: {exc}")
                continue
            if arr.shape != cur.shape:
                errors.append(f"{key}: expected shape {tuple(cur.shape)}, got {tuple(arr.shape)}")
                continue
            if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
                errors.append(f"{key}: expected a numeric array, got dtype {arr.dtype}")
                continue
            updates.append((key, arr.astype(cur.dtype)))
        if errors:
            raise ValueError(f"{self.layer_name}.load_state_dict: " + "; ".join(errors))
        modules = dict(self.named_modules())
        for key, arr in updates:
            mname, _, leaf = key.rpartition(".")
            m = modules[mname]
            if leaf in m._parameters:
                m._parameters[leaf] = arr
            else:
                m._buffers[leaf] = arr
        _bump()
        return missing, unexpected

    # -- call ---------------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__}.forward is not implemented")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        if self._modules:
            for name, m in self._modules.items():
                sub = repr(m).replace("\n", "\n  ")
                lines.append(f"  ({name}): {sub}")
            return "\n".join(lines) + "\n)"
        return lines[0] + ")"


def _uniform(shape, bound, rng):
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def _rng():
    return np.random.default_rng()


_PAD_MODES = {"zeros": None, "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


class Conv2d(Module):
    """torch.nn.Conv2d; initialised like torch (uniform +-1/sqrt(fan_in))."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        name = "Conv2d"
        for what, v in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("groups", groups)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}: {what} must be a positive int, got {v!r}")
        if in_channels % groups:
            raise ValueError(f"{name}: in_channels ({in_channels}) must be divisible by "
                             f"groups ({groups})")
        if out_channels % groups:
            raise ValueError(f"{name}: out_channels ({out_channels}) must be divisible by "
                             f"groups ({groups})")
        if padding_mode not in _PAD_MODES:
            raise ValueError(f"{name}: padding_mode must be one of {list(_PAD_MODES)}, "
                             f"got {padding_mode!r}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _checks.pair(kernel_size, name, "kernel_size", minimum=1)
        self.stride = _checks.pair(stride, name, "stride", minimum=1)
        self.dilation = _checks.pair(dilation, name, "dilation", minimum=1)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{name}: padding must be an int, a pair, 'same' or 'valid', "
                                 f"got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"{name}: padding='same' is not supported for strided "
                                 f"convolutions (stride={self.stride})")
            self.padding = padding
        else:
            self.padding = _checks.pair(padding, name, "padding", minimum=0)
        self.groups = int(groups)
        self.padding_mode = padding_mode
        self.activation = None  # fused epilogue activation, set by fusion passes
        rng = _rng()
        fan_in = (self.in_channels // self.groups) * self.kernel_size[0] * self.kernel_size[1]
        bound = 1.0 / math.sqrt(fan_in)
        self.register_parameter("weight", _uniform(
            (self.out_channels, self.in_channels // self.groups) + self.kernel_size, bound, rng))
        self.register_parameter("bias", _uniform((self.out_channels,), bound, rng) if bias else None)
        self.algo = "auto"

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding not in ((0, 0), "valid"):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s

    def forward(self, x):
        return self.conv(x, self.weight, self.bias, self.activation, packed=self.packed_cache())

    def packed_cache(self):
        """The dict where algorithms keep transformed forms of this layer's weight.

        Emptied whenever any parameter is replaced (attribute assignment or
        load_state_dict); after editing ``weight`` in place, call ``fuse()`` or
        assign the weight again.
        """
        key = _version[0]
        cache = self.__dict__.get("_packed")
        if cache is None or cache[0] != key:
            cache = (key, {})
            object.__setattr__(self, "_packed", cache)
        return cache[1]

    def conv(self, x, weight, bias, activation=None, residual=None, layer=None, packed=None,
             out=None):
        """This layer's convolution with the given weights and epilogue (fusion uses it);
        ``out``: an array of the output's shape to write into (zero padding only; the
        result is returned either way)."""
        layer = layer or self.layer_name
        padding = self.padding
        if self.padding_mode != "zeros" and padding != "valid":
            _runtime.unrecordable()  # the input is padded in NumPy
            x_in = x
            xa = _checks.as_float32(x, layer, "input", ndim=(3, 4))
            pads = _checks.padding4(padding, self.kernel_size, self.dilation, self.stride, layer)
            spec = ((0, 0),) * (xa.ndim - 2) + ((pads[0], pads[1]), (pads[2], pads[3]))
            if self.padding_mode == "reflect" and (max(pads[:2]) >= xa.shape[-2] or
                                                   max(pads[2:]) >= xa.shape[-1]):
                raise ValueError(f"{layer}: reflect padding {pads} needs an input larger than "
                                 f"the padding, got spatial size {xa.shape[-2:]}")
            xa = np.pad(xa, spec, mode=_PAD_MODES[self.padding_mode])
            y = F.conv2d(xa, weight, bias, self.stride, 0, self.dilation, self.groups,
                         activation, self.algo, residual, packed, layer=layer)
            return _checks.wrap_like(y, x_in)
        return F.conv2d(x, weight, bias, self.stride, padding, self.dilation, self.groups,
                        activation, self.algo, residual, packed, layer=layer, out=out)


class BatchNorm2d(Module):
    """torch.nn.BatchNorm2d in inference: running statistics, affine transform."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None):
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)) \
                or num_features < 1:
            raise ValueError(f"BatchNorm2d: num_features must be a positive int, got {num_features!r}")
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        c = self.num_features
        self.register_parameter("weight", np.ones(c, np.float32) if affine else None)
        self.register_parameter("bias", np.zeros(c, np.float32) if affine else None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(c, np.float32))
            self.register_buffer("running_var", np.ones(c, np.float32))
            self.register_buffer("num_batches_tracked", np.array(0, np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")

    def forward(self, x):
        layer = self.layer_name
        x_in = x
        xa = _checks.as_float32(x, layer, "input", ndim=(3, 4))
        xb = xa[None] if xa.ndim == 3 else xa
        if xb.shape[1] != self.num_features:
            raise ValueError(f"{layer}: expected input with {self.num_features} channels, "
                             f"got {xb.shape[1]} channels (input shape {tuple(xa.shape)})")
        if self.track_running_stats:
            mean, var = self.running_mean, self.running_var
        else:  # torch normalises with the batch's own statistics here
            mean = xb.mean(axis=(0, 2, 3), dtype=np.float64)
            var = xb.var(axis=(0, 2, 3), dtype=np.float64)
        y = F.batch_norm(xb, mean, var, self.weight, self.bias, self.eps, layer=layer)
        return _checks.wrap_like(y[0] if xa.ndim == 3 else y, x_in)


class _Elementwise(Module):
    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace  # accepted for signature compatibility; never in place

    def forward(self, x):
        xa = _checks.as_float32(x, self.layer_name, "input")
        return _checks.wrap_like(self._apply(xa).astype(np.float32, copy=False), x)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class ReLU(_Elementwise):
    """max(x, 0); NaN propagates."""
    def _apply(self, x):
        return np.maximum(x, np.float32(0))


class ReLU6(_Elementwise):
    """min(max(x, 0), 6); NaN propagates."""
    def _apply(self, x):
        return np.minimum(np.maximum(x, np.float32(0)), np.float32(6))


class Hardswish(_Elementwise):
    """x * relu6(x + 3) / 6."""
    def _apply(self, x):
        return x * np.minimum(np.maximum(x + np.float32(3), np.float32(0)), np.float32(6)) / np.float32(6)


class Hardsigmoid(_Elementwise):
    """relu6(x + 3) / 6."""
    def _apply(self, x):
        return np.minimum(np.maximum(x + np.float32(3), np.float32(0)), np.float32(6)) / np.float32(6)


class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x)), computed without overflow warnings."""
    def __init__(self):
        super().__init__()

    def _apply(self, x):
        with np.errstate(over="ignore"):
            return (np.float32(1) / (np.float32(1) + np.exp(-x))).astype(np.float32)


class MaxPool2d(Module):
    """torch.nn.MaxPool2d (return_indices is not supported: inference only)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        if return_indices:
            raise ValueError("MaxPool2d: return_indices=True is not supported (inference only)")
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.return_indices, self.ceil_mode = dilation, return_indices, ceil_mode
        _checks.pair(kernel_size, "MaxPool2d", "kernel_size", minimum=1)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}, "
                f"padding={self.padding}, dilation={self.dilation}, ceil_mode={self.ceil_mode}")

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            self.ceil_mode, layer=self.layer_name)


class AvgPool2d(Module):
    """torch.nn.AvgPool2d."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self.divisor_override = divisor_override
        _checks.pair(kernel_size, "AvgPool2d", "kernel_size", minimum=1)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}, "
                f"padding={self.padding}")

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override, layer=self.layer_name)


class AdaptiveAvgPool2d(Module):
    """torch.nn.AdaptiveAvgPool2d."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def extra_repr(self):
        return f"output_size={self.output_size}"

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size, layer=self.layer_name)


class Linear(Module):
    """torch.nn.Linear; initialised like torch (uniform +-1/sqrt(in_features))."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        for what, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"Linear: {what} must be a positive int, got {v!r}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.activation = None
        rng = _rng()
        bound = 1.0 / math.sqrt(self.in_features)
        self.register_parameter("weight", _uniform((self.out_features, self.in_features), bound, rng))
        self.register_parameter("bias", _uniform((self.out_features,), bound, rng) if bias else None)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")

    def forward(self, x):
        return F.linear(x, self.weight, self.bias, self.activation, layer=self.layer_name)


class Flatten(Module):
    """torch.nn.Flatten(start_dim=1, end_dim=-1)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def forward(self, x):
        xa = _checks.to_numpy(x, self.layer_name)
        nd = xa.ndim
        s = self.start_dim + nd if self.start_dim < 0 else self.start_dim
        e = self.end_dim + nd if self.end_dim < 0 else self.end_dim
        if not (0 <= s < max(nd, 1) and 0 <= e < max(nd, 1)) or s > e:
            raise ValueError(f"{self.layer_name}: cannot flatten dims {self.start_dim}..{self.end_dim} "
                             f"of a {nd}-D input with shape {tuple(xa.shape)}")
        shape = xa.shape[:s] + (math.prod(xa.shape[s:e + 1]),) + xa.shape[e + 1:]
        return _checks.wrap_like(np.ascontiguousarray(xa).reshape(shape), x)


class Dropout(Module):
    """Identity at inference (torch.nn.Dropout in eval mode)."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p, self.inplace = p, inplace

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"

    def forward(self, x):
        return x


class Identity(Module):
    """Returns its input; accepts and ignores any constructor arguments, as torch does."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Sequential(Module):
    """torch.nn.Sequential: modules called in order; keys "0", "1", ... or an OrderedDict's."""

    def __init__(self, *args):
        super().__init__()
        object.__setattr__(self, "_fuse", True)
        object.__setattr__(self, "_steps", None)
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            items = args[0].items()
        else:
            items = ((str(i), m) for i, m in enumerate(args))
        for name, m in items:
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: element {name} must be a fastconv.nn.Module, "
                                f"got {type(m).__name__}")
            self.add_module(name, m)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
        mods = list(self._modules.values())
        if isinstance(idx, slice):
            return Sequential(OrderedDict(list(self._modules.items())[idx]))
        return mods[idx]

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self

    def fuse(self, enabled=True):
        """Fuse Conv2d -> BatchNorm2d -> ReLU/ReLU6/Hardswish runs into single kernel calls.

        On by default (the first call fuses); ``fuse(False)`` runs every module as
        written.  Calling ``fuse()`` again re-folds after in-place weight edits.
        """
        object.__setattr__(self, "_fuse", bool(enabled))
        object.__setattr__(self, "_steps", None)
        _structure[0] += 1
        for m in self._modules.values():
            if isinstance(m, Sequential) or hasattr(m, "fuse"):
                m.fuse(enabled)
        return self

    def fused_steps(self):
        """What a call runs: modules and FusedConv steps (rebuilt when the structure changes)."""
        mods = tuple(self._modules.values())
        steps = self._steps
        if steps is None or steps[0] != mods:
            from .fusion import fuse_modules  # (an import statement per call costs ~1 us)
            steps = (mods, fuse_modules(mods))
            object.__setattr__(self, "_steps", steps)
        return steps[1]

    def forward(self, x):
        if not self._fuse or self.training:
            for m in self._modules.values():
                x = m(x)
            return x
        for step in self.fused_steps():
            x = step(x)
        return x
