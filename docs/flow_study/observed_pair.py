"""Flow study 11.6: the video preset with a second photometric term on the pair the model
has already seen. The flow T_t, which warps x_t towards x_{t+1} (a forecast), is also asked
to warp x_{t−1} onto x_t: under steady motion the two are the same flow, and the second pair
is fully observed (the encoder reads x_{t−1} and x_t), so its gradient carries no
uncertainty about the future.

    OBS=λ python docs/flow_study/observed_pair.py --preset video --out RUN [train flags ...]

P becomes P(x_t → x_{t+1}) + λ · P(x_{t−1} → x_t), with x_{−1} = x_0 (the first step's
observed pair is x_0 against itself: no motion). Both terms are the package's
``losses.photometric_forward`` on two clips (the second one shifted by a frame), so no
package code changes; this script patches the model's calls and runs the trainer.
"""
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
from stvae_np import losses, model, train  # noqa: E402
from stvae_np.backend import get_array_module  # noqa: E402

OBS = float(os.environ.get("OBS", "1"))


def photometric_forward(clip, flow, config, layers, kernels_cache):
    xp = get_array_module(clip)
    ahead, c1 = losses.photometric_forward(clip, flow, config, layers, kernels_cache)
    seen = xp.concatenate([clip[:, :1], clip[:, :-1]], axis=1)      # x_0, x_0, x_1, … x_{T−2}
    behind, c2 = losses.photometric_forward(seen, flow, config, layers, kernels_cache)
    return ahead + OBS * behind, (c1, c2)


def photometric_backward(dphoto, cache, layers):
    return (losses.photometric_backward(dphoto, cache[0], layers)
            + losses.photometric_backward(OBS * dphoto, cache[1], layers))


model.photometric_forward = photometric_forward       # what STVAE.loss_and_grads calls
model.photometric_backward = photometric_backward
if __name__ == "__main__":
    sys.exit(train.main(sys.argv[1:]))
