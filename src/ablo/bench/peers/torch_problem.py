"""ablo.bench's problems in PyTorch (float32, the same .npz): data hypercleaning
(ablo.problems.hypercleaning) with inner loss mean_i σ(θ_i) CE_i + λ Σ_layers ‖W‖² (weights, not
biases), outer loss validation CE, inner GD with step α, for the dense network
(ablo.models.mlp_apply) stored as w0, b0, w1, ... (one layer: the linear model), with the data's
``activation`` (relu or tanh) between layers.

Written the way PyTorch's documentation writes a dense layer: ``nn.Linear`` (modules, for higher
and TorchOpt) or ``F.linear`` with the weight stored (out, in) (functional, plain autograd). The
``matmul`` form ``x @ W + b`` with W stored (in, out) is also offered, labelled as such: it is
what a transcription of the JAX code gives, and on hypercleaning it is about 3x slower in
PyTorch (docs/benchmarks.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Forms of the functional network, as the driver labels them.
FORMS = ("F.linear", "matmul")


class Data:
    """Tensors of the problem: ``x_tr, y_tr, x_val, y_val, theta`` (a leaf requiring grad), ``lr``,
    ``l2``, ``layers``, the initial [(W (in, out), b)] as stored, and ``activation``, the hidden
    layers' nonlinearity as a module class (``nn.ReLU`` or ``nn.Tanh``)."""

    def __init__(self, data):
        torch.set_num_threads(1)  # single-threaded like every worker (ablo.bench.worker.ENV)
        for k in ("x_tr", "x_val"):
            setattr(self, k, torch.from_numpy(data[k]))
        self.y_tr, self.y_val = (torch.from_numpy(data[k]).long() for k in ("y_tr", "y_val"))
        self.theta = torch.from_numpy(data["theta"]).clone().requires_grad_(True)
        self.lr, self.l2 = float(data["lr"]), float(data["l2"])
        n = sum(1 for k in data if k.startswith("w") and k[1:].isdigit())
        self.layers = [(torch.from_numpy(data[f"w{i}"]), torch.from_numpy(data[f"b{i}"])) for i in range(n)]
        name = str(data.get("activation", "relu"))
        self.activation = {"relu": nn.ReLU, "tanh": nn.Tanh}[name]  # the module, for nn.Linear networks
        self.act = {"relu": torch.relu, "tanh": torch.tanh}[name]  # the function, for the functional form

    def inner(self, theta, logits, params):
        """``params``: [W, b, W, b, ...] in layer order (as ``Module.parameters()`` of ``Net``)."""
        ce = F.cross_entropy(logits, self.y_tr, reduction="none")
        return (torch.sigmoid(theta) * ce).mean() + self.l2 * sum((w * w).sum() for w in list(params)[::2])

    def outer(self, logits):
        return F.cross_entropy(logits, self.y_val)


def check_form(form: str) -> str:
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}; got {form!r}")
    return form


def initial_params(d: Data, form: str = "F.linear") -> list:
    """[W, b, W, b, ...] as fresh tensors: W (out, in) for ``F.linear``, (in, out) for ``matmul``."""
    out = []
    for w, b in d.layers:
        out += [(w.T if check_form(form) == "F.linear" else w).contiguous().clone(), b.clone()]
    return out


def apply(params: list, x, activation, form: str = "F.linear"):
    """Logits of the functional network: ``activation`` after every layer but the last."""
    n = len(params) // 2
    for i in range(n):
        w, b = params[2 * i], params[2 * i + 1]
        x = F.linear(x, w, b) if check_form(form) == "F.linear" else x @ w + b
        if i < n - 1:
            x = activation(x)
    return x


class Net(nn.Module):
    """The same network as ``nn.Linear`` layers and ``d.activation`` modules, weights copied from the data."""

    def __init__(self, d: Data):
        super().__init__()
        mods = []
        for i, (w, b) in enumerate(d.layers):
            lin = nn.Linear(w.shape[0], w.shape[1])
            with torch.no_grad():
                lin.weight.copy_(w.T)
                lin.bias.copy_(b)
            mods += [lin] + ([d.activation()] if i < len(d.layers) - 1 else [])
        self.net = nn.Sequential(*mods)

    def forward(self, x):
        return self.net(x)


def hypergrad(loss, theta):
    (g,) = torch.autograd.grad(loss, theta, allow_unused=True)
    return torch.zeros_like(theta) if g is None else g
