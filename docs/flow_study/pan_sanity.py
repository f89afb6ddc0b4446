"""Can the video preset learn the simplest real-texture motion, a constant pan?

    python docs/flow_study/pan_sanity.py STEPS MAX_SPEED [FIELD=VALUE ...]

Clips of 10 frames: a still frame of the bundled videos (its top-left 64×64) seen through
a 32×32 window moving at a random constant velocity (|v_x|, |v_y| ≤ MAX_SPEED px/frame,
bilinear sampling). Trains ``Config.video()`` (with the overrides) with RMSProp and prints,
every 50 steps on 32 fresh pans, the gain of the crop-mean learned flow (image pixels,
steps t ≥ 2) against the true −v, their correlation, and the prediction's MSE over
copy-last. docs/flow_study.md section 11.
"""
import dataclasses
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
from stvae_np.model import STVAE, Config  # noqa: E402
from stvae_np.optim import RMSProp, clip_grad_norm  # noqa: E402
from stvae_np.sampler import base_grid, bilinear_forward  # noqa: E402
from stvae_np.video import read_video, sample_path  # noqa: E402

steps, vmax = int(sys.argv[1]), float(sys.argv[2])
cfg = Config.video()
extra = dict(a.split("=") for a in sys.argv[3:])
cfg = dataclasses.replace(cfg, **{k: type(getattr(cfg, k))(v) for k, v in extra.items()})
frames = np.concatenate([read_video(sample_path(n))[:60, 0, :64, :64]
                         for n in ("bikes", "bigbuckbunny", "carphone")])
rng = np.random.default_rng(0)


def batch(n, t_len=10):
    out, vel = np.empty((n, t_len, 1, 32, 32), np.float32), rng.uniform(-vmax, vmax, (n, 2))
    for i in range(n):
        img = frames[rng.integers(len(frames))].astype(np.float64)
        for t in range(t_len):          # frame_t(p) = img(p + 16 − v·t): content moves by +v
            g = base_grid(1, 32, 32, img)
            g[0, 0] += 16 - vel[i, 0] * t
            g[0, 1] += 16 - vel[i, 1] * t
            out[i, t, 0] = bilinear_forward(img[None, None], g)[0][0, 0]
    return out, vel


model = STVAE(cfg, seed=0)
opt = RMSProp(model.params, lr=cfg.lr)
t0 = time.time()
for s in range(steps):
    x, _ = batch(16)
    loss, grads = model.loss_and_grads(x)
    clip_grad_norm(grads, 1.0)
    opt.step(grads)
    if (s + 1) % 50 == 0:
        x, vel = batch(32)
        preds, flows = model.predict(x)
        f = 2 * flows[:, 2:].mean(axis=(1, 3, 4))          # image px, steps t ≥ 2, crop mean
        gain = (f * -vel).sum() / (vel * vel).sum()
        copy = np.mean((x[:, 3:] - x[:, 2:-1]) ** 2)
        mse = np.mean((np.clip(preds[:, 2:], 0, 1) - x[:, 3:]) ** 2)
        print(f"step {s + 1} loss {float(loss):.5f} gain {gain:.2f} "
              f"corr {np.corrcoef(f.ravel(), -vel.ravel())[0, 1]:.2f} mse/copy {mse / copy:.3f} "
              f"{time.time() - t0:.0f}s", flush=True)
