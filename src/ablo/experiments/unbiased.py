"""Experiment ``unbiased``: the unbiased alternatives Likhosherstov et al. 2021 §2 names beside UFOM
(randomized telescopes, ES, PES, reversible learning), side by side with UFOM, Adaptive UFOM and
the exact hypergradient.

Per problem (:mod:`ablo.problems.unbiased`: ``lr`` and ``synthetic-q`` with dim θ = 1, the step-size
``schedule`` with dim θ = 4, ``weights`` and MLP ``hypercleaning`` with dim θ = n) and method,
``ablo.online.compare`` reports the bias, the variance of one estimate, the expected function calls per
estimate, their product (Likhosherstov et al. 2021 Prop. 1) and the temp memory, and
``ablo.online.calls_to_target`` the function calls an Adam outer loop driven by the method spends to
reach a target fixed by exact reverse mode (median over repeats, and the fraction that reached it).
Then online tuning of the step size on ``lr`` with the inner run carried across outer steps
(``ablo.online.online``: truncated, UFOM-style window debiasing, PES), against the offline objective
M^(r) on a grid of θ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax

from .. import estimators
from ..online import compare
from ..problems.unbiased import PROBLEMS, online_tuning, setup, target_runs
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
                                       "pes:sigma=0.01,pairs=8", "fom", "truncated:K=8"),
                                      "estimator specs compared (fom and truncated: the biased baselines whose "
                                      "bias UFOM and the telescopes remove)", estimators=True, min_len=1)
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
    target_problems: tuple[str, ...] = option(PROBLEMS, "calls to target: the problems where it is measured",
                                              choices=PROBLEMS, unique=True)
    target_frac: float = option(0.5, "calls to target: the target is M(θ_0) − frac·(M(θ_0) − M(θ_T)), θ_T "
                                     "after target_steps Adam steps of exact reverse", low=0, high=1, low_open=True)
    target_steps: int = option(50, "calls to target: T, the Adam steps of exact reverse that fix the target", low=1)
    target_lr: float = option(0.05, "calls to target: the step size of the outer Adam (every method)", low=0,
                              low_open=True)
    target_budget: float = option(4.0, "calls to target: each run's budget, in multiples of reverse's T-step calls",
                                  low=1)
    target_repeats: int = option(5, "calls to target: runs per method (different keys)", low=1, high=10_000)
    seed: int = option(1, "seed of the data, the noise and the draws (reported; the settings were chosen on "
                          "seed 0)", low=0)
    smoke: bool = smoke_option()


TINY = dict(smoke=True, r=8, n_examples=4, n_train=20, hidden=4, draws=16, warmup=2, window=4, online_steps=6,
            target_problems=("schedule",), target_steps=3, target_budget=2.0, target_repeats=2,
            methods=("reversible", "ufom:q=0.5,exact=reverse", "telescope", "pes:sigma=0.01,pairs=2"))


def run(cfg: Config, ctx: RunContext) -> Result:
    """In float64 (scoped: ``jax.enable_x64``), as reversible's fixed point and the variances need."""
    with jax.enable_x64(True):
        return report(cfg, ctx, *_measure(cfg))


def _measure(cfg: Config):
    """(comparison rows with their calls to target, target rows, online rows)."""
    key = jax.random.PRNGKey(cfg.seed)
    methods = {spec: estimators.parse(spec) for spec in cfg.methods}
    rows, targets, problems = [], [], setup(cfg)
    for i, (name, (prob, theta, task)) in enumerate(problems.items()):
        compared = compare(prob, theta, task, methods, jax.random.fold_in(key, len(rows)), cfg.draws, cfg.warmup)
        fields = {}
        if name in cfg.target_problems:  # the methods compare ran (a refused one says why in its row)
            ran = {r["method"]: methods[r["method"]] for r in compared if "skipped" not in r}
            target, fields = target_runs(prob, theta, task, ran, cfg, jax.random.fold_in(key, 1000 + i))
            targets.append({"problem": name, **target})
        rows += [{"problem": name, **row, **fields.get(row["method"], {})} for row in compared]
    return rows, targets, online_tuning(*problems["lr"], cfg, jax.random.fold_in(key, 99))


def wins(rows) -> str:
    """Per problem, read off the rows: the random estimator with the lowest variance × calls (and the
    rank of the best of ES/PES among the random ones), the biased baselines' relative bias (FOM's, which
    UFOM removes; K-RMD's, whose decay in K the telescopes bet on) and the method with the fewest
    median calls to the target where that was measured."""
    lines = []
    for problem in dict.fromkeys(r["problem"] for r in rows):
        rs = [r for r in rows if r["problem"] == problem and "skipped" not in r]
        random = sorted((r for r in rs if r["variance_x_calls"] > 1e-20), key=lambda r: r["variance_x_calls"])
        parts = []
        if random:
            part = f"lowest variance × calls among the random estimators: {random[0]['method']}"
            es = [i for i, r in enumerate(random) if r["method"].split(":")[0] in ("es", "pes")]
            if es:
                part += f" (best of ES/PES ranks {es[0] + 1} of {len(random)})"
            parts.append(part)
        biased = [r for r in rs if r["method"].split(":")[0] in ("fom", "truncated")]
        if biased:
            parts.append("relative bias ‖EĜ − G‖/‖G‖ of " + ", ".join(f"{r['method']} {r['relative_bias']:.3g}"
                                                                    for r in biased))
        timed = [r for r in rs if "calls_to_target" in r]
        if timed:
            fastest = min(timed, key=lambda r: r["calls_to_target"])
            parts.append(f"fewest calls to the target: {fastest['method']} ({fastest['calls_to_target']:,.0f})"
                         if math.isfinite(fastest["calls_to_target"]) else
                         "no method reached the target in most repeats")
            timed_random = [r for r in random if "calls_to_target" in r]
            if fastest not in random and timed_random and math.isfinite(fastest["calls_to_target"]):
                best_random = min(timed_random, key=lambda r: r["calls_to_target"])
                if math.isfinite(best_random["calls_to_target"]):
                    parts[-1] += (f", of the random estimators {best_random['method']} "
                                  f"({best_random['calls_to_target']:,.0f})")
        lines.append(f"- **{problem}** (dim θ = {rs[0]['dim_theta']}): " + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n\n"


def report(cfg: Config, ctx: RunContext, rows, target_rows, online_rows) -> Result:
    """fig_variance_x_calls.png, comparison.csv, targets.csv, online.csv, results.md, summary.json
    (comparison rows, then target rows, then online rows)."""
    # deterministic estimators' variance is float round-off (~1e-30): on a log axis it would squash the rest
    drawn = [r for r in rows if r.get("variance_x_calls", 0) > 1e-20]
    titles = {r["problem"]: f"{r['problem']} problem (dim θ = {r['dim_theta']}; deterministic estimators, at zero "
                            "variance, not drawn)" for r in drawn}
    save_figure(bar_figure(drawn, value="variance_x_calls", titles=titles,
                           axis="variance × expected function calls per estimate (lower is better)"),
                ctx.out / "fig_variance_x_calls.png")
    notes = (smoke_note(cfg) + "Variance: E‖Ĝ − EĜ‖² over draws at one θ (relative: over ‖G‖², G exact); calls: "
             "expected gradient evaluations + HVPs + JVPs per estimate; variance × calls is Likhosherstov et al. "
             "2021 Prop. 1's criterion; temp bytes from XLA's memory analysis. `fom` and `truncated` (K-RMD) rows "
             "are deterministic, biased baselines: their relative bias ‖EĜ − G‖/‖G‖ (`relative_bias` in "
             "comparison.csv) is FOM's bias, which UFOM's exact branch removes, and the truncation bias, whose "
             "decay in K the telescopes rely on.\n\n"
             f"Calls to target: per problem the target is M* = M(θ_0) − {cfg.target_frac:g}·(M(θ_0) − M(θ_T)), "
             f"M the deterministic objective M^(r) and θ_T the point {cfg.target_steps} Adam steps (step size "
             f"{cfg.target_lr:g}) of exact reverse mode reach from θ_0; every method runs the same Adam from θ_0 "
             f"{cfg.target_repeats} times (different keys) with a budget of {cfg.target_budget:g}× reverse's "
             f"{cfg.target_steps}-step calls, and `calls_to_target` is the median of the function calls spent when "
             "M first reached M* (inf when fewer than half the runs did), `reached` the fraction of runs that "
             "reached it (calls_min, calls_max in comparison.csv: the runs' spread).\n\n"
             + markdown_table(target_rows) + "\n\n## Where each estimator wins (this run)\n\n" + wins(rows)
             + "## Online tuning of the log step size (lr problem)\n\n")
    return ctx.finish(NAME, cfg.as_dict(), rows + [{**r, "problem": f"{r['problem']} (target)"} for r in target_rows]
                      + [{"problem": "lr (online)", **r} for r in online_rows],
                      title="Unbiased hypergradient estimators side by side", table=rows,
                      columns=["problem", "method", "dim_theta", "bias", "bias_se", "variance", "relative_variance",
                               "expected_calls", "variance_x_calls", "temp_bytes", "calls_to_target", "reached",
                               "skipped"],
                      notes=notes + markdown_table(online_rows),
                      csv={"comparison.csv": rows, "targets.csv": target_rows, "online.csv": online_rows})


register(Experiment(NAME, run, Config, TINY,
                    "telescope, ES, PES and reversible beside UFOM: variance x cost per estimate, memory, and "
                    "online step-size tuning (Wu et al. 2018's short-horizon bias)"))
