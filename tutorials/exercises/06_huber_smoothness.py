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
# # Exercise 06 · The Huber smoothness gradient
#
# The loss asks for a smooth flow with a Huber penalty on the flow's spatial differences
# (tutorial `tutorials/04_huber_smoothness.py`). You write its gradient, in the form the
# model uses (`stvae_np/losses.py`): each direction is a **mean**, the two are added.
#
# **Forward.** For a flow `T` of shape `(..., h, w)` (e.g. `(N, 2, h, w)`):
#
# $$
# D_x = T[\ldots, :, 1{:}] - T[\ldots, :, {:}{-1}], \qquad
# D_y = T[\ldots, 1{:}, :] - T[\ldots, {:}{-1}, :]
# $$
#
# $$
# H(\nabla T) = \mathrm{mean}\big(H_\delta(D_x)\big) + \mathrm{mean}\big(H_\delta(D_y)\big),
# \qquad
# H_\delta(a) = \begin{cases} \tfrac12 a^2 & |a| \le \delta \ \text{(quadratic regime)} \\
#     \delta\,(|a| - \tfrac12\delta) & |a| > \delta \ \text{(linear regime)} \end{cases}
# $$
#
# **Task.** Write `huber_smoothness_backward(dloss, flow, delta)` → `dflow`, the gradient
# of `dloss · H(∇T)` with respect to the flow (same shape and dtype as `flow`):
#
# $$
# H_\delta'(a) = \begin{cases} a & |a| \le \delta \\ \delta\,\mathrm{sign}(a) & |a| > \delta \end{cases},
# \qquad g_x = \mathrm{dloss} \cdot \frac{H_\delta'(D_x)}{|D_x|},\quad
# g_y = \mathrm{dloss} \cdot \frac{H_\delta'(D_y)}{|D_y|}
# $$
#
# ($|D_x|$ is the number of entries of $D_x$, the mean's count.) Each difference
# $D = T[b] - T[a]$ sends $+g$ to $T[b]$ and $-g$ to $T[a]$.
#
# **The grader** compares with the solution and with centred finite differences in
# float64 (differences kept off the kink |D| = δ), and when wrong, probes flows whose
# differences lie in one **regime** (quadratic, |D| ≤ δ, or linear, |D| > δ) and along
# one axis (D_x or D_y) at a time, with the model's δ = 1e-3.
#
# **Solution:** `stvae_np.losses.huber_smoothness_backward` (the package's own op; it
# takes the forward's cache). `STVAE_EXERCISE_SOLUTION=1` runs the exercise with it.

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
def huber_smoothness_backward(dloss, flow, delta):
    """Gradient of dloss · [mean(H_δ(D_x)) + mean(H_δ(D_y))] with respect to the flow.

    Args:
        dloss: scalar, the upstream gradient.
        flow: (..., h, w) float array.
        delta: δ > 0.
    Returns:
        dflow: flow's shape and dtype.
    """
    # YOUR CODE HERE
    raise NotImplementedError


# %% [markdown]
# ## Stuck? One hint at a time
#
# Each run of the next cell unlocks one more hint (as a script, from the repository
# root: `STVAE_HINTS=2 python tutorials/exercises/06_huber_smoothness.py` shows the first two; a report
# that is not a PASS prints the command for the next hint with this file's full path).
# To read the solution itself:
# `grader.show_solution("06_huber_smoothness")`.

# %%
grader.hint("06_huber_smoothness")

# %% [markdown]
# ## Grade

# %%
grader.grade("06_huber_smoothness", huber_smoothness_backward=huber_smoothness_backward)
