"""The training step of stvae_np, written in PyTorch: a reference to time it against.

It builds the same model as ``stvae_np.model.STVAE`` for a preset (encoder conv +
tanh + 2×2 max-pool, ConvLSTM without peepholes with gates stacked i, f, g, o, the
flow head's three linear convolutions, the grid generator and zero-padded bilinear
sampler, nearest ×2 up-sampling, the decoder convolution), the loss of
``STVAE.loss_and_grads`` (MSE + w_H · Huber smoothness, + w_P · the photometric term
where the preset turns it on: the tiny preset does), global-norm gradient clipping as
``stvae_np.optim.clip_grad_norm`` and RMSProp (``torch.optim.RMSprop``: ε outside the
square root, like ``stvae_np.optim.RMSProp``), with the initial weights of
``stvae_np.model.init_params`` and the clips of ``benchmarks.bench.random_clip``. The
gradients come from autograd; every forward line names the stvae_np function it
stands for, so the two can be read side by side.

PyTorch is optional: ``pip install torch`` to run this script. stvae_np never needs it
(not in requirements.txt, not imported by the package or its tests).

    python benchmarks/torch_reference.py --check                 # same step? both presets, float64
    python benchmarks/torch_reference.py                         # time the paper preset, N=16, T=10, CPU
    python benchmarks/torch_reference.py --preset tiny --steps 5 --json torch_tiny.json
    python benchmarks/torch_reference.py --device cuda           # a CUDA build of PyTorch (TF32 off)

``--check`` runs both models in float64 on small clips (N=2, T=4) from the same
weights, at stvae_np's initial weights (zero flow: every sample point on the pixel
lattice) and with the flow head moved off zero (``flow3.W`` ~ N(0, 0.5²), ``flow3.b``
= (0.37, −0.29), as the model's gradient tests do, so that every layer gets gradient),
and compares the loss, its parts, every parameter's gradient and one clipped RMSProp
update. It exits 1 if the loss differs by more than 1e-10 relative or a gradient or an
update by more than 1e-8 (max |a − b| / max |b| per tensor).

Timing, as ``python -m benchmarks.bench``: the median of ``--steps`` training steps
(forward, backward, gradient clipping, RMSProp with lr 1e-6 so the model stays put)
after ``--warmup`` steps, perf_counter on the CPU, CUDA events on the GPU; the FLOPs of
``benchmarks.bench.step_flops``; a 4096² float32 matmul (torch's) timed before and after
the steps as the yardstick; the threads, BLAS and oneDNN PyTorch runs with; the peak
resident set of this process (VmHWM, reset after the first yardstick, so it counts torch
and NumPy loaded plus the model and its steps); on the GPU also the peak of PyTorch's
CUDA allocator. stvae_np's bench reads its peak in a fresh process that never imported
torch: compare the increase over "after the imports" as well as the totals.

To compare with stvae_np, alternate the two in one session on the same data, and leave
``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` unset for both, so that OpenBLAS picks its
kernels for the CPU (this project's environment sets CORETYPE=Haswell; unset, OpenBLAS
took SkylakeX here). PyTorch computes with MKL and oneDNN, which do not read them:

    for i in 1 2; do
      env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.bench --no-stages --preset paper
      env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/torch_reference.py --preset paper
    done

Reading the figures: torch's 4096² matmul goes to MKL, its convolutions to oneDNN's own
kernels, so where MKL takes a slower path than oneDNN (it did on this project's AMD
CPU: MKL 210 GFLOP/s, NumPy's OpenBLAS 468 in the same minutes) torch's "ratio" can pass
100 %: compare the step times, and each ratio only with its own library's yardstick.
Other work on the CPU slowed the torch step far more than stvae_np's in our runs (2
cores, load 4–5: 17 s a paper step against 4.2 s at load 2; stvae_np's right after the
slow one: 4.4 s), so alternate the two, several times, on a machine as idle as you can.

Sampler note: ``F.grid_sample`` wants source points in [−1, 1]. With
``align_corners=False`` pixel x is (2x + 1)/W − 1, and for W a power of two (both
presets: 16, 32 and 64) that conversion and grid_sample's way back are exact in binary
floating point, so a point on the lattice stays on it and gets the same one-sided
derivative as in stvae_np (⌊x_s⌋ = x_s: the right-hand one). ``align_corners=True``,
x·2/(W − 1) − 1, rounds some lattice points just below the integer: same values, but
at zero flow the grid gradient there is the left-hand derivative, and the gradients
differ by up to 87 % (paper) and 45 % (tiny) of their size in ``--check``. The zero padding is the same either way (a neighbour outside the map
contributes zero).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the repository root

# stvae_np first (through benchmarks.bench), as its own bench imports it
from benchmarks.bench import peak_rss_mib, random_clip, step_flops  # noqa: E402
from stvae_np.model import PARAM_NAMES, STVAE, Config  # noqa: E402
from stvae_np.optim import RMSProp, clip_grad_norm  # noqa: E402

import numpy as np  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    sys.exit("benchmarks/torch_reference.py needs PyTorch (pip install torch); "
             "stvae_np itself never does")


# ----------------------------------------------------------------------------- the model
def conv(x, w, b=None):
    """conv.conv2d_forward: cross-correlation, stride 1, zero "same" padding k // 2."""
    return F.conv2d(x, w, b, padding=w.shape[-1] // 2)


def encode(p, frames):
    """STVAE.encode: e = maxpool2(tanh(conv(x; We) + be)), (M, C, H, W) -> (M, Fe, h, w).
    On a tie the max-pool's gradient goes to the first corner in row-major order in both."""
    return F.max_pool2d(torch.tanh(conv(frames, p["enc.W"], p["enc.b"])), 2)


def convlstm(p, xs):
    """convlstm.convlstm_forward: xs (N, S, Fe, h, w) -> hs (N, S, Fm, h, w), h and c start at 0.

    One convolution per step over [x_t; h_{t-1}] with W = [Wx, Wh] (as stvae_np does),
    gates stacked i, f, g, o along the output channels; no peepholes.
    """
    n, s, _, h, w = xs.shape
    fm = p["lstm.Wh"].shape[1]
    weight = torch.cat([p["lstm.Wx"], p["lstm.Wh"]], dim=1)           # (4Fm, Fe + Fm, k, k)
    h_t = xs.new_zeros(n, fm, h, w)
    c_t = xs.new_zeros(n, fm, h, w)
    hs = []
    for t in range(s):
        a = conv(torch.cat([xs[:, t], h_t], dim=1), weight, p["lstm.b"])   # (N, 4Fm, h, w)
        i, f, g, o = a.chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c_t = f * c_t + i * g
        h_t = o * torch.tanh(c_t)
        hs.append(h_t)
    return torch.stack(hs, dim=1)


def flow_head(cfg, p, hs_flat):
    """STVAE.flow_head: T = conv1x1(φ(conv_k(φ(conv_k(h))))), φ = identity or tanh
    (cfg.flow_act); (M, 2, h, w) in memory-grid pixels, channel 0 = x, 1 = y."""
    act = torch.tanh if cfg.flow_act == "tanh" else (lambda x: x)
    f1 = act(conv(hs_flat, p["flow1.W"], p["flow1.b"]))
    f2 = act(conv(f1, p["flow2.W"], p["flow2.b"]))
    return conv(f2, p["flow3.W"], p["flow3.b"])


def flow_to_grid(flow):
    """sampler.flow_to_grid: G = base grid + T, channel 0 = x + T_x, channel 1 = y + T_y."""
    _, _, h, w = flow.shape
    base = torch.empty(1, 2, h, w, dtype=flow.dtype, device=flow.device)
    base[:, 0] = torch.arange(w, dtype=flow.dtype, device=flow.device)[None, :]
    base[:, 1] = torch.arange(h, dtype=flow.dtype, device=flow.device)[:, None]
    return base + flow


def bilinear(img, grid):
    """sampler.bilinear_forward: sample img (M, C, H, W) at the source points grid
    (M, 2, h, w), (x, y) in pixels of img; neighbours outside the map contribute zero.

    grid_sample takes (x, y) in [−1, 1] along a last axis; align_corners=False maps pixel
    x to (2x + 1)/W − 1, exact for W a power of two (module docstring).
    """
    height, width = img.shape[-2:]
    gx = (2 * grid[:, 0] + 1) / width - 1
    gy = (2 * grid[:, 1] + 1) / height - 1
    return F.grid_sample(img, torch.stack([gx, gy], dim=-1), mode="bilinear",
                         padding_mode="zeros", align_corners=False)


def upsample2(x):
    """conv.upsample2_forward: nearest neighbour ×2."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


def warp_decode(p, e, flow):
    """STVAE.warp_decode: ŷ = conv(upsample2(bilinear(e, base grid + T)); Wd) + bd."""
    warped = bilinear(e, flow_to_grid(flow))
    return conv(upsample2(warped), p["dec.W"], p["dec.b"])


def huber_smoothness(flow, delta):
    """losses.huber_smoothness_forward: mean(H_δ(D_x)) + mean(H_δ(D_y)), H_δ(a) = a²/2 for
    |a| ≤ δ, δ(|a| − δ/2) beyond (F.huber_loss against 0 is exactly H_δ)."""
    d_x = flow[..., :, 1:] - flow[..., :, :-1]
    d_y = flow[..., 1:, :] - flow[..., :-1, :]
    return (F.huber_loss(d_x, torch.zeros_like(d_x), delta=delta)
            + F.huber_loss(d_y, torch.zeros_like(d_y), delta=delta))


def blur_kernel(sigma, like):
    """STVAE._blur's kernel: normalised Gaussian of σ image pixels, k = 2⌈2σ⌉ + 1, built
    in float64 on the host as stvae_np builds it, then cast."""
    r = int(np.ceil(2 * sigma))
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    kernel = np.outer(g, g) / np.outer(g, g).sum()
    return torch.tensor(kernel.reshape(1, 1, 2 * r + 1, 2 * r + 1), dtype=like.dtype, device=like.device)


def photometric(cfg, clip, flow):
    """stvae_np.losses.photometric_forward: P = mean(ρ(bilinear(B(x_t), base grid + s·upsample2(T_t))
    − B(x_{t+1}))), s = W / w = 2, ρ = d² ("l2") or √(d² + ε²) − ε, ε = 0.01
    ("charbonnier"); B the Gaussian blur of σ = photo_blur (none for σ = 0)."""
    n, t, c, hh, ww = clip.shape
    frames_all = clip.reshape(n * t, c, hh, ww)
    if cfg.photo_blur > 0:                              # each channel blurred alone
        frames_all = conv(frames_all.reshape(n * t * c, 1, hh, ww),
                          blur_kernel(cfg.photo_blur, clip)).reshape(n * t, c, hh, ww)
    blurred = frames_all.reshape(n, t, c, hh, ww)
    frames = blurred[:, :-1].reshape(n * (t - 1), c, hh, ww)     # B(x_0) … B(x_{T-2})
    targets = blurred[:, 1:].reshape(n * (t - 1), c, hh, ww)     # B(x_1) … B(x_{T-1})
    scale = ww // flow.shape[-1]
    warped = bilinear(frames, flow_to_grid(scale * upsample2(flow)))
    if cfg.photo_loss == "charbonnier":
        eps = 1e-2
        return torch.sqrt((warped - targets) ** 2 + eps ** 2).mean() - eps
    return F.mse_loss(warped, targets)


def scale_gradient(x, factor):
    """The identity forward, the gradient times ``factor`` backward (``recon_flow_grad``)."""
    if factor == 1:
        return x
    y = x.clone()
    y.register_hook(lambda grad: grad * factor)
    return y


def loss_fn(cfg, p, clip):
    """STVAE.loss_and_grads' forward: L = mse + w_H · H(∇T) (+ w_P · P), every mean over
    all N·(T−1) stacked frames. Returns (L, parts) with parts like ``STVAE.last_parts``."""
    n, t, c, hh, ww = clip.shape
    s = t - 1
    inputs = clip[:, :-1].reshape(n * s, c, hh, ww)              # x_0 … x_{T-2}
    targets = clip[:, 1:].reshape(n * s, c, hh, ww)              # x_1 … x_{T-1}
    e = encode(p, inputs)                                        # (N·S, Fe, h, w)
    fe, h, w = e.shape[1:]
    hs = convlstm(p, e.reshape(n, s, fe, h, w))                  # (N, S, Fm, h, w)
    flow = flow_head(cfg, p, hs.reshape(n * s, -1, h, w))        # (N·S, 2, h, w)
    pred = warp_decode(p, e, scale_gradient(flow, cfg.recon_flow_grad))
    mse = F.mse_loss(pred, targets)
    smooth = huber_smoothness(flow, cfg.huber_delta)
    loss = mse + cfg.huber_weight * smooth
    parts = {"mse": mse, "smooth": smooth}
    if cfg.photo_weight > 0:
        parts["photo"] = photo = photometric(cfg, clip, flow)
        loss = loss + cfg.photo_weight * photo
    return loss, parts


def torch_params(np_params, dtype, device):
    """stvae_np's parameters (name -> NumPy array) as leaf tensors that want gradients."""
    return {name: torch.tensor(np.asarray(np_params[name]), dtype=dtype, device=device).requires_grad_()
            for name in PARAM_NAMES}


# ----------------------------------------------------------------------------- the optimiser
def clip_grad_norm_(grads, max_norm):
    """optim.clip_grad_norm: g ← g · max_norm / (‖g‖ + 1e-6) when ‖g‖ > max_norm, in place.

    torch.nn.utils.clip_grad_norm_ scales by min(1, max_norm / (‖g‖ + 1e-6)) instead, which
    differs when max_norm − 1e-6 < ‖g‖ ≤ max_norm; this is stvae_np's rule.
    """
    total = torch.sqrt(sum((g * g).sum() for g in grads))
    scale = torch.where(total > max_norm, max_norm / (total + 1e-6), torch.ones_like(total))
    for g in grads:
        g.mul_(scale)
    return total


def make_rmsprop(params, lr):
    """optim.RMSProp: v ← αv + (1−α)g², θ ← θ − lr·g/(√v + ε), α = 0.99, ε = 1e-8 (torch's
    RMSprop without momentum, centring or weight decay is exactly this update)."""
    return torch.optim.RMSprop(list(params.values()), lr=lr, alpha=0.99, eps=1e-8,
                               momentum=0, centered=False, weight_decay=0)


def make_train_step(cfg, params, clip, lr=1e-6):
    """One training step as ``benchmarks.bench._train_step_fn``: loss and gradients, clip to
    the global norm cfg.clip_norm, RMSProp (tiny lr: the model stays put while timed)."""
    opt = make_rmsprop(params, lr)

    def step():
        opt.zero_grad(set_to_none=True)
        loss, _ = loss_fn(cfg, params, clip)
        loss.backward()
        clip_grad_norm_([params[name].grad for name in PARAM_NAMES], cfg.clip_norm)
        opt.step()
        return loss
    return step


# ----------------------------------------------------------------------------- --check
def rel_err(a, b):
    """max |a − b| / max |b| over one tensor (0 when both are all zero)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = np.abs(b).max()
    diff = np.abs(a - b).max()
    return float(diff / scale) if scale > 0 else float(diff)


def check_point(cfg, label, n, t, device, move_flow, seed=0):
    """Compare one float64 step of both models; returns (worst errors dict, lines)."""
    model = STVAE(cfg, seed=seed, dtype="float64")
    if move_flow:                                   # as tests/test_model.py's gradient checks
        rng = np.random.default_rng(7)
        model.params["flow3.W"][...] = rng.normal(0, 0.5, model.params["flow3.W"].shape)
        model.params["flow3.b"][...] = [0.37, -0.29]
    clip = random_clip(cfg, n, t, seed=seed).astype(np.float64)
    params0 = {k: v.copy() for k, v in model.params.items()}

    # stvae_np: loss, gradients, then one clipped RMSProp step at the preset's lr
    loss_np, grads_np = model.loss_and_grads(clip)
    parts_np = {k: float(v) for k, v in model.last_parts.items()}
    grads_np = {k: v.copy() for k, v in grads_np.items()}
    grads_clipped = {k: v.copy() for k, v in grads_np.items()}
    norm_np = float(clip_grad_norm(grads_clipped, cfg.clip_norm))
    np_after = {k: v.copy() for k, v in params0.items()}
    RMSProp(np_after, lr=cfg.lr).step(grads_clipped)

    # torch: the same from the same weights and clip
    params = torch_params(params0, torch.float64, device)
    loss_t, parts_t = loss_fn(cfg, params, torch.tensor(clip, device=device))
    loss_t.backward()
    grads_t = {k: params[k].grad.detach().cpu().numpy().copy() for k in PARAM_NAMES}
    norm_t = float(clip_grad_norm_([params[k].grad for k in PARAM_NAMES], cfg.clip_norm))
    make_rmsprop(params, cfg.lr).step()

    loss_t = float(loss_t.detach())
    errors = {"loss": rel_err(loss_t, float(loss_np)), "grad norm": rel_err(norm_t, norm_np)}
    part_errors = ", ".join(f"{k} {rel_err(float(parts_t[k].detach()), parts_np[k]):.1e}" for k in parts_np)
    lines = [f"  {label}: loss stvae_np {float(loss_np):.17g}, torch {loss_t:.17g}, "
             f"rel. error {errors['loss']:.1e}",
             f"    parts {part_errors}; gradient norm {norm_np:.6g}, rel. error {errors['grad norm']:.1e}",
             f"    {'parameter':10s} {'max |grad|':>11s} {'grad error':>11s} "
             f"{'max |update|':>13s} {'update error':>13s}"]
    for name in PARAM_NAMES:
        update_np = np_after[name] - params0[name]
        update_t = params[name].detach().cpu().numpy() - params0[name]
        g_err, u_err = rel_err(grads_t[name], grads_np[name]), rel_err(update_t, update_np)
        errors[f"grad {name}"] = g_err
        errors[f"update {name}"] = u_err
        lines.append(f"    {name:10s} {np.abs(grads_np[name]).max():11.3e} {g_err:11.1e} "
                     f"{np.abs(update_np).max():13.3e} {u_err:13.1e}")
    return errors, lines


def run_check(presets, n, t, device, loss_tol=1e-10, grad_tol=1e-8):
    """--check: both models, float64, every preset, two weight points.
    Returns (exit code, {preset: {point: errors}})."""
    ok, results = True, {}
    for preset in presets:
        cfg = Config.preset(preset)
        photo = f"on (w_P = {cfg.photo_weight:g}, σ = {cfg.photo_blur:g})" if cfg.photo_weight > 0 else "off"
        print(f"torch_reference --check: preset {preset}, N={n}, T={t}, float64, {device}, photometric term {photo}")
        results[preset] = {}
        for label, move_flow in (("initial weights (zero flow)", False), ("flow head moved off zero", True)):
            errors, lines = check_point(cfg, label, n, t, device, move_flow)
            results[preset][label] = errors
            print("\n".join(lines))
            worst_grad = max(v for k, v in errors.items() if k.startswith("grad"))
            worst_update = max(v for k, v in errors.items() if k.startswith("update"))
            good = errors["loss"] <= loss_tol and worst_grad <= grad_tol and worst_update <= grad_tol
            ok &= good
            print(f"    worst: loss {errors['loss']:.1e} (limit {loss_tol:g}), gradient {worst_grad:.1e}, "
                  f"update {worst_update:.1e} (limit {grad_tol:g}): {'OK' if good else 'FAILED'}")
    print("same training step" if ok else "MISMATCH")
    return (0 if ok else 1), results


# ----------------------------------------------------------------------------- timing
def timed(fn, device, repeats, warmup):
    """Median and all wall times of fn: CUDA events on the GPU, perf_counter on the CPU."""
    for _ in range(warmup):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return float(np.median(times)), times


def matmul_gflops(device, n=4096, repeats=5):
    """torch's float32 n×n matmul throughput, GFLOP/s (benchmarks.bench's yardstick, in torch)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)
    seconds, _ = timed(lambda: a @ b, device, repeats, warmup=2)
    return 2 * n ** 3 / seconds / 1e9


def torch_machine(device):
    """What PyTorch runs with: version, BLAS, oneDNN, parallel backend, threads, device."""
    config = torch.__config__.show()
    parallel = torch.__config__.parallel_info()

    def find(pattern, text=config):
        m = re.search(pattern, text)
        return m.group(1).strip() if m else None
    info = {
        "torch": torch.__version__,
        "blas": find(r"BLAS_INFO=(\w+)"),
        "mkl": find(r"Math Kernel Library Version ([^\n]+?)(?: for|\n)"),
        "onednn": find(r"(?:MKL-DNN|oneDNN)\s+(v[\d.]+)"),
        "onednn_enabled": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
        "parallel_backend": find(r"ATen parallel backend: (\S+)", parallel),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu": platform.processor() or platform.machine(),
        "env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_THREAD_TIMEOUT",
                                            "OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
        info["tf32"] = bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)
    return info


def machine_line(m, device):
    if device == "cuda":
        return (f"{m['gpu']}, torch {m['torch']}, CUDA {m['cuda']}, cuDNN {m['cudnn']}, "
                f"TF32 {'on' if m['tf32'] else 'off'}")
    env = ", ".join(f"{k}={v}" for k, v in m["env"].items())
    return (f"{m['cpu']}, torch {m['torch']}, BLAS {m['blas']}"
            + (f" (MKL {m['mkl']})" if m["mkl"] else "")
            + (f", oneDNN {m['onednn']}{'' if m['onednn_enabled'] else ' (disabled)'}" if m["onednn"] else "")
            + f", {m['parallel_backend']}, {m['threads']} threads ({m['interop_threads']} inter-op)"
            + (f", {env}" if env else ""))


def reset_peak_rss():
    """Reset this process's VmHWM to its current resident set (Linux: "5" to
    /proc/self/clear_refs). Returns False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def run_bench(preset, n, t, device, steps, warmup, matmul=True):
    baseline_mib = peak_rss_mib()                # after the imports (torch, NumPy, stvae_np)
    cfg = Config.preset(preset)
    flops = step_flops(cfg, n, t)
    mm_before = matmul_gflops(device) if matmul else None
    hwm_reset = reset_peak_rss()                 # so that the yardstick's buffers do not count
    before_model_mib = peak_rss_mib()
    params = torch_params(STVAE(cfg, seed=0).params, torch.float32, device)   # stvae_np's initial weights
    clip = torch.tensor(random_clip(cfg, n, t), device=device)                # benchmarks.bench's clip
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step_s, step_times = timed(make_train_step(cfg, params, clip), device, steps, warmup)
    result = {
        "preset": preset, "batch": n, "frames": t, "device": device, "dtype": "float32",
        "machine": torch_machine(device),
        "steps": steps, "warmup": warmup,
        "step_flops": flops["total"], "flops_per_stage": flops,
        "step_seconds": step_s, "step_seconds_all": step_times,
        "step_gflops": flops["total"] / step_s / 1e9,
        "memory": {"baseline_mib": baseline_mib, "before_model_mib": before_model_mib,
                   "peak_mib": peak_rss_mib(), "peak_reset_after_yardstick": hwm_reset},
    }
    if device == "cuda":
        result["memory"]["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    if matmul:
        mm_after = matmul_gflops(device)
        result["matmul_gflops"] = max(mm_before, mm_after)
        result["matmul_gflops_before_after"] = [mm_before, mm_after]
        result["ratio"] = result["step_gflops"] / result["matmul_gflops"]
    return result


def report(r):
    mem = r["memory"]
    lines = [
        f"torch reference: preset {r['preset']}, N={r['batch']}, T={r['frames']}, {r['dtype']}, "
        f"{r['device']} ({machine_line(r['machine'], r['device'])})",
        f"  FLOPs per training step  {r['step_flops'] / 1e9:10.1f} GFLOP (benchmarks.bench.step_flops)",
        f"  median step time         {r['step_seconds']:10.3f} s "
        f"({r['steps']} steps after {r['warmup']} warm-up: "
        + ", ".join(f"{s:.3f}" for s in r["step_seconds_all"]) + ")",
        f"  achieved                 {r['step_gflops']:10.1f} GFLOP/s",
    ]
    if "matmul_gflops" in r:
        before, after = r["matmul_gflops_before_after"]
        lines += [f"  same-run float32 matmul  {r['matmul_gflops']:10.1f} GFLOP/s "
                  f"(torch, 4096², before/after: {before:.0f}/{after:.0f})",
                  f"  ratio                    {r['ratio']:10.1%}"]
    lines.append(f"  peak memory              {mem['peak_mib']:10.0f} MiB resident (process VmHWM"
                 + ("" if mem["peak_reset_after_yardstick"] else ", the matmul yardstick's buffers included")
                 + f"; {mem['baseline_mib']:.0f} MiB after the imports, "
                 f"{mem['before_model_mib']:.0f} before the model)")
    if "cuda_peak_allocated_mib" in mem:
        lines.append(f"  peak CUDA allocated      {mem['cuda_peak_allocated_mib']:10.0f} MiB "
                     "(torch.cuda.max_memory_allocated)")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python benchmarks/torch_reference.py",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="paper", choices=("paper", "tiny"))
    ap.add_argument("--batch-size", type=int, default=None, help="N (default: 16; 2 with --check)")
    ap.add_argument("--seq-len", type=int, default=None, help="T (default: 10; 4 with --check)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--steps", type=int, default=3, help="timed steps (median)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--no-matmul", action="store_true", help="skip the 4096² matmul yardstick")
    ap.add_argument("--check", action="store_true",
                    help="compare loss, gradients and one update with stvae_np in float64, "
                         "both presets (or --preset if given explicitly); exit 1 on a mismatch")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)

    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("torch_reference: error: --device cuda asked for, but this PyTorch sees no CUDA device",
                  file=sys.stderr)
            return 2
        # full float32 products, as stvae_np on CuPy (CUPY_TF32 unset)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.check:
        explicit = any(a == "--preset" or a.startswith("--preset=") for a in (argv or sys.argv[1:]))
        presets = [args.preset] if explicit else ["paper", "tiny"]
        code, results = run_check(presets, args.batch_size or 2, args.seq_len or 4, args.device)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"check": results, "machine": torch_machine(args.device)}, fh, indent=2)
        return code

    r = run_bench(args.preset, args.batch_size or 16, args.seq_len or 10, args.device,
                  args.steps, args.warmup, matmul=not args.no_matmul)
    print(report(r))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(r, fh, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
