"""RMSProp, gradient clipping, the paper's step-decay learning-rate schedule, a running average of the weights.

Parameters and gradients are plain dicts ``name -> array`` (NumPy or CuPy), named as in
``STVAE.params``. Everything updates arrays in place on their device: no ``float()`` and
no host copy inside a training step (on CuPy each is a device sync); only
:meth:`RMSProp.state_dict`, which is for checkpoints, copies to the host.

RMSProp (Tieleman & Hinton 2012; the update of Torch7's ``optim.rmsprop`` and of
``torch.optim.RMSprop``, with ε *outside* the square root):

    v ← α·v + (1 − α)·g²
    θ ← θ − lr · g / (√v + ε)

Schedule (the paper): lr × 0.9 every 5 epochs, see :func:`step_decay`.
"""
from __future__ import annotations

from dataclasses import dataclass

from .backend import asnumpy, get_array_module
from .fast import kernels


# ----------------------------------------------------------------------------- RMSProp
def rmsprop_update(p, v, g, lr, alpha, eps, fused=True):
    """One RMSProp update of one parameter, in place (Torch7's rmsprop, ε outside the root):

        v ← α·v + (1 − α)·g²
        p ← p − lr · g / (√v + ε)

    p, v, g: arrays of one shape and dtype; lr, alpha, eps: Python floats.
    On CuPy: one ``stvae_rmsprop`` kernel.
    """
    if fused and kernels.wanted(p):   # CuPy: the lines below as one fused kernel (fast/kernels.py)
        return kernels.launch("rmsprop_update", rmsprop_update, p, v, g, lr, alpha, eps)
    xp = get_array_module(p)
    v *= alpha                          # v ← αv + (1−α)g², in place
    v += (1.0 - alpha) * (g * g)
    p -= lr * g / (xp.sqrt(v) + eps)


class RMSProp:
    """RMSProp with one running mean of squared gradients ``v`` per parameter.

    params: dict ``name -> array``, kept by reference and updated in place by :meth:`step`
    (the model sees the update without re-assigning anything); lr: a plain attribute, so a
    schedule may set ``opt.lr``; alpha: decay of the running mean of g² (Torch's, 0.99);
    eps: added to √v (not to v) to keep the step finite where v ≈ 0. Attributes: ``v``
    (``zeros_like`` each parameter at first) and ``t``, the number of steps taken.
    """

    def __init__(self, params, lr, alpha=0.99, eps=1e-8):
        if not params:
            raise ValueError("RMSProp: params is empty")
        if lr < 0:
            raise ValueError(f"RMSProp: lr must be >= 0, got {lr}")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"RMSProp: alpha must be in [0, 1), got {alpha}")
        if eps < 0:
            raise ValueError(f"RMSProp: eps must be >= 0, got {eps}")
        self.params = params
        self.lr = float(lr)
        self.alpha = float(alpha)
        self.eps = float(eps)
        self.t = 0
        self.v = {}
        for name, p in params.items():
            xp = get_array_module(p)
            self.v[name] = xp.zeros_like(p)

    def step(self, grads):
        """One update of every parameter, in place, from ``grads`` (``name -> array``). ValueError
        for a missing, unknown or misshapen gradient; NaN is the caller's check (a device sync)."""
        missing = [name for name in self.params if name not in grads]
        if missing:
            raise ValueError(f"RMSProp.step: no gradient for parameter(s) {missing}")
        unknown = [name for name in grads if name not in self.params]
        if unknown:
            raise ValueError(f"RMSProp.step: gradient(s) for unknown parameter(s) {unknown}")
        for name, p in self.params.items():
            g = grads[name]
            if tuple(g.shape) != tuple(p.shape):
                raise ValueError(f"RMSProp.step: gradient of {name!r} has shape "
                                 f"{tuple(g.shape)}, parameter has {tuple(p.shape)}")
            rmsprop_update(p, self.v[name], g, self.lr, self.alpha, self.eps)
        self.t += 1

    def state_dict(self):
        """The state as a flat dict of host values for ``np.savez``: ``"v/<name>"`` (a NumPy copy
        of each running mean), ``"lr"``, ``"alpha"``, ``"eps"``, ``"t"``; not the parameters."""
        state = {f"v/{name}": asnumpy(v).copy() for name, v in self.v.items()}
        state.update(lr=self.lr, alpha=self.alpha, eps=self.eps, t=self.t)
        return state

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned, each ``v`` copied onto its parameter's device
        and dtype (GPU checkpoints load on the CPU and back). ValueError: a key missing or unknown,
        or a shape that differs."""
        keys = set(state.keys())
        for key in ("lr", "alpha", "eps", "t"):
            if key not in keys:
                raise ValueError(f"RMSProp.load_state_dict: missing key {key!r}")
        names = {k[len("v/"):] for k in keys if k.startswith("v/")}
        missing = sorted(set(self.params) - names)
        unknown = sorted(names - set(self.params))
        if missing:
            raise ValueError(f"RMSProp.load_state_dict: no state for parameter(s) {missing}")
        if unknown:
            raise ValueError(f"RMSProp.load_state_dict: state for unknown parameter(s) {unknown}")
        new_v = {}
        for name, p in self.params.items():
            v_host = asnumpy(state[f"v/{name}"])
            if tuple(v_host.shape) != tuple(p.shape):
                raise ValueError(f"RMSProp.load_state_dict: state of {name!r} has shape "
                                 f"{tuple(v_host.shape)}, parameter has {tuple(p.shape)}")
            xp = get_array_module(p)
            # xp.array copies: the optimizer must not share memory with the caller's dict
            new_v[name] = xp.array(v_host, dtype=p.dtype)
        self.v = new_v
        self.lr, self.alpha, self.eps = (float(state[key]) for key in ("lr", "alpha", "eps"))
        self.t = int(state["t"])


class WeightAverage:
    """A running average of the parameters (Polyak averaging), updated after each step:

        θ̄ ← d·θ̄ + (1 − d)·θ            θ̄ starts as θ

    params: the model's dict name → array (any shapes, updated in place); ``average`` likewise.
    :meth:`swap` exchanges θ̄ and θ in place (evaluate the average, swap again to train on)."""

    def __init__(self, params, decay):
        self.params, self.decay = params, float(decay)
        self.average = {k: p.copy() for k, p in params.items()}

    def update(self):
        for k, p in self.params.items():
            self.average[k] *= self.decay
            self.average[k] += (1.0 - self.decay) * p

    def swap(self):
        for k, p in self.params.items():
            kept = p.copy()
            p[...] = self.average[k]
            self.average[k][...] = kept


# ----------------------------------------------------------------------------- clipping
def sum_of_squares(g, fused=True):
    """Σ g², a 0-d array of g's dtype. On CuPy: one ``stvae_sum_of_squares`` reduction
    (no g² temporary)."""
    if fused and kernels.wanted(g):   # CuPy: the lines below as one fused kernel (fast/kernels.py)
        return kernels.launch("sum_of_squares", sum_of_squares, g)
    return get_array_module(g).sum(g * g)


def clip_coefficient(sums, max_norm, fused=True):
    """The global norm of a set of gradients and the factor that clips it, from their
    sums of squares (:func:`sum_of_squares`):

        total = √(Σ_k sums[k])                      (summed in the order given)
        scale = max_norm / (total + 1e-6)   if total > max_norm, else 1

    A NaN total gives scale 1 (the comparison is false), as ``xp.where`` does. sums: list
    of 0-d arrays of one dtype; max_norm: Python float. Returns total, scale: 0-d arrays
    of the sums' dtype. On CuPy: one ``stvae_clip_coefficient_<n>`` kernel (one per number
    of tensors, at most 64; more use the plain code).
    """
    if fused and kernels.wanted(sums[0]):   # CuPy: the lines below as one fused kernel (fast/kernels.py)
        return kernels.launch("clip_coefficient", clip_coefficient, sums, max_norm)
    xp = get_array_module(*sums)
    # xp.asarray: a NumPy reduction gives a NumPy scalar, CuPy a 0-d array; return 0-d both ways
    total = xp.asarray(xp.sqrt(sum(sums)))
    scale = xp.where(total > max_norm, max_norm / (total + 1e-6), 1.0)
    return total, scale


def scale_in_place(g, scale, fused=True):
    """g ← g · scale, in place; scale a 0-d array (cast to g's dtype first, as
    ``g *= scale.astype(g.dtype)``). On CuPy: one ``stvae_scale`` kernel."""
    if fused and kernels.wanted(g):   # CuPy: the lines below as one fused kernel (fast/kernels.py)
        return kernels.launch("scale_in_place", scale_in_place, g, scale)
    g *= scale.astype(g.dtype)


def _grad_arrays(grads):
    arrays = list(grads.values()) if isinstance(grads, dict) else list(grads)
    if not arrays:
        raise ValueError("gradient clipping: no gradients given")
    return arrays


def clip_grad_norm(grads, max_norm):
    """Rescale all gradients together so that their global L2 norm is at most ``max_norm``.

        norm = √(Σ_tensors Σ_elements g²)
        g ← g · max_norm / (norm + 1e-6)     only when norm > max_norm

    The choice is made with ``xp.where`` on the device (no Python ``if`` on the norm,
    so no GPU sync); below the threshold every gradient is multiplied by exactly 1.
    On CuPy that is one reduction per tensor, one kernel for the norm and the factor,
    and one per tensor for the scaling (``fast/kernels.py``).

    grads: dict ``name -> array`` (or a list of arrays), modified in place; max_norm > 0.
    Returns the total norm *before* clipping, a 0-d array on the gradients' device (not a
    Python float on purpose: ``float()`` waits for the GPU, so only when logging). A NaN
    or inf norm leaves the gradients unscaled and is returned as is, for the caller to detect.
    """
    if not max_norm > 0:
        raise ValueError(f"clip_grad_norm: max_norm must be > 0, got {max_norm}")
    arrays = _grad_arrays(grads)
    total, scale = clip_coefficient([sum_of_squares(g) for g in arrays], max_norm)
    for g in arrays:
        scale_in_place(g, scale)
    return total


def clip_grad_value(grads, clip=50.0):
    """Clamp every gradient element to ``[-clip, clip]`` in place (the original Torch code used ±50).

    grads: dict ``name -> array`` (or a list of arrays); clip > 0. Returns ``grads``, for chaining.
    """
    if not clip > 0:
        raise ValueError(f"clip_grad_value: clip must be > 0, got {clip}")
    for g in _grad_arrays(grads):
        xp = get_array_module(g)
        xp.clip(g, -clip, clip, out=g)
    return grads


# ----------------------------------------------------------------------------- schedule
def step_decay(base_lr, epoch, gamma=0.9, every=5):
    """The paper's schedule: ``lr = base_lr · gamma^(epoch // every)``.

    With the defaults, epochs 0–4 use base_lr, 5–9 use 0.9·base_lr, 10–14 0.81·base_lr...

    "Epoch" is whatever the trainer counts: for synthetic data drawn without end the
    trainer defines an epoch as a fixed number of steps, and passes its count here.
    """
    if epoch < 0:
        raise ValueError(f"step_decay: epoch must be >= 0, got {epoch}")
    if every < 1:
        raise ValueError(f"step_decay: every must be >= 1, got {every}")
    return base_lr * gamma ** (int(epoch) // int(every))


@dataclass
class StepDecay:
    """:func:`step_decay` with its numbers kept together.

    ``sched(epoch)`` returns the learning rate; ``sched.apply(opt, epoch)`` also sets
    ``opt.lr`` and returns it. See :func:`step_decay` for what "epoch" means.
    """
    base_lr: float
    gamma: float = 0.9
    every: int = 5

    def __call__(self, epoch):
        return step_decay(self.base_lr, epoch, self.gamma, self.every)

    def apply(self, optimizer, epoch):
        optimizer.lr = self(epoch)
        return optimizer.lr


__all__ = ["RMSProp", "clip_grad_norm", "clip_grad_value", "step_decay", "StepDecay"]
