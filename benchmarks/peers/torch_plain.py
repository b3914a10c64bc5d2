"""Plain PyTorch autograd: "reverse" unrolls r GD steps with create_graph=True and
back-propagates the outer loss to θ; "fom" runs the steps without a graph and keeps only
∂L_out/∂θ (V is constant). spec["variant"]: "linear" (F.linear, default) or "matmul" (x @ W + b)."""

import torch
from _common import main
from _torch import Data, apply, hypergrad, initial_params


def hypergradient(spec, data):
    d = Data(data)
    r, exact, form = int(spec["r"]), spec["method"] == "reverse", spec.get("variant") or "linear"
    if spec["method"] not in ("reverse", "fom"):
        raise ValueError(f"torch_plain does 'reverse' and 'fom'; got {spec['method']!r}")

    def f():
        params = [p.requires_grad_(True) for p in initial_params(d, form)]
        for _ in range(r):
            g = torch.autograd.grad(d.inner(d.theta, apply(params, d.x_tr, d.act, form), params), params, create_graph=exact)
            params = [p - d.lr * gi for p, gi in zip(params, g)]
            if not exact:
                params = [p.detach().requires_grad_(True) for p in params]
        return hypergrad(d.outer(apply(params, d.x_val, d.act, form)), d.theta).numpy()

    return f


if __name__ == "__main__":
    main(hypergradient)
