"""Judging a trained model: one-step prediction metrics beside the copy-last-frame
baseline, and flow accuracy beside the zero-flow baseline.

    python -m stvae_np.evaluate runs/<run>/checkpoint.npz [--data …] [--clips N] [--out DIR]

The training command calls :func:`one_step_metrics` every so often and at the end.
"""
from __future__ import annotations

import numpy as np

from . import metrics as M
from .backend import asnumpy

FLOW_THRESHOLDS = (0.5, 1.0, 3.0)


def predict_clips(model, frames, batch_size=32):
    """Run :meth:`STVAE.predict` over many clips in batches; results on the host.

    Args:
        frames: (N, T, C, H, W) NumPy.
    Returns:
        preds (N, T-1, C, H, W) and flows (N, T-1, 2, h, w) as NumPy arrays.
    """
    preds, flows = [], []
    for i in range(0, len(frames), batch_size):
        p, f = model.predict(frames[i:i + batch_size])
        preds.append(asnumpy(p))
        flows.append(asnumpy(f))
    return np.concatenate(preds), np.concatenate(flows)


def one_step_metrics(model, clips, batch_size=32):
    """One-step prediction and flow metrics on held-out clips.

    Args:
        model: an ``STVAE``.
        clips: a ``data.Clips`` (``flow`` and ``masks`` may be None for real data).
    Returns:
        dict of Python floats: ``mse`` (per pixel), ``mse_per_frame``, ``mae``, ``psnr``,
        ``ssim``, ``bce_per_frame``, each with a ``copy_last_`` twin (predict x_{t+1} = x_t);
        with ground-truth flow also ``epe`` and ``zero_flow_epe`` (image pixels, on object
        pixels of frame t+1) and ``acc@0.5`` … beside ``zero_flow_acc@…``.
    """
    frames = clips.frames
    preds, flows = predict_clips(model, frames, batch_size)
    preds = np.clip(preds, 0.0, 1.0)             # a pixel cannot leave [0, 1]
    targets, last = frames[:, 1:], frames[:, :-1]
    out = {}
    for prefix, guess in (("", preds), ("copy_last_", last)):
        out[prefix + "mse"] = M.mse_per_pixel(guess, targets)
        out[prefix + "mse_per_frame"] = M.mse_per_frame(guess, targets)
        out[prefix + "mae"] = M.mae_per_pixel(guess, targets)
        out[prefix + "psnr"] = M.psnr(guess, targets)
        out[prefix + "ssim"] = M.ssim(guess, targets)
        out[prefix + "bce_per_frame"] = M.bce_per_frame(guess, targets)
    if clips.flow is not None:
        factor = frames.shape[-1] // flows.shape[-1]
        flow_img = M.upsample_flow(flows, factor)                 # image pixels
        mask = clips.masks[:, 1:, 0] if clips.masks is not None else None
        zero = np.zeros_like(clips.flow)
        out["epe"] = M.endpoint_error(flow_img, clips.flow, mask)
        out["zero_flow_epe"] = M.endpoint_error(zero, clips.flow, mask)
        acc = M.flow_accuracy(flow_img, clips.flow, mask, FLOW_THRESHOLDS)
        acc0 = M.flow_accuracy(zero, clips.flow, mask, FLOW_THRESHOLDS)
        for th, a, a0 in zip(FLOW_THRESHOLDS, acc, acc0):
            out[f"acc@{th:g}"] = a
            out[f"zero_flow_acc@{th:g}"] = a0
    return {k: float(v) for k, v in out.items()}
