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
# # 03 · Grid generator and bilinear sampler
#
# The autoencoder does not paint the next frame from scratch: it predicts a **flow**
# `T` (a 2-vector per pixel of the memory grid) and **moves** the current encoded
# frame along it. Moving an image by a real-valued, per-pixel displacement is the
# job of the spatial transformer's two parameter-free parts, in
# `stvae_np/sampler.py`:
#
# * the **grid generator** turns the flow into source coordinates,
#   $G(y, x) = (x_s, y_s) = (x + T_x(y, x),\; y + T_y(y, x))$;
# * the **bilinear sampler** reads the image at those (non-integer) points.
#
# Both are differentiable almost everywhere, so the loss on the predicted frame can
# train the flow. This tutorial warps an MNIST digit with known flows, looks at the
# four interpolation weights of one point, explains why the gradient has kinks at
# integer coordinates, and ends with a gradient check.

# %%
import numpy as np

import _setup  # noqa: F401  (puts the repository on sys.path, picks a backend)
from _setup import plt, show
from stvae_np.data import mnist_digits
from stvae_np.gradcheck import numerical_gradient, rel_error
from stvae_np.sampler import base_grid, bilinear_backward, bilinear_forward, flow_to_grid
from stvae_np.viz import color_wheel_image, flow_to_color

# %% [markdown]
# ## 1. Backward warping and the bilinear formula
#
# The flow is `(N, 2, h, w)` in **pixels**, channel 0 = x (columns), channel 1 = y
# (rows). It is a *backward* warp: output pixel (y, x) *reads* the input at the
# source point $(x_s, y_s) = (x + T_x, y + T_y)$. So content that moves **right** by
# v pixels needs $T_x = -v$ (the new pixel looks v pixels to its left).
#
# The source point is rarely on the pixel lattice. With $x_0 = \lfloor x_s \rfloor$,
# $x_1 = x_0 + 1$ (same for y), the sampler mixes the four integer neighbours
# $q \in \{(y_0,x_0), (y_0,x_1), (y_1,x_0), (y_1,x_1)\}$:
#
# $$
# \mathrm{out}[n, c, y, x] = \sum_{q} \mathrm{img}[n, c, q_y, q_x]\;
#   \underbrace{\max(0, 1 - |x_s - q_x|)}_{w_x(q)}\;\underbrace{\max(0, 1 - |y_s - q_y|)}_{w_y(q)}
# $$
#
# and a neighbour outside the map contributes zero (zero padding). `base_grid(n, h,
# w, like)` is the identity grid (every pixel's own coordinates), and
# `flow_to_grid(flow)` adds the flow to it: that is the whole grid generator. It is
# linear with slope one, so its backward is the identity, `dflow = dgrid`.

# %%
images, classes = mnist_digits()
digit = images[np.flatnonzero(classes == 2)[0]].astype(np.float64)       # (28, 28)
img = np.zeros((1, 1, 40, 40))
img[0, 0, 6:34, 6:34] = digit                                            # (N, C, H, W)
n, _, hh, ww = img.shape

grid0 = base_grid(n, hh, ww, img)                                        # (1, 2, 40, 40)
print("grid:", grid0.shape, " x_s of row 0:", grid0[0, 0, 0, :5], "  y_s of column 0:", grid0[0, 1, :5, 0])

# zero flow: every source point is an integer, one weight is 1 and the others are 0
out_zero, _ = bilinear_forward(img, flow_to_grid(np.zeros((n, 2, hh, ww))))
print("zero flow reproduces the input exactly:", np.array_equal(out_zero, img))

# T_x = −1: pixel (y, x) reads (y, x − 1), so the content moves one pixel right
flow_right = np.zeros((n, 2, hh, ww))
flow_right[:, 0] = -1.0
out_right, _ = bilinear_forward(img, flow_to_grid(flow_right))
print("T_x = −1 shifts right by one pixel:", np.array_equal(out_right[..., 1:], img[..., :-1]),
      "| column 0 is zero (read from outside):", not out_right[..., 0].any())

# %% [markdown]
# ## 2. Warping a digit with known flows
#
# Two flows on the 40 × 40 canvas, built by hand:
#
# * a **translation** by a non-integer amount: content moves 5.5 px right and 3.25 px
#   up, so $T = (-5.5, +3.25)$ everywhere;
# * a **rotation** of the content by 30° counter-clockwise (as displayed, y pointing
#   down) about the centre c: the output at p reads the input at
#   $c + R(-30°)(p - c)$, so $T(p) = c + R(-30°)(p - c) - p$ (it grows with the
#   distance from the centre).
#
# The colour code (`viz.flow_to_color`) shows the **motion** $-T$: hue = direction
# (legend on the left), saturation = length; the arrows show the motion too.

# %%
ys, xs = np.mgrid[0:hh, 0:ww].astype(np.float64)
flow_shift = np.zeros((n, 2, hh, ww))
flow_shift[:, 0], flow_shift[:, 1] = -5.5, 3.25

theta = np.deg2rad(30.0)
cx, cy = (ww - 1) / 2, (hh - 1) / 2
# counter-clockwise on screen (y down) is a negative angle in (x, y) coordinates;
# the source point applies the inverse rotation
cos_t, sin_t = np.cos(theta), np.sin(theta)
src_x = cx + cos_t * (xs - cx) - sin_t * (ys - cy)
src_y = cy + sin_t * (xs - cx) + cos_t * (ys - cy)
flow_rot = np.stack([src_x - xs, src_y - ys])[None]                     # (1, 2, 40, 40)

warped = {name: bilinear_forward(img, flow_to_grid(f))[0]
          for name, f in (("translation", flow_shift), ("rotation", flow_rot))}

fig, axes = plt.subplots(2, 3, figsize=(9.5, 6.6))
axes[0, 0].imshow(img[0, 0], cmap="gray", vmin=0, vmax=1)
axes[0, 0].set_title("input img (1, 1, 40, 40)")
axes[1, 0].imshow(color_wheel_image(64))
axes[1, 0].set_title("colour = motion −T\n(legend; white = still)", fontsize=9)
step = 5
for j, (name, f) in enumerate((("translation", flow_shift), ("rotation", flow_rot)), start=1):
    axes[0, j].imshow(warped[name][0, 0], cmap="gray", vmin=0, vmax=1)
    axes[0, j].set_title(f"bilinear_forward(img, G): {name}", fontsize=9)
    max_mag = np.hypot(f[0, 0], f[0, 1]).max()
    axes[1, j].imshow(flow_to_color(f[0], max_mag=max_mag))
    sl = (slice(step // 2, None, step), slice(step // 2, None, step))
    axes[1, j].quiver(xs[sl], ys[sl], -f[0, 0][sl], -f[0, 1][sl], angles="xy",
                      scale_units="xy", scale=1.0, width=0.006, color="black")
    axes[1, j].set_title(f"flow T ({name}), |T| ≤ {max_mag:.1f} px", fontsize=9)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("Backward warping: out(p) = img(p + T(p)); arrows and colours show the motion −T")
show(fig, "03_warp_digit")

# %% [markdown]
# The translated digit is slightly blurred: a shift by 5.5 px puts every source
# point half-way between two pixels, and bilinear interpolation averages them. The
# rotation reads from outside the canvas near the corners, where the zero padding
# gives black.
#
# ## 3. The four weights of one point
#
# For one source point the weights are areas: $w_x(q)\,w_y(q)$ is the area of the
# sub-rectangle of the unit cell **opposite** to corner q (the closer the point is to
# a corner, the larger that corner's opposite rectangle). They are ≥ 0 and sum to 1
# inside the map. Here we ask `bilinear_forward` for a single point and read the
# weights from its cache (`cache.weight`, shape `(N, 1, 4, P)`, corners in the order
# (y0,x0), (y0,x1), (y1,x0), (y1,x1)).

# %%
small = np.array([[0.0, 0.2, 0.4, 0.1],
                  [0.3, 0.9, 0.6, 0.2],
                  [0.1, 0.5, 1.0, 0.4],
                  [0.0, 0.2, 0.3, 0.1]])[None, None]                  # (1, 1, 4, 4)
x_s, y_s = 1.3, 1.7
point = np.array([x_s, y_s]).reshape(1, 2, 1, 1)                      # grid (N, 2, 1, 1)
val, cache = bilinear_forward(small, point)
weights = cache.weight[0, 0, :, 0]                                    # (4,)
corners = [(1, 1), (1, 2), (2, 1), (2, 2)]                            # (y, x) of the four q
for (qy, qx), wq in zip(corners, weights):
    print(f"q = (y={qy}, x={qx}): w = (1 − |x_s − {qx}|)(1 − |y_s − {qy}|) = {wq:.2f},  "
          f"img(q) = {small[0, 0, qy, qx]}")
print(f"sum of weights = {weights.sum():.2f};  out = Σ w·img(q) = {val[0, 0, 0, 0]:.3f}")

fig, ax = plt.subplots(figsize=(5.2, 5.2))
colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
for (qy, qx), wq, col in zip(corners, weights, colors):
    # the opposite sub-rectangle: spans from the point to the corner diagonal to q
    ox, oy = 2 * 1 + 1 - qx, 2 * 1 + 1 - qy                           # the opposite corner
    rx0, rx1 = sorted([x_s, ox])
    ry0, ry1 = sorted([y_s, oy])
    ax.add_patch(plt.Rectangle((rx0, ry0), rx1 - rx0, ry1 - ry0, fc=col, alpha=0.35, ec=col))
    ax.plot(qx, qy, "o", color=col, ms=6 + 30 * wq)
    ax.text(qx + (0.08 if qx == 2 else -0.08), qy + (0.12 if qy == 2 else -0.12),
            f"w = {wq:.2f}\nimg = {small[0, 0, qy, qx]}", color=col, fontsize=10,
            ha="left" if qx == 2 else "right",
            va="top" if qy == 2 else "bottom", fontweight="bold")
ax.plot(x_s, y_s, "kx", ms=10, mew=2)
ax.text(x_s + 0.05, y_s - 0.05, f"$(x_s, y_s) = ({x_s}, {y_s})$", fontsize=10, va="bottom")
ax.set_xticks(range(4))
ax.set_yticks(range(4))
ax.grid(True, color="gray", lw=0.5, alpha=0.5)
ax.set_xlim(0.4, 2.6)
ax.set_ylim(2.6, 0.4)
ax.set_aspect("equal")
ax.set_xlabel("x (column)")
ax.set_ylabel("y (row)")
ax.set_title("Each corner's weight = area of the opposite\n"
             f"rectangle (same colour); out = {val[0, 0, 0, 0]:.3f}")
show(fig, "03_four_weights")

# %% [markdown]
# ## 4. Why the gradient has kinks at integer coordinates
#
# Hold $y_s$ fixed on a row and move $x_s$. Between two integers only the same two
# pixels are mixed, $\mathrm{out} = (x_1 - x_s)\,\mathrm{img}(x_0) + (x_s - x_0)\,
# \mathrm{img}(x_1)$: a straight line, with slope
# $\partial\,\mathrm{out}/\partial x_s = \mathrm{img}(x_1) - \mathrm{img}(x_0)$.
# When $x_s$ crosses an integer the pair of neighbours changes and so does the slope:
# the sampler is **continuous but not differentiable** at integer coordinates. The
# gradient it returns (`bilinear_backward`, here `dgrid[:, 0]` with `dout = 1`) is
# piecewise constant and jumps at every integer; at an exact integer the code
# returns the right-hand slope (⌊x_s⌋ = x_s). Off the map the value and slope go to 0.
#
# Below, a one-row image and one output pixel whose $x_s$ sweeps from −1.5 to 7.5; we
# evaluate all sweep positions at once as P grid points.

# %%
row = np.array([[[[0.1, 0.8, 0.3, 0.5, 0.9, 0.2, 0.6]]]])              # (1, 1, 1, 7)
sweep = np.linspace(-1.5, 7.5, 901)
grid_sweep = np.stack([sweep, np.zeros_like(sweep)]).reshape(1, 2, 1, -1)   # y_s = 0
out_sweep, cache = bilinear_forward(row, grid_sweep)                   # (1, 1, 1, P)
_, dgrid = bilinear_backward(np.ones_like(out_sweep), cache)          # (1, 2, 1, P)
slope = dgrid[0, 0, 0]

# one-sided finite differences at the integer x_s = 3 disagree: a kink
eps = 1e-6
def value_at(xv):
    return bilinear_forward(row, np.array([xv, 0.0]).reshape(1, 2, 1, 1))[0][0, 0, 0, 0]


left = (value_at(3.0) - value_at(3.0 - eps)) / eps
right = (value_at(3.0 + eps) - value_at(3.0)) / eps
_, cache3 = bilinear_forward(row, np.array([3.0, 0.0]).reshape(1, 2, 1, 1))
at3 = bilinear_backward(np.ones((1, 1, 1, 1)), cache3)[1][0, 0, 0, 0]           # dgrid x at x_s = 3
print(f"at x_s = 3: left slope {left:.3f} (= img(3) − img(2)), right slope {right:.3f} "
      f"(= img(4) − img(3)), bilinear_backward gives {at3:.3f}")

fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 5.6), sharex=True)
ax1.plot(sweep, out_sweep[0, 0, 0], color="black")
ax1.plot(np.arange(7), row[0, 0, 0], "o", color="tab:blue", label="pixel values img(0, q_x)")
ax1.set_ylabel("out")
ax1.set_ylim(-0.05, 1.05)
ax1.legend(loc="upper right", fontsize=9)
ax1.set_title("One output pixel as its source x_s sweeps across the row (y_s = 0)")
ax2.plot(sweep, slope, color="tab:red", drawstyle="steps-post")
ax2.set_ylabel("∂ out / ∂ x_s  (dgrid[:, 0])")
ax2.set_xlabel("x_s (pixels)")
for ax in (ax1, ax2):
    for q in range(-1, 8):
        ax.axvline(q, color="gray", lw=0.5, ls=":")
    ax.axhline(0, color="gray", lw=0.5)
ax2.set_ylim(-0.8, 1.0)
ax2.annotate("jump at x_s = 3: neighbours (2, 3) → (3, 4),\nslope img(3)−img(2) → img(4)−img(3)",
             (3, 0.3), (1.2, 0.78), va="center",
             arrowprops=dict(arrowstyle="->"), fontsize=9)
show(fig, "03_kinks")

# %% [markdown]
# In training the source points almost never land exactly on an integer, so the
# kinks do no harm; but a finite-difference check whose ± h step straddles an
# integer measures the average of two different slopes and fails. So the gradient
# check keeps every source point at least 0.05 px away from an integer.
#
# ## 5. Gradient check
#
# Float64, two images with two channels, 3 × 4 output points per image, source points
# spread over and slightly beyond the 4 × 5 map (so some neighbours are off the map
# and contribute zero), fractional parts kept away from 0 and 1. We check
# `dimg` (a scatter-add: many outputs can read one pixel) and `dgrid`.

# %%
rng = np.random.default_rng(0)
img_g = rng.standard_normal((2, 2, 4, 5))
grid_g = np.stack([rng.uniform(-1.5, 5.5, (2, 3, 4)), rng.uniform(-1.5, 4.5, (2, 3, 4))], axis=1)
frac = grid_g - np.floor(grid_g)
grid_g = np.where((frac < 0.05) | (frac > 0.95), grid_g + 0.3, grid_g)   # keep off integers
dout_g = rng.standard_normal((2, 2, 3, 4))

_, cache = bilinear_forward(img_g, grid_g)
dimg, dgrid = bilinear_backward(dout_g, cache)
dimg_num = numerical_gradient(lambda a: bilinear_forward(a, grid_g)[0], img_g, dout_g)
dgrid_num = numerical_gradient(lambda a: bilinear_forward(img_g, a)[0], grid_g, dout_g)
errors = {"dimg": rel_error(dimg, dimg_num), "dgrid": rel_error(dgrid, dgrid_num)}
print("  ".join(f"{name} {e:.1e}" for name, e in errors.items()))
print(f"gradient check: max relative error = {max(errors.values()):.1e}")
