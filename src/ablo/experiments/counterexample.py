"""Experiment ``counterexample``: the problem of Likhosherstov et al. 2021 Theorem 2 / §5.1 (Figure 1a-c), on which
outer SGD with FOM stalls at a non-stationary point while UFOM (q = 0.1) converges.

The problem, its data and the protocol in detail: :mod:`ablo.problems.counterexample`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from ..problems.counterexample import (check_alpha, counterexample_constants, descend, exact_grad_fn, make_problem,
                                       mean_fom_fn, piecewise_f, roots, stack_tasks)
from ..results import figure_legend, save_figure
from . import Experiment, Result, RunContext, register
from ._notes import paired_note, seeds_note, smoke_note, smoke_option
from ..config import ConfigError, ExperimentConfig, estimator, option
from .plots import pyplot

NAME = "counterexample"


@dataclass(frozen=True)
class Config(ExperimentConfig):
    methods: tuple[str, ...] = option(("fom", "ufom:q=0.1"), "estimator specs compared", estimators=True,
                                      min_len=1)
    seeds: tuple[int, ...] = option(tuple(range(10, 20)), "seeds: each draws its θ_0 and its tasks", low=0,
                                    min_len=1, unique=True)
    tuned_seeds: tuple[int, ...] = option(tuple(range(10)), "seeds the settings were chosen on (pre-registration); "
                                          "the seeds a run reports must differ from them", low=0, unique=True)
    outer_steps: int = option(10_000, "outer SGD steps", low=1, high=10_000_000)
    alpha: float = option(0.1, "inner GD step size α (must be below 2/max a_i)", low=0, low_open=True)
    r: int = option(10, "inner GD steps r", low=1, high=10_000)
    a: tuple[float, ...] = option((0.5, 1.5), "curvatures a_1, a_2 of the two tasks", low=0, low_open=True)
    D: float = option(0.06, "the bias D of Theorem 2 that fixes b_2", low=0, low_open=True)
    gamma0: float = option(10.0, "outer step size γ_0 of γ_k = γ_0/(k+1)", low=0, low_open=True)
    theta0_range: tuple[float, ...] = option((-10.0, 30.0), "θ_0 ~ U(lo, hi): lo, hi")
    curve_points: int = option(300, "log-spaced steps recorded in curves.csv", low=2, high=100_000)
    smoke: bool = smoke_option()

    def validate(self):
        if len(self.a) != 2:
            raise ConfigError(f"a: give 2 curvatures (two tasks); got {list(self.a)!r}")
        if len(self.theta0_range) != 2 or not self.theta0_range[0] < self.theta0_range[1]:
            raise ConfigError(f"theta0_range: give lo, hi with lo < hi; got {list(self.theta0_range)!r}")


TINY = dict(smoke=True, seeds=(0, 1), tuned_seeds=(), outer_steps=50, curve_points=10)


def run(cfg: Config, ctx: RunContext) -> Result:
    b, A = counterexample_constants(cfg.alpha, cfg.r, cfg.a, cfg.D)
    problem = make_problem(cfg.alpha, cfg.r)
    tasks = stack_tasks(cfg.a, b, A)
    check_alpha(problem, tasks, cfg.alpha)
    methods = {spec: estimator(spec) for spec in cfg.methods}
    for est in methods.values():
        est.check(problem)
    grad_M, M = exact_grad_fn(problem, tasks)
    steps, seeds = cfg.outer_steps, list(cfg.seeds)
    lo, hi = cfg.theta0_range
    keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
    k_theta, run_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
    theta0 = jax.vmap(lambda k: jax.random.uniform(k, (), minval=lo, maxval=hi))(k_theta)
    idx = np.unique(np.geomspace(1, steps, cfg.curve_points).astype(int) - 1)
    rows, curves, trajectories = [], [], {}
    with ctx.progress(NAME, len(methods)) as advance:
        for spec, est in methods.items():
            q = 0.0 if est.name == "fom" else getattr(est, "q", None)
            t0 = time.perf_counter()
            thetas, calls = descend(problem, est, tasks, theta0, run_keys, cfg, f"{NAME} {spec}")
            seconds = time.perf_counter() - t0
            grads = np.abs(np.asarray(grad_M(thetas[:, idx])))
            trajectories[spec] = (est.name, thetas, idx, grads)
            for i, seed in enumerate(seeds):
                rows.append({"method": spec, "seed": seed, "q": q, "theta0": float(theta0[i]),
                             "final_theta": float(thetas[i, -1]), "final_abs_grad": float(grads[i, -1]),
                             "function_calls": float(calls[i, -1]), "seconds": seconds / len(seeds)})
                curves += [{"method": spec, "seed": seed, "step": int(k + 1), "theta": float(thetas[i, k]),
                            "abs_grad": float(grads[i, j])} for j, k in enumerate(idx)]
            advance()
    fixed, stat = roots(mean_fom_fn(problem, tasks)), roots(grad_M)
    fixed_grad = np.abs(np.asarray(grad_M(np.asarray(fixed)))).tolist()
    stationary = {"fom_fixed_points": [{"theta": x, "abs_grad_M": g} for x, g in zip(fixed, fixed_grad)],
                  "stationary_points": stat}
    _write_figures(ctx.out, tasks, M, trajectories, fixed, stat, fixed_grad)
    table = []
    for spec in methods:
        g = [r["final_abs_grad"] for r in rows if r["method"] == spec]
        t = [r["final_theta"] for r in rows if r["method"] == spec]
        table.append({"method": spec, "seeds": len(g), "mean final theta": float(np.mean(t)),
                      "mean final abs grad": float(np.mean(g)), "min": float(np.min(g)), "max": float(np.max(g))})
    notes = (smoke_note(cfg) + f"b_2 = {b[1]:.5f}, A = {A:.5f}. FOM's fixed point(s) E[G_FO] = 0 at θ = "
             + ", ".join(f"{x:.4f} (|∂M/∂θ| = {g:.4f})" for x, g in zip(fixed, fixed_grad))
             + f". {steps:,} outer SGD steps, γ_k = {cfg.gamma0:g}/(k+1), θ_0 ~ U({lo:g}, {hi:g}); "
             + seeds_note(cfg) + paired_note(rows, "final_abs_grad", lower_is_better=True))
    return ctx.finish(NAME, {**cfg.as_dict(), "b": b.tolist(), "A": A, **stationary}, rows,
                      title="Counterexample (Likhosherstov et al. 2021 §5.1, Theorem 2)", table=table, notes=notes,
                      csv={"curves.csv": curves})


def zoom_window(trajectories, points) -> tuple:
    """(first step, last step, θ low, θ high) of fig_theta's zoomed panel: the last 90% of the
    steps, and the θ range of every seed's iterates there and of ``points`` (the fixed and
    stationary points), padded by 10%. ``trajectories``: {method: (name, θ (seeds, steps), recorded
    step indices, ...)}."""
    steps = max(int(tr[2][-1]) + 1 for tr in trajectories.values())
    start = max(1, steps // 10)
    late = np.concatenate([tr[1][:, tr[2][tr[2] + 1 >= start]].ravel() for tr in trajectories.values()]
                          + [np.asarray(points, float)])
    pad = 0.1 * max(float(np.ptp(late)), 0.5)
    return start, steps, float(late.min()) - pad, float(late.max()) + pad


def _write_figures(out_dir, tasks, M, trajectories, fixed, stat, fixed_grad):
    """fig_tasks.png (Fig. 1a), fig_landscape.png (M with the final iterates), fig_theta.png (θ_k:
    all steps, and a second panel zoomed on the last 90% of steps so that FOM's fixed point and
    the stationary point, 3 apart, are told apart after the early excursion), fig_grad.png (Fig. 1c,
    with |∂M/∂θ| at FOM's fixed point, where FOM stalls)."""
    plt = pyplot()
    colors = {"fom": "tab:red", "ufom": "tab:blue"}
    marks = [(x, "tab:red", f"FOM fixed point, θ = {x:.3f}") for x in fixed] + \
            [(x, "tab:blue", f"stationary point ∂M/∂θ = 0, θ = {x:.3f}") for x in stat]
    # (a) the two tasks' inner losses
    phi = np.linspace(-40, 60, 1000)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    f = jax.jit(jax.vmap(lambda t: piecewise_f(jnp.asarray(phi), t)))(tasks)
    for i, fi in enumerate(np.asarray(f)):
        ax.plot(phi, fi, label=f"$f_{i + 1}$ (minimum at φ = {float(tasks[1][i] / tasks[0][i]):.2f})")
    ax.set(xlabel="inner parameter φ", ylabel=r"inner = outer loss $f_i(\varphi)$", title="(a) the two task losses")
    ax.legend(fontsize=8)
    save_figure(fig, out_dir / "fig_tasks.png")
    # (b) landscape M(θ) with final iterates and FOM's fixed point
    grid = np.linspace(-10, 30, 801)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(grid, np.asarray(M(grid)), "k-", lw=1, label="M(θ) (exact, mean over the two tasks)")
    for method, (name, thetas, _, _) in trajectories.items():
        fin = thetas[:, -1]
        ax.plot(fin, np.asarray(M(fin)), "o", color=colors.get(name), ms=6, alpha=0.7, label=f"{method}: final θ per seed")
    for x, c, label in marks:
        ax.axvline(x, color=c, ls=":", lw=1, label=label)
    ax.set(xlabel="meta-parameter θ", ylabel="meta-objective M(θ) (loss after r inner steps)",
           title="(b) M(θ) and where each seed ends")
    figure_legend(fig, ncol=2)
    save_figure(fig, out_dir / "fig_landscape.png")
    # θ_k over steps: all of them, then the end, zoomed
    fig, (full, end) = plt.subplots(1, 2, figsize=(10, 3.8))
    for method, (name, thetas, idx, _) in trajectories.items():
        for i, y in enumerate(thetas[:, idx]):
            for ax in (full, end):
                ax.plot(idx + 1, y, color=colors.get(name), alpha=0.5, lw=0.8, label=method if i == 0 else None)
    for x, c, label in marks:
        for ax in (full, end):
            ax.axhline(x, color=c, ls=":", lw=1.2, label=label)
    start, steps, lo, hi = zoom_window(trajectories, [x for x, _, _ in marks])
    end.set(xlim=(start, steps), ylim=(lo, hi))
    full.set(xscale="log", xlabel="outer SGD step k (log scale)", ylabel=r"meta-parameter $\theta_k$",
             title="θ_k, every step (one line per seed)")
    end.set(xlabel="outer SGD step k", title=f"zoom on steps {start}..{steps}")
    figure_legend(fig, ncol=2)
    save_figure(fig, out_dir / "fig_theta.png")
    # (c) |∂M/∂θ| over steps
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method, (name, _, idx, grads) in trajectories.items():
        for i, y in enumerate(grads):
            ax.plot(idx + 1, y, color=colors.get(name), alpha=0.5, lw=0.8, label=method if i == 0 else None)
    for g in fixed_grad:
        ax.axhline(g, color="tab:red", ls=":", lw=1.2, label=f"|∂M/∂θ| at FOM's fixed point = {g:.3f}")
    ax.set(xscale="log", yscale="log", xlabel="outer SGD step k (log scale)",
           ylabel=r"exact $|\partial M/\partial\theta\,(\theta_k)|$ (log scale)", title="(c) exact gradient norm")
    figure_legend(fig, ncol=3)
    save_figure(fig, out_dir / "fig_grad.png")


register(Experiment(NAME, run, Config, TINY,
                    "Likhosherstov et al. 2021 §5.1 / Theorem 2: FOM stalls, UFOM (q = 0.1) converges (Fig. 1a-c)"))
