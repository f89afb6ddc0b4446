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
