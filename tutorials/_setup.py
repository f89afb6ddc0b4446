"""Shared first cell of every tutorial: make ``stvae_np`` importable from any working
directory, and save (or show) figures.

    import _setup                      # the tutorials folder is on sys.path when a
    from _setup import show            # tutorial runs as a script or as a notebook

Figures go to ``tutorials/figures/<name>.png``; in a notebook they are also displayed.
"""
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
FIGURES = HERE / "figures"
RUNS = HERE / "runs"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

if "ipykernel" not in sys.modules and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")          # head-less script: files only

import matplotlib.pyplot as plt  # noqa: E402


def show(fig, name):
    """Save ``fig`` as tutorials/figures/<name>.png, display it in a notebook, close it."""
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    if "ipykernel" in sys.modules:
        plt.show()
    plt.close(fig)
    print(f"figure saved: {path}")
    return path


def show_png(path):
    """The viz functions write their own PNG: print its path and, in a notebook, show it."""
    if "ipykernel" in sys.modules:
        from IPython.display import Image, display
        display(Image(filename=str(path)))
    print(f"figure saved: {path}")
    return path


def show_code(func):
    """Print a function's source without its docstring: the lines that actually run."""
    import ast
    import inspect
    lines = inspect.getsource(func).splitlines()
    body = ast.parse(inspect.getsource(func)).body[0].body
    has_doc = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    first = body[1].lineno if has_doc else body[0].lineno
    print("\n".join(lines[:body[0].lineno - 1] + lines[first - 1:]) + "\n")


def max_rel_diff(a, b):
    """max|a − b| / max|b|: how far the fast result a is from the reference b."""
    import numpy as np
    return float(np.abs(a - b).max() / np.abs(b).max())


def best_time(func, repeats=5):
    """The fastest of a few runs after a warm-up: the least disturbed by the machine."""
    import time
    func()                                                     # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return min(times)
