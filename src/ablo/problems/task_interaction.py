"""The task-interaction problem of the ``task-interaction`` experiment (Shaban et al. 2019 §4.2.2, App. G.2):
one linear classifier per class w_i, a learned coupling C = softplus(B) pulling them together
with weight ρ = softplus(ν), the loss on each trial's train and validation split, and the
Fig. 6 / Table 3 evaluation against the exact hypergradient.

The ``task-interaction`` experiment's protocol:

A multi-class linear logistic model with one weight vector w_v per class (W = [w_1..w_V] ∈ R^{d×V},
bias b ∈ R^V) is trained by T = 100 GD steps at γ = 0.1 from W = 0, b = 0 on

    g(w; θ) = l_train(W, b) + Σ_{i,j} C_ij ‖w_i − w_j‖² + ρ Σ_v ‖w_v‖²,
    C = A + Aᵀ,  A = softplus(B),  ρ = softplus(ν),  θ = {B ∈ R^{V×V}, ν},

(the coupling is 2 tr(W L Wᵀ) with L = diag(C1) − C the graph Laplacian of C), and the upper
level is the validation cross-entropy f(θ) = l_val(ŵ(θ)) (∇_θ f = 0). Shaban et al. 2019 uses CIFAR-10/100
with ResNet-18 features; those are not available here, so the V = 20 classes are the newsgroups
and the features TF-IDF (rows scaled to norm ``feature_scale``, see :class:`Config`).

Each of ``trials`` trials draws balanced, disjoint training and validation sets of m examples
per class from the bydate training posts; the bydate test posts are the test set (the paper uses
"the rest of the dataset"). For each method (an estimator spec; K-RMD = ``truncated-K``, full
RMD = ``reverse``) θ is trained by Adam (App. G: Adam for every upper level; the step size is
ours) for ``outer_steps`` hyper-iterations with :func:`ablo.outer.run`; every ``eval_every`` steps we record Fig. 6's
quantities at θ_τ: the validation loss, ‖d_θ f‖ by exact reverse mode and the cosine between a
fresh draw of the method's estimate and d_θ f, plus the test accuracy (Table 3). Outputs:
table3.csv (mean ± std over trials per method), curves.csv and fig6.png, learned_C.csv and
learned_C.png (C averaged over trials, classes grouped by the newsgroup hierarchy), summary.json
(one row per method and trial) and results.md.
"""

from __future__ import annotations

from ..errors import DataError

import jax
import jax.numpy as jnp
import numpy as np

from ..estimators import Reverse
from ..inner import gd
from ..models import accuracy, cross_entropy
from ..problem import BilevelProblem, constant_init

CLASSES = 20
#: The top-level newsgroup hierarchies in the order of the heatmap; other prefixes follow.
HIERARCHY = ("comp", "rec", "sci", "talk")


def coupling(theta) -> tuple[jax.Array, jax.Array]:
    """(C, ρ) = (A + Aᵀ, softplus(ν)) with A = softplus(B) (Shaban et al. 2019 App. G.2)."""
    A = jax.nn.softplus(theta["B"])
    return A + A.T, jax.nn.softplus(theta["nu"])


def regulariser(theta, W) -> jax.Array:
    """Σ_ij C_ij ‖w_i − w_j‖² + ρ Σ_v ‖w_v‖² = 2 tr(W (diag(C1) − C) Wᵀ) + ρ ‖W‖_F² (columns w_v)."""
    C, rho = coupling(theta)
    laplacian = jnp.diag(C.sum(1)) - C
    return 2.0 * jnp.sum((W @ laplacian) * W) + rho * jnp.sum(W ** 2)


def logits(phi, x) -> jax.Array:
    """X W + b."""
    return x @ phi["W"] + phi["b"]


def inner_loss(theta, phi, task):
    """g(w; θ) = mean training cross-entropy + the task-interaction regulariser."""
    x, y = task["train"]
    return cross_entropy(logits(phi, x), y) + regulariser(theta, phi["W"])


def outer_loss(theta, phi, task):
    """f = mean validation cross-entropy of ŵ (independent of θ given ŵ)."""
    x, y = task["val"]
    return cross_entropy(logits(phi, x), y)


def make_problem(inner_steps: int, inner_lr: float, features: int = 1, classes: int = CLASSES,
                 dtype=jnp.float32) -> BilevelProblem:
    """The bilevel problem above with T = ``inner_steps`` GD steps of size ``inner_lr`` from W = 0, b = 0
    (of ``dtype``); the task is {"train": (X, y), "val": (X, y)} with X of ``features`` columns."""
    phi0 = {"W": jnp.zeros((features, classes), dtype), "b": jnp.zeros(classes, dtype)}
    return BilevelProblem(inner_loss, outer_loss, gd(inner_lr), inner_steps, constant_init(phi0))


def theta0(cfg, classes: int = CLASSES, dtype=jnp.float32) -> dict:
    """θ_0 = {B = B0 everywhere, ν = ν0}."""
    return {"B": jnp.full((classes, classes), cfg.B0, dtype), "nu": jnp.asarray(cfg.nu0, dtype)}


# -- data ------------------------------------------------------------------------------------


def balanced_split(y: np.ndarray, per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint training and validation indices with ``per_class`` examples of every class each."""
    counts = np.bincount(y, minlength=CLASSES)
    if counts.min() < 2 * per_class:
        raise DataError(f"per_class: {per_class} needs {2 * per_class} examples of every class, but class "
                         f"{int(counts.argmin())} has {int(counts.min())}; use per_class <= {int(counts.min()) // 2}")
    picks = [rng.permutation(np.flatnonzero(y == c))[:2 * per_class] for c in range(CLASSES)]
    return (np.concatenate([p[:per_class] for p in picks]), np.concatenate([p[per_class:] for p in picks]))


def hierarchy_order(names) -> list:
    """Indices of ``names`` grouped by top-level prefix: comp.*, rec.*, sci.*, talk.*, then the other
    prefixes alphabetically (alt, misc, soc), names sorted within a group."""
    prefix = lambda n: n.split(".")[0]
    rank = lambda n: (HIERARCHY.index(prefix(n)) if prefix(n) in HIERARCHY else len(HIERARCHY), prefix(n), n)
    return sorted(range(len(names)), key=lambda i: rank(names[i]))


# -- one method on one trial -------------------------------------------------------------------

def make_evaluate(problem, est):
    """Jitted (θ, estimator state, key, task, test) -> Fig. 6 / Table 3 metrics at θ: validation and
    training loss of ŵ(θ), ‖d_θ f‖ by exact reverse mode, the cosine between a fresh draw of
    ``est``'s estimate and d_θ f, the test accuracy. Cost: one inner run, one reverse pass, one estimate."""

    @jax.jit
    def evaluate(theta, est_state, key, task, test):
        phi = problem.optimizer.params(problem.run(theta, task))
        true, _, _ = Reverse().estimate(problem, theta, task, (), key)
        h, _, _ = est.estimate(problem, theta, task, est_state, key)
        flat = lambda t: jnp.concatenate([x.ravel() for x in jax.tree_util.tree_leaves(t)])
        t, e = flat(true), flat(h)
        tiny = jnp.finfo(t.dtype).tiny
        return {"val_loss": problem.outer_loss(theta, phi, task), "train_loss": inner_loss(theta, phi, task),
                "true_grad_norm": jnp.linalg.norm(t),
                "cosine": jnp.vdot(t, e) / jnp.maximum(jnp.linalg.norm(t) * jnp.linalg.norm(e), tiny),
                "test_acc": accuracy(logits(phi, test[0]), test[1])}

    return evaluate


def load(cfg) -> tuple[dict, list, str]:
    """({"train": (X, y), "test": (X, y)} float32 with rows of norm ``feature_scale``, class names, description)."""
    if cfg.data_dir is None:
        from .newsgroups import synthetic_corpus

        data = synthetic_corpus(cfg.synthetic_train, cfg.synthetic_test, cfg.max_features, 40, seed=cfg.seed)
        names = [f"class{c:02d}" for c in range(CLASSES)]
        what = (f"GENERATED TF-IDF-like data (no data_dir; not 20 Newsgroups): {cfg.synthetic_train} training-pool "
                f"and {cfg.synthetic_test} test documents over {cfg.max_features} words, 20 classes each with its "
                "own 30-word topic mixed into a shared Zipf background (no class hierarchy)")
    else:
        from ..data import load_newsgroups

        d = load_newsgroups(cfg.data_dir, max_features=cfg.max_features)
        data = {s: (d[s][0].toarray().astype(np.float32), d[s][1]) for s in ("train", "test")}
        names = list(d["groups"])
        what = (f"20 Newsgroups bydate: training/validation sets drawn from the "
                f"{len(data['train'][1])} training posts, the {len(data['test'][1])} test posts as test set; TF-IDF "
                f"of the {data['train'][0].shape[1]} most frequent words")
    data = {s: (x * np.float32(cfg.feature_scale), y) for s, (x, y) in data.items()}
    return data, names, what + f", rows scaled to ℓ2 norm {cfg.feature_scale:g}"
