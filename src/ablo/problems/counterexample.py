"""The counterexample family of Likhosherstov et al. 2021, Theorem 2 (§5.1, §4.4): two tasks f_i of one
real parameter, V(θ) = θ, L_in = L_out = f_i(φ), r GD steps; shared by the ``counterexample`` and
``synthetic-q`` experiments. A task is (a_i, b_i, A): with z = |φ − b_i/a_i|,

    f = a z²/2                                              z ≤ A
    f = −a(z−A)³/6 + a(z−A)²/2 + aAz − aA²/2                A < z ≤ A+1
    f = (a/2 + aA) z − a/6 − aA²/2 − aA/2                   z > A+1.

The ``counterexample`` experiment's protocol:

Two equally likely tasks, s = p = 1, V(θ) = θ, L_in = L_out = f_i(φ), r = 10 GD steps of size
α = 0.1, a = (0.5, 1.5), b_1 = 0, p_i = (1 − α a_i)^r,
b_2 = 2√(2D) / |(a_1 p_1² + a_2 p_2²) p_2 / (a_1 p_1 + a_2 p_2) − p_2²| with D = 0.06,
A = |b_1/a_1 − b_2/a_2| + 1 (SPEC §2), f_i as above. ``methods`` are estimator specs (``fom``, ``ufom:q=0.1``, ``adaptive-ufom``, ...). Outer SGD
θ_k = θ_{k−1} − γ_k G(θ_{k−1}, T_k), γ_k = γ_0/(k+1), k = 1..10,000, one task per step,
θ_0 ~ U(−10, 30): ``outer.make_step`` (optax SGD with that schedule) under ``outer.scan``,
vmapped over seeds, one jit per method. The inner step α is checked against the curvature
a_i of each f_i at its minimum before training; a non-finite step stops the run with
:class:`ablo.outer.Diverged`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import estimators, outer
from ..curvature import check_step_size
from ..inner import gd
from ..problem import BilevelProblem


def piecewise_f(phi, task):
    """f_i(φ) of Likhosherstov et al. 2021 Theorem 2 (convex, twice differentiable, bounded gradient); task = (a, b, A)."""
    a, b, A = task
    d = phi - b / a
    z = jnp.abs(d)
    u = z - A
    mid = -a * u ** 3 / 6 + a * u ** 2 / 2 + a * A * z - a * A ** 2 / 2
    far = (a / 2 + a * A) * z - a / 6 - a * A ** 2 / 2 - a * A / 2
    return jnp.where(z <= A, a * d * d / 2, jnp.where(z <= A + 1, mid, far))


def counterexample_constants(alpha=0.1, r=10, a=(0.5, 1.5), D=0.06):
    """(b, A) of the construction: b = (0, b_2) from D, A = |b_1/a_1 − b_2/a_2| + 1."""
    a = np.asarray(a, float)
    p = (1 - alpha * a) ** r
    b2 = 2 * np.sqrt(2 * D) / abs((a[0] * p[0] ** 2 + a[1] * p[1] ** 2) * p[1] / (a[0] * p[0] + a[1] * p[1])
                                  - p[1] ** 2)
    b = np.array([0.0, b2])
    return b, float(abs(b[0] / a[0] - b[1] / a[1]) + 1)


def make_problem(alpha: float, r: int):
    """The two-task problem: V(θ) = θ, L_in = L_out = f_i(φ), r GD steps of size α; tasks stacked."""
    loss = lambda theta, phi, task: piecewise_f(phi, task)
    return BilevelProblem(loss, loss, gd(float(alpha)), int(r))


def stack_tasks(a, b, A):
    a = jnp.asarray(a, float)
    return a, jnp.asarray(b, float), jnp.full_like(a, float(A))


def exact_grad_fn(problem, tasks):
    """Jitted, vectorised θ ↦ (∂M/∂θ, M) with M(θ) = mean_i M(θ; T_i) (autodiff through the
    unrolled loop: exact), for θ of any shape."""
    M = lambda th: jnp.mean(jax.vmap(lambda t: problem.objective(th, t))(tasks))
    vec = lambda f: jax.jit(lambda x: jnp.vectorize(f)(jnp.asarray(x, float)))
    return vec(jax.grad(M)), vec(M)


def sgd_scan(problem, estimator, tasks, theta0, key, gamma0: float, steps: int) -> dict:
    """One outer SGD run (Likhosherstov et al. 2021 Alg. 1): each step draws one of the stacked ``tasks``
    uniformly, γ_k = γ0/(k+1) for k = 1..steps (optax SGD; optax counts from 0). ``outer.make_step``
    under ``outer.scan``: pure, so callers vmap it over seeds (``theta0``, ``key``) and task sets.
    Returns the stacked per-step metrics (θ after each step as ``theta``)."""
    n_tasks = jax.tree_util.tree_leaves(tasks)[0].shape[0]
    sampler = lambda k: jax.tree_util.tree_map(lambda x: x[jax.random.randint(k, (), 0, n_tasks)], tasks)
    sgd = optax.sgd(lambda count: gamma0 / (count + 2.0))
    state = outer.init(problem, estimator, sgd, theta0, sampler(key))
    return outer.scan(outer.make_step(problem, estimator, sgd, sampler, log_losses=False), state, key, steps)[1]


def check_alpha(problem, tasks, alpha: float, name: str = "alpha") -> None:
    """Refuse α ≥ 2/L, L = a_i the curvature of f_i at its minimum b_i/a_i (the largest along the
    loop); ``name`` is the config key reported."""
    for i in range(tasks[0].shape[0]):
        task = jax.tree_util.tree_map(lambda x: x[i], tasks)
        check_step_size(problem, task[1] / task[0], task, alpha, name=name)


def descend(problem, estimator, tasks, theta0, keys, cfg, label: str):
    """:func:`sgd_scan` for a batch of seeds (``theta0``, ``keys``: one each), vmapped, one jit.
    Returns (θ_k for k = 1..steps, cumulative function calls), each (seeds, steps);
    :class:`ablo.outer.Diverged` names the first non-finite step."""
    one = lambda th, k: sgd_scan(problem, estimator, tasks, th, k, cfg.gamma0, cfg.outer_steps)
    m = jax.jit(jax.vmap(one))(theta0, keys)
    outer.raise_if_diverged(m, label)
    return np.asarray(m["theta"]), np.asarray(m["function_calls"], float)


def roots(fn, lo=-50.0, hi=50.0, n=20001, refine=3):
    """Sign changes of a vectorised scalar function on [lo, hi], each refined by ``refine`` passes
    of an n-point grid over its bracket (same shape each time: one compilation)."""
    out = []
    grid = np.linspace(lo, hi, n)
    g = np.asarray(fn(grid))
    for i in np.where(np.sign(g[:-1]) * np.sign(g[1:]) < 0)[0]:
        a, b = grid[i], grid[i + 1]
        for _ in range(refine):
            sub = np.linspace(a, b, n)
            gs = np.asarray(fn(sub))
            j = int(np.argmax(np.sign(gs[:-1]) * np.sign(gs[1:]) <= 0))
            a, b = sub[j], sub[j + 1]
        out.append(0.5 * (a + b))
    return out


def mean_fom_fn(problem, tasks):
    """Jitted θ-vector ↦ E_T[G_FO(θ, T)]: its zeros are where FOM's SGD settles."""
    fom = estimators.get("fom")
    return jax.jit(jax.vmap(lambda th: jnp.mean(jax.vmap(lambda t: fom.estimate(problem, th, t, (), None)[0])(tasks))))
