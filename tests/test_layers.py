"""Convolution, max-pool and up-sample: values against naive loops, gradients against
centred finite differences in float64, dtype keeping, and errors for bad input."""
import numpy as np
import pytest

from stvae_np.fast.layers import (conv2d_backward, conv2d_forward, maxpool2_backward,
                           maxpool2_forward, upsample2_backward, upsample2_forward)
from stvae_np.gradcheck import numerical_gradient, rel_error

TOL = 1e-6


def naive_conv2d(x, w, b):
    """The definition, one output pixel at a time."""
    n, c, h, wd = x.shape
    f, _, k, _ = w.shape
    p = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    out = np.zeros((n, f, h, wd), dtype=np.float64)
    for i in range(n):
        for j in range(f):
            for y in range(h):
                for xx in range(wd):
                    out[i, j, y, xx] = np.sum(w[j] * xp[i, :, y:y + k, xx:xx + k]) + b[j]
    return out


@pytest.mark.parametrize("method", ["im2col", "shift", "rows"])
@pytest.mark.parametrize("k", [1, 3, 5, 7])
def test_conv2d_forward_matches_naive_loop(k, method):
    rng = np.random.default_rng(k)
    x = rng.standard_normal((2, 3, 6, 5))
    w = rng.standard_normal((4, 3, k, k))
    b = rng.standard_normal(4)
    out, _ = conv2d_forward(x, w, b, method=method)
    assert out.shape == (2, 4, 6, 5)
    np.testing.assert_allclose(out, naive_conv2d(x, w, b), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["im2col", "shift", "rows"])
def test_conv2d_kernel_wider_than_the_map(method):
    """k = 15 on 5×4 maps: some shifted windows fall entirely off the map."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 2, 5, 4))
    w = rng.standard_normal((3, 2, 15, 15))
    b = rng.standard_normal(3)
    out, _ = conv2d_forward(x, w, b, method=method)
    np.testing.assert_allclose(out, naive_conv2d(x, w, b), rtol=1e-12, atol=1e-12)
    _check_conv_grads(x, w, b, method, seed=6)


def test_conv2d_auto_picks_the_smaller_buffer():
    x = np.zeros((1, 64, 8, 8))
    assert conv2d_forward(x, np.zeros((2, 64, 3, 3)), None)[1].method == "shift"
    x = np.zeros((1, 1, 8, 8))
    assert conv2d_forward(x, np.zeros((16, 1, 3, 3)), None)[1].method == "im2col"
    x = np.zeros((1, 2, 8, 8))          # few channels in and out, a wide kernel
    assert conv2d_forward(x, np.zeros((2, 2, 7, 7)), None)[1].method == "rows"


def _check_conv_grads(x, w, b, method, seed):
    rng = np.random.default_rng(seed)
    out, cache = conv2d_forward(x, w, b, method=method)
    dout = rng.standard_normal(out.shape)
    x0, w0 = x.copy(), w.copy()
    dx, dw, db = conv2d_backward(dout, cache)
    np.testing.assert_array_equal(x, x0)  # backward leaves its inputs alone
    np.testing.assert_array_equal(w, w0)
    dx_num = numerical_gradient(lambda v: conv2d_forward(v, w, b, method=method)[0], x, dout)
    dw_num = numerical_gradient(lambda v: conv2d_forward(x, v, b, method=method)[0], w, dout)
    db_num = numerical_gradient(lambda v: conv2d_forward(x, w, v, method=method)[0], b, dout)
    errs = rel_error(dx, dx_num), rel_error(dw, dw_num), rel_error(db, db_num)
    assert max(errs) <= TOL, f"dx, dw, db relative errors {errs}"
    return errs


@pytest.mark.parametrize("method", ["im2col", "shift", "rows"])
@pytest.mark.parametrize("k,shape", [(1, (2, 3, 5, 4)), (3, (2, 3, 6, 5)),
                                     (7, (2, 2, 8, 9)), (15, (1, 2, 9, 8))])
def test_conv2d_gradients(k, shape, method):
    rng = np.random.default_rng(100 + k)
    n, c, h, w = shape
    x = rng.standard_normal(shape)
    wt = rng.standard_normal((3, c, k, k)) / k
    b = rng.standard_normal(3)
    _check_conv_grads(x, wt, b, method, seed=k)


@pytest.mark.parametrize("method", ["im2col", "shift", "rows"])
def test_conv2d_in_batch_chunks_gives_the_same_result(method, monkeypatch):
    """A tiny MAX_BUFFER forces one chunk per map: values and gradients must not change."""
    from stvae_np.fast import layers as conv
    rng = np.random.default_rng(11)
    x = rng.standard_normal((5, 3, 6, 5))
    w = rng.standard_normal((2, 3, 3, 3))
    b = rng.standard_normal(2)
    out, cache = conv2d_forward(x, w, b, method=method)
    dout = rng.standard_normal(out.shape)
    grads = conv2d_backward(dout, cache)
    monkeypatch.setattr(conv, "MAX_BUFFER", 1)
    assert len(conv._batch_chunks(5, conv._buffer_per_clip(method, x.shape, w.shape))) == 5
    out_c, cache_c = conv2d_forward(x, w, b, method=method)
    np.testing.assert_allclose(out_c, out, rtol=1e-13, atol=1e-13)
    for g, g_c in zip(grads, conv2d_backward(dout, cache_c)):
        np.testing.assert_allclose(g_c, g, rtol=1e-13, atol=1e-13)
    _check_conv_grads(x, w, b, method, seed=12)


@pytest.mark.parametrize("method", ["im2col", "shift", "rows"])
def test_conv2d_backward_can_skip_dx(method):
    rng = np.random.default_rng(13)
    x, w = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((2, 3, 3, 3))
    out, cache = conv2d_forward(x, w, None, method=method)
    dout = rng.standard_normal(out.shape)
    dx, dw, _ = conv2d_backward(dout, cache, need_dx=False)
    assert dx is None
    np.testing.assert_array_equal(dw, conv2d_backward(dout, cache)[1])


def test_conv2d_without_bias():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 5, 5))
    w = rng.standard_normal((2, 2, 3, 3))
    out, cache = conv2d_forward(x, w, None)
    np.testing.assert_allclose(out, naive_conv2d(x, w, np.zeros(2)), atol=1e-12)
    dx, dw, db = conv2d_backward(np.ones_like(out), cache)
    assert db is None and dx.shape == x.shape and dw.shape == w.shape


@pytest.mark.parametrize("method", ["im2col", "shift", "rows"])
def test_conv2d_keeps_float32(method):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = np.zeros(4, np.float32)
    out, cache = conv2d_forward(x, w, b, method=method)
    dx, dw, db = conv2d_backward(np.ones_like(out), cache)
    assert out.dtype == dx.dtype == dw.dtype == db.dtype == np.float32
    np.testing.assert_allclose(out, naive_conv2d(x.astype(np.float64), w.astype(np.float64), b),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("x_shape,w_shape,b_shape,msg", [
    ((3, 6, 6), (4, 3, 3, 3), (4,), "4-D"),
    ((1, 3, 6, 6), (4, 3, 4, 4), (4,), "odd"),
    ((1, 3, 6, 6), (4, 3, 3, 5), (4,), "square"),
    ((1, 2, 6, 6), (4, 3, 3, 3), (4,), "channel mismatch"),
    ((1, 3, 6, 6), (4, 3, 3, 3), (5,), "b must have shape"),
])
def test_conv2d_bad_input(x_shape, w_shape, b_shape, msg):
    with pytest.raises(ValueError, match=msg):
        conv2d_forward(np.zeros(x_shape), np.zeros(w_shape), np.zeros(b_shape))


def test_conv2d_rejects_mixed_dtypes_and_integers():
    with pytest.raises(ValueError, match="dtypes differ"):
        conv2d_forward(np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 1, 3, 3)), None)
    with pytest.raises(ValueError, match="floating-point"):
        conv2d_forward(np.zeros((1, 1, 4, 4), int), np.zeros((1, 1, 3, 3), int), None)


# ----------------------------------------------------------------------------- max-pool
def test_maxpool2_values():
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    out, _ = maxpool2_forward(x)
    np.testing.assert_array_equal(out[0, 0], [[5, 7], [13, 15]])


@pytest.mark.parametrize("shape", [(2, 3, 4, 6), (1, 2, 8, 8)])
def test_maxpool2_gradient(shape):
    rng = np.random.default_rng(3)
    # a permutation keeps every window's values distinct and at least 1/size apart,
    # so the step h never changes a winner
    x = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float64) / np.prod(shape)
    out, cache = maxpool2_forward(x)
    dout = rng.standard_normal(out.shape)
    dx = maxpool2_backward(dout, cache)
    dx_num = numerical_gradient(lambda v: maxpool2_forward(v)[0], x, dout, h=1e-6)
    assert rel_error(dx, dx_num) <= TOL
    assert np.count_nonzero(dx) == out.size  # exactly one winner per window


def test_maxpool2_tie_goes_to_one_winner():
    x = np.ones((1, 1, 2, 2))
    out, cache = maxpool2_forward(x)
    dx = maxpool2_backward(np.full((1, 1, 1, 1), 3.0), cache)
    assert dx.sum() == 3.0 and np.count_nonzero(dx) == 1


def test_maxpool2_bad_input():
    with pytest.raises(ValueError, match="even"):
        maxpool2_forward(np.zeros((1, 1, 5, 4)))
    with pytest.raises(ValueError, match="4-D"):
        maxpool2_forward(np.zeros((4, 4)))


def test_maxpool2_keeps_float32():
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)
    out, cache = maxpool2_forward(x)
    assert out.dtype == np.float32 and maxpool2_backward(out, cache).dtype == np.float32


# ----------------------------------------------------------------------------- up-sample
def test_upsample2_values():
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    out, _ = upsample2_forward(x)
    np.testing.assert_array_equal(out[0, 0], [[1, 1, 2, 2], [1, 1, 2, 2],
                                              [3, 3, 4, 4], [3, 3, 4, 4]])


@pytest.mark.parametrize("shape", [(2, 3, 3, 4), (1, 1, 5, 5)])
def test_upsample2_gradient(shape):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape)
    out, cache = upsample2_forward(x)
    dout = rng.standard_normal(out.shape)
    dx = upsample2_backward(dout, cache)
    dx_num = numerical_gradient(lambda v: upsample2_forward(v)[0], x, dout)
    assert rel_error(dx, dx_num) <= TOL
    assert upsample2_forward(x.astype(np.float32))[0].dtype == np.float32


def test_upsample2_bad_input():
    with pytest.raises(ValueError, match="4-D"):
        upsample2_forward(np.zeros((2, 2, 2)))
    _, cache = upsample2_forward(np.zeros((1, 1, 2, 2)))
    with pytest.raises(ValueError, match="dout must have shape"):
        upsample2_backward(np.zeros((1, 1, 3, 4)), cache)


# ----------------------------------------------------------------------------- OpenBLAS workers
_QUIET_PROBE = """
import os, sys
import numpy as np                      # NumPy first, as a notebook does: OpenBLAS is loaded
from stvae_np.fast import layers as conv
timeout, = conv._openblas_functions("openblas_thread_timeout")
before = timeout()
a = np.random.default_rng(0).standard_normal((300, 300))
expected = a @ a
conv.quiet_blas_workers()
conv.quiet_blas_workers()               # once per process: the second call does nothing
print(before, timeout(), os.environ.get("OPENBLAS_THREAD_TIMEOUT"), bool(np.array_equal(a @ a, expected)))
"""


def _probe(env_timeout):
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if env_timeout is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = env_timeout
    out = subprocess.run([sys.executable, "-c", _QUIET_PROBE], env=env, capture_output=True,
                         text=True, check=True)
    return out.stdout.split()


def test_quiet_blas_workers_sets_the_timeout_after_numpy_was_loaded():
    """NumPy's wheels bundle OpenBLAS. With NumPy imported first and no timeout in the
    environment, OpenBLAS's workers spin (timeout 0: its default); quiet_blas_workers makes
    OpenBLAS read BLAS_THREAD_TIMEOUT, and products after it give the same numbers."""
    from stvae_np.fast import layers as conv
    assert _probe(None) == ["0", str(conv.BLAS_THREAD_TIMEOUT), str(conv.BLAS_THREAD_TIMEOUT), "True"]


def test_quiet_blas_workers_keeps_a_timeout_the_user_set():
    assert _probe("7") == ["7", "7", "7", "True"]


def test_threaded_copies_quiet_the_blas_workers_first(monkeypatch):
    """over_batch_blocks calls it before its threads run, and not on its serial branch."""
    from stvae_np.fast import layers as conv
    calls = []
    monkeypatch.setattr(conv, "quiet_blas_workers", lambda: calls.append(1))
    monkeypatch.setattr(conv, "_CPU_THREADS", 1)
    conv.over_batch_blocks(lambda maps: None, 4, np)
    assert calls == []
    monkeypatch.setattr(conv, "_CPU_THREADS", 2)
    conv.over_batch_blocks(lambda maps: None, 4, np)
    assert calls == [1]


def test_quiet_blas_workers_can_be_turned_off(monkeypatch):
    from stvae_np.fast import layers as conv
    looked_up = []
    monkeypatch.setattr(conv, "_BLAS_QUIETED", False)
    monkeypatch.setattr(conv, "_openblas_functions", lambda *names: looked_up.append(names))
    monkeypatch.setattr(conv, "REST_BLAS_WORKERS", False)
    conv.quiet_blas_workers()
    assert looked_up == []
    monkeypatch.setattr(conv, "REST_BLAS_WORKERS", True)
    conv.quiet_blas_workers()
    assert len(looked_up) == 1


def test_conv_cm_chunks_follow_the_workspace_given():
    """The chunks are as many maps as the workspace holds (not recomputed from the
    device's free memory, which may have changed since the workspace was made)."""
    from stvae_np.fast import layers as conv
    rng = np.random.default_rng(3)
    n, c, f, k, h = 5, 3, 4, 3, 6
    x_pad = conv.pad_channel_major(rng.standard_normal((n, c, h, h)), k // 2)
    w2 = rng.standard_normal((f, c * k * k))
    per_map = c * k * k * h * h
    expected = conv.conv_cm_forward(x_pad, w2, k, np.empty((f, n * h * h)))
    for maps in (1, 2, 5):
        workspace = np.full(maps * per_map + 1, np.nan)          # room for `maps` maps
        out = conv.conv_cm_forward(x_pad, w2, k, np.empty((f, n * h * h)), workspace)
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
        dout2 = rng.standard_normal((f, n * h * h))
        dx, dw = conv.conv_cm_backward(dout2, x_pad, w2, k, workspace=workspace)
        dx_ref, dw_ref = conv.conv_cm_backward(dout2, x_pad, w2, k)
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dw, dw_ref, rtol=1e-12, atol=1e-12)
