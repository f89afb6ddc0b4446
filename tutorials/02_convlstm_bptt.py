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
# # 02 · The ConvLSTM and backpropagation through time
#
# The memory of the spatio-temporal autoencoder is a **convolutional LSTM** (Shi et
# al. 2015, without peepholes): an LSTM whose matrix products are replaced by "same"
# convolutions, so that its hidden state `h` and cell state `c` are feature maps. It
# reads the encoded frames one by one and its `h_t` is what the flow regressor turns
# into a motion field. This tutorial reads the plain version in
# `stvae_np/memory.py` (one step written as its equations, and the loop through
# time) and then meets the fast one in `stvae_np/fast/memory.py`, which the model runs:
#
# 1. the six equations and the shapes, and one step in code;
# 2. the unrolled graph, forward and backward;
# 3. backpropagation through time: the real loop, and one step's backward;
# 4. what the gates do on a real Moving MNIST clip at initialisation;
# 5. a loss on the last `h` reaches the first input (and how far it spreads);
# 6. a gradient check;
# 7. the fast version agrees with the plain one, is faster, and passes the same check.
#
# Exercises 03 (one step's backward) and 04 (backpropagation through time) in
# `tutorials/exercises/` ask you to write them yourself. Section 3 prints both
# solutions, each after a warning cell: try the exercises first if you mean to.

# %%

import numpy as np

import _setup  # noqa: F401  (puts the repository on sys.path, picks a backend)
from _setup import best_time, max_rel_diff, plt, show, show_code
from stvae_np import memory
from stvae_np.fast import memory as fast_memory
from stvae_np.data import moving_mnist_for
from stvae_np.gradcheck import numerical_gradient, rel_error



# %% [markdown]
# ## 1. Six equations
#
# With `*` the "same" cross-correlation of tutorial 01 and `⊙` the element-wise
# product, one step maps the input $x_t$ and the previous state $(h_{t-1}, c_{t-1})$
# to the new state:
#
# $$
# \begin{aligned}
# i_t &= \sigma(W_{xi} * x_t + W_{hi} * h_{t-1} + b_i) && \text{input gate: how much of } g_t \text{ to write}\\
# f_t &= \sigma(W_{xf} * x_t + W_{hf} * h_{t-1} + b_f) && \text{forget gate: how much of } c_{t-1} \text{ to keep}\\
# g_t &= \tanh(W_{xg} * x_t + W_{hg} * h_{t-1} + b_g) && \text{candidate cell content } \tilde c_t\\
# o_t &= \sigma(W_{xo} * x_t + W_{ho} * h_{t-1} + b_o) && \text{output gate: how much of the cell to show}\\
# c_t &= f_t \odot c_{t-1} + i_t \odot g_t \\
# h_t &= o_t \odot \tanh(c_t)
# \end{aligned}
# $$
#
# with $h_{-1} = c_{-1} = 0$. Shapes, for N clips of T steps, C input channels, F
# memory channels on an h × w map and an odd kernel k:
#
# | array | shape |
# |---|---|
# | `xs` (all $x_t$) | `(N, T, C, h, w)` |
# | `hs` (all $h_t$); one $h_t$, $c_t$ | `(N, T, F, h, w)`; `(N, F, h, w)` |
# | `params["Wx"]` | `(4F, C, k, k)`, gates stacked **i, f, g, o** on axis 0 |
# | `params["Wh"]` | `(4F, F, k, k)` |
# | `params["b"]` | `(4F,)` |
#
# In code, `memory.convlstm_step_forward` is the equations line by line, with
# `conv2d_forward` the plain convolution of tutorial 01 (the four gates' weights are
# stacked, so one convolution of `x` and one of `h` give all four pre-activations,
# which are then sliced along the channels):

# %%
show_code(memory.convlstm_step_forward)

# %% [markdown]
# ## 2. The unrolled graph
#
# Over a clip the same cell (the same weights) is applied T times. Unrolled, it is an
# ordinary feed-forward graph, T cells deep, with two wires between neighbouring
# cells: `c` (top, only element-wise operations on it: the "constant error
# carousel") and `h` (bottom, which goes back through the convolutions). The
# backward pass walks the same graph right to left (red): at every step `dh` arrives
# both from the loss on $h_t$ and from step t + 1, and `dc` arrives from step t + 1.

# %%
def draw_unrolled(ax, steps=4):
    """Boxes and arrows for an unrolled ConvLSTM; black = forward, red = backward."""
    ax.set_xlim(-1.6, 3.2 * steps + 0.4)
    ax.set_ylim(-1.9, 2.9)
    ax.axis("off")
    arrow = dict(arrowstyle="-|>", color="black", lw=1.4)
    back = dict(arrowstyle="-|>", color="crimson", lw=1.2, ls="--")
    for t in range(steps):
        x0 = 3.2 * t
        ax.add_patch(plt.Rectangle((x0, 0), 2.0, 1.6, fc="#dde8f5", ec="black"))
        ax.text(x0 + 1.0, 0.95, f"ConvLSTM\nstep t={t}", ha="center", va="center", fontsize=9)
        ax.text(x0 + 1.0, 0.25, "i f g o", ha="center", va="center", fontsize=8, color="dimgray")
        ax.annotate("", (x0 + 1.0, 0.0), (x0 + 1.0, -1.0), arrowprops=arrow)
        ax.text(x0 + 1.0, -1.25, f"$x_{t}$", ha="center", va="top", fontsize=11)
        ax.annotate("", (x0 + 1.0, 2.55), (x0 + 1.0, 1.6), arrowprops=arrow)
        ax.text(x0 + 1.0, 2.6, f"$h_{t}$ → loss", ha="center", va="bottom", fontsize=10)
        ax.annotate("", (x0 + 1.3, 1.6), (x0 + 1.3, 2.5), arrowprops=back)   # dhs[:, t]
        ax.text(x0 + 1.38, 2.05, f"dhs[:, {t}]", ha="left", va="center", fontsize=8, color="crimson")
        # state wires into this step (from the previous step or the zero initial state)
        src = x0 - 1.2
        ax.annotate("", (x0, 1.35), (src, 1.35), arrowprops=arrow)
        ax.annotate("", (x0, 0.55), (src, 0.55), arrowprops=arrow)
        ax.text(x0 - 0.6, 1.42, "c" if t else "$c_{-1}=0$", ha="center", va="bottom", fontsize=9)
        ax.text(x0 - 0.6, 0.62, "h" if t else "$h_{-1}=0$", ha="center", va="bottom", fontsize=9)
        if t:
            ax.annotate("", (src, 1.15), (x0, 1.15), arrowprops=back)
            ax.annotate("", (src, 0.35), (x0, 0.35), arrowprops=back)
            ax.text(x0 - 0.6, 1.08, "dc", ha="center", va="top", fontsize=8, color="crimson")
            ax.text(x0 - 0.6, 0.28, "dh", ha="center", va="top", fontsize=8, color="crimson")
        ax.annotate("", (x0 + 0.7, -1.0), (x0 + 0.7, 0.0), arrowprops=back)     # dxs[:, t]
        ax.text(x0 + 0.62, -0.5, "dx", ha="right", va="center", fontsize=8, color="crimson")


fig, ax = plt.subplots(figsize=(12, 4))
draw_unrolled(ax)
ax.set_title("ConvLSTM unrolled over T = 4 steps: forward (black), backward (red, dashed)")
show(fig, "02_unrolled_graph")

# %% [markdown]
# ## 3. How `dh` and `dc` flow back
#
# `convlstm_backward(dhs, cache)` receives `dhs = ∂L/∂h_t` for every t (zero where the
# loss does not look) and walks t = T−1 … 0. It carries two gradients from step t + 1
# to step t, `dh_next = ∂L/∂h_t` *through the future* and `dc_next = ∂L/∂c_t`. At
# step t, `h_t` reached the loss twice, directly and through step t + 1, so its
# gradient is the sum `dhs[:, t] + dh_next`; the weights are the same arrays at every
# step, so their gradients add up over t. The whole of the plain loop,
# `memory.convlstm_backward`, is the real one (the tests hold the fast version to it,
# to 1e-12).
#
# **Exercise 04 first?** Try exercise 04 first (`tutorials/exercises/04_bptt.py`); the
# cell below shows the solution.

# %%
print("── the solution of exercise 04 (tutorials/exercises/04_bptt.py) ──")
show_code(memory.convlstm_backward)

# %% [markdown]
# Inside one step (`convlstm_step_backward`), with $\delta$ for gradients, the chain
# rule through the equations of section 1, last line first:
#
# $$
# \begin{aligned}
# \delta c &= dc_{\text{next}} + dh \odot o \odot (1 - \tanh^2 c_t) && c_t \text{ reaches the loss through } h_t \text{ and through } c_{t+1}\\
# \delta o &= dh \odot \tanh c_t, \quad \delta i = \delta c \odot g, \quad \delta g = \delta c \odot i, \quad \delta f = \delta c \odot c_{t-1}\\
# dc_{t-1} &= \delta c \odot f_t && \text{step } t\text{'s only path into } c_{t-1} \text{: no convolution, no squashing}\\
# \delta a &= [\,\delta i \odot i(1-i);\ \delta f \odot f(1-f);\ \delta g \odot (1-g^2);\ \delta o \odot o(1-o)\,] && (N, 4F, h, w)
# \end{aligned}
# $$
#
# and the backward of the two convolutions at δa (tutorial 01) gives `dx_t`, `dWx`,
# `db` and `dh_{t-1}`, `dWh`. Note `dc_{t-1} = δc ⊙ f_t`: along the cell wire the
# gradient is only rescaled by the forget gate, which is why the forget bias is
# initialised to 1 (σ(1) ≈ 0.73).
#
# **Exercise 03 first?** Try exercise 03 first (`tutorials/exercises/03_convlstm_step.py`);
# the cell below shows the solution, `memory.convlstm_step_backward`.

# %%
print("── the solution of exercise 03 (tutorials/exercises/03_convlstm_step.py) ──")
show_code(memory.convlstm_step_backward)

# %% [markdown]
# ## 4. The gates on a Moving MNIST clip, at initialisation
#
# A short clip of the "tiny" Moving MNIST preset (32 × 32, two 14 × 14 digits) goes
# straight into a ConvLSTM with C = 1 input channel (raw frames), F = 8 memory
# channels and 5 × 5 kernels, initialised as the model does: weights
# U(−0.08, 0.08), biases 0 except the forget gate's, which are 1. We step it with
# `memory.convlstm_step_forward` and read the gates from each step's cache,
# averaged over the F channels.

# %%
clip = moving_mnist_for("tiny", n=1, seq_len=8, seed=4).frames.astype(np.float64)   # (1, 8, 1, 32, 32)
n, t_len, c_in, hh, ww = clip.shape
nf, k = 8, 5
rng = np.random.default_rng(0)
params = {"Wx": rng.uniform(-0.08, 0.08, (4 * nf, c_in, k, k)),
          "Wh": rng.uniform(-0.08, 0.08, (4 * nf, nf, k, k)),
          "b": np.zeros(4 * nf)}
params["b"][nf:2 * nf] = 1.0                                   # forget gate bias (gates i, f, g, o)

h = np.zeros((n, nf, hh, ww))
c = np.zeros((n, nf, hh, ww))
gates = {"i": [], "f": [], "o": [], "c": []}
for t in range(t_len):
    h, c, step = memory.convlstm_step_forward(clip[:, t], h, c, params)
    for name in ("i", "f", "o"):
        gates[name].append(getattr(step, name)[0].mean(axis=0))   # mean over the F channels
    gates["c"].append(c[0].mean(axis=0))
gates = {name: np.stack(maps) for name, maps in gates.items()}    # (T, 32, 32) each
for name in ("i", "f", "o"):
    print(f"{name}: mean {gates[name].mean():.3f}, range [{gates[name].min():.3f}, {gates[name].max():.3f}]")

rows = [("frame $x_t$", clip[0, :, 0], "gray"), ("mean $i_t$", gates["i"], "viridis"),
        ("mean $f_t$", gates["f"], "viridis"), ("mean $o_t$", gates["o"], "viridis"),
        ("mean $c_t$", gates["c"], "RdBu_r")]
fig, axes = plt.subplots(len(rows), t_len, figsize=(1.45 * t_len + 1.0, 1.5 * len(rows)),
                         squeeze=False)
for r, (label, maps, cmap) in enumerate(rows):
    if cmap == "RdBu_r":
        lim = np.abs(maps).max()
        vmin, vmax = -lim, lim
    else:
        vmin, vmax = maps.min(), maps.max()                    # one colour scale per row
    for t in range(t_len):
        im = axes[r, t].imshow(maps[t], cmap=cmap, vmin=vmin, vmax=vmax)
        axes[r, t].set_xticks([])
        axes[r, t].set_yticks([])
        if r == 0:
            axes[r, t].set_title(f"t = {t}", fontsize=9)
    axes[r, 0].set_ylabel(label, fontsize=10)
    fig.colorbar(im, ax=list(axes[r]), fraction=0.02, pad=0.01)
fig.suptitle("ConvLSTM gates at initialisation (U(−0.08, 0.08), forget bias 1), "
             "averaged over F = 8 channels")
show(fig, "02_gates_over_time")

# %% [markdown]
# What the picture shows: at initialisation the pre-activations are small, so the
# gates sit near σ(0) = 0.5 (i, o) and σ(1) ≈ 0.73 (f), and the digits only nudge
# them (note the narrow colour ranges). The nudges are local: each gate pixel sees a
# 5 × 5 neighbourhood of $x_t$ and of $h_{t-1}$, so the gate maps are blurred copies
# of where the digits are, plus, from t = 1 on, of where they were (through $h$).
# The cell state integrates: $c_t$ keeps about 73 % of $c_{t-1}$ each step, so it
# carries fading trails of the digits' past positions. Training turns these random
# responses into the motion features the flow regressor reads.

# %% [markdown]
# ## 5. A loss on the last `h` reaches the first input
#
# Take the loss $L = \sum_{f} h_{T-1}[0, f, 16, 16]$: one pixel of the **last**
# hidden state. Set `dhs` to zero everywhere except that pixel of the last step and
# run `convlstm_backward`. The gradient reaches every input frame, and its support
# grows as it goes back in time: $h_{T-1}$ sees $x_{T-1}$ through one k × k
# convolution (radius p = 2) and $x_{T-1-j}$ through j more convolutions with `Wh`
# (radius (j+1)·p). The dashed squares show that receptive field.

# %%
_, cache = memory.convlstm_forward(clip, params)
dhs = np.zeros((n, t_len, nf, hh, ww))
dhs[0, -1, :, 16, 16] = 1.0
dxs, dparams = memory.convlstm_backward(dhs, cache)               # dxs (1, T, 1, 32, 32)
for t in range(t_len):
    print(f"t = {t}: max |dL/dx_t| = {np.abs(dxs[0, t]).max():.2e}, "
          f"sum |dL/dx_t| = {np.abs(dxs[0, t]).sum():.2e}")

# the first frame really matters: a finite difference on one pixel of x_0
def loss_of(xs):
    hs, _ = memory.convlstm_forward(xs, params)
    return hs[0, -1, :, 16, 16].sum()


ys, xs_ = np.nonzero(np.abs(dxs[0, 0, 0]) == np.abs(dxs[0, 0, 0]).max())
py, px = int(ys[0]), int(xs_[0])
eps = 1e-5
plus, minus = clip.copy(), clip.copy()
plus[0, 0, 0, py, px] += eps
minus[0, 0, 0, py, px] -= eps
fd = (loss_of(plus) - loss_of(minus)) / (2 * eps)
print(f"dL/dx_0[{py}, {px}]: backward {dxs[0, 0, 0, py, px]:.6e}, finite difference {fd:.6e}")

fig, axes = plt.subplots(1, t_len, figsize=(1.6 * t_len + 1.0, 2.3))
mag = np.abs(dxs[0, :, 0])
top = mag.max()
p = k // 2
for t in range(t_len):
    im = axes[t].imshow(np.log10(mag[t] + 1e-12), cmap="magma", vmin=np.log10(top) - 8, vmax=np.log10(top))
    r = (t_len - t) * p
    if r < 16:                                 # at t = 0 the field (radius 16) covers the map
        axes[t].add_patch(plt.Rectangle((16 - r - 0.5, 16 - r - 0.5), 2 * r + 1, 2 * r + 1,
                                        fill=False, ec="cyan", ls="--", lw=1))
    axes[t].plot(16, 16, "+", color="cyan", ms=6)
    axes[t].set_title(f"t = {t}", fontsize=9)
    axes[t].set_xticks([])
    axes[t].set_yticks([])
fig.colorbar(im, ax=list(axes), fraction=0.02, pad=0.01, label="log10 |dL/dx_t|")
fig.suptitle(f"Gradient of one pixel of $h_{{{t_len - 1}}}$ with respect to every input frame")
show(fig, "02_bptt_reach")

# %% [markdown]
# Going back in time the gradient **spreads** (the squares grow by p = 2 pixels per
# step; at t = 0 the field, radius 16, covers the whole map) and its **peak shrinks**
# (each step back multiplies it by gate values below 1 and by small random weights),
# but it never vanishes, and on one pixel of $x_0$ it matches the finite
# difference. That is backpropagation through time. The weights used at step 0 are
# the same arrays as those of step T − 1, so `dWx`, `dWh`, `db` are sums of T
# per-step contributions.

# %% [markdown]
# ## 6. Gradient check
#
# Float64, a tiny problem (N = 1, T = 3, C = 2, F = 2, 5 × 5 maps, 3 × 3 kernels),
# a random `dhs` on every step, and initial states `h0`, `c0` given so that their
# gradients are checked too. `numerical_gradient` perturbs each entry in turn and
# reruns the whole forward pass; we check the plain backward loop here, and the fast
# one at the end of section 7.

# %%
rng = np.random.default_rng(1)
xs_g = rng.standard_normal((1, 3, 2, 5, 5))
pg = {"Wx": rng.uniform(-0.5, 0.5, (8, 2, 3, 3)),
      "Wh": rng.uniform(-0.5, 0.5, (8, 2, 3, 3)),
      "b": rng.uniform(-0.5, 0.5, 8)}
h0 = rng.standard_normal((1, 2, 5, 5))
c0 = rng.standard_normal((1, 2, 5, 5))
dhs_g = rng.standard_normal((1, 3, 2, 5, 5))


def check_gradients(name, module):
    """Relative errors of every gradient of ``module.convlstm_backward`` against centred
    differences of ``module.convlstm_forward``, printed on one line; returns the largest."""
    def run(xs=xs_g, h0=h0, c0=c0):
        return module.convlstm_forward(xs, pg, h0=h0, c0=c0)[0]

    _, cache = module.convlstm_forward(xs_g, pg, h0=h0, c0=c0)
    dxs_g, dp = module.convlstm_backward(dhs_g, cache)
    checks = {
        "dxs": (dxs_g, numerical_gradient(lambda a: run(xs=a), xs_g, dhs_g)),
        "dWx": (dp["Wx"], numerical_gradient(lambda a: run(), pg["Wx"], dhs_g)),
        "dWh": (dp["Wh"], numerical_gradient(lambda a: run(), pg["Wh"], dhs_g)),
        "db": (dp["b"], numerical_gradient(lambda a: run(), pg["b"], dhs_g)),
        "dh0": (dp["h0"], numerical_gradient(lambda a: run(h0=a), h0, dhs_g)),
        "dc0": (dp["c0"], numerical_gradient(lambda a: run(c0=a), c0, dhs_g)),
    }
    errors = {key: rel_error(a, b) for key, (a, b) in checks.items()}
    print(f"{name:14s}: " + "  ".join(f"{key} {e:.1e}" for key, e in errors.items()))
    return max(errors.values())


worst = check_gradients("memory.py", memory)

# %% [markdown]
# ## 7. The fast version: `stvae_np/fast/memory.py`, agrees and is faster
#
# The model calls `fast_memory.convlstm_forward` / `fast_memory.convlstm_backward`: same
# names, same arguments, same numbers, computed differently. The eight convolutions
# of a step are done as **one**: `Wx * x + Wh * h` equals
# `concat(Wx, Wh, axis=1) * concat(x, h, axis=1)`, a convolution from C + F to 4F
# channels. Every map is kept channel-major, `(channels, N, h, w)`, the layout in
# which that convolution is one matrix product with no transposed copies; the padded
# inputs `[x_t; h_{t-1}]` of all steps live in one buffer (h_t is written straight
# into step t+1's slot); one im2col buffer serves every step; the gate arithmetic runs
# in place, on every core. The module docstring lists each trick and `BENCHMARKS.md`
# what it gained. None of it may change a number: on the clip and weights of
# section 5, with a random upstream gradient on every step and initial states given,

# %%
rng = np.random.default_rng(2)
h0_demo, c0_demo = rng.standard_normal((2, n, nf, hh, ww))
dhs_demo = rng.standard_normal((n, t_len, nf, hh, ww))
results = {}
for name, module in (("plain", memory), ("fast", fast_memory)):
    hs_m, cache_m = module.convlstm_forward(clip, params, h0=h0_demo, c0=c0_demo)
    dxs_m, dp_m = module.convlstm_backward(dhs_demo, cache_m)
    results[name] = {"hs": hs_m, "c_last": cache_m.c_last, "dxs": dxs_m,
                     **{f"d{key}": v for key, v in dp_m.items()}}
print("max relative difference, fast/memory.py against memory.py:")
print("  ".join(f"{key} {max_rel_diff(results['fast'][key], results['plain'][key]):.1e}"
                for key in results["plain"]))

# %% [markdown]
# And faster. The tiny preset's memory in one training step: 16 clips, 9 steps, 8
# input and 16 memory channels on a 16 × 16 grid, 5 × 5 kernels, float32, forward +
# backward through time, the best of five runs each. Both versions hand the same
# matrix products to the same BLAS; the fast one saves the copies, transposes and
# fresh buffers around them. (Timings on a shared machine vary from run to run;
# `BENCHMARKS.md` has careful measurements of the whole training step.)

# %%
def fwd_bwd(module, xs, p, dhs):
    hs_, cache_ = module.convlstm_forward(xs, p)
    return module.convlstm_backward(dhs, cache_)


rng = np.random.default_rng(3)
n_s, t_s, c_s, f_s, k_s, hw_s = 16, 9, 8, 16, 5, 16
xs_s = rng.standard_normal((n_s, t_s, c_s, hw_s, hw_s)).astype(np.float32)
p_s = {"Wx": rng.uniform(-0.08, 0.08, (4 * f_s, c_s, k_s, k_s)).astype(np.float32),
       "Wh": rng.uniform(-0.08, 0.08, (4 * f_s, f_s, k_s, k_s)).astype(np.float32),
       "b": np.zeros(4 * f_s, np.float32)}
dhs_s = rng.standard_normal((n_s, t_s, f_s, hw_s, hw_s)).astype(np.float32)
t_ref = best_time(lambda: fwd_bwd(memory, xs_s, p_s, dhs_s))
t_fast = best_time(lambda: fwd_bwd(fast_memory, xs_s, p_s, dhs_s))
print(f"forward + backward, N = {n_s}, T = {t_s}, C = {c_s}, F = {f_s}, {hw_s}², k = {k_s}: "
      f"memory.py {1e3 * t_ref:.0f} ms, fast/memory.py {1e3 * t_fast:.0f} ms, "
      f"speed-up {t_ref / t_fast:.1f}×")

# %% [markdown]
# Last, the gradient check of section 6 on the fast loop: the same finite differences,
# the same bar. The final line is the larger error of the two, plain and fast.

# %%
worst = max(worst, check_gradients("fast/memory.py", fast_memory))
print(f"gradient check: max relative error = {worst:.1e}")
