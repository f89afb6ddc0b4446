"""Rows of the flow study's table (docs/flow_study.md) from training run folders.

    python docs/study_table.py runs/study/A_baseline runs/study/B_photo1 ... [--split val|test]

Each folder is a finished ``python -m stvae_np.train`` run (its ``metrics.json``). The
figures are those of the last evaluation: EPE for flow steps t ≥ 2 over the zero-flow
EPE, the pooled gain ⟨f, g⟩ / ⟨g, g⟩, the angle, the MSE over copy-last, and the
training minutes. ``--split val`` (the default) reads the validation clips, on which
recipes are chosen; ``--split test`` the held-out test clips.
"""
import argparse
import json
import os


def row(folder, split):
    with open(os.path.join(folder, "metrics.json")) as fh:
        m = json.load(fh)
    last = m["history"]["eval"][-1]
    pre = "val_" if split == "val" else ""
    name = os.path.basename(os.path.normpath(folder))
    e = lambda k: last[pre + k]                                   # noqa: E731
    return (f"| {name} | {m['steps']} | {e('epe_t2') / e('zero_flow_epe_t2'):.2f} | "
            f"{e('flow_gain_t2'):.2f} | {e('angular_error_t2'):.0f}° | "
            f"{e('mse') / e('copy_last_mse'):.2f} | {m['train_seconds'] / 60:.1f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--split", default="val", choices=("val", "test"))
    args = ap.parse_args()
    print("| run | steps | EPE t≥2 / zero flow | gain | angle | MSE / copy-last | train min |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for folder in args.folders:
        if os.path.exists(os.path.join(folder, "metrics.json")):
            print(row(folder, args.split))


if __name__ == "__main__":
    main()
