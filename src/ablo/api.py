"""One-call entry point: validate, jit (cached per problem and estimator), check finiteness."""

from __future__ import annotations

import functools

import jax

from .estimators.base import Estimator
from .problem import BilevelProblem

NONFINITE_ADVICE = ("the inner loop diverged or the losses overflowed: lower the inner step size (lr), "
                    "shorten the inner loop (steps), or check the losses for log(0) / division by zero")


class NonFiniteHypergradient(FloatingPointError):
    """The estimate holds NaN or ±inf."""


@functools.lru_cache(maxsize=64)
def _compiled(problem: BilevelProblem, estimator: Estimator):
    return jax.jit(functools.partial(estimator.estimate, problem))


def hypergradient(problem: BilevelProblem, estimator: Estimator, theta, task=None, key=None, state=None,
                  on_nonfinite: str = "raise"):
    """Estimate ∂M^(r)/∂θ for one task. Returns (hypergradient, new estimator state, Cost).

    ``on_nonfinite``: "raise" (default) raises NonFiniteHypergradient with advice when the
    estimate holds NaN/inf; "flag" returns it with ``cost.nonfinite`` set."""
    if on_nonfinite not in ("raise", "flag"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'flag'; got {on_nonfinite!r}")
    problem.validate(theta, task)
    estimator.check(problem)
    key = jax.random.PRNGKey(0) if key is None else key
    if state is None:
        state = estimator.init(problem, theta, task)
    g, state, c = _compiled(problem, estimator)(theta, task, state, key)
    if on_nonfinite == "raise" and bool(c.nonfinite):
        raise NonFiniteHypergradient(f"{estimator.name}: the hypergradient is not finite; {NONFINITE_ADVICE}")
    return g, state, c
