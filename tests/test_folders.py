"""Nothing lost: re-used folders, failed runs, concurrent runs, disk full in training and
in evaluate each leave the previous good files as they were."""
import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from stvae_np import checkpoint
from stvae_np import evaluate as E
from stvae_np import train as T
from stvae_np.model import STVAE

FAST = ["--batch-size", "2", "--seq-len", "3", "--eval-clips", "2", "--quiet", "--no-figures"]


@pytest.fixture(autouse=True)
def no_final_evaluation(monkeypatch):
    monkeypatch.setattr(T, "final_evaluation", lambda model, clips, final, *a, **k: (dict(final), {}))


def _snapshot(folder):
    return {p: (folder / p).read_bytes() for p in sorted(os.listdir(folder))
            if (folder / p).is_file() and not p.startswith(".")}


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def finished(tmp_path):
    out = tmp_path / "run"
    assert T.main([*FAST, "--steps", "2", "--out", str(out)]) == 0
    return out


def test_a_finished_run_is_not_overwritten_without_overwrite(finished, capsys):
    before = _snapshot(finished)
    assert T.main([*FAST, "--steps", "2", "--out", str(finished), "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert _snapshot(finished) == before
    # --overwrite replaces it, on purpose
    assert T.main([*FAST, "--steps", "1", "--out", str(finished), "--overwrite"]) == 0
    assert json.loads((finished / "metrics.json").read_text())["steps"] == 1


def test_a_run_failing_mid_training_keeps_the_last_good_checkpoint(finished, monkeypatch, capsys):
    """A resumed run whose loss turns NaN stops with exit 1; checkpoint, metrics and the
    run's settings are those of the good run."""
    before = _snapshot(finished)
    orig = STVAE.loss_and_grads
    monkeypatch.setattr(STVAE, "loss_and_grads",
                        lambda self, clip: (lambda lg: (lg[0] * np.nan, lg[1]))(orig(self, clip)))
    assert T.main([*FAST, "--steps", "4", "--resume", str(finished / "checkpoint.npz")]) == 1
    assert "loss became nan" in capsys.readouterr().err
    after = _snapshot(finished)
    for name in ("checkpoint.npz", "metrics.json", "config.json"):
        assert after[name] == before[name], name
    assert json.loads(after["run.json"]) == json.loads(before["run.json"])


def test_a_second_run_into_a_busy_folder_stops_and_the_first_finishes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "busy"
    second = []

    def hook(moment, step):
        if moment == "boundary" and step == 1:
            second.append(T.main([*FAST, "--steps", "2", "--out", str(out), "--overwrite"]))
    monkeypatch.setattr(T, "_test_hook", hook)
    assert T.main([*FAST, "--steps", "2", "--out", str(out)]) == 0
    assert second == [2]
    assert "in use" in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2
    assert not (out / ".lock").exists()


def test_a_stale_lock_and_stale_temp_files_are_taken_over_with_a_note(finished, capsys):
    pid = _dead_pid()
    (finished / ".lock").write_text(f"{pid}\n")
    (finished / f"checkpoint.npz.tmp-{pid}").write_bytes(b"PK half")
    assert T.main([*FAST, "--steps", "3", "--resume", str(finished / "checkpoint.npz")]) == 0
    err = capsys.readouterr().err
    assert f"process {pid}, which is gone" in err and "removed 1 temporary file" in err
    assert not list(finished.glob("*.tmp-*")) and not (finished / ".lock").exists()


def test_disk_full_in_training_keeps_the_previous_checkpoint(finished, monkeypatch, capsys):
    before = _snapshot(finished)
    savez = np.savez

    def full(fh, **arrays):
        fh.write(b"PK\x03\x04 a few bytes")
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
    monkeypatch.setattr(np, "savez", full)
    assert T.main([*FAST, "--steps", "4", "--ckpt-every", "1",
                   "--resume", str(finished / "checkpoint.npz")]) == 1
    err = capsys.readouterr().err
    assert "cannot write the checkpoint" in err and "File too large" in err
    assert "Traceback" not in err and err.strip().count("\n") == 0
    monkeypatch.setattr(np, "savez", savez)
    assert _snapshot(finished)["checkpoint.npz"] == before["checkpoint.npz"]
    assert not list(finished.glob("*.tmp-*"))


def test_disk_full_in_evaluate_keeps_the_previous_results(finished, monkeypatch, capsys):
    ckpt = str(finished / "checkpoint.npz")
    args = [ckpt, "--clips", "2", "--context", "3", "--future", "2", "--quiet", "--no-figures"]
    assert E.main([*args, "--out", str(finished / "ev")]) == 0
    assert E.main(args) == 0                                # default: a new folder each time
    assert (finished / "eval-1" / "metrics.json").exists()
    before = _snapshot(finished / "ev")
    import stvae_np.runfolder as R
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(R.os, "fsync", full)
    code = E.main([*args, "--out", str(finished / "ev"), "--overwrite"])
    monkeypatch.setattr(R.os, "fsync", real_fsync)
    err = capsys.readouterr().err
    assert code == 1 and "No space left" in err and "Traceback" not in err
    assert _snapshot(finished / "ev") == before
    assert not list((finished / "ev").glob("*.tmp-*"))


def test_resume_into_a_new_folder_takes_the_checkpoints_settings(finished, tmp_path):
    """--resume CKPT --out NEW: the settings come from the checkpoint's run, not from NEW."""
    new = tmp_path / "new"
    new.mkdir()
    (new / "run.json").write_text(json.dumps({"data": "shapes", "batch_size": 7, "lr": 0.5}))
    assert T.main([*FAST, "--steps", "3", "--resume", str(finished / "checkpoint.npz"),
                   "--out", str(new)]) == 2           # NEW holds another run's settings
    (new / "run.json").unlink()
    assert T.main(["--quiet", "--no-figures", "--steps", "3",
                   "--resume", str(finished / "checkpoint.npz"), "--out", str(new)]) == 0
    got, want = (json.loads((d / "run.json").read_text()) for d in (new, finished))
    for key in ("data", "seed", "batch_size", "seq_len", "lr", "clip_norm"):
        assert got[key] == want[key], key
    _, extra = checkpoint.load(new / "checkpoint.npz", return_extra=True)
    assert int(extra["step"]) == 3
