"""One reverse step's product alone: ablo's mixed-mode step VJP (``estimators.base.step_vjp``:
one gradient and one forward-over-reverse HVP) against reverse-over-reverse (``jax.vjp`` of a step
that calls ``jax.grad``), jitted, temp memory from ``memory_analysis`` and medians of alternating
calls, on (a) a hypercleaning-shaped problem (5000×784 linear) and (b) an MLP inner model
(784-512-512-10 tanh, 1000 examples). float32. Whole-loop times against plain JAX are the
``anchors`` command's.

    python -m ablo.bench step-vjp [--repeats 30] [--problems a,b]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..estimators.base import step_vjp
from ..inner import gd
from ..problem import BilevelProblem, constant_init


def _ce(logits, y):
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)[:, 0]


def hypercleaning(key, n=5000, d=784, k=10):
    kx, ky, kv = jax.random.split(key, 3)
    x, y = jax.random.normal(kx, (n, d)) / np.sqrt(d), jax.random.randint(ky, (n,), 0, k)
    xv, yv = jax.random.normal(kv, (1000, d)) / np.sqrt(d), jax.random.randint(kv, (1000,), 0, k)

    def inner(theta, phi, task):
        w, b = phi
        return jnp.mean(jax.nn.sigmoid(theta) * _ce(x @ w + b, y)) + 1e-3 * jnp.sum(w ** 2)

    def outer(theta, phi, task):
        return jnp.mean(_ce(xv @ phi[0] + phi[1], yv))

    p = BilevelProblem(inner, outer, gd(0.1), 1, init=constant_init((jnp.zeros((d, k)), jnp.zeros(k))))
    return p, jnp.zeros(n)


def mlp(key, n=1000, d=784, h=512, k=10):
    kx, ky, kv, k1, k2, k3 = jax.random.split(key, 6)
    x, y = jax.random.normal(kx, (n, d)), jax.random.randint(ky, (n,), 0, k)
    xv, yv = jax.random.normal(kv, (500, d)), jax.random.randint(kv, (500,), 0, k)
    phi0 = [(jax.random.normal(k1, (d, h)) / np.sqrt(d), jnp.zeros(h)),
            (jax.random.normal(k2, (h, h)) / np.sqrt(h), jnp.zeros(h)),
            (jax.random.normal(k3, (h, k)) / np.sqrt(h), jnp.zeros(k))]

    def net(phi, x):
        for w, b in phi[:-1]:
            x = jnp.tanh(x @ w + b)
        return x @ phi[-1][0] + phi[-1][1]

    def inner(theta, phi, task):
        return jnp.mean(jax.nn.sigmoid(theta) * _ce(net(phi, x), y))

    def outer(theta, phi, task):
        return jnp.mean(_ce(net(phi, xv), yv))

    return BilevelProblem(inner, outer, gd(0.05), 1, init=constant_init(phi0)), jnp.zeros(n)


def reverse_over_reverse(problem, theta, s_prev, t, task, b_theta, b_s):
    """``vjp`` of a step that calls ``grad``: what ablo's mixed mode replaces."""
    _, vjp = jax.vjp(lambda th, s: problem.step(th, s, t, task), theta, s_prev)
    d_theta, b_s = vjp(b_s)
    return optax.tree.add(b_theta, d_theta), b_s


def measure(p, theta, repeats: int) -> dict:
    """{label: (temp bytes, median seconds, result)} of one step VJP in each form, the calls alternating."""
    s = p.initial_state(theta, None)
    b = jax.tree_util.tree_map(jnp.ones_like, s)
    forms = {"mixed mode": step_vjp, "reverse-over-reverse": reverse_over_reverse}
    compiled = {k: jax.jit(lambda th, s, b, f=f: f(p, th, s, 3, None, th, b)).lower(theta, s, b).compile()
                for k, f in forms.items()}
    out = {k: jax.block_until_ready(c(theta, s, b)) for k, c in compiled.items()}
    times = {k: [] for k in forms}
    for i in range(repeats):
        for k in (list(compiled) if i % 2 == 0 else list(compiled)[::-1]):
            t0 = time.process_time()
            jax.block_until_ready(compiled[k](theta, s, b))
            times[k].append(time.process_time() - t0)
    return {k: (c.memory_analysis().temp_size_in_bytes, float(np.median(times[k])), out[k]) for k, c in compiled.items()}


def main(argv: list) -> None:
    """The ``step-vjp`` command."""
    ap = argparse.ArgumentParser(prog="python -m ablo.bench step-vjp", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--problems", default="a,b")
    args = ap.parse_args(argv)
    for name in args.problems.split(","):
        p, theta = {"a": hypercleaning, "b": mlp}[name](jax.random.PRNGKey(0))
        res = measure(p, theta, args.repeats)
        _, t0, g0 = res["mixed mode"]
        print(f"problem ({name}): one step VJP, CPU seconds, medians of {args.repeats}")
        for label, (temp, t, g) in res.items():
            err = float(optax.tree.norm(optax.tree.sub(g, g0)) / optax.tree.norm(g0))
            print(f"  {label:22s} temp {temp / 2**20:9.1f} MiB  time {t * 1e3:9.1f} ms ({t / t0:5.2f}x)  rel.diff {err:.1e}")
