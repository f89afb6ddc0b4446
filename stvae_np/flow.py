"""Run a trained model over a whole video and show the motion it learned.

    python -m stvae_np.flow VIDEO --checkpoint runs/<run>/checkpoint.npz [--out DIR]
    python -m stvae_np.flow sample:bikes --checkpoint ...          # a bundled sample

The model is convolutional, so it reads the full downscaled frames (``video.read_video``, the working
size of training), not crops. Written into ``--out`` (default ``<run>/flow-<video>``): ``flow.gif``,
frame t | the prediction of frame t+1 | the flow's colour (the Middlebury wheel of ``viz.flow_to_color``,
one scale for the whole video); ``still.png``, one frame of it; ``flows.npy``, (T-1, 2, H, W) float32
in image pixels (backward: x_t(p + flow(p)) ≈ x_{t+1}(p)).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import numpy as np
from tqdm import tqdm

from .backend import asnumpy, to_device
from .checkpoint import load as load_checkpoint
from .cli import CLIError, Parser, one_line, resolve_device
from .metrics import upsample_flow
from .model import STVAE
from .runfolder import FolderBusy, RunLock
from .video import read_video, shot_cuts, video_paths
from .viz import flow_to_color


def video_flows(model, frames, progress=True):
    """Predictions (T-1, C, H, W) and image-pixel flows (T-1, 2, H, W) of frames (T, C, H, W),
    one recurrent step per frame, the model rebuilt for the frames' size; the memory starts
    afresh after each cut between shots (``video.shot_cuts``)."""
    cfg = dataclasses.replace(model.config, height=frames.shape[2], width=frames.shape[3])
    full = STVAE(cfg, dtype=model.dtype, device=model.device)
    full.params = model.params
    state, preds, flows, cuts = None, [], [], set(shot_cuts(frames).tolist())
    for t, x in enumerate(tqdm(frames[:-1], unit="frame", desc="flow", disable=not progress)):
        state = None if t - 1 in cuts else state
        pred, flow, state = full.predict_step(to_device(x[None], model.device).astype(model.dtype), state)
        preds.append(pred[0])
        flows.append(flow[0])
    preds, flows = asnumpy(full.xp.stack(preds)), asnumpy(full.xp.stack(flows))   # one copy to the host
    factor = frames.shape[-1] // flows.shape[-1]
    return np.clip(preds, 0, 1), upsample_flow(flows, factor).astype(np.float32)


def side_by_side(frames, preds, flows):
    """(T-1, H, 3W, 3) uint8: frame t, prediction of t+1, flow colour (one scale for all)."""
    grey = lambda a: np.repeat((np.clip(a.mean(axis=1), 0, 1) * 255).astype(np.uint8)[..., None], 3, -1)
    top = max(float(np.percentile(np.hypot(flows[:, 0], flows[:, 1]), 99)), 0.5)
    colour = np.stack([flow_to_color(f, max_mag=top) for f in flows])
    return np.concatenate([grey(frames[:-1]), grey(preds), colour], axis=2)


def write_outputs(out, tiles, flows, fps=10, zoom=2):
    """flow.gif, still.png (the middle frame) and flows.npy into ``out``."""
    from PIL import Image
    big = [Image.fromarray(t).resize((t.shape[1] * zoom, t.shape[0] * zoom), Image.NEAREST) for t in tiles]
    big[0].save(os.path.join(out, "flow.gif"), save_all=True, append_images=big[1:],
                duration=int(1000 / fps), loop=0)
    big[len(big) // 2].save(os.path.join(out, "still.png"))
    np.save(os.path.join(out, "flows.npy"), flows)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m stvae_np.flow",
               description="Run a trained stvae_np model over a video and write its flow.")
    p.add_argument("video", help="a video file (any format FFmpeg reads) or sample:NAME")
    p.add_argument("--checkpoint", required=True, help="a checkpoint.npz written by stvae_np.train")
    p.add_argument("--out", default=None, help="output folder (default <run>/flow-<video name>)")
    p.add_argument("--max-frames", type=int, default=None, help="only the first N frames")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    """0 done; 2 a bad setting, checkpoint or video (one line, nothing written)."""
    try:
        args = build_parser().parse_args(argv)
        if args.max_frames is not None and args.max_frames < 2:
            raise CLIError(f"--max-frames must be at least 2, got {args.max_frames}")
        with one_line(args.checkpoint):
            model = load_checkpoint(args.checkpoint, device=resolve_device(args.device))
        with one_line(args.video):
            (name, path), = video_paths(args.video).items()
            frames = read_video(path, model.config.channels, progress=not args.quiet)[:args.max_frames]
        if len(frames) < 2:
            raise CLIError(f"{path}: {len(frames)} frame; the flow needs at least 2")
        out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)),
                                       "flow-" + os.path.splitext(name)[0])
        try:
            os.makedirs(out, exist_ok=True)
            lock = RunLock(out).acquire()          # one process per output folder
        except FolderBusy as err:
            raise CLIError(str(err)) from None
        except OSError as err:
            raise CLIError(f"--out {out}: cannot write there ({err.strerror or err})") from None
    except CLIError as err:
        print(f"stvae_np.flow: error: {err}", file=sys.stderr)
        return 2
    try:
        preds, flows = video_flows(model, frames, progress=not args.quiet)
        write_outputs(out, side_by_side(frames, preds, flows), flows)
    finally:
        lock.release()
    if not args.quiet:
        print(f"{len(flows)} flows of {frames.shape[2]}×{frames.shape[3]} frames; mean |flow| "
              f"{np.hypot(flows[:, 0], flows[:, 1]).mean():.2f} px; written: {out}/flow.gif, still.png, flows.npy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
