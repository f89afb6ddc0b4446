"""Does the loss prefer the true motion? :func:`true_flow_probe` on saved runs.

    python docs/flow_study/true_flow_probe.py RUN_DIR [RUN_DIR ...]

For each run's checkpoint, on 64 validation and 64 test clips of 10 frames
(``load_eval_clips``: test digits, ``VAL_SEED`` / ``TEST_SEED``), prints the next-frame
MSE over copy-last at steps t ≥ 2 when the model's own encoder and decoder are fed its
learned flow, the true flow (2×2 block mean, and the mean over each block's object
pixels) and zero flow. A recipe whose model predicts better with the true flow than
with its own has a loss that prefers the motion (docs/flow_study.md, sections 1, 8.1, 10).
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
import numpy as np  # noqa: E402

from stvae_np import checkpoint, metrics as M  # noqa: E402
from stvae_np.backend import asnumpy, to_device  # noqa: E402
from stvae_np.data import TEST_SEED, VAL_SEED, load_eval_clips  # noqa: E402
from stvae_np.evaluate import predict_clips  # noqa: E402


def true_flow_probe(model, clips, batch_size=32):
    """Does the pixel loss prefer the true motion? The model's own encoder and decoder,
    fed three flows in turn, predict frame t+1 for the steps t ≥ 2:

        learned  the flow the model regresses (``predict``)
        true     the true flow on the memory grid: the mean over each 2×2 block, halved
        true_obj the same mean over the block's object pixels only (0 where none)
        zero     no flow

    Returns ``copy_last_mse_t2``, ``mse_t2_<flow>`` for each flow and ``<flow>_over_copy_last``.
    """
    frames, t_min = clips.frames, M.FLOW_T_MIN
    n, t, c, hh, ww = frames.shape
    s = t - 1
    _, learned = predict_clips(model, frames, batch_size)                # (N, S, 2, h, w)
    f = clips.flow.reshape(n, s, 2, hh // 2, 2, ww // 2, 2).astype(np.float64)
    m = clips.masks[:, 1:].reshape(n, s, 1, hh // 2, 2, ww // 2, 2).astype(np.float64)
    flows = {"learned": learned, "true": f.mean(axis=(4, 6)) / 2,
             "true_obj": (f * m).sum(axis=(4, 6)) / np.maximum(m.sum(axis=(4, 6)), 1) / 2,
             "zero": np.zeros_like(learned)}
    inputs = frames[:, t_min:-1].reshape(-1, c, hh, ww)
    targets = frames[:, t_min + 1:].reshape(-1, c, hh, ww)
    out = {"copy_last_mse_t2": float(M.mse_per_pixel(inputs, targets))}
    for name, flow in flows.items():
        flow = flow[:, t_min:].reshape(-1, 2, hh // 2, ww // 2)
        preds = []
        for i in range(0, len(inputs), batch_size):
            x = to_device(inputs[i:i + batch_size], model.device).astype(model.dtype)
            e, _ = model.encode(x)
            pred, _ = model.warp_decode(e, to_device(flow[i:i + batch_size], model.device).astype(model.dtype))
            preds.append(asnumpy(pred))
        mse = float(M.mse_per_pixel(np.clip(np.concatenate(preds), 0.0, 1.0), targets))
        out[f"mse_t2_{name}"] = mse
        out[f"{name}_over_copy_last"] = mse / out["copy_last_mse_t2"]
    return out


if __name__ == "__main__":
    for run in sys.argv[1:]:
        model = checkpoint.load(pathlib.Path(run) / "checkpoint.npz")
        for name, seed in (("validation", VAL_SEED), ("test", TEST_SEED)):
            clips, _ = load_eval_clips("moving-mnist", model.config, 64, 10, seed=seed)
            r = true_flow_probe(model, clips)
            print(run, name, " ".join(f"{k}={r[k + '_over_copy_last']:.3f}"
                                      for k in ("learned", "true", "true_obj", "zero")), flush=True)
