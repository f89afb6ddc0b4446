"""Fused kernels (stvae_np/fast/kernels.py, issue 16): the NumPy numbers did not move, each
fused function counts as one operation, the training step's element-wise count fell,
and the CuPy side is guarded (built, checked and dropped with a warning if wrong).

Four levels of checking the CUDA side, from what runs everywhere to what needs a GPU:

1. dispatch and fallback with a stand-in for CuPy (``cpu_kernels.fake_xp``): a kernel
   that fails to build or disagrees with the plain code is dropped with a warning;
2. the CUDA operation strings run as C++ on the CPU (``cpu_kernels``, needs g++) with
   CuPy's calling convention: each passes its first-use check, and a whole training step
   through them matches the plain code;
3. the kernels compile with NVRTC in the shape CuPy gives them (needs CuPy and its NVRTC
   library, not a GPU);
4. on a GPU: every kernel is built and used, and matches NumPy.
"""
from __future__ import annotations

import os
import site
import warnings

import numpy as np
import pytest

import cpu_kernels
from stvae_np.fast import kernels
from stvae_np.fast.memory import lstm_gates_backward, lstm_gates_forward
from stvae_np.activations import sigmoid, sigmoid_grad, tanh, tanh_grad
from stvae_np.backend import gpu_available
from benchmarks.bench import count_step_ops
from benchmarks.opcount import count_array_ops
from stvae_np.losses import huber_backward, huber_differences, huber_smoothness_backward, huber_smoothness_forward
from stvae_np.model import STVAE, Config
from stvae_np.optim import (RMSProp, clip_coefficient, clip_grad_norm, rmsprop_update, scale_in_place,
                            sum_of_squares)
from stvae_np.sampler import bilinear_forward, bilinear_weights

DTYPES = ("float64", "float32")
GPU = gpu_available()
needs_gpu = pytest.mark.skipif(not GPU, reason="no CUDA device (CuPy missing, or no GPU answers): "
                                               "the fused kernels run only on the GPU")
needs_gxx = pytest.mark.skipif(not cpu_kernels.available(),
                               reason="g++ is not installed: the CPU stand-in for CuPy's kernels needs it")


def randn(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


# ----------------------------------------------------------------------------- the code before fusion
# Copied from the modules as they stood before kernels.py (commit 2918a0b): the fused
# functions must give these numbers bit for bit on NumPy.
def old_gate_math(a, b, c_prev):
    nf = a.shape[0] // 4
    a = a.copy()
    a += b.reshape(4 * nf, 1, 1, 1)
    i, f, g, o = a[:nf], a[nf:2 * nf], a[2 * nf:3 * nf], a[3 * nf:]
    sigmoid(i, out=i)
    sigmoid(f, out=f)
    tanh(g, out=g)
    sigmoid(o, out=o)
    c = np.empty_like(c_prev)
    tanh_c = np.empty_like(c_prev)
    c[:] = f * c_prev + i * g
    tanh(c, out=tanh_c)
    h = o * tanh_c
    return a, c, tanh_c, h


def old_gate_grads(dh_loss, dh_next, dc, a, c_prev, tanh_c):
    nf = a.shape[0] // 4
    dh = dh_loss + dh_next
    i, f, g, o = (a[j * nf:(j + 1) * nf] for j in range(4))
    da = np.empty_like(a)
    dc_total = dc + dh * o * tanh_grad(tanh_c)
    da[:nf] = dc_total * g * sigmoid_grad(i)
    da[nf:2 * nf] = dc_total * c_prev * sigmoid_grad(f)
    da[2 * nf:3 * nf] = dc_total * i * tanh_grad(g)
    da[3 * nf:] = dh * tanh_c * sigmoid_grad(o)
    return da, dc_total * f


def old_rmsprop(p, v, g, lr, alpha, eps):
    v *= alpha
    v += (1.0 - alpha) * (g * g)
    p -= lr * g / (np.sqrt(v) + eps)


def old_clip_grad_norm(arrays, max_norm):
    total = np.asarray(np.sqrt(sum(np.sum(g * g) for g in arrays)))
    scale = np.where(total > max_norm, max_norm / (total + 1e-6), 1.0)
    for g in arrays:
        g *= scale.astype(g.dtype)
    return total


def old_neighbours(coord, size):
    c = np.clip(coord, -2, size + 1)
    c0 = np.floor(c)
    w1 = c - c0
    w0 = 1 - w1
    c0 = np.where(np.isnan(c0), -2, c0)
    valid0 = (c0 >= 0) & (c0 <= size - 1)
    valid1 = (c0 >= -1) & (c0 <= size - 2)
    i0 = np.clip(c0, 0, size - 1).astype(np.int64)
    i1 = np.clip(c0 + 1, 0, size - 1).astype(np.int64)
    return (i0, i1), (w0, w1), (valid0, valid1)


def old_bilinear_weights(grid, h, w):
    n, _, ho, wo = grid.shape
    p = ho * wo
    (x0, x1), (wx0, wx1), (vx0, vx1) = old_neighbours(grid[:, 0].reshape(n, 1, p), w)
    (y0, y1), (wy0, wy1), (vy0, vy1) = old_neighbours(grid[:, 1].reshape(n, 1, p), h)
    index = np.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1], axis=2)
    valid = np.stack([vy0 & vx0, vy0 & vx1, vy1 & vx0, vy1 & vx1], axis=2).astype(grid.dtype)
    wx = np.stack([wx0, wx1, wx0, wx1], axis=2)
    wy = np.stack([wy0, wy0, wy1, wy1], axis=2)
    sign_x = np.asarray([-1, 1, -1, 1], dtype=grid.dtype).reshape(1, 1, 4, 1)
    sign_y = np.asarray([-1, -1, 1, 1], dtype=grid.dtype).reshape(1, 1, 4, 1)
    return index, wy * wx * valid, sign_x * wy * valid, sign_y * wx * valid


def old_huber(flow, delta, dloss):
    def huber(a):
        abs_a = np.abs(a)
        return np.where(abs_a <= delta, 0.5 * a * a, delta * (abs_a - 0.5 * delta))
    d_x = flow[..., :, 1:] - flow[..., :, :-1]
    d_y = flow[..., 1:, :] - flow[..., :-1, :]
    loss = np.asarray(np.mean(huber(d_x)) + np.mean(huber(d_y)), dtype=flow.dtype)
    grad_x = np.clip(d_x, -delta, delta) / d_x.size
    grad_y = np.clip(d_y, -delta, delta) / d_y.size
    scale = np.asarray(dloss, dtype=flow.dtype)
    g_x, g_y = scale * grad_x, scale * grad_y
    dflow = np.zeros(flow.shape, dtype=flow.dtype)
    dflow[..., :, 1:] += g_x
    dflow[..., :, :-1] -= g_x
    dflow[..., 1:, :] += g_y
    dflow[..., :-1, :] -= g_y
    return loss, grad_x, grad_y, dflow


def assert_same(got, want, what=""):
    """Bit for bit: same dtype, shape and values (NaN where NaN)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape, what
    np.testing.assert_array_equal(got, want, err_msg=what, strict=True)


# ----------------------------------------------------------------------------- 1. the NumPy numbers
def _gate_inputs(rng, dtype, nf=3, n=4, hh=5, ww=6):
    a = randn(rng, (4 * nf, n, hh, ww), dtype, 2.0)
    return a, randn(rng, (4 * nf,), dtype), randn(rng, (nf, n, hh, ww), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_gates_forward_is_the_old_code_bit_for_bit(dtype):
    rng = np.random.default_rng(0)
    a, b, c_prev = _gate_inputs(rng, dtype)
    want_a, want_c, want_tanh_c, want_h = old_gate_math(a, b, c_prev)
    nf, n, hh, ww = c_prev.shape
    c, tanh_c = np.empty_like(c_prev), np.empty_like(c_prev)
    hs = np.zeros((n, 3, nf, hh, ww), dtype)                  # h into a strided view, as _forward does
    slot = np.zeros((nf + 2, n, hh + 4, ww + 4), dtype)
    lstm_gates_forward(a, b, c_prev, c, tanh_c, hs[:, 1].transpose(1, 0, 2, 3),
                               slot[2:, :, 2:-2, 2:-2])
    for got, want, what in ((a, want_a, "gates"), (c, want_c, "c"), (tanh_c, want_tanh_c, "tanh_c"),
                            (hs[:, 1].transpose(1, 0, 2, 3), want_h, "h"),
                            (slot[2:, :, 2:-2, 2:-2], want_h, "h_next")):
        assert_same(got, want, what)
    assert not hs[:, [0, 2]].any() and not slot[:2].any() and not slot[:, :, :2].any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_gates_backward_is_the_old_code_bit_for_bit(dtype):
    rng = np.random.default_rng(1)
    a, b, c_prev = _gate_inputs(rng, dtype)
    gates, _, tanh_c, _ = old_gate_math(a, b, c_prev)
    shape = c_prev.shape
    dh_loss, dc = randn(rng, shape, dtype), randn(rng, shape, dtype)
    padded = randn(rng, (shape[0] + 2, shape[1], shape[2] + 2, shape[3] + 2), dtype)
    dh_next = padded[2:, :, 1:-1, 1:-1]                        # a cropped view, as in _backward
    want_da, want_dc_prev = old_gate_grads(dh_loss, dh_next, dc, gates, c_prev, tanh_c)
    da, dc_prev = np.empty_like(gates), np.empty_like(dc)
    before = [x.copy() for x in (dh_loss, padded, dc, gates, c_prev, tanh_c)]
    lstm_gates_backward(dh_loss, dh_next, dc, gates, c_prev, tanh_c, da, dc_prev)
    assert_same(da, want_da, "da")
    assert_same(dc_prev, want_dc_prev, "dc_prev")
    for x, y in zip(before, (dh_loss, padded, dc, gates, c_prev, tanh_c)):
        assert_same(y, x, "an input was modified")


@pytest.mark.parametrize("dtype", DTYPES)
def test_rmsprop_update_is_the_old_code_bit_for_bit(dtype):
    rng = np.random.default_rng(2)
    p, g = randn(rng, (7, 5), dtype), randn(rng, (7, 5), dtype)
    v = np.abs(randn(rng, (7, 5), dtype))
    p2, v2 = p.copy(), v.copy()
    old_rmsprop(p, v, g, 3e-3, 0.99, 1e-8)
    rmsprop_update(p2, v2, g, 3e-3, 0.99, 1e-8)
    assert_same(p2, p, "p")
    assert_same(v2, v, "v")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("max_norm", [1e-2, 1e9])          # clipping active, and not
def test_clip_grad_norm_is_the_old_code_bit_for_bit(dtype, max_norm):
    rng = np.random.default_rng(3)
    shapes = [(16, 1, 7, 7), (16,), (256, 80, 7, 7), (2, 2, 1, 1)]
    old = [randn(rng, s, dtype) for s in shapes]
    new = {f"g{k}": g.copy() for k, g in enumerate(old)}
    total_old = old_clip_grad_norm(old, max_norm)
    total_new = clip_grad_norm(new, max_norm)
    assert_same(total_new, total_old, "total")
    for g_old, g_new in zip(old, new.values()):
        assert_same(g_new, g_old, "clipped gradient")


def test_clip_grad_norm_of_a_nan_gradient_leaves_the_gradients_unscaled():
    grads = {"a": np.array([np.nan, 1.0]), "b": np.array([3.0])}
    total = clip_grad_norm(grads, 1.0)
    assert np.isnan(total) and grads["b"][0] == 3.0 and grads["a"][1] == 1.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_bilinear_weights_are_the_old_code_bit_for_bit(dtype):
    rng = np.random.default_rng(4)
    h, w = 6, 7
    grid = rng.uniform(-4, 10, (3, 2, 5, 4))
    grid[0, 0, 0] = [np.nan, np.inf, -np.inf, 1e30]
    grid[1, 1, 2] = [0, 5, -1, 6]
    grid[2, :, 4] = [[-2, 8, 6, 7], [-3, 7, 5.5, 0.5]]
    grid = grid.astype(dtype)
    for got, want, what in zip(bilinear_weights(grid, h, w), old_bilinear_weights(grid, h, w),
                               ("index", "weight", "dw_dx", "dw_dy")):
        assert_same(got, want, what)


@pytest.mark.parametrize("dtype", DTYPES)
def test_huber_smoothness_is_the_old_code_bit_for_bit(dtype):
    rng = np.random.default_rng(5)
    flow = rng.uniform(-3e-3, 3e-3, (2, 2, 6, 7)).astype(dtype)   # both sides of δ = 1e-3
    flow[0, 0, 0, 0] = np.nan
    for dloss in (1.0, np.asarray(0.37, dtype)):
        want_loss, want_gx, want_gy, want_dflow = old_huber(flow, 1e-3, dloss)
        loss, cache = huber_smoothness_forward(flow, 1e-3)
        assert_same(loss, want_loss, "loss")
        assert_same(cache.grad_x, want_gx, "grad_x")
        assert_same(cache.grad_y, want_gy, "grad_y")
        assert_same(huber_smoothness_backward(dloss, cache), want_dflow, "dflow")


@pytest.mark.parametrize("four_f", [4, 8, 64, 256])
def test_a_sum_over_rows_adds_them_in_order(four_f):
    """convlstm's db: the T per-step rows summed at once (``db_steps.sum(axis=0)``) equal the
    loop ``db += db_t`` bit for bit; NumPy's pairwise summation is only along the fast axis."""
    rng = np.random.default_rng(four_f)
    for t in range(1, 13):
        steps = (rng.standard_normal((t, four_f)) * 10 ** rng.uniform(-4, 4, (t, four_f))).astype(np.float32)
        db = np.zeros(four_f, np.float32)
        for row in steps:
            db += row
        assert_same(steps.sum(axis=0), db, f"T={t}")


# each fused kernel's op: the plain code it was checked against, in the op's own file
OPS = {"lstm_gates_forward": lstm_gates_forward, "lstm_gates_backward": lstm_gates_backward,
       "rmsprop_update": rmsprop_update, "sum_of_squares": sum_of_squares,
       "clip_coefficient": clip_coefficient, "scale_in_place": scale_in_place,
       "bilinear_weights": bilinear_weights, "huber_differences": huber_differences,
       "huber_backward": huber_backward}
# the file that holds each op (its plain lines, and the one op a counted step charges to it)
CALLERS = {"lstm_gates_forward": "memory.py", "lstm_gates_backward": "memory.py",
           "rmsprop_update": "optim.py", "sum_of_squares": "optim.py", "clip_coefficient": "optim.py",
           "scale_in_place": "optim.py", "bilinear_weights": "sampler.py",
           "huber_differences": "losses.py", "huber_backward": "losses.py"}


# ----------------------------------------------------------------------------- 2. one op each
def _calls():
    """(name, fn, args, NumPy ops it stands for), float32, small."""
    rng = np.random.default_rng(6)
    dt = "float32"
    a, b, c_prev = _gate_inputs(rng, dt)
    gates, _, tanh_c, _ = old_gate_math(a, b, c_prev)
    z = np.zeros_like(c_prev)
    grid = rng.uniform(-2, 8, (2, 2, 3, 4)).astype(dt)
    flow = randn(rng, (2, 2, 4, 5), dt)
    g = randn(rng, (3, 4), dt)
    return [
        # a += b, 3 σ × 4 ops, 1 tanh, c (3 ufuncs + setitem), tanh(c), h (ufunc + setitem), h_next
        ("lstm_gates_forward", lstm_gates_forward,
         (a.copy(), b, c_prev, z.copy(), z.copy(), z.copy(), z.copy()), 22),
        # dh 1, δc 5, each of the four δa blocks 5 (with its setitem), dc_prev 2
        ("lstm_gates_backward", lstm_gates_backward,
         (c_prev, c_prev, c_prev, gates, c_prev, tanh_c, np.empty_like(gates), z.copy()), 28),
        ("rmsprop_update", rmsprop_update, (g.copy(), np.abs(g), g, 1e-3, 0.99, 1e-8), 9),
        ("sum_of_squares", sum_of_squares, (g,), 2),
        ("clip_coefficient", clip_coefficient,
         ([np.asarray(np.sum(g * g)), np.asarray(np.sum(g) ** 2)], 0.5), 7),
        ("scale_in_place", scale_in_place, (g.copy(), np.asarray(0.5, dt)), 2),
        ("bilinear_weights", bilinear_weights, (grid, 4, 5), 59),
        ("huber_differences", huber_differences, (flow[..., 1:], flow[..., :-1], 0.3), 10),
        ("huber_backward", huber_backward,
         (np.asarray(0.5, dt), flow[..., 1:] * 1, flow[..., 1:, :] * 1, flow.shape), 7),
    ]


@pytest.mark.parametrize("index", range(len(kernels.FUSED_NAMES)))
def test_each_fused_function_counts_as_one_op(index):
    name, fn, args, numpy_ops = _calls()[index]
    ops = count_array_ops(fn, *args)
    assert ops.total == 1 and ops.by_category["fused"] == 1, ops.report()
    assert ops.fused[name]["calls"] == 1
    assert ops.unfused_total == ops.fused[name]["ops"] == numpy_ops, ops.report()
    files = {where.rsplit(":", 1)[0] for where in ops.fused[name]["lines"]}
    home = {"memory.py": "stvae_np/fast/memory.py"}.get(CALLERS[name], f"stvae_np/{CALLERS[name]}")
    assert files <= {home, "stvae_np/activations.py"}, files      # the plain code sits in the op's file
    twice = count_array_ops(lambda *a: (fn(*a), fn(*a)), *_calls()[index][2])
    assert twice.total == 2 and twice.fused[name]["calls"] == 2


def test_the_call_table_covers_every_fused_function():
    assert [c[0] for c in _calls()] == list(kernels.FUSED_NAMES)


ELEMENTWISE_FILES = ("memory.py", "activations.py", "optim.py", "sampler.py", "losses.py", "kernels.py")


def ops_by_file(ops):
    """Each file's operations in a counted step, a fused call charged once to its caller."""
    inside = {}
    for f in ops.fused.values():
        for where, k in f["lines"].items():
            inside[where] = inside.get(where, 0) + k
    by_file = {}
    for ln in ops.lines:
        n = ln.count - inside.get(ln.where, 0)
        if n:
            name = ln.file.rsplit("/", 1)[-1]
            by_file[name] = by_file.get(name, 0) + n
    for name, f in ops.fused.items():
        caller = CALLERS.get(name, f"fused {name}")
        by_file[caller] = by_file.get(caller, 0) + f["calls"]
    assert sum(by_file.values()) == ops.total
    return by_file


# Before kernels.py (2026-11-30) the element-wise files issued, per step: paper convlstm 280,
# activations 219, optim 187, sampler 80, losses 35 (801); tiny 280, 219, 187, 155, 40 (881).
# convlstm.py (now fast/memory.py, which holds the gates' plain code): 47 after fusion, 49 since step 0 without h0 copies Wx's columns (forward and
# backward) to convolve x_0 alone. activations.py: tiny 3 -> 9 since its flow head has two
# tanh layers (flow_act="tanh", 2026-12-01): two tanh forward, two tanh' = 1 − t² (2 each).
# losses.py: tiny 16 -> 27 since its photometric term is Geman–McClure's error weighted by
# the next frame (photo_loss="geman_mcclure", photo_weighting="next_frame", 2026-12-01):
# d² + C², the ratio, Σw, max(Σw, tiny), w/Σw and the weighted sum forward; 2·d·C²/(d² + C²)²
# and the weight backward, against the plain mean's square and mean. losses.py: tiny 27 -> 41
# and the total 164 -> 178 when the photometric term moved there from model.py (issue 26:
# its blur kernel, the frames' slices and the flow's scaling, 14 operations that model.py
# issued before; the step's total, 446, did not change).
@pytest.mark.parametrize("preset,limits,total", [
    ("paper", {"memory.py": 49, "activations.py": 3, "optim.py": 40, "sampler.py": 22,
               "losses.py": 11, "kernels.py": 0}, 125),
    ("tiny", {"memory.py": 49, "activations.py": 9, "optim.py": 40, "sampler.py": 39,
              "losses.py": 41, "kernels.py": 0}, 178),
])
def test_the_training_steps_element_wise_ops_fell(preset, limits, total):
    ops = count_step_ops(preset)
    by_file = ops_by_file(ops)
    got = {f: by_file.get(f, 0) for f in ELEMENTWISE_FILES}
    assert all(got[f] <= limits[f] for f in limits), (got, limits)
    assert sum(got.values()) <= total, got
    calls = {name: f["calls"] for name, f in ops.fused.items() if name in CALLERS}
    steps, params = 9, 13                                   # T − 1 ConvLSTM steps, 13 parameters
    assert calls["lstm_gates_forward"] == calls["lstm_gates_backward"] == steps
    assert calls["rmsprop_update"] == calls["sum_of_squares"] == calls["scale_in_place"] == params
    assert calls["clip_coefficient"] == calls["huber_backward"] == 1
    assert calls["huber_differences"] == 2
    assert calls["bilinear_weights"] == (1 if preset == "paper" else 2)   # tiny: + the photometric warp


# ----------------------------------------------------------------------------- 3. dispatch and fallback
@pytest.fixture
def fake_gpu(monkeypatch):
    """fast/kernels.py sees a 'CuPy' that is NumPy underneath, and builds its kernels with the C++
    stand-in (tests override the builders they want to break). The kernel cache starts empty."""
    fake = cpu_kernels.fake_xp()
    monkeypatch.setattr(kernels, "_KERNELS", {})
    monkeypatch.setattr(kernels, "get_array_module", lambda *arrays: fake)
    monkeypatch.setattr(kernels, "_cupy", cpu_kernels.fake_cupy)
    return fake


def _spec_with(monkeypatch, name, **fields):
    monkeypatch.setitem(kernels._SPECS, name, kernels._SPECS[name]._replace(**fields))


def _rmsprop_case():
    rng = np.random.default_rng(7)
    p, g = randn(rng, (6, 4), "float64"), randn(rng, (6, 4), "float64")
    v = np.abs(randn(rng, (6, 4), "float64"))
    want_p, want_v = p.copy(), v.copy()
    old_rmsprop(want_p, want_v, g, 1e-2, 0.9, 1e-8)
    return (p, v, g, 1e-2, 0.9, 1e-8), (want_p, want_v)


def test_numpy_never_builds_a_kernel(monkeypatch):
    def explode(*a):
        raise AssertionError("a kernel was built for NumPy arrays")
    monkeypatch.setattr(kernels, "_KERNELS", {})
    for name in kernels.FUSED_NAMES:
        _spec_with(monkeypatch, name, build=explode)
    args, (want_p, _) = _rmsprop_case()
    rmsprop_update(*args)
    assert_same(args[0], want_p)
    assert kernels._kernel_for("rmsprop_update", np, np.float32) is None
    assert kernels._KERNELS == {}


def test_a_kernel_that_fails_to_build_warns_once_and_the_plain_code_runs(fake_gpu, monkeypatch):
    def broken(*a):
        raise RuntimeError("nvrtc: error: identifier 'T' is undefined")
    _spec_with(monkeypatch, "rmsprop_update", build=broken)
    args, (want_p, want_v) = _rmsprop_case()
    with pytest.warns(RuntimeWarning, match=r"'rmsprop_update' \(float64\) is not used.*identifier"):
        rmsprop_update(*args)
    assert_same(args[0], want_p)
    assert_same(args[1], want_v)
    assert kernels._KERNELS[("rmsprop_update", None, "float64")] is None
    args, (want_p, _) = _rmsprop_case()
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # no second warning: the failure is cached
        rmsprop_update(*args)
    assert_same(args[0], want_p)


def test_a_kernel_that_gives_wrong_numbers_is_dropped(fake_gpu, monkeypatch):
    calls = []

    def lazy_kernel(*args):              # "runs" but writes nothing: the outputs stay as they were
        calls.append(len(args))
    _spec_with(monkeypatch, "rmsprop_update", build=lambda: lazy_kernel)
    args, (want_p, _) = _rmsprop_case()
    with pytest.warns(RuntimeWarning, match="disagrees with the plain code"):
        rmsprop_update(*args)
    assert calls == [6]                  # the check launched it once, then it was dropped
    assert_same(args[0], want_p)


def test_fusion_off_builds_nothing(fake_gpu, monkeypatch):
    _spec_with(monkeypatch, "rmsprop_update", build=lambda: pytest.fail("built with FUSED off"))
    monkeypatch.setattr(kernels, "FUSED", False)
    args, (want_p, _) = _rmsprop_case()
    rmsprop_update(*args)
    assert_same(args[0], want_p)
    assert kernels._KERNELS == {}


def test_a_working_kernel_is_used_after_its_check(fake_gpu, monkeypatch):
    """A kernel that computes the right numbers passes its check and then runs instead of
    the plain code (here a Python stand-in with the kernel's calling convention)."""
    launches = []

    def python_kernel(g, lr, alpha, eps, p, v):
        launches.append(p.shape)
        v[...] = v * alpha + (1.0 - alpha) * (g * g)
        p[...] = p - lr * g / (np.sqrt(v) + eps)
    _spec_with(monkeypatch, "rmsprop_update", build=lambda: python_kernel)
    args, (want_p, _) = _rmsprop_case()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rmsprop_update(*args)
    assert launches == [(5, 3, 2), (6, 4)]           # the first-use check, then the call
    np.testing.assert_allclose(args[0], want_p, rtol=1e-14)


# ----------------------------------------------------------------------------- 4. the CUDA bodies, as C++
@needs_gxx
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", kernels.FUSED_NAMES)
def test_each_kernel_body_passes_its_check_as_cpp(fake_gpu, name, dtype):
    """The operation strings compiled as C++ (cpu_kernels) agree with the plain code on the
    first-use check's inputs (NaN, ±inf, integers, strided views included)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        variant = 13 if name == "clip_coefficient" else None
        kernel = kernels._kernel_for(name, fake_gpu, dtype, variant, OPS[name])
    assert kernel is not None and kernel.calls >= 1


@needs_gxx
def test_the_check_catches_a_wrong_kernel_body(fake_gpu, monkeypatch):
    """ε inside the root instead of outside: close, but not the same update."""
    monkeypatch.setattr(kernels, "_RMSPROP_CUDA",
                        kernels._RMSPROP_CUDA.replace("(sqrt(v_new) + (T)eps)", "sqrt(v_new + (T)eps)"))
    args, (want_p, _) = _rmsprop_case()
    with pytest.warns(RuntimeWarning, match="rmsprop_update.*disagrees"):
        rmsprop_update(*args)
    assert_same(args[0], want_p)


def _training_run(preset, dtype, steps=2):
    cfg = Config.preset(preset)
    rng = np.random.default_rng(8)
    model = STVAE(cfg, seed=2, dtype=dtype)
    model.params["flow3.W"][...] = rng.standard_normal(model.params["flow3.W"].shape) * 0.05
    model.params["flow3.b"][...] = [0.37, -0.29]          # off zero flow: every sampler path runs
    clip = rng.uniform(0, 1, (3, 5, 1, cfg.height, cfg.width)).astype(dtype)
    opt = RMSProp(model.params, lr=1e-3)
    out = {}
    for step in range(steps):
        loss, grads = model.loss_and_grads(clip)
        out[f"{step}/loss"] = np.asarray(loss)
        out.update({f"{step}/grad/{k}": g.copy() for k, g in grads.items()})
        out[f"{step}/norm"] = np.asarray(clip_grad_norm(grads, 0.01))
        opt.step(grads)
        out.update({f"{step}/param/{k}": p.copy() for k, p in model.params.items()})
    return out


@needs_gxx
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 2e-5)])
def test_a_training_step_through_the_cpp_kernels_matches_the_plain_code(fake_gpu, dtype, rtol):
    """Every fused function of the tiny preset's step (ConvLSTM, sampler with the
    photometric warp, Huber, clipping, RMSProp) launched as the C++ stand-in, with the
    real arguments (strided views, broadcast biases, 0-d scales)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fused = _training_run("tiny", dtype)
    used = {key[0] for key, kernel in kernels._KERNELS.items() if kernel is not None}
    assert used == set(kernels.FUSED_NAMES)
    kernels_off = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kernels, "FUSED", False)
        kernels_off = _training_run("tiny", dtype)
    for key, want in kernels_off.items():
        got = fused[key]
        scale = max(float(np.abs(want).max()), 1e-300)
        err = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) / scale
        assert err <= rtol, f"{key}: {err:.2e}"


# ----------------------------------------------------------------------------- 5. NVRTC, no GPU needed
def _nvrtc_setup():
    """(compiler module, options) to compile CUDA in CuPy's shape, or a reason to skip."""
    try:
        import cupy
        from cupy.cuda import compiler, nvrtc
        nvrtc.getVersion()
    except Exception as err:             # no CuPy, or no NVRTC library
        return None, f"CuPy with its NVRTC library is needed ({type(err).__name__}: {err})"
    include = os.path.join(os.path.dirname(cupy.__file__), "_core", "include")
    dirs = [include] + [os.path.join(include, "cupy", "_cccl", d) for d in ("libcudacxx", "cub", "thrust")]
    runtime = None
    for candidate in [os.environ.get("CUDA_PATH", ""), "/usr/local/cuda"] + [
            os.path.join(p, "nvidia", "cuda_runtime") for p in site.getsitepackages()]:
        if candidate and os.path.exists(os.path.join(candidate, "include", "cuda_fp16.h")):
            runtime = os.path.join(candidate, "include")
            break
    if runtime is None:
        return None, "no CUDA runtime headers (cuda_fp16.h) found for NVRTC"
    return compiler, tuple("-I" + d for d in dirs + [runtime]) + ("--std=c++17",)


def _cupy_style_source(kernel, ctype, ndim=3):
    """The .cu file CuPy 14 writes for an ElementwiseKernel whose array arguments are all
    ``ndim``-D and strided (its most general form)."""
    params, refs = [], []
    for p in kernel.in_params + kernel.out_params:
        t = ctype if len(p.ctype) == 1 else p.ctype
        const = "const " if p.is_const else ""
        scalar = p.name in ("lr", "alpha", "eps", "max_norm", "width", "height", "delta", "count")
        if scalar:
            params.append(f"const {t} {p.name}")
        elif p.raw:
            params.append(f"{const}CArray<{t}, {ndim}, false, false> {p.name}")
        else:
            params.append(f"{const}CArray<{t}, {ndim}, false, false> _raw_{p.name}")
            refs.append(f"{const}{p.ctype} &{p.name} = _raw_{p.name}[_ind.get()];")
    placeholders = sorted({p.ctype for p in kernel.in_params + kernel.out_params if len(p.ctype) == 1})
    return ("#include <cupy/complex.cuh>\n#include <cupy/carray.cuh>\n#include <cupy/atomics.cuh>\n"
            + "".join(f"typedef {ctype} {t};\n" for t in placeholders) + kernel.preamble
            + f'\nextern "C" __global__ void {kernel.name}(' + ", ".join(params + [f"CIndexer<{ndim}, false> _ind"])
            + ") {\n  #pragma unroll 1\n  CUPY_FOR(i, _ind.size()) {\n    _ind.set(i);\n    "
            + "\n    ".join(refs) + "\n" + kernel.operation + ";\n  }\n}\n")


@pytest.mark.parametrize("ctype", ["float", "double"])
def test_the_kernels_compile_with_nvrtc(monkeypatch, ctype):
    """Where CuPy and NVRTC are installed (a GPU is not needed): each ElementwiseKernel's
    source, laid out as CuPy lays it out, compiles for sm_90 in float and double."""
    compiler, options = _nvrtc_setup()
    if compiler is None:
        pytest.skip(options)
    # the architecture is normally asked from the device; name one instead
    monkeypatch.setattr(compiler, "_get_arch_for_options_for_nvrtc",
                        lambda arch=None: ("-arch=compute_90", "ptx"))
    built = []
    for name in kernels.FUSED_NAMES:
        spec = kernels._SPECS[name]
        if name == "sum_of_squares":
            continue                     # a ReductionKernel: CuPy writes its source differently
        built += [spec.build(1), spec.build(13)] if name == "clip_coefficient" else [spec.build()]
    failures = []
    for kernel in built:
        try:
            compiler.compile_using_nvrtc(_cupy_style_source(kernel, ctype), options=options)
        except compiler.CompileException as err:
            failures.append(f"{kernel.name}: {str(err)[:2000]}")
    assert not failures, "\n".join(failures)


# ----------------------------------------------------------------------------- 6. on a GPU
if GPU:
    import cupy as cp
TF32 = os.environ.get("CUPY_TF32", "0") not in ("", "0")


def _gpu_close(got, want, rtol, what):
    assert isinstance(got, cp.ndarray), f"{what}: left the GPU"
    err = kernels._difference(cp.asnumpy(got), np.asarray(want))
    assert err <= rtol, f"{what}: max |gpu − cpu| / max |cpu| = {err:.2e} > {rtol:.0e}"


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", kernels.FUSED_NAMES)
def test_each_kernel_is_built_checked_and_used_on_the_gpu(monkeypatch, name, dtype):
    monkeypatch.setattr(kernels, "_KERNELS", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # a fallback warning fails the test
        kernel = kernels._kernel_for(name, cp, dtype, 13 if name == "clip_coefficient" else None, OPS[name])
    assert kernel is not None


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index", range(len(kernels.FUSED_NAMES)))
def test_each_kernel_on_the_gpu_matches_numpy(monkeypatch, dtype, index):
    """The public function on CuPy (the kernel) against NumPy (the plain code), same inputs,
    bigger than the first-use check's. Element-wise: no matrix product, so TF32 plays no part."""
    monkeypatch.setattr(kernels, "_KERNELS", {})
    name, fn, args, _ = _calls()[index]
    args = [a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in args]
    if name == "clip_coefficient":
        args[0] = [np.asarray(s, dtype) for s in args[0]]
    cpu_args = [[x.copy() for x in a] if isinstance(a, list) else (a.copy() if isinstance(a, np.ndarray) else a)
                for a in args]
    gpu_args = [[cp.asarray(x) for x in a] if isinstance(a, list) else (cp.asarray(a) if isinstance(a, np.ndarray) else a)
                for a in args]
    rtol = {"float64": 1e-12, "float32": 1e-5}[dtype]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = fn(*gpu_args)
    want = fn(*cpu_args)
    assert kernels._KERNELS[(name, 2 if name == "clip_coefficient" else None, dtype)] is not None
    for k, (g, w) in enumerate(zip(kernels._flat(gpu_args) + kernels._flat(got),
                                   kernels._flat(cpu_args) + kernels._flat(want))):
        _gpu_close(g, w, rtol, f"{name} array {k}")


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_training_step_on_the_gpu_with_and_without_fusion_matches_the_cpu(monkeypatch, dtype):
    if dtype == "float32" and TF32:
        pytest.skip("CUPY_TF32 is on: float32 matrix products keep 10 mantissa bits")
    rtol = {"float64": 1e-10, "float32": 1e-4}[dtype]   # two steps: round-off compounds
    cpu = _training_run("tiny", dtype)
    monkeypatch.setattr(kernels, "_KERNELS", {})

    def on_gpu():
        cfg = Config.tiny()
        rng = np.random.default_rng(8)
        model = STVAE(cfg, seed=2, dtype=dtype, device="gpu")
        model.params["flow3.W"][...] = cp.asarray(rng.standard_normal(model.params["flow3.W"].shape) * 0.05)
        model.params["flow3.b"][...] = cp.asarray([0.37, -0.29])
        clip = cp.asarray(rng.uniform(0, 1, (3, 5, 1, cfg.height, cfg.width)).astype(dtype))
        opt = RMSProp(model.params, lr=1e-3)
        out = {}
        for step in range(2):
            loss, grads = model.loss_and_grads(clip)
            out[f"{step}/loss"] = loss
            out.update({f"{step}/grad/{k}": g.copy() for k, g in grads.items()})
            out[f"{step}/norm"] = clip_grad_norm(grads, 0.01)
            opt.step(grads)
            out.update({f"{step}/param/{k}": p.copy() for k, p in model.params.items()})
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fused = on_gpu()
    assert all(kernels._KERNELS.values())
    monkeypatch.setattr(kernels, "FUSED", False)
    plain = on_gpu()
    for key, want in cpu.items():
        _gpu_close(fused[key], want, rtol, f"fused {key}")
        _gpu_close(plain[key], want, rtol, f"plain {key}")
