"""Recorded kernel launches (_runtime.capture / replay) and the plans that replay them:
a replayed call must compute from what its buffers hold at replay time, exactly as the
call would, and a plan must stop replaying whenever a call would take another path."""
import threading

import numpy as np
import pytest
from conftest import num_threads, record_calls, rel_err

import fastconv as fc
from fastconv import _runtime, _workspace, functional as F, planner
from fastconv.graph import Model, Node, _Replay
from fastconv.kernels import reference as ref


def test_launch_records_only_inside_a_capture():
    seen = []
    kernel = lambda *a: seen.append(a)  # noqa: E731
    _runtime.launch(kernel, 1, 2)
    _runtime.unrecordable()  # no capture open: nothing to mark
    with _runtime.capture() as outer:
        _runtime.launch(kernel, 3)
        with _runtime.capture() as inner:
            _runtime.launch(kernel, 4, 5)
            _runtime.unrecordable()
        assert inner.launches == [(kernel, (4, 5))] and not inner.complete
    _runtime.launch(kernel, 6)
    assert seen == [(1, 2), (3,), (4, 5), (6,)]
    # the inner capture's launches and its incompleteness reach the outer one
    assert outer.launches == [(kernel, (3,)), (kernel, (4, 5))] and not outer.complete
    _runtime.replay(outer.launches)
    assert seen[-2:] == [(3,), (4, 5)]
    with _runtime.capture() as cap:
        _runtime.launch(kernel, 7)
    assert cap.complete


def test_only_replayable_bound_calls_into_given_buffers_keep_a_capture_complete(rng):
    x = rng.standard_normal((1, 16, 14, 14)).astype(np.float32)
    w = rng.standard_normal((32, 16, 1, 1)).astype(np.float32)
    y = np.empty((1, 32, 14, 14), np.float32)
    packed = {}
    for want, call in ((False, lambda: fc.conv2d(x, w, packed=packed, out=y)),  # plans, binds
                       (True, lambda: fc.conv2d(x, w, packed=packed, out=y)),   # bound
                       (False, lambda: fc.conv2d(x, w, packed=packed)),  # a new output
                       (False, lambda: fc.conv2d(x, w, packed={}, out=y)),
                       (False, lambda: fc.conv2d(x, w, algo="direct", packed=packed, out=y)),
                       # a backend asked for: the call may go to the device
                       (False, lambda: fc.conv2d(x, w, packed=packed, out=y, backend="cpu"))):
        with _runtime.capture() as cap:
            call()
        assert cap.complete == want
    fc.conv2d(x, w, algo="direct", packed=packed, out=y)
    with _runtime.capture() as cap:  # bound, but the direct kernel is not launched through it
        fc.conv2d(x, w, algo="direct", packed=packed, out=y)
    assert not cap.complete
    layer = fc.nn.Conv2d(16, 8, 3, padding=1, padding_mode="reflect")
    layer(x), layer(x)
    with _runtime.capture() as cap:
        layer(x)
    assert not cap.complete


# (algorithm, (N, C, H, W, K, R, stride, padding, groups)): every family that declares
# itself replayable, on shapes where it runs its own kernels (padding, strides, channel-
# and pixel-vectorized tiles, grouped, a residual)
REPLAYABLE = [
    ("pointwise_packed", (1, 24, 14, 14, 40, 1, 1, 0, 1)),
    ("pointwise_packed", (2, 16, 28, 28, 24, 1, 1, 0, 1)),
    ("pointwise_packed", (1, 32, 14, 14, 48, 1, 2, 0, 1)),
    ("im2col_packed", (1, 8, 15, 13, 20, 3, 2, 1, 2)),
    ("implicit_packed", (1, 16, 14, 14, 40, 3, 1, 1, 1)),
    ("implicit_packed", (1, 16, 14, 14, 24, 3, 2, 1, 1)),
    ("implicit_pixels", (1, 3, 32, 32, 16, 7, 2, 3, 1)),
    ("implicit_pixels", (1, 32, 12, 12, 32, 3, 1, 1, 4)),
    ("grouped_blocked", (2, 32, 14, 14, 32, 3, 1, 1, 8)),
    ("grouped_blocked", (1, 64, 13, 11, 64, 3, 2, 1, 2)),
    ("depthwise_blocked", (2, 32, 14, 14, 32, 3, 1, 1, 32)),
    ("depthwise_blocked", (1, 24, 17, 15, 24, 5, 2, 2, 24)),
    ("winograd_f2x2_3x3", (1, 16, 14, 14, 24, 3, 1, 1, 1)),
    ("winograd_f4x4_3x3", (2, 8, 11, 9, 12, 3, 1, 1, 1)),
    ("rowdot", (1, 32, 4, 4, 16, 3, 1, 1, 1)),
    ("patch_packed", (1, 6, 13, 11, 10, 2, 2, 1, 2)),
    ("dilated_phases", (1, 32, 28, 28, 32, 3, 1, 2, 1, 2)),  # + dilation
    ("dilated_phases", (2, 8, 13, 11, 12, 3, 1, 3, 2, 3)),
]


def test_every_replayable_family_is_covered():
    declared = {a.name for a in planner.REGISTRY.values() if a.replayable}
    assert declared == {name for name, _ in REPLAYABLE}


@pytest.mark.parametrize("algo, shape", REPLAYABLE)
def test_a_replayed_bound_call_reads_its_buffers_afresh(rng, algo, shape):
    """Capture one bound call, write new data into its input and residual in place,
    replay: the output is the convolution of the new data (nothing the call did in
    Python between its kernels is missing)."""
    n, c, h, w, k, r, stride, pad, groups, *dil = shape
    dil = dil[0] if dil else 1
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((k, c // groups, r, r)) / np.sqrt(c * r * r / groups)
          ).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    span = dil * (r - 1) + 1
    oh, ow = (h + 2 * pad - span) // stride + 1, (w + 2 * pad - span) // stride + 1
    res = rng.standard_normal((n, k, oh, ow)).astype(np.float32)
    packed = {}
    fc.conv2d(x, wt, b, stride, pad, dil, groups, "relu", algo, res, packed)
    bound = packed[F._BOUND]
    assert bound.replayable
    y = np.empty((n, k, oh, ow), np.float32)
    with _runtime.kernel_scope(blas=bound.blas), _runtime.capture() as cap:
        bound.run(x, y, res)
    assert cap.complete and cap.launches
    x[...] = rng.standard_normal(x.shape)
    res[...] = rng.standard_normal(res.shape)
    y.fill(np.nan)
    with _runtime.kernel_scope(blas=bound.blas):
        _runtime.replay(cap.launches)
    want = np.maximum(ref.conv2d(x, wt, b, stride, pad, dil, groups) + res, 0)
    assert rel_err(y, want) < 1e-4


@pytest.mark.parametrize("c, e, h, stride, residual", [
    (32, 192, 14, 1, True),    # channel-blocked: expansion + depthwise as one kernel
    (24, 144, 56, 1, True),    # streamed by rows
    (32, 192, 28, 2, False),   # strided, no residual
])
def test_a_replayed_inverted_residual_reads_its_buffers_afresh(rng, c, e, h, stride, residual):
    x = rng.standard_normal((1, c, h, h)).astype(np.float32)
    w1 = (rng.standard_normal((e, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
    w2 = (rng.standard_normal((e, 1, 3, 3)) / 3).astype(np.float32)
    k = c if residual else 2 * c
    w3 = (rng.standard_normal((k, e, 1, 1)) / np.sqrt(e)).astype(np.float32)
    b1, b2, b3 = (rng.standard_normal(m).astype(np.float32) for m in (e, e, k))
    expand, dw, project = (w1, b1, "relu6"), (w2, b2, "relu6", stride, 1, 1), (w3, b3, None)
    oh = (h - 1) // stride + 1
    res = x if residual else None
    packed = {}
    F.inverted_residual(x, expand, dw, project, res, packed)
    call = packed[F._IR][2]
    assert call.replayable
    y = np.empty((1, k, oh, oh), np.float32)
    with _runtime.capture() as cap:
        call(x, y, res)
    assert cap.complete and cap.launches
    x[...] = rng.standard_normal(x.shape)
    y.fill(np.nan)
    with _runtime.kernel_scope(blas=False):
        _runtime.replay(cap.launches)
    z = np.clip(ref.conv2d(x, w1, b1), 0, 6)
    d = np.clip(ref.conv2d(z, w2, b2, stride, 1, 1, e), 0, 6)
    want = ref.conv2d(d, w3, b3) + (x if residual else 0)
    assert rel_err(y, want) < 1e-4


def test_a_head_block_is_not_replayable(rng):
    """The stem's inverted residual (streamed by rows at 224x224) pads its input and clears
    the slack in NumPy: its bound call says it may not be replayed."""
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    w0 = rng.standard_normal((32, 3, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((32, 1, 3, 3)).astype(np.float32)
    w3 = rng.standard_normal((16, 32, 1, 1)).astype(np.float32)
    z = np.zeros(32, np.float32)
    packed = {}
    F.inverted_residual(x, (w0, z, "relu6", 2, 1), (w2, z, "relu6", 1, 1, 1),
                        (w3, np.zeros(16, np.float32), None), None, packed)
    assert packed[F._IR][2].replayable is False
    assert not getattr(_ir_call((1, 3, 64, 64), w0, w2, w3), "replayable", False)  # separate


def _ir_call(x_shape, w0, w2, w3):
    packed = {}
    z = np.zeros(w0.shape[0], np.float32)
    F.inverted_residual(np.zeros(x_shape, np.float32), (w0, z, "relu6", 2, 1),
                        (w2, z, "relu6", 1, 1, 1), (w3, np.zeros(w3.shape[0], np.float32), None),
                        None, packed)
    return packed[F._IR][2]


def _chain(rng, c=16, h=14):
    """x -> 1x1 (c -> 4c) -> 3x3 (4c) -> 1x1 (4c -> c) + x -> relu -> 3x3 depthwise ->
    gap -> flatten: convolutions the plan replays, between steps it runs as they are."""
    def conv(name, ins, out, k, cin, r, groups=1, act="relu"):
        w = (rng.standard_normal((k, cin // groups, r, r)) / np.sqrt(cin * r * r / groups)
             ).astype(np.float32)
        attrs = dict(stride=(1, 1), pads=(r // 2,) * 4, dilation=(1, 1), groups=groups,
                     activation=act)
        return Node("conv", name, ins, [out], attrs,
                    {"weight": w, "bias": rng.standard_normal(k).astype(np.float32)})
    nodes = [conv("a", ["x"], "a", 4 * c, c, 1), conv("b", ["a"], "b", 4 * c, 4 * c, 3),
             conv("c", ["b", "x"], "c", c, 4 * c, 1, act="relu"),
             conv("d", ["c"], "d", c, c, 3, groups=c), conv("e", ["d"], "e", 2 * c, c, 1),
             Node("global_avg_pool", "gap", ["e"], ["f"]),
             Node("flatten", "flat", ["f"], ["y"], {"start": 1, "end": -1})]
    return Model(nodes, ["x"], ["y"], name="chain", input_shapes={"x": (None, c, None, None)})


def _replays(model, x):
    plan = model._plans()[(x.shape,)]
    return [it for it in (plan.program.items if plan.program else ()) if type(it) is _Replay]


def test_a_model_plan_replays_its_convolutions(rng, monkeypatch):
    """From the third run on, the convolutions that read only the plan's own buffers run
    as replays of their recorded kernels; every run equals a fresh model's first
    (unrecorded) run."""
    import pickle
    model = _chain(rng)
    x = rng.standard_normal((1, 16, 14, 14)).astype(np.float32)
    fresh = pickle.loads(pickle.dumps(model))
    model(x), model(x)
    groups = _replays(model, x)
    # a and c read the model's input (c as its residual): they run as planned
    assert [[st[1].name for st in g.steps] for g in groups] == [["b"], ["d", "e"]]
    replays = record_calls(monkeypatch, _runtime, "replay")
    for _ in range(3):
        x2 = rng.standard_normal(x.shape).astype(np.float32)
        np.testing.assert_array_equal(model(x2), pickle.loads(pickle.dumps(fresh))(x2))
    assert len(replays) == 6
    assert "replay: 3 of 7 nodes run as 4 recorded kernel launches" in model.explain(x, repeat=1)
    bare = Model([Node("relu", "r", ["x"], ["y"])], ["x"], ["y"])
    assert "replay: none" in bare.explain(x, repeat=1)


def test_a_model_plan_stops_replaying_when_a_call_would_change(rng, monkeypatch):
    """A replaced weight, another thread count or a grown workspace: the runs take the
    planned calls (each equal to a fresh model's) until one has recorded them again."""
    import pickle
    model = _chain(rng)
    x = rng.standard_normal((1, 16, 14, 14)).astype(np.float32)
    model(x), model(x)
    replays = record_calls(monkeypatch, _runtime, "replay")

    def check(groups_replayed):
        n = len(replays)
        want = pickle.loads(pickle.dumps(model))(x)
        np.testing.assert_allclose(model(x), want, rtol=1e-5, atol=1e-6)
        assert len(replays) - n == groups_replayed

    check(2)
    node = [nd for nd in model.nodes if nd.name == "e"][0]
    node.params["weight"] = -node.params["weight"]
    check(1)  # b's group still holds; d and e run as planned (e rebinds)
    check(0)  # recorded again
    check(2)
    with num_threads(1 if fc.get_num_threads() > 1 else 2):
        check(0)  # the planned calls rebind for this thread count
        check(0)  # recorded
        check(2)
    check(0)
    check(0)
    check(2)
    _workspace.get("test_replay.grow", (1 << 18,))  # a new buffer: the generation moves
    check(0)  # recorded again with the buffers as they are now
    check(2)


def test_a_quantized_model_plan_replays_its_int8_convolutions(rng, monkeypatch):
    """A quantized model's int8 convolutions (qconv: the quantizing move and the int8 conv)
    replay as recorded launches wherever the float ones would: every run equals a fresh
    copy's first, bit for bit; a replaced weight_q, w_scale or bias, or another thread
    count, takes the planned call again until it is recorded anew."""
    import pickle
    model = _chain(rng)
    x = rng.standard_normal((1, 16, 14, 14)).astype(np.float32)
    q = fc.quantize(model, [x])
    assert [n.op for n in q.nodes[:5]] == ["conv", "qconv", "qconv", "qconv", "qconv"]
    q(x), q(x)
    groups = _replays(q, x)
    assert [[st[1].name for st in g.steps] for g in groups] == [["b"], ["d", "e"]]
    assert sum(len(g.launches) for g in groups) == 6   # three layers: a move and a conv each
    replays = record_calls(monkeypatch, _runtime, "replay")

    def check(groups_replayed):
        n = len(replays)
        x2 = rng.standard_normal(x.shape).astype(np.float32)
        np.testing.assert_array_equal(q(x2), pickle.loads(pickle.dumps(q))(x2))
        assert len(replays) - n == groups_replayed

    check(2)
    check(2)
    node = [nd for nd in q.nodes if nd.name == "e"][0]
    for key in ("weight_q", "w_scale", "bias"):
        node.params[key] = node.params[key].copy()
        if key == "weight_q":
            node.params[key][:, 0] = -node.params[key][:, 0]
        else:
            node.params[key] *= 2
        check(1)  # b's group still holds; d and e run as planned
        check(0)  # recorded again
        check(2)
    with num_threads(1 if fc.get_num_threads() > 1 else 2):
        check(0)
        check(0)
        check(2)


def test_a_quantized_model_plan_replays_its_adds_and_pools(rng, monkeypatch):
    """The integer ops between int8 layers (onnxruntime's QLinearAdd, MaxPool on uint8,
    QLinearGlobalAveragePool, QLinearMatMul after a flatten; a float max pool, global
    average pool and QuantizeLinear / DequantizeLinear pair too) replay as recorded
    launches where they read the plan's own buffers: every run equals a fresh copy's
    first, bit for bit, with new input data; another thread count takes the planned steps
    until recorded again."""
    import pickle
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    shape = [1, 8, 9, 9]
    inits = {"as": 0.02, "az": 3, "bs": 0.03, "bz": 5, "ss": 0.04, "sz": 7, "ts": 0.05,
             "tz": 2, "ps": 0.01, "pz": 1}
    q = lambda n: [n, f"{n}s", f"{n}z"]  # noqa: E731
    nodes = [
        helper.make_node("QLinearAdd", q("a") + q("b") + ["ss", "sz"], ["s"],
                         domain="com.microsoft"),
        helper.make_node("QLinearAdd", q("s") + q("s") + ["ts", "tz"], ["t"],
                         domain="com.microsoft"),
        helper.make_node("MaxPool", ["t"], ["m"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("QLinearGlobalAveragePool", ["m", "ts", "tz", "ps", "pz"], ["g"],
                         domain="com.microsoft"),
        helper.make_node("Flatten", ["g"], ["gf"]),
        helper.make_node("QLinearMatMul", ["gf", "ps", "pz", "w", "ws", "wz", "ls", "lz"],
                         ["l"]),
        helper.make_node("DequantizeLinear", ["l", "ls", "lz"], ["p"]),
        helper.make_node("DequantizeLinear", ["t", "ts", "tz"], ["f"]),
        helper.make_node("Relu", ["f"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["fp"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["fp"], ["ga"]),
        helper.make_node("QuantizeLinear", ["ga", "ts", "tz"], ["gq"]),
        helper.make_node("DequantizeLinear", ["gq", "ts", "tz"], ["gd"]),
        helper.make_node("Relu", ["gd"], ["fm"]),
    ]
    inits.update(ws=0.01, ls=0.002, lz=100)
    tensors = [numpy_helper.from_array(np.array(v, np.float32 if k.endswith("s") else np.uint8),
                                       k) for k, v in inits.items()]
    tensors += [numpy_helper.from_array(rng.integers(-127, 128, (8, 5)).astype(np.int8), "w"),
                numpy_helper.from_array(np.array(0, np.int8), "wz")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(v, TensorProto.UINT8, shape)
                     for v in ("a", "b")],
        [helper.make_tensor_value_info(v, TensorProto.FLOAT, None) for v in ("p", "fm")],
        tensors)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("com.microsoft", 1)])
    a, b = (rng.integers(0, 256, shape).astype(np.uint8) for _ in range(2))
    model = fc.optimize(fc.from_onnx(proto), (a, b))
    fresh = pickle.dumps(model)
    model(a, b), model(a, b)
    plan = model._plans()[(a.shape, b.shape)]
    steps = [st[1].op for g in plan.program.items if type(g) is _Replay for st in g.steps]
    # the first add reads the model's inputs: it runs as planned; the rest replays
    assert steps.count("qadd") == 1 and steps.count("max_pool") == 2 and \
        "qglobal_avg_pool" in steps and "qlinear" in steps and "global_avg_pool" in steps \
        and "fake_quant" in steps, steps
    replays = record_calls(monkeypatch, _runtime, "replay")
    for i in range(6):
        a2, b2 = (rng.integers(0, 256, shape).astype(np.uint8) for _ in range(2))
        keep = a2.copy()
        if i == 3:
            ctx = num_threads(1 if fc.get_num_threads() > 1 else 2)
            ctx.__enter__()
        for y, want in zip(model(a2, b2), pickle.loads(fresh)(a2, b2)):
            np.testing.assert_array_equal(y, want)
        np.testing.assert_array_equal(a2, keep)
        if i == 5:
            ctx.__exit__(None, None, None)
    assert len(replays) >= 3


def test_a_quantized_classifier_replays_after_its_flatten(rng, monkeypatch):
    """An int8 linear reading the flatten of a planned pool (fc.quantize with
    quantize_last: its float input quantized on the way) replays: the flatten's view is
    the same object every run, so the qlinear step after it records its launches, and
    every run equals a fresh copy's first bit for bit."""
    import pickle
    chain = _chain(rng)
    x = rng.standard_normal((1, 16, 14, 14)).astype(np.float32)
    w = (0.2 * rng.standard_normal((10, 32))).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    nodes = list(chain.nodes) + [Node("linear", "fc", ["y"], ["z"], {}, {"weight": w, "bias": b}),
                                 Node("relu", "r", ["z"], ["out"])]
    model = Model(nodes, ["x"], ["out"], name="classifier",
                  input_shapes={"x": (None, 16, None, None)})
    q = fc.quantize(model, [x], quantize_last=True)
    assert "qlinear" in [n.op for n in q.nodes]
    fresh = pickle.dumps(q)
    q(x), q(x)
    steps = [st[1].op for g in _replays(q, x) for st in g.steps]
    assert "qlinear" in steps and "global_avg_pool" in steps, steps
    replays = record_calls(monkeypatch, _runtime, "replay")
    for _ in range(3):
        x2 = rng.standard_normal(x.shape).astype(np.float32)
        np.testing.assert_array_equal(q(x2), pickle.loads(fresh)(x2))
    assert len(replays) >= 3


def test_model_plans_replay_per_python_thread(rng):
    model = _chain(rng)
    x = rng.standard_normal((1, 16, 14, 14)).astype(np.float32)
    want = [model(x) for _ in range(4)][-1]
    out = []
    t = threading.Thread(target=lambda: out.extend(model(x) for _ in range(4)))
    t.start()
    t.join()
    for y in out:
        np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(model(x), want)


def test_zoo_mobilenet_replays_its_blocks(rng, monkeypatch):
    """The zoo MobileNetV2's planned forward replays its blocks' recorded kernels from
    the third call on; new input data, another model of its kind or a grown workspace
    give the same results as the full path.  Each model keeps its own record."""
    import copy
    import pickle
    from fastconv import models
    m = models.mobilenet_v2(num_classes=10)
    m2 = models.mobilenet_v2(num_classes=10, seed=1)
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    m(x), m(x), m(x)
    replays = record_calls(monkeypatch, _runtime, "replay")
    x2 = rng.standard_normal(x.shape).astype(np.float32)
    y = m(x2)
    assert len(replays) == 1
    np.testing.assert_array_equal(y, m.fuse(True)(x2))  # fuse(): the full path once
    assert len(replays) == 1
    m(x2), m(x2)  # the forward planned again, then recorded
    ya = m(x2)
    assert len(replays) == 2
    m2(x), m2(x), m2(x)
    yb = m2(x2)
    assert len(replays) == 3
    # m's plan went with m2's fuse() (the structure counter): m plans again, records and
    # replays; m2's record is its own and still holds
    n = len(replays)
    for _ in range(3):
        np.testing.assert_array_equal(m(x2), ya)
    assert len(replays) == n + 1
    np.testing.assert_array_equal(m2(x2), yb)
    assert len(replays) == n + 2
    _workspace.get("test_replay.grow_mv2", (1 << 18,))
    np.testing.assert_array_equal(m2(x2), yb)  # recorded again
    assert len(replays) == n + 2
    np.testing.assert_array_equal(m2(x2), yb)
    assert len(replays) == n + 3
    # copies of the records start empty (the launches name this model's buffers)
    assert m2.__dict__["_records"].get() is not None
    assert copy.deepcopy(m2.__dict__["_records"]).get() is None
    assert pickle.loads(pickle.dumps(m2.__dict__["_records"])).get() is None


def test_a_replay_inside_a_capture_is_recorded_as_its_launches(rng):
    from fastconv import models
    m = models.resnet18(num_classes=10)
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    for _ in range(4):
        y = m(x)
    with _runtime.capture() as cap:
        np.testing.assert_array_equal(m(x), y)
    rec = m.__dict__["_records"].get()[3]  # the blocks' launches, after the stem's
    assert cap.complete and len(cap.launches) > len(rec)
    assert all(a is b for a, b in zip(cap.launches[-len(rec):], rec))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_zoo_resnets_replay_their_blocks(rng, monkeypatch, name):
    """The zoo ResNets' blocks run as the kernels the previous call recorded, equal to the
    module walk; a changed module or weight, another thread count, a grown workspace or
    an unfused stage stop it until a call records again (a call that grows a workspace
    records nothing: the one after it does)."""
    from fastconv import models
    m = getattr(models, name)(num_classes=10)
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    replays = record_calls(monkeypatch, _runtime, "replay")

    def settle(inp, want=None):
        """Calls until one replays (at most four), each equal to ``want`` (the first's
        result if None) within rounding (a first call may plan another kernel variant);
        returns the replayed result."""
        for i in range(4):
            n = len(replays)
            y = m(inp)
            want = y if want is None else want
            assert rel_err(y, want) < 1e-5
            if len(replays) > n:
                assert i >= 1  # never the first call after a change
                return y
        raise AssertionError("no call replayed")

    y0 = settle(x)
    n = len(replays)
    np.testing.assert_array_equal(m(x), y0)
    x2 = rng.standard_normal(x.shape).astype(np.float32)
    y2 = m(x2)
    assert len(replays) == n + 2 and not np.allclose(y2, y0)
    np.testing.assert_array_equal(m(x2), y2)
    m.layer2.fuse(False)  # the stage's module walk (NumPy residual adds): nothing recorded
    for _ in range(3):
        n = len(replays)
        assert rel_err(m(x2), y2) < 1e-5 and len(replays) == n
    m.fuse(True)
    settle(x2, y2)
    sd = m.state_dict()
    sd["layer3.0.conv1.weight"] = -sd["layer3.0.conv1.weight"]
    m.load_state_dict(sd)
    y3 = settle(x2)
    assert not np.allclose(y3, y2)
    with num_threads(1 if fc.get_num_threads() > 1 else 2):
        settle(x2, y3)
    settle(x2, y3)
    _workspace.get(f"test_replay.grow_{name}", (1 << 19,))
    settle(x2, y3)
    m.layer1[0].conv1.padding_mode = "reflect"  # padded in NumPy: never recorded
    y4 = m(x2)
    for _ in range(3):
        n = len(replays)
        np.testing.assert_array_equal(m(x2), y4)
        assert len(replays) == n


def test_one_zoo_model_replays_on_several_python_threads_at_once(rng):
    """Records are per Python thread (each names its own thread's buffers): two threads
    calling one model at once, each replaying its record, give the single-thread result."""
    from fastconv import models
    m = models.resnet18(num_classes=10)
    xs = [rng.standard_normal((1, 3, 64, 64)).astype(np.float32) for _ in range(2)]
    want = [None, None]
    for i, x in enumerate(xs):
        for _ in range(4):
            want[i] = m(x)
    got = [[], []]
    start = threading.Barrier(2)

    def work(i):
        start.wait()
        for _ in range(8):
            got[i].append(m(xs[i]))

    ts = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for i in range(2):
        assert len(got[i]) == 8
        for y in got[i]:
            np.testing.assert_array_equal(y, want[i])
