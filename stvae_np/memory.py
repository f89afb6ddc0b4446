"""The memory: a convolutional LSTM (Shi et al. 2015, no peepholes) and backpropagation
through time, plainly.

The second part of the paper's model: the encoded frames e_t enter an LSTM whose matrix
products are "same" convolutions, so that its state h_t, c_t is a stack of feature maps:

    i = σ(Wxi * e_t + Whi * h_{t-1} + bi)        input gate
    f = σ(Wxf * e_t + Whf * h_{t-1} + bf)        forget gate
    g = tanh(Wxg * e_t + Whg * h_{t-1} + bg)     candidate cell c̃
    o = σ(Wxo * e_t + Who * h_{t-1} + bo)        output gate
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)                         h_{-1} = c_{-1} = 0

``*`` is :func:`stvae_np.layers.conv2d_forward`; gates are stacked i, f, g, o along the
output channels of ``Wx (4F, C, k, k)``, ``Wh (4F, F, k, k)`` and ``b (4F,)``.

Here one step is the six equations and the sequence a Python loop over time; the
backward walks t = T-1 … 0 carrying dh and dc. The model runs their fast mirror,
``fast/memory.py`` (docs/DESIGN.md section 0).

Contents::

    convlstm_step_forward(x, h_prev, c_prev, params) -> h, c, cache
    convlstm_step_backward(dh, dc, cache)  -> dx, dh_prev, dc_prev, dparams
    convlstm_forward(xs, params, h0=None, c0=None) -> hs, cache
    convlstm_backward(dhs, cache, dc_last=None)    -> dxs, dparams (+ "h0", "c0")
"""
from __future__ import annotations

from typing import NamedTuple

from .activations import sigmoid, sigmoid_grad, tanh_grad
from .backend import get_array_module
from .layers import Conv2dCache, conv2d_backward, conv2d_forward


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

    x: (N, C, h, w); h_prev, c_prev: (N, F, h, w); params: "Wx" (4F, C, k, k), "Wh"
    (4F, F, k, k), "b" (4F,), gates i, f, g, o. Returns h, c (N, F, h, w) and a
    :class:`ConvLSTMStepCache`.
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

    dh, dc: (N, F, h, w), the gradients of the loss with respect to h and c. Returns dx
    (N, C, h, w), dh_prev, dc_prev (N, F, h, w) and dparams, "Wx", "Wh", "b" as params.
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

    with the same weights at every step. xs: (N, T, C, h, w); params as for one step; h0,
    c0: (N, F, h, w) or None. Returns hs (N, T, F, h, w), every h_t, and a
    :class:`ConvLSTMCache` (``cache.c_last`` is c_{T-1}).
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

    dhs: (N, T, F, h, w), the gradient of the loss with respect to every h_t; dc_last:
    (N, F, h, w), that of ``cache.c_last``, or None (zero). Returns dxs (N, T, C, h, w)
    and dparams: "Wx", "Wh", "b", plus "h0" / "c0" (N, F, h, w) when they were given.
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
