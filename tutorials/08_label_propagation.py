# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · Label propagation with the predicted flow
#
# The paper's proposed use of the autoencoder beyond prediction: its flow says where
# every pixel of the next frame comes from, so it can carry **labels** (here, the object
# mask) from frame t to frame t+1 without looking at any label of t+1. That would
# turn one labelled frame into labels for its neighbours (weak supervision for
# segmentation).
#
# The recipe, for each step t:
#
# 1. the model reads x_0 … x_t and outputs T_t (16×16 memory grid, memory pixels);
# 2. `metrics.upsample_flow(T_t, 2)` brings it to the 32×32 image grid: each memory
#    pixel becomes a 2×2 block and the values are doubled (one memory pixel is two image
#    pixels);
# 3. `sampler.bilinear_forward` warps the mask of frame t along it, the same backward
#    warp the model applies to its features: `m̂_{t+1}(p) = bilinear(m_t, p + T_t(p))`;
# 4. threshold at 0.5 and compare with the true mask of t+1 by intersection over union,
#    `IoU = |A ∩ B| / |A ∪ B|` (`metrics.iou`).
#
# Two references: **copying** the mask of frame t (no motion at all), and propagating
# with the **true** flow of the synthetic clips (what a perfect flow would give).

# %%
import _setup  # noqa: F401
from _setup import FIGURES, RUNS, plt, show, show_png

import sys

import numpy as np
from matplotlib.ticker import MaxNLocator

from stvae_np import checkpoint, metrics, viz
from stvae_np.data import load_eval_clips
from stvae_np.evaluate import predict_clips
from stvae_np.gradcheck import numerical_gradient, rel_error
from stvae_np.sampler import bilinear_backward, bilinear_forward, flow_to_grid
from stvae_np.train import main


# %% [markdown]
# ## 1. A trained model
#
# Tutorial 7 leaves a checkpoint in `tutorials/runs/07_training/`. Without it, the cell
# trains the tiny preset briefly in the same way (under a minute; a rougher model).

# %%
CKPT = RUNS / "07_training" / "checkpoint.npz"
if not CKPT.exists():
    out = RUNS / "08_label_propagation"
    print(f"{CKPT} not found: training briefly into {out}")
    status = main(["--preset", "tiny", "--steps", "100", "--batch-size", "16", "--seq-len", "10",
                   "--eval-clips", "8", "--eval-every", "1000", "--out", str(out),
                   "--no-figures", "--quiet", "--overwrite"])
    assert status == 0
    CKPT = out / "checkpoint.npz"
model, extra = checkpoint.load(CKPT, return_extra=True)
print(f"model: {CKPT} ({model.config.name}, trained {int(extra['step'])} steps)")

# %% [markdown]
# ## 2. One step: mask of t → mask of t+1
#
# The held-out clips of `python -m stvae_np.evaluate` (`data.load_eval_clips`): 32
# clips of 20 frames, test digits, a fixed seed. The masks are `Clips.masks`
# (N, T, 1, H, W): the pixels of either digit. Every step starts from the *true* mask of
# frame t, so errors do not accumulate here. A pixel is in the propagated mask when its
# warped coverage is at least 0.5. The score is the IoU of each frame's masks, averaged
# over frames (`metrics.iou(..., per_clip=True)` over the N·(T−1) frames), the number the
# evaluation report gives as "label propagation, mean IoU of mask t+1".

# %%
test, description = load_eval_clips("moving-mnist", model.config, 32, 20)
print("test clips:", description)
_, flows = predict_clips(model, test.frames)                 # (N, T-1, 2, 16, 16), memory pixels
flows_img = metrics.upsample_flow(flows, 2)                  # (N, T-1, 2, 32, 32), image pixels
n_clips, n_steps = flows.shape[:2]
size = test.frames.shape[-1]
print("flow on the memory grid", flows.shape, "-> image grid", flows_img.shape)


def warp_masks(masks, flow):
    """Backward-warp masks (..., H, W) along flows (..., 2, H, W) with the model's sampler."""
    m = masks.reshape(-1, 1, size, size).astype(np.float32)
    grid = flow_to_grid(flow.reshape(-1, 2, size, size).astype(np.float32))
    warped, _ = bilinear_forward(m, grid)
    return warped.reshape(masks.shape)


masks = test.masks[:, :, 0]                                  # (N, T, H, W) bool
mask_t, mask_next = masks[:, :-1], masks[:, 1:]
propagated = warp_masks(mask_t, flows_img) >= 0.5            # the model's flow
ideal = warp_masks(mask_t, test.flow) >= 0.5                 # the true flow
copied = mask_t                                              # no motion


def mean_iou(pred, true):
    """IoU of every frame's masks, averaged over the frames: (..., H, W) bool."""
    return float(metrics.iou(pred.reshape(-1, size, size), true.reshape(-1, size, size), per_clip=True))


for name, m in (("model flow", propagated), ("copy mask", copied), ("true flow", ideal)):
    print(f"one-step mean IoU with the mask of t+1, {name:10s}: {mean_iou(m, mask_next):.3f}")

# %%
show_png(viz.plot_masks(FIGURES / "08_propagated_masks.png", test.frames[:2], propagated[:2],
                        mask_next[:2], masks_copy=copied[:2], max_frames=6,
                        title="Mask of frame t carried to t+1 by the learned flow"))

# %% [markdown]
# Green: the true mask of frame t+1; red: the mask of frame t warped by the model's
# flow; dashed blue: the mask of frame t copied. Each panel shows frame t+1 (its title
# gives that index) and the IoU of the propagated mask (and of the copy) with the truth.
#
# The digits here are thin strokes (1–2 pixels at 32×32) moving about 1.8 pixels a
# frame, so copying the mask already loses much of the overlap, and any error in the
# flow of a pixel or two costs a lot of IoU.
#
# **Even the true flow is not perfect.** The flow is a *backward* flow defined on frame
# t+1, and it is zero on the background. A background pixel that the digit has just
# left reads the mask of frame t at the same place, where the digit still was: the
# propagated mask keeps a trail behind each digit. Backward warping cannot know that
# the pixel was uncovered (disocclusion); label-propagation methods detect such pixels
# with a forward-backward consistency check.

# %%
def iou_per_step(pred, true):
    return [mean_iou(pred[:, t], true[:, t]) for t in range(pred.shape[1])]


# Carrying a mask further: start from the true mask of frame 0 only, and warp the
# (thresholded) propagated mask again at every step.
chained = {"model flow": [masks[:, 0]], "true flow": [masks[:, 0]]}
for t in range(n_steps):
    for name, fl in (("model flow", flows_img), ("true flow", test.flow)):
        chained[name].append(warp_masks(chained[name][-1], fl[:, t]) >= 0.5)
chained = {k: np.stack(v[1:], axis=1) for k, v in chained.items()}          # masks of frames 1 … T-1
chained["copy mask"] = np.repeat(masks[:, :1], n_steps, axis=1)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
frames_ahead = np.arange(1, n_steps + 1)
for k, (name, one_step) in enumerate((("model flow", propagated), ("copy mask", copied),
                                      ("true flow", ideal))):
    ax1.plot(frames_ahead, iou_per_step(one_step, mask_next), "o-", ms=4, color=f"C{k}", label=name)
    ax2.plot(frames_ahead, iou_per_step(chained[name], mask_next), "o-", ms=4, color=f"C{k}", label=name)
ax1.set_title("one step: true mask of t → t+1")
ax1.set_xlabel("frame t+1")
ax1.set_ylabel("IoU with the true mask")
ax2.set_title("chained: true mask of frame 0 only")
ax2.set_xlabel("frame (steps from frame 0)")
for ax in (ax1, ax2):
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
show(fig, "08_iou")
for name in ("model flow", "copy mask", "true flow"):
    print(f"chained IoU at frame 1 / 5 / 10 / {n_steps}, {name:10s}: "
          + " / ".join(f"{v:.3f}" for v in np.array(iou_per_step(chained[name], mask_next))[[0, 4, 9, -1]]))

# %% [markdown]
# Left: one step at a time. At frame 1 the model has seen x_0 only, so it cannot know
# the motion yet and its flow is a guess (no better than copying); from the second step
# on, the learned flow beats copying (with tutorial 7's checkpoint), but stays well below
# the true flow. Right: carrying the mask from frame 0 alone, errors accumulate.
# With the true flow the trails pile up behind the digits; with the learned flow, in
# addition, every warp-and-threshold of a thin stroke by a fractional flow blurs it and
# the 0.5 threshold erodes it, so the mask shrinks away and ends below the copy. A mask
# propagated over many frames needs a sharper flow, occlusion handling and soft
# (un-thresholded) labels; with the rough one-minute model of tutorial 7 only the
# one-step gain is clear.

# %% [markdown]
# ## 3. Gradient check of the sampler with respect to the grid
#
# The flow, and so the mask propagation, is learned through the sampler's gradient with
# respect to its grid: inside a cell the output is linear in the source point, so
#
#     ∂out/∂x_s = Σ_q img(q) · (±wy_q)     (− for the left neighbours, + for the right)
#
# and likewise for y_s. It jumps where x_s or y_s crosses an integer, so the check keeps
# every source point at least 0.1 pixel away from integers (h = 10⁻⁵ is far smaller).
# `numerical_gradient` perturbs one grid coordinate at a time and contracts the change
# of the output with a random upstream gradient `dout`, which is exactly what
# `bilinear_backward(dout, cache)` claims to compute. A few points fall partly or wholly
# outside the map, where the zero padding must be respected too.

# %%
rng = np.random.default_rng(0)
img = rng.random((2, 3, 5, 6))                                        # (N, C, H, W), float64
offsets = rng.integers(-2, 3, size=(2, 2, 4, 4)) + rng.uniform(0.1, 0.9, size=(2, 2, 4, 4))
grid = flow_to_grid(offsets)                                          # (N, 2, 4, 4), off integers
out, cache = bilinear_forward(img, grid)
dout = rng.standard_normal(out.shape)
dimg, dgrid = bilinear_backward(dout, cache)
num_dgrid = numerical_gradient(lambda g: bilinear_forward(img, g)[0], grid, dout)
num_dimg = numerical_gradient(lambda a: bilinear_forward(a, grid)[0], img, dout)
outside = (grid[:, 0] < 0) | (grid[:, 0] > 5) | (grid[:, 1] < 0) | (grid[:, 1] > 4)
print(f"source points at least partly outside the map: {int(outside.sum())} of {outside.size}")
errors = {"dgrid": rel_error(dgrid, num_dgrid), "dimg": rel_error(dimg, num_dimg)}
print(f"relative error of d/dgrid {errors['dgrid']:.1e}, of d/dimg {errors['dimg']:.1e}")
print(f"gradient check: max relative error = {max(errors.values()):.1e}")
