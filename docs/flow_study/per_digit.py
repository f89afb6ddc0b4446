"""Where does a trained model's flow fall short? Per digit and step.

    python docs/flow_study/per_digit.py RUN_DIR [RUN_DIR ...] [--figure PNG] [--tail-figure PNG]

For each clip, digit and flow step t >= 2 of the validation and test clips: the model's
flow averaged over the digit's pixels in frame t+1 (image pixels, negated: the flow is
backward) against the digit's true displacement t -> t+1. Prints the pooled gain and
EPE / zero flow of those per-digit means, and the gain's two factors (the mean flow's
length over the digit's speed, and the mean cosine between them), on all steps, on steady steps (no velocity
component changed sign between t-1 -> t and t -> t+1) and on bounce steps, the gain of
each step t, and the metric of metrics.flow_quality on the same clips for comparison.
It also scores the same per-digit means against the generator's *continuous* motion
(the displacement before positions are rounded to whole pixels), and the continuous
motion itself against the rounded one: the gain splits into what the model misses of
the smooth motion and what the rounding costs any predictor that does not track each
digit's rounding phase. Last, the tail: quantiles of the cosine to the continuous
motion, and that cosine when the two digits are close (top-left corners < 10 px apart
in frame t+1, so they overlap) and when they are apart.
With --figure, also draws each run's gain by step t (validation and test clips) into
one PNG. Sections 4 and 6 of docs/flow_study.md quote the output.
"""
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
from stvae_np import checkpoint  # noqa: E402
from stvae_np import data as D  # noqa: E402
from stvae_np.evaluate import predict_clips  # noqa: E402
from stvae_np.metrics import flow_quality, upsample_flow  # noqa: E402


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


def clips_with_trajectories(config, n_clips, seed):
    """The evaluation clips of ``load_eval_clips`` and the continuous positions
    (N, T, K, 2) they were rounded from (recorded as the generator draws them)."""
    drawn = []
    draw = D._bouncing_trajectories

    def recording(*args, **kwargs):
        drawn.append(draw(*args, **kwargs))
        return drawn[-1]
    D._bouncing_trajectories = recording
    try:
        clips, _ = D.load_eval_clips("moving-mnist", config, n_clips, 10, seed=seed)
    finally:
        D._bouncing_trajectories = draw
    assert np.array_equal(np.rint(drawn[-1]).astype(np.float32), clips.positions)
    return clips, drawn[-1]


def cosines(pred, smooth):
    """Cosine between each per-digit mean (M, 2) and the continuous motion (M, 2)."""
    return (pred * smooth).sum(-1) / np.maximum(np.linalg.norm(pred, axis=-1)
                                               * np.linalg.norm(smooth, axis=-1), 1e-12)


def tail(cos, close):
    """The cosines' quantiles, and their mean with the digits close and apart."""
    q = np.quantile(cos, [0.05, 0.1, 0.25, 0.5])
    return (f"cosine to the continuous motion: quantiles 5/10/25/50 % " + " ".join(f"{v:.2f}" for v in q)
            + f", below 0.7 for {(cos < 0.7).mean():.1%}; mean with the digits close "
            f"{cos[close].mean():.3f} ({close.mean():.0%} of digit-steps), apart {cos[~close].mean():.3f}")


def main(run, n_clips=64):
    """Print the per-digit figures of one run; return its gain by step t per clip set,
    and per clip set the cosines to the continuous motion with the close-digits flags."""
    model = checkpoint.load(str(pathlib.Path(run) / "checkpoint.npz"))
    gains, tails = {}, {}
    for name, seed in (("validation", D.VAL_SEED), ("test", D.TEST_SEED)):
        clips, trajectories = clips_with_trajectories(model.config, n_clips, seed)
        smooth = np.diff(trajectories, axis=1)                               # before rounding
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
            for what, a, b in (("the model against the continuous motion", pred, smooth),
                               ("the continuous motion against the rounded", smooth, true)):
                gain, epe = scores(a[sel], b[sel])
                ratio, cosine = speed_and_direction(a[sel], b[sel])
                print(f"{'':18s} {what}: gain {gain:.2f}, EPE / zero flow {epe:.2f}, "
                      f"speed ratio {ratio:.2f}, mean cosine {cosine:.3f}")
        apart = np.linalg.norm(clips.positions[:, 1:, 0] - clips.positions[:, 1:, 1], axis=-1)
        close = np.broadcast_to((apart < 10)[..., None], seen.shape)
        tails[name] = (cosines(pred[seen], smooth[seen]), close[seen])
        print(f"{name:10s} all     " + tail(*tails[name]))
        by_t = [scores(pred[:, t][seen[:, t]], true[:, t][seen[:, t]])[0] for t in range(2, true.shape[1])]
        print(f"{name:10s} gain by step t = 2..{true.shape[1] - 1}: " + " ".join(f"{g:.2f}" for g in by_t))
        q = flow_quality(flow, clips.flow, clips.masks[:, 1:, 0])
        print(f"{name:10s} flow_quality (per pixel): EPE t>=2 / zero flow "
              f"{q['epe_t2'] / q['zero_flow_epe_t2']:.2f}, gain {q['flow_gain_t2']:.2f}", flush=True)
        gains[name] = by_t
    return gains, tails


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


def tail_figure(tails_by_run, path):
    """Share of digit-steps whose cosine to the continuous motion is below x (test clips):
    one colour per run, solid with the digits apart, dashed with them close."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for i, (run, tails) in enumerate(tails_by_run.items()):
        cos, close = tails["test"]
        for sel, style, label in ((~close, "-", "apart"), (close, "--", "close (< 10 px)")):
            x = np.sort(cos[sel])
            ax.plot(x, np.arange(1, len(x) + 1) / len(x), style, color=f"C{i}",
                    label=f"{pathlib.Path(run).name}, digits {label}")
    ax.set(xlim=(-1, 1), ylim=(0, 0.5), xlabel="cosine of the digit's mean flow to its continuous motion",
           ylabel="share of digit-steps below", title="test clips, steps t ≥ 2")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print("figure:", path)


if __name__ == "__main__":
    args = sys.argv[1:]
    outs = {}
    for flag in ("--figure", "--tail-figure"):
        if flag in args:
            i = args.index(flag)
            outs[flag] = args[i + 1]
            del args[i:i + 2]
    gains, tails = {}, {}
    for run in args:
        print(f"== {run}")
        gains[run], tails[run] = main(run)
    if "--figure" in outs:
        figure(gains, outs["--figure"])
    if "--tail-figure" in outs:
        tail_figure(tails, outs["--tail-figure"])
