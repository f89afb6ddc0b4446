"""Every tutorial runs head-less from a foreign working directory and ends with a
passing check.

Each ``tutorials/NN_*.py`` is run as a plain script (``python tutorials/NN_name.py``)
with the working directory set to a temporary folder, so a tutorial that depends on
the current directory fails here. Its last line of interest,

    gradient check: max relative error = 3.2e-09

is parsed and compared with a threshold: 1e-6 by default, 1e-5 for the whole-model
check of tutorial 06 (thirteen chained backward passes, directional derivatives).
Tutorial 05 has no gradient of its own to check: it ends on
``optimizer check: max relative error = X``, RMSProp.step and clip_grad_norm against
their equations written out by hand, which agree to round-off (X ≤ 1e-12).
The tutorials run in sorted order, so 07 (training, writes tutorials/runs/07_training)
runs before 08 (which reuses its checkpoint, or trains briefly without it).
"""
import os
import pathlib
import re
import subprocess
import sys

import pytest

TUTORIALS = pathlib.Path(__file__).resolve().parent.parent / "tutorials"
SCRIPTS = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))
THRESHOLDS = {5: 1e-12, 6: 1e-5}   # tutorial number -> largest allowed relative error
DEFAULT_THRESHOLD = 1e-6
CHECK_KIND = {5: "optimizer"}       # tutorial number -> the check its last line names
TIMEOUT_S = 240
CHECK_LINE = re.compile(r"^(\w+) check: max relative error = (\S+)\s*$", re.MULTILINE)


def test_tutorials_exist():
    assert SCRIPTS, f"no tutorials found in {TUTORIALS}"


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_tutorial_runs_and_its_gradient_check_passes(path, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("DISPLAY", None)
    try:
        proc = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        pytest.fail(f"{path.name} ran longer than {TIMEOUT_S} s; last output:\n{out[-2000:]}")
    assert proc.returncode == 0, (f"{path.name} exited with status {proc.returncode}\n"
                                  f"--- stderr (tail) ---\n{proc.stderr[-3000:]}\n"
                                  f"--- stdout (tail) ---\n{proc.stdout[-1000:]}")
    number = int(path.name[:2])
    kind = CHECK_KIND.get(number, "gradient")
    found = [value for name, value in CHECK_LINE.findall(proc.stdout) if name == kind]
    assert found, (f"{path.name} printed no line '{kind} check: max relative error = X'; "
                   f"stdout tail:\n{proc.stdout[-1500:]}")
    error = float(found[-1])
    threshold = THRESHOLDS.get(number, DEFAULT_THRESHOLD)
    assert error <= threshold, (f"{path.name}: gradient check relative error {error:.2e} "
                                f"exceeds {threshold:.0e}")
