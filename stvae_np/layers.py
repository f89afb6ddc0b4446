"""The maths of the layers, plainly: reference convolution, pooling, up-sampling and ConvLSTM.

This file is for reading. The model runs the fast versions in ``conv.py`` and
``convlstm.py``, which compute the same numbers but hide the equations under thread
pools, channel-major layouts, reused buffers, batch chunks and three orders of
summation (see BENCHMARKS.md for why each of those pays). Here every function is the
equation and little else: NCHW arrays throughout, one im2col and one matrix product
per convolution, a Python loop over time for the ConvLSTM, no threads, no workspaces,
no in-place tricks. ``tests/test_reference.py`` pins the two together: the fast ops
must agree with these on values and on every gradient, in float64, to 1e-12.

Each function has the same name, signature and return values as its fast namesake,
so ``from stvae_np import reference as ops`` can stand in for ``conv`` or ``convlstm``
(the caches differ inside: pass a cache only to the backward of the same module).
Like the fast ops they work on NumPy and CuPy arrays (``xp = get_array_module(x)``).
Unlike them they check almost nothing (only conv2d's ``method`` name): shapes and
dtypes are assumed right, and the fast ops are the ones that say what is wrong.

Contents::

    im2col(x, k), col2im(cols, x_shape, k)        patches as columns, and its adjoint
    conv2d_forward(x, w, b=None, method="auto")   "same" cross-correlation, stride 1
    conv2d_backward(dout, cache, need_dx=True)    -> dx, dw, db
    maxpool2_forward(x), maxpool2_backward(dout, cache)
    upsample2_forward(x), upsample2_backward(dout, cache)
    convlstm_step_forward(x, h_prev, c_prev, params), convlstm_step_backward(dh, dc, cache)
    convlstm_forward(xs, params, h0=None, c0=None), convlstm_backward(dhs, cache, dc_last=None)

Shapes: N batch, C input channels, F output (or memory) channels, H × W map, k odd.
"""
from __future__ import annotations

from typing import NamedTuple

from .activations import sigmoid, sigmoid_grad, tanh_grad
from .backend import get_array_module

METHODS = ("auto", "im2col", "shift", "rows")   # the fast conv's orders; all give one answer


# ----------------------------------------------------------------------------- im2col
def im2col(x, k):
    """Every k×k patch of the zero-padded input as one column of a matrix.

        cols[(c, u, v), (n, y, x)] = x_pad[n, c, y + u, x + v],   p = k // 2

    Row block (c, u, v) is channel c of the padded map shifted by (u, v): k·k slice
    copies build the whole matrix, with no loop over pixels.

    Args:
        x: (N, C, H, W).
        k: odd kernel size.
    Returns:
        cols: (C·k·k, N·H·W), rows ordered c, u, v like ``W.reshape(F, C·k·k)``.
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    p = k // 2
    x_pad = xp.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))          # (N, C, H+2p, W+2p)
    cols = xp.empty((c, k, k, n, h, w), dtype=x.dtype)
    for u in range(k):
        for v in range(k):
            cols[:, u, v] = x_pad[:, :, u:u + h, v:v + w].transpose(1, 0, 2, 3)
    return cols.reshape(c * k * k, n * h * w)


def col2im(cols, x_shape, k):
    """The adjoint of :func:`im2col`: every entry goes back to the pixel it was copied
    from, and the entries that meet on one pixel add up.

        dx_pad[n, c, y + u, x + v] += cols[(c, u, v), (n, y, x)]   for every u, v
        dx = dx_pad without its border of p = k // 2

    Adjoint means ⟨im2col(x), D⟩ = ⟨x, col2im(D)⟩ for every x and D.

    Args:
        cols: (C·k·k, N·H·W).
        x_shape: (N, C, H, W) of the input im2col read.
        k: odd kernel size.
    Returns:
        dx: (N, C, H, W).
    """
    xp = get_array_module(cols)
    n, c, h, w = x_shape
    p = k // 2
    cols = cols.reshape(c, k, k, n, h, w)
    dx_pad = xp.zeros((n, c, h + 2 * p, w + 2 * p), dtype=cols.dtype)
    for u in range(k):
        for v in range(k):
            dx_pad[:, :, u:u + h, v:v + w] += cols[:, u, v].transpose(1, 0, 2, 3)
    return dx_pad[:, :, p:p + h, p:p + w]


# ----------------------------------------------------------------------------- conv2d
class Conv2dCache(NamedTuple):
    x: object          # (N, C, H, W) the input (backward rebuilds im2col from it)
    w: object          # (F, C, k, k)
    has_bias: bool


def conv2d_forward(x, w, b=None, method="auto"):
    """Cross-correlation with stride 1 and zero "same" padding p = k // 2.

        out[n, f, y, x] = b[f] + Σ_c Σ_{u,v} W[f, c, u, v] · x_pad[n, c, y + u, x + v]

    As one matrix product: out₂ = W₂ @ cols, with W₂ = W.reshape(F, C·k·k) (F, C·k·k),
    cols = im2col(x, k) (C·k·k, N·H·W), and out₂ (F, N·H·W) reshaped to (N, F, H, W).

    Args:
        x: (N, C, H, W) float.
        w: (F, C, k, k), k odd.
        b: (F,) or None.
        method: one of "auto", "im2col", "shift", "rows", accepted so that the call
            matches ``conv.conv2d_forward``; the reference always uses im2col.
    Returns:
        out: (N, F, H, W).
        cache: :class:`Conv2dCache`.
    """
    if method not in METHODS:
        raise ValueError(f"conv2d: method must be one of {METHODS}, got {method!r}")
    n, c, h, wd = x.shape
    f, _, k, _ = w.shape
    out2 = w.reshape(f, c * k * k) @ im2col(x, k)                  # (F, N·H·W)
    out = out2.reshape(f, n, h, wd).transpose(1, 0, 2, 3)         # (N, F, H, W)
    if b is not None:
        out = out + b.reshape(1, f, 1, 1)
    return out, Conv2dCache(x, w, b is not None)


def conv2d_backward(dout, cache, need_dx=True):
    """Gradients of :func:`conv2d_forward`, from those of its matrix product.

        out₂ = W₂ @ cols   gives   dW₂ = dout₂ @ colsᵀ,   dcols = W₂ᵀ @ dout₂
        dx   = col2im(dcols)       (every pixel collects the gradient of every patch
                                    it was copied into)
        db[f] = Σ_{n,y,x} dout[n, f, y, x]

    with dout₂ = dout as (F, N·H·W) and cols = im2col(x, k), rebuilt from the cache.

    Args:
        dout: (N, F, H, W) gradient of the loss with respect to out.
        cache: from :func:`conv2d_forward`.
        need_dx: False skips dx (returned as None).
    Returns:
        dx (N, C, H, W) or None, dw (F, C, k, k), db (F,) or None when there was no bias.
    """
    x, w, has_bias = cache
    f, c, k, _ = w.shape
    dout2 = dout.transpose(1, 0, 2, 3).reshape(f, -1)             # (F, N·H·W)
    dw = (dout2 @ im2col(x, k).T).reshape(w.shape)                 # (F, C, k, k)
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    dx = None
    if need_dx:
        dcols = w.reshape(f, c * k * k).T @ dout2                  # (C·k·k, N·H·W)
        dx = col2im(dcols, x.shape, k)
    return dx, dw, db


# ----------------------------------------------------------------------------- max-pool
class MaxPoolCache(NamedTuple):
    x_shape: tuple
    argmax: object     # (N, C, H/2, W/2) 0…3: the winner 2a + b of each 2×2 window


def _windows(x):
    """(N, C, H, W) -> (N, C, H/2, W/2, 4): the 2×2 windows, corner 2a + b last."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(
        n, c, h // 2, w // 2, 4)


def maxpool2_forward(x):
    """2×2 max-pooling with stride 2.

        out[n, c, y, x] = max_{a,b ∈ {0,1}} x[n, c, 2y + a, 2x + b]

    The cache keeps which corner 2a + b won (the first in row-major order on a tie).

    Args:
        x: (N, C, H, W), H and W even.
    Returns:
        out (N, C, H/2, W/2), cache :class:`MaxPoolCache`.
    """
    win = _windows(x)                                             # (N, C, H/2, W/2, 4)
    return win.max(axis=-1), MaxPoolCache(tuple(x.shape), win.argmax(axis=-1))


def maxpool2_backward(dout, cache):
    """The gradient of a maximum goes to the winner, zero to the three others.

        dx[n, c, 2y + a, 2x + b] = dout[n, c, y, x] if 2a + b won, else 0

    Args:
        dout: (N, C, H/2, W/2).
        cache: from :func:`maxpool2_forward`.
    Returns:
        dx: (N, C, H, W).
    """
    xp = get_array_module(dout)
    n, c, h, w = cache.x_shape
    winner = cache.argmax[..., None] == xp.arange(4)              # (N, C, H/2, W/2, 4) bool
    dwin = xp.where(winner, dout[..., None], xp.zeros((), dtype=dout.dtype))
    # undo _windows: (N, C, H/2, W/2, a, b) -> (N, C, H/2, a, W/2, b) -> (N, C, H, W)
    return dwin.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(
        n, c, h, w)


# ----------------------------------------------------------------------------- up-sample
class UpsampleCache(NamedTuple):
    x_shape: tuple


def upsample2_forward(x):
    """Nearest-neighbour ×2 up-sampling: out[n, c, y, x] = x[n, c, ⌊y/2⌋, ⌊x/2⌋].

    Args:
        x: (N, C, H, W).
    Returns:
        out (N, C, 2H, 2W), cache :class:`UpsampleCache`.
    """
    xp = get_array_module(x)
    out = xp.repeat(xp.repeat(x, 2, axis=2), 2, axis=3)
    return out, UpsampleCache(tuple(x.shape))


def upsample2_backward(dout, cache):
    """Each input pixel was copied into a 2×2 block: its gradient is the block's sum.

        dx[n, c, y, x] = Σ_{a,b ∈ {0,1}} dout[n, c, 2y + a, 2x + b]

    Args:
        dout: (N, C, 2H, 2W).
        cache: from :func:`upsample2_forward`.
    Returns:
        dx: (N, C, H, W).
    """
    n, c, h, w = cache.x_shape
    return dout.reshape(n, c, h, 2, w, 2).sum(axis=(3, 5))


# ----------------------------------------------------------------------------- ConvLSTM
class ConvLSTMStepCache(NamedTuple):
    x_conv: Conv2dCache    # the convolution Wx * x + b
    h_conv: Conv2dCache    # the convolution Wh * h_prev
    c_prev: object         # (N, F, h, w)
    i: object              # (N, F, h, w) input gate σ(a_i)
    f: object              # (N, F, h, w) forget gate σ(a_f)
    g: object              # (N, F, h, w) candidate tanh(a_g)
    o: object              # (N, F, h, w) output gate σ(a_o)
    tanh_c: object         # (N, F, h, w) tanh(c)


def convlstm_step_forward(x, h_prev, c_prev, params):
    """One ConvLSTM step (Shi et al. 2015, no peepholes); * is :func:`conv2d_forward`.

        a = Wx * x + Wh * h_prev + b,    a = [a_i; a_f; a_g; a_o] along the channels
        i = σ(a_i),  f = σ(a_f),  g = tanh(a_g),  o = σ(a_o)
        c = f ⊙ c_prev + i ⊙ g
        h = o ⊙ tanh(c)

    Args:
        x: (N, C, h, w).
        h_prev, c_prev: (N, F, h, w).
        params: "Wx" (4F, C, k, k), "Wh" (4F, F, k, k), "b" (4F,); gates i, f, g, o.
    Returns:
        h (N, F, h, w), c (N, F, h, w), cache :class:`ConvLSTMStepCache`.
    """
    xp = get_array_module(x)
    nf = params["Wh"].shape[1]
    ax, x_conv = conv2d_forward(x, params["Wx"], params["b"])       # (N, 4F, h, w)
    ah, h_conv = conv2d_forward(h_prev, params["Wh"])
    a = ax + ah
    i = sigmoid(a[:, :nf])
    f = sigmoid(a[:, nf:2 * nf])
    g = xp.tanh(a[:, 2 * nf:3 * nf])
    o = sigmoid(a[:, 3 * nf:])
    c = f * c_prev + i * g
    tanh_c = xp.tanh(c)
    h = o * tanh_c
    return h, c, ConvLSTMStepCache(x_conv, h_conv, c_prev, i, f, g, o, tanh_c)


def convlstm_step_backward(dh, dc, cache):
    """Backward of one step: the chain rule through the equations, last line first.

        δc      = dc + dh ⊙ o ⊙ (1 − tanh²c)       c reaches the loss directly and via h
        δo      = dh ⊙ tanh c
        δi      = δc ⊙ g,   δg = δc ⊙ i,   δf = δc ⊙ c_prev
        dc_prev = δc ⊙ f
        δa      = [δi ⊙ i(1−i); δf ⊙ f(1−f); δg ⊙ (1−g²); δo ⊙ o(1−o)]   (N, 4F, h, w)
        dx, dWx, db  = conv2d_backward(δa) of Wx * x + b
        dh_prev, dWh = conv2d_backward(δa) of Wh * h_prev

    Args:
        dh, dc: (N, F, h, w) gradients of the loss with respect to h and c.
        cache: from :func:`convlstm_step_forward`.
    Returns:
        dx (N, C, h, w), dh_prev (N, F, h, w), dc_prev (N, F, h, w),
        dparams {"Wx": (4F, C, k, k), "Wh": (4F, F, k, k), "b": (4F,)}.
    """
    xp = get_array_module(dh)
    i, f, g, o = cache.i, cache.f, cache.g, cache.o
    tanh_c, c_prev = cache.tanh_c, cache.c_prev
    d_c = dc + dh * o * tanh_grad(tanh_c)
    d_o = dh * tanh_c
    d_i, d_g, d_f = d_c * g, d_c * i, d_c * c_prev
    dc_prev = d_c * f
    da = xp.concatenate([d_i * sigmoid_grad(i), d_f * sigmoid_grad(f),
                         d_g * tanh_grad(g), d_o * sigmoid_grad(o)], axis=1)
    dx, dwx, db = conv2d_backward(da, cache.x_conv)
    dh_prev, dwh, _ = conv2d_backward(da, cache.h_conv)
    return dx, dh_prev, dc_prev, {"Wx": dwx, "Wh": dwh, "b": db}


class ConvLSTMCache(NamedTuple):
    steps: list        # T × ConvLSTMStepCache, in time order
    has_h0: bool       # h0 was given: backward returns its gradient
    has_c0: bool       # likewise c0
    c_last: object     # (N, F, h, w) the final cell state c_{T-1}


def convlstm_forward(xs, params, h0=None, c0=None):
    """A ConvLSTM over a sequence: :func:`convlstm_step_forward` for t = 0 … T-1,

        h_t, c_t = step(x_t, h_{t-1}, c_{t-1}),   h_{-1} = h0, c_{-1} = c0 (zeros if None)

    with the same weights at every step.

    Args:
        xs: (N, T, C, h, w).
        params: "Wx" (4F, C, k, k), "Wh" (4F, F, k, k), "b" (4F,).
        h0, c0: (N, F, h, w) or None.
    Returns:
        hs: (N, T, F, h, w) every h_t.
        cache: :class:`ConvLSTMCache`; ``cache.c_last`` is c_{T-1}.
    """
    xp = get_array_module(xs)
    n, t_len, _, hh, ww = xs.shape
    nf = params["Wh"].shape[1]
    h = xp.zeros((n, nf, hh, ww), dtype=xs.dtype) if h0 is None else h0
    c = xp.zeros((n, nf, hh, ww), dtype=xs.dtype) if c0 is None else c0
    hs, steps = [], []
    for t in range(t_len):
        h, c, step = convlstm_step_forward(xs[:, t], h, c, params)
        hs.append(h)
        steps.append(step)
    return xp.stack(hs, axis=1), ConvLSTMCache(steps, h0 is not None, c0 is not None, c)


def convlstm_backward(dhs, cache, dc_last=None):
    """Backpropagation through time: the steps' backward, from t = T-1 down to 0.

        dh_next, dc_next = 0, dc_last           (nothing comes after the last step)
        for t = T-1 … 0:
            dx_t, dh_next, dc_next, dθ_t = step_backward(dhs[:, t] + dh_next, dc_next)
        dθ = Σ_t dθ_t                           (every step uses the same weights)

    h_t feeds both the loss (dhs[:, t]) and step t+1 (dh_next); c_t only step t+1.
    After the loop dh_next, dc_next are the gradients of h0 and c0.

    Args:
        dhs: (N, T, F, h, w) gradient of the loss with respect to every h_t.
        cache: from :func:`convlstm_forward`.
        dc_last: (N, F, h, w) gradient with respect to ``cache.c_last``, or None (zero).
    Returns:
        dxs: (N, T, C, h, w).
        dparams: "Wx", "Wh", "b", plus "h0" / "c0" (N, F, h, w) when they were given.
    """
    xp = get_array_module(dhs)
    t_len = dhs.shape[1]
    dh_next = xp.zeros_like(dhs[:, 0])
    dc_next = xp.zeros_like(dhs[:, 0]) if dc_last is None else dc_last
    dxs = [None] * t_len
    dparams = {"Wx": 0, "Wh": 0, "b": 0}
    for t in reversed(range(t_len)):
        dxs[t], dh_next, dc_next, dp = convlstm_step_backward(dhs[:, t] + dh_next, dc_next,
                                                              cache.steps[t])
        for key in dparams:
            dparams[key] = dparams[key] + dp[key]
    if cache.has_h0:
        dparams["h0"] = dh_next
    if cache.has_c0:
        dparams["c0"] = dc_next
    return xp.stack(dxs, axis=1), dparams
