"""The array backend and the gradient-check helpers."""
import numpy as np
import pytest

from stvae_np import backend
from stvae_np.activations import sigmoid, sigmoid_grad, tanh, tanh_grad
from stvae_np.gradcheck import numerical_gradient, rel_error


def test_numpy_arrays_get_numpy():
    assert backend.get_array_module(np.zeros(2)) is np
    assert backend.get_array_module(np.zeros(2), np.ones(3)) is np


def test_gpu_available_is_a_bool_and_never_raises():
    assert isinstance(backend.gpu_available(), bool)


def test_to_device_cpu_and_errors():
    a = np.arange(3.0)
    assert backend.to_device(a, "cpu") is a or np.array_equal(backend.to_device(a, "cpu"), a)
    assert isinstance(backend.asnumpy([1, 2]), np.ndarray)
    with pytest.raises(ValueError, match="device must be one of"):
        backend.to_device(a, "tpu")
    if not backend.gpu_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            backend.to_device(a, "gpu")


def test_scatter_add_accumulates_repeated_indices():
    out = np.zeros(4, np.float32)
    idx = np.array([0, 2, 2, 3, 2])
    vals = np.array([1.0, 2.0, 3.0, 4.0, 5.0], np.float32)
    backend.scatter_add(out, idx, vals)
    np.testing.assert_array_equal(out, [1, 0, 10, 4])
    assert out.dtype == np.float32
    with pytest.raises(ValueError, match="1-D"):
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
