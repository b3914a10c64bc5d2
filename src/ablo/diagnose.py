"""Diagnose a user's own bilevel problem at one θ: how biased are the cheap estimators, and which q
the theory of Likhosherstov et al. 2021, §4.4, recommends for UFOM there.

For n sampled tasks it computes the exact hypergradient and FOM's and K-RMD's (several K) and reports,
for each cheap estimator, the mean per-task cosine with the exact one, the cosine of the task means,
and the relative error sqrt(E‖G − G_exact‖² / E‖G_exact‖²). D² and V² (eq. 14, 16) are the task
means at this θ (local values, as Adaptive UFOM uses them, not the sup over θ); C1, C2 are measured
unit costs (seconds per gradient / per HVP), giving C_det, C_rnd (Proposition 1, with C_rnd the
backward cost of the exact branch UFOM would use: recomputation by default, any unrolled exact
estimator via ``branch``) and q* (eq. 21).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .estimators import FOM, Recompute, Reverse, Truncated
from .estimators.base import Estimator
from .estimators.debiased import check_exact
from .estimators.registry import spec_of
from .results import markdown_table
from .theory import bias_variance, condition_20, cost_model, measure_unit_costs, q_star


def _stack_tasks(tasks, key, n_samples):
    if callable(tasks):
        if isinstance(n_samples, (bool, np.bool_)) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ValueError(f"n_samples must be an integer >= 1 with a task sampler; got {n_samples!r}")
        drawn = [tasks(k) for k in jax.random.split(key, n_samples)]
        return jax.tree_util.tree_map(lambda *x: jnp.stack(x), *drawn)
    leaves = jax.tree_util.tree_leaves(tasks)
    if not leaves or np.ndim(leaves[0]) == 0:
        raise ValueError("tasks must be a sampler(key) -> task or a pytree of tasks stacked on axis 0")
    n = leaves[0].shape[0] if n_samples is None else min(int(n_samples), leaves[0].shape[0])
    return jax.tree_util.tree_map(lambda x: x[:n], tasks)


def _flat(g):
    return jax.vmap(lambda t: jax.flatten_util.ravel_pytree(t)[0])(g)


def diagnose(problem, theta, tasks, key, n_samples: int | None = 16, Ks=None, exact: Estimator | None = None,
             eps: float = 0.0, repeats: int = 11, branch=None) -> dict:
    """Bias of FOM and K-RMD, D², V², unit costs and the recommended q* at ``theta``.

    With G_i the exact hypergradient of task i and Ĝ_i a cheap estimator's, it reports the mean
    cosine(Ĝ_i, G_i), the cosine of the task means, the relative error
    sqrt(Σ‖Ĝ_i − G_i‖² / Σ‖G_i‖²); D² = mean ‖G_FO,i − G_i‖² and V² = mean ‖G_i‖² (FOM's bias and
    the exact estimator's second moment, eq. 14, 16); C1, C2 = seconds per gradient / per HVP,
    C_det, C_rnd of Proposition 1 and q* of eq. 21 (Likhosherstov et al. 2021).

    Args:
        problem: the :class:`~ablo.problem.BilevelProblem`.
        theta: the outer parameters at which to diagnose.
        tasks: a sampler ``sampler(key) -> task`` (``n_samples`` draws) or tasks stacked on axis 0
            (the first ``n_samples``, all if None).
        key: PRNG key for the task draws and the estimators.
        n_samples: number of tasks.
        Ks: truncation depths K of K-RMD (default 1, r/4, r/2 within [1, r − 1]).
        exact: the reference estimator (default ``Reverse()``).
        eps: the target accuracy ε in the condition and in q* (eq. 20-21).
        repeats: timing repeats for C1 and C2 (medians).
        branch: UFOM's exact branch, an unrolled exact estimator (default ``Recompute()``, Prop. 1
            verbatim); C_rnd = C1·(its backward gradient evaluations) + C2·(its HVPs).

    Returns:
        A dict: ``r``, ``n_samples``, ``exact``, ``branch`` (UFOM's exact branch), ``rewrite_products`` (whether
        the problem's matrix products are rewritten, ``ablo.products``: on by default on the CPU backend only,
        where it was measured, with the ``backend``), ``exact_function_calls``, ``estimators``
        ({name: cosine, cosine_of_means, relative_error, function_calls}), ``D2``, ``V2``, ``C1``,
        ``C2``, ``C_det``, ``C_rnd``, ``condition_20``, ``q_star`` (with measured unit costs) and
        ``q_star_function_calls`` (counting calls, C1 = C2 = 1). :func:`format_diagnosis` prints it.

    Cost: n_samples exact estimates plus (1 + len(Ks)) cheap ones, compiled once each.
    """
    import jax.flatten_util  # noqa: F401  (registers ravel_pytree)

    r = problem.steps
    stacked = _stack_tasks(tasks, key, n_samples)
    task0 = jax.tree_util.tree_map(lambda x: x[0], stacked)
    problem.validate(theta, task0)
    Ks = sorted({k for k in (1, r // 4, r // 2) if 1 <= k < r}) if Ks is None else list(Ks)
    exact = Reverse() if exact is None else exact
    branch = Recompute() if branch is None else branch
    check_exact(branch)
    cheap = {"fom": FOM(), **{f"truncated-{k}": Truncated(K=int(k)) for k in Ks}}
    for est in (exact, *cheap.values()):
        est.check(problem)

    def per_task(est):
        run = lambda t, k: est.estimate(problem, theta, t, est.init(problem, theta, t), k)[::2]
        n = jax.tree_util.tree_leaves(stacked)[0].shape[0]
        g, c = jax.jit(jax.vmap(run))(stacked, jax.random.split(key, n))
        return np.asarray(_flat(g)), float(np.mean(np.asarray(c.function_calls)))

    g_ex, calls_ex = per_task(exact)
    ex_norm = np.linalg.norm(g_ex, axis=1)
    report, g_fo = {}, None
    for name, est in cheap.items():
        g, calls = per_task(est)
        g_fo = g if name == "fom" else g_fo
        norm = np.linalg.norm(g, axis=1)
        cos = np.sum(g * g_ex, axis=1) / np.maximum(norm * ex_norm, 1e-300)
        m, m_ex = g.mean(0), g_ex.mean(0)
        d2, v2 = bias_variance(g, g_ex)
        report[name] = {"cosine": float(np.mean(cos)),
                        "cosine_of_means": float(m @ m_ex / max(np.linalg.norm(m) * np.linalg.norm(m_ex), 1e-300)),
                        "relative_error": float(np.sqrt(d2 / v2)) if v2 > 0 else float("inf"),
                        "function_calls": calls}
    D2, V2 = bias_variance(g_fo, g_ex)
    C1, C2 = measure_unit_costs(problem, theta, task0, repeats=repeats)
    C_det, C_rnd = cost_model(r, C1, C2, exact=branch)
    cd1, cr1 = cost_model(r, exact=branch)
    return {"r": r, "n_samples": int(g_ex.shape[0]), "exact": exact.name, "branch": spec_of(branch),
            "rewrite_products": problem.rewrite_products, "backend": jax.default_backend(),
            "exact_function_calls": calls_ex,
            "estimators": report, "D2": D2, "V2": V2, "C1": C1, "C2": C2, "C_det": C_det, "C_rnd": C_rnd,
            "condition_20": condition_20(D2, V2, C_det, C_rnd, eps), "q_star": q_star(D2, V2, C_det, C_rnd, eps),
            "q_star_function_calls": q_star(D2, V2, cd1, cr1, eps)}


def format_diagnosis(result: dict) -> str:
    """Markdown rendering of :func:`diagnose`'s result."""
    rows = [{"estimator": k, **v} for k, v in result["estimators"].items()]
    q = result["q_star"]
    advice = ("UFOM beats the exact estimator here (condition 20 holds): use q = "
              f"{q:.3g}, or adaptive-ufom" if result["condition_20"] else
              "FOM's bias is too large for debiasing to pay (condition 20 fails): use the exact estimator (q = 1)")
    return (f"## Hypergradient diagnosis (r = {result['r']}, {result['n_samples']} tasks, exact = {result['exact']})\n\n"
            + markdown_table(rows, ["estimator", "cosine", "cosine_of_means", "relative_error", "function_calls"])
            + f"\nD² = {result['D2']:.4g}, V² = {result['V2']:.4g}; C1 = {result['C1']:.3g} s per gradient, "
              f"C2 = {result['C2']:.3g} s per HVP (C_det = {result['C_det']:.3g}, C_rnd = {result['C_rnd']:.3g} with UFOM's "
              f"exact branch {result['branch']}).\n"
            + f"Matrix products {'rewritten' if result['rewrite_products'] else 'as JAX emits them'} "
              f"(ablo.products; backend {result['backend']}).\n"
            + f"q* = {q:.4g} with measured costs, {result['q_star_function_calls']:.4g} counting function calls. "
            + advice + ".\n")
