"""Plain PyTorch autograd: "reverse" unrolls r GD steps with create_graph=True and
back-propagates the outer loss to θ; "fom" runs the steps without a graph and keeps only
∂L_out/∂θ (V is constant). spec["variant"]: "F.linear" (default) or "matmul" (x @ W + b); any
other value is an error (a label that matched neither once ran the matmul form as "F.linear")."""

import torch
from protocol import main
from torch_problem import Data, apply, check_form, hypergrad, initial_params


def hypergradient(spec, data):
    d = Data(data)
    r, exact, form = int(spec["r"]), spec["method"] == "reverse", check_form(spec.get("variant") or "F.linear")
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
