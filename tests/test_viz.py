"""The pictures: the flow colour code's conventions, and every plot writes a real PNG."""
import colorsys

import matplotlib.image
import numpy as np
import pytest

from stvae_np import viz

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _uniform_flow(fx, fy, h=4, w=5):
    """A (2, h, w) field equal to (fx, fy) everywhere."""
    flow = np.empty((2, h, w))
    flow[0], flow[1] = fx, fy
    return flow


def _color_of_motion(mx, my, max_mag=1.0):
    """The RGB colour (floats in [0, 1]) of a uniform MOTION (mx, my), i.e. flow −(mx, my)."""
    return viz.flow_to_color(_uniform_flow(-mx, -my), max_mag)[0, 0] / 255.0


def _hue_deg(rgb):
    return 360.0 * colorsys.rgb_to_hsv(*rgb)[0]


def _saturation(rgb):
    return colorsys.rgb_to_hsv(*rgb)[1]


def _hue_distance(a, b):
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


def _assert_png(path, ndim=3):
    with open(path, "rb") as f:
        head = f.read(8)
    assert head == PNG_SIGNATURE
    img = matplotlib.image.imread(path)
    assert img.ndim == ndim and img.shape[0] > 10 and img.shape[1] > 10
    return img


# --------------------------------------------------------------------- colour code

def test_color_wheel_has_55_colours_in_six_ramps():
    wheel = viz.make_color_wheel()
    assert wheel.shape == (55, 3)
    assert np.array_equal(wheel[0], [255, 0, 0])          # starts at red
    assert np.array_equal(wheel[15], [255, 255, 0])       # RY = 15 steps to yellow
    assert np.array_equal(wheel[21], [0, 255, 0])         # YG = 6 to green
    assert np.array_equal(wheel[25], [0, 255, 255])       # GC = 4 to cyan
    assert np.array_equal(wheel[36], [0, 0, 255])         # CB = 11 to blue
    assert np.array_equal(wheel[49], [255, 0, 255])       # BM = 13 to magenta, MR = 6 left


def test_flow_to_color_shape_dtype_and_zero_flow_is_white():
    img = viz.flow_to_color(np.zeros((2, 6, 7)))
    assert img.shape == (6, 7, 3) and img.dtype == np.uint8
    assert np.all(img == 255)
    # max_mag given, zero flow: still white
    assert np.all(viz.flow_to_color(np.zeros((2, 3, 3)), max_mag=2.0) == 255)


def test_flow_to_color_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        viz.flow_to_color(np.zeros((3, 4, 4)))


def test_colours_follow_the_motion_not_the_flow():
    right = _color_of_motion(1.0, 0.0)
    left = _color_of_motion(-1.0, 0.0)
    # the usual convention: motion to the right is red, to the left cyan-blue
    assert right[0] > 0.9 and right[1] < 0.2
    assert left[0] < 0.1 and left[2] > 0.9
    assert _hue_distance(_hue_deg(right), _hue_deg(left)) > 120.0
    # a backward flow of +1 in x is motion to the LEFT: it gets the left colour
    flow_plus_x = viz.flow_to_color(_uniform_flow(1.0, 0.0), 1.0)[0, 0] / 255.0
    assert np.allclose(flow_plus_x, left, atol=1 / 255)


@pytest.mark.parametrize("angle_deg", [0, 45, 90, 135, 180, 225, 270, 315, 30, 200])
def test_opposite_motions_get_roughly_complementary_hues(angle_deg):
    a = np.deg2rad(angle_deg)
    c1 = _color_of_motion(np.cos(a), np.sin(a))
    c2 = _color_of_motion(-np.cos(a), -np.sin(a))
    # the Middlebury wheel is not perceptually even, so "complementary" is loose
    assert _hue_distance(_hue_deg(c1), _hue_deg(c2)) > 100.0


def test_saturation_grows_with_magnitude_over_max_mag():
    full = _color_of_motion(2.0, 0.0, max_mag=2.0)
    half = _color_of_motion(1.0, 0.0, max_mag=2.0)
    assert _saturation(half) < _saturation(full)
    assert _saturation(half) == pytest.approx(0.5 * _saturation(full), abs=0.03)
    assert _hue_distance(_hue_deg(half), _hue_deg(full)) < 2.0     # same direction, same hue


def test_default_max_mag_is_the_fields_largest_motion():
    flow = np.zeros((2, 1, 2))
    flow[0, 0, 0], flow[0, 0, 1] = -4.0, -2.0                    # motions 4 and 2 to the right
    img = viz.flow_to_color(flow) / 255.0
    assert np.allclose(img[0, 0], viz.flow_to_color(flow, max_mag=4.0)[0, 0] / 255.0)
    assert _saturation(img[0, 0]) > 0.9
    assert _saturation(img[0, 1]) == pytest.approx(0.5 * _saturation(img[0, 0]), abs=0.03)


def test_color_wheel_image_is_a_legend_of_flow_to_color():
    size = 33
    wheel = viz.color_wheel_image(size)
    assert wheel.shape == (size, size, 3) and wheel.dtype == np.uint8
    c = size // 2
    assert np.all(wheel[c, c] >= 250)                       # centre: no motion, white
    assert np.all(wheel[0, 0] == 255)                       # outside the disc: white
    right_edge = wheel[c, size - 1] / 255.0                 # rim, to the right: red
    assert np.allclose(right_edge, _color_of_motion(1.0, 0.0), atol=2 / 255)


def test_upsample_flow_nearest_scales_shape_and_values():
    """viz brings the memory-grid flow to image pixels with metrics.upsample_flow."""
    from stvae_np.metrics import upsample_flow
    rng = np.random.default_rng(0)
    flow = rng.normal(size=(3, 2, 2, 4, 5))
    up = upsample_flow(flow, 2)
    assert up.shape == (3, 2, 2, 8, 10)
    assert np.allclose(up[..., ::2, ::2], 2 * flow)
    assert np.allclose(up[..., 1::2, 1::2], 2 * flow)
    assert np.allclose(upsample_flow(flow[0, 0], 3)[:, 2::3, ::3], 3 * flow[0, 0])
    assert np.array_equal(upsample_flow(flow, 1), flow)
    with pytest.raises(ValueError):
        upsample_flow(flow, 0)


# --------------------------------------------------------------------- plots

@pytest.fixture
def clip():
    rng = np.random.default_rng(1)
    N, T, H, W = 3, 5, 16, 16
    frames = rng.random((N, T, 1, H, W))
    preds = np.clip(frames[:, 1:] + 0.1 * rng.normal(size=(N, T - 1, 1, H, W)), 0, 1)
    true_flow = rng.normal(size=(N, T - 1, 2, H, W))
    pred_flow = rng.normal(size=(N, T - 1, 2, H // 2, W // 2))
    masks = np.zeros((N, T, H, W), dtype=bool)
    masks[:, :, 4:10, 5:11] = True
    return dict(frames=frames, preds=preds, true_flow=true_flow, pred_flow=pred_flow,
                masks=masks)


def test_plot_loss_curve(tmp_path):
    steps = np.arange(300)
    losses = 0.05 * np.exp(-steps / 100) + 1e-3 * np.random.default_rng(0).random(300)
    path = viz.plot_loss_curve(tmp_path / "sub" / "loss.png", steps, losses,
                               eval_steps=[0, 100, 200, 299], eval_mse=[0.05, 0.02, 0.01, 0.005],
                               baseline_mse=0.03)
    assert path == str(tmp_path / "sub" / "loss.png")
    _assert_png(path)
    _assert_png(viz.plot_loss_curve(tmp_path / "loss_short.png", [0, 1, 2], [1.0, 0.5, 0.0]))


def test_plot_predictions(tmp_path, clip):
    frames, preds = clip["frames"], clip["preds"]
    path = viz.plot_predictions(tmp_path / "pred.png", frames[:, :-1], preds, frames[:, 1:],
                                max_frames=3, max_rows=2)
    _assert_png(path)
    # whole clips for inputs and targets are accepted too
    _assert_png(viz.plot_predictions(tmp_path / "pred2.png", frames, preds, frames))
    with pytest.raises(ValueError):
        viz.plot_predictions(tmp_path / "bad.png", frames[:, :2], preds, frames)


def test_plot_flow_comparison(tmp_path, clip):
    path = viz.plot_flow_comparison(tmp_path / "flow.png", clip["frames"], clip["pred_flow"],
                                    clip["true_flow"], mask=clip["masks"], step=2)
    _assert_png(path)
    # no mask, same-resolution prediction, explicit examples, one (T, ...) clip
    _assert_png(viz.plot_flow_comparison(tmp_path / "flow2.png", clip["frames"][0],
                                         clip["true_flow"][0], clip["true_flow"][0],
                                         examples=[(0, 1)], step=3))
    # an all-zero prediction (the model at initialisation) must not break the colour scale
    _assert_png(viz.plot_flow_comparison(tmp_path / "flow3.png", clip["frames"],
                                         np.zeros_like(clip["pred_flow"]),
                                         np.zeros_like(clip["true_flow"])))


def test_plot_rollout(tmp_path, clip):
    frames = clip["frames"]
    path = viz.plot_rollout(tmp_path / "roll.png", frames[:, :2], frames[:, 2:], frames[:, 2:])
    _assert_png(path)
    _assert_png(viz.plot_rollout(tmp_path / "roll2.png", frames[:, :2], frames[:, 2:]))


def test_plot_curves(tmp_path):
    xs = np.arange(1, 6)
    path = viz.plot_curves(tmp_path / "curves.png", xs,
                           {"model": xs * 0.01, "copy last": xs * 0.02},
                           xlabel="horizon", ylabel="MSE", title="per-horizon MSE", logy=True)
    _assert_png(path)
    with pytest.raises(ValueError):
        viz.plot_curves(tmp_path / "bad.png", xs, {"short": [1, 2]})


def test_plot_masks(tmp_path, clip):
    frames, masks = clip["frames"], clip["masks"]
    shifted = np.roll(masks, 1, axis=-1)
    path = viz.plot_masks(tmp_path / "masks.png", frames, shifted, masks, masks_copy=masks)
    _assert_png(path)
    # masks for frames 1 … T-1 only, with a channel axis, no copy baseline
    _assert_png(viz.plot_masks(tmp_path / "masks2.png", frames, shifted[:, 1:, None],
                               masks[:, 1:, None]))


def test_many_plots_do_not_accumulate_figures(tmp_path, clip):
    import gc
    from matplotlib.figure import Figure
    gc.collect()
    before = sum(isinstance(o, Figure) for o in gc.get_objects())
    for i in range(5):
        viz.plot_curves(tmp_path / f"c{i}.png", [0, 1], {"a": [1, 2]})
    gc.collect()
    after = sum(isinstance(o, Figure) for o in gc.get_objects())
    assert after <= before
