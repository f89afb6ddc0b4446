"""The array backend and the gradient-check helpers."""
import numpy as np
import pytest

from stvae_np import backend
from stvae_np.activations import sigmoid, sigmoid_grad, tanh, tanh_grad
from stvae_np.gradcheck import numerical_gradient, rel_error


def test_numpy_arrays_get_numpy():
    assert backend.get_array_module(np.zeros(2)) is np
    assert backend.get_array_module(np.zeros(2), np.ones(3)) is np
    assert backend.get_array_module(np.float32(1.5)) is np      # a NumPy scalar
    assert backend.device_of(np.zeros(2)) == "cpu"


def test_gpu_available_is_a_bool_and_never_raises():
    assert isinstance(backend.gpu_available(), bool)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8, np.bool_])
def test_cpu_round_trip_keeps_values_dtype_and_the_array_itself(dtype):
    a = (np.arange(24).reshape(2, 3, 4) % 5).astype(dtype)
    on_cpu = backend.to_device(a, "cpu")
    assert on_cpu is a                                  # already there: no copy
    back = backend.asnumpy(on_cpu)
    assert isinstance(back, np.ndarray) and back.dtype == dtype and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, a)
    listed = backend.asnumpy([[1, 2], [3, 4]])          # not an array yet: becomes one
    assert isinstance(listed, np.ndarray) and listed.tolist() == [[1, 2], [3, 4]]


@pytest.mark.skipif(not backend.gpu_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_gpu_round_trip_keeps_values_and_dtype(dtype):
    a = (np.random.default_rng(0).standard_normal((3, 5)) * 7).astype(dtype)
    g = backend.to_device(a, "gpu")
    assert backend.device_of(g) == "gpu" and backend.get_array_module(g) is not np
    back = backend.to_device(g, "cpu")
    assert isinstance(back, np.ndarray) and back.dtype == dtype
    np.testing.assert_array_equal(back, a)


def test_unknown_devices_are_refused_with_a_clear_message():
    a = np.arange(3.0)
    with pytest.raises(ValueError, match=r"device must be one of \('cpu', 'gpu'\), got 'tpu'"):
        backend.to_device(a, "tpu")
    with pytest.raises(ValueError, match="got 'GPU'"):            # names are exact
        backend.to_device(a, "GPU")
    if not backend.gpu_available():
        with pytest.raises(RuntimeError, match="no CUDA device is available"):
            backend.to_device(a, "gpu")


def test_scatter_add_sums_repeated_indices_onto_what_is_there():
    out = np.array([0.5, -1.0, 0.25, 2.0, 7.0], np.float32)
    before = out.copy()
    idx = np.array([[0, 2, 2], [3, 2, 0]])              # 2-D: read flat, 2 three times
    vals = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 8.0]], np.float32)
    ret = backend.scatter_add(out, idx, vals)
    assert ret is out and out.dtype == np.float32       # in place, dtype kept
    # index 0: 0.5 + 1 + 8; 1: untouched; 2: 0.25 + 2 + 3 + 5; 3: 2 + 4; 4: untouched
    np.testing.assert_array_equal(out, [9.5, -1.0, 10.25, 6.0, 7.0])
    np.testing.assert_array_equal(out - before, np.bincount(idx.ravel(), vals.ravel(), 5))
    plain = before.copy()
    plain[idx.ravel()] += vals.ravel()                  # what a buffered += would give
    assert not np.array_equal(plain, out)
    with pytest.raises(ValueError, match="1-D target, got shape"):
        backend.scatter_add(np.zeros((2, 2)), idx, vals)


def test_activations_and_their_derivatives():
    a = np.linspace(-800, 800, 9)  # far enough to overflow a naive exp
    s = sigmoid(a)
    assert np.all(np.isfinite(s)) and s[0] == 0.0 and s[-1] == 1.0
    x = np.random.default_rng(0).standard_normal(7)
    np.testing.assert_allclose(sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-14)
    assert rel_error(sigmoid_grad(sigmoid(x)), numerical_gradient(sigmoid, x.copy())) < 1e-8
    assert rel_error(tanh_grad(tanh(x)), numerical_gradient(tanh, x.copy())) < 1e-8


def test_numerical_gradient_of_a_known_function_and_restores_x():
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    x0 = x.copy()
    df = np.array([[1.0, 2.0], [3.0, 4.0]])
    g = numerical_gradient(lambda v: v ** 3, x, df)
    np.testing.assert_allclose(g, 3 * x0 ** 2 * df, rtol=1e-9)
    np.testing.assert_array_equal(x, x0)
    # a scalar function and no df
    g = numerical_gradient(lambda v: float(np.sum(np.sin(v))), x)
    np.testing.assert_allclose(g, np.cos(x0), rtol=1e-9)


def test_rel_error():
    assert rel_error(np.ones(3), np.ones(3)) == 0.0
    assert rel_error([1.0, 2.0], [1.0, 2.2]) == pytest.approx(0.2 / 4.2)
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.ones(2), np.ones(3))


class _FakeCuPy:
    """Stands in for a CuPy whose device count answers; ``fail`` makes kernels raise the
    way a CuPy installed without its CUDA libraries does."""
    float32 = np.float32

    def __init__(self, devices=1, fail=False, wrong=False):
        self.fail, self.wrong = fail, wrong
        self.cuda = type("cuda", (), {"runtime": type("rt", (), {
            "getDeviceCount": staticmethod(lambda: devices)})})

    def arange(self, n, dtype):
        if self.fail:
            raise RuntimeError("CUDA_ERROR_FILE_NOT_FOUND: libnvrtc.so.12 not found")
        return np.arange(n, dtype=dtype) + (1 if self.wrong else 0)

    def asnumpy(self, a):
        return np.asarray(a)


@pytest.mark.parametrize("fake, expected", [
    (_FakeCuPy(devices=1), True),
    (_FakeCuPy(devices=0), False),
    (_FakeCuPy(devices=1, fail=True), False),        # a device, but no CUDA libraries
    (_FakeCuPy(devices=1, wrong=True), False),       # a device that computes wrong numbers
    (None, False),                                   # no CuPy at all
], ids=["works", "no-device", "no-cuda-libraries", "wrong-numbers", "no-cupy"])
def test_gpu_available_runs_a_kernel_and_a_matmul(monkeypatch, fake, expected):
    monkeypatch.setattr(backend, "_cp", fake)
    monkeypatch.setattr(backend, "_GPU_WORKS", None)
    assert backend.gpu_available() is expected
    assert backend._GPU_WORKS is expected              # cached for the process
