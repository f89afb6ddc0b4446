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
# # 07 · Training on Moving MNIST
#
# `python -m stvae_np.train` is the training command. This tutorial calls the same
# function, `stvae_np.train.main(argv)`, for about a minute on the `tiny` preset, then
# loads the checkpoint it wrote and looks at what the model learned: the loss curve,
# next-frame predictions, and the flow it uses to make them, against the true flow of
# the synthetic clips.
#
# A minute of CPU training gives a **rough** model. The full default run,
# `python -m stvae_np.train` (its length and its numbers are in README.md, "What the
# default run gives"), does much better; the numbers here are for seeing the machinery
# work, not for judging the method.

# %%
import _setup  # noqa: F401
from _setup import FIGURES, RUNS, show_png

import json
import time

import numpy as np

from stvae_np import checkpoint, viz
from stvae_np.data import load_eval_clips
from stvae_np.evaluate import one_step_metrics, predict_clips
from stvae_np.gradcheck import directional_check
from stvae_np.model import STVAE
from stvae_np.train import main


# %% [markdown]
# ## 1. The recipe
#
# Each step draws a fresh batch of Moving MNIST clips (two 14×14 digits bouncing in a
# 32×32 frame, training digits only), computes `loss_and_grads` (for `tiny`: the paper's
# loss plus the photometric term `3 · Σ w ρ(warp(B(x_t), flow) − B(x_{t+1})) / Σ w` that
# docs/flow_study.md chose: the frames blurred by 1 px, a robust error
# `ρ(d) = d² / (d² + 0.1²)` that stops pulling on residuals no single flow explains (two
# digits overlapping), and each pixel weighted by the blurred next frame itself,
# `w = B(x_{t+1})`, so the digits count and the empty background does not; and its flow
# head has a tanh after
# each of its two 7×7 convolutions, 16 channels wide, where the paper's is linear), clips
# the global gradient norm to 1.0 (`Config.clip_norm`), sets the learning rate from the
# paper's schedule (`lr × 0.9` every 5 epochs, an epoch being `steps_per_epoch = 200` steps for
# `tiny`) and takes an RMSProp step (`lr = 2e-3` for `tiny`; the paper preset uses the
# paper's 1e-4). Every `--eval-every` steps, and at the end, the model predicts 32
# held-out clips of **test** digits (drawn with a fixed seed, never seen in training)
# and the trainer logs the next-frame MSE beside the copy-last-frame baseline and the
# flow's end-point error beside the zero-flow baseline.
#
# The run folder receives `config.json`, `run.json`, `metrics.json`, `checkpoint.npz`
# (model, optimizer state, step, data sampler state, history) and `eval/` (the final
# evaluation's report). `--no-figures` skips the PNGs the trainer would also write; this
# tutorial draws its own below. A run stopped with Ctrl-C can be continued with
# `--resume` (bit-identical to a run that never stopped).

# %%
OUT = RUNS / "07_training"
STEPS, BATCH = 150, 16
argv = ["--preset", "tiny", "--steps", str(STEPS), "--batch-size", str(BATCH), "--seq-len", "10",
        "--eval-clips", "32", "--eval-every", "50", "--out", str(OUT), "--no-figures", "--quiet",
        "--overwrite"]   # a folder that holds a run is refused without it: rerunning replaces it
print("python -m stvae_np.train", " ".join(argv))
start = time.perf_counter()
status = main(argv)
print(f"exit status {status}, {time.perf_counter() - start:.0f} s")
assert status == 0

# %% [markdown]
# ## 2. What the run wrote
#
# `metrics.json` holds the final test metrics and the history: the training loss of
# every step and the periodic evaluations. `checkpoint.load` reads the checkpoint back (with
# `return_extra=True`, also the trainer's state).

# %%
metrics = json.loads((OUT / "metrics.json").read_text())
model, extra = checkpoint.load(OUT / "checkpoint.npz", return_extra=True)
print(f"{metrics['steps']} steps in {metrics['train_seconds']:.0f} s "
      f"({metrics['steps_per_second']:.2f} steps/s), batch {metrics['batch_size']}×{metrics['seq_len']} frames")
print("checkpoint: step", int(extra["step"]), "| optimizer steps", int(extra["opt/t"]),
      "| lr", float(extra["opt/lr"]), "| model", model.config.name, model.dtype)
for ev in metrics["history"]["eval"]:
    print(f"  step {ev['step']:4d}: test mse {ev['mse']:.5f} (copy-last {ev['copy_last_mse']:.5f}), "
          f"flow EPE {ev['epe']:.3f} px (zero flow {ev['zero_flow_epe']:.3f})")

loss_steps, losses = np.array(metrics["history"]["loss"]).T
evals = metrics["history"]["eval"]
show_png(viz.plot_loss_curve(FIGURES / "07_loss_curve.png", loss_steps, losses,
                             eval_steps=[e["step"] for e in evals], eval_mse=[e["mse"] for e in evals],
                             baseline_mse=evals[-1]["copy_last_mse"],
                             title=f"tiny preset, {STEPS} steps of {BATCH} clips"))

# %% [markdown]
# The training loss (MSE + w_H·Huber + w_P·photometric, per pixel) drops steeply within the first ten
# steps, as the decoder learns the intensity scale and the dark background, then slowly.
# The bump in the first few steps is most likely RMSProp's first updates, which are up
# to 10× the learning rate per parameter because v starts at zero (tutorial 5). The
# orange points are the held-out MSE; the dashed line is the copy-last-frame MSE on the
# same clips (predict x_{t+1} = x_t).

# %% [markdown]
# ## 3. The held-out numbers
#
# `evaluate.one_step_metrics` is what the trainer ran at the end; running it again on
# the same test clips (`data.load_eval_clips`: test digits, a fixed seed) reproduces
# `metrics.json`. The flow is compared in image pixels: the model's flow lives on the
# 16×16 memory grid, so it is up-sampled ×2 and its values doubled
# (`metrics.upsample_flow`), and the end-point error `‖T − T_true‖` is averaged over the
# object pixels of x_{t+1}. `metrics.flow_quality` adds, for the steps t ≥ 2 (the memory
# has seen three frames), the EPE beside zero flow, the gain ⟨f, g⟩/⟨g, g⟩ (is the flow
# as fast as the motion?) and the mean angle between the two.

# %%
test, description = load_eval_clips("moving-mnist", model.config, 32, 10)
print("test clips:", description)
m = one_step_metrics(model, test)
assert abs(m["mse"] - metrics["test"]["mse"]) < 1e-9
print(f"next-frame MSE  {m['mse']:.5f}   copy-last {m['copy_last_mse']:.5f}   "
      f"ratio {m['mse'] / m['copy_last_mse']:.2f}")
print(f"PSNR            {m['psnr']:.2f} dB  copy-last {m['copy_last_psnr']:.2f} dB")
print(f"SSIM            {m['ssim']:.3f}     copy-last {m['copy_last_ssim']:.3f}")
print(f"flow EPE        {m['epe']:.3f} px  zero flow {m['zero_flow_epe']:.3f} px")
print(f"flow EPE, steps t ≥ 2: {m['epe_t2']:.3f} px = {m['epe_t2'] / m['zero_flow_epe_t2']:.2f} × zero flow; "
      f"gain {m['flow_gain_t2']:.2f} (1 = true speed); angle {m['angular_error_t2']:.0f}°")
print(f"flow within 1 px of the truth: {m['acc@1']:.1%} of object pixels (zero flow {m['zero_flow_acc@1']:.1%})")

# %% [markdown]
# At the end of the run the trainer also ran the full evaluation of
# `python -m stvae_np.evaluate` on 20-frame test clips: a 10 → 10 rollout (the model
# feeds its own predictions back) and label propagation (tutorial 8). Its summary is in
# `metrics.json` and, as a table, in `eval/report.md` of the run folder.

# %%
roll, labels = metrics["evaluation"]["rollout"], metrics["evaluation"]["label_propagation"]
print(f"rollout {roll['context']} → {roll['future']}: mean MSE {roll['mean_mse']:.4f} "
      f"(copy the last context frame {roll['copy_last_mean_mse']:.4f})")
print(f"label propagation: mean IoU {labels['iou']:.3f} (copy mask {labels['copy_last_iou']:.3f})")
print("report:", metrics["evaluation"]["report"])

# %% [markdown]
# How to read these after one minute: a lower MSE than copy-last is easy to get, since
# a blurred guess already beats a sharp frame in the wrong place. The flow numbers are
# the honest measure of motion understanding, and after a minute the learned flow is
# still weak and noisy: expect an EPE only somewhat below the zero-flow baseline. The
# default run (2,000 steps, about five minutes) reaches about half the zero-flow EPE
# and 26° (README.md, "What the default run gives").

# %%
preds, flows = predict_clips(model, test.frames[:4])       # (4, 9, 1, 32, 32), (4, 9, 2, 16, 16)
show_png(viz.plot_predictions(FIGURES / "07_predictions.png", test.frames[:4, :-1],
                              np.clip(preds, 0, 1), test.frames[:4, 1:], max_frames=6,
                              title=f"After {STEPS} steps: input, prediction, truth, |error|"))

# %% [markdown]
# Rows per clip: the input x_t, the prediction ŷ_t, the truth x_{t+1} and the absolute
# error. The predictions are blurrier than the inputs: moving the encoded features by a
# smooth, half-resolution flow and decoding them with one convolution loses detail.

# %%
show_png(viz.plot_flow_comparison(FIGURES / "07_flow.png", test.frames[:4], flows, test.flow[:4],
                                  mask=test.masks[:4], max_examples=3))

# %% [markdown]
# Each row: the frame x_t; the predicted and the true flow, coloured by the motion they
# describe (−T; hue = direction, saturation = speed, white = still; one colour scale for
# the whole figure); and the same motions as arrows over x_{t+1}, on the digit pixels.
# The true flow moves each digit as a rigid block by an integer number of pixels; the
# learned flow is smooth, lives on the 16×16 memory grid (so it comes in 2×2 blocks) and,
# after a minute, gets the directions only in places.

# %% [markdown]
# ## 4. Gradient check of the trained model
#
# Training moved the parameters far from the initialisation, into a region the
# earlier checks never visited. The gradient is checked again there, on two short test
# clips, after copying the trained weights into a float64 model
# (`STVAE(config, dtype="float64")`):
#
# every tensor with `gradcheck.directional_check`: the derivative along
# `d = ½ g/|g| + ½ r/|r|` (r random, flipped if it points against g, so that ⟨g, d⟩ ≥ |g|/2)
# against centred differences of the loss, step h = 10⁻⁶ (tutorial 6 explains the choice).

# %%
model64 = STVAE(model.config, dtype="float64")
model64.params = {k: np.asarray(v, dtype=np.float64).copy() for k, v in model.params.items()}
clip64 = test.frames[:2, :4].astype(np.float64)
loss, grads = model64.loss_and_grads(clip64)
errors = directional_check(lambda: model64.loss(clip64), model64.params, grads,
                           directions=2, h=1e-6, seed=0)
for name, err in errors.items():
    print(f"{name:8s} {tuple(grads[name].shape)!s:16s} relative error {err:.1e}")
print(f"gradient check: max relative error = {max(errors.values()):.1e}")
