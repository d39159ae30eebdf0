"""Kernel microbenchmarks: every algorithm on every layer of the ResNet-50 and
MobileNetV2 tables (direct only below 0.2 GFLOP), batch 1 and 8, grouped so
that PyTorch's time for the same layer sits in the same group; the compressed
families (int8, and 90 % sparse pruned unstructured and in 4-channel blocks) on
the ResNet-50 layers in the same groups.  Run:

    python -m pytest bench --benchmark-only --benchmark-group-by=group
"""
import numpy as np
import pytest
from conftest import annotate, make_layer
from shapes import LAYERS, RESNET50, flops

import fastconv as fc
from fastconv import functional as F
from fastconv import planner

BATCHES = [1, 8]


def _algos_for(spec):
    c, h, w, k, r, s, p, g = spec
    prob = F.conv_problem((1, c, h, w), (k, c // g, r, r), s, p, 1, g)
    return [a for a, impl in planner.REGISTRY.items()
            if impl.serves(prob) is None and not (a == "direct" and prob.flops > 2e8)]


CASES = [(name, batch, algo) for name, spec in LAYERS.items() for batch in BATCHES
         for algo in _algos_for(spec) + ["auto"]]


@pytest.mark.parametrize("name, batch, algo", CASES)
def test_fastconv_layer(benchmark, sgemm_roof, name, batch, algo):
    spec = LAYERS[name]
    x, w, b = make_layer(spec, batch)
    _, _, _, _, _, s, p, g = spec
    packed = {}  # the weight cache a layer keeps (Winograd's transformed filters)
    fc.conv2d(x, w, b, s, p, 1, g, algo=algo, packed=packed)  # compile, size workspaces
    benchmark.group = f"{name} b{batch}"
    benchmark.extra_info.update(layer=name, batch=batch, algo=algo, runtime="fastconv")
    benchmark(fc.conv2d, x, w, b, s, p, 1, g, algo=algo, packed=packed)
    annotate(benchmark, flops(spec, batch), sgemm_roof)


@pytest.mark.parametrize("name, batch", [(n, b) for n in LAYERS for b in BATCHES])
def test_torch_layer(benchmark, sgemm_roof, torch_mod, name, batch):
    torch = torch_mod
    spec = LAYERS[name]
    x, w, b = (torch.from_numpy(a) for a in make_layer(spec, batch))
    _, _, _, _, _, s, p, g = spec
    conv = torch.nn.functional.conv2d
    with torch.no_grad():
        conv(x, w, b, s, p, 1, g)
        benchmark.group = f"{name} b{batch}"
        benchmark.extra_info.update(layer=name, batch=batch, algo="oneDNN", runtime="torch")
        benchmark(conv, x, w, b, s, p, 1, g)
    annotate(benchmark, flops(spec, batch), sgemm_roof)


COMPRESSED = [(name, batch, family) for name in RESNET50 if "stem" not in name
              for batch in BATCHES for family in ("int8", "csr90", "bsr90")]


@pytest.mark.parametrize("name, batch, family", COMPRESSED)
def test_compressed_layer(benchmark, sgemm_roof, name, batch, family):
    """int8 (uint8 activations, per-channel int8 weights, float32 out) and the sparse
    kernels at 90 %: GFLOP/s counts the dense layer's multiply-adds, so it compares with
    the fp32 kernels of the same group."""
    spec = LAYERS[name]
    x, w, b = make_layer(spec, batch)
    _, _, _, _, _, s, p, g = spec
    packed = {}
    if family == "int8":
        xq, sx, zx = fc.quantize_tensor(np.maximum(x, 0), dtype="uint8")
        wq, sw, _ = fc.quantize_tensor(w, axis=0)
        fn, args = fc.int8_conv2d, (xq, sx, zx, wq, sw, b, s, p)
    else:
        from fastconv.graph import Model, Node
        node = Node("conv", "c", ["x"], ["y"], dict(stride=(s, s), pads=(p,) * 4,
                                                    dilation=(1, 1), groups=g), {"weight": w})
        pruned = fc.prune(Model([node], ["x"], ["y"]), 0.9, example_input=x,
                          block=4 if family == "bsr90" else 1)
        fn, args = fc.sparse_conv2d, (x, pruned.nodes[0].params["weight"], b, s, p)
    fn(*args, packed=packed)  # compile, pack
    benchmark.group = f"{name} b{batch}"
    benchmark.extra_info.update(layer=name, batch=batch, algo=family, runtime="fastconv")
    benchmark(fn, *args, packed=packed)
    annotate(benchmark, flops(spec, batch), sgemm_roof)


def test_call_overhead(benchmark):
    """Fixed cost of a fastconv call on a tiny layer (dispatch, validation, thread wake-up)."""
    x = np.zeros((1, 4, 4, 4), np.float32)
    w = np.zeros((4, 4, 1, 1), np.float32)
    fc.conv2d(x, w)
    benchmark.group = "overhead"
    benchmark(fc.conv2d, x, w)


def test_layer_call_overhead(benchmark):
    """The same call as a layer makes it (a weight cache dict): the repeat-call fast
    path, planned and bound at the first call."""
    x = np.zeros((1, 4, 4, 4), np.float32)
    w = np.zeros((4, 4, 1, 1), np.float32)
    packed = {}
    fc.conv2d(x, w, packed=packed)
    benchmark.group = "overhead"
    benchmark(fc.conv2d, x, w, packed=packed)
