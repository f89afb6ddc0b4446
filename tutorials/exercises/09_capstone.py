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
# # Exercise 09 · Capstone: the whole model's backward
#
# Everything you wrote in exercises 01–08, chained into the gradient of the tiny
# preset's loss with respect to all 13 parameter tensors: what `STVAE.loss_and_grads`
# does (`stvae_np/model.py`).
#
# **The forward** is given (`forward = grader.capstone_forward`; `grader.show_forward()`
# prints it). It keeps every intermediate value in a dict `fw`. With M = N·(T−1) frames
# stacked clip by clip (k = n·S + t, S = T−1):
#
# | stage | forward | in `fw` |
# |---|---|---|
# | encoder | $a = W_e * x_t + b_e$, $t = \tanh(a)$, $e = \mathrm{maxpool2}(t)$ | `inputs`, `a_enc`, `t_enc`, `e` (M, Fe, h, w) |
# | memory | $h_t = \mathrm{ConvLSTM}(e_t, h_{t-1}, c_{t-1})$ (exercise 04's forward) | `lstm_cache`, `hs_flat` (M, Fm, h, w) |
# | flow head | $f_1 = \tanh(a_1)$, $a_1 = W_1 * h + b_1$; $f_2 = \tanh(W_2 * f_1 + b_2)$; $T = W_3 * f_2 + b_3$ (1×1) | `a1`, `f1`, `a2`, `f2`, `flow` |
# | grid, sampler | $G = \mathrm{base} + T$, $\hat e = \mathrm{bilinear}(e, G)$ | `grid`, `warped` |
# | decoder | $\hat y = W_d * \mathrm{upsample2}(\hat e) + b_d$ | `up`, `pred` |
# | loss | $L = \mathrm{mean}((\hat y - x_{t+1})^2) + w_H\,H(\nabla T) + w_P\,P(T)$ | `targets`, `clip` |
#
# with w_H = `config.huber_weight`, δ = `config.huber_delta`, w_P = `config.photo_weight`,
# P the photometric term of exercise 08 (σ = `config.photo_blur`, C = `config.photo_gm_scale`).
#
# **Task.** Fill the six stage functions below, each the backward of one stage, and
# chain them in `loss_and_grads(params, clip, config)` → `(loss, grads)`, `grads` a dict
# with the names of `stvae_np.model.PARAM_NAMES`. The reverse order:
#
# $$
# \hat y \to \text{decoder} \to \hat e \to \text{sampler}
# \begin{cases} \text{image path} \to \partial L/\partial e \\ \text{grid path} \to \partial L/\partial G
#   \to \partial L/\partial T = \partial L/\partial G + w_H \partial H/\partial T + w_P \partial P/\partial T
#   \to \text{flow head} \to \text{memory} \to \partial L/\partial e \end{cases}
# $$
#
# $e$ feeds two stages, so its gradient is the **sum** of the two paths:
# $\partial L/\partial e = \text{de\_sampler} + \text{de\_memory}$; then the encoder.
#
# **Your ops.** The cell "Your ops" names the backward passes you chain: by default the
# package's (the solutions of exercises 01–08, with your exercises' signatures); paste
# your own from 01–08 in their place if you like. The grader says which ones it used.
#
# **The grader** compares every gradient with the package's (`STVAE.loss_and_grads` on
# the plain ops, float64) at a tiny size (16×16 frames, 4 filters). When one is wrong it
# calls your stages one at a time **with the right inputs**, in the reverse order, and
# names the first whose output is wrong: decoder, sampler's image path, sampler's grid
# path, dgrid into dflow, Huber term, photometric term, flow head and its tanh, memory,
# the sum of the two paths into e, encoder. When all are right it trains the model for
# 120 steps with your gradients beside the package's and shows both losses falling
# (and, as a script, saves the curves to `tutorials/figures/exercise_09_training.png`).
#
# **Solution:** `grader.show_solution("09_capstone")` (the stages chained from the
# package's ops, in `STVAE.loss_and_grads`' order). `STVAE_EXERCISE_SOLUTION=1` runs the
# exercise with it.

# %%
import pathlib
import sys

# The repository root (the folder holding stvae_np/) above this file, or above the
# notebook's folder, and this exercises folder (it holds grader.py, a tool of the
# exercises, not of the package) go on sys.path: the exercise runs from any folder.
_here = pathlib.Path(__file__).resolve().parent if "__file__" in globals() else pathlib.Path.cwd()
_root = next(p for p in (_here, *_here.parents) if (p / "stvae_np").is_dir())
for _path in (_root, _root / "tutorials" / "exercises"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np  # noqa: E402

import grader  # noqa: E402

forward = grader.capstone_forward        # given: (loss, fw) = forward(params, clip, config)

# %% [markdown]
# ## Your ops
#
# Each is called with your exercises' signatures. Replace any by your own function from
# exercises 01–08 (paste it above this cell).

# %%
conv2d_backward = grader.solution("01_convolution", "conv2d_backward")          # (dout, x, w) -> dx, dw, db
maxpool2_backward = grader.solution("02_pool_upsample", "maxpool2_backward")    # (dout, x) -> dx; x: the pool's input
upsample2_backward = grader.solution("02_pool_upsample", "upsample2_backward")  # (dout) -> dx
convlstm_backward = grader.solution("04_bptt", "convlstm_backward")             # (dhs (N, S, Fm, h, w), cache)
#                                                       -> dxs (N, S, Fe, h, w), dparams {"Wx", "Wh", "b"}
bilinear_backward = grader.solution("05_bilinear_sampler", "bilinear_backward")  # (dout, img, grid) -> dimg, dgrid
huber_smoothness_backward = grader.solution("06_huber_smoothness", "huber_smoothness_backward")  # (dloss, flow, δ) -> dflow
photometric_backward = grader.solution("08_photometric", "photometric_backward")  # (flow, clip, σ, C) -> dflow

OPS = dict(conv2d_backward=conv2d_backward, maxpool2_backward=maxpool2_backward,
           upsample2_backward=upsample2_backward, convlstm_backward=convlstm_backward,
           bilinear_backward=bilinear_backward, huber_smoothness_backward=huber_smoothness_backward,
           photometric_backward=photometric_backward)

# %% [markdown]
# ## Your code

# %%
def decoder_backward(dpred, fw, params):
    """pred = conv(upsample2(warped); dec.W) + dec.b  ->  (dwarped, {"dec.W", "dec.b"})."""
    # YOUR CODE HERE
    raise NotImplementedError


def sampler_backward(dwarped, fw):
    """warped = bilinear(e, grid)  ->  (de_sampler, dgrid): the image path, the grid path."""
    # YOUR CODE HERE
    raise NotImplementedError


def flow_gradient(dgrid, fw, config):
    """grid = base + flow; the loss also has w_H·H(∇flow) + w_P·P(flow)  ->  dflow.
    (docs/DESIGN.md's recon_flow_grad scales dgrid; it is 1 in the tiny preset: leave it out.)"""
    # YOUR CODE HERE
    raise NotImplementedError


def flow_head_backward(dflow, fw, params):
    """flow = conv1x1(tanh(conv(tanh(conv(hs_flat)))))  ->  (dhs_flat, {"flow1.W", …, "flow3.b"})."""
    # YOUR CODE HERE
    raise NotImplementedError


def memory_backward(dhs_flat, fw, params):
    """The ConvLSTM over S steps  ->  (de_memory (M, Fe, h, w), {"lstm.Wx", "lstm.Wh", "lstm.b"}).
    The memory walks clips × steps: reshape (M, …) to (N, S, …) and back (M = N·S, clip by clip)."""
    # YOUR CODE HERE
    raise NotImplementedError


def encoder_backward(de, fw, params):
    """e = maxpool2(tanh(conv(inputs; enc.W) + enc.b))  ->  {"enc.W", "enc.b"}."""
    # YOUR CODE HERE
    raise NotImplementedError


def loss_and_grads(params, clip, config):
    """The loss over ``clip`` (N, T, C, H, W) and the gradient of every parameter."""
    loss, fw = forward(params, clip, config)
    # YOUR CODE HERE: dpred = ∂ mean((ŷ − x_{t+1})²)/∂ŷ = 2(ŷ − x_{t+1}) / ŷ.size,
    # then the stages above in the reverse order
    raise NotImplementedError


# %% [markdown]
# ## Stuck? One hint at a time
#
# Each run of the next cell unlocks one more hint (as a script, from the repository
# root: `STVAE_HINTS=2 python tutorials/exercises/09_capstone.py` shows the first two; a report
# that is not a PASS prints the command for the next hint with this file's full path).
# To read the solution itself:
# `grader.show_solution("09_capstone")`.

# %%
grader.hint("09_capstone")

# %% [markdown]
# ## Grade

# %%
grader.grade("09_capstone", loss_and_grads=loss_and_grads, decoder_backward=decoder_backward,
             sampler_backward=sampler_backward, flow_gradient=flow_gradient,
             flow_head_backward=flow_head_backward, memory_backward=memory_backward,
             encoder_backward=encoder_backward, ops=OPS)
