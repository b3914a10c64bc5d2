"""The explicit entry points: one task or a meta-batch (validated, traceable, NaN/inf flagged
or raised), and M(θ) itself. One argument order everywhere:
``(problem, estimator, θ, task, state, key)``, as in ``Estimator.estimate(problem, θ, task, state, key)``.
"""

from __future__ import annotations

import hashlib
import weakref

import jax
import jax.numpy as jnp
from jax._src.core import trace_state_clean  # True outside every transformation (JAX's own test)

from .checks import check_key, is_traced
from .estimators.base import Estimator
from .problem import BilevelProblem

NONFINITE_ADVICE = ("the inner loop diverged or the losses overflowed: lower the inner step size (lr), "
                    "shorten the inner loop (steps), or check the losses for log(0) / division by zero")


class NonFiniteHypergradient(FloatingPointError):
    """The estimate holds NaN or ±inf: raised by ``hypergradient`` (and
    ``hypergradient_batch`` with ``on_nonfinite="raise"``). Its message names the estimator
    and advises: lower the inner step size, shorten the inner loop, check the losses for log(0).
    """


#: Compiled programs: per problem (weakly: dropping the problem drops its programs and the data
#: they hold), and shared by content, so that a problem defined the same way (same functions,
#: same data) reuses the program of one that is alive instead of compiling again.
_programs: "weakref.WeakKeyDictionary[BilevelProblem, dict]" = weakref.WeakKeyDictionary()
_by_content: "weakref.WeakValueDictionary[str, jax.stages.Compiled]" = weakref.WeakValueDictionary()


def _call(problem: BilevelProblem, estimator: Estimator, method: str, *args):
    """``estimator.<method>(problem, *args)``, compiled. Under the caller's transformation (even
    with concrete arguments: the problem may close over traced values) it is plain JAX code for
    the caller's ``jit`` to compile. Otherwise the program is
    looked up by the problem, the method and the arguments' types (the estimator is an argument:
    its traced settings such as q do not recompile), and compiled once per program text: the
    lowered StableHLO holds the problem's functions and the data they close over."""
    leaves, treedef = jax.tree_util.tree_flatten((estimator, *args))
    if not trace_state_clean() or any(is_traced(x) for x in leaves):
        return getattr(estimator, method)(problem, *args)
    signature = (method, treedef, tuple(jax.typeof(x) for x in leaves))
    table = _programs.setdefault(problem, {})
    program = table.get(signature)
    if program is None:
        ref = weakref.ref(problem)  # the program must not keep its problem alive
        lowered = jax.jit(lambda est, *a: getattr(est, method)(ref(), *a)).trace(estimator, *args).lower()
        digest = hashlib.sha256(lowered.as_text().encode()).hexdigest()
        program = _by_content.get(digest)
        if program is None:
            program = _by_content.setdefault(digest, lowered.compile())
        table[signature] = program
    return program(estimator, *args)


def _check(problem, estimator, on_nonfinite, key) -> None:
    if not isinstance(problem, BilevelProblem):
        raise ValueError(f"problem must be an ablo.BilevelProblem; got {type(problem).__name__}")
    if not isinstance(estimator, Estimator):
        raise ValueError(f"estimator must be an ablo estimator (e.g. ablo.Reverse(), ablo.estimators.get(name)); "
                         f"got {type(estimator).__name__}")
    if on_nonfinite not in ("raise", "flag"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'flag'; got {on_nonfinite!r}")
    check_key(key, estimator.name if estimator.needs_key else "")
    estimator.check(problem)


def _run(problem, estimator, method: str, theta, tasks, task, state, key, on_nonfinite):
    """Validate (``task`` is one task of ``tasks``), fill in the defaults, call ``estimator.<method>``."""
    problem.validate(theta, task)
    key = jax.random.PRNGKey(0) if key is None else key  # only deterministic estimators get here without one
    if state is None:
        state = estimator.init(problem, theta, task)
    g, state, c = _call(problem, estimator, method, theta, tasks, state, key)
    if on_nonfinite == "raise":
        if is_traced(c.nonfinite):
            raise ValueError("on_nonfinite='raise' reads the result on the host and cannot run under jit/vmap/grad; "
                             "leave on_nonfinite='flag' (the default) and read cost.nonfinite")
        if bool(c.nonfinite):
            raise NonFiniteHypergradient(f"{estimator.name}: the hypergradient is not finite; {NONFINITE_ADVICE}")
    return g, state, c


def hypergradient(problem: BilevelProblem, estimator: Estimator, theta, task=None, state=None, key=None,
                  on_nonfinite: str = "flag"):
    """Estimate ∂M^(r)(θ; T)/∂θ for one task T. Returns (hypergradient, new estimator state, Cost).

    ``state`` defaults to ``estimator.init(problem, θ, task)``. ``key`` (``jax.random.key(seed)``)
    is required by the random estimators (UFOM, Debiased, stocBiO, ...); deterministic ones
    ignore it. ``on_nonfinite``: "flag" (default, traceable) returns a NaN/inf estimate with
    ``cost.nonfinite`` set; "raise" raises NonFiniteHypergradient with advice (a host sync, not
    under a trace). Traceable like :func:`hypergradient_batch`; called with concrete values it
    runs a compiled program, compiled once per problem definition (see ``_call``).

    Args:
        problem: the bilevel problem (losses, inner optimizer, r, V).
        estimator: any ablo estimator, e.g. ``ablo.UFOM(q=0.1)`` or ``ablo.estimators.get(name)``.
        theta: θ, the outer variables (any pytree).
        task: one task T, passed to the losses and to ``init`` (None for a problem without tasks).
        state: the estimator's state (warm starts, UFOM's running estimates); None for
            ``estimator.init(problem, θ, task)``.
        key: PRNG key, required by the random estimators (UFOM's branch, stocBiO's batches);
            deterministic ones ignore it.
        on_nonfinite: "flag" (default) or "raise" (see above).

    Returns:
        ``(g, state, cost)``: the hypergradient, a pytree like θ; the new estimator state; the
        ``ablo.cost.Cost`` of this call.

    Raises:
        NonFiniteHypergradient: ``on_nonfinite="raise"`` and the estimate holds NaN or inf.
        ValueError: a bad problem, estimator, key or θ/task structure, named in the message.

    Example:
        ```python
        g, state, cost = ablo.hypergradient(problem, ablo.UFOM(q=0.1), theta, task,
                                            key=jax.random.PRNGKey(1))
        float(cost.function_calls)   # gradient evaluations + HVPs + JVPs spent
        ```
    """
    _check(problem, estimator, on_nonfinite, key)
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
    ``key`` as in :func:`hypergradient` (split into one key per task). Cost: n times one task's;
    the tasks run under ``vmap``, and a random branch (UFOM's exact one, a telescope's truncation
    length) only for the tasks that drew it.

    Args:
        problem: the bilevel problem.
        estimator: any ablo estimator.
        theta: θ (any pytree).
        tasks: n tasks stacked on axis 0 of every leaf.
        state: the estimator's state; None for ``estimator.init`` at the first task.
        key: PRNG key (split over the tasks), required by the random estimators.
        on_nonfinite: "flag" (default) or "raise".

    Returns:
        ``(g, state, cost)``: the mean hypergradient, the new estimator state, the total Cost.
    """
    _check(problem, estimator, on_nonfinite, key)
    leaves = jax.tree_util.tree_leaves(tasks)
    sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in leaves}
    if not leaves or None in sizes or len(sizes) > 1:
        shapes = jax.tree_util.tree_map(jnp.shape, tasks)
        raise ValueError(f"tasks must be a meta-batch: every array with the same leading (task) axis, e.g. "
                         f"jax.tree.map(lambda *x: jnp.stack(x), *list_of_tasks); got shapes {shapes}. For one "
                         f"task use ablo.hypergradient")
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
