"""Model benchmarks: each zoo model end to end at 224x224, fastconv vs PyTorch eager vs
onnxruntime (graph optimizations on), grouped per model and batch.

    python -m pytest bench/test_bench_models.py --benchmark-only --benchmark-group-by=group

Peers share this process: OpenMP waits passively (conftest) and onnxruntime's
pool does not spin, so a pool that just finished never steals fastconv's cores.
For numbers with each runtime in its own process use ``fastconv bench --compare``.
"""
import io
import warnings

import numpy as np
import pytest
from conftest import annotate

import fastconv as fc
from fastconv import models
from fastconv.ops import flops

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "vgg"]
BATCHES = [1]


def _input(batch):
    return np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)


def _model_flops(model, x):
    shapes = model.shapes(x)
    return sum(flops(n, [shapes[v][0] for v in n.inputs if v], shapes[n.outputs[0]][0])
               for n in model.nodes)


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(name):
        if name not in cache:
            torch = pytest.importorskip("torch")
            twin = models.torch_twin(name)
            x = _input(1)
            graph = fc.optimize(fc.from_torch(twin, x), x)
            cache[name] = (twin, graph, torch)
        return cache[name]
    return get


@pytest.mark.parametrize("name, batch", [(m, b) for m in MODELS for b in BATCHES])
def test_fastconv_model(benchmark, sgemm_roof, built, name, batch):
    _, graph, _ = built(name)
    x = _input(batch)
    graph(x)
    benchmark.group = f"model {name} b{batch}"
    benchmark.extra_info.update(model=name, batch=batch, runtime="fastconv")
    benchmark.pedantic(graph, args=(x,), rounds=10, iterations=1, warmup_rounds=1)
    annotate(benchmark, _model_flops(graph, x), sgemm_roof)


@pytest.mark.parametrize("name, batch", [(m, b) for m in MODELS for b in BATCHES])
def test_torch_model(benchmark, torch_mod, built, name, batch):
    twin, _, torch = built(name)
    xt = torch.from_numpy(_input(batch))
    benchmark.group = f"model {name} b{batch}"
    benchmark.extra_info.update(model=name, batch=batch, runtime="torch")
    with torch.no_grad():
        twin(xt)
        benchmark.pedantic(twin, args=(xt,), rounds=10, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("name, batch", [(m, b) for m in MODELS for b in BATCHES])
def test_onnxruntime_model(benchmark, threads, built, name, batch):
    ort = pytest.importorskip("onnxruntime")
    twin, _, torch = built(name)
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(twin, (torch.zeros((batch, 3, 224, 224)),), f, input_names=["x"],
                          opset_version=17, dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(f.getvalue(), opts, providers=["CPUExecutionProvider"])
    x = _input(batch)
    benchmark.group = f"model {name} b{batch}"
    benchmark.extra_info.update(model=name, batch=batch, runtime="onnxruntime")
    benchmark.pedantic(sess.run, args=(None, {"x": x}), rounds=10, iterations=1, warmup_rounds=1)
