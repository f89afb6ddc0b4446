"""Where does the learned warp win or lose against copy-last? The steps t ≥ 2 of the video
preset's validation and test clips, split by copy-last's error (quantiles 0, 0.5, 0.8, 0.95, 1):
each group's share of copy-last's error, the warp's MSE over copy-last's, the mean length of
the learned flow and of Horn–Schunck's (image pixels). Flow study section 11.4.

    python docs/flow_study/forecast_by_motion.py RUN_DIR
"""
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
from stvae_np import checkpoint  # noqa: E402
from stvae_np.evaluate import predict_clips, _image_flow  # noqa: E402
from stvae_np.classical import _warp, horn_schunck  # noqa: E402
from stvae_np.video import video_data  # noqa: E402
m = checkpoint.load(sys.argv[1] + "/checkpoint.npz")
src, test, val, _ = video_data("samples", m.config, 64, 10, progress=False)
for name, c in (("val", val), ("test", test)):
    f = np.asarray(c.frames, np.float64)
    preds, flows = predict_clips(m, c.frames)
    fl = np.asarray(_image_flow(flows, c.frames), np.float64)
    g = f[:, :, 0]
    n, t, h, w = g.shape
    xt, tgt = g[:, 2:-1], g[:, 3:]
    warped = _warp(xt.reshape(-1, h, w), fl[:, 2:].reshape(-1, 2, h, w)).reshape(tgt.shape)
    hs = horn_schunck(g[:, :-1], g[:, 1:])[:, 2:]
    e_w = ((warped - tgt) ** 2).mean(axis=(2, 3))
    e_c = ((xt - tgt) ** 2).mean(axis=(2, 3))
    mag = np.sqrt((fl[:, 2:] ** 2).sum(2)).mean(axis=(2, 3))
    hmag = np.sqrt((hs ** 2).sum(2)).mean(axis=(2, 3))
    q = np.quantile(e_c, [0, 0.5, 0.8, 0.95, 1.0])
    print(f"--- {name}: pooled warp {e_w.sum()/e_c.sum():.3f}")
    for a, b in zip(q[:-1], q[1:]):
        s = (e_c >= a) & (e_c <= b)
        print(f"copy MSE {a:.5f}-{b:.5f}: n={s.sum():4d} share of copy err {e_c[s].sum()/e_c.sum():.2f} warp/copy {e_w[s].sum()/e_c[s].sum():.3f} "
              f"|flow| {mag[s].mean():.2f} px, H-S |flow| {hmag[s].mean():.2f} px")
