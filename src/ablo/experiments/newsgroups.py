"""Per-feature ℓ2-regularized logistic regression on 20 Newsgroups (Ji et al. 2021 §A.2, Figure 2).

The problem, its data and the protocol in detail: :mod:`ablo.problems.newsgroups`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import jax
import jax.numpy as jnp
import optax

from . import Experiment, Result, RunContext, register
from ..curvature import check_step_size
from ..models import accuracy, cross_entropy
from ..problems.newsgroups import load, make_problem, seeded_split
from ..results import number
from ._notes import paper_note, seeds_note, smoke_note, smoke_option
from ._wallclock import outer_step_size, plot_test_vs_time, protocol_note, result_row, schedule_note, wallclock_run
from ..config import ExperimentConfig, estimator, option

NAME = "newsgroups"
SYNTHETIC = ("n_train", "n_test", "vocabulary", "length")


@dataclass(frozen=True)
class Config(ExperimentConfig):
    methods: tuple[str, ...] = option(("stocbio:eta=0.5,Q=10,batch=1000", "itd-bio", "aid-fp:eta=100,N=10",
                                       "aid-bio:maxiter=10,tol=1e-12", "hoag"),
                                      "estimator specs compared", estimators=True, min_len=1)
    seeds: tuple[int, ...] = option((1,), "seeds: each splits the training posts and seeds the estimators", low=0,
                                    min_len=1, unique=True)
    tuned_seeds: tuple[int, ...] = option((0,), "seeds the settings were chosen on (pre-registration); the seeds a "
                                          "run reports must differ from them", low=0, unique=True)
    DATASET = "20newsgroups"  # data_dir defaults to the fetched 20newsgroups (config.build)
    data_dir: Optional[str] = option(None, "folder holding 20newsgroups/ (none: generated documents)")
    max_features: int = option(5000, "TF-IDF vocabulary: the most frequent words kept", low=1, high=200_000)
    seconds: float = option(120.0, "budget of outer-step time per run (s)", low=0, low_open=True)
    outer_steps: int = option(100_000, "budget of outer steps per run", low=1)
    inner_steps: int = option(10, "inner GD steps T", low=1, high=10_000)
    inner_lr: float = option(100.0, "inner GD step size (checked against 2/L at W_0)", low=0, low_open=True)
    outer_lr: float = option(100.0, "outer SGD step size", low=0, low_open=True)
    eval_every: int = option(10, "outer steps between test evaluations (not timed)", low=1)
    n_train: int = option(1200, "generated data: training documents (halved into train / validation)", low=4)
    n_test: int = option(600, "generated data: test documents", low=1)
    vocabulary: int = option(1000, "generated data: words", low=30)
    length: int = option(40, "generated data: words per document", low=1)
    smoke: bool = smoke_option()

    def inactive(self):
        if self.data_dir is not None:
            return {k: "the generated data's size; data_dir is given" for k in SYNTHETIC}
        return {"max_features": "it limits the TF-IDF of 20 Newsgroups; no data_dir is given"}


TINY = dict(smoke=True, methods=("stocbio:Q=3,batch=50", "itd-bio"), seconds=30.0, outer_steps=3, inner_steps=3,
            eval_every=2, n_train=200, n_test=100, seeds=(0,), tuned_seeds=())

#: Ji et al. 2021 gives Figures 2-3 without numbers in the text; their axes span test loss 1.0-3.5 and
#: test accuracy 0.2-0.7 over 60 s.
PAPER_NOTE = ("Ji et al. 2021 Figure 2 (all 101,631 words; numbers only as plots, axes test loss 1.0-3.5 and test "
              "accuracy 0.2-0.7 over 60 s): stocBiO converges fastest and reaches the best test accuracy; "
              "reverse, AID-FP, AID-CG and HOAG are slower.")


def run(cfg: Config, ctx: RunContext) -> Result:
    methods = {spec: estimator(spec) for spec in cfg.methods}
    data, description = load(cfg)
    x, y = data["train"]
    features = x.shape[1]
    problem = make_problem(cfg.inner_steps, cfg.inner_lr, features)
    x_test, y_test = map(jnp.asarray, data["test"])
    evaluate = lambda w: {"test_loss": cross_entropy(x_test @ w, y_test), "test_acc": accuracy(x_test @ w, y_test)}
    lam0 = jnp.zeros(features, jnp.float32)
    tasks = {}
    for seed in cfg.seeds:  # the training posts halved at random into train / validation, checked before any run
        tr, va = seeded_split(len(y), (len(y) // 2, len(y) - len(y) // 2), seed)
        tasks[seed] = {"train": (jnp.asarray(x[tr]), jnp.asarray(y[tr])),
                       "val": (jnp.asarray(x[va]), jnp.asarray(y[va]))}
        check_step_size(problem, lam0, tasks[seed], cfg.inner_lr)
    def train(case, spec, est):
        seed = case["seed"]
        curve, r = wallclock_run(problem, est, optax.sgd(outer_step_size(est, cfg.outer_lr)), lam0, tasks[seed],
                                 key=jax.random.PRNGKey(seed), seconds=cfg.seconds, steps=cfg.outer_steps,
                                 eval_every=cfg.eval_every, evaluate=evaluate, ctx=ctx, label=f"{NAME} {spec} seed {seed}")
        return result_row(curve, r), curve

    rows, curves = ctx.sweep([{"seed": seed} for seed in cfg.seeds], cfg.methods, train)
    real = cfg.data_dir is not None
    plot_test_vs_time(curves, ctx.out / "test_vs_time.png",
                      f"{'20 Newsgroups' if real else 'generated documents'}, {features} features")
    paper = paper_note(PAPER_NOTE, "Ji et al. 2021 Figure 2", "20 Newsgroups", real, cfg.smoke)
    protocol = (f"T = {cfg.inner_steps} inner GD steps (lr {number(cfg.inner_lr)}), warm-started by every method "
                f"that carries its iterate in its state, outer SGD (lr {number(cfg.outer_lr)}); methods "
                f"{', '.join(methods)}.")
    hoag = ("\n\nHOAG: tol is the CG tolerance ε_k its next step would use, cg_cap_hits the steps whose CG stopped at "
            "the safety cap before ε_k." if any(est.name == "hoag" for est in methods.values()) else "")
    notes = (f"{smoke_note(cfg)}Data: {description}.\n\nProtocol: {protocol} {schedule_note(methods.values())} "
             f"{protocol_note(cfg)} {seeds_note(cfg)}\n\n{paper}{hoag}\n\nCurves: curves.csv; plot: test_vs_time.png.")
    return ctx.finish(NAME, {**cfg.as_dict(), "data": description}, rows,
                      title="20 Newsgroups: per-feature l2 regularization (Ji et al. 2021 §A.2)",
                      columns=["method", "seed", "test_loss", "test_acc", "steps", "seconds", "function_calls", "tol",
                               "cg_cap_hits"], notes=notes, csv={"curves.csv": curves})


register(Experiment(NAME, run, Config, TINY, "20 Newsgroups per-feature l2 regularization: stocBiO vs ITD-BiO, "
                    "AID-FP, AID-BiO, HOAG, test loss against time (Ji et al. 2021, §A.2, Fig. 2)"))
