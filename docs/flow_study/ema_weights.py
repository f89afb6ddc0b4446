"""Does an average of the weights predict a better flow than the weights themselves?

    python docs/flow_study/ema_weights.py STEPS EVERY OUT.json DECAYS [--seed S] [--preset P] [--set FIELD=VALUE ...]

Trains the tiny preset (or ``--preset video``, on the bundled footage) exactly as ``stvae_np.train`` does (same sampler, clipping, RMSProp
and learning-rate schedule) and keeps exponential moving averages of the parameters,
``e ← d·e + (1 − d)·θ`` after each step, one per decay d in DECAYS (comma-separated, e.g.
0.99,0.995,0.998). Every EVERY steps it scores the raw and the averaged parameters on the
validation and test clips (EPE t≥2 / zero flow, gain, MSE / copy-last; on video, which has
no true flow: warp forecast and prediction over copy-last, angle to Horn–Schunck) and
prints one JSON line; OUT.json gets all of them. Section 10 of docs/flow_study.md has the
answer on Moving MNIST (run on the tiny preset of the time: add ``--set photo_loss=l2 --set
photo_weighting=uniform`` to repeat it), section 11.4 on video.
"""
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
from stvae_np.data import VAL_SEED, ClipSampler, load_eval_clips, make_data  # noqa: E402
from stvae_np.evaluate import one_step_metrics  # noqa: E402
from stvae_np.model import STVAE, Config  # noqa: E402
from stvae_np.optim import RMSProp, clip_grad_norm, step_decay  # noqa: E402
from stvae_np.train import apply_overrides  # noqa: E402
from stvae_np.video import video_data  # noqa: E402


def scores(model, clips):
    """EPE t≥2 / zero flow, gain, MSE / copy-last: the study's three figures (video: warp and
    prediction over copy-last, angle to Horn–Schunck, steps t ≥ 2)."""
    m = one_step_metrics(model, clips)
    if "warp_forecast_ratio_t2" in m:
        return tuple(round(m[k], 3) for k in ("warp_forecast_ratio_t2", "mse_ratio_t2", "hs_angle_t2"))
    return (round(m["epe_t2"] / m["zero_flow_epe_t2"], 3), round(m["flow_gain_t2"], 3),
            round(m["mse"] / m["copy_last_mse"], 3))


def main(args):
    steps, every, out = int(args[0]), int(args[1]), args[2]
    decays = [float(d) for d in args[3].split(",")]
    rest = args[4:]
    seed = int(rest[rest.index("--seed") + 1]) if "--seed" in rest else 0
    preset = rest[rest.index("--preset") + 1] if "--preset" in rest else "tiny"
    config = apply_overrides(Config.preset(preset), [rest[i + 1] for i, a in enumerate(rest) if a == "--set"])
    model = STVAE(config, seed=seed)
    if preset == "video":
        source, test, val, _ = video_data("samples", config, 64, config.seq_len, progress=False)
    else:
        source, test, _ = make_data("moving-mnist", config, 64, config.seq_len)
        val, _ = load_eval_clips("moving-mnist", config, 64, config.seq_len, seed=VAL_SEED)
    sampler = ClipSampler(source, config.batch_size, config.seq_len, seed=seed)
    opt = RMSProp(model.params, lr=config.lr)
    emas = {d: {k: v.copy() for k, v in model.params.items()} for d in decays}
    rows, t0 = [], time.time()
    for step in range(1, steps + 1):
        _, grads = model.loss_and_grads(next(sampler).frames)
        clip_grad_norm(grads, config.clip_norm)
        opt.lr = step_decay(config.lr, (step - 1) // config.steps_per_epoch, config.lr_decay,
                            config.lr_decay_every)
        opt.step(grads)
        for d, e in emas.items():                       # e ← d·e + (1 − d)·θ
            for k, p in model.params.items():
                e[k] *= d
                e[k] += (1 - d) * p
        if step % every == 0:
            row = {"step": step, "raw": (scores(model, val), scores(model, test))}
            raw = {k: p.copy() for k, p in model.params.items()}
            for d, e in emas.items():
                for k in model.params:
                    model.params[k][...] = e[k]
                row[str(d)] = (scores(model, val), scores(model, test))
            for k in model.params:
                model.params[k][...] = raw[k]
            rows.append(row)
            print(json.dumps(row), f"{time.time() - t0:.0f}s", flush=True)
    pathlib.Path(out).write_text(json.dumps(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
