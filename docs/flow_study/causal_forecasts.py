"""How far can a causal flow forecast go on the held-out footage? Variants of Horn–Schunck's
forecast, pooled and per video, MSE over copy-last's, steps t ≥ 2 (as evaluate.forecast_scores),
on the validation and test clips of the video preset (flow study section 11.4):

    python docs/flow_study/causal_forecasts.py

x_t is warped by: Horn–Schunck's flow of t−1 → t (the forecast), that flow × 0.25, 0.5, 0.75,
its crop mean (a pan), the mean of all past pairs' flows (and its crop mean)
for reference the
oracle (t → t+1) and its crop mean, and a blur of x_t with no flow.
"""
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
import stvae_np.video as V  # noqa: E402
from stvae_np.model import Config  # noqa: E402
from stvae_np.classical import horn_schunck, _warp  # noqa: E402
from stvae_np import metrics as M  # noqa: E402
T0 = M.FLOW_T_MIN
cfg = Config.video()
src, test, val, desc = V.video_data("samples", cfg, 64, 10, progress=False)
share = np.diff(np.linspace(0, 64, 4).round().astype(int))
edges = np.concatenate([[0], np.cumsum(share)])
def blur(img, s):
    r = int(np.ceil(3*s))
    x = np.arange(-r, r+1)
    k = np.exp(-x**2/(2*s*s))
    k /= k.sum()
    p = np.pad(img, ((0,0),(r,r),(r,r)), mode="edge")
    p = sum(k[i]*p[:, :, i:i+img.shape[2]] for i in range(len(k)))
    return sum(k[i]*p[:, i:i+img.shape[1]] for i in range(len(k)))
for name, c in (("val", val), ("test", test)):
    f = np.asarray(c.frames if hasattr(c, "frames") else c, np.float64)[:, :, 0]
    n, t, h, w = f.shape
    hs = horn_schunck(f[:, :-1], f[:, 1:])             # (n, t-1, 2, h, w): pair s = s -> s+1
    xt, tgt = f[:, T0:-1], f[:, T0+1:]
    def forecast(flow):                                  # flow (n, t-1-T0, 2, h, w) for steps T0..t-2
        return _warp(xt.reshape(-1, h, w), flow.reshape(-1, 2, h, w)).reshape(tgt.shape)
    cands = {}
    prev = hs[:, T0-1:-1]                                # flow of t-1 -> t for each step t
    cands["HS forecast"] = forecast(prev)
    for s in (0.25, 0.5, 0.75):
        cands[f"HS forecast x{s}"] = forecast(s * prev)
    cands["crop-mean HS forecast"] = forecast(np.broadcast_to(prev.mean(axis=(3, 4), keepdims=True), prev.shape))
    cum = np.cumsum(hs, axis=1) / np.arange(1, t)[None, :, None, None, None]   # mean of pairs 0..s
    past = cum[:, T0-1:-1]
    cands["past-mean HS forecast"] = forecast(past)
    cands["past-mean crop-mean forecast"] = forecast(np.broadcast_to(past.mean(axis=(3, 4), keepdims=True), past.shape))
    cands["HS oracle"] = forecast(hs[:, T0:])
    cands["crop-mean HS oracle"] = forecast(np.broadcast_to(hs[:, T0:].mean(axis=(3, 4), keepdims=True), prev.shape))
    for s in (0.5, 1.0):
        cands[f"blur {s} of x_t (no flow)"] = blur(xt.reshape(-1, h, w), s).reshape(tgt.shape)
    copy = ((xt - tgt) ** 2)
    print(f"--- {name}: pooled, then bikes / bigbuckbunny / carphone")
    for k, p in cands.items():
        e = (p - tgt) ** 2
        per = [e[a:b].mean() / copy[a:b].mean() for a, b in zip(edges[:-1], edges[1:])]
        print(f"{k:32s} {e.mean()/copy.mean():.3f}   " + " ".join(f"{x:.3f}" for x in per))
