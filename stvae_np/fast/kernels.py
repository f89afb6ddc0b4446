"""Fused element-wise kernels: the one place where CuPy runs code of its own.

On the GPU every array operation is a kernel launch, and a training step of this model
is bound by the launches: ``c = f * c_prev + i * g`` is three kernels and two
temporaries in NumPy style. Each kernel here does one such run in one launch. The plain
code of each run lives with its equation in the op's own file, and the op keeps one
visible branch to the kernel, handing :func:`launch` its arguments and *itself*::

    if fused and kernels.wanted(t_hi):     # CuPy: the lines below as one kernel
        return kernels.launch("huber_differences", huber_differences, t_hi, t_lo, delta)

A kernel is built on first use (per dtype), checked once against ``plain(*args,
fused=False)`` on small random inputs, and replaced by the plain code for the rest of
the process, with a ``RuntimeWarning``, if building or the check fails. ``FUSED = False``
turns every kernel off; ``COUNT_AS_ONE`` is ``benchmarks/opcount.py``'s hook. The table
of kernels, the tolerances, the counting and the import rules: docs/DESIGN.md section 9.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from ..backend import asnumpy, get_array_module

FUSED = True            # False: the plain code everywhere, also on CuPy
COUNT_AS_ONE = None     # set by benchmarks/opcount.py while it counts (a context-manager factory)

_KERNELS = {}           # (name, variant, dtype) -> a checked kernel, or None after a failure
_MAX_CLIP_TENSORS = 64  # clip_coefficient's kernel takes one argument per tensor
RTOL = {"float32": 1e-5, "float64": 1e-12}


# ----------------------------------------------------------------------------- dispatch
def wanted(a):
    """True where an op should go through :func:`launch`: on CuPy (unless ``FUSED`` is
    False), and on NumPy while the op counter counts. ``a``: one of the op's arrays."""
    return (FUSED and get_array_module(a) is not np) or COUNT_AS_ONE is not None


def launch(name, plain, *args):
    """Run the fused kernel ``name`` on ``args`` and return what ``plain`` would.

    ``plain`` is the op itself, called as ``plain(*args, fused=False)``: on first use to
    check the kernel against it, and whenever there is no kernel (NumPy, fusion off, a
    kernel that failed to build or to agree, arguments the kernel does not take).
    """
    spec = _SPECS[name]
    xp = get_array_module(*_flat(args))
    key = spec.key(*args)
    kernel = None if key is None else _kernel_for(name, xp, key[0], key[1], plain)
    if kernel is not None:
        return spec.launch(kernel, *args)
    if COUNT_AS_ONE is not None:
        with COUNT_AS_ONE(name):
            return plain(*args, fused=False)
    return plain(*args, fused=False)


def _kernel_for(name, xp, dtype, variant=None, plain=None):
    """The checked CuPy kernel for ``name`` (and dtype, variant), or None: NumPy, fusion
    off, or a kernel that failed to build, compile or agree with ``plain``."""
    if xp is np or not FUSED:
        return None
    key = (name, variant, np.dtype(dtype).name)
    if key in _KERNELS:
        return _KERNELS[key]
    spec = _SPECS[name]
    kernel = None
    try:
        kernel = spec.build() if variant is None else spec.build(variant)
        _self_check(spec, kernel, xp, np.dtype(dtype), variant, plain)
    except Exception as err:        # compile errors, launch errors, a wrong answer
        warnings.warn(f"stvae_np.fast.kernels: the fused kernel {name!r} ({np.dtype(dtype).name}"
                      f"{'' if variant is None else f', {variant}'}) is not used: "
                      f"{type(err).__name__}: {err}. Falling back to the plain code for the "
                      "rest of this process (same results, more kernel launches).",
                      RuntimeWarning, stacklevel=4)
        kernel = None
    _KERNELS[key] = kernel
    return kernel


def _self_check(spec, kernel, xp, dtype, variant, plain):
    """Run the kernel and the plain code on the same small random inputs; raise if they differ."""
    made = []
    for _ in range(2):                       # two identical sets: the functions write in place
        rng = np.random.default_rng(20261130)
        made.append(spec.sample(xp, rng, dtype) if variant is None else spec.sample(xp, rng, dtype, variant))
    want = plain(*made[0], fused=False)
    got = spec.launch(kernel, *made[1])
    pairs = list(zip(_flat(made[0]), _flat(made[1]))) + list(zip(_flat(want), _flat(got)))
    rtol = RTOL[dtype.name] if dtype.name in RTOL else 1e-5
    for k, (w, g) in enumerate(pairs):
        err = _difference(asnumpy(g), asnumpy(w))
        if not err <= rtol:
            raise ValueError(f"disagrees with the plain code (array {k}: max relative "
                             f"difference {err:.2e} > {rtol:.0e})")


def _flat(x):
    """The arrays in x (a value, or nested tuples/lists of them); numbers are skipped."""
    if isinstance(x, (tuple, list)):
        return [a for v in x for a in _flat(v)]
    return [x] if hasattr(x, "shape") else []


def _difference(got, want):
    """max |got − want| / max |want| over the finite entries; inf when shapes, dtypes,
    integer values or the places and values of non-finite entries differ."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape or got.dtype != want.dtype:
        return np.inf
    if want.dtype.kind != "f":
        return 0.0 if np.array_equal(got, want) else np.inf
    finite = np.isfinite(want)
    if not np.array_equal(finite, np.isfinite(got)):
        return np.inf
    if not np.array_equal(got[~finite], want[~finite], equal_nan=True):
        return np.inf
    if not finite.any():
        return 0.0
    want64, got64 = want[finite].astype(np.float64), got[finite].astype(np.float64)
    scale = max(float(np.abs(want64).max()), np.finfo(np.float64).tiny)
    return float(np.abs(got64 - want64).max()) / scale


def _cupy():
    import cupy                     # only here: the rest of the module runs without it
    return cupy


def _elementwise(in_params, out_params, operation, name, preamble=""):
    cupy = _cupy()
    return cupy.ElementwiseKernel(in_params, out_params, operation, name, preamble=preamble)


class _Spec(NamedTuple):
    build: object       # () -> kernel (or (variant) -> kernel)
    launch: object      # (kernel, *the op's arguments) -> what the op returns
    sample: object      # (xp, rng, dtype[, variant]) -> arguments for a check
    key: object         # (*the op's arguments) -> (dtype, variant), or None: no kernel for these


def _randn(xp, rng, shape, dtype, scale=1.0):
    return xp.asarray(rng.standard_normal(shape) * scale, dtype=dtype)


def _uniform(xp, rng, low, high, shape, dtype):
    return xp.asarray(rng.uniform(low, high, shape), dtype=dtype)


# ----------------------------------------------------------------------------- ConvLSTM gates, forward
# σ(x) = ½(1 + tanh(x/2)), as activations.sigmoid computes it (no overflow)
_LSTM_GATES_FORWARD_CUDA = """
const T half = (T)0.5;
T gi = (tanh((gate_i + bias_i) * half) + (T)1) * half;
T gf = (tanh((gate_f + bias_f) * half) + (T)1) * half;
T gg = tanh(gate_g + bias_g);
T go = (tanh((gate_o + bias_o) * half) + (T)1) * half;
gate_i = gi;  gate_f = gf;  gate_g = gg;  gate_o = go;
T cell = gf * c_prev + gi * gg;
T tc = tanh(cell);
c = cell;
tanh_c = tc;
h = go * tc;
h_next = go * tc;
"""


def _build_lstm_gates_forward():
    return _elementwise("T bias_i, T bias_f, T bias_g, T bias_o, T c_prev",
                        "T gate_i, T gate_f, T gate_g, T gate_o, T c, T tanh_c, T h, T h_next",
                        _LSTM_GATES_FORWARD_CUDA, "stvae_lstm_gates_forward")


def _lstm_gates_forward_launch(kernel, a, b, c_prev, c, tanh_c, h, h_next=None):
    xp = get_array_module(a)
    nf = a.shape[0] // 4
    bias = b.reshape(4, nf, 1, 1, 1)
    if h_next is None:                  # the kernel always writes a second copy
        h_next = xp.empty_like(c)
    kernel(bias[0], bias[1], bias[2], bias[3], c_prev,
           a[:nf], a[nf:2 * nf], a[2 * nf:3 * nf], a[3 * nf:], c, tanh_c, h, h_next)


def _sample_lstm_gates_forward(xp, rng, dtype):
    nf, n, hh, ww = 3, 2, 4, 5
    hs = xp.zeros((n, 2, nf, hh, ww), dtype=dtype)             # h is a strided view, as in _forward
    slot = xp.zeros((nf + 2, n, hh + 2, ww + 2), dtype=dtype)  # and h_next a padded slot
    return (_randn(xp, rng, (4 * nf, n, hh, ww), dtype, 2.0), _randn(xp, rng, (4 * nf,), dtype),
            _randn(xp, rng, (nf, n, hh, ww), dtype), xp.zeros((nf, n, hh, ww), dtype=dtype),
            xp.zeros((nf, n, hh, ww), dtype=dtype), hs[:, 1].transpose(1, 0, 2, 3),
            slot[2:, :, 1:-1, 1:-1])


# ----------------------------------------------------------------------------- ConvLSTM gates, backward
_LSTM_GATES_BACKWARD_CUDA = """
const T one = (T)1;
T dh = dh_loss + dh_next;
T dct = dc + dh * gate_o * (one - tanh_c * tanh_c);
da_i = dct * gate_g * (gate_i * (one - gate_i));
da_f = dct * c_prev * (gate_f * (one - gate_f));
da_g = dct * gate_i * (one - gate_g * gate_g);
da_o = dh * tanh_c * (gate_o * (one - gate_o));
dc_prev = dct * gate_f;
"""


def _build_lstm_gates_backward():
    return _elementwise("T dh_loss, T dh_next, T dc, T gate_i, T gate_f, T gate_g, T gate_o, "
                        "T c_prev, T tanh_c",
                        "T da_i, T da_f, T da_g, T da_o, T dc_prev",
                        _LSTM_GATES_BACKWARD_CUDA, "stvae_lstm_gates_backward")


def _lstm_gates_backward_launch(kernel, dh_loss, dh_next, dc, gates, c_prev, tanh_c, da, dc_prev):
    nf = gates.shape[0] // 4
    kernel(dh_loss, dh_next, dc, gates[:nf], gates[nf:2 * nf], gates[2 * nf:3 * nf], gates[3 * nf:],
           c_prev, tanh_c, da[:nf], da[nf:2 * nf], da[2 * nf:3 * nf], da[3 * nf:], dc_prev)


def _sample_lstm_gates_backward(xp, rng, dtype):
    nf, n, hh, ww = 3, 2, 4, 5
    shape = (nf, n, hh, ww)
    gates = xp.asarray(np.concatenate([rng.uniform(0.01, 0.99, (2 * nf, n, hh, ww)),
                                       rng.uniform(-0.99, 0.99, (nf, n, hh, ww)),
                                       rng.uniform(0.01, 0.99, (nf, n, hh, ww))]), dtype=dtype)
    padded = _randn(xp, rng, (nf + 1, n, hh + 2, ww + 2), dtype)   # dh_next: a cropped view
    return (_randn(xp, rng, shape, dtype), padded[1:, :, 1:-1, 1:-1], _randn(xp, rng, shape, dtype),
            gates, _randn(xp, rng, shape, dtype), _uniform(xp, rng, -0.99, 0.99, shape, dtype),
            xp.zeros((4 * nf, n, hh, ww), dtype=dtype), xp.zeros(shape, dtype=dtype))


# ----------------------------------------------------------------------------- RMSProp, clipping
# the Python floats enter the NumPy code as the array's dtype (NEP 50): cast them so here too
# (they reach the kernel as float64); the small kernels of clipping are in the table below
_RMSPROP_CUDA = """
T v_new = v * (T)alpha + (T)(1.0 - alpha) * (g * g);
v = v_new;
p = p - (T)lr * g / (sqrt(v_new) + (T)eps);
"""


def _build_rmsprop_update():
    return _elementwise("T g, float64 lr, float64 alpha, float64 eps", "T p, T v",
                        _RMSPROP_CUDA, "stvae_rmsprop")


def _sample_rmsprop_update(xp, rng, dtype):
    shape = (5, 3, 2)
    return (_randn(xp, rng, shape, dtype), _uniform(xp, rng, 0.0, 2.0, shape, dtype),
            _randn(xp, rng, shape, dtype), 1e-2, 0.99, 1e-8)


def _build_clip_coefficient(n):
    add = "".join(f"acc = acc + s{k};\n" for k in range(n))
    operation = ("T acc = (T)0;\n" + add + "T t = sqrt(acc);\ntotal = t;\n"
                 "scale = t > (T)max_norm ? (T)max_norm / (t + (T)1e-6) : (T)1;\n")
    in_params = ", ".join([f"T s{k}" for k in range(n)] + ["float64 max_norm"])
    return _elementwise(in_params, "T total, T scale", operation, f"stvae_clip_coefficient_{n}")


def _clip_coefficient_launch(kernel, sums, max_norm):
    xp = get_array_module(*sums)
    total = xp.empty((), dtype=sums[0].dtype)
    scale = xp.empty((), dtype=sums[0].dtype)
    kernel(*sums, max_norm, total, scale)
    return total, scale


def _sample_clip_coefficient(xp, rng, dtype, n):
    return ([xp.asarray(v, dtype=dtype) for v in rng.uniform(0.0, 1.0, n)], 0.5)


# ----------------------------------------------------------------------------- bilinear sampler
# _neighbours for one coordinate; a template, so that it needs no typedef of T
_BILINEAR_PREAMBLE = """
template <typename U>
__device__ void stvae_neighbours(U coord, long long size, long long& i0, long long& i1,
                                 U& w0, U& w1, U& v0, U& v1) {
  U c = coord;                                   // clip to [-2, size + 1]; NaN stays NaN
  if (c < (U)(-2)) c = (U)(-2);
  if (c > (U)(size + 1)) c = (U)(size + 1);
  U c0 = floor(c);
  w1 = c - c0;
  w0 = (U)1 - w1;
  if (isnan(c0)) c0 = (U)(-2);
  v0 = (c0 >= (U)0 && c0 <= (U)(size - 1)) ? (U)1 : (U)0;
  v1 = (c0 >= (U)(-1) && c0 <= (U)(size - 2)) ? (U)1 : (U)0;
  U k0 = c0 < (U)0 ? (U)0 : (c0 > (U)(size - 1) ? (U)(size - 1) : c0);
  U c1 = c0 + (U)1;
  U k1 = c1 < (U)0 ? (U)0 : (c1 > (U)(size - 1) ? (U)(size - 1) : c1);
  i0 = (long long)k0;
  i1 = (long long)k1;
}
"""

_BILINEAR_CUDA = """
long long x0, x1, y0, y1;
T wx0, wx1, vx0, vx1, wy0, wy1, vy0, vy1;
stvae_neighbours<T>(gx, width, x0, x1, wx0, wx1, vx0, vx1);
stvae_neighbours<T>(gy, height, y0, y1, wy0, wy1, vy0, vy1);
idx0 = y0 * width + x0;  idx1 = y0 * width + x1;
idx2 = y1 * width + x0;  idx3 = y1 * width + x1;
T v00 = vy0 * vx0, v01 = vy0 * vx1, v10 = vy1 * vx0, v11 = vy1 * vx1;
wt0 = wy0 * wx0 * v00;  wt1 = wy0 * wx1 * v01;
wt2 = wy1 * wx0 * v10;  wt3 = wy1 * wx1 * v11;
dx0 = -wy0 * v00;  dx1 = wy0 * v01;  dx2 = -wy1 * v10;  dx3 = wy1 * v11;
dy0 = -wx0 * v00;  dy1 = -wx1 * v01;  dy2 = wx0 * v10;  dy3 = wx1 * v11;
"""


def _build_bilinear_weights():
    return _elementwise("T gx, T gy, int64 width, int64 height",
                        "int64 idx0, int64 idx1, int64 idx2, int64 idx3, T wt0, T wt1, T wt2, T wt3, "
                        "T dx0, T dx1, T dx2, T dx3, T dy0, T dy1, T dy2, T dy3",
                        _BILINEAR_CUDA, "stvae_bilinear_weights", preamble=_BILINEAR_PREAMBLE)


def _bilinear_weights_launch(kernel, grid, height, width):
    xp = get_array_module(grid)
    n, _, ho, wo = grid.shape
    p = ho * wo
    index = xp.empty((n, 1, 4, p), dtype=xp.int64)
    weight, dw_dx, dw_dy = (xp.empty((n, 1, 4, p), dtype=grid.dtype) for _ in range(3))
    corners = [a[:, :, q] for a in (index, weight, dw_dx, dw_dy) for q in range(4)]   # (N, 1, P) views
    kernel(grid[:, 0].reshape(n, 1, p), grid[:, 1].reshape(n, 1, p), width, height, *corners)
    return index, weight, dw_dx, dw_dy


def _sample_bilinear_weights(xp, rng, dtype):
    height, width = 4, 5
    grid = rng.uniform(-3.5, 7.5, (2, 2, 3, 4))
    grid[0, 0, 0, :] = [np.nan, np.inf, -np.inf, 1e30]      # what _neighbours' clip is for
    grid[0, 1, 1, :] = [2.0, -1.0, 4.0, 0.0]                 # integers and the map's edges
    grid[1, 0, 2, :] = [-1.0, 5.0, 4.0, -2.0]
    return (xp.asarray(grid, dtype=dtype), height, width)


# ----------------------------------------------------------------------------- Huber smoothness
_HUBER_DIFFERENCES_CUDA = """
T d = hi - lo;
T ad = d < (T)0 ? -d : d;
T dl = (T)delta;
value = ad <= dl ? (T)0.5 * d * d : dl * (ad - (T)(0.5 * delta));
T clipped = d < -dl ? -dl : (d > dl ? dl : d);             // NaN stays NaN
grad = clipped / (T)count;                                 // n(D), as NumPy casts it
"""


def _build_huber_differences():
    return _elementwise("T hi, T lo, float64 delta, int64 count", "T value, T grad",
                        _HUBER_DIFFERENCES_CUDA, "stvae_huber_differences")


def _huber_differences_launch(kernel, t_hi, t_lo, delta):
    xp = get_array_module(t_hi)
    value = xp.empty(t_hi.shape, dtype=t_hi.dtype)
    grad = xp.empty(t_hi.shape, dtype=t_hi.dtype)
    kernel(t_hi, t_lo, delta, t_hi.size, value, grad)
    return value, grad


def _sample_huber_differences(xp, rng, dtype):
    flow = _uniform(xp, rng, -1.0, 1.0, (2, 2, 4, 5), dtype)
    return (flow[..., :, 1:], flow[..., :, :-1], 0.3)


# i is the flat (C-order) index of dflow; gx, gy are read by their own flat index
_HUBER_BACKWARD_CUDA = """
ptrdiff_t x = i % width;
ptrdiff_t row = i / width;
ptrdiff_t y = row % height;
ptrdiff_t lead = row / height;
T acc = (T)0;
if (x > 0) acc += scale * gx[(lead * height + y) * (width - 1) + x - 1];
if (x < width - 1) acc -= scale * gx[(lead * height + y) * (width - 1) + x];
if (y > 0) acc += scale * gy[(lead * (height - 1) + y - 1) * width + x];
if (y < height - 1) acc -= scale * gy[(lead * (height - 1) + y) * width + x];
dflow = acc;
"""


def _build_huber_backward():
    return _elementwise("raw T gx, raw T gy, T scale, int64 height, int64 width", "T dflow",
                        _HUBER_BACKWARD_CUDA, "stvae_huber_backward")


def _huber_backward_launch(kernel, scale, grad_x, grad_y, shape):
    xp = get_array_module(grad_x)
    dflow = xp.empty(tuple(shape), dtype=grad_x.dtype)
    kernel(grad_x, grad_y, scale, shape[-2], shape[-1], dflow)
    return dflow


def _sample_huber_backward(xp, rng, dtype):
    shape = (2, 2, 4, 5)
    return (xp.asarray(0.7, dtype=dtype), _randn(xp, rng, (2, 2, 4, 4), dtype),
            _randn(xp, rng, (2, 2, 3, 5), dtype), shape)


# ----------------------------------------------------------------------------- the table
def _same_dtype(*arrays):
    return len({a.dtype for a in arrays}) == 1


_SPECS = {
    "lstm_gates_forward": _Spec(_build_lstm_gates_forward, _lstm_gates_forward_launch,
                                _sample_lstm_gates_forward, lambda a, *rest: (a.dtype, None)),
    "lstm_gates_backward": _Spec(_build_lstm_gates_backward, _lstm_gates_backward_launch,
                                 _sample_lstm_gates_backward,
                                 lambda dh_loss, dh_next, dc, gates, *rest: (gates.dtype, None)),
    "rmsprop_update": _Spec(_build_rmsprop_update,
                            lambda kernel, p, v, g, lr, alpha, eps: kernel(g, lr, alpha, eps, p, v),
                            _sample_rmsprop_update,
                            lambda p, v, g, *rest: (p.dtype, None) if _same_dtype(p, v, g) else None),
    "sum_of_squares": _Spec(lambda: _cupy().ReductionKernel("T x", "T y", "x * x", "a + b", "y = a", "0",
                                                            "stvae_sum_of_squares"),
                            lambda kernel, g: kernel(g),
                            lambda xp, rng, dtype: (_randn(xp, rng, (7, 5, 3), dtype),),
                            lambda g: (g.dtype, None)),
    "clip_coefficient": _Spec(_build_clip_coefficient, _clip_coefficient_launch, _sample_clip_coefficient,
                              lambda sums, max_norm: (sums[0].dtype, len(sums))
                              if len(sums) <= _MAX_CLIP_TENSORS and _same_dtype(*sums) else None),
    "scale_in_place": _Spec(lambda: _elementwise("S scale", "T g", "g = g * (T)scale;", "stvae_scale"),
                            lambda kernel, g, scale: kernel(scale, g),
                            lambda xp, rng, dtype: (_randn(xp, rng, (4, 6), dtype),
                                                    xp.asarray(0.37, dtype=dtype)),
                            lambda g, scale: (g.dtype, None)),
    "bilinear_weights": _Spec(_build_bilinear_weights, _bilinear_weights_launch, _sample_bilinear_weights,
                              lambda grid, height, width: (grid.dtype, None)),
    "huber_differences": _Spec(_build_huber_differences, _huber_differences_launch,
                               _sample_huber_differences, lambda t_hi, t_lo, delta: (t_hi.dtype, None)),
    "huber_backward": _Spec(_build_huber_backward, _huber_backward_launch, _sample_huber_backward,
                            lambda scale, grad_x, grad_y, shape: (grad_x.dtype, None)),
}

FUSED_NAMES = tuple(_SPECS)

__all__ = ["FUSED", "FUSED_NAMES", "COUNT_AS_ONE", "wanted", "launch"]
