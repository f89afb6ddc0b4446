"""Flow study 11.6: the video preset trained on crops drawn in proportion to their motion.
The held-out scores pool each clip by its copy-last error, so the clips that move most weigh
most; the photometric term, which gives the flow most of its gradient, counts each pixel
alike. Here each training clip is picked among K random candidates (same video) with
probability proportional to its copy-last MSE (mean squared difference of consecutive frames)
plus a floor of 1e-4, so still crops still come, less often.

    K=4 python docs/flow_study/motion_crops.py --preset video --out RUN [train flags ...]
    K=4 python docs/flow_study/motion_crops.py --measure      # how much 256 crops move, both ways

Only the training crops change: the validation and test clips are drawn as before (the
patch is switched on after ``video_data`` has drawn them). No package code changes.
"""
import os
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
from stvae_np import train, video  # noqa: E402

K = int(os.environ.get("K", "4"))
FLOOR = 1e-4
plain_crops, plain_data = video.random_crops, video.video_data
training = False


def random_crops(frames, n, seq_len, size, rng, stride=1, cuts=()):
    if not training:
        return plain_crops(frames, n, seq_len, size, rng, stride, cuts)
    cand = plain_crops(frames, K * n, seq_len, size, rng, stride, cuts)
    motion = ((cand[:, 1:] - cand[:, :-1]) ** 2).mean(axis=(1, 2, 3, 4)) + FLOOR
    keep = rng.choice(K * n, size=n, replace=False, p=motion / motion.sum())
    return cand[keep]


def video_data(*args, **kwargs):
    global training
    out = plain_data(*args, **kwargs)           # validation and test clips: drawn unpatched
    training = True
    return out


video.random_crops = random_crops
train.video_data = video_data
if __name__ == "__main__" and sys.argv[1:] == ["--measure"]:     # the crops' motion, both ways
    from stvae_np.model import Config
    source = video_data("samples", Config.video(), 64, 10, progress=False)[0]
    for picked in (False, True):
        training = picked
        c = source(256, 10, np.random.default_rng(0)).frames
        print(f"{'picked' if picked else 'uniform'} crops: mean square difference of consecutive "
              f"frames {((c[:, 1:] - c[:, :-1]) ** 2).mean():.4f}")
elif __name__ == "__main__":
    sys.exit(train.main(sys.argv[1:]))
