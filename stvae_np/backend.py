"""The one place that knows about NumPy versus CuPy.

Every op in the package starts with ``xp = get_array_module(x)`` and then calls
``xp.<name>``: the same code runs on NumPy arrays (CPU) and CuPy arrays (GPU).
CuPy is optional: when it is not installed, or installed without a working CUDA
device, everything here still works and simply answers "NumPy".
"""
from __future__ import annotations

import numpy as np

try:  # CuPy imports fine on a machine with no GPU; using it then fails.
    import cupy as _cp
    import cupyx as _cupyx
except Exception:  # ImportError, or a broken CUDA install raising anything else
    _cp = None
    _cupyx = None

DEVICES = ("cpu", "gpu")
FEW_KERNELS = None   # the fast ops' k·k loops as one-operation windows: None = on CuPy only; True/False forces


def get_array_module(*arrays):
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``."""
    if _cp is not None:
        return _cp.get_array_module(*arrays)
    return np


def few_kernels(xp):
    """True where a loop of k·k small copies should run as one operation on a strided view
    (CuPy: every operation is a kernel launch); ``FEW_KERNELS`` True/False forces it."""
    if FEW_KERNELS is None:
        return xp.__name__ != "numpy"
    return FEW_KERNELS


_GPU_WORKS = None        # the answer of gpu_available(), found once per process


def gpu_available() -> bool:
    """True only when CuPy imports, a CUDA device answers *and* it computes (a tiny
    kernel and a cuBLAS product give the right numbers). Never raises; cached."""
    global _GPU_WORKS
    if _GPU_WORKS is None:
        _GPU_WORKS = _gpu_computes()
    return _GPU_WORKS


def _gpu_computes() -> bool:
    if _cp is None:
        return False
    try:
        if _cp.cuda.runtime.getDeviceCount() < 1:
            return False
        a = _cp.arange(4, dtype=_cp.float32).reshape(2, 2)
        out = _cp.asnumpy(a @ a + 2 * a)                 # cuBLAS, then an element-wise kernel
        return bool(np.array_equal(out, np.array([[2.0, 5.0], [10.0, 17.0]], np.float32)))
    except Exception:
        return False


def gpu_free_bytes() -> int:
    """Bytes the current CUDA device could still hand out: free device memory plus what
    CuPy's memory pool holds unused."""
    free, _ = _cp.cuda.runtime.memGetInfo()
    return free + _cp.get_default_memory_pool().free_bytes()


def asnumpy(a):
    """Return ``a`` as a NumPy array (copying from the GPU if needed)."""
    if _cp is not None and isinstance(a, _cp.ndarray):
        return _cp.asnumpy(a)
    return np.asarray(a)


def to_device(a, device: str):
    """Move an array to ``"cpu"`` (NumPy) or ``"gpu"`` (CuPy); a no-op if already there."""
    if device == "cpu":
        return asnumpy(a)
    if device == "gpu":
        if not gpu_available():
            raise RuntimeError("device 'gpu' asked for, but no CUDA device is available "
                               "(install the GPU extra: pip install -r requirements-gpu.txt)")
        return _cp.asarray(a)
    raise ValueError(f"device must be one of {DEVICES}, got {device!r}")


def device_of(a) -> str:
    """``"gpu"`` for a CuPy array, ``"cpu"`` otherwise."""
    return "gpu" if get_array_module(a) is not np else "cpu"


def scatter_add(out, indices, values):
    """Unbuffered ``out[indices] += values`` on a 1-D array: repeated indices all add up.

    (Plain ``out[idx] += v`` keeps only one of the repeated writes.) ``out`` is modified
    in place and returned; ``indices`` in ``[0, out.size)``, ``values`` of their shape.
    """
    if out.ndim != 1:
        raise ValueError(f"scatter_add expects a 1-D target, got shape {out.shape}")
    xp = get_array_module(out)
    if xp is np:
        out += np.bincount(indices.ravel(), weights=values.ravel(),
                           minlength=out.size).astype(out.dtype, copy=False)
    else:
        _cupyx.scatter_add(out, indices.ravel(), values.ravel())
    return out
