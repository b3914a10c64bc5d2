"""The one-shot hyper-representation problem of the ``hyper-representation`` experiment (Shaban et al. 2019
§4.3, App. G.3, Fig. 8): Omniglot characters (or a generated stand-in) split at random, the conv
net whose first blocks are the hyper-representation λ and whose last blocks and dense layer are
fine-tuned per task from learned centres with learned ρ_j = softplus(ν_j), its evaluator and the
memory of one hypergradient. ``cfg`` is the experiment's config.

The ``hyper-representation`` experiment's protocol:

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

Ji et al. 2021 §5.2's setting, in which AID-BiO's assumptions hold: ``adapted`` = 1 (w = the dense
layer alone, λ = all four conv blocks, their embedding) and ``learn_rho`` = false (ρ fixed at
``rho0``, no ν in θ). Then g_S is convex cross-entropy of a linear map plus ρ‖w − c‖², so it is
2ρ-strongly convex in w for every θ, y*(θ) is unique and AID's implicit formula is the gradient of
f(λ, y*(λ)). GD with γ < 2/L (L the largest Hessian eigenvalue) converges to y* linearly, by a
factor no better than 1 − 2γρ per step.

Two comparisons, each on the same θ_0 and the same meta-batches (seeded):

1. Table 4: K-RMD (``truncated-K``) for several K and full RMD at an equal number of
   hyper-iterations (and "short horizon": full RMD with T = 1); accuracy, seconds per
   hyper-iteration (compilation excluded) and the XLA temporary memory of one hypergradient
   (``jax.jit(estimate).lower(...).compile().memory_analysis().temp_size_in_bytes``, one task).
2. Equal function calls (Likhosherstov et al. 2021 §5 counting): ITD-BiO (``itd-bio``: reverse through the
   inner loop warm-started at the previous outer step's iterate, Ji et al. 2021, Alg. 1, the meta-batch's
   task iterates averaged),
   AID-BiO (CG), FOM, UFOM, Adaptive UFOM on this problem, ANIL (Raghu et al. 2019; Ji et al. 2021
   §5.2): the same network with blocks 1-4 in θ and only the dense layer adapted from
   φ_0 = θ's head, without regulariser, exact reverse hypergradient, and (``maml``) MAML (Finn et al.
   2017): every layer adapted from φ_0 = θ, without regulariser, exact reverse hypergradient.

Accuracy: mean over held-out tasks from the test characters of the query accuracy after the
inner run, ± 1.96·sd/√n. Learning curves are evaluated on the first ``curve_tasks`` tasks of the
table's evaluation set. Without ``data_dir`` a generated Omniglot-shaped set stands in (random
character prototypes with per-drawing noise), a smoke stand-in only.
"""

from __future__ import annotations

from ..errors import DataError

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from ..inner import gd
from ..models import batch_norm, cross_entropy
from ..problem import BilevelProblem
from ..checks import is_int

N_CHARACTERS = 1623  # Omniglot: 964 background + 659 evaluation characters
DRAWINGS = 20
BLOCKS = 4  # conv blocks; + 1 dense layer = the 5 layers of Shaban et al. 2019, Fig. 8
FROZEN = 2  # blocks in the hyper-representation λ

#: Shaban et al. 2019 Table 4 (Omniglot 5-way 1-shot, T = 50): (method, accuracy %, hyper-iterations, sec/iter).
PAPER_TABLE4 = (("1-RMD", 95.6, "5K", 0.4), ("10-RMD", 96.3, "5K", 0.7), ("25-RMD", 96.1, "5K", 1.3),
                ("Full RMD", 95.8, "5K", 2.2), ("1-RMD", 97.7, "15K", 0.4), ("10-RMD", 97.8, "15K", 0.7),
                ("Short horizon", 96.6, "15K", 0.1))


def episode_sampler(images: np.ndarray, ways: int, shots: int, queries: int):
    """An m-way K-shot episode with Q queries per class draws m classes without replacement and
    K + Q distinct drawings of each; the first K form the support set D_tr (m·K examples), the
    other Q the query set D_te (m·Q examples), labelled 0..m−1 in the order the classes were drawn
    (the task convention of :mod:`ablo.meta`):

    key -> {"support": (x (m·K, h, w, 1), y (m·K,)), "query": (x (m·Q, h, w, 1), y (m·Q,))}, a pure
    JAX function. ``images``: (classes, drawings, h, w) uint8 ink 0-255 (or floats in [0, 1]).
    Cost: one gather of m(K + Q) images. ValueError when the array has too few classes or drawings."""
    n_cls, n_ex = images.shape[:2]
    for name, v in (("ways", ways), ("shots", shots), ("queries", queries)):
        if not is_int(v) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {v!r}")
    if ways > n_cls or shots + queries > n_ex:
        raise ValueError(f"an episode needs ways <= {n_cls} classes and shots + queries <= {n_ex} drawings per "
                         f"class; got ways={ways}, shots={shots}, queries={queries}")
    data = jnp.asarray(images)
    scale = 255.0 if images.dtype == np.uint8 else 1.0

    def sample(key):
        kc, ke = jax.random.split(key)
        cls = jax.random.choice(kc, n_cls, (ways,), replace=False)
        ex = jnp.argsort(jax.random.uniform(ke, (ways, n_ex)), axis=1)[:, : shots + queries]
        x = data[cls[:, None], ex].astype(jnp.result_type(float))[..., None] / scale  # (m, K+Q, h, w, 1)
        y = jnp.broadcast_to(jnp.arange(ways)[:, None], (ways, shots + queries))
        flat = lambda a: a.reshape((-1,) + a.shape[2:])
        return {"support": (flat(x[:, :shots]), flat(y[:, :shots])), "query": (flat(x[:, shots:]), flat(y[:, shots:]))}

    return sample


def split_characters(n: int, sizes, seed: int) -> tuple:
    """(train, validation, test) character indices: a random permutation of range(n) cut into
    ``sizes`` (which must sum to n), each part sorted. ValueError naming ``split`` otherwise."""
    sizes = tuple(int(s) for s in sizes)
    if sum(sizes) != n or min(sizes) < 1:
        raise DataError(f"split: the parts must be >= 1 and sum to the {n} characters available; got {list(sizes)}")
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


def load_characters(cfg) -> np.ndarray:
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


def init_layers(key, cfg) -> list:
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


def init_theta(key, cfg, frozen: Optional[int] = None, regularised: bool = True) -> dict:
    """θ_0 = {"body": the first ``frozen`` layers (default: all but the top ``cfg.adapted``), "centre":
    the others (w_0 = c), "nu": ν_j with softplus(ν_j) = rho0 per adapted layer (only when
    ``regularised`` and ``cfg.learn_rho``)}."""
    layers = init_layers(key, cfg)
    frozen = len(layers) - cfg.adapted if frozen is None else frozen
    theta = {"body": layers[:frozen], "centre": layers[frozen:]}
    if regularised and cfg.learn_rho:
        nu = math.log(math.expm1(cfg.rho0))  # softplus⁻¹(ρ_0)
        theta["nu"] = jnp.full(len(layers) - frozen, nu)
    return theta


def _sq_dist(a, b) -> jax.Array:
    return sum(jnp.sum((x - y) ** 2) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def make_problem(cfg, steps: Optional[int] = None, regularised: bool = True) -> BilevelProblem:
    """The bilevel problem of Shaban et al. 2019, §4.3 (module docstring) with r = ``steps`` (default cfg.steps):
    L_in = Σ_S CE + Σ_j ρ_j‖w_j − c_j‖², ρ_j = softplus(ν_j), or cfg.rho0 when not ``cfg.learn_rho`` (no
    regulariser when not ``regularised``: ANIL, MAML), L_out = mean_Q CE, φ_0 = V(θ) = θ["centre"], GD with
    step γ = cfg.inner_lr."""

    def inner_loss(theta, phi, task):
        x, y = task["support"]
        loss = cross_entropy(logits(theta, phi, x), y) * y.shape[0]
        if regularised:
            rho = jax.nn.softplus(theta["nu"]) if cfg.learn_rho else jnp.full(len(phi), cfg.rho0)
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


def mean_logged(log: list, key: str) -> Optional[float]:
    """Mean of ``key`` over a training log's entries that have it (None when none has), e.g. the
    linear solver's residual that AID-BiO's state reports."""
    vals = [e[key] for e in log if e.get(key) is not None]
    return float(np.mean(vals)) if vals else None


def adapted_words(adapted: int) -> str:
    """The layers of the inner variable w in words: the top ``adapted`` of the 5 layers."""
    first = BLOCKS + 2 - adapted  # the first adapted conv block, 1-based
    if first > BLOCKS:
        return "the dense layer"
    return (f"conv block {BLOCKS}" if first == BLOCKS else f"conv blocks {first}-{BLOCKS}") + " and the dense layer"


def notes(cfg, n_train: int, n_val: int, n_test: int) -> str:
    """results.md's text below the table of the ``hyper-representation`` experiment: what ran, against
    Shaban et al. 2019's protocol (G.3) and Ji et al. 2021 §5.2's setting."""
    smoke = ("**Smoke run (--tiny or generated data): its numbers prove nothing**; it only shows that every "
             "part runs and writes its files.\n\n" if cfg.data_dir is None or cfg.hyper_iterations < 50 else "")
    data = ("Omniglot (background + evaluation characters pooled)" if cfg.data_dir else
            "a generated Omniglot-shaped stand-in (random prototypes, 10% pixel noise), not Omniglot")
    paper = "\n".join(f"| {m} | {a} | {i} | {s} |" for m, a, i, s in PAPER_TABLE4)
    rho = (f"ρ_j = softplus(ν_j) learned from {cfg.rho0}" if cfg.learn_rho else
           f"ρ fixed at {cfg.rho0} (learn_rho = false: not learned" +
           (f"; w is the dense layer alone, so the inner problem is {2 * cfg.rho0:g}-strongly convex, Ji et al. "
            "2021 §5.2's setting)" if cfg.adapted == 1 else ")"))
    maml = ("; MAML adapts every layer from θ, without regulariser (exact reverse hypergradient)" if cfg.maml else "")
    table4 = bool(cfg.table_methods or cfg.short_horizon)  # the Table 4 part runs
    iters = f"{cfg.hyper_iterations} hyper-iterations per Table 4 method (paper 5000 and 15000), " if table4 else ""
    figures = ("curves.png: Table 4's part; " if table4 else "") + "curves_calls.png: equal calls"
    return (f"{smoke}Data: {data}; characters split at random (seed {cfg.split_seed}) into {n_train} train / "
            f"{n_val} validation / {n_test} test, disjoint. Tasks: {cfg.ways}-way {cfg.shots}-shot, {cfg.queries} "
            f"queries per class; meta-batch {cfg.meta_batch}; outer Adam lr {cfg.outer_lr}.\n\n"
            f"Changes against Shaban et al. 2019's protocol (G.3): images {cfg.size}x{cfg.size} (Shaban et al. state "
            f"no size; Finn et al.'s is 28x28), {cfg.filters} filters per conv layer (paper 64), T = {cfg.steps} inner "
            f"GD steps (paper 50) with fixed γ = {cfg.inner_lr} (paper learns γ), {iters}adapted in the inner "
            f"problem: "
            f"{adapted_words(cfg.adapted)}{'' if cfg.adapted == BLOCKS + 1 - FROZEN else ' (paper: conv blocks 3-4 and the dense layer)'}, "
            f"{rho}; the inner run starts "
            "at the centres c (G.3 does not say); max-pooling stops once a map is 2x2. Outer step size not tuned on "
            "the validation characters (val_acc is reported, not used).\n\n"
            f"test_acc: mean query accuracy over {cfg.eval_tasks} test-character tasks (paper: 120) ± 1.96·sd/√n. "
            f"Curves ({figures}; curves_seconds.png: the same runs "
            f"against outer-step seconds, as Ji et al. 2021 Figs. 1 and 5 plot against running time): test accuracy "
            f"on the first {cfg.curve_tasks} of those tasks. sec_per_iter and seconds exclude compilation and "
            "evaluation, on a 2-core CPU shared with other jobs. " + ("memory_mb (Table 4 part only) is XLA's "
            "temporary buffer size of one compiled hypergradient (one task). " if table4 else "") +
            f"Equal-calls part: {cfg.budget_calls:g} function "
            "calls each (gradients + HVPs + JVPs as ablo counts them; Likhosherstov et al. 2021 §5 counts gradients "
            "and HVPs); solver_residual: the linear solver's residual norm ‖∇²g v − ∇f‖ at exit, mean over the meta-batch's tasks and the logged steps (AID only). "
            "'ITD-BiO' is Ji et al. 2021's (itd-bio): exact reverse mode through the inner loop warm-started at the "
            "previous outer step's iterate (the meta-batch's task iterates averaged; 'ITD-BiO (reverse)' would be "
            f"reverse without the warm start); ANIL adapts only the dense layer from θ's head, without regulariser{maml}."
            "\n\nShaban et al. 2019 Table 4 (Omniglot, T = 50):\n\n| Method | Accuracy | iter. | Sec/iter. |\n"
            f"|---|---|---|---|\n{paper}\n")
