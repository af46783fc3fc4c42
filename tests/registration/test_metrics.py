"""Registration metrics on hand-computed values."""
import numpy as np
import pytest
import torch

from fmdepth.metrics.registration import (RegistrationEvaluator, folding_fraction, landmark_error,
                                          landmark_errors, mean_corner_error, sample_flow_at)


def test_landmark_error_identity_and_constant_flow():
    lf = np.array([[10.0, 10.0], [20.0, 5.0], [3.0, 7.0]])
    lm = lf + np.array([3.0, 4.0])
    before = landmark_error(lf, lm)
    assert before["lre_mean"] == pytest.approx(5.0) and before["lre_max"] == pytest.approx(5.0)
    flow = np.zeros((2, 32, 32))
    flow[0], flow[1] = 3.0, 4.0  # fixed p <-> moving p + (3, 4): perfect
    assert landmark_error(lf, lm, flow)["lre_mean"] == pytest.approx(0.0, abs=1e-12)
    flow[0] = 0.0  # only dy right: each error is 3
    e = landmark_errors(lf, lm, torch.as_tensor(flow))
    np.testing.assert_allclose(e, [3.0, 3.0, 3.0])


def test_landmark_error_hand_computed_mixed():
    lf = np.array([[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]])
    lm = np.array([[1.0, 1.0], [2.0, 3.0], [7.0, 8.0]])  # errors 0, 1, 5
    r = landmark_error(lf, lm)
    assert r["lre_mean"] == pytest.approx(2.0)
    assert r["lre_median"] == pytest.approx(1.0)
    assert r["lre_max"] == pytest.approx(5.0)
    assert r["num_landmarks"] == 3


def test_sample_flow_bilinear():
    flow = np.zeros((2, 4, 4))
    flow[0] = np.arange(4)[None, :]  # dx = x
    flow[1] = 2 * np.arange(4)[:, None]  # dy = 2 y
    out = sample_flow_at(flow, np.array([[1.5, 2.25]]))
    np.testing.assert_allclose(out, [[1.5, 4.5]])


def test_landmark_error_shape_errors():
    with pytest.raises(ValueError, match="landmarks_moving"):
        landmark_error(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="landmarks_fixed"):
        landmark_error(np.zeros((3, 3)), np.zeros((3, 3)))


def test_folding_fraction_hand_made():
    assert folding_fraction(torch.zeros(1, 2, 16, 16)) == 0.0
    # the map x -> x - 2 x = -x flips every column: det J = 1 + d(dx)/dx = -1 everywhere
    xs = torch.arange(16, dtype=torch.float64)
    flow = torch.zeros(1, 2, 16, 16, dtype=torch.float64)
    flow[0, 0] = -2.0 * xs[None, :]
    assert folding_fraction(flow) == pytest.approx(1.0)
    # fold only the left half's interior columns (well away from the boundary of the region)
    half = torch.zeros(2, 16, 16, dtype=torch.float64)
    half[0, :, :8] = -2.0 * xs[None, :8]
    frac = folding_fraction(half)
    assert 0.3 <= frac <= 0.6


def test_corner_error_and_evaluator():
    A = np.array([[1.0, 0, 2.0], [0, 1.0, 0.0]])
    assert mean_corner_error(A, np.eye(3)[:2], 10, 10) == pytest.approx(2.0)
    ev = RegistrationEvaluator()
    lf = np.array([[2.0, 2.0], [5.0, 5.0]])
    ev.add("a", np.zeros((2, 8, 8)), lf, lf + [0.0, 1.0])
    ev.add("b", np.zeros((2, 8, 8)), lf, lf + [0.0, 3.0])
    s = ev.summary()
    assert s["lre_mean"] == pytest.approx(2.0) and s["lre_max"] == pytest.approx(3.0)
    assert s["num_pairs"] == 2 and s["folding_fraction"] == 0.0
