"""Grid generator and bilinear sampler: exact shifts, agreement with a per-pixel loop,
gradients against centred finite differences in float64 (sample points kept off the
integer kinks), scatter-add accumulation, far-away and non-finite points, dtypes and
errors for bad input."""
import warnings

import numpy as np
import pytest

from stvae_np import backend
from stvae_np.gradcheck import numerical_gradient, rel_error
from stvae_np.sampler import base_grid, bilinear_backward, bilinear_forward, flow_to_grid

TOL = 1e-6


def naive_bilinear(img, grid):
    """The definition, one output pixel and one of its four neighbours at a time."""
    n, c, h, w = img.shape
    _, _, ho, wo = grid.shape
    out = np.zeros((n, c, ho, wo))
    for i in range(n):
        for y in range(ho):
            for x in range(wo):
                xs, ys = grid[i, 0, y, x], grid[i, 1, y, x]
                x0, y0 = int(np.floor(xs)), int(np.floor(ys))
                for qy in (y0, y0 + 1):
                    for qx in (x0, x0 + 1):
                        if 0 <= qx < w and 0 <= qy < h:
                            wgt = max(0.0, 1 - abs(xs - qx)) * max(0.0, 1 - abs(ys - qy))
                            out[i, :, y, x] += img[i, :, qy, qx] * wgt
    return out


def off_kink_grid(rng, n, ho, wo, h, w, lo=-1, margin=0.05):
    """Random source points whose fractional parts lie in [margin, 1 − margin].

    Integer parts run from ``lo`` to W−1 (resp. H−1), so points with x_s in (−1, 0) and
    (W−1, W) straddle the border (one neighbour in, one out); lo < −1 adds points
    wholly outside. A step h ≪ margin never crosses an integer, so centred differences
    see one linear piece."""
    ix = rng.integers(lo, w, size=(n, ho, wo))
    iy = rng.integers(lo, h, size=(n, ho, wo))
    frac = rng.uniform(margin, 1 - margin, size=(n, 2, ho, wo))
    return np.stack([ix, iy], axis=1) + frac


# ----------------------------------------------------------------------------- grid
def test_base_grid_and_flow_to_grid():
    like = np.zeros(1, np.float32)
    g = base_grid(2, 3, 4, like)
    assert g.shape == (2, 2, 3, 4) and g.dtype == np.float32
    np.testing.assert_array_equal(g[1, 0], [[0, 1, 2, 3]] * 3)          # x = column index
    np.testing.assert_array_equal(g[0, 1], [[0] * 4, [1] * 4, [2] * 4])  # y = row index
    flow = np.random.default_rng(0).standard_normal((2, 2, 3, 4))
    grid = flow_to_grid(flow)
    np.testing.assert_array_equal(grid, base_grid(2, 3, 4, flow) + flow)
    assert grid.dtype == np.float64
    with pytest.raises(ValueError, match=r"\(N, 2, h, w\)"):
        flow_to_grid(np.zeros((2, 3, 3, 4)))


# ----------------------------------------------------------------------------- exact values
def test_zero_flow_is_the_identity_exactly():
    rng = np.random.default_rng(0)
    img = rng.standard_normal((2, 3, 5, 6))
    out, _ = bilinear_forward(img, flow_to_grid(np.zeros((2, 2, 5, 6))))
    np.testing.assert_array_equal(out, img)


def test_integer_flows_shift_the_map_with_zeros_entering():
    rng = np.random.default_rng(1)
    img = rng.standard_normal((2, 3, 5, 6))
    flow = np.zeros((2, 2, 5, 6))
    flow[:, 0] = -1.0                       # read from x − 1: the map moves right
    out, _ = bilinear_forward(img, flow_to_grid(flow))
    np.testing.assert_array_equal(out[..., 1:], img[..., :-1])
    np.testing.assert_array_equal(out[..., 0], 0.0)
    flow = np.zeros((2, 2, 5, 6))
    flow[:, 1] = 2.0                        # read from y + 2: the map moves up by two rows
    out, _ = bilinear_forward(img, flow_to_grid(flow))
    np.testing.assert_array_equal(out[:, :, :-2], img[:, :, 2:])
    np.testing.assert_array_equal(out[:, :, -2:], 0.0)


def test_half_pixel_is_the_average_of_two_neighbours():
    img = np.arange(12.0).reshape(1, 1, 3, 4)
    grid = np.array([1.5, 1.0]).reshape(1, 2, 1, 1)
    out, _ = bilinear_forward(img, grid)
    assert out[0, 0, 0, 0] == 0.5 * (img[0, 0, 1, 1] + img[0, 0, 1, 2])
    grid = np.array([3.5, 2.5]).reshape(1, 2, 1, 1)   # the bottom-right corner: 1/4 of one pixel
    out, _ = bilinear_forward(img, grid)
    assert out[0, 0, 0, 0] == 0.25 * img[0, 0, 2, 3]


@pytest.mark.parametrize("xs,ys", [(-1.2, 1.0), (-1.5, 0.5), (4.0, 1.0), (1.0, 3.0), (2.0, -1.3), (5.7, 2.2),
                                   (1e6, 1.0), (-1e6, 1.0), (1.0, 1e6), (-1e6, -1e6), (1e30, -1e30),
                                   (np.inf, 1.0), (-np.inf, -np.inf)])
def test_points_outside_the_map_read_zero(xs, ys):
    img = np.random.default_rng(2).standard_normal((1, 2, 3, 4)) + 5.0   # no zeros inside
    grid = np.array([xs, ys]).reshape(1, 2, 1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # no overflow or invalid-cast warnings either
        out, cache = bilinear_forward(img, grid)
        dimg, dgrid = bilinear_backward(np.ones_like(out), cache)
    np.testing.assert_array_equal(out, 0.0)
    np.testing.assert_array_equal(dimg, 0.0)
    np.testing.assert_array_equal(dgrid, 0.0)


def test_nan_in_the_grid_propagates_to_that_pixel_only():
    img = np.ones((1, 2, 3, 4))
    grid = base_grid(1, 3, 4, img)
    grid[0, 0, 1, 2] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, _ = bilinear_forward(img, grid)
    assert np.isnan(out[0, :, 1, 2]).all()
    out[0, :, 1, 2] = 1.0
    np.testing.assert_array_equal(out, img)


@pytest.mark.parametrize("shape,out_hw,lo", [((1, 1, 4, 5), (4, 5), -1), ((2, 3, 5, 4), (3, 6), -3),
                                             ((2, 2, 1, 3), (2, 2), -2)])
def test_forward_matches_naive_loop(shape, out_hw, lo):
    rng = np.random.default_rng(sum(shape))
    n, c, h, w = shape
    img = rng.standard_normal(shape)
    # random non-integer points, some straddling the border, some wholly outside
    grid = off_kink_grid(rng, n, *out_hw, h, w, lo=lo, margin=0.0) + rng.uniform(0, 2, (n, 2, *out_hw))
    out, _ = bilinear_forward(img, grid)
    assert out.shape == (n, c, *out_hw)
    np.testing.assert_allclose(out, naive_bilinear(img, grid), rtol=1e-12, atol=1e-12)


def test_both_gather_paths_give_the_same_numbers(monkeypatch):
    """The neighbours are gathered by one take per map on NumPy and by one
    take_along_axis on the GPU (backend.FEW_KERNELS forces that path here): bit for bit
    the same forward and backward, and the forward is the definition."""
    rng = np.random.default_rng(7)
    img = rng.standard_normal((3, 4, 5, 6))
    grid = off_kink_grid(rng, 3, 4, 7, 5, 6, lo=-3, margin=0.0)
    dout = rng.standard_normal((3, 4, 4, 7))
    take_along_axis, results = np.take_along_axis, {}
    for few in (False, True):
        calls = []
        monkeypatch.setattr(backend, "FEW_KERNELS", few)
        monkeypatch.setattr(np, "take_along_axis", lambda *a, **k: calls.append(1) or take_along_axis(*a, **k))
        out, cache = bilinear_forward(img, grid)
        results[few] = (out, *bilinear_backward(dout, cache))
        assert len(calls) == (2 if few else 0)          # forward and backward each gather once
    for loop, one_op in zip(results[False], results[True]):
        np.testing.assert_array_equal(loop, one_op)
    np.testing.assert_allclose(results[False][0], naive_bilinear(img, grid), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- gradients
def _check_sampler_grads(img, grid, seed):
    rng = np.random.default_rng(seed)
    out, cache = bilinear_forward(img, grid)
    dout = rng.standard_normal(out.shape)
    img0, grid0, dout0 = img.copy(), grid.copy(), dout.copy()
    dimg, dgrid = bilinear_backward(dout, cache)
    np.testing.assert_array_equal(img, img0)    # backward leaves its inputs alone
    np.testing.assert_array_equal(grid, grid0)
    np.testing.assert_array_equal(dout, dout0)
    dimg_num = numerical_gradient(lambda v: bilinear_forward(v, grid)[0], img, dout, h=1e-6)
    dgrid_num = numerical_gradient(lambda v: bilinear_forward(img, v)[0], grid, dout, h=1e-6)
    errs = rel_error(dimg, dimg_num), rel_error(dgrid, dgrid_num)
    assert max(errs) <= TOL, f"dimg, dgrid relative errors {errs}"
    return dimg, dgrid


@pytest.mark.parametrize("shape,out_hw,lo", [((1, 1, 4, 4), (4, 4), -1), ((2, 3, 5, 6), (4, 3), -1),
                                             ((2, 2, 3, 4), (5, 5), -3)])
def test_gradients_off_the_kinks(shape, out_hw, lo):
    rng = np.random.default_rng(10 + sum(shape))
    n, c, h, w = shape
    img = rng.standard_normal(shape)
    grid = off_kink_grid(rng, n, *out_hw, h, w, lo=lo)
    _check_sampler_grads(img, grid, seed=sum(shape))


def test_gradients_of_points_straddling_every_border():
    rng = np.random.default_rng(5)
    h, w = 4, 5
    img = rng.standard_normal((1, 2, h, w))
    # x_s in (−1, 0) and (W−1, W), y_s in (−1, 0) and (H−1, H), and the four corners
    xs = np.array([-0.7, -0.2, w - 0.8, w - 0.3, 1.4, 2.6, -0.4, w - 0.6])
    ys = np.array([1.3, 2.8, 0.6, 2.2, -0.6, h - 0.4, -0.3, h - 0.7])
    grid = np.stack([xs, ys]).reshape(1, 2, 2, 4)
    dimg, dgrid = _check_sampler_grads(img, grid, seed=5)
    assert np.all(dgrid != 0.0)    # every point still has a neighbour in the map


def test_scatter_add_accumulates_when_many_outputs_read_one_pixel():
    rng = np.random.default_rng(6)
    img = rng.standard_normal((1, 2, 4, 4))
    grid = np.empty((1, 2, 3, 3))
    grid[:, 0], grid[:, 1] = 1.3, 2.6       # all nine outputs read the same four pixels
    dimg, _ = _check_sampler_grads(img, grid, seed=6)
    dout = np.ones((1, 2, 3, 3))
    dimg, _ = bilinear_backward(dout, bilinear_forward(img, grid)[1])
    expected = np.zeros((4, 4))
    expected[2, 1], expected[2, 2], expected[3, 1], expected[3, 2] = 0.7 * 0.4, 0.3 * 0.4, 0.7 * 0.6, 0.3 * 0.6
    np.testing.assert_allclose(dimg[0, 0], 9 * expected, rtol=1e-12)
    np.testing.assert_allclose(dimg[0, 1], 9 * expected, rtol=1e-12)


def test_gradient_at_an_integer_is_the_right_hand_one():
    img = np.array([[[[0.0, 1.0, 5.0]]]])                 # slopes 1 then 4 along x
    grid = np.array([1.0, 0.0]).reshape(1, 2, 1, 1)
    out, cache = bilinear_forward(img, grid)
    _, dgrid = bilinear_backward(np.ones_like(out), cache)
    assert dgrid[0, 0, 0, 0] == 4.0
    # x_s = −1 exactly reads zero, but its right-hand slope reaches pixel 0: img(0)·wy
    img = np.array([[[[3.0, 1.0, 5.0]]]])
    out, cache = bilinear_forward(img, np.array([-1.0, 0.0]).reshape(1, 2, 1, 1))
    dimg, dgrid = bilinear_backward(np.ones_like(out), cache)
    assert out[0, 0, 0, 0] == 0.0 and np.all(dimg == 0.0) and dgrid[0, 0, 0, 0] == 3.0


# ----------------------------------------------------------------------------- dtypes and errors
def test_keeps_float32():
    rng = np.random.default_rng(7)
    img = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    grid = off_kink_grid(rng, 2, 4, 4, 5, 5).astype(np.float32)
    out, cache = bilinear_forward(img, grid)
    dimg, dgrid = bilinear_backward(np.ones_like(out), cache)
    assert out.dtype == dimg.dtype == dgrid.dtype == np.float32
    np.testing.assert_allclose(out, naive_bilinear(img.astype(np.float64), grid.astype(np.float64)),
                               rtol=1e-5, atol=1e-5)
    assert base_grid(1, 2, 2, img).dtype == np.float32
    assert flow_to_grid(np.zeros((1, 2, 3, 3), np.float32)).dtype == np.float32


@pytest.mark.parametrize("img_shape,grid_shape,msg", [
    ((3, 5, 5), (1, 2, 5, 5), "img must be 4-D"),
    ((1, 3, 5, 5), (2, 5, 5), "grid must be 4-D"),
    ((1, 3, 5, 5), (1, 3, 5, 5), "2 channels"),
    ((2, 3, 5, 5), (1, 2, 5, 5), "batch mismatch"),
])
def test_bad_input(img_shape, grid_shape, msg):
    with pytest.raises(ValueError, match=msg):
        bilinear_forward(np.zeros(img_shape), np.zeros(grid_shape))


def test_rejects_mixed_dtypes_integers_and_bad_dout():
    with pytest.raises(ValueError, match="dtypes differ"):
        bilinear_forward(np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 2, 4, 4)))
    with pytest.raises(ValueError, match="floating-point"):
        bilinear_forward(np.zeros((1, 1, 4, 4), int), np.zeros((1, 2, 4, 4), int))
    out, cache = bilinear_forward(np.zeros((1, 1, 4, 4)), np.zeros((1, 2, 3, 3)))
    with pytest.raises(ValueError, match="dout must have shape"):
        bilinear_backward(np.zeros((1, 1, 4, 4)), cache)


# ----------------------------------------------------------------------------- GPU
@pytest.mark.skipif(not backend.gpu_available(), reason="no CUDA device")
def test_cupy_matches_numpy_including_far_points():
    rng = np.random.default_rng(8)
    img = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    grid = off_kink_grid(rng, 2, 4, 4, 5, 6, lo=-3).astype(np.float32)
    grid[0, 0, 0, :] = [-1e6, 1e6, -np.inf, np.inf]   # CuPy would wrap negative indices silently
    out, cache = bilinear_forward(img, grid)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dimg, dgrid = bilinear_backward(dout, cache)
    g = [backend.to_device(a, "gpu") for a in (img, grid, dout)]
    out_g, cache_g = bilinear_forward(g[0], g[1])
    dimg_g, dgrid_g = bilinear_backward(g[2], cache_g)
    for a, b in ((out, out_g), (dimg, dimg_g), (dgrid, dgrid_g)):
        assert b.dtype == np.float32
        np.testing.assert_allclose(backend.asnumpy(b), a, rtol=1e-5, atol=1e-5)


def test_need_dimg_false_gives_the_same_dgrid_and_no_dimg():
    """The photometric term warps constant frames: skipping the image's scatter must not
    change the grid's gradient by a single bit."""
    rng = np.random.default_rng(5)
    img = rng.standard_normal((2, 3, 6, 7))
    grid = base_grid(2, 5, 4, img) + rng.uniform(-1.7, 1.7, (2, 2, 5, 4))
    out, cache = bilinear_forward(img, grid)
    dout = rng.standard_normal(out.shape)
    dimg, dgrid = bilinear_backward(dout, cache)
    none, dgrid2 = bilinear_backward(dout, cache, need_dimg=False)
    assert none is None and dimg.shape == img.shape
    np.testing.assert_array_equal(dgrid2, dgrid)
