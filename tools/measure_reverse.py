"""Reverse-mode hypergradient: temp memory (XLA memory_analysis) and time of ablo's ``Reverse``
variants against ``jax.grad`` through a ``lax.scan`` of the same steps, on (a) a
hypercleaning-shaped problem (5000×784 linear, r = 100) and (b) an MLP inner model (784-512-512-10
tanh, 1000 examples, r = 50). float32, medians of ``--repeats`` calls after one warm-up.

    PYTHONPATH=src python tools/measure_reverse.py [--repeats 3] [--problems a,b]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import ablo
from ablo.estimators import base


def cross_entropy(logits, y):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))


def hypercleaning(key, n=5000, d=784, k=10, r=100):
    kx, ky, kv = jax.random.split(key, 3)
    x, y = jax.random.normal(kx, (n, d)) / np.sqrt(d), jax.random.randint(ky, (n,), 0, k)
    xv, yv = jax.random.normal(kv, (1000, d)) / np.sqrt(d), jax.random.randint(kv, (1000,), 0, k)

    def inner(theta, phi, task):
        w, b = phi
        losses = -jnp.take_along_axis(jax.nn.log_softmax(x @ w + b), y[:, None], 1)[:, 0]
        return jnp.mean(jax.nn.sigmoid(theta) * losses) + 1e-3 * jnp.sum(w ** 2)

    def outer(theta, phi, task):
        return cross_entropy(xv @ phi[0] + phi[1], yv)

    p = ablo.BilevelProblem(inner, outer, ablo.gd(0.1), r, init=ablo.constant_init((jnp.zeros((d, k)), jnp.zeros(k))))
    return p, jnp.zeros(n)


def mlp(key, n=1000, d=784, h=512, k=10, r=50):
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
        losses = -jnp.take_along_axis(jax.nn.log_softmax(net(phi, x)), y[:, None], 1)[:, 0]
        return jnp.mean(jax.nn.sigmoid(theta) * losses)

    def outer(theta, phi, task):
        return cross_entropy(net(phi, xv), yv)

    p = ablo.BilevelProblem(inner, outer, ablo.gd(0.05), r, init=ablo.constant_init(phi0))
    return p, jnp.zeros(n)


def step_vjp_reverse_over_reverse(problem, theta, s_prev, t, task, b_theta, b_s):
    """The former ``base.step_vjp``: ``vjp`` of a step that calls ``grad`` (reverse-over-reverse)."""
    _, vjp = jax.vjp(lambda th, s: problem.step(th, s, t, task), theta, s_prev)
    d_theta, b_s = vjp(b_s)
    return base.tree_add(b_theta, d_theta), b_s


def variants(p):
    def est(e, step_vjp=base.step_vjp):
        def f(theta):
            saved = base.step_vjp
            base.step_vjp = step_vjp  # reverse_over looks step_vjp up at trace time
            try:
                return e.estimate(p, theta, None, (), None)[0]
            finally:
                base.step_vjp = saved
        return f

    return {
        "jax.grad through lax.scan": jax.grad(lambda th: p.objective(th, None)),
        "Reverse(store='states'), mixed mode": est(ablo.Reverse()),
        "Reverse(store='states'), reverse-over-reverse": est(ablo.Reverse(), step_vjp_reverse_over_reverse),
        "Reverse(store='residuals')": est(ablo.Reverse(store="residuals")),
    }


def one_step(p, theta):
    """One step VJP alone, jitted, in both forms: ({label: function of (θ, s, b)}, arguments)."""
    s = p.initial_state(theta, None)
    b = jax.tree_util.tree_map(jnp.ones_like, s)
    fns = {f"one step VJP, {k}": (lambda th, s, b, f=f: f(p, th, s, 3, None, th, b))
           for k, f in (("mixed mode", base.step_vjp), ("reverse-over-reverse", step_vjp_reverse_over_reverse))}
    return fns, (theta, s, b)


def measure(fns, args, repeats):
    """{label: (temp bytes, median seconds, result)}, the calls interleaved
    round-robin so that load on a shared machine hits every variant alike."""
    compiled = {k: jax.jit(f).lower(*args).compile() for k, f in fns.items()}
    out = {k: jax.block_until_ready(c(*args)) for k, c in compiled.items()}
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, c in compiled.items():
            t0 = time.perf_counter()
            jax.block_until_ready(c(*args))
            times[k].append(time.perf_counter() - t0)
    return {k: (c.memory_analysis().temp_size_in_bytes, float(np.median(times[k])), out[k])
            for k, c in compiled.items()}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--problems", default="a,b")
    args = ap.parse_args()
    for name in args.problems.split(","):
        p, theta = {"a": hypercleaning, "b": mlp}[name](jax.random.PRNGKey(0))
        print(f"problem ({name}) r = {p.steps}")
        for (fns, fargs), repeats in (((variants(p), (theta,)), args.repeats), (one_step(p, theta), 10 * args.repeats)):
            res = measure(fns, fargs, repeats)
            (_, t0, g0) = next(iter(res.values()))
            for label, (temp, t, g) in res.items():
                err = float(base.tree_sq_norm(base.tree_sub(g, g0)) ** 0.5 / base.tree_sq_norm(g0) ** 0.5)
                print(f"  {label:48s} temp {temp / 2**20:9.1f} MiB  time {t * 1e3:9.1f} ms ({t / t0:5.2f}x)  "
                      f"rel.diff {err:.1e}", flush=True)
