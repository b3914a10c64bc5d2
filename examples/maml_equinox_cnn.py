"""MAML and ANIL with an Equinox CNN, trained through ``ablo.solve`` with plain ``jax.grad``.

Few-shot classification on scikit-learn's 8x8 digits: a task is an N-way K-shot problem on N
random classes (meta-training on digits 0-6, meta-testing on 7-9, so test classes are never seen),
the support set adapted by r inner GD steps, the query set scored. The model is an
``equinox`` CNN whose leaves include non-arrays (``eqx.nn.Lambda(jax.nn.relu)``): θ is its
array part, ``params, static = eqx.partition(model, eqx.is_inexact_array)``, and the losses
rebuild the module with ``eqx.combine(params, static)`` — ablo only ever sees arrays.

* MAML (``ablo.meta.maml``): θ = all CNN weights, φ_0 = θ.
* ANIL (``ablo.meta.anil``): θ = {"body": conv layers, "head": linear layer}, only the head adapts.

The meta-gradient of each method is ``jax.grad`` of the query loss of
``ablo.solve(problem, estimator)(θ, task, key)``: exact (reverse mode), FOM (first-order MAML)
or UFOM with q = 0.2 (Likhosherstov et al. 2021 Alg. 4, ξ drawn from ``key``). One jitted optax step per meta-batch.

    python examples/maml_equinox_cnn.py [--outer-steps 100] [--steps 5] [--ways 3] [--shots 1] [--methods exact,fom,ufom]
"""

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import ablo
from ablo import models
from ablo.data import load_digits

TRAIN_CLASSES, TEST_CLASSES = np.arange(7), np.arange(7, 10)
METHODS = {"exact": ablo.Reverse(), "fom": ablo.FOM(), "ufom": ablo.UFOM(q=0.2)}


def cnn(key, ways: int):
    """(body, head): two 3x3 conv blocks with max-pooling on 8x8 images, then a linear layer."""
    k1, k2, k3 = jax.random.split(key, 3)
    body = eqx.nn.Sequential([
        eqx.nn.Conv2d(1, 16, 3, padding=1, key=k1), eqx.nn.Lambda(jax.nn.relu), eqx.nn.MaxPool2d(2, 2),
        eqx.nn.Conv2d(16, 16, 3, padding=1, key=k2), eqx.nn.Lambda(jax.nn.relu), eqx.nn.MaxPool2d(2, 2),
        eqx.nn.Lambda(jnp.ravel)])
    return body, eqx.nn.Linear(16 * 2 * 2, ways, key=k3)


def images_by_class():
    """(10, 150, 8, 8) images: the first 150 of each digit."""
    x, y = load_digits()
    return jnp.asarray(np.stack([x[y == c][:150].reshape(-1, 8, 8) for c in range(10)]))


def sampler(images, classes, ways: int, shots: int, queries: int):
    """``key -> task``: ``ways`` classes from ``classes``, ``shots`` support and ``queries`` query images each."""
    classes = jnp.asarray(classes)

    def sample(key):
        kc, ki = jax.random.split(key)
        chosen = jax.random.choice(kc, classes, (ways,), replace=False)
        idx = jax.vmap(lambda k: jax.random.permutation(k, images.shape[1])[:shots + queries])(
            jax.random.split(ki, ways))
        x = images[chosen[:, None], idx]  # (ways, shots + queries, 8, 8)
        y = jnp.broadcast_to(jnp.arange(ways)[:, None], idx.shape)
        part = lambda a, b: (x[:, a:b].reshape(-1, 8, 8), y[:, a:b].reshape(-1))
        return {"support": part(0, shots), "query": part(shots, shots + queries)}

    return sample


def apply_with(static):
    """``(arrays, x) -> logits`` of the module ``eqx.combine(arrays, static)`` over a batch."""
    return lambda arrays, x: jax.vmap(eqx.combine(arrays, static))(x)


def build(key, ways: int, steps: int, inner_lr: float):
    """{"maml": (problem, θ0, logits), "anil": (problem, θ0, logits)} for the Equinox CNN, with
    ``logits(θ, φ, x)`` the adapted model's predictions."""
    body, head = cnn(key, ways)
    net_params, net_static = eqx.partition(eqx.nn.Sequential([body, head]), eqx.is_inexact_array)
    body_params, body_static = eqx.partition(body, eqx.is_inexact_array)
    head_params, head_static = eqx.partition(head, eqx.is_inexact_array)
    net, features, classify = apply_with(net_static), apply_with(body_static), apply_with(head_static)
    with_channel = lambda x: x[:, None]  # (n, 8, 8) -> (n, 1, 8, 8)

    maml_logits = lambda theta, phi, x: net(phi, with_channel(x))
    anil_logits = lambda theta, phi, x: classify(phi, features(theta["body"], with_channel(x)))
    maml = ablo.meta.maml(lambda p, x: net(p, with_channel(x)), models.cross_entropy, inner_lr, steps)
    anil = ablo.meta.anil(lambda b, x: features(b, with_channel(x)), classify, models.cross_entropy, inner_lr, steps)
    return {"maml": (maml, net_params, maml_logits),
            "anil": (anil, {"body": body_params, "head": head_params}, anil_logits)}


def meta_loss(problem, estimator):
    """Mean query loss after adaptation over a meta-batch; its jax.grad is the estimator's meta-gradient."""
    solver = ablo.solve(problem, estimator)

    def loss(theta, tasks, key):
        keys = jax.random.split(key, jax.tree_util.tree_leaves(tasks)[0].shape[0])
        return jnp.mean(jax.vmap(lambda t, k: problem.outer_loss(theta, solver(theta, t, k), t))(tasks, keys))

    return loss


def train(problem, estimator, theta, sample, outer_steps: int, meta_batch: int, lr: float):
    opt = optax.adam(lr)
    loss = meta_loss(problem, estimator)

    @jax.jit
    def step(theta, opt_state, key):
        k_tasks, k_est = jax.random.split(key)
        tasks = jax.vmap(sample)(jax.random.split(k_tasks, meta_batch))
        g = jax.grad(loss)(theta, tasks, k_est)
        updates, opt_state = opt.update(g, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state

    opt_state = opt.init(theta)
    for k in range(outer_steps):
        theta, opt_state = step(theta, opt_state, jax.random.PRNGKey(k))
    return theta


def adapted_accuracy(problem, logits, theta, tasks):
    """Mean query accuracy after r inner steps on each task's support set."""
    def one(task):
        phi = problem.optimizer.params(problem.run(theta, task))
        x, y = task["query"]
        return models.accuracy(logits(theta, phi, x), y)

    return jnp.mean(jax.vmap(one)(tasks))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outer-steps", type=int, default=100)
    parser.add_argument("--steps", type=int, default=5, help="inner GD steps r")
    parser.add_argument("--inner-lr", type=float, default=0.5)
    parser.add_argument("--ways", type=int, default=3)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--meta-batch", type=int, default=8)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)}")
    args = parser.parse_args()
    methods = args.methods.split(",")
    if not set(methods) <= set(METHODS):
        parser.error(f"--methods: choose from {', '.join(METHODS)}; got {args.methods}")

    images = images_by_class()
    train_tasks = sampler(images, TRAIN_CLASSES, args.ways, args.shots, 5)
    test_tasks = jax.jit(jax.vmap(sampler(images, TEST_CLASSES, args.ways, args.shots, 10)))(
        jax.random.split(jax.random.PRNGKey(99), 200))
    print(f"{args.ways}-way {args.shots}-shot digits (meta-test on unseen digits 7-9), Equinox CNN, r = {args.steps}, "
          f"{args.outer_steps} outer Adam steps of {args.meta_batch} tasks")
    print(f"{'problem':<8}{'meta-gradient':<16}{'test query acc':>16}")
    for name, (problem, theta0, logits) in build(jax.random.PRNGKey(0), args.ways, args.steps, args.inner_lr).items():
        evaluate = jax.jit(lambda th, problem=problem, logits=logits: adapted_accuracy(problem, logits, th, test_tasks))
        print(f"{name:<8}{'(untrained)':<16}{100 * float(evaluate(theta0)):>15.1f}%")
        for label in methods:
            est = METHODS[label]
            theta = train(problem, est, theta0, train_tasks, args.outer_steps, args.meta_batch, 1e-3)
            print(f"{name:<8}{label:<16}{100 * float(evaluate(theta)):>15.1f}%")


if __name__ == "__main__":
    main()
