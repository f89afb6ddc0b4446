"""Section 7's figure: validation EPE t≥2 / zero flow and gain against training steps, for
the model trained on the true flow (supervised_probe.py's printed log) beside
unsupervised runs (their metrics.json).

    python docs/flow_study/probe_figure.py OUT.png LABEL=PATH [LABEL=PATH ...]

PATH is a probe log (``*.log``) or a run folder of ``python -m stvae_np.train``.
"""
import json
import pathlib
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PROBE_LINE = re.compile(r"step (\d+) .*zero flow ([0-9.]+), gain ([0-9.]+)")


def curve(path):
    """(steps, EPE / zero flow, gain) on the validation clips."""
    path = pathlib.Path(path)
    if path.suffix == ".log":
        rows = [tuple(map(float, m.groups())) for m in map(PROBE_LINE.search, path.read_text().splitlines()) if m]
    else:
        history = json.loads((path / "metrics.json").read_text())["history"]["eval"]
        rows = [(e["step"], e["val_epe_t2"] / e["val_zero_flow_epe_t2"], e["val_flow_gain_t2"]) for e in history]
    return tuple(zip(*rows))


def main(out, specs):
    fig, (ax_epe, ax_gain) = plt.subplots(1, 2, figsize=(10, 3.8))
    for spec in specs:
        label, _, path = spec.rpartition("=")      # the path is after the last "="
        steps, epe, gain = curve(path)
        style = "-" if path.endswith(".log") else "--"
        ax_epe.plot(steps, epe, style, marker=".", label=label)
        ax_gain.plot(steps, gain, style, marker=".", label=label)
    ax_epe.axhline(0.5, color="k", lw=0.8, ls=":")
    ax_gain.axhspan(0.8, 1.2, color="C2", alpha=0.1, label="issue 14's target")
    ax_epe.set(xlabel="training step", ylabel="EPE t≥2 / zero flow (validation)", ylim=(0.35, 0.75))
    ax_gain.set(xlabel="training step", ylabel="gain t≥2 (validation)", ylim=(0.5, 1.0))
    ax_gain.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print("figure:", out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
