"""How much of the flow's shortfall do the overlapping digits cost?

    python docs/flow_study/overlaps.py RUN_DIR [RUN_DIR ...]

First the ceiling of any flow on the memory grid: the true flow averaged over the
object pixels of each 2×2 cell (and, for comparison, over all four pixels), brought
back to image pixels as the model's flow is. Then, for each run, its flow on 64
validation and 64 test clips of one digit (nothing to overlap) and of two (the clips of
every evaluation: same seeds, same test digits, same speed), and on the two-digit clips
its flow on the digits' edge pixels (an object pixel of frame t+1 with a background
pixel among its four neighbours) and interior pixels separately: a flow that let the
background's zero motion into the digits' cells would be shorter on the edges. The metric is
``metrics.flow_quality`` at steps t ≥ 2, as everywhere. Section 9 of docs/flow_study.md
quotes the output.
"""
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
from stvae_np import checkpoint  # noqa: E402
from stvae_np import data as D  # noqa: E402
from stvae_np.evaluate import predict_clips  # noqa: E402
from stvae_np.metrics import flow_quality, upsample_flow  # noqa: E402

SETS = (("validation", D.VAL_SEED), ("test", D.TEST_SEED))


def line(m):
    """One line of ``flow_quality``'s figures: EPE t≥2 / zero flow, gain, angle."""
    return (f"EPE t≥2 / zero flow {m['epe_t2'] / m['zero_flow_epe_t2']:.3f}, gain "
            f"{m['flow_gain_t2']:.3f}, angle {m['angular_error_t2']:.1f}°")


def cell_means(flow, mask):
    """Per 2×2 cell: the mean of the image flow (N, S, 2, H, W) over the cell's object
    pixels (0 where it has none) and over all four pixels, in memory-grid pixels."""
    n, s, _, h, w = flow.shape
    m = mask[:, :, None].astype(np.float64)
    total = (flow * m).reshape(n, s, 2, h // 2, 2, w // 2, 2).sum((4, 6))
    count = m.reshape(n, s, 1, h // 2, 2, w // 2, 2).sum((4, 6))
    plain = flow.reshape(n, s, 2, h // 2, 2, w // 2, 2).mean((4, 6))
    return total / np.maximum(count, 1) / 2, plain / 2


def edges(mask):
    """Object pixels (…, H, W) with at least one background pixel among their four
    neighbours (the canvas border counts as background)."""
    padded = np.pad(mask, [(0, 0)] * (mask.ndim - 2) + [(1, 1), (1, 1)])
    inside = (padded[..., :-2, 1:-1] & padded[..., 2:, 1:-1]
              & padded[..., 1:-1, :-2] & padded[..., 1:-1, 2:])
    return mask & ~inside


def main(runs):
    for name, seed in SETS:
        clips = D.moving_mnist_for("tiny", 64, seq_len=10, split="test", seed=seed)
        mask = clips.masks[:, 1:, 0]
        for label, cells in zip(("object pixels", "all four pixels"), cell_means(clips.flow, mask)):
            q = flow_quality(upsample_flow(cells.astype(np.float32), 2), clips.flow, mask)
            print(f"{name:10s} true flow, mean over each cell's {label}: {line(q)}")
    for run in runs:
        model = checkpoint.load(str(pathlib.Path(run) / "checkpoint.npz"))
        for digits in (1, 2):
            for name, seed in SETS:
                clips = D.moving_mnist_for("tiny", 64, seq_len=10, num_digits=digits, split="test",
                                           seed=seed)       # two digits: load_eval_clips's clips
                _, flows = predict_clips(model, clips.frames)
                flow = upsample_flow(flows, 2)                  # image pixels, as everywhere
                mask = clips.masks[:, 1:, 0]                    # object pixels of frame t+1
                print(f"{run} {name:10s} {digits} digit{'s' if digits > 1 else ''}: "
                      f"{line(flow_quality(flow, clips.flow, mask))}", flush=True)
                if digits == 2:
                    edge = edges(mask)
                    for label, sel in (("edge", edge), ("interior", mask & ~edge)):
                        share = sel[:, 2:].mean() / mask[:, 2:].mean()
                        print(f"{run} {name:10s} 2 digits, {label} pixels ({share:.0%} of the object "
                              f"pixels): {line(flow_quality(flow, clips.flow, sel))}", flush=True)

if __name__ == "__main__":
    main(sys.argv[1:])
