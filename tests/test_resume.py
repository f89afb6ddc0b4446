"""Exact resume after an interruption at any moment of a step.

A run of 4 steps (checkpoints and evaluations every 2) is interrupted by a real signal
sent to this process at a chosen moment; it must stop with a consistent checkpoint
(batches drawn = steps taken), and ``--resume`` must end bit for bit where the run that
never stopped ends: parameters, optimizer state, sampler state, loss and eval history.
"""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from stvae_np import checkpoint
from stvae_np import model as model_module
from stvae_np import optim
from stvae_np import train as T
from stvae_np.model import PARAM_NAMES

ARGS = ["--batch-size", "2", "--seq-len", "3", "--eval-clips", "2", "--quiet", "--no-figures",
        "--steps", "4", "--ckpt-every", "2", "--eval-every", "2"]


@pytest.fixture(autouse=True)
def no_final_evaluation(monkeypatch):
    """The full evaluation at the end (rollouts, the classical reference) changes nothing
    that is compared here; leave it out to keep the test short."""
    monkeypatch.setattr(T, "final_evaluation", lambda model, clips, final, *a, **k: (dict(final), {}))


def _kill(sig=signal.SIGINT, times=1):
    for _ in range(times):
        os.kill(os.getpid(), sig)


def _state(out):
    model, extra = checkpoint.load(out / "checkpoint.npz", return_extra=True)
    return model.params, extra


def _assert_same(a, b):
    (pa, ea), (pb, eb) = a, b
    assert int(ea["step"]) == int(eb["step"]) == 4
    for k in PARAM_NAMES:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)
        np.testing.assert_array_equal(ea[f"opt/v/{k}"], eb[f"opt/v/{k}"], err_msg=k)
    assert int(ea["opt/t"]) == int(eb["opt/t"])
    assert str(ea["sampler_state"]) == str(eb["sampler_state"])
    ha, hb = json.loads(str(ea["history"])), json.loads(str(eb["history"]))
    assert ha["loss"] == hb["loss"]
    assert [e["step"] for e in ha["eval"]] == [e["step"] for e in hb["eval"]]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(T, "final_evaluation", lambda model, clips, final, *a, **k: (dict(final), {}))
    out = tmp_path_factory.mktemp("straight") / "run"
    assert T.main([*ARGS, "--out", str(out)]) == 0
    mp.undo()
    return _state(out)


def _after_calls(n, fire):
    """A wrapper factory: calls the wrapped function, and ``fire()`` right after call ``n``."""
    def wrap(fn):
        count = [0]

        def wrapped(*a, **k):
            count[0] += 1
            if count[0] == n:
                fire()
            return fn(*a, **k)
        return wrapped
    return wrap


def _hook_at(moment, step, fire):
    def hook(name, s):
        if name == moment and s == step:
            fire()
    return hook


# each case: (name, how to arm the interruption, the step the interrupted checkpoint holds, exit code)
def _arm_before_forward(mp):
    mp.setattr(T, "_test_hook", _hook_at("before_forward", 2, _kill))


def _arm_inside_forward(mp):
    mp.setattr(model_module, "mse_forward", _after_calls(3, _kill)(model_module.mse_forward))


def _arm_inside_backward(mp):
    mp.setattr(model_module, "mse_backward", _after_calls(3, _kill)(model_module.mse_backward))


def _arm_inside_update(mp):
    n = len(PARAM_NAMES)
    mp.setattr(optim, "rmsprop_update", _after_calls(2 * n + 5, _kill)(optim.rmsprop_update))


def _arm_between_update_and_count(mp):
    mp.setattr(T, "_test_hook", _hook_at("after_update", 2, lambda: _kill(signal.SIGTERM)))


def _arm_checkpoint_write(mp):
    savez = np.savez

    def slow_savez(fh, **arrays):
        _kill()                         # the signal arrives while the file is being written
        return savez(fh, **arrays)
    mp.setattr(checkpoint.np, "savez", slow_savez)


def _arm_evaluation(mp):
    mp.setattr(T, "one_step_metrics", _after_calls(1, _kill)(T.one_step_metrics))


def _arm_second_signal(mp):
    mp.setattr(T, "_test_hook", _hook_at("before_forward", 3, lambda: _kill(times=2)))


CASES = [
    ("before the forward", _arm_before_forward, 3, 130),
    ("inside the forward", _arm_inside_forward, 3, 130),
    ("inside the backward", _arm_inside_backward, 3, 130),
    ("inside the optimizer update", _arm_inside_update, 3, 130),
    ("between opt.step and step += 1 (SIGTERM)", _arm_between_update_and_count, 3, 143),
    ("during a checkpoint write", _arm_checkpoint_write, 2, 130),
    ("during an evaluation", _arm_evaluation, 2, 130),
    ("a second Ctrl-C: out at once, nothing written", _arm_second_signal, 2, 130),
]


@pytest.mark.parametrize("name,arm,at,code", CASES, ids=[c[0] for c in CASES])
def test_interrupted_run_resumes_bit_identical(tmp_path, capsys, straight, name, arm, at, code):
    out = tmp_path / "run"
    mp = pytest.MonkeyPatch()
    arm(mp)
    try:
        assert T.main([*ARGS, "--out", str(out)]) == code
    finally:
        mp.undo()
    err = capsys.readouterr().err
    assert "Traceback" not in err
    _, extra = _state(out)
    assert int(extra["step"]) == at
    # the sampler drew exactly one batch per step taken (the bug: step + 1)
    assert json.loads(str(extra["sampler_state"]))["batches_drawn"] == at
    assert not [p for p in os.listdir(out) if ".tmp-" in p]
    assert not (out / ".lock").exists()
    assert T.main([*ARGS, "--resume", str(out / "checkpoint.npz")]) == 0
    _assert_same(_state(out), straight)


def test_a_real_sigint_from_outside_in_a_subprocess(tmp_path):
    """The same in a real process: SIGINT lands just before the update of the second step
    (STVAE_TEST_SIGNAL_AT); the process exits 130 with a one-line note and a checkpoint of
    two whole steps."""
    out = tmp_path / "sub"
    env = {**os.environ, "STVAE_TEST_SIGNAL_AT": "before_update:1"}
    proc = subprocess.run([sys.executable, "-m", "stvae_np.train", *ARGS, "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 130, proc.stderr
    assert "interrupted at step 2" in proc.stderr and "Traceback" not in proc.stderr
    _, extra = _state(out)
    assert int(extra["step"]) == 2
    assert json.loads(str(extra["sampler_state"]))["batches_drawn"] == 2


def test_the_weights_running_average_resumes_bit_identical_and_is_what_inference_loads(tmp_path, capsys):
    """With ``ema_decay`` the checkpoint keeps the average beside the weights; an interruption
    during an evaluation (the model then holds the average) resumes bit for bit, and
    ``checkpoint.load`` gives the average, ``average=False`` the weights."""
    ema = [*ARGS, "--set", "ema_decay=0.5"]
    assert T.main([*ema, "--out", str(tmp_path / "straight")]) == 0
    out = tmp_path / "run"
    mp = pytest.MonkeyPatch()
    _arm_evaluation(mp)
    try:
        assert T.main([*ema, "--out", str(out)]) == 130
    finally:
        mp.undo()
    assert T.main([*ARGS, "--resume", str(out / "checkpoint.npz")]) == 0
    raw = {}
    for run in ("straight", "run"):
        path = tmp_path / run / "checkpoint.npz"
        model, extra = checkpoint.load(path, return_extra=False, average=False), checkpoint.load(path, return_extra=True)[1]
        raw[run] = model.params, extra
        for k in PARAM_NAMES:
            np.testing.assert_array_equal(checkpoint.load(path).params[k], extra[f"average/{k}"])
            assert not np.array_equal(extra[f"average/{k}"], model.params[k]) or k.endswith(".b"), k
    _assert_same(raw["straight"], raw["run"])
    for k in PARAM_NAMES:
        np.testing.assert_array_equal(raw["straight"][1][f"average/{k}"], raw["run"][1][f"average/{k}"])
