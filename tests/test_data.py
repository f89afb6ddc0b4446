"""Synthetic clips and their ground truth, the clip-file loader, the batch sampler and
the backward warp of tests/helpers.py. The ground truth is checked the way it is meant to be
used: warping frame t by flow[t] must give frame t+1 on object pixels."""
import json

import numpy as np
import pytest

from helpers import warp_backward

from stvae_np import data
from stvae_np.data import (Clips, ClipSampler, load_clips, mnist_split, moving_mnist,
                           moving_mnist_for, moving_shapes, sample_batch, synthetic_source)


@pytest.fixture(scope="module")
def digits():
    images, classes = data.mnist_digits()   # ~1 s, cached for the whole module
    return images, classes


@pytest.fixture(scope="module")
def mnist_clips(digits):
    return moving_mnist(6, seq_len=12, split="test", seed=3)


@pytest.fixture(scope="module")
def shape_clips():
    return moving_shapes(8, seq_len=10, size=32, num_shapes=3, max_speed=2.0, seed=5)


def check_clips(c, n, t, size, k):
    assert c.frames.shape == (n, t, 1, size, size) and c.frames.dtype == np.float32
    assert c.flow.shape == (n, t - 1, 2, size, size) and c.flow.dtype == np.float32
    assert c.masks.shape == (n, t, 1, size, size) and c.masks.dtype == bool
    assert c.labels.shape == (n, t, size, size) and c.labels.dtype == np.uint8
    assert c.positions.shape == (n, t, k, 2)
    assert 0.0 <= c.frames.min() and c.frames.max() <= 1.0
    assert np.all(np.isfinite(c.flow))
    assert set(np.unique(c.labels)) <= set(range(k + 1))
    np.testing.assert_array_equal(c.labels > 0, c.masks[:, :, 0])
    # flow lives on the pixels of frame t+1 and is zero on the background
    assert np.all(c.flow[:, :, 0][~c.masks[:, 1:, 0]] == 0)
    assert np.all(c.flow[:, :, 1][~c.masks[:, 1:, 0]] == 0)
    assert len(c) == n


def flow_matches_positions(c, top_left_is_integer):
    """On object k's pixels of frame t+1, flow[t] = positions[t, k] − positions[t+1, k]."""
    n, t1 = c.flow.shape[:2]
    for i in range(n):
        for t in range(t1):
            for k in range(c.positions.shape[2]):
                on = c.labels[i, t + 1] == k + 1
                want = c.positions[i, t, k] - c.positions[i, t + 1, k]
                if top_left_is_integer:
                    assert np.all(want == np.round(want))
                np.testing.assert_allclose(c.flow[i, t, 0][on], want[0], atol=1e-5)
                np.testing.assert_allclose(c.flow[i, t, 1][on], want[1], atol=1e-5)


# ============================================================================ Moving MNIST
def test_mnist_split_is_fixed_disjoint_and_stratified(digits):
    _, classes = digits
    train, test = mnist_split()
    assert len(train) == 4000 and len(test) == 1000
    assert len(np.intersect1d(train, test)) == 0
    assert len(np.union1d(train, test)) == 5000
    np.testing.assert_array_equal(np.bincount(classes[test]), [100] * 10)
    train2, test2 = mnist_split()
    np.testing.assert_array_equal(train, train2)
    np.testing.assert_array_equal(test, test2)


def test_moving_mnist_shapes_dtypes_range(mnist_clips):
    check_clips(mnist_clips, 6, 12, 64, 2)
    assert mnist_clips.digit_ids.shape == (6, 2)
    flow_matches_positions(mnist_clips, top_left_is_integer=True)
    # digits move at ~3.6 px/frame, rounding moves it by at most 1 px per axis
    step = np.abs(np.diff(mnist_clips.positions, axis=1))
    assert step.max() <= 5 and np.hypot(*step.reshape(-1, 2).T).mean() > 2.0


def test_test_clips_show_only_test_digits(digits):
    images, _ = digits
    train, test = mnist_split()
    c = moving_mnist(20, seq_len=3, num_digits=1, split="test", seed=11)
    assert np.isin(c.digit_ids, test).all()
    assert not np.isin(c.digit_ids, train).any()
    # and the clip really shows the digit it names
    for i in range(20):
        x, y = c.positions[i, 0, 0].astype(int)
        np.testing.assert_array_equal(c.frames[i, 0, 0, y:y + 28, x:x + 28],
                                      images[c.digit_ids[i, 0]])
    c = moving_mnist(20, seq_len=3, split="train", seed=11)
    assert np.isin(c.digit_ids, train).all()


def test_moving_mnist_deterministic_and_seed_dependent():
    a = moving_mnist(3, seq_len=5, seed=7)
    b = moving_mnist(3, seq_len=5, seed=7)
    c = moving_mnist(3, seq_len=5, seed=8)
    for field in ("frames", "flow", "masks", "labels", "positions", "digit_ids"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.frames, c.frames)


def test_mnist_warp_is_exact_where_digits_do_not_overlap(mnist_clips):
    c = mnist_clips
    d, size = 28, 64
    ys, xs = np.mgrid[0:size, 0:size]
    checked = 0
    for i in range(len(c)):
        for t in range(c.flow.shape[1]):
            warped = warp_backward(c.frames[i, t, 0], c.flow[i, t])
            on = c.masks[i, t + 1, 0].copy()
            src_x, src_y = xs + c.flow[i, t, 0], ys + c.flow[i, t, 1]
            for k in range(2):   # drop pixels that another digit covers, now or at the source
                other = 1 - k
                own = c.labels[i, t + 1] == k + 1
                (x1, y1), (x0, y0) = c.positions[i, t + 1, other], c.positions[i, t, other]
                in_other_now = (xs >= x1) & (xs < x1 + d) & (ys >= y1) & (ys < y1 + d)
                in_other_src = (src_x >= x0) & (src_x < x0 + d) & (src_y >= y0) & (src_y < y0 + d)
                on &= ~(own & (in_other_now | in_other_src))
            np.testing.assert_array_equal(warped[on], c.frames[i, t + 1, 0][on])
            checked += on.sum()
    assert checked > 1000


def test_single_digit_warp_exact_on_every_object_pixel():
    c = moving_mnist(4, seq_len=10, num_digits=1, seed=2)
    for i in range(4):
        for t in range(9):
            on = c.masks[i, t + 1, 0]
            warped = warp_backward(c.frames[i, t, 0], c.flow[i, t])
            np.testing.assert_array_equal(warped[on], c.frames[i, t + 1, 0][on])


def test_flow_sign_digit_moving_right_has_negative_x():
    """Image moments give the motion independently of the positions: for one digit the
    frame is a whole shift, so centroid(t+1) − centroid(t) = −flow on the digit."""
    c = moving_mnist(8, seq_len=10, num_digits=1, seed=4)
    ys, xs = np.mgrid[0:64, 0:64]
    seen_right = 0
    for i in range(8):
        f = c.frames[i, :, 0].astype(np.float64)
        mass = f.sum(axis=(1, 2))
        cx, cy = (f * xs).sum(axis=(1, 2)) / mass, (f * ys).sum(axis=(1, 2)) / mass
        for t in range(9):
            on = c.masks[i, t + 1, 0]
            vx, vy = cx[t + 1] - cx[t], cy[t + 1] - cy[t]
            np.testing.assert_allclose(c.flow[i, t, 0][on], -vx, atol=1e-6)
            np.testing.assert_allclose(c.flow[i, t, 1][on], -vy, atol=1e-6)
            if vx > 0.5:
                assert np.all(c.flow[i, t, 0][on] < 0)
                seen_right += 1
    assert seen_right > 0


def test_tiny_preset_halves_the_geometry(digits):
    images, _ = digits
    c = moving_mnist_for("tiny", 4, seq_len=6, seed=1)
    check_clips(c, 4, 6, 32, 2)
    flow_matches_positions(c, top_left_is_integer=True)
    assert c.positions.max() <= 32 - 14
    # 14×14 digits are 2×2 averages of the 28×28 ones
    one = moving_mnist(1, seq_len=2, size=32, digit_size=14, num_digits=1, speed=1.8, seed=0)
    x, y = one.positions[0, 0, 0].astype(int)
    pooled = images[one.digit_ids[0, 0]].reshape(14, 2, 14, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(one.frames[0, 0, 0, y:y + 14, x:x + 14], pooled, atol=1e-6)
    with pytest.raises(ValueError, match="preset must be one of"):
        moving_mnist_for("huge", 1)
    with pytest.raises(ValueError, match="digit_size must divide 28"):
        moving_mnist(1, digit_size=10)
    with pytest.raises(ValueError, match="split must be"):
        moving_mnist(1, split="val")


# ============================================================================ moving shapes
def test_moving_shapes_shapes_and_subpixel_flow(shape_clips):
    c = shape_clips
    check_clips(c, 8, 10, 32, 3)
    assert c.digit_ids is None
    flow_matches_positions(c, top_left_is_integer=False)
    on = np.broadcast_to(c.masks[:, 1:], c.flow.shape)
    frac = np.abs(c.flow[on] - np.round(c.flow[on]))
    assert frac.max() > 0.2                      # sub-pixel, not integer
    assert c.frames[c.masks].min() >= 0.3 - 1e-6  # textures in [0.3, 1]
    # every object stays entirely inside the canvas
    assert c.positions.min() > 0 and c.positions.max() < 31


def test_moving_shapes_deterministic_and_seed_dependent():
    a = moving_shapes(2, seed=1)
    b = moving_shapes(2, seed=1)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.flow, b.flow)
    assert not np.array_equal(a.frames, moving_shapes(2, seed=2).frames)


def test_shapes_warp_reproduces_next_frame_on_interior_pixels(shape_clips):
    c = shape_clips
    size = 32
    ys, xs = np.mgrid[0:size, 0:size]
    errors = []
    for i in range(len(c)):
        for t in range(c.flow.shape[1]):
            lab_next, lab_now = c.labels[i, t + 1].astype(int), c.labels[i, t].astype(int)
            # interior: the 3×3 neighbourhood in frame t+1 and all four bilinear source
            # neighbours in frame t belong to the same visible object
            pad = np.pad(lab_next, 1, constant_values=-1)
            inner = np.ones_like(lab_next, bool)
            for dy in range(3):
                for dx in range(3):
                    inner &= pad[dy:dy + size, dx:dx + size] == lab_next
            src_x, src_y = xs + c.flow[i, t, 0], ys + c.flow[i, t, 1]
            for qx in (np.floor(src_x), np.floor(src_x) + 1):
                for qy in (np.floor(src_y), np.floor(src_y) + 1):
                    qxi = np.clip(qx, 0, size - 1).astype(int)
                    qyi = np.clip(qy, 0, size - 1).astype(int)
                    inner &= lab_now[qyi, qxi] == lab_next
            inner &= lab_next > 0
            warped = warp_backward(c.frames[i, t, 0], c.flow[i, t])
            errors.append(np.abs(warped - c.frames[i, t + 1, 0])[inner])
    errors = np.concatenate(errors)
    assert errors.size > 1000
    assert errors.mean() < 0.01 and errors.max() < 0.05   # measured: ~0.004 and ~0.02


# ============================================================================ warp
def test_warp_backward_conventions():
    img = np.arange(20, dtype=np.float32).reshape(4, 5)
    zero = np.zeros((2, 4, 5), np.float32)
    np.testing.assert_array_equal(warp_backward(img, zero), img)
    left = zero.copy()
    left[0] = -1.0                             # flow x = −1 shifts the image right by one
    out = warp_backward(img, left)
    np.testing.assert_array_equal(out[:, 1:], img[:, :-1])
    np.testing.assert_array_equal(out[:, 0], 0)
    half = zero.copy()
    half[1] = 0.5                              # half a row down: average of two rows
    np.testing.assert_allclose(warp_backward(img, half)[:3], (img[:3] + img[1:]) / 2)
    assert warp_backward(img, half).dtype == np.float32
    assert warp_backward(np.stack([img, img]), half).shape == (2, 4, 5)
    with pytest.raises(ValueError, match="flow must have shape"):
        warp_backward(img, np.zeros((2, 5, 4)))


# ============================================================================ files
def test_load_time_major_benchmark_layout(tmp_path):
    n = 3
    raw = np.zeros((20, n, 64, 64), np.uint8)
    for t in range(20):
        for i in range(n):
            raw[t, i] = 10 * t + i            # frame identity encoded in its value
    path = tmp_path / "mnist_test_seq.npy"
    np.save(path, raw)
    c = load_clips(path)
    assert isinstance(c, Clips) and c.flow is None and c.masks is None and c.labels is None
    assert c.frames.shape == (n, 20, 1, 64, 64) and c.frames.dtype == np.float32
    for t in range(20):
        for i in range(n):
            np.testing.assert_allclose(c.frames[i, t], (10 * t + i) / 255.0)
    assert load_clips(path, max_clips=2).frames.shape == (2, 20, 1, 64, 64)
    # the same array read as clip-major: 20 clips of n frames
    assert load_clips(path, layout="NTHW").frames.shape == (20, n, 1, 64, 64)


def test_load_nthw_ntchw_npy_npz(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.random((4, 6, 8, 8)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(load_clips(tmp_path / "a.npy").frames, a[:, :, None])
    b = rng.random((4, 6, 3, 8, 8))          # float64 in [0, 1] -> float32
    np.savez(tmp_path / "b.npz", clips=b, other=np.zeros(3))
    fb = load_clips(tmp_path / "b.npz").frames
    assert fb.dtype == np.float32
    np.testing.assert_allclose(fb, b, rtol=1e-6)
    u = rng.integers(0, 256, size=(2, 5, 1, 8, 8), dtype=np.uint8)
    np.savez_compressed(tmp_path / "u.npz", whatever=u)
    np.testing.assert_allclose(load_clips(str(tmp_path / "u.npz")).frames, u / 255.0, rtol=1e-6)
    assert load_clips(tmp_path / "a.npy", max_clips=1).frames.shape == (1, 6, 1, 8, 8)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no clip file"):
        load_clips(tmp_path / "missing.npy")
    (tmp_path / "clips.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match="unknown extension"):
        load_clips(tmp_path / "clips.txt")
    np.save(tmp_path / "rank3.npy", np.zeros((4, 8, 8), np.float32))
    with pytest.raises(ValueError, match="rank 3"):
        load_clips(tmp_path / "rank3.npy")
    np.save(tmp_path / "short.npy", np.zeros((4, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match="at least 2 frames"):
        load_clips(tmp_path / "short.npy")
    bad = np.zeros((2, 3, 8, 8), np.float32)
    bad[1, 2, 3, 4] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match="NaN"):
        load_clips(tmp_path / "nan.npy")
    np.save(tmp_path / "big.npy", np.full((2, 3, 8, 8), 255.0, np.float32))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        load_clips(tmp_path / "big.npy")
    np.save(tmp_path / "int.npy", np.zeros((2, 3, 8, 8), np.int32))
    with pytest.raises(ValueError, match="dtype int32"):
        load_clips(tmp_path / "int.npy")
    np.save(tmp_path / "last.npy", np.zeros((2, 3, 8, 8, 1), np.uint8))
    with pytest.raises(ValueError, match="channels-last"):
        load_clips(tmp_path / "last.npy")
    with pytest.raises(ValueError, match="needs a 4-D array"):
        load_clips(tmp_path / "last.npy", layout="TNHW")
    with pytest.raises(ValueError, match="layout must be one of"):
        load_clips(tmp_path / "big.npy", layout="HWC")
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 3, 8, 8)), b=np.zeros((2, 3, 8, 8)))
    with pytest.raises(ValueError, match="key 'clips' or exactly one"):
        load_clips(tmp_path / "two.npz")
    np.save(tmp_path / "obj.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickled"):
        load_clips(tmp_path / "obj.npy")


# ============================================================================ batches
def test_sample_batch_from_array_crops_consistently(mnist_clips):
    rng = np.random.default_rng(0)
    batch = sample_batch(mnist_clips, 5, 4, rng)
    assert batch.frames.shape == (5, 4, 1, 64, 64) and batch.flow.shape == (5, 3, 2, 64, 64)
    assert batch.labels.shape == (5, 4, 64, 64) and batch.digit_ids.shape == (5, 2)
    flow_matches_positions(batch, top_left_is_integer=True)
    # every cropped clip is a window of one source clip
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 6, size=5)
    starts = rng.integers(0, 12 - 4 + 1, size=5)
    for b, (i, s) in enumerate(zip(idx, starts)):
        np.testing.assert_array_equal(batch.frames[b], mnist_clips.frames[i, s:s + 4])
    plain = sample_batch(mnist_clips.frames, 2, 12, np.random.default_rng(1))
    assert plain.frames.shape == (2, 12, 1, 64, 64) and plain.flow is None
    with pytest.raises(ValueError, match="longer than the source"):
        sample_batch(mnist_clips, 2, 13, rng)


@pytest.mark.parametrize("kind", ["array", "mnist", "shapes"])
def test_sampler_is_seeded_and_resumes_bit_identically(kind, mnist_clips):
    source = {"array": mnist_clips.frames,
              "mnist": synthetic_source("moving_mnist", preset="tiny"),
              "shapes": synthetic_source("moving_shapes", size=16, num_shapes=1)}[kind]
    a = ClipSampler(source, batch_size=3, seq_len=4, seed=42)
    b = ClipSampler(source, batch_size=3, seq_len=4, seed=42)
    first = [next(a).frames for _ in range(2)]
    for f in first:
        np.testing.assert_array_equal(f, next(b).frames)
    other = next(ClipSampler(source, batch_size=3, seq_len=4, seed=43)).frames
    assert not np.array_equal(first[0], other)

    state = a.state_dict()
    assert state["batches_drawn"] == 2
    continuation = [next(a).frames for _ in range(3)]
    resumed = ClipSampler(source, batch_size=3, seq_len=4, seed=0)
    resumed.load_state_dict(json.loads(json.dumps(state)))   # as a checkpoint stores it
    for want in continuation:
        np.testing.assert_array_equal(next(resumed).frames, want)
    assert resumed.batches_drawn == 5


def test_synthetic_source_presets():
    src = synthetic_source("moving_mnist", preset="tiny", split="test", num_digits=1)
    c = src(2, 5, np.random.default_rng(0))
    assert c.frames.shape == (2, 5, 1, 32, 32)
    assert np.isin(c.digit_ids, mnist_split()[1]).all()
    with pytest.raises(ValueError, match="name must be"):
        synthetic_source("kitti")


# ----------------------------------------------------------------------------- the data of a run
def test_eval_clips_are_the_fixed_test_clips_and_the_validation_seed_differs():
    from stvae_np.model import Config
    cfg = Config.tiny()
    test, desc = data.load_eval_clips("moving-mnist", cfg, 3, 5)
    again, _ = data.load_eval_clips("moving-mnist", cfg, 3, 5)
    np.testing.assert_array_equal(test.frames, again.frames)
    np.testing.assert_array_equal(test.frames, moving_mnist_for("tiny", 3, seq_len=5, split="test",
                                                                 seed=data.TEST_SEED).frames)
    assert test.frames.shape == (3, 5, 1, 32, 32) and f"seed {data.TEST_SEED}" in desc
    val, _ = data.load_eval_clips("moving-mnist", cfg, 3, 5, seed=data.VAL_SEED)
    assert not np.array_equal(val.frames, test.frames)
    shapes, desc = data.load_eval_clips("shapes", cfg, 2, 4)
    assert shapes.frames.shape == (2, 4, 1, 32, 32) and "shapes" in desc
    assert data.DATA_CHOICES == ("moving-mnist", "shapes")


def test_make_data_holds_out_the_last_tenth_of_a_file_and_refuses_bad_data(tmp_path):
    from stvae_np.cli import CLIError
    from stvae_np.model import Config
    cfg = Config.tiny()
    source, test, desc = data.make_data("moving-mnist", cfg, 2, 4)
    assert callable(source) and test.frames.shape == (2, 4, 1, 32, 32)
    path = tmp_path / "clips.npy"
    frames = np.random.default_rng(0).integers(0, 256, (20, 6, 32, 32), dtype=np.uint8)
    np.save(path, frames)
    train, test, desc = data.make_data(str(path), cfg, 64, 4)
    assert len(train) == 18 and len(test) == 2 and "18 training clips, 2 held out" in desc
    np.testing.assert_allclose(test.frames[:, :, 0], frames[18:] / 255.0, atol=1e-6)
    with pytest.raises(CLIError, match="neither one of"):
        data.make_data("mnist-please", cfg, 2, 4)
    with pytest.raises(CLIError, match="32×32 or 64×64"):
        data.load_eval_clips("moving-mnist", Config(height=16, width=16), 2, 4)
    np.save(tmp_path / "one.npy", frames[:1])
    with pytest.raises(CLIError, match="at least 2 clips"):
        data.make_data(str(tmp_path / "one.npy"), cfg, 2, 4)


def test_train_and_evaluate_take_their_data_from_data_py():
    """One place chooses and loads the data of a run: train.py no longer imports it from
    evaluate.py, and evaluate's names are data.py's."""
    import ast
    import pathlib
    from stvae_np import evaluate, train
    src = pathlib.Path(train.__file__).read_text()
    from_evaluate = {a.name for node in ast.walk(ast.parse(src))
                     if isinstance(node, ast.ImportFrom) and node.module == "evaluate"
                     for a in node.names}
    assert not from_evaluate & {"load_eval_clips", "make_data", "DATA_CHOICES", "TEST_SEED",
                                "VAL_SEED"}, from_evaluate
    assert train.make_data is data.make_data and train.load_eval_clips is data.load_eval_clips
    assert evaluate.load_eval_clips is data.load_eval_clips


def test_a_time_major_file_at_another_size_needs_its_layout_named(tmp_path):
    """(20, 30, 32, 32): 20 clips of 30 frames, or mnist_test_seq's time-major layout at
    32×32? Auto-detection cannot tell, so it refuses; --layout names it."""
    a = np.random.default_rng(3).integers(0, 256, (20, 30, 32, 32), dtype=np.uint8)
    np.save(tmp_path / "tm.npy", a)
    with pytest.raises(ValueError, match="--layout NTHW or --layout TNHW"):
        load_clips(tmp_path / "tm.npy")
    tn = load_clips(tmp_path / "tm.npy", layout="TNHW").frames
    assert tn.shape == (30, 20, 1, 32, 32)
    np.testing.assert_array_equal(tn[4, :, 0], a[:, 4] / np.float32(255.0))
    assert load_clips(tmp_path / "tm.npy", layout="NTHW").frames.shape == (20, 30, 1, 32, 32)
    with pytest.raises(ValueError, match="expects 1×64×64"):
        load_clips(tmp_path / "tm.npy", layout="TNHW", frame_shape=(1, 64, 64))
