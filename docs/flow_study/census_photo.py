"""Flow study 11.7: the video preset with a soft census transform in its photometric term,
the unsupervised-flow literature's answer to brightness that changes between frames
(Zabih & Woodfill 1994; the soft, differentiable form of Meister et al. 2018, UnFlow).

    python docs/flow_study/census_photo.py --preset video --out RUN [train flags ...]
    CENSUS_EPS=0.01 CENSUS_SCALE=0.1 CENSUS_INTENSITY=0  (the defaults)

Each blurred frame B(x) becomes four channels, one per half of its 3×3 neighbourhood
(right, down, down-right, down-left; the other four are the same differences seen from the
neighbour), each a soft sign of the difference to that neighbour:

    c_o(p) = κ · δ / √(δ² + ε²),   δ = B(x)(p + o) − B(x)(p)        (edges replicated)

so a pixel is described by the shape of its neighbourhood, not its brightness. The package's
photometric term then runs unchanged on those channels (σ = 0: the blur is done first): the
census of x_t is warped by the flow and compared with the census of x_{t+1} by Charbonnier's
error, mean over channels and pixels. κ keeps the term's size near the intensity term's
(differences of a few hundredths); with CENSUS_INTENSITY=1 the blurred frame itself is kept
as a fifth channel. The channels are data (nothing is differentiated through them), so no
package code changes; this script patches the model's call and runs the trainer.
"""
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
from gradient_constancy import photometric_on  # noqa: E402  (this folder: the term on other channels)
from stvae_np import model, train  # noqa: E402
from stvae_np.backend import get_array_module  # noqa: E402

EPS = float(os.environ.get("CENSUS_EPS", "0.01"))
SCALE = float(os.environ.get("CENSUS_SCALE", "0.1"))
INTENSITY = os.environ.get("CENSUS_INTENSITY", "0") == "1"
OFFSETS = [(0, 1), (1, 0), (1, 1), (1, -1)]      # (dy, dx): right, down, down-right, down-left


def soft_census(frames):
    """(..., C, H, W) -> (..., 4C (+C), H, W): κ·δ/√(δ²+ε²) for each offset, edges replicated."""
    xp = get_array_module(frames)
    hh, ww = frames.shape[-2:]
    p = xp.pad(frames, [(0, 0)] * (frames.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    chans = []
    for dy, dx in OFFSETS:
        d = p[..., 1 + dy:1 + dy + hh, 1 + dx:1 + dx + ww] - frames
        chans.append(SCALE * d / xp.sqrt(d * d + EPS * EPS))
    if INTENSITY:
        chans.append(frames)
    return xp.concatenate(chans, axis=-3).astype(frames.dtype)


if __name__ == "__main__":
    model.photometric_forward = photometric_on(soft_census)      # what STVAE.loss_and_grads calls
    sys.exit(train.main(sys.argv[1:]))
