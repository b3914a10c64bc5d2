"""TorchOpt: "reverse" unrolls r steps of its differentiable MetaSGD over the nn.Linear network;
"aid-cg" is implicit differentiation (torchopt.diff.implicit.custom_root) at φ_r with N CG
iterations (spec["cg_iters"], tolerance 0) on ∇²_φ L_in v = ∇_φ L_out, the network written with
F.linear for torch.func."""

import torch
import torchopt
from protocol import main
from torch_problem import Data, Net, apply, hypergrad, initial_params


def hypergradient(spec, data):
    d = Data(data)
    r = int(spec["r"])
    if spec["method"] == "reverse":
        def f():
            model = Net(d)
            opt = torchopt.MetaSGD(model, lr=d.lr)
            for _ in range(r):
                opt.step(d.inner(d.theta, model(d.x_tr), model.parameters()))
            return hypergrad(d.outer(model(d.x_val)), d.theta).numpy()
        return f
    if spec["method"] != "aid-cg":
        raise ValueError(f"torchopt_peer does 'reverse' and 'aid-cg'; got {spec['method']!r}")

    def inner(th, params):
        return d.inner(th, apply(params, d.x_tr, d.act), params)

    def stationary(params, th):  # ∇_φ L_in, written with torch.func: torchopt differentiates it with functorch
        return torch.func.grad(lambda p: inner(th, list(p)))(tuple(params))

    solve = torchopt.linear_solve.solve_cg(maxiter=int(spec["cg_iters"]), rtol=0.0, atol=0.0)

    @torchopt.diff.implicit.custom_root(stationary, argnums=1, solve=solve)
    def solver(params, th):
        params = [p.detach().requires_grad_(True) for p in params]
        with torch.enable_grad():
            for _ in range(r):
                g = torch.autograd.grad(inner(th.detach(), params), params)
                params = [(p - d.lr * gi).detach().requires_grad_(True) for p, gi in zip(params, g)]
        return tuple(p.detach() for p in params)

    def f():
        params = solver(tuple(initial_params(d)), d.theta)
        return hypergrad(d.outer(apply(list(params), d.x_val, d.act)), d.theta).numpy()

    return f


if __name__ == "__main__":
    main(hypergradient)
