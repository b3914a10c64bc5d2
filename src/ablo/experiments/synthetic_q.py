"""Experiment ``synthetic-q``: the optimal q of UFOM in theory and in practice (paper 000 §4.4, §5.1,
Figure 1d-f).

Two equally likely tasks f_i of the counterexample family with a = (0.5, 1.5), b = (0, 10), A = 400
(so f_i is the quadratic a_i z²/2 on the region explored), V(θ) = θ, r = 10 inner GD steps of size α.
For each α on 10 log-spaced values in [1e-3, 5e-2]:

* D² and V² (eq. 14, 16): max over a grid of θ ∈ [−50, 50] of the task means of ‖G_FO − G_exact‖²
  and ‖G_exact‖² (measured with the FOM and Reverse estimators);
* q_theory: q* of eq. 21 with these D², V² and Proposition 1's cost model (C1 = C2 = 1, ε = 0);
* q_grid: the q ∈ linspace(0.05, 1, 20) whose outer SGD (UFOM with that q, one task per step,
  γ_k = γ0/(k+1), θ_0 ~ U(−50, 50), the same number of steps for every q) first brings
  E‖∂M/∂θ(θ_k)‖² (mean over seeds, checked every ``record_every`` steps) to target² or below in the
  fewest expected function calls (mean over seeds of the counted gradient evaluations + HVPs + JVPs;
  ablo also counts V's JVP, so a step costs r + 2 + ξ (r(r−1)/2 + r + 1), one more than eq. 19's
  C_det + ξ C_rnd per step and per branch).
  The criterion is the expectation that eq. 18 bounds; FOM (q = 0) stalls at its fixed point
  where ‖∂M/∂θ‖ stays above the target.

At α = ``alpha_curve`` (0.01) the same runs give convergence curves for q = 0 (FOM), q_theory, 1.
Implementation: α enters as a field of the task (inner loss α f_i with unit GD step, identical
dynamics), so every (α, q, seed) run is one lane of a single jitted, vmapped ``lax.scan``; the
random branch of UFOM is computed on every lane there but counted only when drawn.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..estimators import FOM, Reverse
from ..estimators.debiased import ufom_step
from ..estimators.unrolled import Recompute
from ..inner import gd
from ..problem import BilevelProblem
from ..results import save_figure, write_csv, write_markdown, write_summary
from ..theory import bias_variance, cost_model, q_star
from . import Experiment, register
from .counterexample import piecewise_f


def make_problem(r: int):
    """V(θ) = θ, L_in = α f_i(φ) stepped with unit GD (= GD of size α on f_i), L_out = f_i(φ);
    a task is (a_i, b_i, A, α)."""
    inner = lambda theta, phi, task: task[3] * piecewise_f(phi, task[:3])
    outer = lambda theta, phi, task: piecewise_f(phi, task[:3])
    return BilevelProblem(inner, outer, gd(1.0), int(r))


def make_tasks(a, b, A, alpha):
    a = jnp.asarray(a, float)
    return a, jnp.asarray(b, float), jnp.full_like(a, float(A)), jnp.full_like(a, float(alpha))


def measure_d2_v2(problem, tasks, thetas):
    """(D², V²) as maxima over ``thetas`` of the per-θ task means (eq. 14, 16)."""
    per_task = lambda est: jax.vmap(lambda th: jax.vmap(lambda t: est.estimate(problem, th, t, (), None)[0])(tasks))
    g_fo, g_ex = jax.jit(per_task(FOM()))(thetas), jax.jit(per_task(Reverse()))(thetas)
    pairs = [bias_variance(np.asarray(g_fo[i])[:, None], np.asarray(g_ex[i])[:, None]) for i in range(len(thetas))]
    d2, v2 = np.max(np.asarray(pairs), axis=0)
    return float(d2), float(v2)


def sgd_grad_norms(problem, tasks, theta0, q, key, steps: int, gamma0: float, every: int):
    """One UFOM-SGD run (q may be traced; q = 0 is FOM), γ_k = γ0/(k+1): the exact ‖∂M/∂θ(θ_k)‖ and
    the cumulative function calls at k = every, 2·every, ..., steps."""
    n_tasks = tasks[0].shape[0]
    exact = Recompute()
    grad_M = jax.grad(lambda th: jnp.mean(jax.vmap(lambda t: problem.objective(th, t))(tasks)))

    def step(carry, k):
        theta, calls, key = carry
        key, kt, ke = jax.random.split(key, 3)
        task = jax.tree_util.tree_map(lambda x: x[jax.random.randint(kt, (), 0, n_tasks)], tasks)
        g, _, _, _, c = ufom_step(problem, theta, task, exact, q, ke)  # q = 0: ξ is never 1
        return (theta - gamma0 / (k + 1.0) * g, calls + c.function_calls, key), None

    def chunk(carry, k0):
        carry, _ = jax.lax.scan(step, carry, k0 + jnp.arange(1, every + 1))
        return carry, (jnp.abs(grad_M(carry[0])), carry[1])

    _, (gn, calls) = jax.lax.scan(chunk, (theta0, jnp.zeros(()), key), jnp.arange(0, steps, every))
    return gn, calls


def expected_curves(problem, task_sets, qs, seeds, steps, gamma0, theta0_range, every):
    """For every α (task set) and q: sqrt(mean over seeds of ‖∂M/∂θ(θ_k)‖²) and the mean cumulative
    function calls at every ``every``-th step, each of shape (n_alpha, n_q, steps // every). One jit."""
    lo, hi = theta0_range
    keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])

    def per_seed(tasks, q, key):
        theta0 = jax.random.uniform(jax.random.fold_in(key, 1), (), minval=lo, maxval=hi)
        return sgd_grad_norms(problem, tasks, theta0, q, key, steps, gamma0, every)

    def per_q(tasks, q):
        gn, calls = jax.vmap(per_seed, in_axes=(None, None, 0))(tasks, q, keys)
        return jnp.sqrt(jnp.mean(gn ** 2, axis=0)), jnp.mean(calls, axis=0)

    f = jax.jit(jax.vmap(jax.vmap(per_q, in_axes=(None, 0)), in_axes=(0, None)))
    rms, calls = f(task_sets, jnp.asarray(qs, float))
    return np.asarray(rms), np.asarray(calls)


def calls_to_target(rms, calls, target):
    """Expected function calls at the first step with RMS gradient norm <= target (inf if never)."""
    hit = np.nonzero(rms <= target)[0]
    return float(calls[hit[0]]) if hit.size else float("inf")


def run(config: dict, out_dir: Path, progress) -> dict:
    cfg = {**DEFAULTS, **config}
    out_dir = Path(out_dir)
    r = int(cfg["r"])
    problem = make_problem(r)
    alphas = np.geomspace(cfg["alpha_range"][0], cfg["alpha_range"][1], int(cfg["n_alpha"]))
    if cfg["alpha_curve"] not in alphas:
        alphas = np.sort(np.r_[alphas, cfg["alpha_curve"]])
    c_det, c_rnd = cost_model(r, cfg["C1"], cfg["C2"])
    thetas = jnp.linspace(cfg["theta_grid"][0], cfg["theta_grid"][1], int(cfg["theta_grid"][2]))
    task_list = [make_tasks(cfg["a"], cfg["b"], cfg["A"], al) for al in alphas]
    with progress("synthetic-q: D2, V2", len(alphas)) as advance:
        stats = []
        for tasks in task_list:
            stats.append(measure_d2_v2(problem, tasks, thetas))
            advance()
    q_theory = [q_star(d2, v2, c_det, c_rnd, cfg["eps"]) for d2, v2 in stats]
    q_grid_values = np.linspace(cfg["q_grid"][0], cfg["q_grid"][1], int(cfg["q_grid"][2]))
    i_curve = int(np.argmin(np.abs(alphas - cfg["alpha_curve"])))
    qs = np.r_[q_grid_values, 0.0, q_theory[i_curve], 1.0]  # the last three: curves at alpha_curve
    task_sets = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *task_list)
    every = int(cfg["record_every"])
    steps, target = every * max(1, int(cfg["outer_steps"]) // every), float(cfg["target"])
    with progress("synthetic-q: SGD runs", 1) as advance:
        rms, calls = expected_curves(problem, task_sets, qs, list(cfg["seeds"]), steps, cfg["gamma0"],
                                     cfg["theta0_range"], every)
        advance()
    ng = len(q_grid_values)
    rows, grid_rows = [], []
    for i, al in enumerate(alphas):
        to_target = [calls_to_target(rms[i, j], calls[i, j], target) for j in range(ng)]
        j_best = int(np.argmin(to_target))
        row = {"method": "ufom", "seed": None, "seeds": len(cfg["seeds"]), "alpha": float(al), "D2": stats[i][0], "V2": stats[i][1],
               "q_theory": q_theory[i], "q_grid": float(q_grid_values[j_best]) if np.isfinite(to_target[j_best]) else None,
               "calls_to_target_q_grid": to_target[j_best]}
        if i == i_curve:
            row.update({f"calls_to_target_{name}": calls_to_target(rms[i, ng + k], calls[i, ng + k], target)
                        for k, name in enumerate(("q0", "qstar", "q1"))})
        rows.append(row)
        grid_rows += [{"alpha": float(al), "q": float(q), "calls_to_target": to_target[j]}
                      for j, q in enumerate(q_grid_values)]
    curves = [{"alpha": float(alphas[i_curve]), "q_label": name, "q": float(qs[ng + k]), "step": (s + 1) * every,
               "function_calls": float(calls[i_curve, ng + k, s]), "rms_grad": float(rms[i_curve, ng + k, s])}
              for k, name in enumerate(("q=0", "q*", "q=1")) for s in range(calls.shape[2])]
    write_csv(out_dir / "curves.csv", curves)
    write_csv(out_dir / "grid_search.csv", grid_rows)
    write_csv(out_dir / "d2_v2.csv", [{k: r[k] for k in ("alpha", "D2", "V2", "q_theory", "q_grid")} for r in rows])
    _write_figures(out_dir, rows, alphas, i_curve, qs[ng:], rms[i_curve, ng:], calls[i_curve, ng:], target)
    c = rows[i_curve]
    notes = (f"C_det = {c_det}, C_rnd = {c_rnd} (C1 = {cfg['C1']}, C2 = {cfg['C2']}), eps = {cfg['eps']}; "
             f"target sqrt(E|dM/dθ|²) <= {target}; {len(cfg['seeds'])} seeds, {steps} steps, γ_k = {cfg['gamma0']}/(k+1). "
             f"At α = {alphas[i_curve]:.4g}: expected function calls to the target: q = 0: {c['calls_to_target_q0']}, "
             f"q* = {c['q_theory']:.4f}: {c['calls_to_target_qstar']}, q = 1: {c['calls_to_target_q1']} (inf = never).")
    write_markdown(out_dir / "results.md", "Optimal q: theory against grid search (paper 000 Fig. 1d-f)", rows,
                   ["alpha", "D2", "V2", "q_theory", "q_grid", "calls_to_target_q_grid"], notes=notes)
    config_out = {**cfg, "alphas": alphas.tolist(), "C_det": c_det, "C_rnd": c_rnd}
    write_summary(out_dir, "synthetic-q", config_out, rows)
    return {"experiment": "synthetic-q", "config": config_out, "results": rows}


def _write_figures(out_dir, rows, alphas, i_curve, q_curve, rms, calls, target):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(alphas, [r["V2"] for r in rows], "o-", label="V²")
    ax.plot(alphas, [r["D2"] for r in rows], "s-", label="D²")
    ax.set(xscale="log", yscale="log", xlabel="inner step size α", title="(d) V², D² (max over θ ∈ [−50, 50])")
    ax.legend()
    save_figure(fig, out_dir / "fig_d2_v2.png")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(alphas, [r["q_theory"] for r in rows], "o-", label="theory (eq. 21)")
    ax.plot(alphas, [np.nan if r["q_grid"] is None else r["q_grid"] for r in rows], "s--", label="grid search")
    ax.set(xscale="log", xlabel="inner step size α", ylabel="q*", title="(e) optimal q")
    ax.legend()
    save_figure(fig, out_dir / "fig_q_star.png")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for k, name in enumerate(("q = 0 (FOM)", f"q* = {q_curve[1]:.3f}", "q = 1 (exact)")):
        ax.plot(calls[k], rms[k], label=name)
    ax.axhline(target, color="gray", ls=":", lw=1, label="target")
    ax.set(xscale="log", yscale="log", xlabel="expected function calls", ylabel="sqrt E|∂M/∂θ(θ_k)|²",
           title=f"(f) convergence at α = {alphas[i_curve]:.3g}")
    ax.legend()
    save_figure(fig, out_dir / "fig_convergence.png")


DEFAULTS = {"methods": ["ufom"], "seeds": list(range(16)), "outer_steps": 12000, "r": 10, "a": [0.5, 1.5],
            "b": [0.0, 10.0], "A": 400.0, "alpha_range": [1e-3, 5e-2], "n_alpha": 10, "alpha_curve": 0.01,
            "theta_grid": [-50.0, 50.0, 101], "q_grid": [0.05, 1.0, 20], "C1": 1.0, "C2": 1.0, "eps": 0.0,
            "gamma0": 2.0, "theta0_range": [-50.0, 50.0], "target": 0.05, "record_every": 10}

register(Experiment("synthetic-q", run, DEFAULTS,
                    tiny={"seeds": [0, 1], "outer_steps": 30, "n_alpha": 2, "q_grid": [0.1, 1.0, 3],
                          "theta_grid": [-50.0, 50.0, 5], "record_every": 5},
                    summary="paper 000 §4.4 / Fig. 1d-f: V², D² against α, q* theory vs grid search, convergence"))
