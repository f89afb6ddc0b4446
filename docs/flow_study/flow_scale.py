"""Is the learned flow too short, or pointed wrong? x_t warped by k × the learned flow (image
pixels), MSE over copy-last's at steps t ≥ 2, on the video preset's validation and test clips
of 10 frames (whatever seq_len the run trained on), for k = 0.5 … 4. Flow study section 11.5.

    python docs/flow_study/flow_scale.py RUN_DIR

The run's checkpoint is loaded with its weights' running average where it has one (as the
trainer evaluates it); k = 1 is the trainer's warp forecast.
"""
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
from stvae_np import checkpoint  # noqa: E402
from stvae_np.classical import _warp  # noqa: E402
from stvae_np.evaluate import _image_flow, predict_clips  # noqa: E402
from stvae_np.video import video_data  # noqa: E402

m = checkpoint.load(sys.argv[1] + "/checkpoint.npz")
_, test, val, _ = video_data("samples", m.config, 64, 10, progress=False)
for name, c in (("val", val), ("test", test)):
    g = np.asarray(c.frames, np.float64)[:, :, 0]
    _, flows = predict_clips(m, c.frames)
    fl = np.asarray(_image_flow(flows, c.frames), np.float64)[:, 2:]
    n, t, h, w = g.shape
    xt, target = g[:, 2:-1], g[:, 3:]
    copy = ((xt - target) ** 2).mean()
    warp = lambda k: _warp(xt.reshape(-1, h, w), k * fl.reshape(-1, 2, h, w)).reshape(target.shape)
    print(name, "  ".join(f"k={k}: {((warp(k) - target) ** 2).mean() / copy:.3f}"
                          for k in (0.5, 1, 1.5, 2, 3, 4)), flush=True)
