"""Train the spatio-temporal video autoencoder: the main job.

    python -m stvae_np.train                          # tiny preset, Moving MNIST, a few minutes on a CPU
    python -m stvae_np.train --preset paper --device gpu --steps 20000
    python -m stvae_np.train --preset video             # real footage: the three bundled videos
    python -m stvae_np.train --resume runs/<run>/checkpoint.npz --steps 3000
    python -m stvae_np.train --ops plain --steps 20   # the plain ops (layers.py, memory.py): same numbers

A run folder (``runs/<time>-<preset>`` unless ``--out``) receives ``config.json``,
``run.json``, ``checkpoint.npz`` (model, optimizer, step, data RNG, the run's settings),
``metrics.json`` and the figures. How folders are kept safe, how Ctrl-C stops a run at a
step boundary, ``--resume`` and the exit statuses: docs/DESIGN.md section 11.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time

import numpy as np
from tqdm import tqdm

from . import checkpoint, viz
from .cli import CLIError, Parser, one_line, require_finite, require_positive, resolve_device
from .data import DATA_CHOICES, VAL_SEED, ClipSampler, load_eval_clips, make_data
from .evaluate import final_evaluation, one_step_metrics, predict_clips
from .model import OPS, STVAE, Config
from .optim import RMSProp, WeightAverage, clip_grad_norm, clip_grad_value, step_decay
from .runfolder import FolderBusy, RunLock, clean_stale_temps, write_json
from .video import is_video_spec, video_data

CHECKPOINT = "checkpoint.npz"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m stvae_np.train",
                description="Train the spatio-temporal video autoencoder (Patraucean et al. 2016).")
    p.add_argument("--preset", default=None,
                   help="tiny (default: CPU, minutes), video (real footage) or paper (64×64, GPU); "
                        "a resumed run keeps its own")
    p.add_argument("--data", default=None,
                   help="moving-mnist (default), shapes, a .npy/.npz file of clips, a video file, "
                        "samples (the bundled videos; the video preset's default) or sample:NAME")
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
    p.add_argument("--resume", default=None, metavar="CKPT",
                   help="continue from a checkpoint, with its run's settings (data, seed, batch, "
                        "seq-len, lr, clip-norm); only --steps and the reporting flags may change")
    p.add_argument("--overwrite", action="store_true",
                   help="let a new run replace the run already in --out")
    p.add_argument("--layout", default="auto", choices=("auto", "NTHW", "NTCHW", "TNHW"),
                   help="axes of a --data clip file where auto-detection cannot tell")
    p.add_argument("--eval-every", type=int, default=500, help="steps between evaluations")
    p.add_argument("--eval-clips", type=int, default=64, help="held-out clips per evaluation")
    p.add_argument("--ckpt-every", type=int, default=250, help="steps between checkpoints")
    p.add_argument("--log-every", type=int, default=10,
                   help="steps between loss read-outs (each one is a device sync on the GPU)")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


DEFAULT_STEPS = {"tiny": 2000, "paper": 20000, "video": 2000}
DEFAULT_DATA = {"video": "samples"}   # else moving-mnist
VAL_KEYS = ("mse", "copy_last_mse", "epe", "zero_flow_epe", "epe_t2", "zero_flow_epe_t2",
            "flow_gain_t2", "angular_error_t2", "mse_ratio_t2", "warp_forecast_ratio_t2",
            "classical_forecast_ratio_t2", "classical_oracle_ratio_t2", "hs_angle_t2")


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
    if "warp_forecast_ratio_t2" in m:             # real footage: forecasts against copy-last
        msg += (f"; t≥2 × copy-last: warp {m['warp_forecast_ratio_t2']:.3f}, prediction "
                f"{m['mse_ratio_t2']:.3f}, H–S forecast {m['classical_forecast_ratio_t2']:.3f}, "
                f"H–S oracle {m['classical_oracle_ratio_t2']:.3f}; angle to H–S {m['hs_angle_t2']:.0f}°")
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
    """``model`` running the ``ops`` ("fast" or "plain", ``stvae_np.model.OPS``), built
    again around the same (shared) parameter arrays: STVAE picks its ops when built."""
    if model.ops == ops:
        return model
    switched = STVAE(model.config, dtype=model.dtype, device=model.device, ops=ops)
    switched.params = model.params
    return switched


def _new_model(args, device):
    """A fresh model of ``--preset`` with the ``--set`` overrides, and its run folder.
    Returns (model, None: no training state, run folder)."""
    try:
        config = Config.preset(args.preset or "tiny")
    except ValueError as err:
        raise CLIError(str(err)) from None
    config = apply_overrides(config, args.set)
    if args.seed is not None and not 0 <= args.seed < 2 ** 32:
        raise CLIError(f"--seed must be in 0 … 2**32 - 1, got {args.seed}")
    model = STVAE(config, seed=args.seed or 0, device=device, ops=args.ops)
    out = args.out or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S") + f"-{config.name}")
    return model, None, out


RESUMED = ("data", "seed", "batch_size", "seq_len", "lr", "clip_norm", "layout")


def _resumed_model(args, device):
    """The model of ``--resume`` (its raw weights), its training state (the checkpoint's ``extra``), its
    run folder (``--out``, else the checkpoint's). The settings are the run's own (in the checkpoint, or
    the ``run.json`` beside an older one); CLIError for a flag that asks for another value."""
    with one_line(args.resume):
        model, extra = checkpoint.load(args.resume, device=device, return_extra=True, average=False)
    if "step" not in extra:
        raise CLIError(f"{args.resume}: a model file without training state; cannot resume")
    if args.set:
        raise CLIError("--set changes the model's recipe: it applies to a new run, not to --resume")
    if args.preset is not None and args.preset != model.config.name:
        raise CLIError(f"--preset {args.preset}: the resumed run is preset {model.config.name!r}; "
                       f"a resumed run keeps its preset")
    out = args.out or os.path.dirname(os.path.abspath(args.resume))
    saved = {}
    try:
        if "run_json" in extra:
            saved = json.loads(str(extra["run_json"]))
        else:                                    # an older checkpoint: its folder's run.json
            run_json = os.path.join(os.path.dirname(os.path.abspath(args.resume)), "run.json")
            if os.path.exists(run_json):
                with open(run_json) as fh:
                    saved = json.load(fh)
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        raise CLIError(f"{args.resume}: damaged run settings: {err}") from None
    changed = []
    for key in RESUMED:
        if key not in saved:
            continue
        given = getattr(args, key)
        if key == "layout" and given == "auto":
            given = None
        if given is None:
            setattr(args, key, saved[key])           # the resumed run's settings
        elif given != saved[key]:
            changed.append(f"--{key.replace('_', '-')} {given} (the run has {saved[key]})")
    if changed:
        raise CLIError(f"--resume keeps the run's settings; refused: {'; '.join(changed)}. "
                       f"Start a new run to change them")
    return _with_ops(model, args.ops), extra, out


@dataclasses.dataclass
class Recipe:
    """The settings of a run: each flag given, else the default (for the numbers, the preset's)."""
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
    recipe = Recipe(data=args.data or DEFAULT_DATA.get(config.name, "moving-mnist"), seed=given(args.seed, 0),
                    steps=given(args.steps, DEFAULT_STEPS.get(config.name, 5000)),
                    batch_size=given(args.batch_size, config.batch_size),
                    seq_len=given(args.seq_len, config.seq_len),
                    lr=given(args.lr, config.lr), clip_norm=given(args.clip_norm, config.clip_norm))
    require_positive(steps=recipe.steps, batch_size=recipe.batch_size, eval_clips=args.eval_clips,
                     eval_every=args.eval_every, ckpt_every=args.ckpt_every, log_every=args.log_every)
    if recipe.seq_len < 2:
        raise CLIError(f"--seq-len must be at least 2, got {recipe.seq_len}")
    require_finite(lr=recipe.lr, clip_norm=recipe.clip_norm)
    if not 0 < recipe.lr <= 1:
        raise CLIError(f"--lr must be in (0, 1], got {recipe.lr}")
    if recipe.clip_norm < 0:
        raise CLIError(f"--clip-norm must be 0 (off) or positive, got {recipe.clip_norm}")
    if not 0 <= recipe.seed < 2 ** 32:
        raise CLIError(f"--seed must be in 0 … 2**32 - 1, got {recipe.seed}")
    return recipe


def _held_out_data(recipe, config, n_clips, layout="auto", progress=True):
    """(training source for ``ClipSampler``, test Clips, validation Clips or None, a line
    about the data): ``data.make_data``, plus ``n_clips`` validation clips for synthetic data."""
    # synthetic held-out clips keep config.seq_len whatever --seq-len is: every run scored alike
    if is_video_spec(recipe.data):                 # video: its own validation stretch
        with one_line(recipe.data):
            return video_data(recipe.data, config, n_clips, recipe.seq_len, progress=progress)
    eval_len = config.seq_len if recipe.data in DATA_CHOICES else recipe.seq_len
    source, test_clips, data_desc = make_data(recipe.data, config, n_clips, eval_len, layout=layout)
    val_clips = None          # validation clips (their own seed) on which recipes are chosen
    if recipe.data in DATA_CHOICES:
        val_clips, _ = load_eval_clips(recipe.data, config, n_clips, eval_len, seed=VAL_SEED)
    return source, test_clips, val_clips, data_desc


def _checkpoint_extra(run) -> dict:
    """The training state a checkpoint holds beside the model (``checkpoint.save``'s extra)."""
    extra = {f"opt/{k}": np.asarray(v) for k, v in run.opt.state_dict().items()}
    extra["step"] = np.array(run.step)
    extra["train_seconds"] = np.array(run.train_seconds)
    extra["sampler_state"] = np.array(json.dumps(run.sampler.state_dict()))
    extra["history"] = np.array(json.dumps(run.history))
    extra["run_json"] = np.array(json.dumps(run.settings))     # the run's settings, for --resume
    extra.update({f"average/{k}": v for k, v in (run.avg.average if run.avg else {}).items()})
    return extra


def _restore(extra, opt, sampler, path):
    """(step, history, train_seconds) of a checkpoint's training state, the optimizer and
    the sampler restored; CLIError naming the damaged part."""
    part = "optimizer"
    try:
        opt.load_state_dict({k[len("opt/"):]: v for k, v in extra.items() if k.startswith("opt/")})
        for name, v in opt.v.items():
            if not np.all(np.isfinite(v)):
                raise ValueError(f"optimizer state of {name!r} holds NaN or infinite values")
        if not (np.isfinite(opt.lr) and opt.lr >= 0 and 0 <= opt.alpha < 1 and opt.eps >= 0):
            raise ValueError(f"optimizer numbers out of range (lr {opt.lr}, alpha {opt.alpha}, eps {opt.eps})")
        part = "sampler"
        state = json.loads(str(extra["sampler_state"]))
        if not isinstance(state, dict) or not isinstance(state.get("batches_drawn"), int):
            raise ValueError("not a sampler state")
        sampler.load_state_dict(state)
        part = "training"
        step = extra["step"]
        if step.shape != () or step.dtype.kind not in "iu" or int(step) < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        history = json.loads(str(extra["history"]))
        if not isinstance(history, dict) or not isinstance(history.get("loss"), list) \
                or not isinstance(history.get("eval"), list):
            raise ValueError("history must hold lists 'loss' and 'eval'")
        seconds = float(extra.get("train_seconds", 0.0))
    except (ValueError, TypeError, KeyError, OverflowError) as err:
        raise CLIError(f"{path}: damaged {part} state: {err}") from None
    return int(step), history, seconds if np.isfinite(seconds) else 0.0


RUN_FILES = (CHECKPOINT, "run.json", "config.json", "metrics.json")


class TrainingFailure(Exception):
    """A failure while training (a checkpoint that cannot be written): one line, exit 1."""


class _LossNotFinite(Exception):
    """The loss of step ``args[1]`` became ``args[0]`` (NaN or infinite): exit 1."""


class _Abort(BaseException):
    """A second Ctrl-C / SIGTERM: stop at once, write nothing."""


class _Signals:
    """SIGINT and SIGTERM deferred to the step boundary: the first one only sets ``signum``;
    a second one raises :class:`_Abort` at once. Installed only in the main thread."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def _handler(self, signum, frame):
        if self.signum is not None:
            raise _Abort(signum)
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}


def _exit_code(signum):
    return 128 + int(signum) if signum else 130


# Test hook: called at named moments of a step, ``_test_hook(moment, step)``; tests set it
# (or the environment variable STVAE_TEST_SIGNAL_AT=<moment>:<step>, which sends this
# process SIGINT there) to interrupt a run at a chosen point.
_test_hook = None
MOMENTS = ("before_forward", "before_update", "after_update", "boundary")


_SIGNAL_AT = os.environ.get("STVAE_TEST_SIGNAL_AT")     # read once: nothing per step


def _moment(name, step):
    if _test_hook is not None:
        _test_hook(name, step)
    if _SIGNAL_AT is not None and _SIGNAL_AT == f"{name}:{step}":
        os.kill(os.getpid(), signal.SIGINT)


def _claim_folder(out, resume_dir, overwrite):
    """Create ``out`` and take its lock; refuse a folder that holds another run (unless
    ``overwrite``, or it is the folder of the resumed checkpoint). Returns the lock."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise CLIError(f"--out {out}: cannot create the run folder ({err.strerror or err})") from None
    if not os.path.isdir(out):
        raise CLIError(f"--out {out}: not a folder")
    if not os.access(out, os.W_OK | os.X_OK):
        raise CLIError(f"--out {out}: the run folder is not writable")
    lock = RunLock(out)
    try:
        lock.acquire()
    except FolderBusy as err:
        raise CLIError(f"--out {err}; wait for that run or choose another --out") from None
    except OSError as err:
        raise CLIError(f"--out {out}: cannot write the lock file ({err.strerror or err})") from None
    if lock.taken_over is not None:
        print(f"stvae_np.train: note: {out} was locked by process {lock.taken_over}, which is gone; "
              f"lock taken over", file=sys.stderr)
    same = resume_dir is not None and os.path.realpath(resume_dir) == os.path.realpath(out)
    held = [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
    if held and not same and not overwrite:
        lock.release()
        hint = (f"continue it with --resume {os.path.join(out, CHECKPOINT)}, " if CHECKPOINT in held else "")
        raise CLIError(f"--out {out} already holds a run ({', '.join(held)}); {hint}"
                       f"choose another --out, or pass --overwrite to replace it")
    removed = clean_stale_temps(out)
    if removed:
        print(f"stvae_np.train: note: removed {len(removed)} temporary file(s) of stopped processes "
              f"in {out}", file=sys.stderr)
    return lock


def _start_run_folder(run, overwrite):
    """Write ``config.json`` and ``run.json`` (the settings a ``--resume`` reads back),
    atomically, when training really starts; CLIError if they cannot be written."""
    metrics = os.path.join(run.out, "metrics.json")
    try:
        if overwrite and os.path.exists(metrics):   # the replaced run's results must not outlive it
            os.remove(metrics)
        write_json(os.path.join(run.out, "config.json"), run.model.config.to_dict())
        write_json(os.path.join(run.out, "run.json"), run.settings)
    except OSError as err:
        raise CLIError(f"--out {run.out}: cannot write the run's settings ({err.strerror or err}); "
                       f"the folder is as it was") from None


@dataclasses.dataclass
class _Run:
    """A run in progress: what it trains and on what, where it writes, how far it is."""
    model: STVAE
    opt: RMSProp
    sampler: ClipSampler
    recipe: Recipe
    settings: dict          # run.json: the recipe, device, preset, ops, layout
    device: str
    out: str                # the run folder
    test_clips: object
    val_clips: object       # None for a clip file
    data_desc: str
    step: int = 0
    history: dict = dataclasses.field(default_factory=lambda: {"loss": [], "eval": []})
    train_seconds: float = 0.0
    saved_at: int | None = None     # the step of the last checkpoint written by this process
    avg: WeightAverage | None = None    # Config.ema_decay > 0: the weights' running average

    @contextlib.contextmanager
    def averaged(self):
        """The model holds the running average of its weights inside (where there is one)."""
        self.avg and self.avg.swap()
        try:
            yield
        finally:
            self.avg and self.avg.swap()

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.out, CHECKPOINT)

    def save(self):
        """Write the checkpoint; TrainingFailure if it cannot be written."""
        try:
            checkpoint.save(self.model, self.ckpt_path, extra=_checkpoint_extra(self))
        except OSError as err:
            raise TrainingFailure(f"cannot write the checkpoint {self.ckpt_path} at step {self.step} "
                                  f"({err.strerror or err}); the previous checkpoint is intact") from None
        self.saved_at = self.step

    def stopped(self, signum) -> int:
        """Stop for a signal: the checkpoint (unless just written), how to continue, the exit code."""
        if self.saved_at != self.step:
            self.save()
        name = {signal.SIGTERM: "SIGTERM"}.get(signum, "Ctrl-C")
        print(f"\ninterrupted at step {self.step} ({name}): checkpoint written to {self.ckpt_path}; "
              f"continue with python -m stvae_np.train --resume {self.ckpt_path} "
              f"--steps {self.recipe.steps}", file=sys.stderr)
        return _exit_code(signum)


def _prepare(args) -> _Run:
    """The run of the parsed command line: the model (resumed or new), the numbers, the
    data, the optimizer. CLIError for anything wrong; writes nothing."""
    device = resolve_device(args.device)
    model, extra, out = (_resumed_model if args.resume else _new_model)(args, device)
    config = model.config
    recipe = _recipe(args, config)
    source, test_clips, val_clips, data_desc = _held_out_data(recipe, config, args.eval_clips,
                                                              args.layout, not args.quiet)
    sampler = ClipSampler(source, recipe.batch_size, recipe.seq_len, seed=recipe.seed)
    settings = dict(data=recipe.data, seed=recipe.seed, batch_size=recipe.batch_size,
                    seq_len=recipe.seq_len, lr=recipe.lr, clip_norm=recipe.clip_norm, device=device,
                    preset=config.name, ops=model.ops, layout=args.layout)
    run = _Run(model=model, opt=RMSProp(model.params, lr=recipe.lr), sampler=sampler, recipe=recipe,
               settings=settings, device=device, out=out, test_clips=test_clips, val_clips=val_clips,
               data_desc=data_desc)
    if config.ema_decay > 0:
        run.avg = WeightAverage(model.params, config.ema_decay)
    if extra is not None:
        run.step, run.history, run.train_seconds = _restore(extra, run.opt, sampler, args.resume)
        for k, a in (run.avg.average if run.avg else {}).items():
            if f"average/{k}" not in extra:
                raise CLIError(f"{args.resume}: damaged checkpoint, the weights' running average lacks {k!r}")
            a[...] = model.xp.asarray(extra[f"average/{k}"])
        if run.step > recipe.steps:
            raise CLIError(f"{args.resume} is at step {run.step}, beyond --steps {recipe.steps}")
    return run


def _evaluate(run, log):
    """The one-step metrics of the model on the test clips (returned, and logged), kept in
    ``run.history["eval"]`` with the step and, where there are validation clips, their
    ``VAL_KEYS`` scores as ``val_<key>``."""
    with run.averaged():
        m = one_step_metrics(run.model, run.test_clips)
        v = one_step_metrics(run.model, run.val_clips) if run.val_clips is not None else None
    entry = {"step": run.step, **m}
    if v is not None:
        entry.update({f"val_{k}": v[k] for k in VAL_KEYS if k in v})
    run.history["eval"].append(entry)
    log(f"step {run.step}: " + eval_line(m))
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
    non-finite, 130 interrupted by Ctrl-C (143 by SIGTERM; a checkpoint is written first)."""
    run = _prepare(args)             # nothing is written before all of the set-up has succeeded
    resume_dir = os.path.dirname(os.path.abspath(args.resume)) if args.resume else None
    lock = _claim_folder(run.out, resume_dir, args.overwrite)
    try:
        with _Signals() as signals:
            _start_run_folder(run, args.overwrite)
            log = (lambda *a: None) if args.quiet else (lambda *a: tqdm.write(" ".join(map(str, a))))
            log(f"stvae_np: preset {run.model.config.name} ({run.model.config.num_params():,} "
                f"parameters) on {run.device}; {run.data_desc}; batch {run.recipe.batch_size}×"
                f"{run.recipe.seq_len} frames; run folder {run.out}")
            code = _loop(args, run, signals, log)
            return _finish(args, run, signals, log) if code is None else code
    finally:
        lock.release()


def _loop(args, run, signals, log):
    """The steps up to ``--steps``: one batch, one RMSProp step; evaluations and checkpoints
    now and then. Returns None when all are done, else the exit code (1, 130, 143).

    A signal only sets ``signals.signum``; it is acted on here, between two steps, so the
    checkpoint holds the state of a whole number of steps (exact resume)."""
    config, recipe, opt, sampler = run.model.config, run.recipe, run.opt, run.sampler
    steps, last_loss = recipe.steps, float("nan")
    bar = tqdm(total=steps, initial=run.step, unit="step", disable=args.quiet, mininterval=1.0,
               dynamic_ncols=True)
    phase = "boundary"
    try:
        try:
            while run.step < steps and signals.signum is None:
                t0 = time.perf_counter()
                before = sampler.state_dict()        # a raw KeyboardInterrupt mid-step goes back here
                phase = "step"
                frames = next(sampler).frames
                _moment("before_forward", run.step)
                loss, grads = _gradients(run.model, frames, recipe.clip_norm, config.clip_value)
                epoch = run.step // config.steps_per_epoch
                opt.lr = step_decay(recipe.lr, epoch, config.lr_decay, config.lr_decay_every)
                logged = run.device == "cpu" or (run.step + 1) % args.log_every == 0 \
                    or run.step + 1 == steps
                if logged:
                    last_loss = float(loss)             # a device sync on the GPU: only now and then
                    if not np.isfinite(last_loss):
                        raise _LossNotFinite(last_loss, run.step + 1)
                _moment("before_update", run.step)
                phase = "update"
                opt.step(grads)
                run.avg and run.avg.update()
                _moment("after_update", run.step)
                run.step += 1
                phase = "boundary"
                if logged:
                    run.history["loss"].append([run.step, last_loss])
                run.train_seconds += time.perf_counter() - t0
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.5f}", lr=f"{opt.lr:.2e}", refresh=False)
                if run.step % args.eval_every == 0 and run.step < steps:
                    _evaluate(run, log)
                if run.step % args.ckpt_every == 0:
                    run.save()
                _moment("boundary", run.step)
        finally:
            bar.close()                              # before any message below
        if signals.signum is not None:
            return run.stopped(signals.signum)
    except _LossNotFinite as err:
        ckpt = run.ckpt_path if os.path.exists(run.ckpt_path) else "not written yet"
        print(f"error: the loss became {err.args[0]} at step {err.args[1]}; stopped. The last "
              f"good checkpoint is {ckpt} (try a smaller --lr or --clip-norm).", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # raised by code (not a signal: those are deferred above); the state is consistent
        # before the update and after the step, not inside the update
        if phase == "step":
            sampler.load_state_dict(before)
        if phase == "update":
            print(f"\ninterrupted inside the update of step {run.step + 1}: the last checkpoint "
                  f"({run.ckpt_path}) is kept as it was", file=sys.stderr)
            return 130
        return run.stopped(signal.SIGINT)
    except _Abort as abort:
        print(f"\nstopped at once (second signal): the last checkpoint ({run.ckpt_path}) is kept "
              f"as it was", file=sys.stderr)
        return _exit_code(abort.args[0] if abort.args else None)
    return None


def _finish(args, run, signals, log) -> int:
    """The last evaluation (kept in the checkpoint's history), then the full one
    (``evaluate.final_evaluation``), ``metrics.json`` and the figures. Returns the exit
    code: 0, or 128 + signal for a second signal."""
    try:
        final = _evaluate(run, log)
        run.save()
        with run.averaged():
            test, evaluation = final_evaluation(run.model, run.test_clips, final, run.out, run.recipe.data,
                                                args.eval_clips, description=run.data_desc,
                                                checkpoint=run.ckpt_path, figures=not args.no_figures,
                                                layout=args.layout)
    except _Abort as abort:
        print(f"\nstopped at once (second signal) during the final evaluation; the checkpoint "
              f"{run.ckpt_path} is complete", file=sys.stderr)
        return _exit_code(abort.args[0] if abort.args else None)
    except OSError as err:
        raise TrainingFailure(f"cannot write the final evaluation into {run.out} ({err.strerror or err}); "
                              f"the checkpoint {run.ckpt_path} is complete") from None
    if "classical_epe_t2" in test:
        log(f"classical reference (Horn–Schunck): flow EPE t≥2 {test['classical_epe_t2']:.3f} px, "
            f"gain {test['classical_flow_gain_t2']:.2f}")
    try:
        write_json(os.path.join(run.out, "metrics.json"), _metrics(run, test, evaluation))
        if not args.no_figures:
            with run.averaged():
                make_figures(run.model, run.test_clips, run.history, run.out, test.get("classical_epe_t2"))
    except OSError as err:
        raise TrainingFailure(f"cannot write metrics.json or the figures into {run.out} "
                              f"({err.strerror or err}); the checkpoint {run.ckpt_path} is complete") from None
    log(f"done: {run.step} steps in {run.train_seconds:.0f} s; test mse {test['mse']:.5f} = "
        f"{test['mse'] / test['copy_last_mse']:.2f} × copy-last; results in {run.out}")
    if signals.signum is not None:
        print(f"\ninterrupted during the final evaluation: it was finished first; the run is "
              f"complete in {run.out}", file=sys.stderr)
    return 0


def _metrics(run, test, evaluation) -> dict:
    """The contents of ``metrics.json``."""
    r = run.recipe
    return {"steps": run.step, "train_seconds": round(run.train_seconds, 2),
            "steps_per_second": round(run.step / max(run.train_seconds, 1e-9), 3),
            "device": run.device, "preset": run.model.config.name, "data": run.data_desc,
            "batch_size": r.batch_size, "seq_len": r.seq_len, "lr": r.lr,
            "seed": r.seed, "test": test, "history": run.history, "evaluation": evaluation}


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
    """The command line: 0 done; 2 a bad setting, path or file (one line, before any
    training); 1 a failure during training (one line); 130/143 interrupted."""
    try:
        args = build_parser().parse_args(argv)
        return train(args)
    except CLIError as err:
        print(f"stvae_np.train: error: {err}", file=sys.stderr)
        return 2
    except TrainingFailure as err:
        print(f"stvae_np.train: error: {err}", file=sys.stderr)
        return 1
    except MemoryError:
        print("stvae_np.train: error: out of memory (try a smaller --batch-size, --seq-len or "
              "--eval-clips)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
