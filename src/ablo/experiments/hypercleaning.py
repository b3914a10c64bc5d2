"""Data hypercleaning (paper 001 §4.2.1 and App. G.1; paper 000 §5.2, Table 1).

A classifier g(φ, x) is trained on n examples, a fraction of them with a wrong label, by r steps
of GD at step size α; θ ∈ R^n weighs each training loss by σ(θ_i); the outer loss is the
cross-entropy on a clean validation set (the one problem :mod:`ablo.problems.hypercleaning`):

    L_in(θ, φ)  = (1/n) Σ_i σ(θ_i) l_CE(g(φ, x_i), ỹ_i) + λ Σ_layers ‖W‖_F²,
    L_out(θ, φ) = mean_{val} l_CE(g(φ, x), y),   φ_0 = V constant (|Ω_T| = 1).

The papers write the sum over i with α = 1; on [0, 1] pixels that overshoots, so we use the mean
(as Franceschi et al. 2017), i.e. the sum with α/n. Before training, α is checked against the
curvature of L_in at φ_0 (:func:`ablo.curvature.check_step_size`: α ≥ 2/L is refused, L the top
Hessian eigenvalue); ``inner_lr = auto`` sets α = 1/L. Outer optimizer: Adam, by
:func:`ablo.outer.run` (divergence stops the run naming step, method and cause).

``model = linear`` (paper 001): g = Wx + b from W = 0, K-RMD as ``truncated-K`` specs and
``reverse`` (K = r), a fixed number of hyperiterations. ``model = mlp`` (paper 000): two layers
with ReLU; methods (default exact = memory-efficient ``recompute``, ``fom``, ``adaptive-ufom``)
at an equal budget of function calls. V and L_out do not depend on θ, so FOM's estimate is
exactly zero and FOM is training on the uncleaned data.

Data: MNIST IDX files from ``data_dir`` (train and val drawn from the 60k training images, test =
the 10k test images), else scikit-learn's 8x8 digits (a scaled-down stand-in). Corruption:
exactly ⌊corrupt·n⌋ training examples get a label drawn uniformly from the nine wrong ones; F1
scores θ_i < −3 as "corrupted" (paper 001 §4.2.1). Rows: method (spec), estimator, K, seed,
inner_lr, L, train_clean_acc (the uncorrupted part of the training set, paper 000 Table 1),
test_acc, test_ce, val_ce, f1, steps, function_calls, seconds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import Experiment, RunContext, register
from .. import estimators, outer
from ..curvature import check_step_size, top_eigenvalue
from ..models import cross_entropy, linear_init, mlp_apply, mlp_init
from ..problems.hypercleaning import f1_corrupted, make_problem
from ..results import save_figure, write_csv, write_markdown, write_summary
from ._paper import hypercleaning_figures_withheld, reference
from ._notes import smoke_note, smoke_option
from .config import ConfigError, ExperimentConfig, option

NAME = "hypercleaning"

#: The fields of every summary.json row.
ROW_KEYS = ("method", "estimator", "K", "seed", "inner_lr", "L", "train_clean_acc", "test_acc", "test_ce", "val_ce",
            "f1", "steps", "function_calls", "seconds")

#: The values of the config fields left None, per model (n_train/n_val: on MNIST).
MODEL_DEFAULTS = {
    "linear": dict(methods=("truncated-1", "truncated-5", "truncated-25", "truncated-50", "reverse"), seeds=(0,),
                   outer_steps=60, budget_calls=None, steps=100, hidden=None, pool=1, n_train=5000, n_val=5000),
    "mlp": dict(methods=("recompute", "fom", "adaptive-ufom"), seeds=(0, 1, 2), outer_steps=None,
                budget_calls=10_000.0, steps=20, hidden=32, pool=2, n_train=1000, n_val=1000),
}
#: n_train and n_val on scikit-learn digits (1,347 examples left after the test quarter).
DIGITS_SIZE = 600


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """The settings of a hypercleaning run; fields left None take the model's (and data's) default,
    filled in one place by :meth:`resolved`."""

    model: str = option("linear", "classifier: linear (paper 001 Table 2) or mlp, two layers with ReLU "
                        "(paper 000 Table 1)", choices=("linear", "mlp"))
    DATASET = "mnist"  # data_dir defaults to the fetched mnist (config.build)
    data_dir: Optional[str] = option(None, "folder with the MNIST IDX files; none = scikit-learn's 8x8 digits "
                                     "(a scaled-down stand-in)")
    n_train: Optional[int] = option(None, "training examples n (θ ∈ R^n); default 5000 (linear) / 1000 (mlp) on "
                                    "MNIST, 600 on digits", low=1)
    n_val: Optional[int] = option(None, "clean validation examples; default 5000 (linear) / 1000 (mlp) on MNIST, "
                                  "600 on digits", low=1)
    corrupt: float = option(0.5, "fraction of training labels replaced by a wrong class", low=0, high=1,
                            high_open=True)
    steps: Optional[int] = option(None, "inner GD steps r; default 100 (linear) / 20 (mlp)", low=1, high=100_000)
    inner_lr: Optional[float] = option(1.0, "inner GD step size α, refused at or above 2/L (L: top eigenvalue of "
                                       "the inner Hessian at φ_0); auto = 1/L", low=0, low_open=True,
                                       none_word="auto")
    l2: float = option(1e-3, "weight decay λ on the weight matrices, added to the mean weighted loss (the "
                       "papers' ratio to their summed loss would be 0.001/n_train)", low=0)
    hidden: Optional[int] = option(None, "hidden width of the MLP; default 32 (mlp)", low=1, high=100_000)
    pool: Optional[int] = option(None, "average-pool the MNIST images pool x pool; default 1 (linear) / 2 (mlp)",
                                 choices=(1, 2, 4, 7, 14))
    methods: Optional[tuple[str, ...]] = option(
        None, "estimator specs; default truncated-1,truncated-5,truncated-25,truncated-50,reverse (linear) / "
        "recompute,fom,adaptive-ufom (mlp)", estimators=True, min_len=1)
    seeds: Optional[tuple[int, ...]] = option(None, "seeds (split, corruption, MLP init, estimator keys); default "
                                              "0 (linear) / 0,1,2 (mlp)", low=0, unique=True, min_len=1)
    outer_steps: Optional[int] = option(None, "outer Adam steps per run; default 60 (linear) / no limit (mlp)",
                                        low=1, high=10_000_000)
    budget_calls: Optional[float] = option(None, "function calls per run; default no limit (linear) / 10000 (mlp)",
                                           low=0, low_open=True)
    outer_lr: float = option(0.3, "outer Adam step size (the papers give none)", low=0, low_open=True)
    eval_every: int = option(10, "outer steps between evaluations and checkpoints", low=1)
    smoke: bool = smoke_option()

    def resolved(self) -> "Config":
        """This config with every field left None filled from :data:`MODEL_DEFAULTS` (sizes:
        :data:`DIGITS_SIZE` without ``data_dir``) and the fields it does not use set to None; in the
        result, None budgets mean no limit."""
        defaults = dict(MODEL_DEFAULTS[self.model])
        if self.data_dir is None:
            defaults.update(n_train=DIGITS_SIZE, n_val=DIGITS_SIZE)
        filled = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        unused = {k: None for k in self.inactive()}  # e.g. --tiny's hidden width on a linear model
        return dataclasses.replace(self, **{**filled, **unused})

    def validate(self) -> None:
        r = self.resolved()
        problem = make_problem(steps=r.steps, phi0=None)
        for spec in r.methods:
            try:
                estimators.parse(spec).check(problem)
            except ValueError as e:
                raise ConfigError(f"methods: {spec}: {e}") from None

    def inactive(self) -> dict:
        out = {}
        if self.model == "linear":
            out["hidden"] = "the linear model has no hidden layer (set model=mlp)"
        if self.data_dir is None:
            out["pool"] = "pool shrinks MNIST images; without data_dir the 8x8 digits are read"
        return out


TINY = dict(n_train=200, n_val=200, steps=5, outer_steps=3, eval_every=2, methods=("truncated-1", "reverse"),
            seeds=(0,), budget_calls=300.0, hidden=8, smoke=True)


# --- data ------------------------------------------------------------------------------------
def load_splits(cfg: Config, rng):
    """((x, y) to draw train/val from, (x_test, y_test), description of the data read).

    MNIST (``data_dir``): the 60k training images and the 10k test images, average-pooled
    ``pool`` x ``pool``. Digits: a random quarter held out as the test set."""
    if cfg.data_dir is None:
        from ..data import load_digits

        x, y = load_digits()
        perm = rng.permutation(len(y))
        n_test = len(y) // 4
        pool, test = (x[perm[n_test:]], y[perm[n_test:]]), (x[perm[:n_test]], y[perm[:n_test]])
        return pool, test, {"name": "scikit-learn digits", "images": len(y), "image_size": 8, "test_images": n_test}
    from ..data import load_mnist

    d = load_mnist(cfg.data_dir)
    p = cfg.pool
    shrink = lambda x: x.reshape(-1, 28 // p, p, 28 // p, p).mean((2, 4)).reshape(len(x), -1)
    pool, test = ((shrink(x), y) for x, y in (d["train"], d["test"]))
    return pool, test, {"name": "MNIST", "dir": str(Path(cfg.data_dir).resolve()), "train_images": len(pool[1]),
                        "test_images": len(test[1]), "image_size": 28 // p}


def make_data(cfg: Config, seed: int) -> dict:
    """The task {"x", "y" (corrupted), "x_val", "y_val"}, the clean training labels, the mask of
    corrupted examples, the test set and the description of the data read. Train and val are
    class-balanced draws from the training pool."""
    rng = np.random.default_rng(seed)
    (x, y), (xt, yt), described = load_splits(cfg, rng)
    n, n_val = cfg.n_train, cfg.n_val
    idx = _balanced(y, n + n_val, rng)
    if len(idx) < n + n_val:
        raise ValueError(f"n_train + n_val = {n + n_val} exceeds the {len(idx)} examples of {described['name']}; "
                         "lower n_train or n_val")
    tr, va = idx[:n], idx[n:n + n_val]
    y_tr = y[tr].copy()
    bad = rng.permutation(n)[: int(cfg.corrupt * n)]
    y_tr[bad] = (y_tr[bad] + rng.integers(1, 10, size=len(bad))) % 10
    corrupted = np.zeros(n, bool)
    corrupted[bad] = True
    f = jnp.asarray
    task = {"x": f(x[tr]), "y": f(y_tr), "x_val": f(x[va]), "y_val": f(y[va])}
    return {"task": task, "clean_y": f(y[tr]), "corrupted": f(corrupted), "test": (f(xt), f(yt)),
            "dataset": {**described, "n_train": n, "n_val": n_val}}


def _balanced(y: np.ndarray, m: int, rng) -> np.ndarray:
    """m indices, shuffled, with as equal class counts as the data allow."""
    per = -(-m // len(np.unique(y)))
    idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per] for c in np.unique(y)])
    return rng.permutation(idx)[:m]


def init_model(cfg: Config, d: int, seed: int, dtype=jnp.float32) -> list:
    """φ_0: W = 0, b = 0 for the linear model (paper 001 App. G.1); He init for the MLP."""
    if cfg.model == "linear":
        return linear_init(d, 10, dtype)
    phi = mlp_init(jax.random.PRNGKey(10_000 + seed), [d, cfg.hidden, 10])
    return jax.tree_util.tree_map(lambda a: a.astype(dtype), phi)


def step_size(cfg: Config, task, phi0, theta0) -> tuple:
    """(α, L): the configured α after :func:`check_step_size` refused α ≥ 2/L, or α = 1/L for auto."""
    probe = make_problem(steps=cfg.steps, phi0=phi0, l2=cfg.l2)
    if cfg.inner_lr is None:
        L = top_eigenvalue(probe, theta0, task)
        return 1.0 / L, L
    return cfg.inner_lr, check_step_size(probe, theta0, task, cfg.inner_lr)


#: What make_eval's function returns.
METRICS = ("train_clean_acc", "test_acc", "test_ce", "val_ce", "f1")


def make_eval(problem, data: dict):
    """θ -> metrics of the classifier φ_r(θ) trained by the inner loop."""
    task, (xt, yt) = data["task"], data["test"]
    clean = ~data["corrupted"]

    @jax.jit
    def evaluate(theta):
        task_, xt_ = jax.lax.optimization_barrier((task, xt))  # keep XLA from constant-folding the data
        phi = problem.optimizer.params(problem.run(theta, task_))
        hit_tr = jnp.argmax(mlp_apply(phi, task_["x"]), 1) == data["clean_y"]
        logits = mlp_apply(phi, xt_)
        return {"train_clean_acc": 100 * jnp.sum(hit_tr & clean) / jnp.sum(clean),
                "test_acc": 100 * jnp.mean(jnp.argmax(logits, 1) == yt),
                "test_ce": cross_entropy(logits, yt),
                "val_ce": problem.outer_loss(theta, phi, task_),
                "f1": f1_corrupted(theta, data["corrupted"])}

    return lambda theta: {k: float(v) for k, v in evaluate(theta).items()}


# --- experiment ------------------------------------------------------------------------------
def prepare(cfg: Config, seed: int) -> dict:
    """One seed's data, φ_0, θ_0 = 0, the step size (α, L) checked against 2/L at φ_0 and the
    problem at that α."""
    data = make_data(cfg, seed)
    x = data["task"]["x"]
    phi0 = init_model(cfg, x.shape[1], seed, x.dtype)
    theta0 = jnp.zeros(x.shape[0], x.dtype)
    alpha, L = step_size(cfg, data["task"], phi0, theta0)
    problem = make_problem(steps=cfg.steps, inner_lr=alpha, l2=cfg.l2, phi0=phi0)
    return {"data": data, "theta0": theta0, "alpha": alpha, "L": L, "problem": problem}


def run(config: Config, ctx: RunContext) -> dict:
    cfg = config.resolved()
    budget = outer.Budget(steps=cfg.outer_steps, function_calls=cfg.budget_calls)
    seeds = {seed: prepare(cfg, seed) for seed in cfg.seeds}  # every step size checked before any training
    rows, curves = [], []
    for seed, s in seeds.items():
        problem, task = s["problem"], s["data"]["task"]
        evaluate = make_eval(problem, s["data"])
        sampler = lambda key: jax.lax.optimization_barrier(task)  # |Ω_T| = 1; barrier: no constant folding
        for spec in cfg.methods:
            est = estimators.parse(spec)
            res = outer.run(problem, est, optax.adam(cfg.outer_lr), s["theta0"], sampler,
                            key=jax.random.PRNGKey(seed), budget=budget, eval_fn=evaluate,
                            eval_every=cfg.eval_every, checkpoint_every=cfg.eval_every,
                            **ctx.outer_options(f"{spec} seed {seed}"))
            final = {k: res.log[-1][k] for k in METRICS}  # outer.run evaluates the last step
            ids = {"method": spec, "estimator": est.name, "K": getattr(est, "K", None), "seed": seed}
            rows.append({**ids, "inner_lr": s["alpha"], "L": s["L"], **final, "steps": int(res.steps),
                         "function_calls": float(res.function_calls), "seconds": float(res.seconds)})
            curves += curve_rows(res.log, **ids)
    dataset = seeds[cfg.seeds[-1]]["data"]["dataset"]
    summary_cfg = {**cfg.as_dict(), "inner_lr": config.inner_lr, "dataset": dataset}
    write_csv(ctx.out / "curves.csv", curves)
    plot_curves(curves, ctx.out / "curves.png", x="function_calls", ys=["test_acc", "val_ce", "f1"],
                group=("method",), title=f"hypercleaning ({cfg.model}, {dataset['name']})")
    _write_tables(summary_cfg, rows, ctx.out)
    write_summary(ctx.out, NAME, summary_cfg, rows)
    return {"experiment": NAME, "config": summary_cfg, "results": rows}


def curve_rows(log: list, metric: str = "test_acc", **labels) -> list:
    """The outer-loop log entries that carry evaluation metrics (``metric``), tagged with ``labels``."""
    return [{**labels, **e} for e in log if metric in e]


def plot_curves(rows: list, path: Path, x: str, ys: list, group: tuple, title: str) -> None:
    """One panel per metric in ``ys`` against ``x``, one line per ``group`` value, mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ys), figsize=(4.2 * len(ys), 3.4), squeeze=False)
    lines: dict = {}
    for r in rows:
        lines.setdefault(tuple(r.get(g) for g in group), []).append(r)
    for ax, y in zip(axes[0], ys):
        for i, (label, rs) in enumerate(sorted(lines.items(), key=lambda kv: str(kv[0]))):
            by_seed: dict = {}
            for r in rs:
                if r.get(y) is not None:
                    by_seed.setdefault(r.get("seed"), []).append((r[x], r[y]))
            if not by_seed:
                continue
            n = min(len(v) for v in by_seed.values())
            xs = np.mean([[p[0] for p in v[:n]] for v in by_seed.values()], 0)
            ys_ = np.mean([[p[1] for p in v[:n]] for v in by_seed.values()], 0)
            ax.plot(xs, ys_, label=" ".join(str(v) for v in label if v is not None), color=f"C{i}")
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel(y.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    save_figure(fig, path)


def describe_dataset(d: dict) -> str:
    """One phrase naming the data read and its sizes."""
    if d["name"] == "MNIST":
        where = (f"MNIST from {d['dir']} ({d['train_images']} training / {d['test_images']} test images, "
                 f"{d['image_size']}x{d['image_size']} pixels)")
    else:
        where = (f"{d['name']} ({d['images']} 8x8 images, {d['test_images']} held out as the test set; a scaled-down "
                 "stand-in for MNIST, pass --data-dir for MNIST)")
    return f"{where}, n_train = {d['n_train']}, n_val = {d['n_val']}"


def _write_tables(cfg: dict, rows: list, out_dir: Path) -> None:
    keys = ["train_clean_acc", "test_acc", "test_ce", "f1", "function_calls", "seconds"]
    withheld = hypercleaning_figures_withheld(cfg)
    groups: dict = {}
    for r in rows:
        groups.setdefault(r["method"], []).append(r)
    table = []
    for method, rs in groups.items():
        t = {"method": method, "seeds": len(rs), "inner_lr": float(np.mean([r["inner_lr"] for r in rs]))}
        for k in keys:
            v = np.array([r[k] for r in rs], float)
            t[k] = float(v.mean())
            if k in ("test_acc", "train_clean_acc") and len(rs) > 1:
                t[k + "_std"] = float(v.std(ddof=1))
        t.update(reference(NAME, cfg, rs[0]))
        table.append(t)
    Ls = ", ".join(f"{r['L']:.4g}" for r in rows if r["method"] == rows[0]["method"])
    alpha = (f"inner GD α = 1/L (inner_lr = auto; L = {Ls} per seed, the top eigenvalue of the inner Hessian at φ_0)"
             if cfg["inner_lr"] is None else f"inner GD α = {cfg['inner_lr']} (below 2/L; L = {Ls} per seed at φ_0)")
    notes = ([smoke_note(cfg).strip()] if cfg["smoke"] else []) + [
        f"Data: {describe_dataset(cfg['dataset'])}; corrupted fraction {cfg['corrupt']}, r = {cfg['steps']}, "
        f"{alpha}, λ = {cfg['l2']}, outer Adam lr {cfg['outer_lr']} (the papers give none), seeds "
        f"{list(cfg['seeds'])}. The inner loss is the mean weighted cross-entropy (the papers' sum with α = 1 "
        "overshoots: it is the sum with α/n); the corrupted labels are replaced by a wrong one.",
        f"Budget per run: {cfg['outer_steps'] or '-'} outer steps / {cfg['budget_calls'] or '-'} function calls."]
    paper = ("Shaban et al. 2019, Table 2 (K-RMD after 1000 hyperiterations)" if cfg["model"] == "linear"
             else "Likhosherstov et al. 2021, Table 1 (28x28 MNIST, n = 5000, r = 100)")
    if withheld:
        notes.append(f"The figures of {paper} are not shown: {withheld}.")
    elif cfg["model"] == "linear":
        notes.append(f"paper_* columns: {paper}. Ours: {cfg['outer_steps']} hyperiterations "
                     "(Shaban et al. 2019, App. G.1: F1 has converged by 150).")
    else:
        notes.append(f"paper_* columns: {paper}; hidden width {cfg['hidden']} (the paper gives none), all "
                     "methods at the same function-call budget.")
    if cfg["model"] == "mlp":
        notes.append("'recompute' is the paper's memory-efficient exact estimator. FOM's hypergradient is exactly 0 "
                     "here (V, L_out independent of θ), so FOM is training on uncleaned data.")
    cols = ["method", "seeds"]
    for t in table:
        cols += [c for c in t if c not in cols]
    write_markdown(out_dir / "results.md", f"Hypercleaning ({cfg['model']})", table, cols, "\n\n".join(notes))


register(Experiment(NAME, run, Config, TINY,
                    "data hypercleaning on MNIST: K-RMD on a linear model (001 Table 2), exact/FOM/Adaptive UFOM "
                    "on a two-layer MLP (000 Table 1)"))
