"""Train with a photometric error weighted by where the next frame has something to see.

    python docs/flow_study/weighted_photo.py FLOOR [--gm C] [python -m stvae_np.train's arguments]

The metric scores the flow on the object pixels of frame t+1, but the photometric term
P of docs/DESIGN.md averages over every pixel, and on a 2×2 memory cell that holds both
stroke and background pixels the background asks for any flow that lands on background,
which near a digit's leading edge is a shorter one. This script weights each pixel's
squared error by the (blurred) next frame itself, plus a floor:

    P_w = Σ w_i d_i² / Σ w_i,   w = FLOOR + B(x_{t+1}),   d = bilinear(B(x_t), G) − B(x_{t+1})

With ``--gm C`` the squared error d² becomes Geman–McClure's d² / (d² + C²) (as in
robust_photo.py), weighted the same way. Nothing but the frames enters w, so the loss
stays unsupervised. The weights are
constants (no gradient flows through them: they depend on no parameter). The trainer is
run unchanged otherwise, with ``photo_loss="charbonnier"`` rerouted to this error.
"""
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
import stvae_np.model as M  # noqa: E402
from stvae_np.losses import CharbonnierCache  # noqa: E402


def weighted_l2(floor, gm=None):
    """(forward, backward) with the signatures of ``losses.charbonnier_*``; the cache is a
    CharbonnierCache holding (d, w / Σw) so the model's dispatch is unchanged. With
    ``gm = C`` the error is d² / (d² + C²) instead of d²."""
    def forward(pred, target, eps=None):
        diff = pred - target
        w = target + pred.dtype.type(floor)
        w = w / w.sum()
        rho = diff * diff if gm is None else diff * diff / (diff * diff + pred.dtype.type(gm * gm))
        return np.asarray(np.sum(w * rho), dtype=pred.dtype), CharbonnierCache(diff, w)

    def backward(dloss, cache):
        d = cache.diff
        drho = 2 * d if gm is None else 2 * d * d.dtype.type(gm * gm) / (d * d + d.dtype.type(gm * gm)) ** 2
        return np.asarray(dloss, dtype=d.dtype) * cache.root * drho
    return forward, backward


def check(floor, gm=None):
    """Centred finite differences of the pair in float64 (worst relative error)."""
    rng = np.random.default_rng(0)
    pred, target = rng.random((3, 5)), rng.random((3, 5))
    forward, backward = weighted_l2(floor, gm)
    analytic = backward(1.0, forward(pred, target)[1])
    numeric = np.zeros_like(pred)
    for i in np.ndindex(pred.shape):
        for sign in (1, -1):
            p = pred.copy()
            p[i] += sign * 1e-6
            numeric[i] += sign * float(forward(p, target)[0]) / 2e-6
    return float(np.max(np.abs(analytic - numeric) / np.maximum(np.abs(analytic) + np.abs(numeric), 1e-12)))


if __name__ == "__main__":
    floor, rest, gm = float(sys.argv[1]), sys.argv[2:], None
    if "--gm" in rest:
        i = rest.index("--gm")
        gm, rest = float(rest[i + 1]), rest[:i] + rest[i + 2:]
    print(f"weighted P, floor {floor}, Geman–McClure C {gm}: gradient check, worst relative "
          f"error {check(floor, gm):.1e}", flush=True)
    M.charbonnier_forward, M.charbonnier_backward = weighted_l2(floor, gm)
    from stvae_np.train import main
    sys.exit(main(rest + ["--set", "photo_loss=charbonnier", "--set", "photo_weighting=uniform"]))
