"""Run K of flow study section 11: the video preset with gradient constancy in its
photometric term, an idea of the unsupervised-flow literature (Brox et al. 2004): beside
each blurred frame B(x), its central differences ∂B/∂x and ∂B/∂y are warped and compared
too, so a change of brightness that keeps the texture costs less than a wrong motion.

    python docs/flow_study/gradient_constancy.py --preset video --out RUN [train flags ...]

The frames and their differences are data (nothing is differentiated through them), so
the package's photometric term runs unchanged on 3C channels: this script hands it the
stacked channels (and σ = 0, the blur done first) in place of the clip, then runs the
trainer's command line.
"""
import dataclasses
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
from stvae_np import losses, model, train  # noqa: E402
from stvae_np.backend import get_array_module  # noqa: E402


def with_gradients(frames):
    """(..., C, H, W) -> (..., 3C, H, W): the frames, then their central differences in x
    and in y (edges replicated)."""
    xp = get_array_module(frames)
    p = xp.pad(frames, [(0, 0)] * (frames.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    dx = (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) / 2
    dy = (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) / 2
    return xp.concatenate([frames, dx, dy], axis=-3)


def photometric_on(transform):
    """The package's photometric term on ``transform(B(x))`` in place of the clip: B (the
    blur of σ = ``photo_blur``) runs first, then the term with σ = 0. The transformed channels
    are data, so nothing is differentiated through them. Returns a drop-in
    ``photometric_forward`` (also used by ``census_photo.py``)."""
    def photometric_forward(clip, flow, config, layers, kernels_cache):
        n, t, c, hh, ww = clip.shape
        blurred = losses.gaussian_blur(clip.reshape(n * t, c, hh, ww), config.photo_blur, layers,
                                       kernels_cache).reshape(clip.shape)
        return losses.photometric_forward(transform(blurred), flow,
                                          dataclasses.replace(config, photo_blur=0.0), layers, kernels_cache)
    return photometric_forward


if __name__ == "__main__":
    model.photometric_forward = photometric_on(with_gradients)    # what STVAE.loss_and_grads calls
    sys.exit(train.main(sys.argv[1:]))
