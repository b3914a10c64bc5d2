"""Warm starts of the inner iterate across outer steps, Ji et al. 2021 Alg. 1 (ITD-BiO and AID-BiO).

Ji et al. 2021 runs the inner loop of outer step k from the previous step's last iterate,

    y_k^0 = y_{k−1}^T,   y_k^t = y_k^{t−1} − α ∇_y g(x_k, y_k^{t−1}),   t = 1..T,

and differentiates only through the T steps of step k: the start y_{k−1}^T is a constant of
step k (Alg. 1 line 3; ITD-BiO back-propagates through the loop, Prop. 2; AID-BiO solves the
linear system at y_k^T, eq. 3). :class:`WarmStart` adds this to any estimator ``base``: its
state holds φ = y_{k−1}^T and the base's own state; each call hands ``base`` the problem with
V(θ, T) = φ (so V does not depend on θ) and keeps the new y_k^T for the next call.

Where y_k^T comes from. An :class:`~ablo.estimators.unrolled.ExactUnrolled` base (``Reverse``,
``Recompute``, ``Checkpointed``) is split into its forward and backward halves and its forward
pass's s_r is kept: no extra work. Any other base is called whole and y_k^T is recomputed by
one more inner run of r steps, charged as r gradient evaluations in the Cost.

The warm start assumes one task per outer step (the dataset of Ji et al. 2021's experiments): with a
meta-batch of several tasks :meth:`Estimator.estimate_batch` averages the tasks' iterates.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import NamedTuple

from ..cost import cost
from ..problem import constant_init
from .base import Estimator, charge_v, outer_cotangents, with_finite_flag
from .implicit import AID, aid_cg
from .unrolled import ExactUnrolled, Reverse


class WarmState(NamedTuple):
    """y_{k−1}^T (``phi``, the inner start of the next call) and the base estimator's state."""

    phi: object
    base: object


@dataclass(frozen=True)
class WarmStart(Estimator):
    """``base`` run from the previous outer step's inner iterate (Ji et al. 2021 Alg. 1 line 3).
    ``WarmStart(Reverse())`` is ITD-BiO (registered as ``itd-bio``). Cost: the base's, plus r
    gradient evaluations for a base that is not ExactUnrolled (the inner run giving y_k^T)."""

    base: Estimator = field(default_factory=Reverse)

    def __post_init__(self):
        if not isinstance(self.base, Estimator):
            raise ValueError(f"base must be an estimator (e.g. Reverse(), Truncated(K=5)); got {self.base!r}")
        if isinstance(self.base, AID):
            raise ValueError("AID estimators warm-start y themselves (AID(..., warm_start=True), registered as "
                             "aid-bio); do not wrap them in WarmStart")

    @property
    def name(self) -> str:
        """``itd-bio`` for the exact reverse base (Ji et al. 2021's ITD-BiO), else ``warm-<base>``."""
        return "itd-bio" if self.base == Reverse() else f"warm-{self.base.name}"

    @property
    def random_branch(self) -> bool:
        return self.base.random_branch

    def check(self, problem) -> None:
        self.base.check(problem)

    def init(self, problem, theta, task):
        """y_0 = params(s_0) from the problem's own start V(θ, T), and the base's state."""
        phi = problem.optimizer.params(problem.initial_state(theta, task))
        return WarmState(phi, self.base.init(problem, theta, task))

    def describe_state(self, state) -> dict:
        return self.base.describe_state(state.base)

    def estimate(self, problem, theta, task, state, key):
        """The base's estimate on the problem started at the carried y_{k−1}^T; the new state
        carries this call's y_k^T."""
        self.check(problem)
        warm = dataclasses.replace(problem, init=constant_init(state.phi))
        if isinstance(self.base, ExactUnrolled):
            s_r, aux = self.base.forward(warm, theta, task)
            g = self.base.backward(warm, theta, task, aux, *outer_cotangents(warm, theta, s_r, task))
            c = with_finite_flag(g, charge_v(self.base.expected_cost(warm.steps), warm, theta, task), s_r)
            return g, WarmState(warm.optimizer.params(s_r), state.base), c
        g, base_state, c = self.base.estimate(warm, theta, task, state.base, key)
        s_r = warm.run(theta, task)
        c = with_finite_flag(g, c + cost(grad_evals=warm.steps), s_r)
        return g, WarmState(warm.optimizer.params(s_r), base_state), c


def itd_bio() -> WarmStart:
    """ITD-BiO (Ji et al. 2021 Alg. 1 with the hypergradient of Prop. 2): the inner loop warm-started
    from y_{k−1}^T and differentiated exactly by reverse mode through its T steps."""
    return WarmStart(Reverse())


def aid_bio(tol: float = 1e-10, maxiter: int = 10) -> AID:
    """AID-BiO (Ji et al. 2021 Alg. 1 with eq. 3): warm starts of both the inner iterate
    (y_k^0 = y_{k−1}^T) and the linear system (v_k^0 = v_{k−1}^N), v by ``maxiter`` CG steps."""
    return aid_cg(tol=tol, maxiter=maxiter, warm_start=True)
