"""Few-shot classification, MAML form (Likhosherstov et al. 2021 §5.3, Table 2; Finn et al. 2017).

The problem, its data and the protocol in detail: :mod:`ablo.problems.fewshot`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import jax
import numpy as np
import optax

from . import Experiment, Result, RunContext, register
from ._notes import paired_note, seeds_note, smoke_note, smoke_option
from .. import outer
from ..meta import Reptile
from ..models import convnet_init
from ..problems.fewshot import DIGITS_WAYS, load_splits, make_eval, make_problem, make_sampler, reptile_setup
from ..results import by_method, number
from ._paper import fewshot_figures_withheld, reference
from ..config import ConfigError, ExperimentConfig, estimator, option
from .plots import plot_curves

NAME = "fewshot"


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """The settings of a few-shot run; ``ways`` and ``size`` left None take the data's default
    (:meth:`resolved`)."""

    DATASET = "omniglot"  # data_dir defaults to the fetched omniglot (config.build)
    data_dir: Optional[str] = option(None, "Omniglot folder (images_*.npz or the PNG folders); none = scikit-learn "
                                     "digits, a smoke-scale stand-in (8x8, classes 7-9 held out)")
    ways: Optional[int] = option(None, "classes per task m; default 20 (Omniglot) / 3 (digits, at most 3)", low=2)
    shots: int = option(1, "training drawings per class K", low=1)
    size: Optional[int] = option(None, "Omniglot image size (resized from 105); default 14", low=4, high=105)
    filters: int = option(16, "channels of each conv block", low=1, high=1024)
    blocks: int = option(3, "conv blocks (3x3, stride 2, batch norm, ReLU)", low=1, high=8)
    steps: int = option(10, "inner SGD steps r", low=1, high=10_000)
    inner_lr: float = option(0.4, "inner SGD step size", low=0, low_open=True)
    meta_batch: int = option(5, "tasks per outer step", low=1)
    outer_lr: float = option(1e-3, "outer Adam step size", low=0, low_open=True)
    clip: Optional[float] = option(None, "clip each hypergradient entry to ±clip before Adam; none = no clipping",
                                   low=0, low_open=True)
    methods: tuple[str, ...] = option(("fom", "recompute", "ufom", "adaptive-ufom", "reptile"),
                                      "estimator specs (reptile: Nichol et al.'s own protocol, the reptile_* keys)",
                                      estimators=True, min_len=1)
    seeds: tuple[int, ...] = option((1,), "seeds (network init, tasks, estimator keys)", low=0, unique=True,
                                    min_len=1)
    tuned_seeds: tuple[int, ...] = option((0,), "seeds the settings were chosen on (pre-registration); the seeds a "
                                          "run reports must differ from them", low=0, unique=True)
    budget_calls: Optional[float] = option(200_000.0, "function calls per method and seed; none = no limit",
                                           low=0, low_open=True)
    outer_steps: Optional[int] = option(None, "outer steps per method and seed; none = no limit", low=1)
    eval_calls: Optional[float] = option(None, "function calls between curve points; default budget_calls/10",
                                         low=0, low_open=True)
    checkpoint_every: int = option(50, "outer steps between checkpoints", low=1)
    eval_tasks: int = option(1000, "held-out tasks of the final evaluation", low=2)
    curve_tasks: int = option(200, "held-out tasks per curve point", low=2)
    devices: Optional[int] = option(None, "shard each meta-batch over N devices", low=1, hashed=False)
    reptile_train_shots: int = option(10, "Reptile: drawings per class of a training task (Nichol et al.: 10)", low=1)
    reptile_inner_lr: float = option(5e-4, "Reptile: inner Adam step (β1 = 0; Nichol et al. 20-way: 5e-4)", low=0,
                                     low_open=True)
    reptile_meta_step: float = option(1.0, "Reptile: outer SGD step at the start, annealed linearly to 0", low=0,
                                      low_open=True)
    reptile_eval_steps: int = option(50, "Reptile: inner Adam steps at test time (Nichol et al.: 50)", low=1)
    reptile_inner_optimizer: str = option("adam", "Reptile: inner optimizer, adam (β1 = 0, Nichol et al.) or sgd",
                                          choices=("adam", "sgd"))
    reptile_eval_batch: Optional[int] = option(None, "Reptile: support images per test-time step; default m·K/2 "
                                               "(Nichol et al.: 10 at 20-way 1-shot)", low=1)
    smoke: bool = smoke_option()

    def resolved(self) -> "Config":
        """This config with ``ways`` and ``size`` filled (20 and 14 on Omniglot, 3 and 8 on digits)
        and Reptile's test-time batch (m·K/2 support images)."""
        omniglot = self.data_dir is not None
        ways = self.ways or (20 if omniglot else DIGITS_WAYS)
        return dataclasses.replace(self, ways=ways, size=(self.size or 14) if omniglot else 8,
                                   reptile_eval_batch=self.reptile_eval_batch or max(1, ways * self.shots // 2))

    def validate(self) -> None:
        if self.budget_calls is None and self.outer_steps is None:
            raise ConfigError("budget_calls and outer_steps are both none: set one (the budget of each run)")
        if self.eval_calls is None and self.budget_calls is None:
            raise ConfigError("eval_calls: give it (function calls between curve points) when budget_calls is none")
        if self.data_dir is None and self.ways is not None and self.ways > DIGITS_WAYS:
            raise ConfigError(f"ways: {self.ways} is more than the {DIGITS_WAYS} classes digits hold out for testing; "
                              "give data_dir (Omniglot) or ways <= 3")
        if self.devices is not None and self.meta_batch % self.devices:
            raise ConfigError(f"devices: {self.devices} does not divide meta_batch = {self.meta_batch}")

    def inactive(self) -> dict:
        return {} if self.data_dir is not None else {"size": "digits are 8x8; size resizes Omniglot (give data_dir)"}


TINY = dict(filters=4, steps=2, meta_batch=2, budget_calls=60.0, eval_tasks=20, curve_tasks=8, eval_calls=30.0,
            methods=("fom", "reptile"), seeds=(0,), tuned_seeds=(), smoke=True)


# --- experiment ------------------------------------------------------------------------------
def run(config: Config, ctx: RunContext) -> Result:
    cfg = config.resolved()
    train_imgs, test_imgs, dataset = load_splits(cfg)
    sample_train = make_sampler(train_imgs, cfg.ways, cfg.shots)
    sample_test = make_sampler(test_imgs, cfg.ways, cfg.shots)
    problem = make_problem(cfg.steps, cfg.inner_lr)
    tx = optax.adam(cfg.outer_lr) if cfg.clip is None else optax.chain(optax.clip(cfg.clip), optax.adam(cfg.outer_lr))
    budget = outer.Budget(steps=cfg.outer_steps, function_calls=cfg.budget_calls)
    eval_calls = cfg.eval_calls or cfg.budget_calls / 10
    chunk = min(cfg.curve_tasks, cfg.eval_tasks)
    maml_setup = {"problem": problem, "tx": tx, "sampler": sample_train,
                  "evaluate": make_eval(problem, sample_test, chunk)}
    reptile = None
    if any(estimator(spec).name == Reptile.name for spec in cfg.methods):  # its own problem and data
        reptile = reptile_setup(cfg, train_imgs, test_imgs)
        reptile["evaluate"] = make_eval(reptile["test_problem"], reptile["test_sampler"], chunk)
    theta0 = {seed: convnet_init(jax.random.PRNGKey(seed), cfg.ways, train_imgs.shape[-1], filters=cfg.filters,
                                 blocks=cfg.blocks) for seed in cfg.seeds}

    def train(case, spec, est):
        seed = case["seed"]
        setup = reptile if est.name == Reptile.name else maml_setup
        evaluate = setup["evaluate"]
        curve_eval = lambda th: evaluate(th, cfg.curve_tasks, jax.random.PRNGKey(7_000 + seed))
        res = ctx.train(f"{spec} seed {seed}", setup["problem"], est, setup["tx"], theta0[seed], setup["sampler"],
                        key=jax.random.PRNGKey(seed), budget=budget, checkpoint_every=cfg.checkpoint_every,
                        options=outer.Options(cfg.meta_batch, outer.Evaluation(curve_eval, every_calls=eval_calls),
                                              devices=cfg.devices))
        qs = [e["q"] for e in res.log if e.get("q") is not None]
        row = {**evaluate(res.theta, cfg.eval_tasks, jax.random.PRNGKey(9_000 + seed)),
               "mean_q": float(np.mean(qs)) if qs else None, **res.record()}
        return row, [e for e in res.log if "test_acc" in e]

    rows, curves = ctx.sweep([{"seed": seed} for seed in cfg.seeds], cfg.methods, train)
    summary_cfg = {**cfg.as_dict(), "dataset": dataset}
    plot_curves(curves, ctx.out / "curves.png", x="function_calls", ys=("test_acc",), order=list(cfg.methods),
                chance={"test_acc": 100.0 / cfg.ways},
                title=f"few-shot {cfg.shots}-shot {cfg.ways}-way ({dataset['name']}); curve points: {cfg.curve_tasks} "
                      "held-out tasks each (the table: its own larger set)")
    table, notes = _table(summary_cfg, rows)
    return ctx.finish(NAME, summary_cfg, rows, title=f"Few-shot classification ({cfg.shots}-shot {cfg.ways}-way)",
                      table=table, notes=notes, csv={"curves.csv": curves})


def _table(cfg: dict, rows: list) -> tuple:
    """(table rows, notes) of results.md: one row per method, means over seeds."""
    table = by_method(rows, ["test_acc", "test_acc_ci95", "function_calls", "seconds", "mean_q"], spread=("test_acc",))
    for t in table:
        t["seed_std"] = t.pop("test_acc_std", None)
        t.update(reference(NAME, cfg, next(r for r in rows if r["method"] == t["method"])))
    d = cfg["dataset"]
    data = (f"Omniglot ({d['train_classes']} background characters for meta-training, {d['test_classes']} "
            "evaluation characters held out)" if d["name"] == "Omniglot" else
            "scikit-learn digits (classes 0-6 meta-train, 7-9 held out), a smoke-scale stand-in")
    clip = "" if cfg["clip"] is None else f" with per-entry clipping at ±{number(cfg['clip'])}"
    withheld = fewshot_figures_withheld(cfg)
    paper = ("Likhosherstov et al. 2021, Table 2 (Omniglot 1-shot, 28x28, 64 filters, the paper's budget) is not "
             f"shown: {withheld}." if withheld else "paper_test_acc: Likhosherstov et al. 2021, Table 2 at this "
             "many ways.")
    budget = " / ".join(x for x in (cfg["budget_calls"] and f"{number(cfg['budget_calls'])} function calls",
                                    cfg["outer_steps"] and f"{cfg['outer_steps']:,} outer steps") if x)
    ran = {r["estimator"] for r in rows}
    maml = ("" if ran <= {Reptile.name} else  # the MAML-form methods' settings, where one of them ran
            f", r = {cfg['steps']} inner SGD steps (lr {number(cfg['inner_lr'])}), meta-batch {cfg['meta_batch']}, "
            f"outer Adam lr {number(cfg['outer_lr'])}{clip}")
    notes = ([smoke_note(cfg).strip()] if cfg["smoke"] else []) + [
        f"Data: {data}. {cfg['shots']}-shot {cfg['ways']}-way, images {cfg['size']}x{cfg['size']}, conv "
        f"{cfg['blocks']} x {cfg['filters']} filters (stride 2, batch norm, ReLU) + dense{maml}, budget per method "
        f"and seed: {budget}; test accuracy over {cfg['eval_tasks']:,} held-out tasks with a 95% interval; chance "
        f"is {number(100 / cfg['ways'])}%.",
        seeds_note(cfg), paper + (" 'recompute' is the paper's memory-efficient exact estimator." if "recompute" in ran
                                  else "")]
    if len(cfg["seeds"]) > 1 and len(table) > 1:
        notes.append(paired_note(rows, "test_acc").strip())
    if Reptile.name in ran:
        notes.append(_reptile_note(cfg))
    return table, "\n\n".join(notes)


def _reptile_note(cfg: dict) -> str:
    """What Reptile ran: Nichol et al.'s protocol (the reptile_* defaults), or which of its settings differ."""
    nichol = Config(ways=cfg["ways"], shots=cfg["shots"]).resolved()  # the reptile_* defaults at this m, K
    changed = [f"{k} = {cfg[k]:g}" if isinstance(cfg[k], float) else f"{k} = {cfg[k]}"
               for k in (f.name for f in dataclasses.fields(Config) if f.name.startswith("reptile_"))
               if cfg[k] != getattr(nichol, k)]
    opt = "Adam (β1 = 0)" if cfg["reptile_inner_optimizer"] == "adam" else "SGD"
    head = ("Reptile runs Nichol et al.'s protocol (1-shot 20-way Omniglot settings of their code)" if not changed
            else f"Reptile runs Nichol et al.'s protocol with {', '.join(changed)} instead of theirs")
    return (f"{head}: {cfg['reptile_train_shots']} drawings per class per training task, r = {cfg['steps']} inner "
            f"{opt} steps of {number(cfg['reptile_inner_lr'])} on one pass of mini-batches, outer SGD with meta step "
            f"{number(cfg['reptile_meta_step'])} annealed linearly to 0, meta-batch {cfg['meta_batch']}; evaluated "
            f"after {cfg['reptile_eval_steps']} inner {opt} steps on mini-batches of {cfg['reptile_eval_batch']} "
            f"support image{'' if cfg['reptile_eval_batch'] == 1 else 's'}.")


register(Experiment(NAME, run, Config, TINY,
                    "few-shot Omniglot, MAML form: FOM, exact, UFOM, Adaptive UFOM, Reptile at equal function calls "
                    "(Likhosherstov et al. 2021, Table 2)"))
