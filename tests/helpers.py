"""Small clip makers and a host-side warp shared by the test files."""
import numpy as np

from stvae_np.sampler import bilinear_forward, flow_to_grid


def moving_square_clips(n=4, t=6, size=32, seed=0):
    """Bright textured squares moving by one pixel a frame in a random direction."""
    rng = np.random.default_rng(seed)
    clips = np.zeros((n, t, 1, size, size), np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        vy, vx = rng.choice([-1, 1], size=2)
        y0, x0 = rng.integers(8, size - 16, size=2)
        for j in range(t):
            y, x = y0 + vy * j, x0 + vx * j
            inside = (yy >= y) & (yy < y + 8) & (xx >= x) & (xx < x + 8)
            clips[i, j, 0][inside] = 0.6 + 0.4 * np.sin(xx[inside] - x + 2 * (yy[inside] - y)) ** 2
    return clips


def warp_backward(img, flow):
    """Backward-warp ``img`` by ``flow`` with the model's own warp, zero outside:

        out(y, x) = Σ_q img(q) · max(0, 1−|x_s−q_x|) · max(0, 1−|y_s−q_y|),
        (x_s, y_s) = (x + flow[0](y, x), y + flow[1](y, x)),

    i.e. ``sampler.bilinear_forward`` on the grid ``sampler.flow_to_grid(flow)``, so the
    synthetic ground truth is checked with the warp the model uses. An integer flow copies
    pixels exactly. Host-side NumPy, float64 inside.

    Args:
        img: (..., H, W) array.
        flow: (2, H, W) in pixels, channel 0 = x, channel 1 = y.
    Returns:
        (..., H, W), img's dtype if floating, else float32.
    """
    img = np.asarray(img)
    flow = np.asarray(flow, np.float64)
    h, w = img.shape[-2:]
    if flow.shape != (2, h, w):
        raise ValueError(f"flow must have shape (2, {h}, {w}) for an image of shape "
                         f"{img.shape}, got {flow.shape}")
    maps = img.reshape(1, -1, h, w).astype(np.float64)            # every map, one grid
    out, _ = bilinear_forward(maps, flow_to_grid(flow[None]))
    dtype = img.dtype if img.dtype.kind == "f" else np.float32
    return out.reshape(img.shape).astype(dtype)
