"""The grader of the exercises in ``tutorials/exercises/``: is the learner's function
right, and if not, *where* is it wrong?

It lives beside the exercises, not in the package: a tool for learners, which imports the
package's plain ops (``stvae_np.layers``, ``stvae_np.memory``, ``sampler``, ``losses``,
``optim``) as their solutions. Each exercise's first cell puts the repository root and
this folder on ``sys.path`` and does ``import grader``; ``tests/test_exercises.py`` does
the same. Each exercise ends with a grading cell::

    grader.grade("01_convolution", conv2d_forward=conv2d_forward, conv2d_backward=conv2d_backward)

which checks every function it is given

* against the solution (the reference op) on values, in float64;
* against centred finite differences of the reference forward in float64
  (:func:`stvae_np.gradcheck.numerical_gradient`), for backward passes;
* on the shapes and dtypes it must keep (a float32 run must stay float32), and that a
  backward pass leaves its inputs alone;

and, when something is wrong, locates it: which output (dx, dW, db, ...), which gate of
the four (rows i, f, g, o of dWx, dWh, db), for backpropagation through time the latest
step at which the gradient first goes wrong walking back from T−1, which bilinear corner
and whether inside the map or at its border, which Huber regime, which part of RMSProp.

A function that still raises ``NotImplementedError`` is "not written yet": the report
says so and the script ends normally (exit status 0). A wrong function ends the script
with status 1 (in a notebook nothing exits). The environment variable
``STVAE_EXERCISE_SOLUTION=1`` grades the solution in place of the learner's functions;
``STVAE_HINTS=n`` shows the first n hints when an exercise runs as a script (in a
notebook each run of the hint cell unlocks one more).

Errors are relative, ``max |a − b| / (|a| + |b|)`` as :func:`stvae_np.gradcheck.rel_error`,
with the floor raised to 1e-6 of the largest reference entry: finite differences leave
round-off of ~1e-11 on entries that should be 0, which plain ``rel_error`` would count.
Everything here is NumPy on the CPU, at tiny sizes: one exercise grades in about a second.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import shlex
import sys
import traceback

import numpy as np

from stvae_np import layers, losses, memory, optim, sampler
from stvae_np.gradcheck import numerical_gradient

SOLUTION_ENV = "STVAE_EXERCISE_SOLUTION"
HINTS_ENV = "STVAE_HINTS"
TOL = 1e-7        # float64, against the reference
TOL_FD = 1e-6     # float64, against centred finite differences (the project's bar for ops)
TOL_F32 = 1e-3    # the float32 run, against the float64 reference
GATES = ("i", "f", "g", "o")
GATE_NAMES = {"i": "input gate i", "f": "forget gate f", "g": "candidate g", "o": "output gate o"}
CORNERS = (("top-left (y0, x0)", 0, 0), ("top-right (y0, x1)", 0, 1),
           ("bottom-left (y1, x0)", 1, 0), ("bottom-right (y1, x1)", 1, 1))


# ----------------------------------------------------------------------------- report
class _Stop(Exception):
    """A check found something that makes the rest of its part meaningless."""


class Report:
    """What the grader found. ``wrong`` holds the short names of the wrong parts (they
    also head the failure lines of ``text()``); ``todo`` the functions not written yet."""

    def __init__(self, exercise, title):
        self.exercise, self.title = exercise, title
        self.lines, self.wrong, self.todo, self.passed = [], [], [], []
        self.footer = []          # printed above the final line: where to find more help

    def ok(self, text):
        self.lines.append(f"  ✓ {text}")

    def fail(self, where, text):
        self.wrong.append(where)
        self.lines.append(f"  ✗ {where}: {text}")

    def info(self, text):
        self.lines.append(f"      {text}")

    @contextlib.contextmanager
    def part(self, fn_name):
        """Grade one learner function; NotImplementedError means "not written yet"."""
        before = len(self.wrong)
        try:
            yield
        except NotImplementedError:
            self.todo.append(fn_name)
            self.lines.append(f"  · {fn_name}: not written yet (it raises NotImplementedError)")
            return
        except _Stop:
            pass
        except Exception as err:              # the learner's code crashed: say where, no traceback
            self.fail(fn_name, f"raised {type(err).__name__}: {err}")
            self.info(_where_raised(err))
        if len(self.wrong) == before:
            self.passed.append(fn_name)

    @property
    def status(self):
        return "FAIL" if self.wrong else "TODO" if self.todo else "PASS"

    def final_line(self):
        if self.status == "PASS":
            return f"grade: PASS ({self.exercise}: {', '.join(self.passed)} right)"
        if self.status == "FAIL":
            return f"grade: FAIL ({self.exercise}: {'; '.join(dict.fromkeys(self.wrong))})"
        return f"grade: not written yet ({', '.join(self.todo)})"

    def text(self):
        head = f"── grading {self.exercise}: {self.title} "
        stuck = "" if self.footer else "; stuck? run the hint cell"     # else the footer says
        todo = (["  (replace each `raise NotImplementedError` with your code and run the grading "
                 f"cell again{stuck})"] if self.status == "TODO" else [])
        return "\n".join([head + "─" * max(0, 72 - len(head)), *self.lines, *todo,
                          *self.footer, self.final_line()])

    __str__ = text

    def __repr__(self):
        return f"<Report {self.final_line()}>"


def _where_raised(err):
    """'at <file>:<line>: <code>' for the innermost frame outside NumPy and this file."""
    frames = [f for f in traceback.extract_tb(err.__traceback__)
              if f.filename != __file__ and os.sep + "numpy" + os.sep not in f.filename]
    if not frames:
        return "(inside NumPy or the grader)"
    f = frames[-1]
    return f"at {os.path.basename(f.filename)}:{f.lineno}: {(f.line or '').strip()}"


# ----------------------------------------------------------------------------- comparisons
def _err(got, want, floor=1e-6):
    """Largest relative error (see the module docstring); inf for NaN/inf or bad shapes."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape or not np.all(np.isfinite(got)):
        return float("inf")
    if got.size == 0:
        return 0.0
    floor = max(floor * float(np.max(np.abs(want))), 1e-30)
    return float(np.max(np.abs(got - want) / np.maximum(np.abs(got) + np.abs(want), floor)))


def _close(got, want, tol=TOL):
    return _err(got, want) <= tol


def _mismatch(got, want, fd=None, tol=TOL, dtype=None):
    """None when ``got`` matches ``want`` (and ``fd``); else a phrase saying how it does not."""
    if not isinstance(got, np.ndarray):
        return f"is a {type(got).__name__}, not an array of shape {want.shape}"
    if got.shape != want.shape:
        return f"has shape {got.shape}, it must be {want.shape}"
    dtype = want.dtype if dtype is None else dtype
    if got.dtype != dtype:
        return (f"is {got.dtype} for {np.dtype(dtype).name} inputs; it must keep their dtype "
                f"(np.zeros(shape) is float64: use np.zeros_like or dtype=x.dtype)")
    if not np.all(np.isfinite(got)):
        return "contains NaN or inf"
    e = _err(got, want)
    e_fd = None if fd is None else _err(got, fd)
    if e > tol or (e_fd is not None and e_fd > TOL_FD):
        against_fd = "" if e_fd is None else f", {e_fd:.1e} against finite differences"
        return f"is wrong (relative error {e:.1e} against the reference{against_fd})"
    return None


def _numgrads(key, f, inputs, dout):
    """Centred differences of ``sum(f(**inputs) * dout)`` for every input, cached per process
    (the inputs of each check are seeded, so a second grading reuses the first's)."""
    if key not in _FD_CACHE:
        work = {k: np.array(v, dtype=np.float64) for k, v in inputs.items()}
        grads = {}
        for name in work:
            grads[name] = numerical_gradient(lambda _, name=name: f(**work), work[name], dout)
        _FD_CACHE[key] = grads
    return _FD_CACHE[key]


_FD_CACHE = {}


def _snapshot(args):
    """Copies of the arrays among ``args`` (and among the values of dict arguments)."""
    return [{k: v.copy() for k, v in a.items() if isinstance(v, np.ndarray)} if isinstance(a, dict)
            else a.copy() if isinstance(a, np.ndarray) else None for a in args]


def _call(r, fn_name, fn, *args, names=()):
    """Call the learner's function; report an input it changed in place."""
    before = _snapshot(args)
    out = fn(*args)
    for i, (a, b) in enumerate(zip(args, before)):
        arrays = [(k, a.get(k), b[k]) for k in b] if isinstance(a, dict) else [(None, a, b)]
        for key, now, then in arrays:
            if isinstance(then, np.ndarray) and not np.array_equal(now, then, equal_nan=True):
                name = names[i] if i < len(names) else f"argument {i}"
                name = name if key is None else f"{name}[{key!r}]"
                r.fail(fn_name, f"changed its input {name} in place; a backward pass must leave "
                                "its inputs alone (write `x = x * s`, not `x *= s`)")
                raise _Stop
    return out


def _unpack(r, fn_name, out, names):
    if not isinstance(out, (tuple, list)) or len(out) != len(names):
        r.fail(fn_name, f"returned {type(out).__name__}"
                        f"{'' if not isinstance(out, tuple) else f' of length {len(out)}'}; "
                        f"it must return the tuple ({', '.join(names)})")
        raise _Stop
    return out


def _rng(seed):
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- 01 convolution
def check_convolution(conv2d_forward, conv2d_backward):
    """Exercise 01: ``conv2d_forward(x, w, b) -> out`` and ``conv2d_backward(dout, x, w) ->
    (dx, dw, db)``; solution ``layers.conv2d_forward`` / ``conv2d_backward``."""
    r = Report("01_convolution", "convolution, forward and backward")
    fwd = lambda x, w, b=None: layers.conv2d_forward(x, w, b)[0]      # noqa: E731
    rng = _rng(1)
    # N, C, H, W, F, k: C ≠ F so a missing transpose shows; H ≠ W so a swapped axis shows
    cases = [(2, 3, 6, 5, 4, 3), (1, 2, 5, 7, 3, 5)]
    data = []
    for n, c, h, wd, f, k in cases:
        data.append((rng.standard_normal((n, c, h, wd)), rng.standard_normal((f, c, k, k)),
                     rng.standard_normal(f), rng.standard_normal((n, f, h, wd))))

    with r.part("conv2d_forward"):
        for x, w, b, _ in data:
            got = _call(r, "conv2d_forward", conv2d_forward, x, w, b, names=("x", "w", "b"))
            want = fwd(x, w, b)
            problem = _mismatch(got, want)
            if problem:
                r.fail("out", f"conv2d_forward's output {problem} (x {x.shape}, w {w.shape})")
                _diagnose_conv(r, got, want, lambda ww: fwd(x, ww, b), w, b, "out")
                raise _Stop
        x, w, b, _ = data[0]
        f32 = [a.astype(np.float32) for a in (x, w, b)]
        problem = _mismatch(conv2d_forward(*f32), fwd(x, w, b), tol=TOL_F32, dtype=np.float32)
        if problem:
            r.fail("out (float32)", f"conv2d_forward's output {problem}")
            raise _Stop
        r.ok("conv2d_forward: matches the reference for k = 3 and 5; keeps float32")

    with r.part("conv2d_backward"):
        for case, (x, w, b, dout) in enumerate(data):
            got = _unpack(r, "conv2d_backward",
                          _call(r, "conv2d_backward", conv2d_backward, dout, x, w,
                                names=("dout", "x", "w")), ("dx", "dw", "db"))
            want = layers.conv2d_backward(dout, layers.conv2d_forward(x, w, b)[1])
            fd = _numgrads(("conv", case), fwd, {"x": x, "w": w, "b": b}, dout)
            bad = []
            for name, g, wt, num in zip(("dx", "dW", "db"), got, want, (fd["x"], fd["w"], fd["b"])):
                problem = _mismatch(g, wt, num)
                if problem:
                    bad.append(name)
                    r.fail(name, f"{name} {problem}")
                    _diagnose_conv_backward(r, name, g, wt, x, w, dout)
            if bad:
                right = [n for n in ("dx", "dW", "db") if n not in bad]
                r.info(f"(x {x.shape}, w {w.shape})"
                       + (f"; right: {', '.join(right)}" if right else ""))
                raise _Stop
        x, w, b, dout = data[0]
        got = conv2d_backward(*(a.astype(np.float32) for a in (dout, x, w)))
        want = layers.conv2d_backward(dout, layers.conv2d_forward(x, w, b)[1])
        for name, g, wt in zip(("dx", "dW", "db"), got, want):
            problem = _mismatch(g, wt, tol=TOL_F32, dtype=np.float32)
            if problem:
                r.fail(f"{name} (float32)", f"{name} {problem}")
                raise _Stop
        r.ok("conv2d_backward: dx, dW, db match the reference and finite differences; keep float32")
    return r


def _interior_only(got, want, p):
    """True when the map's interior (p pixels in from the border) is right and the border is not."""
    if p == 0 or got.shape != want.shape or got.shape[-1] <= 2 * p or got.shape[-2] <= 2 * p:
        return False
    inner = (Ellipsis, slice(p, -p), slice(p, -p))
    return _close(got[inner], want[inner]) and not _close(got, want)


def _diagnose_conv(r, got, want, conv_with, w, b, name):
    if not isinstance(got, np.ndarray) or got.shape != want.shape:
        return
    k = w.shape[-1]
    if _close(got, conv_with(w[:, :, ::-1, ::-1])):
        r.info("it equals the convolution with the kernel flipped: this layer is a "
               "cross-correlation, W[f, c, u, v] multiplies x_pad[n, c, y + u, x + v] (no flip)")
    elif b is not None and _close(got + b.reshape(1, -1, 1, 1), want):
        r.info("only the bias is missing: add b[f] to every pixel of output channel f")
    elif _interior_only(got, want, k // 2):
        r.info(f"only the border is wrong: 'same' padding puts k // 2 = {k // 2} zeros "
               "on every side")


def _diagnose_conv_backward(r, name, got, want, x, w, dout):
    k = w.shape[-1]
    f, c = w.shape[:2]
    if name == "dx" and isinstance(got, np.ndarray) and got.shape == want.shape:
        unflipped = layers.conv2d_forward(dout, w.transpose(1, 0, 2, 3))[0]
        if _close(got, unflipped):
            r.info("dx equals dout correlated with the kernel NOT flipped: dx is the full "
                   "correlation with W flipped once, W[:, :, ::-1, ::-1] (a flip done twice "
                   "undoes itself)")
        elif _interior_only(got, want, k // 2):
            r.info("only the border of dx is wrong: the padding of dout (k // 2 zeros), or "
                   "cropping the padded gradient back to H × W")
    elif name == "dW" and isinstance(got, np.ndarray):
        if got.shape == (c, f, k, k) and c != f:
            r.info("dW has the channel axes the wrong way round, (C, F, k, k): a transpose "
                   "is missing; W and dW are (F, C, k, k)")
        elif got.shape == want.shape and _close(got, want[:, :, ::-1, ::-1]):
            r.info("dW is flipped: dW[f, c, u, v] = Σ dout[n, f, y, x] · x_pad[n, c, y + u, x + v]")
    elif name == "db" and isinstance(got, np.ndarray):
        if got.shape != want.shape:
            r.info(f"db is one number per output channel, shape ({f},): sum dout over the "
                   "batch and both spatial axes, axis=(0, 2, 3)")
        elif _close(got * x.shape[0] * x.shape[2] * x.shape[3], want):
            r.info("db is the mean of dout; it is the sum over (n, y, x)")


# ----------------------------------------------------------------------------- 02 pool, up-sample
def check_pool_upsample(maxpool2_forward, maxpool2_backward, upsample2_forward, upsample2_backward):
    """Exercise 02: ``maxpool2_forward(x) -> out``, ``maxpool2_backward(dout, x) -> dx``,
    ``upsample2_forward(x) -> out``, ``upsample2_backward(dout) -> dx``; solution the
    functions of the same names in ``stvae_np.layers``."""
    r = Report("02_pool_upsample", "2×2 max-pooling and ×2 up-sampling")
    rng = _rng(2)
    n, c, h, w = 2, 3, 4, 6
    # distinct values 0.1 apart: no ties, and finite differences never switch a winner
    x = rng.permutation(n * c * h * w).reshape(n, c, h, w) * 0.1 - 3.0
    dpool = rng.standard_normal((n, c, h // 2, w // 2))
    xs = rng.standard_normal((n, c, h // 2, w // 2))
    dup = rng.standard_normal((n, c, h, w))
    f32 = np.float32

    with r.part("maxpool2_forward"):
        got = _call(r, "maxpool2_forward", maxpool2_forward, x, names=("x",))
        want = layers.maxpool2_forward(x)[0]
        problem = _mismatch(got, want)
        if problem is None:
            problem = _mismatch(maxpool2_forward(x.astype(f32)), want, tol=TOL_F32, dtype=f32)
        if problem:
            r.fail("maxpool2_forward out", f"the pooled map {problem}")
            if isinstance(got, np.ndarray) and got.shape == want.shape:
                wrong = ~np.isclose(got, want)
                r.info(f"{int(wrong.sum())} of {wrong.size} windows give the wrong maximum: window "
                       "(y, x) covers rows 2y, 2y+1 and columns 2x, 2x+1 (reshape to "
                       "(N, C, H/2, 2, W/2, 2), take the max over axes 3 and 5)")
            raise _Stop
        r.ok("maxpool2_forward: matches the reference; keeps float32")

    with r.part("maxpool2_backward"):
        got = _call(r, "maxpool2_backward", maxpool2_backward, dpool, x, names=("dout", "x"))
        want = layers.maxpool2_backward(dpool, layers.maxpool2_forward(x)[1])
        fd = _numgrads("maxpool", lambda x: layers.maxpool2_forward(x)[0], {"x": x}, dpool)["x"]
        problem = _mismatch(got, want, fd)
        if problem is None:
            problem = _mismatch(maxpool2_backward(dpool.astype(f32), x.astype(f32)), want,
                                tol=TOL_F32, dtype=f32)
        if problem:
            r.fail("maxpool2_backward dx", f"dx {problem}")
            if isinstance(got, np.ndarray) and got.shape == want.shape:
                _diagnose_pool(r, got, want)
            raise _Stop
        # Ties: the model's blank background ties four ways in every window. No finite
        # differences here (a tie is a kink); the reference's argmax is the rule.
        x_tie = _tied_windows()
        d_tie = rng.standard_normal((1, 1) + tuple(s // 2 for s in x_tie.shape[2:]))
        got = _call(r, "maxpool2_backward", maxpool2_backward, d_tie, x_tie, names=("dout", "x"))
        want = layers.maxpool2_backward(d_tie, layers.maxpool2_forward(x_tie)[1])
        problem = _mismatch(got, want)
        if problem:
            r.fail("maxpool2_backward dx (ties)", f"with tied maxima, dx {problem}: {TIE_RULE}")
            if isinstance(got, np.ndarray) and got.shape == want.shape:
                _diagnose_ties(r, got, want, x_tie)
            raise _Stop
        r.ok("maxpool2_backward: dx matches the reference and finite differences, and the "
             "first-winner rule on tied windows; keeps float32")

    with r.part("upsample2_forward"):
        got = _call(r, "upsample2_forward", upsample2_forward, xs, names=("x",))
        want = layers.upsample2_forward(xs)[0]
        problem = _mismatch(got, want)
        if problem is None:
            problem = _mismatch(upsample2_forward(xs.astype(f32)), want, tol=TOL_F32, dtype=f32)
        if problem:
            r.fail("upsample2_forward out", f"the up-sampled map {problem}")
            r.info("out[n, c, y, x] = x[n, c, y // 2, x // 2]: every pixel becomes a 2×2 block")
            raise _Stop
        r.ok("upsample2_forward: matches the reference; keeps float32")

    with r.part("upsample2_backward"):
        got = _call(r, "upsample2_backward", upsample2_backward, dup, names=("dout",))
        up_cache = layers.upsample2_forward(xs)[1]
        want = layers.upsample2_backward(dup, up_cache)
        fd = _numgrads("upsample", lambda x: layers.upsample2_forward(x)[0], {"x": xs}, dup)["x"]
        problem = _mismatch(got, want, fd)
        if problem is None:
            problem = _mismatch(upsample2_backward(dup.astype(f32)), want, tol=TOL_F32, dtype=f32)
        if problem:
            r.fail("upsample2_backward dx", f"dx {problem}")
            if isinstance(got, np.ndarray) and got.shape == want.shape:
                if _close(4 * got, want):
                    r.info("dx is the mean of each 2×2 block of dout: every input pixel was "
                           "copied to 4 output pixels and each copy sends its gradient back, "
                           "so dx is the block's sum")
                elif _close(got, dup[:, :, ::2, ::2]):
                    r.info("dx is only the top-left pixel of each 2×2 block of dout; it is the "
                           "sum of all four")
            raise _Stop
        r.ok("upsample2_backward: dx matches the reference and finite differences; keeps float32")
    return r


TIE_RULE = ("on a tie the first of the tied pixels in row-major order (top-left, "
            "top-right, bottom-left, bottom-right) wins and gets all of dout, the others 0, "
            "as argmax over the window's 4 pixels does (stvae_np.layers.maxpool2_forward)")


def _tied_windows():
    """A (1, 1, 4, 8) map of eight 2×2 windows whose maxima tie: four ways (all zero, like
    the blank background, and all 0.5), three ways (top-left excluded), and two ways at
    five pairs of corners, so that a rule other than "first in row-major order" (the last,
    every tied pixel, column-major order) gives a wrong dx in some window."""
    return np.array([[0, 0, .5, .5, -1, 2, 1, 1],      # windows: all 0 | all .5 | three-way
                     [0, 0, .5, .5, 2, 2, 0, -1],      #   (tr, bl, br) | tl = tr
                     [1, 0, 1, -2, 0, 1, -1, 0],       # tl = bl | tl = br | tr = bl
                     [1, 0, 0, 1, 1, 0, 3, 3]],        #   | bl = br
                    dtype=np.float64).reshape(1, 1, 4, 8)


def _diagnose_ties(r, got, want, x):
    """How many pixels of each tied window got gradient, and which rule that looks like."""
    n, c, h, w = x.shape
    per_window = lambda a: a.reshape(n, c, h // 2, 2, w // 2, 2)      # noqa: E731
    receivers = (per_window(got) != 0).sum(axis=(3, 5))
    if np.any(receivers > 1):
        r.info(f"{int(np.sum(receivers > 1))} tied windows sent gradient to more than one pixel: "
               "a mask x == max marks every tied pixel (an all-zero window marks all four)")
    else:
        r.info("one pixel per window gets the gradient, but not always the first of the tied "
               "ones in row-major order")


def _diagnose_pool(r, got, want):
    winner = want != 0            # dout is never exactly 0, so the reference is non-zero at winners
    losers = ~winner & (got != 0)
    if losers.any():
        r.info(f"gradient reached {int(losers.sum())} pixels that did not win their 2×2 window: "
               "only the maximum of a window passes the gradient on, the other three get 0")
    at_winners = got[winner] / want[winner]
    if np.allclose(at_winners, 0.25):
        r.info("each winner gets a quarter of dout: that is average-pooling's backward")
    elif not np.allclose(at_winners, 1.0):
        r.info("the winners do not get dout: dx[n, c, 2y + a, 2x + b] = dout[n, c, y, x] "
               "for the winning (a, b)")
    bad = [name for name, a, b in CORNERS
           if not _close(got[:, :, a::2, b::2], want[:, :, a::2, b::2])]
    r.info(f"wrong at the {', '.join(n.split(' ')[0] for n in bad)} pixel(s) of the windows")


# ----------------------------------------------------------------------------- 03 ConvLSTM step
def _convlstm_data(rng, n, t_len, c, nf, h, w, k):
    params = {"Wx": 0.4 * rng.standard_normal((4 * nf, c, k, k)),
              "Wh": 0.4 * rng.standard_normal((4 * nf, nf, k, k)),
              "b": 0.3 * rng.standard_normal(4 * nf)}
    shape = (n, nf, h, w)
    x = rng.standard_normal((n, t_len, c, h, w) if t_len else (n, c, h, w))
    return params, x, rng.standard_normal(shape), rng.standard_normal(shape)


def _gates_wrong(got, want):
    """The gates (of i, f, g, o) whose rows of a (4F, ...) gradient differ."""
    nf = want.shape[0] // 4
    return [gate for j, gate in enumerate(GATES)
            if not _close(got[j * nf:(j + 1) * nf], want[j * nf:(j + 1) * nf])]


def _check_dparams(r, fn, got, want, fd=None):
    """Compare dparams {"Wx","Wh","b"} gate by gate; returns the set of wrong gates."""
    if not isinstance(got, dict) or not all(k in got for k in ("Wx", "Wh", "b")):
        r.fail(f"{fn} dparams", 'dparams must be a dict with keys "Wx", "Wh" and "b"')
        raise _Stop
    bad = set()
    for key in ("Wx", "Wh", "b"):
        name = "d" + key if key != "b" else "db"
        problem = _mismatch(got[key], want[key], None if fd is None else fd[key])
        if problem and isinstance(got[key], np.ndarray) and got[key].shape == want[key].shape:
            gates = _gates_wrong(got[key], want[key])
            if gates:
                nf = want[key].shape[0] // 4
                rows = ", ".join(f"{g} (rows {GATES.index(g) * nf}:{(GATES.index(g) + 1) * nf})"
                                 for g in gates)
                right = [g for g in GATES if g not in gates]
                r.fail(f"{name} gate {', '.join(gates)}",
                       f"{name} is wrong in gate {rows}"
                       + (f"; gate{'s' if len(right) > 1 else ''} {', '.join(right)} right"
                          if right else ""))
                bad.update(gates)
                continue
        if problem:
            r.fail(name, f"{name} {problem}")
    return bad


_GATE_FORMULAS = {
    "i": "δa_i = δc ⊙ g ⊙ i(1 − i)",
    "f": "δa_f = δc ⊙ c_prev ⊙ f(1 − f)   (c_prev, not c)",
    "g": "δa_g = δc ⊙ i ⊙ (1 − g²)   (g = tanh(a_g): its derivative is 1 − g², not g(1 − g))",
    "o": "δa_o = dh ⊙ tanh(c) ⊙ o(1 − o)",
}


def _explain_gates(r, bad):
    if not bad:
        return
    if bad == {"i", "f", "g"}:
        r.info("i, f and g all go through δc and o does not: look at δc = dc + dh ⊙ o ⊙ "
               "(1 − tanh²(c)) (the cell gets gradient from h and from the next step)")
    elif bad == set(GATES):
        r.info("all four gates are wrong: check the stacking order i, f, g, o along axis 1 "
               "of δa, and δc, which three of them share")
    elif len(bad) == 2 and bad != {"i", "f"}:
        r.info(f"gates {' and '.join(sorted(bad, key=GATES.index))} are wrong: are their "
               "slices swapped? δa is stacked i, f, g, o along the channel axis")
    for gate in sorted(bad, key=GATES.index):
        r.info(f"{GATE_NAMES[gate]}: {_GATE_FORMULAS[gate]}")


def check_convlstm_step(convlstm_step_backward, convlstm_step_forward):
    """Exercise 03: ``convlstm_step_backward(dh, dc, cache) -> (dx, dh_prev, dc_prev,
    dparams)`` for the cache of the exercise's ``convlstm_step_forward``; solution
    ``memory.convlstm_step_backward``."""
    r = Report("03_convlstm_step", "the ConvLSTM step backward")
    rng = _rng(3)
    params, x, h_prev, c_prev = _convlstm_data(rng, 2, 0, 3, 2, 4, 5, 3)
    dh, dc = rng.standard_normal(h_prev.shape), rng.standard_normal(h_prev.shape)
    names = ("dx", "dh_prev", "dc_prev")

    def ref_step(x, h_prev, c_prev, Wx, Wh, b):
        h, c, _ = memory.convlstm_step_forward(x, h_prev, c_prev, {"Wx": Wx, "Wh": Wh, "b": b})
        return np.concatenate([h, c], axis=1)

    with r.part("convlstm_step_backward"):
        h, c, cache = convlstm_step_forward(x, h_prev, c_prev, params)
        ref_h, ref_c, ref_cache = memory.convlstm_step_forward(x, h_prev, c_prev, params)
        if not (_close(h, ref_h) and _close(c, ref_c)):
            r.fail("convlstm_step_forward", "the exercise's forward no longer matches the "
                   "reference: it is given, restore it")
            raise _Stop
        got = _unpack(r, "convlstm_step_backward",
                      _call(r, "convlstm_step_backward", convlstm_step_backward, dh, dc, cache,
                            names=("dh", "dc", "cache")), names + ("dparams",))
        want = memory.convlstm_step_backward(dh, dc, ref_cache)
        fd = _numgrads("convlstm_step", ref_step,
                       {"x": x, "h_prev": h_prev, "c_prev": c_prev, **params},
                       np.concatenate([dh, dc], axis=1))
        bad = _check_dparams(r, "convlstm_step_backward", got[3], want[3],
                             {"Wx": fd["Wx"], "Wh": fd["Wh"], "b": fd["b"]})
        for name, g, wt, num in zip(names, got, want, (fd["x"], fd["h_prev"], fd["c_prev"])):
            problem = _mismatch(g, wt, num)
            if problem:
                r.fail(name, f"{name} {problem}")
        _explain_gates(r, bad)
        if "dc_prev" in r.wrong:
            g_dc = got[2]
            f_gate = ref_cache.f
            if isinstance(g_dc, np.ndarray) and _close(g_dc, dc * f_gate):
                r.info("dc_prev equals dc ⊙ f, the incoming dc alone: dc_prev must be δc ⊙ f, "
                       "with δc = dc + dh ⊙ o ⊙ (1 − tanh² c), the cell's whole gradient "
                       "(from the next step and through h)")
            else:
                r.info("dc_prev = δc ⊙ f: the path from c back to c_prev goes through the "
                       "forget gate")
        if not bad and ({"dx", "dh_prev"} & set(r.wrong)):
            r.info("every gate's δa is right (db, dWx, dWh match): the error is in the two "
                   "convolution backwards, dx through Wx and dh_prev through Wh")
        if r.wrong:
            raise _Stop
        p32 = {k: v.astype(np.float32) for k, v in params.items()}
        x32, h32, c32 = (a.astype(np.float32) for a in (x, h_prev, c_prev))
        cache32 = convlstm_step_forward(x32, h32, c32, p32)[2]
        got32 = convlstm_step_backward(dh.astype(np.float32), dc.astype(np.float32), cache32)
        _check_float32(r, zip(names + ("dWx", "dWh", "db"),
                              list(got32[:3]) + [got32[3][k] for k in ("Wx", "Wh", "b")],
                              list(want[:3]) + [want[3][k] for k in ("Wx", "Wh", "b")]))
        r.ok("convlstm_step_backward: dx, dh_prev, dc_prev and every gate of dWx, dWh, db "
             "match the reference and finite differences; keeps float32")
    return r


def _check_float32(r, outputs):
    """The float32 run of a backward whose float64 run passed: ``outputs`` is (name, got,
    float64 reference) triples. Every wrong output is listed under one part, "float32":
    the equations are right (float64 proved it), so the fault is the float32 handling,
    not one output's formula (naming dx alone would point at the convolutions)."""
    bad = [(name, problem) for name, g, wt in outputs
           for problem in [_mismatch(g, wt, tol=TOL_F32, dtype=np.float32)] if problem]
    if not bad:
        return
    r.fail("float32", f"the float64 run passed, every output right; with float32 inputs "
           f"{', '.join(name for name, _ in bad)} {'is' if len(bad) == 1 else 'are'} wrong. "
           "The fault is in the float32 handling, not in the equations: is the dtype kept "
           "everywhere (np.zeros(shape) is float64: np.zeros_like, dtype=x.dtype), or does a "
           "float64 array or constant (np.ones(shape), np.float64(…)) promote the result?")
    by_problem = {}                   # one line per kind of fault, naming its outputs
    for name, problem in bad:
        by_problem.setdefault(problem, []).append(name)
    for problem, names in by_problem.items():
        r.info(f"{', '.join(names)}: {problem}")
    raise _Stop


# ----------------------------------------------------------------------------- 04 BPTT
def _bptt(xs, params, h0, c0, dhs, carry_h=True, carry_c=True):
    """BPTT with the reference step, optionally dropping a carry; also each step's dparams."""
    t_len = xs.shape[1]
    caches, h, c = [], h0, c0
    for t in range(t_len):
        h, c, cache = memory.convlstm_step_forward(xs[:, t], h, c, params)
        caches.append(cache)
    dh_next, dc_next = np.zeros_like(h0), np.zeros_like(c0)
    dxs, per_step = [None] * t_len, [None] * t_len
    for t in reversed(range(t_len)):
        dh = dhs[:, t] + dh_next if carry_h else dhs[:, t]
        dxs[t], dh_next, dc_next, per_step[t] = memory.convlstm_step_backward(
            dh, dc_next if carry_c else np.zeros_like(c0), caches[t])
    return np.stack(dxs, axis=1), per_step


def check_bptt(convlstm_backward, convlstm_forward):
    """Exercise 04: ``convlstm_backward(dhs, cache) -> (dxs, dparams)`` with dparams
    "Wx", "Wh", "b", "h0", "c0", for the cache of the exercise's ``convlstm_forward``;
    solution ``memory.convlstm_backward``."""
    r = Report("04_bptt", "backpropagation through time")
    rng = _rng(4)
    t_len = 4
    params, xs, h0, c0 = _convlstm_data(rng, 1, t_len, 1, 2, 3, 4, 3)
    dhs = rng.standard_normal((1, t_len) + h0.shape[1:])

    def ref_seq(xs, Wx, Wh, b, h0, c0):
        return memory.convlstm_forward(xs, {"Wx": Wx, "Wh": Wh, "b": b}, h0, c0)[0]

    with r.part("convlstm_backward"):
        hs, cache = convlstm_forward(xs, params, h0, c0)
        ref_hs, ref_cache = memory.convlstm_forward(xs, params, h0, c0)
        if not _close(hs, ref_hs):
            r.fail("convlstm_forward", "the exercise's forward no longer matches the "
                   "reference: it is given, restore it")
            raise _Stop
        got = _unpack(r, "convlstm_backward",
                      _call(r, "convlstm_backward", convlstm_backward, dhs, cache,
                            names=("dhs", "cache")), ("dxs", "dparams"))
        dxs, dparams = got
        want_dxs, want_p = memory.convlstm_backward(dhs, ref_cache)
        fd = _numgrads("bptt", ref_seq, {"xs": xs, **params, "h0": h0, "c0": c0}, dhs)
        problem = _mismatch(dxs, want_dxs, fd["xs"])
        if problem and isinstance(dxs, np.ndarray) and dxs.shape == want_dxs.shape:
            right = []
            for t in reversed(range(t_len)):          # walk back from T−1
                if not _close(dxs[:, t], want_dxs[:, t]):
                    break
                right.append(t)
            later = f"dxs[:, {right[-1]}:] is right; walking back" if right else "walking back"
            r.fail(f"step t = {t}", f"{later} from t = {t_len - 1}, the gradient first goes "
                   f"wrong at t = {t} (dxs[:, {t}]{_non_finite(dxs[:, t])})")
            if np.all(np.isfinite(dxs[:, t])):        # a NaN is its own cause: no carry guess
                _diagnose_bptt(r, t, t_len, dxs, (xs, params, h0, c0, dhs))
            r.info("dWx, dWh, db, dh0 and dc0 collect every step's gradient: fix the first "
                   "wrong step first, they may follow")
        elif problem:
            r.fail("dxs", f"dxs {problem}")
            raise _Stop
        bad = _check_dparams(r, "convlstm_backward", dparams, want_p, fd)
        if bad and not problem:
            _, per_step = _bptt(xs, params, h0, c0, dhs)
            for t in (0, t_len - 1):
                if _close(dparams["Wx"], per_step[t]["Wx"]):
                    r.info(f"dWx is the contribution of step {t} alone: the weights are shared by "
                           "every step, so add (+=) each step's dparams, do not overwrite")
                    break
            else:
                _explain_gates(r, bad)
        # the initial state is h₋₁, c₋₁ in the equations (h_0 is step 0's output); the
        # argument names and dparams keys stay "h0", "c0" as in stvae_np.memory
        for key, name, state in (("h0", "dh0", "h₋₁"), ("c0", "dc0", "c₋₁")):
            if key not in dparams:
                r.fail(name, f'dparams has no "{key}": after the loop the carried gradient is '
                             f"the gradient of the initial state {state} (the argument {key})")
            elif _mismatch(dparams[key], want_p[key], fd[key]):
                r.fail(name, f"{name} {_mismatch(dparams[key], want_p[key], fd[key])}"
                       + ("" if problem else f": it is the {'dh' if key == 'h0' else 'dc'} "
                          f"carried out of step 0, the gradient of the initial state {state}"))
        if r.wrong:
            raise _Stop
        p32 = {k: v.astype(np.float32) for k, v in params.items()}
        cache32 = convlstm_forward(xs.astype(np.float32), p32, h0.astype(np.float32),
                                   c0.astype(np.float32))[1]
        dxs32, dp32 = convlstm_backward(dhs.astype(np.float32), cache32)
        _check_float32(r, [("dxs", dxs32, want_dxs)]
                       + [("d" + k, dp32.get(k), v) for k, v in want_p.items()])
        r.ok(f"convlstm_backward: dxs at every step t = {t_len - 1} … 0, dWx, dWh, db, dh0, dc0 "
             "match the reference and finite differences; keeps float32")
    return r


def _non_finite(a):
    """' contains NaN' (or inf, or both) for an array that does, else ''."""
    kinds = [k for k, bad in (("NaN", np.isnan(a).any()), ("inf", np.isinf(a).any())) if bad]
    if not kinds:
        return ""
    return (f" contains {' and '.join(kinds)}: a NaN spreads to everything it touches; "
            "look for an np.empty never filled, a 0/0 or a carried gradient not started at 0")


def _diagnose_bptt(r, t, t_len, dxs, data):
    if t == t_len - 1:
        r.info(f"already wrong at the last step, where dh = dhs[:, {t}] and dc = 0: is the "
               "loop walking t = T−1, …, 0 (reversed), calling the step backward with the "
               "right step's cache?")
        return
    for carry_h, carry_c, text in ((False, True, "dh_prev of step t+1 must be added to dhs[:, t]: "
                                    "h_t feeds the loss and step t+1"),
                                   (True, False, "dc_prev of step t+1 must be the dc of step t: "
                                    "c_t feeds step t+1 (through c_{t+1} = f ⊙ c_t + i ⊙ g)")):
        if _close(dxs, _bptt(*data, carry_h=carry_h, carry_c=carry_c)[0]):
            r.info(f"it matches BPTT that drops a carry: {text}")
            return
    r.info(f"step {t + 1} is right, so what step {t + 1} hands back to step {t} (dh_prev, "
           "dc_prev) or step t's own inputs (dhs[:, t], cache[t]) are wrong")


# ----------------------------------------------------------------------------- 05 sampler
def _sample_ref(img, grid, dout):
    return sampler.bilinear_backward(dout, sampler.bilinear_forward(img, grid)[1])


def _points(xs, ys):
    """A (1, 2, 1, P) grid of the source points (x_s, y_s)."""
    return np.array([xs, ys], dtype=np.float64).reshape(1, 2, 1, -1)


def check_sampler(bilinear_backward):
    """Exercise 05: ``bilinear_backward(dout, img, grid) -> (dimg, dgrid)``; solution
    ``sampler.bilinear_backward`` (with ``sampler.bilinear_forward`` for its cache)."""
    r = Report("05_bilinear_sampler", "the bilinear sampler's image and grid gradients")
    rng = _rng(5)
    n, c, h, w, ho, wo = 2, 3, 4, 5, 3, 4
    img = rng.standard_normal((n, c, h, w))
    # source points over the map and a pixel beyond it, kept off integers (the kinks)
    grid = np.stack([np.floor(rng.uniform(-1.5, w + 0.5, (n, ho, wo))),
                     np.floor(rng.uniform(-1.5, h + 0.5, (n, ho, wo)))], axis=1)
    grid += rng.uniform(0.1, 0.9, grid.shape)
    dout = rng.standard_normal((n, c, ho, wo))
    fwd = lambda img, grid: sampler.bilinear_forward(img, grid)[0]      # noqa: E731

    with r.part("bilinear_backward"):
        got = _unpack(r, "bilinear_backward",
                      _call(r, "bilinear_backward", bilinear_backward, dout, img, grid,
                            names=("dout", "img", "grid")), ("dimg", "dgrid"))
        want = _sample_ref(img, grid, dout)
        fd = _numgrads("sampler", fwd, {"img": img, "grid": grid}, dout)
        wrong = False
        for name, g, wt, num in zip(("dimg", "dgrid"), got, want, (fd["img"], fd["grid"])):
            problem = _mismatch(g, wt, num)
            if problem:
                r.fail(name, f"{name} {problem}")
                wrong = True
        if wrong:
            _locate_sampler(r, bilinear_backward, got, want)
            raise _Stop
        got32 = bilinear_backward(*(a.astype(np.float32) for a in (dout, img, grid)))
        for name, g, wt in zip(("dimg", "dgrid"), got32, want):
            problem = _mismatch(g, wt, tol=TOL_F32, dtype=np.float32)
            if problem:
                r.fail(f"{name} (float32)", f"{name} {problem}")
                raise _Stop
        r.ok("bilinear_backward: dimg and dgrid match the reference and finite differences, "
             "inside the map and beyond its border; keep float32")
    return r


def _locate_sampler(r, fn, got, want):
    """Probe one source point at a time to name the wrong corner, inside or at the border."""
    if not all(isinstance(g, np.ndarray) and g.shape == wt.shape for g, wt in zip(got, want)):
        return
    if got[1].shape == want[1].shape and _close(got[1][:, ::-1], want[1]):
        r.info("dgrid has its channels swapped: channel 0 is x (columns), channel 1 is y (rows)")
        return
    h, w = 4, 5
    xs, ys = 2.2, 1.65                  # inside: the four corners (1, 2), (1, 3), (2, 2), (2, 3)
    grid = _points([xs], [ys])
    one = np.ones((1, 1, 1, 1))
    bad_inside = {}
    for name, dy, dx in CORNERS:
        img = np.zeros((1, 1, h, w))
        img[0, 0, 1 + dy, 2 + dx] = 1.0    # only this corner has a value: only its terms count
        g_img, g_grid = fn(one, img, grid)
        w_img, w_grid = _sample_ref(img, grid, one)
        parts = [label for label, a, b in (("dgrid x (∂w/∂x_s)", g_grid[0, 0], w_grid[0, 0]),
                                           ("dgrid y (∂w/∂y_s)", g_grid[0, 1], w_grid[0, 1]),
                                           ("dimg", g_img[0, 0, 1 + dy, 2 + dx],
                                            w_img[0, 0, 1 + dy, 2 + dx]))
                 if not _close(a, b, 1e-6)]
        if parts:
            bad_inside[name] = parts
            r.fail(f"corner {name.split(' ')[0]} (inside)",
                   f"corner {name}, inside the map (x_s = {xs}, y_s = {ys}): "
                   f"{', '.join(parts)} wrong")
    stray = np.ones((h, w), bool)
    stray[1:3, 2:4] = False
    if np.any(fn(one, np.zeros((1, 1, h, w)), grid)[0][0, 0][stray] != 0):
        r.info("dimg has gradient at pixels that are not neighbours of the point: is the "
               "flat index y·W + x (row y, column x)?")
    if bad_inside:
        r.info("w_q = wx_q · wy_q with wx = 1 − |x_s − q_x|: ∂w_q/∂x_s = −wy_q for the x0 "
               "corners and +wy_q for the x1 corners (likewise in y)")
        return
    rng = _rng(55)
    for edge, (px, py), off in (("left", (-0.3, 1.65), (0, 2)), ("right", (w - 0.7, 1.65), (1, 3)),
                                ("top", (2.2, -0.35), (0, 1)), ("bottom", (2.2, h - 0.6), (2, 3)),
                                ("outside", (-1.4, 1.65), (0, 1, 2, 3))):
        img = rng.uniform(0.5, 1.5, (1, 1, h, w))
        grid = _points([px], [py])
        g_img, g_grid = fn(one, img, grid)
        w_img, w_grid = _sample_ref(img, grid, one)
        parts = [label for label, a, b in (("dgrid", g_grid, w_grid), ("dimg", g_img, w_img))
                 if not _close(a, b, 1e-6)]
        if parts:
            names = " and ".join(CORNERS[i][0].split(" ")[0] for i in off)
            r.fail(f"border ({edge}): {names}",
                   f"at the border ({edge} of the map, x_s = {px:g}, y_s = {py:g}), where "
                   f"corner{'s' if len(off) > 1 else ''} {names} lie outside: "
                   f"{', '.join(parts)} wrong")
    if any(w_.startswith("border") for w_ in r.wrong):
        r.info("a corner outside the map reads zero and receives no gradient (valid_q = 0); "
               "clipping its index onto the edge or letting -1 wrap round to the last "
               "column does neither")
        return
    grid = _points([2.2, 2.3, 2.25, 2.15], [1.65, 1.6, 1.7, 1.55])    # four reads of one cell
    img, d4 = rng.standard_normal((1, 1, h, w)), rng.standard_normal((1, 1, 1, 4))
    if not _close(fn(d4, img, grid)[0], _sample_ref(img, grid, d4)[0], 1e-6):
        r.fail("dimg (repeated reads)",
               "dimg is wrong where several output pixels read the same input pixel: their "
               "contributions must add up (np.add.at; a[idx] += v keeps only one of the "
               "repeated writes)")


# ----------------------------------------------------------------------------- 06 Huber
def check_huber(huber_smoothness_backward):
    """Exercise 06: ``huber_smoothness_backward(dloss, flow, delta) -> dflow``; solution
    ``losses.huber_smoothness_backward`` (with its forward for the cache)."""
    r = Report("06_huber_smoothness", "the Huber smoothness gradient")
    rng = _rng(6)
    flow = rng.standard_normal((2, 2, 5, 6))
    d = np.abs(np.concatenate([np.diff(flow, axis=-1).ravel(), np.diff(flow, axis=-2).ravel()]))
    d = np.sort(d)
    mid = d[len(d) // 4: 3 * len(d) // 4]            # δ in the widest gap among the middle half,
    j = int(np.argmax(np.diff(mid)))                 # so both regimes are populated and every
    delta = float(mid[j] + mid[j + 1]) / 2           # difference is off the kink |D| = δ
    dloss = 0.7

    def ref(dloss, flow, delta):
        cache = losses.huber_smoothness_forward(flow, delta)[1]
        return losses.huber_smoothness_backward(dloss, cache)

    with r.part("huber_smoothness_backward"):
        got = _call(r, "huber_smoothness_backward", huber_smoothness_backward, dloss, flow, delta,
                    names=("dloss", "flow", "delta"))
        want = ref(dloss, flow, delta)
        fd = _numgrads(("huber", delta),
                       lambda flow: losses.huber_smoothness_forward(flow, delta)[0] * dloss,
                       {"flow": flow}, None)["flow"]
        problem = _mismatch(got, want, fd)
        if problem:
            r.fail("dflow", f"dflow {problem} (δ = {delta:.3g}, dloss = {dloss})")
            if isinstance(got, np.ndarray) and got.shape == want.shape:
                _locate_huber(r, huber_smoothness_backward, ref)
            raise _Stop
        problem = _mismatch(huber_smoothness_backward(np.float32(dloss), flow.astype(np.float32),
                                                      delta), want, tol=TOL_F32, dtype=np.float32)
        if problem:
            r.fail("dflow (float32)", f"dflow {problem}")
            raise _Stop
        r.ok("huber_smoothness_backward: dflow matches the reference and finite differences "
             "in both regimes, along x and y; keeps float32")
    return r


def _locate_huber(r, fn, ref):
    """Probe flows whose differences lie in one regime and along one axis only."""
    rng = _rng(66)
    delta, dloss = 1e-3, 0.7        # the model's δ
    ratios = []
    for regime, lo, hi in (("quadratic", 0.1, 0.8), ("linear", 2.0, 10.0)):
        for axis, label in ((-1, "D_x, along x (columns)"), (-2, "D_y, along y (rows)")):
            steps = rng.uniform(lo, hi, 5) * delta * rng.choice([-1.0, 1.0], 5)
            ramp = np.concatenate([[0.0], np.cumsum(steps)])             # 6 values
            flow = np.broadcast_to(ramp[None, :], (4, 6)) if axis == -1 else \
                np.broadcast_to(ramp[:, None], (6, 4))
            flow = np.ascontiguousarray(np.broadcast_to(flow, (1, 2) + flow.shape))
            got, want = fn(dloss, flow, delta), ref(dloss, flow, delta)
            if not _close(got, want, 1e-6):
                sign = "|D| ≤ δ" if regime == "quadratic" else "|D| > δ"
                r.fail(f"{regime} regime ({label.split(',')[0]})",
                       f"wrong in the {regime} regime ({sign}) of the differences {label}")
                ratio = float(np.sum(got * want) / np.sum(want * want))
                if _close(got, ratio * want, 1e-6):          # proportional to the right answer
                    ratios.append(ratio)
                else:
                    ratios.append(np.nan)
    if not ratios:
        return
    if len(ratios) == 4 and np.allclose(ratios, -1.0, atol=1e-6):
        r.info("dflow has the wrong sign: D = T[b] − T[a] sends +g to T[b] and −g to T[a]")
    elif len(ratios) == 4 and np.allclose(ratios, 0.0, atol=1e-6):
        r.info("dflow is (nearly) zero: every difference D sends +g to one pixel and −g to "
               "the other")
    elif len(ratios) == 4 and np.allclose(ratios, ratios[0], rtol=1e-6):
        r.info(f"off by a constant factor {ratios[0]:.4g}: each mean divides by its own count "
               "(D_x.size, D_y.size), and everything is multiplied by dloss")
    elif any("linear" in w_ for w_ in r.wrong) and not any("quadratic" in w_ for w_ in r.wrong):
        r.info("H_δ'(D) = δ·sign(D) where |D| > δ: beyond δ the slope is capped")
    elif any("quadratic" in w_ for w_ in r.wrong) and not any("linear" in w_ for w_ in r.wrong):
        r.info("H_δ'(D) = D where |D| ≤ δ (the parabola D²/2)")


# ----------------------------------------------------------------------------- 07 RMSProp
def check_rmsprop(clip_grad_norm, rmsprop_step):
    """Exercise 07: ``clip_grad_norm(grads, max_norm) -> norm`` (scales grads in place) and
    ``rmsprop_step(params, grads, v, lr, alpha, eps)`` (updates params and v in place);
    solution ``optim.clip_grad_norm`` and ``optim.RMSProp.step``."""
    r = Report("07_rmsprop_clipping", "the RMSProp step with gradient clipping")
    rng = _rng(7)

    def grads_of(norm_w, norm_b, dtype=np.float64):
        g = {"W": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
        g["W"] *= norm_w / np.linalg.norm(g["W"])
        g["b"] *= norm_b / np.linalg.norm(g["b"])
        return {k: v.astype(dtype) for k, v in g.items()}

    with r.part("clip_grad_norm"):
        for case, (nw, nb, max_norm, dtype) in {
                "clipping inactive (norm ≤ max_norm)": (1.2, 1.6, 5.0, np.float64),
                "clipping active (norm > max_norm)": (8.0, 6.0, 1.0, np.float64),
                "clipping active, float32 gradients": (8.0, 6.0, 1.0, np.float32)}.items():
            grads = grads_of(nw, nb, dtype)
            arrays = dict(grads)
            expected = {k: v.copy() for k, v in grads.items()}
            before = {k: v.copy() for k, v in grads.items()}
            want_norm = optim.clip_grad_norm(expected, max_norm)
            got_norm = clip_grad_norm(grads, max_norm)
            for k in arrays:
                if grads[k] is not arrays[k]:
                    r.fail("clip_grad_norm: in place", f"grads[{k!r}] was replaced by a new "
                           "array; scale it in place (g *= scale): the caller holds the arrays")
                    raise _Stop
            bad = [k for k in grads if _mismatch(grads[k], expected[k], tol=1e-5, dtype=dtype)]
            if bad:
                also = f" (and grads[{bad[1]!r}])" if len(bad) > 1 else ""
                r.fail(f"clip_grad_norm: {case}",
                       f"with {case}, grads[{bad[0]!r}]{also} "
                       f"{_mismatch(grads[bad[0]], expected[bad[0]], tol=1e-5, dtype=dtype)}")
                norms = [np.linalg.norm(grads[k]) for k in grads]
                if "inactive" not in case and np.allclose(norms, max_norm, rtol=1e-4):
                    r.info("each tensor was clipped by its own norm: the norm is global, "
                           "√(Σ over all tensors of Σ g²), and one scale applies to all")
                elif all(_close(grads[k], np.clip(before[k], -max_norm, max_norm), 1e-5)
                         for k in grads):
                    r.info(f"it clips each element by value to [−{max_norm:g}, {max_norm:g}]: "
                           "clip_grad_norm rescales all gradients together by max_norm / norm, "
                           "which keeps their direction")
                raise _Stop
            try:
                norm_ok = _close(float(got_norm), float(want_norm), 1e-6)
            except (TypeError, ValueError):
                norm_ok = False
            if not norm_ok:
                r.fail("clip_grad_norm: returned norm", f"with {case}, it returned {got_norm!r}; "
                       f"it must return the global norm before clipping, {float(want_norm):.6g}")
                raise _Stop
        r.ok("clip_grad_norm: one global norm, in place, clips only above max_norm, returns "
             "the norm before clipping; keeps float32")

    with r.part("rmsprop_step"):
        lr, alpha, eps = 0.01, 0.9, 1e-8
        params = {"W": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
        v = {k: np.zeros_like(p) for k, p in params.items()}
        want_p = {k: p.copy() for k, p in params.items()}
        want_v = {k: p.copy() for k, p in v.items()}
        ids = {k: (id(params[k]), id(v[k])) for k in params}
        for step in range(1, 4):
            # |W's gradients| ≥ 0.5, so √v ≫ ε; b's are ~1e-10, so √v ≪ ε and ε matters
            grads = {"W": rng.uniform(0.5, 2.0, (3, 4)) * rng.choice([-1.0, 1.0], (3, 4)),
                     "b": 1e-10 * rng.standard_normal(4)}
            v_before = {k: a.copy() for k, a in v.items()}
            rmsprop_step(params, {k: g.copy() for k, g in grads.items()}, v, lr, alpha, eps)
            _rmsprop_ref(want_p, grads, want_v, lr, alpha, eps)
            for k in params:
                if (id(params[k]), id(v[k])) != ids[k]:
                    r.fail("rmsprop_step: in place", f"params[{k!r}] or v[{k!r}] was replaced by "
                           "a new array; update in place (p -= …, v *= α; v += …): the model "
                           "and the optimizer hold these arrays")
                    raise _Stop
            bad_v = [k for k in v if _mismatch(v[k], want_v[k])]
            if bad_v:
                r.fail("rmsprop_step: v", f"the running mean v is wrong after step {step} "
                       f"(in {', '.join(bad_v)})")
                alt = {k: alpha * grads[k] ** 2 + (1 - alpha) * v_before[k] for k in v}
                if all(_close(v[k], alt[k]) for k in v):
                    r.info("α and 1 − α are swapped: v ← α·v + (1 − α)·g² keeps most of the old v")
                raise _Stop
            bad_p = [k for k in params if _mismatch(params[k], want_p[k])]
            if bad_p:
                where = {"W": "where v is large (ε negligible, parameter W)",
                         "b": "where v is tiny (ε matters, parameter b)"}
                r.fail(f"rmsprop_step: params {where[bad_p[0]].split(' (')[0]}"
                       if len(bad_p) == 1 else "rmsprop_step: params",
                       f"the parameters are wrong after step {step}, "
                       + " and ".join(where[k] for k in bad_p))
                if bad_p == ["b"]:
                    r.info("ε belongs outside the square root, added to √v: "
                           "θ ← θ − lr · g / (√v + ε)")
                elif step == 1 and not bad_v:
                    r.info("v is right: θ ← θ − lr · g / (√v + ε) with the new v (update v first)")
                raise _Stop
        p32 = {k: a.astype(np.float32) for k, a in params.items()}
        v32 = {k: a.astype(np.float32) for k, a in v.items()}
        rmsprop_step(p32, {k: g.astype(np.float32) for k, g in grads.items()}, v32, lr, alpha, eps)
        if any(a.dtype != np.float32 for a in (*p32.values(), *v32.values())):
            r.fail("rmsprop_step (float32)", "float32 parameters or v became another dtype")
            raise _Stop
        r.ok("rmsprop_step: v and the parameters match optim.RMSProp over 3 steps, where v "
             "is large and where it is tiny; in place; keeps float32")
    return r


def _rmsprop_ref(params, grads, v, lr, alpha, eps):
    opt = optim.RMSProp(params, lr, alpha, eps)
    opt.v = v                        # the caller's running means, updated in place
    opt.step(grads)


# ----------------------------------------------------------------------------- 08 photometric
def _photo_pieces(flow, clip, sigma, gm_scale):
    """The photometric term's forward of the tiny preset, piece by piece (the frames
    blurred, the flow brought to image pixels, the warp, the error, the weights)."""
    n, t, c, hh, ww = clip.shape
    blurred = losses.gaussian_blur(clip.reshape(n * t, c, hh, ww), sigma, layers, {})
    blurred = blurred.reshape(n, t, c, hh, ww)
    frames = blurred[:, :-1].reshape(n * (t - 1), c, hh, ww)
    targets = blurred[:, 1:].reshape(n * (t - 1), c, hh, ww)
    s = ww // flow.shape[-1]
    up = layers.upsample2_forward(flow)[0]
    warped, samp_cache = sampler.bilinear_forward(frames, sampler.flow_to_grid(s * up))
    d = warped - targets
    return {"s": s, "frames": frames, "targets": targets, "warped": warped, "d": d,
            "c2": gm_scale ** 2, "samp_cache": samp_cache, "w": targets}


# the mistakes the grader knows, by the part of the backward they sit in
PHOTO_MISTAKES = {
    "robust error's derivative": {
        "rho' of the L2 error, 2d": "ρ'(d) = 2d is the L2 error's; Geman–McClure's is "
                                     "ρ'(d) = 2d·C² / (d² + C²)² (quotient rule)",
        "rho' with (d² + C²) not squared": "the denominator of ρ'(d) = 2d·C² / (d² + C²)² is squared",
        "rho' without C²": "ρ'(d) = 2d·C² / (d² + C²)²: the numerator has C²",
        "rho' of the wrong sign": "d = warped − target: ρ'(d) has the sign of d",
    },
    "weighting's normalisation": {
        "normalised by the number of pixels": "P = Σ w ρ / Σ w: divide by Σ w (the weights' "
                                              "sum), not by the number of pixels",
        "not normalised": "P = Σ w ρ / Σ w: the derivative keeps the 1 / Σ w",
        "weights left out": "each pixel's derivative is weighted: w / Σ w · ρ'(d), "
                            "w = B(x_{t+1})",
        "normalised per frame": "Σ w runs over every pixel of every frame at once (one weighted "
                                "mean), not frame by frame",
        "weights differentiated": "the weights are data: ∂P/∂warped = w / Σw · ρ'(d) only; the "
                                  "term (ρ − P) / Σw is ∂P/∂w, and w does not move with the flow",
    },
    "up-sampling's transpose": {
        "without the ×2": "F = 2 · upsample2(T): the backward multiplies by 2 too (the flow's "
                          "units go from image pixels back to memory-grid pixels)",
        "mean over each 2×2 block": "the transpose of nearest up-sampling sums each 2×2 block "
                                    "(each memory pixel fed four image pixels): sum, not mean",
        "one pixel of each 2×2 block": "all four image pixels of a block came from one memory "
                                       "pixel: sum the four, do not pick one",
        "times 4 instead of 2": "the scale is s = H / h = 2 (image pixels per memory pixel)",
    },
    "gradient sent into the frames": {
        "the image path's gradient (dimg) in place of the grid's": "bilinear_backward returns "
            "(dimg, dgrid): dimg is the frames' gradient (they are data: nothing to learn); the "
            "flow moves the grid, so ∂P/∂T comes from dgrid",
    },
}


def photo_variant(flow, clip, sigma, gm_scale, mistake=None):
    """∂P/∂T of the tiny preset's photometric term, with one of the mistakes of
    :data:`PHOTO_MISTAKES` planted (None: the right answer)."""
    q = _photo_pieces(flow, clip, sigma, gm_scale)
    d, c2, w = q["d"], q["c2"], q["w"]
    den = d * d + c2
    rho = d * d / den
    drho = {"rho' of the L2 error, 2d": 2 * d,
            "rho' with (d² + C²) not squared": 2 * d * c2 / den,
            "rho' without C²": 2 * d / den ** 2,
            "rho' of the wrong sign": -2 * d * c2 / den ** 2}.get(mistake, 2 * d * c2 / den ** 2)
    shares = {"normalised by the number of pixels": w / w.size,
              "not normalised": w,
              "weights left out": np.ones_like(w) / w.size,
              "normalised per frame": w / w.sum(axis=(1, 2, 3), keepdims=True),
              }.get(mistake, w / w.sum())
    dwarped = shares * drho
    if mistake == "weights differentiated":
        dwarped = dwarped + (rho - np.sum(w * rho) / w.sum()) / w.sum()
    dimg, dgrid = sampler.bilinear_backward(dwarped, q["samp_cache"])
    if mistake == "the image path's gradient (dimg) in place of the grid's":
        dgrid = dimg
    n, c, hh, ww = dgrid.shape
    blocks = dgrid.reshape(n, c, hh // 2, 2, ww // 2, 2)
    s = q["s"]
    return {"without the ×2": blocks.sum(axis=(3, 5)),
            "mean over each 2×2 block": s * blocks.mean(axis=(3, 5)),
            "one pixel of each 2×2 block": s * dgrid[:, :, ::2, ::2],
            "times 4 instead of 2": 2 * s * blocks.sum(axis=(3, 5))}.get(mistake, s * blocks.sum(axis=(3, 5)))


def _photo_ref(flow, clip, sigma, gm_scale):
    """P and ∂P/∂T from the package (stvae_np.losses.photometric_forward/backward)."""
    cfg = _PhotoConfig(sigma, gm_scale)
    photo, cache = losses.photometric_forward(clip, flow, cfg, layers, {})
    return photo, losses.photometric_backward(np.ones((), flow.dtype), cache, layers)


class _PhotoConfig:
    """The four Config fields the photometric term reads, the tiny preset's form."""
    photo_loss, photo_weighting = "geman_mcclure", "next_frame"

    def __init__(self, sigma, gm_scale):
        self.photo_blur, self.photo_gm_scale = sigma, gm_scale


def _moving_squares(rng, n, t, hh, ww, size=4):
    """Clips (N, T, 1, H, W) of two squares (0.9 and 0.5) moving one pixel a frame on a
    blank background: blank windows (ties), edges, overlaps."""
    clip = np.zeros((n, t, 1, hh, ww))
    for i in range(n):
        for value in (0.9, 0.5):
            vy, vx = rng.choice([-1, 1], size=2)
            y, x = rng.integers(t, hh - size - t + 1, size=2)
            for j in range(t):
                yy, xx = y + vy * j, x + vx * j
                region = clip[i, j, 0, yy:yy + size, xx:xx + size]
                np.maximum(region, value, out=region)
    return clip


def _photo_data():
    rng = _rng(8)
    clip = _moving_squares(rng, 2, 3, 16, 16)
    clip = clip + 0.05 * rng.random(clip.shape)           # some texture, no exact zeros in w
    flow = rng.uniform(-1.2, 1.2, (4, 2, 8, 8))           # memory pixels: ±2.4 image pixels
    return flow, clip, 1.0, 0.1


def _locate_photo(r, got, flow, clip, sigma, gm_scale):
    """Name the part of ∂P/∂T that is wrong by comparing with the known mistakes."""
    want_shape = flow.shape
    if isinstance(got, np.ndarray) and got.shape != want_shape:
        if got.shape[1] == clip.shape[2] and got.shape[1] != 2:
            r.fail("gradient sent into the frames", f"dflow has shape {got.shape}: {clip.shape[2]} "
                   f"channel(s), the frames'. " + PHOTO_MISTAKES["gradient sent into the frames"][
                       "the image path's gradient (dimg) in place of the grid's"])
        elif got.shape[-2:] == (2 * want_shape[-2], 2 * want_shape[-1]):
            r.fail("up-sampling's transpose", f"dflow has shape {got.shape}, the image's size: the "
                   "flow lives on the memory grid (h, w); the transpose of the up-sampling sums "
                   "each 2×2 block of image pixels into its memory pixel (then × 2)")
        return
    for part, mistakes in PHOTO_MISTAKES.items():
        for mistake, why in mistakes.items():
            if _close(got, photo_variant(flow, clip, sigma, gm_scale, mistake)):
                r.fail(part, f"dflow equals ∂P/∂T with this mistake: {mistake}")
                r.info(why)
                return
    want = photo_variant(flow, clip, sigma, gm_scale)
    ratio = got.ravel() @ want.ravel() / max(want.ravel() @ want.ravel(), 1e-300)
    if _close(got, ratio * want, 1e-6):
        r.fail("a constant factor", f"dflow is {ratio:.4g} × the right one: look at the "
               "normalisation (1 / Σ w), C² and the up-sampling's ×2")
        return
    r.info("none of the usual mistakes: walk the chain ρ'(d) → × w / Σw → bilinear grid path "
           "(dgrid) → sum of each 2×2 block → × 2, checking each piece's shape")


def check_photometric(photometric_backward):
    """Exercise 08: ``photometric_backward(flow, clip, blur_sigma, gm_scale) -> dflow``,
    ∂P/∂T of the tiny preset's photometric term; solution ``losses.photometric_backward``."""
    r = Report("08_photometric", "the photometric term's backward, ∂P/∂T")
    flow, clip, sigma, gm_scale = _photo_data()
    with r.part("photometric_backward"):
        got = _call(r, "photometric_backward", photometric_backward, flow, clip, sigma, gm_scale,
                    names=("flow", "clip"))
        photo, want = _photo_ref(flow, clip, sigma, gm_scale)
        fwd = lambda flow: _photo_ref(flow, clip, sigma, gm_scale)[0]       # noqa: E731
        fd = _numgrads("photo", fwd, {"flow": flow}, None)["flow"]
        problem = _mismatch(got, want)
        if problem is None and _err(got, fd, floor=1e-3) > TOL_FD:
            # P is a mean over many pixels: the differences' round-off (~1e-12) is large beside
            # its smallest entries, hence a floor of 1e-3 of the largest
            problem = f"is wrong ({_err(got, fd, floor=1e-3):.1e} against finite differences)"
        if problem:
            r.fail("dflow", f"dflow {problem}")
            _locate_photo(r, got, flow, clip, sigma, gm_scale)
            raise _Stop
        r.ok("dflow matches losses.photometric_backward and finite differences (flows of "
             "±2.4 image pixels, residuals both ≪ C and ≫ C)")
        f32 = [a.astype(np.float32) for a in (flow, clip)]
        problem = _mismatch(photometric_backward(*f32, sigma, gm_scale), want, tol=TOL_F32,
                            dtype=np.float32)
        if problem:
            r.fail("dflow (float32)", f"with float32 inputs, dflow {problem}")
            raise _Stop
        r.ok("keeps float32")
    return r


# ----------------------------------------------------------------------------- 09 capstone
TRAIN_STEPS = 120        # the capstone's short training, at 16×16 (a few seconds)
TRAIN_LR = 1e-2


def capstone_config(**changes):
    """The tiny preset's loss and architecture (photometric term, tanh flow head) at a tiny
    size: 16×16 frames, 4 filters 3×3 everywhere."""
    from stvae_np.model import Config
    cfg = dataclasses.replace(Config.tiny(), height=16, width=16, enc_filters=4, enc_kernel=3,
                              mem_filters=4, mem_kernel=3, flow_kernel=3, flow_filters=4,
                              name="capstone")
    return dataclasses.replace(cfg, **changes)


def capstone_forward(params, clip, config):
    """The model's forward over a clip (N, T, C, H, W), the tiny preset's form, with every
    intermediate value kept in a dict ``fw`` (M = N·(T−1) frames stacked, steps inner):

        a_enc = conv(inputs; enc.W) + enc.b,  t_enc = tanh(a_enc),  e = maxpool2(t_enc)
        hs    = ConvLSTM(e) (exercise 04's forward: fw["lstm_cache"]),  hs_flat (M, Fm, h, w)
        a1 = conv(hs_flat; flow1),  f1 = tanh(a1),  a2 = conv(f1; flow2),  f2 = tanh(a2)
        flow  = conv1x1(f2; flow3),  grid = base grid + flow
        warped = bilinear(e, grid),  up = upsample2(warped),  pred = conv(up; dec.W) + dec.b
        loss  = mean((pred − targets)²) + w_H · H(∇flow) + w_P · P(flow, clip)

    Returns (loss, fw)."""
    n, t, c, hh, ww = clip.shape
    s = t - 1
    inputs = clip[:, :-1].reshape(n * s, c, hh, ww)
    targets = clip[:, 1:].reshape(n * s, c, hh, ww)
    a_enc = layers.conv2d_forward(inputs, params["enc.W"], params["enc.b"])[0]
    t_enc = np.tanh(a_enc)
    e = layers.maxpool2_forward(t_enc)[0]
    fe, h, w = e.shape[1:]
    lstm = {"Wx": params["lstm.Wx"], "Wh": params["lstm.Wh"], "b": params["lstm.b"]}
    zeros = np.zeros((n, lstm["Wh"].shape[1], h, w), dtype=clip.dtype)
    xs, state, hs, steps = e.reshape(n, s, fe, h, w), (zeros, zeros), [], []
    for k in range(s):
        hk, ck, step_cache = memory.convlstm_step_forward(xs[:, k], *state, lstm)
        state = (hk, ck)
        hs.append(hk)
        steps.append(step_cache)
    hs = np.stack(hs, axis=1)                                       # (N, S, Fm, h, w)
    lstm_cache = {"steps": steps, "xs": xs, "params": lstm, "h0": zeros, "c0": zeros}
    hs_flat = hs.reshape(n * s, -1, h, w)
    a1 = layers.conv2d_forward(hs_flat, params["flow1.W"], params["flow1.b"])[0]
    f1 = np.tanh(a1)
    a2 = layers.conv2d_forward(f1, params["flow2.W"], params["flow2.b"])[0]
    f2 = np.tanh(a2)
    flow = layers.conv2d_forward(f2, params["flow3.W"], params["flow3.b"])[0]
    grid = sampler.flow_to_grid(flow)
    warped = sampler.bilinear_forward(e, grid)[0]
    up = layers.upsample2_forward(warped)[0]
    pred = layers.conv2d_forward(up, params["dec.W"], params["dec.b"])[0]
    mse = np.mean((pred - targets) ** 2)
    smooth = losses.huber_smoothness_forward(flow, config.huber_delta)[0]
    photo = _photo_ref(flow, clip, config.photo_blur, config.photo_gm_scale)[0]
    loss = mse + config.huber_weight * smooth + config.photo_weight * photo
    fw = {"clip": clip, "inputs": inputs, "targets": targets, "a_enc": a_enc, "t_enc": t_enc,
          "e": e, "lstm_cache": lstm_cache, "hs_flat": hs_flat, "a1": a1, "f1": f1, "a2": a2,
          "f2": f2, "flow": flow, "grid": grid, "warped": warped, "up": up, "pred": pred}
    return float(loss), fw


# The solution, stage by stage: the package's plain ops (the solutions of 01–08), chained
# in the reverse order of STVAE.loss_and_grads.
def _sol_decoder_backward(dpred, fw, params):
    dup, dw, db = _sol_conv_backward(dpred, fw["up"], params["dec.W"])
    return _sol_upsample_backward(dup), {"dec.W": dw, "dec.b": db}


def _sol_sampler_backward(dwarped, fw):
    return _sol_bilinear_backward(dwarped, fw["e"], fw["grid"])     # (de_sampler, dgrid)


def _sol_flow_gradient(dgrid, fw, config):
    dhuber = _sol_huber_backward(1.0, fw["flow"], config.huber_delta)
    dphoto = _sol_photo_backward(fw["flow"], fw["clip"], config.photo_blur, config.photo_gm_scale)
    return dgrid + config.huber_weight * dhuber + config.photo_weight * dphoto


def _sol_flow_head_backward(dflow, fw, params):
    grads = {}
    df2, grads["flow3.W"], grads["flow3.b"] = _sol_conv_backward(dflow, fw["f2"], params["flow3.W"])
    df1, grads["flow2.W"], grads["flow2.b"] = _sol_conv_backward(df2 * (1 - fw["f2"] ** 2), fw["f1"],
                                                                 params["flow2.W"])
    dhs, grads["flow1.W"], grads["flow1.b"] = _sol_conv_backward(df1 * (1 - fw["f1"] ** 2),
                                                                 fw["hs_flat"], params["flow1.W"])
    return dhs, grads


def _sol_memory_backward(dhs_flat, fw, params):
    n, s = fw["lstm_cache"]["xs"].shape[:2]
    dxs, dp = _sol_bptt(dhs_flat.reshape((n, s) + dhs_flat.shape[1:]), fw["lstm_cache"])
    return (dxs.reshape((n * s,) + dxs.shape[2:]),
            {"lstm.Wx": dp["Wx"], "lstm.Wh": dp["Wh"], "lstm.b": dp["b"]})


def _sol_encoder_backward(de, fw, params):
    dt = _sol_maxpool_backward(de, fw["t_enc"])
    _, dw, db = _sol_conv_backward(dt * (1 - fw["t_enc"] ** 2), fw["inputs"], params["enc.W"])
    return {"enc.W": dw, "enc.b": db}


def _sol_loss_and_grads(params, clip, config):
    loss, fw = capstone_forward(params, clip, config)
    dpred = 2 * (fw["pred"] - fw["targets"]) / fw["pred"].size
    dwarped, grads = _sol_decoder_backward(dpred, fw, params)
    de_sampler, dgrid = _sol_sampler_backward(dwarped, fw)
    dflow = _sol_flow_gradient(dgrid, fw, config)
    dhs, g = _sol_flow_head_backward(dflow, fw, params)
    grads.update(g)
    de_memory, g = _sol_memory_backward(dhs, fw, params)
    grads.update(g)
    grads.update(_sol_encoder_backward(de_sampler + de_memory, fw, params))
    return loss, grads


def _capstone_data():
    """float64 parameters (the initialisation, with a flow head that moves: flow3 not 0)
    and two clips of moving squares, N = 2, T = 4, 16×16."""
    from stvae_np.model import init_params
    cfg = capstone_config()
    rng = _rng(9)
    params = init_params(cfg, seed=3, dtype="float64")
    for name in params:
        if name.endswith(".b") or name == "flow3.W":
            params[name] = params[name] + 0.3 * rng.standard_normal(params[name].shape)
    params["flow3.W"] *= 2.0
    clip = _moving_squares(rng, 2, 4, 16, 16)
    return cfg, params, clip


def _package_grads(params, clip, cfg):
    """The package's loss and gradients: STVAE on the plain ops, float64."""
    from stvae_np.model import STVAE
    model = STVAE(cfg, dtype="float64", ops="plain")
    model.params = {k: v.copy() for k, v in params.items()}
    loss, grads = model.loss_and_grads(clip)
    return float(loss), grads


def _capstone_reference(params, clip, cfg):
    """Every intermediate gradient of the reverse order, from the solution's stages."""
    loss, fw = capstone_forward(params, clip, cfg)
    bw = {"dpred": 2 * (fw["pred"] - fw["targets"]) / fw["pred"].size}
    bw["dwarped"], _ = _sol_decoder_backward(bw["dpred"], fw, params)
    bw["de_sampler"], bw["dgrid"] = _sol_sampler_backward(bw["dwarped"], fw)
    bw["dflow"] = _sol_flow_gradient(bw["dgrid"], fw, cfg)
    bw["dhs"], _ = _sol_flow_head_backward(bw["dflow"], fw, params)
    bw["de_memory"], _ = _sol_memory_backward(bw["dhs"], fw, params)
    bw["de"] = bw["de_sampler"] + bw["de_memory"]
    return loss, fw, bw


# variants of the reference with one mistake, to name a mistake's cause
def _flow_head_variant(dflow, fw, params, mistake):
    tgrad = {"tanh' of the input": lambda k: 1 - fw[f"a{k}"] ** 2,
             "tanh' left out": lambda k: 1.0,
             "tanh' as t(1 − t)": lambda k: fw[f"f{k}"] * (1 - fw[f"f{k}"])}[mistake]
    grads = {}
    df2, grads["flow3.W"], grads["flow3.b"] = _sol_conv_backward(dflow, fw["f2"], params["flow3.W"])
    df1, grads["flow2.W"], grads["flow2.b"] = _sol_conv_backward(df2 * tgrad(2), fw["f1"], params["flow2.W"])
    _, grads["flow1.W"], grads["flow1.b"] = _sol_conv_backward(df1 * tgrad(1), fw["hs_flat"], params["flow1.W"])
    return grads


FLOW_HEAD_CAUSES = {
    "tanh' of the input": "tanh' = 1 − tanh², of the tanh's output f = tanh(a) (fw['f1'], "
                          "fw['f2']), not 1 − a² of its input a",
    "tanh' left out": "each tanh of the head multiplies the gradient by 1 − f² on the way back",
    "tanh' as t(1 − t)": "t(1 − t) is the sigmoid's derivative; tanh' = 1 − t²",
}


def _encoder_variant(de, fw, params, mistake):
    t = fw["t_enc"]
    if mistake in ENCODER_ROUTING:
        n, c, hh, ww = t.shape
        win = t.reshape(n, c, hh // 2, 2, ww // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, hh // 2, ww // 2, 4)
        if mistake == "every tied pixel wins":
            mask = win == win.max(axis=-1, keepdims=True)
        else:                                                  # the last of the tied pixels
            mask = (3 - win[..., ::-1].argmax(axis=-1))[..., None] == np.arange(4)
        dwin = mask * de[..., None]
        dt = dwin.reshape(n, c, hh // 2, ww // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(t.shape)
        tgrad = 1 - t ** 2
    else:
        dt = _sol_maxpool_backward(de, t)
        tgrad = {"tanh' of the input": 1 - fw["a_enc"] ** 2, "tanh' left out": 1.0}[mistake]
    _, dw, db = _sol_conv_backward(dt * tgrad, fw["inputs"], params["enc.W"])
    return {"enc.W": dw, "enc.b": db}


ENCODER_ROUTING = ("every tied pixel wins", "the last tied pixel wins")
ENCODER_CAUSES = {
    "every tied pixel wins": "an all-blank window ties four ways: only the first tied pixel "
                             "in row-major order (argmax's) takes the gradient",
    "the last tied pixel wins": "on a tie the first pixel in row-major order wins (argmax), "
                                "not the last",
    "tanh' of the input": "tanh' = 1 − t² of the output t = fw['t_enc'], not of the "
                          "pre-activation fw['a_enc']",
    "tanh' left out": "between the pooling and the convolution: × (1 − t_enc²)",
}


def _memory_variant(dhs_flat, fw, params, mistake):
    n, s = fw["lstm_cache"]["xs"].shape[:2]
    if mistake == "dh of step t given to step t − 1":
        d = np.roll(dhs_flat.reshape((n, s) + dhs_flat.shape[1:]), -1, axis=1)
    elif mistake == "steps and clips swapped in the reshape":
        d = dhs_flat.reshape((s, n) + dhs_flat.shape[1:]).swapaxes(0, 1)
    else:                                                      # "time reversed"
        d = dhs_flat.reshape((n, s) + dhs_flat.shape[1:])[:, ::-1]
    return _sol_memory_backward(np.ascontiguousarray(d).reshape(dhs_flat.shape), fw, params)


MEMORY_CAUSES = {
    "dh of step t given to step t − 1": "dhs_flat[k] belongs to clip k // S, step k % S: "
                                        "reshape to (N, S, …) and give step t its own dh",
    "steps and clips swapped in the reshape": "frames are stacked clip-major (k = n·S + t): "
                                              "reshape to (N, S, …), not (S, N, …)",
    "time reversed": "dhs[:, t] is the gradient of h_t: BPTT walks t = S−1 … 0 but each "
                     "step takes its own dh",
}


def _ops_used(ops):
    """'yours: …; the package's: …' for the ops the exercise chained."""
    if not ops:
        return None
    package = {adapter for _, sols in EXERCISES.values() for adapter, _ in sols.values()}
    mine = [k for k, f in ops.items() if f not in package]
    theirs = [k for k, f in ops.items() if f in package]
    return (f"ops: yours: {', '.join(mine) or 'none'}; the package's (the solutions of "
            f"01–08): {', '.join(theirs) or 'none'}")


def _grads_problem(got, want, names):
    """The names (of ``names``) whose gradient in ``got`` differs from ``want``'s."""
    if not isinstance(got, dict):
        return list(names)
    return [k for k in names if k not in got or _mismatch(got[k], want[k]) is not None]


def check_capstone(loss_and_grads, decoder_backward, sampler_backward, flow_gradient,
                   flow_head_backward, memory_backward, encoder_backward, ops=None,
                   train_steps=TRAIN_STEPS):
    """Exercise 09: ``loss_and_grads(params, clip, config) -> (loss, grads)`` for the tiny
    preset, chained from the stage functions; every gradient against the package's
    (STVAE on the plain ops, float64). When one is wrong, each stage is called with the
    reference's inputs, in the reverse order, and the first whose output differs is named."""
    from stvae_np.model import PARAM_NAMES
    r = Report("09_capstone", "the whole model's backward")
    cfg, params, clip = _capstone_data()
    used = _ops_used(ops)
    if used:
        r.info(used)
    r.curves = None
    with r.part("loss_and_grads"):
        out = _unpack(r, "loss_and_grads", _call(r, "loss_and_grads", loss_and_grads, params, clip, cfg,
                                                 names=("params", "clip")), ("loss", "grads"))
        want_loss, want = _package_grads(params, clip, cfg)
        if not np.isfinite(float(out[0])) or abs(float(out[0]) - want_loss) > 1e-9 * abs(want_loss):
            r.fail("loss", f"the loss is {float(out[0]):.10g}, the package's {want_loss:.10g}: "
                   "the forward is given, return its loss")
            raise _Stop
        wrong = _grads_problem(out[1], want, PARAM_NAMES)
        if wrong:
            right = [k for k in PARAM_NAMES if k not in wrong]
            r.fail("gradients", f"wrong: {', '.join(wrong)}" + (f"; right: {', '.join(right)}" if right else ""))
            _locate_capstone(r, params, clip, cfg, out[1], want, dict(
                decoder_backward=decoder_backward, sampler_backward=sampler_backward,
                flow_gradient=flow_gradient, flow_head_backward=flow_head_backward,
                memory_backward=memory_backward, encoder_backward=encoder_backward))
            raise _Stop
        r.ok(f"all {len(PARAM_NAMES)} gradients match the package's (STVAE.loss_and_grads, plain "
             "ops, float64), and the loss")
        if train_steps:
            curves = capstone_training(loss_and_grads, train_steps)
            r.curves = curves
            yours, theirs = curves
            width = max(1, train_steps // 5)
            spans = [(a, min(a + width, train_steps)) for a in range(0, train_steps, width)][:5]
            mean = lambda c, a, b: float(np.mean(c[a:b]))          # noqa: E731
            r.info(f"training, {train_steps} steps (16×16, N = 4, T = 4, RMSProp lr {TRAIN_LR:g}, "
                   "clipping at 1); the mean loss of steps")
            r.info("                          " + " ".join(f"{f'{a}–{b - 1}':>9}" for a, b in spans))
            r.info("   your gradients:        " + " ".join(f"{mean(yours, a, b):9.4f}" for a, b in spans))
            r.info("   the package's:         " + " ".join(f"{mean(theirs, a, b):9.4f}" for a, b in spans))
            first, last = mean(yours, 0, 10), mean(yours, train_steps - 10, train_steps)
            same = np.allclose(yours[:10], theirs[:10], rtol=1e-6)
            if not (last < 0.7 * first and same):
                r.fail("training", f"the loss went {first:.4f} → {last:.4f} (the first and last 10 "
                       "steps)" + ("" if same else "; it leaves the package's curve in the first 10 steps"))
                raise _Stop
            r.ok(f"training: the loss falls {first:.4f} → {last:.4f} with your gradients, and "
                 "follows the package's (the two drift apart slowly: round-off, amplified by training)")
    return r


def _stage(r, name, fn, *args, names=(), outputs=1):
    out = _call(r, name, fn, *args, names=names)
    if outputs > 1:
        out = _unpack(r, name, out, tuple(f"output {i}" for i in range(outputs)))
    return out


def _locate_capstone(r, params, clip, cfg, got_grads, want, fns):
    """Walk the reverse order with the reference's inputs; name the first stage that is wrong."""
    _, fw, bw = _capstone_reference(params, clip, cfg)
    fail = lambda stage, text: r.fail(f"first wrong stage: {stage}", text)   # noqa: E731

    # decoder: dpred -> dwarped, dec.W, dec.b
    dwarped, g = _stage(r, "decoder_backward", fns["decoder_backward"], bw["dpred"], fw, params,
                        names=("dpred", "fw", "params"), outputs=2)
    bad = (["dwarped"] if _mismatch(dwarped, bw["dwarped"]) else []) + _grads_problem(g, want, ("dec.W", "dec.b"))
    if bad:
        fail("decoder", f"decoder_backward, given the right dpred: {', '.join(bad)} wrong")
        if isinstance(dwarped, np.ndarray) and dwarped.shape == bw["dwarped"].shape and _close(4 * dwarped, bw["dwarped"]):
            r.info("dwarped is a quarter of the right one: the up-sampling's transpose sums each 2×2 block")
        elif bad == ["dwarped"]:
            r.info("dW and db are right: the convolution's dx (dup) or the up-sampling's transpose is wrong")
        return
    r.ok("decoder (conv backward, up-sampling's transpose) right")

    # sampler: dwarped -> de_sampler (image path), dgrid (grid path)
    de_s, dgrid = _stage(r, "sampler_backward", fns["sampler_backward"], bw["dwarped"], fw,
                         names=("dwarped", "fw"), outputs=2)
    if _mismatch(de_s, bw["de_sampler"]):
        fail("sampler's image path", "sampler_backward's de_sampler (the gradient of the encoded "
             f"frame e through the warp) {_mismatch(de_s, bw['de_sampler'])}")
        r.info("dimg: each corner q adds dout · w_q at its pixel; repeated indices add up (np.add.at)")
        return
    if _mismatch(dgrid, bw["dgrid"]):
        fail("sampler's grid path", f"sampler_backward's dgrid {_mismatch(dgrid, bw['dgrid'])}")
        r.info("dgrid = Σ_c dout · Σ_q img(q) · ∂w_q/∂(x_s, y_s): slope −1 for the x0 / y0 "
               "corners, +1 for x1 / y1, times the other axis's weight")
        return
    r.ok("sampler's image path (de into e) and grid path (dgrid) right")

    # dflow = dgrid + w_H ∂H/∂T + w_P ∂P/∂T, one term at a time
    steps = (("dgrid into dflow", dict(huber_weight=0.0, photo_weight=0.0)),
             ("Huber smoothness term", dict(photo_weight=0.0)), ("photometric term", {}))
    for stage, change in steps:
        c = dataclasses.replace(cfg, **change)
        dflow = _stage(r, "flow_gradient", fns["flow_gradient"], bw["dgrid"], fw, c,
                       names=("dgrid", "fw", "config"))
        ref = _sol_flow_gradient(bw["dgrid"], fw, c)
        if _mismatch(dflow, ref):
            fail(stage, f"flow_gradient {_mismatch(dflow, ref)} "
                 + {"dgrid into dflow": "with w_H = w_P = 0 (then dflow = dgrid: the grid is "
                                        "base grid + flow, slope 1)",
                    "Huber smoothness term": "with w_P = 0 (dgrid + w_H · ∂H/∂T); w_H = 0 is right",
                    "photometric term": "with the photometric term (w_P = 3); without it, right"}[stage])
            if stage == "photometric term" and isinstance(dflow, np.ndarray) and dflow.shape == ref.shape:
                part = (dflow - _sol_flow_gradient(bw["dgrid"], fw, dataclasses.replace(cfg, photo_weight=0.0))) / cfg.photo_weight
                _locate_photo(r, part, fw["flow"], fw["clip"], cfg.photo_blur, cfg.photo_gm_scale)
            return
    r.ok("dflow = dgrid + w_H ∂H/∂T + w_P ∂P/∂T right (each term)")

    # flow head: dflow -> dhs, flow grads
    names = ("flow3.W", "flow3.b", "flow2.W", "flow2.b", "flow1.W", "flow1.b")
    dhs, g = _stage(r, "flow_head_backward", fns["flow_head_backward"], bw["dflow"], fw, params,
                    names=("dflow", "fw", "params"), outputs=2)
    bad = _grads_problem(g, want, names) + (["dhs"] if _mismatch(dhs, bw["dhs"]) else [])
    if bad:
        fail("flow head and its tanh", f"flow_head_backward, given the right dflow: {', '.join(bad)} "
             "wrong" + (f"; {', '.join(n for n in names if n not in bad)} right" if len(bad) < 7 else ""))
        for mistake, why in FLOW_HEAD_CAUSES.items():
            if not _grads_problem(g, _flow_head_variant(bw["dflow"], fw, params, mistake), names):
                r.info(f"it matches the head with this mistake: {mistake}; {why}")
                break
        return
    r.ok("flow head and its two tanh right")

    # memory: dhs -> de_memory, lstm grads
    names = ("lstm.Wx", "lstm.Wh", "lstm.b")
    de_m, g = _stage(r, "memory_backward", fns["memory_backward"], bw["dhs"], fw, params,
                     names=("dhs", "fw", "params"), outputs=2)
    bad = _grads_problem(g, want, names) + (["de_memory"] if _mismatch(de_m, bw["de_memory"]) else [])
    if bad:
        fail("memory", f"memory_backward, given the right dhs: {', '.join(bad)} wrong")
        n, s = fw["lstm_cache"]["xs"].shape[:2]
        if isinstance(de_m, np.ndarray) and de_m.shape == bw["de_memory"].shape:
            got_t = de_m.reshape((n, s) + de_m.shape[1:])
            want_t = bw["de_memory"].reshape(got_t.shape)
            for t in reversed(range(s)):
                if not _close(got_t[:, t], want_t[:, t]):
                    r.info(f"walking back from t = {s - 1}, de_memory first goes wrong at t = {t}")
                    break
        for mistake, why in MEMORY_CAUSES.items():
            vd, vg = _memory_variant(bw["dhs"], fw, params, mistake)
            if not _grads_problem(g, vg, names) and _close(de_m, vd):
                r.info(f"it matches BPTT with this mistake: {mistake}; {why}")
                break
        return
    r.ok("memory (BPTT through the S steps) right")

    # the two paths into e, then the encoder
    names = ("enc.W", "enc.b")
    if _grads_problem(got_grads, want, names):
        enc = fns["encoder_backward"]
        paths = {"only the sampler's path": bw["de_sampler"], "only the memory's path": bw["de_memory"],
                 "the memory's path subtracted": bw["de_sampler"] - bw["de_memory"]}
        for what, de in paths.items():
            if not _grads_problem(got_grads, _stage(r, "encoder_backward", enc, de, fw, params), names):
                fail("the sum of the two paths into e", f"enc.W and enc.b are the encoder's "
                     f"backward of {what}: e feeds the sampler (de_sampler) and the memory "
                     "(de_memory); its gradient is their sum, de = de_sampler + de_memory")
                return
        g = _stage(r, "encoder_backward", enc, bw["de"], fw, params, names=("de", "fw", "params"))
        if not _grads_problem(g, want, names):
            fail("the sum of the two paths into e", "encoder_backward is right given de = "
                 "de_sampler + de_memory, but loss_and_grads gives it something else")
            return
        fail("encoder", "encoder_backward, given the right de: enc.W, enc.b wrong")
        for mistake, why in ENCODER_CAUSES.items():
            if not _grads_problem(g, _encoder_variant(bw["de"], fw, params, mistake), names):
                r.info(f"it matches the encoder with this mistake: {mistake}; {why}")
                break
        else:
            r.info("max-pool's backward routes de to the winner of each 2×2 window of t_enc "
                   "(the first in row-major order on ties), then × (1 − t_enc²), then the "
                   "convolution's dW, db")
        return
    r.fail("loss_and_grads (the chaining)", "every stage is right given the right inputs: "
           "loss_and_grads passes the wrong gradient from one to the next (dpred = 2(pred − "
           "targets) / pred.size)")


def capstone_training(loss_and_grads, steps=TRAIN_STEPS, lr=TRAIN_LR):
    """Train twice from one initialisation on the same clips: with ``loss_and_grads`` and
    with the package's STVAE.loss_and_grads; RMSProp, global-norm clipping at 1. Returns
    the two loss curves (lists of floats)."""
    from stvae_np.model import STVAE
    cfg = capstone_config()
    model = STVAE(cfg, seed=0, dtype="float64", ops="fast")     # = the plain ops' numbers, to 1e-12
    params = {k: v.copy() for k, v in model.params.items()}
    opt_yours, opt_theirs = optim.RMSProp(params, lr), optim.RMSProp(model.params, lr)
    rng = _rng(2016)
    yours, theirs = [], []
    for _ in range(steps):
        clip = _moving_squares(rng, 4, 4, 16, 16)
        loss, grads = loss_and_grads({k: v.copy() for k, v in params.items()}, clip, cfg)
        optim.clip_grad_norm(grads, cfg.clip_norm)
        opt_yours.step(grads)
        yours.append(float(loss))
        loss, grads = model.loss_and_grads(clip)
        optim.clip_grad_norm(grads, cfg.clip_norm)
        opt_theirs.step(grads)
        theirs.append(float(loss))
    return yours, theirs


def _save_training_figure(curves):
    """tutorials/figures/exercise_09_training.png: the two loss curves (script runs only)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "figures", "exercise_09_training.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(curves[1], label="the package's gradients", lw=3, alpha=0.5)
    ax.plot(curves[0], label="your gradients", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("exercise 09: training with your backward")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- registry
def _sol_conv_forward(x, w, b):
    return layers.conv2d_forward(x, w, b)[0]


def _sol_conv_backward(dout, x, w):
    cache = layers.conv2d_forward(x, w, np.zeros(w.shape[0], x.dtype))[1]   # with a bias: db
    return layers.conv2d_backward(dout, cache)


def _sol_maxpool_forward(x):
    return layers.maxpool2_forward(x)[0]


def _sol_maxpool_backward(dout, x):
    return layers.maxpool2_backward(dout, layers.maxpool2_forward(x)[1])


def _sol_upsample_forward(x):
    return layers.upsample2_forward(x)[0]


def _sol_upsample_backward(dout):
    n, c, h, w = dout.shape
    cache = layers.upsample2_forward(np.zeros((n, c, h // 2, w // 2), dout.dtype))[1]
    return layers.upsample2_backward(dout, cache)


def _sol_step_backward(dh, dc, cache):
    ref_cache = memory.convlstm_step_forward(cache["x"], cache["h_prev"], cache["c_prev"],
                                                cache["params"])[2]
    return memory.convlstm_step_backward(dh, dc, ref_cache)


def _sol_bptt(dhs, cache):
    _, ref_cache = memory.convlstm_forward(cache["xs"], cache["params"], cache["h0"], cache["c0"])
    return memory.convlstm_backward(dhs, ref_cache)


def _sol_bilinear_backward(dout, img, grid):
    return sampler.bilinear_backward(dout, sampler.bilinear_forward(img, grid)[1])


def _sol_huber_backward(dloss, flow, delta):
    return losses.huber_smoothness_backward(dloss, losses.huber_smoothness_forward(flow, delta)[1])


def _sol_rmsprop_step(params, grads, v, lr, alpha=0.99, eps=1e-8):
    _rmsprop_ref(params, grads, v, lr, alpha, eps)


def _sol_photo_backward(flow, clip, blur_sigma, gm_scale):
    return _photo_ref(flow, clip, blur_sigma, gm_scale)[1]


# exercise -> (checker, {learner function: (solution adapter, the solution's name and source)})
EXERCISES = {
    "01_convolution": (check_convolution, {
        "conv2d_forward": (_sol_conv_forward, layers.conv2d_forward),
        "conv2d_backward": (_sol_conv_backward, layers.conv2d_backward)}),
    "02_pool_upsample": (check_pool_upsample, {
        "maxpool2_forward": (_sol_maxpool_forward, layers.maxpool2_forward),
        "maxpool2_backward": (_sol_maxpool_backward, layers.maxpool2_backward),
        "upsample2_forward": (_sol_upsample_forward, layers.upsample2_forward),
        "upsample2_backward": (_sol_upsample_backward, layers.upsample2_backward)}),
    "03_convlstm_step": (check_convlstm_step, {
        "convlstm_step_backward": (_sol_step_backward, memory.convlstm_step_backward)}),
    "04_bptt": (check_bptt, {
        "convlstm_backward": (_sol_bptt, memory.convlstm_backward)}),
    "05_bilinear_sampler": (check_sampler, {
        "bilinear_backward": (_sol_bilinear_backward, sampler.bilinear_backward)}),
    "06_huber_smoothness": (check_huber, {
        "huber_smoothness_backward": (_sol_huber_backward, losses.huber_smoothness_backward)}),
    "07_rmsprop_clipping": (check_rmsprop, {
        "clip_grad_norm": (optim.clip_grad_norm, optim.clip_grad_norm),
        "rmsprop_step": (_sol_rmsprop_step, optim.RMSProp.step)}),
    "08_photometric": (check_photometric, {
        "photometric_backward": (_sol_photo_backward, losses.photometric_backward)}),
    "09_capstone": (check_capstone, {
        "loss_and_grads": (_sol_loss_and_grads, _sol_loss_and_grads),
        "decoder_backward": (_sol_decoder_backward, _sol_decoder_backward),
        "sampler_backward": (_sol_sampler_backward, _sol_sampler_backward),
        "flow_gradient": (_sol_flow_gradient, _sol_flow_gradient),
        "flow_head_backward": (_sol_flow_head_backward, _sol_flow_head_backward),
        "memory_backward": (_sol_memory_backward, _sol_memory_backward),
        "encoder_backward": (_sol_encoder_backward, _sol_encoder_backward)}),
}


def solution_mode():
    """True when STVAE_EXERCISE_SOLUTION is set to something other than '', '0' or 'false'."""
    return os.environ.get(SOLUTION_ENV, "").strip().lower() not in ("", "0", "false", "no")


def solution(exercise, name):
    """The solution of learner function ``name``, with the learner's signature."""
    return EXERCISES[exercise][1][name][0]


def check(exercise, **functions):
    """Grade ``functions`` (the learner's, plus any the exercise gives) and return the
    :class:`Report` without printing it."""
    if exercise not in EXERCISES:
        raise ValueError(f"unknown exercise {exercise!r}; one of {sorted(EXERCISES)}")
    return EXERCISES[exercise][0](**functions)


def _interactive():
    return "ipykernel" in sys.modules or hasattr(sys, "ps1")


def grade(exercise, **functions):
    """The grading cell: check, print the report, and (as a script) exit 1 on a failure.

    With STVAE_EXERCISE_SOLUTION=1 the solutions replace the learner's functions."""
    if solution_mode():
        names = []
        for name, (adapter, original) in EXERCISES[exercise][1].items():
            functions[name] = adapter
            names.append(f"{original.__module__}.{original.__qualname__}")
        print(f"solution mode ({SOLUTION_ENV}=1): grading {', '.join(names)} in place of "
              "your functions")
    report = check(exercise, **functions)
    if getattr(report, "curves", None) and not _interactive():
        path = _save_training_figure(report.curves)
        if path:
            report.footer.append(f"  (the two loss curves: {path})")
    if report.status != "PASS" and not _interactive():
        report.footer.append(_hint_footer(exercise, _hints_env()))   # help only when needed
    print(report.text())
    sys.stdout.flush()
    if report.status == "FAIL" and not _interactive():
        sys.exit(1)


def show_forward():
    """Print the source of exercise 09's given forward, :func:`capstone_forward`."""
    print(inspect.getsource(capstone_forward))


def show_solution(exercise):
    """Print the source of the solution (the reference op) of every function of ``exercise``."""
    for _, original in EXERCISES[exercise][1].values():
        print(f"# {original.__module__}.{original.__qualname__}\n{inspect.getsource(original)}")


# ----------------------------------------------------------------------------- hints
HINTS = {
    "01_convolution": [
        "Forward: pad x with p = k // 2 zeros on both spatial sides (np.pad). Then loop over the "
        "k·k kernel offsets (u, v): each adds one shifted H × W window of x_pad, weighted by "
        "W[:, :, u, v] and summed over the input channels (np.einsum can do that sum).",
        "db needs no loop: every output pixel of channel f got + b[f], so db[f] adds dout over "
        "every n, y, x.",
        "dW[:, :, u, v] pairs dout with the same window the forward used at offset (u, v); "
        "which axes does the einsum sum over, and which does it keep?",
        "dx: run the forward's loop backwards. The forward read x_pad[:, :, u:u+H, v:v+W]; the "
        "backward adds into dx_pad at the same slice. Crop the padding at the end. (The "
        "'correlate dout with the flipped kernel' shortcut works too: flip once.)",
    ],
    "02_pool_upsample": [
        "Reshape (N, C, H, W) to (N, C, H/2, 2, W/2, 2): axes 3 and 5 walk the 2×2 window.",
        "Max-pool backward needs to know which pixel won. Lay each window's 4 pixels out in "
        "row-major order, (0, 0), (0, 1), (1, 0), (1, 1): a transpose and a reshape of hint 1's "
        "array to (N, C, H/2, W/2, 4).",
        "Only the winner receives dout; the other three pixels of a window get 0. A mask "
        "x == max is not enough: on a tie (an all-zero window of the blank background ties "
        "four ways) it marks every tied pixel. argmax over the 4 pixels returns the first "
        "maximum, the rule here: compare it with np.arange(4).",
        "Up-sampling copies each pixel to four places; in the backward each copy sends its "
        "gradient back to the one pixel it came from. Reuse the reshape of hint 1.",
    ],
    "03_convlstm_step": [
        "Walk the forward's lines from the last one up. h = o ⊙ tanh(c): what do o and c "
        "each receive from dh?",
        "c receives gradient twice: from h (above) and from the next step (dc). Add them "
        "before you use δc.",
        "c = f ⊙ c_prev + i ⊙ g is a product rule three times over, plus the path to c_prev.",
        "The pre-activations need the derivative of their non-linearity, from the cached "
        "outputs: σ' = s(1 − s), tanh' = 1 − t². Stack the four δa's in the order i, f, g, o.",
        "a = Wx * x + b + Wh * h_prev is two convolutions, and conv2d_backward returns three "
        "values each time: conv2d_backward(δa, cache['x_conv']) gives dx, dWx, db, and "
        "conv2d_backward(δa, cache['h_conv']) gives dh_prev, dWh, None (that convolution has "
        "no bias): dh_prev, dWh, _ = ….",
    ],
    "04_bptt": [
        "Walk t = T−1, …, 0 (reversed(range(T))). Before the loop nothing comes from the "
        "future: the carried dh and dc start at zero.",
        "h_t feeds two things, the loss and step t+1: the dh you pass to step t's backward is "
        "the sum of both gradients.",
        "c_t feeds only step t+1: its gradient is the dc_prev that step t+1's backward returned.",
        "The weights are the same at every step: add each step's dparams to a running total.",
        "When the loop ends, the carried dh and dc are the gradients of the initial state "
        "h₋₁, c₋₁ (the arguments h0, c0): dparams[\"h0\"] and dparams[\"c0\"].",
    ],
    "05_bilinear_sampler": [
        "Recompute what the forward did: x0 = floor(x_s), x1 = x0 + 1, the weights wx0 = x1 − x_s, "
        "wx1 = x_s − x0 (same in y), and for each corner whether it lies in the map.",
        "Write the four corners out one by one (no loop cleverness): each has a weight "
        "w = wy · wx · valid and an index (y, x) into the image.",
        "dimg: each corner adds dout · w to its pixel. Several output pixels can read the same "
        "pixel: np.add.at adds repeated indices, a[idx] += v does not.",
        "dgrid x: only wx depends on x_s, with slope −1 for x0 and +1 for x1. Multiply by "
        "dout · img(corner) · wy · valid and sum over the channels and the four corners.",
    ],
    "06_huber_smoothness": [
        "Work per difference: the loss is mean(H(D_x)) + mean(H(D_y)), so dL/dD_x = "
        "dloss · H'(D_x) / D_x.size, and the same for D_y with D_y.size.",
        "H'(a) is continuous and has two pieces: which one is a, which one is δ·sign(a)?",
        "D_x = T[..., :, 1:] − T[..., :, :-1]: the gradient of D_x goes with + to the right "
        "column and with − to the left one. Add (+=) into a zero dflow; slices overlap.",
    ],
    "07_rmsprop_clipping": [
        "Clipping: one norm for all tensors together, √(Σ_tensors Σ g²); then one scale "
        "max_norm / (norm + 1e-6), applied only when norm > max_norm.",
        "In place means the caller's arrays change: g *= scale, p -= …, v *= alpha. "
        "Assigning grads[name] = … makes a new array the caller never sees.",
        "RMSProp: update v first, v ← α·v + (1 − α)·g², then step with the new v.",
        "Where is ε? It keeps the step finite when v ≈ 0; put it where Torch and PyTorch do.",
    ],
    "08_photometric": [
        "Recompute the forward first: blur all frames of the clip, split them into B(x_t) "
        "(clip[:, :-1]) and B(x_{t+1}) (clip[:, 1:]), each reshaped to (N·(T−1), C, H, W); the "
        "grid is flow_to_grid(2 · upsample2(flow)); d = warped − B(x_{t+1}).",
        "ρ(d) = d² / (d² + C²) is a quotient: ρ'(d) = (2d·(d² + C²) − d²·2d) / (d² + C²)², "
        "which simplifies to 2d·C² / (d² + C²)².",
        "P = Σ w ρ / Σ w with w = B(x_{t+1}): one Σw over everything, a constant. The weights "
        "are data: ∂P/∂warped = w / Σw · ρ'(d), nothing more.",
        "bilinear_backward returns (dimg, dgrid): the flow moves the grid, so keep dgrid "
        "(M, 2, H, W); dimg is the frames' gradient, which nobody needs.",
        "The forward copied each memory pixel to a 2×2 block and multiplied by 2: the backward "
        "sums each block (reshape to (M, 2, h, 2, w, 2), sum axes 3 and 5) and multiplies by 2.",
    ],
    "09_capstone": [
        "Start from the top: the loss is mean((pred − targets)²) + …, so dpred = 2 (pred − "
        "targets) / pred.size. Then walk the stages in the order loss_and_grads calls them.",
        "decoder_backward: conv2d_backward(dpred, fw['up'], dec.W) gives dup, dW, db; the "
        "up-sampling's transpose of dup is dwarped. sampler_backward: one bilinear_backward "
        "(dwarped, fw['e'], fw['grid']) gives both paths.",
        "flow_gradient: the grid is base grid + flow (slope 1), so dflow starts as dgrid; add "
        "w_H · huber_smoothness_backward(1, flow, δ) and w_P · photometric_backward(flow, clip, σ, C).",
        "flow_head_backward: three conv2d_backward calls from flow3 down to flow1; between them "
        "multiply by tanh' = 1 − f² of the tanh's OUTPUT (fw['f2'], then fw['f1']).",
        "memory_backward: dhs_flat is stacked clip-major (k = n·S + t): reshape to (N, S, Fm, h, w) "
        "for convlstm_backward(dhs, fw['lstm_cache']), and its dxs back to (N·S, Fe, h, w).",
        "e feeds two things, the sampler and the memory: de = de_sampler + de_memory. "
        "encoder_backward: maxpool2_backward(de, fw['t_enc']) × (1 − t_enc²), then "
        "conv2d_backward(…, fw['inputs'], enc.W) (its dx is not needed).",
    ],
}
_hints_shown = {}


def _hints_env():
    """STVAE_HINTS as a number of hints (0 when unset or not a number)."""
    try:
        return max(0, int(os.environ.get(HINTS_ENV, "0")))
    except ValueError:
        return 0


def _script_path(exercise):
    """The exercise's file, absolute: a command naming it works from any folder."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{exercise}.py")


def _hint_footer(exercise, shown):
    """One line: how to see the next hint (or the solution once every hint is shown)."""
    hints = HINTS[exercise]
    shown = min(shown, len(hints))
    if shown >= len(hints):
        return f"  (no more hints; the solution: grader.show_solution({exercise!r}))"
    left = len(hints) - shown
    if _interactive():
        how = "run the hint cell again for the next one"
    else:
        how = (f"`{HINTS_ENV}={shown + 1} python {shlex.quote(_script_path(exercise))}` "
               "shows the next one, or open the exercise as a notebook")
    return f"  ({left} more hint{'s' if left > 1 else ''}: {how})"


def hint(exercise):
    """The hint cell: in a notebook each run shows one more hint (all unlocked ones are
    printed, then how to get the next); as a script, STVAE_HINTS=n shows the first n, and
    the grading report, unless it is a PASS, says how to get more."""
    hints = HINTS[exercise]
    if _interactive():
        shown = min(_hints_shown.get(exercise, 0) + 1, len(hints))
        _hints_shown[exercise] = shown
    else:
        shown = min(_hints_env(), len(hints))
    for i in range(shown):
        print(f"Hint {i + 1}/{len(hints)}: {hints[i]}")
    if _interactive():          # the learner ran this cell to ask: answer here
        print(_hint_footer(exercise, shown).strip())
