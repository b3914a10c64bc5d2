"""The problem of the ``stochastic-hypercleaning`` experiment (Ji et al. 2021 §A.2, Figure 4): MNIST (or digits)
with unit-norm rows, labels corrupted at rate p, and :func:`ablo.problems.hypercleaning.make_problem`
(linear) on tasks split into the parts the stochastic estimators draw from.

The ``stochastic-hypercleaning`` experiment's protocol:

A linear classifier φ = (W, b) is trained on n = 20,000 images whose labels are corrupted with
probability p; λ ∈ R^n weighs each training loss by σ(λ_i) (``ablo.problems.hypercleaning``):

    L_in(λ, φ)  = (1/n) Σ_i σ(λ_i) CE(W x_i + b, ỹ_i) + C_r ‖W‖²,   C_r = 0.001,
    L_out(λ, φ) = CE on 5,000 clean validation images,

λ_0 = 0, φ_0 = 0, outer Adam. The task is {"train": {"x", "y", "idx"}, "val": {"x_val",
"y_val"}}: the stochastic methods draw mini-batches (stocBiO: 50, BSA and TTSA: single samples,
as the paper) from its parts, the indices i travelling with their examples so σ(λ_i) can be
read; HOAG uses the whole data. ``methods`` are estimator specs. Compared by test loss and test
accuracy of each method's current inner iterate against running time (see ``_wallclock``),
for each corruption rate p.

Choices the paper leaves to a grid search that we did not run: T = 10 inner steps of size 1
(``inner_lr``; 0.1 for the single-sample BSA and TTSA, ``single_sample_inner_lr``, as one sample
per step of size 1 leaves a very noisy iterate), Adam step 0.1, η = 0.5, Q = N = 10 for every
method. TTSA's two step sizes decay on Hong et al.'s two time scales: inner β_k = 0.1 (k+1)^{−2/5},
outer Adam α_k = 0.1 (k+1)^{−3/5}. HOAG runs CG to Pedregosa's tolerance 1e-3 · 0.9^k.
Images are flattened and scaled to unit ℓ2 norm (so ∇²L_in ≼ ½ I + 2C_r I and step
size 1 and η = 0.5 are stable for every batch). Corruption: each training label independently,
with probability p, is replaced by one of the 9 other classes drawn uniformly. Without
``data_dir``: scikit-learn's digits (1,797 8x8 images: ``digits_train`` / ``digits_val``, the
rest for testing), and the paper's figure is not quoted.
Rows: method, p, seed, test_loss, test_acc, steps, seconds, function_calls, compile_seconds (HOAG
also tol and cg_cap_hits).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..curvature import check_step_size
from ..models import linear_init
from ..problem import BilevelProblem
from . import hypercleaning
from .newsgroups import seeded_split

SINGLE_SAMPLE = ("bsa", "ttsa")  # estimators (by name) whose inner step size is single_sample_inner_lr


def corrupt(y: np.ndarray, p: float, rng: np.random.Generator, classes: int = 10) -> np.ndarray:
    """Each label, with probability p, replaced by one of the other classes drawn uniformly."""
    flip = rng.random(len(y)) < p
    shift = rng.integers(1, classes, len(y))
    return np.where(flip, (y + shift) % classes, y).astype(np.int32)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def load(cfg, seed: int) -> tuple:
    """(x_train, y_train, x_val, y_val, x_test, y_test, description) with unit-norm rows."""
    if cfg.data_dir is None:
        from ..data import load_digits

        x, y = load_digits()
        n_tr, n_va = cfg.digits_train, cfg.digits_val
        tr, va, te = seeded_split(len(y), (n_tr, n_va, len(y) - n_tr - n_va), seed)
        desc = (f"scikit-learn digits (no data_dir; 8x8 images), not MNIST: {n_tr} train / {n_va} validation / "
                f"{len(te)} test")
        return unit_rows(x[tr]), y[tr], unit_rows(x[va]), y[va], unit_rows(x[te]), y[te], desc
    from ..data import load_mnist

    d = load_mnist(cfg.data_dir)
    x, y = d["train"]
    tr, va = seeded_split(len(y), (cfg.n_train, cfg.n_val), seed)
    desc = (f"{d['name']}: {len(tr)} train / {len(va)} validation (random, from the 60,000 "
            f"training images) / {len(d['test'][1])} test images")
    return unit_rows(x[tr]), y[tr], unit_rows(x[va]), y[va], unit_rows(d["test"][0]), d["test"][1], desc


def make_problem(inner_steps: int, inner_lr: float, l2: float, features: int) -> BilevelProblem:
    """:func:`ablo.problems.hypercleaning.make_problem` (linear, φ_0 = 0) on tasks split into the
    parts the stochastic estimators draw from: {"train": {"x", "y", "idx"}, "val": {"x_val", "y_val"}}."""
    flat = hypercleaning.make_problem(steps=inner_steps, inner_lr=inner_lr, l2=l2, phi0=linear_init(features, 10))
    merged = lambda task: {**task["train"], **task["val"]}
    return BilevelProblem(lambda lam, phi, task: flat.inner_loss(lam, phi, merged(task)),
                          lambda lam, phi, task: flat.outer_loss(lam, phi, merged(task)),
                          flat.optimizer, flat.steps, flat.init)


def prepare(cfg, seed: int, methods: dict) -> tuple:
    """Seed ``seed``'s data: ({inner lr: problem}, {p: task with labels corrupted at rate p}, test
    images, test labels, description); the inner step sizes the methods use are checked
    against 2/L on the first task."""
    x_tr, y_tr, x_va, y_va, x_te, y_te, description = load(cfg, seed)
    n, features = x_tr.shape
    problems = {lr: make_problem(cfg.inner_steps, lr, cfg.l2, features)
                for lr in (cfg.inner_lr, cfg.single_sample_inner_lr)}
    x, val = jnp.asarray(x_tr), {"x_val": jnp.asarray(x_va), "y_val": jnp.asarray(y_va)}
    noisy = lambda p: jnp.asarray(corrupt(y_tr, p, np.random.default_rng([seed, int(round(p * 1000))])))
    tasks = {p: {"train": {"x": x, "y": noisy(p), "idx": jnp.arange(n)}, "val": val} for p in cfg.corruptions}
    first = next(iter(tasks.values()))
    for single in {est.name in SINGLE_SAMPLE for est in methods.values()}:
        lr = cfg.single_sample_inner_lr if single else cfg.inner_lr
        check_step_size(problems[lr], jnp.zeros(n, jnp.float32), first, lr,
                        name="single_sample_inner_lr" if single else "inner_lr")
    return problems, tasks, jnp.asarray(x_te), jnp.asarray(y_te), description
