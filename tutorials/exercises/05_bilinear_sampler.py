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
# # Exercise 05 · The bilinear sampler: image and grid gradients
#
# The model predicts the next frame by *sampling* the current one at the points of a
# grid moved by the flow (tutorial `tutorials/03_bilinear_sampler.py`). The sampler is
# differentiable in the image **and** in the grid: that is how the loss teaches the
# model its flow.
#
# **The forward** (`stvae_np.sampler.bilinear_forward`): for each output pixel the grid
# holds a source point $(x_s, y_s)$ (channel 0 = x, channel 1 = y, in pixels). With
# $x_0 = \lfloor x_s \rfloor$, $x_1 = x_0 + 1$, $y_0 = \lfloor y_s \rfloor$, $y_1 = y_0 + 1$:
#
# $$
# w_{x_0} = x_1 - x_s, \quad w_{x_1} = x_s - x_0, \quad w_{y_0} = y_1 - y_s, \quad w_{y_1} = y_s - y_0
# $$
#
# $$
# \mathrm{out}[n, c, y, x] = \sum_{q \in \{(y_0,x_0), (y_0,x_1), (y_1,x_0), (y_1,x_1)\}}
#     \mathrm{img}[n, c, q_y, q_x]\; w_{q_y}\, w_{q_x}\; \mathrm{valid}_q
# $$
#
# where $\mathrm{valid}_q = 1$ when the corner q lies in the map and 0 otherwise (zero
# padding: a corner outside reads zero).
#
# **Task.** Write `bilinear_backward(dout, img, grid)` → `(dimg, dgrid)`, for `img`
# `(N, C, H, W)`, `grid` `(N, 2, Ho, Wo)`, `dout` `(N, C, Ho, Wo)`:
#
# $$
# \mathrm{dimg}[n, c, q_y, q_x] \mathrel{+}= \mathrm{dout}[n, c, y, x]\; w_{q_y} w_{q_x}\, \mathrm{valid}_q
# \quad\text{(every corner of every output pixel)}
# $$
#
# $$
# \mathrm{dgrid}[n, 0, y, x] = \sum_c \mathrm{dout}[n, c, y, x] \sum_q \mathrm{img}[n, c, q]\;
#     \frac{\partial w_{q_x}}{\partial x_s}\, w_{q_y}\, \mathrm{valid}_q,
# \qquad \frac{\partial w_{x_0}}{\partial x_s} = -1,\; \frac{\partial w_{x_1}}{\partial x_s} = +1
# $$
#
# and likewise `dgrid[n, 1]` in y. Several output pixels may read the same input pixel:
# their contributions to `dimg` add up.
#
# **The grader** compares with the solution and with centred finite differences in
# float64 (source points inside the map and beyond its border, kept off integer
# coordinates, where the sampler has kinks); when something is wrong it probes one point
# at a time and names the **corner** (top-left, top-right, bottom-left, bottom-right)
# and whether it is wrong **inside** the map or **at the border**.
#
# **Solution:** `stvae_np.sampler.bilinear_backward` (the package's own op, already
# plain; it takes the forward's cache). `STVAE_EXERCISE_SOLUTION=1` runs the exercise
# with it.

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
def bilinear_backward(dout, img, grid):
    """Gradients of bilinear sampling with respect to the image and the grid.

    Args:
        dout: (N, C, Ho, Wo) gradient of the loss with respect to the sampled output.
        img: (N, C, H, W) the forward's image.
        grid: (N, 2, Ho, Wo) the forward's source points, channel 0 = x_s, 1 = y_s.
    Returns:
        dimg (N, C, H, W), dgrid (N, 2, Ho, Wo), img's dtype.
    """
    # YOUR CODE HERE
    raise NotImplementedError


# %% [markdown]
# ## Stuck? One hint at a time
#
# Each run of the next cell unlocks one more hint (as a script, from the repository
# root: `STVAE_HINTS=2 python tutorials/exercises/05_bilinear_sampler.py` shows the first two; a report
# that is not a PASS prints the command for the next hint with this file's full path).
# To read the solution itself:
# `grader.show_solution("05_bilinear_sampler")`.

# %%
grader.hint("05_bilinear_sampler")

# %% [markdown]
# ## Grade

# %%
grader.grade("05_bilinear_sampler", bilinear_backward=bilinear_backward)
