"""ConvLSTM: values against a gate-by-gate reference, gradients (single step and through
time) against centred finite differences in float64, fresh state per call, dtype
keeping, errors for bad input, and a backward that leaves its inputs and its cache alone."""
import copy

import numpy as np
import pytest

from stvae_np.activations import sigmoid
from stvae_np.fast.layers import conv2d_forward
from stvae_np.fast.memory import (convlstm_backward, convlstm_forward, convlstm_step_backward,
                                  convlstm_step_forward)
from stvae_np.gradcheck import numerical_gradient, rel_error

TOL = 1e-6


def make_params(rng, c, f, k, scale=None, dtype=np.float64):
    """Weights of std 0.7 / k: large enough that the gates leave the linear region around
    σ(0) = 0.5, small enough that none saturates (a forget gate at 1e-5 leaves gradient
    entries so small that finite differences cannot resolve them to 1e-6)."""
    scale = 0.7 / k if scale is None else scale
    return {"Wx": (scale * rng.standard_normal((4 * f, c, k, k))).astype(dtype),
            "Wh": (scale * rng.standard_normal((4 * f, f, k, k))).astype(dtype),
            "b": (0.5 * rng.standard_normal(4 * f)).astype(dtype)}


def reference_forward(xs, params, h0, c0):
    """The equations with eight separate convolutions (no concatenation, no cache)."""
    nf = params["Wh"].shape[1]
    h, c, hs = h0, c0, []
    for t in range(xs.shape[1]):
        gate = []
        for j in range(4):  # i, f, g, o
            rows = slice(j * nf, (j + 1) * nf)
            gate.append(conv2d_forward(xs[:, t], params["Wx"][rows], params["b"][rows])[0]
                        + conv2d_forward(h, params["Wh"][rows], None)[0])
        i, f, g, o = sigmoid(gate[0]), sigmoid(gate[1]), np.tanh(gate[2]), sigmoid(gate[3])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs.append(h)
    return np.stack(hs, axis=1)


def test_forward_matches_gate_by_gate_reference():
    rng = np.random.default_rng(0)
    n, t_len, c, f, k, hh, ww = 2, 3, 3, 2, 3, 5, 4
    xs = rng.standard_normal((n, t_len, c, hh, ww))
    params = make_params(rng, c, f, k)
    h0 = rng.standard_normal((n, f, hh, ww))
    c0 = rng.standard_normal((n, f, hh, ww))
    hs, cache = convlstm_forward(xs, params, h0, c0)
    assert hs.shape == (n, t_len, f, hh, ww)
    np.testing.assert_allclose(hs, reference_forward(xs, params, h0, c0), rtol=1e-12, atol=1e-12)
    # the four gates come from one convolution over [x; h]: C + F input channels
    # (kept channel-major and zero-padded, the layout im2col reads)
    assert cache.steps[0].xh_pad.shape == (c + f, n, hh + 2 * (k // 2), ww + 2 * (k // 2))
    assert cache.steps[0].w.shape == (4 * f, c + f, k, k)


# ----------------------------------------------------------------------------- gradients
# (T, k, (N, C, F, h, w)): tiny, so the element-by-element finite differences stay fast
GRAD_CASES = [
    (1, 3, (2, 2, 2, 4, 4)),
    (2, 3, (2, 2, 2, 4, 4)),
    (5, 3, (2, 2, 2, 4, 4)),
    (1, 7, (2, 2, 2, 5, 5)),
    (2, 7, (1, 2, 2, 5, 5)),
    (5, 7, (1, 1, 2, 5, 5)),
]


@pytest.mark.parametrize("t_len,k,shape", GRAD_CASES)
def test_convlstm_gradients(t_len, k, shape):
    n, c, f, hh, ww = shape
    rng = np.random.default_rng(10 * t_len + k)
    xs = rng.standard_normal((n, t_len, c, hh, ww))
    params = make_params(rng, c, f, k)
    h0 = rng.standard_normal((n, f, hh, ww))
    c0 = rng.standard_normal((n, f, hh, ww))
    hs, cache = convlstm_forward(xs, params, h0, c0)
    dhs = rng.standard_normal(hs.shape)
    dxs, dparams = convlstm_backward(dhs, cache)
    assert set(dparams) == {"Wx", "Wh", "b", "h0", "c0"}

    def run(xs_=xs, h0_=h0, c0_=c0):
        return convlstm_forward(xs_, params, h0_, c0_)[0]

    numeric = {
        "xs": numerical_gradient(lambda v: run(xs_=v), xs, dhs),
        "Wx": numerical_gradient(lambda v: run(), params["Wx"], dhs),
        "Wh": numerical_gradient(lambda v: run(), params["Wh"], dhs),
        "b": numerical_gradient(lambda v: run(), params["b"], dhs),
        "h0": numerical_gradient(lambda v: run(h0_=v), h0, dhs),
        "c0": numerical_gradient(lambda v: run(c0_=v), c0, dhs),
    }
    analytic = {"xs": dxs, **dparams}
    errs = {name: rel_error(analytic[name], numeric[name]) for name in numeric}
    assert max(errs.values()) <= TOL, f"relative errors {errs}"


def test_dc_last_gradient():
    """A loss on the final cell state c_{T-1} (returned in the cache) backpropagates."""
    rng = np.random.default_rng(5)
    n, t_len, c, f, k, hh, ww = 2, 3, 2, 2, 3, 4, 4
    xs = rng.standard_normal((n, t_len, c, hh, ww))
    params = make_params(rng, c, f, k)
    hs, cache = convlstm_forward(xs, params)
    dhs = rng.standard_normal(hs.shape)
    dc_last = rng.standard_normal(cache.c_last.shape)
    dxs, dparams = convlstm_backward(dhs, cache, dc_last=dc_last)
    assert set(dparams) == {"Wx", "Wh", "b"}  # no h0 / c0 given, none returned

    def outputs(xs_):
        """hs and c_last in one flat vector, so one upstream gradient covers both
        (differencing the outputs before summing keeps the round-off small)."""
        hs_, cache_ = convlstm_forward(xs_, params)
        return np.concatenate([hs_.ravel(), cache_.c_last.ravel()])

    up = np.concatenate([dhs.ravel(), dc_last.ravel()])
    assert rel_error(dxs, numerical_gradient(outputs, xs, up)) <= TOL
    assert rel_error(dparams["Wh"],
                     numerical_gradient(lambda v: outputs(xs), params["Wh"], up)) <= TOL


@pytest.mark.parametrize("k", [3, 7])
def test_step_gradients(k):
    rng = np.random.default_rng(20 + k)
    n, c, f, hh, ww = 2, 3, 2, 5, 4
    x = rng.standard_normal((n, c, hh, ww))
    h_prev = rng.standard_normal((n, f, hh, ww))
    c_prev = rng.standard_normal((n, f, hh, ww))
    params = make_params(rng, c, f, k)
    h, c_new, cache = convlstm_step_forward(x, h_prev, c_prev, params)
    dh = rng.standard_normal(h.shape)
    dc = rng.standard_normal(c_new.shape)
    dh0, dc0 = dh.copy(), dc.copy()
    dx, dh_prev, dc_prev, dparams = convlstm_step_backward(dh, dc, cache)
    np.testing.assert_array_equal(dh, dh0)
    np.testing.assert_array_equal(dc, dc0)

    def both(x_=x, h_=h_prev, c_=c_prev):
        """(h, c) stacked, so one upstream gradient (dh, dc) covers both outputs."""
        h_out, c_out, _ = convlstm_step_forward(x_, h_, c_, params)
        return np.stack([h_out, c_out])

    up = np.stack([dh, dc])
    numeric = {
        "x": numerical_gradient(lambda v: both(x_=v), x, up),
        "h_prev": numerical_gradient(lambda v: both(h_=v), h_prev, up),
        "c_prev": numerical_gradient(lambda v: both(c_=v), c_prev, up),
        "Wx": numerical_gradient(lambda v: both(), params["Wx"], up),
        "Wh": numerical_gradient(lambda v: both(), params["Wh"], up),
        "b": numerical_gradient(lambda v: both(), params["b"], up),
    }
    analytic = {"x": dx, "h_prev": dh_prev, "c_prev": dc_prev, **dparams}
    errs = {name: rel_error(analytic[name], numeric[name]) for name in numeric}
    assert max(errs.values()) <= TOL, f"relative errors {errs}"


def test_sequence_of_one_equals_one_step():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 4, 4))
    params = make_params(rng, 2, 3, 3)
    zeros = np.zeros((2, 3, 4, 4))
    hs, cache = convlstm_forward(x[:, None], params)
    h, c, step_cache = convlstm_step_forward(x, zeros, zeros, params)
    np.testing.assert_array_equal(hs[:, 0], h)
    np.testing.assert_array_equal(cache.c_last, c)
    dh = rng.standard_normal(h.shape)
    dxs, dp_seq = convlstm_backward(dh[:, None], cache)
    dx, _, _, dp_step = convlstm_step_backward(dh, np.zeros_like(dh), step_cache)
    np.testing.assert_allclose(dxs[:, 0], dx, rtol=1e-12, atol=1e-14)
    for key in ("Wx", "Wh", "b"):
        np.testing.assert_allclose(dp_seq[key], dp_step[key], rtol=1e-12, atol=1e-14)


def test_bptt_reaches_the_first_input():
    """A loss on the last hidden state only must send gradient back to x_0."""
    rng = np.random.default_rng(7)
    n, t_len, c, f, k, hh, ww = 1, 4, 2, 2, 3, 4, 4
    xs = rng.standard_normal((n, t_len, c, hh, ww))
    params = make_params(rng, c, f, k)
    hs, cache = convlstm_forward(xs, params)
    dhs = np.zeros_like(hs)
    dhs[:, -1] = rng.standard_normal(hs[:, -1].shape)
    dxs, _ = convlstm_backward(dhs, cache)
    assert np.abs(dxs[:, 0]).max() > 1e-4
    x0 = xs[:, 0].copy()

    def last_h(v):
        xs_ = xs.copy()
        xs_[:, 0] = v
        return convlstm_forward(xs_, params)[0][:, -1]

    dx0_num = numerical_gradient(last_h, x0, dhs[:, -1])
    assert rel_error(dxs[:, 0], dx0_num) <= TOL


# ----------------------------------------------------------------------------- state, dtype
def test_every_call_starts_from_zero_state():
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((2, 3, 2, 4, 4))
    params = make_params(rng, 2, 2, 3)
    hs1, _ = convlstm_forward(xs, params)
    hs2, _ = convlstm_forward(xs, params)
    np.testing.assert_array_equal(hs1, hs2)
    zeros = np.zeros((2, 2, 4, 4))
    hs3, _ = convlstm_forward(xs, params, h0=zeros, c0=zeros)
    np.testing.assert_array_equal(hs1, hs3)
    # a non-zero state does change the output
    hs4, _ = convlstm_forward(xs, params, h0=zeros + 1.0)
    assert not np.allclose(hs1, hs4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_keeps_dtype(dtype):
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((2, 3, 2, 4, 4)).astype(dtype)
    params = make_params(rng, 2, 2, 3, dtype=dtype)
    h0 = np.zeros((2, 2, 4, 4), dtype)
    hs, cache = convlstm_forward(xs, params, h0=h0, c0=h0)
    dxs, dparams = convlstm_backward(np.ones_like(hs), cache)
    assert hs.dtype == dxs.dtype == cache.c_last.dtype == dtype
    assert all(g.dtype == dtype for g in dparams.values())
    assert set(dparams) == {"Wx", "Wh", "b", "h0", "c0"}
    if dtype == np.float32:  # float32 agrees with float64 to float32 precision
        p64 = {key: v.astype(np.float64) for key, v in params.items()}
        hs64, _ = convlstm_forward(xs.astype(np.float64), p64)
        np.testing.assert_allclose(hs, hs64, rtol=1e-4, atol=1e-5)


def _cache_arrays(cache):
    """Every array in a sequence cache, by a name that says where it sits."""
    arrays = {"c_last": cache.c_last}
    for t, step in enumerate(cache.steps):
        arrays.update({f"steps[{t}].{field}": getattr(step, field) for field in step._fields})
    return arrays


def test_backward_leaves_inputs_and_cache_alone():
    rng = np.random.default_rng(4)
    xs = rng.standard_normal((2, 3, 2, 4, 4))
    params = make_params(rng, 2, 2, 3)
    h0, c0 = rng.standard_normal((2, 2, 2, 4, 4))
    hs, cache = convlstm_forward(xs, params, h0, c0)
    dhs = rng.standard_normal(hs.shape)
    dc_last = rng.standard_normal(cache.c_last.shape)
    inputs = {"dhs": dhs, "dc_last": dc_last, "xs": xs, "h0": h0, "c0": c0, **params}
    inputs_before = copy.deepcopy(inputs)
    cache_before = copy.deepcopy(_cache_arrays(cache))
    assert len(cache_before) == 1 + 3 * len(cache.steps[0]._fields)
    dxs1, dp1 = convlstm_backward(dhs, cache, dc_last=dc_last)
    for name, before in inputs_before.items():
        assert np.array_equal(inputs[name], before), f"backward changed {name}"
    for name, after in _cache_arrays(cache).items():
        assert np.array_equal(after, cache_before[name]), f"backward changed cache.{name}"
    dxs2, dp2 = convlstm_backward(dhs, cache, dc_last=dc_last)   # a second call: same answer
    np.testing.assert_array_equal(dxs1, dxs2)
    for key in dp1:
        np.testing.assert_array_equal(dp1[key], dp2[key])


# ----------------------------------------------------------------------------- bad input
def _good():
    n, t_len, c, f, k, hh, ww = 1, 2, 2, 3, 3, 4, 4
    xs = np.zeros((n, t_len, c, hh, ww))
    params = {"Wx": np.zeros((4 * f, c, k, k)), "Wh": np.zeros((4 * f, f, k, k)),
              "b": np.zeros(4 * f)}
    return xs, params


@pytest.mark.parametrize("change,msg", [
    (lambda xs, p, s: (xs[0], p, s), "5-D"),
    (lambda xs, p, s: (xs[:, :0], p, s), "at least one time step"),
    (lambda xs, p, s: (xs[:, :, :1], p, s), "channel mismatch"),
    (lambda xs, p, s: (xs, {**p, "Wx": np.zeros((10, 2, 3, 3))}, s), "multiple of 4"),
    (lambda xs, p, s: (xs, {**p, "Wx": np.zeros((12, 2, 3))}, s), "Wx must be 4-D"),
    (lambda xs, p, s: (xs, {**p, "Wx": np.zeros((12, 2, 4, 4))}, s), "odd"),
    (lambda xs, p, s: (xs, {**p, "Wh": np.zeros((12, 2, 3, 3))}, s), "Wh must have shape"),
    (lambda xs, p, s: (xs, {**p, "Wh": np.zeros((12, 3, 5, 5))}, s), "Wh must have shape"),
    (lambda xs, p, s: (xs, {**p, "b": np.zeros(3)}, s), "b must have shape"),
    (lambda xs, p, s: (xs, {"Wx": p["Wx"], "b": p["b"]}, s), "missing 'Wh'"),
    (lambda xs, p, s: (xs, p, {"h0": np.zeros((1, 2, 4, 4))}), "h0 must have shape"),
    (lambda xs, p, s: (xs, p, {"c0": np.zeros((1, 3, 4, 5))}), "c0 must have shape"),
    (lambda xs, p, s: (xs.astype(np.float32), p, s), "dtypes differ"),
    (lambda xs, p, s: (xs, p, {"h0": np.zeros((1, 3, 4, 4), np.float32)}), "dtypes differ"),
    (lambda xs, p, s: (xs.astype(int), {k: v.astype(int) for k, v in p.items()}, s),
     "floating-point"),
])
def test_forward_bad_input(change, msg):
    xs, params = _good()
    xs, params, state = change(xs, params, {})
    with pytest.raises(ValueError, match=msg):
        convlstm_forward(xs, params, **state)


def test_backward_and_step_bad_input():
    xs, params = _good()
    hs, cache = convlstm_forward(xs, params)
    with pytest.raises(ValueError, match="dhs must have shape"):
        convlstm_backward(hs[:, :1], cache)
    with pytest.raises(ValueError, match="dc_last must have shape"):
        convlstm_backward(hs, cache, dc_last=hs[:, 0, :2])
    with pytest.raises(ValueError, match="dtypes differ"):
        convlstm_backward(hs.astype(np.float32), cache)
    zeros = np.zeros((1, 3, 4, 4))
    with pytest.raises(ValueError, match="4-D"):
        convlstm_step_forward(xs, zeros, zeros, params)
    with pytest.raises(ValueError, match="c_prev must have shape"):
        convlstm_step_forward(xs[:, 0], zeros, zeros[:, :2], params)
    with pytest.raises(ValueError, match="h_prev is required"):
        convlstm_step_forward(xs[:, 0], None, zeros, params)
    _, _, step_cache = convlstm_step_forward(xs[:, 0], zeros, zeros, params)
    with pytest.raises(ValueError, match="dc must have shape"):
        convlstm_step_backward(zeros, zeros[:, :1], step_cache)
