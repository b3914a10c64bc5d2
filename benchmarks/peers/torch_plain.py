"""Plain PyTorch autograd, the floor: "reverse" unrolls r GD steps with create_graph=True and
back-propagates the outer loss to θ; "fom" runs the steps without a graph and keeps only
∂L_out/∂θ (+ nothing through V, which is constant)."""

import torch
from _common import main
from _torch import hypergrad, setup


def hypergradient(spec, data):
    theta, phi0, inner, outer, lr = setup(spec, data)
    r, exact = int(spec["r"]), spec["method"] == "reverse"
    if spec["method"] not in ("reverse", "fom"):
        raise ValueError(f"torch_plain does 'reverse' and 'fom'; got {spec['method']!r}")

    def f():
        phi = [p.clone().requires_grad_(True) for p in phi0]
        for _ in range(r):
            g = torch.autograd.grad(inner(theta, phi), phi, create_graph=exact)
            phi = [p - lr * gi for p, gi in zip(phi, g)]
            if not exact:
                phi = [p.detach().requires_grad_(True) for p in phi]
        return hypergrad(outer(phi), theta).numpy()

    return f


if __name__ == "__main__":
    main(hypergradient)
