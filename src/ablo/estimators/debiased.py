"""The unbiased first-order method, UFOM (paper 000 Alg. 4, eq. 12-13):

    G_UFO = G_FO + (ξ/q)(G_exact − G_FO),   ξ ~ Bernoulli(q),   E_ξ[G_UFO] = G_exact.

The exact branch is any memory-bounded exact estimator (``Recompute``: O(1) memory, or
``Checkpointed(M)``: O(M) memory) and shares the forward pass with FOM. Expected cost
(Proposition 1, with ``Recompute``): r + 1 + q r(r−1)/2 gradient evaluations and q r HVPs;
the cost record reports the counts of the branch actually taken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import jax
import jax.numpy as jnp

from ..cost import cost
from .base import Estimator, tree_add, tree_scale, tree_sub, with_finite_flag
from .first_order import first_order
from .unrolled import ExactUnrolled, Recompute, Reverse


def check_q(q) -> None:
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 < float(q) <= 1.0:
        raise ValueError(f"q (probability of the exact branch) must be in (0, 1]; got {q!r}. "
                         "q = 1 is the exact estimator; use FOM for q = 0.")


def check_exact(exact) -> None:
    if not isinstance(exact, ExactUnrolled) or isinstance(exact, Reverse):
        raise ValueError(f"exact must be a memory-bounded exact estimator (Recompute() or Checkpointed(M)); "
                         f"got {exact!r}")


def ufom_step(problem, theta, task, exact: ExactUnrolled, q, key):
    """One draw of eq. 12-13 for a (possibly traced) q. Returns (G_UFO, G_FO, G_exact or G_FO,
    ξ, Cost): the last two let adaptive schemes update their statistics (eq. 23-24)."""
    s_r, aux = exact.forward(problem, theta, task)
    g_fo, (b_theta, b_s) = first_order(problem, theta, task, s_r)
    xi = jax.random.bernoulli(key, q)
    r = problem.steps
    c_ex = exact.backward_cost(r)

    def exact_branch(_):
        g_ex = exact.backward(problem, theta, task, aux, b_theta, b_s)
        return tree_add(g_fo, tree_scale(1.0 / q, tree_sub(g_ex, g_fo))), g_ex

    g, g_ex = jax.lax.cond(xi, exact_branch, lambda _: (g_fo, g_fo), None)
    x = xi.astype(jnp.float32)
    # FOM's r + 1 gradients and V-JVP always; the exact backward's counts only when ξ = 1.
    # The forward of the exact branch (checkpoints) is held either way.
    c = cost(grad_evals=r + 1 + x * c_ex.grad_evals, hvps=x * c_ex.hvps, jvps=1 + x * c_ex.jvps,
             states=c_ex.states)
    return g, g_fo, g_ex, xi, with_finite_flag(g, c)


@dataclass(frozen=True)
class UFOM(Estimator):
    """UFOM with a fixed q ∈ (0, 1] (paper 000 Alg. 4)."""

    q: float = 0.1
    exact: ExactUnrolled = field(default_factory=Recompute)
    name: ClassVar[str] = "ufom"
    random_branch: ClassVar[bool] = True

    def __post_init__(self):
        check_q(self.q)
        check_exact(self.exact)

    def check(self, problem):
        self.exact.check(problem)

    def describe_state(self, state):
        return {"q": float(self.q)}

    def estimate(self, problem, theta, task, state, key):
        self.check(problem)
        g, _, _, _, c = ufom_step(problem, theta, task, self.exact, self.q, key)
        return g, state, c
