"""A classical two-frame optical flow to set beside the learned one: coarse-to-fine
Horn–Schunck (Horn & Schunck, "Determining optical flow", 1981), in NumPy.

No learning at all, so beside the model it says how hard the clips are. It estimates
the BACKWARD flow on the pixels of the later frame, as the data and the metrics do:

    frame_t(p + u(p)) ≈ frame_{t+1}(p)        u = (u_x, u_y) in image pixels

Horn–Schunck minimises, over the increment du of the flow u at one pyramid level,

    E(du) = Σ_p (I_x du_x + I_y du_y + I_t)² + α² (|∇du_x|² + |∇du_y|²)

where w = frame_t warped by u (bilinear, ``sampler.bilinear_forward``), I_x, I_y its
central differences and I_t = w − frame_{t+1}. The Euler–Lagrange equations are solved
with Horn and Schunck's Jacobi iteration

    du ← d̄u − ∇I · (∇I · d̄u + I_t) / (α² + |∇I|²)

with d̄u the 4-neighbour average. Linearising only holds for about a pixel, so the
frames are first 2×2 average-pooled ``levels − 1`` times; the flow of a coarse level
is doubled, up-sampled and refined at the next finer one (defaults: docs/flow_study.md).
"""
from __future__ import annotations

import numpy as np

from .sampler import base_grid, bilinear_forward


def _pool2(a):
    """2×2 average pooling of (M, H, W) with even H, W."""
    m, h, w = a.shape
    return a.reshape(m, h // 2, 2, w // 2, 2).mean(axis=(2, 4))


def _neighbour_mean(a):
    """Average of the four neighbours of every pixel of (M, H, W), edges replicated."""
    p = np.pad(a, ((0, 0), (1, 1), (1, 1)), mode="edge")
    return 0.25 * (p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:])


def _warp(img, flow):
    """img (M, H, W) read at p + flow(p), flow (M, 2, H, W): bilinear, with source points
    clamped into the image (the border pixels repeat, so no false edge enters)."""
    m, h, w = img.shape
    grid = base_grid(m, h, w, img) + flow
    grid[:, 0] = np.clip(grid[:, 0], 0, w - 1)
    grid[:, 1] = np.clip(grid[:, 1], 0, h - 1)
    out, _ = bilinear_forward(img[:, None], grid)
    return out[:, 0]


def _refine(frame_t, frame_t1, flow, alpha, iters):
    """One pyramid level: Horn–Schunck on the increment du, returns flow + du."""
    warped = _warp(frame_t, flow)
    ix = np.gradient(warped, axis=2)
    iy = np.gradient(warped, axis=1)
    it = warped - frame_t1
    denom = alpha ** 2 + ix ** 2 + iy ** 2
    du = np.zeros_like(flow)
    for _ in range(iters):
        ux, uy = _neighbour_mean(du[:, 0]), _neighbour_mean(du[:, 1])
        t = (ix * ux + iy * uy + it) / denom
        du[:, 0] = ux - ix * t
        du[:, 1] = uy - iy * t
    return flow + du


def horn_schunck(frame_t, frame_t1, alpha=0.7, iters=100, levels=3, warps=1):
    """Backward flow from ``frame_t`` to ``frame_t1``, coarse to fine.

    Args:
        frame_t, frame_t1: (..., H, W) intensities (e.g. in [0, 1]); H and W divisible
            by 2^(levels − 1). Any leading axes are frames, solved independently.
        alpha: smoothness weight α; iters: Jacobi iterations per level and warp.
        levels: pyramid levels (1: no pyramid); warps: re-linearisations per level.
    Returns:
        (..., 2, H, W) float64 in pixels: frame_t(p + flow(p)) ≈ frame_t1(p).
    """
    a = np.asarray(frame_t, np.float64)
    b = np.asarray(frame_t1, np.float64)
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"horn_schunck: frames must share a shape (..., H, W), got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("horn_schunck: frames contain NaN or infinite values")
    lead, (h, w) = a.shape[:-2], a.shape[-2:]
    if levels < 1 or h % 2 ** (levels - 1) or w % 2 ** (levels - 1):
        raise ValueError(f"horn_schunck: {h}×{w} frames cannot make {levels} pyramid levels")
    pyramid = [(a.reshape(-1, h, w), b.reshape(-1, h, w))]
    for _ in range(levels - 1):
        pyramid.append((_pool2(pyramid[-1][0]), _pool2(pyramid[-1][1])))
    flow = np.zeros((pyramid[-1][0].shape[0], 2) + pyramid[-1][0].shape[1:])
    for level, (fa, fb) in enumerate(reversed(pyramid)):
        if level > 0:                                   # coarse flow -> this level's pixels
            flow = 2.0 * np.repeat(np.repeat(flow, 2, axis=2), 2, axis=3)
        for _ in range(warps):
            flow = _refine(fa, fb, flow, alpha, iters)
    return flow.reshape(lead + (2, h, w))


def classical_flows(frames, **kwargs):
    """:func:`horn_schunck` for every consecutive pair of clips (N, T, 1, H, W) ->
    (N, T-1, 2, H, W), indexed like the model's flows (step t: frame t -> t+1)."""
    frames = np.asarray(frames)
    if frames.ndim != 5 or frames.shape[2] != 1:
        raise ValueError(f"classical_flows: frames must be (N, T, 1, H, W), got {frames.shape}")
    return horn_schunck(frames[:, :-1, 0], frames[:, 1:, 0], **kwargs)
