"""The graph runtime: buffer plans, save/load/pickle, threads, errors, optimize, tune, explain."""
import pickle
import threading
import tracemalloc

import numpy as np
import pytest
from conftest import num_threads, record_calls, rel_err

import fastconv as fc
from fastconv import models
from fastconv.graph import Model, Node
from fastconv.kernels import reference as ref


def _tiny_graph(rng):
    """conv -> affine -> relu -> (conv + x) -> relu -> pool -> flatten -> linear: built by hand."""
    w1 = (0.3 * rng.standard_normal((4, 4, 3, 3))).astype(np.float32)
    w2 = (0.3 * rng.standard_normal((4, 4, 3, 3))).astype(np.float32)
    conv = dict(stride=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1), groups=1)
    nodes = [
        Node("conv", "c1", ["x"], ["a"], conv, {"weight": w1}),
        Node("affine", "bn", ["a"], ["b"], {}, {"scale": rng.uniform(0.5, 1.5, 4).astype(np.float32),
                                                 "shift": rng.standard_normal(4).astype(np.float32)}),
        Node("relu", "r1", ["b"], ["c"]),
        Node("conv", "c2", ["c"], ["d"], conv, {"weight": w2,
                                                "bias": rng.standard_normal(4).astype(np.float32)}),
        Node("add", "res", ["d", "x"], ["e"]),
        Node("clip", "r2", ["e"], ["f"], {"min": 0.0, "max": 6.0}),
        Node("identity", "drop", ["f"], ["g"]),
        Node("global_avg_pool", "gap", ["g"], ["h"]),
        Node("flatten", "flat", ["h"], ["i"], {"start": 1, "end": -1}),
        Node("linear", "fc", ["i"], ["y"], {}, {"weight": rng.standard_normal((3, 4)).astype(np.float32)}),
    ]
    return Model(nodes, ["x"], ["y"], name="tiny", input_shapes={"x": (None, 4, None, None)})


def _numpy_tiny(model, x):
    from fastconv.kernels import reference as ref
    p = {n.name: n for n in model.nodes}
    a = ref.conv2d(x, p["c1"].params["weight"], None, 1, 1)
    b = a * p["bn"].params["scale"].reshape(1, -1, 1, 1) + p["bn"].params["shift"].reshape(1, -1, 1, 1)
    d = ref.conv2d(np.maximum(b, 0), p["c2"].params["weight"], p["c2"].params["bias"], 1, 1)
    f = np.clip(d + x, 0, 6)
    return f.mean(axis=(2, 3)) @ p["fc"].params["weight"].T.astype(np.float64)


def test_hand_built_graph_matches_numpy_and_optimizes(rng):
    model = _tiny_graph(rng)
    x = rng.standard_normal((2, 4, 9, 7)).astype(np.float32)
    expected = _numpy_tiny(model, x)
    assert rel_err(model(x), expected) < 1e-5
    opt = fc.optimize(model, x)
    assert [n.op for n in opt.nodes] == ["conv", "conv", "global_avg_pool", "flatten", "linear"]
    c1, c2 = opt.nodes[0], opt.nodes[1]
    assert c1.attrs["activation"] == "relu" and c1.attrs["folded_bn"]
    assert c2.attrs["activation"] == "relu6" and c2.inputs == ["c", "x"] or c2.inputs[1] == "x"
    assert rel_err(opt(x), expected) < 1e-5
    assert len(model.nodes) == 10  # the source model is not changed
    assert rel_err(model(x), expected) < 1e-5


def test_buffers_are_reused_and_outputs_are_fresh(rng):
    twin = models.torch_twin("resnet_tiny", widths=(8, 16, 16, 16), num_classes=4) \
        if _has_torch() else None
    model = _tiny_graph(rng) if twin is None else None
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    if twin is not None:
        model = fc.optimize(fc.from_torch(twin, x), x)
    else:
        x = rng.standard_normal((1, 4, 64, 64)).astype(np.float32)
    y1 = model(x)
    y1_copy = np.array(y1)
    x2 = rng.standard_normal(x.shape).astype(np.float32)
    y2 = model(x2)
    np.testing.assert_array_equal(y1, y1_copy)  # a later call never writes into a returned array
    assert not np.shares_memory(y1, y2)
    mem = model.memory(x)
    assert mem["planned_bytes"] < mem["unplanned_bytes"]
    model(x)
    tracemalloc.start()
    model(x)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # steady state: the output and small bookkeeping only, not the activations
    assert peak < 0.1 * mem["unplanned_bytes"], (peak, mem)


def test_planned_runs_call_bound_convolutions_directly(rng, monkeypatch):
    """From the second run on, each conv step calls its bound kernel directly; whatever
    differs from what was bound (thread count, weight object) falls back to the full
    conv path, and every run equals the first."""
    from fastconv import functional as F
    x = rng.standard_normal((2, 4, 9, 7)).astype(np.float32)
    model = fc.optimize(_tiny_graph(rng), x)
    y0 = model(x)
    np.testing.assert_array_equal(model(x), y0)
    plan = model._plans()[(x.shape,)]
    convs = [i for i, st in enumerate(plan.steps) if st[1].op == "conv"]
    assert len(convs) == 2 and all(plan.direct[i][0] is not plan.steps[i][0] for i in convs)
    fallbacks = record_calls(monkeypatch, F, "conv2d")
    np.testing.assert_array_equal(model(x), y0)
    assert fallbacks == []
    with num_threads(1):
        np.testing.assert_allclose(model(x), y0, rtol=1e-5, atol=1e-6)
    assert len(fallbacks) == 2
    np.testing.assert_array_equal(model(x), y0)  # rebound at 2 threads: one more fallback each
    assert len(fallbacks) == 4
    np.testing.assert_array_equal(model(x), y0)
    assert len(fallbacks) == 4  # direct again
    node = plan.steps[convs[0]][1]
    node.params["weight"] = node.params["weight"].copy()  # a new object: the step steps aside
    np.testing.assert_array_equal(model(x), y0)
    np.testing.assert_array_equal(model(x), y0)
    assert len(fallbacks) == 5  # once: the rebound layer goes direct again


@pytest.mark.parametrize("r", [1, 3])
def test_a_replaced_weight_is_used_not_its_old_packed_form(rng, r):
    """A node's weight replaced by another array: every later run uses the new weight
    (the node's cache of packed or transformed weights belongs to the old one)."""
    conv = dict(stride=(1, 1), pads=(r // 2,) * 4, dilation=(1, 1), groups=1)
    w = rng.standard_normal((32, 16, r, r)).astype(np.float32)
    model = Model([Node("conv", "c", ["x"], ["y"], conv, {"weight": w})], ["x"], ["y"])
    x = rng.standard_normal((1, 16, 14, 14)).astype(np.float32)
    for _ in range(3):
        model(x)
    w2 = rng.standard_normal(w.shape).astype(np.float32)
    model.nodes[0].params["weight"] = w2
    for _ in range(3):
        assert rel_err(model(x), ref.conv2d(x, w2, None, 1, r // 2)) < 1e-5


def _has_torch():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def test_inputs_are_checked_and_never_modified(rng):
    model = _tiny_graph(rng)
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    keep = x.copy()
    model(x)
    np.testing.assert_array_equal(x, keep)
    with pytest.raises(ValueError, match=r"tiny: input 'x' must have shape \(\*, 4, \*, \*\)"):
        model(np.zeros((1, 3, 6, 6), np.float32))
    with pytest.raises(TypeError, match="dtype must be float32"):
        model(np.zeros((1, 4, 6, 6), np.int32))
    with pytest.raises(ValueError, match="expected 1 input"):
        model(x, x)
    with pytest.raises(ValueError, match="kernel 3x3"):
        bad = Model([Node("conv", "c", ["x"], ["y"], dict(stride=(1, 1), pads=(0, 0, 0, 0),
                                                          dilation=(1, 1), groups=1),
                          {"weight": np.ones((1, 1, 3, 3), np.float32)})], ["x"], ["y"])
        bad(np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(ValueError, match="reads 'nope'"):
        Model([Node("relu", "r", ["nope"], ["y"])], ["x"], ["y"])
    with pytest.raises(ValueError, match="unknown op"):
        Node("gelu", "g", ["x"], ["y"])


def test_save_load_and_pickle_round_trip(rng, tmp_path):
    model = fc.optimize(_tiny_graph(rng), rng.standard_normal((1, 4, 8, 8)).astype(np.float32))
    x = rng.standard_normal((2, 4, 5, 6)).astype(np.float32)
    y = model(x)
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = fc.load(path)
    np.testing.assert_array_equal(loaded(x), y)
    assert [n.attrs for n in loaded.nodes] == [n.attrs for n in model.nodes]
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(clone(x), y)
    (tmp_path / "junk.npz").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a fastconv model"):
        fc.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="no graph"):
        fc.load(tmp_path / "other.npz")


def _pool_worker(args):
    path, x = args
    return fc.load(path)(x)


def test_model_ships_to_worker_processes(rng, tmp_path):
    import multiprocessing as mp
    model = fc.optimize(_tiny_graph(rng), rng.standard_normal((1, 4, 8, 8)).astype(np.float32))
    path = str(tmp_path / "m.npz")
    model.save(path)
    xs = [rng.standard_normal((1, 4, 8, 8)).astype(np.float32) for _ in range(3)]
    with mp.get_context("fork").Pool(2) as pool:
        outs = pool.map(_pool_worker, [(path, x) for x in xs])
        # the pickled model itself travels too
        outs2 = pool.starmap(Model.__call__, [(model, x) for x in xs])
    for x, a, b in zip(xs, outs, outs2):
        np.testing.assert_array_equal(a, model(x))
        np.testing.assert_array_equal(b, model(x))


def test_concurrent_calls_from_threads(rng):
    model = fc.optimize(_tiny_graph(rng), rng.standard_normal((1, 4, 8, 8)).astype(np.float32))
    xs = [rng.standard_normal((2, 4, 8, 8)).astype(np.float32) for _ in range(4)]
    expected = [model(x) for x in xs]
    errors = []

    def work(i):
        for _ in range(20):
            if not np.array_equal(model(xs[i]), expected[i]):
                errors.append(i)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors


def test_explain_lists_every_node_with_kernel_and_total(rng):
    model = fc.optimize(_tiny_graph(rng), rng.standard_normal((1, 4, 16, 16)).astype(np.float32))
    text = model.explain(repeat=2, roof_gflops=100.0)
    lines = text.splitlines()
    assert "c1" in text and "conv+bn+relu" in text and "conv+add+relu6" in text
    assert lines[-3].startswith("total")
    assert "planned" in lines[-2] and lines[-1].startswith("replay: ")
    row = next(ln for ln in lines if ln.startswith("c1"))
    assert any(k in row for k in ("im2col", "winograd", "direct"))
    with pytest.raises(ValueError, match="example"):
        _tiny_graph(rng).explain()


def test_tune_stores_plans_and_optimize_reuses_them(rng, tmp_path, monkeypatch):
    from fastconv import tuning
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path / "cache"))
    x = rng.standard_normal((1, 4, 12, 12)).astype(np.float32)
    source = _tiny_graph(rng)
    model = fc.optimize(source, x)
    report = fc.tune(model, x, budget_s=30, repeat=2)
    # both convs have one shape: measured once, the second layer reuses the measurement
    assert [r["cached"] for r in report] == [False, True]
    for r in report:
        assert r["algo"] == min(r["times_ms"], key=r["times_ms"].get)
        assert {"direct", "im2col"} <= set(r["times_ms"])
    assert len(tuning.load_plans()) == 1
    assert rel_err(model(x), _numpy_tiny(source, x)) < 1e-5
    # a fresh optimize picks the measured kernels up from the cache
    again = fc.optimize(_tiny_graph(rng), x)
    assert [n.attrs.get("algo") for n in again.nodes if n.op == "conv"] == \
        [r["algo"] for r in report]
    assert all(r["cached"] for r in fc.tune(again, x))
    # export / import, and a different machine or version never sees these plans
    n = fc.export_plans(tmp_path / "plans.json")
    assert n == 1
    tuning.clear_plans()
    assert tuning.load_plans() == {}
    assert fc.import_plans(tmp_path / "plans.json") == 1
    monkeypatch.setattr(tuning, "fingerprint", lambda: {"cpu": "other", "features": "x",
                                                         "fastconv": "9", "numba": "9"})
    assert tuning.apply_cached(fc.optimize(_tiny_graph(rng), None), (x,)) == 0
    with pytest.raises(ValueError, match="budget_s"):
        fc.tune(model, x, budget_s=-1)
    with pytest.raises(ValueError, match="does not exist"):
        fc.import_plans(tmp_path / "missing.json")


def test_tune_respects_the_budget(rng, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path))
    x = rng.standard_normal((1, 4, 12, 12)).astype(np.float32)
    model = fc.optimize(_tiny_graph(rng), x)
    model.nodes[1].params["weight"] = model.nodes[1].params["weight"][:, :, :2, :2].copy()
    model.nodes[1].attrs["pads"] = (1, 0, 1, 0)  # a second shape, so two layers to measure
    report = fc.tune(model, x, budget_s=0)
    assert len(report) == 2 and report[1].get("skipped") == "budget spent"


def test_optimize_rejects_bad_arguments(rng):
    with pytest.raises(TypeError, match="fastconv Model"):
        fc.optimize(object())
    with pytest.raises(ValueError, match="'cuda' backend"):
        fc.optimize(_tiny_graph(rng), backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        fc.optimize(_tiny_graph(rng), backend="tpu")


def test_conv_transpose_against_reference(rng):
    from fastconv.kernels import reference as ref
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=40, deadline=None)
    @given(n=st.integers(0, 2), g=st.integers(1, 2), cg=st.integers(1, 3), kg=st.integers(1, 3),
           h=st.integers(1, 5), w=st.integers(1, 5), r=st.integers(1, 4), s=st.integers(1, 4),
           sh=st.integers(1, 3), sw=st.integers(1, 3), dh=st.integers(1, 2),
           pads=st.tuples(*[st.integers(0, 2)] * 4), act=st.sampled_from([None, "relu"]),
           seed=st.integers(0, 100))
    def check(n, g, cg, kg, h, w, r, s, sh, sw, dh, pads, act, seed):
        r2 = np.random.default_rng(seed)
        x = r2.standard_normal((n, g * cg, h, w)).astype(np.float32)
        wt = r2.standard_normal((g * cg, kg, r, s)).astype(np.float32)
        b = r2.standard_normal(g * kg).astype(np.float32)
        oh = (h - 1) * sh - pads[0] - pads[1] + dh * (r - 1) + 1
        ow = (w - 1) * sw - pads[2] - pads[3] + (s - 1) + 1
        if oh < 1 or ow < 1:
            with pytest.raises(ValueError, match="crops"):
                fc.conv_transpose2d(x, wt, b, (sh, sw), pads, 0, g, (dh, 1))
            return
        y = fc.conv_transpose2d(x, wt, b, (sh, sw), pads, 0, g, (dh, 1), activation=act)
        e = ref.conv_transpose2d(x, wt, b, (sh, sw), pads, 0, g, (dh, 1), act)
        assert y.shape == e.shape
        assert rel_err(y, e) < 1e-5
    check()


def test_conv_transpose_as_phases_against_reference(rng):
    """Transposed convs with >= 8 output channels a group run as one stride-1 conv2d per
    output phase (functional._convt_phases) and an interleaving merge: kernels larger and
    smaller than the stride (the latter on the col2im kernel), output padding,
    asymmetric pads, groups, activations, empty batches, and a second call through the
    layer's cache on new data."""
    from fastconv import functional as F
    from fastconv.kernels import reference as ref
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=40, deadline=None)
    @given(n=st.integers(0, 2), g=st.integers(1, 2), cg=st.integers(1, 9),
           kg=st.sampled_from([8, 13, 32]), h=st.integers(1, 9), w=st.integers(1, 9),
           r=st.integers(1, 5), s=st.integers(1, 5), sh=st.integers(1, 3), sw=st.integers(1, 3),
           pads=st.tuples(*[st.integers(0, 3)] * 4), op=st.tuples(st.integers(0, 2),
                                                                  st.integers(0, 2)),
           act=st.sampled_from([None, "relu", "relu6"]), seed=st.integers(0, 100))
    def check(n, g, cg, kg, h, w, r, s, sh, sw, pads, op, act, seed):
        op = (min(op[0], sh - 1), min(op[1], sw - 1))
        oh = (h - 1) * sh - pads[0] - pads[1] + r + op[0]
        ow = (w - 1) * sw - pads[2] - pads[3] + s + op[1]
        if oh < 1 or ow < 1:
            return
        r2 = np.random.default_rng(seed)
        x = r2.standard_normal((n, g * cg, h, w)).astype(np.float32)
        wt = r2.standard_normal((g * cg, kg, r, s)).astype(np.float32)
        b = r2.standard_normal(g * kg).astype(np.float32)
        packed = {}
        for _ in range(2):
            y = fc.conv_transpose2d(x, wt, b, (sh, sw), pads, op, g, activation=act,
                                    packed=packed)
            e = ref.conv_transpose2d(x, wt, b, (sh, sw), pads, op, g, 1, act)
            assert y.shape == e.shape
            assert rel_err(y, e) < 1e-5
            x = r2.standard_normal(x.shape).astype(np.float32)
        def fits(k, st_, p):  # every output phase has taps and needs no negative padding
            return all(-(-(k - (a + p) % st_) // st_) - 1 >= (a + p) // st_
                       for a in range(st_))
        if n and fits(r, sh, pads[0]) and fits(s, sw, pads[2]):
            assert "convt_phases" in packed  # the phases ran
    check()
    # the shapes the phases are for: U-Net's 2x2/2, DCGAN's 4x4/2 pad 1, 3x3/2 with
    # output padding, a stride-1 3x3 (one conv2d, no merge)
    for c, k, h, r, st_, p, op in ((16, 8, 6, 2, 2, 0, 0), (16, 16, 4, 4, 2, 1, 0),
                                   (8, 16, 7, 3, 2, 1, 1), (8, 8, 9, 3, 1, 1, 0)):
        x = rng.standard_normal((1, c, h, h)).astype(np.float32)
        wt = rng.standard_normal((c, k, r, r)).astype(np.float32)
        assert F._convt_phases(h, h, k, r, r, (st_, st_), (p,) * 4, (1, 1), 1, 1) is not None
        y = fc.conv_transpose2d(x, wt, None, st_, p, op)
        assert rel_err(y, ref.conv_transpose2d(x, wt, None, st_, p, op)) < 1e-5
    # one layer's cache, inputs of two sizes (the phases' padding depends on it)
    wt = rng.standard_normal((8, 16, 4, 4)).astype(np.float32)
    packed = {}
    for h in (5, 6, 5):
        x = rng.standard_normal((1, 8, h, h + 1)).astype(np.float32)
        y = fc.conv_transpose2d(x, wt, None, 2, 1, packed=packed)
        assert rel_err(y, ref.conv_transpose2d(x, wt, None, 2, 1)) < 1e-5


def test_conv_transpose_errors():
    x = np.zeros((1, 4, 3, 3), np.float32)
    with pytest.raises(ValueError, match="expected input with 2 channels"):
        fc.conv_transpose2d(x, np.zeros((2, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="output_padding"):
        fc.conv_transpose2d(x, np.zeros((4, 2, 3, 3), np.float32), stride=2, output_padding=2)
    with pytest.raises(ValueError, match="weight must be 4-D"):
        fc.conv_transpose2d(x, np.zeros((4, 2, 3), np.float32))


def test_slot_choice_prefers_the_most_recently_used_fitting_slot():
    from fastconv.graph import _pick_slot
    slots, touched = [100, 200, 50], {0: 3, 1: 7, 2: 9}
    assert _pick_slot([0, 1], slots, touched, 60) == 1      # recent beats best fit
    assert _pick_slot([0, 1, 2], slots, touched, 60) == 1   # slot 2 is newer but too small
    assert _pick_slot([0, 1, 2], slots, touched, 40) == 2
    assert _pick_slot([0, 2], [100, 200, 150], {0: 4, 2: 4}, 50) == 2  # a tie: the larger
    grown = [100, 200, 50]
    assert _pick_slot([0, 2], grown, touched, 150) == 0 and grown == [150, 200, 50]
    fresh = [100]
    assert _pick_slot([], fresh, {}, 10) == 1 and fresh == [100, 10]


def test_planned_runs_call_bound_inverted_residual_blocks_directly(rng, monkeypatch):
    """A fused inverted residual block (1x1 -> depthwise -> 1x1 + x) calls its planned
    call directly from the second run on; a thread count or weight object other than the
    planned ones goes through functional.inverted_residual again, and every run equals
    the first."""
    from fastconv import functional as F
    conv = lambda s, p, g: dict(stride=(s, s), pads=(p, p, p, p), dilation=(1, 1),  # noqa: E731
                                groups=g)
    w = lambda *s: (0.3 * rng.standard_normal(s)).astype(np.float32)  # noqa: E731
    six = {"min": 0.0, "max": 6.0}
    g = Model([Node("conv", "e", ["x"], ["a"], conv(1, 0, 1), {"weight": w(32, 16, 1, 1)}),
               Node("clip", "e6", ["a"], ["b"], six),
               Node("conv", "d", ["b"], ["c"], conv(1, 1, 32), {"weight": w(32, 1, 3, 3)}),
               Node("clip", "d6", ["c"], ["e"], six),
               Node("conv", "p", ["e"], ["f"], conv(1, 0, 1), {"weight": w(16, 32, 1, 1)}),
               Node("add", "r", ["f", "x"], ["g"]),
               Node("relu", "act", ["g"], ["h"]),
               Node("global_avg_pool", "gap", ["h"], ["y"])],  # the block's output is planned
              ["x"], ["y"], name="ir", input_shapes={"x": (None, 16, None, None)})
    x = rng.standard_normal((1, 16, 20, 20)).astype(np.float32)
    model = fc.optimize(g, x)
    assert "inverted_residual" in [n.op for n in model.nodes]
    y0 = model(x)
    assert rel_err(y0, g(x)) < 1e-5
    np.testing.assert_array_equal(model(x), y0)
    plan = model._plans()[(x.shape,)]
    blocks = [i for i, st in enumerate(plan.steps) if st[1].op == "inverted_residual"]
    assert len(blocks) == 1 and plan.direct[blocks[0]][0] is not plan.steps[blocks[0]][0]
    fallbacks = record_calls(monkeypatch, F, "inverted_residual")
    np.testing.assert_array_equal(model(x), y0)
    assert fallbacks == []
    with num_threads(1):
        np.testing.assert_allclose(model(x), y0, rtol=1e-5, atol=1e-6)
    assert len(fallbacks) == 1
    np.testing.assert_array_equal(model(x), y0)  # replanned at the old thread count
    np.testing.assert_array_equal(model(x), y0)
    assert len(fallbacks) == 2
    node = plan.steps[blocks[0]][1]
    node.params["project_weight"] = node.params["project_weight"] * 2  # new weights: replanned
    y2 = model(x)
    assert not np.allclose(y2, y0)
    np.testing.assert_array_equal(model(x), y2)
    assert len(fallbacks) == 3  # once: the replanned block goes direct again
