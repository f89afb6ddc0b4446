"""Evaluation of video prediction: pixel errors, PSNR, SSIM, cross-entropy, optical flow
(end-point error) and masks (IoU). Every function runs on NumPy and CuPy alike, with these conventions:

* A *frame* is the last three axes ``(C, H, W)``; every leading axis counts frames. Predictions and
  targets are ``(N, T, C, H, W)`` or ``(N, C, H, W)`` (a single ``(C, H, W)`` frame also works),
  pixels in ``[0, data_range]`` (``[0, 1]`` by default). For the model, compare
  ``preds (N, T-1, C, H, W)`` with ``clip[:, 1:]``.
* Inputs are promoted to float64 before any arithmetic (float32 round-off in ``E[x²] − E[x]²``
  visibly biases SSIM).
* Results are float64 0-d arrays (or, for ``per_frame=True`` or several thresholds, small arrays)
  on the inputs' device: call ``float()`` at the edge (a device sync on CuPy).
* Per-frame metrics are averaged with equal weight per frame.
* Pixel errors "per pixel" are plain means; "per frame" sums a frame's C·H·W pixels, as the tables of
  OpenSTL and of most video-prediction papers report MSE/MAE.
"""
from __future__ import annotations

import math

from .backend import asnumpy, get_array_module

PSNR_MAX_DB = 100.0       # PSNR of a frame predicted exactly (MSE = 0)
BCE_EPS = 1e-7            # predictions are clipped to [BCE_EPS, 1 − BCE_EPS]


# ----------------------------------------------------------------------------- helpers
def _check_pair(name, pred, target):
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"{name}: pred and target shapes differ, "
                         f"{tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.ndim < 3:
        raise ValueError(f"{name}: expected frames (..., C, H, W), got shape {tuple(pred.shape)}")


def _float64(xp, a):
    return a.astype(xp.float64, copy=False)


def _diff(name, pred, target):
    """``pred − target`` in float64, once their shapes are checked."""
    _check_pair(name, pred, target)
    xp = get_array_module(pred, target)
    return _float64(xp, pred) - _float64(xp, target)


def _frame_mean(values, per_frame):
    """``values`` has the frames' leading shape; average it unless asked for each frame."""
    return values if per_frame else _as_0d(values.mean())


def _as_0d(value):
    """NumPy reductions return NumPy scalars, CuPy ones 0-d arrays: make both 0-d arrays."""
    return get_array_module(value).asarray(value)


# ----------------------------------------------------------------------------- pixel errors
def mse_per_pixel(pred, target, per_frame=False):
    """Mean squared error over every pixel: ``mean((ŷ − y)²)``.

    Args:
        pred, target: ``(..., C, H, W)`` of the same shape.
        per_frame: return one value per frame (shape ``pred.shape[:-3]``) instead of the mean.
    """
    err = _diff("mse_per_pixel", pred, target) ** 2
    return _frame_mean(err.mean(axis=(-3, -2, -1)), per_frame)


def mse_per_frame(pred, target, per_frame=False):
    """Squared error summed over a frame's C·H·W pixels (mse_per_pixel · C·H·W), averaged over frames."""
    err = _diff("mse_per_frame", pred, target) ** 2
    return _frame_mean(err.sum(axis=(-3, -2, -1)), per_frame)


def mae_per_pixel(pred, target, per_frame=False):
    """Mean absolute error over every pixel: ``mean(|ŷ − y|)``."""
    err = abs(_diff("mae_per_pixel", pred, target))
    return _frame_mean(err.mean(axis=(-3, -2, -1)), per_frame)


def mae_per_frame(pred, target, per_frame=False):
    """Absolute error summed over a frame's C·H·W pixels (mae_per_pixel · C·H·W), averaged over frames."""
    err = abs(_diff("mae_per_frame", pred, target))
    return _frame_mean(err.sum(axis=(-3, -2, -1)), per_frame)


def psnr(pred, target, data_range=1.0, max_db=PSNR_MAX_DB, per_frame=False):
    """Peak signal-to-noise ratio in dB, computed per frame and then averaged over frames.

        PSNR_frame = 10 · log10(data_range² / MSE_frame),  MSE_frame = mean over (C, H, W)
        PSNR = mean over frames of min(PSNR_frame, max_db)

    The mean of per-frame PSNRs (as OpenSTL reports it), not the PSNR of the batch MSE;
    the cap keeps an exact frame (MSE = 0) from making the mean infinite.
    """
    if not data_range > 0:
        raise ValueError(f"psnr: data_range must be > 0, got {data_range}")
    mse = mse_per_pixel(pred, target, per_frame=True)
    xp = get_array_module(mse)
    mse_floor = data_range ** 2 * 10.0 ** (-max_db / 10.0)   # the MSE whose PSNR is max_db
    db = 10.0 * xp.log10(data_range ** 2 / xp.maximum(mse, mse_floor))
    return _frame_mean(db, per_frame)


def bce_per_frame(pred, target, per_frame=False):
    """Binary cross-entropy in nats, summed over a frame's pixels, averaged over frames.

        BCE_frame = −Σ_{c,y,x} [ y·log ŷ + (1 − y)·log(1 − ŷ) ],  ŷ clipped to [1e-7, 1 − 1e-7]

    Targets may be soft (any value in [0, 1]).
    """
    _check_pair("bce_per_frame", pred, target)
    xp = get_array_module(pred, target)
    p = xp.clip(_float64(xp, pred), BCE_EPS, 1.0 - BCE_EPS)
    y = _float64(xp, target)
    nll = -(y * xp.log(p) + (1.0 - y) * xp.log(1.0 - p))
    return _frame_mean(nll.sum(axis=(-3, -2, -1)), per_frame)


# ----------------------------------------------------------------------------- SSIM
def _gaussian_weights(win_size, sigma):
    """1-D Gaussian window as Python floats, summing to 1 (MATLAB ``fspecial('gaussian')``)."""
    centre = (win_size - 1) / 2.0
    w = [math.exp(-((u - centre) ** 2) / (2.0 * sigma ** 2)) for u in range(win_size)]
    total = sum(w)
    return [wi / total for wi in w]


def _filter_valid(a, weights):
    """Separable filtering of the last two axes, 'valid' region only.

    out[..., y, x] = Σ_u Σ_v w[u] w[v] a[..., y + u, x + v],   out (..., H − k + 1, W − k + 1)
    """
    k = len(weights)
    ho, wo = a.shape[-2] - k + 1, a.shape[-1] - k + 1
    rows = weights[0] * a[..., 0:ho, :]
    for u in range(1, k):
        rows = rows + weights[u] * a[..., u:u + ho, :]
    out = weights[0] * rows[..., :, 0:wo]
    for v in range(1, k):
        out = out + weights[v] * rows[..., :, v:v + wo]
    return out


def ssim(pred, target, data_range=1.0, win_size=11, sigma=1.5, per_frame=False):
    """Structural similarity (Wang, Bovik, Sheikh & Simoncelli 2004), Gaussian window.

    Local statistics under a normalised win_size×win_size Gaussian window g (σ = 1.5):

        μx = g * x,  σx² = g * x² − μx²,  σxy = g * (x·y) − μx·μy   (same for y)
        SSIM(y, x) = (2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))
        C1 = (0.01·L)², C2 = (0.03·L)², L = data_range

    for each channel, averaged over the map, the channels and the frames, on the
    **'valid'** region only, as the authors' ``ssim_index.m`` (and scikit-image's
    ``structural_similarity(gaussian_weights=True, use_sample_covariance=False)``).

    Args:
        pred, target: ``(..., C, H, W)``, same shape, with H and W at least win_size.
        win_size: odd window size (11 in the paper); sigma: the Gaussian's standard deviation in px.
        per_frame: return one value per frame instead of the mean.
    Raises:
        ValueError: frames smaller than the window (pass a smaller odd ``win_size``).
    """
    _check_pair("ssim", pred, target)
    if win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"ssim: win_size must be a positive odd integer, got {win_size}")
    if not data_range > 0:
        raise ValueError(f"ssim: data_range must be > 0, got {data_range}")
    h, w = pred.shape[-2], pred.shape[-1]
    if h < win_size or w < win_size:
        raise ValueError(f"ssim: frames of {h}×{w} pixels are smaller than the {win_size}×{win_size} "
                         f"window; pass a smaller odd win_size (at most {min(h, w) - (1 - min(h, w) % 2)})")
    xp = get_array_module(pred, target)
    x, y = _float64(xp, pred), _float64(xp, target)
    g = _gaussian_weights(win_size, sigma)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    var_x = _filter_valid(x * x, g) - mu_x * mu_x
    var_y = _filter_valid(y * y, g) - mu_y * mu_y
    cov_xy = _filter_valid(x * y, g) - mu_x * mu_y
    ssim_map = ((2.0 * mu_x * mu_y + c1) * (2.0 * cov_xy + c2)
                / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)))
    return _frame_mean(ssim_map.mean(axis=(-3, -2, -1)), per_frame)


# ----------------------------------------------------------------------------- flow
def _epe_map(name, flow_pred, flow_true):
    """‖pred − true‖₂ at every pixel: flows (..., 2, H, W) -> (..., H, W), float64."""
    d = _diff(name, flow_pred, flow_true)
    if d.shape[-3] != 2:
        raise ValueError(f"{name}: flows must be (..., 2, H, W) with channel 0 = x and "
                         f"1 = y, got shape {tuple(flow_pred.shape)}")
    return get_array_module(d).sqrt(d[..., 0, :, :] ** 2 + d[..., 1, :, :] ** 2)


def _broadcast_mask(name, mask, shape, xp):
    m = xp.asarray(mask).astype(bool)
    try:
        return xp.broadcast_to(m, shape)
    except ValueError:
        raise ValueError(f"{name}: mask of shape {tuple(m.shape)} does not broadcast to the "
                         f"flows' pixel shape {tuple(shape)} (drop a channel axis of size 1 "
                         f"first, e.g. mask[:, :, 0])") from None


def endpoint_error(flow_pred, flow_true, mask=None):
    """Average end-point error, ``mean over the masked pixels of ‖pred − true‖₂``; NaN if none is masked.

    Args:
        flow_pred, flow_true: ``(..., 2, H, W)`` in the same pixel units.
        mask: None (every pixel) or broadcastable to ``(..., H, W)`` (non-zero = selected).
    """
    epe = _epe_map("endpoint_error", flow_pred, flow_true)
    if mask is None:
        return _as_0d(epe.mean())
    xp = get_array_module(epe)
    m = _broadcast_mask("endpoint_error", mask, epe.shape, xp)
    count = m.sum()
    total = xp.where(m, epe, 0.0).sum()
    return xp.where(count > 0, total / xp.maximum(count, 1), xp.nan)


def flow_accuracy(flow_pred, flow_true, mask=None, thresholds=(0.5, 1.0, 3.0)):
    """Share of the masked pixels whose end-point error is below each threshold (strict <).

    Arguments as for :func:`endpoint_error`; returns ``(len(thresholds),)`` in [0, 1]
    (NaN where the mask selects no pixel).
    """
    epe = _epe_map("flow_accuracy", flow_pred, flow_true)
    xp = get_array_module(epe)
    m = (xp.ones(epe.shape, dtype=bool) if mask is None
         else _broadcast_mask("flow_accuracy", mask, epe.shape, xp))
    count = m.sum()
    hits = xp.stack([(m & (epe < float(thr))).sum() for thr in thresholds])
    return xp.where(count > 0, hits / xp.maximum(count, 1), xp.nan)


def upsample_flow(flow, factor, mode="nearest"):
    """Bring a flow from a coarse grid to a ``factor``-times finer one, values included.

    A flow is measured in pixels of its own grid, so the field is resized AND multiplied by ``factor``:

        out[..., c, Y, X] = factor · flow_resized[..., c, Y, X]

    Args:
        flow: ``(..., 2, h, w)``; factor: integer ≥ 1.
        mode: ``"nearest"`` (like ``upsample2``), or ``"bilinear"`` with pixel-centre alignment: fine pixel Y
            reads coarse ``(Y + 0.5)/factor − 0.5`` clamped to [0, h − 1] (PyTorch's ``align_corners=False``).
    Returns:
        ``(..., 2, factor·h, factor·w)``, flow's dtype.
    """
    if int(factor) != factor or factor < 1:
        raise ValueError(f"upsample_flow: factor must be an integer >= 1, got {factor}")
    if flow.ndim < 3 or flow.shape[-3] != 2:
        raise ValueError(f"upsample_flow: flow must be (..., 2, h, w), got shape {tuple(flow.shape)}")
    factor = int(factor)
    xp = get_array_module(flow)
    if mode == "nearest":
        out = xp.repeat(xp.repeat(flow, factor, axis=-2), factor, axis=-1)
    elif mode == "bilinear":
        out = _resize_linear_axis(flow, factor, axis=-2)
        out = _resize_linear_axis(out, factor, axis=-1)
    else:
        raise ValueError(f"upsample_flow: mode must be 'nearest' or 'bilinear', got {mode!r}")
    return out * factor


def _resize_linear_axis(a, factor, axis):
    """Linear interpolation along one axis to ``factor`` times its length (pixel centres)."""
    xp = get_array_module(a)
    n = a.shape[axis]
    src = xp.clip((xp.arange(n * factor, dtype=xp.float64) + 0.5) / factor - 0.5, 0.0, n - 1)
    i0 = xp.floor(src).astype(xp.int64)
    i1 = xp.minimum(i0 + 1, n - 1)
    w1 = (src - i0).astype(a.dtype)
    shape = [1] * a.ndim
    shape[axis] = n * factor
    w1 = w1.reshape(shape)
    return xp.take(a, i0, axis=axis) * (1 - w1) + xp.take(a, i1, axis=axis) * w1


# ----------------------------------------------------------------------------- masks
def iou(mask_pred, mask_true, per_clip=False):
    """Intersection over union of boolean masks, ``|A ∧ B| / |A ∨ B|`` (1.0 for two empty masks).

    Args:
        mask_pred, mask_true: same shape, boolean (other dtypes: non-zero = inside).
        per_clip: False pools every pixel into one IoU; True averages one IoU per entry
            of axis 0 (a small object counts as much as a large one).
    """
    if tuple(mask_pred.shape) != tuple(mask_true.shape):
        raise ValueError(f"iou: mask shapes differ, {tuple(mask_pred.shape)} vs {tuple(mask_true.shape)}")
    xp = get_array_module(mask_pred, mask_true)
    a = xp.asarray(mask_pred).astype(bool)
    b = xp.asarray(mask_true).astype(bool)
    if per_clip and a.ndim < 1:
        raise ValueError("iou: per_clip needs masks with a clip axis 0")
    axes = tuple(range(1, a.ndim)) if per_clip else None
    inter = (a & b).sum(axis=axes).astype(xp.float64)
    union = (a | b).sum(axis=axes).astype(xp.float64)
    score = xp.where(union > 0, inter / xp.maximum(union, 1.0), 1.0)
    return _as_0d(score.mean())


# ----------------------------------------------------------------------------- flow quality
FLOW_T_MIN = 2     # flow steps t >= 2: the memory has seen at least three frames


def flow_quality(flow_pred, flow_true, mask, t_min=FLOW_T_MIN):
    """How close a predicted flow is to the true motion, step by step and pooled.

    Flows in IMAGE pixels, indexed like ``STVAE.predict``'s flows (step t predicts frame t+1). Over the
    masked pixels p of the steps t ≥ ``t_min`` (f the predicted, g the true flow at p):

        epe_t2            = mean_p ‖f − g‖₂
        zero_flow_epe_t2  = mean_p ‖g‖₂                 (the EPE of predicting no motion)
        flow_gain_t2      = Σ_p ⟨f, g⟩ / Σ_p ⟨g, g⟩       (1: the right speed; 0.5: half of it)
        angular_error_t2  = mean over p with |g| > 0 of the angle between f and g, in
                            degrees; a pixel where f = 0 counts as 90° (no direction)

    and ``epe_per_step`` ((S,) NumPy), for flows (N, S, 2, H, W), S > t_min, and mask
    (N, S, H, W) (object pixels of frame t+1). Python floats, NaN where no pixel counts.
    """
    xp = get_array_module(flow_pred, flow_true)
    if flow_pred.ndim != 5 or flow_pred.shape[2] != 2:
        raise ValueError(f"flow_quality: flows must be (N, S, 2, H, W), got {tuple(flow_pred.shape)}")
    _check_pair("flow_quality", flow_pred, flow_true)
    n, s, _, h, w = flow_pred.shape
    if s <= t_min:
        raise ValueError(f"flow_quality: needs more than t_min = {t_min} flow steps, got S = {s}")
    m = _broadcast_mask("flow_quality", mask, (n, s, h, w), xp)
    f, g = _float64(xp, flow_pred), _float64(xp, flow_true)
    epe = _epe_map("flow_quality", f, g)                                  # (N, S, H, W)
    count = m.sum(axis=(0, 2, 3))
    per_step = xp.where(m, epe, 0.0).sum(axis=(0, 2, 3)) / xp.maximum(count, 1)
    per_step = xp.where(count > 0, per_step, xp.nan)
    late, f, g, epe = m[:, t_min:], f[:, t_min:], g[:, t_min:], epe[:, t_min:]
    dot = f[:, :, 0] * g[:, :, 0] + f[:, :, 1] * g[:, :, 1]
    gg = g[:, :, 0] ** 2 + g[:, :, 1] ** 2
    ff = f[:, :, 0] ** 2 + f[:, :, 1] ** 2
    moving = late & (gg > 0)
    cos = xp.where(ff > 0, dot / xp.sqrt(xp.maximum(ff * gg, 1e-300)), 0.0)
    angle = xp.degrees(xp.arccos(xp.clip(cos, -1.0, 1.0)))

    def pooled(values, sel):
        k = int(sel.sum())
        return float(xp.where(sel, values, 0.0).sum() / k) if k else math.nan

    sum_gg = float(xp.where(late, gg, 0.0).sum())
    return {
        "epe_per_step": asnumpy(per_step),
        "epe_t2": pooled(epe, late),
        "zero_flow_epe_t2": pooled(xp.sqrt(gg), late),
        "flow_gain_t2": float(xp.where(late, dot, 0.0).sum()) / sum_gg if sum_gg > 0 else math.nan,
        "angular_error_t2": pooled(angle, moving),
    }


__all__ = ["mse_per_pixel", "mse_per_frame", "mae_per_pixel", "mae_per_frame", "psnr", "ssim",
           "bce_per_frame", "endpoint_error", "flow_accuracy", "upsample_flow", "iou", "flow_quality"]
