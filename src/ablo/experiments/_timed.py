"""Wall-clock runs for the stochastic-bilevel experiments (paper 004 §A.2, Figures 2-4): test
loss and accuracy against running time, shared by ``newsgroups`` and ``stochastic-hypercleaning``.

Protocol (as in paper 004's code): the clock runs only over outer steps — one jitted step
(estimate + optax update), waited for with ``block_until_ready`` — and stops for compilation
(a warm-up call before the clock starts), evaluation and bookkeeping. The model evaluated is
each method's own current inner iterate y_k^T: the warm start held in the estimator state
(AID, HOAG, stocBiO, BSA, TTSA). The problems' ``init`` reads ``task["w0"]``, which the loop sets
to y_k^T after every step, so estimators without state (``reverse``) and AID without its own
warm starts (``warm_start=False``: v from 0, as hypertorch's CG) are warm-started in y too. For
stateless estimators y_k^T is recomputed by an inner run that repeats the estimate's own forward
pass, so it is not timed.

ablo.outer.run is not used here: its clock also counts compilation, evaluation and an extra
full-data inner run per step for its logged losses, which would swamp a stochastic method's
step time.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

tree_map = jax.tree_util.tree_map


class TimedRun(NamedTuple):
    curve: list  # dicts: step, seconds, function_calls, samples, and eval_fn's metrics
    steps: int
    seconds: float
    function_calls: float
    samples: float
    warmup_seconds: float
    diverged: bool


def iterate(problem, est_state, phi0):
    """The method's current inner iterate y_k^T held in its state (φ or, for TTSA, the inner
    optimizer state around it; told apart by comparing with φ_0's structure), or None."""
    inner = getattr(est_state, "phi", getattr(est_state, "inner", None))
    if inner is None:
        return None
    same = jax.tree_util.tree_structure(inner) == jax.tree_util.tree_structure(phi0)
    return inner if same else problem.optimizer.params(inner)


def _same_dtypes(new, old):
    return tree_map(lambda a, b: jnp.asarray(a).astype(jnp.asarray(b).dtype), new, old)


def timed_run(problem, estimator, optimizer: optax.GradientTransformation, theta0, task, *, key,
              seconds: float, steps: int, eval_fn: Callable, evals: int = 30) -> TimedRun:
    """Outer optimization of θ until ``seconds`` of step time or ``steps`` outer steps; the
    curve gets ``eval_fn(θ, φ)`` at time 0 and about every seconds/evals (and at the end)."""
    estimator.check(problem)
    problem.validate(theta0, task)
    fix = lambda t: tree_map(lambda x: jnp.asarray(x, jnp.asarray(x).dtype), t)
    theta, opt_state = fix(theta0), fix(optimizer.init(theta0))
    est_state = fix(estimator.init(problem, theta, task))

    @jax.jit
    def step(theta, opt_state, est_state, task, k):
        g, new_est, c = estimator.estimate(problem, theta, task, est_state, jax.random.fold_in(key, k))
        updates, new_opt = optimizer.update(g, opt_state, theta)
        new_theta = optax.apply_updates(theta, updates)
        return (_same_dtypes(new_theta, theta), _same_dtypes(new_opt, opt_state), _same_dtypes(new_est, est_state),
                c.function_calls, c.samples, c.nonfinite)

    inner_run = jax.jit(lambda theta, task: problem.optimizer.params(problem.run(theta, task)))
    phi = problem.init(theta, task)
    stateless = iterate(problem, est_state, phi) is None
    t0 = time.perf_counter()
    jax.block_until_ready(step(theta, opt_state, est_state, task, 0))
    if stateless:
        jax.block_until_ready(inner_run(theta, task))
    warmup = time.perf_counter() - t0

    totals = dict(step=0, seconds=0.0, function_calls=0.0, samples=0.0)
    curve = [{**totals, **_metrics(eval_fn(theta, phi))}]
    interval, next_eval, diverged = seconds / max(evals, 1), seconds / max(evals, 1), False
    while totals["step"] < steps and totals["seconds"] < seconds:
        t0 = time.perf_counter()
        out = jax.block_until_ready(step(theta, opt_state, est_state, task, totals["step"]))
        totals["seconds"] += time.perf_counter() - t0
        new_theta, opt_state, est_state, calls, samples, nonfinite = out
        if bool(nonfinite):
            diverged = True
            break
        phi = inner_run(theta, task) if stateless else iterate(problem, est_state, phi)
        task = {**task, "w0": phi}
        theta = new_theta
        totals["step"] += 1
        totals["function_calls"] += float(calls)
        totals["samples"] += float(samples)
        done = totals["step"] >= steps or totals["seconds"] >= seconds
        if done or totals["seconds"] >= next_eval:
            curve.append({**totals, **_metrics(eval_fn(theta, phi))})
            next_eval = totals["seconds"] + interval
    if diverged and curve[-1]["step"] != totals["step"]:
        curve.append({**totals, **_metrics(eval_fn(theta, phi))})
    return TimedRun(curve, totals["step"], totals["seconds"], totals["function_calls"], totals["samples"],
                    warmup, diverged)


def _metrics(m) -> dict:
    return {k: float(v) for k, v in m.items()}


def plot_curves(curves: list, path, title: str, group_key: str = "method") -> None:
    """Paper 004 Figures 2-4 style: test loss (left) and test accuracy (right) against running
    time, one colour per ``group_key`` value, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..results import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    groups = list(dict.fromkeys(c[group_key] for c in curves))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(groups):
        for j, c in enumerate(x for x in curves if x[group_key] == name):
            t = [p["seconds"] for p in c["points"]]
            for ax, key in zip(axes, ("test_loss", "test_acc")):
                ax.plot(t, [p[key] for p in c["points"]], color=colors[i % len(colors)],
                        label=name if j == 0 else None, alpha=0.9 if j == 0 else 0.5)
    for ax, label in zip(axes, ("test loss", "test accuracy")):
        ax.set_xlabel("running time / s")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    save_figure(fig, path)


def curve_rows(curves: list, keys: tuple) -> list:
    """Flatten curves to CSV rows: the identifying ``keys`` of each curve, then its points."""
    return [{**{k: c[k] for k in keys}, **p} for c in curves for p in c["points"]]


def seeded_split(n: int, sizes: tuple, seed: int) -> list:
    """Disjoint random index sets of the given sizes from range(n)."""
    if sum(sizes) > n:
        raise ValueError(f"the splits need {sum(sizes)} examples but the data has {n}")
    perm = np.random.default_rng(seed).permutation(n)
    cuts = np.cumsum((0,) + tuple(sizes))
    return [perm[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
