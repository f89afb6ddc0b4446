"""The training command: a short run end to end, resume equality, atomic checkpoints,
Ctrl-C, a non-finite loss, data files, and one-line errors for bad arguments."""
import json

import numpy as np
import pytest

from stvae_np import checkpoint
from stvae_np import train as T
from stvae_np.model import PARAM_NAMES, STVAE

FAST = ["--batch-size", "2", "--seq-len", "3", "--eval-clips", "2", "--quiet"]


def run(tmp_path, name, *args):
    out = tmp_path / name
    code = T.main([*FAST, "--out", str(out), *args])
    return code, out


def test_short_run_writes_everything(tmp_path):
    code, out = run(tmp_path, "a", "--steps", "3")
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 3 and m["train_seconds"] > 0
    for key in ("mse", "copy_last_mse", "psnr", "ssim", "epe", "zero_flow_epe"):
        assert np.isfinite(m["test"][key]), key
    assert [s for s, _ in m["history"]["loss"]] == [1, 2, 3]
    assert json.loads((out / "config.json").read_text())["name"] == "tiny"
    for fig in ("loss_curve.png", "predictions.png", "flow.png"):
        assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", fig
    model, extra = checkpoint.load(out / "checkpoint.npz", return_extra=True)
    assert int(extra["step"]) == 3


def test_held_out_clips_keep_the_presets_length_whatever_seq_len_trains_on(tmp_path):
    """Training on 3-frame clips (FAST) is still scored on the tiny preset's 10-frame
    held-out clips, so flow steps t >= 2 exist and match the 10-frame evaluation."""
    from stvae_np.data import TEST_SEED, VAL_SEED, load_eval_clips
    from stvae_np.evaluate import one_step_metrics
    code, out = run(tmp_path, "len", "--steps", "1", "--no-figures")
    assert code == 0
    got = json.loads((out / "metrics.json").read_text())["history"]["eval"][-1]
    model = checkpoint.load(out / "checkpoint.npz")
    assert model.config.seq_len == 10
    for prefix, seed in (("", TEST_SEED), ("val_", VAL_SEED)):
        clips, _ = load_eval_clips("moving-mnist", model.config, 2, 10, seed=seed)
        want = one_step_metrics(model, clips)
        assert got[prefix + "epe_t2"] == pytest.approx(want["epe_t2"], rel=1e-6)
        assert got[prefix + "mse"] == pytest.approx(want["mse"], rel=1e-6)


def _params(path):
    model, extra = checkpoint.load(path, return_extra=True)
    return model.params, extra


def test_resumed_run_is_bit_identical(tmp_path):
    code, straight = run(tmp_path, "straight", "--steps", "6", "--no-figures")
    assert code == 0
    code, split = run(tmp_path, "split", "--steps", "3", "--no-figures")
    assert code == 0
    code = T.main([*FAST, "--resume", str(split / "checkpoint.npz"), "--steps", "6", "--no-figures"])
    assert code == 0
    p1, e1 = _params(straight / "checkpoint.npz")
    p2, e2 = _params(split / "checkpoint.npz")
    assert int(e1["step"]) == int(e2["step"]) == 6
    for k in PARAM_NAMES:
        np.testing.assert_array_equal(p1[k], p2[k], err_msg=k)
        np.testing.assert_array_equal(e1[f"opt/v/{k}"], e2[f"opt/v/{k}"], err_msg=k)
    l1 = json.loads((straight / "metrics.json").read_text())["history"]["loss"]
    l2 = json.loads((split / "metrics.json").read_text())["history"]["loss"]
    assert l1 == l2


def _loss_curve(out):
    return np.array(json.loads((out / "metrics.json").read_text())["history"]["loss"])


def _spy_on_plain_convolutions(monkeypatch):
    """A list that grows by one at each call of the plain ops' conv2d_forward (layers.py)."""
    from stvae_np import layers as plain_layers
    calls, conv = [], plain_layers.conv2d_forward
    monkeypatch.setattr(plain_layers, "conv2d_forward", lambda *a, **k: calls.append(1) or conv(*a, **k))
    return calls


def test_plain_ops_train_the_same_loss_curve_as_fast_ops(tmp_path, monkeypatch):
    """--ops plain runs layers.py and memory.py (a spy sees the plain convolutions), and
    three steps give the loss curve of the fast ops to 1e-5 (float32); run.json says which."""
    code, fast = run(tmp_path, "fast", "--steps", "3", "--no-figures")
    assert code == 0
    calls = _spy_on_plain_convolutions(monkeypatch)
    code, plain = run(tmp_path, "plain", "--steps", "3", "--no-figures", "--ops", "plain")
    assert code == 0 and calls
    want, got = _loss_curve(fast), _loss_curve(plain)
    assert want[:, 0].tolist() == got[:, 0].tolist() == [1, 2, 3]
    np.testing.assert_allclose(got[:, 1], want[:, 1], rtol=0, atol=1e-5)
    assert json.loads((fast / "run.json").read_text())["ops"] == "fast"
    assert json.loads((plain / "run.json").read_text())["ops"] == "plain"


def test_a_fast_run_resumed_with_plain_ops_carries_on(tmp_path, monkeypatch):
    """--resume --ops plain swaps the loaded model's ops and keeps its parameters: the
    resumed step runs the plain convolutions and the curve is the straight run's to 1e-5."""
    code, straight = run(tmp_path, "straight", "--steps", "3", "--no-figures")
    assert code == 0
    code, split = run(tmp_path, "split", "--steps", "2", "--no-figures")
    assert code == 0
    calls = _spy_on_plain_convolutions(monkeypatch)
    code = T.main([*FAST, "--resume", str(split / "checkpoint.npz"), "--steps", "3", "--no-figures",
                   "--ops", "plain"])
    assert code == 0 and calls
    want, got = _loss_curve(straight), _loss_curve(split)
    assert want[:, 0].tolist() == got[:, 0].tolist() == [1, 2, 3]
    np.testing.assert_array_equal(got[:2, 1], want[:2, 1])          # the fast steps, as before
    np.testing.assert_allclose(got[2, 1], want[2, 1], rtol=0, atol=1e-5)
    assert json.loads((split / "run.json").read_text())["ops"] == "plain"


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    model = STVAE(T.Config.tiny())
    path = tmp_path / "checkpoint.npz"
    checkpoint.save(model, path)
    before = path.read_bytes()

    def broken_savez(fh, **arrays):
        fh.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    model.params["enc.b"] += 1.0
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(model, path)
    assert path.read_bytes() == before                  # the old checkpoint is untouched
    assert not list(tmp_path.glob("*.tmp-*"))           # and no temporary file is left


class _Interrupt:
    """Wraps STVAE.loss_and_grads: raises ``exc`` (or returns a NaN loss) on call ``at``."""

    def __init__(self, monkeypatch, at, nan=False):
        self.calls, self.at, self.nan = 0, at, nan
        self.orig = STVAE.loss_and_grads
        monkeypatch.setattr(STVAE, "loss_and_grads", self)

    def __get__(self, model, owner):
        return lambda clip: self(model, clip)

    def __call__(self, model, clip):
        self.calls += 1
        loss, grads = self.orig(model, clip)
        if self.calls == self.at:
            if not self.nan:
                raise KeyboardInterrupt
            loss = loss * np.nan
        return loss, grads


def test_ctrl_c_writes_a_checkpoint_and_resume_finishes(tmp_path, monkeypatch, capsys):
    _Interrupt(monkeypatch, at=3)
    code, out = run(tmp_path, "int", "--steps", "5", "--no-figures")
    assert code == 130
    assert "interrupted at step 2" in capsys.readouterr().err
    _, extra = _params(out / "checkpoint.npz")
    assert int(extra["step"]) == 2
    monkeypatch.undo()
    assert T.main([*FAST, "--resume", str(out / "checkpoint.npz"), "--steps", "5", "--no-figures"]) == 0
    _, extra = _params(out / "checkpoint.npz")
    assert int(extra["step"]) == 5


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    _Interrupt(monkeypatch, at=4, nan=True)
    code, out = run(tmp_path, "nan", "--steps", "6", "--ckpt-every", "2", "--no-figures")
    assert code == 1
    err = capsys.readouterr().err
    assert "loss became nan at step 4" in err and "checkpoint.npz" in err
    params, extra = _params(out / "checkpoint.npz")
    assert int(extra["step"]) == 2
    assert all(np.isfinite(v).all() for v in params.values())


def test_training_on_a_file_of_clips(tmp_path):
    clips = np.random.default_rng(0).integers(0, 256, (6, 5, 32, 32), dtype=np.uint8)
    np.save(tmp_path / "clips.npy", clips)
    code, out = run(tmp_path, "file", "--steps", "2", "--data", str(tmp_path / "clips.npy"),
                    "--no-figures")
    assert code == 0
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert "epe" not in test and np.isfinite(test["mse"])     # no ground-truth flow in a file


@pytest.mark.parametrize("args,msg", [
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--data", "no/such/file.npy"], "neither one of"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--seq-len", "1"], "--seq-len must be at least 2"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--frobnicate"], "unrecognized arguments"),
    (["--ops", "slow"], "invalid choice: 'slow'"),
    (["--resume", "no/such/ckpt.npz"], "checkpoint not found"),
    (["--set", "photo_wieght=3"], "expected FIELD=VALUE with FIELD one of"),
    (["--set", "photo_weight"], "expected FIELD=VALUE"),
    (["--set", "photo_weight=lots"], "'lots' is not a valid float"),
    (["--set", "photo_loss=l1"], "photo_loss must be 'l2', 'charbonnier' or 'geman_mcclure'"),
    (["--set", "photo_weighting=pixels"], "photo_weighting must be 'uniform' or 'next_frame'"),
    (["--set", "photo_loss=charbonnier"], "photo_weighting='next_frame' needs photo_loss 'l2' or 'geman_mcclure'"),
    (["--set", "photo_gm_scale=0"], "photo_gm_scale must be positive"),
    (["--set", "flow_kernel=4"], "flow_kernel must be odd"),
])
def test_bad_arguments_give_one_line_and_no_traceback(tmp_path, capsys, args, msg):
    code = T.main([*FAST, "--out", str(tmp_path / "x"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err


def test_wrong_frame_size_in_a_file(tmp_path, capsys):
    np.save(tmp_path / "big.npy", np.zeros((4, 5, 64, 64), np.uint8))
    code = T.main([*FAST, "--out", str(tmp_path / "x"), "--data", str(tmp_path / "big.npy")])
    assert code == 2 and "expects 1×32×32" in capsys.readouterr().err


def test_set_overrides_the_recipe_and_is_recorded(tmp_path):
    """--set FIELD=VALUE changes the preset's Config for a new run (typed as the field),
    the run folder and the checkpoint keep it, the log's evaluations carry the validation
    figures the study chooses on, and --resume refuses to change a recipe midway."""
    code, out = run(tmp_path, "s", "--steps", "2", "--seq-len", "5", "--no-figures", "--set", "photo_weight=0",
                    "--set", "flow_kernel=3", "--set", "photo_loss=charbonnier",
                    "--set", "photo_weighting=uniform")
    assert code == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["photo_weight"], cfg["flow_kernel"], cfg["photo_loss"], cfg["photo_weighting"]) == (
        0.0, 3, "charbonnier", "uniform")
    model = checkpoint.load(out / "checkpoint.npz")
    assert model.config.flow_kernel == 3 and model.params["flow1.W"].shape[-1] == 3
    m = json.loads((out / "metrics.json").read_text())
    last = m["history"]["eval"][-1]
    for key in ("val_mse", "val_epe_t2", "val_flow_gain_t2", "epe_t2", "flow_gain_t2"):
        assert key in last, key
    assert "classical_epe_t2" in m["test"]
    code = T.main([*FAST, "--resume", str(out / "checkpoint.npz"), "--steps", "3",
                   "--set", "photo_weight=3"])
    assert code == 2


def test_apply_overrides_without_items_keeps_the_config():
    from stvae_np.model import Config
    cfg = Config.tiny()
    assert T.apply_overrides(cfg, []) is cfg
    assert T.apply_overrides(cfg, ["lr=0.5"]).lr == 0.5 and cfg.lr == 2e-3
