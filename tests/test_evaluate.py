"""Evaluation: mask propagation by a known flow, flow metrics of a model with a known
(constant) flow, rollout scores, the report folder, and the command line."""
import importlib.util
import json
import pathlib
import math

import numpy as np
import pytest

from stvae_np import checkpoint
from stvae_np import evaluate as E
from stvae_np import metrics as M
from stvae_np.data import Clips, moving_shapes
from stvae_np.model import STVAE, Config

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = ("rollout_mse.png", "rollout_ssim.png", "rollout.png", "flow.png", "masks.png")


def _square_clips(n=2, seq_len=4, size=32, side=6, speed=2):
    """Bright side×side squares moving right by ``speed`` px per frame, with their masks
    and the true backward flow (−speed, 0) on the square's pixels of frame t+1."""
    frames = np.zeros((n, seq_len, 1, size, size), np.float32)
    masks = np.zeros((n, seq_len, 1, size, size), bool)
    for i in range(n):
        y0 = 4 + 8 * i
        for t in range(seq_len):
            x0 = 3 + speed * t
            masks[i, t, 0, y0:y0 + side, x0:x0 + side] = True
    frames[masks] = 1.0
    flow = np.zeros((n, seq_len - 1, 2, size, size), np.float32)
    flow[:, :, 0] = np.where(masks[:, 1:, 0], -float(speed), 0.0)
    return Clips(frames, flow, masks)


def _constant_flow_model(fx, fy):
    """An untrained tiny model whose flow head outputs (fx, fy) memory-grid pixels everywhere:
    the last 1×1 layer has zero weights, so its output is its bias."""
    model = STVAE(Config.tiny())
    model.params["flow3.W"][...] = 0.0
    model.params["flow3.b"][...] = np.array([fx, fy], np.float32)
    return model


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "checkpoint.npz"
    checkpoint.save(STVAE(Config.tiny()), path)
    return path


# ----------------------------------------------------------------------------- masks
def test_propagate_masks_integer_shift_is_exact():
    rng = np.random.default_rng(0)
    masks = rng.random((2, 3, 1, 8, 10)) < 0.4                     # (N, T, 1, H, W)
    flow_mem = np.zeros((2, 3, 2, 4, 5))
    flow_mem[:, :, 0] = -1.0                                       # −1 memory px in x ...
    flow_img = M.upsample_flow(flow_mem, 2)                        # ... is −2 image px
    np.testing.assert_array_equal(flow_img[:, :, 0], -2.0)
    shifted = E.propagate_masks(masks, flow_img)
    expected = np.zeros_like(masks)
    expected[..., 2:] = masks[..., :-2]                            # moved right by 2
    assert shifted.dtype == bool and shifted.shape == masks.shape
    np.testing.assert_array_equal(shifted, expected)
    # the same without the channel axis, and in y: +1 memory px reads 2 rows below (moves up)
    flow_img = M.upsample_flow(np.stack([np.zeros((4, 5)), np.ones((4, 5))])[None], 2)
    up = E.propagate_masks(masks[0, 0], flow_img)
    np.testing.assert_array_equal(up[0, :-2], masks[0, 0, 0, 2:])
    assert not up[0, -2:].any()


def test_propagate_masks_zero_flow_is_identity_and_bad_shapes_raise():
    masks = np.random.default_rng(1).random((3, 6, 6)) < 0.5
    np.testing.assert_array_equal(E.propagate_masks(masks, np.zeros((3, 2, 6, 6), np.float32)), masks)
    with pytest.raises(ValueError, match="do not match"):
        E.propagate_masks(masks, np.zeros((3, 2, 5, 6)))


def test_label_propagation_with_the_true_flow_scores_iou_one():
    clips = _square_clips(speed=2)
    model = _constant_flow_model(-1.0, 0.0)                        # = −2 image px in x
    m = E.label_propagation_metrics(model, clips)
    assert m["iou"] == 1.0
    np.testing.assert_array_equal(m["iou_per_step"], 1.0)
    # copying mask t: a 6-px square moved by 2 overlaps 4 columns of a union of 8
    assert m["copy_last_iou"] == pytest.approx(4 / 8)
    assert m["iou_per_step"].shape == (clips.frames.shape[1] - 1,)


def test_epe_of_a_constant_flow_model_matches_hand_computation():
    clips = _square_clips(n=2, seq_len=3)
    # clip 0 keeps its true flow (−2, 0); clip 1 gets (1, 1) on its square instead
    clips.flow[1] = np.where(clips.masks[1, 1:, 0][:, None], 1.0, 0.0)
    m = E.one_step_metrics(_constant_flow_model(-1.0, 0.0), clips)
    # model flow (−2, 0) image px: error 0 on clip 0, |(−3, −1)| = √10 on clip 1; the two
    # squares have the same number of pixels, so the masked mean is the plain average
    assert m["epe"] == pytest.approx(math.sqrt(10) / 2, rel=1e-6)
    assert m["zero_flow_epe"] == pytest.approx((2 + math.sqrt(2)) / 2, rel=1e-6)
    assert m["acc@3"] == pytest.approx(0.5)                         # √10 > 3
    assert m["zero_flow_acc@3"] == pytest.approx(1.0)
    assert m["mae_per_frame"] == pytest.approx(m["mae"] * 32 * 32, rel=1e-9)


# ----------------------------------------------------------------------------- rollout
def test_rollout_metrics_shapes_and_baseline():
    rng = np.random.default_rng(2)
    frames = rng.random((4, 5, 1, 32, 32)).astype(np.float32)
    model = STVAE(Config.tiny())
    r = E.rollout_metrics(model, Clips(frames), context=3, future=2)
    np.testing.assert_array_equal(r["horizon"], [1, 2])
    for key in ("mse", "ssim", "copy_last_mse", "copy_last_ssim"):
        assert r[key].shape == (2,) and np.isfinite(r[key]).all(), key
    for k in range(2):
        want = M.mse_per_pixel(frames[:, 2], frames[:, 3 + k])
        assert r["copy_last_mse"][k] == pytest.approx(float(want), rel=1e-12)
    # horizon 1 of the rollout is the one-step prediction of frame `context`
    preds, _ = model.predict(frames[:, :4])
    one = M.mse_per_pixel(np.clip(preds[:, 2], 0, 1), frames[:, 3])
    assert r["mse"][0] == pytest.approx(float(one), rel=1e-5)
    assert r["mean_mse"] == pytest.approx(r["mse"].mean())
    with pytest.raises(ValueError, match="needs context"):
        E.rollout_metrics(model, frames, context=3, future=3)


# ----------------------------------------------------------------------------- report folder
def test_evaluate_checkpoint_writes_metrics_report_and_figures(tiny_checkpoint, tmp_path):
    clips = moving_shapes(3, seq_len=5, size=32, seed=0)
    out = tmp_path / "eval"
    result = E.evaluate_checkpoint(tiny_checkpoint, clips, out, context=3, future=2)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == result
    assert set(("one_step", "rollout", "label_propagation")) <= set(saved)
    assert saved["rollout"]["horizon"] == [1, 2] and len(saved["rollout"]["ssim"]) == 2
    assert 0.0 <= saved["label_propagation"]["iou"] <= 1.0
    assert saved["one_step"]["epe"] == saved["one_step"]["zero_flow_epe"]   # untrained: zero flow
    for name in FIGURES:
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE, name
    report = (out / "report.md").read_text()
    assert "| metric | model | baseline | better? |" in report
    assert "| horizon |" in report and "label propagation" in report
    for name in FIGURES:
        assert f"({name})" in report, name


def test_flow_figure_gets_frames_aligned_with_the_flow_steps(tmp_path, monkeypatch):
    """plot_flow_comparison shows frames[:, t] as x_t and draws flow step t's arrows on
    frames[:, t + 1]. The report used to pass frames[:, 1:], so its x_t was x_{t+1} and
    the arrows sat on x_{t+2}: the frames it receives must be the clips themselves."""
    from stvae_np import report, viz
    seen = {}

    def spy(path, frames, pred_flow, true_flow, mask=None, **kw):
        seen.update(frames=np.asarray(frames), pred_flow=pred_flow, true_flow=true_flow)
        return str(path)
    monkeypatch.setattr(viz, "plot_flow_comparison", spy)
    clips = _square_clips(n=2, seq_len=4)
    model = _constant_flow_model(-1.0, 0.0)
    preds, flows = E.predict_clips(model, clips.frames)
    figs = report.write_figures(tmp_path, clips, (preds, flows), None, None, examples=2)
    assert figs == {"flow": "flow.png"}
    k = 2
    assert seen["frames"].shape == clips.frames[:k].shape
    np.testing.assert_array_equal(seen["frames"], clips.frames[:k])
    assert seen["frames"].shape[1] == seen["true_flow"].shape[1] + 1   # x_0 … x_{T-1}, T-1 steps
    np.testing.assert_array_equal(seen["true_flow"], clips.flow[:k])


def test_evaluate_checkpoint_without_ground_truth_skips_and_says_so(tmp_path):
    frames = np.random.default_rng(3).random((2, 4, 1, 32, 32)).astype(np.float32)
    result = E.evaluate_checkpoint(STVAE(Config.tiny()), Clips(frames), tmp_path,
                                   context=3, future=2, figures=False)
    assert "epe" not in result["one_step"] and "skipped" in result["label_propagation"]
    assert "skipped" in result["rollout"]                          # T = 4 < 3 + 2
    report = (tmp_path / "report.md").read_text()
    assert "label propagation skipped" in report and "rollout skipped" in report
    assert "flow metrics skipped" in report


# ----------------------------------------------------------------------------- command line
def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def test_cli_missing_checkpoint(tmp_path, capsys):
    assert E.main([str(tmp_path / "nope.npz"), "--quiet"]) != 0
    assert "not found" in _one_line_error(capsys)


def test_cli_unknown_data_bad_numbers_and_absent_gpu(tiny_checkpoint, capsys, monkeypatch):
    assert E.main([str(tiny_checkpoint), "--data", "mnist-please", "--quiet"]) != 0
    assert "mnist-please" in _one_line_error(capsys)
    assert E.main([str(tiny_checkpoint), "--clips", "0", "--quiet"]) != 0
    assert "--clips" in _one_line_error(capsys)
    assert E.main([str(tiny_checkpoint), "--bogus"]) != 0
    _one_line_error(capsys)
    monkeypatch.setattr("stvae_np.backend.gpu_available", lambda: False)
    assert E.main([str(tiny_checkpoint), "--device", "gpu", "--quiet"]) != 0
    assert "no CUDA device" in _one_line_error(capsys)


def test_cli_end_to_end_on_tiny_inputs(tiny_checkpoint, capsys):
    code = E.main([str(tiny_checkpoint), "--clips", "2", "--context", "3", "--future", "2",
                   "--device", "cpu", "--no-figures"])    # figures: tested above
    assert code == 0
    out = tiny_checkpoint.parent / "eval-1"                        # default: a new folder beside the checkpoint
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["clips"] == 2 and m["data"]["frames"] == 5
    assert "Moving MNIST 32×32" in m["data"]["description"]
    assert m["model"]["checkpoint"] == str(tiny_checkpoint)
    assert "| one-step MSE per pixel |" in (out / "report.md").read_text()
    assert "rollout 3 → 2" in capsys.readouterr().out


def test_cli_on_a_clip_file_without_ground_truth(tiny_checkpoint, tmp_path):
    path = tmp_path / "clips.npy"
    np.save(path, np.random.default_rng(4).integers(0, 256, (3, 6, 32, 32), dtype=np.uint8))
    out = tmp_path / "eval"
    code = E.main([str(tiny_checkpoint), "--data", str(path), "--clips", "2", "--context", "3",
                   "--future", "3", "--out", str(out), "--no-figures", "--quiet"])
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["clips"] == 2 and "skipped" in m["label_propagation"]
    assert m["rollout"]["future"] == 3


def test_true_flow_probe_on_a_fresh_model_and_by_hand():
    """A fresh model regresses zero flow (its last flow layer is zero), so its 'learned'
    and 'zero' predictions coincide; and the 'true' row is warp_decode(encode(x_t), T̄)
    with T̄ the 2×2 block mean of the true flow, halved, computed here by hand."""
    model = STVAE(Config.tiny(), dtype="float64")
    clips = moving_shapes(3, seq_len=5, size=32, seed=4)
    spec = importlib.util.spec_from_file_location(
        "true_flow_probe", pathlib.Path(__file__).parents[1] / "docs/flow_study/true_flow_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)                  # a study tool, kept beside the study
    out = probe.true_flow_probe(model, clips)
    assert out["mse_t2_learned"] == pytest.approx(out["mse_t2_zero"], rel=1e-12)
    inputs, targets = clips.frames[:, 2:-1].reshape(-1, 1, 32, 32), clips.frames[:, 3:].reshape(-1, 1, 32, 32)
    flow = clips.flow[:, 2:].reshape(-1, 2, 16, 2, 16, 2).mean(axis=(3, 5)) / 2
    e, _ = model.encode(inputs.astype(np.float64))
    pred, _ = model.warp_decode(e, flow.astype(np.float64))
    expected = np.mean((np.clip(pred, 0, 1) - targets) ** 2)
    assert out["mse_t2_true"] == pytest.approx(expected, rel=1e-8)   # float32 flow here, float64 there
    assert out["copy_last_mse_t2"] == pytest.approx(np.mean((inputs - targets) ** 2), rel=1e-12)
    assert out["true_over_copy_last"] == pytest.approx(out["mse_t2_true"] / out["copy_last_mse_t2"])
