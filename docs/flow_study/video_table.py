"""The real-footage runs of docs/flow_study.md section 11 as a table, from their metrics.json.

    python docs/flow_study/video_table.py RUN_DIR [RUN_DIR ...]

For each run: the steps, the training seconds, and on the validation clips (the fourth
fifth of each bundled video) at the last evaluation and on the test clips (the last fifth)
the MSE over copy-last's at steps t ≥ 2 of: the warp-only forecast (x_t warped by the learned
flow), the model's prediction, Horn–Schunck's forecast (t−1 → t applied to t) and oracle
(t → t+1), and the learned flow's angle to Horn–Schunck's.
"""
import json
import pathlib
import sys

KEYS = ("warp_forecast_ratio_t2", "mse_ratio_t2", "classical_forecast_ratio_t2",
        "classical_oracle_ratio_t2", "hs_angle_t2")

if __name__ == "__main__":
    print("| run | steps | s | val: warp, prediction, H–S forecast, H–S oracle, angle | "
          "test: warp, prediction, H–S forecast, H–S oracle, angle |")
    print("|---|---:|---:|---|---|")
    for run in sys.argv[1:]:
        m = json.loads((pathlib.Path(run) / "metrics.json").read_text())
        last = m["history"]["eval"][-1]
        val = ", ".join(f"{last['val_' + k]:.3f}" if "angle" not in k else f"{last['val_' + k]:.0f}°"
                        for k in KEYS)
        test = ", ".join(f"{m['test'][k]:.3f}" if "angle" not in k else f"{m['test'][k]:.0f}°" for k in KEYS)
        print(f"| {pathlib.Path(run).name} | {m['steps']} | {m['train_seconds']:.0f} | {val} | {test} |")
