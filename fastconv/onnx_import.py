"""``fc.from_onnx``: an ONNX model (file, bytes or ModelProto) as a fastconv Model.

Opsets 9 to 21 of the default domain.  Every node is mapped to a fastconv op;
a node whose inputs are all constants (initializers, Constant nodes, shape
arithmetic on static dimensions) is evaluated at import and becomes a
constant, so Shape -> Gather -> Unsqueeze -> Concat -> Reshape chains fold
away unless they read a free (batch) dimension, in which case they stay as a
few integer ops on tiny arrays.  Static shapes that padding rules need
(``auto_pad``, ConvTranspose ``output_shape``) come from ONNX shape inference.
Every unsupported node is reported at once.
"""
import os

import numpy as np

from .graph import Model, Node
from .ops import OPS
from .torch_import import UnsupportedError

MIN_OPSET, MAX_OPSET = 9, 25  # 22-25 only widened the types of the operators read here
_INT_INPUTS = {2: "uint8", 3: "int8"}   # TensorProto.UINT8, INT8: a quantized graph's inputs
# onnxruntime's contrib operators read (its quantize_static in QOperator form writes them)
MS_OPS = ("QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool", "QLinearAveragePool",
          "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu", "QGemm")


def _attrs(node):
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


class _Importer:
    def __init__(self, proto, opset):
        from onnx import numpy_helper
        self.opset = opset
        self.consts = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        self.nodes = []
        self.unsupported = []
        self.dq_src = {}   # a DequantizeLinear folded at import: output -> (q, scale, zp, axis)
        self.shapes = {}
        for vi in list(proto.graph.value_info) + list(proto.graph.input) + list(proto.graph.output):
            dims = _dims(vi)
            if dims is not None:
                self.shapes[vi.name] = dims

    # -- helpers ----------------------------------------------------------------------------
    def const(self, name):
        return self.consts.get(name) if name else None

    def add(self, op, node, inputs, attrs=None, params=None, outputs=None):
        outs = outputs or [node.output[0]]
        n = Node(op, node.name or outs[0], inputs, outs, attrs, params, node.op_type)
        ins = [v for v in inputs if v]
        if op not in ("conv", "conv_transpose", "linear") and all(v in self.consts for v in ins) and (ins or op == "constant"):
            self.consts[outs[0]] = OPS[op].fn(n, [self.consts[v] if v else None for v in inputs],
                                              None)
        else:
            self.nodes.append(n)

    def spatial(self, name):
        s = self.shapes.get(name)
        if s is None or len(s) != 4 or s[2] is None or s[3] is None:
            raise ValueError(f"needs the static spatial size of {name!r}, which shape "
                             "inference could not determine")
        return s[2], s[3]

    def opt_input(self, node, i):
        return node.input[i] if len(node.input) > i and node.input[i] else None

    def need_const(self, node, i, what):
        v = self.const(self.opt_input(node, i))
        if v is None and self.opt_input(node, i) is not None:
            raise ValueError(f"{what} must be a constant (an initializer or folded at import)")
        return v

    # -- conversion -------------------------------------------------------------------------
    def convert(self, node):
        t = node.op_type
        a = _attrs(node)
        x = node.input[0] if node.input else None
        if node.domain == "com.microsoft":   # onnxruntime's quantized operators
            fn = getattr(self, f"ms_{t}", None)
            if fn is None:
                raise ValueError(f"{t} of domain 'com.microsoft' is not supported (fastconv "
                                 f"reads its {', '.join(MS_OPS)})")
            return fn(node, a, x)
        fn = getattr(self, f"op_{t}", None)
        if node.domain not in ("", "ai.onnx"):
            raise ValueError(f"domain {node.domain!r} is not supported")
        if fn is not None:
            return fn(node, a, x)
        simple = {"Relu": ("relu", {}), "Sigmoid": ("sigmoid", {}), "Tanh": ("tanh", {}),
                  "HardSwish": ("hardswish", {}), "Identity": ("identity", {}),
                  "GlobalAveragePool": ("global_avg_pool", {}),
                  "GlobalMaxPool": ("global_max_pool", {})}
        if t in simple:
            op, attrs = simple[t]
            return self.add(op, node, [x], attrs)
        if t in ("Add", "Sub", "Mul", "Div"):
            return self.add(t.lower(), node, [node.input[0], node.input[1]])
        raise ValueError("operator is not supported")

    def op_Conv(self, node, a, x):
        w = self.need_const(node, 1, "Conv weight")
        if w.ndim != 4:
            raise ValueError(f"only 2-D convolutions are supported (weight shape {w.shape})")
        b = self.need_const(node, 2, "Conv bias")
        k = tuple(a.get("kernel_shape", w.shape[2:]))
        st = tuple(a.get("strides", (1, 1)))
        dil = tuple(a.get("dilations", (1, 1)))
        pads = self.pads(node, a, x, k, st, dil)
        params = {"weight": w.astype(np.float32)}
        if b is not None:
            params["bias"] = b.astype(np.float32)
        wq = self.int8_weight(node.input[1], w.shape[0], 0)
        if wq is not None:   # a QDQ model's int8 weight, for fuse_qdq
            params["weight_q"], params["w_scale"] = wq
        self.add("conv", node, [x], {"stride": st, "pads": pads, "dilation": dil,
                                     "groups": int(a.get("group", 1))}, params)

    def pads(self, node, a, x, k, st, dil):
        """(top, bottom, left, right) from ONNX pads [t, l, b, r] or auto_pad."""
        auto = _s(a.get("auto_pad", "NOTSET"))
        if auto in ("NOTSET", ""):
            p = list(a.get("pads", (0, 0, 0, 0)))
            return (p[0], p[2], p[1], p[3])
        if auto == "VALID":
            return (0, 0, 0, 0)
        h, w = self.spatial(x)
        out = []
        for size, kk, s, d in ((h, k[0], st[0], dil[0]), (w, k[1], st[1], dil[1])):
            total = max(0, (-(-size // s) - 1) * s + (kk - 1) * d + 1 - size)
            small, big = total // 2, total - total // 2
            out += [small, big] if auto == "SAME_UPPER" else [big, small]
        return tuple(out)

    def op_ConvTranspose(self, node, a, x):
        w = self.need_const(node, 1, "ConvTranspose weight")
        if w.ndim != 4:
            raise ValueError(f"only 2-D transposed convolutions are supported (weight {w.shape})")
        b = self.need_const(node, 2, "ConvTranspose bias")
        k = tuple(a.get("kernel_shape", w.shape[2:]))
        st = tuple(a.get("strides", (1, 1)))
        dil = tuple(a.get("dilations", (1, 1)))
        op = list(a.get("output_padding", (0, 0)))
        auto = _s(a.get("auto_pad", "NOTSET"))
        if "output_shape" in a or auto in ("SAME_UPPER", "SAME_LOWER"):
            h, wd = self.spatial(x)
            target = list(a["output_shape"])[-2:] if "output_shape" in a else [h * st[0], wd * st[1]]
            pads = []
            for i, size in enumerate((h, wd)):
                total = st[i] * (size - 1) + op[i] + (k[i] - 1) * dil[i] + 1 - target[i]
                if total < 0:  # the requested output is larger: extend with output padding
                    op[i] -= total
                    total = 0
                first = total // 2 if auto == "SAME_UPPER" else total - total // 2
                pads += [first, total - first]
            pads = tuple(pads)
        elif auto == "VALID":
            pads = (0, 0, 0, 0)
        else:
            p = list(a.get("pads", (0, 0, 0, 0)))
            pads = (p[0], p[2], p[1], p[3])
        params = {"weight": w.astype(np.float32)}
        if b is not None:
            params["bias"] = b.astype(np.float32)
        self.add("conv_transpose", node, [x],
                 {"stride": st, "pads": pads, "dilation": dil, "groups": int(a.get("group", 1)),
                  "output_padding": tuple(op)}, params)

    def op_BatchNormalization(self, node, a, x):
        if a.get("training_mode", 0) or len([o for o in node.output if o]) > 1:
            raise ValueError("training-mode BatchNormalization is not an inference op")
        vals = [self.need_const(node, i, "BatchNormalization parameters") for i in range(1, 5)]
        gamma, beta, mean, var = (np.asarray(v, np.float64) for v in vals)
        scale = gamma / np.sqrt(var + a.get("epsilon", 1e-5))
        self.add("affine", node, [x], {"bn": True},
                 {"scale": scale.astype(np.float32),
                  "shift": (beta - mean * scale).astype(np.float32)})

    def op_Clip(self, node, a, x):
        if self.opset < 11:
            lo, hi = a.get("min"), a.get("max")
        else:
            lo = self.need_const(node, 1, "Clip min")
            hi = self.need_const(node, 2, "Clip max")
        self.add("clip", node, [x], {"min": None if lo is None else float(lo),
                                     "max": None if hi is None else float(hi)})

    def op_LeakyRelu(self, node, a, x):
        self.add("leaky_relu", node, [x], {"alpha": float(a.get("alpha", 0.01))})

    def op_HardSigmoid(self, node, a, x):
        self.add("hardsigmoid", node, [x], {"alpha": float(a.get("alpha", 0.2)),
                                            "beta": float(a.get("beta", 0.5))})

    def op_Softmax(self, node, a, x):
        if self.opset < 13:
            self.add("softmax", node, [x], {"axis": int(a.get("axis", 1)), "coerce2d": True})
        else:
            self.add("softmax", node, [x], {"axis": int(a.get("axis", -1))})

    def op_Dropout(self, node, a, x):
        training = self.const(self.opt_input(node, 2))
        ratio = self.const(self.opt_input(node, 1))
        if training is not None and bool(training) and (ratio is None or float(ratio) > 0):
            raise ValueError("training-mode Dropout is random; not an inference op")
        self.add("identity", node, [x])
        if len(node.output) > 1 and node.output[1]:  # the mask: everything kept
            shp = f"{node.output[1]}_shape"
            self.nodes.append(Node("shape", shp, [x], [shp]))
            self.nodes.append(Node("constant_of_shape", node.output[1], [shp], [node.output[1]],
                                   params={"value": np.ones(1, bool)}))

    def _pool(self, node, a, x, op):
        k = tuple(a["kernel_shape"])
        if len(k) != 2:
            raise ValueError(f"only 2-D pooling is supported (kernel_shape {k})")
        if len([o for o in node.output if o]) > 1:
            raise ValueError("the Indices output of MaxPool is not supported")
        st = tuple(a.get("strides", (1, 1)))
        dil = tuple(a.get("dilations", (1, 1)))
        attrs = {"kernel": k, "stride": st, "pads": self.pads(node, a, x, k, st, dil),
                 "ceil_mode": bool(a.get("ceil_mode", 0))}
        if op == "avg_pool" and dil != (1, 1):
            raise ValueError(f"dilated average pooling (dilations {dil}) is not supported")
        if op == "max_pool":
            if a.get("storage_order", 0):
                raise ValueError("storage_order=1 is not supported")
            attrs["dilation"] = dil
        else:
            attrs["count_include_pad"] = bool(a.get("count_include_pad", 0))
        self.add(op, node, [x], attrs)

    def op_MaxPool(self, node, a, x):
        self._pool(node, a, x, "max_pool")

    def op_AveragePool(self, node, a, x):
        self._pool(node, a, x, "avg_pool")

    def op_Gemm(self, node, a, x):
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        B = self.const(node.input[1])
        C = self.const(self.opt_input(node, 2))
        n_out = None if B is None else (B.shape[0] if a.get("transB", 0) else B.shape[1])
        if B is not None and (C is None or C.size in (1, n_out)):
            if a.get("transA", 0):
                t = f"{node.output[0]}_At"
                self.nodes.append(Node("transpose", t, [x], [t], {"perm": (1, 0)}))
                x = t
            w = (B if a.get("transB", 0) else B.T) * alpha
            params = {"weight": np.ascontiguousarray(w, np.float32)}
            wq = self.int8_weight(node.input[1], n_out, 0 if a.get("transB", 0) else 1)
            if wq is not None and alpha == 1.0:   # a QDQ model's int8 weight, for fuse_qdq
                params["weight_q"] = np.ascontiguousarray(wq[0] if a.get("transB", 0)
                                                          else wq[0].T)
                params["w_scale"] = wq[1]
            if C is not None:
                params["bias"] = np.broadcast_to(np.asarray(C, np.float32).reshape(-1) * beta,
                                                 (n_out,)).copy()
            return self.add("linear", node, [x], {}, params)
        raise ValueError("Gemm needs a constant B and a bias broadcast along the output features")

    def op_MatMul(self, node, a, x):
        B = self.const(node.input[1])
        if B is not None and B.ndim == 2:
            params = {"weight": np.ascontiguousarray(B.T, np.float32)}
            wq = self.int8_weight(node.input[1], B.shape[1], 1)
            if wq is not None:   # a QDQ model's int8 weight, for fuse_qdq
                params["weight_q"], params["w_scale"] = np.ascontiguousarray(wq[0].T), wq[1]
            return self.add("linear", node, [x], {}, params)
        self.add("matmul", node, [x, node.input[1]])

    def op_Flatten(self, node, a, x):
        self.add("flatten2d", node, [x], {"axis": int(a.get("axis", 1))})

    def op_Reshape(self, node, a, x):
        shape = self.const(node.input[1])
        attrs = {"onnx": True, "allowzero": bool(a.get("allowzero", 0))}
        if shape is not None:
            self.add("reshape", node, [x], dict(attrs, shape=tuple(int(v) for v in shape)))
        else:
            self.add("reshape", node, [x, node.input[1]], attrs)

    def op_Transpose(self, node, a, x):
        self.add("transpose", node, [x], {"perm": tuple(a["perm"]) if "perm" in a else None})

    def op_Concat(self, node, a, x):
        self.add("concat", node, list(node.input), {"axis": int(a["axis"])})

    def op_Squeeze(self, node, a, x):
        if self.opset < 13:
            axes = a.get("axes")
            self.add("squeeze", node, [x], {"axes": None if axes is None else tuple(axes)})
        else:
            self.add("squeeze", node, [x] + ([node.input[1]] if self.opt_input(node, 1) else []))

    def op_Unsqueeze(self, node, a, x):
        if self.opset < 13:
            self.add("unsqueeze", node, [x], {"axes": tuple(a["axes"])})
        else:
            self.add("unsqueeze", node, [x, node.input[1]])

    def op_Shape(self, node, a, x):
        attrs = {"start": int(a.get("start", 0))}
        if "end" in a:
            attrs["end"] = int(a["end"])
        s = self.shapes.get(x)
        if x in self.consts:
            return self.add("shape", node, [x], attrs)
        sl = slice(attrs["start"], attrs.get("end"))
        if s is not None and all(d is not None for d in s[sl]):
            self.consts[node.output[0]] = np.array(s[sl], np.int64)  # static: fold now
        else:
            self.add("shape", node, [x], attrs)

    def op_Gather(self, node, a, x):
        self.add("gather", node, [x, node.input[1]], {"axis": int(a.get("axis", 0))})

    def op_Cast(self, node, a, x):
        from onnx import helper
        self.add("cast", node, [x], {"to": np.dtype(helper.tensor_dtype_to_np_dtype(a["to"])).str})

    def op_Slice(self, node, a, x):
        if self.opset < 10:
            names = []
            for key in ("starts", "ends", "axes"):
                if key in a:
                    c = f"{node.output[0]}_{key}"
                    self.consts[c] = np.array(a[key], np.int64)
                    names.append(c)
            return self.add("slice", node, [x] + names)
        self.add("slice", node, list(node.input))

    def op_Constant(self, node, a, x):
        from onnx import numpy_helper
        if "value" in a:
            v = numpy_helper.to_array(a["value"])
        elif "value_float" in a:
            v = np.array(a["value_float"], np.float32)
        elif "value_floats" in a:
            v = np.array(a["value_floats"], np.float32)
        elif "value_int" in a:
            v = np.array(a["value_int"], np.int64)
        elif "value_ints" in a:
            v = np.array(a["value_ints"], np.int64)
        else:
            raise ValueError(f"Constant attribute {list(a)} is not supported")
        self.consts[node.output[0]] = v

    def op_ConstantOfShape(self, node, a, x):
        from onnx import numpy_helper
        value = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
        self.add("constant_of_shape", node, [x], {}, {"value": value})

    def op_Range(self, node, a, x):
        self.add("range", node, list(node.input))

    def op_Pad(self, node, a, x):
        mode = _s(a.get("mode", "constant"))
        if mode not in ("constant", "reflect", "edge", "wrap"):
            raise ValueError(f"Pad mode {mode!r} is not supported")
        if self.opset < 11:
            return self.add("pad", node, [x], {"pads": tuple(a["pads"]), "mode": mode,
                                               "value": float(a.get("value", 0.0))})
        if self.opt_input(node, 3):
            raise ValueError("Pad with axes is not supported")
        self.add("pad", node, [x, node.input[1], self.opt_input(node, 2)], {"mode": mode})

    def op_Resize(self, node, a, x):
        mode = _s(a.get("mode", "nearest"))
        if mode not in ("nearest", "linear"):
            raise ValueError(f"Resize mode {mode!r} is not supported (nearest, linear are)")
        if self.opset < 11:
            scales, sizes = self.need_const(node, 1, "Resize scales"), None
            ctm, nm = "asymmetric", "floor"
        else:
            scales = self.need_const(node, 2, "Resize scales")
            sizes = self.need_const(node, 3, "Resize sizes")
            ctm = _s(a.get("coordinate_transformation_mode", "half_pixel"))
            nm = _s(a.get("nearest_mode", "round_prefer_floor"))
            if ctm == "tf_crop_and_resize":
                raise ValueError("coordinate_transformation_mode tf_crop_and_resize is not supported")
        if a.get("axes") is not None or a.get("antialias", 0):
            raise ValueError("Resize with axes or antialias is not supported")
        attrs = {"mode": mode, "coordinate_transformation_mode": ctm, "nearest_mode": nm}
        if sizes is not None and sizes.size:
            if tuple(sizes[:2]) != tuple(self.shapes.get(x, (None, None))[:2]) and \
                    self.shapes.get(x) is not None and None not in self.shapes[x][:2]:
                raise ValueError("Resize may only change the last two axes")
            attrs["sizes"] = tuple(int(v) for v in sizes[-2:])
        elif scales is not None and scales.size:
            if np.any(np.asarray(scales[:-2]) != 1):
                raise ValueError("Resize may only scale the last two axes")
            attrs["scales"] = tuple(float(v) for v in scales[-2:])
        else:
            raise ValueError("Resize needs constant scales or sizes")
        self.add("resize", node, [x], attrs)

    op_Upsample = op_Resize

    def op_ReduceMean(self, node, a, x):
        axes = a.get("axes")
        if axes is None and self.opset >= 18 and self.opt_input(node, 1):
            axes = self.need_const(node, 1, "ReduceMean axes")
        keep = bool(a.get("keepdims", 1))
        s = self.shapes.get(x)
        nd = len(s) if s is not None else None
        if axes is not None and np.size(axes) == 0 and a.get("noop_with_empty_axes", 0):
            return self.add("identity", node, [x])
        if axes is None or np.size(axes) == 0:
            if nd is None:
                raise ValueError("ReduceMean over all axes needs the input's rank")
            axes = range(nd)
        axes = tuple(int(v) for v in np.asarray(axes).reshape(-1))
        if nd == 4 and keep and sorted(v % 4 for v in axes) == [2, 3]:
            return self.add("global_avg_pool", node, [x])
        self.add("reduce_mean", node, [x], {"axes": axes, "keepdims": keep})

    def op_DequantizeLinear(self, node, a, x):
        axis = int(a.get("axis", 1))
        self.add("dequantize_linear", node, list(node.input), {"axis": axis})
        if node.output[0] in self.consts and x in self.consts:   # a quantized initializer
            self.dq_src[node.output[0]] = (self.consts[x], self.const(node.input[1]),
                                           self.const(self.opt_input(node, 2)), axis)

    def int8_weight(self, name, k, axis):
        """(weight_q, w_scale) where ``name`` is a DequantizeLinear of an int8 initializer
        with zero points 0 and one scale, or one per output feature along ``axis`` (k of
        them), else None: what fuse_qdq runs on the int8 kernels."""
        src = self.dq_src.get(name)
        if src is None:
            return None
        q, s, zp, ax = src
        if q.dtype != np.int8 or s is None or (zp is not None and np.any(zp != 0)):
            return None
        s = np.asarray(s, np.float32).reshape(-1)
        if s.size == 1:
            s = np.full(k, s[0], np.float32)
        elif s.size != k or ax % q.ndim != axis:
            return None
        return q, s

    def op_QuantizeLinear(self, node, a, x):
        self.add("quantize_linear", node, list(node.input), {"axis": int(a.get("axis", 1))})

    # -- the operator form of quantized models (QLinearConv and kin) ------------------------
    def qgrid(self, node, i_scale, i_zp, what):
        """(scale, zero point, dtype name) of a per-tensor quantization whose scale and
        zero point are node inputs i_scale and i_zp (an absent zero point: 0, uint8)."""
        s = self.need_const(node, i_scale, f"{what} scale")
        if s is None:
            raise ValueError(f"{what} scale is missing")
        if np.size(s) != 1:
            raise ValueError(f"{what} must be quantized per tensor (one scale), got "
                             f"{np.size(s)} scales")
        z = self.need_const(node, i_zp, f"{what} zero point")
        if z is None:
            return float(np.float32(np.reshape(s, ()))), 0, "uint8"
        if z.dtype not in (np.uint8, np.int8) or np.size(z) != 1:
            raise ValueError(f"{what} zero point must be one uint8 or int8 value, got "
                             f"{z.dtype} of shape {z.shape}")
        return float(np.float32(np.reshape(s, ()))), int(np.reshape(z, ())), z.dtype.name

    def qweight(self, node, i_w, i_scale, i_zp, k, axis, what):
        """(weight_q int8, w_scale (k,) float32, rest) from a constant int8 / uint8 weight
        with one scale and zero point or one per output feature (``axis``, k of them): the
        weight minus its zero point, moved exactly into the int8 kernels' symmetric
        weights.  Where that difference does not fit int8 (uint8 weights far from their
        zero point, as some converters write them), weight_q is it clipped to int8 and
        ``rest`` (S, ...) int8 holds the parts that sum with it to the weight (S = 1 or 2:
        |w - zw| <= 255; the layer then runs one exact int8 product a part and adds the
        sums), else rest is None."""
        w = self.need_const(node, i_w, f"{what} weight")
        if w is None:
            raise ValueError(f"{what} weight is missing")
        s = self.need_const(node, i_scale, f"{what} weight scale")
        if s is None:
            raise ValueError(f"{what} weight scale is missing")
        s = np.asarray(s, np.float32)
        z = self.need_const(node, i_zp, f"{what} weight zero point")
        if w.dtype not in (np.uint8, np.int8):
            raise ValueError(f"{what} weight must be int8 or uint8, got {w.dtype}")

        def per_feature(v, name):
            v = np.asarray(v).reshape(-1)
            if v.size not in (1, k):
                raise ValueError(f"{what} weight {name} must be one value or one per output "
                                 f"feature ({k}), got {v.size}")
            shape = [1] * w.ndim
            shape[axis] = -1
            return np.broadcast_to(v, (k,)).reshape(shape)
        scale = np.ascontiguousarray(per_feature(s, "scale").reshape(-1), np.float32)
        wi = w.astype(np.int32)
        if z is not None:
            wi = wi - per_feature(z, "zero point").astype(np.int32)
        parts = []
        while wi.size and (wi.min() < -128 or wi.max() > 127 or parts) and np.any(wi):
            part = np.clip(wi, -128, 127)   # (|w - zw| <= 255: at most three parts)
            parts.append(part.astype(np.int8))
            wi = wi - part
        if not parts:
            return wi.astype(np.int8), scale, None
        return parts[0], scale, np.stack(parts[1:])

    def q_out(self, attrs, out):
        if out is not None:
            attrs.update(out_scale=out[0], out_zero_point=out[1], out_dtype=out[2])
        return attrs

    def op_QLinearConv(self, node, a, x):
        """y = saturate(round(conv(x - zx, w - zw) * sx * sw / sy + B * sx * sw / sy) + zy):
        a ``qconv`` node on the integer input, its bias (int32, on the accumulator's
        scale sx * sw) kept as float, requantizing in its epilogue."""
        xg = self.qgrid(node, 1, 2, "QLinearConv input")
        yg = self.qgrid(node, 6, 7, "QLinearConv output")
        w = self.need_const(node, 3, "QLinearConv weight")
        if w is None or w.ndim != 4:
            raise ValueError("QLinearConv needs a constant 4-D weight (2-D convolutions)")
        wq, ws, rest = self.qweight(node, 3, 4, 5, w.shape[0], 0, "QLinearConv")
        k = tuple(a.get("kernel_shape", w.shape[2:]))
        st = tuple(a.get("strides", (1, 1)))
        dil = tuple(a.get("dilations", (1, 1)))
        params = {"weight_q": wq, "w_scale": ws}
        if rest is not None:
            params["weight_q_rest"] = rest
        B = self.need_const(node, 8, "QLinearConv bias")
        if B is not None:
            params["bias"] = (B.astype(np.float64).reshape(-1) * xg[0] * ws).astype(np.float32)
        attrs = {"stride": st, "pads": self.pads(node, a, x, k, st, dil), "dilation": dil,
                 "groups": int(a.get("group", 1)), "x_scale": xg[0], "x_zero_point": xg[1],
                 "x_dtype": xg[2], "float_weight_shape": tuple(w.shape)}
        self.add("qconv", node, [x], self.q_out(attrs, yg), params)

    def op_QLinearMatMul(self, node, a, x):
        """y = saturate(round((a - za) @ (b - zb) * sa * sb / sy) + zy), b constant: a
        ``qlinear`` node on the integer rows."""
        b = self.need_const(node, 3, "QLinearMatMul b")
        if b is None or b.ndim != 2:
            raise ValueError("QLinearMatMul needs a constant 2-D b")
        xg = self.qgrid(node, 1, 2, "QLinearMatMul a")
        yg = self.qgrid(node, 6, 7, "QLinearMatMul output")
        wq, ws, rest = self.qweight(node, 3, 4, 5, b.shape[1], 1, "QLinearMatMul")
        attrs = {"x_scale": xg[0], "x_zero_point": xg[1], "x_dtype": xg[2]}
        params = {"weight_q": np.ascontiguousarray(wq.T), "w_scale": ws}
        if rest is not None:
            params["weight_q_rest"] = np.ascontiguousarray(rest.transpose(0, 2, 1))
        self.add("qlinear", node, [x], self.q_out(attrs, yg), params)

    def ms_QGemm(self, node, a, x):
        """onnxruntime's QGemm: ((A - za) @ (B - zb) + C) * alpha * sa * sb (C int32),
        requantized when y_scale is given, else float: a ``qlinear`` node."""
        if a.get("transA", 0):
            raise ValueError("QGemm with transA is not supported")
        B = self.need_const(node, 3, "QGemm B")
        if B is None or B.ndim != 2:
            raise ValueError("QGemm needs a constant 2-D B")
        tb = bool(a.get("transB", 0))
        n_out = B.shape[0] if tb else B.shape[1]
        xg = self.qgrid(node, 1, 2, "QGemm A")
        wq, ws, rest = self.qweight(node, 3, 4, 5, n_out, 0 if tb else 1, "QGemm")
        # (onnxruntime adds C to the int32 sums and scales both by alpha * sa * sb)
        ws = (ws * np.float32(a.get("alpha", 1.0))).astype(np.float32)
        params = {"weight_q": np.ascontiguousarray(wq if tb else wq.T), "w_scale": ws}
        if rest is not None:
            params["weight_q_rest"] = np.ascontiguousarray(rest if tb else
                                                           rest.transpose(0, 2, 1))
        C = self.need_const(node, 6, "QGemm C")
        if C is not None:
            if np.size(C) not in (1, n_out):
                raise ValueError("QGemm's C must be one value or one per output feature")
            params["bias"] = (np.broadcast_to(C.astype(np.float64).reshape(-1), (n_out,))
                              * xg[0] * ws).astype(np.float32)
        yg = self.qgrid(node, 7, 8, "QGemm output") if self.opt_input(node, 7) else None
        attrs = {"x_scale": xg[0], "x_zero_point": xg[1], "x_dtype": xg[2]}
        self.add("qlinear", node, [x], self.q_out(attrs, yg), params)

    def ms_QLinearAdd(self, node, a, x):
        """onnxruntime's QLinearAdd (integers in and out, broadcasting): a ``qadd`` node."""
        ga = self.qgrid(node, 1, 2, "QLinearAdd A")
        gb = self.qgrid(node, 4, 5, "QLinearAdd B")
        gc = self.qgrid(node, 6, 7, "QLinearAdd C")
        self.add("qadd", node, [node.input[0], node.input[3]],
                 {"fq_a": ga, "fq_b": gb, "fq_out": gc, "activation": None, "int_a": True,
                  "int_b": True, "int_out": True})

    def ms_QLinearGlobalAveragePool(self, node, a, x):
        self.add("qglobal_avg_pool", node, [x],
                 {"fq_x": self.qgrid(node, 1, 2, "QLinearGlobalAveragePool input"),
                  "fq_out": self.qgrid(node, 3, 4, "QLinearGlobalAveragePool output"),
                  "channels_last": bool(a.get("channels_last", 0))})

    def ms_QLinearMul(self, node, a, x):
        """onnxruntime's QLinearMul (integers in and out, broadcasting; a squeeze-excitation
        block's scaling): a ``qmul`` node."""
        self.add("qmul", node, [node.input[0], node.input[3]],
                 {"fq_a": self.qgrid(node, 1, 2, "QLinearMul A"),
                  "fq_b": self.qgrid(node, 4, 5, "QLinearMul B"),
                  "fq_out": self.qgrid(node, 6, 7, "QLinearMul C")})

    def ms_QLinearAveragePool(self, node, a, x):
        """onnxruntime's QLinearAveragePool: a ``qavg_pool`` node with AveragePool's
        attributes (NCHW)."""
        if a.get("channels_last", 0):
            raise ValueError("QLinearAveragePool with channels_last is not supported")
        k = tuple(a["kernel_shape"])
        if len(k) != 2:
            raise ValueError(f"only 2-D pooling is supported (kernel_shape {k})")
        st = tuple(a.get("strides", (1, 1)))
        self.add("qavg_pool", node, [x],
                 {"kernel": k, "stride": st, "pads": self.pads(node, a, x, k, st, (1, 1)),
                  "ceil_mode": bool(a.get("ceil_mode", 0)),
                  "count_include_pad": bool(a.get("count_include_pad", 0)),
                  "fq_x": self.qgrid(node, 1, 2, "QLinearAveragePool input"),
                  "fq_out": self.qgrid(node, 3, 4, "QLinearAveragePool output")})

    def _lookup(self, node, x, f, what):
        """A unary operator on one integer tensor as a ``qlookup`` node: the 256 values
        the input type holds, dequantized, through f in float32, quantized on the
        output's grid, as onnxruntime builds its own table for these operators."""
        xg = self.qgrid(node, 1, 2, f"{what} input")
        yg = self.qgrid(node, 3, 4, f"{what} output")
        q = np.arange(256, dtype=np.uint8).view(np.dtype(xg[2]))   # by byte pattern
        v = (q.astype(np.float32) - np.float32(xg[1])) * np.float32(xg[0])
        info = np.iinfo(np.dtype(yg[2]))
        t = np.rint(f(v).astype(np.float32) / np.float32(yg[0])) + np.float32(yg[1])
        self.add("qlookup", node, [x], {},
                 {"table": np.clip(t, info.min, info.max).astype(yg[2])})

    def ms_QLinearSigmoid(self, node, a, x):
        self._lookup(node, x, lambda v: np.float32(1) / (np.float32(1) + np.exp(-v)),
                     "QLinearSigmoid")

    def ms_QLinearLeakyRelu(self, node, a, x):
        alpha = np.float32(a.get("alpha", 0.01))
        self._lookup(node, x, lambda v: np.where(v >= 0, v, v * alpha), "QLinearLeakyRelu")

    def ms_QLinearConcat(self, node, a, x):
        if (len(node.input) - 2) % 3 or len(node.input) < 5:
            raise ValueError("QLinearConcat takes Y_scale, Y_zero_point and then triples "
                             "(X, X_scale, X_zero_point)")
        out = self.qgrid(node, 0, 1, "QLinearConcat output")
        ins = node.input[2::3]
        grids = tuple(self.qgrid(node, i + 1, i + 2, f"QLinearConcat input {j}")
                      for j, i in enumerate(range(2, len(node.input), 3)))
        self.add("qconcat", node, list(ins), {"axis": int(a["axis"]), "grids": grids,
                                              "fq_out": out})


def _dims(vi):
    t = vi.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in t.tensor_type.shape.dim)


def from_onnx(model, name=None):
    """Import an ONNX model (a path, serialized bytes or an ``onnx.ModelProto``).

    Raises :class:`fastconv.UnsupportedError` listing every node fastconv cannot
    run (op type, node name and the reason), and ``ValueError`` for opsets
    outside 9..21.
    """
    try:
        import onnx
    except ImportError:
        raise ImportError("from_onnx needs the onnx package: pip install onnx") from None
    if isinstance(model, (str, os.PathLike)):
        try:
            proto = onnx.load(os.fspath(model))
        except (OSError, Exception) as exc:  # onnx raises DecodeError and others
            raise ValueError(f"from_onnx: cannot read {os.fspath(model)!r}: {exc}") from None
    elif isinstance(model, (bytes, bytearray)):
        proto = onnx.load_from_string(bytes(model))
    elif isinstance(model, onnx.ModelProto):
        proto = model
    else:
        raise TypeError(f"from_onnx: expected a path, bytes or onnx.ModelProto, "
                        f"got {type(model).__name__}")
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"from_onnx: opset {opset} is not supported "
                         f"(fastconv reads opsets {MIN_OPSET} to {MAX_OPSET})")
    try:
        proto = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # inference is best effort; ops that need shapes say so
        pass
    imp = _Importer(proto, opset)
    for i, node in enumerate(proto.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
        try:
            imp.convert(node)
        except (ValueError, TypeError, KeyError) as exc:
            imp.unsupported.append(f"{node.op_type} node {node.name!r}: {exc}")
            for o in node.output:
                if o:
                    imp.nodes.append(Node("identity", f"{node.name}:{o}", [], [o],
                                          source="unsupported"))
    name = name or proto.graph.name or "onnx_model"
    if imp.unsupported:
        raise UnsupportedError(f"from_onnx: {name} has {len(imp.unsupported)} node(s) fastconv "
                               "cannot run:\n  - " + "\n  - ".join(imp.unsupported))
    init = {t.name for t in proto.graph.initializer}
    inputs = [vi.name for vi in proto.graph.input if vi.name not in init]
    input_shapes = {}
    for vi in proto.graph.input:
        if vi.name in inputs:
            d = _dims(vi)
            if d is not None:
                input_shapes[vi.name] = d
    input_dtypes = {}
    for vi in proto.graph.input:
        kind = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else None
        if vi.name in inputs and kind in _INT_INPUTS:
            input_dtypes[vi.name] = _INT_INPUTS[kind]
    outputs = [vi.name for vi in proto.graph.output]
    used = {v for n in imp.nodes for v in n.inputs} | set(outputs)
    consts = {k: v for k, v in imp.consts.items() if k in used}
    model = Model(imp.nodes, inputs, outputs, consts, name, input_shapes, input_dtypes)
    if all(s is not None and all(d is not None for d in s) for s in input_shapes.values()) \
            and len(input_shapes) == len(inputs):
        model.example_shapes = [input_shapes[k] for k in inputs]
    else:
        model.example_shapes = [tuple(1 if d is None else d for d in input_shapes[k])
                                for k in inputs] if len(input_shapes) == len(inputs) else None
    return model
