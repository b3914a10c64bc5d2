"""higher (facebookresearch/higher): exact reverse through r steps of its differentiable SGD
(innerloop_ctx) over the nn.Linear network, the hypergradient read off θ."""

import higher
import torch
from protocol import main
from torch_problem import Data, Net, hypergrad


def hypergradient(spec, data):
    d = Data(data)
    r = int(spec["r"])
    if spec["method"] != "reverse":
        raise ValueError(f"higher_peer does 'reverse'; got {spec['method']!r}")
    model = Net(d)
    opt = torch.optim.SGD(model.parameters(), lr=d.lr)

    def f():
        with higher.innerloop_ctx(model, opt, copy_initial_weights=True) as (fmodel, diffopt):
            for _ in range(r):
                diffopt.step(d.inner(d.theta, fmodel(d.x_tr), fmodel.parameters()))
            return hypergrad(d.outer(fmodel(d.x_val)), d.theta).numpy()

    return f


if __name__ == "__main__":
    main(hypergradient)
