"""stvae_np: the spatio-temporal video autoencoder with differentiable memory
(Patraucean, Handa & Cipolla, ICLR 2016 workshop, arXiv 1511.06309), written out by
hand in NumPy / CuPy. See README.md and ../shared/DESIGN.md for the conventions."""
import os as _os
import sys as _sys

__version__ = "0.1.0"

# OpenBLAS keeps its worker threads spinning for 2^28 CPU cycles (about 0.1 s) after
# every matrix product, waiting for the next one. Between two products the convolutions
# copy their im2col buffers on threads of their own (conv.over_batch_blocks), and a
# spinning worker takes a core from them: the copies run ~1.5× slower and the ConvLSTM
# step ~8 % slower. 2^4 cycles sends the workers to sleep at once; a large product wakes
# them in microseconds, so the matmul speed itself does not change. OpenBLAS reads this
# when it is loaded, so it only takes effect when stvae_np is imported before NumPy (as
# in ``python -m stvae_np.train`` and ``python -m stvae_np.bench``); a value already set
# in the environment is left alone.
if "numpy" not in _sys.modules:
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
