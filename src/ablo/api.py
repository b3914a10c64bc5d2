"""The explicit entry points: one task (validated, checked for NaN/inf) or a meta-batch
(traceable), and M(θ) itself. One argument order everywhere:
``(problem, estimator, θ, task, state, key)``, as in ``Estimator.estimate(problem, θ, task, state, key)``.
"""

from __future__ import annotations

import functools

import jax

from .checks import is_traced
from .estimators.base import Estimator
from .problem import BilevelProblem

NONFINITE_ADVICE = ("the inner loop diverged or the losses overflowed: lower the inner step size (lr), "
                    "shorten the inner loop (steps), or check the losses for log(0) / division by zero")


class NonFiniteHypergradient(FloatingPointError):
    """The estimate holds NaN or ±inf: raised by ``hypergradient`` (and
    ``hypergradient_batch`` with ``on_nonfinite="raise"``). Its message names the estimator
    and advises: lower the inner step size, shorten the inner loop, check the losses for log(0).
    """


@functools.lru_cache(maxsize=64)
def _compiled(problem: BilevelProblem, method: str):
    """``estimator.<method>(problem, ...)`` jitted with the estimator as an argument (a pytree: its
    traced settings, e.g. q, do not cause recompilation), cached per problem."""
    return jax.jit(lambda est, *args: getattr(est, method)(problem, *args))


def _check(problem, estimator, on_nonfinite) -> None:
    if not isinstance(problem, BilevelProblem):
        raise ValueError(f"problem must be an ablo.BilevelProblem; got {type(problem).__name__}")
    if not isinstance(estimator, Estimator):
        raise ValueError(f"estimator must be an ablo estimator (e.g. ablo.Reverse(), ablo.estimators.get(name)); "
                         f"got {type(estimator).__name__}")
    if on_nonfinite not in ("raise", "flag"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'flag'; got {on_nonfinite!r}")
    estimator.check(problem)


def _run(problem, estimator, method: str, theta, tasks, task, state, key, on_nonfinite):
    """Validate (``task`` is one task of ``tasks``), fill in the defaults, call ``estimator.<method>``."""
    _check(problem, estimator, on_nonfinite)
    problem.validate(theta, task)
    key = jax.random.PRNGKey(0) if key is None else key
    if state is None:
        state = estimator.init(problem, theta, task)
    g, state, c = _compiled(problem, method)(estimator, theta, tasks, state, key)
    if on_nonfinite == "raise":
        if is_traced(c.nonfinite):
            raise ValueError("on_nonfinite='raise' reads the result on the host and cannot run under jit/vmap/grad; "
                             "pass on_nonfinite='flag' and read cost.nonfinite")
        if bool(c.nonfinite):
            raise NonFiniteHypergradient(f"{estimator.name}: the hypergradient is not finite; {NONFINITE_ADVICE}")
    return g, state, c


def hypergradient(problem: BilevelProblem, estimator: Estimator, theta, task=None, state=None, key=None,
                  on_nonfinite: str = "raise"):
    """Estimate ∂M^(r)(θ; T)/∂θ for one task T. Returns (hypergradient, new estimator state, Cost).

    ``state`` defaults to ``estimator.init(problem, θ, task)``, ``key`` to ``PRNGKey(0)``.
    ``on_nonfinite``: "raise" (default) raises NonFiniteHypergradient with advice when the
    estimate holds NaN/inf (a host sync); "flag" returns it with ``cost.nonfinite`` set.
    Compiled once per problem (the estimator's traced settings such as q are arguments).

    Args:
        problem: the bilevel problem (losses, inner optimizer, r, V).
        estimator: any ablo estimator, e.g. ``ablo.UFOM(q=0.1)`` or ``ablo.estimators.get(name)``.
        theta: θ, the outer variables (any pytree).
        task: one task T, passed to the losses and to ``init`` (None for a problem without tasks).
        state: the estimator's state (warm starts, UFOM's running estimates); None for
            ``estimator.init(problem, θ, task)``.
        key: PRNG key for the random estimators (UFOM's branch, stocBiO's batches); None for
            ``PRNGKey(0)``.
        on_nonfinite: "raise" or "flag" (see above).

    Returns:
        ``(g, state, cost)``: the hypergradient, a pytree like θ; the new estimator state; the
        ``ablo.cost.Cost`` of this call.

    Raises:
        NonFiniteHypergradient: ``on_nonfinite="raise"`` and the estimate holds NaN or inf.
        ValueError: a bad problem, estimator or θ/task structure, named in the message.

    Example:
        ```python
        g, state, cost = ablo.hypergradient(problem, ablo.UFOM(q=0.1), theta, task,
                                            key=jax.random.PRNGKey(1))
        float(cost.function_calls)   # gradient evaluations + HVPs + JVPs spent
        ```
    """
    return _run(problem, estimator, "estimate", theta, task, task, state, key, on_nonfinite)


def hypergradient_batch(problem: BilevelProblem, estimator: Estimator, theta, tasks, state=None, key=None,
                        on_nonfinite: str = "flag"):
    """Mean hypergradient over a meta-batch, (1/n) Σ_i G(θ, T_i) (Likhosherstov et al. 2021 Alg. 1), with the tasks
    stacked on axis 0 of every leaf. Returns (mean hypergradient, new estimator state, total Cost).

    Traceable: it runs under the caller's ``jit``, ``vmap`` (e.g. over keys, or over an
    estimator whose q is an array) and ``grad``, and never waits for the device unless
    ``on_nonfinite="raise"`` (then it reads ``cost.nonfinite`` on the host and raises
    NonFiniteHypergradient; not allowed under a trace). ``state`` defaults to
    ``estimator.init`` at the first task and is shared by the batch (``Estimator.estimate_batch``);
    ``key`` defaults to ``PRNGKey(0)``. Cost: n times one task's (random-branch estimators run
    the tasks with ``lax.map`` so an undrawn exact branch is really skipped).

    Args:
        problem: the bilevel problem.
        estimator: any ablo estimator.
        theta: θ (any pytree).
        tasks: n tasks stacked on axis 0 of every leaf.
        state: the estimator's state; None for ``estimator.init`` at the first task.
        key: PRNG key (split over the tasks); None for ``PRNGKey(0)``.
        on_nonfinite: "flag" (default) or "raise".

    Returns:
        ``(g, state, cost)``: the mean hypergradient, the new estimator state, the total Cost.
    """
    first = jax.tree_util.tree_map(lambda x: x[0], tasks)
    return _run(problem, estimator, "estimate_batch", theta, tasks, first, state, key, on_nonfinite)


def objective(problem: BilevelProblem):
    """M^(r)(θ; T) = L_out(θ, φ_r, T) as a function ``(θ, task) -> scalar``, differentiable by plain
    autodiff through the unrolled inner loop (O(r) memory; ``jax.grad`` of it is the exact
    hypergradient). Average it over tasks with ``jax.vmap`` for M^(r)(θ) = E_T L_out.

    Args:
        problem: the bilevel problem.

    Returns:
        The function ``(θ, task) -> M^(r)(θ; T)``.
    """
    if not isinstance(problem, BilevelProblem):
        raise ValueError(f"problem must be an ablo.BilevelProblem; got {type(problem).__name__}")
    return problem.objective
