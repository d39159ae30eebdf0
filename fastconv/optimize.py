"""``fc.optimize``: graph rewrites for inference, then a kernel per layer.

Passes, in order (each returns a new node list; the input model is not changed):

1. constant folding: nodes whose inputs are all constants run once at
   optimize time (ONNX shape arithmetic, reshape targets);
2. identities and dropouts removed;
3. BatchNorm folding: ``conv -> affine`` (an inference BatchNorm) becomes one
   conv with ``w' = w * scale[k]``, ``b' = b * scale + shift`` (float64);
3b. QDQ models (CPU): QuantizeLinear/DequantizeLinear pairs become one-pass fake
   quantizations, residual adds between them ``qadd``, and convs and linears with int8
   weights between them the int8 layers, uint8 tensors between those (``fuse_qdq``);
4. residual fusion: ``add(conv(x), r)`` with ``r`` of the output's shape and
   computed before the conv becomes the conv's epilogue residual;
5. activation fusion: ``relu``, ``clip(0, 6)`` (ReLU6) and ``hardswish``
   after a conv, transposed conv or linear layer move into its epilogue;
6. inverted residual blocks (CPU models): a depthwise conv with the stride-1 1x1
   conv that only feeds it (expansion) and/or the stride-1 1x1 conv that only it
   feeds (projection, its residual kept) becomes one ``inverted_residual`` node
   (``functional.inverted_residual``: the tensors between them stay
   channel-blocked, with no transposition);
7. dead nodes removed.

Kernels: each conv keeps ``algo="auto"`` (the planner's cost model) unless
``fc.tune`` measured this layer's shape on this machine before, in which case
the measured winner is used (see :mod:`fastconv.tuning`).
"""
import numpy as np

from . import _backend
from ._algorithms import DepthwiseBlocked
from .fusion import HEAD_MAX_CHANNELS
from .graph import Model, Node
from .ops import OPS

_EPILOGUE_OWNERS = ("conv", "conv_transpose", "linear", "sparse_conv", "sparse_linear")
# convolutions whose weights take a folded BatchNorm and whose epilogue a residual add
# (a pruned conv keeps its zeros, and its block pattern, under a per-channel scale)
_CONVS = ("conv", "sparse_conv")


def _epilogue_activation(node):
    """The epilogue activation a node can become, or None."""
    if node.op == "relu":
        return "relu"
    if node.op == "hardswish":
        return "hardswish"
    if node.op == "clip":
        lo, hi = node.attrs.get("min"), node.attrs.get("max")
        if lo == 0 and hi == 6:
            return "relu6"
        if lo == 0 and hi is None:
            return "relu"
    return None


def _is_expansion(n):
    """A stride-1, unpadded 1x1 conv, groups 1, no residual, a multiple of 16 outputs; or
    a head conv: any filter, stride and padding over at most HEAD_MAX_CHANNELS inputs,
    dilation 1 (a stem before the first depthwise conv)."""
    if n.op != "conv" or (len(n.inputs) > 1 and n.inputs[1]) or "weight" not in n.params:
        return False
    a, w = n.attrs, n.params["weight"]
    if not (w.ndim == 4 and w.shape[0] % 16 == 0 and a["groups"] == 1
            and a.get("algo", "auto") == "auto"):
        return False
    return (w.shape[2:] == (1, 1) and tuple(a["stride"]) == (1, 1) and not any(a["pads"])) \
        or _is_head(n)



def _is_head(n):
    a, w = n.attrs, n.params["weight"]
    return (w.shape[1] <= HEAD_MAX_CHANNELS and tuple(a["dilation"]) == (1, 1)
            and not (w.shape[2:] == (1, 1) and tuple(a["stride"]) == (1, 1)
                     and not any(a["pads"])))


def _is_projection_of(n, k):
    """A stride-1, unpadded 1x1 conv over k channels, groups 1 (a residual allowed)."""
    if n.op != "conv" or "weight" not in n.params:
        return False
    a, w = n.attrs, n.params["weight"]
    return (w.ndim == 4 and w.shape[1:] == (k, 1, 1) and tuple(a["stride"]) == (1, 1)
            and not any(a["pads"]) and a["groups"] == 1 and a.get("algo", "auto") == "auto")


def _is_depthwise_of(n, k):
    """A depthwise conv (multiplier 1, a filter size depthwise_blocked runs: square 3x3,
    5x5 or 7x7) over k channels, no residual."""
    if n.op != "conv" or (len(n.inputs) > 1 and n.inputs[1]) or "weight" not in n.params:
        return False
    w = n.params["weight"]
    return (w.ndim == 4 and w.shape[0] == k and w.shape[1] == 1 and n.attrs["groups"] == k
            and tuple(w.shape[2:]) in DepthwiseBlocked.SIZES
            and n.attrs.get("algo", "auto") == "auto")


class _Rewriter:
    def __init__(self, model, shapes=None):
        self.nodes = [n.copy() for n in model.nodes]
        self.constants = dict(model.constants)
        self.outputs = list(model.outputs)
        self.inputs = list(model.inputs)
        self.shapes = shapes or {}

    def uses(self):
        out = {}
        for i, n in enumerate(self.nodes):
            for v in n.inputs:
                if v:
                    out.setdefault(v, []).append(i)
        return out

    def rename(self, old, new):
        for n in self.nodes:
            n.inputs = [new if v == old else v for v in n.inputs]
        self.outputs = [new if v == old else v for v in self.outputs]

    def sole_consumer(self, value, uses):
        u = uses.get(value, [])
        return u[0] if len(u) == 1 and value not in self.outputs else None

    # -- passes --------------------------------------------------------------------------
    def fold_constants(self):
        keep = []
        for n in self.nodes:
            ins = [v for v in n.inputs if v]
            if n.op != "identity" and all(v in self.constants for v in ins) and \
                    (ins or n.op == "constant"):
                args = [self.constants[v] if v else None for v in n.inputs]
                self.constants[n.outputs[0]] = OPS[n.op].fn(n, args, None)
            else:
                keep.append(n)
        self.nodes = keep

    def drop_identities(self):
        keep = []
        for n in self.nodes:
            src = n.inputs[0] if n.inputs else None
            if n.op == "identity" and src and not (n.outputs[0] in self.outputs and
                                                   (src in self.inputs or src in self.outputs)):
                self.rename(n.outputs[0], src)
            else:
                keep.append(n)
        self.nodes = keep

    def fold_batchnorm(self):
        uses = self.uses()
        drop = set()
        for i, n in enumerate(self.nodes):
            if n.op not in _CONVS or n.attrs.get("activation") or len(n.inputs) > 1:
                continue
            j = self.sole_consumer(n.outputs[0], uses)
            if j is None or self.nodes[j].op != "affine":
                continue
            aff = self.nodes[j]
            scale = np.asarray(aff.params["scale"], np.float64)
            shift = np.asarray(aff.params["shift"], np.float64)
            w = np.asarray(n.params["weight"], np.float64)
            if scale.shape != (w.shape[0],):
                continue
            b = np.asarray(n.params.get("bias", np.zeros(w.shape[0])), np.float64)
            n.params = {"weight": (w * scale[:, None, None, None]).astype(np.float32),
                        "bias": (b * scale + shift).astype(np.float32)}
            n.attrs["folded_bn"] = True
            n.source = f"{n.source} + {aff.source}"
            self.rename(aff.outputs[0], n.outputs[0])
            drop.add(j)
        self.nodes = [n for k, n in enumerate(self.nodes) if k not in drop]

    def fuse_residual(self):
        if not self.shapes:
            return
        uses = self.uses()
        produced = {v: i for i, n in enumerate(self.nodes) for v in n.outputs}
        drop = set()
        for j, add in enumerate(self.nodes):
            if add.op != "add" or len(add.inputs) != 2:
                continue
            out_shape = self.shapes.get(add.outputs[0], (None,))[0]
            for side in (0, 1):
                u, r = add.inputs[side], add.inputs[1 - side]
                i = produced.get(u)
                if i is None or i in drop:
                    continue
                conv = self.nodes[i]
                if conv.op not in _CONVS or conv.attrs.get("activation") or len(conv.inputs) > 1 \
                        or self.sole_consumer(u, uses) != j:
                    continue
                rshape = self.shapes.get(r, (None,))[0]
                r_ready = r in self.inputs or r in self.constants or produced.get(r, 1 << 30) < i
                dtype = self.shapes.get(r, (None, None))[1]
                if rshape != out_shape or rshape != self.shapes.get(u, (None,))[0] or not r_ready \
                        or dtype != np.float32:
                    continue
                conv.inputs = conv.inputs + [r]
                conv.outputs = [add.outputs[0]]
                conv.source = f"{conv.source} + {add.source}"
                drop.add(j)
                break
        self.nodes = [n for k, n in enumerate(self.nodes) if k not in drop]

    def fuse_activations(self):
        uses = self.uses()
        drop = set()
        for i, n in enumerate(self.nodes):
            if n.op not in _EPILOGUE_OWNERS or n.attrs.get("activation"):
                continue
            j = self.sole_consumer(n.outputs[0], uses)
            if j is None:
                continue
            act = _epilogue_activation(self.nodes[j])
            if act is None:
                continue
            n.attrs["activation"] = act
            n.outputs = list(self.nodes[j].outputs)
            drop.add(j)
        self.nodes = [n for k, n in enumerate(self.nodes) if k not in drop]

    def fuse_inverted_residuals(self):
        """expand 1x1 -> depthwise -> project 1x1 (either 1x1 optional) as one node."""
        uses = self.uses()
        producer = {n.outputs[0]: i for i, n in enumerate(self.nodes)}
        drop, fused = set(), {}
        for j, d in enumerate(self.nodes):
            if j in drop or d.op != "conv" or (len(d.inputs) > 1 and d.inputs[1]):
                continue
            k = d.params["weight"].shape[0] if "weight" in d.params else 0
            if k % 16 or not _is_depthwise_of(d, k):
                continue  # channel blocks need a multiple of 16 channels
            i = producer.get(d.inputs[0])
            e = self.nodes[i] if i is not None and i not in drop else None
            if e is None or not _is_expansion(e) or self.sole_consumer(e.outputs[0], uses) != j:
                e = None
            m = self.sole_consumer(d.outputs[0], uses)
            q = self.nodes[m] if m is not None and m not in drop else None
            if q is None or not _is_projection_of(q, k):
                q = None
            elif len(q.inputs) > 1 and q.inputs[1] and \
                    producer.get(q.inputs[1], -1) >= (j if e is None else i):
                q = None  # its residual is computed after the block starts
            if e is None and q is None:
                continue  # a depthwise conv alone: nothing to fuse
            params, attrs = {"dw_weight": d.params["weight"]}, {
                "stride": d.attrs["stride"], "pads": d.attrs["pads"],
                "dilation": d.attrs["dilation"], "activation": d.attrs.get("activation")}
            if d.params.get("bias") is not None:
                params["dw_bias"] = d.params["bias"]
            for role, n in (("expand", e), ("project", q)):
                if n is None:
                    continue
                params[f"{role}_weight"] = n.params["weight"]
                if n.params.get("bias") is not None:
                    params[f"{role}_bias"] = n.params["bias"]
                attrs[f"{role}_activation"] = n.attrs.get("activation")
            if e is not None and _is_head(e):  # a head conv's geometry
                attrs["expand_stride"] = tuple(e.attrs["stride"])
                attrs["expand_pads"] = tuple(e.attrs["pads"])
            if any(n is not None and n.attrs.get("folded_bn") for n in (e, d, q)):
                attrs["folded_bn"] = True
            first, last = e or d, q or d
            inputs = [first.inputs[0]] + ([q.inputs[1]] if q is not None and len(q.inputs) > 1
                                          and q.inputs[1] else [])
            name = "+".join(n.name for n in (e, d, q) if n is not None)
            fused[self.nodes.index(first)] = Node("inverted_residual", name, inputs,
                                                  list(last.outputs), attrs, params, first.source)
            drop.update(self.nodes.index(n) for n in (e, d, q) if n is not None)
        out = []
        for idx, n in enumerate(self.nodes):
            if idx in fused:
                out.append(fused[idx])
            elif idx not in drop:
                out.append(n)
        self.nodes = out

    def _qparams(self, n):
        """(scale, zero point, dtype name) of a per-tensor QuantizeLinear or DequantizeLinear
        node with constant scale and zero point, else None (a missing zero point is
        uint8's 0, as for QuantizeLinear)."""
        if len(n.inputs) < 2 or n.inputs[1] not in self.constants:
            return None
        s = np.asarray(self.constants[n.inputs[1]])
        z = self.constants.get(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] else None
        if len(n.inputs) > 2 and n.inputs[2] and z is None:
            return None
        z = np.zeros((), np.uint8) if z is None else np.asarray(z)
        if s.size != 1 or z.size != 1 or z.dtype not in (np.uint8, np.int8) or \
                not float(s.reshape(())) > 0:
            return None
        return (float(np.float32(s.reshape(()))), int(z.reshape(())), z.dtype.name)

    def fuse_qdq(self):
        """A QDQ model (QuantizeLinear -> DequantizeLinear pairs around each int8 tensor, its
        weights DequantizeLinear'd int8 initializers) on the int8 kernels:

        1. each per-tensor pair becomes one ``fake_quant`` node (x snapped to the grid);
        2. an ``add`` of fake-quantized operands, or whose sum (optionally through a relu)
           only a fake quantization reads, becomes one ``qadd`` pass with those steps in
           it, its result the quantized sum;
        3. a max pool between two fake quantizations of one grid pools the raw tensor
           (the quantization is monotone and idempotent, so the result is the same);
        4. a conv or linear whose weight came int8 (``weight_q``, the importer's) and whose
           input lies on an int8 grid becomes ``qconv`` / ``qlinear``: it quantizes its
           float input itself, so it reads the tensor before the fake quantization (the
           integers are the same), and a relu after it moves into its epilogue.  A conv
           whose groups have a number of input channels that is not a multiple of 4 and
           more than MAX_TAPS products a sum stays float, reading the fake-quantized input
           as the graph says: the int8 kernels would gather its columns (an RGB stem and
           a depthwise conv have kernels of their own: int8_conv2d's float-kernel path
           and the int8 depthwise kernel);
        5. a tensor that only int8 layers and qadds read, each on one uint8 grid, is
           stored as its integers: the qconv producing it requantizes in its epilogue (or
           the qadd stores integers), and its readers take the integers as they are (a
           qconv needs no quantizing pass, a qadd reads (q - z) * s, the value the pair
           gave): a quarter of the bytes between layers, and a pass fewer each.

        The fake quantizations nothing reads any more are then dead.  Everything the
        pairs compute is kept: a residual add sees both operands and its sum on their
        grids, as onnxruntime's QLinearAdd does."""
        from .kernels.cpu.depthwise_int8 import MAX_TAPS
        from .quantization import MAX_REDUCTION

        def index():
            return {n.outputs[0]: i for i, n in enumerate(self.nodes)}

        uses = self.uses()
        drop = set()
        for i, q in enumerate(self.nodes):
            if q.op != "quantize_linear" or q.outputs[0] in self.outputs:
                continue
            fq = self._qparams(q)
            users = uses.get(q.outputs[0], [])
            if fq is None or not users or any(
                    self.nodes[j].op != "dequantize_linear" or self._qparams(self.nodes[j]) != fq
                    for j in users):
                continue
            first = self.nodes[users[0]]
            for j in users[1:]:
                self.rename(self.nodes[j].outputs[0], first.outputs[0])
                drop.add(j)
            self.nodes[users[0]] = Node("fake_quant", first.name, [q.inputs[0]],
                                        list(first.outputs), {"fq": fq}, {},
                                        f"{q.source} + {first.source}")
            drop.add(i)
        self.nodes = [n for k, n in enumerate(self.nodes) if k not in drop]
        if not any(n.op == "fake_quant" for n in self.nodes):
            return

        def grid(v, at):
            """(raw tensor, fq) where v is a fake quantization's output, else (v, None)."""
            i = at.get(v)
            n = self.nodes[i] if i is not None else None
            if n is not None and n.op == "fake_quant":
                return n.inputs[0], n.attrs["fq"]
            return v, None

        # 2. residual adds
        uses, at, drop = self.uses(), index(), set()
        for j, add in enumerate(self.nodes):
            if add.op != "add" or len(add.inputs) != 2 or not self.shapes:
                continue
            shapes = [self.shapes.get(v, (None, None)) for v in add.inputs + add.outputs]
            if shapes[0][0] is None or any(sh != shapes[0] for sh in shapes) or \
                    shapes[0][1] != np.float32:
                continue
            # an operand whose fake quantization an earlier qadd took in is that qadd's
            # result, on the grid already
            (a, fa), (b, fb) = ((v, None) if at.get(v) in drop else grid(v, at)
                                for v in add.inputs)
            out, act, fo = add.outputs[0], None, None
            k = self.sole_consumer(out, uses)
            if k is not None and self.nodes[k].op == "relu":
                act, relu_at = "relu", k
                k = self.sole_consumer(self.nodes[k].outputs[0], uses)
            if k is not None and self.nodes[k].op == "fake_quant":
                fo = self.nodes[k].attrs["fq"]
            if act is not None and fo is None:
                act = None   # a relu alone stays its own node
            if fa is None and fb is None and fo is None:
                continue
            attrs = {"fq_a": fa, "fq_b": fb, "fq_out": fo, "activation": act}
            if fo is not None:
                out = self.nodes[k].outputs[0]
                drop.add(k)
                if act is not None:
                    drop.add(relu_at)
            self.nodes[j] = Node("qadd", add.name, [a, b], [out], attrs, {}, add.source)
        self.nodes = [n for k, n in enumerate(self.nodes) if k not in drop]

        # 3. max pools between two fake quantizations of one grid
        uses, at = self.uses(), index()
        for n in self.nodes:
            if n.op != "max_pool":
                continue
            raw, fq = grid(n.inputs[0], at)
            users = uses.get(n.outputs[0], [])
            if fq is not None and users and n.outputs[0] not in self.outputs and all(
                    self.nodes[u].op == "fake_quant" and self.nodes[u].attrs["fq"] == fq
                    for u in users):
                n.inputs = [raw] + n.inputs[1:]

        # 4. convolutions and linears on the int8 kernels
        uses, at = self.uses(), index()
        drop = set()
        for i, n in enumerate(self.nodes):
            if n.op not in ("conv", "linear") or "weight_q" not in n.params or \
                    len(n.inputs) != 1 or n.attrs.get("activation"):
                continue
            x, fq = grid(n.inputs[0], at)
            if fq is None:
                p = at.get(x)
                if p is None or self.nodes[p].op != "qadd" or not self.nodes[p].attrs["fq_out"]:
                    continue
                fq = self.nodes[p].attrs["fq_out"]   # already on the grid
            wq = n.params["weight_q"]
            if n.op == "conv" and (wq.shape[1] * wq.shape[2] * wq.shape[3] > MAX_REDUCTION
                                   or (wq.shape[1] % 4 and wq.shape[1] * wq.shape[2]
                                       * wq.shape[3] > MAX_TAPS)
                                   or n.attrs.get("algo", "auto") != "auto"):
                continue   # (Cg % 4 with more taps: the int8 kernels' column gathers)
            params = {"weight_q": wq, "w_scale": np.asarray(n.params["w_scale"], np.float32)}
            if n.params.get("bias") is not None:
                params["bias"] = n.params["bias"]
            attrs = {k: v for k, v in n.attrs.items() if k != "algo"}
            attrs.update(x_scale=fq[0], x_zero_point=fq[1], x_dtype=fq[2],
                         float_weight_shape=tuple(n.params["weight"].shape))
            k = self.sole_consumer(n.outputs[0], uses)
            outs = list(n.outputs)
            if k is not None and _epilogue_activation(self.nodes[k]) in ("relu", "relu6"):
                attrs["activation"] = _epilogue_activation(self.nodes[k])
                outs = list(self.nodes[k].outputs)
                drop.add(k)
            self.nodes[i] = Node("qconv" if n.op == "conv" else "qlinear", n.name, [x], outs,
                                 attrs, params, n.source)
        self.nodes = [n for k, n in enumerate(self.nodes) if k not in drop]

        # 5. uint8 tensors between the int8 layers
        self.drop_dead()
        uses = self.uses()
        for n in self.nodes:
            v = n.outputs[0]
            if n.op == "qconv" and "out_scale" not in n.attrs and "x_scale" in n.attrs:
                grid_of = None   # the grid its readers quantize to
            elif n.op == "qadd" and n.attrs["fq_out"] and not n.attrs.get("int_out"):
                grid_of = n.attrs["fq_out"]
            else:
                continue
            readers = [self.nodes[j] for j in uses.get(v, [])]
            grids = set()
            for r in readers:
                if r.op == "qconv" and r.inputs[0] == v and v not in r.inputs[1:]:
                    grids.add((r.attrs["x_scale"], r.attrs["x_zero_point"], r.attrs["x_dtype"]))
                elif r.op == "qadd" and r.inputs.count(v) == 1:
                    side = "ab"[r.inputs.index(v)]
                    grids.add(r.attrs[f"fq_{side}"] or grid_of)
                else:
                    grids.add(None)
            if v in self.outputs or not readers or len(grids) != 1:
                continue
            fq = grids.pop()
            if fq is None or fq[2] != "uint8" or (grid_of is not None and fq != grid_of):
                continue
            if n.op == "qconv":
                n.attrs.update(out_scale=fq[0], out_zero_point=fq[1], out_dtype=fq[2])
            else:
                n.attrs["int_out"] = True
            for r in readers:
                if r.op == "qadd":
                    side = "ab"[r.inputs.index(v)]
                    r.attrs[f"fq_{side}"], r.attrs[f"int_{side}"] = fq, True

    def fuse_quantize_readers(self):
        """A per-tensor QuantizeLinear whose every reader is an int8 layer (qconv / qlinear,
        as its input) on the same grid is dropped: the readers take the float tensor and
        quantize it themselves, on the way into their own layout (a model in the operator
        form quantizes its float input so; NumPy's pass had cost 0.2 ms on a 224x224
        image).  The integers are the same but where x * (1/s) and QuantizeLinear's x / s
        round apart, at an exact half-way point."""
        uses = self.uses()
        drop = set()
        for i, q in enumerate(self.nodes):
            if q.op != "quantize_linear" or q.outputs[0] in self.outputs:
                continue
            fq = self._qparams(q)
            readers = [self.nodes[j] for j in uses.get(q.outputs[0], [])]
            if fq is None or not readers or any(
                    r.op not in ("qconv", "qlinear") or r.inputs[0] != q.outputs[0]
                    or q.outputs[0] in r.inputs[1:]
                    or (r.attrs.get("x_scale"), r.attrs.get("x_zero_point"),
                        r.attrs.get("x_dtype")) != fq for r in readers):
                continue
            for r in readers:
                r.inputs = [q.inputs[0]] + r.inputs[1:]
            drop.add(i)
        self.nodes = [n for k, n in enumerate(self.nodes) if k not in drop]

    def fuse_global_pool(self):
        """A stride-1 1x1 conv whose only consumer is a global average pool computes the
        pool itself (functional.conv2d_global_avg_pool)."""
        uses = self.uses()
        drop = set()
        for i, n in enumerate(self.nodes):
            if n.op != "conv" or "weight" not in n.params or n.attrs.get("global_pool"):
                continue
            a, w = n.attrs, n.params["weight"]
            if not (w.ndim == 4 and w.shape[2:] == (1, 1) and tuple(a["stride"]) == (1, 1)
                    and not any(a["pads"]) and a.get("algo", "auto") == "auto"):
                continue
            j = self.sole_consumer(n.outputs[0], uses)
            if j is None:
                continue
            p = self.nodes[j]
            size = p.attrs.get("output_size")
            if not (p.op == "global_avg_pool" or (p.op == "adaptive_avg_pool"
                                                  and size in (1, (1, 1), [1, 1]))):
                continue
            n.attrs["global_pool"] = True
            n.outputs = list(p.outputs)
            drop.add(j)
        self.nodes = [n for k, n in enumerate(self.nodes) if k not in drop]

    def drop_dead(self):
        while True:
            uses = self.uses()
            keep = [n for n in self.nodes if n.outputs[0] in self.outputs or n.outputs[0] in uses]
            if len(keep) == len(self.nodes):
                break
            self.nodes = keep
        used = set(uses) | set(self.outputs)
        self.constants = {k: v for k, v in self.constants.items() if k in used}


def optimize(model, example_input=None, backend="auto", fuse=True):
    """An optimized copy of ``model`` (a :class:`fastconv.graph.Model`).

    ``example_input`` (array or tuple of arrays) gives the shapes residual fusion
    and kernel choice need; without it the model's import example is used.
    ``backend``: "cpu", "cuda" (the model then runs device-resident: activations stay
    on the GPU between layers) or "auto" (CUDA when the example is a device array).
    The result is run once on the example, so its kernels are compiled and its
    buffers planned before the first real call.
    """
    if not isinstance(model, Model):
        raise TypeError(f"optimize: expected a fastconv Model (fc.from_torch / fc.from_onnx), "
                        f"got {type(model).__name__}")
    be = _backend.resolve(backend, "optimize")
    examples = _examples(model, example_input)
    rw = _Rewriter(model)
    rw.fold_constants()
    rw.drop_identities()
    if fuse:
        rw.fold_batchnorm()
        if examples is not None:
            tmp = Model(rw.nodes, rw.inputs, rw.outputs, rw.constants, model.name,
                        model.input_shapes, model.input_dtypes)
            rw.shapes = tmp.shapes(*examples)
        on_gpu = be == "cuda" or (be == "auto" and examples is not None
                                  and any(_is_device(e) for e in examples))
        on_cpu = not on_gpu and not _backend.may_use_gpu(np.zeros(0, np.float32))
        if on_cpu:   # (the fake quantizations and adds are CPU kernels)
            rw.fuse_qdq()
            rw.fuse_quantize_readers()
        rw.fuse_residual()
        rw.fuse_activations()
        if on_cpu:
            rw.fuse_inverted_residuals()
            rw.fuse_global_pool()
    rw.drop_dead()
    out = Model(rw.nodes, rw.inputs, rw.outputs, rw.constants, model.name, model.input_shapes,
                model.input_dtypes)
    out.example_shapes = ([tuple(np.shape(e)) for e in examples] if examples is not None
                          else getattr(model, "example_shapes", None))
    if be == "cuda" or (be == "auto" and examples is not None
                        and any(_is_device(e) for e in examples)):
        out.backend = "cuda"
    if examples is not None:
        from .tuning import apply_cached
        apply_cached(out, examples)
        out(*examples)
    return out


def _is_device(a):
    from . import _cuda
    return _cuda.is_device_array(a)


def _examples(model, example_input):
    if example_input is None:
        shapes = getattr(model, "example_shapes", None)
        if not shapes:
            return None
        rng = np.random.default_rng(0)
        kinds = [model.input_dtypes.get(name) for name in model.inputs]
        return tuple(rng.standard_normal(s).astype(np.float32) if dt is None else
                     rng.integers(np.iinfo(dt).min, np.iinfo(dt).max + 1, s).astype(dt)
                     for s, dt in zip(shapes, kinds))
    ex = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    return tuple(ex)
