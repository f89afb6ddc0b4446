"""Is the loss or the model what keeps the flow's gain near 0.7? Train on the answer.

    python docs/flow_study/supervised_probe.py STEPS [--set name=value ...]
                                               [--avg-pool] [--two-frames] [--l1] [--seed S]
                                               [--save PATH]

Trains the tiny model (``Config.tiny()`` plus any ``--set``) exactly as the trainer does
(same clips, RMSProp, clipping at norm 1), except that the photometric term is replaced
by a *supervised* one: the squared error between the model's flow in image pixels
(s · upsample2(T), s = 2) and the generator's true flow, averaged over the object pixels
of frame t+1, and the reconstruction gradient is kept out of the flow
(``recon_flow_grad=0``). So the memory and the flow head learn from the true flow only.
Every 250 steps it prints the validation clips' EPE t≥2 / zero flow, gain and angle
(``metrics.flow_quality``, as everywhere).

If the gain then reaches ~1, the architecture can represent the motion and the
unsupervised loss is to blame; if it stays near 0.7, the model's inference of each
digit's velocity is the limit, and the squared error's optimum under uncertainty (the
conditional mean, which shrinks) is what the gain measures.

``--l1`` uses the absolute error |s·up(T) − g| summed over x and y instead of the
squared one: its optimum under uncertainty is the median of each component, not the
mean, so it tests how much of the shrinking is the squared error's.

Two variants of the encoder, for this probe only (not options of the package):
``--avg-pool`` 2×2 average pooling instead of max pooling (keeps where inside each cell
a stroke lies); ``--two-frames`` the encoder sees frames t and t−1 stacked as two
channels, at full resolution, so local motion is visible before the pooling (the
decoder then also predicts two channels, x_{t+1} and x_t).

Section 7 of docs/flow_study.md quotes the output.
"""
import dataclasses
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
import stvae_np.fast.layers as fast_layers  # noqa: E402
import stvae_np.model as model_module  # noqa: E402
from stvae_np import checkpoint  # noqa: E402
from stvae_np.data import VAL_SEED, ClipSampler, load_eval_clips, synthetic_source  # noqa: E402
from stvae_np.fast.layers import MaxPoolCache, upsample2_backward, upsample2_forward  # noqa: E402
from stvae_np.evaluate import predict_clips  # noqa: E402
from stvae_np.metrics import flow_quality, upsample_flow  # noqa: E402
from stvae_np.model import STVAE, Config  # noqa: E402
from stvae_np.optim import RMSProp, clip_grad_norm  # noqa: E402
from stvae_np.train import apply_overrides  # noqa: E402


def avgpool2_forward(x):
    """out[n, c, y, x] = mean_{a,b ∈ {0,1}} x[n, c, 2y + a, 2x + b]: (N, C, H, W) -> (N, C, H/2, W/2).

    Returns a ``MaxPoolCache`` holding only the input shape, so it stands in for
    ``maxpool2_forward`` inside the model."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean((3, 5)), MaxPoolCache(tuple(x.shape), None)


def avgpool2_backward(dout, cache):
    """dx[n, c, 2y + a, 2x + b] = dout[n, c, y, x] / 4: each input had weight 1/4."""
    n, c, h, w = cache.x_shape
    grid = np.broadcast_to((dout / 4)[:, :, :, None, :, None], (n, c, h // 2, 2, w // 2, 2))
    return grid.reshape(n, c, h, w)


class SupervisedFlow:
    """Stands in for the photometric term P:

        S = Σ_p m_p · ρ(s·upsample2(T)_p − g_p) / Σ_p m_p,   s = 2,  ρ = |·|² (or |·|₁ with l1)

    over flows (M, 2, H, W) in image pixels, m the object pixels of frame t+1 (M, 1, H, W);
    ``backward`` returns ∂S/∂T (M, 2, h, w) as the model expects of P's backward."""

    def __init__(self, l1=False):
        self.truth = None               # (flow (M, 2, H, W), mask (M, 1, H, W)) of the batch
        self.l1 = l1

    def forward(self, clip, flow):
        g, mask = self.truth
        up, up_cache = upsample2_forward(flow)
        diff = (2 * up - g) * mask
        count = max(float(mask.sum()), 1.0)
        error = np.abs(diff) if self.l1 else diff * diff
        return error.sum() / count, (up_cache, diff, count)

    def backward(self, dloss, cache):
        up_cache, diff, count = cache
        derror = np.sign(diff) if self.l1 else 2 * diff
        return upsample2_backward(dloss * 2 * derror / count, up_cache)   # s = 2 image px per cell


def main(argv):
    args = list(argv)
    steps = int(args.pop(0))
    two_frames = "--two-frames" in args
    if "--avg-pool" in args:          # the model pools with its ops module's functions (fast)
        fast_layers.maxpool2_forward = avgpool2_forward
        fast_layers.maxpool2_backward = avgpool2_backward
    save = args[args.index("--save") + 1] if "--save" in args else None
    seed = int(args[args.index("--seed") + 1]) if "--seed" in args else 0   # model and clips
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]

    config = apply_overrides(Config.tiny(), sets)
    config = dataclasses.replace(config, photo_weight=1.0, recon_flow_grad=0.0,
                                 channels=2 if two_frames else config.channels)
    model = STVAE(config, seed=seed)
    term = SupervisedFlow(l1="--l1" in args)

    # The model calls the photometric term by the names stvae_np.model imported from
    # stvae_np.losses; replace them there, with the same signatures.
    def supervised_forward(clip, flow, config, layers, kernels_cache):
        return term.forward(clip, flow)

    def supervised_backward(dphoto, cache, layers):
        return term.backward(dphoto, cache)

    model_module.photometric_forward = supervised_forward
    model_module.photometric_backward = supervised_backward

    def frames_in(frames):              # (N, T, 1, H, W) -> what the encoder sees
        if not two_frames:
            return frames
        previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
        return np.concatenate([frames, previous], axis=2)

    sampler = ClipSampler(synthetic_source("moving_mnist", preset="tiny"), config.batch_size,
                          config.seq_len, seed=seed)
    opt = RMSProp(model.params, lr=config.lr)
    val, _ = load_eval_clips("moving-mnist", Config.tiny(), 64, 10, seed=VAL_SEED)
    hh, ww = config.height, config.width
    start = time.time()
    for step in range(1, steps + 1):
        batch = next(sampler)
        n, s = batch.flow.shape[:2]
        term.truth = (batch.flow.reshape(n * s, 2, hh, ww).astype(np.float32),
                      batch.masks[:, 1:].reshape(n * s, 1, hh, ww).astype(np.float32))
        _, grads = model.loss_and_grads(frames_in(batch.frames))
        clip_grad_norm(grads, config.clip_norm)
        opt.step(grads)
        if step % 250 == 0 or step == steps:
            _, flows = predict_clips(model, frames_in(val.frames))
            q = flow_quality(upsample_flow(flows, 2), val.flow, val.masks[:, 1:, 0])
            print(f"step {step} ({time.time() - start:.0f} s): supervised loss "
                  f"{float(model.last_parts['photo']):.3f}; validation EPE t≥2 / zero flow "
                  f"{q['epe_t2'] / q['zero_flow_epe_t2']:.3f}, gain {q['flow_gain_t2']:.3f}, "
                  f"angle {q['angular_error_t2']:.1f}°", flush=True)
    if save:
        checkpoint.save(model, save)


if __name__ == "__main__":
    main(sys.argv[1:])
