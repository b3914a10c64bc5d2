"""Stochastic data hypercleaning on MNIST (Ji et al. 2021 §A.2, Figure 4): stocBiO against BSA, TTSA
and HOAG, test loss against running time.

The problem, its data and the protocol in detail: :mod:`ablo.problems.stochastic_hypercleaning`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import jax
import jax.numpy as jnp
import optax

from . import Experiment, Result, RunContext, register
from ..models import accuracy, cross_entropy, mlp_apply
from ..problems.stochastic_hypercleaning import SINGLE_SAMPLE, prepare
from ..results import number
from ._notes import paper_note, seeds_note, smoke_note, smoke_option
from ._wallclock import outer_step_size, plot_test_vs_time, protocol_note, result_row, schedule_note, wallclock_run
from ..config import ConfigError, ExperimentConfig, estimator, option

NAME = "stochastic-hypercleaning"


@dataclass(frozen=True)
class Config(ExperimentConfig):
    methods: tuple[str, ...] = option(("stocbio:eta=0.5,Q=10,batch=50", "bsa:eta=0.5,N=10,batch=1",
                                       "ttsa:eta=0.5,N=10,batch=1", "hoag"),
                                      "estimator specs compared", estimators=True, min_len=1)
    corruptions: tuple[float, ...] = option((0.1, 0.2, 0.4), "label corruption rates p (Ji et al. 2021 Fig. 4: 0.1 "
                                            "and 0.2)", low=0, high=1, min_len=1, unique=True)
    seeds: tuple[int, ...] = option((1,), "seeds: each draws the splits, the corruption and the batches", low=0,
                                    min_len=1, unique=True)
    tuned_seeds: tuple[int, ...] = option((0,), "seeds the settings were chosen on (pre-registration); the seeds a "
                                          "run reports must differ from them", low=0, unique=True)
    DATASET = "mnist"  # data_dir defaults to the fetched mnist (config.build)
    data_dir: Optional[str] = option(None, "folder holding mnist/ (none: scikit-learn digits)")
    n_train: int = option(20_000, "MNIST: training images (corrupted)", low=1)
    n_val: int = option(5_000, "MNIST: clean validation images", low=1)
    digits_train: int = option(1000, "digits: training images (corrupted)", low=1)
    digits_val: int = option(300, "digits: clean validation images", low=1)
    seconds: float = option(60.0, "budget of outer-step time per run (s)", low=0, low_open=True)
    outer_steps: int = option(1_000_000, "budget of outer steps per run", low=1)
    inner_steps: int = option(10, "inner GD/SGD steps T", low=1, high=10_000)
    inner_lr: float = option(1.0, "inner step size (checked against 2/L at φ_0)", low=0, low_open=True)
    single_sample_inner_lr: float = option(0.1, "inner step size of the single-sample methods (bsa, ttsa)", low=0,
                                           low_open=True)
    outer_lr: float = option(0.1, "outer Adam step size", low=0, low_open=True)
    l2: float = option(1e-3, "weight decay C_r on W", low=0)
    eval_every: int = option(10, "outer steps between test evaluations (not timed)", low=1)
    smoke: bool = smoke_option()

    def validate(self):
        if self.data_dir is None and self.digits_train + self.digits_val >= 1797:
            raise ConfigError(f"digits_train + digits_val: {self.digits_train + self.digits_val} leaves no test "
                              "images of the 1797 digits; keep the sum below 1797")

    def inactive(self):
        if self.data_dir is not None:
            return {k: "it sizes the digits splits; data_dir is given" for k in ("digits_train", "digits_val")}
        return {k: "it sizes the MNIST splits; no data_dir is given" for k in ("n_train", "n_val")}


TINY = dict(smoke=True, methods=("ttsa:N=3", "hoag:maxiter=3"), digits_train=200, digits_val=100,
            corruptions=(0.4,), outer_steps=3, inner_steps=3, eval_every=2, seconds=30.0, seeds=(0,), tuned_seeds=())

PAPER_NOTE = ("Ji et al. 2021 Figure 4 (p = 0.1 and 0.2, averages of 10 seeds, grid-searched step sizes; numbers only "
              "as plots): stocBiO converges fastest of all methods in training and test loss; the improvement is "
              "more significant when p is smaller; TTSA converges very slowly with a large variance.")


def run(cfg: Config, ctx: RunContext) -> Result:
    methods = {spec: estimator(spec) for spec in cfg.methods}
    data = {seed: prepare(cfg, seed, methods) for seed in cfg.seeds}  # step sizes checked before any run
    evaluators = {seed: (lambda phi, x_te=d[2], y_te=d[3]: {"test_loss": cross_entropy(mlp_apply(phi, x_te), y_te),
                                                            "test_acc": accuracy(mlp_apply(phi, x_te), y_te)})
                  for seed, d in data.items()}

    def train(case, spec, est):
        p, seed = case["p"], case["seed"]
        task = data[seed][1][p]
        lr = cfg.single_sample_inner_lr if est.name in SINGLE_SAMPLE else cfg.inner_lr
        lam0 = jnp.zeros(task["train"]["y"].shape[0], jnp.float32)
        curve, r = wallclock_run(data[seed][0][lr], est, optax.adam(outer_step_size(est, cfg.outer_lr)), lam0, task,
                                 key=jax.random.PRNGKey(seed), seconds=cfg.seconds, steps=cfg.outer_steps,
                                 eval_every=cfg.eval_every, evaluate=evaluators[seed], ctx=ctx,
                                 label=f"{NAME} {spec} p {p:g} seed {seed}")
        return result_row(curve, r), curve

    cases = [{"p": p, "seed": seed} for seed in cfg.seeds for p in data[seed][1]]
    rows, curves = ctx.sweep(cases, cfg.methods, train)
    description = data[cfg.seeds[-1]][4]
    real = cfg.data_dir is not None
    for p in cfg.corruptions:
        plot_test_vs_time([c for c in curves if c["p"] == p], ctx.out / f"test_vs_time_p{p:g}.png",
                          f"Hypercleaning on {'MNIST' if real else 'digits'}, corruption p = {p:g}")
    paper = paper_note(PAPER_NOTE, "Ji et al. 2021 Figure 4", "MNIST", real, cfg.smoke)
    single = [spec for spec, est in methods.items() if est.name in SINGLE_SAMPLE]
    protocol = (f"T = {cfg.inner_steps} inner steps (lr {number(cfg.inner_lr)}"
                + (f"; {', '.join(single)}: {number(cfg.single_sample_inner_lr)}" if single else "")
                + f"), warm-started by every method that carries its iterate, outer Adam (lr {number(cfg.outer_lr)}), "
                f"C_r = {number(cfg.l2)}; methods {', '.join(methods)}. {schedule_note(methods.values())}")
    notes = (f"{smoke_note(cfg)}Data: {description}; labels corrupted with probability p.\n\nProtocol: {protocol} "
             f"{protocol_note(cfg)} {seeds_note(cfg)}\n\n{paper}\n\nCurves: curves.csv; plots: test_vs_time_p*.png.")
    return ctx.finish(NAME, {**cfg.as_dict(), "data": description}, rows,
                      title="Stochastic data hypercleaning (Ji et al. 2021 §A.2)",
                      columns=["method", "p", "seed", "test_loss", "test_acc", "steps", "seconds", "function_calls",
                               "tol", "cg_cap_hits"], notes=notes, csv={"curves.csv": curves})


register(Experiment(NAME, run, Config, TINY, "MNIST hypercleaning, 20,000 images, p = 0.1 / 0.2 / 0.4: stocBiO vs BSA, "
                    "TTSA, HOAG, test loss against time (Ji et al. 2021, §A.2, Fig. 4)"))
