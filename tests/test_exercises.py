"""The exercises of tutorials/exercises/ and their grader (tutorials/exercises/grader.py).

* Every exercise script, run as a plain script from a temporary folder, ends with
  "not written yet" and exit status 0 when blank, and passes its grader with the
  solution switched in (STVAE_EXERCISE_SOLUTION=1).
* In-process: a plain, correct learner-style answer to every exercise passes; the same
  answer with a mistake learners really make planted in it fails, and the grader's
  report names the part that is wrong (output, gate, time step, corner, regime, ...).
"""
import functools
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from stvae_np import layers, memory
from stvae_np.activations import sigmoid

EXERCISES = pathlib.Path(__file__).resolve().parent.parent / "tutorials" / "exercises"
# the grader lives beside the exercises, not in the package: import it the way they do
if str(EXERCISES) not in sys.path:
    sys.path.insert(0, str(EXERCISES))
import grader  # noqa: E402
SCRIPTS = sorted(EXERCISES.glob("[0-9][0-9]_*.py"))
TIMEOUT_S = 60


# ----------------------------------------------------------------------------- the scripts
def _run(path, tmp_path, solution):
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env.pop("DISPLAY", None)
    env.pop(grader.HINTS_ENV, None)
    env[grader.SOLUTION_ENV] = "1" if solution else "0"
    return subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def test_there_are_nine_exercises_each_registered():
    names = [p.stem for p in SCRIPTS]
    assert len(names) >= 9, names
    assert sorted(grader.EXERCISES) == names


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_blank_exercise_says_not_written_yet_and_exits_0(path, tmp_path):
    proc = _run(path, tmp_path, solution=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("grade: not written yet"), proc.stdout[-1500:]


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_solved_exercise_passes_its_grader(path, tmp_path):
    proc = _run(path, tmp_path, solution=True)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    assert "solution mode" in proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith(f"grade: PASS ({path.stem}"), proc.stdout[-2000:]


# ----------------------------------------------------------------------------- helpers
def _grade(exercise, **functions):
    report = grader.check(exercise, **functions)
    return report, report.text()


def _assert_fails(report, text, *must_name, not_named=()):
    assert report.status == "FAIL", text
    for part in must_name:
        assert part in text, f"{part!r} not in the report:\n{text}"
    for part in not_named:
        assert not any(part in w for w in report.wrong), f"{part!r} wrongly blamed:\n{text}"


def test_a_function_that_crashes_is_reported_not_raised():
    def broken(x, w, b):
        return x @ w                     # shapes do not fit: ValueError inside NumPy
    report, text = _grade("01_convolution", conv2d_forward=broken, conv2d_backward=conv_backward)
    _assert_fails(report, text, "conv2d_forward", "raised ValueError", "test_exercises.py")
    assert "conv2d_backward" in report.passed


def test_a_wrong_return_value_or_an_input_changed_in_place_is_named():
    report, text = _grade("01_convolution", conv2d_forward=conv_forward,
                          conv2d_backward=lambda dout, x, w: None)
    _assert_fails(report, text, "it must return the tuple (dx, dw, db)")

    def scales_its_input(dh, dc, cache):
        cache["i"] *= 2.0
        return step_backward(dh, dc, cache)
    report, text = _grade("03_convlstm_step", convlstm_step_forward=step_forward,
                          convlstm_step_backward=scales_its_input)
    _assert_fails(report, text, "changed its input cache['i'] in place")


def test_half_written_exercise_is_not_written_yet():
    def todo(*args):
        raise NotImplementedError
    report, text = _grade("01_convolution", conv2d_forward=conv_forward, conv2d_backward=todo)
    assert report.status == "TODO" and report.todo == ["conv2d_backward"], text
    assert report.passed == ["conv2d_forward"]
    assert text.splitlines()[-1] == "grade: not written yet (conv2d_backward)"


def test_solution_switch_and_hints(monkeypatch, capsys):
    monkeypatch.setenv(grader.SOLUTION_ENV, "1")
    assert grader.solution_mode()
    grader.grade("06_huber_smoothness", huber_smoothness_backward=None)
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("grade: PASS")
    monkeypatch.setenv(grader.SOLUTION_ENV, "0")
    assert not grader.solution_mode()
    monkeypatch.setenv(grader.HINTS_ENV, "2")
    grader.hint("04_bptt")
    out = capsys.readouterr().out
    assert "Hint 1/5" in out and "Hint 2/5" in out and "Hint 3/5" not in out
    monkeypatch.setattr(grader, "_interactive", lambda: True)     # a notebook: one per run
    grader.hint("05_bilinear_sampler")
    grader.hint("05_bilinear_sampler")
    out = capsys.readouterr().out
    assert out.count("Hint 1/4") == 2 and out.count("Hint 2/4") == 1


@pytest.mark.parametrize("path", SCRIPTS[:2], ids=[p.stem for p in SCRIPTS[:2]])
def test_hint_footer_only_when_not_passing_and_its_command_works_from_any_folder(path, tmp_path):
    solved = _run(path, tmp_path, solution=True)
    assert solved.stdout.strip().splitlines()[-1].startswith("grade: PASS"), solved.stdout
    assert "more hint" not in solved.stdout and grader.HINTS_ENV not in solved.stdout, solved.stdout
    blank = _run(path, tmp_path, solution=False)
    footer = [line for line in blank.stdout.splitlines() if "more hints:" in line]
    assert len(footer) == 1, blank.stdout
    command = footer[0].split("`")[1]
    assert command.startswith(f"{grader.HINTS_ENV}=1 python ") and str(path) in command, command
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop(grader.SOLUTION_ENV, None)
    env.pop(grader.HINTS_ENV, None)
    other = tmp_path / "elsewhere"
    other.mkdir()
    proc = subprocess.run(command, shell=True, cwd=other, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    n_hints = len(grader.HINTS[path.stem])
    assert f"Hint 1/{n_hints}" in proc.stdout and f"Hint 2/{n_hints}" not in proc.stdout, proc.stdout
    assert f"({n_hints - 1} more hint" in proc.stdout       # the next command, for hint 2


def test_a_wrong_answer_exits_1_as_a_script(monkeypatch):
    monkeypatch.delenv(grader.SOLUTION_ENV, raising=False)
    with pytest.raises(SystemExit) as err:
        grader.grade("06_huber_smoothness",
                     huber_smoothness_backward=functools.partial(huber_backward, bug="sign"))
    assert err.value.code == 1


# ----------------------------------------------------------------------------- 01 convolution
def conv_forward(x, w, b):
    n, c, h, wd = x.shape
    f, _, k, _ = w.shape
    p = k // 2
    x_pad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    out = np.zeros((n, f, h, wd), dtype=x.dtype)
    for u in range(k):
        for v in range(k):
            out += np.einsum("nchw,fc->nfhw", x_pad[:, :, u:u + h, v:v + wd], w[:, :, u, v])
    return out + b.reshape(1, f, 1, 1)


def conv_backward(dout, x, w, bug=None):
    n, c, h, wd = x.shape
    f, _, k, _ = w.shape
    p = k // 2
    x_pad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    dw = np.zeros((c, f, k, k) if bug == "dW missing transpose" else w.shape, dtype=x.dtype)
    for u in range(k):
        for v in range(k):
            window = x_pad[:, :, u:u + h, v:v + wd]
            if bug == "dW missing transpose":
                dw[:, :, u, v] = np.einsum("nfhw,nchw->cf", dout, window)
            else:
                dw[:, :, u, v] = np.einsum("nfhw,nchw->fc", dout, window)
    # dx: the full correlation of dout with the kernel flipped once, channel axes swapped
    flipped = np.flip(w, axis=(2, 3))
    if bug == "kernel flipped twice":
        flipped = np.flip(flipped, axis=(2, 3))
    dx = conv_forward(dout, np.ascontiguousarray(flipped.transpose(1, 0, 2, 3)),
                      np.zeros(c, dtype=x.dtype))
    db = dout.sum(axis=(1, 2, 3) if bug == "db summed over the wrong axes" else (0, 2, 3))
    return dx, dw, db


def test_convolution_learner_answer_passes():
    report, text = _grade("01_convolution", conv2d_forward=conv_forward,
                          conv2d_backward=conv_backward)
    assert report.status == "PASS", text


def test_convolution_kernel_flipped_twice_blames_dx():
    report, text = _grade("01_convolution", conv2d_forward=conv_forward,
                          conv2d_backward=functools.partial(conv_backward,
                                                            bug="kernel flipped twice"))
    _assert_fails(report, text, "✗ dx:", "NOT flipped", "right: dW, db", not_named=("dW", "db"))


def test_convolution_db_over_the_wrong_axes_blames_db():
    report, text = _grade("01_convolution", conv2d_forward=conv_forward,
                          conv2d_backward=functools.partial(conv_backward,
                                                            bug="db summed over the wrong axes"))
    _assert_fails(report, text, "✗ db:", "axis=(0, 2, 3)", not_named=("dx", "dW"))
    assert report.wrong == ["db"]


def test_convolution_dw_missing_transpose_blames_dw():
    report, text = _grade("01_convolution", conv2d_forward=conv_forward,
                          conv2d_backward=functools.partial(conv_backward,
                                                            bug="dW missing transpose"))
    _assert_fails(report, text, "✗ dW:", "transpose is missing", not_named=("dx", "db"))


def test_convolution_forward_with_a_flipped_kernel_blames_out():
    def flipped_forward(x, w, b):
        return conv_forward(x, np.flip(w, axis=(2, 3)), b)
    report, text = _grade("01_convolution", conv2d_forward=flipped_forward,
                          conv2d_backward=conv_backward)
    _assert_fails(report, text, "✗ out:", "kernel flipped")
    assert report.passed == ["conv2d_backward"]


# ----------------------------------------------------------------------------- 02 pool, up-sample
def maxpool_forward(x, bug=None):
    n, c, h, w = x.shape
    if bug == "window axes mixed up":
        return x.reshape(n, c, h // 2, w // 2, 2, 2).max(axis=(4, 5))
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def maxpool_backward(dout, x, bug=None):
    n, c, h, w = x.shape
    windows = x.reshape(n, c, h // 2, 2, w // 2, 2)
    if bug == "mask x == max":         # every tied pixel wins: hint 3's old advice
        winner = windows == windows.max(axis=(3, 5), keepdims=True)
    else:                              # the first maximum in row-major order, as argmax
        flat = windows.transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
        first = flat.argmax(axis=-1)[..., None] == np.arange(4)
        winner = first.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5)
    if bug == "gradient to every pixel":
        winner = np.ones_like(winner)
    return (winner * dout[:, :, :, None, :, None]).reshape(n, c, h, w)


def upsample_forward(x):
    return x.repeat(2, axis=2).repeat(2, axis=3)


def upsample_backward(dout, bug=None):
    n, c, h, w = dout.shape
    blocks = dout.reshape(n, c, h // 2, 2, w // 2, 2)
    return blocks.mean(axis=(3, 5)) if bug == "mean" else blocks.sum(axis=(3, 5))


POOL = dict(maxpool2_forward=maxpool_forward, maxpool2_backward=maxpool_backward,
            upsample2_forward=upsample_forward, upsample2_backward=upsample_backward)


def test_pool_learner_answer_passes():
    report, text = _grade("02_pool_upsample", **POOL)
    assert report.status == "PASS", text


def test_maxpool_gradient_to_every_pixel_blames_maxpool_backward():
    wrong = functools.partial(maxpool_backward, bug="gradient to every pixel")
    report, text = _grade("02_pool_upsample", **{**POOL, "maxpool2_backward": wrong})
    _assert_fails(report, text, "maxpool2_backward dx", "did not win")
    assert report.wrong == ["maxpool2_backward dx"]


def test_maxpool_mask_on_tied_windows_fails_with_the_tie_rule():
    # all-zero windows (the blank background) tie four ways: x == max sends the gradient
    # to all four pixels; the rule is the first in row-major order (argmax). The old
    # grader (distinct inputs only) passed this answer.
    wrong = functools.partial(maxpool_backward, bug="mask x == max")
    report, text = _grade("02_pool_upsample", **{**POOL, "maxpool2_backward": wrong})
    _assert_fails(report, text, "with tied maxima", "first of the tied pixels in row-major order",
                  "more than one pixel", "x == max")
    assert report.wrong == ["maxpool2_backward dx (ties)"]
    assert report.passed == ["maxpool2_forward", "upsample2_forward", "upsample2_backward"]


def test_upsample_mean_instead_of_sum_blames_upsample_backward():
    report, text = _grade("02_pool_upsample", **{
        **POOL, "upsample2_backward": functools.partial(upsample_backward, bug="mean")})
    _assert_fails(report, text, "upsample2_backward dx", "the block's sum")
    assert report.wrong == ["upsample2_backward dx"]


def test_maxpool_window_axes_mixed_up_blames_maxpool_forward():
    report, text = _grade("02_pool_upsample", **{
        **POOL, "maxpool2_forward": functools.partial(maxpool_forward, bug="window axes mixed up")})
    _assert_fails(report, text, "maxpool2_forward out", "rows 2y, 2y+1")
    assert report.wrong == ["maxpool2_forward out"]


# ----------------------------------------------------------------------------- 03 ConvLSTM step
def step_forward(x, h_prev, c_prev, params):
    """The exercise's given forward (tutorials/exercises/03_convlstm_step.py)."""
    nf = h_prev.shape[1]
    ax, x_conv = layers.conv2d_forward(x, params["Wx"], params["b"])
    ah, h_conv = layers.conv2d_forward(h_prev, params["Wh"])
    a = ax + ah
    i, f = sigmoid(a[:, :nf]), sigmoid(a[:, nf:2 * nf])
    g, o = np.tanh(a[:, 2 * nf:3 * nf]), sigmoid(a[:, 3 * nf:])
    c = f * c_prev + i * g
    tanh_c = np.tanh(c)
    cache = {"i": i, "f": f, "g": g, "o": o, "c_prev": c_prev, "tanh_c": tanh_c,
             "x_conv": x_conv, "h_conv": h_conv, "x": x, "h_prev": h_prev, "params": params}
    return o * tanh_c, c, cache


def step_backward(dh, dc, cache, bug=None):
    i, f, g, o = cache["i"], cache["f"], cache["g"], cache["o"]
    c_prev, tanh_c = cache["c_prev"], cache["tanh_c"]
    d_c = dh * o * (1 - tanh_c ** 2)
    if bug == "float64 buffer":        # np.zeros(shape) is float64: float32 runs promote
        d_c = np.zeros(dh.shape) + d_c
    if bug != "dc not added to the cell's gradient":
        d_c = d_c + dc
    d_o = dh * tanh_c
    d_i, d_g = d_c * g, d_c * i
    d_f = d_c * (f * c_prev + i * g if bug == "c instead of c_prev" else c_prev)
    dc_prev = d_c if bug == "forget-gate path dc·f forgotten" else d_c * f
    if bug == "dc·f instead of δc·f":
        dc_prev = dc * f
    rows = [d_i * i * (1 - i), d_f * f * (1 - f), d_g * (1 - g ** 2), d_o * o * (1 - o)]
    if bug == "gates stacked i, g, f, o":
        rows = [rows[0], rows[2], rows[1], rows[3]]
    da = np.concatenate(rows, axis=1)
    dx, dwx, db = layers.conv2d_backward(da, cache["x_conv"])
    dh_prev, dwh, _ = layers.conv2d_backward(da, cache["h_conv"])
    return dx, dh_prev, dc_prev, {"Wx": dwx, "Wh": dwh, "b": db}


def _grade_step(bug=None):
    return _grade("03_convlstm_step", convlstm_step_forward=step_forward,
                  convlstm_step_backward=functools.partial(step_backward, bug=bug))


def test_convlstm_step_learner_answer_passes():
    report, text = _grade_step()
    assert report.status == "PASS", text


def test_convlstm_step_c_instead_of_c_prev_blames_the_forget_gate():
    report, text = _grade_step("c instead of c_prev")
    _assert_fails(report, text, "dWx is wrong in gate f (rows 2:4)", "gates i, g, o right",
                  "forget gate f: δa_f = δc ⊙ c_prev", not_named=("gate i", "dc_prev"))
    assert {"dWx gate f", "dWh gate f", "db gate f"} <= set(report.wrong)


def test_convlstm_step_forgotten_forget_gate_path_blames_dc_prev():
    report, text = _grade_step("forget-gate path dc·f forgotten")
    _assert_fails(report, text, "✗ dc_prev:", "through the forget gate", not_named=("gate",))
    assert report.wrong == ["dc_prev"]


def test_convlstm_step_dc_times_f_blames_dc_prev_with_its_own_cause():
    # dc_prev = dc ⊙ f leaves out the gradient reaching c through h; the old grader said
    # "through the forget gate", which the answer already has
    report, text = _grade_step("dc·f instead of δc·f")
    _assert_fails(report, text, "✗ dc_prev:", "dc_prev equals dc ⊙ f",
                  "δc ⊙ f, with δc = dc + dh ⊙ o ⊙ (1 − tanh² c)", not_named=("gate",))
    assert "through the forget gate" not in text
    assert report.wrong == ["dc_prev"]


def test_convlstm_step_float32_only_fault_blames_float32_handling():
    # right in float64, float64 in float32 runs: the fault is the dtype handling, and the
    # report must say so, not point at dx (the convolutions)
    report, text = _grade_step("float64 buffer")
    _assert_fails(report, text, "✗ float32:", "the float64 run passed",
                  "dx, dh_prev, dc_prev, dWx, dWh, db are wrong", "float32 handling",
                  "float64 array or constant")
    assert report.wrong == ["float32"]
    assert "convolution" not in text


def test_convlstm_step_dc_not_added_blames_gates_i_f_g_not_o():
    report, text = _grade_step("dc not added to the cell's gradient")
    _assert_fails(report, text, "db gate i, f, g", "gate o right", "δc = dc + dh ⊙ o",
                  not_named=("gate o", "o,"))


def test_convlstm_step_gate_order_blames_gates_f_and_g():
    report, text = _grade_step("gates stacked i, g, f, o")
    _assert_fails(report, text, "dWx gate f, g", "stacked i, f, g, o", not_named=("gate i", "g, o"))


# ----------------------------------------------------------------------------- 04 BPTT
def seq_forward(xs, params, h0, c0):
    """The exercise's given forward (tutorials/exercises/04_bptt.py)."""
    h, c, hs, steps = h0, c0, [], []
    for t in range(xs.shape[1]):
        h, c, step = memory.convlstm_step_forward(xs[:, t], h, c, params)
        hs.append(h)
        steps.append(step)
    return np.stack(hs, axis=1), {"steps": steps, "xs": xs, "params": params, "h0": h0, "c0": c0}


def bptt(dhs, cache, bug=None):
    steps = cache["steps"]
    t_len = len(steps)
    dh_next, dc_next = np.zeros_like(dhs[:, 0]), np.zeros_like(dhs[:, 0])
    if bug == "carry starts as NaN":   # np.empty: whatever was in memory, here NaN
        dh_next = np.full_like(dh_next, np.nan)
    dxs, dparams = [None] * t_len, {"Wx": 0, "Wh": 0, "b": 0}
    order = range(t_len) if bug == "walks forward in time" else reversed(range(t_len))
    for t in order:
        dh = dhs[:, t] if bug == "dh from step t+1 dropped" else dhs[:, t] + dh_next
        dxs[t], dh_next, dc_prev, dp = memory.convlstm_step_backward(dh, dc_next, steps[t])
        dc_next = np.zeros_like(dc_prev) if bug == "dc not carried" else dc_prev
        for key in dparams:
            dparams[key] = dp[key] if bug == "dW overwritten" else dparams[key] + dp[key]
    dparams["h0"], dparams["c0"] = dh_next, dc_next
    return np.stack(dxs, axis=1), dparams


def _grade_bptt(bug=None):
    return _grade("04_bptt", convlstm_forward=seq_forward,
                  convlstm_backward=functools.partial(bptt, bug=bug))


def test_bptt_learner_answer_passes():
    report, text = _grade_bptt()
    assert report.status == "PASS", text


def test_bptt_dropped_dh_carry_first_goes_wrong_at_t_2():
    report, text = _grade_bptt("dh from step t+1 dropped")
    _assert_fails(report, text, "dxs[:, 3:] is right", "first goes wrong at t = 2",
                  "dh_prev of step t+1 must be added", not_named=("t = 3", "t = 1"))
    assert report.wrong[0] == "step t = 2"


def test_bptt_dc_not_carried_first_goes_wrong_at_t_2():
    report, text = _grade_bptt("dc not carried")
    _assert_fails(report, text, "first goes wrong at t = 2", "dc_prev of step t+1 must be the dc")
    assert report.wrong[0] == "step t = 2"


def test_bptt_walking_forward_goes_wrong_at_the_last_step():
    report, text = _grade_bptt("walks forward in time")
    _assert_fails(report, text, "first goes wrong at t = 3", "reversed")
    assert report.wrong[0] == "step t = 3"


def test_bptt_nan_is_named_at_the_step_it_appears():
    report, text = _grade_bptt("carry starts as NaN")
    _assert_fails(report, text, "first goes wrong at t = 3 (dxs[:, 3] contains NaN")
    assert report.wrong[0] == "step t = 3"


def test_bptt_float32_only_fault_blames_float32_handling():
    def promotes(dhs, cache):          # float64 in, float64 out; float32 in, float64 out
        dxs, dparams = bptt(dhs, cache)
        return dxs.astype(np.float64), dparams
    report, text = _grade("04_bptt", convlstm_forward=seq_forward, convlstm_backward=promotes)
    _assert_fails(report, text, "✗ float32:", "the float64 run passed", "dxs is wrong")
    assert report.wrong == ["float32"]


def test_bptt_overwritten_weight_gradient_blames_dw_not_the_steps():
    report, text = _grade_bptt("dW overwritten")
    _assert_fails(report, text, "dWx is wrong in gate", "contribution of step 0 alone",
                  not_named=("step t",))


# ----------------------------------------------------------------------------- 05 sampler
CORNER_SIGNS = [(-1, -1), (-1, 1), (1, -1), (1, 1)]       # (∂/∂y_s, ∂/∂x_s) of wy·wx, per corner


def bilinear_backward(dout, img, grid, bug=None):
    n, c, h, w = img.shape
    xs, ys = grid[:, 0], grid[:, 1]                          # (N, Ho, Wo)
    x0, y0 = np.floor(xs), np.floor(ys)
    wx, wy = (x0 + 1 - xs, xs - x0), (y0 + 1 - ys, ys - y0)
    img_t = img.transpose(0, 2, 3, 1)                        # (N, H, W, C)
    dimg_t = np.zeros_like(img_t)
    d_t = dout.transpose(0, 2, 3, 1)                         # (N, Ho, Wo, C)
    dgrid = np.zeros_like(grid)
    batch = np.arange(n)[:, None, None]
    for q, (a, b) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        yq, xq = y0 + a, x0 + b
        sy, sx = CORNER_SIGNS[q]
        if bug == "bottom-left sign" and q == 2:
            sx = -sx
        valid = (xq >= 0) & (xq <= w - 1) & (yq >= 0) & (yq <= h - 1)
        if bug == "no border mask":
            valid = np.ones_like(valid)
        yi = np.clip(yq, 0, h - 1).astype(int)
        xi = np.clip(xq, 0, w - 1).astype(int)
        weight = (wy[a] * wx[b] * valid)[..., None]
        if bug == "plain += on repeated indices":
            dimg_t[batch, yi, xi] += d_t * weight
        else:
            np.add.at(dimg_t, (batch, yi, xi), d_t * weight)
        s = np.sum(d_t * img_t[batch, yi, xi], axis=-1) * valid    # Σ_c dout · img(q)
        dgrid[:, 0] += s * sx * wy[a]
        dgrid[:, 1] += s * sy * wx[b]
    return dimg_t.transpose(0, 3, 1, 2), dgrid


def _grade_sampler(bug=None):
    return _grade("05_bilinear_sampler",
                  bilinear_backward=functools.partial(bilinear_backward, bug=bug))


def test_sampler_learner_answer_passes():
    report, text = _grade_sampler()
    assert report.status == "PASS", text


def test_sampler_wrong_corner_sign_blames_that_corner_inside():
    report, text = _grade_sampler("bottom-left sign")
    _assert_fails(report, text, "corner bottom-left (y1, x0), inside the map", "dgrid x",
                  not_named=("top-left", "top-right", "bottom-right", "border"))
    assert "corner bottom-left (inside)" in report.wrong


def test_sampler_unmasked_border_blames_the_border():
    report, text = _grade_sampler("no border mask")
    _assert_fails(report, text, "at the border (left", "valid_q = 0", not_named=("inside",))
    assert "border (left): top-left and bottom-left" in report.wrong
    assert "border (outside): top-left and top-right and bottom-left and bottom-right" in report.wrong


def test_sampler_plain_add_on_repeated_indices_blames_dimg():
    report, text = _grade_sampler("plain += on repeated indices")
    _assert_fails(report, text, "np.add.at", not_named=("dgrid", "corner", "border"))
    assert report.wrong == ["dimg", "dimg (repeated reads)"]


# ----------------------------------------------------------------------------- 06 Huber
def huber_backward(dloss, flow, delta, bug=None):
    d_x = flow[..., :, 1:] - flow[..., :, :-1]
    d_y = flow[..., 1:, :] - flow[..., :-1, :]

    def slope(d):
        if bug == "quadratic everywhere":
            return d
        if bug == "linear everywhere":
            return delta * np.sign(d)
        return np.clip(d, -delta, delta)
    g_x = dloss * slope(d_x) / d_x.size
    g_y = dloss * slope(d_y) / d_y.size
    if bug == "sign":
        g_x, g_y = -g_x, -g_y
    dflow = np.zeros_like(flow)
    dflow[..., :, 1:] += g_x
    dflow[..., :, :-1] -= g_x
    dflow[..., 1:, :] += g_y
    dflow[..., :-1, :] -= g_y
    return dflow


def _grade_huber(bug=None):
    return _grade("06_huber_smoothness",
                  huber_smoothness_backward=functools.partial(huber_backward, bug=bug))


def test_huber_learner_answer_passes():
    report, text = _grade_huber()
    assert report.status == "PASS", text


def test_huber_quadratic_everywhere_blames_the_linear_regime():
    report, text = _grade_huber("quadratic everywhere")
    _assert_fails(report, text, "wrong in the linear regime (|D| > δ) of the differences D_x",
                  "D_y", "δ·sign(D)", not_named=("quadratic",))


def test_huber_linear_everywhere_blames_the_quadratic_regime():
    report, text = _grade_huber("linear everywhere")
    _assert_fails(report, text, "wrong in the quadratic regime (|D| ≤ δ)", not_named=("linear",))
    assert set(report.wrong) == {"dflow", "quadratic regime (D_x)", "quadratic regime (D_y)"}


def test_huber_wrong_sign_is_named():
    report, text = _grade_huber("sign")
    _assert_fails(report, text, "wrong sign", "+g to T[b]")


# ----------------------------------------------------------------------------- 07 RMSProp
def clip(grads, max_norm, bug=None):
    total = np.sqrt(sum(np.sum(g * g) for g in grads.values()))
    for name, g in grads.items():
        norm = np.sqrt(np.sum(g * g)) if bug == "per-tensor norm" else total
        if bug == "by value":
            np.clip(g, -max_norm, max_norm, out=g)
        elif norm > max_norm:
            if bug == "not in place":
                grads[name] = g * (max_norm / (norm + 1e-6))
            else:
                g *= max_norm / (norm + 1e-6)
    return total


def rmsprop(params, grads, v, lr, alpha=0.99, eps=1e-8, bug=None):
    for name, p in params.items():
        g = grads[name]
        if bug == "alpha swapped":
            v[name] *= 1 - alpha
            v[name] += alpha * g * g
        else:
            v[name] *= alpha
            v[name] += (1 - alpha) * g * g
        denom = np.sqrt(v[name] + eps) if bug == "eps inside the root" else np.sqrt(v[name]) + eps
        p -= lr * g / denom


def _grade_rmsprop(clip_bug=None, rms_bug=None):
    return _grade("07_rmsprop_clipping", clip_grad_norm=functools.partial(clip, bug=clip_bug),
                  rmsprop_step=functools.partial(rmsprop, bug=rms_bug))


def test_rmsprop_learner_answer_passes():
    report, text = _grade_rmsprop()
    assert report.status == "PASS", text


def test_rmsprop_eps_inside_the_root_blames_params_where_v_is_tiny():
    report, text = _grade_rmsprop(rms_bug="eps inside the root")
    _assert_fails(report, text, "where v is tiny (ε matters", "ε belongs outside the square root",
                  not_named=("v is large", "clip"))
    assert report.wrong == ["rmsprop_step: params where v is tiny"]


def test_rmsprop_alpha_swapped_blames_v():
    report, text = _grade_rmsprop(rms_bug="alpha swapped")
    _assert_fails(report, text, "running mean v is wrong after step 1", "α and 1 − α are swapped")
    assert report.wrong == ["rmsprop_step: v"]


def test_clipping_per_tensor_blames_the_global_norm():
    report, text = _grade_rmsprop(clip_bug="per-tensor norm")
    _assert_fails(report, text, "clipping active (norm > max_norm)", "own norm", "global",
                  not_named=("rmsprop", "inactive"))


def test_clipping_by_value_gets_its_cause():
    report, text = _grade_rmsprop(clip_bug="by value")
    _assert_fails(report, text, "clipping active (norm > max_norm)", "clips each element by value",
                  "rescales all gradients together by max_norm / norm",
                  not_named=("rmsprop", "inactive"))


def test_clipping_not_in_place_is_named():
    report, text = _grade_rmsprop(clip_bug="not in place")
    _assert_fails(report, text, "was replaced by a new array")
    assert report.wrong == ["clip_grad_norm: in place"]


# ----------------------------------------------------------------------------- 08 photometric
def photo_backward(flow, clip, sigma, gm_scale, bug=None):
    """A learner's ∂P/∂T, written from exercise 08's equations."""
    from stvae_np import losses, sampler
    n, t, c, hh, ww = clip.shape
    b = losses.gaussian_blur(clip.reshape(n * t, c, hh, ww), sigma, layers, {}).reshape(clip.shape)
    frames, nxt = b[:, :-1].reshape(-1, c, hh, ww), b[:, 1:].reshape(-1, c, hh, ww)
    grid = sampler.flow_to_grid(2 * upsample_forward(flow))
    d = sampler.bilinear_forward(frames, grid)[0] - nxt
    c2 = gm_scale ** 2
    rho_d = 2 * d if bug == "rho' of L2" else 2 * d * c2 / (d * d + c2) ** 2
    w = nxt
    dwarped = w / (w.size if bug == "normalised by M" else w.sum()) * rho_d
    if bug == "weights differentiated":
        rho = d * d / (d * d + c2)
        dwarped = dwarped + (rho - (w * rho).sum() / w.sum()) / w.sum()
    dimg, dgrid = bilinear_backward(dwarped, frames, grid)
    if bug == "dimg for dgrid":
        dgrid = dimg
    return upsample_backward(dgrid) * (1 if bug == "no x2" else 2)


def _grade_photo(bug=None):
    return _grade("08_photometric", photometric_backward=functools.partial(photo_backward, bug=bug))


def test_photometric_learner_answer_passes():
    report, text = _grade_photo()
    assert report.status == "PASS", text


@pytest.mark.parametrize("bug, part", [
    ("rho' of L2", "robust error's derivative"),
    ("normalised by M", "weighting's normalisation"),
    ("weights differentiated", "weighting's normalisation"),
    ("no x2", "up-sampling's transpose"),
    ("dimg for dgrid", "gradient sent into the frames"),
])
def test_photometric_mistake_is_located(bug, part):
    report, text = _grade_photo(bug)
    _assert_fails(report, text, f"✗ {part}:")
    assert report.wrong == ["dflow", part], text


# ----------------------------------------------------------------------------- 09 capstone
def _capstone_answer(bug=None):
    """A learner's stages and loss_and_grads, written from exercise 09's text, chaining the
    learner-style ops of this file; ``bug`` plants one mistake."""
    def dec(dpred, fw, params):
        dup, dw, db = conv_backward(dpred, fw["up"], params["dec.W"],
                                    bug="kernel flipped twice" if bug == "decoder kernel flipped twice" else None)
        return upsample_backward(dup, bug="mean" if bug == "decoder up-sampling mean" else None), \
            {"dec.W": dw, "dec.b": db}

    def samp(dwarped, fw):
        b = {"sampler plain +=": "plain += on repeated indices",
             "sampler corner sign": "bottom-left sign"}.get(bug)
        return bilinear_backward(dwarped, fw["e"], fw["grid"], bug=b)

    def flow_grad(dgrid, fw, cfg):
        photo_bug = {"dgrid not scaled to memory pixels": "no x2", "photo weights differentiated":
                     "weights differentiated", "photo rho' of L2": "rho' of L2"}.get(bug)
        dflow = 0 if bug == "dgrid left out of dflow" else dgrid
        if bug != "Huber term forgotten":
            dflow = dflow + cfg.huber_weight * huber_backward(1.0, fw["flow"], cfg.huber_delta)
        return dflow + cfg.photo_weight * photo_backward(fw["flow"], fw["clip"], cfg.photo_blur,
                                                         cfg.photo_gm_scale, bug=photo_bug)

    def head(dflow, fw, params):
        g = {}
        tgrad = (lambda k: 1 - fw[f"a{k}"] ** 2) if bug == "flow tanh' of the input" else \
            (lambda k: 1 - fw[f"f{k}"] ** 2)
        df2, g["flow3.W"], g["flow3.b"] = conv_backward(dflow, fw["f2"], params["flow3.W"])
        df1, g["flow2.W"], g["flow2.b"] = conv_backward(df2 * tgrad(2), fw["f1"], params["flow2.W"])
        dhs, g["flow1.W"], g["flow1.b"] = conv_backward(df1 * tgrad(1), fw["hs_flat"], params["flow1.W"])
        return dhs, g

    def mem(dhs_flat, fw, params):
        n, s = fw["lstm_cache"]["xs"].shape[:2]
        dhs = dhs_flat.reshape((n, s) + dhs_flat.shape[1:])
        if bug == "BPTT dh for the wrong steps":
            dhs = np.roll(dhs, -1, axis=1)
        dxs, dp = bptt(dhs, fw["lstm_cache"], bug="dc not carried" if bug == "BPTT dc not carried" else None)
        return dxs.reshape(dhs_flat.shape[:1] + dxs.shape[2:]), \
            {"lstm.Wx": dp["Wx"], "lstm.Wh": dp["Wh"], "lstm.b": dp["b"]}

    def enc(de, fw, params):
        t = fw["t_enc"]
        if bug == "max-pool routed by the wrong argmax":      # every tied pixel of a window wins
            dt = maxpool_backward(de, t, bug="mask x == max")
        else:
            dt = maxpool_backward(de, t)
        tgrad = 1 - fw["a_enc"] ** 2 if bug == "encoder tanh' of the input" else 1 - t ** 2
        _, dw, db = conv_backward(dt * tgrad, fw["inputs"], params["enc.W"])
        return {"enc.W": dw, "enc.b": db}

    def loss_and_grads(params, clip, config):
        loss, fw = grader.capstone_forward(params, clip, config)
        dpred = 2 * (fw["pred"] - fw["targets"]) / fw["pred"].size
        dwarped, grads = dec(dpred, fw, params)
        de_s, dgrid = samp(dwarped, fw)
        dhs, g = head(flow_grad(dgrid, fw, config), fw, params)
        grads.update(g)
        de_m, g = mem(dhs, fw, params)
        grads.update(g)
        de = de_s if bug == "two paths into e not added" else de_s + de_m
        grads.update(enc(de, fw, params))
        return loss, grads
    return dict(loss_and_grads=loss_and_grads, decoder_backward=dec, sampler_backward=samp,
                flow_gradient=flow_grad, flow_head_backward=head, memory_backward=mem,
                encoder_backward=enc)


def test_capstone_reference_stages_equal_the_package_model():
    cfg, params, clip = grader._capstone_data()
    loss, grads = grader._sol_loss_and_grads(params, clip, cfg)
    want_loss, want = grader._package_grads(params, clip, cfg)
    assert abs(loss - want_loss) < 1e-12 * want_loss
    for k in want:
        assert grader._err(grads[k], want[k]) < 1e-10, k
    # the clips have blank windows (max-pool ties) and the flow is not zero
    _, fw = grader.capstone_forward(params, clip, cfg)
    assert np.any(fw["t_enc"][..., ::2, ::2] == fw["t_enc"][..., 1::2, 1::2])
    assert np.abs(fw["flow"]).max() > 0.3


def test_capstone_learner_answer_passes_and_trains():
    answer = _capstone_answer()
    report = grader.check("09_capstone", **answer, train_steps=0)
    assert report.status == "PASS", report.text()
    yours, theirs = grader.capstone_training(answer["loss_and_grads"], steps=20)
    assert len(yours) == 20 and np.allclose(yours, theirs, rtol=1e-6)
    assert np.mean(yours[-5:]) < 0.85 * np.mean(yours[:5])


CAPSTONE_MISTAKES = [
    ("two paths into e not added", "the sum of the two paths into e"),
    ("dgrid not scaled to memory pixels", "photometric term"),
    ("flow tanh' of the input", "flow head and its tanh"),
    ("photo weights differentiated", "photometric term"),
    ("BPTT dh for the wrong steps", "memory"),
    ("max-pool routed by the wrong argmax", "encoder"),
    ("decoder up-sampling mean", "decoder"),
    ("decoder kernel flipped twice", "decoder"),
    ("sampler plain +=", "sampler's image path"),
    ("sampler corner sign", "sampler's grid path"),
    ("dgrid left out of dflow", "dgrid into dflow"),
    ("Huber term forgotten", "Huber smoothness term"),
    ("photo rho' of L2", "photometric term"),
    ("BPTT dc not carried", "memory"),
    ("encoder tanh' of the input", "encoder"),
]


@pytest.mark.parametrize("bug, stage", CAPSTONE_MISTAKES, ids=[b for b, _ in CAPSTONE_MISTAKES])
def test_capstone_mistake_is_caught_and_located(bug, stage):
    report = grader.check("09_capstone", **_capstone_answer(bug), train_steps=0)
    text = report.text()
    assert report.status == "FAIL", text
    assert report.wrong[:2] == ["gradients", f"first wrong stage: {stage}"], text


def test_capstone_causes_are_named():
    for bug, cause in [("flow tanh' of the input", "tanh' of the input"),
                       ("dgrid not scaled to memory pixels", "without the ×2"),
                       ("BPTT dh for the wrong steps", "dh of step t given to step t − 1"),
                       ("max-pool routed by the wrong argmax", "every tied pixel wins"),
                       ("two paths into e not added", "only the sampler's path")]:
        text = grader.check("09_capstone", **_capstone_answer(bug), train_steps=0).text()
        assert cause in text, text
