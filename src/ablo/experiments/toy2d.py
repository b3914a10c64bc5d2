"""The toy problem of Shaban et al. 2019 §4.1: λ, w ∈ R²,

The problem, its data and the protocol in detail: :mod:`ablo.problems.toy2d`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from . import Experiment, Result, RunContext, register
from ..curvature import check_step_size
from ..estimators import Truncated
from ..problems.toy2d import descend, descent_ratios, f_outer, make_problem, truncation_errors, w_hat
from ..results import figure_legend, number, save_figure
from ._notes import smoke_note, smoke_option
from ..config import ConfigError, ExperimentConfig, estimator, option
from .plots import method_label, method_order, pyplot

NAME = "toy2d"


@dataclass(frozen=True)
class Config(ExperimentConfig):
    methods: tuple[str, ...] = option(("truncated-1", "truncated-2", "truncated-5", "truncated-10", "truncated-25",
                                       "reverse"), "estimator specs compared (K-RMD as truncated-K)",
                                      estimators=True, min_len=1)
    steps: int = option(100, "inner GD steps T", low=1, high=10_000)
    inner_lr: float = option(0.1, "inner GD step size γ (must be below 2/L = 2)", low=0, low_open=True)
    w0: tuple[float, ...] = option((2.0, 2.0), "inner start w_0 (2 numbers)")
    lambda_bound: tuple[float, ...] = option((1.0, 1.0), "λ at which the Prop. 3.1 bound is checked (2 numbers)")
    lambda0: tuple[float, ...] = option((1.0, 1.0), "outer start λ_0 (2 numbers)")
    outer_steps: int = option(1000, "outer GD steps", low=1, high=1_000_000)
    first_step_norm: float = option(0.6, "norm of the first outer step, fixing η_0 (Shaban et al. 2019 footnote 4)",
                                    low=0, low_open=True)
    penalty: float = option(5.0, "weight of ‖λ − center‖² in f̃", low=0)
    penalty_center: tuple[float, ...] = option((1.0, 0.0), "center of the f̃ penalty (2 numbers)")
    seed: int = option(1, "PRNG seed of the estimators' keys", low=0)
    tuned_seeds: tuple[int, ...] = option((0,), "seeds the settings were chosen on (pre-registration); the seed a "
                                          "run reports must differ from them", low=0, unique=True)
    smoke: bool = smoke_option()

    def validate(self):
        for key in ("w0", "lambda_bound", "lambda0", "penalty_center"):
            if len(getattr(self, key)) != 2:
                raise ConfigError(f"{key}: give 2 numbers (λ, w ∈ R²); got {list(getattr(self, key))!r}")
        for spec in self.methods:
            try:
                estimator(spec).check(make_problem(self))
            except ValueError as e:
                raise ConfigError(f"methods: {spec}: {e}") from None


TINY = dict(steps=6, methods=("truncated-1", "truncated-3", "reverse"), outer_steps=30, seed=0, tuned_seeds=(),
            smoke=True)


def run(cfg: Config, ctx: RunContext) -> Result:
    specs = list(cfg.methods)
    if ctx.resume:
        ctx.note("toy2d keeps no checkpoints (each part runs in seconds): running again from outer step 0")
    # g is quadratic with Hessian G: L = max(G) = 1, so γ must be below 2 (checked by power iteration)
    check_step_size(make_problem(cfg), jnp.asarray(cfg.lambda0, float), None, cfg.inner_lr)

    with ctx.progress("toy2d: K-RMD error vs Prop. 3.1 bound", cfg.steps) as advance:
        errors, bounds = truncation_errors(cfg, cfg.lambda_bound, advance)
    bound_rows = [{"K": K, "error": e, "bound": b} for K, (e, b) in enumerate(zip(errors, bounds), start=1)]

    rows, curves, trajs = [], [], {}
    objectives = {"f": 0.0, "f_tilde": cfg.penalty}
    exact_first = sorted(specs, key=lambda sp: estimator(sp).name != "reverse")
    with ctx.progress("toy2d: outer trajectories", len(objectives) * len(specs)) as advance:
        for obj, penalty in objectives.items():
            problem = make_problem(cfg, penalty)
            exact_final = None
            for spec in exact_first:
                est = estimator(spec)
                K = getattr(est, "K", None)
                t0 = time.perf_counter()
                traj, gnorm, calls = descend(problem, est, cfg, jax.random.PRNGKey(cfg.seed), f"{obj} {spec}")
                seconds = time.perf_counter() - t0
                trajs[(obj, spec)] = traj
                final = traj[-1]
                if est.name == "reverse":
                    exact_final = final
                row = {"objective": obj, "method": spec, "K": K, "seed": cfg.seed, "lambda_1": float(final[0]),
                       "lambda_2": float(final[1]),
                       "outer_value": float(problem.outer_loss(jnp.asarray(final), w_hat(cfg, jnp.asarray(final)), None)),
                       "true_grad_norm": float(gnorm[-1]), **calls, "seconds": seconds}
                rows.append(row)
                curves += [{"objective": obj, "method": spec, "K": K, "step": i, "lambda_1": float(a),
                            "lambda_2": float(b), "true_grad_norm": float(gn)}
                           for i, ((a, b), gn) in enumerate(zip(traj, gnorm))]
                advance()
            for row in rows:
                if row["objective"] == obj:
                    row["distance_to_exact"] = (None if exact_final is None else
                                                float(np.hypot(row["lambda_1"] - exact_final[0],
                                                               row["lambda_2"] - exact_final[1])))
    Ks = sorted({K for K in (getattr(estimator(sp), "K", None) for sp in specs) if K is not None} | {cfg.steps})
    ratios, ratio_rows = {}, []
    with ctx.progress("toy2d: descent ratio along the K = 1 trajectory (Fig. 2)", len(objectives)) as advance:
        for obj, penalty in objectives.items():
            problem = make_problem(cfg, penalty)
            traj = next((t for (o, sp), t in trajs.items() if o == obj and getattr(estimator(sp), "K", 0) == 1), None)
            if traj is None:  # no truncated-1 among the methods: the K = 1 trajectory is still Fig. 2's path
                traj = descend(problem, Truncated(1), cfg, jax.random.PRNGKey(cfg.seed), f"{obj} truncated-1")[0]
            ratios[obj] = descent_ratios(problem, traj, Ks, jax.random.PRNGKey(cfg.seed))
            ratio_rows += [{"objective": obj, "K": K, "step": i, "lambda_1": float(lam[0]), "lambda_2": float(lam[1]),
                            "ratio": r} for K, rs in zip(Ks, ratios[obj]) for i, (lam, r) in enumerate(zip(traj, rs))]
            advance()
    plot_bound(ctx.out / "bound.png", cfg, errors, bounds)
    for obj in objectives:
        plot_trajectories(ctx.out / f"trajectories_{obj}.png", cfg, obj, trajs)
    plot_descent_ratio(ctx.out / "descent_ratio.png", cfg, Ks, ratios)
    ratio_min = {obj: {str(K): float(np.nanmin(r)) for K, r in zip(Ks, rs)} for obj, rs in ratios.items()}
    holds = bool(np.all(errors <= bounds))
    config = {**cfg.as_dict(), "bound_holds": holds, "max_error_over_bound": float(np.max(errors / bounds)),
              "descent_ratio_min": ratio_min}
    cols = ["objective", "method", "K", "lambda_1", "lambda_2", "outer_value", "true_grad_norm", "distance_to_exact",
            "function_calls", "seconds"]
    return ctx.finish(NAME, config, rows, title="toy2d (Shaban et al. 2019, §4.1)", columns=cols,
                      notes=notes(cfg, rows, holds, errors / bounds, ratio_min),
                      csv={"bound.csv": bound_rows, "trajectories.csv": curves, "descent_ratio.csv": ratio_rows})


def notes(cfg: Config, rows, holds: bool, ratio, ratio_min) -> str:
    """results.md's text: the bound check, the protocol, each method's final exact gradient norm and the
    descent ratios, from this run's numbers."""
    grads = "; ".join(f"{r['objective']} {r['method']}: {number(r['true_grad_norm'], 3)}" for r in rows)
    ratios = "; ".join(f"{obj}: " + ", ".join(f"K = {K}: {number(v, 3)}" for K, v in m.items())
                       for obj, m in ratio_min.items())
    negative = [obj for obj, m in ratio_min.items() if min(m.values()) < 0]
    return (smoke_note(cfg) + f"Prop. 3.1 eq. (10) at λ = {tuple(cfg.lambda_bound)}, K = 1..{cfg.steps}: the "
            f"measured K-RMD error is {'at or below' if holds else 'NOT always below'} the bound for every K (largest "
            f"error/bound {number(np.max(ratio), 3)}); see bound.png / bound.csv. Outer GD from λ_0 = "
            f"{tuple(cfg.lambda0)}, {cfg.outer_steps} steps, η_τ = η_0/√τ with a first step of norm "
            f"{number(cfg.first_step_norm)}, {tuple(cfg.methods)}.\n\n"
            f"true_grad_norm, ‖d_λ‖ of the exact hypergradient at each method's final λ: {grads}.\n\n"
            "Shaban et al. 2019 Fig. 2 (descent_ratio.png / descent_ratio.csv): h_{T−K}ᵀ d_λ / ‖d_λ‖² at each λ_τ of "
            f"the K = 1 trajectory; its minimum over τ per K: {ratios}. It turned negative on "
            f"{', '.join(negative) if negative else 'neither objective'} in this run; Lemma 3.2 keeps it positive "
            "on f (∇_λ f = 0); at K = T it is 1.")


def plot_bound(path: Path, cfg: Config, errors, bounds) -> None:
    """bound.png (Fig. 1 right): the measured K-RMD error against the bound (10), log scale."""
    Ks = np.arange(1, len(errors) + 1)
    fig, ax = pyplot().subplots(figsize=(5, 3.5))
    ax.semilogy(Ks, bounds, "--", label="Prop. 3.1 bound (eq. 10)")
    pos = errors > 0  # K = T is exact: error 0, off a log scale
    ax.semilogy(Ks[pos], errors[pos], label=r"measured $\|h_{T-K} - d_\lambda f\|$")
    ax.set(xlabel="K (inner steps back-propagated)", ylabel="hypergradient error (norm, log scale)",
           title=f"K-RMD error at λ = {tuple(cfg.lambda_bound)}, T = {cfg.steps}")
    ax.legend()
    save_figure(fig, path)


def plot_trajectories(path: Path, cfg: Config, obj: str, trajs) -> None:
    """trajectories_{f,f_tilde}.png (Figs. 3-4): the outer iterates on the contours of the objective
    and their distance to the exact method's final λ."""
    title = "f" if obj == "f" else f"f̃ = f + {cfg.penalty:g}‖λ − {tuple(cfg.penalty_center)}‖²"
    fig, (a1, a2) = pyplot().subplots(1, 2, figsize=(10, 4.2))
    points = np.concatenate([t for (o, _), t in trajs.items() if o == obj] + [[[-0.5, -0.5], [1.5, 1.5]]])
    (x0, y0), (x1, y1) = points.min(0) - 0.1, points.max(0) + 0.1  # every iterate on the contours
    X, Y = np.meshgrid(np.linspace(x0, x1, 200), np.linspace(y0, y1, 200))
    pen = 0.0 if obj == "f" else cfg.penalty
    lam = jnp.stack([X.ravel(), Y.ravel()], 1)
    Z = np.asarray(jax.vmap(lambda l: f_outer(None, w_hat(cfg, l), None)
                            + pen * jnp.sum((l - jnp.asarray(cfg.penalty_center)) ** 2))(lam)).reshape(X.shape)
    a1.contour(X, Y, Z, 30, cmap="Greys", linewidths=0.6)
    specs = method_order([sp for o, sp in trajs if o == obj], cfg.steps)
    exact = next((sp for sp in specs if estimator(sp).name == "reverse"), None)
    for spec in specs:
        t = trajs[(obj, spec)]
        label = method_label(spec, cfg.steps)
        a1.plot(t[:, 0], t[:, 1], ".-", ms=2, lw=0.8, label=label)
        ref = trajs[(obj, exact)][-1] if exact else t[-1]
        dist = np.linalg.norm(t - ref, axis=1)
        a2.semilogy(np.where(dist > 0, dist, np.nan), lw=1, label=label)  # λ* itself is off a log scale
    a1.set(xlabel="λ₁", ylabel="λ₂", title=rf"outer iterates $\lambda_\tau$ on the contours of {title}")
    a2.set(xlabel=r"outer step $\tau$", ylabel=r"$\|\lambda_\tau - \lambda^*\|$ (log scale)",
           title="distance to λ* = " + ("the exact method's final λ" if exact else "each method's own final λ"))
    figure_legend(fig, ncol=len(specs))
    save_figure(fig, path)


def plot_descent_ratio(path: Path, cfg: Config, Ks, ratios) -> None:
    """Shaban et al. 2019 Fig. 2: the descent ratio along the K = 1 trajectory, f left, f̃ right."""
    fig, axes = pyplot().subplots(1, 2, figsize=(10, 3.8), sharex=True)
    titles = {"f": r"f ($\nabla_\lambda f = 0$: Lemma 3.2 applies)",
              "f_tilde": f"f̃ = f + {cfg.penalty:g}‖λ − {tuple(cfg.penalty_center)}‖²" + r" ($\nabla_\lambda \tilde f \neq 0$)"}
    for ax, (obj, rs) in zip(axes, ratios.items()):
        for K, r in zip(Ks, rs):
            ax.plot(np.arange(len(r)), r, lw=1.2 if K < cfg.steps else 1.0, ls="-" if K < cfg.steps else "--",
                    label=f"K = {K}" if K < cfg.steps else f"K = T = {K} (exact)")
        ax.axhline(0.0, color="grey", lw=0.6)
        ax.set_xscale("symlog", linthresh=10)  # the ratio moves in the first steps, then holds
        ax.set(xlabel=r"outer step $\tau$ along the K = 1 trajectory (linear to 10, log beyond)", title=titles[obj])
    axes[0].set_ylabel(r"$h_{T-K}^\top d_\lambda / \|d_\lambda\|^2$ (ratio)")
    figure_legend(fig, ncol=len(Ks))
    save_figure(fig, path)


register(Experiment(NAME, run, Config, TINY,
                    "toy 2-D problem (Shaban et al. 2019, §4.1): Prop. 3.1 bound vs K-RMD error, K-RMD trajectories, "
                    "biased 1-RMD on f + 5||λ-(1,0)||²"))
