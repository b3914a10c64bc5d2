"""The wall-clock protocol of Ji et al. 2021 §A.2 (Figures 2-4), shared by ``newsgroups`` and
``stochastic-hypercleaning``: test loss and accuracy of each method's current inner iterate
against running time.

:func:`wallclock_run` is :func:`ablo.outer.run` with ``Budget(seconds=..., steps=...)`` and
``log_losses=False``: its clock runs over outer steps only (the step is compiled before the
clock starts; evaluation and checkpoints are not timed) and no extra inner run per step is
made for logging, which would swamp a stochastic method's step time. The model evaluated is
y_k^T, the inner iterate the method carries in its estimator state (ITD-BiO's and AID-BiO's
warm start, stocBiO's, BSA's, TTSA's); an estimator without one (``reverse``) is evaluated at
the iterate its own next inner run would reach, φ_r from V, computed outside the clock.
"""

from __future__ import annotations

import jax

from .. import outer
from .plots import plot_curves


def plot_test_vs_time(curves: list, path, title: str) -> None:
    """Ji et al. 2021 Figures 2-4 style: test loss (left) and test accuracy (right) against running
    time, one line per method (the mean over seeds, their spread as a band)."""
    plot_curves(curves, path, x="seconds", ys=("test_loss", "test_acc"), order=list(dict.fromkeys(
        c["method"] for c in curves)), title=f"{title}; every point: the full test set",
        axis={"seconds": "running time (s, outer steps only)", "test_acc": "test accuracy (fraction)"})


def current_iterate(problem, estimator_state, theta, task):
    """y_k^T: the φ (or, for TTSA, the inner optimizer state around it) in the estimator state,
    told apart from an optimizer state by its structure; without one, φ_r = params(run(θ))."""
    phi0 = problem.init(theta, task)
    held = getattr(estimator_state, "phi", getattr(estimator_state, "inner", None))
    if held is None:
        return problem.optimizer.params(problem.run(theta, task))
    same = jax.tree_util.tree_structure(held) == jax.tree_util.tree_structure(phi0)
    return held if same else problem.optimizer.params(held)


def wallclock_run(problem, estimator, optimizer, theta0, task, *, key, seconds: float, steps: int, eval_every: int,
                  evaluate, ctx, label: str):
    """Outer optimization of θ on the one task ``task`` (the dataset; stochastic estimators draw
    their mini-batches from it) until ``seconds`` of outer-step time or ``steps`` steps.
    ``evaluate(φ) -> {metric: value}`` is applied to y_k^T at step 0 and every ``eval_every``
    steps (and at the end). Returns (curve: [{step, seconds, function_calls, **metrics}],
    :class:`ablo.outer.RunResult`); a non-finite step raises :class:`ablo.outer.Diverged`."""
    iterate = jax.jit(lambda theta, est_state: evaluate(current_iterate(problem, est_state, theta, task)))

    def eval_fn(theta, state):
        return {k: float(v) for k, v in iterate(theta, state.estimator_state).items()}

    state0 = outer.init(problem, estimator, optimizer, theta0, task)
    curve = [{"step": 0, "seconds": 0.0, "function_calls": 0.0, **eval_fn(theta0, state0)}]
    budget = outer.Budget(seconds=seconds, steps=steps)
    result = ctx.train(label, problem, estimator, optimizer, theta0, lambda k: task, key=key, budget=budget,
                       options=outer.Options(evaluation=outer.Evaluation(eval_fn, every=eval_every),
                                             progress=outer.Progress(eval_every, losses=False)))
    names = [k for k in curve[0] if k not in ("step", "seconds", "function_calls")]
    curve += [{"step": e["step"], "seconds": e["seconds"], "function_calls": e["function_calls"],
               **{k: e[k] for k in names}, **{k: e[k] for k in SOLVER_REPORT if k in e}}
              for e in result.log if names[0] in e]
    return curve, result


def outer_step_size(est, lr: float):
    """The outer step size ``lr`` for ``est``, or its own schedule when it has one (TTSA's slow
    time scale α_k = lr (k+1)^{−outer_decay}, :meth:`ablo.TTSA.outer_schedule`): every wall-clock
    experiment runs a two-time-scale method on its two scales."""
    schedule = getattr(est, "outer_schedule", None)
    return schedule(lr) if schedule is not None else lr


def schedule_note(methods) -> str:
    """What the runs' two-time-scale methods did with their step sizes ("" when there are none)."""
    return " ".join(f"{est.name.upper()}: outer lr (k+1)^-{est.outer_decay:g} with its inner step "
                    f"(k+1)^-{est.inner_decay:g}, two time scales." for est in methods
                    if getattr(est, "outer_schedule", None) is not None)


#: What an implicit estimator's state reports (``describe_state``) and the curves and rows keep:
#: the last CG solve's matvecs and residual, HOAG's next tolerance ε_k and its safety-cap hits.
SOLVER_REPORT = ("solver_matvecs", "solver_residual", "tol", "cg_cap_hits")


def protocol_note(cfg) -> str:
    """The sentences of results.md on the budget and on what is evaluated."""
    return (f"Budget: {cfg.seconds} s of outer-step time or {cfg.outer_steps} outer steps per run, whichever comes "
            "first (compilation and evaluation not timed). test_loss/test_acc: each method's current inner iterate "
            "y_k^T on the test set.")


def result_row(curve: list, result) -> dict:
    """A run's part of a results row: the last evaluation's test loss and accuracy, the run's
    record (steps, Cost, seconds, ...) and for HOAG its last tolerance ε_k (``tol``) and the outer
    steps whose CG hit the safety cap (``cg_cap_hits``)."""
    last = result.log[-1] if result.log else {}
    return dict(test_loss=curve[-1]["test_loss"], test_acc=curve[-1]["test_acc"], **result.record(),
                **{k: last[k] for k in ("tol", "cg_cap_hits") if k in last})
