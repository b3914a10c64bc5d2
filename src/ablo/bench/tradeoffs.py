"""The table of docs/estimators-tradeoffs.md: UFOM's exact branch → memory → its cost → q* →
UFOM's expected cost, on one problem (MAML-style: a tanh regression, d = 256 inner parameters,
learned start φ_0 = θ; GD with r = 100, 32 random tasks, float64).

D² and V² (Likhosherstov et al. 2021 eq. 14, 16) are sampled at θ_0 from (G_FO, G_exact) pairs; unit costs
C1 = C2 = 1 (function calls). Memory: the states the branch holds (its cost record) and XLA's
temp bytes for one UFOM call with that branch.

    python -m ablo.bench tradeoffs
"""

import argparse

import jax
import jax.numpy as jnp

from .. import estimators, theory
from ..inner import gd
from ..problem import BilevelProblem

D, N, R, TASKS = 256, 64, 100, 32


def inner_loss(theta, phi, task):
    x, y = task
    return 0.5 * jnp.mean((jnp.tanh(x @ phi) - y) ** 2) + 0.0005 * jnp.sum(phi ** 2)


def outer_loss(theta, phi, task):
    x, y = task
    return jnp.mean((jnp.tanh(x @ phi) - 0.9 * y) ** 2)


def make_task(key):
    kx, kw, ke = jax.random.split(key, 3)
    x = jax.random.normal(kx, (N, D)) / jnp.sqrt(D)
    return x, jnp.tanh(x @ jax.random.normal(kw, (D,))) + 0.1 * jax.random.normal(ke, (N,))


def main(argv: list) -> None:
    """The ``tradeoffs`` command (float64: it switches ``jax_enable_x64`` on in this process)."""
    argparse.ArgumentParser(prog="python -m ablo.bench tradeoffs", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    p = BilevelProblem(inner_loss, outer_loss, gd(0.05), R)
    theta = jnp.zeros(D)
    tasks = jax.vmap(make_task)(jax.random.split(jax.random.PRNGKey(0), TASKS))
    per_task = lambda est: jax.jit(jax.vmap(lambda t: est.estimate(p, theta, t, (), None)[0]))(tasks)
    d2, v2 = theory.bias_variance(per_task(estimators.FOM()), per_task(estimators.Reverse()))
    rows = []
    t_ref = theory.expected_time(1.0, d2, v2, *theory.cost_model(R, exact=estimators.Reverse()))
    for label, exact in (("Recompute()", estimators.Recompute()), ("Binomial(s=3)", estimators.Binomial(s=3)),
                         ("Binomial() (s = 7)", estimators.Binomial()), ("Checkpointed() (M = 10)", estimators.Checkpointed()),
                         ("Reverse()", estimators.Reverse())):
        back = exact.backward_cost(R)
        c_det, c_rnd = theory.cost_model(R, exact=exact)
        q = theory.q_star(d2, v2, c_det, c_rnd)
        ufom = estimators.UFOM(q=q, exact=exact)
        temp = jax.jit(lambda th, t, k: ufom.estimate(p, th, t, (), k)).lower(
            theta, jax.tree_util.tree_map(lambda x: x[0], tasks), jax.random.PRNGKey(0)).compile(
        ).memory_analysis().temp_size_in_bytes
        e = ufom.expected_cost(R)
        rows.append(f"| {label} | {int(back.states)} | {temp / 1024:.0f} | {int(back.grad_evals)} + {int(back.hvps)} "
                    f"= {c_rnd:.0f} | {c_det + c_rnd:.0f} | {q:.3f} | "
                    f"{float(e.grad_evals + e.hvps):.0f} | "
                    f"{theory.expected_time(q, d2, v2, c_det, c_rnd) / t_ref:.2f} |")
    print(f"D² = {d2:.3g}, V² = {v2:.3g}, r = {R}, C_det = r + 1 = {R + 1} (counts: gradient evaluations + HVPs)\n")
    print("| exact branch | states held | temp KiB (one UFOM call) | C_rnd = backward gradients + HVPs "
          "| exact alone (C_det + C_rnd) | q* | UFOM expected (C_det + q* C_rnd) | time to a precision, eq. 19 (exact Reverse = 1) |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
