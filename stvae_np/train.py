"""Train the spatio-temporal video autoencoder: the main job.

    python -m stvae_np.train                          # tiny preset, Moving MNIST, a few minutes on a CPU
    python -m stvae_np.train --preset paper --device gpu --steps 20000
    python -m stvae_np.train --resume runs/<run>/checkpoint.npz --steps 3000
    python -m stvae_np.train --ops plain --steps 20   # the plain ops (layers.py, memory.py): same numbers

A run folder (``runs/<time>-<preset>`` unless ``--out``) receives ``config.json``,
``checkpoint.npz`` (model, optimizer, step, data RNG; written atomically),
``metrics.json`` and the figures: ``loss_curve.png``, ``predictions.png``, ``flow.png``.
Ctrl-C writes a checkpoint and stops; ``--resume`` carries on, and on the CPU a resumed
run ends bit-identical to one that never stopped.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np
from tqdm import tqdm

from . import checkpoint, viz
from .cli import CLIError, Parser, require_positive, resolve_device
from .data import DATA_CHOICES, VAL_SEED, ClipSampler, load_eval_clips, make_data
from .evaluate import final_evaluation, one_step_metrics, predict_clips
from .model import OPS, STVAE, Config
from .optim import RMSProp, clip_grad_norm, clip_grad_value, step_decay

CHECKPOINT = "checkpoint.npz"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m stvae_np.train",
                description="Train the spatio-temporal video autoencoder (Patraucean et al. 2016).")
    p.add_argument("--preset", default="tiny", help="tiny (CPU, minutes) or paper (64×64, GPU)")
    p.add_argument("--data", default=None,
                   help="moving-mnist (default), shapes, or a .npy/.npz file of clips")
    p.add_argument("--steps", type=int, default=None, help="total training steps (default: per preset)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seq-len", type=int, default=None,
                   help="frames per training clip (held-out moving-mnist/shapes clips keep the preset's)")
    p.add_argument("--lr", type=float, default=None, help="RMSProp learning rate")
    p.add_argument("--clip-norm", type=float, default=None, help="global gradient-norm clip (0: off)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a Config field of the preset, e.g. --set photo_weight=3 "
                        "(repeatable; the fields are listed in docs/DESIGN.md)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
    p.add_argument("--ops", default="fast", choices=sorted(OPS),
                   help="fast (default) or plain: layers.py and memory.py, the same numbers "
                        "written plainly, to step through (slower)")
    p.add_argument("--seed", type=int, default=None, help="default 0")
    p.add_argument("--out", default=None, help="run folder (default runs/<time>-<preset>)")
    p.add_argument("--resume", default=None, metavar="CKPT", help="continue from a checkpoint")
    p.add_argument("--eval-every", type=int, default=500, help="steps between evaluations")
    p.add_argument("--eval-clips", type=int, default=64, help="held-out clips per evaluation")
    p.add_argument("--ckpt-every", type=int, default=250, help="steps between checkpoints")
    p.add_argument("--log-every", type=int, default=10,
                   help="steps between loss read-outs (each one is a device sync on the GPU)")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


DEFAULT_STEPS = {"tiny": 2000, "paper": 20000}
VAL_KEYS = ("mse", "copy_last_mse", "epe", "zero_flow_epe", "epe_t2", "zero_flow_epe_t2",
            "flow_gain_t2", "angular_error_t2")


def eval_line(m) -> str:
    """One line of held-out metrics: pixels beside copy-last, flow beside zero flow."""
    msg = f"test mse {m['mse']:.5f} (copy-last {m['copy_last_mse']:.5f}, " \
          f"{m['mse'] / m['copy_last_mse']:.2f}×)"
    if "epe_t2" in m:
        msg += (f"; flow t≥2: EPE {m['epe_t2']:.3f} px (zero flow {m['zero_flow_epe_t2']:.3f}, "
                f"{m['epe_t2'] / m['zero_flow_epe_t2']:.2f}×), gain {m['flow_gain_t2']:.2f}, "
                f"angle {m['angular_error_t2']:.1f}°")
    elif "epe" in m:
        msg += f", flow EPE {m['epe']:.3f} px (zero flow {m['zero_flow_epe']:.3f})"
    return msg


# ----------------------------------------------------------------------------- set-up
def apply_overrides(config: Config, items) -> Config:
    """``Config`` with ``FIELD=VALUE`` overrides applied (the value parsed as the field's type)."""
    fields = {f.name: f for f in dataclasses.fields(Config)}
    changes = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in fields:
            raise CLIError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {sorted(fields)}")
        kind = type(getattr(config, name))            # int, float or str
        try:
            changes[name] = kind(text)
        except ValueError:
            raise CLIError(f"--set {item!r}: {text!r} is not a valid {kind.__name__}") from None
    if not changes:
        return config
    try:
        return dataclasses.replace(config, **changes)
    except ValueError as err:
        raise CLIError(f"--set: {err}") from None


def _with_ops(model: STVAE, ops: str) -> STVAE:
    """``model`` running the ``ops`` ("fast" or "plain", ``stvae_np.model.OPS``): the same
    parameter arrays (shared, not copied), config, dtype and device.

    STVAE picks its ops when it is built, so a model loaded from a checkpoint (which
    builds it with the default, "fast") is built again around its own parameters.
    """
    if model.ops == ops:
        return model
    switched = STVAE(model.config, dtype=model.dtype, device=model.device, ops=ops)
    switched.params = model.params
    return switched


def _new_model(args, device):
    """A fresh model of ``--preset`` with the ``--set`` overrides, and its run folder.
    Returns (model, None: no training state, run folder)."""
    try:
        config = Config.preset(args.preset)
    except ValueError as err:
        raise CLIError(str(err)) from None
    config = apply_overrides(config, args.set)
    model = STVAE(config, seed=args.seed or 0, device=device, ops=args.ops)
    out = args.out or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S") + f"-{config.name}")
    return model, None, out


def _resumed_model(args, device):
    """The model of ``--resume``, its training state (the checkpoint's ``extra``) and its
    run folder (``--out``, else the checkpoint's folder). Flags left out (``None``) take
    the resumed run's values from its ``run.json``, so a resumed run goes on as it began.
    """
    try:
        model, extra = checkpoint.load(args.resume, device=device, return_extra=True)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from None
    if "step" not in extra:
        raise CLIError(f"{args.resume}: a model file without training state; cannot resume")
    if args.set:
        raise CLIError("--set changes the model's recipe: it applies to a new run, not to --resume")
    out = args.out or os.path.dirname(os.path.abspath(args.resume))
    run_json = os.path.join(out, "run.json")
    saved = json.loads(open(run_json).read()) if os.path.exists(run_json) else {}
    for key in ("data", "seed", "batch_size", "seq_len", "lr", "clip_norm"):
        if getattr(args, key) is None and key in saved:   # the resumed run's settings
            setattr(args, key, saved[key])
    return _with_ops(model, args.ops), extra, out


@dataclasses.dataclass
class Recipe:
    """The settings of a run: each flag given, else the default (for the numbers, the
    preset's: ``Config``)."""
    data: str               # one of DATA_CHOICES or a clip file's path
    seed: int               # of the batches (and of a new model's initialisation)
    steps: int
    batch_size: int
    seq_len: int
    lr: float               # the base learning rate, before the step decay
    clip_norm: float


def _recipe(args, config: Config) -> Recipe:
    """The :class:`Recipe` of ``args`` over ``config``; CLIError for a number out of range."""
    def given(value, default):
        return default if value is None else value
    recipe = Recipe(data=args.data or "moving-mnist", seed=given(args.seed, 0),
                    steps=given(args.steps, DEFAULT_STEPS.get(config.name, 5000)),
                    batch_size=given(args.batch_size, config.batch_size),
                    seq_len=given(args.seq_len, config.seq_len),
                    lr=given(args.lr, config.lr), clip_norm=given(args.clip_norm, config.clip_norm))
    require_positive(steps=recipe.steps, batch_size=recipe.batch_size, eval_clips=args.eval_clips,
                     eval_every=args.eval_every, ckpt_every=args.ckpt_every, log_every=args.log_every)
    if recipe.seq_len < 2:
        raise CLIError(f"--seq-len must be at least 2, got {recipe.seq_len}")
    return recipe


def _held_out_data(recipe, config, n_clips):
    """(training source for ``ClipSampler``, test Clips, validation Clips or None, a line
    about the data): ``data.make_data``, plus ``n_clips`` validation clips for synthetic data."""
    # The held-out clips of synthetic data keep the preset's length (config.seq_len) whatever
    # --seq-len the batches have, so runs with other clip lengths are scored on the same clips.
    eval_len = config.seq_len if recipe.data in DATA_CHOICES else recipe.seq_len
    source, test_clips, data_desc = make_data(recipe.data, config, n_clips, eval_len)
    val_clips = None          # validation clips (their own seed) on which recipes are chosen
    if recipe.data in DATA_CHOICES:
        val_clips, _ = load_eval_clips(recipe.data, config, n_clips, eval_len, seed=VAL_SEED)
    return source, test_clips, val_clips, data_desc


def _checkpoint_extra(opt, step, sampler, history, train_seconds):
    extra = {f"opt/{k}": np.asarray(v) for k, v in opt.state_dict().items()}
    extra["step"] = np.array(step)
    extra["train_seconds"] = np.array(train_seconds)
    extra["sampler_state"] = np.array(json.dumps(sampler.state_dict()))
    extra["history"] = np.array(json.dumps(history))
    return extra


def _restore(extra, opt, sampler):
    opt.load_state_dict({k[len("opt/"):]: v for k, v in extra.items() if k.startswith("opt/")})
    sampler.load_state_dict(json.loads(str(extra["sampler_state"])))
    return int(extra["step"]), json.loads(str(extra["history"])), float(extra["train_seconds"])


def _write_json(path, obj):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2)
    os.replace(tmp, path)


def _start_run_folder(out, config, recipe, device, ops):
    """Create the run folder and write ``config.json`` and ``run.json`` (the settings a
    ``--resume`` reads back); returns the checkpoint's path in it."""
    os.makedirs(out, exist_ok=True)
    _write_json(os.path.join(out, "config.json"), config.to_dict())
    _write_json(os.path.join(out, "run.json"), dict(
        data=recipe.data, seed=recipe.seed, batch_size=recipe.batch_size, seq_len=recipe.seq_len,
        lr=recipe.lr, clip_norm=recipe.clip_norm, device=device, preset=config.name, ops=ops))
    return os.path.join(out, CHECKPOINT)


def _evaluate(model, step, test_clips, val_clips, history, log):
    """The one-step metrics of ``model`` on the test clips (returned, and logged), kept in
    ``history["eval"]`` with the step and, where there are validation clips, their
    ``VAL_KEYS`` scores as ``val_<key>``."""
    m = one_step_metrics(model, test_clips)
    entry = {"step": step, **m}
    if val_clips is not None:
        v = one_step_metrics(model, val_clips)
        entry.update({f"val_{k}": v[k] for k in VAL_KEYS if k in v})
    history["eval"].append(entry)
    log(f"step {step}: " + eval_line(m))
    return m


def _gradients(model, frames, clip_norm, clip_value):
    """(loss, gradients) of one batch (N, T, C, H, W), the gradients clipped in place:
    first to global L2 norm ``clip_norm``, then element-wise to ``clip_value`` (0: off)."""
    loss, grads = model.loss_and_grads(frames)
    if clip_norm > 0:
        clip_grad_norm(grads, clip_norm)
    if clip_value > 0:
        clip_grad_value(grads, clip_value)
    return loss, grads


# ----------------------------------------------------------------------------- the run
def train(args) -> int:
    """One training run from the parsed command line (:func:`build_parser`): set-up, the
    loop, the final evaluation. Returns the exit code: 0 done, 1 the loss became
    non-finite, 130 interrupted by Ctrl-C (a checkpoint is written first)."""
    # set-up: the model (resumed or new), the numbers, the data, the optimizer, the folder
    device = resolve_device(args.device)
    model, extra, out = (_resumed_model if args.resume else _new_model)(args, device)
    config = model.config
    recipe = _recipe(args, config)
    source, test_clips, val_clips, data_desc = _held_out_data(recipe, config, args.eval_clips)
    sampler = ClipSampler(source, recipe.batch_size, recipe.seq_len, seed=recipe.seed)
    opt = RMSProp(model.params, lr=recipe.lr)
    step, history, train_seconds = 0, {"loss": [], "eval": []}, 0.0
    if extra is not None:
        step, history, train_seconds = _restore(extra, opt, sampler)
    ckpt_path = _start_run_folder(out, config, recipe, device, model.ops)
    log = (lambda *a: None) if args.quiet else (lambda *a: tqdm.write(" ".join(map(str, a))))
    log(f"stvae_np: preset {config.name} ({config.num_params():,} parameters) on {device}; "
        f"{data_desc}; batch {recipe.batch_size}×{recipe.seq_len} frames; run folder {out}")

    def save():
        checkpoint.save(model, ckpt_path, extra=_checkpoint_extra(opt, step, sampler, history, train_seconds))

    # the loop: one batch, one RMSProp step; evaluations and checkpoints now and then
    steps, last_loss = recipe.steps, float("nan")
    bar = tqdm(total=steps, initial=step, unit="step", disable=args.quiet, mininterval=1.0, dynamic_ncols=True)
    try:
        while step < steps:
            t0 = time.perf_counter()
            loss, grads = _gradients(model, next(sampler).frames, recipe.clip_norm, config.clip_value)
            epoch = step // config.steps_per_epoch
            opt.lr = step_decay(recipe.lr, epoch, config.lr_decay, config.lr_decay_every)
            if device == "cpu" or (step + 1) % args.log_every == 0 or step + 1 == steps:
                last_loss = float(loss)             # a device sync on the GPU: only now and then
                if not np.isfinite(last_loss):
                    bar.close()
                    print(f"error: the loss became {last_loss} at step {step + 1}; stopped. The last "
                          f"good checkpoint is {ckpt_path if os.path.exists(ckpt_path) else 'not written yet'} "
                          f"(try a smaller --lr or --clip-norm).", file=sys.stderr)
                    return 1
                history["loss"].append([step + 1, last_loss])
            opt.step(grads)
            step += 1
            train_seconds += time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.5f}", lr=f"{opt.lr:.2e}", refresh=False)
            if step % args.eval_every == 0 and step < steps:
                _evaluate(model, step, test_clips, val_clips, history, log)
            if step % args.ckpt_every == 0:
                save()
    except KeyboardInterrupt:
        bar.close()
        save()
        print(f"\ninterrupted at step {step}: checkpoint written to {ckpt_path}; continue with "
              f"python -m stvae_np.train --resume {ckpt_path} --steps {steps}", file=sys.stderr)
        return 130
    bar.close()

    # finish: the last evaluation (kept in the checkpoint's history), then the full one
    final = _evaluate(model, step, test_clips, val_clips, history, log)
    save()
    test, evaluation = final_evaluation(model, test_clips, final, out, recipe.data, args.eval_clips,
                                        description=data_desc, checkpoint=ckpt_path,
                                        figures=not args.no_figures)
    if "classical_epe_t2" in test:
        log(f"classical reference (Horn–Schunck): flow EPE t≥2 {test['classical_epe_t2']:.3f} px, "
            f"gain {test['classical_flow_gain_t2']:.2f}")
    _write_json(os.path.join(out, "metrics.json"), {
        "steps": step, "train_seconds": round(train_seconds, 2),
        "steps_per_second": round(step / max(train_seconds, 1e-9), 3),
        "device": device, "preset": config.name, "data": data_desc,
        "batch_size": recipe.batch_size, "seq_len": recipe.seq_len, "lr": recipe.lr,
        "seed": recipe.seed, "test": test, "history": history, "evaluation": evaluation})
    if not args.no_figures:
        make_figures(model, test_clips, history, out, test.get("classical_epe_t2"))
    log(f"done: {step} steps in {train_seconds:.0f} s; test mse {test['mse']:.5f} = "
        f"{test['mse'] / test['copy_last_mse']:.2f} × copy-last; results in {out}")
    return 0


def make_figures(model, clips, history, out, classical_epe=None):
    """loss_curve.png, predictions.png and flow.png in the run folder."""
    k = min(4, len(clips.frames))
    preds, flows = predict_clips(model, clips.frames[:k])
    loss = np.array(history["loss"]) if history["loss"] else np.zeros((0, 2))
    ev = history["eval"]
    with_flow = bool(ev) and "epe_t2" in ev[-1]
    viz.plot_loss_curve(os.path.join(out, "loss_curve.png"), loss[:, 0], loss[:, 1],
                        eval_steps=[e["step"] for e in ev], eval_mse=[e["mse"] for e in ev],
                        baseline_mse=ev[-1]["copy_last_mse"] if ev else None,
                        eval_epe=[e["epe_t2"] for e in ev] if with_flow else None,
                        zero_flow_epe=ev[-1]["zero_flow_epe_t2"] if with_flow else None,
                        classical_epe=classical_epe)
    viz.plot_predictions(os.path.join(out, "predictions.png"), clips.frames[:k, :-1],
                         np.clip(preds, 0, 1), clips.frames[:k, 1:])
    if clips.flow is not None:
        viz.plot_flow_comparison(os.path.join(out, "flow.png"), clips.frames[:k], flows,
                                 clips.flow[:k], mask=clips.masks[:k])


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return train(args)
    except CLIError as err:
        print(f"stvae_np.train: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
