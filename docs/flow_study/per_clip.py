"""Which held-out clips decide the pooled score? Per clip, on 64 training crops and on the video
preset's validation and test clips (steps t ≥ 2, as evaluate.forecast_scores): its share of copy-last's error, and the
MSE over copy-last's of x_t warped by the run's learned flow, by Horn–Schunck's forecast (t−1 → t)
and that × 0.5, and by Horn–Schunck's oracle (t → t+1); with the mean length of the learned
flow and of the oracle's, in image pixels. Flow study section 11.6.

    python docs/flow_study/per_clip.py RUN_DIR

First, how much the training crops, validation and test clips move (mean square difference of
consecutive frames).
"""
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
import stvae_np.video as V  # noqa: E402
from stvae_np import checkpoint, metrics as M  # noqa: E402
from stvae_np.classical import horn_schunck, _warp  # noqa: E402
from stvae_np.evaluate import _image_flow, predict_clips  # noqa: E402
T0 = M.FLOW_T_MIN
m = checkpoint.load(sys.argv[1] + "/checkpoint.npz")
source, test, val, _ = V.video_data("samples", m.config, 64, 10, progress=False)
moves = lambda c: ((c[:, 1:] - c[:, :-1]) ** 2).mean()   # noqa: E731
print(f"mean square difference of consecutive frames: 256 training crops (as the trainer draws them) "
      f"{moves(source(256, 10, np.random.default_rng(0)).frames):.4f}, validation clips "
      f"{moves(val.frames):.4f}, test clips {moves(test.frames):.4f}")
train = source(64, 10, np.random.default_rng(1))   # 64 training crops, as the trainer draws them
for name, c in (("train", train), ("val", val), ("test", test)):
    f = np.asarray(c.frames, np.float64)[:, :, 0]
    n, t, h, w = f.shape
    _, flows = predict_clips(m, c.frames)
    learned = np.asarray(_image_flow(flows, c.frames), np.float64)[:, T0:]   # image pixels
    xt, tgt = f[:, T0:-1], f[:, T0 + 1:]
    hs = horn_schunck(f[:, :-1], f[:, 1:])                 # pair s -> s+1
    copy = ((xt - tgt) ** 2).mean(axis=(1, 2, 3))          # per clip

    def error(flow):                                       # per clip: x_t warped by flow
        moved = _warp(xt.reshape(-1, h, w), flow.reshape(-1, 2, h, w)).reshape(tgt.shape)
        return ((moved - tgt) ** 2).mean(axis=(1, 2, 3))

    e = {"learned": error(learned), "HS forecast": error(hs[:, T0 - 1:-1]),
         "HS forecast x0.5": error(0.5 * hs[:, T0 - 1:-1]), "HS oracle": error(hs[:, T0:])}
    ratio = lambda err, idx=slice(None): err[idx].sum() / copy[idx].sum()   # noqa: E731
    print(f"--- {name}, pooled: " + ", ".join(f"{k} {ratio(v):.3f}" for k, v in e.items()))
    best = np.minimum.reduce([e["learned"], e["HS forecast"], e["HS forecast x0.5"]])
    print(f"  per clip the best of learned, HS forecast and its half, pooled: {ratio(best):.3f}")
    order = np.argsort(-copy)
    top, rest = order[:6], order[6:]
    print(f"  the 6 heaviest clips carry {copy[top].sum() / copy.sum():.2f} of copy-last's error; "
          f"the rest pool to learned {ratio(e['learned'], rest):.3f}, HS forecast {ratio(e['HS forecast'], rest):.3f}")
    length = lambda flow: np.hypot(flow[:, 0], flow[:, 1]).mean()   # noqa: E731
    for i in order[:10]:
        print(f"  clip {i:2d}: share {copy[i] / copy.sum():.3f}; " + ", ".join(f"{k} {v[i] / copy[i]:.3f}" for k, v in e.items())
              + f"; mean length learned {length(learned[i]):.2f} px, HS oracle {length(hs[i, T0:]):.2f} px")
    i = order[0]
    print(f"  clip {i}, Horn–Schunck's mean length per pair of frames (px): "
          + ", ".join(f"{np.hypot(*p).mean():.1f}" for p in hs[i]))
