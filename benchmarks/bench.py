"""Benchmark one training step against the machine's own matmul speed.

    python -m benchmarks.bench                         # paper preset, N=16, T=10, CPU
    python -m benchmarks.bench --device gpu
    python -m benchmarks.bench --preset tiny --steps 5
    python -m benchmarks.bench --ops-only              # array operations per step, both presets

The model is matmul-bound: almost all of its work is convolutions, and every
convolution here is one matrix product (see conv.py). The honest yardstick is the
float32 matmul throughput of the same machine, measured in the same run.

FLOP count (from the config, not measured): a convolution with C_in → C_out channels,
a k×k kernel over N·H·W output pixels costs 2·N·H·W·C_in·C_out·k² FLOPs forward, and
twice that backward (one product for dW, one for dx), so a training step costs
3 × the forward convolution FLOPs. Element-wise work (gates, pooling, the sampler, the
loss, RMSProp) is not counted: it is under 1 % of the FLOPs of either preset, though not
of the time.

Timing: the median over ``--steps`` full training steps (forward, backward, gradient
clipping, RMSProp) after ``--warmup`` steps. On the GPU every time is taken with CUDA
events around the work, never a bare CPU timer. Peak memory: on the CPU the peak
resident set of a fresh process that builds the model and runs two steps; on the GPU
the bytes held by CuPy's memory pool after the steps.

Array operations per step: the number of array operations (ufunc calls, reductions,
matrix products, copies, slice assignments, creations) one training step issues, counted
on NumPy with one thread by ``opcount.py``. On the GPU each is at least one kernel
launch, and a small step is bound by the launches. It is counted along the code path
CuPy takes (``count_step_ops(path="gpu")``): the convolutions' one-operation windows
(``backend.FEW_KERNELS``) and batch chunks as large as a card with 16 GiB free allows (every
layer of both presets in one chunk at N = 16). The CPU's path (the k·k copy loops,
MAX_BUFFER's chunks: the paper ConvLSTM in 2 chunks, its 15×15 flow convolutions in 3)
is counted beside it. Both depend on the batch only through the chunks, so they are
counted at the benched N and T.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np

from stvae_np import backend
from stvae_np.backend import gpu_available, to_device
from stvae_np.fast import layers as fast_layers
from stvae_np.model import STVAE, Config


# ----------------------------------------------------------------------------- FLOPs
def conv_flops(m, h, w, c_in, c_out, k):
    """Forward FLOPs of one "same" convolution over m maps of h×w: 2·m·h·w·C_in·C_out·k²."""
    return 2 * m * h * w * c_in * c_out * k * k


def step_flops(cfg: Config, n: int, t: int) -> dict:
    """FLOPs of one training step on a batch (n clips of t frames), per stage and in total."""
    s = t - 1                                   # prediction steps
    m = n * s                                   # frames through encoder, flow head, decoder
    hh, ww = cfg.height, cfg.width
    h, w = hh // 2, ww // 2
    fe, fm, ff = cfg.enc_filters, cfg.mem_filters, cfg.flow_filters
    fwd = {
        "encoder": conv_flops(m, hh, ww, cfg.channels, fe, cfg.enc_kernel),
        "convlstm": s * conv_flops(n, h, w, fe + fm, 4 * fm, cfg.mem_kernel),
        "flow": (conv_flops(m, h, w, fm, ff, cfg.flow_kernel) + conv_flops(m, h, w, ff, ff, cfg.flow_kernel)
                 + conv_flops(m, h, w, ff, 2, 1)),
        "decoder": conv_flops(m, hh, ww, fe, cfg.channels, cfg.enc_kernel),
    }
    out = {k: 3 * v for k, v in fwd.items()}    # forward + dW + dx
    out["total"] = sum(out.values())
    return out


# ----------------------------------------------------------------------------- timing
class Timer:
    """Median wall time of a callable: CUDA events on the GPU, perf_counter on the CPU."""

    def __init__(self, device):
        self.device = device
        if device == "gpu":
            import cupy
            self.cupy = cupy

    def __call__(self, fn, repeats=3, warmup=1):
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            if self.device == "gpu":
                start, end = self.cupy.cuda.Event(), self.cupy.cuda.Event()
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(self.cupy.cuda.get_elapsed_time(start, end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        return float(np.median(times))


def matmul_gflops(device, n=4096, repeats=5):
    """Float32 matmul throughput (GFLOP/s) of an n×n by n×n product on this device."""
    rng = np.random.default_rng(0)
    a = to_device(rng.standard_normal((n, n), dtype=np.float32), device)
    b = to_device(rng.standard_normal((n, n), dtype=np.float32), device)
    seconds = Timer(device)(lambda: a @ b, repeats=repeats, warmup=2)
    return 2 * n ** 3 / seconds / 1e9


def random_clip(cfg, n, t, seed=0):
    """A batch of moving textured squares (any size), host float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    clip = rng.uniform(0, 0.2, (n, t, cfg.channels, cfg.height, cfg.width)).astype(np.float32)
    size = max(4, cfg.height // 4)
    for i in range(n):
        y, x = rng.integers(0, cfg.height - size - t, 2)
        for j in range(t):
            clip[i, j, :, y + j:y + j + size, x + j:x + j + size] = 0.9
    return clip


def stage_times(model, clip, timer):
    """Forward and backward time of each stage, run one by one on the step's real tensors."""
    from stvae_np.losses import huber_smoothness_backward, huber_smoothness_forward, mse_backward, mse_forward
    from stvae_np.optim import RMSProp
    from stvae_np.sampler import bilinear_backward, bilinear_forward, flow_to_grid
    conv2d_backward, maxpool2_backward = model.layers.conv2d_backward, model.layers.maxpool2_backward
    upsample2_backward = model.layers.upsample2_backward
    convlstm_backward, convlstm_forward = model.memory.convlstm_backward, model.memory.convlstm_forward

    p, cfg = model.params, model.config
    xp = model.xp
    clip = to_device(clip, model.device)
    n, t, c, hh, ww = clip.shape
    s = t - 1
    frames = clip[:, :-1].reshape(n * s, c, hh, ww)
    lstm = {"Wx": p["lstm.Wx"], "Wh": p["lstm.Wh"], "b": p["lstm.b"]}
    e, enc_c = model.encode(frames)
    fe, h, w = e.shape[1:]
    hs, lstm_c = convlstm_forward(e.reshape(n, s, fe, h, w), lstm)
    flow, flow_c = model.flow_head(hs.reshape(n * s, -1, h, w))
    grid = flow_to_grid(flow)
    warped, samp_c = bilinear_forward(e, grid)
    pred, dec_c = model.warp_decode(e, flow)
    target = clip[:, 1:].reshape(pred.shape)
    ones = xp.ones((), dtype=pred.dtype)

    def enc_bwd():
        d = maxpool2_backward(xp.ones_like(e), enc_c.pool)
        conv2d_backward(d * (1 - enc_c.tanh_out * enc_c.tanh_out), enc_c.conv, need_dx=False)

    def flow_bwd():
        d, _, _ = conv2d_backward(xp.ones_like(flow), flow_c.flow3)
        d, _, _ = conv2d_backward(d, flow_c.flow2)
        conv2d_backward(d, flow_c.flow1)

    def dec_bwd():
        d, _, _ = conv2d_backward(xp.ones_like(pred), dec_c.decoder)
        upsample2_backward(d, dec_c.upsample)

    def loss_both():
        _, mc = mse_forward(pred, target)
        _, hc = huber_smoothness_forward(flow, cfg.huber_delta)
        mse_backward(ones, mc)
        huber_smoothness_backward(ones, hc)

    opt = RMSProp({k: v.copy() for k, v in p.items()}, lr=0.0)
    grads = {k: xp.zeros_like(v) for k, v in p.items()}
    return {
        "encoder fwd": timer(lambda: model.encode(frames)),
        "encoder bwd": timer(enc_bwd),
        "convlstm fwd": timer(lambda: convlstm_forward(e.reshape(n, s, fe, h, w), lstm)),
        "convlstm bwd": timer(lambda: convlstm_backward(xp.ones_like(hs), lstm_c)),
        "flow fwd": timer(lambda: model.flow_head(hs.reshape(n * s, -1, h, w))),
        "flow bwd": timer(flow_bwd),
        "sampler fwd": timer(lambda: bilinear_forward(e, grid)),
        "sampler bwd": timer(lambda: bilinear_backward(xp.ones_like(warped), samp_c)),
        "decoder fwd": timer(lambda: model.warp_decode(e, flow)),   # includes the sampler
        "decoder bwd": timer(dec_bwd),
        "loss fwd+bwd": timer(loss_both),
        "optimizer": timer(lambda: opt.step(grads)),
    }


def _train_step_fn(model, clip, max_norm=1.0):
    from stvae_np.optim import RMSProp, clip_grad_norm
    opt = RMSProp(model.params, lr=1e-6)     # tiny lr: the model stays put while timed
    clip = to_device(clip, model.device)

    def step():
        _, grads = model.loss_and_grads(clip)
        clip_grad_norm(grads, max_norm)
        opt.step(grads)
    return step


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the checkout's root
COUNT_PATHS = ("gpu", "cpu")
GPU_COUNT_BUFFER = 2 ** 30   # elements: a chunk's buffer on a card with ≥ 16 GiB free (fast.layers.buffer_limit)


@contextmanager
def conv_path(path):
    """The convolution code path a count follows. "gpu": what CuPy runs, the few-kernel
    windows (``backend.FEW_KERNELS``) and chunks as large as a card with 16 GiB free allows
    (``fast.layers.buffer_limit``: every layer of both presets in one chunk at N=16); "cpu":
    what NumPy runs, the k·k loops and MAX_BUFFER's chunks. Put back on exit."""
    if path not in COUNT_PATHS:
        raise ValueError(f"path must be one of {COUNT_PATHS}, got {path!r}")
    saved = backend.FEW_KERNELS, fast_layers.MAX_BUFFER
    if path == "gpu":
        backend.FEW_KERNELS, fast_layers.MAX_BUFFER = True, GPU_COUNT_BUFFER
    else:
        backend.FEW_KERNELS = False
    try:
        yield
    finally:
        backend.FEW_KERNELS, fast_layers.MAX_BUFFER = saved


def preset_config(preset, overrides=()):
    """``Config.preset(preset)`` with ``FIELD=VALUE`` overrides (as ``train --set``)."""
    from stvae_np.train import apply_overrides
    return apply_overrides(Config.preset(preset), overrides)


def count_step_ops(preset="paper", n=16, t=10, dtype="float32", path="gpu", overrides=()):
    """The array operations of one training step (forward, backward, gradient clipping,
    RMSProp: ``_train_step_fn``), counted on NumPy with one thread (``opcount.py``),
    along the GPU's code path or the CPU's (:func:`conv_path`). The model and optimizer
    are built inside the count, not counted. Returns an ``opcount.OpCount``; its time
    is one plain CPU step's."""
    from .opcount import count_array_ops
    cfg = preset_config(preset, overrides)
    clip = random_clip(cfg, n, t)
    with conv_path(path):
        return count_array_ops(lambda step: step(),
                               setup=lambda: _train_step_fn(STVAE(cfg, dtype=dtype), clip))


def _ops_fields(ops, top=10, cpu_path_total=None):
    """The JSON fields of an OpCount (the GPU path's), with the CPU path's total beside it."""
    out = {"array_ops_per_step": ops.total, "array_ops_path": "gpu",
           "array_ops_by_category": dict(ops.by_category),
           "array_ops_top_lines": [ln.to_dict() for ln in ops.top(top)],
           "array_ops_not_counted": dict(ops.not_counted)}
    if cpu_path_total is not None:
        out["array_ops_per_step_cpu_path"] = cpu_path_total
    return out


def ops_only(n=16, t=10, presets=("tiny", "paper"), top=10):
    """Count both presets' step without timing anything, along the GPU's code path (the
    launches) and the CPU's: (report text, JSON dict)."""
    out = {"batch": n, "frames": t, "counted": "NumPy, one thread (benchmarks/opcount.py)", "presets": {}}
    lines = []
    for preset in presets:
        ops = count_step_ops(preset, n, t, path="gpu")
        cpu_total = count_step_ops(preset, n, t, path="cpu").total
        out["presets"][preset] = _ops_fields(ops, top, cpu_total)
        lines.append(f"stvae_np bench --ops-only: preset {preset}, N={n}, T={t}, float32, one training step "
                     "(counted on NumPy, one thread, along the GPU's code path)")
        lines.append(ops.report(top=top, label="array ops per step"))
        lines.append(f"  along the CPU's code path (the k·k copy loops, MAX_BUFFER chunks): {cpu_total}")
    return "\n".join(lines), out


def peak_rss_mib():
    """Peak resident set of this process in MiB: VmHWM from /proc (Linux), else ru_maxrss.

    ru_maxrss survives execve on Linux, so a child started by a big parent would report
    the parent's peak; VmHWM belongs to the process's own address space.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_probe(preset, n, t, overrides=()):
    """Run in a fresh process: build the model, run two steps, print peak RSS in MiB."""
    base = peak_rss_mib()
    cfg = preset_config(preset, overrides)
    model = STVAE(cfg)
    step = _train_step_fn(model, random_clip(cfg, n, t))
    step()
    step()
    peak = peak_rss_mib()
    print(json.dumps({"baseline_mib": base, "peak_mib": peak}))


def run(preset="paper", n=16, t=10, device="cpu", steps=3, warmup=1, stages=True, memory=True, ops=True,
        overrides=()):
    cfg = preset_config(preset, overrides)
    timer = Timer(device)
    flops = step_flops(cfg, n, t)
    mm = matmul_gflops(device)
    model = STVAE(cfg, device=device)
    clip = random_clip(cfg, n, t)
    step_s = timer(_train_step_fn(model, clip), repeats=steps, warmup=warmup)
    mm_after = matmul_gflops(device)           # the yardstick before and after, reported both
    result = {
        "preset": preset, "batch": n, "frames": t, "device": device, "dtype": "float32",
        "machine": _machine(device),
        "step_flops": flops["total"], "flops_per_stage": flops,
        "step_seconds": step_s,
        "step_gflops": flops["total"] / step_s / 1e9,
        "matmul_gflops": max(mm, mm_after), "matmul_gflops_before_after": [mm, mm_after],
    }
    result["ratio"] = result["step_gflops"] / result["matmul_gflops"]
    result.update(fused_kernels())
    if ops:        # counted on NumPy whatever the device, along the GPU's code path
        result.update(_ops_fields(count_step_ops(preset, n, t, path="gpu", overrides=overrides),
                                  cpu_path_total=count_step_ops(preset, n, t, path="cpu",
                                                                overrides=overrides).total))
    if stages:
        result["stage_seconds"] = stage_times(model, clip, Timer(device).__call__)
    if memory:
        if device == "cpu":
            out = subprocess.run([sys.executable, "-m", "benchmarks.bench", "--memory-probe",
                                  "--preset", preset, "--batch-size", str(n), "--seq-len", str(t)]
                                 + [f"--set={item}" for item in overrides],
                                 capture_output=True, text=True, check=True, cwd=REPO)
            result["memory"] = json.loads(out.stdout.strip().splitlines()[-1])
        else:
            import cupy
            pool = cupy.get_default_memory_pool()
            # the pool keeps every block it was given: what it holds after the steps is the
            # peak of the step's memory (plus the yardstick's 4096² operands)
            result["memory"] = {"pool_mib": pool.total_bytes() / 2 ** 20,
                                "pool_used_mib": pool.used_bytes() / 2 ** 20}
    if device == "gpu":
        result.update(_gpu_extras(_train_step_fn(model, clip), steps, warmup))
    return result


def fused_kernels():
    """Which fused CuPy kernels this process built and uses, and which fell back to the plain
    code (``fast.kernels``: a fallback also warns). On NumPy both lists are empty: the plain
    code runs everywhere."""
    from stvae_np.fast import kernels
    built = sorted((k for k, v in kernels._KERNELS.items() if v is not None), key=str)
    failed = sorted((k for k, v in kernels._KERNELS.items() if v is None), key=str)
    name = lambda key: key[0] + ("" if key[1] is None else f"[{key[1]}]") + f" ({key[2]})"   # noqa: E731
    return {"fused_kernels_used": [name(k) for k in built],
            "fused_kernels_fell_back": [name(k) for k in failed]}


def _gpu_extras(step, steps, warmup):
    """TF32 on or off, and host against device time of the step (cupyx.profiler.benchmark):
    a host time close to the device time means the step waits on its kernel launches."""
    import cupyx.profiler
    bench = cupyx.profiler.benchmark(step, n_repeat=steps, n_warmup=warmup)
    return {"tf32": os.environ.get("CUPY_TF32", "0") == "1",
            "host_seconds": float(np.median(bench.cpu_times)),
            "device_seconds": float(np.median(bench.gpu_times[0]))}


def _machine(device):
    if device == "gpu":
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(0)
        return props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    try:
        import threadpoolctl
        blas = [f"{i['internal_api']} {i['version']} ({i.get('architecture')}, {i['num_threads']} threads)"
                for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    except Exception:
        blas = []
    timeout = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
    return f"{platform.processor() or platform.machine()}, numpy {np.__version__}" + (
        f", {blas[0]}" if blas else "") + (
        f", OPENBLAS_THREAD_TIMEOUT={timeout}" if timeout else "")


def report(r) -> str:
    lines = [
        f"stvae_np bench: preset {r['preset']}"
        + "".join(f" --set {item}" for item in r.get("overrides", ()))
        + f", N={r['batch']}, T={r['frames']}, {r['dtype']}, {r['device']} ({r['machine']})",
        f"  FLOPs per training step  {r['step_flops'] / 1e9:10.1f} GFLOP "
        f"(3 × forward convolutions; convlstm {r['flops_per_stage']['convlstm'] / r['step_flops']:.0%})",
        f"  median step time         {r['step_seconds']:10.3f} s",
        f"  achieved                 {r['step_gflops']:10.1f} GFLOP/s",
        f"  same-run float32 matmul  {r['matmul_gflops']:10.1f} GFLOP/s "
        f"(4096², before/after: {r['matmul_gflops_before_after'][0]:.0f}/{r['matmul_gflops_before_after'][1]:.0f})",
        f"  ratio                    {r['ratio']:10.1%}",
    ]
    if r.get("device") == "gpu":
        lines.append(f"  fused kernels used       {len(r.get('fused_kernels_used', []))}: "
                     + ", ".join(r.get("fused_kernels_used", [])))
        if r.get("fused_kernels_fell_back"):
            lines.append("  FELL BACK to plain code  " + ", ".join(r["fused_kernels_fell_back"]))
    if "array_ops_per_step" in r:
        cats = ", ".join(f"{k} {v}" for k, v in r["array_ops_by_category"].items())
        lines.append(f"  array ops per step       {r['array_ops_per_step']:10d} ({cats}; "
                     "counted on NumPy, one thread, along the GPU's code path: each a kernel launch there)")
        if "array_ops_per_step_cpu_path" in r:
            lines.append(f"  ... along the CPU's path {r['array_ops_per_step_cpu_path']:10d} (the k·k copy loops)")
    if "host_seconds" in r:
        lines.append(f"  host / device time       {r['host_seconds']:9.4f} s / {r['device_seconds']:.4f} s "
                     f"(cupyx.profiler.benchmark; TF32 {'on' if r['tf32'] else 'off'})")
    if "memory" in r:
        mem = r["memory"]
        lines.append("  peak memory              " + (
            f"{mem['peak_mib']:10.0f} MiB resident (process; {mem['baseline_mib']:.0f} MiB before the model)"
            if "peak_mib" in mem else f"{mem['pool_mib']:10.0f} MiB in CuPy's memory pool"))
    if "stage_seconds" in r:
        lines.append("  stages (each timed alone, median):")
        for k, v in r["stage_seconds"].items():
            lines.append(f"    {k:16s} {v * 1e3:9.1f} ms")
        lines.append(f"    {'sum':16s} {sum(v for k, v in r['stage_seconds'].items() if k != 'decoder fwd') * 1e3:9.1f} ms"
                     "  (decoder fwd includes the sampler and is left out of the sum)")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=10)
    ap.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    ap.add_argument("--steps", type=int, default=3, help="timed steps (median)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--no-stages", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-ops", action="store_true", help="skip counting the step's array operations")
    ap.add_argument("--ops-only", action="store_true",
                    help="only count the array operations of one step, for both presets (no timing)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override one Config field of the preset (repeatable), as train --set")
    ap.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_probe:
        memory_probe(args.preset, args.batch_size, args.seq_len, args.set)
        return 0
    if args.ops_only:
        text, r = ops_only(args.batch_size, args.seq_len)
        print(text)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(r, fh, indent=2, default=float)
        return 0
    if args.device == "gpu" and not gpu_available():
        print("benchmarks.bench: error: --device gpu asked for, but no CUDA device is available", file=sys.stderr)
        return 2
    r = run(args.preset, args.batch_size, args.seq_len, args.device, args.steps, args.warmup,
            stages=not args.no_stages, memory=not args.no_memory, ops=not args.no_ops,
            overrides=args.set)
    if args.set:
        r["overrides"] = list(args.set)
    print(report(r))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(r, fh, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
