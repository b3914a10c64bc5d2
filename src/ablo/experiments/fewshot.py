"""Few-shot classification, MAML form (paper 000 §5.3, Table 2; Finn et al. 2017).

A task T = (D_tr, D_te): m classes drawn from a split's characters, K + 1 drawings of each,
K for training and one for testing (s = mK, t = m). With V(θ, T) = θ,

    L_in(θ, φ, T) = L_CCE(φ, D_tr),   L_out(θ, φ, T) = L_CCE(φ, D_te),

r steps of inner SGD, an outer Adam over meta-batches of tasks, every method stopped at the same
budget of function calls (Proposition 1's counts: r + 1 gradients for FOM, plus r(r − 1)/2
gradients and r HVPs for the memory-efficient exact ``recompute``). Reptile (Nichol et al.
2018; paper 002 §5; :class:`ablo.meta.Reptile`) is the direction θ − φ_r of an r-step inner run
on all of the task's data (D_tr ∪ D_te), fed to the same outer optimizer: r gradient
evaluations per task.

g(φ, x): ``blocks`` blocks of [3x3 conv, stride 2, ``filters`` channels, batch norm with the batch's
statistics (transductive, as MAML), ReLU], then a dense layer to m logits. Defaults, scaled down for two
CPU cores: 1-shot 20-way (the paper: 30- and 40-way; at 5-way FOM's bias is too small to matter within
budgets that fit two cores — Finn et al. 2017, Table 1, report first-order MAML 0.4 points behind MAML at 5-way
and 6.4 points behind at 20-way), 200,000 function calls per method, 14x14 images
(Finn et al.: 28x28, 4 blocks, 64 filters) with 16 filters and 3 blocks, so the last batch norm still
pools a 2x2 map (m·4 values per channel, as Finn's 4 blocks at 28x28). With 4 blocks at 14x14 it would
normalise over only m values per channel (5 in 5-way): the inner Hessian at θ_0 then has a top
eigenvalue ≈ 89 (≈ 18 with 3 blocks), so lr 0.4 overshoots that direction 36-fold in the first
inner step, the exact hypergradient is ≈ 3-6x FOM's norm at cosine 0.2-0.3, and exact MAML
learns slower per outer step than FOM (a property of that problem, not an estimator error: reverse,
recompute and finite differences agree). Evaluation: ≥ 1000
tasks from the held-out characters (Omniglot's evaluation alphabets), accuracy on D_te after the
inner run, mean and 95% normal interval 1.96·sd/√n. Without ``data_dir``: scikit-learn digits
(8x8, classes 0-6 to train, 7-9 held out, 3-way), a smoke-scale stand-in.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from . import Experiment, register
from .hypercleaning import curve_rows, estimator, outer_run, plot_curves
from .. import estimators
from ..estimators.base import Estimator
from ..meta import maml, merge_support_query
from ..models import convnet_apply, convnet_init, cross_entropy
from ..problem import BilevelProblem
from ..results import write_csv, write_markdown, write_summary
from ._paper import EXACT, FEWSHOT_OMNIGLOT_1SHOT

NAME = "fewshot"

DEFAULTS = dict(data_dir=None, ways=20, shots=1, size=14, filters=16, blocks=3, steps=10, inner_lr=0.4,
                meta_batch=5, outer_lr=1e-3, clip=None,
                methods=["fom", "recompute", "ufom", "adaptive-ufom", "reptile"], q=0.1, seeds=[0],
                budget_calls=200_000, outer_steps=None, eval_every=None, eval_calls=None, eval_tasks=1000,
                curve_tasks=200, resume=False, devices=None)

TINY = dict(filters=4, steps=2, meta_batch=2, budget_calls=60, eval_tasks=20, curve_tasks=8, eval_calls=30,
            methods=["fom", "reptile"])


def paper_figure(method: str, ways: int):
    """Paper 000 Table 2 (Omniglot 1-shot) test accuracy for ``method`` at ``ways``, or None."""
    return FEWSHOT_OMNIGLOT_1SHOT[ways].get("exact" if method in EXACT else method)


# --- data ------------------------------------------------------------------------------------
def load_splits(cfg: dict):
    """(meta-train, held-out) image arrays (classes, examples, h, w) as uint8 ink intensity 0-255."""
    if cfg["data_dir"] is None:
        from ..data import load_digits

        x, y = load_digits()
        per = min(np.bincount(y))
        imgs = np.stack([x[y == c][:per] for c in range(10)]).reshape(10, per, 8, 8)
        train, test = imgs[:7], imgs[7:]
    else:
        from ..data import load_omniglot

        train = load_omniglot(cfg["data_dir"], "background", int(cfg["size"])).images
        test = load_omniglot(cfg["data_dir"], "evaluation", int(cfg["size"])).images
    q = lambda a: np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)
    return q(train), q(test)


def make_sampler(images: np.ndarray, ways: int, shots: int):
    """key -> {"support": (x (m·K, h, w, 1), y), "query": (x (m, h, w, 1), y)} (the task convention of
    :mod:`ablo.meta`): a pure JAX task sampler."""
    n_cls, n_ex = images.shape[:2]
    if ways > n_cls or shots + 1 > n_ex:
        raise ValueError(f"ways must be <= {n_cls} classes and shots + 1 <= {n_ex} examples per class; "
                         f"got ways={ways}, shots={shots}")
    data = jnp.asarray(images)

    def sample(key):
        kc, ke = jax.random.split(key)
        cls = jax.random.choice(kc, n_cls, (ways,), replace=False)
        ex = jnp.argsort(jax.random.uniform(ke, (ways, n_ex)), axis=1)[:, : shots + 1]
        x = data[cls[:, None], ex].astype(jnp.result_type(float))[..., None] / 255.0  # (m, K+1, h, w, 1)
        labels = jnp.broadcast_to(jnp.arange(ways)[:, None], (ways, shots + 1))
        flat = lambda a: a.reshape((-1,) + a.shape[2:])
        return {"support": (flat(x[:, :shots]), flat(labels[:, :shots])), "query": (x[:, shots], labels[:, shots])}

    return sample


# --- model and methods ----------------------------------------------------------------------
def make_problem(steps: int, inner_lr: float) -> BilevelProblem:
    """MAML (:func:`ablo.meta.maml`): V(θ, T) = θ, L_in = CCE on D_tr, L_out = CCE on D_te, r SGD steps
    of the 4-block conv net :func:`ablo.models.convnet_apply`."""
    return maml(convnet_apply, cross_entropy, inner_lr, steps)


def make_estimator(name: str, cfg: dict) -> Estimator:
    if name == "reptile":
        return estimators.get("reptile", task_map=merge_support_query)
    if name == "ufom":
        return estimators.get("ufom", q=float(cfg["q"]))
    return estimator(name)


def make_eval(problem: BilevelProblem, sample, chunk: int = 200):
    """(θ, n_tasks, key) -> {test_acc, test_acc_ci95} in %: accuracy on D_te after the inner run, over
    n_tasks tasks drawn with fixed keys, evaluated ``chunk`` tasks per call of one compiled function."""

    def accuracy(theta, k):
        task = sample(k)
        phi = problem.optimizer.params(problem.run(theta, task))
        return jnp.mean(jnp.argmax(convnet_apply(phi, task["query"][0]), 1) == task["query"][1])

    # 25 tasks vmapped at a time within a chunk: bounded memory, one compiled function
    batch = jax.jit(lambda theta, keys: jax.lax.map(lambda k: accuracy(theta, k), keys, batch_size=25))

    def evaluate(theta, n_tasks: int, key):
        n = -(-n_tasks // chunk) * chunk
        acc = np.concatenate([np.asarray(batch(theta, ks))
                              for ks in jax.random.split(key, n).reshape(-1, chunk, *key.shape)])[:n_tasks]
        return {"test_acc": 100 * float(acc.mean()),
                "test_acc_ci95": float(100 * 1.96 * acc.std(ddof=1) / np.sqrt(n_tasks))}

    return evaluate


# --- experiment ------------------------------------------------------------------------------
def run(config: dict, out_dir: Path, progress) -> dict:
    import optax

    cfg = dict(config)
    if cfg["data_dir"] is None:
        cfg.update(ways=min(int(cfg["ways"]), 3), size=8)
    if cfg["budget_calls"] is None and cfg["outer_steps"] is None:
        raise ValueError("set budget_calls (function calls per method) or outer_steps")
    out_dir = Path(out_dir)
    train_imgs, test_imgs = load_splits(cfg)
    ways, shots = int(cfg["ways"]), int(cfg["shots"])
    sample_train = make_sampler(train_imgs, ways, shots)
    sample_test = make_sampler(test_imgs, ways, shots)
    problem = make_problem(int(cfg["steps"]), float(cfg["inner_lr"]))
    tx = optax.adam(float(cfg["outer_lr"]))
    if cfg["clip"] is not None:
        tx = optax.chain(optax.clip(float(cfg["clip"])), tx)
    rows, curves = [], []
    evaluate = make_eval(problem, sample_test, min(int(cfg["curve_tasks"]), int(cfg["eval_tasks"])))
    for seed in cfg["seeds"]:
        theta0 = convnet_init(jax.random.PRNGKey(seed), ways, train_imgs.shape[-1], filters=int(cfg["filters"]),
                              blocks=int(cfg["blocks"]))
        curve_eval = lambda th: evaluate(th, int(cfg["curve_tasks"]), jax.random.PRNGKey(7_000 + seed))
        for method in cfg["methods"]:
            est = make_estimator(method, cfg)
            run_cfg = {**cfg, "eval_every": _eval_every(cfg, est, problem)}
            res = outer_run(problem, est, tx, theta0, sample_train, run_cfg, key=jax.random.PRNGKey(seed),
                            eval_fn=curve_eval, checkpoint_dir=out_dir / "checkpoints" / f"{method}-seed{seed}",
                            progress=progress)
            rows.append({"method": method, "seed": seed, **evaluate(res.theta, int(cfg["eval_tasks"]), jax.random.PRNGKey(9_000 + seed)), "steps": int(res.steps),
                         "function_calls": float(res.function_calls), "seconds": float(res.seconds),
                         "mean_q": _mean_of(res.log, "q")})
            curves += curve_rows(res.log, method=method, seed=seed)
    write_csv(out_dir / "curves.csv", curves)
    plot_curves(curves, out_dir / "curves.png", x="function_calls", ys=["test_acc"],
                group=("method",), title=f"few-shot {shots}-shot {ways}-way ({'Omniglot' if cfg['data_dir'] else 'digits'})")
    _write_table(cfg, rows, out_dir)
    write_summary(out_dir, NAME, cfg, rows)
    return {"experiment": NAME, "config": cfg, "results": rows}


def _eval_every(cfg: dict, est: Estimator, problem: BilevelProblem) -> int:
    """Outer steps between curve points: about every ``eval_calls`` function calls (default budget/10),
    from the estimator's deterministic per-step cost (FOM part for the random-branch ones)."""
    r, n = problem.steps, int(cfg["meta_batch"])
    per_task = {"reptile": r, "recompute": r + 1 + r * (r - 1) // 2 + r + 1, "reverse": 2 * r + 2}.get(est.name, r + 2)
    every = cfg["eval_calls"] or (cfg["budget_calls"] or n * per_task * cfg["outer_steps"]) / 10
    return max(1, int(every // (n * per_task)))


def _mean_of(entries: list, key: str):
    """Mean of ``key`` over the entries that have it (None when none has)."""
    vals = [e[key] for e in entries if e.get(key) is not None]
    return float(np.mean(vals)) if vals else None


def _write_table(cfg: dict, rows: list, out_dir: Path) -> None:
    groups: dict = {}
    for r in rows:
        groups.setdefault(r["method"], []).append(r)
    table = []
    for method, rs in groups.items():
        acc = np.array([r["test_acc"] for r in rs])
        table.append({"method": method, "seeds": len(rs), "test_acc": float(acc.mean()),
                      "test_acc_ci95": float(np.mean([r["test_acc_ci95"] for r in rs])),
                      "seed_std": float(acc.std(ddof=1)) if len(rs) > 1 else None,
                      "function_calls": float(np.mean([r["function_calls"] for r in rs])),
                      "seconds": float(np.mean([r["seconds"] for r in rs])), "mean_q": _mean_of(rs, "mean_q"),
                      "paper_30way": paper_figure(method, 30), "paper_40way": paper_figure(method, 40)})
    data = ("Omniglot (background characters for meta-training, evaluation characters held out)" if cfg["data_dir"]
            else "scikit-learn digits (classes 0-6 meta-train, 7-9 held out), a smoke-scale stand-in")
    clip = "" if cfg["clip"] is None else f" with per-entry clipping at ±{cfg['clip']}"
    notes = (f"Data: {data}. {cfg['shots']}-shot {cfg['ways']}-way, images {cfg['size']}x{cfg['size']}, conv "
             f"{cfg['blocks']} x {cfg['filters']} filters (stride 2, batch norm, ReLU) + dense, "
             f"r = {cfg['steps']} inner SGD steps "
             f"(lr {cfg['inner_lr']}), meta-batch {cfg['meta_batch']}, outer Adam lr {cfg['outer_lr']}"
             f"{clip}, "
             f"UFOM q = {cfg['q']}, {cfg['budget_calls']} function calls per method and seed, seeds "
             f"{list(cfg['seeds'])}; test accuracy over {cfg['eval_tasks']} held-out tasks with a 95% interval.\n\n"
             "Paper 000 Table 2 (Omniglot 1-shot 30-way / 40-way, 28x28, 64 filters, paper's budget) is shown beside "
             "ours; ours is scaled down for two CPU cores (20 ways, 14x14 images with 3 conv blocks so the last "
             "batch norm still pools a 2x2 map, fewer filters, far fewer function calls), so "
             "compare orderings, not values. 'recompute' is the paper's memory-efficient exact estimator.")
    write_markdown(out_dir / "results.md", f"Few-shot classification ({cfg['shots']}-shot {cfg['ways']}-way)", table,
                   notes=notes)


register(Experiment(NAME, run, DEFAULTS, TINY,
                    "few-shot Omniglot, MAML form: FOM, exact, UFOM, Adaptive UFOM, Reptile at equal function calls "
                    "(000 Table 2)"))
