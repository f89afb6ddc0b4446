"""Per video: the forecast scores of a run's checkpoint on each bundled video's validation
and test clips (docs/flow_study.md section 11).

    python docs/flow_study/video_per_sample.py RUN_DIR

The clips are those of ``video.video_data("sample:NAME", ...)`` with the run's Config: 64
per video, the same seeds as the trainer's (its pooled clips share 64 out over the three).
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
from stvae_np import checkpoint  # noqa: E402
from stvae_np.evaluate import forecast_scores, predict_clips  # noqa: E402
from stvae_np.metrics import upsample_flow  # noqa: E402
from stvae_np.video import SAMPLES, video_data  # noqa: E402

if __name__ == "__main__":
    model = checkpoint.load(pathlib.Path(sys.argv[1]) / "checkpoint.npz")
    for name in SAMPLES:
        _, test, val, _ = video_data(f"sample:{name}", model.config, 64, 10, progress=False)
        for split, clips in (("val", val), ("test", test)):
            preds, flows = predict_clips(model, clips.frames)
            s = forecast_scores(clips.frames, upsample_flow(flows, 2), preds)
            print(f"{name:13s} {split:4s} copy-last MSE {s['copy_last_mse']:.5f}  warp {s['warp_forecast_ratio']:.3f}"
                  f"  prediction {s['mse_ratio']:.3f}  H–S forecast {s['classical_forecast_ratio']:.3f}"
                  f"  H–S oracle {s['classical_oracle_ratio']:.3f}  angle {s['hs_angle']:.0f}°", flush=True)
