"""The terms of the training loss: reconstruction (MSE), flow smoothness (Huber) and the
optional photometric term.

    L_t = mean((ŷ_t − x_{t+1})²) + w_H · H(∇T_t) + w_P · P_t

This module computes each term and its gradient, and the errors the photometric term can
use (Charbonnier, Geman–McClure, the weighted MSE); the weights w_H, w_P and the average
over time steps are applied by the model. Losses are 0-d arrays of the input's dtype and
device (no float(): docs/DESIGN.md section 2); backward passes never modify their inputs.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .backend import get_array_module
from .fast import kernels
from .sampler import BilinearCache, bilinear_backward, bilinear_forward, flow_to_grid

DEFAULT_HUBER_DELTA = 1e-3   # the paper's δ, in flow pixels (docs/DESIGN.md)


# ----------------------------------------------------------------------------- MSE
class MSECache(NamedTuple):
    diff: object     # pred − target, pred's shape


def mse_forward(pred, target):
    """Mean squared error over every element.

    loss = (1/M) Σ_i (pred_i − target_i)²,   M = pred.size

    pred, target: float arrays of one shape (any) and dtype. Returns the loss (0-d array,
    pred's dtype) and an :class:`MSECache`.
    """
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"mse: shape mismatch, pred {tuple(pred.shape)} vs target {tuple(target.shape)}")
    if pred.dtype != target.dtype:
        raise ValueError(f"mse: dtypes differ (pred {pred.dtype}, target {target.dtype})")
    if pred.dtype.kind != "f":
        raise ValueError(f"mse: expected floating-point arrays, got {pred.dtype}")
    if pred.size == 0:
        raise ValueError("mse: empty input")
    xp = get_array_module(pred, target)
    diff = pred - target
    loss = xp.asarray(xp.mean(diff * diff), dtype=pred.dtype)   # NumPy's mean gives a scalar, not a 0-d array
    return loss, MSECache(diff)


def mse_backward(dloss, cache):
    """dpred = dloss · 2 (pred − target) / M, pred's shape and dtype; dloss is a scalar or
    0-d array, the upstream gradient of the loss (1 at the top)."""
    diff = cache.diff
    xp = get_array_module(diff)
    scale = xp.asarray(dloss, dtype=diff.dtype) * (2.0 / diff.size)
    return scale * diff


# ----------------------------------------------------------------------------- weighted MSE
def _shares(weight):
    """w / Σw, each element's share of the weighted mean (all 0 when Σw = 0)."""
    xp = get_array_module(weight)
    return weight / xp.maximum(xp.sum(weight), xp.finfo(weight.dtype).tiny)


class WeightedMSECache(NamedTuple):
    diff: object     # pred − target
    weight: object   # w / Σw, pred's shape


def weighted_mse_forward(pred, target, weight):
    """Squared error averaged with per-element weights.

    loss = Σ_i w_i (pred_i − target_i)² / Σ_i w_i

    The weights are constants (not differentiated; the photometric term's are the next
    frame, docs/DESIGN.md section 3) and must be ≥ 0. All-zero weights give loss 0 and a
    zero gradient. pred, target, weight: float arrays of one shape and dtype. Returns the
    loss (0-d array, pred's dtype) and a :class:`WeightedMSECache`.
    """
    shapes = {tuple(a.shape) for a in (pred, target, weight)}
    if len(shapes) != 1:
        raise ValueError(f"weighted_mse: shape mismatch, pred {tuple(pred.shape)}, target "
                         f"{tuple(target.shape)}, weight {tuple(weight.shape)}")
    if pred.dtype.kind != "f" or not pred.dtype == target.dtype == weight.dtype:
        raise ValueError(f"weighted_mse: expected float arrays of one dtype, got {pred.dtype}, "
                         f"{target.dtype} and {weight.dtype}")
    xp = get_array_module(pred)
    diff = pred - target
    weight = _shares(weight)
    loss = xp.asarray(xp.sum(weight * diff * diff), dtype=pred.dtype)
    return loss, WeightedMSECache(diff, weight)


def weighted_mse_backward(dloss, cache):
    """dpred = dloss · 2 w (pred − target) / Σw."""
    xp = get_array_module(cache.diff)
    return xp.asarray(dloss, dtype=cache.diff.dtype) * 2 * cache.weight * cache.diff


# ----------------------------------------------------------------------------- Geman–McClure
class GemanMcClureCache(NamedTuple):
    diff: object     # pred − target
    denom: object    # diff² + C²
    weight: object   # w / Σw (or 1/M for the plain mean), pred's shape or a 0-d array
    c2: object       # C², pred's dtype


def geman_mcclure_forward(pred, target, scale=0.1, weight=None):
    """Geman–McClure error, a robust error that stops pulling on large residuals.

    ρ(d) = d² / (d² + C²),   loss = Σ_i w_i ρ(d_i) / Σ_i w_i   (w = 1: the plain mean)

    ≈ d²/C² for |d| ≪ C and → 1 for |d| ≫ C: a residual of several C costs about as much
    as one of many, so where no single flow explains a pixel (two digits overlapping)
    the flow is free to follow one of them instead of hedging between the two.
    The weights, if given, are constants (as in :func:`weighted_mse_forward`).

    pred, target (and weight, ≥ 0, or None): float arrays of one shape and dtype; scale:
    C > 0, in pred's units (frames in [0, 1]: 0.1). Returns the loss (0-d array, pred's
    dtype) and a :class:`GemanMcClureCache`.
    """
    if tuple(pred.shape) != tuple(target.shape) or (weight is not None and tuple(weight.shape) != tuple(pred.shape)):
        raise ValueError(f"geman_mcclure: shape mismatch, pred {tuple(pred.shape)}, target {tuple(target.shape)}"
                         + ("" if weight is None else f", weight {tuple(weight.shape)}"))
    if pred.dtype.kind != "f" or pred.dtype != target.dtype or (weight is not None and weight.dtype != pred.dtype):
        raise ValueError(f"geman_mcclure: expected float arrays of one dtype, got {pred.dtype}, {target.dtype}"
                         + ("" if weight is None else f" and {weight.dtype}"))
    if not float(scale) > 0:
        raise ValueError(f"geman_mcclure: scale must be positive, got {scale}")
    xp = get_array_module(pred)
    c2 = pred.dtype.type(float(scale) ** 2)
    diff = pred - target
    denom = diff * diff + c2
    rho = diff * diff / denom
    weight = xp.asarray(1.0 / diff.size, dtype=pred.dtype) if weight is None else _shares(weight)
    loss = xp.asarray(xp.sum(weight * rho), dtype=pred.dtype)
    return loss, GemanMcClureCache(diff, denom, weight, c2)


def geman_mcclure_backward(dloss, cache):
    """dpred = dloss · w/Σw · 2 d C² / (d² + C²)²."""
    xp = get_array_module(cache.diff)
    drho = 2 * cache.diff * cache.c2 / cache.denom ** 2
    return xp.asarray(dloss, dtype=cache.diff.dtype) * cache.weight * drho


# ----------------------------------------------------------------------------- Charbonnier
class CharbonnierCache(NamedTuple):
    diff: object     # pred − target
    root: object     # √(diff² + ε²)


def charbonnier_forward(pred, target, eps=1e-2):
    """Charbonnier (smooth L1) error, a robust alternative to the MSE.

    loss = (1/M) Σ_i (√((pred_i − target_i)² + ε²) − ε),   M = pred.size

    Near 0 it is ≈ d²/(2ε) (quadratic), far from it ≈ |d| (linear): large errors pull
    with a bounded force, so an uncertain prediction is not pushed towards the mean of
    its alternatives as hard as under L2. pred, target: float arrays of one shape and
    dtype; eps: ε > 0. Returns the loss (0-d array, pred's dtype) and a :class:`CharbonnierCache`.
    """
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"charbonnier: shape mismatch, pred {tuple(pred.shape)} vs target {tuple(target.shape)}")
    if pred.dtype != target.dtype or pred.dtype.kind != "f":
        raise ValueError(f"charbonnier: expected float arrays of one dtype, got {pred.dtype} and {target.dtype}")
    if not float(eps) > 0:
        raise ValueError(f"charbonnier: eps must be positive, got {eps}")
    xp = get_array_module(pred)
    diff = pred - target
    root = xp.sqrt(diff * diff + pred.dtype.type(eps) ** 2)
    loss = xp.asarray(xp.mean(root) - eps, dtype=pred.dtype)
    return loss, CharbonnierCache(diff, root)


def charbonnier_backward(dloss, cache):
    """dpred = dloss · (pred − target) / √((pred − target)² + ε²) / M."""
    xp = get_array_module(cache.diff)
    scale = xp.asarray(dloss, dtype=cache.diff.dtype) / cache.diff.size
    return scale * cache.diff / cache.root


# ----------------------------------------------------------------------------- Huber smoothness
def _huber(a, delta):
    """H_δ(a) = a²/2 for |a| ≤ δ, δ(|a| − δ/2) otherwise (quadratic near 0, linear beyond)."""
    xp = get_array_module(a)
    abs_a = xp.abs(a)
    return xp.where(abs_a <= delta, 0.5 * a * a, delta * (abs_a - 0.5 * delta))


def huber_differences(t_hi, t_lo, delta, fused=True):
    """Differences of neighbouring flow values, their Huber penalty and its gradient:

        D = t_hi − t_lo
        H = H_δ(D) = D²/2 if |D| ≤ δ else δ(|D| − δ/2)
        grad = H_δ'(D) / n(D) = clip(D, −δ, δ) / D.size

    t_hi, t_lo: arrays of one shape (two shifted views of the flow); delta: δ > 0, a Python
    float. Returns H and grad, t_hi's shape and dtype. On CuPy: one ``stvae_huber_differences`` kernel.
    """
    if fused and kernels.wanted(t_hi):   # CuPy: the lines below as one fused kernel (fast/kernels.py)
        return kernels.launch("huber_differences", huber_differences, t_hi, t_lo, delta)
    xp = get_array_module(t_hi)
    d = t_hi - t_lo
    # H_δ'(a) = a inside, δ·sign(a) outside: that is exactly clip(a, −δ, δ)
    return _huber(d, delta), xp.clip(d, -delta, delta) / d.size


def huber_backward(scale, grad_x, grad_y, shape, fused=True):
    """The gradient of H(∇T) on the flow: each difference D = T[b] − T[a] sends +g to
    T[b] and −g to T[a] (g = scale · grad of that difference):

        dflow = 0
        dflow[..., :, 1:] += scale·grad_x,   dflow[..., :, :-1] −= scale·grad_x
        dflow[..., 1:, :] += scale·grad_y,   dflow[..., :-1, :] −= scale·grad_y

    scale: 0-d array (the upstream gradient); grad_x (..., h, w−1), grad_y (..., h−1, w)
    from :func:`huber_differences`; shape: the flow's (..., h, w). Returns dflow of that
    shape, grad_x's dtype. On CuPy: one ``stvae_huber_backward`` kernel (each flow element
    gathers its at most four differences).
    """
    if fused and kernels.wanted(grad_x):   # CuPy: the lines below as one fused kernel (fast/kernels.py)
        return kernels.launch("huber_backward", huber_backward, scale, grad_x, grad_y, shape)
    xp = get_array_module(grad_x)
    g_x = scale * grad_x
    g_y = scale * grad_y
    dflow = xp.zeros(shape, dtype=grad_x.dtype)
    dflow[..., :, 1:] += g_x
    dflow[..., :, :-1] -= g_x
    dflow[..., 1:, :] += g_y
    dflow[..., :-1, :] -= g_y
    return dflow


class HuberCache(NamedTuple):
    shape: tuple     # flow's shape
    grad_x: object   # (..., h, w−1) H_δ'(D_x) / n(D_x): the per-difference gradient of the mean
    grad_y: object   # (..., h−1, w) H_δ'(D_y) / n(D_y)    (n = the number of differences)


def huber_smoothness_forward(flow, delta=DEFAULT_HUBER_DELTA):
    """Huber penalty on the flow's finite differences, which favours piecewise-smooth flow.

    D_x = T[..., :, 1:] − T[..., :, :-1]           (..., h, w−1)
    D_y = T[..., 1:, :] − T[..., :-1, :]           (..., h−1, w)
    H(∇T) = mean(H_δ(D_x)) + mean(H_δ(D_y))
    H_δ(a) = a²/2 if |a| ≤ δ else δ(|a| − δ/2)

    Both flow channels (and the batch) are averaged together; the model applies w_H.
    flow: float (..., h, w), e.g. (N, 2, h, w), at least 2×2 spatially; delta: δ > 0, where
    the penalty turns linear (the paper's 1e-3). Returns the loss (0-d array, flow's dtype)
    and a :class:`HuberCache`.
    """
    if flow.ndim < 2:
        raise ValueError(f"huber_smoothness: flow needs two spatial axes, got shape {tuple(flow.shape)}")
    if flow.shape[-1] < 2 or flow.shape[-2] < 2:
        raise ValueError(f"huber_smoothness: spatial size must be at least 2×2, "
                         f"got {flow.shape[-2]}×{flow.shape[-1]}")
    if flow.dtype.kind != "f":
        raise ValueError(f"huber_smoothness: expected a floating-point array, got {flow.dtype}")
    delta = float(delta)
    if not delta > 0:   # also rejects NaN
        raise ValueError(f"huber_smoothness: delta must be positive, got {delta}")
    xp = get_array_module(flow)
    # per difference D: H_δ(D) and H_δ'(D)/n(D) = clip(D, −δ, δ)/n(D)
    huber_x, grad_x = huber_differences(flow[..., :, 1:], flow[..., :, :-1], delta)   # D_x
    huber_y, grad_y = huber_differences(flow[..., 1:, :], flow[..., :-1, :], delta)   # D_y
    loss = xp.asarray(xp.mean(huber_x) + xp.mean(huber_y), dtype=flow.dtype)
    return loss, HuberCache(tuple(flow.shape), grad_x, grad_y)


def huber_smoothness_backward(dloss, cache):
    """Gradient of H(∇T): each difference D = T[b] − T[a] sends +g to T[b] and −g to T[a].

    g_x = dloss · H_δ'(D_x) / n(D_x),   g_y = dloss · H_δ'(D_y) / n(D_y)
    dflow[..., :, 1:] += g_x,  dflow[..., :, :-1] −= g_x,   and likewise along rows with g_y.

    n(D) is the number of differences in D (``D.size``: the mean divides by it), not an
    absolute value. H_δ' is continuous, so the only kink is in H_δ'' (at |a| = δ):
    finite-difference checks should keep differences off ±δ.

    dloss: scalar or 0-d array, the upstream gradient (w_H from the model). Returns dflow,
    flow's shape and dtype.
    """
    shape, grad_x, grad_y = cache
    xp = get_array_module(grad_x)
    scale = xp.asarray(dloss, dtype=grad_x.dtype)
    return huber_backward(scale, grad_x, grad_y, shape)


# ----------------------------------------------------------------------------- photometric term
class PhotoCache(NamedTuple):
    """What :func:`photometric_forward` keeps."""
    scale: int               # image pixels per memory-grid pixel (H / h = 2)
    upsample: object         # the up-sampling cache of the flow
    sampler: BilinearCache   # of the warp of B(x_t)
    error: tuple             # cache of the error (MSE, weighted MSE, Charbonnier or Geman–McClure)


def gaussian_blur(frames, sigma, layers, kernels_cache):
    """B(x): a Gaussian blur of σ image pixels, a fixed normalised k×k convolution of each
    channel, k = 2⌈2σ⌉ + 1, zero padding; the frames themselves when σ = 0.

        g(u) = exp(−u² / 2σ²),  u = −r … r,  r = ⌈2σ⌉;   B = (g gᵀ / Σ g gᵀ) * x

    frames (M, C, H, W) -> (M, C, H, W), frames' dtype; sigma: σ ≥ 0, a Python number;
    layers: the module whose ``conv2d_forward`` convolves (the model's ops, plain or fast);
    kernels_cache: a dict that keeps the kernel on the device between calls.
    """
    if sigma <= 0:
        return frames
    xp = get_array_module(frames)
    key = (sigma, frames.dtype.str, xp.__name__)
    if key not in kernels_cache:        # built on the host once, kept on the device
        r = int(np.ceil(2 * sigma))
        g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
        kernel = np.outer(g, g) / np.outer(g, g).sum()
        kernels_cache[key] = xp.asarray(kernel.reshape(1, 1, 2 * r + 1, 2 * r + 1), dtype=frames.dtype)
    m, c, hh, ww = frames.shape
    out, _ = layers.conv2d_forward(frames.reshape(m * c, 1, hh, ww), kernels_cache[key])
    return out.reshape(m, c, hh, ww)


def photometric_forward(clip, flow, config, layers, kernels_cache):
    """The photometric term: each input frame itself, warped by the flow brought to image
    pixels, against the next frame (docs/DESIGN.md section 3).

        F_t = s · upsample2(T_t)                    s = H / h (= 2): image pixels, nearest
        d   = bilinear(B(x_t), base_grid + F_t) − B(x_{t+1})
        P   = mean(ρ(d))                            (photo_weighting = "uniform")
        P   = Σ w ρ(d) / Σ w,  w = B(x_{t+1})       (photo_weighting = "next_frame")

    with ρ(d) = d² (``photo_loss="l2"``), √(d² + ε²) − ε, ε = 0.01 ("charbonnier") or
    d² / (d² + C²), C = ``photo_gm_scale`` ("geman_mcclure"). The weights are data, not
    differentiated. B is the Gaussian blur of σ = ``photo_blur`` (:func:`gaussian_blur`),
    which widens the range of displacements the bilinear gradient can see; it runs once
    over the T frames of the clip, which serve both as x_t and as x_{t+1}. No parameter
    but the flow's enters P.

    clip: (N, T, C, H, W), the model's dtype and device; flow: (N·(T-1), 2, h, w) in
    memory-grid pixels, steps stacked like the model's; config: the model's ``Config``;
    layers, kernels_cache: as for :func:`gaussian_blur` (``layers`` up-samples too).
    Returns P (0-d array) and a :class:`PhotoCache` for :func:`photometric_backward`.
    """
    n, t, c, hh, ww = clip.shape
    blurred = gaussian_blur(clip.reshape(n * t, c, hh, ww), config.photo_blur, layers,
                            kernels_cache).reshape(n, t, c, hh, ww)
    frames = blurred[:, :-1].reshape(n * (t - 1), c, hh, ww)      # B(x_0) … B(x_{T-2})
    targets = blurred[:, 1:].reshape(n * (t - 1), c, hh, ww)      # B(x_1) … B(x_{T-1})
    scale = ww // flow.shape[-1]
    up, up_cache = layers.upsample2_forward(flow)
    warped, samp_cache = bilinear_forward(frames, flow_to_grid(scale * up))
    weights = targets if config.photo_weighting == "next_frame" else None
    if config.photo_loss == "geman_mcclure":
        photo, error_cache = geman_mcclure_forward(warped, targets, config.photo_gm_scale, weights)
    elif weights is not None:
        photo, error_cache = weighted_mse_forward(warped, targets, weights)
    elif config.photo_loss == "charbonnier":
        photo, error_cache = charbonnier_forward(warped, targets)
    else:
        photo, error_cache = mse_forward(warped, targets)
    return photo, PhotoCache(scale, up_cache, samp_cache, error_cache)


def photometric_backward(dphoto, cache, layers):
    """∂P/∂T = s · upsample2ᵀ(∂P/∂G): the error's derivative, back through the sampler's
    grid path (the frames are data and get no gradient), summed over each 2×2 block of
    the up-sampling and times s for the flow's units. dphoto: 0-d array, the upstream
    gradient (w_P from the model); layers: as in the forward. Returns dflow (N·(T-1), 2, h, w).
    """
    error_backward = (charbonnier_backward if isinstance(cache.error, CharbonnierCache) else
                      weighted_mse_backward if isinstance(cache.error, WeightedMSECache) else
                      geman_mcclure_backward if isinstance(cache.error, GemanMcClureCache) else mse_backward)
    _, dgrid = bilinear_backward(error_backward(dphoto, cache.error), cache.sampler,
                                 need_dimg=False)         # the frames need no gradient
    return cache.scale * layers.upsample2_backward(dgrid, cache.upsample)
