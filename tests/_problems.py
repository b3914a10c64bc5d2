"""Small smooth bilevel problems shared by the core tests (pytree θ and φ)."""

import jax
import jax.numpy as jnp

import ablo


def inner_loss(theta, phi, task):
    w, b = phi["w"], phi["b"]
    x, y = task
    pred = jnp.tanh(x @ w + b)
    return 0.5 * jnp.mean((pred - y) ** 2) + 0.5 * jnp.sum(jnp.exp(theta["log_reg"]) * w ** 2) + 0.1 * jnp.sum(
        theta["shift"] * w)


def outer_loss(theta, phi, task):
    x, y = task
    pred = jnp.tanh(x @ phi["w"] + phi["b"])
    return jnp.mean((pred - 0.5 * y) ** 2) + 0.01 * jnp.sum(theta["shift"] ** 2)


def init(theta, task):
    return {"w": 0.3 * theta["shift"], "b": jnp.asarray(0.1)}


def make_theta(d=3):
    return {"log_reg": jnp.linspace(-1.0, 0.5, d), "shift": jnp.linspace(0.2, -0.4, d), "lr": jnp.asarray(0.3)}


def make_task(key, n=8, d=3):
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (n, d))
    return x, jnp.sin(x @ jnp.arange(1.0, d + 1.0)) + 0.1 * jax.random.normal(ky, (n,))


def learned_lr(theta, t):
    """Step size read from θ, so it is a hyperparameter too."""
    return 0.2 * jax.nn.sigmoid(theta["lr"])


OPTIMIZERS = {
    "gd": lambda: ablo.gd(learned_lr),
    "momentum": lambda: ablo.momentum(lambda theta, t: 0.1 * jax.nn.sigmoid(theta["lr"]), beta=0.8),
    "adam": lambda: ablo.adam(lambda t: 0.05 / (1.0 + 0.01 * t)),
}


def problem(optimizer="gd", steps=5):
    return ablo.BilevelProblem(inner_loss, outer_loss, OPTIMIZERS[optimizer](), steps, init=init)


def central_fd(f, theta, h=1e-5):
    flat, unravel = jax.flatten_util.ravel_pytree(theta)
    f_flat = jax.jit(lambda v: f(unravel(v)))
    eye = jnp.eye(flat.shape[0])
    return unravel(jnp.stack([(f_flat(flat + h * e) - f_flat(flat - h * e)) / (2 * h) for e in eye]))


def flat(tree):
    return jax.flatten_util.ravel_pytree(tree)[0]


import jax.flatten_util  # noqa: E402
