"""Is the footage more predictable at a coarser working size? Horn–Schunck's causal forecast
(t−1 → t applied to t) and oracle (t → t+1) on the video preset's validation and test clips
(10 frames, stride 1), with the frames area-downscaled to a short side of about S px instead
of ``video.SHORT_SIDE`` (72), MSE over copy-last's at steps t ≥ 2. Flow study section 11.5.

    python docs/flow_study/working_size.py 72 48 36
"""
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
import stvae_np.video as V  # noqa: E402
from stvae_np.evaluate import forecast_scores  # noqa: E402
from stvae_np.model import Config  # noqa: E402

read = V.read_video
for side in (int(a) for a in sys.argv[1:]):
    V.read_video = lambda path, channels=1, progress=False, side=side: read(path, channels, side, progress=progress)
    _, test, val, _ = V.video_data("samples", Config.video(), 64, 10, progress=False)
    for name, c in (("val", val), ("test", test)):
        f = np.asarray(c.frames)
        s = forecast_scores(f, np.zeros((f.shape[0], f.shape[1] - 1, 2) + f.shape[3:]))
        print(f"short side {side} {name}: copy-last MSE {s['copy_last_mse']:.5f}, H–S forecast "
              f"{s['classical_forecast_ratio']:.3f}, oracle {s['classical_oracle_ratio']:.3f}", flush=True)
