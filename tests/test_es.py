"""ES and Persistent ES (float64): means over 2000 keys within 4 standard errors of the smoothed
objective's gradient, computed by Gauss–Hermite quadrature on a 1-D problem; the smoothed gradient
tends to the exact one as σ → 0 at rate σ²; ES's variance is (dim θ + 1)‖∇f‖²/N."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ablo
from ablo.estimators import ES, PES, Reverse, parse

import _problems as P

KEYS = 2000
R, K = 4, 2


def inner(theta, phi, task):
    return 0.5 * (phi - jnp.sin(2 * theta)) ** 2 + 0.05 * phi ** 4


def outer(theta, phi, task):
    return (phi - 0.5) ** 2 + 0.1 * theta ** 2


def problem1d():
    return ablo.BilevelProblem(inner, outer, ablo.gd(lambda th, t: 0.3 * jax.nn.sigmoid(th)), R,
                               init=lambda th, task: 0.5 * th)


THETA = jnp.asarray(0.3)


def windows_objective(problem, thetas):
    """L_out at the end of len(thetas) windows of K steps, window w run with thetas[w] (V at thetas[0])."""
    s = problem.initial_state(thetas[0], None)
    for w, th in enumerate(thetas):
        s = problem.run(th, None, w * K, (w + 1) * K, s)
    return problem.outer_loss(thetas[-1], problem.optimizer.params(s), None)


def smoothed_grad(f, sigma, dims, nodes=40):
    """∂/∂θ E f(θ + σz_1, …, θ + σz_dims) = E[f · Σ z] / σ by tensor Gauss–Hermite quadrature."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / np.sqrt(2 * np.pi)
    grids = np.meshgrid(*[x] * dims, indexing="ij")
    weights = np.prod(np.meshgrid(*[w] * dims, indexing="ij"), axis=0)
    z = np.stack([g.ravel() for g in grids], axis=1)
    vals = jax.jit(jax.vmap(lambda zz: f(THETA + sigma * zz)))(jnp.asarray(z))
    return float(np.sum(weights.ravel() * np.asarray(vals) * z.sum(1)) / sigma)


def assert_within_4se(samples, target):
    samples = np.asarray(samples).reshape(samples.shape[0], -1)
    se = samples.std(0) / np.sqrt(samples.shape[0])
    assert np.all(se > 0)
    z = np.abs(samples.mean(0) - np.asarray(target).ravel()) / se
    assert z.max() < 4, z


def test_es_mean_is_the_smoothed_gradient_and_tends_to_the_exact_one():
    problem, sigma = problem1d(), 0.1
    f = lambda v: windows_objective(problem, [v[0], v[0]])  # the r-step objective (both windows at θ)
    target = smoothed_grad(f, sigma, 1)
    est = ES(sigma=sigma, pairs=1)
    g = jax.jit(jax.vmap(lambda k: est.estimate(problem, THETA, None, (), k)[0]))(
        jax.random.split(jax.random.PRNGKey(0), KEYS))
    assert_within_4se(g, target)
    exact = float(jax.grad(ablo.objective(problem))(THETA, None))
    # smoothing bias (σ²/2) f''' + O(σ⁴): a quarter at half the σ
    bias = [smoothed_grad(f, s, 1) - exact for s in (0.1, 0.05)]
    assert abs(bias[0]) > 1e-6 and abs(bias[1] / bias[0] - 0.25) < 0.02


def test_es_variance_is_linear_in_dim_theta():
    problem, theta, task = P.problem("gd", steps=4), P.make_theta(), P.make_task(jax.random.PRNGKey(0))
    exact = P.flat(jax.jit(lambda: Reverse().estimate(problem, theta, task, (), None)[0])())
    est = ES(sigma=1e-4, pairs=2)
    g, _, c = jax.jit(jax.vmap(lambda k: est.estimate(problem, theta, task, (), k)))(
        jax.random.split(jax.random.PRNGKey(1), KEYS))
    g = jax.vmap(P.flat)(g)
    assert_within_4se(g, exact)  # bias O(σ²) ≈ 1e-8, far below the standard error
    var = float(np.mean(np.sum((np.asarray(g) - np.asarray(exact)) ** 2, axis=1)))
    model = est.variance(exact.shape[0], float(np.sum(exact ** 2)))
    assert abs(var / model - 1) < 0.15, (var, model)
    assert float(c.grad_evals[0]) == 2 * 2 * 4 and float(c.states[0]) == 1 and float(c.hvps[0]) == 0


def test_pes_windows_are_unbiased_for_their_smoothed_prefix_objectives():
    problem, sigma = problem1d(), 0.1
    est = PES(sigma=sigma, pairs=1, K=K)
    state = est.init(problem, THETA, None)

    def two_windows(k):
        g1, s, _ = est.estimate(problem, THETA, None, state, jax.random.fold_in(k, 0))
        g2, s, c = est.estimate(problem, THETA, None, s, jax.random.fold_in(k, 1))
        g3, s, _ = est.estimate(problem, THETA, None, s, jax.random.fold_in(k, 2))  # restarts from V
        return g1, g2, g3, s.t, c

    g1, g2, g3, t, c = jax.jit(jax.vmap(two_windows))(jax.random.split(jax.random.PRNGKey(2), KEYS))
    t1 = smoothed_grad(lambda v: windows_objective(problem, [v[0]]), sigma, 1)
    t2 = smoothed_grad(lambda v: windows_objective(problem, [v[0], v[1]]), sigma, 2)
    assert_within_4se(g1, t1)
    assert_within_4se(g2, t2)
    assert_within_4se(g3, t1)
    assert np.all(np.asarray(t) == K) and float(c.grad_evals[0]) == 2 * K and float(c.states[0]) == 2
    # PES's windows differ from truncated reverse: window 2's target includes window 1's history
    assert abs(t2 - t1) > 0.01


def test_bad_settings_and_specs():
    assert parse("es:sigma=0.01,pairs=4") == ES(sigma=0.01, pairs=4)
    assert parse("pes:K=2").K == 2
    with pytest.raises(ValueError, match="sigma"):
        ES(sigma=0.0)
    with pytest.raises(ValueError, match="pairs"):
        PES(pairs=0)
    with pytest.raises(ValueError, match="must divide r"):
        PES(K=3).estimate(problem1d(), THETA, None, PES(K=3).init(problem1d(), THETA, None), jax.random.PRNGKey(0))
