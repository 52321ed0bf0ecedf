"""Simulated ordinal and continuous readers: the draws follow the stated model."""

import numpy as np
import pytest
from scipy.special import ndtr

from crowdmed.simulate import simulate_continuous_readers, simulate_ordinal_readers


def test_ordinal_frequencies_match_the_graded_response_model():
    # One reader, offset 0.5, noise 1, true class always 2 (K = 5): P(l) = Φ(τ_{l+1} − 2.5) −
    # Φ(τ_l − 2.5) with τ = 0.5, 1.5, 2.5, 3.5.
    sim = simulate_ordinal_readers(40000, [0.5], [1.0], priors=[0, 0, 1, 0, 0], random_state=0)
    assert np.all(sim.truth == 2)
    freq = np.bincount(sim.labels[:, 0], minlength=5) / 40000
    edges = ndtr(np.array([-np.inf, 0.5, 1.5, 2.5, 3.5, np.inf]) - 2.5)
    np.testing.assert_allclose(freq, np.diff(edges), atol=0.01)


def test_ordinal_missing_pattern_and_seed():
    a = simulate_ordinal_readers(50, np.zeros(6), np.ones(6), labels_per_item=3, random_state=4)
    b = simulate_ordinal_readers(50, np.zeros(6), np.ones(6), labels_per_item=3, random_state=4)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal((a.labels >= 0).sum(axis=1), 3)
    assert a.labels.max() <= 4


def test_continuous_moments():
    sim = simulate_continuous_readers(
        20000, [1.0, -1.0], [4.0, 0.25], scale=[2.0, 1.0], random_state=1
    )
    resid = sim.values - sim.scale * sim.truth[:, None] - sim.bias
    np.testing.assert_allclose(resid.var(axis=0), [0.25, 4.0], rtol=0.05)
    np.testing.assert_allclose(resid.mean(axis=0), [0.0, 0.0], atol=0.05)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"noise": [0.0]}, "`noise` must be positive"),
        ({"noise": [1.0, 1.0]}, "`noise` must be a finite 1-D array of length 1"),
        ({"noise": [1.0], "thresholds": [1, 0, 2, 3]}, "strictly increasing"),
        ({"noise": [1.0], "labels_per_item": 2}, r"`labels_per_item` must lie in 1..1"),
    ],
)
def test_ordinal_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate_ordinal_readers(5, [0.0], **kwargs)
