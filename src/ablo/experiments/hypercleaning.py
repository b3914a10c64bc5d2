"""Data hypercleaning (Shaban et al. 2019 §4.2.1 and App. G.1; Likhosherstov et al. 2021 §5.2, Table 1).

The problem, its data and the protocol in detail: :mod:`ablo.problems.hypercleaning`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from . import Experiment, Result, RunContext, register
from .. import outer
from ..problems.hypercleaning import (METRICS, TRUE_GRAD, init_model, make_data, make_eval, make_problem,
                                      outer_optimizer, step_size)
from ..results import by_method, number
from ._paper import hypercleaning_figures_withheld, reference
from ._notes import paired_note, seeds_note, smoke_note, smoke_option
from ..config import ConfigError, ExperimentConfig, estimator, option
from .plots import plot_curves

NAME = "hypercleaning"

#: The fields of every summary.json row.
ROW_KEYS = ("method", "estimator", "K", "seed", "inner_lr", "L", "outer_lr", "train_clean_acc", "test_acc", "test_ce",
            "val_acc", "val_ce", "f1", "true_grad_norm", "descent_ratio", "steps", "function_calls", "seconds")

#: The values of the config fields left None, per model (n_train/n_val: on MNIST; l2 None on the
#: linear model: 0.001/n_train, Shaban et al.'s weight on their summed loss in the mean's units).
MODEL_DEFAULTS = {
    "linear": dict(methods=("truncated-1", "truncated-5", "truncated-25", "truncated-50", "reverse"), seeds=(3,),
                   outer_steps=1000, budget_calls=None, steps=100, hidden=None, pool=1, n_train=5000, n_val=5000,
                   corruption="uniform", l2=None, decay_bias=True, test_set="rest", schedule="inv-sqrt",
                   first_step_norm=None, outer_lr=None, eval_every=25, track_true_grad=True),
    "mlp": dict(methods=("recompute", "fom", "adaptive-ufom"), seeds=(3, 4, 5), outer_steps=None,
                budget_calls=10_000.0, steps=20, hidden=32, pool=2, n_train=1000, n_val=1000, corruption="wrong",
                l2=1e-3, decay_bias=False, test_set="test", schedule="constant", first_step_norm=None,
                outer_lr=0.3, eval_every=10, track_true_grad=False),
}
#: n_train and n_val on scikit-learn digits (1,347 examples left after the test quarter).
DIGITS_SIZE = 600
#: The papers' inner step size α (Shaban et al. 2019 App. G.1, Likhosherstov et al. 2021 §5.2): ``inner_lr=paper``.
PAPER_INNER_LR = 1.0


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """The settings of a hypercleaning run; fields left None take the model's (and data's) default,
    filled in one place by :meth:`resolved`."""

    model: str = option("linear", "classifier: linear (Shaban et al. 2019 Table 2) or mlp, two layers with ReLU "
                        "(Likhosherstov et al. 2021 Table 1)", choices=("linear", "mlp"))
    DATASET = "mnist"  # data_dir defaults to the fetched mnist (config.build)
    data_dir: Optional[str] = option(None, "folder with the MNIST IDX files; none = scikit-learn's 8x8 digits "
                                     "(a scaled-down stand-in)")
    n_train: Optional[int] = option(None, "training examples n (θ ∈ R^n); default 5000 (linear) / 1000 (mlp) on "
                                    "MNIST, 600 on digits", low=1)
    n_val: Optional[int] = option(None, "clean validation examples; default 5000 (linear) / 1000 (mlp) on MNIST, "
                                  "600 on digits", low=1)
    corrupt: float = option(0.5, "corruption probability p (uniform) or fraction (wrong) of the training labels",
                            low=0, high=1, high_open=True)
    corruption: Optional[str] = option(None, "uniform: each training label replaced with probability p by a "
                                       "uniformly random class, which may be the true one (Shaban et al. 2019 App. G.1; "
                                       "default, linear); wrong: exactly ⌊p·n⌋ labels replaced by a wrong class "
                                       "(Likhosherstov et al. 2021 §5.2; default, mlp)", choices=("uniform", "wrong"))
    steps: Optional[int] = option(None, "inner GD steps r; default 100 (linear) / 20 (mlp)", low=1, high=100_000)
    inner_lr: Optional[float] = option(None, "inner GD step size α, refused at or above 2/L (L: top eigenvalue of "
                                       "the inner Hessian at φ_0); auto (default) = 1/L; paper = the papers' α = 1 "
                                       "(refused where 2/L <= 1 on the data at hand, e.g. digits or --tiny sizes)",
                                       low=0, low_open=True, none_word="auto", named={"paper": PAPER_INNER_LR})
    l2: Optional[float] = option(None, "weight decay λ added to the mean weighted loss; default 0.001/n_train "
                                 "(linear: Shaban et al. 2019's 0.001 on its summed loss) / 0.001 (mlp)", low=0)
    decay_bias: Optional[bool] = option(None, "decay the biases too; default true (linear: Shaban et al. 2019's W ∈ "
                                        "R^{10×785} holds the bias column) / false (mlp)")
    test_set: Optional[str] = option(None, "rest: every image of the 70k not drawn for train/val (Shaban et al. 2019 App. "
                                     "G.1; default, linear); test: the 10k test images (default, mlp)",
                                     choices=("rest", "test"))
    hidden: Optional[int] = option(None, "hidden width of the MLP; default 32 (mlp)", low=1, high=100_000)
    pool: Optional[int] = option(None, "average-pool the MNIST images pool x pool; default 1 (linear) / 2 (mlp)",
                                 choices=(1, 2, 4, 7, 14))
    methods: Optional[tuple[str, ...]] = option(
        None, "estimator specs; default truncated-1,truncated-5,truncated-25,truncated-50,reverse (linear) / "
        "recompute,fom,adaptive-ufom (mlp)", estimators=True, min_len=1)
    seeds: Optional[tuple[int, ...]] = option(None, "seeds (split, corruption, MLP init, estimator keys); default "
                                              "3 (linear) / 3,4,5 (mlp)", low=0, unique=True, min_len=1)
    tuned_seeds: tuple[int, ...] = option((0, 1, 2), "seeds the settings were chosen on (pre-registration: 0 for "
                                          "the linear model, 0,1,2 for the MLP); the seeds a run reports must differ",
                                          low=0, unique=True)
    outer_steps: Optional[int] = option(None, "outer Adam steps per run; default 1000 (linear, Shaban et al. 2019 Table 2) "
                                        "/ no limit (mlp)", low=1, high=10_000_000)
    budget_calls: Optional[float] = option(None, "function calls per run; default no limit (linear) / 10000 (mlp)",
                                           low=0, low_open=True)
    schedule: Optional[str] = option(None, "outer Adam step size: inv-sqrt η_τ = η_0/√τ (default, linear) or "
                                     "constant η_0 (default, mlp)", choices=("inv-sqrt", "constant"))
    outer_lr: Optional[float] = option(None, "outer Adam step size η_0; default 0.3 (mlp) / set per method from "
                                       "first_step_norm (linear)", low=0, low_open=True)
    first_step_norm: Optional[float] = option(None, "when outer_lr is not given: η_0 is set per method so the "
                                              "first outer update ‖θ_1 − θ_0‖ has this norm (Shaban et al. 2019 App. G.1); "
                                              "default √n_train (linear: Adam's first update at unit step has norm ≈ √n, so η_0 ≈ 1)", low=0, low_open=True)
    eval_every: Optional[int] = option(None, "outer steps between evaluations and checkpoints; default 25 "
                                       "(linear) / 10 (mlp)", low=1)
    track_true_grad: Optional[bool] = option(None, "at every evaluation also compute the exact hypergradient "
                                             "(reverse): its norm (Shaban et al. 2019 Fig. 5) and the descent ratio "
                                             "hᵀd/‖d‖² of the method's estimate h; default true (linear) / false "
                                             "(mlp)")
    smoke: bool = smoke_option()

    def resolved(self) -> "Config":
        """This config with every field left None filled from :data:`MODEL_DEFAULTS` (sizes:
        :data:`DIGITS_SIZE` without ``data_dir``) and the fields it does not use set to None; in the
        result, None budgets mean no limit, and ``first_step_norm`` is None when ``outer_lr`` is set."""
        defaults = dict(MODEL_DEFAULTS[self.model])
        if self.data_dir is None:
            defaults.update(n_train=DIGITS_SIZE, n_val=DIGITS_SIZE)
        if self.outer_lr is None and self.first_step_norm is not None:  # an explicit first-step norm wins
            defaults["outer_lr"] = None                                   # over the model's default step size
        filled = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        unused = {k: None for k in self.inactive()}  # e.g. --tiny's hidden width on a linear model
        out = dataclasses.replace(self, **{**filled, **unused})
        if out.l2 is None:
            out = dataclasses.replace(out, l2=0.001 / out.n_train)
        if out.model == "linear" and out.outer_lr is None and out.first_step_norm is None:
            out = dataclasses.replace(out, first_step_norm=float(np.sqrt(out.n_train)))
        return out

    def validate(self) -> None:
        r = self.resolved()
        problem = make_problem(steps=r.steps, phi0=None)
        for spec in r.methods:
            try:
                estimator(spec).check(problem)
            except ValueError as e:
                raise ConfigError(f"methods: {spec}: {e}") from None
        if self.outer_lr is not None and self.first_step_norm is not None:
            raise ConfigError(f"first_step_norm: {self.first_step_norm} sets the outer step size that outer_lr = "
                              f"{self.outer_lr} sets too; give only one of them")

    def inactive(self) -> dict:
        out = {}
        if self.model == "linear":
            out["hidden"] = "the linear model has no hidden layer (set model=mlp)"
        if self.data_dir is None:
            out["pool"] = "pool shrinks MNIST images; without data_dir the 8x8 digits are read"
        return out


TINY = dict(n_train=200, n_val=200, steps=5, outer_steps=3, eval_every=2, methods=("truncated-1", "reverse"),
            seeds=(0,), tuned_seeds=(), budget_calls=300.0, hidden=8, smoke=True)


# --- experiment ------------------------------------------------------------------------------
def prepare(cfg: Config, seed: int) -> dict:
    """One seed's data, φ_0, θ_0 = 0, the step size (α, L) checked against 2/L at φ_0 and the
    problem at that α."""
    data = make_data(cfg, seed)
    x = data["task"]["x"]
    phi0 = init_model(cfg, x.shape[1], seed, x.dtype)
    theta0 = jnp.zeros(x.shape[0], x.dtype)
    alpha, L = step_size(cfg, data["task"], phi0, theta0)
    problem = make_problem(steps=cfg.steps, inner_lr=alpha, l2=cfg.l2, phi0=phi0, decay_bias=cfg.decay_bias)
    return {"data": data, "theta0": theta0, "alpha": alpha, "L": L, "problem": problem}


def run(config: Config, ctx: RunContext) -> Result:
    cfg = config.resolved()
    budget = outer.Budget(steps=cfg.outer_steps, function_calls=cfg.budget_calls)
    seeds = {seed: prepare(cfg, seed) for seed in cfg.seeds}  # every step size checked before any training
    plain = {seed: make_eval(s["problem"], s["data"]) for seed, s in seeds.items()}  # the same for every method

    def train(case, spec, est):
        seed = case["seed"]
        s, key = seeds[seed], jax.random.PRNGKey(seed)
        problem, task = s["problem"], s["data"]["task"]
        sampler = lambda key: jax.lax.optimization_barrier(task)  # |Ω_T| = 1; barrier: no constant folding
        evaluate = make_eval(problem, s["data"], est, key) if cfg.track_true_grad else plain[seed]
        optimizer, eta0 = outer_optimizer(cfg, problem, est, s["theta0"], task, key)
        res = ctx.train(f"{spec} seed {seed}", problem, est, optimizer, s["theta0"], sampler, key=key,
                        budget=budget, checkpoint_every=cfg.eval_every,
                        options=outer.Options(evaluation=outer.Evaluation(evaluate, every=cfg.eval_every),
                                              progress=outer.Progress(losses=False)))
        final = {k: res.log[-1].get(k) for k in METRICS + TRUE_GRAD}  # outer.run evaluates the last step
        row = {"K": getattr(est, "K", None), "inner_lr": s["alpha"], "L": s["L"], "outer_lr": eta0, **final,
               **res.record()}
        return row, [{"estimator": est.name, "K": row["K"], **e} for e in res.log if "test_acc" in e]

    rows, curves = ctx.sweep([{"seed": seed} for seed in cfg.seeds], cfg.methods, train)
    alphas = [seeds[seed]["alpha"] for seed in cfg.seeds]
    summary_cfg = {**cfg.as_dict(), "inner_lr": alphas[0] if len(set(alphas)) == 1 else alphas,
                   "inner_lr_resolved": ("given" if config.inner_lr is not None else
                                         "auto: α = 1/L, L the top eigenvalue of the inner Hessian at φ_0 "
                                         + ("(one value per seed, in the order of seeds)" if len(alphas) > 1 else "")
                                         ).strip(),
                   "dataset": seeds[cfg.seeds[-1]]["data"]["dataset"]}
    return report(summary_cfg, rows, curves, ctx)


def report(cfg: dict, rows: list, curves: list, ctx: RunContext) -> Result:
    """curves.png, (with the true gradient tracked) true_gradient.png, curves.csv, results.md and
    summary.json of a run from its resolved config (a summary's), result rows and curve rows."""
    linear = cfg["model"] == "linear"
    seeds = f"seed {cfg['seeds'][0]}" if len(cfg["seeds"]) == 1 else f"seeds {list(cfg['seeds'])}"
    plot_curves(curves, ctx.out / "curves.png", x="step" if linear else "function_calls",
                ys=("test_acc", "val_ce", "f1"), order=list(cfg["methods"]),
                title=f"Hypercleaning ({cfg['model']}, {cfg['dataset']['name']}): test accuracy on the "
                      f"{cfg['dataset'].get('n_test', 'held-out')} test images, {seeds}")
    if cfg.get("track_true_grad"):
        plot_curves(curves, ctx.out / "true_gradient.png", x="step", ys=("true_grad_norm", "descent_ratio"),
                    order=list(cfg["methods"]), log_y=("true_grad_norm",),
                    title="Exact hypergradient d along each method's iterates: ‖d‖ (Shaban et al. 2019, Fig. 5) "
                          "and hᵀd/‖d‖² (their Fig. 2's ratio)")
    table, columns, notes = _tables(cfg, rows)
    return ctx.finish(NAME, cfg, rows, title=f"Hypercleaning ({cfg['model']})", table=table, columns=columns,
                      notes=notes, csv={"curves.csv": curves})


def describe_dataset(d: dict) -> str:
    """One phrase naming the data read and its sizes."""
    if "images" not in d:  # IDX files from data_dir: MNIST, Fashion-MNIST or unknown, named by their digests
        where = (f"{d['name']} ({d['train_images']:,} training / {d['test_images']:,} test images, "
                 f"{d['image_size']}x{d['image_size']} pixels)")
    else:
        where = (f"{d['name']} ({d['images']:,} 8x8 images, {d['test_images']:,} held out as the test set; a "
                 "scaled-down stand-in for MNIST, pass --data-dir for MNIST)")
    return f"{where}, n_train = {d['n_train']:,}, n_val = {d['n_val']:,}"


def _tables(cfg: dict, rows: list) -> tuple:
    """(table rows, columns, notes) of results.md: one row per method, means over seeds."""
    linear = cfg["model"] == "linear"
    keys = (["test_acc", "val_acc", "val_ce", "f1", "true_grad_norm", "train_clean_acc"] if linear
            else ["train_clean_acc", "test_acc", "test_ce", "f1"]) + ["outer_lr", "function_calls", "seconds"]
    withheld = hypercleaning_figures_withheld(cfg)
    table = by_method(rows, keys, spread=("test_acc", "train_clean_acc"))
    for t in table:
        t.update(reference(NAME, cfg, next(r for r in rows if r["method"] == t["method"])))
    Ls = ", ".join(number(r["L"]) for r in rows if r["method"] == rows[0]["method"])
    alpha = (f"inner GD α = 1/L (inner_lr = auto; L = {Ls} per seed, the top eigenvalue of the inner Hessian at φ_0)"
             if cfg["inner_lr_resolved"] != "given" else
             f"inner GD α = {number(cfg['inner_lr'])} (below 2/L; L = {Ls} per seed at φ_0)")
    d = cfg["dataset"]
    corrupted = (f"each training label replaced with probability {number(cfg['corrupt'])} by a uniformly random "
                 f"class, which may be the true one ({d.get('corrupted', '?')} of {d['n_train']:,} labels wrong, seed "
                 f"{cfg['seeds'][-1]})" if cfg["corruption"] == "uniform" else
                 f"{int(cfg['corrupt'] * d['n_train']):,} training labels replaced by a wrong class")
    test = ("test set: every image not drawn for train/val" if cfg["test_set"] == "rest" else "test set: the "
            "held-out test images") + f" ({d.get('n_test', '?'):,})"
    step = (f"η_0 set per method so the first update has norm {number(cfg['first_step_norm'])} (outer_lr column)"
            if cfg.get("first_step_norm") else f"η_0 = {number(cfg['outer_lr'])}")
    schedule = "η_τ = η_0/√τ" if cfg["schedule"] == "inv-sqrt" else "constant"
    budget = " / ".join(x for x in (cfg["outer_steps"] and f"{cfg['outer_steps']:,} outer steps",
                                    cfg["budget_calls"] and f"{number(cfg['budget_calls'])} function calls") if x)
    notes = ([smoke_note(cfg).strip()] if cfg["smoke"] else []) + [
        f"Data: {describe_dataset(d)}; {corrupted}; {test}. r = {cfg['steps']}, {alpha}, λ = {cfg['l2']:.3g} on the "
        f"weights{' and biases' if cfg['decay_bias'] else ''}, added to the mean weighted cross-entropy (the papers "
        "write the sum, which overshoots with α = 1 on [0, 1] pixels; the mean is the sum with α/n"
        + ("; λ = 0.001/n keeps Shaban et al.'s ratio of data term to regulariser" if np.isclose(
            cfg["l2"], 0.001 / d["n_train"]) else "") + f"). Outer: Adam, {step}, {schedule}.",
        f"Budget per run: {budget}; seconds count the outer steps only (not compilation or evaluation).",
        seeds_note(cfg)]
    if d.get("corrupted") == 0:
        notes.append("f1 is NaN: no training label is corrupted, so there is nothing to detect and F1 is undefined.")
    if cfg.get("track_true_grad"):
        notes.append("true_grad_norm: ‖d‖ of the exact hypergradient d = ∂M^(r)/∂θ (reverse mode) at the final θ "
                     "(Shaban et al. 2019, Fig. 5: true_gradient.png has it along the run, with hᵀd/‖d‖² of the "
                     "method's own estimate h).")
    paper = ("Shaban et al. 2019, Table 2 (K-RMD after 1000 hyperiterations)" if linear
             else "Likhosherstov et al. 2021, Table 1 (28x28 MNIST, n = 5000, r = 100)")
    if withheld:
        notes.append(f"The figures of {paper} are not shown: {withheld}.")
    else:
        notes.append(f"paper_* columns: {paper}" + ("." if linear else f"; hidden width {cfg['hidden']} (the paper "
                                                                       "gives none), all methods at one function-call "
                                                                       "budget."))
    ran = {r["estimator"] for r in rows}
    if "recompute" in ran:
        notes.append("'recompute' is the paper's memory-efficient exact estimator.")
    if "fom" in ran and not linear:
        notes.append("FOM's hypergradient is exactly 0 here (V, L_out independent of θ), so FOM trains on the "
                     "uncleaned data.")
    if len(cfg["seeds"]) > 1 and len(table) > 1:
        notes.append(paired_note(rows, "test_acc").strip())
    columns = ["method", "seeds"]
    for t in table:
        columns += [c for c in t if c not in columns and t[c] is not None]
    return table, columns, "\n\n".join(notes)


register(Experiment(NAME, run, Config, TINY,
                    "data hypercleaning on MNIST: K-RMD on a linear model (Shaban et al. 2019, Table 2), exact/FOM/Adaptive UFOM "
                    "on a two-layer MLP (Likhosherstov et al. 2021, Table 1)"))


def _default(name: str, value):
    """Config's field ``name`` (type, range, help) with another default."""
    return dataclasses.field(default=value, metadata={f.name: f for f in dataclasses.fields(Config)}[name].metadata)


@dataclass(frozen=True)
class DemoConfig(Config):
    """The README demo (``ablo demo``): hypercleaning with an MLP on scikit-learn's bundled digits
    (no download; give data_dir for MNIST), 600 examples, half mislabelled, exact (``recompute``),
    FOM, UFOM and Adaptive UFOM at 12,000 function calls each. Its summary.json says "hypercleaning"."""

    DATASET = None
    model: str = _default("model", "mlp")
    n_train: Optional[int] = _default("n_train", 600)
    n_val: Optional[int] = _default("n_val", 600)
    methods: Optional[tuple[str, ...]] = _default("methods", ("recompute", "fom", "ufom", "adaptive-ufom"))
    seeds: Optional[tuple[int, ...]] = _default("seeds", (3,))
    budget_calls: Optional[float] = _default("budget_calls", 12_000.0)


register(Experiment("demo", run, DemoConfig, {**TINY, "methods": ("recompute", "fom", "ufom", "adaptive-ufom")},
                    "the README demo: hypercleaning on scikit-learn digits, exact vs FOM vs UFOM vs Adaptive UFOM at an "
                    "equal function-call budget"))
