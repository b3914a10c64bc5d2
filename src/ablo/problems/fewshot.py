"""The few-shot classification problem of the ``fewshot`` experiment (Likhosherstov et al. 2021 §5.3, Table 2;
Finn et al. 2017): Omniglot (or scikit-learn digits) episodes, the MAML problem on a conv net,
Nichol et al.'s Reptile protocol (mini-batched inner steps, shuffled tasks, an annealed meta
step) and the held-out accuracy with its 95% interval.
"""

from __future__ import annotations

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
