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
# # Exercise 01 · Convolution: forward and backward
#
# Every learned layer of the video autoencoder is a "same" 2-D convolution (tutorial
# `tutorials/01_convolution.py` walks through it). Here you write it yourself, plainly,
# and the grader tells you whether, and where, it is wrong.
#
# **Task.** Fill in the two functions below:
#
# * `conv2d_forward(x, w, b)` → `out`
# * `conv2d_backward(dout, x, w)` → `(dx, dw, db)`
#
# with `x` of shape `(N, C, H, W)`, `w` of shape `(F, C, k, k)` (k odd), `b` of shape
# `(F,)`, and `out`, `dout` of shape `(N, F, H, W)`.
#
# **Forward** (cross-correlation, stride 1, $p = \lfloor k/2 \rfloor$ zeros on every side):
#
# $$
# \mathrm{out}[n, f, y, x] = b_f + \sum_{c}\sum_{u=0}^{k-1}\sum_{v=0}^{k-1}
#     W[f, c, u, v]\; x_{\mathrm{pad}}[n, c, y + u, x + v]
# $$
#
# **Backward**, for the upstream gradient `dout` $= \partial L/\partial\,\mathrm{out}$:
#
# $$
# dW[f, c, u, v] = \sum_{n, y, x} \mathrm{dout}[n, f, y, x]\; x_{\mathrm{pad}}[n, c, y+u, x+v],
# \qquad
# db_f = \sum_{n, y, x} \mathrm{dout}[n, f, y, x],
# $$
#
# $$
# dx_{\mathrm{pad}}[n, c, y + u, x + v] \mathrel{+}= \sum_f \mathrm{dout}[n, f, y, x]\; W[f, c, u, v]
# \quad\text{then crop the padding.}
# $$
#
# The last line is the forward's gather run backwards; written as one formula it is the
# "full" correlation of `dout` with the kernel flipped once and its two channel axes
# swapped.
#
# **Rules.** Keep the inputs' dtype (a float32 input gives float32 outputs), do not change
# the inputs in place. Plain NumPy: loops over the k × k offsets are fine.
#
# **The grader** checks your functions against the solution on two shapes (k = 3 and
# k = 5), against centred finite differences in float64, and with float32 inputs, and
# names what is wrong: the output `out`, or `dx`, `dW`, `db`.
#
# **Solution:** `stvae_np.layers.conv2d_forward` and `stvae_np.layers.conv2d_backward`
# (its backward takes the forward's `cache` instead of `x` and `w`). Run the exercise with
# `STVAE_EXERCISE_SOLUTION=1` to see the solution pass the grader.

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
# ## Your code

# %%
def conv2d_forward(x, w, b):
    """'Same' cross-correlation.

    Args:
        x: (N, C, H, W).
        w: (F, C, k, k), k odd.
        b: (F,).
    Returns:
        out: (N, F, H, W), x's dtype.
    """
    # YOUR CODE HERE
    raise NotImplementedError


def conv2d_backward(dout, x, w):
    """Gradients of conv2d_forward.

    Args:
        dout: (N, F, H, W) gradient of the loss with respect to out.
        x: (N, C, H, W) the forward's input.
        w: (F, C, k, k) the forward's weights.
    Returns:
        dx (N, C, H, W), dw (F, C, k, k), db (F,), all of x's dtype.
    """
    # YOUR CODE HERE
    raise NotImplementedError


# %% [markdown]
# ## Stuck? One hint at a time
#
# Each run of the next cell unlocks one more hint (as a script, from the repository
# root: `STVAE_HINTS=2 python tutorials/exercises/01_convolution.py` shows the first two; a report
# that is not a PASS prints the command for the next hint with this file's full path).
# To read the solution itself:
# `grader.show_solution("01_convolution")`.

# %%
grader.hint("01_convolution")

# %% [markdown]
# ## Grade

# %%
grader.grade("01_convolution", conv2d_forward=conv2d_forward, conv2d_backward=conv2d_backward)
