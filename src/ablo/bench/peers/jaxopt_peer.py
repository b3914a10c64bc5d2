"""jaxopt: its GradientDescent (fixed step, no acceleration, tol 0 so it runs exactly r
steps) on ablo.bench's own losses. "reverse": implicit_diff=False, jaxopt differentiates the
unrolled loop; "aid-cg": implicit_diff=True with solve_cg for N iterations (spec["cg_iters"]) and
a tolerance no float32 residual reaches, as ablo's AID-CG and its hand-written reference."""

import functools

import jax
import jaxopt
import numpy as np
from protocol import main

from ablo.bench import build, load_data


def hypergradient(spec, data):
    problem, theta, task = build(spec["problem"], data, int(spec["r"]))
    implicit = {"reverse": False, "aid-cg": True}.get(spec["method"])
    if implicit is None:
        raise ValueError(f"jaxopt_peer does 'reverse' and 'aid-cg'; got {spec['method']!r}")
    solve = functools.partial(jaxopt.linear_solve.solve_cg, maxiter=int(spec.get("cg_iters", 10)), tol=1e-30)
    phi0 = problem.init(theta, task)

    # data and φ_0 as arguments: with φ_0 = 0 closed over as a constant, jaxopt 0.8.5's unrolled
    # hypergradient on hypercleaning is NaN in every entry (jax 0.10.2); passed in, it is finite
    def objective(th, tk, init):
        solver = jaxopt.GradientDescent(fun=lambda phi, t: problem.inner_loss(t, phi, tk), stepsize=float(data["lr"]),
                                        maxiter=int(spec["r"]), tol=0.0, acceleration=False,
                                        implicit_diff=implicit, implicit_diff_solve=solve)
        return problem.outer_loss(th, solver.run(init, th).params, tk)

    grad = jax.jit(jax.grad(objective))

    def f():
        return np.asarray(jax.block_until_ready(grad(theta, task, phi0)))

    return f


if __name__ == "__main__":
    main(hypergradient, load=load_data)
