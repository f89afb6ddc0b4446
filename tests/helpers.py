"""Small clip makers shared by the test files."""
import numpy as np


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
