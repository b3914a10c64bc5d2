"""Per-feature ℓ2-regularized logistic regression on 20 Newsgroups (the ``newsgroups`` experiment, Ji et
al. 2021 §A.2): the data (20 Newsgroups TF-IDF, or a generated stand-in), random disjoint splits
(shared with the other experiments that split at random) and the bilevel problem.

The ``newsgroups`` experiment's protocol:

With W ∈ R^{p×c} (c = 20 groups, no bias) and one hyperparameter λ_j per feature:

    L_in(λ, W)  = CE(X_tr W, y_tr) + ½ mean_{j,k}(e^{λ_j} W_jk²),   L_out(λ, W) = CE(X_val W, y_val),

T = 10 inner GD steps with step size 100, outer SGD with step size 100, λ_0 = 0, W_0 = 0.
``methods`` are estimator specs; the defaults are Ji et al. 2021 §A.2's methods with its settings:
``stocbio`` (Alg. 2-3, η = 0.5, Q = 10, mini-batches of 1000), ``itd-bio`` (reverse mode through
the warm-started inner loop: the paper's "reverse"), ``aid-fp`` (fixed-point map with the inner
step, as the paper's hypertorch code), ``aid-bio`` (AID-CG, 10 CG steps, warm starts of y and v,
Alg. 1) and ``hoag`` (CG to Pedregosa's tolerance 1e-3 · 0.9^k, safety cap 10,000
iterations, reported if hit). Every default method warm-starts its inner iterate, y_k^0 = y_{k−1}^T, in
its estimator state. Compared by test loss and test accuracy of each method's current W
against running time (see ``_wallclock``).

Data: the bydate split read by :func:`ablo.data.load_newsgroups` (TF-IDF fitted on the training
posts, at most ``max_features`` words — the paper uses all 101,631; we keep the most frequent
``max_features`` so that dense float32 X fits two CPU cores); the training posts are split at
random in half into train and validation (as the paper's code), the bydate test posts are the
test set. Without ``data_dir``: generated bag-of-words documents (``synthetic_corpus``), and the
paper's figure is not quoted. Rows: method, seed, test_loss, test_acc, steps, seconds,
function_calls, compile_seconds (HOAG also tol and cg_cap_hits).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..inner import gd
from ..models import cross_entropy
from ..problem import BilevelProblem, constant_init


def seeded_split(n: int, sizes: tuple, seed: int) -> list:
    """Disjoint random index sets of the given sizes from range(n)."""
    if sum(sizes) > n:
        raise ValueError(f"the splits need {sum(sizes)} examples but the data has {n}")
    perm = np.random.default_rng(seed).permutation(n)
    cuts = np.cumsum((0,) + tuple(sizes))
    return [perm[a:b] for a, b in zip(cuts[:-1], cuts[1:])]


def synthetic_corpus(n_train: int, n_test: int, vocabulary: int, length: int, seed: int = 0, classes: int = 20):
    """Generated stand-in for 20 Newsgroups: each class draws words from a shared Zipf background
    (70 %) mixed with its own 30-word topic (30 %); counts → TF-IDF (smooth idf, ℓ2-normalised rows,
    idf from the training part), as scikit-learn's TfidfVectorizer does."""
    rng = np.random.default_rng(seed)
    background = 1.0 / np.arange(1, vocabulary + 1)
    background /= background.sum()
    topics = np.stack([np.bincount(rng.choice(vocabulary, 30, replace=False), minlength=vocabulary) / 30.0
                       for _ in range(classes)])
    n = n_train + n_test
    y = rng.integers(0, classes, n).astype(np.int32)
    counts = np.stack([rng.multinomial(length, 0.7 * background + 0.3 * topics[c]) for c in y]).astype(np.float32)
    df = (counts[:n_train] > 0).sum(0)
    idf = np.log((1 + n_train) / (1 + df)) + 1
    x = counts * idf
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return {"train": (x[:n_train].astype(np.float32), y[:n_train]), "test": (x[n_train:].astype(np.float32), y[n_train:])}


def load(cfg) -> tuple:
    """({"train": (X, y), "test": (X, y)} dense float32, description of the data read)."""
    if cfg.data_dir is None:
        data = synthetic_corpus(cfg.n_train, cfg.n_test, cfg.vocabulary, cfg.length)
        return data, (f"generated bag-of-words data (no data_dir), not 20 Newsgroups: {cfg.n_train} train / "
                      f"{cfg.n_test} test documents, {cfg.vocabulary} words, 20 classes")
    from ..data import load_newsgroups

    d = load_newsgroups(cfg.data_dir, max_features=cfg.max_features)
    data = {s: (d[s][0].toarray().astype(np.float32), d[s][1]) for s in ("train", "test")}
    return data, (f"20 Newsgroups bydate: {data['train'][0].shape[0]} train "
                  f"(split in half: train / validation), {data['test'][0].shape[0]} test posts, TF-IDF of the "
                  f"{data['train'][0].shape[1]} most frequent words")


def make_problem(inner_steps: int, inner_lr: float, features: int) -> BilevelProblem:
    """The bilevel problem above, W_0 = 0; the task is {"train": (X, y), "val": (X, y)}."""

    def inner_loss(lam, w, task):
        x, y = task["train"]
        return cross_entropy(x @ w, y) + 0.5 * jnp.mean(jnp.exp(lam)[:, None] * w ** 2)

    def outer_loss(lam, w, task):
        x, y = task["val"]
        return cross_entropy(x @ w, y)

    return BilevelProblem(inner_loss, outer_loss, gd(inner_lr), inner_steps,
                          constant_init(jnp.zeros((features, 20), jnp.float32)))
