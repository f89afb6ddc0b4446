"""Judging a trained model, always beside a baseline that needs no learning.

    python -m stvae_np.evaluate runs/<run>/checkpoint.npz [--data moving-mnist|shapes|PATH]
        [--clips 64] [--out DIR] [--device auto|cpu|gpu] [--context 10 --future 10]

Three questions, three baselines:

* **One step** (:func:`one_step_metrics`): predict x_{t+1} from x_0 … x_t, beside
  *copy-last* (x_{t+1} = x_t); the predicted flow beside *zero flow*.
* **Rollout** (:func:`rollout_metrics`): read ``context`` frames, predict ``future``
  from the model's own outputs, beside *copy the last context frame*.
* **Label propagation** (:func:`label_propagation_metrics`, the paper's application):
  mask t warped by the predicted flow against mask t+1, beside *copy mask t*.

:func:`evaluate_checkpoint` does all three and writes ``metrics.json``, ``report.md`` and
the figures. Model outputs are copied to the host as soon as they are computed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import numpy as np

from . import metrics as M
from .backend import asnumpy, get_array_module
from .checkpoint import load as load_checkpoint   # (`checkpoint` below names a path)
from .cli import CLIError, Parser, one_line, require_positive, resolve_device
from .data import DATA_CHOICES, TEST_SEED, VAL_SEED, load_eval_clips  # noqa: F401 (re-exported)
from .model import STVAE
from .report import jsonable, summary_lines, write_figures, write_report
from .runfolder import FolderBusy, RunLock, atomic_write, clean_stale_temps
from .sampler import bilinear_forward, flow_to_grid
from .video import is_video_spec, video_data

FLOW_THRESHOLDS = (0.5, 1.0, 3.0)
MASK_THRESHOLD = 0.5               # a warped mask pixel is "in" when its coverage is ≥ this


def _progress(iterable, enabled, desc, total=None):
    """``tqdm`` around a loop when asked, else the loop itself."""
    if not enabled:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, desc=desc, total=total, unit="batch", leave=False, dynamic_ncols=True)


# ----------------------------------------------------------------------------- one step
def predict_clips(model, frames, batch_size=32, progress=False):
    """Run :meth:`STVAE.predict` over many clips (N, T, C, H, W) in batches: preds
    (N, T-1, C, H, W) and flows (N, T-1, 2, h, w), NumPy."""
    preds, flows = [], []
    starts = range(0, len(frames), batch_size)
    for i in _progress(starts, progress, "one-step", total=len(starts)):
        p, f = model.predict(frames[i:i + batch_size])
        preds.append(asnumpy(p))
        flows.append(asnumpy(f))
    return np.concatenate(preds), np.concatenate(flows)


def _image_flow(flows, frames):
    """Memory-grid flows (..., 2, h, w) -> image pixels (..., 2, H, W): resized and scaled."""
    return M.upsample_flow(flows, frames.shape[-1] // flows.shape[-1])


def _one_step_scores(preds, flows, clips):
    """The metrics of :func:`one_step_metrics` from predictions already computed."""
    frames = clips.frames
    preds = np.clip(preds, 0.0, 1.0)             # a pixel cannot leave [0, 1]
    targets, last = frames[:, 1:], frames[:, :-1]
    out = {}
    for prefix, guess in (("", preds), ("copy_last_", last)):
        out[prefix + "mse"] = M.mse_per_pixel(guess, targets)
        out[prefix + "mse_per_frame"] = M.mse_per_frame(guess, targets)
        out[prefix + "mae"] = M.mae_per_pixel(guess, targets)
        out[prefix + "mae_per_frame"] = M.mae_per_frame(guess, targets)
        out[prefix + "psnr"] = M.psnr(guess, targets)
        out[prefix + "ssim"] = M.ssim(guess, targets)
        out[prefix + "bce_per_frame"] = M.bce_per_frame(guess, targets)
    if clips.flow is not None:
        flow_img = _image_flow(flows, frames)                     # image pixels
        mask = clips.masks[:, 1:, 0] if clips.masks is not None else None
        zero = np.zeros_like(clips.flow)
        out["epe"] = M.endpoint_error(flow_img, clips.flow, mask)
        out["zero_flow_epe"] = M.endpoint_error(zero, clips.flow, mask)
        acc = M.flow_accuracy(flow_img, clips.flow, mask, FLOW_THRESHOLDS)
        acc0 = M.flow_accuracy(zero, clips.flow, mask, FLOW_THRESHOLDS)
        for th, a, a0 in zip(FLOW_THRESHOLDS, acc, acc0):
            out[f"acc@{th:g}"] = a
            out[f"zero_flow_acc@{th:g}"] = a0
    out = {k: float(v) for k, v in out.items()}
    if clips.flow is None and frames.shape[2] == 1 and frames.shape[1] - 1 > M.FLOW_T_MIN:
        out.update({f"{k}_t2": v for k, v in forecast_scores(frames, _image_flow(flows, frames), preds).items()})
    if clips.flow is not None and clips.masks is not None and flows.shape[1] > M.FLOW_T_MIN:
        quality = M.flow_quality(flow_img, clips.flow, clips.masks[:, 1:, 0])
        out["epe_per_step"] = [float(v) for v in quality.pop("epe_per_step")]
        out.update(quality)
    return out


_HS_FLOWS = {}   # Horn–Schunck's flows of the last four clip sets scored (test, validation)


def forecast_scores(frames, flows, preds=None, t_min=M.FLOW_T_MIN):
    """Scores of real footage, which has no true flow: how well x_t warped by a flow
    forecasts x_{t+1}, over the steps t ≥ ``t_min``, as MSE / copy-last's MSE (< 1 beats it):

        warp_forecast_ratio        x_t warped by ``flows`` (the learned flow, image pixels)
        classical_forecast_ratio   x_t warped by Horn–Schunck's flow of x_{t−1} → x_t (causal)
        classical_oracle_ratio     x_t warped by Horn–Schunck's flow of x_t → x_{t+1} (sees it)
        mse_ratio                  ``preds`` (the model's prediction, clipped to [0, 1])

    every warp with source points clamped into the frame, plus ``hs_epe``, ``hs_angle``
    (degrees) and ``hs_gain`` of ``flows`` against Horn–Schunck's x_t → x_{t+1} flow where its
    motion exceeds half a pixel (``metrics.flow_quality``), and ``copy_last_mse``. Python floats.

    Args:
        frames: (N, T, 1, H, W); flows: (N, T-1, 2, H, W) in image pixels; preds (N, T-1, 1, H, W).
    """
    from .classical import _warp, horn_schunck
    frames, flows = np.asarray(asnumpy(frames), np.float64), np.asarray(asnumpy(flows), np.float64)
    n, t, _, h, w = frames.shape
    if t - 1 <= t_min or flows.shape != (n, t - 1, 2, h, w):
        raise ValueError(f"forecast_scores: needs frames (N, T > {t_min + 1}, 1, H, W) and flows "
                         f"(N, T-1, 2, H, W), got {frames.shape} and {flows.shape}")
    grey = frames[:, :, 0]
    key = hashlib.sha1(grey.tobytes()).hexdigest()                    # the same clips: once
    if key not in _HS_FLOWS:
        if len(_HS_FLOWS) >= 4:
            _HS_FLOWS.pop(next(iter(_HS_FLOWS)))
        _HS_FLOWS[key] = horn_schunck(grey[:, :-1], grey[:, 1:])      # (N, T-1, 2, H, W)
    hs = _HS_FLOWS[key]
    x_t, target = grey[:, t_min:-1].reshape(-1, h, w), grey[:, t_min + 1:]
    copy = float(np.mean((x_t.reshape(target.shape) - target) ** 2))

    def ratio(flow):
        return float(np.mean((_warp(x_t, flow.reshape(-1, 2, h, w)).reshape(target.shape) - target) ** 2)) / copy

    out = {"copy_last_mse": copy, "warp_forecast_ratio": ratio(flows[:, t_min:]),
           "classical_forecast_ratio": ratio(hs[:, t_min - 1:-1]),
           "classical_oracle_ratio": ratio(hs[:, t_min:])}
    if preds is not None:
        p = np.clip(np.asarray(asnumpy(preds), np.float64)[:, t_min:, 0], 0, 1)
        out["mse_ratio"] = float(np.mean((p - target) ** 2)) / copy
    q = M.flow_quality(flows, hs, np.hypot(hs[:, :, 0], hs[:, :, 1]) > 0.5, t_min)
    out.update(hs_epe=q["epe_t2"], hs_angle=q["angular_error_t2"], hs_gain=q["flow_gain_t2"])
    return out


def one_step_metrics(model, clips, batch_size=32, progress=False):
    """One-step prediction and flow metrics on held-out ``clips`` (a ``data.Clips``;
    ``flow`` and ``masks`` may be None for real data). Returns a
        dict of Python floats: ``mse``, ``mae`` (per pixel), ``mse_per_frame``,
        ``mae_per_frame``, ``psnr``, ``ssim``, ``bce_per_frame``, each with a ``copy_last_``
        twin; with ground-truth flow ``epe``, ``acc@0.5`` … (image pixels, object pixels
        of frame t+1) beside ``zero_flow_…`` and the ``metrics.flow_quality`` figures.
    """
    preds, flows = predict_clips(model, clips.frames, batch_size, progress)
    return _one_step_scores(preds, flows, clips)


def classical_scores(clips):
    """The classical reference on the same clips: coarse-to-fine Horn–Schunck
    (:mod:`stvae_np.classical`) from frame t to t+1, scored like the model's flow.

    Returns ``classical_epe_t2``, ``classical_flow_gain_t2``, ``classical_angular_error_t2``
    (empty without flow or masks, or for clips too short for steps t ≥ 2).
    """
    from .classical import classical_flows
    if (clips.flow is None or clips.masks is None or clips.frames.shape[2] != 1
            or clips.frames.shape[1] - 1 <= M.FLOW_T_MIN):
        return {}
    q = M.flow_quality(classical_flows(clips.frames), clips.flow, clips.masks[:, 1:, 0])
    return {f"classical_{k}": q[k] for k in ("epe_t2", "flow_gain_t2", "angular_error_t2")}


# ----------------------------------------------------------------------------- rollout
def rollout_clips(model, frames, context=10, future=10, batch_size=32, progress=False):
    """Run :meth:`STVAE.rollout` over many clips (N, T, C, H, W) in batches (the first
    ``context`` frames read): (N, future, C, H, W) NumPy, frames context … context+future-1."""
    out = []
    starts = range(0, len(frames), batch_size)
    for i in _progress(starts, progress, "rollout", total=len(starts)):
        out.append(asnumpy(model.rollout(frames[i:i + batch_size, :context], future)))
    return np.concatenate(out)


def _check_rollout_length(frames, context, future):
    if context < 1 or future < 1:
        raise ValueError(f"context and future must be at least 1, got {context} and {future}")
    t = frames.shape[1]
    if t < context + future:
        raise ValueError(f"clips have T = {t} frames; a {context} → {future} rollout needs "
                         f"context + future = {context + future}")


def _rollout_scores(preds, frames, context):
    """Per-horizon scores of rollout predictions (N, F, C, H, W) against ``frames``.

        mse[k]  = mean over clips of mean((ŷ_{K+k} − x_{K+k})²)      k = 0 … F-1
        ssim[k] = mean over clips of SSIM(ŷ_{K+k}, x_{K+k})
    and the same for the baseline ŷ_{K+k} = x_{K-1} (the last context frame).
    """
    future = preds.shape[1]
    preds = np.clip(preds, 0.0, 1.0)
    targets = frames[:, context:context + future]                     # (N, F, C, H, W)
    copy = np.repeat(frames[:, context - 1:context], future, axis=1)  # x_{K-1}, F times
    out = {"context": int(context), "future": int(future),
           "horizon": np.arange(1, future + 1)}
    for prefix, guess in (("", preds), ("copy_last_", copy)):
        mse = M.mse_per_pixel(guess, targets, per_frame=True)          # (N, F)
        ssim = M.ssim(guess, targets, per_frame=True)
        out[prefix + "mse"] = np.asarray(mse).mean(axis=0)             # (F,)
        out[prefix + "ssim"] = np.asarray(ssim).mean(axis=0)
        out[prefix + "mean_mse"] = float(out[prefix + "mse"].mean())
        out[prefix + "mean_ssim"] = float(out[prefix + "ssim"].mean())
    return out


def rollout_metrics(model, clips, context=10, future=10, batch_size=32, progress=False):
    """Multi-step prediction: read ``context`` frames of ``clips`` (a ``data.Clips`` or an
    array (N, T, C, H, W); ValueError if T < context + future), predict ``future`` more from
    the model's own outputs (:meth:`STVAE.rollout`), score every horizon. Returns a dict:
    ``context``, ``future``, ``horizon`` (1 … F), ``mse`` (per pixel) and ``ssim`` ((F,)
    averaged over clips), ``mean_mse``, ``mean_ssim``, each with a ``copy_last_`` twin
    (every future frame predicted as x_{context-1}).
    """
    frames = np.asarray(getattr(clips, "frames", clips))
    _check_rollout_length(frames, context, future)
    preds = rollout_clips(model, frames, context, future, batch_size, progress)
    return _rollout_scores(preds, frames, context)


# ----------------------------------------------------------------------------- masks
def propagate_masks(masks_t, flow_img, threshold=MASK_THRESHOLD):
    """Carry the object masks of frame t to frame t+1 with a backward flow.

        m̂_{t+1}(y, x) = [ bilinear(m_t, (x + T_x(y, x), y + T_y(y, x))) ≥ threshold ]

    the model's own warp (``sampler.bilinear_forward``) applied to the mask as a 0/1
    image; a threshold of 0.5 keeps an integer shift exact.

    Args:
        masks_t: (..., H, W) or (..., 1, H, W) boolean (non-zero = object).
        flow_img: (..., 2, H, W) backward flow in IMAGE pixels, same leading axes.
    Returns:
        boolean array of ``masks_t``'s shape, on the flow's device.
    """
    xp = get_array_module(masks_t, flow_img)
    masks_t = xp.asarray(masks_t)
    h, w = flow_img.shape[-2:]
    lead = flow_img.shape[:-3]
    if flow_img.ndim < 3 or flow_img.shape[-3] != 2:
        raise ValueError(f"propagate_masks: flow_img must be (..., 2, H, W), "
                         f"got shape {tuple(flow_img.shape)}")
    plain = masks_t.shape == lead + (h, w)
    if not plain and masks_t.shape != lead + (1, h, w):
        raise ValueError(f"propagate_masks: masks {tuple(masks_t.shape)} do not match the flow "
                         f"{tuple(flow_img.shape)}: expected {lead + (h, w)} or {lead + (1, h, w)}")
    dtype = flow_img.dtype if flow_img.dtype.kind == "f" else np.float32
    m = int(np.prod(lead, dtype=np.int64))
    flow = flow_img.reshape(m, 2, h, w).astype(dtype, copy=False)
    mask = (masks_t != 0).reshape(m, 1, h, w).astype(dtype)
    grid = flow_to_grid(flow)                                       # source (x, y), pixels
    coverage, _ = bilinear_forward(mask, grid)                      # (M, 1, H, W) in [0, 1]
    return (coverage >= threshold).reshape(masks_t.shape)


def _label_scores(flows, clips):
    """The metrics of :func:`label_propagation_metrics` from one-step flows already
    computed; also returns the propagated masks (N, T-1, H, W) for the figure."""
    masks = np.asarray(clips.masks)[:, :, 0]                        # (N, T, H, W)
    flow_img = _image_flow(flows, clips.frames)                     # (N, T-1, 2, H, W)
    pred = asnumpy(propagate_masks(masks[:, :-1], flow_img))        # masks of t+1
    true, copy = masks[:, 1:], masks[:, :-1]
    n, s, h, w = true.shape
    out = {}
    for prefix, guess in (("", pred), ("copy_last_", copy)):
        # per_clip over the flattened (clip, step) axis: the mean of per-frame IoUs
        out[prefix + "iou"] = float(M.iou(guess.reshape(n * s, h, w), true.reshape(n * s, h, w),
                                          per_clip=True))
        out[prefix + "iou_per_step"] = np.array([float(M.iou(guess[:, t], true[:, t], per_clip=True))
                                                 for t in range(s)])
    return out, pred


def label_propagation_metrics(model, clips, batch_size=32, progress=False):
    """Object masks carried from frame t to t+1 by the model's one-step flow: for every
    step t the flow :meth:`STVAE.predict` regresses for x_{t+1} warps the true mask of frame t
    (:func:`propagate_masks`; ``clips.masks`` (N, T, 1, H, W)), scored against mask t+1.
    Returns ``iou`` (mean over clips and steps of the per-frame IoU), ``iou_per_step`` ((T-1,),
    step t predicts frame t+1), and ``copy_last_iou(_per_step)``, the baseline that keeps mask t.
    """
    if clips.masks is None:
        raise ValueError("label_propagation_metrics: the clips carry no object masks")
    _, flows = predict_clips(model, clips.frames, batch_size, progress)
    return _label_scores(flows, clips)[0]


def evaluate_checkpoint(model_or_path, clips, out_dir, context=10, future=10, batch_size=32,
                        device="cpu", description=None, checkpoint=None, figures=True,
                        progress=False):
    """Everything: one-step, rollout and label-propagation metrics, ``metrics.json``,
    ``report.md`` and the figures, written into ``out_dir``.

    ``model_or_path`` is an ``STVAE`` or a checkpoint's path (loaded on ``device``); ``clips``
    a ``data.Clips``: without ``flow`` and ``masks`` (real data) the flow and label metrics
    are skipped, and clips shorter than ``context + future`` skip the rollout. Returns the
    dict written to ``metrics.json`` (``model``, ``data``, ``one_step``, ``rollout``,
    ``label_propagation``, ``figures``), JSON-ready (NaN as None); a skipped section is
    ``{"skipped": reason}``.
    """
    if isinstance(model_or_path, STVAE):
        model = model_or_path
        checkpoint = None if checkpoint is None else os.fspath(checkpoint)
    else:
        checkpoint = os.fspath(model_or_path)
        model = load_checkpoint(checkpoint, device=device)
    frames = clips.frames
    n, t, c, h, w = frames.shape
    cfg = model.config
    os.makedirs(out_dir, exist_ok=True)

    preds, flows = predict_clips(model, frames, batch_size, progress)
    one_step = _one_step_scores(preds, flows, clips)
    one_step.update(classical_scores(clips))
    if clips.flow is None:
        one_step["flow_skipped"] = "the clips carry no ground-truth flow"

    try:
        _check_rollout_length(frames, context, future)
        roll_preds = rollout_clips(model, frames, context, future, batch_size, progress)
        rollout = _rollout_scores(roll_preds, frames, context)
        rollout_out = (rollout, roll_preds)
    except ValueError as err:
        rollout, rollout_out = {"skipped": str(err), "context": context, "future": future}, None

    if clips.masks is not None:
        labels, masks_pred = _label_scores(flows, clips)
    else:
        labels, masks_pred = {"skipped": "the clips carry no object masks"}, None

    figs = write_figures(out_dir, clips, (preds, flows), rollout_out, masks_pred) if figures else {}
    result = jsonable({
        "model": {"checkpoint": checkpoint, "preset": cfg.name, "parameters": cfg.num_params(),
                  "frame": f"{cfg.height}×{cfg.width}×{cfg.channels}"},
        "data": {"description": description or "clips given in memory", "clips": n, "frames": t,
                 "height": h, "width": w, "has_flow": clips.flow is not None,
                 "has_masks": clips.masks is not None},
        "one_step": one_step, "rollout": rollout, "label_propagation": labels, "figures": figs,
    })
    atomic_write(os.path.join(out_dir, "metrics.json"), json.dumps(result, indent=2))
    write_report(os.path.join(out_dir, "report.md"), result)
    return result


ROLLOUT = 10                       # the end of a training run: read 10 frames, predict 10


def final_evaluation(model, test_clips, one_step, out_dir, data, n_clips, description=None,
                     checkpoint=None, figures=True, layout="auto"):
    """The evaluation at the end of a training run (``python -m stvae_np.train``): the
    classical reference (:func:`classical_scores`) on the run's test clips, and
    :func:`evaluate_checkpoint` into ``out_dir/eval``, for synthetic ``data`` on ``n_clips``
    fresh test clips (a ROLLOUT → ROLLOUT rollout), else on the run's test clips (read
    half, predict half). ``one_step`` is the model's last :func:`one_step_metrics` there.

    Returns (test, evaluation): ``test`` is ``one_step`` and the ``classical_*`` scores (a
    new dict), ``evaluation`` ``{"report": path of report.md, "rollout": …,
    "label_propagation": …}``.
    """
    test = {**one_step, **classical_scores(test_clips)}   # the classical reference, same clips
    if data in DATA_CHOICES:
        clips, description = load_eval_clips(data, model.config, n_clips, 2 * ROLLOUT)
        context = future = ROLLOUT
    else:
        clips = test_clips
        context = test_clips.frames.shape[1] // 2
        future = test_clips.frames.shape[1] - context
    eval_dir = os.path.join(out_dir, "eval")
    full = evaluate_checkpoint(model, clips, eval_dir, context, future, description=description,
                               checkpoint=checkpoint, figures=figures)
    evaluation = {"report": os.path.join(eval_dir, "report.md"), "rollout": full["rollout"],
                  "label_propagation": full["label_propagation"]}
    return test, evaluation


# ----------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m stvae_np.evaluate",
                description="Evaluate a trained checkpoint: one-step and rollout prediction, "
                            "flow, label propagation; writes metrics.json, report.md, figures.")
    p.add_argument("checkpoint", help="a checkpoint.npz written by stvae_np.train")
    p.add_argument("--data", default="moving-mnist",
                   help="moving-mnist (test digits), shapes, or a .npy/.npz file of clips")
    p.add_argument("--clips", type=int, default=64, help="clips to evaluate on")
    p.add_argument("--out", default=None,
                   help="output folder (default: a new <checkpoint folder>/eval-<n>; an existing "
                        "folder with results is refused without --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace the results already in --out")
    p.add_argument("--layout", default="auto", choices=("auto", "NTHW", "NTCHW", "TNHW"),
                   help="axes of a --data clip file where auto-detection cannot tell")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
    p.add_argument("--context", type=int, default=10, help="frames the rollout reads")
    p.add_argument("--future", type=int, default=10, help="frames the rollout predicts")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    p.add_argument("--quiet", action="store_true", help="no progress bars, no summary")
    return p


def _new_eval_folder(run_dir):
    """``run_dir/eval-<n>``, the first that does not exist (the trainer's own is ``eval``)."""
    n = 1
    while os.path.exists(os.path.join(run_dir, f"eval-{n}")):
        n += 1
    return os.path.join(run_dir, f"eval-{n}")


def _claim(out, overwrite):
    """Create ``out`` and lock it; refuse one that holds results unless ``overwrite``."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise CLIError(f"--out {out}: not a folder")
    held = [f for f in ("metrics.json", "report.md") if os.path.exists(os.path.join(out, f))]
    if held and not overwrite:
        raise CLIError(f"--out {out} already holds results ({', '.join(held)}); choose another "
                       f"--out, leave it out for a new folder, or pass --overwrite")
    try:
        os.makedirs(out, exist_ok=True)
        lock = RunLock(out).acquire()
    except FolderBusy as err:
        raise CLIError(f"--out {err}") from None
    except OSError as err:
        raise CLIError(f"--out {out}: cannot write there ({err.strerror or err})") from None
    clean_stale_temps(out)
    return lock


def main(argv=None) -> int:
    """The command line: 0 done; 2 a bad setting, path or file (one line, nothing
    written); 1 a failure while evaluating or writing (one line; earlier results intact)."""
    try:
        args = build_parser().parse_args(argv)
        require_positive(clips=args.clips, context=args.context, future=args.future,
                         batch_size=args.batch_size)
        device = resolve_device(args.device)
        with one_line(args.checkpoint):
            model = load_checkpoint(args.checkpoint, device=device)
        if is_video_spec(args.data):               # a video: its test stretch (the last fifth)
            with one_line(args.data):
                _, clips, _, desc = video_data(args.data, model.config, args.clips, args.context + args.future,
                                               progress=not args.quiet)
        else:
            clips, desc = load_eval_clips(args.data, model.config, args.clips,
                                          args.context + args.future, layout=args.layout)
        out = args.out or _new_eval_folder(os.path.dirname(os.path.abspath(args.checkpoint)))
        lock = _claim(out, args.overwrite)
    except CLIError as err:
        print(f"stvae_np.evaluate: error: {err}", file=sys.stderr)
        return 2
    try:
        result = evaluate_checkpoint(model, clips, out, args.context, args.future,
                                     batch_size=args.batch_size, description=desc,
                                     checkpoint=args.checkpoint, figures=not args.no_figures,
                                     progress=not args.quiet)
    except OSError as err:          # disk full, a folder that cannot be written
        print(f"stvae_np.evaluate: error: cannot write the results into {out} "
              f"({err.strerror or err}); results already there are intact", file=sys.stderr)
        return 1
    except MemoryError:
        print("stvae_np.evaluate: error: out of memory (try a smaller --clips or --batch-size)",
              file=sys.stderr)
        return 1
    finally:
        lock.release()
    if not args.quiet:
        for line in summary_lines(result) + [f"written: {out}/report.md, metrics.json and figures"]:
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
