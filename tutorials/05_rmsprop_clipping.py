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
# # 05 · RMSProp, the learning-rate schedule and gradient clipping
#
# The paper trains the autoencoder with **RMSProp** (learning rate 1e-4, multiplied by
# 0.9 every 5 epochs) and clips the gradient. This tutorial takes the three pieces of
# `stvae_np/optim.py` one at a time, on problems small enough to draw:
#
# 1. the RMSProp update, against plain SGD on a badly scaled quadratic;
# 2. the paper's step-decay schedule, `optim.step_decay`;
# 3. gradient clipping, `optim.clip_grad_norm` (global L2 norm) and
#    `optim.clip_grad_value` (element-wise clamp), on an exploding gradient.
#
# It ends by checking `RMSProp.step` against its update written out by hand, and the
# norm that `clip_grad_norm` leaves.

# %%
import _setup  # noqa: F401  (puts stvae_np on the path, picks a head-less backend)
from _setup import plt, show

import numpy as np

from stvae_np.losses import mse_backward, mse_forward
from stvae_np.model import Config
from stvae_np.optim import RMSProp, StepDecay, clip_grad_norm, clip_grad_value, step_decay

# %% [markdown]
# ## 1. A badly scaled problem
#
# The objective is the package's own mean squared error of a scaled parameter vector
# θ = (θ₀, θ₁) against zero, with scales s = (1, 10):
#
#     f(θ) = mse(s ⊙ θ, 0) = ½ (θ₀² + 100 θ₁²),     ∇f = s ⊙ mse_backward(1) = (θ₀, 100 θ₁)
#
# an elongated bowl whose curvature is 100 times larger along θ₁ than along θ₀
# (condition number 100). `loss_and_grad` returns f and ∇f from `mse_forward` /
# `mse_backward` and the chain rule through the scaling.

# %%
SCALE = np.array([1.0, 10.0])


def loss_and_grad(theta):
    """f(θ) = mse(s ⊙ θ, 0) and its gradient s ⊙ ∂mse/∂(s ⊙ θ)."""
    z = SCALE * theta
    loss, cache = mse_forward(z, np.zeros_like(z))
    dz = mse_backward(1.0, cache)
    return float(loss), SCALE * dz


theta0 = np.array([-4.0, 1.0])
print("f(θ0) =", loss_and_grad(theta0)[0], "  ∇f(θ0) =", loss_and_grad(theta0)[1])

# %% [markdown]
# ## 2. SGD against RMSProp
#
# Plain gradient descent, `θ ← θ − lr·g`, is stable only for `lr < 2 / (largest
# curvature) = 0.02` here. Near that limit it zig-zags across the steep θ₁ direction,
# and the same small `lr` crawls along the shallow θ₀ direction.
#
# RMSProp (Tieleman & Hinton 2012, in the form of Torch7's `optim.rmsprop`, which the
# paper used) divides each coordinate of the gradient by a running root-mean-square of
# its own past values:
#
#     v ← α·v + (1 − α)·g²                 (α = 0.99; element-wise)
#     θ ← θ − lr · g / (√v + ε)            (ε = 1e-8, outside the root)
#
# Once v has settled, each coordinate moves by about `lr` per step whatever the scale
# of its gradient, so both directions progress at the same pace. A detail of this
# form: v starts at 0, so the first steps are larger than `lr` (the first one is
# `lr/√(1−α) = 10·lr` per coordinate; there is no bias correction as in Adam).
#
# `RMSProp(params, lr)` keeps references to the arrays of the `params` dict and
# updates them **in place** in `.step(grads)`; this is how the trainer uses it with
# `model.params`.

# %%
N_STEPS = 150


def run_sgd(lr, theta_start, n_steps=N_STEPS):
    theta = theta_start.copy()
    path, losses = [theta.copy()], [loss_and_grad(theta)[0]]
    for _ in range(n_steps):
        _, g = loss_and_grad(theta)
        theta -= lr * g
        path.append(theta.copy())
        losses.append(loss_and_grad(theta)[0])
    return np.array(path), np.array(losses)


def run_rmsprop(lr, theta_start, n_steps=N_STEPS):
    params = {"theta": theta_start.copy()}
    opt = RMSProp(params, lr=lr)               # alpha = 0.99, eps = 1e-8
    path, losses = [params["theta"].copy()], [loss_and_grad(params["theta"])[0]]
    for _ in range(n_steps):
        _, g = loss_and_grad(params["theta"])
        opt.step({"theta": g})                 # updates params["theta"] in place
        path.append(params["theta"].copy())
        losses.append(loss_and_grad(params["theta"])[0])
    return np.array(path), np.array(losses), opt


sgd_path, sgd_loss = run_sgd(0.019, theta0)
rms_path, rms_loss, opt = run_rmsprop(0.05, theta0)
print(f"after {N_STEPS} steps:  SGD (lr 0.019)     θ = {sgd_path[-1].round(4)},  f = {sgd_loss[-1]:.2e}")
print(f"                  RMSProp (lr 0.05) θ = {rms_path[-1].round(4)},  f = {rms_loss[-1]:.2e}")
print("RMSProp's running mean of g² per coordinate:", opt.v["theta"].round(3), " steps taken:", opt.t)

# %%
fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
u, w = np.meshgrid(np.linspace(-4.5, 1.0, 200), np.linspace(-1.3, 1.3, 200))
ax.contour(u, w, 0.5 * (u ** 2 + 100 * w ** 2), levels=np.geomspace(0.01, 60, 14),
           colors="0.75", linewidths=0.8)
ax.plot(sgd_path[:, 0], sgd_path[:, 1], ".-", ms=3, lw=0.8, label="SGD, lr 0.019")
ax.plot(rms_path[:, 0], rms_path[:, 1], ".-", ms=3, lw=0.8, label="RMSProp, lr 0.05")
ax.plot(*theta0, "ko", label="start")
ax.plot(0, 0, "k*", ms=10, label="minimum")
ax.set_xlabel("θ₀ (curvature 1)")
ax.set_ylabel("θ₁ (curvature 100)")
ax.set_title(f"{N_STEPS} steps on f = ½(θ₀² + 100 θ₁²)")
ax.legend(fontsize=8, loc="lower right")
ax2.semilogy(sgd_loss, label="SGD, lr 0.019")
ax2.semilogy(rms_loss, label="RMSProp, lr 0.05")
ax2.set_xlabel("step")
ax2.set_ylabel("f(θ)")
ax2.set_title("loss")
ax2.grid(True, which="both", alpha=0.3)
ax2.legend(fontsize=8)
show(fig, "05_sgd_vs_rmsprop")

# %% [markdown]
# Left: SGD (blue) bounces between the walls of the valley in θ₁ and, after 150 steps,
# is still short of the minimum along θ₀; RMSProp (orange) drops to the valley floor in
# a few steps, without oscillating, and then runs along it to the minimum. Right: SGD's
# loss falls at the slow rate set by the shallow direction, RMSProp's much faster.
#
# RMSProp rescales *coordinates*. It fixes a valley aligned with the parameter axes,
# as here; it cannot fix one that runs diagonally to them.

# %% [markdown]
# ## 3. The paper's learning-rate schedule
#
# `step_decay(base_lr, epoch, gamma=0.9, every=5)` returns
#
#     lr = base_lr · 0.9^⌊epoch / 5⌋
#
# so epochs 0–4 use `base_lr`, 5–9 use 0.9·`base_lr`, and so on. Synthetic clips are
# drawn without end, so the trainer defines an epoch as `Config.steps_per_epoch` steps
# (1000 for the paper preset, 200 for tiny) and sets `opt.lr = step_decay(base_lr,
# step // steps_per_epoch, ...)` before every update. `StepDecay` keeps the numbers
# together and can set `opt.lr` itself.

# %%
paper, tiny = Config.paper(), Config.tiny()
epochs = np.arange(0, 61)
fig, ax = plt.subplots(figsize=(6.5, 3.6))
for cfg in (paper, tiny):
    lrs = [step_decay(cfg.lr, e, cfg.lr_decay, cfg.lr_decay_every) for e in epochs]
    ax.step(epochs, lrs, where="post",
            label=f"{cfg.name}: base lr {cfg.lr:g}, epoch = {cfg.steps_per_epoch} steps")
ax.set_yscale("log")
ax.set_xlabel("epoch")
ax.set_ylabel("learning rate")
ax.set_title("step_decay: lr × 0.9 every 5 epochs")
ax.grid(True, which="both", alpha=0.3)
ax.legend(fontsize=8)
show(fig, "05_lr_schedule")

sched = StepDecay(paper.lr)
for e in (0, 4, 5, 10, 50):
    print(f"paper preset, epoch {e:2d}: lr = {sched(e):.3e}")
sched.apply(opt, 12)
print("StepDecay.apply set the optimizer's lr to", opt.lr)

# %% [markdown]
# ## 4. Gradient clipping
#
# A recurrent network occasionally produces a gradient many times larger than usual (a
# step off a "cliff" of the loss, Pascanu et al. 2013). `stvae_np.optim` has two
# remedies:
#
# * **global-norm clipping**, `clip_grad_norm(grads, max_norm)` (the trainer's default,
#   `Config.clip_norm = 1.0`): with `norm = √(Σ_tensors Σ_elements g²)`, every tensor is
#   multiplied by `max_norm / (norm + 1e-6)` when `norm > max_norm`, else left alone.
#   The direction of the whole update is kept; only its length is capped. It returns
#   the norm *before* clipping as a 0-d array (a Python float would cost a GPU sync).
# * **element-wise clipping**, `clip_grad_value(grads, clip)`: every element clamped to
#   `[−clip, clip]` (the original Torch code used 50; `Config.clip_value`, off by
#   default). Cheap, but it changes the direction.
#
# Both modify the gradient dict in place. An example with two tensors where one
# element has exploded:

# %%
def exploded():
    return {"W": np.array([30.0, 4.0]), "b": np.array([1.0])}


g_norm = exploded()
norm_before = clip_grad_norm(g_norm, max_norm=5.0)
g_value = clip_grad_value(exploded(), clip=5.0)
def flat(g):
    return np.concatenate([g["W"], g["b"]])


for name, g in (("original", exploded()), ("clip_grad_norm(5)", g_norm),
                ("clip_grad_value(5)", g_value)):
    v = flat(g)
    print(f"{name:19s} W = {g['W'].round(3)}, b = {g['b'].round(3)}, "
          f"|g| = {np.linalg.norm(v):6.3f}, direction = {(v / np.linalg.norm(v)).round(3)}")
print("clip_grad_norm returned the norm before clipping:", norm_before, type(norm_before).__name__)

# %% [markdown]
# Norm clipping kept the direction (the three entries keep their 30 : 4 : 1 ratio) and
# brought the length to 5; value clipping capped the big entry only, so the clipped
# gradient now points much more along the second entry.
#
# ### 4.1 One exploding gradient during training
#
# Back to the valley, now with noisy gradients as in minibatch training (Gaussian noise
# of standard deviation 1 on g₀ and 10 on g₁, seeded). At step 40 the gradient is
# multiplied by 10⁴: one bad batch. Each optimizer runs once without clipping and once
# with `clip_grad_norm(grads, 200)`, a threshold just above the largest gradient norm
# these runs see without a spike (≈ 140), so it acts on the spike only.
#
# * Plain SGD takes the whole spike as a step, `lr·10⁴·g`, and lands far up the walls.
# * RMSProp bounds a single step (a spike g ≫ √v moves a coordinate by at most
#   `lr·g/√((1−α)g²) = 10·lr`), but the spike enters its memory, `v ← αv + (1−α)g²`,
#   and decays by only 0.99 per step. Every later step is divided by a √v about a
#   thousand times too large, and the optimizer stalls for hundreds of steps.
#
# With clipping, the spike is at most 200 long: SGD's jump is bounded, and RMSProp's v
# is inflated by a factor of a few, not a million, so both recover within a few steps.

# %%
SPIKE_STEP, SPIKE, NOISE_STD, MAX_NORM = 40, 1e4, np.array([1.0, 10.0]), 200.0


def run_with_spike(method, lr, max_norm=None, spike=SPIKE, n_steps=N_STEPS):
    """Losses of one run; the gradient noise is the same for every run (seed 1)."""
    noise_rng = np.random.default_rng(1)
    params = {"theta": theta0.copy()}
    opt = RMSProp(params, lr=lr) if method == "RMSProp" else None
    losses, norms = [loss_and_grad(params["theta"])[0]], []
    for step in range(n_steps):
        _, g = loss_and_grad(params["theta"])
        g = g + NOISE_STD * noise_rng.standard_normal(2)
        grads = {"theta": g * (spike if step == SPIKE_STEP else 1.0)}
        if max_norm is None:
            norms.append(np.linalg.norm(grads["theta"]))
        else:
            norms.append(float(clip_grad_norm(grads, max_norm)))   # the norm before clipping
        if opt is not None:
            opt.step(grads)
        else:
            params["theta"] -= lr * grads["theta"]
        losses.append(loss_and_grad(params["theta"])[0])
    return np.array(losses), np.array(norms)


LRS = {"SGD": 0.019, "RMSProp": 0.05}
no_spike_norms = np.concatenate([run_with_spike(m, lr, spike=1.0)[1] for m, lr in LRS.items()])
print(f"gradient norms without a spike: median {np.median(no_spike_norms):.1f}, "
      f"max {no_spike_norms.max():.1f}")
runs = {}
for method, lr in LRS.items():
    runs[f"{method}, no spike"] = run_with_spike(method, lr, spike=1.0)[0]
    runs[f"{method}, spike, no clipping"] = run_with_spike(method, lr)[0]
    runs[f"{method}, spike, clip_grad_norm {MAX_NORM:g}"] = run_with_spike(method, lr, MAX_NORM)[0]
for name, losses in runs.items():
    print(f"{name:37s} f at step {SPIKE_STEP}: {losses[SPIKE_STEP]:9.3g},  step {SPIKE_STEP + 1}: "
          f"{losses[SPIKE_STEP + 1]:9.3g},  mean of the last 50 steps: {losses[-50:].mean():9.3g}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for ax, method in zip(axes, LRS):
    ax.semilogy(runs[f"{method}, no spike"], color="0.7", lw=1.0, label="no spike")
    ax.semilogy(runs[f"{method}, spike, no clipping"], color="C3", lw=1.2,
                label="spike, no clipping")
    ax.semilogy(runs[f"{method}, spike, clip_grad_norm {MAX_NORM:g}"], color="C2", lw=1.2,
                label=f"spike, clip_grad_norm {MAX_NORM:g}")
    ax.axvline(SPIKE_STEP, color="0.5", lw=0.8, ls=":")
    ax.set_title(f"{method} (lr {LRS[method]}), gradient × 10⁴ at step {SPIKE_STEP}")
    ax.set_xlabel("step")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
axes[0].set_ylabel("f(θ)")
show(fig, "05_clipping")

# %% [markdown]
# Grey: the run without a spike (noisy, because the gradients are). Red, no clipping:
# SGD's loss jumps by six orders of magnitude and has not come back by the end of the
# run; RMSProp's jumps less but then barely moves, because √v remembers the spike.
# Green, with clipping: a bounded jump, then back on the grey curve within about ten
# steps.

# %% [markdown]
# ## 5. Check: one RMSProp step and the clipped norm, by hand
#
# Everything above trusted `RMSProp.step` to do what the two lines of its equation say,
# and `clip_grad_norm` to leave the gradient with the norm it promises. Both are checked
# here against the formulas written out by hand, in float64, on a parameter dict of
# two tensors (as the trainer passes `model.params`), over a few steps:
#
#     v ← α·v + (1 − α)·g²,    θ ← θ − lr · g / (√v + ε)          α = 0.99, ε = 1e-8
#
# and, for gradients whose global norm exceeds `max_norm`,
#
#     ‖clip(g)‖ = max_norm · ‖g‖ / (‖g‖ + 1e-6),   clip(g) = g · max_norm / (‖g‖ + 1e-6)
#
# while gradients already shorter than `max_norm` come back untouched. Each comparison
# reports `max|a − b| / max|b|`; the largest of them is the tutorial's last line.

# %%
def relative(a, b):
    """max|a − b| / max|b| over every element (b is the hand-computed value)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


rng = np.random.default_rng(0)
params = {"W": rng.normal(size=(3, 4)), "b": rng.normal(size=4)}
hand = {k: v.copy() for k, v in params.items()}          # θ and v kept by hand
hand_v = {k: np.zeros_like(v) for k, v in params.items()}
opt = RMSProp(params, lr=0.01)
alpha, eps, lr = opt.alpha, opt.eps, opt.lr
errors = {}
for step in range(3):
    grads = {"W": rng.normal(size=(3, 4)), "b": 10.0 * rng.normal(size=4)}   # two scales
    for k, g in grads.items():                          # the update, written out
        hand_v[k] = alpha * hand_v[k] + (1 - alpha) * g ** 2
        hand[k] = hand[k] - lr * g / (np.sqrt(hand_v[k]) + eps)
    opt.step(grads)
    for k in params:
        errors[f"step {step + 1}, θ[{k}]"] = relative(params[k], hand[k])
        errors[f"step {step + 1}, v[{k}]"] = relative(opt.v[k], hand_v[k])
print("RMSProp.step against the hand-written update, 3 steps:",
      f"worst θ {max(e for n, e in errors.items() if 'θ' in n):.1e},",
      f"worst v {max(e for n, e in errors.items() if 'v[' in n):.1e}")

for max_norm in (1.0, 50.0):                            # the first clips, the second does not
    grads = {"W": rng.normal(size=(3, 4)) * 3.0, "b": rng.normal(size=4)}
    norm = np.sqrt(sum((g ** 2).sum() for g in grads.values()))
    scale = max_norm / (norm + 1e-6) if norm > max_norm else 1.0
    expected = {k: g * scale for k, g in grads.items()}
    returned = clip_grad_norm(grads, max_norm)
    norm_after = np.sqrt(sum((g ** 2).sum() for g in grads.values()))
    errors[f"norm returned, max_norm {max_norm:g}"] = relative(returned, norm)
    errors[f"norm after, max_norm {max_norm:g}"] = relative(norm_after, norm * scale)
    for k in grads:
        errors[f"clipped {k}, max_norm {max_norm:g}"] = relative(grads[k], expected[k])
    print(f"max_norm {max_norm:4g}: norm before {norm:7.4f}, after {norm_after:.10f} "
          f"({'clipped' if norm > max_norm else 'untouched'})")
assert max(errors.values()) <= 1e-12, errors
# the optimizer and clipping reproduce their equations to round-off
print(f"optimizer check: max relative error = {max(errors.values()):.1e}")
