"""2-D convolution, 2×2 max-pooling and ×2 nearest up-sampling, forward and backward:
the fast versions, the ones the model runs.

The plain maths is in ``../layers.py`` (same names, same signatures): read that first;
``tests/test_fast.py`` holds the two together. Besides the plain names this file offers
the channel-major pieces the fast ConvLSTM builds on (``pad_channel_major``,
``conv_cm_forward``, ``conv_cm_backward``, ...).

A convolution is matrix products in one of three orders, "im2col", "shift" or "rows"
(the same sum, different buffers; "auto" takes the smallest), over batch chunks of at
most MAX_BUFFER elements; the k·k copies run on every core (``over_batch_blocks``), or
on the GPU as one operation on a strided view (``_windows``, ``_shift_add``). The
orders' equations and each device's way: docs/DESIGN.md section 10; the measurements:
BENCHMARKS.md.
"""
from __future__ import annotations

from typing import NamedTuple

import os

from ..backend import few_kernels, get_array_module, gpu_free_bytes

METHODS = ("auto", "im2col", "shift", "rows")
MAX_BUFFER = 2 ** 25     # elements (128 MiB in float32) of the largest temporary buffer per chunk (CPU)
GPU_MEMORY_SHARE = 0.25  # on CuPy a chunk's buffer may take this share of the free device memory
REST_BLAS_WORKERS = True # OpenBLAS's workers sleep right after each product (quiet_blas_workers)
BLAS_THREAD_TIMEOUT = 4  # ... after 2**4 cycles: the OPENBLAS_THREAD_TIMEOUT it sets
_BLAS_QUIETED = False    # quiet_blas_workers has run
# threads of over_batch_blocks on the CPU: the cores this process may use (1: serial)
_CPU_THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
_POOL = None             # the thread pool of over_batch_blocks, made on first use


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
        raise ValueError(f"conv2d: channel mismatch, x has {x.shape[1]} channels but w expects {c}")
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
    # the smallest buffer per batch item: also the fastest order here (BENCHMARKS.md)
    return min(METHODS[1:], key=lambda m: _buffer_per_clip(m, x_shape, w_shape))


# ----------------------------------------------------------------------------- threads, layout
def over_batch_blocks(fill, n, xp):
    """Call ``fill(maps)`` on disjoint blocks of the batch axis, in parallel on the CPU
    (NumPy releases the GIL while it copies and adds; the writes are disjoint). Serial,
    one call on the whole batch, when ``_CPU_THREADS`` is 1, when n is 1, or on CuPy."""
    workers = min(_CPU_THREADS, n) if xp.__name__ == "numpy" else 1
    if workers <= 1:
        fill(slice(0, n))
        return
    quiet_blas_workers()                 # once: OpenBLAS's workers must not spin on our cores
    bounds = [n * i // workers for i in range(workers + 1)]
    blocks = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    list(_thread_pool().map(fill, blocks))       # list(): re-raise a worker's exception


def _thread_pool():
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor
        _POOL = ThreadPoolExecutor(max_workers=_CPU_THREADS, thread_name_prefix="stvae_np-copy")
    return _POOL


def quiet_blas_workers():
    """Make OpenBLAS's workers sleep right after each product (spinning, they take the
    cores of over_batch_blocks' copies), once per process: OPENBLAS_THREAD_TIMEOUT set
    (unless it has a value), read again, the workers ended (docs/DESIGN.md section 10).
    A no-op where NumPy's BLAS is no such OpenBLAS. Call it when no thread is in BLAS."""
    global _BLAS_QUIETED
    if _BLAS_QUIETED or not REST_BLAS_WORKERS:
        return
    _BLAS_QUIETED = True
    fns = _openblas_functions("openblas_thread_timeout", "openblas_read_env", "blas_thread_shutdown_")
    if fns is None:
        return
    timeout, read_env, shutdown = fns
    if timeout() > 0:                     # set by the user (or the environment): it stands
        return
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(BLAS_THREAD_TIMEOUT)
    read_env()
    shutdown()


def _openblas_functions(*names):
    """The named functions of the OpenBLAS library this process has loaded, or None."""
    import ctypes
    try:
        with open("/proc/self/maps") as fh:
            paths = sorted({line.split()[-1] for line in fh if "openblas" in line.lower()})
        for path in paths:
            lib = ctypes.CDLL(path)
            fns = [getattr(lib, name, None) for name in names]
            if all(fn is not None for fn in fns):
                for fn in fns:
                    fn.restype, fn.argtypes = ctypes.c_int, []
                return fns
    except (OSError, IndexError):
        pass
    return None


def pad_channel_major(x, p):
    """(N, C, H, W) -> (C, N, H + 2p, W + 2p): zero-padded, channels first, the layout
    im2col reads (copies over whole rows; ``(F, C·k·k) @ cols`` gives (F, N·H·W))."""
    return _pad(x.transpose(1, 0, 2, 3), p, p)


def _pad(a, py, px):
    """Zero-pad the last two axes of ``a`` by py rows and px columns on each side (a copy)."""
    xp = get_array_module(a)
    h, w = a.shape[-2:]
    out = xp.zeros(a.shape[:-2] + (h + 2 * py, w + 2 * px), dtype=a.dtype)
    out[..., py:py + h, px:px + w] = a
    return out


def swap_batch_channels(a):
    """(N, C, H, W) <-> (C, N, H, W), as a contiguous copy (the swap is its own inverse):
    into the channel-major layout the matrix products use, and back."""
    return get_array_module(a).ascontiguousarray(a.transpose(1, 0, 2, 3))


# ----------------------------------------------------------------------------- few kernels
# On the GPU every array operation is a kernel launch, and a loop of k·k small copies
# costs k·k launches. Two strided views do each of those loops in one operation; they
# are what CuPy runs (backend.few_kernels). On NumPy the loops stay (faster there).
def buffer_limit(xp, itemsize=4):
    """Elements a batch chunk's temporary buffer may hold: MAX_BUFFER on NumPy,
    GPU_MEMORY_SHARE of the free device memory on CuPy."""
    if xp.__name__ == "numpy":
        return MAX_BUFFER
    return max(MAX_BUFFER, round(gpu_free_bytes() * GPU_MEMORY_SHARE) // itemsize)


def _windows(a, kh, kw):
    """Every kh×kw window of a padded channel-major map a (C, N, H + kh − 1, W + kw − 1), as
    one strided view (no copy): view[c, u, v, n, y, x] = a[c, n, y + u, x + v]."""
    xp = get_array_module(a)
    c, n, hp, wp = a.shape
    sc, sn, sy, sx = a.strides
    return xp.lib.stride_tricks.as_strided(a, (c, kh, kw, n, hp - kh + 1, wp - kw + 1),
                                           (sc, sy, sx, sn, sy, sx))


def _shift_add(z, py, px):
    """out[f, n, y, x] = Σ_{u,v} z_pad[f, u, v, n, y + u, x + v] in three operations (pad, one
    sum over a strided view), z (F, kh, kw, N, H, W) zero-padded by py rows and px columns:
    z_pad[..., y, x] = z[..., y − py, x − px]. Returns (F, N, H + 2py − kh + 1, W + 2px − kw + 1)."""
    xp = get_array_module(z)
    f, kh, kw, n, h, w = z.shape
    zp = _pad(z, py, px)
    s = zp.strides
    diagonals = xp.lib.stride_tricks.as_strided(
        zp, (f, n, h + 2 * py - kh + 1, w + 2 * px - kw + 1, kh, kw),
        (s[0], s[3], s[4], s[5], s[1] + s[4], s[2] + s[5]))
    return diagonals.sum(axis=(4, 5))


# ----------------------------------------------------------------------------- im2col order
def _im2col_padded(x_pad, k, out=None):
    """cols[c, u, v, n, y, x] = x_pad[c, n, y + u, x + v] as (C·k·k, N·H·W), x_pad padded and
    channel-major (C, N, H+k−1, W+k−1); filled into the flat buffer ``out`` when given."""
    xp = get_array_module(x_pad)
    c, n, hp, wp = x_pad.shape
    h, w = hp - k + 1, wp - k + 1
    size = c * k * k * n * h * w
    cols = xp.empty(size, dtype=x_pad.dtype) if out is None else out[:size]
    cols = cols.reshape(c, k, k, n, h, w)
    if few_kernels(xp):
        cols[...] = _windows(x_pad, k, k)                   # all k·k offsets in one copy
        return cols.reshape(c * k * k, n * h * w)

    def fill(maps):
        for u in range(k):      # one strided copy per kernel offset, no fancy indexing
            for v in range(k):
                cols[:, u, v, maps] = x_pad[:, maps, u:u + h, v:v + w]
    over_batch_blocks(fill, n, xp)
    return cols.reshape(c * k * k, n * h * w)


def _col2im_padded(dcols, dx_pad, k):
    """The adjoint of :func:`_im2col_padded`, added into dx_pad in place:
    dx_pad[c, n, y + u, x + v] += dcols[c, u, v, n, y, x]."""
    xp = get_array_module(dcols)
    c, n, hp, wp = dx_pad.shape
    h, w = hp - k + 1, wp - k + 1
    dcols = dcols.reshape(c, k, k, n, h, w)
    if few_kernels(xp):
        # dx_pad[y'] = Σ_u dcols[u][y' − u]: with u → k−1−u, a shift-add of the flipped
        # columns padded by k − 1, in three operations (plus the add into dx_pad)
        dx_pad += _shift_add(dcols[:, ::-1, ::-1], k - 1, k - 1)
        return dx_pad

    def fill(maps):
        for u in range(k):
            for v in range(k):
                dx_pad[:, maps, u:u + h, v:v + w] += dcols[:, u, v, maps]
    over_batch_blocks(fill, n, xp)
    return dx_pad


def im2col(x, k):
    """Patches as columns, as ``layers.im2col``: cols[c, u, v, n, y, x] = x_pad[n, c, y + u, x + v],
    returned as (C·k·k, N·H·W)."""
    return _im2col_padded(pad_channel_major(x, k // 2), k)


def col2im(cols, x_shape, k):
    """The adjoint of :func:`im2col`, as ``layers.col2im``: every column entry added back to
    the pixel it came from, padding cropped; returns (N, C, H, W)."""
    xp = get_array_module(cols)
    n, c, h, w = x_shape
    p = k // 2
    # accumulate channel-major, like cols, so each add runs over matching rows (1.5× faster
    # than adding into (N, C, ...) through a transposed view); transpose once at the end
    dx_pad = _col2im_padded(cols, xp.zeros((c, n, h + 2 * p, w + 2 * p), dtype=cols.dtype), k)
    return dx_pad[:, :, p:p + h, p:p + w].transpose(1, 0, 2, 3)


def _matmul_into(a, b, out):
    """out[...] = a @ b. On NumPy, BLAS writes straight into ``out`` (a strided view is
    fine), so no (F, N·H·W) temporary is made and copied; elsewhere, plain assignment."""
    xp = get_array_module(a, b)
    if xp.__name__ == "numpy":
        xp.matmul(a, b, out=out)
    else:
        out[...] = a @ b


def _batch_chunks(n, per_item, limit=None):
    """Slices of the batch axis whose buffers stay under ``limit`` elements each
    (MAX_BUFFER when None; :func:`buffer_limit` gives the device's)."""
    size = max(1, (MAX_BUFFER if limit is None else limit) // max(per_item, 1))
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def im2col_workspace(x_pad, k):
    """A flat buffer big enough for the im2col columns of the largest batch chunk of
    x_pad (C, N, Hp, Wp); pass it to :func:`conv_cm_forward` / :func:`conv_cm_backward`
    to reuse it across calls (the ConvLSTM reuses one for all its time steps)."""
    xp = get_array_module(x_pad)
    c, n, hp, wp = x_pad.shape
    per_map = c * k * k * (hp - k + 1) * (wp - k + 1)
    limit = buffer_limit(xp, x_pad.dtype.itemsize)
    return xp.empty(per_map * _batch_chunks(n, per_map, limit)[0].stop, dtype=x_pad.dtype)


def conv_cm_forward(x_pad, w2, k, out, workspace=None):
    """The im2col convolution in channel-major layout, without bias.

    out (F, N·H·W) = W₂ @ im2col(x), with x_pad (C, N, H+k−1, W+k−1) already padded and
    channels first and W₂ = W.reshape(F, C·k·k), in chunks of as many maps as the
    ``workspace`` holds (:func:`im2col_workspace`; made when not given). Returns ``out``.
    """
    c, n, hp, wp = x_pad.shape
    hw = (hp - k + 1) * (wp - k + 1)
    if workspace is None:
        workspace = im2col_workspace(x_pad, k)
    for sl in _batch_chunks(n, c * k * k * hw, workspace.size):  # as many maps as it holds
        cols = _im2col_padded(x_pad[:, sl], k, out=workspace)      # (C·k·k, n_chunk·H·W)
        _matmul_into(w2, cols, out[:, sl.start * hw:sl.stop * hw])
    return out


def conv_cm_backward(dout2, x_pad, w2, k, need_dx=True, workspace=None, dw2=None):
    """Gradients of :func:`conv_cm_forward`.

    dW₂ = dout₂ @ colsᵀ and dcols = W₂ᵀ @ dout₂, dx = col2im(dcols), chunk by chunk
    (the columns are rebuilt here; dcols overwrites them in the workspace).

    Args: dout2 (F, N·H·W); x_pad (C, N, Hp, Wp) the forward's input; w2 (F, C·k·k);
        dw2 optional (F, C·k·k) that dW₂ is added into (best the transposed view of a
        contiguous (C·k·k, F) array).
    Returns: dx_pad (C, N, Hp, Wp) (crop its border for dx) or None without need_dx,
        and dw2 (F, C·k·k), the array given or a new one.
    """
    xp = get_array_module(dout2, x_pad)
    c, n, hp, wp = x_pad.shape
    hw = (hp - k + 1) * (wp - k + 1)
    if workspace is None:
        workspace = im2col_workspace(x_pad, k)
    dw2 = xp.zeros_like(w2) if dw2 is None else dw2
    dx_pad = xp.zeros_like(x_pad) if need_dx else None
    for sl in _batch_chunks(n, c * k * k * hw, workspace.size):  # as many maps as it holds
        d = dout2[:, sl.start * hw:sl.stop * hw]                    # (F, n_chunk·H·W)
        cols = _im2col_padded(x_pad[:, sl], k, out=workspace)
        # dW₂ += d @ colsᵀ, summed over the batch; computed as its transpose cols @ dᵀ,
        # which OpenBLAS runs ~10 % faster on the ConvLSTM's shapes (BENCHMARKS.md)
        dw2 += (cols @ d.T).T
        if need_dx:
            _matmul_into(w2.T, d, cols)                            # dcols, in cols' place
            _col2im_padded(cols, dx_pad[:, sl], k)
    return dx_pad, dw2


# ----------------------------------------------------------------------------- conv2d
class Conv2dCache(NamedTuple):
    x: object        # (N, C, H, W) the input (im2col buffers are rebuilt in backward)
    w: object        # (F, C, k, k)
    has_bias: bool
    method: str      # the order used: "im2col", "shift" or "rows" ("auto" resolved)


def _buffer_per_clip(method, x_shape, w_shape):
    """Elements of temporary buffer one batch item adds to a chunk (cols; z and x; R, z and x)."""
    _, c, h, w = x_shape
    f, _, k, _ = w_shape
    if method == "im2col":
        return c * k * k * h * w
    if method == "rows":
        return (c * k + f * k + c) * h * w
    return (f * k * k + c) * h * w


# ----------------------------------------------------------------------------- shift, rows orders
def _window(d, size):
    """Slices (dst, src) with ``out[dst] += z[src]`` meaning out[y] += z[y + d] for every y
    with 0 ≤ y + d < size: only the part inside the map (the padding would add zeros)."""
    lo = max(0, -d)
    hi = max(lo, min(size, size - d))        # empty when the shift is |d| ≥ size
    return slice(lo, hi), slice(lo + d, hi + d)


def _shifts_added(z):
    """out[f, n, y, x] = Σ_{u,v} z[f, u, v, n, y + u − py, x + v − px] (inside the map), z
    (F, kh, kw, N, H, W), (py, px) = (kh // 2, kw // 2): :func:`_shift_add`, on the CPU as
    kh·kw in-place adds on every core. Returns (F, N, H, W)."""
    xp = get_array_module(z)
    f, kh, kw, n, h, wd = z.shape
    if few_kernels(xp):
        return _shift_add(z, kh // 2, kw // 2)
    out = xp.zeros((f, n, h, wd), dtype=z.dtype)

    def fill(maps):
        for u in range(kh):
            dst_y, src_y = _window(u - kh // 2, h)
            for v in range(kw):
                dst_x, src_x = _window(v - kw // 2, wd)
                out[:, maps, dst_y, dst_x] += z[:, u, v, maps, src_y, src_x]
    over_batch_blocks(fill, n, xp)
    return out


def _shifted_copies(a, kh, kw):
    """dz[f, u, v, n, y + u − py, x + v − px] = a[f, n, y, x] (zero elsewhere), a (F, N, H, W):
    the adjoint of :func:`_shifts_added`, (F, kh, kw, N, H, W)."""
    xp = get_array_module(a)
    f, n, h, wd = a.shape
    if few_kernels(xp):     # = the windows of a padded, offsets reversed: one copy
        return xp.ascontiguousarray(_windows(_pad(a, kh // 2, kw // 2), kh, kw)[:, ::-1, ::-1])
    dz = xp.zeros((f, kh, kw, n, h, wd), dtype=a.dtype)

    def fill(maps):
        for u in range(kh):
            dst_y, src_y = _window(u - kh // 2, h)
            for v in range(kw):
                dst_x, src_x = _window(v - kw // 2, wd)
                dz[:, u, v, maps, src_y, src_x] = a[:, maps, dst_y, dst_x]
    over_batch_blocks(fill, n, xp)
    return dz


def _shift_forward_chunk(x, w):
    """The shift order, bias-free, of one chunk: z = W₃ @ x, then the k·k shifted windows
    of z added (docs/DESIGN.md section 10); returns (F, N, H, W)."""
    n, c, h, wd = x.shape
    f, _, k, _ = w.shape
    w3 = w.transpose(0, 2, 3, 1).reshape(f * k * k, c)        # (F·k·k, C)
    z = (w3 @ swap_batch_channels(x).reshape(c, -1)).reshape(f, k, k, n, h, wd)
    return _shifts_added(z)      # the k·k shifted windows: out[y, x] += z[u, v][y+u-p, x+v-p]


def _shift_backward_chunk(dout, x, w, need_dx=True):
    """dx (N, C, H, W) (None unless ``need_dx``) and dW (F, C, k, k) of one chunk."""
    n, c, h, wd = x.shape
    f, _, k, _ = w.shape
    dout_t = dout.transpose(1, 0, 2, 3)                       # (F, N, H, W), a view
    # dz[f, u, v, n, y+u-p, x+v-p] = dout[n, f, y, x]: the adjoint of the shift-add
    dz = _shifted_copies(dout_t, k, k).reshape(f * k * k, n * h * wd)
    x2 = swap_batch_channels(x).reshape(c, -1)                # (C, N·H·W)
    dw = (dz @ x2.T).reshape(f, k, k, c).transpose(0, 3, 1, 2)
    if not need_dx:
        return None, dw
    w3 = w.transpose(0, 2, 3, 1).reshape(f * k * k, c)
    return (w3.T @ dz).reshape(c, n, h, wd).transpose(1, 0, 2, 3), dw


def _unfold_rows(x_cm, k):
    """R[c, v, n, y, x] = x[c, n, y, x + v − p] (zero outside the map): the k horizontal
    shifts of every row, (C·k, N·H·W); k copies where im2col makes k·k."""
    xp = get_array_module(x_cm)
    c, n, h, wd = x_cm.shape
    p = k // 2
    if few_kernels(xp):     # the 1×k windows of x padded by p columns, in one copy
        return xp.ascontiguousarray(_windows(_pad(x_cm, 0, p), 1, k)).reshape(c * k, n * h * wd)
    r = xp.empty((c, k, n, h, wd), dtype=x_cm.dtype)

    def fill(maps):
        for v in range(k):
            dst_x, src_x = _window(v - p, wd)
            r[:, v, maps, :, dst_x] = x_cm[:, maps, :, src_x]
            r[:, v, maps, :, :dst_x.start] = 0                 # the border the shift uncovers
            r[:, v, maps, :, dst_x.stop:] = 0
    over_batch_blocks(fill, n, xp)
    return r.reshape(c * k, n * h * wd)


def _rows_forward_chunk(x, w):
    """The rows order, bias-free, of one chunk: z = W_r @ R (:func:`_unfold_rows`), then the
    k vertical shifts of z added (docs/DESIGN.md section 10); returns (F, N, H, W)."""
    n, c, h, wd = x.shape
    f, _, k, _ = w.shape
    r = _unfold_rows(swap_batch_channels(x), k)               # (C·k, N·H·W)
    wr = w.transpose(0, 2, 1, 3).reshape(f * k, c * k)        # rows (f, u), columns (c, v)
    z = (wr @ r).reshape(f, k, 1, n, h, wd)                   # z[f, u, 0, n, y, x]
    return _shifts_added(z)      # the k vertical shifts: out[y] += z[u][y+u-p]


def _rows_backward_chunk(dout, x, w, need_dx=True):
    """dx (N, C, H, W) (None unless ``need_dx``) and dW (F, C, k, k) of one chunk."""
    xp = get_array_module(dout, w)
    n, c, h, wd = x.shape
    f, _, k, _ = w.shape
    p = k // 2
    dout_t = dout.transpose(1, 0, 2, 3)                       # (F, N, H, W), a view
    # dz[f, u, n, y+u-p, x] = dout[n, f, y, x]: the adjoint of the vertical shift-add
    dz = _shifted_copies(dout_t, k, 1).reshape(f * k, n * h * wd)
    r = _unfold_rows(swap_batch_channels(x), k)               # (C·k, N·H·W)
    dw = (dz @ r.T).reshape(f, k, c, k).transpose(0, 2, 1, 3)
    if not need_dx:
        return None, dw
    del r
    wr = w.transpose(0, 2, 1, 3).reshape(f * k, c * k)
    dr = (wr.T @ dz).reshape(c, k, n, h, wd)                  # gradient of R
    if few_kernels(xp):     # dx[x'] = Σ_v dr[v][x' − v + p]: a shift-add of the flipped dr
        return _shift_add(dr[:, ::-1].reshape(c, 1, k, n, h, wd), 0, p).transpose(1, 0, 2, 3), dw
    dx = xp.zeros((c, n, h, wd), dtype=dout.dtype)

    def fill_dx(maps):
        for v in range(k):       # the adjoint of the unfold
            dst_x, src_x = _window(v - p, wd)
            dx[:, maps, :, src_x] += dr[:, v, maps, :, dst_x]
    over_batch_blocks(fill_dx, n, xp)
    return dx.transpose(1, 0, 2, 3), dw


# ----------------------------------------------------------------------------- conv2d (public)
def conv2d_forward(x, w, b=None, method="auto"):
    """Cross-correlation with stride 1 and zero "same" padding, as ``layers.conv2d_forward``:
    out[n, f, y, x] = b[f] + Σ_c Σ_{u,v} W[f, c, u, v] · x_pad[n, c, y + u, x + v].

    Args: x (N, C, H, W) float; w (F, C, k, k), k odd; b (F,) or None; method "auto"
        (the order with the smallest buffer), "im2col", "shift" or "rows".
    Returns: out (N, F, H, W), x's dtype, and a :class:`Conv2dCache` (x, not the buffers).
    """
    _check_conv_args(x, w, b)
    method = _pick_method(method, x.shape, w.shape)
    xp = get_array_module(x, w)
    n, c, h, wd = x.shape
    f, _, k, _ = w.shape
    if method == "im2col":
        out_cm = xp.empty((f, n * h * wd), dtype=x.dtype)
        conv_cm_forward(pad_channel_major(x, k // 2), w.reshape(f, c * k * k), k, out_cm)
        out = swap_batch_channels(out_cm.reshape(f, n, h, wd))
    else:
        out = xp.empty((n, f, h, wd), dtype=x.dtype)
        for chunk in _batch_chunks(n, _buffer_per_clip(method, x.shape, w.shape),
                                  buffer_limit(xp, x.dtype.itemsize)):
            out_cm = (_shift_forward_chunk(x[chunk], w) if method == "shift"
                      else _rows_forward_chunk(x[chunk], w))             # (F, n, H, W)
            out[chunk] = out_cm.transpose(1, 0, 2, 3)
    if b is not None:
        out += b.reshape(1, f, 1, 1)
    return out, Conv2dCache(x, w, b is not None, method)


def conv2d_backward(dout, cache, need_dx=True):
    """Gradients of a convolution, as ``layers.conv2d_backward``: dW = dout ⋆ x_pad,
    db = Σ dout, dx the adjoint of the forward's gather (col2im / window slicing).

    Args: dout (N, F, H, W); cache from :func:`conv2d_forward`; need_dx False skips dx.
    Returns: dx (N, C, H, W) or None, dw (F, C, k, k), db (F,) or None without a bias.
    """
    x, w, has_bias, method = cache
    xp = get_array_module(dout, w)
    n, c, h, wd = x.shape
    f, _, k, _ = w.shape
    if tuple(dout.shape) != (n, f, h, wd):
        raise ValueError(f"conv2d_backward: dout must have shape {(n, f, h, wd)}, got {tuple(dout.shape)}")
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    if method == "im2col":
        p = k // 2
        dout2 = swap_batch_channels(dout).reshape(f, n * h * wd)
        dx_pad, dw2 = conv_cm_backward(dout2, pad_channel_major(x, p), w.reshape(f, c * k * k),
                                       k, need_dx)
        dx = None if dx_pad is None else swap_batch_channels(dx_pad[:, :, p:p + h, p:p + wd])
        return dx, dw2.reshape(w.shape), db
    dx = xp.empty_like(x) if need_dx else None
    dw = xp.zeros_like(w)
    for chunk in _batch_chunks(n, _buffer_per_clip(method, x.shape, w.shape),
                                  buffer_limit(xp, x.dtype.itemsize)):
        if method == "shift":
            dx_chunk, dw_chunk = _shift_backward_chunk(dout[chunk], x[chunk], w, need_dx)
        else:
            dx_chunk, dw_chunk = _rows_backward_chunk(dout[chunk], x[chunk], w, need_dx)
        if need_dx:
            dx[chunk] = dx_chunk
        dw += dw_chunk                                        # dW sums over the batch
    return dx, dw, db


# ----------------------------------------------------------------------------- max-pool
class MaxPoolCache(NamedTuple):
    x_shape: tuple
    argmax: object   # (N, C, H/2, W/2) int8, 0..3: which corner of each 2×2 window won


def _corners(x):
    """The four pixels of every 2×2 window as strided views (N, C, H/2, W/2), in
    row-major order: x[2y, 2x], x[2y, 2x+1], x[2y+1, 2x], x[2y+1, 2x+1]."""
    return x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2]


def maxpool2_forward(x):
    """2×2 max-pooling with stride 2, x (N, C, H, W), H and W even -> out (N, C, H/2, W/2), cache:
    out[n, c, y, x] = max_{a,b ∈ {0,1}} x[n, c, 2y + a, 2x + b], a tournament of the four
    corner views; the cache keeps which won, 0…3, the first in row-major order on a tie."""
    if x.ndim != 4:
        raise ValueError(f"maxpool2: x must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[2] % 2 or x.shape[3] % 2:
        raise ValueError(f"maxpool2: spatial size must be even, got {x.shape[2]}×{x.shape[3]}")
    xp = get_array_module(x)
    a, b, c, d = _corners(x)
    top, bottom = xp.maximum(a, b), xp.maximum(c, d)
    out = xp.maximum(top, bottom)
    # winner 0…3: a later corner wins only if strictly larger (first winner on a tie)
    argmax = xp.where(bottom > top, 2 + (d > c), (b > a).astype(xp.int8)).astype(xp.int8)
    return out, MaxPoolCache(tuple(x.shape), argmax)


def maxpool2_backward(dout, cache):
    """dout (N, C, H/2, W/2) -> dx (N, C, H, W): the gradient goes to each window's winner
    (the first on a tie): dx[n, c, 2y + a, 2x + b] = dout[n, c, y, x] if (a, b) won, else 0."""
    x_shape, argmax = cache
    xp = get_array_module(dout)
    n, c, h, w = x_shape
    if tuple(dout.shape) != (n, c, h // 2, w // 2):
        raise ValueError(f"maxpool2_backward: dout must have shape {(n, c, h // 2, w // 2)}, "
                         f"got {tuple(dout.shape)}")
    dx = xp.empty((n, c, h, w), dtype=dout.dtype)
    zero = xp.zeros((), dtype=dout.dtype)
    for corner, view in enumerate(_corners(dx)):
        view[...] = xp.where(argmax == corner, dout, zero)
    return dx


# ----------------------------------------------------------------------------- up-sample
class UpsampleCache(NamedTuple):
    x_shape: tuple


def upsample2_forward(x):
    """Nearest-neighbour ×2 up-sampling: out[n, c, y, x] = x[n, c, ⌊y/2⌋, ⌊x/2⌋];
    x (N, C, H, W) -> out (N, C, 2H, 2W), cache."""
    if x.ndim != 4:
        raise ValueError(f"upsample2: x must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    xp = get_array_module(x)
    # each pixel twice along the row, then each row twice: two copies with unit-stride
    # inner loops (a broadcast view copied in one go was 3× slower on NumPy)
    out = xp.repeat(xp.repeat(x, 2, axis=3), 2, axis=2)
    return out, UpsampleCache(tuple(x.shape))


def upsample2_backward(dout, cache):
    """dout (N, C, 2H, 2W) -> dx (N, C, H, W), each pixel's gradient the sum of its 2×2 block:
    dx[n, c, y, x] = Σ_{a,b ∈ {0,1}} dout[n, c, 2y + a, 2x + b]."""
    n, c, h, w = cache.x_shape
    if tuple(dout.shape) != (n, c, 2 * h, 2 * w):
        raise ValueError(f"upsample2_backward: dout must have shape {(n, c, 2 * h, 2 * w)}, "
                         f"got {tuple(dout.shape)}")
    # the two rows of each block, then the two columns: adds over strided views (NumPy's
    # sum over the two length-2 axes of a (N, C, H, 2, W, 2) view was 13× slower)
    blocks = dout.reshape(n, c, h, 2, w, 2)
    rows = blocks[:, :, :, 0] + blocks[:, :, :, 1]            # (N, C, H, W, 2)
    return rows[..., 0] + rows[..., 1]
