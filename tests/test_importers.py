"""fc.from_torch and fc.from_onnx against the source runtimes (torch, onnxruntime)."""
import io

import numpy as np
import pytest
from conftest import rel_err

import fastconv as fc

torch = pytest.importorskip("torch")
tnn = torch.nn
tF = torch.nn.functional


@pytest.fixture(autouse=True)
def _one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class Kitchen(tnn.Module):
    """Most of what from_torch claims, in one forward: reflect padding, BN, hardswish,
    depthwise, squeeze-excitation, transposed conv, cat, nearest and bilinear resize,
    pools, mean, view(x.size(0), -1), scalar arithmetic, softmax."""

    def __init__(self):
        super().__init__()
        self.stem = tnn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect")
        self.bn = tnn.BatchNorm2d(8)
        self.act = tnn.Hardswish()
        self.dw = tnn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
        self.se1 = tnn.Conv2d(8, 4, 1)
        self.se2 = tnn.Conv2d(4, 8, 1)
        self.up = tnn.ConvTranspose2d(8, 6, 4, stride=2, padding=1)
        self.pw = tnn.Conv2d(22, 12, 1)
        self.pool = tnn.MaxPool2d(3, 2, 1)
        self.avg = tnn.AvgPool2d(2, ceil_mode=True, count_include_pad=False)
        self.lin = tnn.Linear(12, 5)
        self.drop = tnn.Dropout(0.3)

    def forward(self, x):
        y = self.act(self.bn(self.stem(x)))
        z = tF.relu6(self.dw(y))
        s = tF.adaptive_avg_pool2d(z, 1)
        s = torch.sigmoid(self.se2(tF.silu(self.se1(s))))
        z = z * s
        u = tF.leaky_relu(self.up(z), 0.1)
        c = torch.cat([u, tF.interpolate(z, scale_factor=2, mode="nearest"),
                       tF.interpolate(z, scale_factor=2, mode="bilinear", align_corners=False)], 1)
        c = tF.hardsigmoid(self.pw(c)) - 0.5
        c = self.avg(self.pool(c))
        c = self.drop(c.mean((2, 3)))
        c = c.view(c.size(0), -1)
        return tF.softmax(self.lin(c) * 2.0 + 1.0, dim=1)


def _randomize_bn(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, tnn.BatchNorm2d):
            mod.running_mean.copy_(0.1 * torch.randn(mod.num_features, generator=g))
            mod.running_var.copy_(0.5 + torch.rand(mod.num_features, generator=g))
            mod.weight.data.copy_(0.5 + torch.rand(mod.num_features, generator=g))
            mod.bias.data.copy_(0.1 * torch.randn(mod.num_features, generator=g))
    return m.eval()


def _kitchen():
    torch.manual_seed(0)
    return _randomize_bn(Kitchen())


def _torch_out(m, x):
    with torch.no_grad():
        return m(torch.from_numpy(x)).numpy()


def test_from_torch_kitchen_sink(rng):
    m = _kitchen()
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    model = fc.from_torch(m, x)
    expected = _torch_out(m, x)
    assert rel_err(model(x), expected) < 1e-5
    opt = fc.optimize(model, x)
    assert len(opt.nodes) < len(model.nodes)
    assert rel_err(opt(x), expected) < 1e-5
    # the batch dimension stays free; torch in -> torch out
    x3 = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    out = opt(torch.from_numpy(x3))
    assert isinstance(out, torch.Tensor)
    assert rel_err(out.numpy(), _torch_out(m, x3)) < 1e-5


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "vgg", "resnet50", "resnext50"])
def test_from_torch_zoo(rng, name):
    from fastconv import models
    twin = models.torch_twin(name, num_classes=10)
    x = rng.standard_normal((1, 3, 48, 40)).astype(np.float32)
    model = fc.optimize(fc.from_torch(twin, x), x)
    assert rel_err(model(x), _torch_out(twin, x)) < 1e-4
    convs = [n for n in model.nodes if n.op == "conv"]
    assert all(n.attrs.get("folded_bn") for n in convs if n.params["weight"].shape[2] > 1
               or name != "vgg")
    if name.startswith("resnet"):  # every block's residual add rides in a conv epilogue
        assert not [n for n in model.nodes if n.op == "add"]
        assert any(len(n.inputs) == 2 for n in convs)


def test_from_torch_fuses_like_the_layer_api(rng):
    """Import + optimize of a ResNet block leaves one kernel call per conv."""
    from fastconv import models
    twin = models.torch_twin("resnet_tiny", widths=(8, 16, 16, 16), num_classes=4)
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    model = fc.optimize(fc.from_torch(twin, x), x)
    ops = [n.op for n in model.nodes]
    assert ops.count("conv") == 1 + 4 * 2 + 3  # stem, two per block, three downsamples
    assert set(ops) == {"conv", "max_pool", "global_avg_pool", "flatten", "linear"}


def test_from_torch_resnext_block(rng):
    """A ResNeXt bottleneck (32 groups of 4 channels, then of 8 with stride 2): imported,
    optimized (BN folded, ReLU and the residual in the epilogues) and equal to torch; the
    grouped 3x3s run on the grouped families where the planner's tables have them."""
    from fastconv.graph import kernel_of

    class Block(tnn.Module):
        def __init__(self, c, width, stride):
            super().__init__()
            self.body = tnn.Sequential(
                tnn.Conv2d(c, width, 1, bias=False), tnn.BatchNorm2d(width), tnn.ReLU(),
                tnn.Conv2d(width, width, 3, stride, 1, groups=32, bias=False),
                tnn.BatchNorm2d(width), tnn.ReLU(),
                tnn.Conv2d(width, 2 * c if stride > 1 else c, 1, bias=False),
                tnn.BatchNorm2d(2 * c if stride > 1 else c))
            self.down = (tnn.Sequential(tnn.Conv2d(c, 2 * c, 1, stride, bias=False),
                                        tnn.BatchNorm2d(2 * c)) if stride > 1 else None)

        def forward(self, x):
            return torch.relu(self.body(x) + (x if self.down is None else self.down(x)))

    m = tnn.Sequential(Block(64, 128, 1), Block(64, 256, 2))
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, tnn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
    m.eval()
    x = rng.standard_normal((2, 64, 20, 20)).astype(np.float32)
    model = fc.optimize(fc.from_torch(m, x), x)
    assert rel_err(model(x), _torch_out(m, x)) < 1e-4
    assert not [n for n in model.nodes if n.op in ("add", "batch_norm", "relu")]
    grouped = [n for n in model.nodes if n.op == "conv" and n.attrs["groups"] == 32]
    assert len(grouped) == 2
    if fc.planner.VECTOR_LANES == 16:
        shapes = [(2, 128, 20, 20), (2, 256, 20, 20)]
        assert [kernel_of(n, [s]) for n, s in zip(grouped, shapes)] == ["grouped_blocked"] * 2


def test_from_torch_functional_conv_and_methods(rng):
    class M(tnn.Module):
        def __init__(self):
            super().__init__()
            self.w = tnn.Parameter(torch.randn(4, 3, 3, 3))
            self.b = tnn.Parameter(torch.randn(4))
            self.fc = tnn.Linear(4 * 3 * 3, 2)

        def forward(self, x):
            y = tF.conv2d(x, self.w, self.b, stride=2, padding=1).relu()
            y = y.permute(0, 1, 3, 2).contiguous().clamp(min=0.1, max=2.0)
            n, c, h, w = y.shape
            y = y.reshape(n, c * h * w)
            return torch.tanh(self.fc(y)).unsqueeze(1).squeeze(1)

    torch.manual_seed(1)
    m = M().eval()
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    model = fc.from_torch(m, x)
    assert rel_err(model(x), _torch_out(m, x)) < 1e-5
    x5 = rng.standard_normal((5, 3, 6, 6)).astype(np.float32)
    assert rel_err(model(x5), _torch_out(m, x5)) < 1e-5


class Bad(tnn.Module):
    def __init__(self):
        super().__init__()
        self.conv = tnn.Conv2d(3, 3, 1)
        self.gn = tnn.GroupNorm(1, 3)

    def forward(self, x):
        y = torch.erf(self.conv(x))
        y = self.gn(y)
        return torch.cumsum(y, 1)


def test_from_torch_lists_every_unsupported_op_with_its_source_line():
    x = np.zeros((1, 3, 4, 4), np.float32)
    with pytest.raises(fc.UnsupportedError) as info:
        fc.from_torch(Bad(), x)
    msg = str(info.value)
    assert "3 operation(s)" in msg
    for what in ("erf", "GroupNorm", "cumsum"):
        assert what in msg
    assert msg.count("test_importers.py") == 3


def test_from_torch_untraceable_control_flow_is_a_clear_error():
    class Branchy(tnn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(fc.UnsupportedError, match="cannot trace Branchy"):
        fc.from_torch(Branchy(), np.zeros((1, 3, 4, 4), np.float32))


def test_from_torch_restores_training_mode_and_rejects_non_modules():
    m = _kitchen().train()
    fc.from_torch(m, np.zeros((1, 3, 8, 8), np.float32))
    assert m.training and m.bn.training
    with pytest.raises(TypeError, match="torch.nn.Module"):
        fc.from_torch(lambda x: x, np.zeros((1, 3, 8, 8), np.float32))


# -- ONNX ---------------------------------------------------------------------------------------

onnx = pytest.importorskip("onnx")


def _export(m, x, opset, dynamic=True):
    f = io.BytesIO()
    kw = dict(input_names=["x"], output_names=["y"], opset_version=opset, dynamo=False)
    if dynamic:
        kw["dynamic_axes"] = {"x": {0: "N"}, "y": {0: "N"}}
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.from_numpy(x),), f, **kw)
    return f.getvalue()


def _ort(blob, x):
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_from_onnx_kitchen_sink_matches_onnxruntime_and_torch(rng, opset):
    m = _kitchen()
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    blob = _export(m, x, opset)
    model = fc.from_onnx(blob)
    expected = _torch_out(m, x)
    assert rel_err(model(x), expected) < 1e-5
    assert rel_err(model(x), _ort(blob, x)) < 1e-5
    opt = fc.optimize(model, x)
    x4 = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)  # dynamic batch
    assert rel_err(opt(x4), _torch_out(m, x4)) < 1e-5


@pytest.mark.parametrize("opset", [9, 11])
def test_from_onnx_old_opsets(rng, opset):
    from fastconv import models
    twin = models.torch_twin("resnet_tiny", widths=(8, 16, 16, 16), num_classes=4)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    blob = _export(twin, x, opset)
    model = fc.optimize(fc.from_onnx(blob), x)
    assert rel_err(model(x), _torch_out(twin, x)) < 1e-4
    assert [n.op for n in model.nodes].count("conv") == 12


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
def test_from_onnx_zoo_matches_onnxruntime(rng, name, tmp_path):
    from fastconv import models
    twin = models.torch_twin(name, num_classes=10)
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(_export(twin, x, 17))
    model = fc.optimize(fc.from_onnx(str(path)), x)
    assert rel_err(model(x), _ort(path.read_bytes(), x)) < 1e-4


def _single(op_type, inputs, outputs, attrs=None, inits=(), opset=17):
    from onnx import TensorProto, helper
    node = helper.make_node(op_type, [i[0] for i in inputs] + [t.name for t in inits],
                            [o[0] for o in outputs], **(attrs or {}))
    g = helper.make_graph([node], "g",
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
                          initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_from_onnx_errors():
    from onnx import helper, numpy_helper
    with pytest.raises(ValueError, match="opset 8 is not supported"):
        fc.from_onnx(_single("Relu", [("x", [1, 2])], [("y", [1, 2])], opset=8))
    m = _single("Erf", [("x", [1, 2])], [("y", [1, 2])])
    m.graph.node.append(helper.make_node("Einsum", ["y", "y"], ["z"], equation="ij,ij->ij"))
    m.graph.output[0].name = "z"
    with pytest.raises(fc.UnsupportedError) as info:
        fc.from_onnx(m)
    assert "Erf" in str(info.value) and "Einsum" in str(info.value)
    w = numpy_helper.from_array(np.ones((2, 2, 3, 3), np.float32), "w")
    qconv = _single("Conv", [("x", [1, 2, 5, 5])], [("y", [1, 2, 3, 3])], inits=[w])
    qconv.graph.node[0].op_type = "QLinearConv"   # a malformed one: a weight as x_scale
    with pytest.raises(fc.UnsupportedError, match="QLinearConv input must be quantized per "
                                                  "tensor"):
        fc.from_onnx(qconv)
    with pytest.raises(TypeError, match="ModelProto"):
        fc.from_onnx(12)
    with pytest.raises(ValueError, match="cannot read"):
        fc.from_onnx("/nonexistent/model.onnx")


def test_from_onnx_shape_arithmetic_folds_or_stays_dynamic(rng):
    """x.view(x.size(0), -1) exports as Shape/Gather/Unsqueeze/Concat/Reshape: with a free
    batch it stays as tiny integer ops; with a static batch it folds away entirely."""
    class Flat(tnn.Module):
        def forward(self, x):
            return (x * 2.0).view(x.size(0), -1)

    x = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    dyn = fc.from_onnx(_export(Flat(), x, 13, dynamic=True))
    static = fc.optimize(fc.from_onnx(_export(Flat(), x, 13, dynamic=False)), x)
    assert [n.op for n in static.nodes] == ["mul", "reshape"]
    assert any(n.op == "shape" for n in dyn.nodes)
    x5 = rng.standard_normal((5, 2, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(dyn(x5), (x5 * 2).reshape(5, -1))
    np.testing.assert_array_equal(static(x), (x * 2).reshape(3, -1))


def test_from_torch_takes_weights_pruned_by_torch(rng):
    """torch.nn.utils.prune leaves weight = weight_orig * weight_mask; the import sees the zeros
    and fc.prune(amount=0) switches the layer to CSR."""
    from torch.nn.utils import prune as tprune

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv = tnn.Conv2d(64, 64, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.conv(x))

    torch.manual_seed(0)
    m = Net().eval()
    tprune.l1_unstructured(m.conv, "weight", amount=0.9)
    x = rng.standard_normal((1, 64, 28, 28)).astype(np.float32)
    model = fc.optimize(fc.from_torch(m, x), x)
    sparse = fc.prune(model, amount=0, example_input=x)
    rep = sparse.prune_report[0]
    assert abs(rep["sparsity"] - 0.9) < 0.01 and rep["kernel"] == "csr"
    assert rel_err(sparse(x), _torch_out(m, x)) < 1e-5
