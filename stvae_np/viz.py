"""Pictures of what the model does: loss curves, predicted frames, flow fields, masks.

Every ``plot_*`` function takes NumPy (or CuPy) arrays, writes one PNG (parent folders created)
and returns its path. Figures use ``Figure`` + ``FigureCanvasAgg``, never ``pyplot``: no GUI backend,
nothing left in a notebook, no leak over many calls. Frames are grey in [0, 1]; flows are backward,
``(2, H, W)`` in pixels, x first, and figures show the MOTION, ``−flow``, coloured with the Middlebury
wheel (Baker et al., IJCV 2011; the conventions: docs/DESIGN.md section 2).
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .backend import asnumpy
from .metrics import iou, upsample_flow

MOTION_NOTE = "arrows: motion = −flow"

# --------------------------------------------------------------------- colour wheel
# (length of the ramp, the channel that ramps, up (+1) or down (−1), the channel held at 255)
_WHEEL_RAMPS = (
    (15, 1, +1, 0),   # RY: red 255, green 0 -> 255
    (6, 0, -1, 1),    # YG: green 255, red 255 -> 0
    (4, 2, +1, 1),    # GC: green 255, blue 0 -> 255
    (11, 1, -1, 2),   # CB: blue 255, green 255 -> 0
    (13, 0, +1, 2),   # BM: blue 255, red 0 -> 255
    (6, 2, -1, 0),    # MR: red 255, blue 255 -> 0
)


def make_color_wheel() -> np.ndarray:
    """The Middlebury colour wheel: (55, 3) float64, RGB in [0, 255]: six ramps red → yellow → green →
    cyan → blue → magenta → red; entry i of a ramp of length n is ``floor(255 · i / n)``."""
    rows = []
    for n, ramp_channel, direction, full_channel in _WHEEL_RAMPS:
        ramp = np.floor(255.0 * np.arange(n) / n)
        block = np.zeros((n, 3))
        block[:, full_channel] = 255.0
        block[:, ramp_channel] = ramp if direction > 0 else 255.0 - ramp
        rows.append(block)
    return np.concatenate(rows, axis=0)


_WHEEL = make_color_wheel()


def flow_to_color(flow, max_mag=None) -> np.ndarray:
    """Colour-code a flow field by the MOTION it describes (``−flow``): (H, W, 3) uint8 RGB.

    (u, v) = −flow, r = √(u² + v²) / max_mag, a = atan2(−v, −u) / π ∈ [−1, 1], wheel position
    k = (a + 1)/2 · (55 − 1); colour = the wheel interpolated at k, then ``1 − r · (1 − colour)`` for
    r ≤ 1 and ``0.75 · colour`` beyond ``max_mag``.

    Args:
        flow: (2, H, W) backward flow in pixels (NaN read as zero).
        max_mag: the motion length of full saturation (default: the field's largest);
            pass the same value for two fields to compare their colours.
    """
    flow = np.nan_to_num(_host(flow))
    if flow.ndim != 3 or flow.shape[0] != 2:
        raise ValueError(f"flow must have shape (2, H, W), got {flow.shape}")
    u, v = -flow[0], -flow[1]                      # colour the motion, not the flow
    mag = np.sqrt(u * u + v * v)
    max_mag = float(mag.max() if max_mag is None else max_mag)
    if not np.isfinite(max_mag) or max_mag <= 1e-12:   # an all-zero field: all white
        max_mag = 1.0
    rad = mag / max_mag

    n_colors = _WHEEL.shape[0]
    a = np.arctan2(-v, -u) / np.pi                 # the Middlebury code's convention
    k = (a + 1.0) / 2.0 * (n_colors - 1)           # [0, 54]
    k0 = np.floor(k).astype(np.int64)
    k1 = (k0 + 1) % n_colors
    frac = (k - k0)[..., None]
    col = ((1.0 - frac) * _WHEEL[k0] + frac * _WHEEL[k1]) / 255.0   # (H, W, 3)

    col = np.where((rad <= 1.0)[..., None], 1.0 - rad[..., None] * (1.0 - col), 0.75 * col)
    return np.floor(255.0 * np.clip(col, 0.0, 1.0) + 0.5).astype(np.uint8)


def color_wheel_image(size: int = 64) -> np.ndarray:
    """A legend for ``flow_to_color``: (size, size, 3) uint8; the pixel at offset (dx, dy)
    from the centre has the colour of a motion (dx, dy), the rim is ``max_mag``."""
    c = (size - 1) / 2.0
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    motion = np.stack([xs - c, ys - c])                    # (2, size, size)
    radius = max(c, 1e-12)
    img = flow_to_color(-motion, max_mag=radius)           # flow = −motion
    img[np.hypot(xs - c, ys - c) > radius] = 255           # outside the rim
    return img


# --------------------------------------------------------------------- small helpers
def _new_figure(figsize) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)                           # attach an Agg canvas: PNG with no GUI
    return fig


def _save(fig: Figure, path, dpi=100) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        fig.savefig(path, dpi=dpi, format="png")
    finally:
        fig.clear()                                # drop the artists' references at once
    return path


def _host(a) -> np.ndarray:
    """Any array (NumPy, CuPy, list) as a float64 NumPy array."""
    return np.asarray(asnumpy(a), dtype=np.float64)


def _lead(a, ndim) -> np.ndarray:
    """``a`` with axes of length 1 put in front until it has ``ndim`` axes."""
    return a.reshape((1,) * (ndim - a.ndim) + a.shape)


def _as_clips(frames, name="frames") -> np.ndarray:
    """(N, T, C, H, W), (T, C, H, W) with C in {1, 3}, (T, H, W) or (H, W) -> (N, T, H, W)
    float64 grey (channels averaged)."""
    a = _host(frames)
    if a.ndim == 4:                                # one clip (T, C, H, W)
        if a.shape[1] not in (1, 3):
            raise ValueError(f"{name}: a 4-D array is read as (T, C, H, W) with C = 1 (or 3), "
                             f"got shape {a.shape}; pass clips as (N, T, 1, H, W)")
        a = a[None]
    if a.ndim == 5:
        return a[:, :, 0] if a.shape[2] == 1 else a.mean(axis=2)
    if a.ndim not in (2, 3):
        raise ValueError(f"{name}: expected (N,T,C,H,W), (T,C,H,W), (T,H,W) or (H,W), got shape {a.shape}")
    return _lead(a, 4)


def _as_flows(flow, name="flow") -> np.ndarray:
    """(N, T, 2, H, W), (T, 2, H, W) or (2, H, W) -> (N, T, 2, H, W) float64."""
    a = _lead(_host(flow), 5)
    if a.ndim != 5 or a.shape[2] != 2:
        raise ValueError(f"{name}: expected (N,T,2,H,W), (T,2,H,W) or (2,H,W), got shape {np.shape(flow)}")
    return a


def _as_masks(masks, name="masks") -> np.ndarray:
    """(N, T, 1, H, W), (N, T, H, W), (T, H, W) or (H, W) -> (N, T, H, W) float64."""
    a = _host(masks)
    if a.ndim == 5:
        return a.max(axis=2)                       # any object channel counts
    if a.ndim not in (2, 3, 4):
        raise ValueError(f"{name}: expected (N,T,[1,]H,W), (T,H,W) or (H,W), got {a.shape}")
    return _lead(a, 4)


def _show_grey(ax, img, vmin=0.0, vmax=1.0, cmap="gray"):
    ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    _bare(ax)


def _bare(ax):
    """No ticks, no frame, but keep the y label (row labels live there)."""
    ax.set(xticks=[], yticks=[])
    ax.spines[:].set_visible(False)


def _frame_indices(t_total: int, max_frames: int) -> np.ndarray:
    """At most ``max_frames`` evenly spread indices into range(t_total), first and last kept."""
    if t_total <= max_frames:
        return np.arange(t_total)
    return np.unique(np.round(np.linspace(0, t_total - 1, max_frames)).astype(int))


# --------------------------------------------------------------------- plots
def plot_loss_curve(path, steps, losses, eval_steps=None, eval_mse=None, baseline_mse=None,
                    smooth: int | None = None, title: str = "Training loss", eval_epe=None,
                    zero_flow_epe=None, classical_epe=None) -> str:
    """Training loss against step on a log y axis.

    Args:
        steps: (S,) step numbers; losses: (S,) training losses.
        eval_steps, eval_mse: (E,) optional held-out next-frame MSE, drawn as points.
        baseline_mse: optional float, the copy-last-frame MSE (ŷ_t = x_t), a dashed horizontal line.
        smooth: moving-average window (raw curve faint behind); default about S/50, none below 100 points.
        eval_epe: (E,) optional held-out flow EPE (t ≥ 2) at ``eval_steps``, in a second
            panel with ``zero_flow_epe`` and ``classical_epe`` (floats) as references.
    """
    steps, losses = _host(steps).ravel(), _host(losses).ravel()
    if steps.shape != losses.shape:
        raise ValueError(f"steps {steps.shape} and losses {losses.shape} differ in length")
    tiny = 1e-12                                   # a log axis cannot show 0
    with_flow = eval_epe is not None and eval_steps is not None
    fig = _new_figure((12.0, 4.0) if with_flow else (7.0, 4.0))
    ax = fig.add_subplot(1, 2, 1) if with_flow else fig.add_subplot(1, 1, 1)
    if with_flow:
        _plot_flow_curve(fig.add_subplot(1, 2, 2), eval_steps, eval_epe, zero_flow_epe, classical_epe)
    if smooth is None:
        smooth = len(losses) // 50 if len(losses) >= 100 else 1
    if smooth > 1 and len(losses) >= smooth:
        ax.plot(steps, np.maximum(losses, tiny), color="C0", alpha=0.25, lw=0.8)
        smoothed = np.convolve(losses, np.ones(smooth) / smooth, mode="valid")
        ax.plot(steps[smooth - 1:], np.maximum(smoothed, tiny), color="C0", lw=1.6,
                label=f"train loss (moving mean of {smooth})")
    elif len(losses):
        ax.plot(steps, np.maximum(losses, tiny), color="C0", lw=1.2, label="train loss")
    if eval_steps is not None and eval_mse is not None:
        ax.plot(_host(eval_steps).ravel(), np.maximum(_host(eval_mse).ravel(), tiny), "o-",
                color="C1", ms=4, lw=1.0, label="eval MSE")
    if baseline_mse is not None:
        ax.axhline(max(float(baseline_mse), tiny), color="C3", ls="--", lw=1.2,
                   label=f"copy-last-frame MSE = {float(baseline_mse):.3g}")
    ax.set(yscale="log", xlabel="step", ylabel="loss", title=title)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=9)
    return _save(fig, path)


def _plot_flow_curve(ax, steps, epe, zero_flow_epe=None, classical_epe=None):
    """Held-out flow EPE (t ≥ 2) against training step, beside its two references."""
    ax.plot(_host(steps).ravel(), _host(epe).ravel(), "o-", color="C2", ms=4, lw=1.2,
            label="model flow EPE, t ≥ 2")
    if zero_flow_epe is not None:
        ax.axhline(float(zero_flow_epe), color="C3", ls="--", lw=1.2,
                   label=f"zero flow = {float(zero_flow_epe):.3g} px")
        ax.axhline(0.5 * float(zero_flow_epe), color="C3", ls=":", lw=1.0, label="half the zero-flow EPE")
    if classical_epe is not None:
        ax.axhline(float(classical_epe), color="C4", ls="-.", lw=1.2,
                   label=f"Horn–Schunck = {float(classical_epe):.3g} px")
    ax.set_ylim(bottom=0)
    ax.set(xlabel="step", ylabel="EPE (image px)", title="Held-out flow error")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)


def plot_predictions(path, inputs, preds, targets, max_frames: int = 8,
                     max_rows: int = 2, title: str | None = None) -> str:
    """Next-frame predictions next to their inputs and targets.

    Per clip (at most ``max_rows``) four rows: x_t, ŷ_t, x_{t+1} and |ŷ_t − x_{t+1}|,
    at most ``max_frames`` time steps spread over the clip.

    Args:
        inputs: (N, T', 1, H, W) the frames x_0 … x_{T'-1} the model read (or whole clips of T' + 1 frames).
        preds: (N, T', 1, H, W) predictions of x_1 … x_{T'} (``STVAE.predict``'s first output).
        targets: (N, T', 1, H, W) the true x_1 … x_{T'} (or the whole clips).
    """
    preds = _as_clips(preds, "preds")
    inputs = _as_clips(inputs, "inputs")
    targets = _as_clips(targets, "targets")
    t_pred = preds.shape[1]
    if inputs.shape[1] == t_pred + 1:
        inputs = inputs[:, :-1]
    if targets.shape[1] == t_pred + 1:
        targets = targets[:, 1:]
    if inputs.shape[:2] != preds.shape[:2] or targets.shape[:2] != preds.shape[:2]:
        raise ValueError(f"inputs {inputs.shape}, preds {preds.shape} and targets "
                         f"{targets.shape} do not line up as (N, T', H, W)")
    n_clips = min(preds.shape[0], max_rows)
    ts = _frame_indices(t_pred, max_frames)
    err = np.abs(preds[:n_clips][:, ts] - targets[:n_clips][:, ts])
    err_max = max(float(err.max()), 1e-6)

    n_cols = len(ts)
    fig = _new_figure((1.3 * n_cols + 0.8, 1.35 * 4 * n_clips + 0.5))
    axes = fig.subplots(4 * n_clips, n_cols, squeeze=False)
    for n in range(n_clips):
        mse = float(np.mean((preds[n] - targets[n]) ** 2))
        for j, t in enumerate(ts):
            for r, img in enumerate((inputs[n, t], preds[n, t], targets[n, t])):
                _show_grey(axes[4 * n + r, j], img)
            _show_grey(axes[4 * n + 3, j], err[n, j], vmax=err_max)
            if n == 0:
                axes[0, j].set_title(f"t = {t}", fontsize=9)
        labels = (f"clip {n}\ninput $x_t$", "pred $\\hat{y}_t$", "truth $x_{t+1}$",
                  f"|error| (0–{err_max:.2g})\nMSE {mse:.2e}")
        for r, label in enumerate(labels):
            axes[4 * n + r, 0].set_ylabel(label, fontsize=8)
    fig.suptitle(title or "Next-frame prediction: input, prediction, truth, |error|", fontsize=11)
    return _save(fig, path)


def _choose_examples(n_clips, n_steps, max_examples):
    """(clip, t) pairs: one per clip first, at the middle step, then more steps."""
    first = [(n, n_steps // 2) for n in range(n_clips)]
    rest = [(n, t) for t in range(n_steps) for n in range(n_clips) if t != n_steps // 2]
    return (first + rest)[:max_examples]


def _quiver_motion(ax, flow, keep, step, scale):
    """Arrows of ``scale`` × the motion (−flow) at every ``step``-th pixel where ``keep``."""
    h, w = flow.shape[1:]
    ys, xs = np.mgrid[step // 2:h:step, step // 2:w:step]
    u, v = -flow[0][ys, xs], -flow[1][ys, xs]
    sel = keep[ys, xs] & (np.hypot(u, v) > 1e-6)
    if not sel.any():
        return
    # shaft and heads in pixels, proportional to the spacing: a short arrow keeps a visible shaft
    ax.quiver(xs[sel], ys[sel], u[sel], v[sel], angles="xy", scale_units="xy",
              scale=1.0 / scale, units="xy", width=0.15 * step, headwidth=3.0,
              headlength=3.0, headaxislength=2.6, minlength=0.3, color="red")


def plot_flow_comparison(path, frames, pred_flow, true_flow, mask=None, step: int = 2, max_examples: int = 3,
                         examples: Sequence[tuple[int, int]] | None = None, max_mag: float | None = None,
                         arrow_scale: float | None = None, title: str | None = None) -> str:
    """Predicted against true flow for a few (clip, t) examples.

    Each row: the frame x_t; the predicted and true flow colour-coded (one ``max_mag``);
    the predicted and true motion as arrows over x_{t+1} (where a backward flow lives);
    the row label gives the end-point error in image pixels (inside the mask if given).

    Args:
        frames: (N, T, 1, H, W) clips (or (T, 1, H, W)).
        pred_flow: (N, T-1, 2, h, w) the model's flow in memory-grid pixels; when h < H it
            is brought to the image grid with ``metrics.upsample_flow(·, H // h)``.
        true_flow: (N, T-1, 2, H, W) ground-truth backward flow in image pixels; step t maps x_t to x_{t+1}.
        mask: optional object masks, (N, T, [1,] H, W) per frame or (N, T-1, [1,] H, W) per flow step,
            restricting arrows and error (without: arrows where either flow is non-zero, error on all pixels).
        max_examples: how many (clip, t) rows; ``examples`` picks them explicitly; step: arrow spacing in px.
        max_mag: the motion length of full colour saturation (default: the largest shown, predicted or true).
        arrow_scale: arrows are this many times their true length (default: the longest spans ~2 grid steps).
    """
    frames = _as_clips(frames, "frames")
    pred = _as_flows(pred_flow, "pred_flow")
    true = _as_flows(true_flow, "true_flow")
    H, W = true.shape[-2:]
    if pred.shape[-2:] != (H, W):
        factor = H // pred.shape[-2]
        if factor * pred.shape[-2] != H or factor * pred.shape[-1] != W:
            raise ValueError(f"pred_flow grid {pred.shape[-2:]} does not divide the true flow grid {(H, W)}")
        pred = upsample_flow(pred, factor)           # nearest, values × factor
    if pred.shape != true.shape:
        raise ValueError(f"pred_flow {pred.shape} and true_flow {true.shape} differ")
    n_clips, n_steps = true.shape[:2]
    masks = None if mask is None else _as_masks(mask, "mask") > 0.5
    if masks is not None:
        if masks.shape[1] == n_steps + 1:            # per frame: the flow lives on x_{t+1}
            masks = masks[:, 1:]
        if masks.shape[:2] != (n_clips, n_steps) or masks.shape[-2:] != (H, W):
            raise ValueError(f"mask {np.shape(mask)} does not match the flow {true.shape}")
    if examples is None:
        examples = _choose_examples(n_clips, n_steps, max_examples)
    examples = [(int(n), int(t)) for n, t in examples]
    if not examples:
        raise ValueError("no examples to show")

    keeps = [masks[n, t] if masks is not None                  # else: where either flow moves
             else (np.hypot(*pred[n, t]) > 1e-3) | (np.hypot(*true[n, t]) > 1e-3)
             for n, t in examples]
    mags = [(np.hypot(*f[n, t]), keep) for (n, t), keep in zip(examples, keeps) for f in (pred, true)]
    biggest = max(float(m.max()) for m, _ in mags)
    if max_mag is None:
        max_mag = biggest if biggest > 1e-6 else 1.0
    if arrow_scale is None:                        # the longest drawn arrow ≈ 1.6 steps
        longest = max(float(m[k].max()) if k.any() else 0.0 for m, k in mags)
        arrow_scale = max(1.0, 1.6 * step / longest) if longest > 1e-6 else 1.0

    n_rows = len(examples)
    fig = _new_figure((2.2 * 5 + 1.6, 2.35 * n_rows + 0.6))
    grid = fig.add_gridspec(n_rows, 6, width_ratios=[1, 1, 1, 1, 1, 0.7])
    col_titles = ("frame $x_t$", "predicted flow\n(colour = motion)", "true flow\n(colour = motion)",
                  f"predicted motion on $x_{{t+1}}$\n(arrows ×{arrow_scale:.3g})",
                  f"true motion on $x_{{t+1}}$\n(arrows ×{arrow_scale:.3g})")
    for r, ((n, t), keep) in enumerate(zip(examples, keeps)):
        axes = [fig.add_subplot(grid[r, c]) for c in range(5)]
        _show_grey(axes[0], frames[n, t])
        for ax, f in ((axes[1], pred[n, t]), (axes[2], true[n, t])):
            ax.imshow(flow_to_color(f, max_mag), interpolation="nearest")
            _bare(ax)
            ax.spines[:].set_visible(True)         # zero flow is white: frame the panel
            ax.spines[:].set_color("0.6")
        for ax, f in ((axes[3], pred[n, t]), (axes[4], true[n, t])):
            _show_grey(ax, frames[n, min(t + 1, frames.shape[1] - 1)])
            _quiver_motion(ax, f, keep, step, arrow_scale)
            ax.set(xlim=(-0.5, W - 0.5), ylim=(H - 0.5, -0.5))
        epe = np.hypot(*(pred[n, t] - true[n, t]))          # end-point error per pixel
        in_mask = masks is not None and keep.any()
        epe_val = float(epe[keep].mean() if in_mask else epe.mean())
        axes[0].set_ylabel(f"clip {n}, t = {t}\nEPE {epe_val:.2f} px\n"
                           f"({'in mask' if in_mask else 'all pixels'})", fontsize=8)
        if r == 0:
            for ax, name in zip(axes, col_titles):
                ax.set_title(name, fontsize=9)
            leg = fig.add_subplot(grid[0, 5])
            leg.imshow(color_wheel_image(65), interpolation="bilinear")
            leg.set_title(f"motion colour\nrim = {max_mag:.2g} px", fontsize=8)
            leg.set_axis_off()
        else:
            fig.add_subplot(grid[r, 5]).set_axis_off()
    fig.suptitle(title or f"Flow: predicted vs true (backward flow; colours and {MOTION_NOTE})", fontsize=11)
    return _save(fig, path)


def plot_rollout(path, context, preds, targets=None, max_rows: int = 2, max_frames: int = 12,
                 show_error: bool = True, title: str | None = None) -> str:
    """A multi-step rollout as a strip: context frames, then predicted vs true future.

    Per clip: the K context frames then the predictions; below, the true future frames
    and, with ``show_error``, their absolute difference.

    Args:
        context: (N, K, 1, H, W) the frames the model read.
        preds: (N, F, 1, H, W) ``STVAE.rollout``'s output, frames K … K+F-1.
        targets: optional (N, F, 1, H, W) the true frames K … K+F-1.
        max_frames: at most this many future frames (the first) and context frames (the last).
    """
    context = _as_clips(context, "context")
    preds = _as_clips(preds, "preds")
    targets = None if targets is None else _as_clips(targets, "targets")
    if targets is not None and targets.shape[:2] != preds.shape[:2]:
        raise ValueError(f"targets {targets.shape} and preds {preds.shape} differ")
    n_clips = min(preds.shape[0], context.shape[0], max_rows)
    ctx, fut = context[:, -max_frames:], preds[:, :max_frames]
    k, f = ctx.shape[1], fut.shape[1]
    k0 = context.shape[1] - k                      # index of the first shown context frame
    rows_per = 1 + (targets is not None) + (targets is not None and show_error)
    fig = _new_figure((1.15 * (k + f) + 0.9, 1.3 * rows_per * n_clips + 0.6))
    axes = fig.subplots(rows_per * n_clips, k + f, squeeze=False)
    if targets is not None:
        err = np.abs(fut[:n_clips] - targets[:n_clips, :f])
        err_max = max(float(err.max()), 1e-6)
    for n in range(n_clips):
        base = rows_per * n
        for j in range(k):
            _show_grey(axes[base, j], ctx[n, j])
            for r in range(1, rows_per):
                axes[base + r, j].set_axis_off()
            if n == 0:
                axes[0, j].set_title(f"ctx {k0 + j}", fontsize=8)
        for j in range(f):
            c = k + j
            _show_grey(axes[base, c], fut[n, j])
            for spine in axes[base, c].spines.values():   # a coloured frame marks predictions
                spine.set(visible=True, color="C1", linewidth=1.5)
            if targets is not None:
                _show_grey(axes[base + 1, c], targets[n, j])
                if show_error:
                    _show_grey(axes[base + 2, c], err[n, j], vmax=err_max)
            if n == 0:
                axes[0, c].set_title(f"+{j + 1} (t={k0 + k + j})", fontsize=8)
        axes[base, 0].set_ylabel(f"clip {n}\ncontext → pred", fontsize=8)
        if targets is not None:
            axes[base + 1, k].set_ylabel("truth", fontsize=8)
            if show_error:
                axes[base + 2, k].set_ylabel(f"|error|\n(0–{err_max:.2g})", fontsize=8)
    fig.suptitle(title or "Rollout: context, then the model's own predictions (orange frame)", fontsize=10)
    return _save(fig, path)


def plot_curves(path, xs, curves: Mapping[str, Sequence[float]], xlabel: str = "horizon",
                ylabel: str = "MSE", title: str = "", logy: bool = False, markers: bool = True) -> str:
    """Several curves over one x axis (e.g. per-horizon MSE of model and baselines).

    Args:
        xs: (K,) x values shared by every curve; curves: label -> (K,) y values, drawn in that order.
        logy: log-scale y axis.
    """
    xs = _host(xs).ravel()
    fig = _new_figure((6.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    for i, (label, ys) in enumerate(curves.items()):
        ys = _host(ys).ravel()
        if ys.shape != xs.shape:
            raise ValueError(f"curve {label!r} has {ys.shape[0]} points, xs has {xs.shape[0]}")
        ax.plot(xs, ys, marker="o" if markers else None, ms=4, lw=1.4, color=f"C{i % 10}", label=str(label))
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(True, which="both", alpha=0.3)
    if curves:
        ax.legend(fontsize=9)
    return _save(fig, path)


def plot_masks(path, frames, masks_pred, masks_true, masks_copy=None, max_frames: int = 8,
               max_rows: int = 2, threshold: float = 0.5, title: str | None = None) -> str:
    """Object masks carried forward by the model, drawn as contours over the frames.

    Green = true, red = propagated by the model, dashed blue = copy-last-mask; each
    panel's title gives IoU(pred, true) (and the copy baseline's).

    Args:
        frames: (N, T, 1, H, W) the clips.
        masks_pred, masks_true, masks_copy: (N, T', [1,] H, W) binary, soft in [0, 1] or
            integer labels; a pixel is "in" when its value > ``threshold``. When T' < T
            the masks belong to the last T' frames (e.g. masks of frames 1 … T-1).
    """
    frames = _as_clips(frames, "frames")
    mp = _as_masks(masks_pred, "masks_pred") > threshold
    mt = _as_masks(masks_true, "masks_true") > threshold
    mc = None if masks_copy is None else _as_masks(masks_copy, "masks_copy") > threshold
    for name, m in (("masks_true", mt), ("masks_copy", mc)):
        if m is not None and m.shape != mp.shape:
            raise ValueError(f"{name} {m.shape} and masks_pred {mp.shape} differ")
    t_masks = mp.shape[1]
    offset = frames.shape[1] - t_masks
    if offset < 0 or mp.shape[-2:] != frames.shape[-2:]:
        raise ValueError(f"masks {mp.shape} do not fit the frames {frames.shape}")
    n_clips = min(frames.shape[0], mp.shape[0], max_rows)
    ts = _frame_indices(t_masks, max_frames)
    n_cols = len(ts)
    fig = _new_figure((1.5 * n_cols + 0.8, 1.75 * n_clips + 1.0))
    axes = fig.subplots(n_clips, n_cols, squeeze=False)
    for n in range(n_clips):
        for j, t in enumerate(ts):
            ax = axes[n, j]
            _show_grey(ax, frames[n, t + offset])
            for m, color, ls in ((mt, "limegreen", "solid"), (mp, "red", "solid"),
                                 (mc, "deepskyblue", "dashed")):
                if m is not None and m[n, t].any() and not m[n, t].all():
                    ax.contour(m[n, t].astype(float), levels=[0.5], colors=[color],
                               linewidths=1.2, linestyles=ls)
            label = f"t={t + offset}\nIoU {float(iou(mp[n, t], mt[n, t])):.2f}"
            if mc is not None:
                label += f" (copy {float(iou(mc[n, t], mt[n, t])):.2f})"
            ax.set_title(label, fontsize=7)
        axes[n, 0].set_ylabel(f"clip {n}", fontsize=8)
    handles = [Line2D([], [], color="limegreen", lw=1.5, label="true"),
               Line2D([], [], color="red", lw=1.5, label="propagated (model)")]
    if mc is not None:
        handles.append(Line2D([], [], color="deepskyblue", lw=1.5, ls="--", label="copy last mask"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8)
    fig.suptitle(title or "Mask propagation", fontsize=11)
    return _save(fig, path)

