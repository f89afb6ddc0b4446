"""Flow study 11.7: the video preset trained on the first four fifths of each video (its
training and validation stretches), the usual last step once a recipe has been chosen on
validation. The test stretch (the last fifth) stays held out and is drawn as before; the
validation figures the trainer prints are then scores on footage it trained on, and mean
nothing.

    python docs/flow_study/train_through_val.py --preset video --out RUN [train flags ...]

The training source is the package's (``video.video_data``'s ``source``: a video per clip, then
``random_crops`` with no crop across a cut), over frames 0 … len − held − 1 instead of
0 … len − 2·held − 1. No package code changes.
"""
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
from stvae_np import train, video  # noqa: E402
from stvae_np.data import Clips  # noqa: E402

plain_data = video.video_data


def video_data(data, config, n_clips, seq_len, progress=True):
    _, test, val, desc = plain_data(data, config, n_clips, seq_len, progress)
    stride, size = config.frame_stride, (config.height, config.width)
    span = (seq_len - 1) * stride + 1
    stretches = []
    for path in video.video_paths(data).values():
        v = video.read_video(path, config.channels)
        cuts = video.shot_cuts(v)
        end = len(v) - max(span, int(round(video.HOLD_OUT * len(v))))   # the test stretch begins here
        stretches.append((v[:end], cuts[cuts < end - 1]))

    def source(n, length, rng):
        pick = rng.integers(0, len(stretches), n)                  # a video per clip
        frames = np.empty((n, length, config.channels) + size, np.float32)
        for i, (v, cuts) in enumerate(stretches):
            if (pick == i).any():
                frames[pick == i] = video.random_crops(v, int((pick == i).sum()), length, size, rng, stride, cuts)
        return Clips(frames)

    return source, test, val, desc.replace("crops of the first 3/5", "crops of the first 4/5 (validation trained on)")


video.video_data = video_data
train.video_data = video_data          # the trainer imported the name
if __name__ == "__main__":
    sys.exit(train.main(sys.argv[1:]))
