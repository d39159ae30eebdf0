import contextlib

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def rel_err(actual, expected):
    """max |a - e| / max(1, max |e|): relative to the output's scale."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    if expected.size == 0:
        return 0.0
    return float(np.abs(actual - expected).max() / max(1.0, np.abs(expected).max()))


def record_calls(monkeypatch, module, name):
    """``module.name`` wrapped (for the test) to append 1 to the returned list per call."""
    calls = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


@contextlib.contextmanager
def num_threads(n):
    """fastconv's thread count set to n inside the block, restored after it."""
    import fastconv as fc
    before = fc.get_num_threads()
    fc.set_num_threads(n)
    try:
        yield
    finally:
        fc.set_num_threads(before)
