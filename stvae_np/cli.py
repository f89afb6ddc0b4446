"""What the command-line entry points share: one-line errors and device resolution.

A user's mistake (a missing file, an unknown preset, a GPU asked for but absent) is
reported as one line on stderr with exit status 2, never as a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import math

from .backend import gpu_available


class CLIError(Exception):
    """A user mistake: reported as one line on stderr, exit status 2, no traceback."""


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument raises :class:`CLIError` (one line, no usage block)."""

    def error(self, message):
        raise CLIError(message)


@contextlib.contextmanager
def one_line(path):
    """Inside: the library's ValueError or missing file (its message names the problem)
    becomes a CLIError; another OSError one that names ``path`` and the cause."""
    try:
        yield
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from None
    except OSError as err:
        raise CLIError(f"{path}: cannot read it ({err.strerror or err})") from None


def resolve_device(name: str) -> str:
    """"auto" -> "gpu" when a CUDA device answers, else "cpu"; "gpu" without one is an error."""
    if name == "auto":
        return "gpu" if gpu_available() else "cpu"
    if name == "gpu" and not gpu_available():
        raise CLIError("--device gpu asked for, but no CUDA device is available "
                       "(install the GPU extra: pip install -r requirements-gpu.txt)")
    return name


def require_positive(**values):
    """Raise CLIError for the first option below 1, e.g. require_positive(steps=0)."""
    for name, v in values.items():
        if v < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be at least 1, got {v}")


def require_finite(**values):
    """Raise CLIError for the first option that is NaN or infinite, e.g. require_finite(lr=nan)."""
    for name, v in values.items():
        if not math.isfinite(v):
            raise CLIError(f"--{name.replace('_', '-')} must be a finite number, got {v}")


def check_clip_file(path, frames_shape, config, min_frames, why):
    """A file of clips must match the model's frame size and hold ``min_frames`` frames."""
    _, t, c, h, w = frames_shape
    if (c, h, w) != (config.channels, config.height, config.width):
        raise CLIError(f"{path}: clips are {c}×{h}×{w} (C×H×W), the model expects "
                       f"{config.channels}×{config.height}×{config.width}")
    if t < min_frames:
        raise CLIError(f"{path}: clips have {t} frames; {why} needs {min_frames}")
