"""The referee must be able to fail: gradcheck.directional_check reports an error above
1e-5 for a gradient that is 1 % off or has the wrong sign, and passes the right one.

Checked on an exact quadratic loss and on the tiny model's real loss (float64, a
2-clip 3-frame random clip); a referee that passed everything would make every
gradient check in the suite worthless.
"""
import numpy as np
import pytest

from stvae_np.gradcheck import directional_check
from stvae_np.model import PARAM_NAMES, STVAE, Config

TOL = 1e-5          # what the whole-model checks accept (tests/test_model.py)

# the ways a backward pass goes wrong that the check must catch
BUGS = {
    "1% too large": lambda g: 1.01 * g,
    "1% too small": lambda g: 0.99 * g,
    "sign flipped": lambda g: -g,
}


# ----------------------------------------------------------------------------- quadratic
def quadratic():
    """L(θ) = ½ Σ_name θᵀ A θ + bᵀθ over two tensors, gradient A θ + b (exact)."""
    rng = np.random.default_rng(0)
    params = {"u": rng.standard_normal((3, 4)), "v": rng.standard_normal(5)}
    mats = {}
    for name, p in params.items():
        m = rng.standard_normal((p.size, p.size))
        mats[name] = (m @ m.T / p.size + np.eye(p.size), rng.standard_normal(p.size))

    def loss():
        return sum(0.5 * p.ravel() @ mats[k][0] @ p.ravel() + mats[k][1] @ p.ravel()
                   for k, p in params.items())

    grads = {k: (mats[k][0] @ p.ravel() + mats[k][1]).reshape(p.shape) for k, p in params.items()}
    return loss, params, grads


def test_quadratic_right_gradient_passes():
    loss, params, grads = quadratic()
    worst = directional_check(loss, params, grads)
    assert max(worst.values()) <= TOL, worst


@pytest.mark.parametrize("bug", BUGS)
def test_quadratic_wrong_gradient_fails(bug):
    loss, params, grads = quadratic()
    before = {k: p.copy() for k, p in params.items()}
    worst = directional_check(loss, params, {k: BUGS[bug](g) for k, g in grads.items()})
    assert min(worst.values()) > TOL, worst
    for k in params:                               # the check restores what it perturbs
        np.testing.assert_array_equal(params[k], before[k])


# ----------------------------------------------------------------------------- the model
@pytest.fixture(scope="module")
def tiny_model():
    """The tiny preset in float64 with the flow head moved off zero (at initialisation it
    is zero and most tensors get no gradient), and a random 2-clip 3-frame clip."""
    model = STVAE(Config.tiny(), seed=1, dtype="float64")
    rng = np.random.default_rng(7)
    model.params["flow3.W"][...] = rng.normal(0, 0.5, model.params["flow3.W"].shape)
    model.params["flow3.b"][...] = [0.37, -0.29]   # sample points off the integer grid
    clip = rng.random((2, 3, 1, 32, 32))
    _, grads = model.loss_and_grads(clip)
    for name in PARAM_NAMES:
        assert np.abs(grads[name]).max() > 0, f"{name} gets no gradient"
    return model, clip, grads


def test_model_right_gradient_passes(tiny_model):
    model, clip, grads = tiny_model
    worst = directional_check(lambda: model.loss(clip), model.params, grads, PARAM_NAMES)
    assert max(worst.values()) <= TOL, worst


@pytest.mark.parametrize("bug", BUGS)
def test_model_wrong_gradient_fails_on_every_tensor(tiny_model, bug):
    model, clip, grads = tiny_model
    wrong = {name: BUGS[bug](g) for name, g in grads.items()}
    worst = directional_check(lambda: model.loss(clip), model.params, wrong, PARAM_NAMES)
    assert min(worst.values()) > TOL, worst


@pytest.mark.parametrize("bad", ["lstm.Wh", "dec.b"])
def test_model_one_wrong_tensor_is_singled_out(tiny_model, bad):
    """One tensor's gradient 1 % off: that one fails, the others still pass."""
    model, clip, grads = tiny_model
    wrong = dict(grads, **{bad: 1.01 * grads[bad]})
    worst = directional_check(lambda: model.loss(clip), model.params, wrong, PARAM_NAMES)
    assert worst[bad] > TOL, worst
    assert max(e for name, e in worst.items() if name != bad) <= TOL, worst
