"""RMSProp against hand-computed steps, its checkpoint round trip, gradient clipping,
the step-decay schedule and the running average of the weights."""
import math

import numpy as np
import pytest

from stvae_np.optim import RMSProp, StepDecay, WeightAverage, clip_grad_norm, clip_grad_value, step_decay


# ----------------------------------------------------------------------------- RMSProp
def test_rmsprop_two_steps_by_hand():
    # lr = 0.1, alpha = 0.9, eps = 0 (so the arithmetic is exact; eps has its own test);
    # θ0 = [1, -2]
    theta = np.array([1.0, -2.0])
    params = {"w": theta}
    opt = RMSProp(params, lr=0.1, alpha=0.9, eps=0.0)

    # step 1, g = [0.5, 2]:
    #   v1 = 0.9·0 + 0.1·g² = [0.025, 0.4];  √v1 = [0.158113883008, 0.632455532034]
    #   0.1·g/√v1 = [0.05/0.158113883008, 0.2/0.632455532034] = [0.316227766017, 0.316227766017]
    #   θ1 = [1 − 0.316227766017, −2 − 0.316227766017]
    opt.step({"w": np.array([0.5, 2.0])})
    np.testing.assert_allclose(opt.v["w"], [0.025, 0.4], rtol=1e-12)
    np.testing.assert_allclose(theta, [0.683772233983, -2.316227766017], rtol=1e-11)

    # step 2, g = [-1, 0]:
    #   v2 = 0.9·[0.025, 0.4] + 0.1·[1, 0] = [0.1225, 0.36];  √v2 = [0.35, 0.6]
    #   θ2 = θ1 − 0.1·[−1, 0]/√v2 = [0.683772233983 + 0.1/0.35, −2.316227766017]
    #      = [0.683772233983 + 0.285714285714, −2.316227766017]
    opt.step({"w": np.array([-1.0, 0.0])})
    np.testing.assert_allclose(opt.v["w"], [0.1225, 0.36], rtol=1e-12)
    np.testing.assert_allclose(theta, [0.969486519697, -2.316227766017], rtol=1e-11)
    assert opt.t == 2
    assert params["w"] is theta                 # updated in place, same object


def test_rmsprop_default_eps_is_1e_minus_8():
    # same first step as above with the default eps: 0.05/(0.158113883008 + 1e-8)
    theta = np.array([1.0])
    opt = RMSProp({"w": theta}, lr=0.1, alpha=0.9)
    assert (opt.alpha, opt.eps) == (0.9, 1e-8)
    opt.step({"w": np.array([0.5])})
    np.testing.assert_allclose(theta, [1 - 0.05 / (math.sqrt(0.025) + 1e-8)], rtol=1e-14)


def test_rmsprop_eps_is_outside_the_square_root():
    # alpha = 0 makes v = g². With g = 1e-4 and eps = 1e-4:
    #   outside: g/(√(g²) + eps) = 1e-4/2e-4 = 0.5
    #   inside would be g/√(g² + eps) ≈ 0.01
    theta = np.zeros(1)
    RMSProp({"w": theta}, lr=1.0, alpha=0.0, eps=1e-4).step({"w": np.array([1e-4])})
    np.testing.assert_allclose(theta, [-0.5], rtol=1e-12)


def test_rmsprop_zero_gradient_from_zero_state_is_finite():
    theta = np.ones(3)
    RMSProp({"w": theta}, lr=0.1).step({"w": np.zeros(3)})
    np.testing.assert_array_equal(theta, np.ones(3))


def test_rmsprop_keeps_float32():
    rng = np.random.default_rng(0)
    params = {"a": rng.standard_normal((3, 4)).astype(np.float32),
              "b": rng.standard_normal(4).astype(np.float32)}
    opt = RMSProp(params, lr=1e-2)
    for _ in range(3):
        opt.step({k: rng.standard_normal(p.shape).astype(np.float32) for k, p in params.items()})
    for k in params:
        assert params[k].dtype == np.float32
        assert opt.v[k].dtype == np.float32


def test_rmsprop_lr_is_settable():
    theta = np.zeros(1)
    opt = RMSProp({"w": theta}, lr=1.0, alpha=0.0, eps=0.0)
    opt.lr = 0.25
    opt.step({"w": np.array([2.0])})          # step = lr·g/|g| = 0.25
    np.testing.assert_allclose(theta, [-0.25])


def test_rmsprop_state_dict_round_trip_continues_identically(tmp_path):
    rng = np.random.default_rng(1)
    shapes = {"enc.W": (2, 1, 3, 3), "enc.b": (2,)}
    params_a = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    grads = [{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
             for _ in range(5)]
    opt_a = RMSProp(params_a, lr=1e-2, alpha=0.9)
    for g in grads[:3]:
        opt_a.step(g)

    np.savez(tmp_path / "opt.npz", **opt_a.state_dict())
    params_b = {k: p.copy() for k, p in params_a.items()}
    opt_b = RMSProp(params_b, lr=123.0)       # wrong lr on purpose: the state restores it
    with np.load(tmp_path / "opt.npz") as f:
        opt_b.load_state_dict(dict(f))
    assert (opt_b.lr, opt_b.alpha, opt_b.eps, opt_b.t) == (1e-2, 0.9, 1e-8, 3)
    for k in shapes:
        assert opt_b.v[k].dtype == np.float32

    for g in grads[3:]:
        opt_a.step(g)
        opt_b.step(g)
    for k in shapes:
        np.testing.assert_array_equal(params_a[k], params_b[k])
        np.testing.assert_array_equal(opt_a.v[k], opt_b.v[k])


def test_rmsprop_state_dict_is_a_copy():
    theta = np.zeros(2)
    opt = RMSProp({"w": theta}, lr=0.1)
    opt.step({"w": np.ones(2)})
    state = opt.state_dict()
    state["v/w"][:] = 7.0
    assert not np.any(opt.v["w"] == 7.0)
    opt.load_state_dict(state)
    opt.v["w"][:] = 0.0
    assert np.all(state["v/w"] == 7.0)          # loading copies too


def test_rmsprop_errors():
    opt = RMSProp({"a": np.zeros(2), "b": np.zeros(3)}, lr=0.1)
    with pytest.raises(ValueError, match="no gradient for parameter.*'b'"):
        opt.step({"a": np.zeros(2)})
    with pytest.raises(ValueError, match="unknown parameter.*'c'"):
        opt.step({"a": np.zeros(2), "b": np.zeros(3), "c": np.zeros(1)})
    with pytest.raises(ValueError, match="gradient of 'a' has shape"):
        opt.step({"a": np.zeros(3), "b": np.zeros(3)})

    state = opt.state_dict()
    bad = dict(state, **{"v/a": np.zeros(5)})
    with pytest.raises(ValueError, match="state of 'a' has shape"):
        opt.load_state_dict(bad)
    bad = {k: v for k, v in state.items() if k != "v/b"}
    with pytest.raises(ValueError, match="no state for parameter.*'b'"):
        opt.load_state_dict(bad)
    bad = dict(state, **{"v/z": np.zeros(1)})
    with pytest.raises(ValueError, match="unknown parameter.*'z'"):
        opt.load_state_dict(bad)
    bad = {k: v for k, v in state.items() if k != "lr"}
    with pytest.raises(ValueError, match="missing key 'lr'"):
        opt.load_state_dict(bad)


# ----------------------------------------------------------------------------- clipping
def test_clip_grad_norm_returns_the_norm_and_scales_to_max_norm():
    grads = {"a": np.array([3.0]), "b": np.array([[4.0]])}
    norm = clip_grad_norm(grads, max_norm=1.0)
    assert isinstance(norm, np.ndarray) and norm.ndim == 0      # a 0-d array, not a float
    np.testing.assert_allclose(norm, 5.0, rtol=1e-12)
    # scaled by 1/(5 + 1e-6): a = 0.6, b = 0.8 (up to the 1e-6)
    np.testing.assert_allclose(grads["a"], [3.0 / (5.0 + 1e-6)], rtol=1e-12)
    np.testing.assert_allclose(grads["b"], [[4.0 / (5.0 + 1e-6)]], rtol=1e-12)
    total = np.sqrt(sum(np.sum(g ** 2) for g in grads.values()))
    np.testing.assert_allclose(total, 1.0, rtol=1e-6)


def test_clip_grad_norm_leaves_small_gradients_untouched():
    rng = np.random.default_rng(2)
    grads = {"a": rng.standard_normal((3, 3)).astype(np.float32),
             "b": rng.standard_normal(5).astype(np.float32)}
    before = {k: g.copy() for k, g in grads.items()}
    norm = clip_grad_norm(grads, max_norm=100.0)
    expected = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in before.values()))
    np.testing.assert_allclose(norm, expected, rtol=1e-6)
    for k in grads:
        np.testing.assert_array_equal(grads[k], before[k])   # bit for bit
        assert grads[k].dtype == np.float32


def test_clip_grad_norm_float32_stays_float32_when_clipping():
    grads = {"a": np.full(4, 10.0, dtype=np.float32)}         # norm 20
    norm = clip_grad_norm(grads, max_norm=2.0)
    assert grads["a"].dtype == np.float32
    np.testing.assert_allclose(norm, 20.0, rtol=1e-6)
    np.testing.assert_allclose(grads["a"], np.full(4, 1.0), rtol=1e-6)


def test_clip_grad_value_clamps_in_place():
    g = np.array([-80.0, -50.0, -3.0, 0.0, 49.9, 51.0])
    grads = {"w": g}
    out = clip_grad_value(grads)              # ±50 by default
    assert out is grads and grads["w"] is g
    np.testing.assert_array_equal(g, [-50.0, -50.0, -3.0, 0.0, 49.9, 50.0])
    clip_grad_value(grads, clip=1.0)
    np.testing.assert_array_equal(g, [-1.0, -1.0, -1.0, 0.0, 1.0, 1.0])


def test_clipping_errors():
    with pytest.raises(ValueError, match="max_norm must be > 0"):
        clip_grad_norm({"a": np.ones(1)}, 0.0)
    with pytest.raises(ValueError, match="clip must be > 0"):
        clip_grad_value({"a": np.ones(1)}, -1.0)
    with pytest.raises(ValueError, match="no gradients"):
        clip_grad_norm({}, 1.0)


# ----------------------------------------------------------------------------- schedule
def test_step_decay_values():
    # lr × 0.9 every 5 epochs
    assert step_decay(1e-4, 0) == pytest.approx(1e-4)
    assert step_decay(1e-4, 4) == pytest.approx(1e-4)
    assert step_decay(1e-4, 5) == pytest.approx(0.9e-4)
    assert step_decay(1e-4, 9) == pytest.approx(0.9e-4)
    assert step_decay(1e-4, 10) == pytest.approx(0.81e-4)
    assert step_decay(1.0, 6, gamma=0.5, every=2) == pytest.approx(0.125)
    with pytest.raises(ValueError):
        step_decay(1e-4, -1)


def test_step_decay_class_sets_the_optimizer_lr():
    opt = RMSProp({"w": np.zeros(1)}, lr=1e-4)
    sched = StepDecay(base_lr=1e-4)
    assert sched(10) == pytest.approx(0.81e-4)
    assert sched.apply(opt, 5) == pytest.approx(0.9e-4)
    assert opt.lr == pytest.approx(0.9e-4)


def test_weight_average_by_hand_and_swap():
    """θ̄ ← d·θ̄ + (1 − d)·θ after each update, starting at θ; swap exchanges θ̄ and θ in place."""
    params = {"w": np.array([1.0, -2.0]), "b": np.array([4.0])}
    avg = WeightAverage(params, 0.75)
    params["w"][...] = [3.0, 2.0]               # a step moved the weights
    avg.update()
    np.testing.assert_allclose(avg.average["w"], [0.75 * 1 + 0.25 * 3, 0.75 * -2 + 0.25 * 2])
    np.testing.assert_allclose(avg.average["b"], [4.0])
    params["w"][...] = [5.0, 0.0]
    avg.update()
    np.testing.assert_allclose(avg.average["w"], [0.75 * 1.5 + 0.25 * 5, 0.75 * -1.0 + 0.25 * 0])
    w = params["w"]
    avg.swap()
    assert params["w"] is w                      # in place: the model keeps its arrays
    np.testing.assert_allclose(params["w"], [2.375, -0.75])
    np.testing.assert_allclose(avg.average["w"], [5.0, 0.0])
    avg.swap()
    np.testing.assert_allclose(params["w"], [5.0, 0.0])
