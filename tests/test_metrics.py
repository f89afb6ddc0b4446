"""Evaluation metrics against hand-computed values and, for SSIM, against the
definition evaluated one window at a time."""
import math

import numpy as np
import pytest

from stvae_np import metrics as M

from stvae_np.metrics import (bce_per_frame, endpoint_error, flow_accuracy, iou,
                              mae_per_frame, mae_per_pixel, mse_per_frame, mse_per_pixel,
                              psnr, ssim, upsample_flow)


# ----------------------------------------------------------------------------- pixel errors
def test_mse_and_mae_of_a_constant_error():
    target = np.zeros((2, 3, 1, 4, 5))       # (N, T, C, H, W): 20 pixels a frame
    pred = target + 0.1
    assert float(mse_per_pixel(pred, target)) == pytest.approx(0.01)
    assert float(mse_per_frame(pred, target)) == pytest.approx(0.01 * 20)
    assert float(mae_per_pixel(pred, target)) == pytest.approx(0.1)
    assert float(mae_per_frame(pred, target)) == pytest.approx(0.1 * 20)


def test_per_frame_is_pixels_times_per_pixel_and_returns_arrays():
    rng = np.random.default_rng(0)
    pred = rng.random((2, 3, 2, 5, 4)).astype(np.float32)
    target = rng.random((2, 3, 2, 5, 4)).astype(np.float32)
    pixels = 2 * 5 * 4
    m = mse_per_pixel(pred, target)
    assert isinstance(m, np.ndarray) and m.ndim == 0 and m.dtype == np.float64
    np.testing.assert_allclose(mse_per_frame(pred, target), pixels * m, rtol=1e-12)
    np.testing.assert_allclose(mae_per_frame(pred, target),
                               pixels * mae_per_pixel(pred, target), rtol=1e-12)
    np.testing.assert_allclose(m, np.mean((pred.astype(np.float64) - target) ** 2), rtol=1e-12)
    assert mse_per_frame(pred, target, per_frame=True).shape == (2, 3)
    assert mse_per_pixel(pred[:, 0], target[:, 0], per_frame=True).shape == (2,)   # (N,C,H,W)


def test_psnr_of_known_mse():
    target = np.full((1, 2, 1, 4, 4), 0.5)
    pred = target + 0.1                                   # MSE 0.01 -> 10·log10(1/0.01) = 20 dB
    db = psnr(pred, target)
    assert isinstance(db, np.ndarray) and db.ndim == 0
    assert float(db) == pytest.approx(20.0)
    # data_range 2: 10·log10(4/0.01) = 26.0206 dB
    assert float(psnr(pred, target, data_range=2.0)) == pytest.approx(10 * math.log10(400))


def test_psnr_averages_per_frame_values_and_caps_perfect_frames():
    target = np.zeros((1, 3, 1, 2, 2))
    pred = target.copy()
    pred[0, 0] += 0.1            # MSE 1e-2 -> 20 dB
    pred[0, 1] += 0.01           # MSE 1e-4 -> 40 dB
    # frame 2 is exact -> capped at 100 dB
    np.testing.assert_allclose(psnr(pred, target, per_frame=True), [[20.0, 40.0, 100.0]])
    assert float(psnr(pred, target)) == pytest.approx((20 + 40 + 100) / 3)
    with np.errstate(all="raise"):                       # no divide-by-zero on MSE = 0
        assert float(psnr(target, target)) == pytest.approx(100.0)


def test_bce_of_known_examples():
    # a frame of 4 pixels at 0.5: log 2 nats each, whatever the target
    pred = np.full((1, 1, 1, 2, 2), 0.5)
    target = np.array([0.0, 1.0, 1.0, 0.3]).reshape(1, 1, 1, 2, 2)
    assert float(bce_per_frame(pred, target)) == pytest.approx(4 * math.log(2))
    # pred [0.9, 0.2], target [1, 0]: −(log 0.9 + log 0.8) = 0.328504
    pred = np.array([0.9, 0.2]).reshape(1, 1, 1, 2)
    target = np.array([1.0, 0.0]).reshape(1, 1, 1, 2)
    assert float(bce_per_frame(pred, target)) == pytest.approx(-(math.log(0.9) + math.log(0.8)))
    # saturated wrong prediction: clipped at 1e-7 -> −log(1e-7) = 16.118 nats
    pred = np.array([0.0]).reshape(1, 1, 1, 1)
    target = np.array([1.0]).reshape(1, 1, 1, 1)
    assert float(bce_per_frame(pred, target)) == pytest.approx(-math.log(1e-7), rel=1e-6)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shapes differ"):
        mse_per_pixel(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 4, 5)))
    with pytest.raises(ValueError, match="expected frames"):
        psnr(np.zeros((4, 4)), np.zeros((4, 4)))


# ----------------------------------------------------------------------------- SSIM
def naive_ssim(x, y, win=11, sigma=1.5, data_range=1.0):
    """Wang et al. (2004) for one (H, W) channel, one window position at a time."""
    u = np.arange(win) - (win - 1) / 2
    g1 = np.exp(-u ** 2 / (2 * sigma ** 2))
    g = np.outer(g1, g1)
    g /= g.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    h, w = x.shape
    vals = []
    for i in range(h - win + 1):
        for j in range(w - win + 1):
            px, py = x[i:i + win, j:j + win], y[i:i + win, j:j + win]
            mx, my = np.sum(g * px), np.sum(g * py)
            vx = np.sum(g * (px - mx) ** 2)
            vy = np.sum(g * (py - my) ** 2)
            cxy = np.sum(g * (px - mx) * (py - my))
            vals.append((2 * mx * my + c1) * (2 * cxy + c2)
                        / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return np.mean(vals)


def _smooth_image(rng, shape):
    """A blob-like image in [0, 1] with some structure for SSIM to see."""
    x = rng.random(shape)
    for axis in (-1, -2):
        x = (x + np.roll(x, 1, axis) + np.roll(x, -1, axis)) / 3
    return x


def test_ssim_of_an_image_with_itself_is_one():
    rng = np.random.default_rng(3)
    x = _smooth_image(rng, (2, 2, 1, 16, 16))
    np.testing.assert_allclose(ssim(x, x), 1.0, rtol=1e-12)
    np.testing.assert_allclose(ssim(x, x, per_frame=True), np.ones((2, 2)), rtol=1e-12)


def test_ssim_of_a_noisy_copy_is_below_one_and_symmetric():
    rng = np.random.default_rng(4)
    x = _smooth_image(rng, (1, 3, 1, 16, 16))
    y = np.clip(x + 0.1 * rng.standard_normal(x.shape), 0, 1)
    s = float(ssim(x, y))
    assert 0.0 < s < 1.0
    np.testing.assert_allclose(ssim(y, x), s, rtol=1e-12)
    noisier = np.clip(x + 0.3 * rng.standard_normal(x.shape), 0, 1)
    assert float(ssim(x, noisier)) < s


def test_ssim_matches_the_window_by_window_definition():
    rng = np.random.default_rng(5)
    x = rng.random((2, 2, 14, 13))           # (N, C, H, W), two channels
    y = np.clip(x + 0.2 * rng.standard_normal(x.shape), 0, 1)
    expected = np.mean([naive_ssim(x[n, c], y[n, c]) for n in range(2) for c in range(2)])
    np.testing.assert_allclose(ssim(x, y), expected, rtol=1e-10)
    # a smaller window and another data range
    expected = np.mean([naive_ssim(x[n, c], y[n, c], win=7, sigma=1.0, data_range=2.0)
                        for n in range(2) for c in range(2)])
    np.testing.assert_allclose(ssim(x, y, win_size=7, sigma=1.0, data_range=2.0),
                               expected, rtol=1e-10)


def test_ssim_float32_input_gives_float64_result():
    rng = np.random.default_rng(6)
    x = rng.random((1, 1, 12, 12)).astype(np.float32)
    y = rng.random((1, 1, 12, 12)).astype(np.float32)
    s = ssim(x, y)
    assert s.dtype == np.float64
    np.testing.assert_allclose(s, ssim(x.astype(np.float64), y.astype(np.float64)), rtol=1e-12)


def test_ssim_window_larger_than_the_image_raises():
    x = np.zeros((1, 1, 8, 10))
    with pytest.raises(ValueError, match="smaller than the 11×11 window.*at most 7"):
        ssim(x, x)
    with pytest.raises(ValueError, match="odd"):
        ssim(x, x, win_size=4)
    assert float(ssim(x, x, win_size=7)) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- flow
def test_endpoint_error_of_a_constant_error():
    flow_true = np.random.default_rng(7).standard_normal((2, 3, 2, 4, 5))
    flow_pred = flow_true.copy()
    flow_pred[:, :, 0] += 3.0                 # x off by 3, y off by 4 -> EPE 5 everywhere
    flow_pred[:, :, 1] -= 4.0
    epe = endpoint_error(flow_pred, flow_true)
    assert isinstance(epe, np.ndarray) and epe.ndim == 0
    assert float(epe) == pytest.approx(5.0)


def test_endpoint_error_with_a_mask():
    flow_true = np.zeros((1, 2, 1, 2))        # (N, 2, H, W) with 2 pixels
    flow_pred = np.array([3.0, 0.0, 4.0, 1.0]).reshape(1, 2, 1, 2)   # EPE: 5 and 1
    assert float(endpoint_error(flow_pred, flow_true)) == pytest.approx(3.0)
    mask = np.array([[[True, False]]])        # (N, H, W)
    assert float(endpoint_error(flow_pred, flow_true, mask)) == pytest.approx(5.0)
    mask = np.array([[False, True]])          # broadcasts to (N, H, W)
    assert float(endpoint_error(flow_pred, flow_true, mask)) == pytest.approx(1.0)
    assert np.isnan(endpoint_error(flow_pred, flow_true, np.zeros((1, 1, 2), dtype=bool)))
    with pytest.raises(ValueError, match="does not broadcast"):
        endpoint_error(flow_pred, flow_true, np.ones((1, 1, 1, 2), dtype=bool))
    with pytest.raises(ValueError, match=r"\(\.\.\., 2, H, W\)"):
        endpoint_error(np.zeros((1, 3, 2, 2)), np.zeros((1, 3, 2, 2)))


def test_flow_accuracy_thresholds():
    # four pixels with EPE 0.2, 0.7, 2, 5 (errors along x only)
    flow_true = np.zeros((1, 2, 1, 4))
    flow_pred = np.zeros((1, 2, 1, 4))
    flow_pred[0, 0, 0] = [0.2, -0.7, 2.0, 5.0]
    acc = flow_accuracy(flow_pred, flow_true)
    np.testing.assert_allclose(acc, [0.25, 0.5, 0.75])          # < 0.5, < 1, < 3
    mask = np.array([[[False, True, True, True]]])
    np.testing.assert_allclose(flow_accuracy(flow_pred, flow_true, mask, thresholds=(1, 10)),
                               [1 / 3, 1.0])


def test_upsample_flow_scales_shape_and_values():
    flow = np.arange(2 * 2 * 3, dtype=np.float32).reshape(1, 2, 2, 3)   # (N, 2, h, w)
    up = upsample_flow(flow, 2)
    assert up.shape == (1, 2, 4, 6) and up.dtype == np.float32
    # nearest: fine pixel (Y, X) takes coarse cell (Y // 2, X // 2), displacement doubled
    np.testing.assert_array_equal(up, 2 * flow.repeat(2, axis=-2).repeat(2, axis=-1))

    # a uniform translation of (1.5, -0.5) memory pixels is (3, -1) image pixels everywhere
    const = np.empty((2, 3, 2, 4, 4))
    const[:, :, 0], const[:, :, 1] = 1.5, -0.5
    for mode in ("nearest", "bilinear"):
        up = upsample_flow(const, 2, mode=mode)
        assert up.shape == (2, 3, 2, 8, 8)
        np.testing.assert_allclose(up[:, :, 0], 3.0)
        np.testing.assert_allclose(up[:, :, 1], -1.0)


def test_upsample_flow_bilinear_uses_pixel_centres():
    # coarse x-component f(x) = x; fine pixel X reads coarse (X + 0.5)/2 − 0.5, clamped,
    # then ×2: X = 0..7 -> 2·[0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3] ... clamped ends
    flow = np.zeros((2, 1, 4))
    flow[0, 0] = [0.0, 1.0, 2.0, 3.0]
    up = upsample_flow(flow, 2, mode="bilinear")
    expected = 2 * np.clip((np.arange(8) + 0.5) / 2 - 0.5, 0, 3)
    np.testing.assert_allclose(up[0, 0], expected)
    np.testing.assert_allclose(up[0, 1], expected)
    np.testing.assert_allclose(up[1], 0.0)
    with pytest.raises(ValueError, match="factor"):
        upsample_flow(flow, 1.5)
    with pytest.raises(ValueError, match="mode"):
        upsample_flow(flow, 2, mode="cubic")


# ----------------------------------------------------------------------------- IoU
def test_iou_of_known_masks():
    a = np.array([1, 1, 1, 0], dtype=bool)
    b = np.array([0, 1, 1, 1], dtype=bool)   # 2 shared, 4 in the union
    score = iou(a, b)
    assert isinstance(score, np.ndarray) and score.ndim == 0
    assert float(score) == pytest.approx(0.5)
    a = np.array([1, 1, 0, 0], dtype=bool)
    b = np.array([0, 1, 1, 0], dtype=bool)   # 1 shared, 3 in the union
    assert float(iou(a, b)) == pytest.approx(1 / 3)
    assert float(iou(a, a)) == pytest.approx(1.0)
    assert float(iou(a, ~a)) == pytest.approx(0.0)
    empty = np.zeros(4, dtype=bool)
    assert float(iou(empty, empty)) == 1.0   # both empty: defined as perfect agreement


def test_iou_per_clip_averages_clip_scores():
    a = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
    b = np.array([[0, 1, 1, 0], [0, 0, 0, 0]], dtype=bool)
    # clip 0: 1/3; clip 1: both empty -> 1; mean 2/3. Pooled: 1 shared / 3 in the union.
    assert float(iou(a, b, per_clip=True)) == pytest.approx(2 / 3)
    assert float(iou(a, b)) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="shapes differ"):
        iou(a, b[:1])


# ----------------------------------------------------------------------------- flow quality
def _flows(seed=0, n=2, s=5, h=8, w=8):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(n, s, 2, h, w))
    mask = rng.random((n, s, h, w)) > 0.3
    return g, mask


def test_flow_quality_of_the_true_flow_half_of_it_and_a_quarter_turn():
    g, mask = _flows()
    q = M.flow_quality(g, g, mask)
    assert q["epe_t2"] == 0.0 and q["flow_gain_t2"] == pytest.approx(1.0, abs=1e-12)
    assert q["angular_error_t2"] == pytest.approx(0.0, abs=1e-5)
    np.testing.assert_array_equal(q["epe_per_step"], np.zeros(5))
    # zero-flow EPE: the mean length of the true flow over the object pixels of t >= 2
    length = np.hypot(g[:, 2:, 0], g[:, 2:, 1])
    assert q["zero_flow_epe_t2"] == pytest.approx(length[mask[:, 2:]].mean(), rel=1e-12)
    half = M.flow_quality(0.5 * g, g, mask)
    assert half["flow_gain_t2"] == pytest.approx(0.5, rel=1e-12)
    assert half["epe_t2"] == pytest.approx(0.5 * q["zero_flow_epe_t2"], rel=1e-12)
    assert half["angular_error_t2"] == pytest.approx(0.0, abs=1e-5)
    turned = np.stack([-g[:, :, 1], g[:, :, 0]], axis=2)          # 90° counter-clockwise
    q90 = M.flow_quality(turned, g, mask)
    assert q90["angular_error_t2"] == pytest.approx(90.0, abs=1e-9)
    assert q90["flow_gain_t2"] == pytest.approx(0.0, abs=1e-12)
    opposite = M.flow_quality(-g, g, mask)
    assert opposite["angular_error_t2"] == pytest.approx(180.0, abs=1e-5)
    assert opposite["flow_gain_t2"] == pytest.approx(-1.0, rel=1e-12)


def test_flow_quality_counts_only_steps_from_t_min_and_object_pixels():
    g, mask = _flows(seed=1)
    wrong = g.copy()
    wrong[:, :2] += 5.0                    # steps 0 and 1 are not in the *_t2 figures
    wrong[~np.broadcast_to(mask[:, :, None], g.shape)] = 100.0   # nor background pixels
    q = M.flow_quality(wrong, g, mask)
    assert q["epe_t2"] == pytest.approx(0.0, abs=1e-12)
    assert q["flow_gain_t2"] == pytest.approx(1.0, abs=1e-12)
    assert q["epe_per_step"][0] == pytest.approx(np.sqrt(50.0), rel=1e-12)
    # zero predicted flow counts 90° (no direction), never 0°
    assert M.flow_quality(0 * g, g, mask)["angular_error_t2"] == pytest.approx(90.0)


def test_flow_quality_refuses_bad_shapes():
    g, mask = _flows()
    with pytest.raises(ValueError, match="N, S, 2, H, W"):
        M.flow_quality(g[:, :, :1], g[:, :, :1], mask)
    with pytest.raises(ValueError, match="t_min"):
        M.flow_quality(g[:, :2], g[:, :2], mask[:, :2])
