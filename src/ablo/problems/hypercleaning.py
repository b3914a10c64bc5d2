"""Data hypercleaning (Franceschi et al. 2017; Shaban et al. 2019, §4.2.1 and App. G.1;
Likhosherstov et al. 2021, §5.2; Ji et al. 2021, §A.2).

A classifier g(φ, x) (``ablo.models.mlp_apply``: linear for ``sizes = [d, k]``, a ReLU MLP
otherwise) is trained on n examples with possibly corrupted labels ỹ; θ ∈ R^n weighs each
training loss by σ(θ_i); the outer loss is the cross-entropy on a clean validation set:

    L_in(θ, φ)  = (1/n) Σ_i σ(θ_i) l_CE(g(φ, x_i), ỹ_i) + λ Σ_layers ‖W‖_F² (+ ‖b‖² with decay_bias),
    L_out(θ, φ) = (1/n_val) Σ_v l_CE(g(φ, x_v), y_v).

Shaban et al. write the sum over i with 0.001‖W‖_F², W ∈ R^{10×785} holding the bias column;
the mean with λ = 0.001/n and ``decay_bias`` keeps their ratio of data term to regulariser (the
sum itself overshoots with α = 1 on [0, 1] pixels).

The data side of the ``hypercleaning`` experiment lives here too: :func:`make_data` (splits,
corruption, test set), :func:`init_model` (φ_0), :func:`step_size` (α checked against 2/L, or
1/L), :func:`make_eval` (the metrics of φ_r(θ)) and :func:`outer_optimizer` (Adam with η_0).

A task is a dict ``{"x", "y", "x_val", "y_val"}``; with ``"idx"`` (indices of the rows of ``x``
among the n training examples) the weights are σ(θ[idx]), so a mini-batch task works too; with
``phi0`` None the start is ``task["phi0"]`` (a warm start carried by the caller), else V = φ_0
constant.

The ``hypercleaning`` experiment's protocol:

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

``model = linear`` (Shaban et al. 2019, App. G.1): g = Wx + b from W = 0, K-RMD as ``truncated-K`` specs
and ``reverse`` (K = r), 1000 hyperiterations of Adam at η_τ = η_0/√τ with η_0 set per method so
the first update has norm ``first_step_norm`` (:func:`outer_optimizer`), λ = 0.001/n on W and b
(the paper's ratio to its summed loss), and at every evaluation the exact hypergradient's norm
and the descent ratio of the method's estimate (Shaban et al. 2019 Fig. 5 and Fig. 2's ratio). ``model =
mlp`` (Likhosherstov et al. 2021): two layers with ReLU; methods (default exact = memory-efficient ``recompute``,
``fom``, ``adaptive-ufom``) at an equal budget of function calls, constant Adam step. V and L_out
do not depend on θ, so FOM's estimate is exactly zero and FOM is training on the uncleaned data.

Data: MNIST IDX files from ``data_dir``, else scikit-learn's 8x8 digits (a scaled-down stand-in);
train and val are class-balanced draws from the 60k training images; the test set is the rest of
the 70k images (``test_set = rest``, Shaban et al. 2019) or the 10k test images (``test``). Corruption:
``uniform`` replaces each training label with probability ``corrupt`` by a uniformly random class
(Shaban et al. 2019 App. G.1), ``wrong`` replaces exactly ⌊corrupt·n⌋ by a wrong one (Likhosherstov et al. 2021); F1 scores
θ_i < −3 as "corrupted" against the labels that are wrong (Shaban et al. 2019 §4.2.1). Rows:
:data:`ROW_KEYS` (train_clean_acc: the uncorrupted part of the training set, Likhosherstov et al. 2021 Table 1;
outer_lr: the η_0 the method ran with).
"""

from __future__ import annotations

from ..errors import DataError, UserError

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import estimators, outer
from ..curvature import check_step_size, top_eigenvalue
from ..inner import InnerOptimizer, gd
from ..models import cross_entropy, linear_init, mlp_apply, mlp_init
from ..problem import BilevelProblem, constant_init


def weight_decay(phi, bias: bool = False) -> jax.Array:
    """Σ over layers of ‖W‖_F², plus ‖b‖² when ``bias``."""
    return sum(jnp.sum(layer["w"] ** 2) + (jnp.sum(layer["b"] ** 2) if bias else 0.0) for layer in phi)


def make_problem(*, steps: int, inner_lr: float = 1.0, l2: float = 1e-3, phi0=None,
                 optimizer: Optional[InnerOptimizer] = None, decay_bias: bool = False,
                 activation: Callable = jax.nn.relu) -> BilevelProblem:
    """The hypercleaning :class:`BilevelProblem` with r = ``steps`` inner steps of GD at
    ``inner_lr`` (or the given inner ``optimizer``) and regularisation weight λ = ``l2`` on the
    weights (and biases with ``decay_bias``); ``activation`` between an MLP's layers.
    ``phi0``: the model's starting parameters in ``ablo.models.mlp_init`` layout, or None to
    read them from ``task["phi0"]``."""

    def weights(theta, task):
        return jax.nn.sigmoid(theta if "idx" not in task else theta[task["idx"]])

    def inner_loss(theta, phi, task):
        logits = mlp_apply(phi, task["x"], activation=activation)
        return cross_entropy(logits, task["y"], weights(theta, task)) + l2 * weight_decay(phi, decay_bias)

    def outer_loss(theta, phi, task):
        return cross_entropy(mlp_apply(phi, task["x_val"], activation=activation), task["y_val"])

    init = constant_init(phi0) if phi0 is not None else (lambda theta, task: task["phi0"])
    return BilevelProblem(inner_loss, outer_loss, optimizer or gd(inner_lr), steps, init)


def f1_corrupted(theta, corrupted, threshold: float = -3.0) -> jax.Array:
    """F1 score of the rule θ_i < ``threshold`` (σ(θ_i) < σ(−3)) for "label corrupted"
    (Shaban et al. 2019, §4.2.1); NaN when no label is corrupted (nothing to detect: F1 is undefined)."""
    pred = theta < threshold
    tp = jnp.sum(pred & corrupted)
    n_bad = jnp.sum(corrupted)
    return jnp.where(n_bad > 0, 2.0 * tp / jnp.maximum(jnp.sum(pred) + n_bad, 1), jnp.nan)


# --- data ------------------------------------------------------------------------------------
def load_splits(cfg, rng):
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
    return pool, test, {"name": d["name"], "train_images": len(pool[1]), "test_images": len(test[1]),
                        "image_size": 28 // p}


def make_data(cfg, seed: int) -> dict:
    """The task {"x", "y" (corrupted), "x_val", "y_val"}, the clean training labels, the mask of
    corrupted examples (labels that differ from the true one), the test set and the description of
    the data read. Train and val are class-balanced draws from the training pool; the test set is
    the held-out images (``test_set = test``) or those plus the rest of the pool (``rest``)."""
    rng = np.random.default_rng(seed)
    (x, y), (xt, yt), described = load_splits(cfg, rng)
    n, n_val = cfg.n_train, cfg.n_val
    tr, va = _balanced_splits(y, (n, n_val), rng, described["name"])
    y_tr = y[tr].copy()
    if cfg.corruption == "uniform":
        hit = rng.random(n) < cfg.corrupt
        y_tr[hit] = rng.integers(0, 10, size=int(hit.sum()))
    else:
        bad = rng.permutation(n)[: int(cfg.corrupt * n)]
        y_tr[bad] = (y_tr[bad] + rng.integers(1, 10, size=len(bad))) % 10
    corrupted = y_tr != y[tr]
    if cfg.test_set == "rest":
        rest = np.setdiff1d(np.arange(len(y)), np.concatenate([tr, va]))
        xt, yt = np.concatenate([x[rest], xt]), np.concatenate([y[rest], yt])
    f = jnp.asarray
    task = {"x": f(x[tr]), "y": f(y_tr), "x_val": f(x[va]), "y_val": f(y[va])}
    return {"task": task, "clean_y": f(y[tr]), "corrupted": f(corrupted), "test": (f(xt), f(yt)),
            "dataset": {**described, "n_train": n, "n_val": n_val, "n_test": len(yt),
                        "corrupted": int(corrupted.sum())}}


def _balanced_splits(y: np.ndarray, sizes: tuple, rng, name: str) -> list:
    """Disjoint index sets of the given sizes, each shuffled and class-balanced (⌈size/classes⌉
    per class, trimmed at random to size)."""
    classes = np.unique(y)
    per = [-(-m // len(classes)) for m in sizes]
    have = min(np.sum(y == c) for c in classes)
    if sum(per) > have:
        raise DataError(f"n_train + n_val = {sum(sizes)} needs {sum(per)} examples of every class but "
                         f"{name} has {have} of its rarest; lower n_train or n_val")
    by_class = [rng.permutation(np.flatnonzero(y == c)) for c in classes]
    starts = np.cumsum([0] + per)
    return [rng.permutation(np.concatenate([ix[starts[i]:starts[i + 1]] for ix in by_class]))[:m]
            for i, m in enumerate(sizes)]


def init_model(cfg, d: int, seed: int, dtype=jnp.float32) -> list:
    """φ_0: W = 0, b = 0 for the linear model (Shaban et al. 2019 App. G.1); He init for the MLP."""
    if cfg.model == "linear":
        return linear_init(d, 10, dtype)
    phi = mlp_init(jax.random.PRNGKey(10_000 + seed), [d, cfg.hidden, 10])
    return jax.tree_util.tree_map(lambda a: a.astype(dtype), phi)


def step_size(cfg, task, phi0, theta0) -> tuple:
    """(α, L): the configured α after :func:`check_step_size` refused α ≥ 2/L, or α = 1/L for auto."""
    probe = make_problem(steps=cfg.steps, phi0=phi0, l2=cfg.l2, decay_bias=cfg.decay_bias)
    if cfg.inner_lr is None:
        L = top_eigenvalue(probe, theta0, task)
        return 1.0 / L, L
    return cfg.inner_lr, check_step_size(probe, theta0, task, cfg.inner_lr)


#: What make_eval's function returns (with ``estimator``: also ``true_grad_norm``, ``descent_ratio``).
METRICS = ("train_clean_acc", "test_acc", "test_ce", "val_acc", "val_ce", "f1")
TRUE_GRAD = ("true_grad_norm", "descent_ratio")


def make_eval(problem, data: dict, estimator=None, key=None):
    """(θ, outer state) -> metrics of the classifier φ_r(θ) trained by the inner loop. With
    ``estimator``, also the norm of the exact hypergradient d = ∂M^(r)/∂θ (reverse mode; Shaban et al. 2019
    Fig. 5) and the descent ratio hᵀd/‖d‖² of the estimate h the run would draw at θ (Shaban et al. 2019
    Fig. 2, Lemma 3.2): the run's own estimator state, a key of its own per evaluation
    (``outer.eval_key``); an exact estimator's h is d itself."""
    task, (xt, yt) = data["task"], data["test"]
    clean = ~data["corrupted"]
    exact = estimators.parse("reverse")
    reuse = estimator is not None and estimator.exact_at(problem.steps)

    @jax.jit
    def evaluate(theta, est_state, k):
        task_, xt_ = jax.lax.optimization_barrier((task, xt))  # keep XLA from constant-folding the data
        phi = problem.optimizer.params(problem.run(theta, task_))
        hit_tr = jnp.argmax(mlp_apply(phi, task_["x"]), 1) == data["clean_y"]
        logits = mlp_apply(phi, xt_)
        out = {"train_clean_acc": 100 * jnp.sum(hit_tr & clean) / jnp.sum(clean),
               "test_acc": 100 * jnp.mean(jnp.argmax(logits, 1) == yt),
               "test_ce": cross_entropy(logits, yt),
               "val_acc": 100 * jnp.mean(jnp.argmax(mlp_apply(phi, task_["x_val"]), 1) == task_["y_val"]),
               "val_ce": problem.outer_loss(theta, phi, task_),
               "f1": f1_corrupted(theta, data["corrupted"])}
        if estimator is not None:
            d = exact.estimate(problem, theta, task_, exact.init(problem, theta, task_), k)[0]
            h = d if reuse else estimator.estimate(problem, theta, task_, est_state, k)[0]
            out.update(true_grad_norm=jnp.linalg.norm(d), descent_ratio=jnp.vdot(h, d) / jnp.vdot(d, d))
        return out

    def eval_fn(theta, state):
        est_state = state.estimator_state if estimator is not None else None
        k = outer.eval_key(key, int(state.step)) if key is not None else None
        return {name: float(v) for name, v in evaluate(theta, est_state, k).items()}

    return eval_fn


def outer_optimizer(cfg, problem, estimator, theta0, task, key) -> tuple:
    """(optax Adam, η_0): η_0 = ``outer_lr``, or else first_step_norm / ‖u_1‖ with u_1 the first
    Adam update at unit step size from the estimator's hypergradient at θ_0 (Shaban et al. 2019 App. G.1:
    the first update has the same norm for every K; one estimate, not charged to the run; an
    estimate of 0, as FOM's here, takes the norm √n of Adam's update of a gradient without zeros). Step
    size η_τ = η_0/√τ (``schedule = inv-sqrt``, Shaban et al. 2019 Thm 3.3) or η_0."""
    eta0 = cfg.outer_lr
    if eta0 is None:
        g = estimator.estimate(problem, theta0, task, estimator.init(problem, theta0, task), key)[0]
        unit = optax.adam(1.0)
        norm = float(optax.tree.norm(unit.update(g, unit.init(theta0), theta0)[0]))
        if not np.isfinite(norm):
            raise UserError(f"first_step_norm: the first hypergradient of {estimator.name} at θ_0 is not finite; "
                             "lower inner_lr or give outer_lr")
        eta0 = cfg.first_step_norm / (norm or np.sqrt(theta0.size))  # an estimate of 0 (FOM here): Adam's √n
    lr = (lambda count: eta0 / jnp.sqrt(count + 1.0)) if cfg.schedule == "inv-sqrt" else eta0
    return optax.adam(lr), eta0
