"""Data hypercleaning (paper 001 §4.2.1 and App. G.1; paper 000 §5.2, Table 1).

A classifier g(φ, x) is trained on n examples, half of them with a wrong label, by r steps of
GD (α = 1); θ ∈ R^n weighs each training loss by σ(θ_i); the outer loss is the cross-entropy
on a clean validation set:

    L_in(θ, φ)  = (1/n) Σ_i σ(θ_i) l_CCE(g(φ, x_i), y_i) + λ‖φ‖²,   λ = 0.001,
    L_out(θ, φ) = mean_{val} l_CCE(g(φ, x), y),   φ_0 = V constant (|Ω_T| = 1).

The papers write the sum over i; with α = 1 a sum over 5,000 examples overshoots, so we use the
mean (as Franceschi et al. 2017), i.e. the sum with α = 1/n. Outer optimizer: Adam.

``model = "linear"`` (paper 001): g = Wx + b, K-RMD for K in ``Ks`` (K = r is full reverse), a
fixed number of hyperiterations. ``model = "mlp"`` (paper 000): two layers with ReLU; methods
(default exact = memory-efficient ``recompute``, ``fom``, ``adaptive-ufom``) at an equal
budget of function calls. Here V and L_out do not depend on θ, so FOM's estimate is exactly
zero and FOM is training on the uncleaned data.

Corruption: exactly ⌊corrupt·n⌋ training examples get a label drawn uniformly from the nine
wrong ones; F1 scores σ(θ_i) < σ(−3), i.e. θ_i < −3, as "corrupted" (paper 001 §4.2.1).
Rows: method, K, seed, train_clean_acc (the uncorrupted part of the training set, paper 000
Table 1), test_acc, test_ce, val_ce, f1, steps, function_calls, seconds.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from . import Experiment, register
from .. import estimators
from ..estimators.base import tree_sq_norm
from ..inner import gd
from ..models import cross_entropy
from ..outer import Budget
from ..outer import run as outer_loop
from ..problem import BilevelProblem, constant_init
from ..results import save_figure, write_csv, write_markdown, write_summary
from ._paper import reference

NAME = "hypercleaning"

#: The fields of every summary.json row.
ROW_KEYS = ("method", "K", "seed", "train_clean_acc", "test_acc", "test_ce", "val_ce", "f1", "steps",
            "function_calls", "seconds")

#: Per-model defaults for the keys left as None in DEFAULTS.
MODEL_DEFAULTS = {
    "linear": dict(methods=["truncated"], Ks=[1, 5, 25, 50, 100], seeds=[0], outer_steps=60, budget_calls=None,
                   outer_lr=0.3, steps=100, hidden=None, pool=1, n_train=5000, n_val=5000),
    "mlp": dict(methods=["recompute", "fom", "adaptive-ufom"], Ks=None, seeds=[0, 1, 2], outer_steps=None,
                budget_calls=10_000, outer_lr=0.3, steps=20, hidden=32, pool=2, n_train=1000, n_val=1000),
}

DEFAULTS = dict(model="linear", data_dir=None, n_train=None, n_val=None, corrupt=0.5, inner_lr=1.0, l2=1e-3,
                eval_every=10, resume=False, devices=None, methods=None, Ks=None, seeds=None, outer_steps=None,
                budget_calls=None, outer_lr=None, steps=None, hidden=None, pool=None)

TINY = dict(n_train=200, n_val=200, steps=5, outer_steps=3, eval_every=2, Ks=[1, 5], seeds=[0], budget_calls=300,
            hidden=8)

def resolve(config: dict) -> dict:
    """Fill the keys left None from the chosen model's defaults; validate."""
    model = config.get("model")
    if model not in MODEL_DEFAULTS:
        raise ValueError(f"model must be one of {sorted(MODEL_DEFAULTS)}; got {model!r}")
    cfg = dict(config)
    if cfg.get("data_dir") is None:  # digits: 1,347 examples left after the test quarter
        cfg.update({k: cfg.get(k) or 600 for k in ("n_train", "n_val")})
    for k, v in MODEL_DEFAULTS[model].items():
        if cfg.get(k) is None:
            cfg[k] = v
    if not 0.0 <= float(cfg["corrupt"]) < 1.0:
        raise ValueError(f"corrupt (fraction of corrupted labels) must be in [0, 1); got {cfg['corrupt']!r}")
    if cfg["outer_steps"] is None and cfg["budget_calls"] is None:
        raise ValueError("set outer_steps or budget_calls (the budget of each run)")
    for K in cfg["Ks"] or []:
        if not 0 <= int(K) <= int(cfg["steps"]):
            raise ValueError(f"Ks must lie in [0, steps] = [0, {cfg['steps']}]; got {K}")
    return cfg


# --- data ------------------------------------------------------------------------------------
def make_data(cfg: dict, seed: int) -> dict:
    """Class-balanced train/val split, corrupted training labels, test set, all as jnp arrays.

    MNIST (``data_dir`` given): train and val from the 60k training images, test = the 10k test
    set. Without ``data_dir``: scikit-learn digits (scaled-down protocol)."""
    rng = np.random.default_rng(seed)
    if cfg["data_dir"] is None:
        (x, y), (xt, yt) = load_digits_splits(rng)
    else:
        (x, y), (xt, yt) = load_mnist_splits(cfg["data_dir"], int(cfg["pool"]))
    n, n_val = int(cfg["n_train"]), int(cfg["n_val"])
    idx = _balanced(y, n + n_val, rng)
    if len(idx) < n + n_val:
        raise ValueError(f"n_train + n_val = {n + n_val} exceeds the {len(idx)} class-balanced examples available")
    tr, va = idx[:n], idx[n:n + n_val]
    y_tr = y[tr].copy()
    bad = rng.permutation(n)[: int(cfg["corrupt"] * n)]
    y_tr[bad] = (y_tr[bad] + rng.integers(1, 10, size=len(bad))) % 10
    corrupted = np.zeros(n, bool)
    corrupted[bad] = True
    f = lambda a: jnp.asarray(a)
    return {"task": (f(x[tr]), f(y_tr), f(x[va]), f(y[va])), "clean_y": f(y[tr]), "corrupted": f(corrupted),
            "test": (f(xt), f(yt))}


def _balanced(y: np.ndarray, m: int, rng) -> np.ndarray:
    """m indices, shuffled, with as equal class counts as the data allow."""
    classes = np.unique(y)
    per = -(-m // len(classes))
    picks = [rng.permutation(np.flatnonzero(y == c))[:per] for c in classes]
    idx = np.concatenate(picks)
    return rng.permutation(idx)[:m]


def load_digits_splits(rng):
    """scikit-learn digits: a random 1/4 held out as the test set, the rest to draw train/val from."""
    from ..data import load_digits

    x, y = load_digits()
    perm = rng.permutation(len(y))
    n_test = len(y) // 4
    return (x[perm[n_test:]], y[perm[n_test:]]), (x[perm[:n_test]], y[perm[:n_test]])


def load_mnist_splits(data_dir, pool: int):
    """MNIST train and test sets, images average-pooled ``pool`` x ``pool`` (1 = 28x28 as is)."""
    from ..data import load_mnist

    d = load_mnist(data_dir)
    if 28 % pool:
        raise ValueError(f"pool must divide 28 (1, 2, 4, 7, 14); got {pool}")
    shrink = lambda x: x.reshape(-1, 28 // pool, pool, 28 // pool, pool).mean((2, 4)).reshape(len(x), -1)
    return tuple((shrink(x), y) for x, y in (d["train"], d["test"]))


# --- model and problem -------------------------------------------------------------------------
def init_model(key, d: int, hidden, dtype=jnp.float32):
    """φ_0: linear (W = 0, b = 0) as in paper 001, or a two-layer ReLU MLP (He init)."""
    if hidden is None:
        return {"W": jnp.zeros((d, 10), dtype), "b": jnp.zeros(10, dtype)}
    k1, k2 = jax.random.split(key)
    return {"W1": jax.random.normal(k1, (d, hidden), dtype) * jnp.sqrt(2.0 / d), "b1": jnp.zeros(hidden, dtype),
            "W2": jax.random.normal(k2, (hidden, 10), dtype) * jnp.sqrt(1.0 / hidden), "b2": jnp.zeros(10, dtype)}


def apply_model(phi, x):
    if "W" in phi:
        return x @ phi["W"] + phi["b"]
    return jax.nn.relu(x @ phi["W1"] + phi["b1"]) @ phi["W2"] + phi["b2"]


def make_problem(phi0, steps: int, inner_lr: float, l2: float) -> BilevelProblem:
    def inner_loss(theta, phi, task):
        x, y = task[0], task[1]
        return cross_entropy(apply_model(phi, x), y, jax.nn.sigmoid(theta)) + l2 * tree_sq_norm(phi)

    def outer_loss(theta, phi, task):
        return cross_entropy(apply_model(phi, task[2]), task[3])

    return BilevelProblem(inner_loss, outer_loss, gd(inner_lr), steps, constant_init(phi0))


def f1_corrupted(theta, corrupted) -> jax.Array:
    """F1 of the rule θ_i < −3 (σ(θ_i) < σ(−3)) for "label corrupted" (paper 001 §4.2.1)."""
    pred = theta < -3.0
    tp = jnp.sum(pred & corrupted)
    return 2.0 * tp / jnp.maximum(jnp.sum(pred) + jnp.sum(corrupted), 1)


#: What make_eval's function returns.
METRICS = ("train_clean_acc", "test_acc", "test_ce", "val_ce", "f1")


def make_eval(problem: BilevelProblem, data: dict):
    """θ -> metrics of the classifier φ_r(θ) trained by the inner loop."""
    task, (xt, yt) = data["task"], data["test"]
    clean = ~data["corrupted"]

    @jax.jit
    def evaluate(theta):
        task_, xt_ = jax.lax.optimization_barrier((task, xt))  # keep XLA from constant-folding the data
        phi = problem.optimizer.params(problem.run(theta, task_))
        hit_tr = jnp.argmax(apply_model(phi, task_[0]), 1) == data["clean_y"]
        logits = apply_model(phi, xt_)
        return {"train_clean_acc": 100 * jnp.sum(hit_tr & clean) / jnp.sum(clean),
                "test_acc": 100 * jnp.mean(jnp.argmax(logits, 1) == yt),
                "test_ce": cross_entropy(logits, yt),
                "val_ce": problem.outer_loss(theta, phi, task_),
                "f1": f1_corrupted(theta, data["corrupted"])}

    return lambda theta: {k: float(v) for k, v in evaluate(theta).items()}


def runs(cfg: dict):
    """(method label, K or None, estimator) for every run of one seed."""
    out = []
    for m in cfg["methods"]:
        if m == "truncated":
            for K in cfg["Ks"]:
                K = int(K)
                out.append(("reverse", K, estimators.get("reverse")) if K == cfg["steps"]
                           else ("truncated", K, estimators.get("truncated", K=K)))
        else:
            out.append((m, None, estimator(m)))
    return out


def estimator(name: str, **options):
    """The registered estimator ``name``; ``truncated-K`` and ``ufom-q`` (the CLI's parametrised
    variants) set K or q."""
    base, _, suffix = name.rpartition("-")
    if base in ("truncated", "ufom") and suffix.replace(".", "", 1).isdigit():
        return estimators.get(base, **{"K" if base == "truncated" else "q": (int if base == "truncated" else float)(suffix)})
    return estimators.get(name, **options)


# --- experiment ------------------------------------------------------------------------------
def run(config: dict, out_dir: Path, progress) -> dict:
    import optax

    cfg = resolve(config)
    out_dir = Path(out_dir)
    rows, curves = [], []
    for seed in cfg["seeds"]:
        data = make_data(cfg, seed)
        d = data["task"][0].shape[1]
        phi0 = init_model(jax.random.PRNGKey(10_000 + seed), d, cfg["hidden"])
        problem = make_problem(phi0, int(cfg["steps"]), float(cfg["inner_lr"]), float(cfg["l2"]))
        evaluate = make_eval(problem, data)
        theta0 = jnp.zeros(data["task"][0].shape[0], data["task"][0].dtype)
        task = data["task"]
        sampler = lambda key: jax.lax.optimization_barrier(task)  # |Ω_T| = 1; barrier: no constant folding
        for method, K, est in runs(cfg):
            label = method if K is None else f"{method}-K{K}"
            res = outer_run(problem, est, optax.adam(float(cfg["outer_lr"])), theta0, sampler, cfg,
                            key=jax.random.PRNGKey(seed), eval_fn=evaluate,
                            checkpoint_dir=out_dir / "checkpoints" / f"{label}-seed{seed}", progress=progress)
            final = {k: res.log[-1][k] for k in METRICS}  # outer.run evaluates the last step
            rows.append({"method": method, "K": K, "seed": seed, **final, "steps": int(res.steps),
                         "function_calls": float(res.function_calls), "seconds": float(res.seconds)})
            curves += curve_rows(res.log, method=method, K=K, seed=seed)
    write_csv(out_dir / "curves.csv", curves)
    plot_curves(curves, out_dir / "curves.png", x="function_calls",
                ys=["test_acc", "val_ce", "f1"], group=("method", "K"),
                title=f"hypercleaning ({cfg['model']})")
    _write_tables(cfg, rows, out_dir)
    return write_summary_doc(out_dir, cfg, rows)


def outer_run(problem, est, optimizer, theta0, sampler, cfg: dict, **kw):
    """``ablo.outer.run`` with the standard config keys: budget from ``outer_steps`` and
    ``budget_calls``, ``eval_every``, ``resume``, ``devices``, ``meta_batch`` (default 1)."""
    steps, calls = cfg.get("outer_steps"), cfg.get("budget_calls")
    budget = Budget(steps=None if steps is None else int(steps), function_calls=None if calls is None else float(calls))
    return outer_loop(problem, est, optimizer, theta0, sampler, budget=budget, meta_batch=int(cfg.get("meta_batch", 1)),
                      eval_every=int(cfg["eval_every"]), checkpoint_every=int(cfg["eval_every"]),
                      resume=bool(cfg["resume"]), devices=cfg["devices"], **kw)


def curve_rows(log: list, metric: str = "test_acc", **labels) -> list:
    """The outer-loop log entries that carry evaluation metrics (``metric``), tagged with ``labels``."""
    return [{**labels, **e} for e in log if metric in e]


def plot_curves(rows: list, path: Path, x: str, ys: list, group: tuple, title: str, paper: dict | None = None) -> None:
    """One panel per metric in ``ys`` against ``x``, one line per ``group`` value, mean over seeds;
    ``paper`` maps a metric to {label: value} drawn as dashed reference lines."""
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
            name = " ".join(f"{v}" if g == "method" else f"{g}={v}" for g, v in zip(group, label) if v is not None)
            ax.plot(xs, ys_, label=name, color=f"C{i}")
        for j, (name, v) in enumerate((paper or {}).get(y, {}).items()):
            ax.axhline(v, ls="--", lw=0.8, color="gray")
            ax.annotate(f"paper {name}", (0.02, v), xycoords=("axes fraction", "data"), fontsize=7, color="gray")
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel(y.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    save_figure(fig, path)


def write_summary_doc(out_dir: Path, cfg: dict, rows: list) -> dict:
    write_summary(out_dir, NAME, cfg, rows)
    return {"experiment": NAME, "config": cfg, "results": rows}


def _write_tables(cfg: dict, rows: list, out_dir: Path) -> None:
    keys = ["train_clean_acc", "test_acc", "test_ce", "f1", "function_calls", "seconds"]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["method"], r["K"]), []).append(r)
    table = []
    for (method, K), rs in groups.items():
        t = {"method": method, "K": K, "seeds": len(rs)}
        for k in keys:
            v = np.array([r[k] for r in rs], float)
            t[k] = float(v.mean())
            if k in ("test_acc", "train_clean_acc") and len(rs) > 1:
                t[k + "_std"] = float(v.std(ddof=1))
        t.update(reference("hypercleaning", cfg, {"method": method, "K": K}))
        table.append(t)
    data = "MNIST" if cfg["data_dir"] else "scikit-learn digits (scaled-down protocol; pass --data-dir for MNIST)"
    notes = [f"Data: {data}. n_train = {cfg['n_train']}, n_val = {cfg['n_val']}, corrupted fraction "
             f"{cfg['corrupt']}, r = {cfg['steps']}, inner GD α = {cfg['inner_lr']}, λ = {cfg['l2']}, "
             f"outer Adam lr {cfg['outer_lr']} (the papers give none), seeds {list(cfg['seeds'])}. The inner "
             "loss is the mean weighted cross-entropy (the papers' sum with α = 1 overshoots: it is the sum with "
             "α = 1/n); exactly half the training labels are replaced by a wrong one.",
             f"Budget per run: {cfg['outer_steps'] or '-'} outer steps / {cfg['budget_calls'] or '-'} function calls."]
    if cfg["model"] == "linear":
        notes.append("Paper: 001 Table 2 (K-RMD after 1000 hyperiterations). Ours: fewer hyperiterations "
                     "(001 App. G.1: F1 has converged by 150).")
    else:
        notes.append(f"Paper: 000 Table 1 (28x28 MNIST, n = 5000, r = 100, paper's width). Ours scaled down for "
                     f"two CPU cores: images average-pooled {cfg['pool']}x{cfg['pool']}, hidden width {cfg['hidden']}, "
                     f"n_train = n_val = {cfg['n_train']}, r = {cfg['steps']}; all methods at the same function-call budget. 'recompute' is the paper's "
                     "memory-efficient exact estimator. FOM's hypergradient is exactly 0 here (V, L_out independent "
                     "of θ), so FOM is training on uncleaned data.")
    cols = ["method", "K", "seeds"]
    for t in table:
        cols += [c for c in t if c not in cols]
    write_markdown(out_dir / "results.md", f"Hypercleaning ({cfg['model']})", table, cols, "\n\n".join(notes))


register(Experiment(NAME, run, DEFAULTS, TINY,
                    "data hypercleaning on MNIST: K-RMD on a linear model (001 Table 2), exact/FOM/Adaptive UFOM "
                    "on a two-layer MLP (000 Table 1)"))
