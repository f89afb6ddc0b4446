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
# # Exercise 04 · Backpropagation through time
#
# The ConvLSTM runs the step of exercise 03 over a sequence, t = 0 … T−1, with the same
# weights at every step. Its backward walks the sequence the other way, carrying two
# gradients from each step to the one before.
#
# **The forward** (given below): from the initial state $h_{-1}, c_{-1}$ (as in tutorial
# 02, where it is 0; here the arguments `h0`, `c0` give it), for t = 0 … T−1
#
# $$
# h_t,\; c_t = \mathrm{step}(x_t,\; h_{t-1},\; c_{t-1};\; W_x, W_h, b)
# $$
#
# and the loss sees every $h_t$: `dhs[:, t]` $= \partial L / \partial h_t$ directly.
# ($h_0$ is step 0's output; the names `h0`, `c0` of the code, those of
# `stvae_np.memory.convlstm_forward`, hold the initial state $h_{-1}, c_{-1}$.)
#
# **Task.** Write `convlstm_backward(dhs, cache)` → `(dxs, dparams)` with `dxs` of
# shape `(N, T, C, h, w)` and `dparams = {"Wx", "Wh", "b", "h0", "c0"}` ("h0", "c0":
# the gradients of the initial state $h_{-1}, c_{-1}$), using the
# step's backward `convlstm_step_backward(dh, dc, step_cache)` (exercise 03's, given).
#
# **Equations.** $h_t$ feeds the loss and step t+1; $c_t$ feeds only step t+1. So,
# walking t = T−1, …, 0 with $dh_{\mathrm{next}} = dc_{\mathrm{next}} = 0$ at the start:
#
# $$
# dx_t,\; dh_{\mathrm{next}},\; dc_{\mathrm{next}},\; d\theta_t =
#     \mathrm{step\_backward}\big(\mathrm{dhs}[:, t] + dh_{\mathrm{next}},\; dc_{\mathrm{next}}\big),
# \qquad d\theta = \sum_t d\theta_t
# $$
#
# and after the loop $dh_{\mathrm{next}}, dc_{\mathrm{next}}$ are the gradients of the
# initial state $h_{-1}, c_{-1}$: `dparams["h0"]`, `dparams["c0"]`.
#
# **The grader** compares with the solution and with centred finite differences in
# float64 (through all T = 4 steps), and says where it goes wrong: walking back from
# t = T−1, the first step t at which `dxs[:, t]` is wrong; or `dWx` / `dWh` / `db` (by
# gate), `dh0`, `dc0` (the gradients of $h_{-1}, c_{-1}$).
#
# **Solution:** `stvae_np.memory.convlstm_backward`. `STVAE_EXERCISE_SOLUTION=1` runs
# the exercise with it.

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

# %% [markdown]
# ## The forward (given: read it, do not change it)

# %%
from stvae_np.memory import convlstm_step_backward, convlstm_step_forward  # noqa: E402,F401


def convlstm_forward(xs, params, h0, c0):
    """xs (N, T, C, h, w), h0, c0 (N, F, h, w) the initial state h₋₁, c₋₁ -> hs
    (N, T, F, h, w), hs[:, t] = h_t, and the cache: a dict whose "steps" holds each
    step's cache, for convlstm_step_backward."""
    h, c = h0, c0
    hs, steps = [], []
    for t in range(xs.shape[1]):
        h, c, step_cache = convlstm_step_forward(xs[:, t], h, c, params)
        hs.append(h)
        steps.append(step_cache)
    cache = {"steps": steps,
             "xs": xs, "params": params, "h0": h0, "c0": c0}   # the inputs, for the solution switch
    return np.stack(hs, axis=1), cache


# %% [markdown]
# ## Your code

# %%
def convlstm_backward(dhs, cache):
    """Backpropagation through time for convlstm_forward.

    Args:
        dhs: (N, T, F, h, w) gradient of the loss with respect to every h_t.
        cache: the dict returned by convlstm_forward; cache["steps"][t] is step t's cache.
    Returns:
        dxs: (N, T, C, h, w).
        dparams: {"Wx", "Wh", "b"} (summed over the steps), "h0", "c0" (N, F, h, w):
            the gradients of the initial state h₋₁, c₋₁.
    """
    # YOUR CODE HERE
    raise NotImplementedError


# %% [markdown]
# ## Stuck? One hint at a time
#
# Each run of the next cell unlocks one more hint (as a script, from the repository
# root: `STVAE_HINTS=2 python tutorials/exercises/04_bptt.py` shows the first two; a report
# that is not a PASS prints the command for the next hint with this file's full path).
# To read the solution itself:
# `grader.show_solution("04_bptt")`.

# %%
grader.hint("04_bptt")

# %% [markdown]
# ## Grade

# %%
grader.grade("04_bptt", convlstm_backward=convlstm_backward, convlstm_forward=convlstm_forward)
