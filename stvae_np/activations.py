"""Element-wise non-linearities and their derivatives, written against ``xp``.

The derivatives are expressed through the *outputs* (``s = sigmoid(a)``,
``t = tanh(a)``) because that is what the backward passes keep in their caches.
"""
from .backend import get_array_module


def sigmoid(a, out=None):
    """σ(a) = 1 / (1 + e^{-a}), computed as ½(1 + tanh(a/2)): equal, and never overflows.

    ``out`` (may be ``a`` itself) receives the result without temporaries."""
    xp = get_array_module(a)
    out = xp.multiply(a, 0.5, out=out)
    xp.tanh(out, out=out)
    out += 1.0
    out *= 0.5
    return out


def sigmoid_grad(s):
    """dσ/da = σ(a)(1 − σ(a)), from the output s = σ(a)."""
    return s * (1.0 - s)


def tanh(a, out=None):
    """tanh(a), into ``out`` when given."""
    return get_array_module(a).tanh(a, out=out)


def tanh_grad(t):
    """d tanh/da = 1 − tanh(a)², from the output t = tanh(a)."""
    return 1.0 - t * t
