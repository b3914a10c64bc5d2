"""Experiment ``synthetic-q``: the optimal q of UFOM in theory and in practice (Likhosherstov et al. 2021 §4.4, §5.1,
Figure 1d-f).

The problem, its data and the protocol in detail: :mod:`ablo.problems.synthetic_q`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from ..estimators.debiased import check_exact
from ..problems import counterexample
from ..problems.synthetic_q import (calls_to_target, expected_curves, make_problem, make_tasks, measure_d2_v2,
                                    ufom_sweep)
from ..results import number, save_figure
from ..theory import cost_model, q_star
from . import Experiment, Result, RunContext, register
from ._notes import seeds_note, smoke_note, smoke_option
from ..config import ConfigError, ExperimentConfig, estimator, option
from .plots import pyplot

NAME = "synthetic-q"


@dataclass(frozen=True)
class Config(ExperimentConfig):
    seeds: tuple[int, ...] = option(tuple(range(16, 32)), "seeds: each draws its θ_0 and its tasks", low=0,
                                    min_len=1, unique=True)
    tuned_seeds: tuple[int, ...] = option(tuple(range(16)), "seeds the settings were chosen on (pre-registration); "
                                          "the seeds a run reports must differ from them", low=0, unique=True)
    outer_steps: int = option(12_000, "outer SGD steps (rounded down to a multiple of record_every)", low=1,
                              high=10_000_000)
    r: int = option(10, "inner GD steps r", low=1, high=1000)
    a: tuple[float, ...] = option((0.5, 1.5), "curvatures a_1, a_2 of the two tasks", low=0, low_open=True)
    b: tuple[float, ...] = option((0.0, 10.0), "minimisers times curvature b_1, b_2 of the two tasks")
    A: float = option(400.0, "half-width A of the quadratic region of f_i", low=0, low_open=True)
    alpha_range: tuple[float, ...] = option((1e-3, 5e-2), "inner step sizes α: lo, hi (log-spaced)", low=0,
                                            low_open=True)
    n_alpha: int = option(10, "number of α values", low=1, high=1000)
    alpha_curve: float = option(0.01, "α of the convergence curves (added to the α values)", low=0, low_open=True)
    theta_grid_range: tuple[float, ...] = option((-50.0, 50.0), "θ grid for D², V²: lo, hi")
    theta_grid_points: int = option(101, "points of the θ grid", low=2, high=100_000)
    q_grid_range: tuple[float, ...] = option((0.05, 1.0), "q grid searched: lo, hi (in (0, 1])", low=0, high=1,
                                             low_open=True)
    q_grid_points: int = option(20, "points of the q grid", low=1, high=1000)
    exact: str = option("recompute", "UFOM's exact branch, an unrolled exact estimator spec (recompute, checkpointed, "
                                     "checkpointed:M=4, binomial, reverse): its backward cost is C_rnd in q*")
    C1: float = option(1.0, "cost of a gradient evaluation in q* (Prop. 1)", low=0, low_open=True)
    C2: float = option(1.0, "cost of an HVP in q* (Prop. 1)", low=0, low_open=True)
    eps: float = option(0.0, "ε of eq. 21", low=0)
    gamma0: float = option(2.0, "outer step size γ_0 of γ_k = γ_0/(k+1)", low=0, low_open=True)
    theta0_range: tuple[float, ...] = option((-50.0, 50.0), "θ_0 ~ U(lo, hi): lo, hi")
    target: float = option(0.05, "target of sqrt(E|∂M/∂θ|²)", low=0, low_open=True)
    record_every: int = option(10, "outer steps between recorded gradient norms", low=1)
    smoke: bool = smoke_option()

    def validate(self):
        for key in ("a", "b"):
            if len(getattr(self, key)) != 2:
                raise ConfigError(f"{key}: give 2 numbers (two tasks); got {list(getattr(self, key))!r}")
        for key in ("alpha_range", "theta_grid_range", "q_grid_range", "theta0_range"):
            v = getattr(self, key)
            if len(v) != 2 or not v[0] <= v[1]:
                raise ConfigError(f"{key}: give lo, hi with lo <= hi; got {list(v)!r}")
        try:
            check_exact(estimator(self.exact))
        except ValueError as e:
            raise ConfigError(f"exact: {e}") from None
        if self.record_every > self.outer_steps:
            raise ConfigError(f"record_every: {self.record_every} exceeds outer_steps = {self.outer_steps}")


TINY = dict(smoke=True, seeds=(0, 1), tuned_seeds=(), outer_steps=30, n_alpha=2, q_grid_range=(0.1, 1.0), q_grid_points=2,
            theta_grid_points=5, record_every=5)


def run(cfg: Config, ctx: RunContext) -> Result:
    r = cfg.r
    problem = make_problem(r)
    alphas = np.geomspace(cfg.alpha_range[0], cfg.alpha_range[1], cfg.n_alpha)
    if cfg.alpha_curve not in alphas:
        alphas = np.sort(np.r_[alphas, cfg.alpha_curve])
    # L_in = α f_i with unit GD is GD of size α on f_i: α must be below 2/a_i at every α
    counterexample.check_alpha(counterexample.make_problem(float(alphas[-1]), r),
                               counterexample.stack_tasks(cfg.a, cfg.b, cfg.A), float(alphas[-1]), name="alpha")
    branch = estimator(cfg.exact)
    c_det, c_rnd = cost_model(r, cfg.C1, cfg.C2, exact=branch)
    thetas = jnp.linspace(*cfg.theta_grid_range, cfg.theta_grid_points)
    task_sets = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *[make_tasks(cfg.a, cfg.b, cfg.A, al) for al in alphas])
    with ctx.progress(f"{NAME}: D2, V2", 1) as advance:
        stats = measure_d2_v2(problem, task_sets, thetas)
        advance()
    q_theory = [q_star(d2, v2, c_det, c_rnd, cfg.eps) for d2, v2 in stats]
    q_grid_values = np.linspace(*cfg.q_grid_range, cfg.q_grid_points)
    i_curve = int(np.argmin(np.abs(alphas - cfg.alpha_curve)))
    qs = np.r_[q_grid_values, 0.0, q_theory[i_curve], 1.0]  # the last three: curves at alpha_curve
    keys = jnp.stack([jax.random.PRNGKey(s) for s in cfg.seeds])
    k_theta, run_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
    theta0 = jax.vmap(lambda k: jax.random.uniform(k, (), minval=cfg.theta0_range[0], maxval=cfg.theta0_range[1]))(
        k_theta)
    every, target = cfg.record_every, cfg.target
    steps = every * (cfg.outer_steps // every)
    with ctx.progress(f"{NAME}: SGD runs over q (one vmapped sweep) and q = 0", 2) as advance:
        positive = qs > 0
        rms_q, calls_q = ufom_sweep(problem, qs[positive], branch, task_sets, theta0, run_keys, cfg, f"{NAME} ufom")
        advance()
        rms_0, calls_0 = expected_curves(problem, estimator("fom"), task_sets, theta0, run_keys, cfg,
                                         f"{NAME} fom")
        advance()
    shape = (len(alphas), len(qs), rms_q.shape[-1])
    rms, calls = np.empty(shape), np.empty(shape)  # (n_alpha, n_q, records)
    rms[:, positive], calls[:, positive] = rms_q, calls_q
    rms[:, ~positive], calls[:, ~positive] = rms_0[:, None], calls_0[:, None]
    ng = len(q_grid_values)
    rows, grid_rows = [], []
    for i, al in enumerate(alphas):
        to_target = [calls_to_target(rms[i, j], calls[i, j], target) for j in range(ng)]
        j_best = int(np.argmin(to_target))
        row = {"method": "ufom", "exact": cfg.exact, "seed": None, "seeds": len(cfg.seeds), "alpha": float(al), "D2": stats[i][0],
               "V2": stats[i][1], "q_theory": q_theory[i],
               "q_grid": float(q_grid_values[j_best]) if np.isfinite(to_target[j_best]) else None,
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
    _write_figures(ctx.out, rows, alphas, i_curve, qs[ng:], rms[i_curve, ng:], calls[i_curve, ng:], target)
    c = rows[i_curve]
    calls_to = lambda v: "never" if not np.isfinite(v) else number(v)
    notes = (smoke_note(cfg) + f"UFOM's exact branch: {cfg.exact}. C_det = {number(c_det)}, C_rnd = {number(c_rnd)} "
             f"(C1 = {number(cfg.C1)}, C2 = {number(cfg.C2)}), eps = {number(cfg.eps)}; target sqrt(E|dM/dθ|²) <= "
             f"{number(target)}; {steps:,} steps, γ_k = {number(cfg.gamma0)}/(k+1). At α = {alphas[i_curve]:.4g}: "
             f"expected function calls to the target: q = 0: {calls_to(c['calls_to_target_q0'])}, q* = "
             f"{c['q_theory']:.4f}: {calls_to(c['calls_to_target_qstar'])}, q = 1: {calls_to(c['calls_to_target_q1'])}. "
             + seeds_note(cfg))
    d2 = [{k: r[k] for k in ("alpha", "D2", "V2", "q_theory", "q_grid")} for r in rows]
    config_out = {**cfg.as_dict(), "alphas": alphas.tolist(), "C_det": c_det, "C_rnd": c_rnd}
    return ctx.finish(NAME, config_out, rows, title="Optimal q: theory against grid search (Likhosherstov et al. 2021 "
                      "Fig. 1d-f)", columns=["alpha", "D2", "V2", "q_theory", "q_grid", "calls_to_target_q_grid"],
                      notes=notes, csv={"curves.csv": curves, "grid_search.csv": grid_rows, "d2_v2.csv": d2})


def _write_figures(out_dir, rows, alphas, i_curve, q_curve, rms, calls, target):
    plt = pyplot()
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


register(Experiment(NAME, run, Config, TINY,
                    "Likhosherstov et al. 2021 §4.4 / Fig. 1d-f: V², D² against α, q* theory vs grid search, convergence"))
