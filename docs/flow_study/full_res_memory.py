"""Flow study 11.6: the video preset with its memory grid at the image's resolution. The
encoder does not pool and the decoder does not up-sample (identity in place of
``maxpool2`` and ``upsample2`` in the fast ops), so the ConvLSTM, the flow head and the
flow itself work on 32×32 positions instead of 16×16 (four times as many), and the flow is
in image pixels (every scale factor in the package is read from the shapes: s = 1).

    python docs/flow_study/full_res_memory.py --preset video --out RUN [train flags ...]

It costs about four times the step (--batch-size 4 --set mem_kernel=3 --set flow_kernel=5
bring it to 1.4 times); the checkpoint it writes is only meaningful with this patch.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
from stvae_np import train  # noqa: E402
from stvae_np.fast import layers  # noqa: E402


def identity_forward(x):
    return x, None


def identity_backward(d, cache):
    return d


layers.maxpool2_forward = layers.upsample2_forward = identity_forward
layers.maxpool2_backward = layers.upsample2_backward = identity_backward
if __name__ == "__main__":
    sys.exit(train.main(sys.argv[1:]))
