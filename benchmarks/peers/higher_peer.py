"""higher (facebookresearch/higher): exact reverse through r steps of its differentiable SGD
(innerloop_ctx), the hypergradient read off θ."""

import higher
import torch
from _common import main
from _torch import hypergrad, setup


class Params(torch.nn.Module):
    def __init__(self, phi0):
        super().__init__()
        self.p = torch.nn.ParameterList([torch.nn.Parameter(p.clone()) for p in phi0])

    def forward(self):
        return list(self.p)


def hypergradient(spec, data):
    theta, phi0, inner, outer, lr = setup(spec, data)
    r = int(spec["r"])
    if spec["method"] != "reverse":
        raise ValueError(f"higher_peer does 'reverse'; got {spec['method']!r}")
    model = Params(phi0)
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    def f():
        with higher.innerloop_ctx(model, opt, copy_initial_weights=True) as (fmodel, diffopt):
            for _ in range(r):
                diffopt.step(inner(theta, fmodel()))
            return hypergrad(outer(fmodel()), theta).numpy()

    return f


if __name__ == "__main__":
    main(hypergradient)
