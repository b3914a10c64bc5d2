"""The few-shot classification problem of the ``fewshot`` experiment (Likhosherstov et al. 2021 §5.3, Table 2;
Finn et al. 2017): Omniglot (or scikit-learn digits) episodes, the MAML problem on a conv net,
Nichol et al.'s Reptile protocol (mini-batched inner steps, shuffled tasks, an annealed meta
step) and the held-out accuracy with its 95% interval.

The ``fewshot`` experiment's protocol:

A task T = (D_tr, D_te): m classes drawn from a split's characters, K + 1 drawings of each,
K for training and one for testing (s = mK, t = m). With V(θ, T) = θ,

    L_in(θ, φ, T) = L_CCE(φ, D_tr),   L_out(θ, φ, T) = L_CCE(φ, D_te),

r steps of inner SGD, an outer Adam over meta-batches of tasks, every method stopped at the same
budget of function calls (Proposition 1's counts: r + 1 gradients for FOM, plus r(r − 1)/2
gradients and r HVPs for the memory-efficient exact ``recompute``).

Reptile (Nichol et al. 2018; :class:`ablo.meta.Reptile`) runs with its own authors' settings,
as Likhosherstov et al. 2020 (UFO-BLO, App. B) did ("as in 1-shot 20-way experiment in the
implementation of [Nichol et al.]": openai/supervised-reptile, transductive 1-shot 20-way
Omniglot): each training task has ``reptile_train_shots`` = 10 drawings of each of its m classes
(the task's data, shuffled once), the inner run is r = 10 Adam steps (β1 = 0, step 5e-4) on
consecutive mini-batches of m·10/r (20 at 20-way: one pass over the task), the direction θ − φ_r
of a meta-batch of 5 tasks is averaged and applied with outer SGD whose step (meta step size)
falls linearly from 1 to 0 over the run's outer steps (theirs: over 200,000 steps; here over the
steps the call budget allows). At test time Reptile adapts as its authors' evaluation does: 50
Adam steps on mini-batches of m/2 support images (cycled in one shuffled order; theirs reshuffles
each pass). Differences from their code: the Adam moments restart with every task (theirs persist
across tasks), and the net is this experiment's (14x14, 3 blocks, 16 filters). Cost: r gradient
evaluations per task, each on a mini-batch as large as FOM's support set at 1-shot.

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
(8x8, classes 0-6 to train, 7-9 held out, at most 3-way), a smoke-scale stand-in. Training is
:func:`ablo.outer.run` (a non-finite step stops the run naming step, method and cause), with a
curve point every ``eval_calls`` function calls.

The inner step size is not checked against 2/L at θ_0 here: with batch norm the net is scale
invariant in most directions and the top eigenvalue at θ_0 (≈ 18) does not bound a stable step
(lr 0.4, Finn et al.'s for Omniglot, trains here), so the check would refuse that setting.
"""

from __future__ import annotations

from ..errors import DataError

import dataclasses
import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import inner
from ..meta import maml, merge_support_query
from ..models import convnet_apply, cross_entropy
from ..problem import BilevelProblem

#: Classes held out for testing on scikit-learn digits (7, 8, 9): the most ways without data_dir.
DIGITS_WAYS = 3


# --- data ------------------------------------------------------------------------------------
def load_splits(cfg):
    """(meta-train, held-out) image arrays (classes, examples, h, w) as uint8 ink intensity 0-255,
    and a description of the data read."""
    if cfg.data_dir is None:
        from ..data import load_digits

        x, y = load_digits()
        per = min(np.bincount(y))
        imgs = np.stack([x[y == c][:per] for c in range(10)]).reshape(10, per, 8, 8)
        train, test = imgs[:10 - DIGITS_WAYS], imgs[10 - DIGITS_WAYS:]
        described = {"name": "scikit-learn digits", "image_size": 8}
    else:
        from ..data import load_omniglot

        train = load_omniglot(cfg.data_dir, "background", cfg.size).images
        test = load_omniglot(cfg.data_dir, "evaluation", cfg.size).images
        described = {"name": "Omniglot", "image_size": cfg.size}
    q = lambda a: np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)
    return q(train), q(test), {**described, "train_classes": len(train), "test_classes": len(test)}


def make_sampler(images: np.ndarray, ways: int, shots: int):
    """key -> {"support": (x (m·K, h, w, 1), y), "query": (x (m, h, w, 1), y)} (the task convention of
    :mod:`ablo.meta`): a pure JAX task sampler."""
    n_cls, n_ex = images.shape[:2]
    if ways > n_cls or shots + 1 > n_ex:
        raise DataError(f"ways must be <= {n_cls} classes and shots + 1 <= {n_ex} examples per class; "
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
    of the conv net :func:`ablo.models.convnet_apply`."""
    return maml(convnet_apply, cross_entropy, inner_lr, steps)


@dataclass(frozen=True, eq=False)
class MiniBatched(BilevelProblem):
    """A problem whose inner step t reads the mini-batch t of the support set: examples
    (t·batch + i) mod n, i < batch, of ``task["support"]`` (n examples, in the task's order), so
    r·batch = n is one pass. The query set is left whole."""

    batch: int = 1

    def step(self, theta, s, t, task):
        """One inner step on mini-batch t (one gradient evaluation)."""
        x, y = task["support"]
        idx = (t * self.batch + jnp.arange(self.batch)) % x.shape[0]
        return super().step(theta, s, t, {**task, "support": (x[idx], y[idx])})


def minibatched(problem: BilevelProblem, batch: int) -> MiniBatched:
    """``problem`` with its inner steps on mini-batches of ``batch`` support examples."""
    return MiniBatched(**{f.name: getattr(problem, f.name) for f in dataclasses.fields(problem)}, batch=batch)


def shuffled(sample, merge: bool = False):
    """A sampler whose support set (with ``merge``: support ∪ query) comes in a random order
    drawn from the task's key."""

    def sample_shuffled(key):
        k_task, k_perm = jax.random.split(key)
        task = sample(k_task)
        task = merge_support_query(task) if merge else task
        x, y = task["support"]
        perm = jax.random.permutation(k_perm, x.shape[0])
        return {**task, "support": (x[perm], y[perm])}

    return sample_shuffled


def reptile_setup(cfg, train_images: np.ndarray, test_images: np.ndarray) -> dict:
    """Nichol et al.'s Reptile protocol (module docstring) at this config: the training problem
    (r Adam steps on one pass of mini-batches), the training sampler (``reptile_train_shots``
    drawings per class, shuffled), the outer SGD with the meta step annealed linearly to 0 over
    the outer steps the budget allows, and the test-time problem and sampler."""
    n_task = cfg.ways * cfg.reptile_train_shots
    opt = functools.partial(inner.adam, b1=0.0) if cfg.reptile_inner_optimizer == "adam" else inner.gd
    base = maml(convnet_apply, cross_entropy, cfg.reptile_inner_lr, cfg.steps, optimizer=opt)
    train = minibatched(base, -(-n_task // cfg.steps))
    per_step = cfg.meta_batch * cfg.steps  # r gradient evaluations per task
    limits = [n for n in (cfg.outer_steps, cfg.budget_calls and -(-int(cfg.budget_calls) // per_step)) if n]
    anneal = optax.linear_schedule(cfg.reptile_meta_step, 0.0, transition_steps=max(min(limits), 1))
    test_base = maml(convnet_apply, cross_entropy, cfg.reptile_inner_lr, cfg.reptile_eval_steps, optimizer=opt)
    test = minibatched(test_base, cfg.reptile_eval_batch)
    return {"problem": train, "tx": optax.sgd(anneal),
            "sampler": shuffled(make_sampler(train_images, cfg.ways, cfg.reptile_train_shots - 1), merge=True),
            "test_problem": test, "test_sampler": shuffled(make_sampler(test_images, cfg.ways, cfg.shots))}


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
