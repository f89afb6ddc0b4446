"""Convolutional LSTM (Shi et al. 2015, without peepholes), forward and backward.

The memory of the spatio-temporal autoencoder: an LSTM whose matrix products are
replaced by "same" convolutions, so that h and c are feature maps.

Equations (``*`` is :func:`stvae_np.conv.conv2d_forward`: cross-correlation, stride 1,
zero "same" padding k // 2; ``⊙`` is the element-wise product)::

    i_t = σ(Wxi * x_t + Whi * h_{t-1} + bi)        input gate
    f_t = σ(Wxf * x_t + Whf * h_{t-1} + bf)        forget gate
    g_t = tanh(Wxg * x_t + Whg * h_{t-1} + bg)     candidate cell c̃
    o_t = σ(Wxo * x_t + Who * h_{t-1} + bo)        output gate
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    h_t = o_t ⊙ tanh(c_t)

Shapes (N clips, T steps, C input channels, F memory channels, h × w map, odd k)::

    x_t            (N, C, h, w)        xs = stack of x_t   (N, T, C, h, w)
    h_t, c_t       (N, F, h, w)        hs = stack of h_t   (N, T, F, h, w)
    params["Wx"]   (4F, C, k, k)       gates stacked i, f, g, o along axis 0
    params["Wh"]   (4F, F, k, k)
    params["b"]    (4F,)

The four gates of one step come from a single convolution over the concatenated
channels ``[x_t; h_{t-1}]`` with ``W = concat(Wx, Wh, axis=1)`` of shape (4F, C+F, k, k):
``Wx * x + Wh * h = W * [x; h]``, so one matrix product does the work of eight.

Every function works on NumPy and CuPy arrays (``xp = get_array_module(x)``) and
returns arrays of its inputs' dtype (float32 stays float32). Backward passes never
modify their inputs or the cache.
"""
from __future__ import annotations

from typing import NamedTuple

from .activations import sigmoid, sigmoid_grad, tanh, tanh_grad
from .backend import get_array_module
from .conv import Conv2dCache, conv2d_backward, conv2d_forward


# ----------------------------------------------------------------------------- checks
def _shape(a):
    return tuple(a.shape)


def _check_params(params, x_channels, where):
    """Validate {"Wx", "Wh", "b"} against each other and the input; return (F, k)."""
    for key in ("Wx", "Wh", "b"):
        if key not in params:
            raise ValueError(f"{where}: params is missing {key!r} (needs 'Wx', 'Wh', 'b')")
    wx, wh, b = params["Wx"], params["Wh"], params["b"]
    if wx.ndim != 4:
        raise ValueError(f"{where}: Wx must be 4-D (4F, C, k, k), got shape {_shape(wx)}")
    if wx.shape[0] % 4:
        raise ValueError(f"{where}: Wx's first axis must be 4F (gates i, f, g, o), "
                         f"got {wx.shape[0]}, not a multiple of 4")
    f = wx.shape[0] // 4
    k = wx.shape[2]
    if wx.shape[3] != k:
        raise ValueError(f"{where}: kernel must be square, Wx has {k}×{wx.shape[3]}")
    if k % 2 == 0:
        raise ValueError(f"{where}: kernel size must be odd for 'same' padding, got {k}")
    if wx.shape[1] != x_channels:
        raise ValueError(f"{where}: channel mismatch, the input has {x_channels} channels "
                         f"but Wx expects {wx.shape[1]}")
    if _shape(wh) != (4 * f, f, k, k):
        raise ValueError(f"{where}: Wh must have shape (4F, F, k, k) = {(4 * f, f, k, k)} "
                         f"to match Wx {_shape(wx)}, got {_shape(wh)}")
    if _shape(b) != (4 * f,):
        raise ValueError(f"{where}: b must have shape (4F,) = ({4 * f},), got {_shape(b)}")
    return f, k


def _check_dtypes(where, **arrays):
    """All arrays share one floating-point dtype (concatenate would silently upcast)."""
    dtypes = {name: a.dtype for name, a in arrays.items() if a is not None}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{name} {dt}" for name, dt in dtypes.items())
        raise ValueError(f"{where}: dtypes differ ({listed})")
    dtype = next(iter(dtypes.values()))
    if dtype.kind != "f":
        raise ValueError(f"{where}: expected floating-point arrays, got {dtype}")


def _check_state(name, a, expected, where):
    if a is not None and _shape(a) != expected:
        raise ValueError(f"{where}: {name} must have shape (N, F, h, w) = {expected}, "
                         f"got {_shape(a)}")


# ----------------------------------------------------------------------------- one step
class ConvLSTMStepCache(NamedTuple):
    """What one step's backward needs. The gates are kept after their non-linearity."""
    i: object            # (N, F, h, w) σ(a_i)
    f: object            # (N, F, h, w) σ(a_f)
    g: object            # (N, F, h, w) tanh(a_g)
    o: object            # (N, F, h, w) σ(a_o)
    c_prev: object       # (N, F, h, w) c_{t-1}
    tanh_c: object       # (N, F, h, w) tanh(c_t)
    conv: Conv2dCache    # holds [x_t; h_{t-1}] (N, C+F, h, w) and a reference to W


def _step_forward(x, h_prev, c_prev, w, b):
    """One step given the already concatenated W = concat(Wx, Wh, axis=1)."""
    xp = get_array_module(x, h_prev, c_prev)
    nf = h_prev.shape[1]                                   # F
    # One convolution for all four gates: [x; h] (N, C+F, h, w) against
    # W (4F, C+F, k, k) gives the pre-activations a (N, 4F, h, w), i.e. Wx*x + Wh*h + b.
    xh = xp.concatenate([x, h_prev], axis=1)               # (N, C+F, h, w)
    a, conv_cache = conv2d_forward(xh, w, b)               # (N, 4F, h, w)
    i = sigmoid(a[:, 0 * nf:1 * nf])                       # (N, F, h, w) each
    f = sigmoid(a[:, 1 * nf:2 * nf])
    g = tanh(a[:, 2 * nf:3 * nf])
    o = sigmoid(a[:, 3 * nf:4 * nf])
    c = f * c_prev + i * g
    tanh_c = tanh(c)
    h = o * tanh_c
    return h, c, ConvLSTMStepCache(i, f, g, o, c_prev, tanh_c, conv_cache)


def _step_backward(dh, dc, cache):
    """One step's backward; returns (dx, dh_prev, dc_prev, dW, db) with dW for the
    concatenated W (4F, C+F, k, k), still to be split into dWx and dWh."""
    xp = get_array_module(dh, dc)
    i, f, g, o, c_prev, tanh_c, conv_cache = cache
    nc = conv_cache.x.shape[1] - i.shape[1]                # C = (C+F) − F
    # h = o ⊙ tanh(c): c_t receives gradient from h_t as well as from c_{t+1}
    dc_total = dc + dh * o * tanh_grad(tanh_c)
    do = dh * tanh_c
    # c = f ⊙ c_prev + i ⊙ g
    di = dc_total * g
    dg = dc_total * i
    df = dc_total * c_prev
    dc_prev = dc_total * f
    # back through the non-linearities to the pre-activations, stacked i, f, g, o
    da = xp.concatenate([di * sigmoid_grad(i),
                         df * sigmoid_grad(f),
                         dg * tanh_grad(g),
                         do * sigmoid_grad(o)], axis=1)    # (N, 4F, h, w)
    dxh, dw, db = conv2d_backward(da, conv_cache)          # (N, C+F, h, w), (4F, C+F, k, k)
    dx, dh_prev = dxh[:, :nc], dxh[:, nc:]
    return dx, dh_prev, dc_prev, dw, db


def convlstm_step_forward(x, h_prev, c_prev, params):
    """One ConvLSTM step.

    Equations::

        [a_i; a_f; a_g; a_o] = Wx * x + Wh * h_prev + b      (one conv over [x; h_prev])
        i = σ(a_i),  f = σ(a_f),  g = tanh(a_g),  o = σ(a_o)
        c = f ⊙ c_prev + i ⊙ g
        h = o ⊙ tanh(c)

    Args:
        x: (N, C, h, w) input at this step.
        h_prev: (N, F, h, w) previous hidden state.
        c_prev: (N, F, h, w) previous cell state.
        params: dict with "Wx" (4F, C, k, k), "Wh" (4F, F, k, k), "b" (4F,); gates
            stacked i, f, g, o; k odd.
    Returns:
        h: (N, F, h, w), x's dtype.
        c: (N, F, h, w).
        cache: :class:`ConvLSTMStepCache`.
    """
    where = "convlstm_step_forward"
    if x.ndim != 4:
        raise ValueError(f"{where}: x must be 4-D (N, C, h, w), got shape {_shape(x)}")
    nf, _ = _check_params(params, x.shape[1], where)
    n, _, hh, ww = x.shape
    for name, a in (("h_prev", h_prev), ("c_prev", c_prev)):
        if a is None:
            raise ValueError(f"{where}: {name} is required (pass zeros for a fresh state)")
        _check_state(name, a, (n, nf, hh, ww), where)
    _check_dtypes(where, x=x, h_prev=h_prev, c_prev=c_prev,
                  Wx=params["Wx"], Wh=params["Wh"], b=params["b"])
    xp = get_array_module(x, params["Wx"])
    w = xp.concatenate([params["Wx"], params["Wh"]], axis=1)    # (4F, C+F, k, k)
    return _step_forward(x, h_prev, c_prev, w, params["b"])


def convlstm_step_backward(dh, dc, cache):
    """Backward of one ConvLSTM step.

    Equations (δ = upstream gradient; c receives it from h and from the next step)::

        δc  = dc + dh ⊙ o ⊙ (1 − tanh²(c))
        δo  = dh ⊙ tanh(c)
        δi  = δc ⊙ g,   δg = δc ⊙ i,   δf = δc ⊙ c_prev,   dc_prev = δc ⊙ f
        δa  = [δi ⊙ i(1−i); δf ⊙ f(1−f); δg ⊙ (1−g²); δo ⊙ o(1−o)]
        (dx, dh_prev), dW, db = conv2d_backward(δa)   then   dW = [dWx | dWh]

    Args:
        dh: (N, F, h, w) gradient of the loss with respect to h.
        dc: (N, F, h, w) gradient with respect to c (zeros if c is not used downstream).
        cache: from :func:`convlstm_step_forward`.
    Returns:
        dx: (N, C, h, w).
        dh_prev: (N, F, h, w).
        dc_prev: (N, F, h, w).
        dparams: dict with "Wx" (4F, C, k, k), "Wh" (4F, F, k, k), "b" (4F,).
    """
    expected = _shape(cache.i)
    for name, a in (("dh", dh), ("dc", dc)):
        if _shape(a) != expected:
            raise ValueError(f"convlstm_step_backward: {name} must have shape {expected}, "
                             f"got {_shape(a)}")
        if a.dtype != cache.i.dtype:
            raise ValueError(f"convlstm_step_backward: dtypes differ (forward {cache.i.dtype}, "
                             f"{name} {a.dtype})")
    xp = get_array_module(dh, dc)
    dx, dh_prev, dc_prev, dw, db = _step_backward(dh, dc, cache)
    nc = dx.shape[1]
    dparams = {"Wx": xp.ascontiguousarray(dw[:, :nc]),
               "Wh": xp.ascontiguousarray(dw[:, nc:]),
               "b": db}
    return xp.ascontiguousarray(dx), xp.ascontiguousarray(dh_prev), dc_prev, dparams


# ----------------------------------------------------------------------------- sequence
class ConvLSTMCache(NamedTuple):
    steps: list          # T × ConvLSTMStepCache, in time order
    x_channels: int      # C, where dW is split into dWx | dWh
    has_h0: bool         # h0 was given, so backward also returns its gradient
    has_c0: bool         # likewise c0
    c_last: object       # (N, F, h, w) the final cell state c_{T-1}


def convlstm_forward(xs, params, h0=None, c0=None):
    """Run a ConvLSTM over a sequence.

    Equations, for t = 0 … T-1 (one convolution over [x_t; h_{t-1}] per step)::

        i_t = σ(Wxi * x_t + Whi * h_{t-1} + bi)
        f_t = σ(Wxf * x_t + Whf * h_{t-1} + bf)
        g_t = tanh(Wxg * x_t + Whg * h_{t-1} + bg)
        o_t = σ(Wxo * x_t + Who * h_{t-1} + bo)
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        h_t = o_t ⊙ tanh(c_t)

    with h_{-1} = h0 and c_{-1} = c0, zeros when not given (so every call starts
    from a fresh state: nothing is carried between calls).

    Args:
        xs: (N, T, C, h, w) inputs, T ≥ 1.
        params: dict with "Wx" (4F, C, k, k), "Wh" (4F, F, k, k), "b" (4F,); gates
            stacked i, f, g, o along axis 0; k odd.
        h0: (N, F, h, w) initial hidden state, or None for zeros.
        c0: (N, F, h, w) initial cell state, or None for zeros.
    Returns:
        hs: (N, T, F, h, w) hidden states, xs's dtype.
        cache: :class:`ConvLSTMCache`; ``cache.c_last`` is the final cell state
            c_{T-1} (N, F, h, w), and h_{T-1} is ``hs[:, -1]``.

    Memory: per step the cache keeps i, f, g, o, c_{t-1}, tanh(c_t) (each N·F·h·w)
    and the concatenated [x_t; h_{t-1}] (N·(C+F)·h·w); no im2col buffer.
    """
    where = "convlstm_forward"
    if xs.ndim != 5:
        raise ValueError(f"{where}: xs must be 5-D (N, T, C, h, w), got shape {_shape(xs)}")
    n, t_len, nc, hh, ww = xs.shape
    if t_len < 1:
        raise ValueError(f"{where}: xs must have at least one time step, got T = {t_len}")
    nf, _ = _check_params(params, nc, where)
    _check_state("h0", h0, (n, nf, hh, ww), where)
    _check_state("c0", c0, (n, nf, hh, ww), where)
    _check_dtypes(where, xs=xs, Wx=params["Wx"], Wh=params["Wh"], b=params["b"],
                  h0=h0, c0=c0)
    xp = get_array_module(xs, params["Wx"])

    # Concatenate the weights once for the whole sequence; every step's conv cache
    # refers to this one array.
    w = xp.concatenate([params["Wx"], params["Wh"]], axis=1)    # (4F, C+F, k, k)
    b = params["b"]
    h = h0 if h0 is not None else xp.zeros((n, nf, hh, ww), dtype=xs.dtype)
    c = c0 if c0 is not None else xp.zeros((n, nf, hh, ww), dtype=xs.dtype)
    hs = xp.empty((n, t_len, nf, hh, ww), dtype=xs.dtype)
    steps = []
    for t in range(t_len):
        h, c, step_cache = _step_forward(xs[:, t], h, c, w, b)
        hs[:, t] = h
        steps.append(step_cache)
    return hs, ConvLSTMCache(steps, nc, h0 is not None, c0 is not None, c)


def convlstm_backward(dhs, cache, dc_last=None):
    """Backpropagation through time for :func:`convlstm_forward`.

    Walks t = T-1 … 0 carrying dh (into h_{t-1}) and dc (into c_{t-1}); the weights
    are shared by every step, so their gradients are the sum over t.

    Args:
        dhs: (N, T, F, h, w) gradient of the loss with respect to every h_t.
        cache: from :func:`convlstm_forward`.
        dc_last: optional (N, F, h, w) gradient with respect to the final cell state
            ``cache.c_last`` (for a caller that uses c_{T-1}); None means zero.
            The final hidden state needs no extra argument: it is ``hs[:, -1]``.
    Returns:
        dxs: (N, T, C, h, w).
        dparams: dict with "Wx" (4F, C, k, k), "Wh" (4F, F, k, k), "b" (4F,), and in
            addition "h0" (N, F, h, w) if h0 was given to the forward and "c0"
            (N, F, h, w) if c0 was; an initial state left as None (zeros) gets none.
    """
    steps, nc, has_h0, has_c0, c_last = cache
    xp = get_array_module(dhs)
    t_len = len(steps)
    n, nf, hh, ww = steps[0].i.shape
    if _shape(dhs) != (n, t_len, nf, hh, ww):
        raise ValueError(f"convlstm_backward: dhs must have shape {(n, t_len, nf, hh, ww)}, "
                         f"got {_shape(dhs)}")
    if dc_last is not None and _shape(dc_last) != (n, nf, hh, ww):
        raise ValueError(f"convlstm_backward: dc_last must have shape {(n, nf, hh, ww)}, "
                         f"got {_shape(dc_last)}")
    if dhs.dtype != steps[0].i.dtype or (dc_last is not None and dc_last.dtype != dhs.dtype):
        raise ValueError(f"convlstm_backward: dtypes differ (forward {steps[0].i.dtype}, "
                         f"dhs {dhs.dtype}"
                         f"{'' if dc_last is None else f', dc_last {dc_last.dtype}'})")

    dxs = xp.empty((n, t_len, nc, hh, ww), dtype=dhs.dtype)
    dw = xp.zeros(steps[0].conv.w.shape, dtype=dhs.dtype)      # (4F, C+F, k, k)
    db = xp.zeros((4 * nf,), dtype=dhs.dtype)
    dh_next = xp.zeros((n, nf, hh, ww), dtype=dhs.dtype)       # ∂L/∂h_t through step t+1
    dc_next = dc_last if dc_last is not None else xp.zeros_like(dh_next)
    for t in reversed(range(t_len)):                           # t = T-1 … 0
        # h_t feeds the loss directly (dhs[:, t]) and the next step (dh_next)
        dh = dhs[:, t] + dh_next
        dx, dh_next, dc_next, dw_t, db_t = _step_backward(dh, dc_next, steps[t])
        dxs[:, t] = dx
        dw += dw_t                                             # shared weights: sum over t
        db += db_t
    # after the loop dh_next, dc_next are the gradients of h_{-1} = h0 and c_{-1} = c0
    dparams = {"Wx": xp.ascontiguousarray(dw[:, :nc]),          # split W = [Wx | Wh]
               "Wh": xp.ascontiguousarray(dw[:, nc:]),
               "b": db}
    if has_h0:
        dparams["h0"] = xp.ascontiguousarray(dh_next)
    if has_c0:
        dparams["c0"] = dc_next
    return dxs, dparams
