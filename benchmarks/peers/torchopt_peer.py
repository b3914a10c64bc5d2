"""TorchOpt: "reverse" unrolls r steps of its differentiable MetaSGD over a module holding φ;
"aid-cg" is implicit differentiation (torchopt.diff.implicit.custom_root) at φ_r with N CG
iterations (spec["cg_iters"]) on ∇²_φ L_in v = ∇_φ L_out."""

import torch
import torchopt
from _common import main
from _torch import hypergrad, setup
from higher_peer import Params


def hypergradient(spec, data):
    theta, phi0, inner, outer, lr = setup(spec, data)
    r = int(spec["r"])
    if spec["method"] == "reverse":
        def f():
            model = Params(phi0)
            opt = torchopt.MetaSGD(model, lr=lr)
            for _ in range(r):
                opt.step(inner(theta, model()))
            return hypergrad(outer(model()), theta).numpy()
        return f
    if spec["method"] != "aid-cg":
        raise ValueError(f"torchopt_peer does 'reverse' and 'aid-cg'; got {spec['method']!r}")

    def stationary(phi, th):  # ∇_φ L_in, written with torch.func: torchopt differentiates it with functorch
        return torch.func.grad(lambda p: inner(th, list(p)))(tuple(phi))

    solve = torchopt.linear_solve.solve_cg(maxiter=int(spec["cg_iters"]), rtol=0.0, atol=0.0)

    @torchopt.diff.implicit.custom_root(stationary, argnums=1, solve=solve)
    def solver(phi, th):
        phi = [p.detach().requires_grad_(True) for p in phi]
        with torch.enable_grad():
            for _ in range(r):
                g = torch.autograd.grad(inner(th.detach(), phi), phi)
                phi = [(p - lr * gi).detach().requires_grad_(True) for p, gi in zip(phi, g)]
        return tuple(p.detach() for p in phi)

    def f():
        phi = solver(tuple(phi0), theta)
        return hypergrad(outer(list(phi)), theta).numpy()

    return f


if __name__ == "__main__":
    main(hypergradient)
