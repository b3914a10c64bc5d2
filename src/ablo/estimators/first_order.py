"""The first-order method, FOM (Likhosherstov et al. 2021 Alg. 3, eq. 10-11): drop every second-order term,
G_FO = ∂L_out/∂θ + (∂V/∂θ)ᵀ ∂L_out/∂φ at φ_r. O(1) memory, r + 1 gradient evaluations,
biased (Theorem 2 shows outer SGD with it can stall far from a stationary point)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..cost import cost
from .base import TwoPass, charge_v, finish, outer_cotangents, with_finite_flag


def first_order(problem, theta, task, s_r):
    """G_FO from the last inner state (one outer gradient evaluation, one JVP of V)."""
    b_theta, b_s = outer_cotangents(problem, theta, s_r, task)
    return finish(problem, theta, task, b_theta, b_s), (b_theta, b_s)


@dataclass(frozen=True)
class FOM(TwoPass):
    """The first-order method (Likhosherstov et al. 2021 Alg. 3): run the r inner steps, then
    G_FO = ∂L_out/∂θ + (∂V/∂θ)ᵀ ∂L_out/∂φ at φ_r. Biased, O(1) memory; cost r + 1 gradient
    evaluations (+ one JVP of V when V depends on θ).

    Takes no parameters.

    Example:
        ```python
        g, state, cost = ablo.hypergradient(problem, ablo.FOM(), theta, task)
        ```
    """

    name: ClassVar[str] = "fom"

    def forward_pass(self, problem, theta, task, state, key):
        """The r inner steps, nothing stored."""
        return problem.run(theta, task), None

    def backward_pass(self, problem, theta, task, state, key, s_r, residuals):
        """G_FO of eq. 10-11 with its Cost."""
        g, _ = first_order(problem, theta, task, s_r)
        c = self.expected_cost(problem.steps)
        return g, state, with_finite_flag(g, charge_v(c, problem, theta, task), s_r)

    def expected_cost(self, r):
        """r + 1 gradient evaluations, one JVP of V (none when V does not depend on θ)."""
        return cost(grad_evals=r + 1, jvps=1, states=1)
