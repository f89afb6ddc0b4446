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
# # Exercise 02 · Max-pooling and up-sampling
#
# The encoder halves the map with a 2×2 max-pool, the decoder doubles it again with a
# nearest-neighbour ×2 up-sample. Neither has weights, but both need a backward pass.
#
# **Task.** Fill in four small functions, for maps `x` of shape `(N, C, H, W)` with H
# and W even:
#
# * `maxpool2_forward(x)` → `out` of shape `(N, C, H/2, W/2)`
# * `maxpool2_backward(dout, x)` → `dx` of shape `(N, C, H, W)`
# * `upsample2_forward(x)` → `out` of shape `(N, C, 2H, 2W)`
# * `upsample2_backward(dout)` → `dx` of shape `(N, C, H/2, W/2)` for `dout` `(N, C, H, W)`
#
# **Equations.**
#
# $$
# \mathrm{maxpool}:\quad \mathrm{out}[n, c, y, x] = \max_{a, b \in \{0, 1\}} x[n, c, 2y + a, 2x + b]
# $$
#
# $$
# dx[n, c, 2y + a, 2x + b] = \begin{cases} \mathrm{dout}[n, c, y, x] & (a, b) \text{ is the
# window's winner} \\ 0 & \text{otherwise} \end{cases}
# $$
#
# $$
# \mathrm{upsample}:\quad \mathrm{out}[n, c, y, x] = x[n, c, \lfloor y/2 \rfloor, \lfloor x/2 \rfloor],
# \qquad dx[n, c, y, x] = \sum_{a, b \in \{0, 1\}} \mathrm{dout}[n, c, 2y + a, 2x + b]
# $$
#
# **Ties: the first winner.** The window's winner is the pixel holding its maximum; when
# several pixels tie for it, the **first in row-major order** wins: top-left (0, 0), then
# top-right (0, 1), bottom-left (1, 0), bottom-right (1, 1). It alone gets `dout`, the
# others 0, exactly one pixel per window, as `argmax` over the window's 4 pixels gives
# (`stvae_np.layers.maxpool2_forward` keeps that argmax). Ties are not rare: the model's
# frames have a blank background, where every window is all zeros and ties four ways.
#
# **Rules.** Keep the inputs' dtype, do not change the inputs in place.
#
# **The grader** checks each function against the solution, the two backward passes
# against centred finite differences in float64, and float32 inputs, and max-pooling's
# backward on windows whose maxima tie (all zero, and two- and three-way ties); it names
# the function and output that is wrong and, for max-pooling, whether gradient leaked to
# pixels that did not win, at which pixel of the 2×2 windows it goes wrong, and whether a
# tied window sent gradient to more than one pixel.
#
# **Solution:** `stvae_np.layers.maxpool2_forward`, `maxpool2_backward`,
# `upsample2_forward`, `upsample2_backward` (their backward passes take the forward's
# `cache`). `STVAE_EXERCISE_SOLUTION=1` runs the exercise with them.

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
def maxpool2_forward(x):
    """2×2 max-pooling, stride 2: (N, C, H, W) -> (N, C, H/2, W/2), x's dtype."""
    # YOUR CODE HERE
    raise NotImplementedError


def maxpool2_backward(dout, x):
    """dout (N, C, H/2, W/2), x (N, C, H, W) the forward's input -> dx (N, C, H, W)."""
    # YOUR CODE HERE
    raise NotImplementedError


def upsample2_forward(x):
    """Nearest-neighbour ×2: (N, C, H, W) -> (N, C, 2H, 2W), x's dtype."""
    # YOUR CODE HERE
    raise NotImplementedError


def upsample2_backward(dout):
    """dout (N, C, 2H, 2W) -> dx (N, C, H, W)."""
    # YOUR CODE HERE
    raise NotImplementedError


# %% [markdown]
# ## Stuck? One hint at a time
#
# Each run of the next cell unlocks one more hint (as a script, from the repository
# root: `STVAE_HINTS=2 python tutorials/exercises/02_pool_upsample.py` shows the first two; a report
# that is not a PASS prints the command for the next hint with this file's full path).
# To read the solution itself:
# `grader.show_solution("02_pool_upsample")`.

# %%
grader.hint("02_pool_upsample")

# %% [markdown]
# ## Grade

# %%
grader.grade("02_pool_upsample", maxpool2_forward=maxpool2_forward, maxpool2_backward=maxpool2_backward,
             upsample2_forward=upsample2_forward, upsample2_backward=upsample2_backward)
