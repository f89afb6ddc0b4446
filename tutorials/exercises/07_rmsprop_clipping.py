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
# # Exercise 07 · The RMSProp step, with gradient clipping
#
# The model trains with RMSProp after clipping the gradients' global norm
# (`stvae_np/optim.py`, tutorial `tutorials/05_rmsprop_clipping.py`). No derivatives
# here: two small functions that must get every detail right, in place.
#
# **Task 1.** `clip_grad_norm(grads, max_norm)` → the norm before clipping. `grads` is a
# dict `name -> array`; scale all of them **in place** (the caller holds these arrays):
#
# $$
# \mathrm{norm} = \sqrt{\textstyle\sum_{\text{tensors}} \sum_{\text{elements}} g^2},
# \qquad g \leftarrow g \cdot \frac{\mathrm{max\_norm}}{\mathrm{norm} + 10^{-6}}
# \quad\text{only when norm} > \mathrm{max\_norm}
# $$
#
# **Task 2.** `rmsprop_step(params, grads, v, lr, alpha, eps)`: update every parameter
# and its running mean of squared gradients `v` (dicts of arrays with the same names),
# **in place**:
#
# $$
# v \leftarrow \alpha\, v + (1 - \alpha)\, g^2, \qquad
# \theta \leftarrow \theta - \mathrm{lr} \cdot \frac{g}{\sqrt{v} + \varepsilon}
# $$
#
# (the update of Torch7's `optim.rmsprop` and `torch.optim.RMSprop`).
#
# **Rules.** Keep the dtype (float32 stays float32); change the caller's arrays, do not
# replace them.
#
# **The grader** compares with the package's `clip_grad_norm` and `RMSProp` (no
# gradients here, so no finite differences): clipping inactive and active, the returned
# norm, float32; three RMSProp steps, checking `v` and the parameters where `v` is large
# and where it is tiny (where ε matters), and that everything happens in place.
#
# **Solution:** `stvae_np.optim.clip_grad_norm` and `stvae_np.optim.RMSProp.step`.
# `STVAE_EXERCISE_SOLUTION=1` runs the exercise with them.

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
def clip_grad_norm(grads, max_norm):
    """Scale every gradient in ``grads`` (dict name -> array) in place so that their
    global L2 norm is at most ``max_norm``; return the norm before clipping."""
    # YOUR CODE HERE
    raise NotImplementedError


def rmsprop_step(params, grads, v, lr, alpha=0.99, eps=1e-8):
    """One RMSProp update of every array in ``params`` and ``v`` (dicts name -> array),
    in place, with the gradients ``grads``."""
    # YOUR CODE HERE
    raise NotImplementedError


# %% [markdown]
# ## Stuck? One hint at a time
#
# Each run of the next cell unlocks one more hint (as a script, from the repository
# root: `STVAE_HINTS=2 python tutorials/exercises/07_rmsprop_clipping.py` shows the first two; a report
# that is not a PASS prints the command for the next hint with this file's full path).
# To read the solution itself:
# `grader.show_solution("07_rmsprop_clipping")`.

# %%
grader.hint("07_rmsprop_clipping")

# %% [markdown]
# ## Grade

# %%
grader.grade("07_rmsprop_clipping", clip_grad_norm=clip_grad_norm, rmsprop_step=rmsprop_step)
