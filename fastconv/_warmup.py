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
    w = np.zeros((4, 4, 3, 3), np.float32)
    for algo in planner.REGISTRY:
        F.conv2d(x, w, padding=1, algo=algo)
        F.conv2d(x, w, padding=0, algo=algo)
    F.conv2d(x, w[:, :, :1, :1], algo="im2col")
    F.linear(np.zeros((1, 4), np.float32), np.zeros((3, 4), np.float32))
    F.max_pool2d(x, 2)
    F.avg_pool2d(x, 2)
    F.adaptive_avg_pool2d(x, 1)
    return time.perf_counter() - t0
