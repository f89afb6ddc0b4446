"""Grid generator and bilinear sampler (the spatial transformer's sampling step), forward and backward.

The flow ``T (N, 2, h, w)`` is in pixels, channel 0 = x (columns), channel 1 = y
(rows). It is a *backward* warp: the output at (y, x) reads the input at the source
point

    G(y, x) = (x_s, y_s) = (x + T[0](y, x),  y + T[1](y, x))

so an object moving right by v pixels needs T_x = −v. The source point is rarely on
the pixel lattice; the sampler reads it by bilinear interpolation of its four integer
neighbours q, with zero outside the map:

    out[n, c, y, x] = Σ_q img[n, c, q_y, q_x] · max(0, 1 − |x_s − q_x|) · max(0, 1 − |y_s − q_y|)

The idea follows Chainer's ``spatial_transformer_sampler`` (floor, four weights,
scatter-add the image gradient); the code is our own. Every function works on NumPy
and CuPy arrays (``xp = get_array_module(x)``) and returns arrays of its inputs'
dtype. Backward passes never modify their inputs.
"""
from __future__ import annotations

from typing import NamedTuple

from .backend import few_kernels, get_array_module, scatter_add
from .fast import kernels


# ----------------------------------------------------------------------------- grid
def base_grid(n, h, w, like):
    """The identity grid: every output pixel's own coordinates.

    grid[:, 0, y, x] = x   (column index),   grid[:, 1, y, x] = y   (row index)

    n, h, w: batch and spatial size; like: any array, whose module and dtype the grid
    gets. Returns a fresh (writable) (n, 2, h, w) array.
    """
    xp = get_array_module(like)
    grid = xp.empty((n, 2, h, w), dtype=like.dtype)
    grid[:, 0] = xp.arange(w, dtype=like.dtype)[None, None, :]   # x varies along columns
    grid[:, 1] = xp.arange(h, dtype=like.dtype)[None, :, None]   # y varies along rows
    return grid


def flow_to_grid(flow):
    """Grid generator: source coordinates from a flow in pixels, G = base_grid + T.

    It has no parameters and is linear with slope one, so its backward is the
    identity: dflow = dgrid (no separate backward function is needed).
    flow (N, 2, h, w) float, channels T_x, T_y in pixels -> grid (x + T_x, y + T_y), same shape and dtype.
    """
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow_to_grid: flow must be (N, 2, h, w), got shape {tuple(flow.shape)}")
    n, _, h, w = flow.shape
    grid = base_grid(n, h, w, flow)
    grid += flow
    return grid


# ----------------------------------------------------------------------------- checks
def _check_sampler_args(img, grid):
    if img.ndim != 4:
        raise ValueError(f"bilinear: img must be 4-D (N, C, H, W), got shape {tuple(img.shape)}")
    if grid.ndim != 4:
        raise ValueError(f"bilinear: grid must be 4-D (N, 2, Ho, Wo), got shape {tuple(grid.shape)}")
    if grid.shape[1] != 2:
        raise ValueError(f"bilinear: grid must have 2 channels (x, y), got {grid.shape[1]}")
    if img.shape[0] != grid.shape[0]:
        raise ValueError(f"bilinear: batch mismatch, img has {img.shape[0]} items "
                         f"but grid has {grid.shape[0]}")
    if img.dtype != grid.dtype:
        raise ValueError(f"bilinear: dtypes differ (img {img.dtype}, grid {grid.dtype})")
    if img.dtype.kind != "f":
        raise ValueError(f"bilinear: expected floating-point arrays, got {img.dtype}")


# ----------------------------------------------------------------------------- sampler
def _neighbours(coord, size):
    """Lower neighbour, the two 1-D weights and validity masks along one axis.

    Coordinates are first clipped to [−2, size + 1]. Beyond that range both
    neighbours are off the map anyway (so nothing changes, value or gradient), and
    the clip keeps ±1e30 or ±inf from overflowing the integer cast. NaN passes through
    the clip; its neighbours are moved to an off-map position so that the indices stay
    valid while the NaN weights carry the NaN into the output (no device sync needed to
    detect it).
    """
    xp = get_array_module(coord)
    c = xp.clip(coord, -2, size + 1)
    c0 = xp.floor(c)
    w1 = c - c0                      # weight of the upper neighbour, 1 − |c − (c0 + 1)|
    w0 = 1 - w1                      # weight of the lower neighbour, 1 − |c − c0|
    c0 = xp.where(xp.isnan(c0), -2, c0)
    valid0 = (c0 >= 0) & (c0 <= size - 1)
    valid1 = (c0 >= -1) & (c0 <= size - 2)
    i0 = xp.clip(c0, 0, size - 1).astype(xp.int64)     # in range; invalid ones get weight 0
    i1 = xp.clip(c0 + 1, 0, size - 1).astype(xp.int64)
    return (i0, i1), (w0, w1), (valid0, valid1)


def bilinear_weights(grid, height, width, fused=True):
    """The four integer neighbours of every source point, their weights and the weights'
    derivatives (the grid-dependent half of ``sampler.bilinear_forward``).

    For x_s = grid[n, 0, p] (and likewise y_s), clipped to [−2, size + 1] first:

        x0 = ⌊x_s⌋,  x1 = x0 + 1,  wx0 = 1 − (x_s − x0),  wx1 = x_s − x0
        valid_x0 = 0 ≤ x0 < W,  valid_x1 = 0 ≤ x1 < W    (NaN: x0 moved off the map)

    and for the corners q = (y0,x0), (y0,x1), (y1,x0), (y1,x1), in that order:

        index_q  = q_y · W + q_x   (each coordinate clipped into the map)
        weight_q = wy_q · wx_q · valid_q
        dw_dx_q  = ±wy_q · valid_q     (− for the x0 corners)
        dw_dy_q  = ±wx_q · valid_q     (− for the y0 corners)

    grid: (N, 2, Ho, Wo) source points (x, y) in pixels; height, width: the image's H, W.
    Returns index (N, 1, 4, P) int64 and weight, dw_dx, dw_dy (N, 1, 4, P) of grid's dtype,
    P = Ho·Wo. On CuPy: one ``stvae_bilinear_weights`` kernel.
    """
    if fused and kernels.wanted(grid):   # CuPy: the lines below as one fused kernel (fast/kernels.py)
        return kernels.launch("bilinear_weights", bilinear_weights, grid, height, width)
    xp = get_array_module(grid)
    n, _, ho, wo = grid.shape
    p = ho * wo
    w = width
    (x0, x1), (wx0, wx1), (vx0, vx1) = _neighbours(grid[:, 0].reshape(n, 1, p), width)   # (N, 1, P) each
    (y0, y1), (wy0, wy1), (vy0, vy1) = _neighbours(grid[:, 1].reshape(n, 1, p), height)
    # the four corners, stacked on a new axis in the order (y0,x0), (y0,x1), (y1,x0), (y1,x1)
    index = xp.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1], axis=2)   # (N, 1, 4, P)
    valid = xp.stack([vy0 & vx0, vy0 & vx1, vy1 & vx0, vy1 & vx1], axis=2).astype(grid.dtype)
    wx = xp.stack([wx0, wx1, wx0, wx1], axis=2)
    wy = xp.stack([wy0, wy0, wy1, wy1], axis=2)
    sign_x = xp.asarray([-1, 1, -1, 1], dtype=grid.dtype).reshape(1, 1, 4, 1)   # ∂wx0/∂x_s = −1, ∂wx1/∂x_s = +1
    sign_y = xp.asarray([-1, -1, 1, 1], dtype=grid.dtype).reshape(1, 1, 4, 1)
    # multiply by the mask (not xp.where) so that a NaN weight stays NaN
    weight = wy * wx * valid                                   # (N, 1, 4, P)
    dw_dx = sign_x * wy * valid
    dw_dy = sign_y * wx * valid
    return index, weight, dw_dx, dw_dy


class BilinearCache(NamedTuple):
    img: object      # (N, C, H, W) the input (the four neighbour values are re-gathered in backward)
    grid_shape: tuple
    index: object    # (N, 1, 4·P) int, flat index y·W + x of each neighbour, clipped into the map
    weight: object   # (N, 1, 4, P) w_q = wy_q · wx_q · valid_q
    dw_dx: object    # (N, 1, 4, P) ∂w_q/∂x_s = ±wy_q · valid_q
    dw_dy: object    # (N, 1, 4, P) ∂w_q/∂y_s = wx_q · (±1) · valid_q


def _gather(img, index):
    """img (N, C, H, W), index (N, 1, 4·P) flat y·W + x -> values (N, C, 4, P).

    vals[n, c, j] = img[n, c, index[n, 0, j]]: one ``take_along_axis`` on the GPU (one
    operation); on NumPy one ``take`` per map, which measured 3× faster than
    take_along_axis's broadcast fancy indexing (paper step: 9 against 25 ms a call).
    """
    xp = get_array_module(img)
    n, c, h, w = img.shape
    src = img.reshape(n, c, h * w)
    if few_kernels(xp):
        vals = xp.take_along_axis(src, index, axis=2)                   # (N, C, 4·P)
    else:
        vals = xp.empty((n, c, index.shape[2]), dtype=img.dtype)
        for i in range(n):
            xp.take(src[i], index[i, 0], axis=1, out=vals[i])
    return vals.reshape(n, c, 4, -1)


def bilinear_forward(img, grid):
    """Bilinear sampling of ``img`` at the source points ``grid``, zero outside the map.

    Equations, for the source point (x_s, y_s) = grid[n, :, y, x] with
    x0 = ⌊x_s⌋, x1 = x0 + 1, y0 = ⌊y_s⌋, y1 = y0 + 1:

        wx0 = x1 − x_s = 1 − |x_s − x0|,   wx1 = x_s − x0 = 1 − |x_s − x1|   (same for y)
        out[n, c, y, x] = Σ_{q ∈ {(y0,x0), (y0,x1), (y1,x0), (y1,x1)}}
                              img[n, c, q_y, q_x] · wy_q · wx_q · valid_q

    valid_q is 1 when q lies in the map (0 ≤ q_x < W, 0 ≤ q_y < H), else 0: that is the
    zero padding. Integer source points give weight 1 to one pixel and 0 to the rest,
    so zero flow (grid = base_grid) returns the input exactly, and grid x = x − 1
    shifts the map right by one pixel with zeros entering at column 0. Non-finite grids:
    ±inf samples zero; NaN gives NaN at that output pixel (and in the gradients through it).

    img: (N, C, H, W) float; grid: (N, 2, Ho, Wo), same dtype, channels x_s, y_s in pixels
    of ``img`` (e.g. ``flow_to_grid(flow)``). Returns out (N, C, Ho, Wo), img's dtype, and
    a :class:`BilinearCache`.
    """
    _check_sampler_args(img, grid)
    n, c, h, w = img.shape
    _, _, ho, wo = grid.shape
    p = ho * wo
    # each source point's four corners q: flat index, w_q, ∂w_q/∂x_s, ∂w_q/∂y_s (bilinear_weights)
    index, weight, dw_dx, dw_dy = bilinear_weights(grid, h, w)
    index = index.reshape(n, 1, 4 * p)
    vals = _gather(img, index)                                 # (N, C, 4, P)
    out = (vals * weight).sum(axis=2).reshape(n, c, ho, wo)
    return out, BilinearCache(img, tuple(grid.shape), index, weight, dw_dx, dw_dy)


def bilinear_backward(dout, cache, need_dimg=True):
    """Gradients of the bilinear sampler with respect to the image and the grid.

        dimg[n, c, q]      += dout[n, c, y, x] · w_q        (for each of the four corners q)
        dgrid[n, 0, y, x]   = Σ_c dout[n, c, y, x] · Σ_q img[n, c, q] · ∂w_q/∂x_s
        dgrid[n, 1, y, x]   = Σ_c dout[n, c, y, x] · Σ_q img[n, c, q] · ∂w_q/∂y_s

    with ∂w_q/∂x_s = −wy_q for the x0 corners and +wy_q for the x1 corners, and
    ∂w_q/∂y_s = −wx_q for the y0 corners and +wx_q for the y1 corners (times valid_q).

    dimg is a scatter: many output pixels can read the same input pixel, so the
    contributions are summed with ``backend.scatter_add`` (plain ``a[idx] += v`` would
    keep only one of the repeated writes).

    Kinks: inside one cell the output is linear in x_s (and in y_s), so the derivative
    is the difference of neighbouring pixel values. When x_s crosses an integer the
    pair of neighbours changes and the derivative jumps (from img(x0) − img(x0 − 1) to
    img(x0 + 1) − img(x0)): the sampler is continuous but not differentiable at
    integer coordinates. At an exact integer this code returns the right-hand
    derivative (⌊x_s⌋ = x_s). Finite-difference checks must keep points off integers.

    dout: (N, C, Ho, Wo); need_dimg=False skips the scatter of dimg (returned as None)
    when the image is a constant, like the frames the photometric term warps.
    Returns dimg (N, C, H, W) or None, dgrid (N, 2, Ho, Wo), both of img's dtype.
    """
    img, grid_shape, index, weight, dw_dx, dw_dy = cache
    xp = get_array_module(dout, img)
    n, c, h, w = img.shape
    _, _, ho, wo = grid_shape
    p = ho * wo
    if tuple(dout.shape) != (n, c, ho, wo):
        raise ValueError(f"bilinear_backward: dout must have shape {(n, c, ho, wo)}, got {tuple(dout.shape)}")
    dout = dout.reshape(n, c, 1, p)

    dimg = None
    if need_dimg:   # scatter dout · w_q onto the flat (N·C·H·W) image, one index per (n, c, corner, p)
        offset = (xp.arange(n * c, dtype=index.dtype) * (h * w)).reshape(n, c, 1)   # start of each (n, c) map
        flat_index = offset + index                            # (N, C, 4·P)
        dimg = xp.zeros(n * c * h * w, dtype=img.dtype)
        scatter_add(dimg, flat_index, (dout * weight).reshape(n, c, 4 * p))
        dimg = dimg.reshape(n, c, h, w)

    # grid: s_q = Σ_c dout · img(q), then contract with the weights' derivatives
    vals = _gather(img, index)                                 # (N, C, 4, P)
    s = (dout * vals).sum(axis=1, keepdims=True)               # (N, 1, 4, P)
    dgrid_x = (s * dw_dx).sum(axis=2)                          # (N, 1, P)
    dgrid_y = (s * dw_dy).sum(axis=2)
    dgrid = xp.concatenate([dgrid_x, dgrid_y], axis=1).reshape(n, 2, ho, wo)
    return dimg, dgrid


# ----------------------------------------------------------------------------- the frame itself, warped
class ImageWarpCache(NamedTuple):
    scale: int       # s = W / w: memory-grid pixels -> image pixels
    upsample: tuple  # layers.upsample2's cache
    sampler: tuple   # BilinearCache
    inside: object   # (M, 2, H, W) bool: the source coordinate was not clamped


def warp_image_forward(frames, flow, layers):
    """The frames themselves warped by a memory-grid flow brought to image pixels, with
    source points clamped into the frame (border pixels repeat: no black enters):

        F   = s · upsample2(T)                              s = W / w (= 2), nearest
        out = bilinear(x, clamp(base_grid + F))             clamp: x_s to [0, W−1], y_s to [0, H−1]

    frames: (M, C, H, W); flow: (M, 2, H/2, W/2); layers: the ops' module (up-sampling).
    Returns (M, C, H, W) and an :class:`ImageWarpCache`.
    """
    xp = get_array_module(frames)
    scale = frames.shape[-1] // flow.shape[-1]
    up, up_cache = layers.upsample2_forward(flow)
    grid = flow_to_grid(scale * up)
    top = xp.asarray([frames.shape[-1] - 1, frames.shape[-2] - 1], dtype=grid.dtype).reshape(1, 2, 1, 1)
    clamped = xp.minimum(xp.maximum(grid, 0), top)
    out, samp_cache = bilinear_forward(frames, clamped)
    return out, ImageWarpCache(scale, up_cache, samp_cache, clamped == grid)


def warp_image_backward(dout, cache, layers):
    """∂/∂T = s · upsample2ᵀ(inside ⊙ ∂/∂G): the sampler's grid gradient, zero where the
    source point was clamped, summed over each 2×2 block and times s. The frames get none."""
    _, dgrid = bilinear_backward(dout, cache.sampler, need_dimg=False)
    return cache.scale * layers.upsample2_backward(dgrid * cache.inside, cache.upsample)
