"""Stochastic data hypercleaning on MNIST (paper 004 §A.2, Figure 4): stocBiO against BSA, TTSA
and HOAG, test loss against running time.

A linear classifier φ = (W, b) is trained on n = 20,000 images whose labels are corrupted with
probability p; λ ∈ R^n weighs each training loss by σ(λ_i):

    L_in(λ, φ)  = (1/n) Σ_i σ(λ_i) CE(W x_i + b, ỹ_i) + C_r ‖W‖²,   C_r = 0.001,
    L_out(λ, φ) = CE on 5,000 clean validation images,

λ_0 = 0, φ_0 = 0, outer Adam. The stochastic methods see mini-batches (stocBiO: 50, BSA and
TTSA: single samples, as the paper) drawn by the estimators from the task's parts "train" (which
carries the example indices i, so σ(λ_i) can be read) and "val"; HOAG uses the whole data.
Compared by test loss and test accuracy of each method's current inner iterate against running
time (see ``_timed``), for each corruption rate p.

Choices the paper leaves to a grid search that we did not run: T = 10 inner steps of size 1
(``inner_lr``; 0.1 for the single-sample BSA and TTSA, ``single_inner_lr``, as one sample per
step of size 1 leaves a very noisy iterate), Adam step 0.1, η = 0.5, Q = N = 10 for every method. Images are flattened and scaled to unit
ℓ2 norm (so ∇²L_in ≼ ½ I + 2C_r I and step size 1 and η = 0.5 are stable for every batch).
Corruption: each training label independently, with probability p, is replaced by one of the 9
other classes drawn uniformly. Without ``data_dir``: scikit-learn's digits (1,797 8x8 images:
``digits_split`` train / validation, the rest for testing).
Rows: method, p, seed, test_loss, test_acc, steps, seconds, function_calls, samples,
warmup_seconds, diverged.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import Experiment, register
from ..models import accuracy, cross_entropy
from ._timed import curve_rows, plot_curves, seeded_split, timed_run
from .. import estimators
from ..inner import gd
from ..problem import BilevelProblem
from ..results import write_csv, write_markdown, write_summary

NAME = "stochastic-hypercleaning"

DEFAULTS = dict(methods=["stocbio", "bsa", "ttsa", "hoag"], corruptions=[0.1, 0.4], seeds=[0], data_dir=None,
                n_train=20_000, n_val=5_000, digits_split=[1000, 300], seconds=60.0, outer_steps=1_000_000,
                inner_steps=10, inner_lr=1.0, single_inner_lr=0.1, outer_lr=0.1, l2=1e-3, eta=0.5, Q=10, batch=50, single_batch=1,
                cg_steps=10, evals=30)

TINY = dict(digits_split=[200, 100], corruptions=[0.4], outer_steps=3, inner_steps=3, Q=3, cg_steps=3, batch=10,
            evals=2, seconds=30.0)

SINGLE = ("bsa", "ttsa")  # single-sample methods: inner step size single_inner_lr

PAPER_NOTE = ("Paper 004 Figure 4 (10 seeds, grid-searched step sizes; numbers only as plots): stocBiO reaches "
              "the lowest training and test loss fastest; the gap is larger for smaller p; TTSA converges slowly "
              "with large variance.")


def corrupt(y: np.ndarray, p: float, rng: np.random.Generator, classes: int = 10) -> np.ndarray:
    """Each label, with probability p, replaced by one of the other classes drawn uniformly."""
    flip = rng.random(len(y)) < p
    shift = rng.integers(1, classes, len(y))
    return np.where(flip, (y + shift) % classes, y).astype(np.int32)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def load(config, seed: int) -> tuple:
    """(x_train, y_train, x_val, y_val, x_test, y_test, description) with unit-norm rows."""
    if config["data_dir"] is None:
        from ..data import load_digits

        x, y = load_digits()
        n_tr, n_va = config["digits_split"]
        tr, va, te = seeded_split(len(y), (n_tr, n_va, len(y) - n_tr - n_va), seed)
        desc = (f"scikit-learn digits (no data_dir; 8x8 images): {n_tr} train / {n_va} validation / "
                f"{len(te)} test")
        return unit_rows(x[tr]), y[tr], unit_rows(x[va]), y[va], unit_rows(x[te]), y[te], desc
    from ..data import load_mnist

    d = load_mnist(config["data_dir"])
    x, y = d["train"]
    tr, va = seeded_split(len(y), (config["n_train"], config["n_val"]), seed)
    desc = (f"MNIST from {config['data_dir']}: {len(tr)} train / {len(va)} validation (random, from the 60,000 "
            f"training images) / {len(d['test'][1])} test images")
    return unit_rows(x[tr]), y[tr], unit_rows(x[va]), y[va], unit_rows(d["test"][0]), d["test"][1], desc


def make_problem(inner_steps: int, inner_lr: float, l2: float) -> BilevelProblem:
    """The problem above; task = {"train": (x, ỹ, i), "val": (x, y), "w0": φ_0}."""

    def logits(phi, x):
        return x @ phi["w"] + phi["b"]

    def inner_loss(lam, phi, task):
        x, y, idx = task["train"]
        z = logits(phi, x)
        ce = jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, y[:, None], axis=1)[:, 0]
        return jnp.mean(jax.nn.sigmoid(lam[idx]) * ce) + l2 * jnp.sum(phi["w"] ** 2)

    def outer_loss(lam, phi, task):
        x, y = task["val"]
        return cross_entropy(logits(phi, x), y)

    return BilevelProblem(inner_loss, outer_loss, gd(inner_lr), inner_steps, init=lambda lam, task: task["w0"])


def make_estimator(method: str, config):
    options = {"stocbio": dict(eta=config["eta"], Q=config["Q"], batch=config["batch"]),
               "bsa": dict(eta=config["eta"], N=config["Q"], batch=config["single_batch"]),
               "ttsa": dict(eta=config["eta"], N=config["Q"], batch=config["single_batch"]),
               "hoag": dict(maxiter=config["cg_steps"]),
               "aid-cg": dict(maxiter=config["cg_steps"])}
    return estimators.get(method, **options.get(method, {}))


def run(config: dict, out_dir: Path, progress) -> dict:
    config = {**DEFAULTS, **config}
    for p in config["corruptions"]:
        if not 0 <= p <= 1:
            raise ValueError(f"corruptions must lie in [0, 1]; got {p!r}")
    for key in ("seconds", "inner_lr", "single_inner_lr", "outer_lr", "eta"):
        if not config[key] > 0:
            raise ValueError(f"{key} must be > 0; got {config[key]!r}")
    methods = {m: make_estimator(m, config) for m in config["methods"]}
    problems = {m: make_problem(config["inner_steps"], config["single_inner_lr" if m in SINGLE else "inner_lr"],
                                config["l2"]) for m in methods}
    rows, curves = [], []
    total = len(methods) * len(config["seeds"]) * len(config["corruptions"])
    with progress(f"{NAME}: methods x p x seeds", total) as advance:
        for seed in config["seeds"]:
            x_tr, y_tr, x_va, y_va, x_te, y_te, description = load(config, seed)
            x_te, y_te = jnp.asarray(x_te), jnp.asarray(y_te)
            logits = lambda phi: x_te @ phi["w"] + phi["b"]
            evaluate = jax.jit(lambda lam, phi: {"test_loss": cross_entropy(logits(phi), y_te),
                                                 "test_acc": accuracy(logits(phi), y_te)})
            for p in config["corruptions"]:
                noisy = corrupt(y_tr, p, np.random.default_rng([seed, int(round(p * 1000))]))
                n, features = x_tr.shape
                task = {"train": (jnp.asarray(x_tr), jnp.asarray(noisy), jnp.arange(n)),
                        "val": (jnp.asarray(x_va), jnp.asarray(y_va)),
                        "w0": {"w": jnp.zeros((features, 10), jnp.float32), "b": jnp.zeros(10, jnp.float32)}}
                for name, est in methods.items():
                    r = timed_run(problems[name], est, optax.adam(config["outer_lr"]), jnp.zeros(n, jnp.float32), task,
                                  key=jax.random.PRNGKey(seed), seconds=config["seconds"],
                                  steps=config["outer_steps"], eval_fn=evaluate, evals=config["evals"])
                    last = r.curve[-1]
                    rows.append(dict(method=name, p=p, seed=seed, test_loss=last["test_loss"],
                                     test_acc=last["test_acc"], steps=r.steps, seconds=r.seconds,
                                     function_calls=r.function_calls, samples=r.samples,
                                     warmup_seconds=r.warmup_seconds, diverged=r.diverged))
                    curves.append(dict(method=name, p=p, seed=seed, points=r.curve))
                    advance(1)
    out_dir = Path(out_dir)
    write_csv(out_dir / "curves.csv", curve_rows(curves, ("method", "p", "seed")))
    for p in config["corruptions"]:
        plot_curves([c for c in curves if c["p"] == p], out_dir / f"test_vs_time_p{p:g}.png",
                    f"Hypercleaning, corruption p = {p:g} (paper 004 Fig. 4)")
    notes = (f"Data: {description}; labels corrupted with probability p.\n\nProtocol: T = {config['inner_steps']} "
             f"warm-started inner steps (lr {config['inner_lr']}; BSA/TTSA {config['single_inner_lr']}), outer Adam (lr {config['outer_lr']}), C_r = "
             f"{config['l2']}, eta = {config['eta']}, Q = N = {config['Q']}, batches: stocBiO {config['batch']}, "
             f"BSA/TTSA {config['single_batch']}, HOAG the whole data; budget {config['seconds']} s of outer-step "
             "time per run (compilation and evaluation excluded). test_loss/test_acc: each method's current inner "
             f"iterate on the test set.\n\n{PAPER_NOTE}\n\nCurves: curves.csv; plots: test_vs_time_p*.png.")
    write_markdown(out_dir / "results.md", "Stochastic data hypercleaning (paper 004 §A.2)", rows,
                   ["method", "p", "seed", "test_loss", "test_acc", "steps", "seconds", "function_calls", "samples",
                    "diverged"], notes)
    write_summary(out_dir, NAME, config, rows)
    return {"experiment": NAME, "config": config, "results": rows}


register(Experiment(NAME, run, DEFAULTS, TINY, "MNIST hypercleaning, 20,000 images, p = 0.1 / 0.4: stocBiO vs BSA, "
                    "TTSA, HOAG, test loss against time (004 §A.2, Fig. 4)"))
