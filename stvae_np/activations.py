"""Element-wise non-linearities and their derivatives, written against ``xp``.

The derivatives are expressed through the *outputs* (``s = sigmoid(a)``,
``t = tanh(a)``) because that is what the backward passes keep in their caches.
"""
from .backend import get_array_module


def sigmoid(a):
    """σ(a) = 1 / (1 + e^{-a}), computed as ½(1 + tanh(a/2)): equal, and never overflows."""
    xp = get_array_module(a)
    return 0.5 * (1.0 + xp.tanh(0.5 * a))


def sigmoid_grad(s):
    """dσ/da = σ(a)(1 − σ(a)), from the output s = σ(a)."""
    return s * (1.0 - s)


def tanh(a):
    """tanh(a)."""
    return get_array_module(a).tanh(a)


def tanh_grad(t):
    """d tanh/da = 1 − tanh(a)², from the output t = tanh(a)."""
    return 1.0 - t * t
