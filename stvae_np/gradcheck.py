"""Centred finite differences: the referee for every hand-written backward pass.

Used by the tests and the tutorials alike, on float64 NumPy arrays.
"""
import numpy as np


def numerical_gradient(f, x, df=None, h=1e-5):
    """Numerical gradient of ``sum(f(x) * df)`` with respect to ``x``.

        ∂/∂x_i ≈ [ s(x + h e_i) − s(x − h e_i) ] / (2h),   s(x) = Σ f(x) ⊙ df

    f: called as ``f(x)``, returns an array or a scalar; x: float array, perturbed in place
    one element at a time and restored exactly; df: the upstream gradient ``dout`` of a
    backward pass, ``f(x)``'s shape, so the result compares with ``*_backward(df, cache)``
    (None: ones). Returns an array of ``x``'s shape and dtype.
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


def directional_check(loss, params, grads, names=None, directions=3, h=1e-6, seed=0):
    """Whole-model gradient check along directions partly parallel to the claimed gradient.

    For each tensor θ (one at a time, the others fixed) and each random direction

        d = ½ g/‖g‖ + ½ r/‖r‖,   r ~ N(0, I),   g = grads[name]

    compare the centred difference [L(θ + h·d) − L(θ − h·d)] / 2h with ⟨g, d⟩. Several
    directions because a model has kinks (a max-pool winner that switches): a real bug
    fails every direction, a kink fails one.

    loss: function of no arguments returning the scalar loss; it must read ``params``,
    whose arrays are perturbed in place and restored exactly. params, grads: dicts name ->
    float64 array; names: tensors to check (default: all of ``grads``). Returns a dict
    name -> the worst rel_error over its directions.
    """
    rng = np.random.default_rng(seed)
    worst = {}
    for name in names or list(grads):
        theta, g = params[name], grads[name]
        theta0 = theta.copy()
        errors = []
        for _ in range(directions):
            r = rng.standard_normal(g.shape)
            if np.sum(r * g) < 0:    # so that ⟨g, d⟩ ≥ ‖g‖/2, even for a one-entry tensor
                r = -r
            d = 0.5 * g / np.linalg.norm(g) + 0.5 * r / np.linalg.norm(r)
            theta[...] = theta0 + h * d
            plus = float(loss())
            theta[...] = theta0 - h * d
            minus = float(loss())
            theta[...] = theta0
            errors.append(rel_error((plus - minus) / (2 * h), np.sum(g * d)))
        worst[name] = max(errors)
    return worst
