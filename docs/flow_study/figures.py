"""The figures of docs/flow_study.md, from finished run folders.

    python docs/flow_study/figures.py BASELINE_RUN RECIPE_RUN LONG_RUN [OUT_DIR] [--tag TAG]

1. ``flow_study_flow_baseline.png`` and ``flow_study_flow_recipe.png``: learned against
   true flow on the same test clips and steps (t = 2, 5, 8 of clip 0, 1, 2), for the
   paper's loss and for the chosen recipe;
2. ``flow_study_long.png``: EPE t ≥ 2 over zero flow and the gain against training step
   for the long run, validation and test clips, with the oracle of docs/flow_study.md.

``--tag TAG`` appends TAG to the recipe's and the long run's file names
(``flow_study_flow_recipe_TAG.png``, ``flow_study_long_TAG.png``), so a later recipe's
figures stand beside the earlier ones.
"""
import json
import os
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from stvae_np import checkpoint, viz  # noqa: E402
from stvae_np.data import load_eval_clips  # noqa: E402
from stvae_np.evaluate import predict_clips  # noqa: E402

EXAMPLES = [(0, 2), (1, 5), (2, 8)]
CONTINUOUS_VELOCITY_ORACLE = {"epe": 0.31, "gain": 0.90}    # docs/flow_study/oracles.py, both clip sets
PREVIOUS_DISPLACEMENT = {"epe": 0.65, "gain": 0.73}          # the same, test clips


def flow_figure(run, out, title):
    model = checkpoint.load(os.path.join(run, "checkpoint.npz"))
    clips, _ = load_eval_clips("moving-mnist", model.config, 4, 10)
    _, flows = predict_clips(model, clips.frames)
    return viz.plot_flow_comparison(out, clips.frames, flows, clips.flow, mask=clips.masks,
                                    examples=EXAMPLES, max_mag=2.5, title=title)


def long_figure(run, out):
    with open(os.path.join(run, "metrics.json")) as fh:
        history = json.load(fh)["history"]["eval"]
    steps = [e["step"] for e in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for pre, label, style in (("val_", "validation", "o-"), ("", "test", "s-")):
        ax1.plot(steps, [e[pre + "epe_t2"] / e[pre + "zero_flow_epe_t2"] for e in history], style,
                 ms=3, label=f"model, {label} clips")
        ax2.plot(steps, [e[pre + "flow_gain_t2"] for e in history], style, ms=3, label=f"model, {label} clips")
    ax1.axhline(0.5, color="C3", ls=":", label="issue 14's target (0.5)")
    for ax, key in ((ax1, "epe"), (ax2, "gain")):
        ax.axhline(PREVIOUS_DISPLACEMENT[key], color="C4", ls="--",
                   label="a digit's exact previous displacement (test)")
        ax.axhline(CONTINUOUS_VELOCITY_ORACLE[key], color="C2", ls="-.",
                   label="oracle: continuous velocity")
    ax1.set(xlabel="step", ylabel="EPE t ≥ 2 / zero-flow EPE", ylim=(0, 1), title="Flow error")
    ax2.axhspan(0.8, 1.2, color="C2", alpha=0.1, label="issue 14's target band")
    ax2.set(xlabel="step", ylabel="⟨f, g⟩ / ⟨g, g⟩", ylim=(0, 1.25), title="Flow gain (1 = true speed)")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{os.path.basename(os.path.normpath(run))}: the chosen recipe, {steps[-1]:,} steps")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main():
    args = sys.argv[1:]
    tag = ""
    if "--tag" in args:
        i = args.index("--tag")
        tag = "_" + args[i + 1]
        del args[i:i + 2]
    baseline, recipe, long_run = args[:3]
    out = pathlib.Path(args[3] if len(args) > 3 else "docs/figures")
    out.mkdir(parents=True, exist_ok=True)
    print(flow_figure(baseline, out / "flow_study_flow_baseline.png",
                      "The paper's loss (1,000 steps): learned vs true flow, test clips"))
    print(flow_figure(recipe, out / f"flow_study_flow_recipe{tag}.png",
                      "The chosen recipe (2,000 steps): learned vs true flow, test clips"))
    print(long_figure(long_run, out / f"flow_study_long{tag}.png"))


if __name__ == "__main__":
    main()
