"""The unbiased estimators side by side: variance × cost per estimate (offline), and online tuning with
the inner state carried across outer steps.

``compare`` draws many estimates at one (θ, task) and reports, per estimator, the bias ‖E Ĝ − G‖
against the exact hypergradient G, the variance E‖Ĝ − E Ĝ‖² (and over ‖G‖²), the expected cost per
estimate in function calls (gradient evaluations + HVPs + JVPs, ``Estimator.expected_cost``), their product
(the quantity Likhosherstov et al. 2021 Prop. 1 minimises for an unbiased estimator), and the
compiled program's temp memory (XLA's memory analysis). ``calls_to_target`` runs the outer
optimisation with one estimator and counts the function calls it spends until the objective M^(r)
reaches a target: variance and cost per estimate, and bias, paid together.

``online`` is the online setting of truncated hyperparameter tuning and of Persistent ES (Vicol et
al. 2021): one inner run of r steps is shared by the outer loop; outer step k runs the next K inner
steps from the carried state and updates θ once, and the run restarts from V when it reaches r.
The estimate at a window's end t targets ∇_θ L_out(θ, φ_t(θ)), the whole history re-run at the
current θ:

* ``truncated``: reverse through the window only (K-RMD; the carried state is a constant), the
  classic short-horizon-biased estimate (Wu et al. 2018);
* ``ufom``: UFOM-style debiasing over the window, G_trunc + (ξ/q)(G_hist − G_trunc), ξ ~ Bernoulli(q),
  G_hist the exact gradient through the t steps from V (Likhosherstov et al. 2021 Alg. 4 with the
  window's K-RMD as the cheap estimate);
* ``pes``: :class:`ablo.estimators.PES` with windows of K, its particles carried.

``short_horizon_problem`` is Wu et al. 2018's noisy quadratic: learning the log step size of
noisy GD on ½Σ h_i φ_i², where greedy short horizons pick too small a step.
"""

from __future__ import annotations

import math
from typing import Dict, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .estimators import PES, Estimator, Reverse
from .inner import InnerOptimizer
from .problem import BilevelProblem, constant_init
from .checks import check_int, is_int, is_real, is_traced


def _flat(tree):
    return jax.flatten_util.ravel_pytree(tree)[0]


def draws(est: Estimator, problem, theta, task, key, n: int, warmup: int = 0):
    """n independent estimates (stacked, flattened), their Costs (stacked) and the temp memory of one
    estimate (XLA's memory analysis), all from the state reached after ``warmup`` calls (e.g. Adaptive
    UFOM's statistics, whose first call is exact). One compiled estimate serves the warm-up, the
    draws (one call each, so a random-branch estimator runs only the branch it drew) and the
    memory figure."""
    state = est.init(problem, theta, task)
    one = jax.jit(lambda th, s, k: (lambda g, s_, c: (_flat(g), s_, c))(*est.estimate(problem, th, task, s, k)))
    one = one.lower(theta, state, key).compile()
    key, k_warm = jax.random.split(key)
    if jax.tree_util.tree_leaves(state):
        for k in jax.random.split(k_warm, warmup):
            state = one(theta, state, k)[1]
    out = [one(theta, state, k) for k in jax.random.split(key, n)]
    stack = lambda *xs: np.stack([np.asarray(x) for x in xs])
    g, c = jax.tree.map(stack, *[(o[0], o[2]) for o in out])
    return g, c, int(one.memory_analysis().temp_size_in_bytes)


def compare(problem: BilevelProblem, theta, task, methods: Dict[str, Estimator], key, n: int = 256,
            warmup: int = 0) -> list:
    """One row per method: bias (and over ‖G‖), variance, relative variance (variance / ‖G‖²; antithetic
    ES's is (dim θ + 1)/N as σ → 0 on a smooth objective), expected function calls, variance × calls, temp memory
    (or ``skipped`` with the reason when the method refuses the problem). The exact hypergradient
    comes from ``Reverse``. With ``warmup`` > 0 every method first advances its state that many
    calls, and the expected calls are the mean over the draws (the state sets them, e.g. q)."""
    exact = _flat(jax.jit(lambda: Reverse().estimate(problem, theta, task, (), jax.random.PRNGKey(0))[0])())
    sq = float(np.sum(np.asarray(exact, float) ** 2))
    rows = []
    for i, (label, est) in enumerate(methods.items()):
        try:
            g, c, temp = draws(est, problem, theta, task, jax.random.fold_in(key, i), n, warmup)
        except ValueError as e:  # the method does not apply to this problem (e.g. reversible and Adam)
            rows.append(dict(method=label, skipped=str(e)))
            continue
        g = g.astype(float)
        mean = g.mean(0)
        var = float(np.mean(np.sum((g - mean) ** 2, axis=1)))
        calls = float(np.mean(c.function_calls)) if warmup else float(est.expected_cost(problem.steps).function_calls)
        bias = float(np.linalg.norm(mean - np.asarray(exact)))
        rows.append(dict(method=label, bias=bias, bias_se=float(np.sqrt(var / n)),
                         relative_bias=bias / math.sqrt(sq) if sq else math.inf, variance=var,
                         relative_variance=var / sq if sq else math.inf,
                         mean_calls=float(np.mean(c.function_calls)),
                         expected_calls=calls, variance_x_calls=var * calls, dim_theta=int(exact.shape[0]),
                         temp_bytes=temp))
    return rows


class TargetRun(NamedTuple):
    """What :func:`calls_to_target` found: ``calls``, the run's function calls when M^(r) first reached
    the target (inf when not within the budget), the outer ``steps`` taken and the ``objective``
    M^(r) at the last θ."""

    calls: jax.Array
    steps: jax.Array
    objective: jax.Array


def calls_to_target(problem: BilevelProblem, theta0, task, est: Estimator, key, *, target, budget_calls,
                    optimizer: optax.GradientTransformation) -> TargetRun:
    """Function calls an outer optimisation with ``est`` needs to bring the deterministic objective
    M^(r)(θ) = L_out(θ, φ_r(θ)) to ``target`` or below: outer step k draws Ĝ_k (key ``fold_in(key, k)``,
    the estimator's state carried), applies ``optimizer`` and adds the estimate's Cost to the running
    count; M^(r) is evaluated (not charged) after every step. The loop (one ``lax.while_loop``, so the
    compiled program does not grow with the steps) stops at the first step at or below the target or
    once the count reaches ``budget_calls``; ``calls`` is inf unless the target was reached within the
    budget. Pure: jit it with ``key`` (and ``target``, ``budget_calls``) as arguments to run many
    repeats on one compiled program. With ``target`` = −inf it runs until the budget is spent, e.g.
    T steps of an estimator that costs ``budget_calls``/T per step."""
    if not (is_traced(budget_calls) or (is_real(budget_calls) and budget_calls > 0)):
        raise ValueError(f"budget_calls must be a number > 0 (function calls); got {budget_calls!r}")
    same = optax.tree.cast_like
    zero = jnp.zeros((), jnp.result_type(float))

    def going(c):
        _, _, _, calls, k, m = c
        return (calls < budget_calls) & ~(m <= target)

    def step(c):
        theta, opt_state, est_state, calls, k, _ = c
        g, new_est, cost = est.estimate(problem, theta, task, est_state, jax.random.fold_in(key, k))
        updates, new_opt = optimizer.update(g, opt_state, theta)
        new_theta = same(optax.apply_updates(theta, updates), theta)
        calls = calls + cost.function_calls.astype(calls.dtype)
        return (new_theta, same(new_opt, opt_state), same(new_est, est_state), calls, k + 1,
                problem.objective(new_theta, task).astype(zero.dtype))

    start = (theta0, optimizer.init(theta0), est.init(problem, theta0, task), zero, jnp.zeros((), jnp.int32),
             problem.objective(theta0, task).astype(zero.dtype))
    _, _, _, calls, k, m = jax.lax.while_loop(going, step, start)
    return TargetRun(jnp.where((m <= target) & (calls <= budget_calls), calls, jnp.inf), k, m)


def prefix_objective(problem: BilevelProblem, theta, task, t):
    """L_out(θ, φ_t) after t ≤ r inner steps from V(θ) (t may be traced): a masked scan, exact under
    ``jax.grad``."""
    def body(s, j):
        new = problem.step(theta, s, j, task)
        return jax.tree_util.tree_map(lambda a, b: jnp.where(j < t, a, b), new, s), None

    s, _ = jax.lax.scan(body, problem.initial_state(theta, task), jnp.arange(problem.steps))
    return problem.outer_loss(theta, problem.optimizer.params(s), task)


class OnlineState(NamedTuple):
    """θ, the carried inner state, the step the next window starts at, the PES state."""

    theta: jax.Array
    s: object
    t: jax.Array
    pes: object


METHODS = ("truncated", "ufom", "pes")


def online(problem: BilevelProblem, theta0, task, method: str, K: int, outer_steps: int, lr: float, key, *,
           q: float = 0.2, sigma: float = 0.01, pairs: int = 8):
    """Online tuning: ``outer_steps`` outer SGD steps of size ``lr``, each after K more inner steps
    of one carried run (restarted from V at r). Returns the θ after every outer step (stacked)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    r = problem.steps
    if not is_int(K) or K < 1 or r % K:
        raise ValueError(f"K (window length) must be an integer >= 1 dividing r = {r}; got {K!r}")
    pes = PES(sigma=sigma, pairs=pairs, K=K)

    def window_loss(theta, s, t):
        s, _ = jax.lax.scan(lambda s_, j: (problem.step(theta, s_, j, task), None), s, t + jnp.arange(K))
        return problem.outer_loss(theta, problem.optimizer.params(s), task), s

    def step(st: OnlineState, k):
        s = jax.tree_util.tree_map(lambda a, b: jnp.where(st.t == 0, a, b), problem.initial_state(st.theta, task), st.s)
        pes_state = st.pes
        if method == "pes":
            g, pes_state, _ = pes.estimate(problem, st.theta, task, st.pes, k)
            s_new = s
        else:
            stop = lambda t_: jax.lax.stop_gradient(t_)
            g, s_new = jax.grad(lambda th: window_loss(th, stop(s), st.t), has_aux=True)(st.theta)
            if method == "ufom":
                def debias(_):
                    full = jax.grad(lambda th: prefix_objective(problem, th, task, st.t + K))(st.theta)
                    return g + (full - g) / q

                g = jax.lax.cond(jax.random.bernoulli(k, q), debias, lambda _: g, None)
        t = jnp.where(st.t + K >= r, 0, st.t + K).astype(jnp.int32)
        theta = st.theta - lr * g
        return OnlineState(theta, s_new, t, pes_state), theta

    s0 = problem.initial_state(theta0, task)
    init = OnlineState(theta0, s0, jnp.zeros((), jnp.int32), pes.init(problem, theta0, task))
    _, thetas = jax.jit(lambda st, ks: jax.lax.scan(step, st, ks))(init, jax.random.split(key, outer_steps))
    return thetas


def short_horizon_problem(dim: int = 10, r: int = 100, noise: float = 1.0, seed: int = 0,
                          pieces: int = 1) -> BilevelProblem:
    """Wu et al. 2018's noisy quadratic: L(φ) = ½Σ h_i φ_i² with h_i log-spaced in [0.01, 1], φ_0 = 1,
    noisy GD φ ← φ − e^{θ_p(t)} (∇L + √h ⊙ ζ_t) (a fixed noise sequence ζ_t ~ N(0, noise² I)), outer
    loss L(φ_r). θ is the log step size: a scalar for ``pieces`` = 1, else a piecewise-constant
    schedule of shape (pieces,), step t using θ[p(t)] with p(t) = ⌊t · pieces / r⌋. The best θ for
    the horizon r is larger than the greedy one."""
    check_int("pieces", pieces, 1)
    if pieces > r:
        raise ValueError(f"pieces must be <= r = {r} (each piece at least one step); got {pieces}")
    h = jnp.logspace(-2, 0, dim)
    zeta = noise * jax.random.normal(jax.random.PRNGKey(seed), (r, dim))
    loss = lambda theta, phi, task: 0.5 * jnp.sum(h * phi ** 2)

    def update(g, phi, theta, t):
        if jnp.size(theta) != pieces:
            raise ValueError(f"theta must hold one log step size per piece, {pieces} in all (shape "
                             f"{'()' if pieces == 1 else (pieces,)}); got shape {jnp.shape(theta)}")
        return phi - jnp.exp(jnp.reshape(theta, -1)[t * pieces // r]) * (g + jnp.sqrt(h) * zeta[t])

    opt = InnerOptimizer(lambda phi: phi, update, lambda phi: phi, "noisy-gd")
    return BilevelProblem(loss, loss, opt, r, init=constant_init(jnp.ones(dim)))
