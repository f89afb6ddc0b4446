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
# # 06 · The whole model: one clip through every stage
#
# The earlier tutorials built the parts: convolutions, the ConvLSTM, the sampler, the
# losses. `stvae_np.model.STVAE` joins them. At each step t = 0 … T−2 it reads frame
# x_t and predicts x_{t+1}:
#
#     e_t = maxpool2(tanh(conv(x_t; We) + be))         spatial encoder
#     h_t = ConvLSTM(e_t, h_{t−1}, c_{t−1})             memory (h_{−1} = c_{−1} = 0)
#     T_t = conv1x1(conv_k(conv_k(h_t)))                flow regressor, no non-linearity
#     G_t(y, x) = (x + T_t[0](y, x), y + T_t[1](y, x))  grid generator
#     ê_t = bilinear(e_t, G_t)                          sampler, zero outside the map
#     ŷ_t = conv(upsample2(ê_t); Wd) + bd               spatial decoder
#
# The flow T_t is in pixels of the memory grid (half the image size), channel 0 = x,
# channel 1 = y, and it is a *backward* warp: the prediction at (y, x) reads the
# encoded frame at (y + T_y, x + T_x). This tutorial follows one Moving MNIST clip
# through these stages with the model's own pieces, prints every shape, writes down the
# loss, counts the parameters, and checks the gradient of the whole model.

# %%
import _setup  # noqa: F401
from _setup import plt, show

import numpy as np

from stvae_np import data
from stvae_np.gradcheck import directional_check
from stvae_np.losses import huber_smoothness_forward, mse_forward
from stvae_np.model import PARAM_NAMES, STVAE, Config
from stvae_np.sampler import bilinear_forward, flow_to_grid
from stvae_np.viz import color_wheel_image, flow_to_color

# %% [markdown]
# ## 1. The paper's model and one clip
#
# `Config.paper()`: 64×64 grey frames, 16 encoder filters 7×7, 64 memory filters 7×7,
# flow kernels 15×15. The clip has N = 1 sequence of T = 4 frames, so the model makes
# S = T − 1 = 3 predictions.

# %%
cfg = Config.paper()
model = STVAE(cfg, seed=0)                                  # float32, on the CPU
clip = data.moving_mnist_for("paper", 1, seq_len=4, split="test", seed=3).frames
n, t_len, c, H, W = clip.shape
s = t_len - 1
print("clip (N, T, C, H, W):", clip.shape, clip.dtype)

# %% [markdown]
# ## 2. Stage by stage
#
# Everything except the memory is independent across time once the frames are known,
# so `STVAE.loss_and_grads` stacks the N·S input frames in the batch axis and runs the
# encoder, flow head, sampler and decoder once over all of them; only the ConvLSTM
# walks through time. The cell below does the same with the model's own stages, the
# public methods `encode`, the memory's `convlstm_forward`, `flow_head`, then the grid and the
# sampler by hand (`flow_to_grid`, i.e. base grid + T, and `bilinear_forward`), and
# `warp_decode`, which repeats the last two and adds the decoder. Each stage also
# returns a named cache for the backward pass (`EncodeCache`, `FlowCache`,
# `DecodeCache`), which this cell does not need. `model.layers` and `model.memory` are the
# modules the model runs: `stvae_np.fast.layers` and `stvae_np.fast.memory` by default, the
# plain `stvae_np.layers` and `stvae_np.memory` with `STVAE(config, ops="plain")`.

# %%
p = model.params
inputs = clip[:, :-1].reshape(n * s, c, H, W)                       # x_0 … x_{T−2}
e, _ = model.encode(inputs)                                          # (N·S, Fe, h, w)
fe, h, w = e.shape[1:]
lstm_params = {"Wx": p["lstm.Wx"], "Wh": p["lstm.Wh"], "b": p["lstm.b"]}
hs, _ = model.memory.convlstm_forward(e.reshape(n, s, fe, h, w), lstm_params)   # (N, S, Fm, h, w)
flow, _ = model.flow_head(hs.reshape(n * s, -1, h, w))              # (N·S, 2, h, w)
grid = flow_to_grid(flow)                                            # (N·S, 2, h, w)
warped, _ = bilinear_forward(e, grid)                                # (N·S, Fe, h, w)
pred, _ = model.warp_decode(e, flow)                                 # (N·S, C, H, W)

rows = [("input frames x_t", inputs), ("encoder e_t = maxpool2(tanh(conv))", e),
        ("memory h_t (ConvLSTM, through time)", hs), ("flow T_t = conv1x1(conv15(conv15(h)))", flow),
        ("grid G_t = base grid + T_t", grid), ("sampler ê_t = bilinear(e_t, G_t)", warped),
        ("decoder ŷ_t = conv(upsample2(ê_t))", pred)]
for name, a in rows:
    print(f"{name:40s} {str(a.shape):22s} {a.dtype}")

# %% [markdown]
# The encoder halves the resolution (64 → 32) and the decoder's `upsample2` restores
# it. The same numbers come out of the public `predict`, which runs the steps one at a
# time with `predict_step` (it keeps no caches for a backward pass):

# %%
preds, flows = model.predict(clip)                                   # (N, S, C, H, W), (N, S, 2, h, w)
print("predict:", preds.shape, flows.shape)
print("largest difference to the stage-by-stage prediction:",
      float(np.abs(preds.reshape(pred.shape) - pred).max()))
print("flow at initialisation: all zero?", not flows.any())
print("so the sampler returned e unchanged?", np.array_equal(warped, e))

# %% [markdown]
# At initialisation the last 1×1 flow layer is all zeros (`flow3.W = 0`, `flow3.b = 0`),
# so T = 0, the grid is the identity and the sampler copies e exactly: training starts
# from "the next frame looks like this one". To see what a non-zero flow does, set the
# bias of that last layer to T = (−6, 0) everywhere: every output pixel reads the
# encoded frame 6 memory pixels to its left (12 image pixels), so the content moves
# **right**, and zeros enter at the left edge.

# %%
SHIFT = 6
p["flow3.b"][...] = [-SHIFT, 0.0]
shifted_pred, shifted_flow = model.predict(clip)
shifted_warped, _ = bilinear_forward(e, flow_to_grid(shifted_flow.reshape(n * s, 2, h, w)))
p["flow3.b"][...] = 0.0                                              # back to the initialisation
print(f"flow with flow3.b = (−{SHIFT}, 0): T_x in", float(shifted_flow[:, :, 0].min()),
      "…", float(shifted_flow[:, :, 0].max()), "  T_y max |.|", float(np.abs(shifted_flow[:, :, 1]).max()))
print(f"ê = e shifted right by {SHIFT}:", np.array_equal(shifted_warped[..., SHIFT:], e[..., :-SHIFT]),
      "  zeros entered on the left:", not shifted_warped[..., :SHIFT].any())

# %%
t, ch = 1, int(np.argmax(np.abs(e[1]).sum(axis=(1, 2))))              # a busy encoder channel
mem_ch = int(np.argmax(np.abs(hs[0, t]).sum(axis=(1, 2))))
panels = [
    ("frame $x_t$", inputs[t, 0], "gray"),
    (f"$e_t$, channel {ch}", e[t, ch], "RdBu_r"),
    (f"$h_t$, channel {mem_ch}", hs[0, t, mem_ch], "RdBu_r"),
    ("flow $T_t$", None, None),
    (f"$\\hat e_t$, channel {ch}", None, "RdBu_r"),
    ("prediction $\\hat y_t$", None, "gray"),
    ("target $x_{t+1}$", clip[0, t + 1, 0], "gray"),
]
fig, axes = plt.subplots(2, len(panels) + 1, figsize=(2.0 * (len(panels) + 1), 4.6),
                         gridspec_kw={"width_ratios": [1] * len(panels) + [0.6]})
for r, (label, fl, wp, pr) in enumerate([
        ("initialisation\nT = 0", flow[t], warped[t, ch], pred[t, 0]),
        (f"flow3.b = (−{SHIFT}, 0)\nT = (−{SHIFT}, 0)", shifted_flow[0, t], shifted_warped[t, ch],
         shifted_pred[0, t, 0])]):
    for j, (title, img, cmap) in enumerate(panels):
        ax = axes[r, j]
        if j == 3:
            ax.imshow(flow_to_color(fl, max_mag=SHIFT))
        else:
            img = {4: wp, 5: pr}.get(j, img)
            lim = float(np.abs(img).max()) or 1.0
            if cmap == "gray":
                ax.imshow(img, cmap=cmap, vmin=0, vmax=1)
            else:
                ax.imshow(img, cmap=cmap, vmin=-lim, vmax=lim)
        ax.set_xticks([])
        ax.set_yticks([])
        if r == 0:
            ax.set_title(title, fontsize=9)
    axes[r, 0].set_ylabel(label, fontsize=9)
    axes[r, -1].set_axis_off()
axes[0, -1].imshow(color_wheel_image(65))
axes[0, -1].set_title(f"motion colour\n(rim = {SHIFT} px)", fontsize=8)
for j, a in enumerate([inputs, e, hs[0], flow, warped, pred, clip[0, 1:]]):
    axes[1, j].set_xlabel(f"{a.shape[-2]}×{a.shape[-1]}", fontsize=8)
fig.suptitle(f"One step (t = {t}) through the untrained paper model", fontsize=11)
fig.tight_layout()
show(fig, "06_stages")

# %% [markdown]
# Top row, as initialised: the flow is zero (white), ê_t equals e_t, and the untrained
# decoder turns it into a dim, blurred copy of x_t. Bottom row, with the flow forced to
# (−6, 0): the colour (of the motion −T; red = rightward) is uniform, ê_t is e_t moved
# right by 6 memory pixels, and so is the prediction (by 12 image pixels). Training has
# to learn a flow that moves each digit the way it moves between x_t and x_{t+1}.

# %% [markdown]
# ## 3. The loss
#
# Over the S = T − 1 predictions of a clip, with w_H = 0.01 and δ = 10⁻³ (the paper's):
#
#     L = 1/S Σ_t [ mean((ŷ_t − x_{t+1})²) + w_H · H(∇T_t) ]
#     H(∇T) = mean(H_δ(D_x)) + mean(H_δ(D_y)),   D_x, D_y = horizontal, vertical differences of T
#     H_δ(a) = a²/2 for |a| ≤ δ,  δ(|a| − δ/2) otherwise
#
# The Huber term asks for a piecewise-smooth flow: neighbours should move alike, but an
# object boundary (a large difference) costs only linearly. All S·N frames have the same
# size, so the mean over the stacked batch equals the average of the per-step means.
# `loss_and_grads` returns L and the gradient of every parameter, and keeps the two terms
# in `last_parts`; the same number from the forward pieces (with δ = 10⁻³ the Huber term
# is tiny in absolute size: it nudges the flow towards smoothness without competing with
# the MSE):

# %%
# a non-zero, non-constant flow, so that both terms count
model.params["flow3.W"][...] = np.random.default_rng(0).normal(0.0, 0.5, model.params["flow3.W"].shape)
model.params["flow3.b"][...] = [0.37, -0.29]
loss, grads = model.loss_and_grads(clip)
preds, flows = model.predict(clip)
mse, _ = mse_forward(preds, clip[:, 1:])
smooth, _ = huber_smoothness_forward(flows.reshape(n * s, 2, h, w), cfg.huber_delta)
print(f"loss_and_grads: L = {float(loss):.9f}  (mse {float(model.last_parts['mse']):.9f}, "
      f"H {float(model.last_parts['smooth']):.3e})")
print(f"from the pieces: mse + w_H·H = {float(mse):.9f} + {cfg.huber_weight}·{float(smooth):.3e} "
      f"= {float(mse + cfg.huber_weight * smooth):.9f}")
print("one gradient per parameter:", {k: g.shape for k, g in list(grads.items())[:3]}, "…")
model.params["flow3.W"][...] = 0.0                     # back to the initialisation
model.params["flow3.b"][...] = 0.0

# %% [markdown]
# ## 4. Parameters, layer by layer
#
# `Config.param_shapes()` lists every tensor. The ConvLSTM holds almost all of the
# paper model's 1,035,071 parameters: its two weight tensors have 4·64 output channels
# (one block per gate i, f, g, o) and 7×7 kernels over 16 + 64 input channels. The flow
# head is small because its 15×15 convolutions have only 2 channels in between
# (`flow_filters`). The tiny preset's is not: 16 channels with a tanh after each 7×7
# convolution (`flow_act="tanh"`, chosen by docs/flow_study.md section 8), 39 % of its
# 64,027 parameters.

# %%
LAYERS = ("enc", "lstm", "flow1", "flow2", "flow3", "dec")


def layer_table(config):
    shapes = config.param_shapes()
    rows = []
    for layer in LAYERS:
        names = [k for k in PARAM_NAMES if k.split(".")[0] == layer]
        count = sum(int(np.prod(shapes[k])) for k in names)
        rows.append((layer, "  ".join(f"{k.split('.')[1]} {shapes[k]}" for k in names), count))
    return rows


counts = {}
for config in (Config.paper(), Config.tiny()):
    rows = layer_table(config)
    total = config.num_params()
    counts[config.name] = rows
    print(f"\n{config.name} preset: {config.height}×{config.width}×{config.channels} frames, "
          f"enc {config.enc_filters}×{config.enc_kernel}², mem {config.mem_filters}×{config.mem_kernel}², "
          f"flow {config.flow_kernel}²")
    for layer, shapes, count in rows:
        print(f"  {layer:6s} {count:>10,d}  {100 * count / total:5.1f}%   {shapes}")
    print(f"  {'total':6s} {total:>10,d}")
assert Config.paper().num_params() == 1_035_071
assert sum(v.size for v in model.params.values()) == 1_035_071

# %%
fig, ax = plt.subplots(figsize=(7, 3.2))
y = np.arange(len(LAYERS))
for k, (name, rows) in enumerate(counts.items()):
    ax.barh(y - 0.2 + 0.4 * k, [r[2] for r in rows], height=0.4, label=name, color=f"C{k}")
ax.set_yticks(y, LAYERS)
ax.invert_yaxis()
ax.set_xscale("log")
ax.set_xlabel("parameters (log scale)")
ax.set_title(f"Parameters per layer: paper {Config.paper().num_params():,}, "
             f"tiny {Config.tiny().num_params():,}")
ax.grid(True, axis="x", which="both", alpha=0.3)
ax.legend()
show(fig, "06_param_counts")

# %% [markdown]
# ## 5. The whole-model gradient check
#
# `loss_and_grads` chains thirteen hand-written backward passes. To check all of them at
# once, take the tiny preset in float64 and compare directional derivatives:
#
#     [L(θ + h·d) − L(θ − h·d)] / 2h   ≈   ⟨∇L, d⟩,    h = 10⁻⁶
#
# for three random directions d per parameter tensor (one tensor at a time, the others
# fixed), each half along the claimed gradient g and half random:
# `d = ½ g/|g| + ½ r/|r|`, r ~ N(0, I). A direction partly along g makes ⟨g, d⟩ large, so
# round-off in the two losses does not swamp it; a purely random direction in a tensor
# of thousands of entries is nearly orthogonal to g, and the *relative* error of a tiny
# number means nothing. `gradcheck.directional_check` does exactly this (the test suite's
# whole-model check calls it too). Two precautions (docs/DESIGN.md, "Gradient checks"):
#
# * The flow head is moved off zero (`flow3.W` small random, `flow3.b = (0.37, −0.29)`):
#   with T = 0 every sample point sits exactly on an integer, where the bilinear sampler
#   has a kink, and the flow head's first layers would get no gradient at all.
# * Kinks cannot all be placed by hand (a max-pool winner that switches, a sample point
#   that crosses an integer). A real bug fails every direction; a kink fails one.

# %%
check_model = STVAE(Config.tiny(), seed=1, dtype="float64")
rng = np.random.default_rng(7)
check_model.params["flow3.W"][...] = rng.normal(0.0, 0.5, check_model.params["flow3.W"].shape)
check_model.params["flow3.b"][...] = [0.37, -0.29]
check_clip = data.moving_mnist_for("tiny", 2, seq_len=4, split="test", seed=5).frames.astype(np.float64)

loss, grads = check_model.loss_and_grads(check_clip)
worst = directional_check(lambda: check_model.loss(check_clip), check_model.params, grads,
                          directions=3, h=1e-6, seed=0)
for name in PARAM_NAMES:
    print(f"{name:8s} |grad| = {np.linalg.norm(grads[name]):.3e}   worst relative error {worst[name]:.1e}")
print(f"gradient check: max relative error = {max(worst.values()):.1e}")
