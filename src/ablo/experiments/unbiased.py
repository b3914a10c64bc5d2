"""Experiment ``unbiased``: the unbiased alternatives Likhosherstov et al. 2021 §2 names beside UFOM
(randomized telescopes, ES, PES, reversible learning), side by side with UFOM, Adaptive UFOM and
the exact hypergradient.

Two problems: ``lr``, Wu et al. 2018's noisy quadratic with θ the log inner step size (dim θ = 1),
and ``weights``, ridge regression on n synthetic examples weighted by σ(θ_i) (dim θ = n, the
hypercleaning shape). Per problem and method ``ablo.online.compare`` reports the bias, the variance
of one estimate, the expected function calls per estimate, their product (Likhosherstov et al.
2021 Prop. 1) and the temp memory. Then online tuning of the step size on ``lr`` with the inner
run carried across outer steps (``ablo.online.online``: truncated, UFOM-style window debiasing,
PES), against the offline objective M^(r) on a grid of θ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .. import estimators
from ..inner import momentum
from ..online import compare, online, short_horizon_problem
from ..problem import BilevelProblem, constant_init
from ..results import markdown_table, save_figure, write_csv, write_markdown, write_summary
from . import Experiment, RunContext, register
from ._notes import smoke_note, smoke_option
from ..config import ExperimentConfig, option

NAME = "unbiased"


@dataclass(frozen=True)
class Config(ExperimentConfig):
    tuned_seeds: tuple[int, ...] = option((0,), "seeds the settings were chosen on (pre-registration); the seeds a "
                                          "run reports must differ from them", low=0, unique=True)
    methods: tuple[str, ...] = option(("reverse", "reversible", "ufom:q=0.2,exact=reverse", "adaptive-ufom",
                                       "telescope", "telescope:form=roulette", "es:sigma=0.01,pairs=8",
                                       "pes:sigma=0.01,pairs=8"),
                                      "estimator specs compared", estimators=True, min_len=1)
    r: int = option(64, "inner steps r", low=1, high=100_000)
    n_examples: int = option(32, "examples of the weights problem (its dim θ)", low=2, high=100_000)
    draws: int = option(512, "estimates drawn per method for the variance", low=2, high=1_000_000)
    warmup: int = option(50, "calls that advance a stateful method's state (Adaptive UFOM's D², V²) before "
                             "the draws", low=0, high=1_000_000)
    window: int = option(8, "inner steps per outer step in online tuning (must divide r)", low=1)
    online_steps: int = option(400, "outer steps of online tuning", low=1, high=10_000_000)
    online_lr: float = option(0.05, "outer step size of online tuning", low=0, low_open=True)
    seed: int = option(1, "seed of the data, the noise and the draws (reported; the settings were chosen on "
                          "seed 0)", low=0)
    smoke: bool = smoke_option()


TINY = dict(smoke=True, r=8, n_examples=4, draws=16, warmup=2, window=4, online_steps=6,
            methods=("reversible", "ufom:q=0.5,exact=reverse", "telescope", "pes:sigma=0.01,pairs=2"))


def weights_problem(n: int, r: int, seed: int):
    """Ridge regression on n examples weighted by σ(θ_i), heavy-ball momentum (β = 0.9), validation MSE
    outer loss; returns (problem, θ_0, task)."""
    kx, kw, kv = jax.random.split(jax.random.PRNGKey(seed), 3)
    d = 5
    x, xv = jax.random.normal(kx, (n, d)), jax.random.normal(kv, (n, d))
    w = jax.random.normal(kw, (d,))
    y = x @ w + 0.5 * jax.random.normal(kv, (n,)) * (jnp.arange(n) % 2)  # every other label noisy
    inner = lambda th, phi, task: 0.5 * jnp.mean(jax.nn.sigmoid(th) * (task[0] @ phi - task[1]) ** 2) + 1e-2 * phi @ phi
    outer = lambda th, phi, task: 0.5 * jnp.mean((task[2] @ phi - task[3]) ** 2)
    prob = BilevelProblem(inner, outer, momentum(0.3, beta=0.9), r, init=constant_init(jnp.zeros(d)))
    return prob, jnp.zeros(n), (x, y, xv, xv @ w)


def setup(cfg: Config):
    """{problem name: (problem, θ, task)}."""
    lr = short_horizon_problem(dim=10, r=cfg.r, noise=0.1, seed=cfg.seed)
    return {"lr": (lr, jnp.asarray(-2.0), None), "weights": weights_problem(cfg.n_examples, cfg.r, cfg.seed)}


def run(cfg: Config, ctx: RunContext) -> dict:
    """In float64 (scoped: ``jax.enable_x64``), as reversible's fixed point and the variances need."""
    with jax.enable_x64(True):
        return _run(cfg, ctx)


def _run(cfg: Config, ctx: RunContext) -> dict:
    key = jax.random.PRNGKey(cfg.seed)
    methods = {spec: estimators.parse(spec) for spec in cfg.methods}
    rows = []
    for name, (prob, theta, task) in setup(cfg).items():
        for row in compare(prob, theta, task, methods, jax.random.fold_in(key, len(rows)), cfg.draws, cfg.warmup):
            rows.append({"problem": name, **row})
    prob, theta, task = setup(cfg)["lr"]
    grid = np.linspace(-4.0, 1.0, 26)
    M = np.asarray(jax.jit(jax.vmap(lambda t: prob.objective(t, task)))(jnp.asarray(grid)))
    online_rows = []
    for method in ("truncated", "ufom", "pes"):
        thetas = np.asarray(online(prob, theta, task, method, cfg.window, cfg.online_steps, cfg.online_lr,
                                   jax.random.fold_in(key, 99), sigma=0.01))
        final = float(thetas[-max(1, len(thetas) // 10):].mean())
        online_rows.append(dict(method=method, window=cfg.window, final_theta=final,
                                final_objective=float(prob.objective(jnp.asarray(final), task))))
    best = dict(method="grid optimum of M^(r)", window=cfg.r, final_theta=float(grid[M.argmin()]),
                final_objective=float(M.min()))
    return report(cfg, ctx, rows, online_rows + [best])


def report(cfg: Config, ctx: RunContext, rows, online_rows) -> dict:
    """comparison.csv, online.csv, results.md, fig_variance_x_calls.png, summary.json (comparison rows,
    then online rows)."""
    import matplotlib.pyplot as plt

    problems = sorted({r["problem"] for r in rows})
    fig, axes = plt.subplots(len(problems), 1, figsize=(7, 2.2 + 0.9 * len(rows) / max(len(problems), 1)),
                             squeeze=False)
    for ax, name in zip(axes[:, 0], problems):
        # exact estimators' variance is float round-off (~1e-30): drawn on a log axis it would squash the rest
        done = [r for r in rows if r["problem"] == name and r.get("variance_x_calls", 0) > 1e-20]
        ax.barh([r["method"] for r in done], [r["variance_x_calls"] for r in done])
        ax.set_xscale("log")
        ax.set_xlabel("variance × expected function calls per estimate (lower is better)")
        ax.set_title(f"{name} problem (exact estimators, at zero variance, not drawn)", fontsize=10)
    save_figure(fig, ctx.out / "fig_variance_x_calls.png")
    write_csv(ctx.out / "comparison.csv", rows)
    write_csv(ctx.out / "online.csv", online_rows)
    notes = (smoke_note(cfg) + "Variance: E‖Ĝ − EĜ‖² over draws at one θ; calls: expected gradient evaluations + "
             "HVPs + JVPs per estimate; variance × calls is Likhosherstov et al. 2021 Prop. 1's criterion; "
             "temp bytes from XLA's memory analysis.\n\n## Online tuning of the log step size (lr problem)\n\n")
    write_markdown(ctx.out / "results.md", "Unbiased hypergradient estimators side by side", rows,
                   ["problem", "method", "bias", "bias_se", "variance", "expected_calls", "variance_x_calls",
                    "temp_bytes", "skipped"], notes=notes + markdown_table(online_rows))
    results = rows + [{"problem": "lr (online)", **r} for r in online_rows]
    return json.loads(write_summary(ctx.out, NAME, cfg.as_dict(), results).read_text())


register(Experiment(NAME, run, Config, TINY,
                    "telescope, ES, PES and reversible beside UFOM: variance x cost per estimate, memory, and "
                    "online step-size tuning (Wu et al. 2018's short-horizon bias)"))
