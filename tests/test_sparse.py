"""Pruning: CSR kernels against the reference, fc.prune, and the pruned digits CNN."""
import digits
import numpy as np
import pytest
from conftest import rel_err
from fastconv.kernels import reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv as fc


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 2), g=st.integers(1, 2), cg=st.integers(1, 5), kg=st.integers(1, 6),
       h=st.integers(1, 9), w=st.integers(1, 9), r=st.integers(1, 3), s=st.integers(1, 3),
       stride=st.integers(1, 2), pad=st.integers(0, 2), dil=st.integers(1, 2),
       density=st.sampled_from([0.0, 0.1, 0.5, 1.0]), act=st.sampled_from([None, "relu"]),
       use_res=st.booleans(), seed=st.integers(0, 99))
def test_sparse_conv_matches_reference(n, g, cg, kg, h, w, r, s, stride, pad, dil, density, act,
                                       use_res, seed):
    rng = np.random.default_rng(seed)
    if h + 2 * pad < dil * (r - 1) + 1 or w + 2 * pad < dil * (s - 1) + 1:
        return
    x = rng.standard_normal((n, g * cg, h, w)).astype(np.float32)
    wt = rng.standard_normal((g * kg, cg, r, s)).astype(np.float32)
    wt[rng.random(wt.shape) >= density] = 0
    b = rng.standard_normal(g * kg).astype(np.float32)
    e = ref.conv2d(x, wt, b, stride, pad, dil, g)
    res = rng.standard_normal(e.shape).astype(np.float32) if use_res else None
    y = fc.sparse_conv2d(x, wt, b, stride, pad, dil, g, activation=act, residual=res)
    e = e + (res if use_res else 0)
    e = np.maximum(e, 0) if act else e
    assert rel_err(y, e) < 1e-5


def test_sparse_linear_matches_dense(rng):
    x = rng.standard_normal((5, 3, 40)).astype(np.float32)
    w = rng.standard_normal((17, 40)).astype(np.float32)
    w[rng.random(w.shape) < 0.8] = 0
    b = rng.standard_normal(17).astype(np.float32)
    y = fc.sparse_linear(x, w, b, activation="relu6")
    assert y.shape == (5, 3, 17)
    assert rel_err(y, np.clip(x @ w.T + b, 0, 6)) < 1e-5


@pytest.fixture(scope="module")
def data():
    return digits.load_data()


def test_pruned_digits_cnn_accuracy(data):
    """The script's 90 %-pruned, fine-tuned weights: within one point of the float model."""
    x_test, y_test, _ = data
    base = digits.accuracy(fc.optimize(digits.build(digits.state()), x_test[:2]), x_test, y_test)
    pruned = fc.optimize(digits.build(digits.state(pruned=True)), x_test[:2])
    sp = fc.prune(pruned, amount=0, example_input=x_test[:1])  # weights already pruned
    rep = {r["layer"]: r for r in sp.prune_report}
    assert rep["conv3"]["sparsity"] > 0.85 and rep["conv4"]["sparsity"] > 0.85
    assert any(n.op == "sparse_conv" for n in sp.nodes)
    acc = digits.accuracy(sp, x_test, y_test)
    assert base - acc <= 1.0, (base, acc)
    assert acc == digits.accuracy(pruned, x_test, y_test)  # CSR == dense with zeros
    assert "csr" in sp.explain(x_test[:1], repeat=1, roof_gflops=100.0)


def test_prune_scopes_and_crossover(rng):
    from fastconv.graph import Model, Node
    conv = dict(stride=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1), groups=1)
    nodes = [Node("conv", "big", ["x"], ["a"], conv,
                  {"weight": rng.standard_normal((64, 64, 3, 3)).astype(np.float32)}),
             Node("conv", "small", ["a"], ["y"], conv,
                  {"weight": (0.01 * rng.standard_normal((64, 64, 3, 3))).astype(np.float32)})]
    m = Model(nodes, ["x"], ["y"])
    x = rng.standard_normal((1, 64, 28, 28)).astype(np.float32)
    dense_out = m(x)
    p = fc.prune(m, amount=0.9, example_input=x)
    rep = {r["layer"]: r for r in p.prune_report}
    assert all(abs(r["sparsity"] - 0.9) < 0.01 for r in rep.values())
    assert all(r["kernel"] == "csr" for r in rep.values())  # 90 %: modelled faster
    assert rel_err(p(x), _dense_equivalent(p, x)) < 1e-5
    g = fc.prune(m, amount=0.5, scope="global", example_input=x)
    rep = {r["layer"]: r for r in g.prune_report}
    assert rep["small"]["sparsity"] > 0.95 and rep["big"]["sparsity"] < 0.1  # one threshold
    low = fc.prune(m, amount=0.2, example_input=x)
    assert all(r["kernel"] == "dense" for r in low.prune_report)  # 20 %: dense stays faster
    np.testing.assert_array_equal(m(x), dense_out)  # the source model is untouched


def _dense_equivalent(model, x):
    from fastconv.graph import Model
    nodes = [n.copy() for n in model.nodes]
    for n in nodes:
        if n.op == "sparse_conv":
            n.op = "conv"
    return Model(nodes, model.inputs, model.outputs)(x)


def test_prune_errors(rng):
    from fastconv.graph import Model, Node
    m = Model([Node("relu", "r", ["x"], ["y"])], ["x"], ["y"])
    x = np.zeros((1, 2, 4, 4), np.float32)
    with pytest.raises(ValueError, match="amount must be a fraction in"):
        fc.prune(m, amount=1.0, example_input=x)
    with pytest.raises(ValueError, match="amount must be a fraction in"):
        fc.prune(m, amount=-0.1, example_input=x)
    with pytest.raises(ValueError, match="method must be 'magnitude'"):
        fc.prune(m, method="random", example_input=x)
    with pytest.raises(ValueError, match="scope must be"):
        fc.prune(m, scope="channel", example_input=x)
    with pytest.raises(ValueError, match="no convolution or linear layer"):
        fc.prune(m, example_input=x)
    with pytest.raises(TypeError, match="fastconv Model"):
        fc.prune("model")
