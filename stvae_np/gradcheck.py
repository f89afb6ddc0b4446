"""Centred finite differences: the referee for every hand-written backward pass.

Used by the tests and the tutorials alike, on float64 NumPy arrays.
"""
import numpy as np


def numerical_gradient(f, x, df=None, h=1e-5):
    """Numerical gradient of ``sum(f(x) * df)`` with respect to ``x``.

        ∂/∂x_i ≈ [ s(x + h e_i) − s(x − h e_i) ] / (2h),   s(x) = Σ f(x) ⊙ df

    ``df`` plays the part of the upstream gradient ``dout`` of a backward pass, so the
    result is directly comparable with ``*_backward(df, cache)``; ``None`` means ones
    (or the scalar 1 when ``f`` returns a scalar).

    Args:
        f: function of no arguments' worth of state: called as ``f(x)``, it must read the
           array ``x`` (which is perturbed in place) and return an array or a scalar.
        x: float array, perturbed one element at a time and restored exactly.
        df: upstream gradient, same shape as ``f(x)``.
        h: step.
    Returns:
        array of ``x``'s shape and dtype.
    """
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        plus = f(x)
        x[i] = old - h
        minus = f(x)
        x[i] = old  # restore exactly: callers reuse x
        diff = np.asarray(plus, dtype=np.float64) - np.asarray(minus, dtype=np.float64)
        grad[i] = np.sum(diff if df is None else diff * df) / (2 * h)
        it.iternext()
    return grad


def rel_error(a, b):
    """Largest element-wise relative error, max_i |a_i − b_i| / max(1e-8, |a_i| + |b_i|)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {b.shape}")
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))
