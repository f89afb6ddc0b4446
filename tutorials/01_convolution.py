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
# # 01 · Convolution: the equation, im2col, the backward pass, and the fast version
#
# Every learned layer of the spatio-temporal video autoencoder is a 2-D convolution:
# the encoder, the four ConvLSTM gates, the flow regressor and the decoder. This
# tutorial reads the plain version in `stvae_np/layers.py` (a few lines per
# function, the maths and nothing else) and then meets the fast one in
# `stvae_np/fast/layers.py`, which the model runs:
#
# 1. the equation, checked against a deliberately naive loop;
# 2. **im2col**: the whole convolution as one matrix product;
# 3. the **backward** pass, from the matrix product; the input gradient is itself a
#    convolution, with the kernel flipped and its two channel axes swapped;
# 4. a picture: a digit through a few hand-made kernels;
# 5. a gradient check against finite differences;
# 6. the **fast** version: the "shift" and "rows" orders, threads and chunks; it
#    agrees with the plain one and is faster (and passes the same gradient check).
#
# Exercise 01 (`tutorials/exercises/01_convolution.py`) asks you to write the forward
# and backward pass yourself. Sections 2 and 3 print their solution, each after a
# warning cell: try the exercise first if you mean to.

# %%
import time

import numpy as np

import _setup  # noqa: F401  (puts the repository on sys.path, picks a backend)
from _setup import best_time, max_rel_diff, plt, show, show_code
from stvae_np import layers
from stvae_np.fast import layers as fast_layers
from stvae_np.data import mnist_digits
from stvae_np.gradcheck import numerical_gradient, rel_error

rng = np.random.default_rng(0)




# %% [markdown]
# ## 1. Cross-correlation with "same" padding
#
# An input `x` of shape `(N, C, H, W)` (batch, channels, rows, columns) and weights
# `W` of shape `(F, C, k, k)` (output channels, input channels, an odd k × k kernel)
# give an output `(N, F, H, W)`:
#
# $$
# \mathrm{out}[n, f, y, x] \;=\; b_f \;+\; \sum_{c=0}^{C-1}\;\sum_{u=0}^{k-1}\sum_{v=0}^{k-1}
#     W[f, c, u, v]\; x_{\mathrm{pad}}[n, c,\, y + u,\, x + v]
# $$
#
# where $x_{\mathrm{pad}}$ is `x` with $p = \lfloor k/2 \rfloor$ rows and columns of
# zeros on every side ("same" padding, so H and W are kept). The kernel is **not**
# flipped: strictly this is a cross-correlation, which is what PyTorch and every deep
# learning library call "convolution".
#
# The most literal implementation is four nested loops with a k × k dot product
# inside. It is far too slow to use, but it is the definition, so we compare
# `layers.conv2d_forward` against it.

# %%
def conv2d_naive(x, w, b):
    """The equation above, one output number at a time (for comparison only)."""
    n, c, h, wd = x.shape
    f, _, k, _ = w.shape
    p = k // 2
    x_pad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    out = np.empty((n, f, h, wd), dtype=x.dtype)
    for i in range(n):
        for j in range(f):
            for y in range(h):
                for xx in range(wd):
                    out[i, j, y, xx] = b[j] + np.sum(w[j] * x_pad[i, :, y:y + k, xx:xx + k])
    return out


x = rng.standard_normal((2, 3, 16, 16))          # (N, C, H, W)
w = rng.standard_normal((4, 3, 5, 5))            # (F, C, k, k)
b = rng.standard_normal(4)                       # (F,)

t0 = time.perf_counter()
out_naive = conv2d_naive(x, w, b)
t_naive = time.perf_counter() - t0
t0 = time.perf_counter()
out, _ = layers.conv2d_forward(x, w, b)
t_ref = time.perf_counter() - t0
print("out shape:", out.shape)
print(f"max |naive − layers.conv2d_forward| = {np.abs(out_naive - out).max():.2e}")
print(f"naive loop {1e3 * t_naive:.1f} ms, layers.conv2d_forward {1e3 * t_ref:.2f} ms")

# %% [markdown]
# ## 2. im2col: the convolution as one matrix product
#
# Look at the sum again: for a fixed output pixel `(n, y, x)` it is a dot product
# between the flattened kernel `W[f]` (length `C·k·k`) and the flattened patch of
# `x_pad` under it. Stack all patches as the **columns** of one matrix:
#
# $$
# \mathrm{cols}\big[(c, u, v),\, (n, y, x)\big] = x_{\mathrm{pad}}[n, c, y + u, x + v],
# \qquad \mathrm{cols} \in \mathbb{R}^{(C k^2) \times (N H W)}
# $$
#
# Then the whole layer is one matrix product, `out = W.reshape(F, C·k·k) @ cols`,
# giving `(F, N·H·W)`, which is reshaped to `(N, F, H, W)`. Row block `(c, u, v)` of
# `cols` is the padded image shifted by `(u, v)`, so k·k slice copies build the whole
# matrix, with no loop over pixels. Here is `layers.im2col`:

# %%
show_code(layers.im2col)

# %% [markdown]
# **Exercise 01 first?** Try exercise 01 first (`tutorials/exercises/01_convolution.py`);
# the cell below shows the solution of its forward pass: `layers.conv2d_forward`, the
# matrix product above with the bias added.

# %%
print("── the solution of exercise 01's forward (tutorials/exercises/01_convolution.py) ──")
show_code(layers.conv2d_forward)

# %%
k = w.shape[-1]
cols = layers.im2col(x, k)
print("x:", x.shape, " W:", w.shape, " -> cols:", cols.shape,
      f"= (C·k·k, N·H·W) = ({3 * k * k}, {2 * 16 * 16})")
out_mm = (w.reshape(4, -1) @ cols).reshape(4, 2, 16, 16).transpose(1, 0, 2, 3) + b.reshape(1, 4, 1, 1)
print(f"max |W₂ @ cols + b − naive loop| = {np.abs(out_mm - out_naive).max():.2e}")

# %% [markdown]
# `col2im` is its **adjoint** (its transpose as a linear map): it adds every entry of
# a `(C·k·k, N·H·W)` matrix back onto the pixel it was copied from, and the entries that
# land on one pixel add up. That is exactly what the backward pass needs, and we can
# check the adjoint identity
# $\langle \mathrm{im2col}(x), D\rangle = \langle x, \mathrm{col2im}(D)\rangle$:

# %%
show_code(layers.col2im)
d = rng.standard_normal(cols.shape)
lhs, rhs = np.sum(cols * d), np.sum(x * layers.col2im(d, x.shape, k))
print(f"<im2col(x), D> = {lhs:.10f}   <x, col2im(D)> = {rhs:.10f}")

# %% [markdown]
# What does `cols` look like? Take one MNIST digit, average-pool it to 14 × 14 so the
# picture stays readable, and use a 3 × 3 kernel: `cols` is `(9, 196)`. Each of its
# nine rows is the whole (padded) digit shifted by one kernel offset `(u, v)` and
# flattened row by row (hence the stripes: one stroke segment per image row); each
# column is one 3 × 3 patch, unrolled (red: the patch around output pixel (6, 7)).
# The product `W₂ @ cols` takes one weighted sum of the nine rows per output channel.

# %%
images, classes = mnist_digits()
digit = images[np.flatnonzero(classes == 3)[0]].astype(np.float64)        # (28, 28) in [0, 1]
small = digit.reshape(14, 2, 14, 2).mean(axis=(1, 3))                      # (14, 14)
cols_small = layers.im2col(small[None, None], 3)                               # (9, 196)
print("cols of a 14×14 digit, 3×3 kernel:", cols_small.shape)

y_pick, x_pick = 6, 7                      # one output pixel and its column y·14 + x
col_pick = y_pick * 14 + x_pick
fig = plt.figure(figsize=(12, 3.8))
ax0 = fig.add_axes([0.0, 0.12, 0.15, 0.76])
ax0.imshow(small, cmap="gray", vmin=0, vmax=1)
ax0.add_patch(plt.Rectangle((x_pick - 1.5, y_pick - 1.5), 3, 3, fill=False, ec="red", lw=2))
ax0.set_title("x (1, 1, 14, 14)")
ax0.axis("off")
ax1 = fig.add_axes([0.23, 0.12, 0.70, 0.76])
ax1.imshow(cols_small, cmap="gray", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
ax1.add_patch(plt.Rectangle((col_pick - 0.5, -0.5), 1, 9, fill=False, ec="red", lw=2))
ax1.set_yticks(range(9))
ax1.set_yticklabels([f"(0,{u},{v})" for u in range(3) for v in range(3)], fontsize=8)
ax1.set_ylabel("row (c, u, v), c = 0")
ax1.set_xticks(np.arange(0, 196, 14))
ax1.set_xlabel("column = output pixel y·14 + x (one 3×3 patch each)")
ax1.set_title("cols = im2col(x, 3): shape (C·k·k, N·H·W) = (9, 196)")
ax2 = fig.add_axes([0.945, 0.35, 0.055, 0.3])
ax2.imshow(cols_small[:, col_pick].reshape(3, 3), cmap="gray", vmin=0, vmax=1)
ax2.set_title(f"column {col_pick}\nas 3×3", fontsize=8, color="red")
ax2.set_xticks([])
ax2.set_yticks([])
show(fig, "01_im2col_matrix")

# %% [markdown]
# ## 3. The backward pass
#
# Given the upstream gradient `dout = ∂L/∂out` of shape `(N, F, H, W)`, the forward
# `out₂ = W₂ @ cols` is a matrix product, whose gradients every backpropagation course
# derives: `dW₂ = dout₂ @ colsᵀ` and `dcols = W₂ᵀ @ dout₂`. Then `dx = col2im(dcols)`:
# every input pixel collects the gradient of every patch it was copied into. Written
# out,
#
# $$
# \frac{\partial L}{\partial W[f, c, u, v]} = \sum_{n, y, x} \mathrm{dout}[n, f, y, x]\;
#     x_{\mathrm{pad}}[n, c, y + u, x + v],
# \qquad
# \frac{\partial L}{\partial b_f} = \sum_{n, y, x} \mathrm{dout}[n, f, y, x]
# $$
#
# `layers.conv2d_backward` is exactly that (the cache keeps `x`, and `cols` is
# rebuilt).
#
# **Exercise 01 first?** Try exercise 01 first (`tutorials/exercises/01_convolution.py`);
# the cell below shows the solution of its backward pass.

# %%
print("── the solution of exercise 01's backward (tutorials/exercises/01_convolution.py) ──")
show_code(layers.conv2d_backward)

# %% [markdown]
# The input gradient is a convolution too. Input pixel `(y', x')` was read by output
# `(y, x)` through tap `(u, v)` when `y' = y + u − p`. Substituting `u' = k − 1 − u`
# (so `y = y' + u' − p`):
#
# $$
# \frac{\partial L}{\partial x[n, c, y', x']} = \sum_{f}\sum_{u', v'}
#     \underbrace{W[f, c, k-1-u', k-1-v']}_{\tilde W[c, f, u', v']}\;
#     \mathrm{dout}_{\mathrm{pad}}[n, f, y' + u', x' + v']
# $$
#
# That is the same "same" cross-correlation as the forward pass, applied to `dout`,
# with the kernel $\tilde W$ = `W` **flipped** in both spatial axes and with its
# channel axes **swapped** (`(C, F, k, k)`: the output channels of the forward are the
# input channels of the backward). The backward never builds $\tilde W$, but it must
# agree with a forward convolution that does:

# %%
dout = rng.standard_normal(out.shape)                          # (N, F, H, W)
_, cache = layers.conv2d_forward(x, w, b)
dx, dw, db = layers.conv2d_backward(dout, cache)
w_flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))   # (C, F, k, k)
dx_as_conv, _ = layers.conv2d_forward(dout, w_flipped)
print("dx:", dx.shape, " W̃:", w_flipped.shape)
print(f"max |conv2d_backward dx − conv2d_forward(dout, W̃)| = {np.abs(dx - dx_as_conv).max():.2e}")

# %% [markdown]
# ## 4. A picture: one digit through a few hand-made kernels
#
# One input channel, four output channels: `W` is `(4, 1, 5, 5)` (the 3 × 3 kernels
# are zero-padded to 5 × 5 so that they share one weight tensor). Because this is a
# cross-correlation, the "Sobel x" kernel `[-1 0 1]` responds positively where
# brightness **increases** to the right, i.e. on the left edge of a stroke.

# %%
def embed(kernel, size=5):
    """Centre a small odd kernel in a size × size array of zeros."""
    out = np.zeros((size, size))
    o = (size - kernel.shape[0]) // 2
    out[o:o + kernel.shape[0], o:o + kernel.shape[1]] = kernel
    return out


sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)
gauss = np.exp(-0.5 * (np.arange(5) - 2.0) ** 2 / 1.0 ** 2)
kernels = {
    "Gaussian blur 5×5": np.outer(gauss, gauss) / np.outer(gauss, gauss).sum(),
    "Sobel x (d/dx)": embed(sobel_x),
    "Sobel y (d/dy)": embed(sobel_x.T),
    "Laplacian": embed(np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], float)),
}
w_demo = np.stack(list(kernels.values()))[:, None]                     # (4, 1, 5, 5)
filtered, _ = layers.conv2d_forward(digit[None, None], w_demo)            # (1, 4, 28, 28)

fig, axes = plt.subplots(2, 5, figsize=(12, 4.4), gridspec_kw={"height_ratios": [1, 1.8]})
axes[0, 0].axis("off")
axes[1, 0].imshow(digit, cmap="gray", vmin=0, vmax=1)
axes[1, 0].set_title("input x (1, 1, 28, 28)")
axes[1, 0].axis("off")
for j, (name, kern) in enumerate(kernels.items(), start=1):
    lim = np.abs(kern).max()
    axes[0, j].imshow(kern, cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[0, j].set_title(f"W[{j - 1}, 0]", fontsize=9)
    axes[0, j].axis("off")
    resp = filtered[0, j - 1]
    lim = np.abs(resp).max()
    axes[1, j].imshow(resp, cmap="RdBu_r" if resp.min() < 0 else "gray",
                      vmin=-lim if resp.min() < 0 else 0, vmax=lim)
    axes[1, j].set_title(f"out[0, {j - 1}]: {name}", fontsize=9)
    axes[1, j].axis("off")
fig.suptitle("conv2d_forward(x, W) with W (4, 1, 5, 5): red > 0, blue < 0")
show(fig, "01_digit_filters")

# %% [markdown]
# ## 5. Gradient check
#
# The referee for every hand-written backward pass is the centred difference
# $\partial s/\partial\theta_i \approx [s(\theta + h e_i) - s(\theta - h e_i)]/2h$ of
# $s = \sum \mathrm{out} \odot \mathrm{dout}$, computed by
# `stvae_np.gradcheck.numerical_gradient` in float64. We check `dx`, `dW` and `db`
# of `layers.conv2d_backward` on shapes small enough to perturb every entry (section 6
# runs the same check on every order of the fast version). Convolution is linear in each
# argument, so the centred difference has no truncation error and the agreement is
# limited only by round-off (about 1e-10 relative).

# %%
xg = rng.standard_normal((2, 3, 5, 6))
wg = rng.standard_normal((2, 3, 3, 3))
bg = rng.standard_normal(2)
dout_g = rng.standard_normal((2, 2, 5, 6))


def check_gradients(label, module, method):
    """Relative errors of dx, dW, db of ``module.conv2d_backward`` against centred
    differences of ``module.conv2d_forward``, printed on one line."""
    def fwd(a=xg, v=wg, c=bg):
        return module.conv2d_forward(a, v, c, method=method)[0]

    _, cache = module.conv2d_forward(xg, wg, bg, method=method)
    dx, dw, db = module.conv2d_backward(dout_g, cache)
    e = [rel_error(dx, numerical_gradient(lambda a: fwd(a=a), xg, dout_g)),
         rel_error(dw, numerical_gradient(lambda a: fwd(v=a), wg, dout_g)),
         rel_error(db, numerical_gradient(lambda a: fwd(c=a), bg, dout_g))]
    print(f"{label:22s}: dx {e[0]:.1e}  dW {e[1]:.1e}  db {e[2]:.1e}")
    return e


errors = check_gradients("layers.py", layers, "auto")

# %% [markdown]
# ## 6. The fast version: `stvae_np/fast/layers.py`, agrees and is faster
#
# The model calls `fast_layers.conv2d_forward` / `fast_layers.conv2d_backward`: same names, same
# arguments, same numbers, computed differently. im2col builds a buffer of
# `C·k²·N·H·W` numbers. For the flow regressor's first layer (64 → 2 channels, 15 × 15
# kernel) that is 225 copies of a 64-channel feature map, only to produce 2 channels.
# The sum can be taken in the other order, the **shift** order:
#
# $$
# z[f, u, v, n, \cdot, \cdot] = \sum_{c} W[f, c, u, v]\, x[n, c, \cdot, \cdot]
# \quad\text{(one matmul } (F k^2 \times C) \cdot (C \times N H W)\text{)},
# \qquad
# \mathrm{out}[n, f, y, x] = \sum_{u, v} z[f, u, v, n, y + u - p, x + v - p]
# $$
#
# First contract the **channels** (every kernel tap `(f, u, v)` applied to the whole
# map), then add the k² maps `z[f, u, v]`, each **shifted** by `(u − p, v − p)`. A
# shifted window that falls off the map would meet the zero padding, so each add is
# clipped to the part that stays inside, and no multiply is spent on the padding.
# The buffer is now `F·k²·N·H·W`: the ratio of the two buffers is `C / F`, and when
# `F ≪ C` the shift order touches far less memory.
#
# A third order, **rows**, sits half way: unfold only the k **horizontal** shifts,
# $R[c, v, n, y, x] = x[n, c, y, x + v - p]$ (k copies instead of k², zero outside
# the map), contract channels and kernel columns in one matmul
# $z[f, u] = \sum_{c, v} W[f, c, u, v]\, R[c, v]$, then add the k **vertical** shifts
# $\mathrm{out}[n, f, y, x] = \sum_u z[f, u, n, y + u - p, x]$. Its buffer,
# `(C + F)·k·N·H·W`, is the smallest when both `C` and `F` are small, as in the
# 2 → 2 flow layer. `fast_layers.conv2d_forward(..., method="auto")` picks the order with the
# smallest buffer (counting the channel-major copy of the input, for the last two).
#
# Buffer sizes (numbers per batch item) for the layers of the paper's model:

# %%
model_layers = [  # name, C_in, C_out, k, H (= W)
    ("encoder 1→16, 7×7, 64²", 1, 16, 7, 64),
    ("ConvLSTM [x;h] 80→256, 7×7, 32²", 80, 256, 7, 32),
    ("flow1 64→2, 15×15, 32²", 64, 2, 15, 32),
    ("flow2 2→2, 15×15, 32²", 2, 2, 15, 32),
    ("decoder 16→1, 7×7, 64²", 16, 1, 7, 64),
]
print(f"{'layer':34s} {'im2col C·k²·H·W':>16s} {'shift (F·k²+C)·H·W':>19s} "
      f"{'rows (C·k+F·k+C)·H·W':>21s}  auto picks")
for name, c_in, c_out, kk, hw in model_layers:
    sizes = {"im2col": c_in * kk * kk * hw * hw,
             "shift": (c_out * kk * kk + c_in) * hw * hw,
             "rows": (c_in * kk + c_out * kk + c_in) * hw * hw}
    pick = min(sizes, key=sizes.get)
    x_demo = np.zeros((1, c_in, hw, hw), np.float32)
    assert fast_layers.conv2d_forward(x_demo, np.zeros((c_out, c_in, kk, kk), np.float32))[1].method == pick
    print(f"{name:34s} {sizes['im2col']:16,d} {sizes['shift']:19,d} {sizes['rows']:21,d}  {pick}")

# %% [markdown]
# (The ConvLSTM does not go through `auto`: it calls the im2col order directly, in a
# channel-major layout with one reusable buffer; see `fast_layers.conv_cm_forward`.) Besides
# the orders, `fast/layers.py` keeps its im2col channel-major `(C, N, H, W)` so that every copy
# runs over whole rows, splits the batch into chunks whose buffers stay under
# `fast_layers.MAX_BUFFER` elements (bounded memory), and runs the k·k copies and adds on every
# core (`fast_layers.over_batch_blocks`). The module docstring lists each trick and
# `BENCHMARKS.md` what it gained.
#
# None of that may change a number. Every order against the plain `layers.py`, values and all
# three gradients, on a 15 × 15 kernel wider than its 9 × 8 map (float64;
# `tests/test_fast.py` does this for many shapes, chunked and threaded too):

# %%
xa = rng.standard_normal((3, 4, 9, 8))
wa = rng.standard_normal((3, 4, 15, 15)) / 15
ba = rng.standard_normal(3)
dout_a = rng.standard_normal((3, 3, 9, 8))
out_r, cache_r = layers.conv2d_forward(xa, wa, ba)
grads_r = layers.conv2d_backward(dout_a, cache_r)
for method in fast_layers.METHODS:
    out_f, cache_f = fast_layers.conv2d_forward(xa, wa, ba, method=method)
    grads_f = fast_layers.conv2d_backward(dout_a, cache_f)
    diffs = [max_rel_diff(out_f, out_r)] + [max_rel_diff(g, r) for g, r in zip(grads_f, grads_r)]
    print(f"{method:6s} ({cache_f.method:6s}): max relative difference to layers.py "
          f"out {diffs[0]:.1e}  dx {diffs[1]:.1e}  dW {diffs[2]:.1e}  db {diffs[3]:.1e}")

# %% [markdown]
# And the point of it all, speed. Forward + backward of three layers of the paper's
# model, 16 maps in float32, the best of five runs each, against the plain im2col of
# section 2. Where `auto` picks im2col (the encoder) the gain can only come from the
# layout and the threads; the layers with few output channels gain from the order.
# (Timings on a shared machine vary from run to run; `BENCHMARKS.md` has careful
# measurements of the whole training step.)

# %%
def fwd_bwd(module, x_, w_, dout_):
    out_, cache_ = module.conv2d_forward(x_, w_)
    return module.conv2d_backward(dout_, cache_)


speed_layers = [("decoder 16→1, 7×7, 64²", 16, 1, 7, 64),
                ("flow2 2→2, 15×15, 32²", 2, 2, 15, 32),
                ("encoder 1→16, 7×7, 64²", 1, 16, 7, 64)]
ratios = {}
for name, c_in, c_out, kk, hw in speed_layers:
    xs_ = rng.standard_normal((16, c_in, hw, hw)).astype(np.float32)
    ws_ = (0.1 * rng.standard_normal((c_out, c_in, kk, kk))).astype(np.float32)
    ds_ = rng.standard_normal((16, c_out, hw, hw)).astype(np.float32)
    t_r = best_time(lambda: fwd_bwd(layers, xs_, ws_, ds_))
    t_f = best_time(lambda: fwd_bwd(fast_layers, xs_, ws_, ds_))
    ratios[name] = t_r / t_f
    print(f"{name:24s} layers.py {1e3 * t_r:7.1f} ms   fast/layers.py {1e3 * t_f:6.1f} ms   "
          f"speed-up {t_r / t_f:5.1f}×")
print(f"speed-up on the decoder layer (16 maps 16→1, 7×7, 64², forward + backward): "
      f"{ratios[speed_layers[0][0]]:.1f}×")

# %% [markdown]
# Last, the gradient check of section 5 on every order of the fast version: the same
# finite differences, the same bar. The final line is the largest error of all, plain
# and fast.

# %%
for method in ("im2col", "shift", "rows"):
    errors += check_gradients(f"fast/layers.py {method}", fast_layers, method)
print(f"gradient check: max relative error = {max(errors):.1e}")
