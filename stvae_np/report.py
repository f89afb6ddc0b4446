"""The evaluation's written outputs: ``metrics.json``'s JSON-ready numbers, ``report.md`` and the
figures. ``stvae_np.evaluate`` computes the metrics (:func:`evaluate.evaluate_checkpoint`) and hands
the result here; every number is already a Python float or a NumPy array.
"""
from __future__ import annotations

import math
import os

import numpy as np


# ----------------------------------------------------------------------------- numbers
def jsonable(obj):
    """Arrays -> lists, NumPy scalars -> Python, NaN/inf -> None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


def _fmt(x):
    """A number for the report: 4 decimals, scientific when tiny, '—' for None (NaN)."""
    if x is None:
        return "—"
    if x != 0 and abs(x) < 1e-3:
        return f"{x:.3e}"
    return f"{x:.4f}"


def _better(model, base, higher_is_better):
    if model is None or base is None:
        return "—"
    if model == base:
        return "tie"
    return "yes" if (model > base) == higher_is_better else "no"


# (key in the section, label, baseline key, higher is better)
_ONE_STEP_ROWS = [
    ("mse", "MSE per pixel", "copy_last_mse", False),
    ("mse_per_frame", "MSE per frame", "copy_last_mse_per_frame", False),
    ("mae", "MAE per pixel", "copy_last_mae", False),
    ("mae_per_frame", "MAE per frame", "copy_last_mae_per_frame", False),
    ("psnr", "PSNR (dB)", "copy_last_psnr", True),
    ("ssim", "SSIM", "copy_last_ssim", True),
    ("bce_per_frame", "BCE per frame (nats)", "copy_last_bce_per_frame", False),
    ("epe", "flow EPE (image px)", "zero_flow_epe", False),
    ("epe_t2", "flow EPE, steps t ≥ 2 (image px)", "zero_flow_epe_t2", False),
]


def _accuracy_rows(one):
    """Rows of the flow accuracies present, ``acc@0.5`` … (thresholds of ``evaluate``)."""
    return [(k, f"flow accuracy, EPE < {k[len('acc@'):]} px", f"zero_flow_{k}", True)
            for k in one if k.startswith("acc@")]


# ----------------------------------------------------------------------------- report.md
def write_report(path, result):
    """``report.md`` from the dict of ``evaluate.evaluate_checkpoint`` (already JSON-ready)."""
    one, roll, lab = result["one_step"], result["rollout"], result["label_propagation"]
    info, data, figs = result["model"], result["data"], result["figures"]
    lines = ["# stvae_np evaluation", "",
             f"- model: {info['checkpoint'] or '(in memory)'}, preset `{info['preset']}`, "
             f"{info['parameters']:,} parameters, {info['frame']} frames",
             f"- data: {data['description']}; {data['clips']} clips of {data['frames']} frames",
             "- baselines: **copy-last** frame (pixels), **zero flow** (flow), "
             "the last **context** frame repeated (rollout), **mask t kept** (labels)",
             "", "## Metrics", "", "| metric | model | baseline | better? |", "|---|---:|---:|:---:|"]

    def row(label, m, b, higher):
        lines.append(f"| {label} | {_fmt(m)} | {_fmt(b)} | {_better(m, b, higher)} |")

    for key, label, base, higher in _ONE_STEP_ROWS + _accuracy_rows(one):
        if key in one:
            row(f"one-step {label}", one[key], one[base], higher)
    if "flow_gain_t2" in one:
        lines.append(f"| one-step flow gain ⟨f, g⟩ / ⟨g, g⟩, t ≥ 2 (1 = true speed) | "
                     f"{_fmt(one['flow_gain_t2'])} | 0 (zero flow) | — |")
        lines.append(f"| one-step flow angle to the true flow, t ≥ 2 (degrees) | "
                     f"{_fmt(one['angular_error_t2'])} | 90 (zero flow) | — |")
    if "classical_epe_t2" in one:
        lines.append(f"| classical reference (Horn–Schunck), flow EPE t ≥ 2 | "
                     f"{_fmt(one['classical_epe_t2'])} | {_fmt(one['zero_flow_epe_t2'])} | "
                     f"model {_better(one['epe_t2'], one['classical_epe_t2'], False)} |")
        lines.append(f"| classical reference, gain / angle t ≥ 2 | {_fmt(one['classical_flow_gain_t2'])} / "
                     f"{_fmt(one['classical_angular_error_t2'])}° | — | — |")
    if "skipped" not in roll:
        span = f"{roll['context']} → {roll['future']}"
        row(f"rollout {span}, MSE per pixel (mean over horizons)", roll["mean_mse"],
            roll["copy_last_mean_mse"], False)
        row(f"rollout {span}, SSIM (mean over horizons)", roll["mean_ssim"],
            roll["copy_last_mean_ssim"], True)
    if "skipped" not in lab:
        row("label propagation, mean IoU of mask t+1", lab["iou"], lab["copy_last_iou"], True)

    notes = [f"one-step flow metrics skipped: {one['flow_skipped']}"] if "flow_skipped" in one else []
    notes += [f"rollout skipped: {roll['skipped']}"] if "skipped" in roll else []
    notes += [f"label propagation skipped: {lab['skipped']}"] if "skipped" in lab else []
    if notes:
        lines += [""] + [f"*Note: {n}.*" for n in notes]

    if "skipped" not in roll:
        lines += ["", f"## Rollout per horizon ({roll['context']} context frames)", "",
                  "| horizon | MSE model | MSE copy-last | SSIM model | SSIM copy-last |",
                  "|---:|---:|---:|---:|---:|"]
        for k, h in enumerate(roll["horizon"]):
            lines.append(f"| {h} | {_fmt(roll['mse'][k])} | {_fmt(roll['copy_last_mse'][k])} | "
                         f"{_fmt(roll['ssim'][k])} | {_fmt(roll['copy_last_ssim'][k])} |")

    captions = {"rollout_mse": "Rollout MSE per horizon", "rollout_ssim": "Rollout SSIM per horizon",
                "rollout": "Rollout strip (context, predictions, truth, |error|)",
                "flow": "One-step flow: predicted vs true",
                "masks": "Label propagation (green true, red propagated, blue dashed copy)"}
    if figs:
        lines += ["", "## Figures", ""]
        for key, name in figs.items():
            lines += [f"### {captions.get(key, key)}", "", f"![{key}]({name})", ""]
    from .runfolder import atomic_write
    atomic_write(path, "\n".join(lines).rstrip() + "\n")
    return path


# ----------------------------------------------------------------------------- figures
def write_figures(out_dir, clips, one_step_out, rollout_out, label_out, examples=2):
    """The PNGs of ``evaluate.evaluate_checkpoint``; returns {key: file name}.

    Args:
        one_step_out: (preds, flows) of ``evaluate.predict_clips``.
        rollout_out: (scores, predictions) of the rollout, or None when it was skipped.
        label_out: the propagated masks of frames 1 … T-1 (N, T-1, H, W), or None.
        examples: how many clips the figures show.
    """
    from . import viz
    frames, k = clips.frames, min(examples, len(clips.frames))
    figs = {}
    if rollout_out is not None:
        scores, roll_preds = rollout_out
        ctx, fut = scores["context"], scores["future"]
        for key, ylabel, name in (("mse", "MSE per pixel", "MSE"), ("ssim", "SSIM", "SSIM")):
            viz.plot_curves(os.path.join(out_dir, f"rollout_{key}.png"), scores["horizon"],
                            {"model": scores[key], "copy last context frame": scores[f"copy_last_{key}"]},
                            ylabel=ylabel, title=f"Rollout {ctx} → {fut}: {name} per horizon")
            figs[f"rollout_{key}"] = f"rollout_{key}.png"
        viz.plot_rollout(os.path.join(out_dir, "rollout.png"), frames[:k, :ctx],
                         np.clip(roll_preds[:k], 0, 1), frames[:k, ctx:ctx + fut], max_rows=k)
        figs["rollout"] = "rollout.png"
    if clips.flow is not None:
        mask = clips.masks[:k, 1:, 0] if clips.masks is not None else None
        # whole clips: x_t is frames[:, t]; flow step t's arrows go on frames[:, t + 1], where it lives
        viz.plot_flow_comparison(os.path.join(out_dir, "flow.png"), frames[:k], one_step_out[1][:k],
                                 clips.flow[:k], mask=mask)
        figs["flow"] = "flow.png"
    if label_out is not None:
        masks = clips.masks[:k, :, 0]
        viz.plot_masks(os.path.join(out_dir, "masks.png"), frames[:k], label_out[:k],
                       masks[:, 1:], masks[:, :-1], max_rows=k,
                       title="Label propagation: mask t warped by the predicted flow -> mask t+1")
        figs["masks"] = "masks.png"
    return figs


def summary_lines(result):
    """The few lines ``python -m stvae_np.evaluate`` prints: model beside baseline."""
    one, roll, lab = result["one_step"], result["rollout"], result["label_propagation"]
    lines = [f"one-step MSE {_fmt(one['mse'])} (copy-last {_fmt(one['copy_last_mse'])}), "
             f"SSIM {_fmt(one['ssim'])} (copy-last {_fmt(one['copy_last_ssim'])})"]
    if "epe_t2" in one:
        lines.append(f"flow EPE t ≥ 2 {_fmt(one['epe_t2'])} px (zero flow {_fmt(one['zero_flow_epe_t2'])}, "
                     f"classical {_fmt(one.get('classical_epe_t2'))}), gain {_fmt(one['flow_gain_t2'])}, "
                     f"angle {_fmt(one['angular_error_t2'])}°")
    elif "epe" in one:
        lines.append(f"flow EPE {_fmt(one['epe'])} px (zero flow {_fmt(one['zero_flow_epe'])})")
    if "skipped" not in roll:
        lines.append(f"rollout {roll['context']} → {roll['future']}: mean MSE "
                     f"{_fmt(roll['mean_mse'])} (copy-last {_fmt(roll['copy_last_mean_mse'])})")
    if "skipped" not in lab:
        lines.append(f"label propagation IoU {_fmt(lab['iou'])} (copy mask {_fmt(lab['copy_last_iou'])})")
    return lines
