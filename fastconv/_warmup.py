"""Compile (or load from the on-disk cache) every kernel a model or shape will need."""
import time

import numpy as np

from . import functional as F
from . import planner


def warmup(model=None, example_input=None):
    """Compile the kernels ahead of the first real call; returns seconds spent.

    With no arguments every CPU kernel is compiled on tiny shapes.  With a model
    and an example input, the model is run once on that input (its kernels for
    those shapes are then compiled and its workspaces sized).
    """
    t0 = time.perf_counter()
    if model is not None:
        if example_input is None:
            raise ValueError("warmup: a model needs an example_input to size its kernels")
        model(example_input)
        return time.perf_counter() - t0
    x = np.zeros((1, 4, 5, 5), np.float32)
    problems = [((4, 4, 3, 3), dict(padding=1)), ((4, 4, 3, 3), {}), ((4, 4, 1, 1), {}),
                ((4, 4, 1, 1), dict(stride=2)), ((4, 1, 3, 3), dict(padding=1, groups=4)),
                ((4, 2, 3, 3), dict(padding=1, groups=2)), ((4, 4, 2, 2), dict(stride=2)),
                ((4, 4, 3, 3), dict(padding=2, dilation=2))]
    for w_shape, kw in problems:
        w = np.zeros(w_shape, np.float32)
        prob = F.conv_problem(x.shape, w_shape, **kw)
        for name, algo in planner.REGISTRY.items():
            if algo.serves(prob) is None:
                F.conv2d(x, w, algo=name, **kw)
    # an inverted residual block's channel-blocked kernels
    z = np.zeros
    F.inverted_residual(z((1, 4, 4, 4), np.float32), (z((16, 4, 1, 1), np.float32), None, None),
                        (z((16, 1, 3, 3), np.float32), None, None, 1, 1, 1),
                        (z((32, 16, 1, 1), np.float32), None, None))
    F.conv_transpose2d(x, np.zeros((4, 8, 2, 2), np.float32), stride=2)  # as phases
    F.conv_transpose2d(x, np.zeros((4, 2, 3, 3), np.float32), stride=2)  # col2im
    F.linear(np.zeros((1, 4), np.float32), np.zeros((3, 4), np.float32))
    F.max_pool2d(x, 2)
    F.avg_pool2d(x, 2)
    F.adaptive_avg_pool2d(x, 1)  # the global kernel
    F.adaptive_avg_pool2d(x, 2)
    # a QDQ model's fake quantizations and adds, on every operand type fuse_qdq gives them
    from .kernels.cpu import fakequant as fq
    p = np.array([1, 0, 0, 255, 1], np.float32)
    f32, u8 = z(8, np.float32), z(8, np.uint8)
    fq.fake_quant(f32, f32, *p[:4])
    for a in (f32, u8):
        for b in (f32, u8):
            for y in (f32, u8):
                fq.fake_quant_add(a, b, y, p, p, p, 0)
    fq.quant_add(u8, u8, u8, p, p, p, 0)
    _warm_int8()
    return time.perf_counter() - t0


def _warm_int8():
    """A quantized model's kernels on a uint8 input, float and uint8 out: the int8 3x3 and
    1x1 convs, the depthwise kernel's two forms, a stem on the float kernels, the int8
    GEMM, and integer max pooling."""
    from . import quantization as Q
    x = np.zeros((1, 16, 6, 6), np.uint8)
    convs = [((16, 16, 3, 3), 1, 1), ((16, 16, 1, 1), 0, 1), ((16, 1, 3, 3), 1, 16),
             ((16, 1, 2, 2), 0, 16), ((8, 3, 3, 3), 1, 1)]
    for w_shape, pad, groups in convs:
        xs = x[:, :3] if w_shape[1] == 3 else x
        w = np.zeros(w_shape, np.int8)
        s = np.ones(w_shape[0], np.float32)
        Q.int8_conv2d(np.ascontiguousarray(xs), 1.0, 0, w, s, None, 1, pad, 1, groups)
        Q.int8_conv2d(np.ascontiguousarray(xs), 1.0, 0, w, s, None, 1, pad, 1, groups,
                      out_scale=1.0, out_zero_point=0, out_dtype="uint8")
    Q.int8_gemm(np.zeros((2, 8), np.uint8), np.zeros((8, 4), np.int8))
    F.max_pool2d(x, 2)
