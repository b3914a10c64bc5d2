"""One-shot classification with a learned hyper-representation (Shaban et al. 2019 §4.3, App. G.3, Table 4;
Ji et al. 2021 §5.2's shared-embedding meta-learning).

The problem, its data and the protocol in detail: :mod:`ablo.problems.hyper_representation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import jax
import optax

from . import Experiment, Result, RunContext, register
from .. import outer
from ..problem import BilevelProblem
from ..problems.hyper_representation import (BLOCKS, DRAWINGS, FROZEN, episode_sampler, hypergradient_memory,
                                             init_theta, load_characters, make_evaluator, make_problem, mean_ci,
                                             mean_logged, notes, split_characters)
from ..results import natural_key
from ._notes import seeds_note
from ..config import ConfigError, ExperimentConfig, estimator, option
from .plots import plot_curves

NAME = "hyper-representation"


@dataclass(frozen=True)
class Config(ExperimentConfig):
    DATASET = "omniglot"  # data_dir defaults to the fetched omniglot (config.build)
    data_dir: Optional[str] = option(None, "Omniglot folder (images_*.npz or PNG folders); none = generated stand-in")
    size: int = option(14, "image side after area resampling (paper: 28)", low=4, high=105)
    filters: int = option(16, "filters of every conv layer (paper: 64)", low=1, high=256)
    split: tuple[int, ...] = option((1200, 100, 323), "train / validation / test characters (disjoint)",
                                    low=1, min_len=3)
    split_seed: int = option(0, "seed of the random character split", low=0)
    ways: int = option(5, "classes per task", low=2, high=100)
    shots: int = option(1, "training drawings per class (S)", low=1, high=19)
    queries: int = option(15, "validation drawings per class (Q)", low=1, high=19)
    steps: int = option(10, "inner GD steps T (paper: 50)", low=1, high=1000)
    inner_lr: float = option(0.1, "inner GD step γ on the summed support loss (fixed here; Shaban et al. 2019 learns it)",
                             low=0, low_open=True)
    rho0: float = option(0.01, "initial ρ_j = softplus(ν_j) of every adapted layer (the fixed ρ when learn_rho=false)",
                         low=0, low_open=True)
    adapted: int = option(BLOCKS + 1 - FROZEN, "layers adapted in the inner problem, from the top: 3 = conv blocks 3-4 "
                          "+ dense (Shaban et al. 2019), 1 = the dense layer alone (Ji et al. 2021 §5.2)",
                          low=1, high=BLOCKS + 1)
    learn_rho: bool = option(True, "learn ρ_j (Shaban et al. 2019); false = ρ fixed at rho0, no ν in θ (with "
                             "adapted=1 the inner problem is then 2·rho0-strongly convex, Ji et al. 2021)")
    outer_lr: float = option(3e-3, "outer Adam step size", low=0, low_open=True)
    meta_batch: int = option(4, "tasks per hyper-iteration", low=1, high=256)
    table_methods: tuple[str, ...] = option(("truncated-1", "truncated-5", "reverse"),
                                            "Table 4 methods at equal hyper-iterations (K-RMD as truncated-K; "
                                            "reverse = full RMD)", estimators=True)
    short_horizon: bool = option(True, "add Table 4's short horizon: full RMD with T = 1")
    hyper_iterations: int = option(100, "hyper-iterations of each Table 4 method (paper: 5000)", low=1)
    methods: tuple[str, ...] = option(("itd-bio", "aid-cg", "fom", "ufom", "adaptive-ufom"),
                                      "methods at equal function calls (itd-bio: Ji et al. 2021's ITD-BiO, warm-started)",
                                      estimators=True)
    anil: bool = option(True, "add ANIL (only the dense layer adapted, exact hypergradient) at equal calls")
    maml: bool = option(False, "add MAML (every layer adapted from θ, no regulariser, exact) at equal calls")
    budget_calls: float = option(10_000, "function calls (gradients + HVPs + JVPs) per equal-calls method",
                                 low=0, low_open=True)
    eval_tasks: int = option(300, "test tasks for the table (paper: 120)", low=2)
    curve_tasks: int = option(60, "of those, the first N evaluate the learning curves", low=2)
    curve_points: int = option(5, "curve evaluations per run", low=1, high=1000)
    seed: int = option(1, "seed of θ_0, the meta-batches and the estimators' keys", low=0)
    tuned_seeds: tuple[int, ...] = option((0,), "seeds the settings were chosen on (pre-registration); the seed a "
                                          "run reports must differ from them", low=0, unique=True)

    def validate(self):
        if len(self.split) != 3:
            raise ConfigError(f"split: give 3 numbers (train, validation, test characters); got {list(self.split)!r}")
        if self.shots + self.queries > DRAWINGS:
            raise ConfigError(f"shots + queries must be at most {DRAWINGS} (drawings per character); got "
                              f"{self.shots} + {self.queries}")
        if min(self.split) < self.ways:
            raise ConfigError(f"split: every part needs at least ways = {self.ways} characters; "
                              f"got {list(self.split)!r}")
        if self.curve_tasks > self.eval_tasks:
            raise ConfigError(f"curve_tasks ({self.curve_tasks}) must be at most eval_tasks ({self.eval_tasks}): the "
                              "curves use the first curve_tasks of the table's tasks")
        if not (self.table_methods or self.methods or self.anil or self.maml or self.short_horizon):
            raise ConfigError("nothing to run: give table_methods or methods, or set anil, maml or short_horizon")
        problem = make_problem(self)
        for key in ("table_methods", "methods"):
            for spec in getattr(self, key):
                try:
                    estimator(spec).check(problem)
                except ValueError as e:
                    raise ConfigError(f"{key}: {spec}: {e}") from None

    def inactive(self) -> dict:
        why = "it shapes the regularised problem, and only ANIL/MAML run (give table_methods or methods)"
        regularised = self.table_methods or self.methods or self.short_horizon
        return {} if regularised else {k: why for k in ("adapted", "learn_rho", "rho0")}


TINY = dict(size=8, filters=4, steps=3, hyper_iterations=3, table_methods=("truncated-1",), short_horizon=False,
            methods=("fom",), anil=False, budget_calls=100, eval_tasks=12, curve_tasks=6, curve_points=2, seed=0,
            tuned_seeds=())


# --- experiment ------------------------------------------------------------------------------
def display_name(spec: str, steps: int) -> str:
    """A method's name in tables and legends (001/Ji et al. 2021's names where they have one)."""
    est = estimator(spec)
    if est.name == "truncated":
        return "Full RMD (T-RMD)" if est.K == steps else f"{est.K}-RMD"
    return {"reverse": "Full RMD", "itd-bio": "ITD-BiO", "aid-cg": "AID-BiO (CG)", "aid-bio": "AID-BiO",
            "fom": "FOM", "ufom": "UFOM", "adaptive-ufom": "Adaptive UFOM"}.get(est.name, spec)


@dataclass(frozen=True)
class Run:
    """One training run: its part, spec, display name, problem, θ_0 and budget."""

    part: str
    spec: str
    name: str
    problem: BilevelProblem
    theta0: dict
    budget: outer.Budget


def plan(cfg: Config) -> list:
    """The runs, in order: Table 4's at equal hyper-iterations, then the equal-calls comparison."""
    key = jax.random.PRNGKey(cfg.seed)
    problem, theta0 = make_problem(cfg), init_theta(key, cfg)
    iters, calls = outer.Budget(steps=cfg.hyper_iterations), outer.Budget(function_calls=cfg.budget_calls)
    runs = [Run("table4", s, display_name(s, cfg.steps), problem, theta0, iters) for s in cfg.table_methods]
    if cfg.short_horizon:
        runs.append(Run("table4", "reverse", "Short horizon (T = 1)", make_problem(cfg, steps=1), theta0, iters))
    for s in cfg.methods:
        name = display_name(s, cfg.steps)
        runs.append(Run("calls", s, "ITD-BiO (reverse)" if name == "Full RMD" else name, problem, theta0, calls))
    if cfg.anil:
        runs.append(Run("calls", "reverse", "ANIL", make_problem(cfg, regularised=False),
                        init_theta(key, cfg, frozen=BLOCKS, regularised=False), calls))
    if cfg.maml:
        runs.append(Run("calls", "reverse", "MAML", make_problem(cfg, regularised=False),
                        init_theta(key, cfg, frozen=0, regularised=False), calls))
    return runs


def run(cfg: Config, ctx: RunContext) -> Result:
    images = load_characters(cfg)
    train, val, test = split_characters(images.shape[0], cfg.split, cfg.split_seed)
    sample = {name: episode_sampler(images[idx], cfg.ways, cfg.shots, cfg.queries)
              for name, idx in (("train", train), ("val", val), ("test", test))}
    test_keys = jax.random.split(jax.random.PRNGKey(10_000 + cfg.seed), cfg.eval_tasks)
    val_keys = jax.random.split(jax.random.PRNGKey(20_000 + cfg.seed), cfg.eval_tasks)
    curve_keys = test_keys[: cfg.curve_tasks]
    tx = optax.adam(cfg.outer_lr)
    evaluators: dict = {}
    rows, curves = [], []
    for r in plan(cfg):
        label = f"{r.part}/{r.name}"
        if id(r.problem) not in evaluators:  # one compiled evaluator per problem and split
            evaluators[id(r.problem)] = {s: make_evaluator(r.problem, sample[s], cfg.curve_tasks)
                                         for s in ("test", "val")}
        ev = evaluators[id(r.problem)]
        est = estimator(r.spec)
        curve = lambda theta: {"test_acc": mean_ci(ev["test"](theta, curve_keys))[0]}
        every = (dict(every=max(1, cfg.hyper_iterations // cfg.curve_points)) if r.part == "table4"
                 else dict(every_calls=cfg.budget_calls / cfg.curve_points))
        res = ctx.train(label, r.problem, est, tx, r.theta0, sample["train"], key=jax.random.PRNGKey(cfg.seed),
                        budget=r.budget, options=outer.Options(cfg.meta_batch, outer.Evaluation(curve, **every)))
        acc, ci = mean_ci(ev["test"](res.theta, test_keys))
        rows.append({"part": r.part, "method": r.name, "spec": r.spec, "T": r.problem.steps,
                     "K": getattr(est, "K", None), "hyper_iterations": res.steps, "test_acc": acc, "test_acc_ci95": ci,
                     "val_acc": mean_ci(ev["val"](res.theta, val_keys))[0],
                     "sec_per_iter": res.seconds / max(res.steps, 1),
                     "memory_mb": (hypergradient_memory(r.problem, est, r.theta0,
                                                        sample["train"](jax.random.PRNGKey(0))) / 2 ** 20
                                   if r.part == "table4" else None),
                     "solver_residual": mean_logged(res.log, "solver_residual"), **res.record()})
        start = mean_ci(ev["test"](r.theta0, curve_keys))[0]
        curves.append({"part": r.part, "method": r.name, "hyper_iterations": 0, "function_calls": 0.0,
                       "seconds": 0.0, "test_acc": start})
        curves += [{"part": r.part, "method": r.name, "hyper_iterations": e["step"], "function_calls": e["function_calls"],
                    "seconds": e["seconds"], "test_acc": e["test_acc"]} for e in res.log if "test_acc" in e]
    title = (f"Omniglot {cfg.ways}-way {cfg.shots}-shot, hyper-representation (test characters); curves: the first "
             f"{cfg.curve_tasks} of the table's {cfg.eval_tasks} test tasks, so their last points differ from the table")
    for part, x, name in (("table4", "hyper_iterations", "curves.png"), ("calls", "function_calls", "curves_calls.png"),
                          ("calls", "seconds", "curves_seconds.png")):
        pts = [c for c in curves if c["part"] == part]
        order = list(dict.fromkeys(c["method"] for c in pts))
        if pts:  # a part with no runs gets no figure
            plot_curves(pts, ctx.out / name, x=x, ys=("test_acc",), title=title, chance={"test_acc": 100.0 / cfg.ways},
                        order=sorted(order, key=natural_key) if part == "table4" else order,
                        axis={"seconds": "outer-step seconds (compilation and evaluation excluded)"})
    cols = ["part", "method", "T", "K", "hyper_iterations", "function_calls", "test_acc", "test_acc_ci95", "val_acc",
            "sec_per_iter", "memory_mb", "solver_residual"]
    config = {**cfg.as_dict(), "characters": {"train": len(train), "validation": len(val), "test": len(test)}}
    text = notes(cfg, len(train), len(val), len(test)) + "\n" + seeds_note(cfg)
    return ctx.finish(NAME, config, rows, title="Hyper-representation, Omniglot 5-way 1-shot (Shaban et al. 2019, "
                      "§4.3, Ji et al. 2021, §5.2)", columns=cols, notes=text, csv={"results.csv": rows, "curves.csv": curves})


register(Experiment(NAME, run, Config, TINY,
                    "one-shot Omniglot with a learned hyper-representation (Shaban et al. 2019, §4.3 Table 4; Ji et al. 2021, §5.2): K-RMD at "
                    "equal hyper-iterations, ITD/AID-BiO, FOM, UFOM, Adaptive UFOM, ANIL, MAML at equal function calls"))
