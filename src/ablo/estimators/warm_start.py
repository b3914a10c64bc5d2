"""Warm starts of the inner iterate across outer steps, Ji et al. 2021 Alg. 1 (ITD-BiO and AID-BiO).

Ji et al. 2021 runs the inner loop of outer step k from the previous step's last iterate,

    y_k^0 = y_{k−1}^T,   y_k^t = y_k^{t−1} − α ∇_y g(x_k, y_k^{t−1}),   t = 1..T,

and differentiates only through the T steps of step k: the start y_{k−1}^T is a constant of
step k (Alg. 1 line 3; ITD-BiO back-propagates through the loop, Prop. 2; AID-BiO solves the
linear system at y_k^T, eq. 3). :class:`WarmStart` adds this to any estimator ``base``: its
state holds φ = y_{k−1}^T and the base's own state; each call hands ``base`` the problem with
V(θ, T) = φ (so V does not depend on θ) and keeps the new y_k^T for the next call.

Where y_k^T comes from: the base's ``forward_pass`` (its inner loop) gives s_r, which is kept,
and its ``backward_pass`` the estimate. For every estimator of this package that is no extra
work; an estimator that implements ``estimate`` only is called whole after one more inner run
of r steps (the default passes of :class:`~ablo.estimators.base.Estimator`), charged as r
gradient evaluations in the Cost.

The warm start assumes one task per outer step (the dataset of Ji et al. 2021's experiments): with a
meta-batch of several tasks :meth:`Estimator.estimate_batch` averages the tasks' iterates.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import NamedTuple

from ..problem import constant_init
from .base import Estimator, TwoPass, with_finite_flag
from .implicit import AID, aid_cg
from .unrolled import Reverse


class WarmState(NamedTuple):
    """y_{k−1}^T (``phi``, the inner start of the next call) and the base estimator's state."""

    phi: object
    base: object


@dataclass(frozen=True)
class WarmStart(TwoPass):
    """``base`` run from the previous outer step's inner iterate (Ji et al. 2021 Alg. 1 line 3).
    ``WarmStart(Reverse())`` is ITD-BiO (registered as ``itd-bio``). Cost: the base's (plus r
    gradient evaluations for a base without its own forward pass)."""

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
        """The base's."""
        return self.base.random_branch

    @property
    def needs_key(self) -> bool:
        """The base's."""
        return self.base.needs_key

    def check(self, problem) -> None:
        self.base.check(problem)

    def init(self, problem, theta, task):
        """y_0 = params(s_0) from the problem's own start V(θ, T), and the base's state."""
        phi = problem.optimizer.params(problem.initial_state(theta, task))
        return WarmState(phi, self.base.init(problem, theta, task))

    def describe_state(self, state) -> dict:
        return self.base.describe_state(state.base)

    def warm(self, problem, state):
        """The problem started at the carried y_{k−1}^T (V independent of θ)."""
        return dataclasses.replace(problem, init=constant_init(state.phi))

    def forward_pass(self, problem, theta, task, state, key):
        """The base's forward pass from the carried y_{k−1}^T."""
        return self.base.forward_pass(self.warm(problem, state), theta, task, state.base, key)

    def backward_pass(self, problem, theta, task, state, key, s_r, residuals):
        """The base's backward pass; the new state carries this call's y_k^T = params(s_r)."""
        warm = self.warm(problem, state)
        g, base_state, c = self.base.backward_pass(warm, theta, task, state.base, key, s_r, residuals)
        return g, WarmState(warm.optimizer.params(s_r), base_state), with_finite_flag(g, c, s_r)


def itd_bio() -> WarmStart:
    """ITD-BiO (Ji et al. 2021 Alg. 1 with the hypergradient of Prop. 2): the inner loop warm-started
    from y_{k−1}^T and differentiated exactly by reverse mode through its T steps."""
    return WarmStart(Reverse())


def aid_bio(tol: float = 1e-10, maxiter: int = 10) -> AID:
    """AID-BiO (Ji et al. 2021 Alg. 1 with eq. 3): warm starts of both the inner iterate
    (y_k^0 = y_{k−1}^T) and the linear system (v_k^0 = v_{k−1}^N), v by ``maxiter`` CG steps."""
    return aid_cg(tol=tol, maxiter=maxiter, warm_start=True)
