"""The spatio-temporal video autoencoder with differentiable memory.

Patraucean, Handa & Cipolla, "Spatio-temporal video autoencoder with differentiable
memory", ICLR 2016 workshop, arXiv:1511.06309.

Per step t = 0 … T-2 the model sees frame x_t and predicts x_{t+1}:

    e_t  = maxpool2(tanh(conv(x_t; We) + be))              encoder    (N,C,H,W) -> (N,Fe,h,w)
    h_t  = ConvLSTM(e_t, h_{t-1}, c_{t-1})                  memory     (N,Fm,h,w)
    T_t  = conv1x1(φ(conv_k(φ(conv_k(h_t)))))               flow       (N,2,h,w), φ = identity
                                                            (the paper) or tanh (Config.flow_act)
    G_t  = base grid + T_t  (sampler.flow_to_grid)          grid       source (x, y) in pixels
    ê_t  = bilinear(e_t, G_t)                               sampler    (N,Fe,h,w)
    ŷ_t  = conv(upsample2(ê_t); Wd) + bd                    decoder    (N,C,H,W)

    L = 1/(T-1) Σ_t [ mean((ŷ_t − x_{t+1})²) + w_H · H(∇T_t) ]   (+ w_P · P, docs/DESIGN.md)

For real footage (``Config.video()``) two options: the encoder reads x_{t−1} and x_t
(``enc_frames``), and ŷ_t adds x_t itself warped by the flow (``prediction``).

Everything but the ConvLSTM is independent across time given the frames, so the
encoder, flow head, sampler and decoder run once over all N·(T-1) frames stacked in
the batch axis (bigger matrix products); only the memory walks through time. The
stages are public methods, each returning its output and a named cache:
:meth:`STVAE.encode`, the ConvLSTM (``memory.convlstm_forward``),
:meth:`STVAE.flow_head` and :meth:`STVAE.warp_decode` (grid, sampler and decoder).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import operator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import layers as plain_layers, memory as plain_memory
from .activations import tanh, tanh_grad
from .backend import device_of, get_array_module, to_device
# The model runs the fast ops: the same functions, names and numbers as ../layers.py and
# ../memory.py (tests/test_fast.py: equal to 1e-12 in float64), made fast for the CPU and
# the GPU. STVAE(config, ops="plain") runs the plain ones instead, to step through.
from .fast import layers as fast_layers, memory as fast_memory
from .losses import (huber_smoothness_backward, huber_smoothness_forward, mse_backward, mse_forward,
                     photometric_backward, photometric_forward)
from .sampler import (bilinear_backward, bilinear_forward, flow_to_grid, warp_image_backward,
                      warp_image_forward)

OPS = {"fast": (fast_layers, fast_memory), "plain": (plain_layers, plain_memory)}
CHOICES = {"flow_act": ("none", "tanh"), "photo_loss": ("l2", "charbonnier", "geman_mcclure"),
           "enc_frames": (1, 2), "prediction": ("decoded", "warp_plus_decoded"),
           "photo_weighting": ("uniform", "next_frame")}      # the Config fields that name a choice
REMOVED = {"pan_share": 0.0}    # options taken out, at the value that meant "off" (older checkpoints)
PARAM_NAMES = ("enc.W", "enc.b", "lstm.Wx", "lstm.Wh", "lstm.b", "flow1.W", "flow1.b",
               "flow2.W", "flow2.b", "flow3.W", "flow3.b", "dec.W", "dec.b")


class EncodeCache(NamedTuple):
    """What :meth:`STVAE.encode` keeps for the backward pass."""
    conv: tuple              # the encoder convolution's cache
    tanh_out: object         # tanh(conv(x)) (M, Fe, H, W): tanh' = 1 − tanh²
    pool: tuple              # the max-pool's cache


class FlowCache(NamedTuple):
    """What :meth:`STVAE.flow_head` keeps: the caches of its three convolutions, and the
    tanh outputs after the first two when ``Config.flow_act == "tanh"`` (else None)."""
    flow1: tuple             # the three convolutions' caches
    flow2: tuple
    flow3: tuple
    act1: object = None
    act2: object = None


class DecodeCache(NamedTuple):
    """What :meth:`STVAE.warp_decode` keeps."""
    sampler: tuple           # sampler.BilinearCache
    upsample: tuple
    decoder: tuple
    image: tuple = None      # sampler.ImageWarpCache (prediction = "warp_plus_decoded")


@dataclass
class Config:
    """Architecture and training numbers. ``Config.paper()`` and ``Config.tiny()`` are presets.

    The memory grid is (height/2, width/2): the encoder pools by 2.
    """
    height: int = 64
    width: int = 64
    channels: int = 1
    enc_filters: int = 16
    enc_kernel: int = 7
    mem_filters: int = 64
    mem_kernel: int = 7
    flow_kernel: int = 15
    flow_filters: int = 2          # channels between the two k×k flow convolutions
    flow_act: str = "none"         # after each k×k flow convolution: "none" (the paper) or "tanh"
    huber_delta: float = 1e-3
    huber_weight: float = 1e-2
    # flow-learning options (docs/DESIGN.md, docs/flow_study.md); these defaults are the paper's loss
    photo_weight: float = 0.0      # w_P of the photometric term P (0: off)
    photo_blur: float = 0.0        # σ (image px) of a Gaussian blur of both frames inside P (0: none)
    photo_loss: str = "l2"         # the error inside P: "l2", "charbonnier" (ε = 0.01) or "geman_mcclure"
    photo_gm_scale: float = 0.1    # C of the Geman–McClure error (frame units)
    photo_weighting: str = "uniform"  # P's mean over pixels: "uniform" or "next_frame" (weights B(x_{t+1}))
    recon_flow_grad: float = 1.0   # scale of the reconstruction gradient reaching the flow head
    prediction: str = "decoded"    # ŷ: "decoded" (the paper) or "warp_plus_decoded" (+ the frame itself warped)
    frame_stride: int = 1          # video clips take every frame_stride-th frame (stvae_np.video)
    enc_frames: int = 1            # frames the encoder sees: 1 (x_t, the paper) or 2 (x_{t-1} and x_t)
    # training recipe (used by stvae_np.train; every number can be overridden there)
    lr: float = 1e-4
    lr_decay: float = 0.9          # lr × lr_decay every lr_decay_every epochs
    lr_decay_every: int = 5
    steps_per_epoch: int = 1000    # synthetic data has no epochs: this defines one
    batch_size: int = 16
    seq_len: int = 10
    clip_norm: float = 1.0         # global L2 norm; 0 disables
    clip_value: float = 0.0        # element-wise clamp (the original code used 50); 0 disables
    ema_decay: float = 0.0         # d of the weights' running average used for evaluation (optim.WeightAverage); 0: off
    name: str = "custom"

    @classmethod
    def paper(cls) -> "Config":
        """The paper's model: 64×64×1 frames, 16 encoder filters 7×7, 64 memory filters
        7×7, flow kernels 15×15, RMSProp lr 1e-4 (1,035,071 parameters)."""
        return cls(name="paper")

    @classmethod
    def tiny(cls) -> "Config":
        """A small model that trains on a laptop CPU in minutes: 32×32×1 frames (memory
        grid 16×16), 8 encoder filters 5×5, 16 memory filters 5×5, flow kernels 7×7.

        Its loss adds the photometric term (w_P = 3, frames blurred with σ = 1 px,
        Geman–McClure's error with C = 0.1, each pixel weighted by the next frame) and its
        flow head has 16 channels with tanh between the layers; docs/flow_study.md is the
        study that chose them, and says what each change bought."""
        return cls(height=32, width=32, channels=1, enc_filters=8, enc_kernel=5,
                   mem_filters=16, mem_kernel=5, flow_kernel=7, flow_filters=16,
                   flow_act="tanh", lr=2e-3, photo_weight=3.0, photo_blur=1.0,
                   photo_loss="geman_mcclure", photo_weighting="next_frame",
                   steps_per_epoch=200, batch_size=16, seq_len=10, name="tiny")

    @classmethod
    def video(cls) -> "Config":
        """The tiny model for real footage (docs/flow_study.md, section 11): its encoder sees
        x_{t−1} and x_t, it predicts the frame itself warped by the flow plus a decoded
        correction, its flow takes no gradient through the warped encoding (only through the
        warped frame, smoothness and the photometric term: every pixel alike, Charbonnier's error,
        σ = 1 px blur), batches of 8 clips of 10 frames; evaluated with its weights' average (d = 0.99)."""
        return dataclasses.replace(cls.tiny(), enc_frames=2, prediction="warp_plus_decoded",
                                   photo_loss="charbonnier", photo_weighting="uniform", batch_size=8,
                                   recon_flow_grad=0.0, ema_decay=0.99, name="video")

    @classmethod
    def preset(cls, name: str) -> "Config":
        presets = {"paper": cls.paper, "tiny": cls.tiny, "video": cls.video}
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]()

    def __post_init__(self):
        for f in dataclasses.fields(self):           # types first: height='32' is refused here
            v, kind = getattr(self, f.name), type(f.default)
            ok = (isinstance(v, str) if kind is str else
                  isinstance(v, numbers.Integral) and not isinstance(v, bool) if kind is int else
                  isinstance(v, numbers.Real) and not isinstance(v, bool))
            if not ok:
                raise ValueError(f"{f.name} must be {'a ' + kind.__name__ if kind is not int else 'an int'}, "
                                 f"got {v!r}")
        for k in ("height", "width", "channels", "enc_filters", "enc_kernel", "mem_filters",
                  "mem_kernel", "flow_kernel", "flow_filters", "lr_decay_every", "steps_per_epoch",
                  "batch_size", "frame_stride", "enc_frames"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be at least 1, got {getattr(self, k)}")
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be at least 2, got {self.seq_len}")
        for k in ("huber_delta", "huber_weight", "photo_weight", "photo_blur", "photo_gm_scale",
                  "recon_flow_grad", "lr", "lr_decay", "clip_norm", "clip_value"):
            v = float(getattr(self, k))
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{k} must be a finite number ≥ 0, got {getattr(self, k)}")
        if not self.huber_delta > 0:
            raise ValueError(f"huber_delta must be positive, got {self.huber_delta}")
        if not 0 < self.lr <= 1:
            raise ValueError(f"lr must be in (0, 1], got {self.lr}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.height % 2 or self.width % 2:
            raise ValueError(f"height and width must be even (the encoder pools by 2), "
                             f"got {self.height}×{self.width}")
        for k, choices in CHOICES.items():
            if getattr(self, k) not in choices:
                names = [repr(c) for c in choices]
                raise ValueError(f"{k} must be {', '.join(names[:-1])} or {names[-1]}, got {getattr(self, k)!r}")
        if not self.photo_gm_scale > 0:
            raise ValueError(f"photo_gm_scale must be positive, got {self.photo_gm_scale}")
        if self.photo_weighting == "next_frame" and self.photo_loss == "charbonnier":
            raise ValueError("photo_weighting='next_frame' needs photo_loss 'l2' or 'geman_mcclure', "
                             "got 'charbonnier' (set photo_weighting=uniform with it)")
        for k in ("enc_kernel", "mem_kernel", "flow_kernel"):
            if getattr(self, k) % 2 == 0:
                raise ValueError(f"{k} must be odd, got {getattr(self, k)}")

    def param_shapes(self) -> dict:
        """Name -> shape of every parameter tensor."""
        c, fe, fm, ff = self.channels, self.enc_filters, self.mem_filters, self.flow_filters
        ke, km, kf = self.enc_kernel, self.mem_kernel, self.flow_kernel
        return {
            "enc.W": (fe, c * self.enc_frames, ke, ke), "enc.b": (fe,),
            "lstm.Wx": (4 * fm, fe, km, km), "lstm.Wh": (4 * fm, fm, km, km), "lstm.b": (4 * fm,),
            "flow1.W": (ff, fm, kf, kf), "flow1.b": (ff,),
            "flow2.W": (ff, ff, kf, kf), "flow2.b": (ff,),
            "flow3.W": (2, ff, 1, 1), "flow3.b": (2,),
            "dec.W": (c, fe, ke, ke), "dec.b": (c,),
        }

    def num_params(self) -> int:
        return int(sum(np.prod(s) for s in self.param_shapes().values()))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if REMOVED.get(k, object()) != v}   # a removed option, off
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown Config fields {sorted(unknown)}")
        return cls(**d)


def init_params(config: Config, seed: int = 0, dtype="float32") -> dict:
    """The paper's initialisation, on the host, from ``np.random.default_rng(seed)``.

    Convolutions of encoder, decoder and flow head: Xavier/Glorot uniform,
    U(−a, a) with a = √(6 / (fan_in + fan_out)), fan = channels · k · k.
    ConvLSTM weights: U(−0.08, 0.08). Biases 0, except the forget gate's, which are 1
    (the memory starts by keeping its cell). The last 1×1 flow layer is all zeros, so
    training starts from zero flow: the identity warp. With ``prediction =
    "warp_plus_decoded"`` the decoder's weights are zero too.
    """
    rng = np.random.default_rng(seed)
    shapes = config.param_shapes()
    params = {}
    for name in PARAM_NAMES:           # fixed order: the same seed gives the same model
        shape = shapes[name]
        if name.endswith(".b"):
            p = np.zeros(shape)
        elif name.startswith("lstm.W"):
            p = rng.uniform(-0.08, 0.08, size=shape)
        elif name == "flow3.W":
            p = np.zeros(shape)
        else:
            f_out, f_in, k, _ = shape
            a = np.sqrt(6.0 / ((f_in + f_out) * k * k))
            p = rng.uniform(-a, a, size=shape)
        params[name] = p.astype(dtype)
    fm = config.mem_filters
    params["lstm.b"][fm:2 * fm] = 1.0  # gates are stacked i, f, g, o
    if config.prediction == "warp_plus_decoded":
        params["dec.W"][...] = 0       # no correction yet: training starts from copy-last
    return params


def check_clip(clip, cfg, device, dtype, min_frames=2):
    """Validate a clip (N, T, C, H, W) against a Config and return it on ``device`` ("cpu" or
    "gpu") as ``dtype``: a ValueError names what is wrong (rank, channels, frame size, too
    few frames, no clips, not float, NaN or inf)."""
    shape = tuple(getattr(clip, "shape", ()))
    if not hasattr(clip, "dtype"):
        raise ValueError(f"clip must be an array of shape (N, T, C, H, W), got {type(clip).__name__}")
    if len(shape) != 5:
        raise ValueError(f"clip must be 5-D (N, T, C, H, W), got shape {shape}")
    n, t, c, h, w = shape
    if c != cfg.channels:
        raise ValueError(f"clip has {c} channels, the model expects {cfg.channels}")
    if (h, w) != (cfg.height, cfg.width):
        raise ValueError(f"clip frames are {h}×{w}, the model expects {cfg.height}×{cfg.width}")
    if t < min_frames:
        raise ValueError(f"clip needs at least {min_frames} frames, got T={t}")
    if n < 1:
        raise ValueError("clip holds no sequences (N=0)")
    if np.dtype(clip.dtype).kind != "f":
        raise ValueError(f"clip must hold float pixels in [0, 1], got dtype {clip.dtype}")
    if device_of(clip) == "cpu":
        # checked on the host, before the copy: on the GPU this would be a device sync
        if not np.isfinite(clip).all():
            raise ValueError("clip contains NaN or infinite values")
    clip = to_device(clip, device)
    return clip.astype(dtype, copy=False)


def encoder_input(config, frames, previous):
    """What the encoder reads at step t: x_t (M, C, H, W), or with ``config.enc_frames = 2``
    x_{t−1} and x_t stacked on the channels (M, 2C, H, W); x_{−1} = x_0."""
    if config.enc_frames == 1:
        return frames
    return get_array_module(frames).concatenate([previous, frames], axis=1)


class STVAE:
    """The model: parameters, the forward/backward over a clip, prediction, checkpoints.

    Args:
        config: a :class:`Config`.
        seed: host-side RNG seed for the initialisation (same seed, same model on CPU and GPU).
        dtype: "float32" (training) or "float64" (gradient checks).
        device: "cpu" (NumPy) or "gpu" (CuPy).
        ops: "fast" (``fast/layers.py``, ``fast/memory.py``: what training runs) or
            "plain" (``layers.py``, ``memory.py``: the same numbers, to step through).
    """

    def __init__(self, config: Config, seed: int = 0, dtype="float32", device="cpu", ops="fast"):
        self.config = config
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise ValueError(f"dtype must be a float type, got {self.dtype}")
        if ops not in OPS:
            raise ValueError(f"ops must be one of {sorted(OPS)}, got {ops!r}")
        self.ops = ops
        self.layers, self.memory = OPS[ops]      # conv, pool, up-sampling; the ConvLSTM
        self.device = device
        self.params = {k: to_device(v, device) for k, v in init_params(config, seed, self.dtype).items()}
        self.last_parts = {}   # {"mse": 0-d array, "smooth": 0-d array} of the last loss
        self._blur_kernels = {}  # (σ, dtype, array module) -> the photometric term's blur kernel

    @property
    def xp(self):
        return get_array_module(self.params["enc.W"])

    # ------------------------------------------------------------------ forward / backward
    def encode(self, frames):
        """Spatial encoder, e = maxpool2(tanh(conv(x; We) + be)).

        Args:
            frames: (M, C, H, W), any M frames (the model stacks N·(T-1) of them); with
                ``Config.enc_frames = 2``, (M, 2C, H, W): x_{t−1} and x_t stacked on the
                channels (:func:`encoder_input`), so that its filters see motion.
        Returns:
            e (M, Fe, h, w) with (h, w) = (H/2, W/2), and an :class:`EncodeCache`.
        """
        p = self.params
        a, conv_cache = self.layers.conv2d_forward(frames, p["enc.W"], p["enc.b"])   # (M, Fe, H, W)
        t = tanh(a)
        e, pool_cache = self.layers.maxpool2_forward(t)                              # (M, Fe, h, w)
        return e, EncodeCache(conv_cache, t, pool_cache)

    def flow_head(self, hs_flat):
        """Flow regressor, T = conv1x1(φ(conv_k(φ(conv_k(h))))).

        φ is the identity (``Config.flow_act = "none"``: the paper's linear head) or tanh
        (``"tanh"``: the tiny preset's, see docs/flow_study.md section 8).

        Args:
            hs_flat: (M, Fm, h, w), memory states stacked in the batch axis.
        Returns:
            flow (M, 2, h, w) in memory-grid pixels (channel 0 = x, 1 = y), and a
            :class:`FlowCache`.
        """
        p = self.params
        use_tanh = self.config.flow_act == "tanh"
        f1, c1 = self.layers.conv2d_forward(hs_flat, p["flow1.W"], p["flow1.b"])    # (M, Ff, h, w)
        if use_tanh:
            f1 = tanh(f1)
        f2, c2 = self.layers.conv2d_forward(f1, p["flow2.W"], p["flow2.b"])         # (M, Ff, h, w)
        if use_tanh:
            f2 = tanh(f2)
        flow, c3 = self.layers.conv2d_forward(f2, p["flow3.W"], p["flow3.b"])       # (M, 2, h, w)
        if use_tanh:                  # tanh' = 1 − tanh²: the backward needs the outputs
            return flow, FlowCache(c1, c2, c3, act1=f1, act2=f2)
        return flow, FlowCache(c1, c2, c3)

    def warp_decode(self, e, flow, frames=None):
        """Grid generator, sampler and decoder: ŷ = conv(upsample2(bilinear(e, G)); Wd) + bd,
        with G = ``sampler.flow_to_grid(flow)`` = base grid + T. With ``Config.prediction =
        "warp_plus_decoded"`` the frame itself, warped by the flow in image pixels
        (``sampler.warp_image_forward``), is added: ŷ = warp(x_t, 2·upsample2(T)) + decoded.

        Args: e (M, Fe, h, w) encoded frames; flow (M, 2, h, w) in memory-grid pixels; frames
            (M, C, H, W), the x_t ("warp_plus_decoded" only). Returns ŷ (M, C, H, W), a :class:`DecodeCache`.
        """
        p = self.params
        warped, samp_cache = bilinear_forward(e, flow_to_grid(flow))    # (M, Fe, h, w)
        up, up_cache = self.layers.upsample2_forward(warped)                        # (M, Fe, H, W)
        pred, dec_cache = self.layers.conv2d_forward(up, p["dec.W"], p["dec.b"])    # (M, C, H, W)
        if self.config.prediction == "decoded":
            return pred, DecodeCache(samp_cache, up_cache, dec_cache)
        moved, image_cache = warp_image_forward(frames, flow, self.layers)          # (M, C, H, W)
        return pred + moved, DecodeCache(samp_cache, up_cache, dec_cache, image_cache)

    def loss_and_grads(self, clip):
        """The loss of docs/DESIGN.md over one clip and the gradient of every parameter.

        Args:
            clip: (N, T, C, H, W) float pixels in [0, 1], T ≥ 2 (NumPy or CuPy).
        Returns:
            loss: 0-d array (the model's dtype and device; ``float(loss)`` to log it).
            grads: dict named like ``params``.
        Also sets ``self.last_parts = {"mse", "smooth"}`` (0-d arrays, smooth unweighted).
        """
        cfg, p = self.config, self.params
        clip = check_clip(clip, self.config, self.device, self.dtype)
        xp = get_array_module(clip)
        n, t, c, hh, ww = clip.shape
        s = t - 1                                                  # prediction steps
        inputs = clip[:, :-1].reshape(n * s, c, hh, ww)            # x_0 … x_{T-2}
        targets = clip[:, 1:].reshape(n * s, c, hh, ww)            # x_1 … x_{T-1}

        # ---- forward: encoder on all frames, memory through time, the rest on all frames
        previous = xp.concatenate([clip[:, :1], clip[:, :-2]], axis=1).reshape(inputs.shape) \
            if cfg.enc_frames == 2 else None                       # x_{t−1}, x_{−1} = x_0
        e, enc_cache = self.encode(encoder_input(cfg, inputs, previous))     # (N·S, Fe, h, w)
        fe, h, w = e.shape[1:]
        lstm_params = {"Wx": p["lstm.Wx"], "Wh": p["lstm.Wh"], "b": p["lstm.b"]}
        hs, lstm_cache = self.memory.convlstm_forward(e.reshape(n, s, fe, h, w), lstm_params)
        flow, flow_cache = self.flow_head(hs.reshape(n * s, -1, h, w))     # (N·S, 2, h, w)
        pred, dec_cache = self.warp_decode(e, flow, inputs)        # (N·S, C, H, W)
        mse, mse_cache = mse_forward(pred, targets)
        smooth, huber_cache = huber_smoothness_forward(flow, cfg.huber_delta)
        # mean over all N·S frames == 1/(T-1) Σ_t of the per-step means (equal sizes)
        loss = xp.asarray(mse + cfg.huber_weight * smooth)        # 0-d on NumPy too

        photo = None
        if cfg.photo_weight > 0:                                   # the optional photometric term
            photo, photo_cache = photometric_forward(clip, flow, cfg, self.layers, self._blur_kernels)
            loss = loss + cfg.photo_weight * photo

        # ---- backward, in exactly the reverse order
        one = xp.ones((), dtype=self.dtype)
        grads = {}
        dpred = mse_backward(one, mse_cache)
        dup, grads["dec.W"], grads["dec.b"] = self.layers.conv2d_backward(dpred, dec_cache.decoder)
        dwarped = self.layers.upsample2_backward(dup, dec_cache.upsample)
        de, dgrid = bilinear_backward(dwarped, dec_cache.sampler)  # e feeds the sampler ...
        dflow = dgrid if cfg.recon_flow_grad == 1 else cfg.recon_flow_grad * dgrid
        if dec_cache.image is not None:                            # ŷ's warped frame
            dflow = dflow + warp_image_backward(dpred, dec_cache.image, self.layers)
        dflow = dflow + cfg.huber_weight * huber_smoothness_backward(one, huber_cache)
        if photo is not None:
            dflow = dflow + photometric_backward(cfg.photo_weight * one, photo_cache, self.layers)
        df2, grads["flow3.W"], grads["flow3.b"] = self.layers.conv2d_backward(dflow, flow_cache.flow3)
        if flow_cache.act2 is not None:                            # flow_act = "tanh"
            df2 = df2 * tanh_grad(flow_cache.act2)
        df1, grads["flow2.W"], grads["flow2.b"] = self.layers.conv2d_backward(df2, flow_cache.flow2)
        if flow_cache.act1 is not None:
            df1 = df1 * tanh_grad(flow_cache.act1)
        dhs, grads["flow1.W"], grads["flow1.b"] = self.layers.conv2d_backward(df1, flow_cache.flow1)
        des, dlstm = self.memory.convlstm_backward(dhs.reshape(n, s, -1, h, w), lstm_cache)
        grads["lstm.Wx"], grads["lstm.Wh"], grads["lstm.b"] = dlstm["Wx"], dlstm["Wh"], dlstm["b"]
        de = de + des.reshape(n * s, fe, h, w)                     # ... and the memory
        dtanh = self.layers.maxpool2_backward(de, enc_cache.pool)
        _, grads["enc.W"], grads["enc.b"] = self.layers.conv2d_backward(dtanh * tanh_grad(enc_cache.tanh_out),
                                                            enc_cache.conv, need_dx=False)  # the clip needs none
        self.last_parts = {"mse": mse, "smooth": smooth}
        if photo is not None:
            self.last_parts["photo"] = photo
        return loss, {k: grads[k] for k in PARAM_NAMES}

    def loss(self, clip):
        """The loss alone (forward only), as a 0-d array."""
        pred, flow = self.predict(clip)
        clip = check_clip(clip, self.config, self.device, self.dtype)
        mse, _ = mse_forward(pred, clip[:, 1:])
        flat = flow.reshape((-1,) + flow.shape[2:])
        smooth, _ = huber_smoothness_forward(flat, self.config.huber_delta)
        loss = mse + self.config.huber_weight * smooth
        if self.config.photo_weight > 0:
            photo, _ = photometric_forward(clip, flat, self.config, self.layers, self._blur_kernels)
            loss = loss + self.config.photo_weight * photo
        return loss

    def predict_step(self, frame, state=None):
        """One step of the recurrence: frame x_t (N, C, H, W) -> prediction of x_{t+1}.

        Args:
            frame: (N, C, H, W) on the model's device.
            state: (h, c, x_t) from the previous step, or None for a fresh memory.
        Returns:
            pred (N, C, H, W), flow (N, 2, h, w) in memory-grid pixels, state (h, c, x_t).
        """
        p = self.params
        e, _ = self.encode(encoder_input(self.config, frame, frame if state is None else state[2]))
        lstm_params = {"Wx": p["lstm.Wx"], "Wh": p["lstm.Wh"], "b": p["lstm.b"]}
        if state is None:
            xp = get_array_module(e)
            zeros = xp.zeros((e.shape[0], self.config.mem_filters) + e.shape[2:], dtype=e.dtype)
            state = (zeros, zeros, frame)
        h, c, _ = self.memory.convlstm_step_forward(e, state[0], state[1], lstm_params)
        flow, _ = self.flow_head(h)
        pred, _ = self.warp_decode(e, flow, frame)
        return pred, flow, (h, c, frame)

    def predict(self, clip):
        """Next-frame predictions for frames 1 … T-1, without keeping backward caches.

        Args:
            clip: (N, T, C, H, W), T ≥ 2.
        Returns:
            preds (N, T-1, C, H, W) and flows (N, T-1, 2, h, w) in memory-grid pixels,
            on the model's device.
        """
        clip = check_clip(clip, self.config, self.device, self.dtype)
        xp = get_array_module(clip)
        state, preds, flows = None, [], []
        for t in range(clip.shape[1] - 1):
            pred, flow, state = self.predict_step(clip[:, t], state)
            preds.append(pred)
            flows.append(flow)
        return xp.stack(preds, axis=1), xp.stack(flows, axis=1)

    def rollout(self, context, n_future):
        """Multi-step prediction: read the ``K`` context frames, then feed the model's own
        predictions back for ``n_future`` more steps.

        Args:
            context: (N, K, C, H, W), K ≥ 1.
            n_future: number of frames to predict after the context, ≥ 0.
        Returns:
            (N, n_future, C, H, W): predictions of frames K … K + n_future − 1
            (an empty (N, 0, C, H, W) array for n_future = 0).
        Raises:
            ValueError: n_future < 0 or not an integer.
        """
        try:
            n_future = operator.index(n_future)          # a Python or NumPy integer
        except TypeError:
            raise ValueError(f"rollout: n_future must be an integer, got {n_future!r}") from None
        if n_future < 0:
            raise ValueError(f"rollout: n_future must be ≥ 0, got {n_future}")
        context = check_clip(context, self.config, self.device, self.dtype, min_frames=1)
        xp = get_array_module(context)
        if n_future == 0:                        # nothing to predict: no step to run
            return xp.zeros(context.shape[:1] + (0,) + context.shape[2:], dtype=context.dtype)
        state, pred = None, None
        for t in range(context.shape[1]):       # the last context step predicts frame K
            pred, _, state = self.predict_step(context[:, t], state)
        preds = [pred]
        for _ in range(n_future - 1):
            pred, _, state = self.predict_step(xp.clip(pred, 0.0, 1.0), state)
            preds.append(pred)
        return xp.stack(preds[:n_future], axis=1)

    # ------------------------------------------------------------------ devices, checkpoints
    def to(self, device: str) -> "STVAE":
        """Move the parameters to "cpu" or "gpu" (in place); returns self."""
        self.params = {k: to_device(v, device) for k, v in self.params.items()}
        self.device = device
        return self
