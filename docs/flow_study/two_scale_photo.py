"""Flow study 11.6: the video preset with its photometric term at two blurs. Where the footage
moves most the learned flow is a fifth of Horn–Schunck's length; a term on frames blurred
with σ = 1 px sees displacements of a pixel or two through the bilinear gradient, so a
second term on frames blurred more (σ = S2) is added to see larger ones:

    S2=3 python docs/flow_study/two_scale_photo.py --preset video --out RUN [train flags ...]

P becomes P_σ(x_t → x_{t+1}) + P_S2(x_t → x_{t+1}), both the package's
``losses.photometric_forward`` (σ from the preset, S2 here), so no package code changes.
"""
import dataclasses
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
from stvae_np import losses, model, train  # noqa: E402

S2 = float(os.environ.get("S2", "3"))


def photometric_forward(clip, flow, config, layers, kernels_cache):
    fine, c1 = losses.photometric_forward(clip, flow, config, layers, kernels_cache)
    coarse, c2 = losses.photometric_forward(clip, flow, dataclasses.replace(config, photo_blur=S2),
                                            layers, kernels_cache)
    return fine + coarse, (c1, c2)


def photometric_backward(dphoto, cache, layers):
    return (losses.photometric_backward(dphoto, cache[0], layers)
            + losses.photometric_backward(dphoto, cache[1], layers))


model.photometric_forward = photometric_forward       # what STVAE.loss_and_grads calls
model.photometric_backward = photometric_backward
if __name__ == "__main__":
    sys.exit(train.main(sys.argv[1:]))
