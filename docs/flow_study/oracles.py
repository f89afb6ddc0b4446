"""How well can any predictor of the next displacement do on the evaluation clips?

    python docs/flow_study/oracles.py            # 64 validation and 64 test clips
    python docs/flow_study/oracles.py 16 2 3     # 16 clips, plus the rows that see only
                                                 # the last 2 and the last 3 positions

Scores hand-made flows with ``metrics.flow_quality``, exactly as the model's flow is
scored (steps t >= 2, object pixels of frame t+1): for each clip, digit k and step t a
displacement vector is painted (negated: backward flow) on the pixels labelled k in
frame t+1. The predictors see the digits' exact integer positions up to frame t; the
continuous-velocity row replays the generator's random stream to get the continuous,
sub-pixel trajectory (whose rounding gives back ``clips.positions`` exactly) and so knows
the true velocity and the bounce times. The two Bayes rows are causal: they see only the
integer positions 0..t, and know what every clip shares (the speed, the canvas, the
bounce rule); they keep every (start, direction) on a fine grid that reproduces the
positions seen so far and predict the displacement t -> t+1 those imply (the posterior
mean, and the most probable displacement). Section 4 of docs/flow_study.md quotes the
output (about 7 minutes on one core).
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


N_THETA, N_START = 2000, 3601      # grid of directions and of start positions per axis
STEPS = np.arange(-3, 4)           # the integer displacements one axis can make per frame


def axis_counts(r, v0, lo, hi, start):
    """One axis of one digit: r (T,) its integer positions, v0 (Θ,) its velocity along
    this axis for each direction on the grid, start (P,) the start positions on the grid.

    Returns counts (T-1, Θ, len(STEPS)): for step t, how many start positions, per
    direction, reproduce r[0..t] AND then move by STEPS[j] from frame t to t+1. The
    motion is the generator's (data._bouncing_trajectories): move, flip the velocity of
    a coordinate that left [lo, hi], clip it back.
    """
    x = np.broadcast_to(start[None, :], (len(v0), len(start))).copy()
    v = np.broadcast_to(v0[:, None], x.shape).copy()
    seen = np.rint(x) == r[0]                      # consistent with the positions seen so far
    out = np.zeros((len(r) - 1, len(v0), len(STEPS)))
    for t in range(len(r) - 1):
        x = x + v
        out_of_range = (x < lo) | (x > hi)
        v = np.where(out_of_range, -v, v)
        x = np.clip(x, lo, hi)
        step = np.rint(x) - r[t]
        for j, s in enumerate(STEPS):
            out[t, :, j] = np.count_nonzero(seen & (step == s), axis=1)
        seen &= np.rint(x) == r[t + 1]
    return out


def bayes_predictors(positions, lo, hi, speed):
    """positions (N, T, K, 2) -> the posterior mean and the posterior mode of each digit's
    displacement t -> t+1 given its positions 0..t, each (N, T-1, K, 2); a uniform prior
    over start positions and directions, x and y tied by the direction."""
    theta = (np.arange(N_THETA) + 0.5) * 2 * np.pi / N_THETA
    start = np.linspace(lo, hi, N_START)
    n, t_len, k_len, _ = positions.shape
    mean = np.zeros((n, t_len - 1, k_len, 2))
    mode = np.zeros_like(mean)
    for i in range(n):
        for k in range(k_len):
            cx = axis_counts(positions[i, :, k, 0], speed * np.cos(theta), lo, hi, start)
            cy = axis_counts(positions[i, :, k, 1], speed * np.sin(theta), lo, hi, start)
            joint = np.einsum("tqa,tqb->tab", cx, cy)          # P(dx, dy | positions 0..t)
            joint /= joint.sum(axis=(1, 2), keepdims=True)
            mean[i, :, k] = np.stack([joint.sum(2) @ STEPS, joint.sum(1) @ STEPS], -1)
            best = joint.reshape(t_len - 1, -1).argmax(1)
            mode[i, :, k] = np.stack([STEPS[best // len(STEPS)], STEPS[best % len(STEPS)]], -1)
    return mean, mode


def bayes_window(positions, m, lo, hi, speed):
    """The posterior mean when only the last m positions r[t-m+1..t] are seen (a start
    uniform over the canvas at frame t-m+1), for the steps t >= 2; 0 elsewhere."""
    theta = (np.arange(N_THETA) + 0.5) * 2 * np.pi / N_THETA
    start = np.linspace(lo, hi, N_START)
    n, t_len, k_len, _ = positions.shape
    mean = np.zeros((n, t_len - 1, k_len, 2))
    for i in range(n):
        for k in range(k_len):
            for t in range(2, t_len - 1):
                seen = positions[i, max(0, t - m + 1):t + 2, k]      # ... r[t], and r[t+1] unused
                cx = axis_counts(seen[:, 0], speed * np.cos(theta), lo, hi, start)[-1]
                cy = axis_counts(seen[:, 1], speed * np.sin(theta), lo, hi, start)[-1]
                joint = np.einsum("qa,qb->ab", cx, cy)
                joint /= joint.sum()
                mean[i, t, k] = joint.sum(1) @ STEPS, joint.sum(0) @ STEPS
    return mean


def main(n_clips=64, seq_len=10, windows=()):
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
        mean, mode = bayes_predictors(clips.positions.astype(np.float64), 0.0,
                                      p["size"] - p["digit_size"], p["speed"])
        predictors = {"previous displacement": previous, "mean of the last two": last_two,
                      "mean since the last bounce": since_last_bounce(d),
                      "continuous velocity (oracle)": np.diff(traj, axis=1),
                      "Bayes, posterior mean": mean, "Bayes, posterior mode": mode}
        for m in windows:
            predictors[f"Bayes, last {m} positions only"] = bayes_window(
                clips.positions.astype(np.float64), m, 0.0, p["size"] - p["digit_size"], p["speed"])
        for label, disp in predictors.items():
            q = flow_quality(paint(clips, disp), clips.flow, clips.masks[:, 1:, 0])
            print(f"{name:10s} {label:30s} EPE t>=2 / zero flow {q['epe_t2'] / q['zero_flow_epe_t2']:.2f}, "
                  f"gain {q['flow_gain_t2']:.2f}, angle {q['angular_error_t2']:.0f} deg", flush=True)


if __name__ == "__main__":
    # python docs/flow_study/oracles.py [N_CLIPS [WINDOW ...]]: 64 clips, no windowed rows by default
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 64, windows=[int(a) for a in sys.argv[2:]])
