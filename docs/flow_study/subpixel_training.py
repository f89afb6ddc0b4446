"""Train on Moving MNIST whose training clips are *not* rounded; held-out clips unchanged.

    python docs/flow_study/subpixel_training.py [python -m stvae_np.train's arguments]

Moving MNIST rounds every digit's position to whole pixels, so the displacement from one
frame to the next jitters (1, 1, 2, 1, 1, 2 … px along an axis at 1.27 px/frame) and
only three or more frames pin the velocity down (docs/flow_study.md, section 4). This
script runs the trainer unchanged except that the *training* clips (split "train") draw
each digit at its continuous position, by bilinear placement (the four integer
placements around it, weighted); the validation and test clips (split "test") are
today's rounded ones. Question: does a model that learns on motion two frames determine
do better on the rounded clips? Section 7 of docs/flow_study.md has the answer (no).
"""
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
import stvae_np.data as D  # noqa: E402
_orig = D.moving_mnist


def moving_mnist_subpixel(n, seq_len=20, size=64, digit_size=28, num_digits=2, speed=3.6,
                          split="train", seed=0):
    """``data.moving_mnist``'s training clips at continuous positions (frames only)."""
    if split != "train":
        return _orig(n, seq_len, size, digit_size, num_digits, speed, split, seed)
    rng = np.random.default_rng(seed)
    digits = D._digits_at_size(digit_size)
    pool = D.mnist_split()[0]
    ids = pool[rng.integers(0, len(pool), size=(n, num_digits))]
    traj = D._bouncing_trajectories(rng, n, num_digits, seq_len, 0.0, size - digit_size, speed)
    frames = np.zeros((n, seq_len, 1, size, size), np.float32)
    d = digit_size
    for i in range(n):
        clip = np.zeros((seq_len, size, size), np.float32)
        for k in range(num_digits):
            layer = np.zeros((seq_len, size, size), np.float32)
            for t in range(seq_len):
                x, y = traj[i, t, k]
                x0, y0 = int(np.floor(x)), int(np.floor(y))
                fx, fy = x - x0, y - y0
                for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                                  (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
                    if w > 0:
                        layer[t, y0 + dy:y0 + dy + d, x0 + dx:x0 + dx + d] += w * digits[ids[i, k]]
            clip = np.maximum(clip, layer)
        frames[i, :, 0] = clip
    return D.Clips(frames)

if __name__ == "__main__":
    D.moving_mnist = moving_mnist_subpixel          # the trainer's source looks it up per call
    from stvae_np.train import main
    sys.exit(main(sys.argv[1:]))
