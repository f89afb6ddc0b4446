"""Where does a trained model's flow fall short? Per digit and step.

    python docs/flow_study/per_digit.py RUN_DIR [RUN_DIR ...] [--figure PNG]

For each clip, digit and flow step t >= 2 of the validation and test clips: the model's
flow averaged over the digit's pixels in frame t+1 (image pixels, negated: the flow is
backward) against the digit's true displacement t -> t+1. Prints the pooled gain and
EPE / zero flow of those per-digit means, and the gain's two factors (the mean flow's
length over the digit's speed, and the mean cosine between them), on all steps, on steady steps (no velocity
component changed sign between t-1 -> t and t -> t+1) and on bounce steps, the gain of
each step t, and the metric of metrics.flow_quality on the same clips for comparison.
With --figure, also draws each run's gain by step t (validation and test clips) into
one PNG. Sections 4 and 6 of docs/flow_study.md quote the output.
"""
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
from stvae_np import data as D  # noqa: E402
from stvae_np.evaluate import predict_clips  # noqa: E402
from stvae_np.metrics import flow_quality, upsample_flow  # noqa: E402
from stvae_np.model import STVAE  # noqa: E402


def digit_means(flow, labels, n_digits):
    """flow (N, S, 2, H, W) backward flow in image px -> (N, S, K, 2) each digit's mean
    displacement over its pixels in frame t+1 (NaN where the digit is hidden)."""
    n, s = flow.shape[:2]
    out = np.full((n, s, n_digits, 2), np.nan)
    for t in range(s):
        for k in range(n_digits):
            sel = labels[:, t + 1] == k + 1
            count = sel.sum((1, 2))
            for ch in range(2):
                total = -(flow[:, t, ch] * sel).sum((1, 2))
                out[:, t, k, ch] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return out


def scores(pred, true):
    """Pooled gain and EPE / zero flow of displacement vectors (M, 2)."""
    gain = (pred * true).sum() / (true * true).sum()
    epe = np.linalg.norm(pred - true, axis=-1).mean() / np.linalg.norm(true, axis=-1).mean()
    return gain, epe


def speed_and_direction(pred, true):
    """The gain's two factors: mean length of pred over mean length of true, and the
    mean cosine between them (vectors (M, 2); pairs where either is zero left out)."""
    lp, lt = np.linalg.norm(pred, axis=-1), np.linalg.norm(true, axis=-1)
    ok = (lp > 0) & (lt > 0)
    cosine = (pred[ok] * true[ok]).sum(-1) / (lp[ok] * lt[ok])
    return lp[ok].mean() / lt[ok].mean(), cosine.mean()


def main(run, n_clips=64):
    """Print the per-digit figures of one run; return its gain by step t per clip set."""
    model = STVAE.load(str(pathlib.Path(run) / "checkpoint.npz"))
    gains = {}
    for name, seed in (("validation", D.VAL_SEED), ("test", D.TEST_SEED)):
        clips, _ = D.load_eval_clips("moving-mnist", model.config, n_clips, 10, seed=seed)
        _, flows = predict_clips(model, clips.frames)
        flow = upsample_flow(flows, clips.frames.shape[-1] // flows.shape[-1])
        true = np.diff(clips.positions.astype(np.float64), axis=1)          # (N, S, K, 2)
        before = np.concatenate([np.zeros_like(true[:, :1]), true[:, :-1]], axis=1)
        bounce = np.any(true * before < 0, axis=-1)
        pred = digit_means(flow, clips.labels, true.shape[2])
        seen = ~np.isnan(pred[..., 0])
        seen[:, :2] = False                                                  # steps t >= 2
        for label, sel in (("all", seen), ("steady", seen & ~bounce), ("bounce", seen & bounce)):
            gain, epe = scores(pred[sel], true[sel])
            ratio, cosine = speed_and_direction(pred[sel], true[sel])
            print(f"{name:10s} {label:7s} digit-steps {sel.sum():4d}: gain {gain:.2f}, EPE / zero flow "
                  f"{epe:.2f}, speed ratio {ratio:.2f}, mean cosine {cosine:.3f}")
        by_t = [scores(pred[:, t][seen[:, t]], true[:, t][seen[:, t]])[0] for t in range(2, true.shape[1])]
        print(f"{name:10s} gain by step t = 2..{true.shape[1] - 1}: " + " ".join(f"{g:.2f}" for g in by_t))
        q = flow_quality(flow, clips.flow, clips.masks[:, 1:, 0])
        print(f"{name:10s} flow_quality (per pixel): EPE t>=2 / zero flow "
              f"{q['epe_t2'] / q['zero_flow_epe_t2']:.2f}, gain {q['flow_gain_t2']:.2f}", flush=True)
        gains[name] = by_t
    return gains


def figure(gains_by_run, path):
    """Gain by step t, one line per run, validation and test side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, name in zip(axes, ("validation", "test")):
        for run, gains in gains_by_run.items():
            ax.plot(range(2, 2 + len(gains[name])), gains[name], marker="o", label=pathlib.Path(run).name)
        ax.axhline(1.0, color="k", lw=0.8, ls=":")
        ax.axhspan(0.8, 1.2, color="C2", alpha=0.1, label="issue 14's target")
        ax.set(title=f"{name} clips", xlabel="flow step t (frames 0..t seen)")
    axes[0].set_ylabel("gain of the per-digit mean flow")
    axes[0].set_ylim(0.4, 1.05)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print("figure:", path)


if __name__ == "__main__":
    args = sys.argv[1:]
    out = None
    if "--figure" in args:
        i = args.index("--figure")
        out = args[i + 1]
        del args[i:i + 2]
    results = {}
    for run in args:
        print(f"== {run}")
        results[run] = main(run)
    if out:
        figure(results, out)
