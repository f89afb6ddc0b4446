"""Fused element-wise kernels: the one place where CuPy runs code of its own.

On the GPU every array operation is at least one kernel launch, and a training step of
this model is bound by the launches, not by the arithmetic: ``c = f * c_prev + i * g``
is three kernels and two temporaries in NumPy style. Each function below does one
such run of element-wise work, and has two implementations:

* the **plain code**: the NumPy-style lines, written against ``xp``, exactly as they
  stood in the modules that call them (same operations, same order, so the NumPy
  results are bit for bit what they were). NumPy always runs this; so does CuPy when
  fusion is off or the kernel failed. While :mod:`stvae_np.opcount` counts, the plain
  code runs inside ``counts_as_one(name)``: it counts as the one kernel it stands for;
* a **CuPy kernel** (``cupy.ElementwiseKernel``, one ``cupy.ReductionKernel``) that does
  the same arithmetic in one launch, each element in registers. The CUDA source is
  beside the plain code, so the two can be read side by side.

| function | plain code it replaces | kernel on CuPy |
|---|---|---|
| :func:`lstm_gates_forward` | bias, σ/tanh of the four gates, c, tanh(c), h (and its copy into the next step's input) | ``stvae_lstm_gates_forward`` |
| :func:`lstm_gates_backward` | dh = dh_loss + dh_next, δc, the four δa blocks, dc_prev | ``stvae_lstm_gates_backward`` |
| :func:`rmsprop_update` | v ← αv + (1−α)g², θ ← θ − lr·g/(√v + ε) | ``stvae_rmsprop`` |
| :func:`sum_of_squares` | Σ g² of one gradient | ``stvae_sum_of_squares`` (reduction) |
| :func:`clip_coefficient` | the global norm √(Σ sums) and the clip scale | ``stvae_clip_coefficient_<n>`` |
| :func:`scale_in_place` | g ← g · scale | ``stvae_scale`` |
| :func:`bilinear_weights` | the sampler's neighbours, indices, weights and their derivatives | ``stvae_bilinear_weights`` |
| :func:`huber_differences` | D = T_b − T_a, H_δ(D) and H_δ'(D)/n(D) | ``stvae_huber_differences`` |
| :func:`huber_backward` | the scatter of the differences' gradients back onto the flow | ``stvae_huber_backward`` |

Safety. A kernel is built the first time it is needed on CuPy (for each dtype), run once
on small random inputs and compared with the plain code on the same inputs (relative
error ≤ 1e-5 in float32, 1e-12 in float64, integers and non-finite values exact). If
building, compiling or that check fails, a ``RuntimeWarning`` names the kernel and the
plain code is used for it for the rest of the process. ``kernels.FUSED = False`` turns
every kernel off (the plain code everywhere, as on NumPy).

The check is the only device sync here: once per kernel and dtype per process.
NumPy is imported only for the check's random inputs (made on the host, as the
package's randomness always is); CuPy only inside the builders (``_cupy``).
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from .activations import sigmoid, sigmoid_grad, tanh, tanh_grad
from .backend import asnumpy, get_array_module
from .opcount import counts_as_one

FUSED = True            # False: the plain code everywhere, also on CuPy

_KERNELS = {}           # (name, variant, dtype) -> a checked kernel, or None after a failure
_MAX_CLIP_TENSORS = 64  # clip_coefficient's kernel takes one argument per tensor
RTOL = {"float32": 1e-5, "float64": 1e-12}


# ----------------------------------------------------------------------------- dispatch
def _kernel_for(name, xp, dtype, variant=None):
    """The checked CuPy kernel for ``name`` (and dtype, variant), or None: NumPy, fusion
    off, or a kernel that failed to build, compile or agree with the plain code."""
    if xp is np or not FUSED:
        return None
    key = (name, variant, np.dtype(dtype).name)
    if key in _KERNELS:
        return _KERNELS[key]
    spec = _SPECS[name]
    kernel = None
    try:
        kernel = spec.build() if variant is None else spec.build(variant)
        _self_check(name, spec, kernel, xp, np.dtype(dtype), variant)
    except Exception as err:        # compile errors, launch errors, a wrong answer
        warnings.warn(f"stvae_np.kernels: the fused kernel {name!r} ({np.dtype(dtype).name}"
                      f"{'' if variant is None else f', {variant}'}) is not used: "
                      f"{type(err).__name__}: {err}. Falling back to the plain code for the "
                      "rest of this process (same results, more kernel launches).",
                      RuntimeWarning, stacklevel=3)
        kernel = None
    _KERNELS[key] = kernel
    return kernel


def _self_check(name, spec, kernel, xp, dtype, variant):
    """Run the kernel and the plain code on the same small random inputs; raise if they differ."""
    made = []
    for _ in range(2):                       # two identical sets: the functions write in place
        rng = np.random.default_rng(20261130)
        made.append(spec.sample(xp, rng, dtype) if variant is None else spec.sample(xp, rng, dtype, variant))
    want = spec.plain(*made[0])
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
    plain: object       # the plain code, the public function's signature
    launch: object      # (kernel, *the public function's arguments)
    sample: object      # (xp, rng, dtype[, variant]) -> arguments for a check


def _randn(xp, rng, shape, dtype, scale=1.0):
    return xp.asarray(rng.standard_normal(shape) * scale, dtype=dtype)


def _uniform(xp, rng, low, high, shape, dtype):
    return xp.asarray(rng.uniform(low, high, shape), dtype=dtype)


# ----------------------------------------------------------------------------- ConvLSTM gates, forward
def lstm_gates_forward(a, b, c_prev, c, tanh_c, h, h_next=None):
    """The element-wise part of a ConvLSTM step, in place (channel-major maps).

        [a_i; a_f; a_g; a_o] ← a + b                     (the gate convolution's output + bias)
        i = σ(a_i),  f = σ(a_f),  g = tanh(a_g),  o = σ(a_o)   (written back into a)
        c = f ⊙ c_prev + i ⊙ g,   tanh_c = tanh(c),   h = o ⊙ tanh_c
        h_next ← h                                       (when given: the next step's input slot)

    Args:
        a: (4F, N, h, w) pre-activations without the bias; becomes the gates, stacked
            i, f, g, o (the cache keeps them).
        b: (4F,) bias.
        c_prev: (F, N, h, w) c_{t-1}.
        c, tanh_c, h: (F, N, h, w) outputs (views are fine: h may be a slice of hs).
        h_next: optional (F, N, h, w) second destination of h.
    All of one dtype. On CuPy: one ``stvae_lstm_gates_forward`` kernel.
    """
    xp = get_array_module(a)
    kernel = _kernel_for("lstm_gates_forward", xp, a.dtype)
    if kernel is not None:
        return _lstm_gates_forward_launch(kernel, a, b, c_prev, c, tanh_c, h, h_next)
    with counts_as_one("lstm_gates_forward"):
        return _lstm_gates_forward_plain(a, b, c_prev, c, tanh_c, h, h_next)


def _lstm_gates_forward_plain(a, b, c_prev, c, tanh_c, h, h_next=None):
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
def lstm_gates_backward(dh_loss, dh_next, dc, gates, c_prev, tanh_c, da, dc_prev):
    """The element-wise part of a ConvLSTM step's backward (channel-major maps).

        dh  = dh_loss + dh_next            (h_t feeds the loss and step t+1)
        δc  = dc + dh ⊙ o ⊙ (1 − tanh²(c))
        δa  = [δc ⊙ g ⊙ σ'(i);  δc ⊙ c_prev ⊙ σ'(f);  δc ⊙ i ⊙ tanh'(g);  dh ⊙ tanh(c) ⊙ σ'(o)]
        dc_prev = δc ⊙ f

    with σ' = s(1 − s) and tanh' = 1 − t² from the outputs (``activations``).

    Args:
        dh_loss, dh_next, dc: (F, N, h, w) the gradient of h_t from the loss and from
            step t+1, and of c_t.
        gates: (4F, N, h, w) the forward's gates i, f, g, o.
        c_prev, tanh_c: (F, N, h, w) from the forward's cache.
        da: (4F, N, h, w) output δa; dc_prev: (F, N, h, w) output.
    On CuPy: one ``stvae_lstm_gates_backward`` kernel.
    """
    xp = get_array_module(gates)
    kernel = _kernel_for("lstm_gates_backward", xp, gates.dtype)
    if kernel is not None:
        return _lstm_gates_backward_launch(kernel, dh_loss, dh_next, dc, gates, c_prev, tanh_c,
                                           da, dc_prev)
    with counts_as_one("lstm_gates_backward"):
        return _lstm_gates_backward_plain(dh_loss, dh_next, dc, gates, c_prev, tanh_c, da, dc_prev)


def _lstm_gates_backward_plain(dh_loss, dh_next, dc, gates, c_prev, tanh_c, da, dc_prev):
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
def rmsprop_update(p, v, g, lr, alpha, eps):
    """One RMSProp update of one parameter, in place (Torch7's rmsprop, ε outside the root):

        v ← α·v + (1 − α)·g²
        p ← p − lr · g / (√v + ε)

    Args:
        p, v, g: arrays of one shape and dtype; p and v are updated.
        lr, alpha, eps: Python floats.
    On CuPy: one ``stvae_rmsprop`` kernel.
    """
    xp = get_array_module(p)
    kernel = _kernel_for("rmsprop_update", xp, p.dtype)
    if kernel is not None and v.dtype == p.dtype == g.dtype:
        return _rmsprop_update_launch(kernel, p, v, g, lr, alpha, eps)
    with counts_as_one("rmsprop_update"):
        return _rmsprop_update_plain(p, v, g, lr, alpha, eps)


def _rmsprop_update_plain(p, v, g, lr, alpha, eps):
    xp = get_array_module(p)
    v *= alpha                          # v ← αv + (1−α)g², in place
    v += (1.0 - alpha) * (g * g)
    p -= lr * g / (xp.sqrt(v) + eps)


# the Python floats enter the NumPy code as the array's dtype (NEP 50): cast them so here too
_RMSPROP_CUDA = """
T v_new = v * (T)alpha + (T)(1.0 - alpha) * (g * g);
v = v_new;
p = p - (T)lr * g / (sqrt(v_new) + (T)eps);
"""


def _build_rmsprop_update():
    return _elementwise("T g, float64 lr, float64 alpha, float64 eps", "T p, T v",
                        _RMSPROP_CUDA, "stvae_rmsprop")


def _rmsprop_update_launch(kernel, p, v, g, lr, alpha, eps):
    kernel(g, lr, alpha, eps, p, v)             # Python numbers, cast to float64 by CuPy


def _sample_rmsprop_update(xp, rng, dtype):
    shape = (5, 3, 2)
    return (_randn(xp, rng, shape, dtype), _uniform(xp, rng, 0.0, 2.0, shape, dtype),
            _randn(xp, rng, shape, dtype), 1e-2, 0.99, 1e-8)


def sum_of_squares(g):
    """Σ g², a 0-d array of g's dtype. On CuPy: one ``stvae_sum_of_squares`` reduction
    (no g² temporary)."""
    xp = get_array_module(g)
    kernel = _kernel_for("sum_of_squares", xp, g.dtype)
    if kernel is not None:
        return _sum_of_squares_launch(kernel, g)
    with counts_as_one("sum_of_squares"):
        return _sum_of_squares_plain(g)


def _sum_of_squares_plain(g):
    return get_array_module(g).sum(g * g)


def _build_sum_of_squares():
    cupy = _cupy()
    return cupy.ReductionKernel("T x", "T y", "x * x", "a + b", "y = a", "0", "stvae_sum_of_squares")


def _sum_of_squares_launch(kernel, g):
    return kernel(g)


def _sample_sum_of_squares(xp, rng, dtype):
    return (_randn(xp, rng, (7, 5, 3), dtype),)


def clip_coefficient(sums, max_norm):
    """The global norm of a set of gradients and the factor that clips it, from their
    sums of squares (:func:`sum_of_squares`):

        total = √(Σ_k sums[k])                      (summed in the order given)
        scale = max_norm / (total + 1e-6)   if total > max_norm, else 1

    A NaN total gives scale 1 (the comparison is false), as ``xp.where`` does.

    Args:
        sums: list of 0-d arrays of one dtype.
        max_norm: Python float.
    Returns:
        total, scale: 0-d arrays of the sums' dtype.
    On CuPy: one ``stvae_clip_coefficient_<n>`` kernel (one per number of tensors, at
    most 64; more use the plain code).
    """
    xp = get_array_module(*sums)
    kernel = None
    if len(sums) <= _MAX_CLIP_TENSORS and len({s.dtype for s in sums}) == 1:
        kernel = _kernel_for("clip_coefficient", xp, sums[0].dtype, variant=len(sums))
    if kernel is not None:
        return _clip_coefficient_launch(kernel, sums, max_norm)
    with counts_as_one("clip_coefficient"):
        return _clip_coefficient_plain(sums, max_norm)


def _clip_coefficient_plain(sums, max_norm):
    xp = get_array_module(*sums)
    # xp.asarray: a NumPy reduction gives a NumPy scalar, CuPy a 0-d array; return 0-d both ways
    total = xp.asarray(xp.sqrt(sum(sums)))
    scale = xp.where(total > max_norm, max_norm / (total + 1e-6), 1.0)
    return total, scale


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


def scale_in_place(g, scale):
    """g ← g · scale, in place; scale a 0-d array (cast to g's dtype first, as
    ``g *= scale.astype(g.dtype)``). On CuPy: one ``stvae_scale`` kernel."""
    xp = get_array_module(g)
    kernel = _kernel_for("scale_in_place", xp, g.dtype)
    if kernel is not None:
        return _scale_in_place_launch(kernel, g, scale)
    with counts_as_one("scale_in_place"):
        return _scale_in_place_plain(g, scale)


def _scale_in_place_plain(g, scale):
    g *= scale.astype(g.dtype)


def _build_scale_in_place():
    return _elementwise("S scale", "T g", "g = g * (T)scale;", "stvae_scale")


def _scale_in_place_launch(kernel, g, scale):
    kernel(scale, g)


def _sample_scale_in_place(xp, rng, dtype):
    return (_randn(xp, rng, (4, 6), dtype), xp.asarray(0.37, dtype=dtype))


# ----------------------------------------------------------------------------- bilinear sampler
def bilinear_weights(grid, height, width):
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

    Args:
        grid: (N, 2, Ho, Wo) source points (x, y) in pixels.
        height, width: the image's H, W.
    Returns:
        index (N, 1, 4, P) int64 and weight, dw_dx, dw_dy (N, 1, 4, P) of grid's dtype,
        P = Ho·Wo.
    On CuPy: one ``stvae_bilinear_weights`` kernel.
    """
    xp = get_array_module(grid)
    kernel = _kernel_for("bilinear_weights", xp, grid.dtype)
    if kernel is not None:
        return _bilinear_weights_launch(kernel, grid, height, width)
    with counts_as_one("bilinear_weights"):
        return _bilinear_weights_plain(grid, height, width)


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


def _bilinear_weights_plain(grid, height, width):
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
def huber_differences(t_hi, t_lo, delta):
    """Differences of neighbouring flow values, their Huber penalty and its gradient:

        D = t_hi − t_lo
        H = H_δ(D) = D²/2 if |D| ≤ δ else δ(|D| − δ/2)
        grad = H_δ'(D) / n(D) = clip(D, −δ, δ) / D.size

    Args:
        t_hi, t_lo: arrays of one shape (two shifted views of the flow).
        delta: δ > 0, a Python float.
    Returns:
        H and grad, t_hi's shape and dtype.
    On CuPy: one ``stvae_huber_differences`` kernel.
    """
    xp = get_array_module(t_hi)
    kernel = _kernel_for("huber_differences", xp, t_hi.dtype)
    if kernel is not None:
        return _huber_differences_launch(kernel, t_hi, t_lo, delta)
    with counts_as_one("huber_differences"):
        return _huber_differences_plain(t_hi, t_lo, delta)


def _huber(a, delta):
    """H_δ(a) = a²/2 for |a| ≤ δ, δ(|a| − δ/2) otherwise (quadratic near 0, linear beyond)."""
    xp = get_array_module(a)
    abs_a = xp.abs(a)
    return xp.where(abs_a <= delta, 0.5 * a * a, delta * (abs_a - 0.5 * delta))


def _huber_differences_plain(t_hi, t_lo, delta):
    xp = get_array_module(t_hi)
    d = t_hi - t_lo
    # H_δ'(a) = a inside, δ·sign(a) outside: that is exactly clip(a, −δ, δ)
    return _huber(d, delta), xp.clip(d, -delta, delta) / d.size


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


def huber_backward(scale, grad_x, grad_y, shape):
    """The gradient of H(∇T) on the flow: each difference D = T[b] − T[a] sends +g to
    T[b] and −g to T[a] (g = scale · grad of that difference):

        dflow = 0
        dflow[..., :, 1:] += scale·grad_x,   dflow[..., :, :-1] −= scale·grad_x
        dflow[..., 1:, :] += scale·grad_y,   dflow[..., :-1, :] −= scale·grad_y

    Args:
        scale: 0-d array (the upstream gradient).
        grad_x: (..., h, w−1), grad_y: (..., h−1, w) from :func:`huber_differences`.
        shape: the flow's shape (..., h, w).
    Returns:
        dflow of that shape, grad_x's dtype.
    On CuPy: one ``stvae_huber_backward`` kernel (each flow element gathers its at most
    four differences).
    """
    xp = get_array_module(grad_x)
    kernel = _kernel_for("huber_backward", xp, grad_x.dtype)
    if kernel is not None:
        return _huber_backward_launch(kernel, scale, grad_x, grad_y, shape)
    with counts_as_one("huber_backward"):
        return _huber_backward_plain(scale, grad_x, grad_y, shape)


def _huber_backward_plain(scale, grad_x, grad_y, shape):
    xp = get_array_module(grad_x)
    g_x = scale * grad_x
    g_y = scale * grad_y
    dflow = xp.zeros(shape, dtype=grad_x.dtype)
    dflow[..., :, 1:] += g_x
    dflow[..., :, :-1] -= g_x
    dflow[..., 1:, :] += g_y
    dflow[..., :-1, :] -= g_y
    return dflow


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
_SPECS = {
    "lstm_gates_forward": _Spec(_build_lstm_gates_forward, _lstm_gates_forward_plain,
                                _lstm_gates_forward_launch, _sample_lstm_gates_forward),
    "lstm_gates_backward": _Spec(_build_lstm_gates_backward, _lstm_gates_backward_plain,
                                 _lstm_gates_backward_launch, _sample_lstm_gates_backward),
    "rmsprop_update": _Spec(_build_rmsprop_update, _rmsprop_update_plain,
                            _rmsprop_update_launch, _sample_rmsprop_update),
    "sum_of_squares": _Spec(_build_sum_of_squares, _sum_of_squares_plain,
                            _sum_of_squares_launch, _sample_sum_of_squares),
    "clip_coefficient": _Spec(_build_clip_coefficient, _clip_coefficient_plain,
                              _clip_coefficient_launch, _sample_clip_coefficient),
    "scale_in_place": _Spec(_build_scale_in_place, _scale_in_place_plain,
                            _scale_in_place_launch, _sample_scale_in_place),
    "bilinear_weights": _Spec(_build_bilinear_weights, _bilinear_weights_plain,
                              _bilinear_weights_launch, _sample_bilinear_weights),
    "huber_differences": _Spec(_build_huber_differences, _huber_differences_plain,
                               _huber_differences_launch, _sample_huber_differences),
    "huber_backward": _Spec(_build_huber_backward, _huber_backward_plain,
                            _huber_backward_launch, _sample_huber_backward),
}

FUSED_NAMES = tuple(_SPECS)

__all__ = ["FUSED", "FUSED_NAMES", "lstm_gates_forward", "lstm_gates_backward", "rmsprop_update",
           "sum_of_squares", "clip_coefficient", "scale_in_place", "bilinear_weights",
           "huber_differences", "huber_backward"]
