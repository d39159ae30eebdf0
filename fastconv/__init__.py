"""fastconv: fast CNN inference kernels in Numba behind a torch.nn-shaped API.

>>> import fastconv as fc
>>> y = fc.conv2d(x, w, b, stride=1, padding=1, activation="relu")
>>> net = fc.nn.Sequential(fc.nn.Conv2d(3, 16, 3, padding=1), fc.nn.ReLU())
"""
from ._runtime import get_num_threads, set_num_threads, threading_layer  # noqa: I001  (loads TBB first)
from . import nn, planner
from ._backend import get_backend, set_backend
from ._warmup import warmup
from .functional import (adaptive_avg_pool2d, avg_pool2d, batch_norm, conv2d, conv_transpose2d,
                         explain, fold_batchnorm, linear, max_pool2d)
from .compress import quantize, share_weights
from .graph import Model, Node, load
from .onnx_import import from_onnx
from .optimize import optimize
from .quantization import dequantize_tensor, int8_conv2d, int8_gemm, quantize_tensor
from .sparse import prune, sparse_conv2d, sparse_linear
from .torch_import import UnsupportedError, from_torch
from .tuning import export_plans, import_plans, tune

__version__ = "0.1.0"

__all__ = ["conv2d", "conv_transpose2d", "Model", "Node", "load", "from_torch", "from_onnx",
           "optimize", "tune", "export_plans", "import_plans", "UnsupportedError",
           "quantize", "share_weights", "quantize_tensor", "prune", "sparse_conv2d", "sparse_linear", "dequantize_tensor", "int8_gemm", "int8_conv2d", "linear", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "batch_norm",
           "fold_batchnorm", "explain", "nn", "planner", "set_num_threads", "get_num_threads",
           "threading_layer", "set_backend", "get_backend", "warmup", "__version__"]
