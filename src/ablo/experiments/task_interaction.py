"""Task interaction, Shaban et al. 2019 §4.2.2 and App. G.2 (Table 3, Fig. 6), on 20 Newsgroups.

The problem, its data and the protocol in detail: :mod:`ablo.problems.task_interaction`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import Experiment, Result, RunContext, register
from .. import outer
from ..curvature import check_step_size
from ..problems.task_interaction import (CLASSES, balanced_split, coupling, hierarchy_order, load, make_evaluate,
                                         make_problem, theta0)
from ..results import save_figure
from ._notes import seeds_note
from ..config import ConfigError, ExperimentConfig, estimator, option
from .plots import method_label, method_order, plot_curves, pyplot

NAME = "task-interaction"

#: Shaban et al. 2019 Table 3, as printed: (dataset, method, Avg. Acc., ± std, Avg. Iter., Sec/iter.).
PAPER_TABLE3 = (("CIFAR-10", "1-RMD", 61.11, 1.23, 3300, 0.8), ("CIFAR-10", "5-RMD", 61.33, 1.08, 4950, 1.3),
                ("CIFAR-10", "25-RMD", 61.31, 1.24, 4825, 1.4), ("CIFAR-10", "Full RMD", 61.28, 1.21, 4500, 2.2),
                ("CIFAR-100", "1-RMD", 34.37, 0.63, 7440, 1.0), ("CIFAR-100", "5-RMD", 34.34, 0.68, 8805, 1.4),
                ("CIFAR-100", "25-RMD", 34.51, 0.69, 8660, 1.6), ("CIFAR-100", "Full RMD", 34.70, 0.64, 5670, 2.8))



@dataclass(frozen=True)
class Config(ExperimentConfig):
    """The protocol above; defaults are the paper's where it gives one (T, γ, m = 50, 10 trials)."""

    methods: tuple[str, ...] = option(("truncated-1", "truncated-5", "truncated-25", "reverse", "fom", "ufom",
                                       "adaptive-ufom"),
                                      "estimator specs (K-RMD as truncated-K; reverse is full RMD, K = T)",
                                      estimators=True, min_len=1)
    DATASET = "20newsgroups"  # data_dir defaults to the fetched 20newsgroups (config.build)
    data_dir: Optional[str] = option(None, "folder with 20news-bydate.tar.gz; none = generated TF-IDF-like data")
    max_features: int = option(500, "TF-IDF features (most frequent words) or generated vocabulary size",
                               low=CLASSES, high=100_000)
    feature_scale: float = option(30.0, "ℓ2 norm of each TF-IDF row (1 = as vectorised); sets how far T GD "
                                  "steps at inner_lr get", low=0, low_open=True, high=1e4)
    per_class: int = option(50, "m: training and validation examples per class in each trial", low=1, high=180)
    trials: int = option(10, "trials (independent training/validation draws)", low=1, high=100)
    inner_steps: int = option(100, "inner GD steps T", low=1, high=10_000)
    inner_lr: float = option(0.1, "inner GD step size γ (must be below 2/L)", low=0, low_open=True)
    outer_steps: int = option(300, "hyper-iterations per trial and method", low=1, high=1_000_000)
    outer_lr: float = option(0.05, "Adam step size of the outer optimizer", low=0, low_open=True, high=10)
    B0: float = option(-8.0, "initial entries of B (C_ij = 2 softplus(B0) at the start)", low=-30, high=5)
    nu0: float = option(-8.0, "initial ν (ρ = softplus(ν0) at the start)", low=-30, high=5)
    eval_every: int = option(10, "hyper-iterations between Fig. 6 evaluations", low=1)
    seed: int = option(1, "seed of the trials' draws and of the estimators' keys", low=0)
    tuned_seeds: tuple[int, ...] = option((0,), "seeds the settings were chosen on (pre-registration); the seed a "
                                          "run reports must differ from them", low=0, unique=True)
    synthetic_train: int = option(6000, "generated training pool size (without data_dir)", low=CLASSES)
    synthetic_test: int = option(2000, "generated test set size (without data_dir)", low=CLASSES)

    def validate(self):
        if self.eval_every > self.outer_steps:
            raise ConfigError(f"eval_every: {self.eval_every} is above outer_steps = {self.outer_steps}; "
                              "give eval_every <= outer_steps")
        problem = make_problem(self.inner_steps, self.inner_lr)
        for spec in self.methods:
            try:
                estimator(spec).check(problem)
            except ValueError as e:
                raise ConfigError(f"methods: {spec}: {e}") from None

    def inactive(self):
        if self.data_dir is None:
            return {}
        why = "it sizes the generated data, and data_dir is given"
        return {"synthetic_train": why, "synthetic_test": why}


TINY = dict(methods=("truncated-1", "reverse", "fom"), max_features=60, feature_scale=10.0, per_class=4, trials=2,
            inner_steps=8, outer_steps=6, eval_every=3, synthetic_train=400, synthetic_test=200, seed=0, tuned_seeds=())


# -- the experiment --------------------------------------------------------------------------

def run(cfg: Config, ctx: RunContext) -> Result:
    """Every method on every trial; writes summary.json (one row per method and trial), table3.csv,
    curves.csv, learned_C.csv, fig6.png, learned_C.png and results.md into ``ctx.out``. Cost per
    method and trial: ``outer_steps`` estimates plus ``outer_steps / eval_every + 1`` evaluations."""
    data, names, description = load(cfg)
    x_pool, y_pool = data["train"]
    test = tuple(map(jnp.asarray, data["test"]))
    features = x_pool.shape[1]
    problem = make_problem(cfg.inner_steps, cfg.inner_lr, features)
    rng = np.random.default_rng(cfg.seed)
    tasks = []
    for _ in range(cfg.trials):
        tr, va = balanced_split(y_pool, cfg.per_class, rng)
        tasks.append({"train": (jnp.asarray(x_pool[tr]), jnp.asarray(y_pool[tr])),
                      "val": (jnp.asarray(x_pool[va]), jnp.asarray(y_pool[va]))})
    L = max(check_step_size(problem, theta0(cfg), task, cfg.inner_lr) for task in tasks)

    order = method_order(list(cfg.methods), cfg.inner_steps)
    evaluators = {spec: make_evaluate(problem, estimator(spec)) for spec in order}

    def train(case, spec, est):
        trial, task, evaluate = case["trial"], tasks[case["trial"]], evaluators[spec]
        key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), trial)
        eval_fn = lambda theta, state: {k: float(v) for k, v in evaluate(
            theta, state.estimator_state, outer.eval_key(key, int(state.step)), task, test).items()}
        result = ctx.train(f"{spec} trial {trial}", problem, est, optax.adam(cfg.outer_lr), theta0(cfg),
                           lambda k: task, key=key, budget=outer.Budget(steps=cfg.outer_steps),
                           options=outer.Options(evaluation=outer.Evaluation(eval_fn, every=cfg.eval_every),
                                                 progress=outer.Progress(cfg.eval_every, losses=False)))
        first = evaluate(theta0(cfg), est.init(problem, theta0(cfg), task), outer.eval_key(key, 0), task, test)
        first = {k: float(v) for k, v in first.items()}
        points = [{"step": 0, **first}] + [{k: e[k] for k in ("step", *first)} for e in result.log if "val_loss" in e]
        best = min(points, key=lambda p: p["val_loss"])
        C, rho = coupling(result.theta)
        return {"label": method_label(spec, cfg.inner_steps), "test_acc": points[-1]["test_acc"],
                "test_acc_start": first["test_acc"], "test_acc_best_val": best["test_acc"],
                "best_val_step": best["step"], "val_loss": points[-1]["val_loss"], "val_loss_start": first["val_loss"],
                "true_grad_norm": points[-1]["true_grad_norm"], "cosine": points[-1]["cosine"], "rho": float(rho),
                "C_mean": float(np.mean(C)), "C_max": float(np.max(C)), "C": np.asarray(C),
                "hyper_iterations": result.steps, "sec_per_iter": result.seconds / max(result.steps, 1),
                **result.record()}, points

    rows, curves = ctx.sweep([{"trial": trial} for trial in range(cfg.trials)], order, train)
    learned_C = {spec: np.mean([r.pop("C") for r in rows if r["method"] == spec], 0) for spec in order}
    table = aggregate(rows, order)
    plot_curves(curves, ctx.out / "fig6.png", x="step", ys=("val_loss", "true_grad_norm", "cosine"), order=order,
                labels={spec: method_label(spec, cfg.inner_steps) for spec in order}, seed="trial",
                styles={spec: ("-", "--", "-.", ":")[i % 4] for i, spec in enumerate(order)}, log_y=("true_grad_norm",),
                axis={"step": "hyper-iteration τ (outer steps)", "cosine": "cos(estimate, exact d_θ f)",
                      "val_loss": "validation cross-entropy (nats)"},
                title=f"Task interaction (Shaban et al. 2019 Fig. 6 analogue): mean over {cfg.trials} trials, the "
                      "validation set of each trial")
    heatmap(ctx.out / "learned_C.png", learned_C, order, names, cfg)
    learned = [{"method": s, "row": names[i], **{names[j]: float(C[i, j]) for j in range(len(names))}}
               for s, C in learned_C.items() for i in range(len(names))]
    return ctx.finish(NAME, {**cfg.as_dict(), "data": description, "inner_L_at_start": L}, rows,
                      title="Task interaction (Shaban et al. 2019 §4.2.2, App. G.2; Table 3, Fig. 6)", table=table,
                      columns=["method", "test_acc_mean", "test_acc_std", "test_acc_best_val_mean",
                               "test_acc_start_mean", "val_loss_mean", "cosine_mean", "true_grad_norm_mean", "trials",
                               "hyper_iterations", "sec_per_iter"], notes=notes(cfg, description, L) + " " + seeds_note(cfg),
                      csv={"curves.csv": curves, "table3.csv": table, "learned_C.csv": learned})


def aggregate(rows, order) -> list:
    """One row per method: mean and std (over trials, ddof = 0) of the per-trial numbers."""
    table = []
    for spec in order:
        mine = [r for r in rows if r["method"] == spec]
        stat = lambda k, f: float(f([r[k] for r in mine]))
        table.append({"method": mine[0]["label"], "spec": spec, "trials": len(mine),
                      **{f"{k}_{n}": stat(k, f) for k in ("test_acc", "test_acc_best_val", "test_acc_start", "val_loss",
                                                          "cosine", "true_grad_norm")
                         for n, f in (("mean", np.mean), ("std", np.std))},
                      "hyper_iterations": stat("hyper_iterations", np.mean), "sec_per_iter": stat("sec_per_iter", np.mean)})
    return table


def notes(cfg: Config, description: str, L: float) -> str:
    """The results.md text under the table: data, protocol and what each column means."""
    smoke = ("**SMOKE RUN (fewer than 3 trials or 50 hyper-iterations, e.g. --tiny): it only proves that the "
             "pipeline runs; its numbers prove nothing.**\n\n" if cfg.trials < 3 or cfg.outer_steps < 50 else "")
    return (smoke + f"Data: {description}. Shaban et al. 2019 uses CIFAR-10/100 with ResNet-18 features, not available here.\n\n"
            f"Protocol: {cfg.trials} trials, m = {cfg.per_class} training and m validation examples per class; inner "
            f"T = {cfg.inner_steps} GD steps at {cfg.inner_lr:g} from W = 0, b = 0 (top inner Hessian eigenvalue at "
            f"the start L = {L:.3g}, so 2/L = {2 / L:.3g}); θ = (B, ν) from B = {cfg.B0:g}, ν = {cfg.nu0:g}, trained "
            f"by Adam (App. G; step {cfg.outer_lr:g} is ours, the paper gives none) for {cfg.outer_steps} "
            "hyper-iterations, no early stopping (the paper stops when the test error has not improved for 500 "
            "hyper-iterations).\n\n"
            "Columns: test_acc = test accuracy of ŵ(θ) at the last hyper-iteration (Table 3's Avg. Acc., as a "
            "fraction), ± std over trials; test_acc_best_val = at the evaluation with the lowest validation loss; "
            "test_acc_start = at θ_0 (no hyper-optimisation); cosine = cos(estimate, exact d_θ f) at the last "
            "θ (a fresh draw for UFOM); sec_per_iter = outer-step seconds per hyper-iteration (compilation and "
            "evaluation excluded; on a shared 2-core CPU). Per-trial rows: summary.json; curves: curves.csv, "
            "fig6.png; the learned C (mean over trials, diagonal blank: it multiplies ‖w_i − w_i‖ = 0): "
            "learned_C.png / learned_C.csv.")


# -- figures ---------------------------------------------------------------------------------

def heatmap(path: Path, learned_C: dict, order, names, cfg: Config) -> None:
    """The learned C (mean over trials) per method, rows/columns grouped by the newsgroup hierarchy."""
    plt = pyplot()
    idx = hierarchy_order(names)
    hierarchical = all("." in name for name in names)  # newsgroup names; generated classes have none
    n = len(order)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.4 * rows + 0.6), squeeze=False, layout="constrained")
    mats = {s: np.where(np.eye(len(names), dtype=bool), np.nan, learned_C[s])[np.ix_(idx, idx)] for s in order}
    vmax = max(float(np.nanmax(m)) for m in mats.values())
    image = None
    for k, (ax, spec) in enumerate(zip(axes.ravel(), order)):
        image = ax.imshow(mats[spec], cmap="viridis", vmin=0.0, vmax=vmax)
        ax.set_title(method_label(spec, cfg.inner_steps), fontsize=9)
        ax.set_xticks(range(len(idx)), [names[i] for i in idx], rotation=90, fontsize=5)
        ax.set_yticks(range(len(idx)), [names[i] for i in idx] if k % cols == 0 else [], fontsize=5)
        prefixes = [names[i].split(".")[0] for i in idx]
        for b in [i for i in range(1, len(idx)) if hierarchical and prefixes[i] != prefixes[i - 1]]:
            ax.axhline(b - 0.5, color="white", lw=0.6)
            ax.axvline(b - 0.5, color="white", lw=0.6)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label=r"learned coupling $C_{ij}$ (mean over trials)")
    fig.suptitle("Learned task interaction C, classes grouped by newsgroup hierarchy (comp, rec, sci, talk, others)"
                 if hierarchical else "Learned task interaction C (generated classes: no hierarchy)")
    save_figure(fig, path)


register(Experiment(NAME, run, Config, TINY,
                    "task interaction (Shaban et al. 2019, §4.2.2, G.2): learned class coupling C on 20 Newsgroups TF-IDF, "
                    "K-RMD/reverse/FOM/UFOM/Adaptive UFOM, Table 3 and Fig. 6"))
