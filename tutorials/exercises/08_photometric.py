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
# # Exercise 08 · The photometric term's backward
#
# The tiny preset adds a photometric term to the loss (`Config.photo_weight = 3`,
# `docs/DESIGN.md` section 3): each input frame, warped by the model's flow, should look
# like the next frame. Its gradient is the flow head's strongest teacher. Here you write
# ∂P/∂T, the gradient of P with respect to the flow T.
#
# **The forward** (you compute it too, with the ops given below). The flow `T` lives on
# the memory grid, shape `(M, 2, h, w)` with M = N·(T−1) steps stacked clip by clip and
# (h, w) = (H/2, W/2), in memory-grid pixels. For each step t of each clip:
#
# $$
# F_t = 2\cdot \mathrm{upsample2}(T_t) \quad\text{(nearest: each value copied to a 2×2 block; ×2: image pixels)}
# $$
# $$
# d = \mathrm{bilinear}\big(B(x_t),\; \mathrm{base\_grid} + F_t\big) - B(x_{t+1}),
# \qquad
# \rho(d) = \frac{d^2}{d^2 + C^2}\ \text{(Geman–McClure)},
# \qquad
# P = \frac{\sum w\,\rho(d)}{\sum w},\quad w = B(x_{t+1})
# $$
#
# B is a Gaussian blur of σ = `blur_sigma` pixels; the sums run over every pixel of every
# frame of every step at once (one weighted mean). **The weights w are data**: the next
# frame says which pixels count; nothing is differentiated through them, nor through the
# frames.
#
# **Task.** Write `photometric_backward(flow, clip, blur_sigma, gm_scale)` → `dflow`,
# ∂P/∂T, of the flow's shape and dtype; `clip` is `(N, T, C, H, W)`, `gm_scale` is C.
#
# **Equations.** Backwards, one piece at a time:
#
# $$
# \frac{\partial P}{\partial\,\mathrm{warped}} = \frac{w}{\sum w}\,\rho'(d),
# \qquad \rho'(d) = \frac{2\,d\,C^2}{(d^2 + C^2)^2}
# $$
#
# then the sampler's **grid** path (exercise 05's dgrid; its image path would be the
# frames' gradient, which nobody needs), then the transpose of "×2 after nearest
# up-sampling": **sum** each 2×2 block of image pixels into its memory pixel, **times 2**.
#
# **The grader** compares with the package (`stvae_np.losses.photometric_forward`,
# `photometric_backward`) and with centred finite differences of P, in float64, on
# flows of up to ±2.4 image pixels with residuals both ≪ C and ≫ C; then float32. When
# it is wrong it names the part: the robust error's derivative, the weighting's
# normalisation, the up-sampling's transpose, or a gradient sent into the frames.
#
# **Solution:** `stvae_np.losses.photometric_backward` (after `photometric_forward`).
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
# ## Given: the ops you may use
#
# The blur, the up-sampling and the bilinear sampler are the package's (exercises 02
# and 05 wrote their backward passes; use yours if you like: `bilinear_backward(dout,
# img, grid)` → `(dimg, dgrid)`).

# %%
from stvae_np import layers, sampler  # noqa: E402
from stvae_np.losses import gaussian_blur  # noqa: E402


def blur(frames, sigma):
    """B(x): frames (M, C, H, W) blurred by a Gaussian of σ pixels."""
    return gaussian_blur(frames, sigma, layers, {})


def upsample2(x):
    """Nearest ×2 up-sampling (M, C, h, w) -> (M, C, 2h, 2w)."""
    return x.repeat(2, axis=2).repeat(2, axis=3)


def bilinear_forward(img, grid):
    return sampler.bilinear_forward(img, grid)[0]


def bilinear_backward(dout, img, grid):
    """-> (dimg, dgrid): the image path and the grid path."""
    return sampler.bilinear_backward(dout, sampler.bilinear_forward(img, grid)[1])


flow_to_grid = sampler.flow_to_grid          # base grid + flow, (M, 2, H', W')

# %% [markdown]
# ## Your code

# %%
def photometric_backward(flow, clip, blur_sigma, gm_scale):
    """∂P/∂T of the photometric term above.

    Args:
        flow: (M, 2, h, w), M = N·(T−1), in memory-grid pixels.
        clip: (N, T, C, H, W) with (H, W) = (2h, 2w).
        blur_sigma: σ of the blur B; gm_scale: C of the Geman–McClure error.
    Returns:
        dflow: flow's shape and dtype.
    """
    # YOUR CODE HERE
    raise NotImplementedError


# %% [markdown]
# ## Stuck? One hint at a time
#
# Each run of the next cell unlocks one more hint (as a script, from the repository
# root: `STVAE_HINTS=2 python tutorials/exercises/08_photometric.py` shows the first two; a report
# that is not a PASS prints the command for the next hint with this file's full path).
# To read the solution itself:
# `grader.show_solution("08_photometric")`.

# %%
grader.hint("08_photometric")

# %% [markdown]
# ## Grade

# %%
grader.grade("08_photometric", photometric_backward=photometric_backward)
