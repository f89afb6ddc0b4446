"""The GPU path: every op, the whole model, checkpoints and the training command run on
CuPy and are checked against NumPy on the same inputs.

Skipped where no CUDA device answers (CuPy missing, or installed without a GPU); the
static checks that run everywhere are in ``tests/test_portability.py``. Without a GPU,
two tests here run instead: ``python -m stvae_np.train --device gpu`` and
``STVAE(..., device="gpu")`` must refuse with a message that names the GPU extra.

Tolerances (CuPy against NumPy, same inputs): float64 agrees to 1e-10 and float32 to
1e-5, both measured as ``max |gpu − cpu| / max |cpu|`` per array (relative to the
array's largest entry, so entries near zero after cancellation do not need to agree
to more digits than the arithmetic gives). cuBLAS and OpenBLAS sum in different orders,
and atomics (the sampler's scatter-add) sum in no fixed order, so bit-identity is asked
only where no arithmetic happens: initialisation, checkpoints, indices. float32 assumes
CuPy's default of no TF32 in matrix products (``CUPY_TF32`` unset or 0).
"""
from __future__ import annotations

import json
import os

import numpy as np
from helpers import moving_square_clips
import pytest

from stvae_np import checkpoint, train
from stvae_np.backend import asnumpy, gpu_available, to_device
from stvae_np.fast.layers import (conv2d_backward, conv2d_forward, maxpool2_backward, maxpool2_forward,
                           upsample2_backward, upsample2_forward)
from stvae_np.fast.memory import (convlstm_backward, convlstm_forward, convlstm_step_backward,
                                  convlstm_step_forward)
from stvae_np.losses import (huber_smoothness_backward, huber_smoothness_forward, mse_backward,
                             mse_forward)
from stvae_np import metrics as M
from stvae_np.model import PARAM_NAMES, STVAE, Config
from stvae_np.optim import RMSProp, clip_grad_norm, clip_grad_value
from stvae_np.sampler import base_grid, bilinear_backward, bilinear_forward, flow_to_grid

GPU = gpu_available()
if GPU:
    import cupy as cp
else:
    cp = None

needs_gpu = pytest.mark.skipif(
    not GPU, reason="no CUDA device: CuPy is not installed, or no GPU answers (these tests "
                    "compare every op, the model and the trainer on CuPy against NumPy; install "
                    "requirements-gpu.txt on a machine with a CUDA 12 driver)")

DTYPES = ("float64", "float32")
TF32 = os.environ.get("CUPY_TF32", "0") not in ("", "0")


def tol(dtype):
    if dtype == "float32" and TF32:
        pytest.skip("CUPY_TF32 is on: float32 matrix products keep 10 mantissa bits, "
                    "far from NumPy's float32")
    return {"float64": 1e-10, "float32": 1e-5}[np.dtype(dtype).name]


def gpu(a):
    return to_device(a, "gpu")


def assert_close(got, want, rtol, what=""):
    """``got`` from the GPU (must still be a CuPy array), ``want`` from NumPy: same shape,
    same dtype, and max |got − want| ≤ rtol · max |want|."""
    assert isinstance(got, cp.ndarray), f"{what}: the result left the GPU ({type(got).__name__})"
    got, want = cp.asnumpy(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} on the GPU, {want.shape} on the CPU"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} on the GPU, {want.dtype} on the CPU"
    if want.size == 0:
        return
    assert np.isfinite(got).all() == np.isfinite(want).all(), f"{what}: non-finite values differ"
    scale = max(float(np.abs(want).max()), np.finfo(np.float64).tiny)
    err = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) / scale
    assert err <= rtol, f"{what}: max |gpu − cpu| / max |cpu| = {err:.2e} > {rtol:.0e}"


def randn(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def moving_squares(n=2, t=5, size=32, seed=0):
    """Textured 8×8 squares moving one pixel a frame (host); see tests/helpers.py."""
    return moving_square_clips(n=n, t=t, size=size, seed=seed)


# ----------------------------------------------------------------------------- conv, pool, up-sample
@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ["im2col", "shift", "auto"])
@pytest.mark.parametrize("k,c_in,c_out,bias", [(3, 3, 4, True), (5, 6, 1, True), (1, 4, 2, False)])
def test_conv2d_gpu_matches_cpu(dtype, method, k, c_in, c_out, bias):
    rng = np.random.default_rng(k * 10 + c_in)
    x = randn(rng, (2, c_in, 7, 9), dtype)
    w = randn(rng, (c_out, c_in, k, k), dtype, 0.3)
    b = randn(rng, (c_out,), dtype) if bias else None
    dout = randn(rng, (2, c_out, 7, 9), dtype)
    rt = tol(dtype)

    out_c, cache_c = conv2d_forward(x, w, b, method=method)
    out_g, cache_g = conv2d_forward(gpu(x), gpu(w), None if b is None else gpu(b), method=method)
    assert cache_g.method == cache_c.method
    assert_close(out_g, out_c, rt, "conv2d out")

    dout_g = gpu(dout)
    dx_c, dw_c, db_c = conv2d_backward(dout, cache_c)
    dx_g, dw_g, db_g = conv2d_backward(dout_g, cache_g)
    assert_close(dx_g, dx_c, rt, "conv2d dx")
    assert_close(dw_g, dw_c, rt, "conv2d dw")
    if bias:
        assert_close(db_g, db_c, rt, "conv2d db")
    else:
        assert db_g is None
    np.testing.assert_array_equal(cp.asnumpy(dout_g), dout)   # backward leaves dout alone


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ties", [False, True])
def test_maxpool2_gpu_matches_cpu(dtype, ties):
    """Ties (integer-valued maps) must go to the same, first, winner on both devices."""
    rng = np.random.default_rng(1)
    shape = (2, 3, 8, 6)
    x = (rng.integers(0, 2, shape) if ties else rng.standard_normal(shape)).astype(dtype)
    dout = randn(rng, (2, 3, 4, 3), dtype)
    out_c, cache_c = maxpool2_forward(x)
    out_g, cache_g = maxpool2_forward(gpu(x))
    assert_close(out_g, out_c, 0.0, "maxpool2 out")                # a selection: exact
    np.testing.assert_array_equal(cp.asnumpy(cache_g.argmax), cache_c.argmax)
    assert_close(maxpool2_backward(gpu(dout), cache_g), maxpool2_backward(dout, cache_c),
                 0.0, "maxpool2 dx")


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_upsample2_gpu_matches_cpu(dtype):
    rng = np.random.default_rng(2)
    x = randn(rng, (2, 3, 4, 5), dtype)
    dout = randn(rng, (2, 3, 8, 10), dtype)
    out_c, cache_c = upsample2_forward(x)
    out_g, cache_g = upsample2_forward(gpu(x))
    assert_close(out_g, out_c, 0.0, "upsample2 out")
    assert_close(upsample2_backward(gpu(dout), cache_g), upsample2_backward(dout, cache_c),
                 tol(dtype), "upsample2 dx")


# ----------------------------------------------------------------------------- ConvLSTM
def _lstm_inputs(dtype, n=2, t=3, c=2, f=3, k=3, hw=(6, 5), seed=3):
    rng = np.random.default_rng(seed)
    params = {"Wx": randn(rng, (4 * f, c, k, k), dtype, 0.3),
              "Wh": randn(rng, (4 * f, f, k, k), dtype, 0.3),
              "b": randn(rng, (4 * f,), dtype, 0.5)}
    xs = randn(rng, (n, t, c) + hw, dtype)
    h0 = randn(rng, (n, f) + hw, dtype, 0.5)
    c0 = randn(rng, (n, f) + hw, dtype, 0.5)
    dhs = randn(rng, (n, t, f) + hw, dtype)
    dc_last = randn(rng, (n, f) + hw, dtype)
    return params, xs, h0, c0, dhs, dc_last


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("initial_state", [False, True])
def test_convlstm_gpu_matches_cpu(dtype, initial_state):
    params, xs, h0, c0, dhs, dc_last = _lstm_inputs(dtype)
    if not initial_state:
        h0 = c0 = dc_last = None
    rt = tol(dtype)
    on_gpu = (lambda a: None if a is None else gpu(a))
    params_g = {k: gpu(v) for k, v in params.items()}

    hs_c, cache_c = convlstm_forward(xs, params, h0, c0)
    hs_g, cache_g = convlstm_forward(gpu(xs), params_g, on_gpu(h0), on_gpu(c0))
    assert_close(hs_g, hs_c, rt, "convlstm hs")
    assert_close(cache_g.c_last, cache_c.c_last, rt, "convlstm c_last")

    dxs_c, dp_c = convlstm_backward(dhs, cache_c, dc_last)
    dxs_g, dp_g = convlstm_backward(gpu(dhs), cache_g, on_gpu(dc_last))
    assert_close(dxs_g, dxs_c, rt, "convlstm dxs")
    assert set(dp_g) == set(dp_c)
    for name in dp_c:
        assert_close(dp_g[name], dp_c[name], rt, f"convlstm d{name}")


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_convlstm_step_gpu_matches_cpu(dtype):
    params, xs, h0, c0, dhs, dc_last = _lstm_inputs(dtype)
    rt = tol(dtype)
    h_c, c_c, cache_c = convlstm_step_forward(xs[:, 0], h0, c0, params)
    h_g, c_g, cache_g = convlstm_step_forward(gpu(xs[:, 0]), gpu(h0), gpu(c0),
                                              {k: gpu(v) for k, v in params.items()})
    assert_close(h_g, h_c, rt, "step h")
    assert_close(c_g, c_c, rt, "step c")
    out_c = convlstm_step_backward(dhs[:, 0], dc_last, cache_c)
    out_g = convlstm_step_backward(gpu(dhs[:, 0]), gpu(dc_last), cache_g)
    for name, g, c in zip(("dx", "dh_prev", "dc_prev"), out_g[:3], out_c[:3]):
        assert_close(g, c, rt, f"step {name}")
    for name in out_c[3]:
        assert_close(out_g[3][name], out_c[3][name], rt, f"step d{name}")


# ----------------------------------------------------------------------------- sampler
def _grid(rng, n, ho, wo, h, w, dtype, crowded):
    """Source points with fractional parts in [0.1, 0.9] (off the kinks at integers),
    some outside the map; ``crowded`` sends every point into one 2×2 cell, so the
    image gradient's scatter-add meets the same index many times."""
    if crowded:
        x = 3 + rng.uniform(0.1, 0.9, (n, ho, wo))
        y = 2 + rng.uniform(0.1, 0.9, (n, ho, wo))
    else:
        x = rng.integers(-3, w + 2, (n, ho, wo)) + rng.uniform(0.1, 0.9, (n, ho, wo))
        y = rng.integers(-3, h + 2, (n, ho, wo)) + rng.uniform(0.1, 0.9, (n, ho, wo))
    return np.stack([x, y], axis=1).astype(dtype)


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("crowded", [False, True])
def test_bilinear_gpu_matches_cpu(dtype, crowded):
    rng = np.random.default_rng(4)
    img = randn(rng, (2, 3, 7, 9), dtype)
    grid = _grid(rng, 2, 5, 6, 7, 9, dtype, crowded)
    dout = randn(rng, (2, 3, 5, 6), dtype)
    rt = tol(dtype)

    out_c, cache_c = bilinear_forward(img, grid)
    out_g, cache_g = bilinear_forward(gpu(img), gpu(grid))
    assert_close(out_g, out_c, rt, "bilinear out")
    np.testing.assert_array_equal(cp.asnumpy(cache_g.index), cache_c.index)
    dimg_c, dgrid_c = bilinear_backward(dout, cache_c)
    dimg_g, dgrid_g = bilinear_backward(gpu(dout), cache_g)
    assert_close(dimg_g, dimg_c, rt, "bilinear dimg (scatter-add)")
    assert_close(dgrid_g, dgrid_c, rt, "bilinear dgrid")


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_grid_generator_on_gpu(dtype):
    rng = np.random.default_rng(5)
    flow = randn(rng, (2, 2, 4, 5), dtype)
    like = gpu(np.zeros(1, dtype))
    assert_close(base_grid(2, 4, 5, like), base_grid(2, 4, 5, np.zeros(1, dtype)), 0.0, "base_grid")
    assert_close(flow_to_grid(gpu(flow)), flow_to_grid(flow), 0.0, "flow_to_grid")
    # zero flow reproduces the input exactly on the GPU too
    img = randn(rng, (2, 3, 4, 5), dtype)
    out, _ = bilinear_forward(gpu(img), base_grid(2, 4, 5, like))
    np.testing.assert_array_equal(cp.asnumpy(out), img)


# ----------------------------------------------------------------------------- losses
@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_mse_gpu_matches_cpu(dtype):
    rng = np.random.default_rng(6)
    pred, target = randn(rng, (2, 3, 4, 5), dtype), randn(rng, (2, 3, 4, 5), dtype)
    rt = tol(dtype)
    loss_c, cache_c = mse_forward(pred, target)
    loss_g, cache_g = mse_forward(gpu(pred), gpu(target))
    assert loss_g.ndim == 0, "the loss is a 0-d array on the device, not a Python float"
    assert_close(loss_g, loss_c, rt, "mse loss")
    for dloss in (1.0, 0.7):
        assert_close(mse_backward(gpu(np.asarray(dloss, dtype)), cache_g),
                     mse_backward(dloss, cache_c), rt, "mse dpred (device dloss)")
        assert_close(mse_backward(dloss, cache_g), mse_backward(dloss, cache_c), rt,
                     "mse dpred (Python dloss)")


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("delta", [1e-3, 0.5])
def test_huber_smoothness_gpu_matches_cpu(dtype, delta):
    """δ = 1e-3 (the paper's: almost all differences on the linear side) and δ = 0.5 (both sides)."""
    rng = np.random.default_rng(7)
    flow = randn(rng, (2, 2, 6, 7), dtype)
    rt = tol(dtype)
    loss_c, cache_c = huber_smoothness_forward(flow, delta)
    loss_g, cache_g = huber_smoothness_forward(gpu(flow), delta)
    assert loss_g.ndim == 0
    assert_close(loss_g, loss_c, rt, "huber loss")
    assert_close(huber_smoothness_backward(gpu(np.asarray(0.01, dtype)), cache_g),
                 huber_smoothness_backward(0.01, cache_c), rt, "huber dflow")


# ----------------------------------------------------------------------------- optimiser
@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_rmsprop_and_clipping_gpu_match_cpu(dtype):
    rng = np.random.default_rng(8)
    shapes = {"a": (3, 4), "b": (5,)}
    params_c = {k: randn(rng, s, dtype) for k, s in shapes.items()}
    params_g = {k: gpu(v) for k, v in params_c.items()}
    opt_c, opt_g = RMSProp(params_c, lr=1e-2), RMSProp(params_g, lr=1e-2)
    rt = tol(dtype)
    for step in range(3):
        grads_c = {k: randn(rng, s, dtype, 3.0) for k, s in shapes.items()}
        grads_g = {k: gpu(v) for k, v in grads_c.items()}
        max_norm = 1.0 if step < 2 else 1e6            # clipped twice, then left alone
        total_g = clip_grad_norm(grads_g, max_norm)
        total_c = clip_grad_norm(grads_c, max_norm)
        assert isinstance(total_g, cp.ndarray) and total_g.ndim == 0
        assert_close(total_g, total_c, rt, "clip_grad_norm total")
        clip_grad_value(grads_g, 0.2)
        clip_grad_value(grads_c, 0.2)
        opt_g.step(grads_g)
        opt_c.step(grads_c)
        for k in shapes:
            assert_close(grads_g[k], grads_c[k], rt, f"clipped grad {k}")
            assert_close(params_g[k], params_c[k], rt, f"param {k} after step {step}")
            assert_close(opt_g.v[k], opt_c.v[k], rt, f"v {k} after step {step}")


# ----------------------------------------------------------------------------- metrics
@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_metrics_gpu_match_cpu(dtype):
    """Metrics compute in float64 whatever their input, so both dtypes agree to 1e-10."""
    rng = np.random.default_rng(9)
    target = rng.uniform(0, 1, (2, 3, 1, 16, 16)).astype(dtype)
    pred = np.clip(target + 0.1 * rng.standard_normal(target.shape), 0, 1).astype(dtype)
    pred[0, 0] = target[0, 0]                          # one exact frame: PSNR's cap
    flow_true = randn(rng, (2, 3, 2, 16, 16), dtype)
    flow_pred = flow_true + randn(rng, flow_true.shape, dtype, 0.7)
    mask = rng.uniform(size=(2, 3, 16, 16)) < 0.3
    p, t, fp, ft, m = (gpu(a) for a in (pred, target, flow_pred, flow_true, mask))
    for per_frame in (False, True):
        assert_close(M.ssim(p, t, win_size=7, per_frame=per_frame),
                     M.ssim(pred, target, win_size=7, per_frame=per_frame), 1e-10, "ssim")
        assert_close(M.psnr(p, t, per_frame=per_frame), M.psnr(pred, target, per_frame=per_frame),
                     1e-10, "psnr")
        assert_close(M.mse_per_pixel(p, t, per_frame=per_frame),
                     M.mse_per_pixel(pred, target, per_frame=per_frame), 1e-10, "mse_per_pixel")
    assert_close(M.endpoint_error(fp, ft), M.endpoint_error(flow_pred, flow_true), 1e-10, "epe")
    assert_close(M.endpoint_error(fp, ft, m), M.endpoint_error(flow_pred, flow_true, mask),
                 1e-10, "epe (masked)")
    assert_close(M.flow_accuracy(fp, ft, m), M.flow_accuracy(flow_pred, flow_true, mask),
                 1e-10, "flow_accuracy")
    none = cp.zeros(mask.shape, bool)
    assert bool(cp.isnan(M.endpoint_error(fp, ft, none)))      # empty mask: NaN, on the device
    assert_close(M.upsample_flow(fp, 2, "bilinear"), M.upsample_flow(flow_pred, 2, "bilinear"),
                 tol(dtype), "upsample_flow")


# ----------------------------------------------------------------------------- the model
def _model_pair(dtype):
    """The tiny model on both devices with identical parameters; the flow head is moved off
    zero (host RNG) so the sampler and the flow layers carry gradient."""
    cfg = Config.tiny()
    cpu = STVAE(cfg, seed=1, dtype=dtype)
    rng = np.random.default_rng(7)
    cpu.params["flow3.W"][...] = rng.normal(0, 0.5, cpu.params["flow3.W"].shape)
    cpu.params["flow3.b"][...] = [0.37, -0.29]
    dev = STVAE(cfg, seed=1, dtype=dtype, device="gpu")
    dev.params = {k: gpu(v) for k, v in cpu.params.items()}
    return cpu, dev


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_initialisation_on_gpu_is_the_cpus(dtype):
    """Host RNG, then a copy: the same seed gives the same model on both devices, bit for bit."""
    cfg = Config.tiny()
    cpu, dev = STVAE(cfg, seed=3, dtype=dtype), STVAE(cfg, seed=3, dtype=dtype, device="gpu")
    assert tuple(dev.params) == PARAM_NAMES
    for name in PARAM_NAMES:
        assert isinstance(dev.params[name], cp.ndarray), name
        assert dev.params[name].dtype == cpu.params[name].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(cp.asnumpy(dev.params[name]), cpu.params[name], err_msg=name)
    assert dev.xp is cp and dev.device == "gpu"


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_and_grads_on_gpu_match_cpu(dtype):
    cpu, dev = _model_pair(dtype)
    clip = moving_squares(n=2, t=4, seed=2).astype(dtype)
    rt = tol(dtype)
    loss_c, grads_c = cpu.loss_and_grads(clip)
    for clip_in in (clip, gpu(clip)):                  # a host clip is copied in; a device one is used
        loss_g, grads_g = dev.loss_and_grads(clip_in)
        assert loss_g.ndim == 0
        assert_close(loss_g, loss_c, rt, "loss")
        for part in ("mse", "smooth"):
            assert_close(dev.last_parts[part], cpu.last_parts[part], rt, part)
        assert tuple(grads_g) == PARAM_NAMES
        for name in PARAM_NAMES:
            assert_close(grads_g[name], grads_c[name], rt, f"d{name}")
    preds_c, flows_c = cpu.predict(clip)
    preds_g, flows_g = dev.predict(clip)
    assert_close(preds_g, preds_c, rt, "predict: preds")
    assert_close(flows_g, flows_c, rt, "predict: flows")
    assert_close(dev.rollout(clip[:, :2], 3), cpu.rollout(clip[:, :2], 3), rt, "rollout")


@needs_gpu
def test_checkpoint_from_gpu_loads_on_cpu_bit_identically_and_back(tmp_path):
    clip = moving_squares(n=2, t=4, seed=1)
    dev = STVAE(Config.tiny(), seed=5, device="gpu")
    opt = RMSProp(dev.params, lr=1e-3)
    for _ in range(2):                                  # move off the initialisation
        _, grads = dev.loss_and_grads(clip)
        opt.step(grads)
    path = tmp_path / "from_gpu.npz"
    checkpoint.save(dev, path, extra={f"opt/{k}": v for k, v in opt.state_dict().items()})

    cpu, extra = checkpoint.load(path, device="cpu", return_extra=True)
    for name in PARAM_NAMES:
        assert isinstance(cpu.params[name], np.ndarray)
        assert cpu.params[name].dtype == dev.params[name].dtype
        np.testing.assert_array_equal(cpu.params[name], cp.asnumpy(dev.params[name]), err_msg=name)
    opt_c = RMSProp(cpu.params, lr=0.0)
    opt_c.load_state_dict({k[len("opt/"):]: v for k, v in extra.items() if k.startswith("opt/")})
    assert opt_c.t == 2 and opt_c.lr == opt.lr
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(opt_c.v[name], cp.asnumpy(opt.v[name]), err_msg=name)

    path_back = tmp_path / "from_cpu.npz"
    checkpoint.save(cpu, path_back, extra={f"opt/{k}": v for k, v in opt_c.state_dict().items()})
    back, extra_back = checkpoint.load(path_back, device="gpu", return_extra=True)
    opt_back = RMSProp(back.params, lr=0.0)
    opt_back.load_state_dict({k[len("opt/"):]: v for k, v in extra_back.items()
                              if k.startswith("opt/")})
    for name in PARAM_NAMES:
        assert isinstance(back.params[name], cp.ndarray)
        np.testing.assert_array_equal(cp.asnumpy(back.params[name]), cpu.params[name], err_msg=name)
        assert isinstance(opt_back.v[name], cp.ndarray)
        np.testing.assert_array_equal(cp.asnumpy(opt_back.v[name]), opt_c.v[name], err_msg=name)
    assert_close(back.predict(clip)[0], asnumpy(dev.predict(clip)[0]), 1e-6, "round-trip predict")


def _train_squares(device, steps=30):
    """The recipe of tests/test_model.py's learning test, shorter: RMSProp on moving squares.
    The losses stay on the device until the end (no sync inside the loop)."""
    model = STVAE(Config.tiny(), seed=0, device=device)
    opt = RMSProp(model.params, lr=2e-3)
    losses = []
    for step in range(steps):
        loss, grads = model.loss_and_grads(moving_squares(n=4, t=5, seed=step))
        clip_grad_norm(grads, 1.0)
        opt.step(grads)
        losses.append(loss)
    return model, [float(loss) for loss in losses]


@needs_gpu
def test_short_training_run_on_gpu_loss_falls():
    """30 RMSProp steps on the GPU: the loss falls, the parameters stay on the device.

    The same recipe on the CPU (seed 0) goes from 0.0287 at step 1 to a mean of 0.0125
    over the last five steps (0.44×); tests/test_model.py runs its 40-step twin on the CPU.
    """
    model, losses = _train_squares("gpu")
    assert np.isfinite(losses).all(), losses
    last = np.mean(losses[-5:])
    assert last < 0.6 * losses[0] and last < np.mean(losses[:5]), losses
    assert model.xp is cp and all(isinstance(p, cp.ndarray) for p in model.params.values())
    # the first step starts from identical parameters: the same loss as the CPU's
    cpu_first = STVAE(Config.tiny(), seed=0).loss_and_grads(moving_squares(n=4, t=5, seed=0))[0]
    assert losses[0] == pytest.approx(float(cpu_first), rel=tol("float32"))   # skips under TF32


# ----------------------------------------------------------------------------- the training command
TRAIN_ARGS = ["--device", "gpu", "--steps", "5", "--batch-size", "2", "--eval-clips", "2",
              "--no-figures"]


@needs_gpu
def test_train_command_on_gpu(tmp_path):
    out = tmp_path / "run"
    assert train.main(TRAIN_ARGS + ["--out", str(out)]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["device"] == "gpu" and result["steps"] == 5
    assert np.isfinite(result["test"]["mse"])
    model = checkpoint.load(out / "checkpoint.npz")    # a GPU run's checkpoint, read on the CPU
    assert all(isinstance(p, np.ndarray) and np.isfinite(p).all() for p in model.params.values())


@pytest.mark.skipif(GPU, reason="a CUDA device is present: test_train_command_on_gpu runs instead")
def test_train_on_gpu_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(TRAIN_ARGS + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "GPU extra" in err and "requirements-gpu.txt" in err, err
    assert not out.exists()                            # refused before anything was written


@pytest.mark.skipif(GPU, reason="a CUDA device is present")
def test_model_on_gpu_without_a_gpu_says_what_to_install():
    with pytest.raises(RuntimeError, match="no CUDA device.*requirements-gpu.txt"):
        STVAE(Config.tiny(), device="gpu")
