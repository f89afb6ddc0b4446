"""How well can any predictor of the next displacement do on the evaluation clips?

    python docs/flow_study/oracles.py

Scores hand-made flows with ``metrics.flow_quality``, exactly as the model's flow is
scored (steps t >= 2, object pixels of frame t+1): for each clip, digit k and step t a
displacement vector is painted (negated: backward flow) on the pixels labelled k in
frame t+1. The predictors see the digits' exact integer positions up to frame t; the
last one replays the generator's random stream to get the continuous, sub-pixel
trajectory (whose rounding gives back ``clips.positions`` exactly) and so knows the true
velocity and the bounce times. Section 4 of docs/flow_study.md quotes the output.
"""
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
from stvae_np import data as D  # noqa: E402
from stvae_np.metrics import flow_quality  # noqa: E402
from stvae_np.model import Config  # noqa: E402


def paint(clips, disp):
    """disp (N, T-1, K, 2): displacement of digit k from t to t+1 -> backward flow (N, T-1, 2, H, W)."""
    out = np.zeros_like(clips.flow)
    for t in range(clips.flow.shape[1]):
        for k in range(disp.shape[2]):
            sel = clips.labels[:, t + 1] == k + 1
            for ch in range(2):
                out[:, t, ch][sel] = np.broadcast_to(-disp[:, t, k, ch][:, None, None], sel.shape)[sel]
    return out


def since_last_bounce(d):
    """Mean of each digit's known displacements d[0 .. t-1] since its last sign flip."""
    n, s, k, _ = d.shape
    out = np.zeros_like(d)
    for i in range(n):
        for j in range(k):
            for t in range(1, s):
                start = max([u for u in range(1, t) if np.any(d[i, u, j] * d[i, u - 1, j] < 0)], default=0)
                out[i, t, j] = d[i, start:t, j].mean(axis=0)
    return out


def main(n_clips=64, seq_len=10):
    cfg = Config.tiny()
    p = D.MOVING_MNIST_PRESETS["tiny"]
    for name, seed in (("validation", D.VAL_SEED), ("test", D.TEST_SEED)):
        clips, _ = D.load_eval_clips("moving-mnist", cfg, n_clips, seq_len, seed=seed)
        d = np.diff(clips.positions.astype(np.float64), axis=1)           # d[t]: t -> t+1
        mask = np.broadcast_to(clips.masks[:, 1:], clips.flow.shape)
        assert np.allclose(paint(clips, d)[mask], clips.flow[mask])        # painting = the data
        rng = np.random.default_rng(seed)                                  # replay the generator
        pool = D.mnist_split()[1]
        assert np.array_equal(pool[rng.integers(0, len(pool), size=(n_clips, 2))], clips.digit_ids)
        traj = D._bouncing_trajectories(rng, n_clips, 2, seq_len, 0.0, p["size"] - p["digit_size"],
                                        p["speed"])
        assert np.array_equal(np.rint(traj), clips.positions)
        previous = np.concatenate([np.zeros_like(d[:, :1]), d[:, :-1]], axis=1)
        last_two = np.concatenate([np.zeros_like(d[:, :2]), (d[:, 1:-1] + d[:, :-2]) / 2], axis=1)
        predictors = {"previous displacement": previous, "mean of the last two": last_two,
                      "mean since the last bounce": since_last_bounce(d),
                      "continuous velocity (oracle)": np.diff(traj, axis=1)}
        for label, disp in predictors.items():
            q = flow_quality(paint(clips, disp), clips.flow, clips.masks[:, 1:, 0])
            print(f"{name:10s} {label:30s} EPE t>=2 / zero flow {q['epe_t2'] / q['zero_flow_epe_t2']:.2f}, "
                  f"gain {q['flow_gain_t2']:.2f}, angle {q['angular_error_t2']:.0f} deg")


if __name__ == "__main__":
    main()
