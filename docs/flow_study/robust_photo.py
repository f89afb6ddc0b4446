"""Train with a photometric error that ignores what no single flow can explain.

    python docs/flow_study/robust_photo.py C [python -m stvae_np.train's arguments]

Where two digits overlap, the frame is their pixel-wise maximum, and no one flow per
pixel warps frame t into frame t+1 there; under the squared error (and, more weakly,
Charbonnier's) those pixels pull the flow towards a compromise of the two motions.
This script runs the trainer with ``photo_loss="charbonnier"`` replaced by the
Geman–McClure error, which stops pulling on large residuals:

    ρ(d) = d² / (d² + C²),   ρ'(d) = 2 d C² / (d² + C²)²

(≈ d²/C² for |d| ≪ C, → 1 for |d| ≫ C; frames in [0, 1], so C = 0.1 stops listening to
residuals of a few tenths). Everything else is the trainer's. Section 9 of
docs/flow_study.md has the answer.
"""
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
import stvae_np.model as M  # noqa: E402
from stvae_np.losses import CharbonnierCache  # noqa: E402


def geman_mcclure(c):
    """(forward, backward) with the signatures of ``losses.charbonnier_*``; the cache is a
    CharbonnierCache holding (d, d² + C²) so the model's dispatch is unchanged."""
    def forward(pred, target, eps=None):
        diff = pred - target
        denom = diff * diff + pred.dtype.type(c * c)
        return np.asarray(np.mean(diff * diff / denom), dtype=pred.dtype), CharbonnierCache(diff, denom)

    def backward(dloss, cache):
        scale = np.asarray(dloss, dtype=cache.diff.dtype) / cache.diff.size
        return scale * 2 * cache.diff * cache.diff.dtype.type(c * c) / (cache.root * cache.root)
    return forward, backward


def check(c):
    """Centred finite differences of the pair in float64 (worst relative error)."""
    rng = np.random.default_rng(0)
    pred, target = rng.random((3, 5)), rng.random((3, 5))
    forward, backward = geman_mcclure(c)
    analytic = backward(1.0, forward(pred, target)[1])
    numeric = np.zeros_like(pred)
    for i in np.ndindex(pred.shape):
        for sign in (1, -1):
            p = pred.copy()
            p[i] += sign * 1e-6
            numeric[i] += sign * float(forward(p, target)[0]) / 2e-6
    return float(np.max(np.abs(analytic - numeric) / np.maximum(np.abs(analytic) + np.abs(numeric), 1e-12)))


if __name__ == "__main__":
    c = float(sys.argv[1])
    print(f"Geman–McClure C = {c}: gradient check, worst relative error {check(c):.1e}", flush=True)
    M.charbonnier_forward, M.charbonnier_backward = geman_mcclure(c)
    from stvae_np.train import main
    # the tiny preset now weights P by the next frame (section 10); these runs were unweighted
    sys.exit(main(sys.argv[2:] + ["--set", "photo_loss=charbonnier", "--set", "photo_weighting=uniform"]))
