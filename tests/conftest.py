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
