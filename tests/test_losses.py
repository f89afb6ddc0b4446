"""MSE and Huber smoothness: values against the formulas, gradients against centred
finite differences in float64 (Huber differences kept off |a| = δ), both Huber regimes,
0-d array results, dtypes and errors for bad input."""
import numpy as np
import pytest

from stvae_np.gradcheck import numerical_gradient, rel_error
from stvae_np.losses import (huber_smoothness_backward, huber_smoothness_forward, mse_backward,
                             mse_forward)

TOL = 1e-6


def huber_reference(flow, delta):
    """The formula written out, one difference at a time."""
    def h(a):
        return a * a / 2 if abs(a) <= delta else delta * (abs(a) - delta / 2)
    d_x = flow[..., :, 1:] - flow[..., :, :-1]
    d_y = flow[..., 1:, :] - flow[..., :-1, :]
    return (sum(h(a) for a in d_x.ravel()) / d_x.size
            + sum(h(a) for a in d_y.ravel()) / d_y.size)


def huber_grad_reference(flow, delta):
    """dH/dflow written out: each difference D = T[b] − T[a] sends H_δ'(D)/count to T[b]
    and minus that to T[a], with H_δ'(a) = a inside and δ·sign(a) outside."""
    def dh(a):
        return a if abs(a) <= delta else delta * np.sign(a)
    grad = np.zeros_like(flow)
    d_x = flow[..., :, 1:] - flow[..., :, :-1]
    d_y = flow[..., 1:, :] - flow[..., :-1, :]
    for idx in np.ndindex(d_x.shape):
        g = dh(d_x[idx]) / d_x.size
        grad[idx[:-1] + (idx[-1] + 1,)] += g
        grad[idx] -= g
    for idx in np.ndindex(d_y.shape):
        g = dh(d_y[idx]) / d_y.size
        grad[idx[:-2] + (idx[-2] + 1, idx[-1])] += g
        grad[idx] -= g
    return grad


def off_kink_flow(rng, shape, delta, margin=0.01):
    """A random flow whose neighbouring differences stay at least ``margin`` away from ±δ.

    Also rejected: flows where some pixel's gradient cancels to (near) zero, e.g. a
    pixel whose differences are all in the linear regime with opposite signs (±δ/count
    each). The relative error of 0 against a round-off of 1e-11 is meaningless.
    Draws until one qualifies (tiny shapes make this quick)."""
    while True:
        flow = rng.uniform(-1, 1, shape)
        d_x = flow[..., :, 1:] - flow[..., :, :-1]
        d_y = flow[..., 1:, :] - flow[..., :-1, :]
        gaps = np.abs(np.abs(np.concatenate([d_x.ravel(), d_y.ravel()])) - delta)
        if gaps.min() <= margin:      # a step h = 1e-6 ≪ margin never crosses ±δ
            continue
        grad = np.abs(huber_grad_reference(flow, delta))
        if grad.min() > 1e-3 * grad.max():
            return flow


# ----------------------------------------------------------------------------- MSE
def test_mse_value_is_a_0d_array_and_matches_the_formula():
    rng = np.random.default_rng(0)
    pred, target = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 4, 5))
    loss, _ = mse_forward(pred, target)
    assert isinstance(loss, np.ndarray) and loss.shape == () and loss.dtype == np.float64
    assert loss == pytest.approx(np.sum((pred - target) ** 2) / pred.size, rel=1e-14)
    assert mse_forward(pred, pred)[0] == 0.0


def test_mse_gradient():
    rng = np.random.default_rng(1)
    pred, target = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    pred0, target0 = pred.copy(), target.copy()
    dloss = 0.7
    _, cache = mse_forward(pred, target)
    dpred = mse_backward(dloss, cache)
    np.testing.assert_array_equal(pred, pred0)
    np.testing.assert_array_equal(target, target0)
    np.testing.assert_allclose(dpred, dloss * 2 * (pred - target) / pred.size, rtol=1e-14)
    dpred_num = numerical_gradient(lambda v: mse_forward(v, target)[0], pred, np.array(dloss))
    assert rel_error(dpred, dpred_num) <= TOL
    # a 0-d array as dloss gives the same
    np.testing.assert_array_equal(mse_backward(np.array(dloss), cache), dpred)


def test_mse_keeps_float32():
    rng = np.random.default_rng(2)
    pred = rng.standard_normal((3, 4)).astype(np.float32)
    target = rng.standard_normal((3, 4)).astype(np.float32)
    loss, cache = mse_forward(pred, target)
    assert loss.dtype == np.float32 and loss.shape == ()
    assert mse_backward(np.float64(1.0), cache).dtype == np.float32
    assert mse_backward(np.array(1.0), cache).dtype == np.float32   # a float64 0-d array must not promote


def test_mse_bad_input():
    with pytest.raises(ValueError, match="shape mismatch"):
        mse_forward(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="dtypes differ"):
        mse_forward(np.zeros(3, np.float32), np.zeros(3))
    with pytest.raises(ValueError, match="floating-point"):
        mse_forward(np.zeros(3, int), np.zeros(3, int))


# ----------------------------------------------------------------------------- Huber
def test_huber_both_regimes_by_hand():
    delta = 0.5
    # one row: differences 0.2 (quadratic) and −1.0 (linear); one column step of 0 and 3
    flow = np.array([[0.0, 0.2, -0.8],
                     [0.0, 3.2, 2.2]])
    # D_x = [[0.2, −1.0], [3.2, −1.0]], D_y = [[0, 3, 3]]
    h_x = [0.2 ** 2 / 2, 0.5 * (1.0 - 0.25), 0.5 * (3.2 - 0.25), 0.5 * (1.0 - 0.25)]
    h_y = [0.0, 0.5 * (3.0 - 0.25), 0.5 * (3.0 - 0.25)]
    loss, cache = huber_smoothness_forward(flow, delta)
    assert loss.shape == () and loss == pytest.approx(np.mean(h_x) + np.mean(h_y), rel=1e-14)
    # gradient by hand: clip(D, −δ, δ) / count, +to the later pixel, −to the earlier
    g_x = np.clip(np.array([[0.2, -1.0], [3.2, -1.0]]), -delta, delta) / 4
    g_y = np.clip(np.array([[0.0, 3.0, 3.0]]), -delta, delta) / 3
    expected = np.zeros_like(flow)
    expected[:, 1:] += g_x
    expected[:, :-1] -= g_x
    expected[1:, :] += g_y
    expected[:-1, :] -= g_y
    np.testing.assert_allclose(huber_smoothness_backward(1.0, cache), expected, rtol=1e-14)


@pytest.mark.parametrize("delta", [0.5, 0.05, 3.0])   # mixed, mostly linear, all quadratic
def test_huber_value_matches_the_formula(delta):
    rng = np.random.default_rng(3)
    flow = rng.uniform(-1, 1, (2, 2, 4, 5))
    loss, _ = huber_smoothness_forward(flow, delta)
    assert loss == pytest.approx(huber_reference(flow, delta), rel=1e-13)


@pytest.mark.parametrize("shape,delta", [((2, 2, 4, 5), 0.5), ((1, 2, 3, 3), 0.3), ((4, 3), 0.6),
                                         ((1, 2, 2, 3), 1e-3)])
def test_huber_gradient_in_both_regimes(shape, delta):
    rng = np.random.default_rng(len(shape) + int(10 * delta))
    flow = off_kink_flow(rng, shape, delta, margin=min(0.01, delta / 2))
    d = np.abs(np.concatenate([np.diff(flow, axis=-1).ravel(), np.diff(flow, axis=-2).ravel()]))
    assert np.any(d > delta)                               # the linear regime is exercised
    if delta > 0.01:
        assert np.any(d < delta)                           # and the quadratic one
    flow0 = flow.copy()
    dloss = 1.3
    _, cache = huber_smoothness_forward(flow, delta)
    dflow = huber_smoothness_backward(dloss, cache)
    np.testing.assert_array_equal(flow, flow0)
    np.testing.assert_allclose(dflow, dloss * huber_grad_reference(flow, delta), rtol=1e-12, atol=1e-15)
    dflow_num = numerical_gradient(lambda v: huber_smoothness_forward(v, delta)[0], flow,
                                   np.array(dloss), h=1e-6)
    assert rel_error(dflow, dflow_num) <= TOL


def test_huber_quadratic_regime_is_half_the_mean_square():
    rng = np.random.default_rng(4)
    flow = rng.uniform(-0.1, 0.1, (1, 2, 4, 4))          # every |D| < 0.2 < δ
    loss, _ = huber_smoothness_forward(flow, delta=1.0)
    d_x, d_y = np.diff(flow, axis=-1), np.diff(flow, axis=-2)
    assert loss == pytest.approx(0.5 * (np.mean(d_x ** 2) + np.mean(d_y ** 2)), rel=1e-13)


def test_huber_default_delta_and_constant_flow():
    assert huber_smoothness_forward(np.full((1, 2, 3, 3), 4.0))[0] == 0.0
    flow = np.zeros((1, 1, 2, 2))
    flow[..., 1] = 1.0                                   # D_x = 1 ≫ δ = 1e-3, D_y = 0
    loss, _ = huber_smoothness_forward(flow)
    assert loss == pytest.approx(1e-3 * (1.0 - 0.5e-3), rel=1e-13)


def test_huber_keeps_float32():
    flow = np.random.default_rng(5).uniform(-1, 1, (1, 2, 4, 4)).astype(np.float32)
    loss, cache = huber_smoothness_forward(flow, 0.5)
    assert loss.dtype == np.float32 and loss.shape == ()
    assert huber_smoothness_backward(np.array(1.0), cache).dtype == np.float32


def test_huber_bad_input():
    with pytest.raises(ValueError, match="delta must be positive"):
        huber_smoothness_forward(np.zeros((1, 2, 3, 3)), 0.0)
    with pytest.raises(ValueError, match="delta must be positive"):
        huber_smoothness_forward(np.zeros((1, 2, 3, 3)), -1.0)
    with pytest.raises(ValueError, match="delta must be positive"):
        huber_smoothness_forward(np.zeros((1, 2, 3, 3)), float("nan"))
    with pytest.raises(ValueError, match="at least 2×2"):
        huber_smoothness_forward(np.zeros((1, 2, 1, 3)), 0.5)
    with pytest.raises(ValueError, match="two spatial axes"):
        huber_smoothness_forward(np.zeros(5), 0.5)
    with pytest.raises(ValueError, match="floating-point"):
        huber_smoothness_forward(np.zeros((3, 3), int), 0.5)


def test_charbonnier_values_and_gradient():
    """ρ(d) = √(d² + ε²) − ε, averaged: the value by hand, the gradient against centred
    differences, and ≈ d²/2ε for small d, ≈ |d| for large d."""
    from stvae_np.losses import charbonnier_backward, charbonnier_forward
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(3, 1, 5, 4)), rng.normal(size=(3, 1, 5, 4))
    loss, cache = charbonnier_forward(pred, target, eps=0.1)
    d = pred - target
    assert float(loss) == pytest.approx(np.mean(np.sqrt(d ** 2 + 0.01) - 0.1), rel=1e-14)
    dpred = charbonnier_backward(2.0, cache)
    num = numerical_gradient(lambda p: charbonnier_forward(p, target, eps=0.1)[0], pred.copy())
    assert rel_error(dpred, 2.0 * num) < 1e-6
    tiny, _ = charbonnier_forward(np.array([[[[1e-4]]]]), np.zeros((1, 1, 1, 1)), eps=0.01)
    assert float(tiny) == pytest.approx(1e-8 / 0.02, rel=1e-3)
    big, _ = charbonnier_forward(np.array([[[[5.0]]]]), np.zeros((1, 1, 1, 1)), eps=0.01)
    assert float(big) == pytest.approx(5.0 - 0.01, rel=1e-5)
    with pytest.raises(ValueError, match="eps"):
        charbonnier_forward(pred, target, eps=0)


def test_weighted_mse_values_and_gradient():
    """Σ w d² / Σ w: the value by hand, the gradient against centred differences, equal
    weights give the plain MSE, all-zero weights give 0 and no gradient, bad input fails."""
    from stvae_np.losses import weighted_mse_backward, weighted_mse_forward
    rng = np.random.default_rng(1)
    pred, target = rng.normal(size=(2, 1, 4, 5)), rng.normal(size=(2, 1, 4, 5))
    w = rng.random((2, 1, 4, 5))
    loss, cache = weighted_mse_forward(pred, target, w)
    assert loss.shape == () and loss.dtype == np.float64
    assert float(loss) == pytest.approx(np.sum(w * (pred - target) ** 2) / np.sum(w), rel=1e-14)
    dpred = weighted_mse_backward(3.0, cache)
    num = numerical_gradient(lambda p: weighted_mse_forward(p, target, w)[0], pred.copy())
    assert rel_error(dpred, 3.0 * num) < TOL
    flat, _ = weighted_mse_forward(pred, target, np.full_like(w, 0.7))
    assert float(flat) == pytest.approx(float(mse_forward(pred, target)[0]), rel=1e-13)
    zero, zcache = weighted_mse_forward(pred, target, np.zeros_like(w))
    assert float(zero) == 0.0 and not weighted_mse_backward(1.0, zcache).any()
    with pytest.raises(ValueError, match="shape mismatch"):
        weighted_mse_forward(pred, target, w[:1])
    with pytest.raises(ValueError, match="one dtype"):
        weighted_mse_forward(pred, target, w.astype(np.float32))


def test_geman_mcclure_values_and_gradient():
    """ρ(d) = d²/(d² + C²), plain or weighted mean: the values by hand, the gradient against
    centred differences, ≈ d²/C² for small d and → 1 for large d, bad input fails."""
    from stvae_np.losses import geman_mcclure_backward, geman_mcclure_forward
    rng = np.random.default_rng(2)
    pred, target = rng.normal(size=(2, 1, 4, 5)), rng.normal(size=(2, 1, 4, 5))
    w = rng.random((2, 1, 4, 5))
    d = pred - target
    rho = d ** 2 / (d ** 2 + 0.3 ** 2)
    for weight, expected in ((None, np.mean(rho)), (w, np.sum(w * rho) / np.sum(w))):
        loss, cache = geman_mcclure_forward(pred, target, 0.3, weight)
        assert loss.shape == () and float(loss) == pytest.approx(expected, rel=1e-13)
        num = numerical_gradient(lambda p: geman_mcclure_forward(p, target, 0.3, weight)[0], pred.copy())
        assert rel_error(geman_mcclure_backward(2.0, cache), 2.0 * num) < TOL
    small, _ = geman_mcclure_forward(np.array([1e-3]), np.zeros(1), 0.1)
    assert float(small) == pytest.approx(1e-6 / 0.01, rel=1e-3)
    big, _ = geman_mcclure_forward(np.array([100.0]), np.zeros(1), 0.1)
    assert float(big) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="scale must be positive"):
        geman_mcclure_forward(pred, target, 0.0)
    with pytest.raises(ValueError, match="shape mismatch"):
        geman_mcclure_forward(pred, target, 0.1, w[:1])
    with pytest.raises(ValueError, match="one dtype"):
        geman_mcclure_forward(pred, target.astype(np.float32), 0.1)
