"""Real video in (``stvae_np.video``), the forecast scores of real footage
(``metrics.forecast_scores``), the flow command (``stvae_np.flow``) and the one-line errors
for bad video input. Videos are written here with PyAV: a textured pattern panning right."""
import os

import av
import numpy as np
import pytest

from stvae_np import checkpoint, flow as F, train as T
from stvae_np.data import Clips
from stvae_np.evaluate import forecast_scores
from stvae_np.model import STVAE, Config
from stvae_np.video import SAMPLES, random_crops, read_video, sample_path, shot_cuts, video_data


def _texture(h, w, seed=0):
    rng = np.random.default_rng(seed)
    k = np.ones(5) / 5                     # smooth noise: bilinear warps of it are accurate
    t = rng.uniform(0, 1, (h, w))
    t = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 1, t)
    t = np.apply_along_axis(lambda c: np.convolve(c, k, "same"), 0, t)
    return (t - t.min()) / (t.max() - t.min())


def write_video(path, n_frames=30, h=80, w=96, speed=1, codec="ffv1", index_in_brightness=False,
                cut_at=None):
    """A grey pan: frame k shows the texture shifted right by speed·k pixels (lossless ffv1).
    With ``index_in_brightness`` every frame is flat, of brightness 5·k (to find its index);
    from frame ``cut_at`` on, a second shot: the pan of another texture, darker (this noise
    decorrelates under a shift of 1 px nearly as much as under a cut between equally bright shots)."""
    tex = _texture(h, w + speed * n_frames)
    if cut_at is not None:
        tex = np.stack([tex, 0.6 * _texture(h, w + speed * n_frames, seed=1)])
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=10)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p" if codec != "ffv1" else "gray"
        for k in range(n_frames):
            shot = tex if cut_at is None else tex[int(k >= cut_at)]
            img = (np.full((h, w), 5 * k) if index_in_brightness else
                   255 * shot[:, speed * (n_frames - k):speed * (n_frames - k) + w]).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="gray")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return str(path)


def test_read_video_gives_grey_frames_downscaled_by_area(tmp_path):
    path = write_video(tmp_path / "pan.mkv", n_frames=12, h=80, w=96)
    full = read_video(path, factor=1)
    assert full.shape == (12, 1, 80, 96) and full.dtype == np.float32
    assert 0 <= full.min() and full.max() <= 1 and full.std() > 0.05
    half = read_video(path, factor=2)
    assert half.shape == (12, 1, 40, 48)
    np.testing.assert_allclose(half, full.reshape(12, 1, 40, 2, 48, 2).mean(axis=(3, 5)), atol=1e-6)
    assert read_video(path, short_side=40).shape == (12, 1, 40, 48)     # factor round(80 / 40)
    assert read_video(path, channels=3, factor=4).shape == (12, 3, 20, 24)


def test_training_validation_and_test_stretches_never_share_a_frame(tmp_path):
    path = write_video(tmp_path / "index.mkv", n_frames=50, h=72, w=72, index_in_brightness=True)
    cfg = Config.video()
    source, test, val, _ = video_data(path, cfg, n_clips=8, seq_len=4, progress=False)
    index = lambda clips: set(np.round(clips.frames.mean(axis=(2, 3, 4)) * 255 / 5).astype(int).ravel())
    train = set()
    rng = np.random.default_rng(0)
    for _ in range(20):
        train |= index(source(8, 4, rng))
    assert max(train) < 30 and min(index(val)) >= 30 and max(index(val)) < 40
    assert min(index(test)) >= 40 and len(test) == 8 and test.frames.shape[1:] == (4, 1, 32, 32)


def test_random_crops_keep_the_stride():
    frames = np.arange(20, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 8, 8), np.float32)
    clips = random_crops(frames, 5, 4, (4, 4), np.random.default_rng(1), stride=3)
    steps = np.diff(clips[:, :, 0, 0, 0], axis=1)
    assert clips.shape == (5, 4, 1, 4, 4) and (steps == 3).all()


def test_shot_cuts_find_the_cut_and_not_the_motion(tmp_path):
    """A pan of 2 px/frame is motion; the switch to another texture at frame 17 is a cut (pair 16)."""
    frames = read_video(write_video(tmp_path / "cut.mkv", n_frames=30, h=64, w=64, speed=2, cut_at=17), factor=1)
    d = ((frames[1:] - frames[:-1]) ** 2).mean(axis=(1, 2, 3))
    assert d.min() > 0.002 and d[16] > 5 * np.median(d)                # the pan moves every pair
    assert shot_cuts(frames).tolist() == [16]
    assert shot_cuts(frames[:17]).tolist() == [] and shot_cuts(frames[:2]).tolist() == []


def test_random_crops_never_cross_a_cut_and_draw_as_before_without_one():
    frames = np.arange(20, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 8, 8), np.float32)
    clips = random_crops(frames, 200, 4, (4, 4), np.random.default_rng(1), cuts=[8])
    first, last = clips[:, 0, 0, 0, 0], clips[:, -1, 0, 0, 0]
    assert ((last <= 8) | (first >= 9)).all()                          # frames 0–8 or 9–19, never both
    assert set(first.astype(int)) == set(range(6)) | set(range(9, 17))  # every other start is drawn
    a = random_crops(frames, 9, 4, (4, 4), np.random.default_rng(2), stride=2)
    b = np.random.default_rng(2).integers(0, 20 - 7 + 1, 9)           # the draw before cuts existed
    np.testing.assert_array_equal(a[:, 0, 0, 0, 0], b)
    with pytest.raises(ValueError, match="cut into shots hold no clip of 4 frames"):
        random_crops(frames[:6], 1, 4, (4, 4), np.random.default_rng(0), cuts=[2])


def test_the_held_out_clips_stay_inside_one_shot(tmp_path):
    path = write_video(tmp_path / "cut.mkv", n_frames=60, h=64, w=64, speed=2, cut_at=52)
    _, test, _, desc = video_data(path, Config.video(), n_clips=16, seq_len=4, progress=False)
    assert "1 cuts between shots" in desc
    d = ((test.frames[:, 1:] - test.frames[:, :-1]) ** 2).mean(axis=(2, 3, 4))
    assert d.max() < 0.01                                              # no clip holds the cut (pair 51)


def test_the_bundled_samples_are_there():
    for name in SAMPLES:
        assert os.path.getsize(sample_path(name)) > 10_000
    with pytest.raises(ValueError, match="unknown sample 'nope'"):
        sample_path("nope")


def test_forecast_scores_of_the_true_motion_and_of_no_motion(tmp_path):
    frames = read_video(write_video(tmp_path / "pan.mkv", n_frames=8, h=32, w=32, speed=1), factor=1)
    clips = frames[None]                                             # (1, 8, 1, 32, 32)
    zero = np.zeros((1, 7, 2, 32, 32))
    s0 = forecast_scores(clips, zero)
    assert s0["warp_forecast_ratio"] == pytest.approx(1.0)           # zero flow is copy-last
    truth = zero.copy()
    truth[:, :, 0] = -1.0                                            # moving right by 1 px: backward flow −1
    s1 = forecast_scores(clips, truth, preds=clips[:, 1:])
    assert s1["warp_forecast_ratio"] < 0.1 and s1["mse_ratio"] == 0.0
    assert s1["classical_oracle_ratio"] < 0.5 and s1["classical_forecast_ratio"] < 0.5
    assert s1["hs_angle"] < 20 and 0.5 < s1["hs_gain"] < 1.5


def test_the_flow_command_writes_its_video_and_flows(tmp_path, capsys):
    path = write_video(tmp_path / "pan.mp4", n_frames=10, h=48, w=64, codec="libx264")
    ckpt = tmp_path / "run" / "checkpoint.npz"
    os.makedirs(ckpt.parent)
    checkpoint.save(STVAE(Config.video(), seed=0), ckpt)
    assert F.main([path, "--checkpoint", str(ckpt), "--quiet"]) == 0
    out = tmp_path / "run" / "flow-pan"
    flows = np.load(out / "flows.npy")
    assert flows.shape == (9, 2, 48, 64) and flows.dtype == np.float32
    from PIL import Image
    with Image.open(out / "flow.gif") as gif:
        assert gif.n_frames == 9 and gif.size == (2 * 3 * 64, 2 * 48)
    assert (out / "still.png").stat().st_size > 0


def _one_line_error(capsys, main, argv, words):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err


@pytest.mark.parametrize("kind, words", [
    ("text", ["not a video"]), ("short", ["12 frames are too few"]), ("small", ["smaller than", "32×32"]),
    ("missing", ["no such file"]), ("sample", ["unknown sample"]),
    ("shots", ["frames 30–39", "cut into shots hold no clip of 10 frames"]),
])
def test_bad_video_input_is_one_line(tmp_path, capsys, kind, words):
    if kind == "text":
        data = tmp_path / "notes.mp4"
        data.write_text("this is not a video\n")
    elif kind == "short":
        data = write_video(tmp_path / "short.mkv", n_frames=12, h=72, w=72)
    elif kind == "small":
        data = write_video(tmp_path / "small.mkv", n_frames=40, h=24, w=24)
    elif kind == "shots":                      # the test stretch (frames 30–39) cut at frame 35
        data = write_video(tmp_path / "shots.mkv", n_frames=40, h=72, w=72, cut_at=35)
    else:
        data = tmp_path / "absent.mp4" if kind == "missing" else "sample:nope"
    data = str(data)
    if kind == "missing":                      # a path that is not there: named as not a file
        words = ["neither", "nor an existing file"]
    run = tmp_path / "run"
    _one_line_error(capsys, T.main, ["--preset", "video", "--data", data, "--out", str(run), "--quiet"], words)
    assert not run.exists()


def test_the_flow_command_starts_its_memory_afresh_after_a_cut(tmp_path):
    """From the first frame of a new shot on, the flows are those of that shot alone."""
    frames = read_video(write_video(tmp_path / "cut.mkv", n_frames=12, h=32, w=32, speed=1, cut_at=7), factor=1)
    model, rng = STVAE(Config.video(), seed=3), np.random.default_rng(3)
    for p in model.params.values():                 # the flow head starts at zero: make it move
        p += 0.05 * rng.standard_normal(p.shape).astype(p.dtype)
    preds, flows = F.video_flows(model, frames, progress=False)
    assert np.abs(flows).mean() > 0.01
    alone_preds, alone_flows = F.video_flows(model, frames[7:], progress=False)
    np.testing.assert_array_equal(flows[7:], alone_flows)
    np.testing.assert_array_equal(preds[7:], alone_preds)
    _, carried = F.video_flows(model, np.concatenate([frames[:7], frames[6:]]), progress=False)
    assert not np.allclose(carried[7:], F.video_flows(model, frames[6:], progress=False)[1])  # no cut: memory kept


def test_the_flow_command_refuses_bad_input_in_one_line(tmp_path, capsys):
    ckpt = tmp_path / "run" / "checkpoint.npz"
    os.makedirs(ckpt.parent)
    checkpoint.save(STVAE(Config.video()), ckpt)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    video = write_video(tmp_path / "pan.mkv", n_frames=4, h=32, w=32)
    for argv, words in (([str(text), "--checkpoint", str(ckpt)], ["notes.mp4", "not a video"]),
                        ([str(tmp_path / "absent.mp4"), "--checkpoint", str(ckpt)], ["no such file"]),
                        ([video, "--checkpoint", str(tmp_path / "none.npz")], ["checkpoint not found"]),
                        ([video, "--checkpoint", str(ckpt), "--max-frames", "1"], ["--max-frames"])):
        _one_line_error(capsys, F.main, argv + ["--quiet"], words)
    assert not (tmp_path / "run" / "flow-notes").exists()
    busy = tmp_path / "busy"                     # an output folder another living process holds
    busy.mkdir()
    (busy / ".lock").write_text(f"{os.getppid()}\n")
    _one_line_error(capsys, F.main, [video, "--checkpoint", str(ckpt), "--out", str(busy), "--quiet"],
                    ["in use by process", str(os.getppid())])
    assert sorted(p.name for p in busy.iterdir()) == [".lock"]


def test_a_checkpoint_config_from_before_pan_share_was_removed_still_loads():
    """``pan_share`` (synthetic pans, removed: flow study section 11, run E) at 0, its "off",
    is dropped from an older checkpoint's config; any other value is refused by name."""
    from stvae_np.model import Config
    old = {**Config.video().to_dict(), "pan_share": 0.0}
    assert Config.from_dict(old) == Config.video()
    with pytest.raises(ValueError, match="unknown Config fields .'pan_share'."):
        Config.from_dict({**old, "pan_share": 0.5})


def test_evaluate_scores_a_video_on_its_last_fifth(tmp_path, capsys):
    from stvae_np import evaluate as E
    import json
    path = write_video(tmp_path / "pan.mkv", n_frames=40, h=40, w=40)
    ckpt = tmp_path / "run" / "checkpoint.npz"
    os.makedirs(ckpt.parent)
    checkpoint.save(STVAE(Config.video()), ckpt)
    out = tmp_path / "eval"
    assert E.main([str(ckpt), "--data", path, "--clips", "3", "--context", "3",
                   "--future", "2", "--out", str(out), "--no-figures", "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["clips"] == 3 and m["one_step"]["warp_forecast_ratio_t2"] == pytest.approx(1.0)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    _one_line_error(capsys, E.main, [str(ckpt), "--data", str(text), "--quiet"],
                    ["notes.mp4", "not a video"])
