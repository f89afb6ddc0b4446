"""The classical reference flow (coarse-to-fine Horn–Schunck) on known translations."""
import numpy as np
import pytest

from stvae_np.classical import classical_flows, horn_schunck
from stvae_np.data import moving_mnist_for
from stvae_np.metrics import flow_quality


def _texture(size=96, seed=0, cutoff=0.05):
    """A smooth random texture (low-pass filtered noise), std 1."""
    rng = np.random.default_rng(seed)
    ky, kx = np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")
    spectrum = np.fft.fft2(rng.standard_normal((size, size))) * np.exp(-(kx ** 2 + ky ** 2) / (2 * cutoff ** 2))
    tex = np.real(np.fft.ifft2(spectrum))
    return tex / tex.std()


@pytest.mark.parametrize("shift", [(-2, -1), (1, 2), (0, -3)])
def test_horn_schunck_recovers_a_whole_pixel_translation(shift):
    """frame_{t+1}(p) = frame_t(p − s) (the scene moved by s), so the backward flow is
    u = −s everywhere: frame_t(p + u) = frame_{t+1}(p). Two crops of one texture give
    the exact shift with no border artefact."""
    sx, sy = shift
    tex = _texture()
    frame_t = tex[32:64, 32:64]
    frame_t1 = tex[32 - sy:64 - sy, 32 - sx:64 - sx]
    flow = horn_schunck(frame_t, frame_t1, alpha=1.0)
    inner = flow[:, 8:24, 8:24]
    assert flow.shape == (2, 32, 32)
    np.testing.assert_allclose(inner.mean(axis=(1, 2)), [-sx, -sy], atol=0.25)
    assert np.median(np.hypot(inner[0] + sx, inner[1] + sy)) < 0.35


def test_horn_schunck_is_zero_on_a_still_scene_and_batches_frames():
    tex = _texture(seed=1)[:32, :32]
    frames = np.stack([tex, tex])
    flow = horn_schunck(frames, frames)
    assert flow.shape == (2, 2, 32, 32)
    assert np.abs(flow).max() < 1e-12


def test_horn_schunck_refuses_bad_input():
    with pytest.raises(ValueError, match="share a shape"):
        horn_schunck(np.zeros((32, 32)), np.zeros((32, 30)))
    with pytest.raises(ValueError, match="pyramid"):
        horn_schunck(np.zeros((30, 30)), np.zeros((30, 30)), levels=3)
    with pytest.raises(ValueError, match="NaN"):
        horn_schunck(np.full((32, 32), np.nan), np.zeros((32, 32)))


def test_classical_flow_beats_zero_flow_on_moving_mnist():
    """On tiny Moving MNIST (digits move 1–2 px a frame) the classical flow halves the
    zero-flow EPE and points the right way."""
    clips = moving_mnist_for("tiny", 8, seq_len=5, split="test", seed=7)
    flows = classical_flows(clips.frames)
    assert flows.shape == (8, 4, 2, 32, 32)
    q = flow_quality(flows, clips.flow, clips.masks[:, 1:, 0])
    assert q["epe_t2"] < 0.5 * q["zero_flow_epe_t2"]
    assert 0.7 < q["flow_gain_t2"] < 1.2
