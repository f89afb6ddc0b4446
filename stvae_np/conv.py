"""2-D convolution, 2×2 max-pooling and ×2 nearest up-sampling, forward and backward.

Layout is NCHW throughout; weights are ``(C_out, C_in, k, k)`` as in PyTorch.
Every function works on NumPy and CuPy arrays (``xp = get_array_module(x)``) and
returns arrays of its inputs' dtype. Backward passes never modify their inputs.

Convolution (cross-correlation, stride 1, zero "same" padding p = k // 2):

    out[n, f, y, x] = b[f] + Σ_c Σ_{u,v} W[f, c, u, v] · x_pad[n, c, y + u, x + v]

It is computed as matrix products, in one of two orders (same result, same
FLOPs up to the padding; they differ in the size of the buffer they build):

* ``"im2col"``: gather every k×k patch into ``cols (C·k·k, N·H·W)`` with k·k strided
  copies (one per kernel offset (u, v)), then ``out = W₂ @ cols`` with
  ``W₂ = W.reshape(F, C·k·k)``. Buffer size C·k²·N·H·W.
* ``"shift"``: contract the channels first, ``z = W₃ @ x_pad`` with
  ``W₃ (F·k·k, C)`` and ``x_pad (C, N·Hp·Wp)``, then add the k·k shifted windows
  ``out[f, n, y, x] = Σ_{u,v} z[f, u, v, n, y + u, x + v]``. Buffer size F·k²·N·Hp·Wp:
  far smaller when F ≪ C (the 64→2 flow convolution, the 16→1 decoder).

``method="auto"`` picks the smaller buffer.
"""
from __future__ import annotations

from typing import NamedTuple

import os

from .backend import get_array_module

METHODS = ("auto", "im2col", "shift")
MAX_BUFFER = 2 ** 25     # elements (128 MiB in float32) of the largest temporary buffer per chunk
_CPU_THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
_POOL = None             # the thread pool of _over_batch_blocks, made on first use


# ----------------------------------------------------------------------------- checks
def _check_conv_args(x, w, b):
    if x.ndim != 4:
        raise ValueError(f"conv2d: x must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    if w.ndim != 4:
        raise ValueError(f"conv2d: w must be 4-D (C_out, C_in, k, k), got shape {tuple(w.shape)}")
    f, c, kh, kw = w.shape
    if kh != kw:
        raise ValueError(f"conv2d: kernel must be square, got {kh}×{kw}")
    if kh % 2 == 0:
        raise ValueError(f"conv2d: kernel size must be odd for 'same' padding, got {kh}")
    if x.shape[1] != c:
        raise ValueError(f"conv2d: channel mismatch, x has {x.shape[1]} channels "
                         f"but w expects {c}")
    if b is not None and tuple(b.shape) != (f,):
        raise ValueError(f"conv2d: b must have shape ({f},), got {tuple(b.shape)}")
    if x.dtype != w.dtype or (b is not None and b.dtype != x.dtype):
        raise ValueError(f"conv2d: dtypes differ (x {x.dtype}, w {w.dtype}"
                         f"{'' if b is None else f', b {b.dtype}'})")
    if x.dtype.kind != "f":
        raise ValueError(f"conv2d: expected floating-point arrays, got {x.dtype}")


def _pick_method(method, x_shape, w_shape):
    if method not in METHODS:
        raise ValueError(f"conv2d: method must be one of {METHODS}, got {method!r}")
    if method != "auto":
        return method
    _, c, h, wd = x_shape
    f, _, k, _ = w_shape
    p = k // 2
    # compare the buffer each order builds (the N and k·k factors are common)
    return "shift" if f * (h + 2 * p) * (wd + 2 * p) < c * h * wd else "im2col"


def _pad(x, p):
    """Zero-pad the two spatial axes by p on each side."""
    xp = get_array_module(x)
    if p == 0:
        return x
    n, c, h, w = x.shape
    out = xp.zeros((n, c, h + 2 * p, w + 2 * p), dtype=x.dtype)
    out[:, :, p:p + h, p:p + w] = x
    return out


# ----------------------------------------------------------------------------- im2col
def _over_batch_blocks(fill, n, xp):
    """Call ``fill(maps)`` on disjoint blocks of the batch axis, in parallel on the CPU.

    im2col, col2im and the shift-adds are k·k strided copies/adds, memory-bound and
    single-threaded in NumPy, while the matrix product after them uses every core. NumPy
    releases the GIL while it copies and adds, so a few threads, each on its own block of
    maps (disjoint writes, no races), run them on every core too. On the GPU one call
    does it all.
    """
    workers = min(_CPU_THREADS, n) if xp.__name__ == "numpy" else 1
    if workers <= 1:
        fill(slice(0, n))
        return
    bounds = [n * i // workers for i in range(workers + 1)]
    blocks = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    list(_thread_pool().map(fill, blocks))       # list(): re-raise a worker's exception


def _thread_pool():
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor
        _POOL = ThreadPoolExecutor(max_workers=_CPU_THREADS, thread_name_prefix="stvae_np-copy")
    return _POOL


def im2col(x, k):
    """Patches of a zero-padded input as the columns of one matrix.

    cols[c, u, v, n, y, x] = x_pad[n, c, y + u, x + v]

    Args:
        x: (N, C, H, W).
        k: odd kernel size.
    Returns:
        cols: (C·k·k, N·H·W), C-major then u, v (matching ``W.reshape(F, C·k·k)``).
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    x_pad = _pad(x, k // 2)
    cols = xp.empty((c, k, k, n, h, w), dtype=x.dtype)

    def fill(maps):
        for u in range(k):      # one strided copy per kernel offset, no fancy indexing
            for v in range(k):
                cols[:, u, v, maps] = x_pad[maps, :, u:u + h, v:v + w].transpose(1, 0, 2, 3)
    _over_batch_blocks(fill, n, xp)
    return cols.reshape(c * k * k, n * h * w)


def col2im(cols, x_shape, k):
    """Adjoint of :func:`im2col`: add every column entry back to the pixel it came from.

    dx_pad[n, c, y + u, x + v] += dcols[c, u, v, n, y, x], then crop the padding.

    Args:
        cols: (C·k·k, N·H·W).
        x_shape: (N, C, H, W) of the original input.
    Returns:
        (N, C, H, W).
    """
    xp = get_array_module(cols)
    n, c, h, w = x_shape
    p = k // 2
    cols = cols.reshape(c, k, k, n, h, w)
    # accumulate channel-major, like cols, so each add runs over matching rows (1.5× faster
    # than adding into (N, C, ...) through a transposed view); transpose once at the end
    dx_pad = xp.zeros((c, n, h + 2 * p, w + 2 * p), dtype=cols.dtype)

    def fill(maps):
        for u in range(k):
            for v in range(k):
                dx_pad[:, maps, u:u + h, v:v + w] += cols[:, u, v, maps]
    _over_batch_blocks(fill, n, xp)
    return dx_pad[:, :, p:p + h, p:p + w].transpose(1, 0, 2, 3)


# ----------------------------------------------------------------------------- conv2d
class Conv2dCache(NamedTuple):
    x: object        # (N, C, H, W) the input (im2col buffers are rebuilt in backward)
    w: object        # (F, C, k, k)
    has_bias: bool
    method: str      # "im2col" or "shift"


def _buffer_per_clip(method, x_shape, w_shape):
    """Elements of the temporary buffer one input map adds (im2col's cols or shift's z)."""
    _, c, h, w = x_shape
    f, _, k, _ = w_shape
    if method == "im2col":
        return c * k * k * h * w
    p = k // 2
    return (f * k * k + c) * (h + 2 * p) * (w + 2 * p)


def _batch_chunks(n, per_item):
    """Slices of the batch axis whose buffers stay under MAX_BUFFER elements each.

    The model pushes all N·(T−1) frames of a clip batch through one convolution; for the
    64→2 15×15 flow convolution of the paper preset one buffer for all 144 frames would
    be over 500 MB. The matrix products of each chunk stay large enough to run at full
    speed, and the memory stays bounded.
    """
    size = max(1, MAX_BUFFER // max(per_item, 1))
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _forward_chunk(x, w, method):
    """The bias-free convolution of one chunk, returned as (F, N, H, W)."""
    xp = get_array_module(x, w)
    n, c, h, wd = x.shape
    f, _, k, _ = w.shape
    if method == "im2col":
        cols = im2col(x, k)                                   # (C·k·k, N·H·W)
        return (w.reshape(f, c * k * k) @ cols).reshape(f, n, h, wd)
    p = k // 2
    x_pad = _pad(x, p).transpose(1, 0, 2, 3)                  # (C, N, Hp, Wp)
    w3 = w.transpose(0, 2, 3, 1).reshape(f * k * k, c)        # (F·k·k, C)
    z = (w3 @ x_pad.reshape(c, -1)).reshape(f, k, k, n, h + 2 * p, wd + 2 * p)
    out = xp.zeros((f, n, h, wd), dtype=x.dtype)

    def fill(maps):
        for u in range(k):       # add the k·k shifted windows
            for v in range(k):
                out[:, maps] += z[:, u, v, maps, u:u + h, v:v + wd]
    _over_batch_blocks(fill, n, xp)
    return out


def _backward_chunk(dout, x, w, method, need_dx=True):
    """dx (N, C, H, W) (None unless ``need_dx``) and dW (F, C, k, k) of one chunk."""
    xp = get_array_module(dout, w)
    n, c, h, wd = x.shape
    f, _, k, _ = w.shape
    dout_t = dout.transpose(1, 0, 2, 3)                       # (F, N, H, W), a view
    if method == "im2col":
        dout2 = dout_t.reshape(f, n * h * wd)                 # copies once
        cols = im2col(x, k)                                   # (C·k·k, N·H·W)
        dw = (dout2 @ cols.T).reshape(w.shape)
        del cols             # free it before dcols, its twin in size, is made
        if not need_dx:
            return None, dw
        dcols = w.reshape(f, c * k * k).T @ dout2             # (C·k·k, N·H·W)
        return col2im(dcols, x.shape, k), dw
    p = k // 2
    hp, wp = h + 2 * p, wd + 2 * p
    # dz[f, u, v, n, y + u, x + v] = dout[n, f, y, x]: the adjoint of the shift-add
    dz = xp.zeros((f, k, k, n, hp, wp), dtype=dout.dtype)

    def fill(maps):
        for u in range(k):
            for v in range(k):
                dz[:, u, v, maps, u:u + h, v:v + wd] = dout_t[:, maps]
    _over_batch_blocks(fill, n, xp)
    dz = dz.reshape(f * k * k, n * hp * wp)
    x_pad = _pad(x, p).transpose(1, 0, 2, 3).reshape(c, n * hp * wp)
    dw = (dz @ x_pad.T).reshape(f, k, k, c).transpose(0, 3, 1, 2)
    if not need_dx:
        return None, dw
    w3 = w.transpose(0, 2, 3, 1).reshape(f * k * k, c)
    dx_pad = (w3.T @ dz).reshape(c, n, hp, wp)
    return dx_pad[:, :, p:p + h, p:p + wd].transpose(1, 0, 2, 3), dw


def conv2d_forward(x, w, b=None, method="auto"):
    """Cross-correlation with stride 1 and zero "same" padding.

    out[n, f, y, x] = b[f] + Σ_c Σ_{u,v} W[f, c, u, v] · x_pad[n, c, y + u, x + v]

    Args:
        x: (N, C, H, W) float.
        w: (F, C, k, k), k odd; padding is k // 2 so H and W are kept.
        b: (F,) or None.
        method: "auto", "im2col" or "shift" (see the module docstring).
    Returns:
        out: (N, F, H, W), x's dtype.
        cache: :class:`Conv2dCache`.

    The batch is processed in chunks whose temporary buffer stays under MAX_BUFFER
    elements. The cache keeps x, not the im2col buffer: backward rebuilds it. Keeping
    it would cost C·k² times the input's memory per call (gigabytes over a ConvLSTM
    unrolled in time), and rebuilding it is a few strided copies.
    """
    _check_conv_args(x, w, b)
    method = _pick_method(method, x.shape, w.shape)
    xp = get_array_module(x, w)
    n, _, h, wd = x.shape
    f = w.shape[0]
    out = xp.empty((n, f, h, wd), dtype=x.dtype)
    for chunk in _batch_chunks(n, _buffer_per_clip(method, x.shape, w.shape)):
        out[chunk] = _forward_chunk(x[chunk], w, method).transpose(1, 0, 2, 3)
    if b is not None:
        out += b.reshape(1, f, 1, 1)
    return out, Conv2dCache(x, w, b is not None, method)


def conv2d_backward(dout, cache, need_dx=True):
    """Gradients of a convolution.

    dW[f, c, u, v] = Σ_{n,y,x} dout[n, f, y, x] · x_pad[n, c, y + u, x + v]
    db[f]          = Σ_{n,y,x} dout[n, f, y, x]
    dx             = the "full" correlation of dout with the flipped kernel, computed
                     as the adjoint of the forward's gather (col2im / window slicing).

    Args:
        dout: (N, F, H, W).
        cache: from :func:`conv2d_forward`.
        need_dx: False skips dx (returned as None): a first layer's input needs none.
    Returns:
        dx (N, C, H, W), dw (F, C, k, k), db (F,) or None when there was no bias.
    """
    x, w, has_bias, method = cache
    xp = get_array_module(dout, w)
    n, c, h, wd = x.shape
    f = w.shape[0]
    if tuple(dout.shape) != (n, f, h, wd):
        raise ValueError(f"conv2d_backward: dout must have shape {(n, f, h, wd)}, "
                         f"got {tuple(dout.shape)}")
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    dx = xp.empty_like(x) if need_dx else None
    dw = xp.zeros_like(w)
    for chunk in _batch_chunks(n, _buffer_per_clip(method, x.shape, w.shape)):
        dx_chunk, dw_chunk = _backward_chunk(dout[chunk], x[chunk], w, method, need_dx)
        if need_dx:
            dx[chunk] = dx_chunk
        dw += dw_chunk                                        # dW sums over the batch
    return dx, dw, db


# ----------------------------------------------------------------------------- max-pool
class MaxPoolCache(NamedTuple):
    x_shape: tuple
    argmax: object   # (N, C, H/2, W/2) index 0..3 of the winner inside each 2×2 window


def _windows(x):
    """(N, C, H, W) -> (N, C, H/2, W/2, 4): the four pixels of each 2×2 window, row-major."""
    n, c, h, w = x.shape
    return (x.reshape(n, c, h // 2, 2, w // 2, 2)
             .transpose(0, 1, 2, 4, 3, 5)
             .reshape(n, c, h // 2, w // 2, 4))


def maxpool2_forward(x):
    """2×2 max-pooling with stride 2.

    out[n, c, y, x] = max_{a,b ∈ {0,1}} x[n, c, 2y + a, 2x + b]

    Args:
        x: (N, C, H, W) with H and W even.
    Returns:
        out (N, C, H/2, W/2), cache.
    """
    if x.ndim != 4:
        raise ValueError(f"maxpool2: x must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[2] % 2 or x.shape[3] % 2:
        raise ValueError(f"maxpool2: spatial size must be even, got {x.shape[2]}×{x.shape[3]}")
    xp = get_array_module(x)
    win = _windows(x)
    argmax = win.argmax(axis=-1).astype(xp.int8)     # 0..3; int8 keeps the cache small
    out = xp.take_along_axis(win, argmax[..., None], axis=-1)[..., 0]
    return out, MaxPoolCache(tuple(x.shape), argmax)


def maxpool2_backward(dout, cache):
    """The gradient goes to the winner of each window, zero elsewhere.

    dx[n, c, 2y + a, 2x + b] = dout[n, c, y, x] if (a, b) was the argmax, else 0.
    A tie sends it to the first winner only (a valid sub-gradient).

    Args:
        dout: (N, C, H/2, W/2).
    Returns:
        dx: (N, C, H, W).
    """
    x_shape, argmax = cache
    xp = get_array_module(dout)
    n, c, h, w = x_shape
    if tuple(dout.shape) != (n, c, h // 2, w // 2):
        raise ValueError(f"maxpool2_backward: dout must have shape {(n, c, h // 2, w // 2)}, "
                         f"got {tuple(dout.shape)}")
    onehot = argmax[..., None] == xp.arange(4)                     # (N, C, H/2, W/2, 4)
    dwin = xp.where(onehot, dout[..., None], xp.zeros((), dtype=dout.dtype))
    dx = dwin.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5)
    return xp.ascontiguousarray(dx).reshape(n, c, h, w)


# ----------------------------------------------------------------------------- up-sample
class UpsampleCache(NamedTuple):
    x_shape: tuple


def upsample2_forward(x):
    """Nearest-neighbour ×2 up-sampling: out[n, c, y, x] = x[n, c, ⌊y/2⌋, ⌊x/2⌋].

    Args:
        x: (N, C, H, W).
    Returns:
        out (N, C, 2H, 2W), cache.
    """
    if x.ndim != 4:
        raise ValueError(f"upsample2: x must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    xp = get_array_module(x)
    n, c, h, w = x.shape
    out = xp.broadcast_to(x[:, :, :, None, :, None], (n, c, h, 2, w, 2))
    return xp.ascontiguousarray(out).reshape(n, c, 2 * h, 2 * w), UpsampleCache(tuple(x.shape))


def upsample2_backward(dout, cache):
    """Each input pixel was copied to a 2×2 block: its gradient is the block's sum.

    dx[n, c, y, x] = Σ_{a,b ∈ {0,1}} dout[n, c, 2y + a, 2x + b]

    Args:
        dout: (N, C, 2H, 2W).
    Returns:
        dx: (N, C, H, W).
    """
    n, c, h, w = cache.x_shape
    if tuple(dout.shape) != (n, c, 2 * h, 2 * w):
        raise ValueError(f"upsample2_backward: dout must have shape {(n, c, 2 * h, 2 * w)}, "
                         f"got {tuple(dout.shape)}")
    return dout.reshape(n, c, h, 2, w, 2).sum(axis=(3, 5))
