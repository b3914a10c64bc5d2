"""One-shot classification with a learned hyper-representation (Shaban et al. 2019 §4.3, App. G.3, Table 4;
Ji et al. 2021 §5.2's shared-embedding meta-learning).

Omniglot's 1,623 characters (background and evaluation sets pooled) are split at random into
1200 meta-training, 100 meta-validation and 323 meta-test characters (disjoint). A task is
5-way 1-shot: S = one drawing of each of 5 characters, Q = 15 other drawings of each.

Network (Shaban et al. 2019, Fig. 8): conv blocks [3x3 conv, ``filters`` channels, 2x2 max-pool, batch norm
(the batch's statistics, as MAML), ReLU]; blocks 1-2 are the hyper-representation λ (part of θ,
frozen in the inner problem), blocks 3-4 and the dense layer are w = (w_3, w_4, w_5), fine-tuned
per task by r = T steps of GD with step γ from w_0 = c:

    g_S(w, λ) = Σ_{(x,y)∈S} CE(nn(x; w, λ), y) + Σ_j ρ_j ‖w_j − c_j‖²,   ρ_j = softplus(ν_j),
    f(λ) = mean_{(x,y)∈Q} CE(nn(x; ŵ, λ), y),   θ = {λ: "body", c: "centre", ν: "nu"}.

G.3 does not say where the inner run starts; we start at the centres (V(θ) = c), so c is both
the start and the regulariser's centre. f depends on λ directly (∇_λ f ≠ 0). γ is fixed here
(Shaban et al. 2019 also learns it).

Two comparisons, each on the same θ_0 and the same meta-batches (seeded):

1. Table 4: K-RMD (``truncated-K``) for several K and full RMD at an equal number of
   hyper-iterations (and "short horizon": full RMD with T = 1); accuracy, seconds per
   hyper-iteration (compilation excluded) and the XLA temporary memory of one hypergradient
   (``jax.jit(estimate).lower(...).compile().memory_analysis().temp_size_in_bytes``, one task).
2. Equal function calls (Likhosherstov et al. 2021 §5 counting): ITD-BiO (``itd-bio``: reverse through the
   inner loop warm-started at the previous outer step's iterate, Ji et al. 2021, Alg. 1, the meta-batch's
   task iterates averaged),
   AID-BiO (CG), FOM, UFOM, Adaptive UFOM on this problem, and ANIL (Raghu et al. 2019; 004
   §5.2): the same network with blocks 1-4 in θ and only the dense layer adapted from
   φ_0 = θ's head, without regulariser, exact reverse hypergradient.

Accuracy: mean over held-out tasks from the test characters of the query accuracy after the
inner run, ± 1.96·sd/√n. Learning curves are evaluated on the first ``curve_tasks`` tasks of the
table's evaluation set. Without ``data_dir`` a generated Omniglot-shaped set stands in (random
character prototypes with per-drawing noise), a smoke stand-in only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import Experiment, RunContext, register
from ._episodes import episode_sampler
from .config import ConfigError, ExperimentConfig, option
from .. import estimators, outer
from ..inner import gd
from ..models import batch_norm, cross_entropy
from ..problem import BilevelProblem
from ..results import axis_label, figure_legend, natural_key, save_figure, write_csv, write_markdown, write_summary

NAME = "hyper-representation"
N_CHARACTERS = 1623  # Omniglot: 964 background + 659 evaluation characters
DRAWINGS = 20
BLOCKS = 4  # conv blocks; + 1 dense layer = the 5 layers of Shaban et al. 2019, Fig. 8
FROZEN = 2  # blocks in the hyper-representation λ

#: Shaban et al. 2019 Table 4 (Omniglot 5-way 1-shot, T = 50): (method, accuracy %, hyper-iterations, sec/iter).
PAPER_TABLE4 = (("1-RMD", 95.6, "5K", 0.4), ("10-RMD", 96.3, "5K", 0.7), ("25-RMD", 96.1, "5K", 1.3),
                ("Full RMD", 95.8, "5K", 2.2), ("1-RMD", 97.7, "15K", 0.4), ("10-RMD", 97.8, "15K", 0.7),
                ("Short horizon", 96.6, "15K", 0.1))


@dataclass(frozen=True)
class Config(ExperimentConfig):
    DATASET = "omniglot"  # data_dir defaults to the fetched omniglot (config.build)
    data_dir: Optional[str] = option(None, "Omniglot folder (images_*.npz or PNG folders); none = generated stand-in")
    size: int = option(14, "image side after area resampling (paper: 28)", low=4, high=105)
    filters: int = option(16, "filters of every conv layer (paper: 64)", low=1, high=256)
    split: tuple[int, ...] = option((1200, 100, 323), "train / validation / test characters (disjoint)",
                                    low=1, min_len=3)
    split_seed: int = option(0, "seed of the random character split", low=0)
    ways: int = option(5, "classes per task", low=2, high=100)
    shots: int = option(1, "training drawings per class (S)", low=1, high=19)
    queries: int = option(15, "validation drawings per class (Q)", low=1, high=19)
    steps: int = option(10, "inner GD steps T (paper: 50)", low=1, high=1000)
    inner_lr: float = option(0.1, "inner GD step γ on the summed support loss (fixed here; Shaban et al. 2019 learns it)",
                             low=0, low_open=True)
    rho0: float = option(0.01, "initial ρ_j = softplus(ν_j) of every adapted layer", low=0, low_open=True)
    adapted: int = option(BLOCKS + 1 - FROZEN, "layers adapted in the inner problem, counted from the top: 3 = conv "
                          "blocks 3-4 + dense (Shaban et al. 2019), 1 = the dense layer only (Ji et al. 2021 §5.1: "
                          "strongly convex for ρ > 0)", low=1, high=BLOCKS + 1)
    learn_rho: bool = option(True, "ρ_j in θ (Shaban et al. 2019 learns it); false = fixed at rho0 (Ji et al. 2021's "
                             "fixed ℓ2 weight)")
    outer_lr: float = option(3e-3, "outer Adam step size", low=0, low_open=True)
    meta_batch: int = option(4, "tasks per hyper-iteration", low=1, high=256)
    table_methods: tuple[str, ...] = option(("truncated-1", "truncated-5", "reverse"),
                                            "Table 4 methods at equal hyper-iterations (K-RMD as truncated-K; "
                                            "reverse = full RMD)", estimators=True)
    short_horizon: bool = option(True, "add Table 4's short horizon: full RMD with T = 1")
    hyper_iterations: int = option(100, "hyper-iterations of each Table 4 method (paper: 5000)", low=1)
    methods: tuple[str, ...] = option(("itd-bio", "aid-cg", "fom", "ufom", "adaptive-ufom"),
                                      "methods at equal function calls (itd-bio: Ji et al. 2021's ITD-BiO, warm-started)",
                                      estimators=True)
    anil: bool = option(True, "add ANIL (only the dense layer adapted, exact hypergradient) at equal calls")
    maml: bool = option(False, "add MAML (every layer adapted from θ, no regulariser, exact hypergradient) at equal "
                        "calls")
    budget_calls: float = option(10_000, "function calls (gradients + HVPs + JVPs) per equal-calls method",
                                 low=0, low_open=True)
    eval_tasks: int = option(300, "test tasks for the table (paper: 120)", low=2)
    curve_tasks: int = option(60, "of those, the first N evaluate the learning curves", low=2)
    curve_points: int = option(5, "curve evaluations per run", low=1, high=1000)
    seed: int = option(0, "seed of θ_0, the meta-batches and the estimators' keys", low=0)

    def validate(self):
        if len(self.split) != 3:
            raise ConfigError(f"split: give 3 numbers (train, validation, test characters); got {list(self.split)!r}")
        if self.shots + self.queries > DRAWINGS:
            raise ConfigError(f"shots + queries must be at most {DRAWINGS} (drawings per character); got "
                              f"{self.shots} + {self.queries}")
        if min(self.split) < self.ways:
            raise ConfigError(f"split: every part needs at least ways = {self.ways} characters; "
                              f"got {list(self.split)!r}")
        if self.curve_tasks > self.eval_tasks:
            raise ConfigError(f"curve_tasks ({self.curve_tasks}) must be at most eval_tasks ({self.eval_tasks}): the "
                              "curves use the first curve_tasks of the table's tasks")
        if not (self.table_methods or self.methods or self.anil or self.maml or self.short_horizon):
            raise ConfigError("nothing to run: give table_methods or methods, or set anil, maml or short_horizon")
        problem = make_problem(self)
        for key in ("table_methods", "methods"):
            for spec in getattr(self, key):
                try:
                    estimators.parse(spec).check(problem)
                except ValueError as e:
                    raise ConfigError(f"{key}: {spec}: {e}") from None


TINY = dict(size=8, filters=4, steps=3, hyper_iterations=3, table_methods=("truncated-1",), short_horizon=False,
            methods=("fom",), anil=False, budget_calls=100, eval_tasks=12, curve_tasks=6, curve_points=2)


# --- data ------------------------------------------------------------------------------------
def split_characters(n: int, sizes, seed: int) -> tuple:
    """(train, validation, test) character indices: a random permutation of range(n) cut into
    ``sizes`` (which must sum to n), each part sorted. ValueError naming ``split`` otherwise."""
    sizes = tuple(int(s) for s in sizes)
    if sum(sizes) != n or min(sizes) < 1:
        raise ValueError(f"split: the parts must be >= 1 and sum to the {n} characters available; got {list(sizes)}")
    perm = np.random.default_rng(seed).permutation(n)
    cuts = np.cumsum(sizes)[:-1]
    return tuple(np.sort(part) for part in np.split(perm, cuts))


def synthetic_omniglot(size: int, seed: int = 0, n: int = N_CHARACTERS, drawings: int = DRAWINGS) -> np.ndarray:
    """A generated Omniglot-shaped stand-in, (n, drawings, size, size) uint8 ink: each character a
    random sparse binary prototype, each drawing it with 10% of its pixels flipped."""
    rng = np.random.default_rng(seed)
    proto = rng.random((n, 1, size, size)) < 0.25
    flips = rng.random((n, drawings, size, size)) < 0.1
    return (np.logical_xor(proto, flips) * 255).astype(np.uint8)


def load_characters(cfg: Config) -> np.ndarray:
    """All characters, (1623, 20, size, size) uint8 ink 0-255: Omniglot's background then evaluation
    set from ``data_dir``, or :func:`synthetic_omniglot` when it is None."""
    if cfg.data_dir is None:
        return synthetic_omniglot(cfg.size, cfg.split_seed)
    from ..data import load_omniglot

    parts = [load_omniglot(cfg.data_dir, split, cfg.size).images for split in ("background", "evaluation")]
    return np.round(np.clip(np.concatenate(parts), 0, 1) * 255).astype(np.uint8)


# --- network ---------------------------------------------------------------------------------
def _block_init(key, c_in: int, filters: int) -> dict:
    return {"w": jax.random.normal(key, (3, 3, c_in, filters)) * jnp.sqrt(2.0 / (9 * c_in)),
            "scale": jnp.ones(filters), "offset": jnp.zeros(filters)}


def conv_block(p: dict, x: jax.Array) -> jax.Array:
    """3x3 conv (stride 1, SAME) → 2x2 max-pool (SAME; skipped once the map is 2x2 or smaller, so
    the last batch norm never pools fewer than 4 positions) → batch norm → ReLU (Shaban et al. 2019, Fig. 8)."""
    x = jax.lax.conv_general_dilated(x, p["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if x.shape[1] > 2:
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "SAME")
    return jax.nn.relu(batch_norm(x, p["scale"], p["offset"]))


def _map_side(size: int) -> int:
    for _ in range(BLOCKS):
        size = -(-size // 2) if size > 2 else size
    return size


def init_layers(key, cfg: Config) -> list:
    """The 5 layers of Shaban et al. 2019, Fig. 8: 4 conv blocks and a dense layer to ``ways`` logits."""
    keys = jax.random.split(key, BLOCKS + 1)
    blocks = [_block_init(k, 1 if i == 0 else cfg.filters, cfg.filters) for i, k in enumerate(keys[:-1])]
    flat = _map_side(cfg.size) ** 2 * cfg.filters
    dense = {"w": jax.random.normal(keys[-1], (flat, cfg.ways)) * jnp.sqrt(1.0 / flat), "b": jnp.zeros(cfg.ways)}
    return blocks + [dense]


def logits(theta: dict, phi: list, x: jax.Array) -> jax.Array:
    """nn(x; φ, θ): θ["body"]'s conv blocks, then φ's conv blocks and its last (dense) layer."""
    for p in theta["body"] + phi[:-1]:
        x = conv_block(p, x)
    x = x.reshape(x.shape[0], -1)
    return x @ phi[-1]["w"] + phi[-1]["b"]


def init_theta(key, cfg: Config, frozen: Optional[int] = None, regularised: bool = True) -> dict:
    """θ_0 = {"body": the first ``frozen`` layers (default: all but the ``cfg.adapted`` top ones), "centre":
    the others (w_0 = c), "nu": ν_j with softplus(ν_j) = rho0 per adapted layer (only when ``regularised``)}."""
    layers = init_layers(key, cfg)
    frozen = len(layers) - cfg.adapted if frozen is None else frozen
    theta = {"body": layers[:frozen], "centre": layers[frozen:]}
    if regularised:
        nu = math.log(math.expm1(cfg.rho0))  # softplus⁻¹(ρ_0)
        theta["nu"] = jnp.full(len(layers) - frozen, nu)
    return theta


def _sq_dist(a, b) -> jax.Array:
    return sum(jnp.sum((x - y) ** 2) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def make_problem(cfg: Config, steps: Optional[int] = None, regularised: bool = True) -> BilevelProblem:
    """The bilevel problem of Shaban et al. 2019, §4.3 (module docstring) with r = ``steps`` (default cfg.steps):
    L_in = Σ_S CE + Σ_j softplus(ν_j)‖w_j − c_j‖² (no regulariser when not ``regularised``: ANIL, MAML;
    ν a constant when not ``cfg.learn_rho``), L_out = mean_Q CE, φ_0 = V(θ) = θ["centre"], GD with step
    γ = cfg.inner_lr."""

    def inner_loss(theta, phi, task):
        x, y = task["support"]
        loss = cross_entropy(logits(theta, phi, x), y) * y.shape[0]
        if regularised:
            rho = jax.nn.softplus(theta["nu"] if cfg.learn_rho else jax.lax.stop_gradient(theta["nu"]))
            loss = loss + sum(rho[j] * _sq_dist(w, c) for j, (w, c) in enumerate(zip(phi, theta["centre"])))
        return loss

    def outer_loss(theta, phi, task):
        x, y = task["query"]
        return cross_entropy(logits(theta, phi, x), y)

    return BilevelProblem(inner_loss, outer_loss, gd(cfg.inner_lr), cfg.steps if steps is None else steps,
                          init=lambda theta, task: theta["centre"])


# --- evaluation and measurement ----------------------------------------------------------------
def make_evaluator(problem: BilevelProblem, sample, chunk: int):
    """(θ, keys) -> per-task query accuracy after the inner run (numpy, len(keys)); keys are
    evaluated ``chunk`` at a time by one compiled function (the last chunk padded)."""

    def accuracy(theta, key):
        task = sample(key)
        phi = problem.optimizer.params(problem.run(theta, task))
        x, y = task["query"]
        return jnp.mean(jnp.argmax(logits(theta, phi, x), -1) == y)

    batch = jax.jit(lambda theta, keys: jax.lax.map(lambda k: accuracy(theta, k), keys, batch_size=min(chunk, 25)))

    def evaluate(theta, keys) -> np.ndarray:
        n = len(keys)
        padded = jnp.concatenate([keys, jnp.repeat(keys[-1:], -n % chunk, axis=0)])
        return np.concatenate([np.asarray(batch(theta, ks)) for ks in padded.reshape(-1, chunk, *keys.shape[1:])])[:n]

    return evaluate


def mean_ci(acc: np.ndarray) -> tuple:
    """(mean, 95% normal half-width 1.96·sd/√n) in %."""
    return 100 * float(acc.mean()), 100 * 1.96 * float(acc.std(ddof=1)) / math.sqrt(len(acc))


def hypergradient_memory(problem, estimator, theta, task) -> int:
    """XLA temporary bytes of one hypergradient (one task), from the compiled executable."""
    key = jax.random.PRNGKey(0)
    state = estimator.init(problem, theta, task)
    f = jax.jit(lambda th, t, k: estimator.estimate(problem, th, t, state, k)[0])
    return int(f.lower(theta, task, key).compile().memory_analysis().temp_size_in_bytes)


# --- experiment ------------------------------------------------------------------------------
def display_name(spec: str, steps: int) -> str:
    """A method's name in tables and legends (001/Ji et al. 2021's names where they have one)."""
    est = estimators.parse(spec)
    if est.name == "truncated":
        return "Full RMD (T-RMD)" if est.K == steps else f"{est.K}-RMD"
    return {"reverse": "Full RMD", "itd-bio": "ITD-BiO", "aid-cg": "AID-BiO (CG)", "aid-bio": "AID-BiO",
            "fom": "FOM", "ufom": "UFOM", "adaptive-ufom": "Adaptive UFOM"}.get(est.name, spec)


@dataclass(frozen=True)
class Run:
    """One training run: its part, spec, display name, problem, θ_0 and budget."""

    part: str
    spec: str
    name: str
    problem: BilevelProblem
    theta0: dict
    budget: outer.Budget


def plan(cfg: Config) -> list:
    """The runs, in order: Table 4's at equal hyper-iterations, then the equal-calls comparison."""
    key = jax.random.PRNGKey(cfg.seed)
    problem, theta0 = make_problem(cfg), init_theta(key, cfg)
    iters, calls = outer.Budget(steps=cfg.hyper_iterations), outer.Budget(function_calls=cfg.budget_calls)
    runs = [Run("table4", s, display_name(s, cfg.steps), problem, theta0, iters) for s in cfg.table_methods]
    if cfg.short_horizon:
        runs.append(Run("table4", "reverse", "Short horizon (T = 1)", make_problem(cfg, steps=1), theta0, iters))
    for s in cfg.methods:
        name = display_name(s, cfg.steps)
        runs.append(Run("calls", s, "ITD-BiO (reverse)" if name == "Full RMD" else name, problem, theta0, calls))
    if cfg.anil:
        runs.append(Run("calls", "reverse", "ANIL", make_problem(cfg, regularised=False),
                        init_theta(key, cfg, frozen=BLOCKS, regularised=False), calls))
    if cfg.maml:
        runs.append(Run("calls", "reverse", "MAML", make_problem(cfg, regularised=False),
                        init_theta(key, cfg, frozen=0, regularised=False), calls))
    return runs


def run(cfg: Config, ctx: RunContext) -> dict:
    out_dir = ctx.out
    images = load_characters(cfg)
    train, val, test = split_characters(images.shape[0], cfg.split, cfg.split_seed)
    sample = {name: episode_sampler(images[idx], cfg.ways, cfg.shots, cfg.queries)
              for name, idx in (("train", train), ("val", val), ("test", test))}
    test_keys = jax.random.split(jax.random.PRNGKey(10_000 + cfg.seed), cfg.eval_tasks)
    val_keys = jax.random.split(jax.random.PRNGKey(20_000 + cfg.seed), cfg.eval_tasks)
    curve_keys = test_keys[: cfg.curve_tasks]
    tx = optax.adam(cfg.outer_lr)
    evaluators: dict = {}
    rows, curves = [], []
    for r in plan(cfg):
        label = f"{r.part}/{r.name}"
        if id(r.problem) not in evaluators:  # one compiled evaluator per problem and split
            evaluators[id(r.problem)] = {s: make_evaluator(r.problem, sample[s], cfg.curve_tasks)
                                         for s in ("test", "val")}
        ev = evaluators[id(r.problem)]
        est = estimators.parse(r.spec)
        curve = lambda theta: {"test_acc": mean_ci(ev["test"](theta, curve_keys))[0]}
        every = (dict(eval_every=max(1, cfg.hyper_iterations // cfg.curve_points)) if r.part == "table4"
                 else dict(eval_every_calls=cfg.budget_calls / cfg.curve_points))
        res = outer.run(r.problem, est, tx, r.theta0, sample["train"], key=jax.random.PRNGKey(cfg.seed),
                        budget=r.budget, meta_batch=cfg.meta_batch, eval_fn=curve, **every,
                        **ctx.outer_options(label))
        acc, ci = mean_ci(ev["test"](res.theta, test_keys))
        rows.append({"part": r.part, "method": r.name, "spec": r.spec, "T": r.problem.steps,
                     "K": getattr(est, "K", None), "hyper_iterations": res.steps,
                     "function_calls": res.function_calls, "test_acc": acc, "test_acc_ci95": ci,
                     "val_acc": mean_ci(ev["val"](res.theta, val_keys))[0],
                     "sec_per_iter": res.seconds / max(res.steps, 1),
                     "memory_mb": (hypergradient_memory(r.problem, est, r.theta0,
                                                        sample["train"](jax.random.PRNGKey(0))) / 2 ** 20
                                   if r.part == "table4" else None),
                     "seconds": res.seconds, "compile_seconds": res.compile_seconds,
                     "solver_residual_mean": _mean_of(res.log, "solver_residual")})
        start = mean_ci(ev["test"](r.theta0, curve_keys))[0]
        curves.append({"part": r.part, "method": r.name, "hyper_iterations": 0, "function_calls": 0.0,
                       "seconds": 0.0, "test_acc": start})
        curves += [{"part": r.part, "method": r.name, "hyper_iterations": e["step"],
                    "function_calls": e["function_calls"], "seconds": e["seconds"], "test_acc": e["test_acc"]}
                   for e in res.log if "test_acc" in e]
    write_csv(out_dir / "results.csv", rows)
    write_csv(out_dir / "curves.csv", curves)
    plot_curves(curves, out_dir / "curves.png", cfg)
    cols = ["part", "method", "T", "K", "hyper_iterations", "function_calls", "test_acc", "test_acc_ci95", "val_acc",
            "sec_per_iter", "memory_mb"]
    write_markdown(out_dir / "results.md", "Hyper-representation, Omniglot 5-way 1-shot (Shaban et al. 2019, §4.3, Ji et al. 2021, §5.2)", rows,
                   cols, notes(cfg, len(train), len(val), len(test)))
    summary = write_summary(out_dir, NAME, {**cfg.as_dict(), "characters": {"train": len(train), "validation": len(val),
                                                                             "test": len(test)}}, rows)
    return json.loads(summary.read_text())


def _mean_of(log: list, key: str):
    """Mean of ``key`` over the log entries that have it (None when none has)."""
    vals = [e[key] for e in log if e.get(key) is not None]
    return float(np.mean(vals)) if vals else None


def notes(cfg: Config, n_train: int, n_val: int, n_test: int) -> str:
    """results.md's text below the table: what ran, against the paper's protocol."""
    smoke = ("**Smoke run (--tiny or generated data): its numbers prove nothing**; it only shows that every "
             "part runs and writes its files.\n\n" if cfg.data_dir is None or cfg.hyper_iterations < 50 else "")
    data = ("Omniglot (background + evaluation characters pooled)" if cfg.data_dir else
            "a generated Omniglot-shaped stand-in (random prototypes, 10% pixel noise), not Omniglot")
    paper = "\n".join(f"| {m} | {a} | {i} | {s} |" for m, a, i, s in PAPER_TABLE4)
    return (f"{smoke}Data: {data}; characters split at random (seed {cfg.split_seed}) into {n_train} train / "
            f"{n_val} validation / {n_test} test, disjoint. Tasks: {cfg.ways}-way {cfg.shots}-shot, {cfg.queries} "
            f"queries per class; meta-batch {cfg.meta_batch}; outer Adam lr {cfg.outer_lr}.\n\n"
            f"Changes against Shaban et al. 2019's protocol (G.3): images {cfg.size}x{cfg.size} (Shaban et al. state no size; "
            f"Finn et al.'s is 28x28), {cfg.filters} "
            f"filters per conv layer (paper 64), T = {cfg.steps} inner GD steps (paper 50) with fixed γ = "
            f"{cfg.inner_lr} (paper learns γ), {cfg.hyper_iterations} hyper-iterations per Table 4 method (paper 5000 "
            f"and 15000), ρ_j = softplus(ν_j) from {cfg.rho0}; the inner run starts at the centres c (G.3 does not "
            "say); max-pooling stops once a map is 2x2. Outer step size not tuned on the validation characters "
            "(val_acc is reported, not used).\n\n"
            f"test_acc: mean query accuracy over {cfg.eval_tasks} test-character tasks (paper: 120) ± 1.96·sd/√n. "
            f"Curves (curves.png): test accuracy on the first {cfg.curve_tasks} of those tasks. sec_per_iter excludes "
            "compilation and evaluation, on a 2-core CPU shared with other jobs; memory_mb (Table 4 part only) is "
            "XLA's temporary buffer size of one compiled hypergradient (one task). Equal-calls part: "
            f"{cfg.budget_calls:g} function calls each (gradients + HVPs + JVPs as ablo counts them; Likhosherstov et al. 2021 §5 "
            "counts gradients and HVPs). 'ITD-BiO' is Ji et al. 2021's "
            "(itd-bio): exact reverse mode through the inner loop warm-started at the previous outer step's iterate "
            "(the meta-batch's task iterates averaged; 'ITD-BiO (reverse)' would be reverse without the warm start); "
            "ANIL adapts only the dense layer from θ's head, without regulariser.\n\n"
            "Shaban et al. 2019 Table 4 (Omniglot, T = 50):\n\n| Method | Accuracy | iter. | Sec/iter. |\n|---|---|---|---|\n"
            f"{paper}\n")


def plot_curves(curves: list, path: Path, cfg: Config) -> None:
    """Test accuracy against hyper-iterations (Table 4 part, K in numeric order), function calls and
    seconds of outer-step time (equal-calls part; Ji et al. 2021 Figs. 1 and 5 plot against running time),
    one figure legend for every line; the caption says the curves use the first ``curve_tasks`` of the
    table's ``eval_tasks`` test tasks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = (("table4", "hyper_iterations", axis_label("hyper_iterations"), "K-RMD at equal hyper-iterations (Table 4)",
               "o-"),
              ("calls", "function_calls", axis_label("function_calls"), "equal function calls", "s--"),
              ("calls", "seconds", "outer-step seconds (no compilation, no evaluation)", "the same runs against time",
               "s--"))
    palette = plt.get_cmap("tab20").colors  # one color per line across the panels
    color = {m: palette[i % len(palette)] for i, m in enumerate(dict.fromkeys((c["part"], c["method"]) for c in curves))}
    for i, (ax, (part, x, xlabel, title, style)) in enumerate(zip(axes, panels)):
        methods = list(dict.fromkeys(c["method"] for c in curves if c["part"] == part))
        for method in sorted(methods, key=natural_key) if part == "table4" else methods:  # 1-, 5-, 25-RMD, Full
            pts = [c for c in curves if c["part"] == part and c["method"] == method and c.get(x) is not None]
            ax.plot([c[x] for c in pts], [c["test_acc"] for c in pts], style, ms=3, color=color[part, method],
                    label=f"{'A' if part == 'table4' else 'B'}: {method}" if i < 2 else None)
        ax.set(xlabel=xlabel, ylabel=f"test accuracy (%), {cfg.curve_tasks} test tasks", title=title)
    fig.suptitle(f"Omniglot {cfg.ways}-way {cfg.shots}-shot, hyper-representation (test characters)\n"
                 f"curves: the first {cfg.curve_tasks} of the table's {cfg.eval_tasks} test tasks, so their last "
                 "points differ from the table", fontsize=10)
    figure_legend(fig, ncol=5)
    save_figure(fig, path)


register(Experiment(NAME, run, Config, TINY,
                    "one-shot Omniglot with a learned hyper-representation (Shaban et al. 2019, §4.3 Table 4; Ji et al. 2021, §5.2): K-RMD at "
                    "equal hyper-iterations, ITD/AID-BiO, FOM, UFOM, Adaptive UFOM, ANIL at equal function calls"))
