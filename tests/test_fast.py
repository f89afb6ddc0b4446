"""The fast ops (fast/layers.py, fast/memory.py) against the plain ones (layers.py, memory.py),
and the whole model on each: the test that holds the mirror in fast/ to the plain modules.

Values and every gradient must agree in float64 to max|fast − plain| / max|plain| ≤ 1e-12
per array: for every order of the fast convolution, kernels 1 to 15 (one wider than the
map), the batch split into several chunks, and the copies run on one thread or on
several. The plain ops themselves pass centred finite-difference checks, and
im2col / col2im (both versions) are each other's adjoint.
"""
import inspect
import math
from types import SimpleNamespace

import numpy as np
import pytest

from stvae_np import backend, layers, memory
from stvae_np.fast import layers as conv, memory as convlstm
from stvae_np.gradcheck import numerical_gradient, rel_error

AGREE = 1e-12       # fast against plain, per array
GRAD_TOL = 1e-6     # plain against finite differences


def max_rel_diff(a, b):
    """max|a − b| / max|b|, with b the plain op's; an all-zero b (dWh of a single step
    from a zero state) must be matched exactly."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    scale, diff = np.abs(b).max(), np.abs(a - b).max()
    if scale == 0:
        return 0.0 if diff == 0 else np.inf
    return float(diff / scale)


def assert_agree(fast, plain, what):
    if plain is None:                                 # db of a layer without bias
        assert fast is None, f"{what}: the plain op gives None"
        return
    err = max_rel_diff(fast, plain)
    assert err <= AGREE, f"{what}: max|fast − plain| / max|plain| = {err:.2e}"


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(params=[1, 4, "few"], ids=["serial", "threads4", "few-kernels"])
def cpu_threads(request, monkeypatch):
    """Force over_batch_blocks' serial branch (_CPU_THREADS = 1), its threaded one (4), or
    the GPU's few-kernel windows instead of the k·k loops (FEW_KERNELS, serial), and count
    how often the thread pool and the window ops are asked for, to prove which branch ran."""
    few = request.param == "few"
    monkeypatch.setattr(backend, "FEW_KERNELS", few)
    monkeypatch.setattr(conv, "_CPU_THREADS", 1 if few else request.param)
    monkeypatch.setattr(conv, "_POOL", None)          # a pool of the patched size ...
    calls, window_calls = [], []
    real_pool, real_windows, real_shift_add = conv._thread_pool, conv._windows, conv._shift_add

    def counting_pool():
        calls.append(1)
        return real_pool()

    def counting(real):
        def op(*args):
            window_calls.append(real.__name__)
            return real(*args)
        return op
    monkeypatch.setattr(conv, "_thread_pool", counting_pool)
    monkeypatch.setattr(conv, "_windows", counting(real_windows))
    monkeypatch.setattr(conv, "_shift_add", counting(real_shift_add))
    yield SimpleNamespace(n=1 if few else request.param, few=few, calls=calls,
                          window_calls=window_calls)
    if conv._POOL is not None:                        # ... shut down before the old one
        conv._POOL.shutdown()                         # is put back


def assert_branch(threads):
    """The threaded branch ran if and only if it was forced (every batch here has N ≥ 2),
    and the window ops if and only if the few-kernel path was."""
    assert bool(threads.calls) == (threads.n > 1), (threads.n, len(threads.calls))
    assert bool(threads.window_calls) == threads.few, threads.window_calls


@pytest.fixture
def chunk_counter(monkeypatch):
    """Record how many chunks every call of conv._batch_chunks split the batch into."""
    counts = []
    real = conv._batch_chunks

    def counting(n, per_item, limit=None):
        chunks = real(n, per_item, limit)
        counts.append(len(chunks))
        return chunks
    monkeypatch.setattr(conv, "_batch_chunks", counting)
    return counts


def test_same_signatures_as_the_fast_ops():
    names = {conv: ["conv2d_forward", "conv2d_backward", "maxpool2_forward", "maxpool2_backward",
                    "upsample2_forward", "upsample2_backward", "im2col", "col2im"],
             convlstm: ["convlstm_step_forward", "convlstm_step_backward",
                        "convlstm_forward", "convlstm_backward"]}
    plain = {conv: layers, convlstm: memory}
    for module, funcs in names.items():
        for name in funcs:
            assert (inspect.signature(getattr(plain[module], name))
                    == inspect.signature(getattr(module, name))), name


# ----------------------------------------------------------------------------- conv2d
# (k, (N, C, H, W), F); the comments say which order "auto" picks
CONV_CASES = [
    pytest.param(1, (2, 3, 5, 4), 4, id="k1"),
    pytest.param(3, (3, 2, 6, 5), 3, id="k3"),                     # rows
    pytest.param(3, (2, 8, 6, 6), 1, id="k3-C8-F1"),               # shift
    pytest.param(3, (2, 1, 6, 6), 8, id="k3-C1-F8"),               # im2col
    pytest.param(7, (2, 2, 8, 9), 2, id="k7"),                     # rows
    pytest.param(7, (2, 4, 8, 9), 3, id="k7-C4-F3"),
    pytest.param(15, (2, 3, 9, 8), 2, id="k15"),
    pytest.param(15, (2, 2, 5, 4), 3, id="k15-wider-than-5x4"),
]


def conv_inputs(k, x_shape, nf, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal((nf, x_shape[1], k, k)) / k
    b = rng.standard_normal(nf)
    dout = rng.standard_normal((x_shape[0], nf) + x_shape[2:])
    return x, w, b, dout


def check_conv_agrees(x, w, b, dout, method):
    out, cache = conv.conv2d_forward(x, w, b, method=method)
    dx, dw, db = conv.conv2d_backward(dout, cache)
    out_r, cache_r = layers.conv2d_forward(x, w, b, method=method)
    dx_r, dw_r, db_r = layers.conv2d_backward(dout, cache_r)
    for name, a, r in (("out", out, out_r), ("dx", dx, dx_r), ("dW", dw, dw_r), ("db", db, db_r)):
        assert_agree(a, r, f"{method} {name}")
    no_dx, dw_only, _ = conv.conv2d_backward(dout, cache, need_dx=False)
    assert no_dx is None and layers.conv2d_backward(dout, cache_r, need_dx=False)[0] is None
    assert_agree(dw_only, dw_r, f"{method} dW without dx")


@pytest.mark.parametrize("method", conv.METHODS)
@pytest.mark.parametrize("k,x_shape,nf", CONV_CASES)
def test_conv2d_agrees_with_plain(k, x_shape, nf, method, cpu_threads):
    x, w, b, dout = conv_inputs(k, x_shape, nf, seed=k + 10 * nf)
    check_conv_agrees(x, w, b, dout, method)
    assert_branch(cpu_threads)


@pytest.mark.parametrize("method", conv.METHODS)
def test_conv2d_without_bias_agrees(method):
    x, w, _, dout = conv_inputs(3, (2, 3, 5, 6), 2, seed=3)
    check_conv_agrees(x, w, None, dout, method)


# N = 5 maps, so chunks of 1 map (5 chunks) or 2 maps (2 + 2 + 1)
CHUNK_CASES = [
    pytest.param(3, (5, 3, 6, 5), 2, id="k3"),
    pytest.param(7, (5, 2, 8, 7), 2, id="k7"),
    pytest.param(15, (5, 2, 5, 4), 3, id="k15-wider-than-5x4"),
]


@pytest.mark.parametrize("maps_per_chunk", [1, 2])
@pytest.mark.parametrize("method", conv.METHODS)
@pytest.mark.parametrize("k,x_shape,nf", CHUNK_CASES)
def test_conv2d_in_several_chunks_agrees(k, x_shape, nf, method, maps_per_chunk, monkeypatch,
                                         cpu_threads, chunk_counter):
    x, w, b, dout = conv_inputs(k, x_shape, nf, seed=100 + k)
    picked = conv._pick_method(method, x.shape, w.shape)
    per_map = conv._buffer_per_clip(picked, x.shape, w.shape)
    monkeypatch.setattr(conv, "MAX_BUFFER", maps_per_chunk * per_map)
    check_conv_agrees(x, w, b, dout, method)
    expected = math.ceil(x.shape[0] / maps_per_chunk)                # 5 or 3
    assert chunk_counter and set(chunk_counter) == {expected}, chunk_counter
    # a block of the batch with one map runs serially whatever the thread count
    assert bool(cpu_threads.calls) == (cpu_threads.n > 1 and maps_per_chunk > 1)


# ----------------------------------------------------------------------------- im2col
ADJOINT_CASES = [(1, (2, 3, 5, 4)), (3, (2, 2, 6, 5)), (7, (1, 3, 8, 9)), (15, (2, 2, 5, 4))]


@pytest.mark.parametrize("k,x_shape", ADJOINT_CASES)
def test_im2col_col2im_are_adjoint(k, x_shape, cpu_threads):
    """⟨im2col(x), D⟩ = ⟨x, col2im(D)⟩ for the plain and for the fast pair."""
    rng = np.random.default_rng(k)
    x = rng.standard_normal(x_shape)
    n, c, h, w = x_shape
    d = rng.standard_normal((c * k * k, n * h * w))
    for module in (layers, conv):
        lhs = np.sum(module.im2col(x, k) * d)
        rhs = np.sum(x * module.col2im(d, x_shape, k))
        assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), abs(rhs)), (module.__name__, lhs, rhs)
    # and the two pairs are the same maps, in the same layout
    np.testing.assert_array_equal(conv.im2col(x, k), layers.im2col(x, k))
    assert_agree(conv.col2im(d, x_shape, k), layers.col2im(d, x_shape, k), "col2im")


# ----------------------------------------------------------------------------- pool, up-sample
@pytest.mark.parametrize("shape", [(2, 3, 4, 6), (1, 2, 8, 8)])
@pytest.mark.parametrize("ties", [False, True])
def test_maxpool2_agrees_with_plain(shape, ties):
    rng = np.random.default_rng(7)
    # with ties (values from {0, 1, 2}) both must send the gradient to the first winner
    x = (rng.integers(0, 3, shape) if ties else rng.standard_normal(shape)).astype(np.float64)
    out, cache = conv.maxpool2_forward(x)
    out_r, cache_r = layers.maxpool2_forward(x)
    np.testing.assert_array_equal(out, out_r)
    np.testing.assert_array_equal(cache.argmax, cache_r.argmax)
    dout = rng.standard_normal(out.shape)
    np.testing.assert_array_equal(conv.maxpool2_backward(dout, cache),
                                  layers.maxpool2_backward(dout, cache_r))


@pytest.mark.parametrize("shape", [(2, 3, 3, 4), (1, 1, 5, 5)])
def test_upsample2_agrees_with_plain(shape):
    rng = np.random.default_rng(8)
    x = rng.standard_normal(shape)
    out, cache = conv.upsample2_forward(x)
    out_r, cache_r = layers.upsample2_forward(x)
    np.testing.assert_array_equal(out, out_r)
    dout = rng.standard_normal(out.shape)
    assert_agree(conv.upsample2_backward(dout, cache), layers.upsample2_backward(dout, cache_r), "dx")


# ----------------------------------------------------------------------------- ConvLSTM
def lstm_params(rng, c, f, k):
    """Std 0.7 / k: the gates leave σ's linear region but none saturates."""
    return {"Wx": 0.7 / k * rng.standard_normal((4 * f, c, k, k)),
            "Wh": 0.7 / k * rng.standard_normal((4 * f, f, k, k)),
            "b": 0.5 * rng.standard_normal(4 * f)}


# (k, (N, C, F, h, w))
LSTM_CASES = [
    pytest.param(1, (2, 2, 3, 5, 4), id="k1"),
    pytest.param(3, (3, 3, 2, 6, 5), id="k3"),
    pytest.param(7, (2, 2, 2, 5, 6), id="k7-wider-than-5x6"),
]


def check_sequence_agrees(xs, params, h0, c0, dhs, dc_last):
    hs, cache = convlstm.convlstm_forward(xs, params, h0, c0)
    hs_r, cache_r = memory.convlstm_forward(xs, params, h0, c0)
    assert_agree(hs, hs_r, "hs")
    assert_agree(cache.c_last, cache_r.c_last, "c_last")
    dxs, dp = convlstm.convlstm_backward(dhs, cache, dc_last)
    dxs_r, dp_r = memory.convlstm_backward(dhs, cache_r, dc_last)
    assert set(dp) == set(dp_r) == {"Wx", "Wh", "b"} | ({"h0"} if h0 is not None else set()) \
        | ({"c0"} if c0 is not None else set())
    assert_agree(dxs, dxs_r, "dxs")
    for key in dp_r:
        assert_agree(dp[key], dp_r[key], f"d{key}")


def lstm_inputs(k, shape, t_len, states, seed):
    rng = np.random.default_rng(seed)
    n, c, f, hh, ww = shape
    xs = rng.standard_normal((n, t_len, c, hh, ww))
    params = lstm_params(rng, c, f, k)
    h0 = rng.standard_normal((n, f, hh, ww)) if states else None
    c0 = rng.standard_normal((n, f, hh, ww)) if states else None
    dhs = rng.standard_normal((n, t_len, f, hh, ww))
    dc_last = rng.standard_normal((n, f, hh, ww)) if states else None
    return xs, params, h0, c0, dhs, dc_last


@pytest.mark.parametrize("states", [False, True], ids=["zero-state", "h0-c0-dc_last"])
@pytest.mark.parametrize("t_len", [1, 3])
@pytest.mark.parametrize("k,shape", LSTM_CASES)
def test_convlstm_sequence_agrees_with_plain(k, shape, t_len, states, cpu_threads):
    check_sequence_agrees(*lstm_inputs(k, shape, t_len, states, seed=k + t_len))
    assert_branch(cpu_threads)


@pytest.mark.parametrize("t_len", [1, 3])
def test_convlstm_in_several_chunks_agrees(t_len, monkeypatch, chunk_counter):
    k, (n, c, f, hh, ww) = 3, (3, 2, 2, 5, 4)
    monkeypatch.setattr(conv, "MAX_BUFFER", (c + f) * k * k * hh * ww)   # one map a chunk
    check_sequence_agrees(*lstm_inputs(k, (n, c, f, hh, ww), t_len, True, seed=30 + t_len))
    assert chunk_counter and set(chunk_counter) == {n}, chunk_counter


@pytest.mark.parametrize("k,shape", LSTM_CASES)
def test_convlstm_step_agrees_with_plain(k, shape, cpu_threads):
    rng = np.random.default_rng(40 + k)
    n, c, f, hh, ww = shape
    x = rng.standard_normal((n, c, hh, ww))
    h_prev, c_prev, dh, dc = (rng.standard_normal((n, f, hh, ww)) for _ in range(4))
    params = lstm_params(rng, c, f, k)
    h, c_new, cache = convlstm.convlstm_step_forward(x, h_prev, c_prev, params)
    h_r, c_r, cache_r = memory.convlstm_step_forward(x, h_prev, c_prev, params)
    assert_agree(h, h_r, "h")
    assert_agree(c_new, c_r, "c")
    for gate in "ifgo":
        assert_agree(getattr(cache, gate), getattr(cache_r, gate), f"gate {gate}")
    grads = convlstm.convlstm_step_backward(dh, dc, cache)
    grads_r = memory.convlstm_step_backward(dh, dc, cache_r)
    for name, a, r in zip(("dx", "dh_prev", "dc_prev"), grads[:3], grads_r[:3]):
        assert_agree(a, r, name)
    assert set(grads[3]) == set(grads_r[3]) == {"Wx", "Wh", "b"}
    for key in grads_r[3]:
        assert_agree(grads[3][key], grads_r[3][key], f"d{key}")
    assert_branch(cpu_threads)


# ----------------------------------------------------------------------------- the reference
# against centred finite differences (float64, small shapes)
@pytest.mark.parametrize("k,x_shape,nf", [(1, (2, 3, 4, 5), 2), (3, (2, 2, 5, 4), 3),
                                          (7, (1, 2, 6, 5), 2), (15, (1, 2, 5, 4), 2)])
def test_plain_conv2d_gradients(k, x_shape, nf):
    x, w, b, dout = conv_inputs(k, x_shape, nf, seed=50 + k)
    _, cache = layers.conv2d_forward(x, w, b)
    dx, dw, db = layers.conv2d_backward(dout, cache)
    errs = (rel_error(dx, numerical_gradient(lambda v: layers.conv2d_forward(v, w, b)[0], x, dout)),
            rel_error(dw, numerical_gradient(lambda v: layers.conv2d_forward(x, v, b)[0], w, dout)),
            rel_error(db, numerical_gradient(lambda v: layers.conv2d_forward(x, w, v)[0], b, dout)))
    assert max(errs) <= GRAD_TOL, f"dx, dW, db relative errors {errs}"


def test_plain_maxpool2_and_upsample2_gradients():
    rng = np.random.default_rng(60)
    shape = (2, 3, 4, 6)
    # a permutation: distinct values 1/size apart, so the step never changes a winner
    x = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float64) / np.prod(shape)
    out, cache = layers.maxpool2_forward(x)
    dout = rng.standard_normal(out.shape)
    dx_num = numerical_gradient(lambda v: layers.maxpool2_forward(v)[0], x, dout, h=1e-6)
    assert rel_error(layers.maxpool2_backward(dout, cache), dx_num) <= GRAD_TOL
    x = rng.standard_normal((2, 2, 3, 4))
    out, cache = layers.upsample2_forward(x)
    dout = rng.standard_normal(out.shape)
    dx_num = numerical_gradient(lambda v: layers.upsample2_forward(v)[0], x, dout)
    assert rel_error(layers.upsample2_backward(dout, cache), dx_num) <= GRAD_TOL


@pytest.mark.parametrize("k", [1, 3])
def test_plain_convlstm_step_gradients(k):
    rng = np.random.default_rng(70 + k)
    n, c, f, hh, ww = 2, 2, 2, 4, 5
    x = rng.standard_normal((n, c, hh, ww))
    h_prev, c_prev = rng.standard_normal((2, n, f, hh, ww))
    params = lstm_params(rng, c, f, k)
    h, c_new, cache = memory.convlstm_step_forward(x, h_prev, c_prev, params)
    up = rng.standard_normal((2,) + h.shape)                      # (dh, dc) stacked
    dx, dh_prev, dc_prev, dparams = memory.convlstm_step_backward(up[0], up[1], cache)

    def both(x_=x, h_=h_prev, c_=c_prev):
        return np.stack(memory.convlstm_step_forward(x_, h_, c_, params)[:2])

    numeric = {"x": numerical_gradient(lambda v: both(x_=v), x, up),
               "h_prev": numerical_gradient(lambda v: both(h_=v), h_prev, up),
               "c_prev": numerical_gradient(lambda v: both(c_=v), c_prev, up),
               **{key: numerical_gradient(lambda v: both(), params[key], up) for key in params}}
    analytic = {"x": dx, "h_prev": dh_prev, "c_prev": dc_prev, **dparams}
    errs = {name: rel_error(analytic[name], numeric[name]) for name in numeric}
    assert max(errs.values()) <= GRAD_TOL, errs


@pytest.mark.parametrize("t_len", [1, 3])
def test_plain_convlstm_sequence_gradients(t_len):
    """Through time, with h0, c0 and a loss on the final cell state too."""
    xs, params, h0, c0, dhs, dc_last = lstm_inputs(3, (1, 2, 2, 4, 4), t_len, True,
                                                   seed=80 + t_len)
    _, cache = memory.convlstm_forward(xs, params, h0, c0)
    dxs, dparams = memory.convlstm_backward(dhs, cache, dc_last)
    up = np.concatenate([dhs.ravel(), dc_last.ravel()])

    def outputs(xs_=xs, h0_=h0, c0_=c0):
        """hs and c_last in one vector: one upstream gradient covers both."""
        hs_, cache_ = memory.convlstm_forward(xs_, params, h0_, c0_)
        return np.concatenate([hs_.ravel(), cache_.c_last.ravel()])

    numeric = {"xs": numerical_gradient(lambda v: outputs(xs_=v), xs, up),
               "h0": numerical_gradient(lambda v: outputs(h0_=v), h0, up),
               "c0": numerical_gradient(lambda v: outputs(c0_=v), c0, up),
               **{key: numerical_gradient(lambda v: outputs(), params[key], up)
                  for key in params}}
    analytic = {"xs": dxs, **dparams}
    assert set(dparams) == {"Wx", "Wh", "b", "h0", "c0"}
    errs = {name: rel_error(analytic[name], numeric[name]) for name in numeric}
    assert max(errs.values()) <= GRAD_TOL, errs


def test_plain_conv2d_rejects_an_unknown_method():
    with pytest.raises(ValueError, match="method"):
        layers.conv2d_forward(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3)), method="fft")


# ----------------------------------------------------------------------------- the whole model
def _model_step(preset, dtype, ops):
    """One training step's loss, gradients (and parts) of STVAE(ops=...), flow head moved
    off zero so that every path carries a gradient."""
    from stvae_np.model import STVAE, Config
    cfg = Config.preset(preset)
    n, t = (2, 4) if preset == "paper" else (4, 6)
    clip = np.random.default_rng(1).uniform(0, 1, (n, t, 1, cfg.height, cfg.width)).astype(dtype)
    model = STVAE(cfg, seed=2, dtype=dtype, ops=ops)
    model.params["flow3.W"][...] = np.random.default_rng(5).uniform(-0.3, 0.3, model.params["flow3.W"].shape)
    model.params["flow3.b"][...] = (0.37, -0.29)
    loss, grads = model.loss_and_grads(clip)
    assert model.layers is {"fast": conv, "plain": layers}[ops]
    assert model.memory is {"fast": convlstm, "plain": memory}[ops]
    return loss, grads, model.last_parts


@pytest.mark.parametrize("preset", ["tiny", "paper"])
@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 1e-5)])
def test_the_model_on_plain_ops_agrees_with_the_fast_ops(preset, dtype, tol):
    """STVAE(config, ops="plain") runs the readable layers.py / memory.py: one training
    step gives the fast step's loss and every gradient, to 1e-12 in float64 (measured
    2e-15) and 1e-5 in float32 (measured 8e-7), per array as max|fast − plain| / max|plain|."""
    loss_f, grads_f, parts_f = _model_step(preset, dtype, "fast")
    loss_p, grads_p, parts_p = _model_step(preset, dtype, "plain")
    assert_agree_tol(loss_f, loss_p, tol, "loss")
    assert set(parts_f) == set(parts_p)
    for name in parts_f:
        assert_agree_tol(parts_f[name], parts_p[name], tol, name)
    assert list(grads_f) == list(grads_p)
    for name in grads_f:
        assert grads_f[name].dtype == grads_p[name].dtype == np.dtype(dtype)
        assert_agree_tol(grads_f[name], grads_p[name], tol, f"d{name}")


def assert_agree_tol(fast, plain, tol, what):
    err = max_rel_diff(np.asarray(fast), np.asarray(plain))
    assert err <= tol, f"{what}: max|fast − plain| / max|plain| = {err:.2e} > {tol:.0e}"


def test_an_unknown_ops_name_is_refused():
    from stvae_np.model import STVAE, Config
    with pytest.raises(ValueError, match="ops must be one of"):
        STVAE(Config.tiny(), ops="quick")
