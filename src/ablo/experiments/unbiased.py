"""Experiment ``unbiased``: the unbiased alternatives Likhosherstov et al. 2021 §2 names beside UFOM
(randomized telescopes, ES, PES, reversible learning), side by side with UFOM, Adaptive UFOM and
the exact hypergradient.

Per problem (:mod:`ablo.problems.unbiased`: ``lr`` and ``synthetic-q`` with dim θ = 1, ``weights`` and
MLP ``hypercleaning`` with dim θ = n) and method, ``ablo.online.compare`` reports the bias, the variance
of one estimate, the expected function calls per estimate, their product (Likhosherstov et al. 2021
Prop. 1) and the temp memory. Then online tuning of the step size on ``lr`` with the inner run carried
across outer steps (``ablo.online.online``: truncated, UFOM-style window debiasing, PES), against the
offline objective M^(r) on a grid of θ.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax

from .. import estimators
from ..online import compare
from ..problems.unbiased import online_tuning, setup
from ..results import markdown_table, save_figure
from . import Experiment, Result, RunContext, register
from ._notes import smoke_note, smoke_option
from ..config import ExperimentConfig, option
from .plots import bar_figure

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
    n_train: int = option(128, "training examples n of the hypercleaning problem (its dim θ; as many validation "
                               "examples)", low=10, high=600)
    hidden: int = option(16, "hidden width of the hypercleaning MLP", low=1, high=10_000)
    draws: int = option(512, "estimates drawn per method for the variance", low=2, high=1_000_000)
    warmup: int = option(50, "calls that advance a stateful method's state (Adaptive UFOM's D², V²) before "
                             "the draws", low=0, high=1_000_000)
    window: int = option(8, "inner steps per outer step in online tuning (must divide r)", low=1)
    online_steps: int = option(400, "outer steps of online tuning", low=1, high=10_000_000)
    online_lr: float = option(0.05, "outer step size of online tuning", low=0, low_open=True)
    seed: int = option(1, "seed of the data, the noise and the draws (reported; the settings were chosen on "
                          "seed 0)", low=0)
    smoke: bool = smoke_option()


TINY = dict(smoke=True, r=8, n_examples=4, n_train=20, hidden=4, draws=16, warmup=2, window=4, online_steps=6,
            methods=("reversible", "ufom:q=0.5,exact=reverse", "telescope", "pes:sigma=0.01,pairs=2"))


def run(cfg: Config, ctx: RunContext) -> Result:
    """In float64 (scoped: ``jax.enable_x64``), as reversible's fixed point and the variances need."""
    with jax.enable_x64(True):
        return report(cfg, ctx, *_measure(cfg))


def _measure(cfg: Config):
    """(comparison rows, online rows)."""
    key = jax.random.PRNGKey(cfg.seed)
    methods = {spec: estimators.parse(spec) for spec in cfg.methods}
    rows, problems = [], setup(cfg)
    for name, (prob, theta, task) in problems.items():
        for row in compare(prob, theta, task, methods, jax.random.fold_in(key, len(rows)), cfg.draws, cfg.warmup):
            rows.append({"problem": name, **row})
    return rows, online_tuning(*problems["lr"], cfg, jax.random.fold_in(key, 99))


def report(cfg: Config, ctx: RunContext, rows, online_rows) -> Result:
    """fig_variance_x_calls.png, comparison.csv, online.csv, results.md, summary.json (comparison rows,
    then online rows)."""
    # exact estimators' variance is float round-off (~1e-30): on a log axis it would squash the rest
    drawn = [r for r in rows if r.get("variance_x_calls", 0) > 1e-20]
    titles = {r["problem"]: f"{r['problem']} problem (dim θ = {r['dim_theta']}; exact estimators, at zero "
                            "variance, not drawn)" for r in drawn}
    save_figure(bar_figure(drawn, value="variance_x_calls", titles=titles,
                           axis="variance × expected function calls per estimate (lower is better)"),
                ctx.out / "fig_variance_x_calls.png")
    notes = (smoke_note(cfg) + "Variance: E‖Ĝ − EĜ‖² over draws at one θ (relative: over ‖G‖², G exact); calls: "
             "expected gradient evaluations + HVPs + JVPs per estimate; variance × calls is Likhosherstov et al. "
             "2021 Prop. 1's criterion; temp bytes from XLA's memory analysis.\n\n"
             "## Online tuning of the log step size (lr problem)\n\n")
    return ctx.finish(NAME, cfg.as_dict(), rows + [{"problem": "lr (online)", **r} for r in online_rows],
                      title="Unbiased hypergradient estimators side by side", table=rows,
                      columns=["problem", "method", "dim_theta", "bias", "bias_se", "variance", "relative_variance",
                               "expected_calls", "variance_x_calls", "temp_bytes", "skipped"],
                      notes=notes + markdown_table(online_rows),
                      csv={"comparison.csv": rows, "online.csv": online_rows})


register(Experiment(NAME, run, Config, TINY,
                    "telescope, ES, PES and reversible beside UFOM: variance x cost per estimate, memory, and "
                    "online step-size tuning (Wu et al. 2018's short-horizon bias)"))
