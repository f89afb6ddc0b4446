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
# # Exercise 03 · The ConvLSTM step, backward
#
# The memory of the autoencoder is a convolutional LSTM (tutorial
# `tutorials/02_convlstm_bptt.py`). Its forward step is given below; you write the
# backward: the chain rule through six lines, four gates and two convolutions.
#
# **The forward step** (`*` is the "same" convolution of exercise 01, ⊙ the element-wise
# product; the gates are stacked **i, f, g, o** along the channel axis):
#
# $$
# a = W_x * x + W_h * h_{\mathrm{prev}} + b = [a_i;\, a_f;\, a_g;\, a_o], \qquad
# i = \sigma(a_i),\; f = \sigma(a_f),\; g = \tanh(a_g),\; o = \sigma(a_o)
# $$
#
# $$
# c = f \odot c_{\mathrm{prev}} + i \odot g, \qquad h = o \odot \tanh(c)
# $$
#
# **Task.** Write `convlstm_step_backward(dh, dc, cache)` → `(dx, dh_prev, dc_prev,
# dparams)`, where `dh`, `dc` are the gradients of the loss with respect to h and c
# (c also reaches the loss through the next step), `cache` is the dict the forward below
# returns, and `dparams = {"Wx": dWx, "Wh": dWh, "b": db}`.
#
# **Equations** (δ is a gradient inside the step):
#
# $$
# \delta c = dc + dh \odot o \odot (1 - \tanh^2 c), \qquad \delta o = dh \odot \tanh c, \qquad
# dc_{\mathrm{prev}} = \delta c \odot f
# $$
#
# $$
# \delta i = \delta c \odot g, \qquad \delta g = \delta c \odot i, \qquad
# \delta f = \delta c \odot c_{\mathrm{prev}}
# $$
#
# $$
# \delta a = [\delta i \odot i(1-i);\; \delta f \odot f(1-f);\; \delta g \odot (1 - g^2);\;
# \delta o \odot o(1-o)]
# $$
#
# and then the two convolutions' backward at δa (the convolution of `stvae_np.layers`,
# which you wrote in exercise 01). `conv2d_backward` always returns three values,
# `(dx, dw, db)`: `conv2d_backward(δa, cache["x_conv"])` gives `dx, dWx, db`, and
# `conv2d_backward(δa, cache["h_conv"])` gives `dh_prev, dWh, None` (W_h * h_prev has no
# bias of its own: the one b is in the x convolution), so unpack it as
# `dh_prev, dWh, _ = …`.
#
# **Rules.** Keep the inputs' dtype, do not change `dh`, `dc` or the cache in place.
#
# **The grader** compares every output with the solution and with centred finite
# differences in float64, and says which is wrong: `dx`, `dh_prev`, `dc_prev`, or which
# **gate** (i, f, g, o: the rows of dWx, dWh and db) of the parameters.
#
# **Solution:** `stvae_np.memory.convlstm_step_backward` (with the cache of
# `memory.convlstm_step_forward`, a NamedTuple with the same fields).
# `STVAE_EXERCISE_SOLUTION=1` runs the exercise with it.

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
# ## The forward step (given: read it, do not change it)

# %%
from stvae_np.activations import sigmoid  # noqa: E402
from stvae_np.layers import conv2d_backward, conv2d_forward  # noqa: E402,F401


def convlstm_step_forward(x, h_prev, c_prev, params):
    """One ConvLSTM step: x (N, C, h, w), h_prev, c_prev (N, F, h, w), params "Wx"
    (4F, C, k, k), "Wh" (4F, F, k, k), "b" (4F,). Returns h, c (N, F, h, w) and the cache."""
    nf = h_prev.shape[1]
    ax, x_conv = conv2d_forward(x, params["Wx"], params["b"])     # (N, 4F, h, w)
    ah, h_conv = conv2d_forward(h_prev, params["Wh"])             # (N, 4F, h, w)
    a = ax + ah
    i = sigmoid(a[:, :nf])
    f = sigmoid(a[:, nf:2 * nf])
    g = np.tanh(a[:, 2 * nf:3 * nf])
    o = sigmoid(a[:, 3 * nf:])
    c = f * c_prev + i * g
    tanh_c = np.tanh(c)
    h = o * tanh_c
    cache = {"i": i, "f": f, "g": g, "o": o, "c_prev": c_prev, "tanh_c": tanh_c,
             "x_conv": x_conv, "h_conv": h_conv,
             "x": x, "h_prev": h_prev, "params": params}   # the inputs, for the solution switch
    return h, c, cache


# %% [markdown]
# ## Your code

# %%
def convlstm_step_backward(dh, dc, cache):
    """Backward of convlstm_step_forward.

    Args:
        dh, dc: (N, F, h, w) gradients of the loss with respect to h and c.
        cache: the dict returned by convlstm_step_forward.
    Returns:
        dx (N, C, h, w), dh_prev (N, F, h, w), dc_prev (N, F, h, w),
        dparams {"Wx": (4F, C, k, k), "Wh": (4F, F, k, k), "b": (4F,)}.
    """
    # YOUR CODE HERE
    raise NotImplementedError


# %% [markdown]
# ## Stuck? One hint at a time
#
# Each run of the next cell unlocks one more hint (as a script, from the repository
# root: `STVAE_HINTS=2 python tutorials/exercises/03_convlstm_step.py` shows the first two; a report
# that is not a PASS prints the command for the next hint with this file's full path).
# To read the solution itself:
# `grader.show_solution("03_convlstm_step")`.

# %%
grader.hint("03_convlstm_step")

# %% [markdown]
# ## Grade

# %%
grader.grade("03_convlstm_step", convlstm_step_backward=convlstm_step_backward,
             convlstm_step_forward=convlstm_step_forward)
