"""The benchmark problems of ablo.bench written in PyTorch (float32, same data and constants):
hypercleaning (φ = (W, b), inner mean σ(θ_i) CE_i + 0.001‖W‖²) and newsgroups (φ = W, inner
CE + ½ mean(W² e^λ)); outer loss validation CE; φ_0 = 0; inner GD with step data["lr"]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def setup(spec, data):
    """-> (θ leaf requiring grad, φ_0 list, inner(θ, φ), outer(φ), lr)."""
    torch.set_num_threads(1)  # single-threaded like every worker (ablo.bench.ENV)
    t = {k: torch.from_numpy(data[k]) for k in ("x_tr", "x_val")}
    y_tr, y_val = (torch.from_numpy(data[k]).long() for k in ("y_tr", "y_val"))
    theta = torch.from_numpy(data["theta"]).clone().requires_grad_(True)
    d, c = t["x_tr"].shape[1], int(data["n_classes"])
    if spec["problem"] == "hypercleaning":
        phi0 = [torch.zeros(d, c), torch.zeros(c)]
        logits = lambda phi, x: x @ phi[0] + phi[1]

        def inner(th, phi):
            ce = F.cross_entropy(logits(phi, t["x_tr"]), y_tr, reduction="none")
            return (torch.sigmoid(th) * ce).mean() + 1e-3 * (phi[0] ** 2).sum()
    else:
        phi0 = [torch.zeros(d, c)]
        logits = lambda phi, x: x @ phi[0]

        def inner(th, phi):
            return F.cross_entropy(logits(phi, t["x_tr"]), y_tr) + 0.5 * (phi[0] ** 2 * torch.exp(th)[:, None]).mean()

    outer = lambda phi: F.cross_entropy(logits(phi, t["x_val"]), y_val)
    return theta, phi0, inner, outer, float(data["lr"])


def hypergrad(loss, theta):
    (g,) = torch.autograd.grad(loss, theta, allow_unused=True)
    return torch.zeros_like(theta) if g is None else g
