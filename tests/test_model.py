"""The whole model: initialisation, parameter count, the whole-model gradient check,
input validation, checkpoints, and a short training run whose loss falls."""
import dataclasses

import numpy as np
import pytest

from helpers import moving_square_clips

from stvae_np import checkpoint
from stvae_np.fast.layers import conv2d_forward
from stvae_np.losses import photometric_backward, photometric_forward
from stvae_np.gradcheck import directional_check
from stvae_np.model import PARAM_NAMES, STVAE, Config
from stvae_np.optim import RMSProp, clip_grad_norm


def test_paper_preset_has_the_papers_parameter_count():
    cfg = Config.paper()
    assert cfg.num_params() == 1_035_071
    model = STVAE(cfg)
    sizes = {k: v.size for k, v in model.params.items()}
    assert sum(sizes.values()) == 1_035_071
    assert sizes["enc.W"] + sizes["enc.b"] == 800
    assert sizes["lstm.Wx"] + sizes["lstm.Wh"] + sizes["lstm.b"] == 1_003_776
    assert sizes["flow1.W"] + sizes["flow1.b"] == 28_802
    assert sizes["flow2.W"] + sizes["flow2.b"] == 902
    assert sizes["flow3.W"] + sizes["flow3.b"] == 6
    assert sizes["dec.W"] + sizes["dec.b"] == 785
    assert tuple(model.params) == PARAM_NAMES


def test_initialisation_follows_the_paper():
    cfg = Config.tiny()
    p = STVAE(cfg, seed=3).params
    fm = cfg.mem_filters
    np.testing.assert_array_equal(p["lstm.b"][fm:2 * fm], 1.0)           # forget gate
    assert np.all(p["lstm.b"][:fm] == 0) and np.all(p["lstm.b"][2 * fm:] == 0)
    for name in ("lstm.Wx", "lstm.Wh"):
        assert np.abs(p[name]).max() <= 0.08 and p[name].std() > 0.03
    f_out, f_in, k, _ = p["enc.W"].shape
    a = np.sqrt(6 / ((f_in + f_out) * k * k))
    assert np.abs(p["enc.W"]).max() <= a and np.abs(p["enc.W"]).max() > 0.8 * a
    assert not p["flow3.W"].any() and not p["flow3.b"].any()             # identity warp
    assert all(v.dtype == np.float32 for v in p.values())
    q = STVAE(cfg, seed=3).params
    assert all(np.array_equal(p[k], q[k]) for k in p)
    assert not np.array_equal(p["enc.W"], STVAE(cfg, seed=4).params["enc.W"])


def test_training_starts_from_zero_flow():
    model = STVAE(Config.tiny())
    preds, flows = model.predict(moving_square_clips(n=2, t=3))
    assert preds.shape == (2, 2, 1, 32, 32) and flows.shape == (2, 2, 2, 16, 16)
    assert not flows.any()


def _gradcheck_model(**overrides):
    """Tiny preset in float64, flow head moved off zero so every path carries gradient."""
    cfg = dataclasses.replace(Config.tiny(), **overrides)
    model = STVAE(cfg, seed=1, dtype="float64")
    rng = np.random.default_rng(7)
    model.params["flow3.W"][...] = rng.normal(0, 0.5, model.params["flow3.W"].shape)
    model.params["flow3.b"][...] = [0.37, -0.29]   # sample points off the integer grid
    if cfg.prediction == "warp_plus_decoded":       # its decoder starts at zero: move it off
        model.params["dec.W"][...] = rng.normal(0, 0.1, model.params["dec.W"].shape)
    clip = moving_square_clips(n=2, t=4, seed=2).astype(np.float64)
    return model, clip


@pytest.mark.parametrize("overrides", [
    {},                                                          # the tiny preset as it is
    {"photo_weight": 0.0, "photo_blur": 0.0, "flow_act": "none", "flow_filters": 2},
    {"flow_act": "tanh", "flow_filters": 4},
    {"flow_act": "none", "flow_filters": 4},
    {"prediction": "warp_plus_decoded", "photo_loss": "charbonnier", "photo_weighting": "uniform"},
    {"prediction": "warp_plus_decoded", "photo_weight": 0.0, "photo_blur": 0.0},
    {"enc_frames": 2, "prediction": "warp_plus_decoded", "photo_loss": "charbonnier",
     "photo_weighting": "uniform"},
], ids=["tiny-recipe", "paper-loss-and-head", "tanh-head", "linear-head", "video-recipe",
        "warp-plus-decoded-alone", "two-frame-encoder"])
def test_whole_model_directional_gradient_check(overrides):
    """Directional derivatives along directions partly parallel to the claimed gradient:
    [L(θ + h·d) − L(θ − h·d)] / 2h against ⟨∇L, d⟩, for every parameter tensor; with the
    tiny preset's recipe, with the paper's loss and linear flow head, and with each flow
    head (``flow_act``) under the photometric term."""
    model, clip = _gradcheck_model(**overrides)
    loss, grads = model.loss_and_grads(clip)
    assert set(grads) == set(PARAM_NAMES)
    for name in PARAM_NAMES:
        assert grads[name].shape == model.params[name].shape
        assert grads[name].dtype == np.float64
        assert np.abs(grads[name]).max() > 0, f"{name} gets no gradient"
    worst = directional_check(lambda: model.loss(clip), model.params, grads, PARAM_NAMES)
    assert max(worst.values()) <= 1e-5, worst


def test_recon_flow_grad_scales_only_the_gradient_through_the_warped_encoding():
    """The video preset's recon_flow_grad = 0: the flow head gets no gradient through the
    warped encoding; the decoder's gradient and the loss are unchanged, and the gradient is
    linear in the scale (so it scales that path alone)."""
    grads, losses = {}, {}
    for r in (0.0, 0.5, 1.0):
        model, clip = _gradcheck_model(**{**vars(Config.video()), "recon_flow_grad": r})
        losses[r], grads[r] = model.loss_and_grads(clip)
    assert Config.video().recon_flow_grad == 0.0 and losses[0.0] == losses[1.0] == losses[0.5]
    for name in PARAM_NAMES:
        np.testing.assert_allclose(grads[0.5][name], (grads[0.0][name] + grads[1.0][name]) / 2,
                                   rtol=1e-10, atol=1e-14)
    assert all(np.array_equal(grads[0.0][n], grads[1.0][n]) for n in ("dec.W", "dec.b"))
    assert not np.allclose(grads[0.0]["flow3.W"], grads[1.0]["flow3.W"])
    model, clip = _gradcheck_model(photo_weight=0.0, huber_weight=0.0, recon_flow_grad=0.0)
    _, g = model.loss_and_grads(clip)                     # the paper's prediction: no other path
    assert not g["flow3.W"].any() and not g["flow1.W"].any() and g["dec.W"].any()


def test_loss_and_grads_matches_forward_only_loss():
    model, clip = _gradcheck_model()
    loss, _ = model.loss_and_grads(clip)
    assert loss.shape == () and float(loss) == pytest.approx(float(model.loss(clip)), rel=1e-12)
    parts = model.last_parts
    cfg = model.config
    assert float(loss) == pytest.approx(float(parts["mse"]) + cfg.huber_weight * float(parts["smooth"])
                                        + cfg.photo_weight * float(parts["photo"]))


def test_float32_model_keeps_float32():
    model = STVAE(Config.tiny())
    loss, grads = model.loss_and_grads(moving_square_clips(n=2, t=3).astype(np.float64))
    assert loss.dtype == np.float32 and all(g.dtype == np.float32 for g in grads.values())


@pytest.mark.parametrize("clip,msg", [
    (np.zeros((2, 3, 32, 32), np.float32), "5-D"),
    (np.zeros((2, 3, 3, 32, 32), np.float32), "channels"),
    (np.zeros((2, 3, 1, 30, 32), np.float32), "30×32"),
    (np.zeros((2, 1, 1, 32, 32), np.float32), "at least 2 frames"),
    (np.zeros((2, 3, 1, 32, 32), np.uint8), "float pixels"),
    (np.full((2, 3, 1, 32, 32), np.nan, np.float32), "NaN"),
    ([[1.0]], "array"),
])
def test_bad_clips_are_refused_with_a_clear_message(clip, msg):
    model = STVAE(Config.tiny())
    with pytest.raises(ValueError, match=msg):
        model.loss_and_grads(clip)
    with pytest.raises(ValueError, match=msg):
        model.predict(clip)


def test_config_errors():
    with pytest.raises(ValueError, match="unknown preset"):
        Config.preset("huge")
    with pytest.raises(ValueError, match="odd"):
        Config(enc_kernel=4)
    with pytest.raises(ValueError, match="even"):
        Config(height=33)
    with pytest.raises(ValueError, match="flow_act must be 'none' or 'tanh', got 'relu'"):
        Config(flow_act="relu")


def test_save_load_is_bit_identical(tmp_path):
    model = STVAE(Config.tiny(), seed=5)
    model.params["flow3.b"][...] = [0.25, -0.5]
    path = tmp_path / "m.npz"
    checkpoint.save(model, path, extra={"step": np.array(12)})
    loaded, extra = checkpoint.load(path, return_extra=True)
    assert loaded.config == model.config and int(extra["step"]) == 12
    for k in PARAM_NAMES:
        assert loaded.params[k].dtype == model.params[k].dtype
        np.testing.assert_array_equal(loaded.params[k], model.params[k])
    clip = moving_square_clips(n=1, t=3)
    np.testing.assert_array_equal(loaded.predict(clip)[0], model.predict(clip)[0])
    assert not list(tmp_path.glob("*.tmp-*"))   # the temporary file was renamed away


def test_bad_checkpoints_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        checkpoint.load(tmp_path / "missing.npz")
    good = tmp_path / "good.npz"
    checkpoint.save(STVAE(Config.tiny()), good)
    data = good.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        checkpoint.load(tmp_path / "trunc.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="no zip header"):
        checkpoint.load(tmp_path / "text.npz")
    np.savez(tmp_path / "foreign.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not an stvae_np checkpoint"):
        checkpoint.load(tmp_path / "foreign.npz")
    np.savez(tmp_path / "pickled.npz", magic=np.array("stvae_np"),
             evil=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickled"):
        checkpoint.load(tmp_path / "pickled.npz")


def test_tiny_model_learns_a_moving_pattern():
    """A few dozen RMSProp steps on squares moving one pixel a frame: the loss falls, its
    reconstruction part fastest (to 0.32 × in 40 steps; the photometric part, a robust
    error weighted by the next frame's pixels, to 0.61 ×; the whole to 0.60 ×)."""
    model = STVAE(Config.tiny(), seed=0)
    opt = RMSProp(model.params, lr=2e-3)
    losses, mses, photos = [], [], []
    for step in range(40):
        clip = moving_square_clips(n=4, t=5, seed=step)
        loss, grads = model.loss_and_grads(clip)
        clip_grad_norm(grads, 1.0)
        opt.step(grads)
        losses.append(float(loss))
        mses.append(float(model.last_parts["mse"]))
        photos.append(float(model.last_parts["photo"]))
    assert np.isfinite(losses).all()
    for series, most in ((losses, 0.7), (mses, 0.4), (photos, 0.7)):
        first, last = np.mean(series[:5]), np.mean(series[-5:])
        assert last < most * first, (first, last, most)


@pytest.mark.parametrize("blur, error, weighting", [(0.0, "l2", "uniform"), (1.0, "l2", "uniform"),
                                                    (1.0, "charbonnier", "uniform"),
                                                    (0.0, "l2", "next_frame"), (1.0, "l2", "next_frame"),
                                                    (1.0, "geman_mcclure", "uniform"),
                                                    (1.0, "geman_mcclure", "next_frame")])
def test_whole_model_gradient_check_with_the_photometric_term(blur, error, weighting):
    """The photometric term P (its blur, its error, its weighting) is part of the loss:
    the whole-model directional check holds with it on, and the loss reports it."""
    model, clip = _gradcheck_model()
    model.config = dataclasses.replace(model.config, photo_weight=3.0, photo_blur=blur,
                                       photo_loss=error, photo_weighting=weighting,
                                       huber_delta=0.05, huber_weight=0.5)
    loss, grads = model.loss_and_grads(clip)
    parts = model.last_parts
    assert float(parts["photo"]) > 0
    assert float(loss) == pytest.approx(float(parts["mse"]) + 0.5 * float(parts["smooth"])
                                        + 3.0 * float(parts["photo"]), rel=1e-12)
    assert float(loss) == pytest.approx(float(model.loss(clip)), rel=1e-12)
    worst = directional_check(lambda: model.loss(clip), model.params, grads,
                              ["flow1.W", "flow2.W", "flow3.W", "flow3.b", "lstm.Wx"])
    assert max(worst.values()) <= 1e-5, worst


def _photo(model, clip, flow):
    """The model's photometric term P of a clip and a flow (losses.photometric_forward)."""
    return photometric_forward(clip, flow, model.config, model.layers, {})


def test_photometric_term_is_zero_for_the_true_motion_and_pulls_towards_it():
    """A smooth blob shifted right by 2 image px: the memory-grid flow T_x = −1 (2 px / 2)
    warps x_t onto x_{t+1} exactly (P = 0); zero flow does not, and ∂P/∂T_x at zero
    flow points towards negative T_x."""
    model = STVAE(Config.tiny(), dtype="float64")
    yy, xx = np.mgrid[:32, :32]
    x0 = np.exp(-((xx - 14.0) ** 2 + (yy - 16.0) ** 2) / (2 * 3.0 ** 2))[None, None]
    x1 = np.roll(x0, 2, axis=-1)
    true = np.zeros((1, 2, 16, 16))
    true[:, 0] = -1.0
    clip = np.stack([x0, x1], axis=1)                   # (1, 2, 1, 32, 32): x_t, x_{t+1}
    for error, weighting in (("l2", "uniform"), ("l2", "next_frame"), ("geman_mcclure", "uniform"),
                             ("geman_mcclure", "next_frame")):
        model.config = dataclasses.replace(model.config, photo_loss=error, photo_weighting=weighting)
        p_true, _ = _photo(model, clip, true)
        # np.roll wraps the blob's far tail (≈ 4e-13 of P, ×1/C² = 100 under Geman–McClure)
        assert float(p_true) == pytest.approx(0.0, abs=1e-10)
        zero = np.zeros_like(true)
        p_zero, cache = _photo(model, clip, zero)
        assert float(p_zero) > 1e-3
        dflow = photometric_backward(1.0, cache, model.layers)
        assert dflow[:, 0].sum() > 0           # increasing T_x raises P: descent lowers T_x


def test_next_frame_weighting_ignores_the_empty_background():
    """With ``photo_weighting="next_frame"`` a pixel counts as much as frame t+1 shows
    there: an error where x_{t+1} is 0 costs nothing, and P is the weighted mean."""
    cfg = dataclasses.replace(Config.tiny(), photo_blur=0.0, photo_loss="l2", photo_weighting="next_frame")
    model = STVAE(cfg, dtype="float64")
    x0 = np.zeros((1, 1, 1, 32, 32))
    x1 = np.zeros((1, 1, 1, 32, 32))
    x0[..., 5, 5] = 1.0                                  # only in frame t: background of t+1
    x1[..., 20, 20], x1[..., 20, 21] = 0.5, 1.0           # in frame t+1, missing from x_t
    clip = np.concatenate([x0, x1], axis=1)
    p, _ = _photo(model, clip, np.zeros((1, 2, 16, 16)))
    assert float(p) == pytest.approx((0.5 * 0.5 ** 2 + 1.0 * 1.0 ** 2) / 1.5, rel=1e-12)
    x0[..., 5, 5] = 0.0                                  # the background error gone: P unchanged
    p2, _ = _photo(model, np.concatenate([x0, x1], axis=1), np.zeros((1, 2, 16, 16)))
    assert float(p2) == pytest.approx(float(p), rel=1e-12)
    uniform = STVAE(dataclasses.replace(cfg, photo_weighting="uniform"), dtype="float64")
    pu, _ = _photo(uniform, clip, np.zeros((1, 2, 16, 16)))
    assert float(pu) == pytest.approx((1.0 + 0.25 + 1.0) / 1024, rel=1e-12)


@pytest.mark.parametrize("flow_act", ["none", "tanh"])
def test_the_public_stages_rebuild_the_prediction_and_keep_named_caches(flow_act):
    """encode → ConvLSTM → flow_head → warp_decode, called one by one, give the model's
    own predictions; each stage returns a NamedTuple cache whose fields say what it holds."""
    from stvae_np.fast.memory import convlstm_forward
    from stvae_np.model import DecodeCache, EncodeCache, FlowCache
    model = STVAE(dataclasses.replace(Config.tiny(), flow_act=flow_act), seed=2, dtype="float64")
    model.params["flow3.b"][...] = [0.37, -0.29]               # a non-zero warp
    clip = moving_square_clips(n=2, t=4, seed=1).astype(np.float64)
    n, t, c, hh, ww = clip.shape
    s = t - 1
    p = model.params
    e, enc_cache = model.encode(clip[:, :-1].reshape(n * s, c, hh, ww))
    fe, h, w = e.shape[1:]
    hs, _ = convlstm_forward(e.reshape(n, s, fe, h, w),
                             {"Wx": p["lstm.Wx"], "Wh": p["lstm.Wh"], "b": p["lstm.b"]})
    flow, flow_cache = model.flow_head(hs.reshape(n * s, -1, h, w))
    pred, dec_cache = model.warp_decode(e, flow)
    preds, flows = model.predict(clip)
    np.testing.assert_allclose(pred.reshape(preds.shape), preds, rtol=0, atol=1e-12)
    np.testing.assert_allclose(flow.reshape(flows.shape), flows, rtol=0, atol=1e-12)
    assert isinstance(enc_cache, EncodeCache) and enc_cache._fields == ("conv", "tanh_out", "pool")
    assert isinstance(flow_cache, FlowCache)
    assert flow_cache._fields == ("flow1", "flow2", "flow3", "act1", "act2")
    if flow_act == "none":                        # the paper's linear head keeps no activations
        assert flow_cache.act1 is None and flow_cache.act2 is None
    else:                                         # tanh of the first convolution's output
        f1, _ = conv2d_forward(hs.reshape(n * s, -1, h, w), p["flow1.W"], p["flow1.b"])
        np.testing.assert_allclose(flow_cache.act1, np.tanh(f1), rtol=0, atol=1e-15)
        assert np.abs(flow_cache.act2).max() < 1
    assert isinstance(dec_cache, DecodeCache)
    assert dec_cache._fields == ("sampler", "upsample", "decoder", "image") and dec_cache.image is None
    np.testing.assert_array_equal(enc_cache.tanh_out.shape, (n * s, fe, hh, ww))


def test_rollout_of_zero_frames_is_empty_and_a_negative_length_is_refused():
    """rollout(ctx, 0) used to fail inside NumPy ("need at least one array to stack")."""
    model = STVAE(Config.tiny())
    ctx = moving_square_clips(n=3, t=2)
    out = model.rollout(ctx, 0)
    assert out.shape == (3, 0, 1, 32, 32) and out.dtype == np.float32
    assert model.rollout(ctx, np.int64(2)).shape == (3, 2, 1, 32, 32)
    with pytest.raises(ValueError, match="n_future must be ≥ 0, got -1"):
        model.rollout(ctx, -1)
    with pytest.raises(ValueError, match="n_future must be an integer"):
        model.rollout(ctx, 1.5)
