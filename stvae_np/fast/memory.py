"""Convolutional LSTM (Shi et al. 2015, without peepholes), forward and backward: the
fast version, the one the model runs.

The plain maths, written as the equations, is in ``../memory.py`` (same names, same
signatures): read that first; ``tests/test_fast.py`` holds the two together. Here (the
measurements in BENCHMARKS.md): one convolution for the four gates, ``Wx * x + Wh * h =
W * [x; h]``; every map channel-major (see "layout" below); the gate arithmetic in place
and on every core, one fused kernel per step on CuPy; no im2col buffer in the cache (the
backward rebuilds it). Gates i, f, g, o are stacked along the output channels of
``Wx (4F, C, k, k)``, ``Wh (4F, F, k, k)``, ``b (4F,)``.
"""
from __future__ import annotations

from typing import NamedTuple

from ..activations import sigmoid, sigmoid_grad, tanh, tanh_grad
from ..backend import get_array_module
from . import kernels
from .layers import (over_batch_blocks, conv_cm_backward, conv_cm_forward, im2col_workspace,
                     swap_batch_channels)


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


def _check_state(name, a, expected, where, layout="(N, F, h, w)"):
    if a is not None and _shape(a) != expected:
        raise ValueError(f"{where}: {name} must have shape {layout} = {expected}, got {_shape(a)}")


# ----------------------------------------------------------------------------- layout
# Inside, every map is channel-major, (channels, N, h, w): ``W₂ (4F, (C+F)·k²) @ cols``
# gives the pre-activations as (4F, N·h·w), each gate a contiguous block of rows, with no
# transposed copy either way. The inputs [x_t; h_{t-1}] of all steps live, zero-padded,
# in one buffer (T, C+F, N, h+2p, w+2p) that the forward fills as it goes and im2col
# reads directly. The public functions take and return (N, ..., h, w).
class ConvLSTMStepCache(NamedTuple):
    """What one step's backward needs, channel-major. The gates are kept after their
    non-linearity, stacked i, f, g, o; the properties give them as (N, F, h, w)."""
    gates: object        # (4F, N, h, w) [σ(a_i); σ(a_f); tanh(a_g); σ(a_o)]
    c_prev: object       # (F, N, h, w) c_{t-1}
    tanh_c: object       # (F, N, h, w) tanh(c_t)
    xh_pad: object       # (C+F, N, h+2p, w+2p) [x_t; h_{t-1}], zero-padded
    w: object            # (4F, C+F, k, k) concat(Wx, Wh, axis=1), shared by all steps

    def _gate(self, j):
        nf = self.gates.shape[0] // 4
        return self.gates[j * nf:(j + 1) * nf].transpose(1, 0, 2, 3)

    i = property(lambda self: self._gate(0), doc="(N, F, h, w) input gate σ(a_i)")
    f = property(lambda self: self._gate(1), doc="(N, F, h, w) forget gate σ(a_f)")
    g = property(lambda self: self._gate(2), doc="(N, F, h, w) candidate tanh(a_g)")
    o = property(lambda self: self._gate(3), doc="(N, F, h, w) output gate σ(a_o)")


# ----------------------------------------------------------------------------- gate arithmetic
def lstm_gates_forward(a, b, c_prev, c, tanh_c, h, h_next=None, fused=True):
    """The element-wise part of a ConvLSTM step, in place (channel-major maps).

        [a_i; a_f; a_g; a_o] ← a + b                     (the gate convolution's output + bias)
        i = σ(a_i),  f = σ(a_f),  g = tanh(a_g),  o = σ(a_o)   (written back into a)
        c = f ⊙ c_prev + i ⊙ g,   tanh_c = tanh(c),   h = o ⊙ tanh_c
        h_next ← h                                       (when given: the next step's input slot)

    a (4F, N, h, w) becomes the gates; b (4F,); c_prev, c, tanh_c, h, h_next (F, N, h, w)
    (outputs may be views; h_next optional). On CuPy: one fused kernel.
    """
    if fused and kernels.wanted(a):   # CuPy: the lines below as one fused kernel (fast/kernels.py)
        return kernels.launch("lstm_gates_forward", lstm_gates_forward, a, b, c_prev, c, tanh_c, h, h_next)
    nf = a.shape[0] // 4
    a += b.reshape(4 * nf, 1, 1, 1)                             # pre-activations
    i, f, g, o = a[:nf], a[nf:2 * nf], a[2 * nf:3 * nf], a[3 * nf:]
    sigmoid(i, out=i)
    sigmoid(f, out=f)
    tanh(g, out=g)
    sigmoid(o, out=o)
    c[...] = f * c_prev + i * g                                 # c = f ⊙ c_prev + i ⊙ g
    tanh(c, out=tanh_c)
    h[...] = o * tanh_c                                         # h = o ⊙ tanh(c)
    if h_next is not None:
        h_next[...] = h


def lstm_gates_backward(dh_loss, dh_next, dc, gates, c_prev, tanh_c, da, dc_prev, fused=True):
    """The element-wise part of a ConvLSTM step's backward (channel-major maps).

        dh  = dh_loss + dh_next            (h_t feeds the loss and step t+1)
        δc  = dc + dh ⊙ o ⊙ (1 − tanh²(c))
        δa  = [δc ⊙ g ⊙ σ'(i);  δc ⊙ c_prev ⊙ σ'(f);  δc ⊙ i ⊙ tanh'(g);  dh ⊙ tanh(c) ⊙ σ'(o)]
        dc_prev = δc ⊙ f

    with σ' = s(1 − s) and tanh' = 1 − t² from the outputs. gates and the output da are
    (4F, N, h, w), the rest (F, N, h, w). On CuPy: one fused kernel.
    """
    if fused and kernels.wanted(gates):   # CuPy: the lines below as one fused kernel (fast/kernels.py)
        return kernels.launch("lstm_gates_backward", lstm_gates_backward, dh_loss, dh_next, dc, gates, c_prev, tanh_c, da, dc_prev)
    nf = gates.shape[0] // 4
    i, f, g, o = gates[:nf], gates[nf:2 * nf], gates[2 * nf:3 * nf], gates[3 * nf:]
    dh = dh_loss + dh_next
    # h = o ⊙ tanh(c): c_t receives gradient from h_t as well as from c_{t+1}
    dc_total = dc + dh * o * tanh_grad(tanh_c)
    # c = f ⊙ c_prev + i ⊙ g, then back through the non-linearities to the
    # pre-activations, written straight into their rows of δa (stacked i, f, g, o)
    da[:nf] = dc_total * g * sigmoid_grad(i)                    # δi ⊙ σ'
    da[nf:2 * nf] = dc_total * c_prev * sigmoid_grad(f)         # δf ⊙ σ'
    da[2 * nf:3 * nf] = dc_total * i * tanh_grad(g)             # δg ⊙ tanh'
    da[3 * nf:] = dh * tanh_c * sigmoid_grad(o)                 # δo ⊙ σ'
    dc_prev[...] = dc_total * f


def _leading_channels(w, m):
    """W₂ of the first m input channels alone, (4F, m·k·k): the product for a step whose
    other channels are all zero (step 0 when h_{-1} = 0: Wh * h_{-1} adds nothing)."""
    xp = get_array_module(w)
    if m == w.shape[1]:
        return w.reshape(w.shape[0], -1)
    return xp.ascontiguousarray(w[:, :m]).reshape(w.shape[0], -1)


def _step_forward(t, xh, c_prev, w, b, workspace, h, channels=None):
    """Step t: gates from the padded [x_t; h_{t-1}] = xh[t]; writes h_t into ``h``
    (F, N, h, w), a view of hs, and into xh[t+1] (if any); returns c_t (F, N, h, w) and
    the cache. ``channels``: only the first ones of xh[t] are non-zero (None: all)."""
    xp = get_array_module(xh, w)
    nf, k = w.shape[0] // 4, w.shape[2]
    p = k // 2
    n, hh, ww = xh.shape[2], xh.shape[3] - 2 * p, xh.shape[4] - 2 * p
    m = xh.shape[1] if channels is None else channels
    # One convolution for all four gates: [x; h] (C+F channels) against
    # W (4F, C+F, k, k) gives Wx*x + Wh*h, (4F, N, h, w).
    a = xp.empty((4 * nf, n, hh, ww), dtype=xh.dtype)
    conv_cm_forward(xh[t, :m], _leading_channels(w, m), k, a.reshape(4 * nf, -1), workspace)
    c, tanh_c = (xp.empty((nf, n, hh, ww), dtype=xh.dtype) for _ in range(2))
    # h_t is step t+1's input: written straight into its slot of the padded buffer
    h_next = xh[t + 1, -nf:, :, p:p + hh, p:p + ww] if t + 1 < xh.shape[0] else None

    def gate_math(maps):          # one block of the batch; in place, a becomes the gates
        # a += b; i, f, o = σ, g = tanh; c = f ⊙ c_prev + i ⊙ g; h = o ⊙ tanh(c)
        lstm_gates_forward(a[:, maps], b, c_prev[:, maps], c[:, maps], tanh_c[:, maps], h[:, maps],
                           None if h_next is None else h_next[:, maps])
    over_batch_blocks(gate_math, n, xp)      # element-wise: on every core, like im2col
    return c, ConvLSTMStepCache(a, c_prev, tanh_c, xh[t], w)


def _step_backward(dh_loss, dh_next, dc, cache, dw2, workspace, db_out, channels=None):
    """One step's backward, channel-major: dh_loss, dh_next, dc (F, N, h, w) in; adds
    the step's dW into dw2 (4F, (C+F)·k²), writes db (4F,) into db_out, returns
    d[x_t; h_{t-1}] padded (C+F, N, h+2p, w+2p) and dc_prev (F, N, h, w). ``channels``:
    as in the forward; only their gradient is wanted (the rest of dW gets zero)."""
    xp = get_array_module(dc)
    a, c_prev, tanh_c, xh_pad, w = cache
    nf, k = w.shape[0] // 4, w.shape[2]
    m = xh_pad.shape[0] if channels is None else channels
    da = xp.empty_like(a)                                          # (4F, N, h, w)
    dc_prev = xp.empty_like(dc)

    def gate_grads(maps):         # one block of the batch
        # dh = dh_loss + dh_next, δc, the four δa blocks and dc_prev
        lstm_gates_backward(dh_loss[:, maps], dh_next[:, maps], dc[:, maps], a[:, maps],
                            c_prev[:, maps], tanh_c[:, maps], da[:, maps], dc_prev[:, maps])
    over_batch_blocks(gate_grads, dc.shape[1], xp)
    da2 = da.reshape(4 * nf, -1)
    dxh_pad, _ = conv_cm_backward(da2, xh_pad[:m], _leading_channels(w, m), k, workspace=workspace,
                                  dw2=dw2[:, :m * k * k])          # dW adds into dw2
    da2.sum(axis=1, out=db_out)
    return dxh_pad, dc_prev


def _forward(xs, params, h0, c0):
    """convlstm_forward without the checks; h0, c0 may be None (zeros)."""
    xp = get_array_module(xs, params["Wx"])
    n, t_len, nc, hh, ww = xs.shape
    nf, k = params["Wh"].shape[1], params["Wh"].shape[2]
    p = k // 2
    # Concatenate the weights once for the whole sequence; every step refers to it.
    w = xp.concatenate([params["Wx"], params["Wh"]], axis=1)     # (4F, C+F, k, k)
    xh = xp.zeros((t_len, nc + nf, n, hh + 2 * p, ww + 2 * p), dtype=xs.dtype)
    xh[:, :nc, :, p:p + hh, p:p + ww] = xs.transpose(1, 2, 0, 3, 4)   # every x_t at once
    if h0 is not None:
        xh[0, nc:, :, p:p + hh, p:p + ww] = h0.transpose(1, 0, 2, 3)
    c = (swap_batch_channels(c0) if c0 is not None                # c_{-1}, (F, N, h, w)
         else xp.zeros((nf, n, hh, ww), dtype=xs.dtype))
    workspace = im2col_workspace(xh[0], k)      # one im2col buffer for every step
    hs = xp.empty((n, t_len, nf, hh, ww), dtype=xs.dtype)
    steps = []
    for t in range(t_len):
        # h_t is written straight into hs (and into step t+1's input) by the gate math
        c, step_cache = _step_forward(t, xh, c, w, params["b"], workspace,
                                      hs[:, t].transpose(1, 0, 2, 3),
                                      nc if t == 0 and h0 is None else None)   # h_{-1} = 0
        steps.append(step_cache)
    c_last = swap_batch_channels(c)                               # (N, F, h, w)
    return hs, ConvLSTMCache(steps, nc, h0 is not None, c0 is not None, c_last)


def _backward(dhs_cm, cache, dc_last_cm):
    """convlstm_backward without the checks, channel-major: dhs_cm (T, F, N, h, w)."""
    steps, nc, has_h0, _, _ = cache
    xp = get_array_module(dhs_cm)
    t_len, nf, n, hh, ww = dhs_cm.shape
    w = steps[0].w
    k = w.shape[2]
    p = k // 2
    dxs = xp.empty((n, t_len, nc, hh, ww), dtype=dhs_cm.dtype)
    # (4F, (C+F)·k²), held transposed: conv_cm_backward adds dW₂ᵀ into it with no strided copy
    dw2 = xp.zeros((w[0].size, 4 * nf), dtype=dhs_cm.dtype).T
    db_steps = xp.empty((t_len, 4 * nf), dtype=dhs_cm.dtype)   # row j: db of step T-1-j
    dh_next = xp.zeros((nf, n, hh, ww), dtype=dhs_cm.dtype)    # ∂L/∂h_t through step t+1
    dc_next = dc_last_cm if dc_last_cm is not None else xp.zeros_like(dh_next)
    workspace = im2col_workspace(steps[0].xh_pad, k)
    for t in reversed(range(t_len)):                           # t = T-1 … 0
        # h_t feeds the loss directly (dhs[:, t]) and the next step (dh_next)
        dxh_pad, dc_next = _step_backward(dhs_cm[t], dh_next, dc_next, steps[t], dw2, workspace,
                                          db_steps[t_len - 1 - t],
                                          nc if t == 0 and not has_h0 else None)   # no dh0 wanted
        dxh = dxh_pad[:, :, p:p + hh, p:p + ww]                # crop: (C+F, N, h, w)
        dxs[:, t] = dxh[:nc].transpose(1, 0, 2, 3)
        dh_next = dxh[nc:]
    # shared weights: db is the sum over t, added in the order T-1 … 0 (a sum over the
    # rows, not the fast axis, adds them one after the other: the same numbers as a loop)
    db = db_steps.sum(axis=0)
    # after the loop dh_next, dc_next are the gradients of h_{-1} = h0 (None when no h0
    # was given: step 0 did not compute it) and c_{-1} = c0
    cut = nc * k * k                                           # split W = [Wx | Wh]
    dparams = {"Wx": xp.ascontiguousarray(dw2[:, :cut].reshape(4 * nf, nc, k, k)),
               "Wh": xp.ascontiguousarray(dw2[:, cut:].reshape(4 * nf, nf, k, k)),
               "b": db}
    return (dxs, dparams, swap_batch_channels(dh_next) if has_h0 else None,
            swap_batch_channels(dc_next))


# ----------------------------------------------------------------------------- one step
def convlstm_step_forward(x, h_prev, c_prev, params):
    """One ConvLSTM step, as ``memory.convlstm_step_forward`` (the equations and shapes are
    there): a = Wx * x + Wh * h_prev + b as one convolution over [x; h_prev], then the
    gates. Returns h, c (N, F, h, w) and a :class:`ConvLSTMStepCache`."""
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
    hs, cache = _forward(x[:, None], params, h_prev, c_prev)
    return hs[:, 0], cache.c_last, cache.steps[0]


def convlstm_step_backward(dh, dc, cache):
    """Backward of one step, as ``memory.convlstm_step_backward``: δc, δo, δi, δg, δf,
    dc_prev, δa, then the gate convolution's backward at δa (dW = [dWx | dWh]).
    Returns dx (N, C, h, w), dh_prev, dc_prev (N, F, h, w), dparams "Wx", "Wh", "b"."""
    where, expected = "convlstm_step_backward", _shape(cache.i)
    _check_state("dh", dh, expected, where)
    _check_state("dc", dc, expected, where)
    _check_dtypes(where, forward=cache.gates, dh=dh, dc=dc)
    nc = cache.xh_pad.shape[0] - expected[1]                   # C = (C+F) − F
    seq_cache = ConvLSTMCache([cache], nc, True, True, None)
    dxs, dparams, dh_prev, dc_prev = _backward(swap_batch_channels(dh)[None], seq_cache,
                                               swap_batch_channels(dc))
    return dxs[:, 0], dh_prev, dc_prev, dparams


# ----------------------------------------------------------------------------- sequence
class ConvLSTMCache(NamedTuple):
    steps: list          # T × ConvLSTMStepCache, in time order
    x_channels: int      # C, where dW is split into dWx | dWh
    has_h0: bool         # h0 was given, so backward also returns its gradient
    has_c0: bool         # likewise c0
    c_last: object       # (N, F, h, w) the final cell state c_{T-1}


def convlstm_forward(xs, params, h0=None, c0=None):
    """A ConvLSTM over a sequence, as ``memory.convlstm_forward``: the step for t = 0 … T-1
    with the same weights, h_{-1} = h0 and c_{-1} = c0 (zeros when not given); xs
    (N, T, C, h, w) -> hs (N, T, F, h, w) and a :class:`ConvLSTMCache` (``c_last``: c_{T-1})."""
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
    return _forward(xs, params, h0, c0)


def convlstm_backward(dhs, cache, dc_last=None):
    """Backpropagation through time, as ``memory.convlstm_backward``: t = T-1 … 0 carrying
    dh into h_{t-1} and dc into c_{t-1}, the weights' gradients summed over t; dc_last is
    the gradient of ``cache.c_last`` (None: zero). Returns dxs (N, T, C, h, w) and dparams
    "Wx", "Wh", "b", plus "h0" / "c0" (N, F, h, w) when the forward was given them."""
    steps, _, has_h0, has_c0, _ = cache
    xp = get_array_module(dhs)
    where, t_len = "convlstm_backward", len(steps)
    nf = steps[0].gates.shape[0] // 4
    n, hh, ww = steps[0].gates.shape[1:]
    _check_state("dhs", dhs, (n, t_len, nf, hh, ww), where, "(N, T, F, h, w)")
    _check_state("dc_last", dc_last, (n, nf, hh, ww), where)
    _check_dtypes(where, forward=steps[0].gates, dhs=dhs, dc_last=dc_last)
    dhs_cm = xp.ascontiguousarray(dhs.transpose(1, 2, 0, 3, 4))      # (T, F, N, h, w)
    dc_last_cm = None if dc_last is None else swap_batch_channels(dc_last)
    dxs, dparams, dh0, dc0 = _backward(dhs_cm, cache, dc_last_cm)
    if has_h0:
        dparams["h0"] = dh0
    if has_c0:
        dparams["c0"] = dc0
    return dxs, dparams
