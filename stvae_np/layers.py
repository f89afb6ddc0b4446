"""The layers of the encoder and decoder, plainly: convolution, 2×2 max-pooling, ×2 up-sampling.

The first part of the paper's model (Patraucean, Handa & Cipolla 2016, section 2):

    e_t = maxpool2(tanh(conv(x_t; We) + be))        spatial encoder
    ŷ_t = conv(upsample2(ê_t); Wd) + bd             spatial decoder

Every function here is its equation and little else: NCHW arrays, one im2col and one
matrix product per convolution, no threads, no workspaces, no in-place tricks. Each op
is a pair ``*_forward(...) -> (out, cache)`` / ``*_backward(dout, cache)``, and works on
NumPy and CuPy arrays alike (``xp = get_array_module(x)``).

The model runs their fast mirror, ``fast/layers.py``, or these with ``STVAE(config,
ops="plain")`` (docs/DESIGN.md section 0). Unlike the fast ops, which say what is wrong,
these check only conv2d's ``method`` name: shapes and dtypes are assumed right.

Contents::

    im2col(x, k), col2im(cols, x_shape, k)        patches as columns, and its adjoint
    conv2d_forward(x, w, b=None, method="auto")   "same" cross-correlation, stride 1
    conv2d_backward(dout, cache, need_dx=True)    -> dx, dw, db
    maxpool2_forward(x), maxpool2_backward(dout, cache)
    upsample2_forward(x), upsample2_backward(dout, cache)

Shapes: N batch, C input channels, F output channels, H × W map, k odd.
"""
from __future__ import annotations

from typing import NamedTuple

from .backend import get_array_module

METHODS = ("auto", "im2col", "shift", "rows")   # the fast conv's orders; all give one answer


# ----------------------------------------------------------------------------- im2col
def im2col(x, k):
    """Every k×k patch of the zero-padded input as one column of a matrix.

        cols[(c, u, v), (n, y, x)] = x_pad[n, c, y + u, x + v],   p = k // 2

    Row block (c, u, v) is channel c of the padded map shifted by (u, v): k·k slice
    copies build the whole matrix, with no loop over pixels. x: (N, C, H, W), k odd;
    returns cols (C·k·k, N·H·W), rows ordered c, u, v like ``W.reshape(F, C·k·k)``.
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

    Adjoint means ⟨im2col(x), D⟩ = ⟨x, col2im(D)⟩ for every x and D. cols: (C·k·k, N·H·W);
    x_shape: (N, C, H, W) of the input im2col read; k odd. Returns dx (N, C, H, W).
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

    x: (N, C, H, W) float; w: (F, C, k, k), k odd; b: (F,) or None; method: one of
    ``METHODS``, accepted so that the call matches ``fast.layers.conv2d_forward`` (the
    plain one always uses im2col). Returns out (N, F, H, W) and a :class:`Conv2dCache`.
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

    dout: (N, F, H, W), the gradient of the loss with respect to out; need_dx=False skips
    dx. Returns dx (N, C, H, W) or None, dw (F, C, k, k), db (F,) or None (no bias).
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
    x: (N, C, H, W), H and W even. Returns out (N, C, H/2, W/2) and a :class:`MaxPoolCache`.
    """
    win = _windows(x)                                             # (N, C, H/2, W/2, 4)
    return win.max(axis=-1), MaxPoolCache(tuple(x.shape), win.argmax(axis=-1))


def maxpool2_backward(dout, cache):
    """The gradient of a maximum goes to the winner, zero to the three others.

        dx[n, c, 2y + a, 2x + b] = dout[n, c, y, x] if 2a + b won, else 0

    dout (N, C, H/2, W/2) -> dx (N, C, H, W).
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

    x (N, C, H, W) -> out (N, C, 2H, 2W), and a :class:`UpsampleCache`.
    """
    xp = get_array_module(x)
    out = xp.repeat(xp.repeat(x, 2, axis=2), 2, axis=3)
    return out, UpsampleCache(tuple(x.shape))


def upsample2_backward(dout, cache):
    """Each input pixel was copied into a 2×2 block: its gradient is the block's sum.

        dx[n, c, y, x] = Σ_{a,b ∈ {0,1}} dout[n, c, 2y + a, 2x + b]

    dout (N, C, 2H, 2W) -> dx (N, C, H, W).
    """
    n, c, h, w = cache.x_shape
    return dout.reshape(n, c, h, 2, w, 2).sum(axis=(3, 5))
