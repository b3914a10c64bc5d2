"""UFOM is unbiased (Likhosherstov et al. 2021 eq. 12-13) and FOM is not; Proposition 1's costs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ablo
from _problems import flat, make_task, make_theta, problem


@pytest.mark.parametrize("exact", [ablo.Recompute(), ablo.Checkpointed(M=2)])
def test_ufom_mean_matches_exact_while_fom_is_biased(exact):
    p = problem("gd", 6)
    theta, task = make_theta(), make_task(jax.random.PRNGKey(11))
    g_exact = flat(ablo.Reverse().estimate(p, theta, task, (), None)[0])
    g_fom = flat(ablo.FOM().estimate(p, theta, task, (), None)[0])
    ufom = ablo.UFOM(q=0.3, exact=exact)
    n = 4000
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    draws = jax.jit(jax.vmap(lambda k: flat(ufom.estimate(p, theta, task, (), k)[0])))(keys)
    mean, sem = draws.mean(0), draws.std(0) / np.sqrt(n)
    assert jnp.all(jnp.abs(mean - g_exact) <= 4 * sem + 1e-12), (mean - g_exact) / sem
    # FOM's bias is far outside the same band on the coordinates that carry it
    z_fom = jnp.abs(g_fom - g_exact) / jnp.maximum(sem, 1e-12)
    assert float(z_fom.max()) > 20
    # the sample has both branches in about the proportion q
    took_exact = jnp.any(jnp.abs(draws - g_fom) > 1e-12, axis=1).mean()
    assert abs(float(took_exact) - 0.3) < 0.03


def test_ufom_with_q_one_is_exact_and_fom_for_xi_zero():
    p = problem("adam", 5)
    theta, task = make_theta(), make_task(jax.random.PRNGKey(2))
    g_exact = flat(ablo.Reverse().estimate(p, theta, task, (), None)[0])
    g = flat(ablo.UFOM(q=1.0).estimate(p, theta, task, (), jax.random.PRNGKey(3))[0])
    assert jnp.allclose(g, g_exact, rtol=1e-12)


R = 7


def counts(c):
    return (float(c.grad_evals), float(c.hvps), float(c.jvps), float(c.states))


def test_cost_records_equal_the_analytic_counts():
    r = R
    p = problem("momentum", r)
    theta, task = make_theta(), make_task(jax.random.PRNGKey(0))
    run = lambda est: counts(est.estimate(p, theta, task, (), jax.random.PRNGKey(0))[2])
    m, c = ablo.Checkpointed(M=3).layout(r)
    assert (m, c) == (3, 3)
    assert run(ablo.Reverse()) == (r + 1, r, 1, r)
    assert run(ablo.Recompute()) == (r + 1 + r * (r - 1) / 2, r, 1, 1)
    # two-level: segments of 3, 3, 1 steps; the two full ones recomputed (2 steps each) into a
    # buffer of 2 states beside their 2 checkpoints
    assert run(ablo.Checkpointed(M=3)) == (r + 1 + 2 * 2, r, 1, 2 + 2)
    assert run(ablo.Truncated(K=4)) == (r + 1, 4, 1, 4)
    assert run(ablo.FOM()) == (r + 1, 0, 1, 1)
    n_theta = flat(theta).shape[0]
    assert run(ablo.Forward()) == (r + 1, 0, (r + 1) * n_theta, n_theta + 1)


def test_ufom_cost_follows_proposition_1():
    r, q = R, 0.25
    p = problem("gd", r)
    theta, task = make_theta(), make_task(jax.random.PRNGKey(0))
    ufom = ablo.UFOM(q=q)
    keys = jax.random.split(jax.random.PRNGKey(4), 4000)
    g, _, c = jax.jit(jax.vmap(lambda k: ufom.estimate(p, theta, task, (), k)))(keys)
    xi = np.asarray(c.hvps) > 0
    # per draw: exactly the counts of the branch taken
    np.testing.assert_array_equal(np.asarray(c.grad_evals), r + 1 + xi * r * (r - 1) / 2)
    np.testing.assert_array_equal(np.asarray(c.hvps), xi * r)
    np.testing.assert_array_equal(np.asarray(c.states), 1)
    # in expectation: r + 1 + q r(r−1)/2 gradient evaluations and q r HVPs (Prop. 1)
    se = np.sqrt(q * (1 - q) / len(keys))
    assert abs(xi.mean() - q) < 4 * se
    assert abs(np.asarray(c.grad_evals, np.float64).mean() - (r + 1 + xi.mean() * r * (r - 1) / 2)) < 1e-9


@pytest.mark.parametrize("name", ["ufom", "adaptive-ufom", "debiased"])
def test_float32_theta_keeps_its_dtype_in_both_branches(name):
    """With float64 enabled, 1/q is float64: both ξ branches must still return θ's dtype."""
    p = ablo.BilevelProblem(lambda th, ph, t: jnp.sum(jnp.exp(th) * ph ** 2), lambda th, ph, t: jnp.sum((ph - 1) ** 2),
                            ablo.gd(0.1), 3, init=lambda th, t: jnp.ones(3, jnp.float32))
    theta = jnp.zeros(3, jnp.float32)
    est = ablo.estimators.get(name, q=0.5) if name != "adaptive-ufom" else ablo.estimators.get(name)
    g, _, _ = est.estimate(p, theta, None, est.init(p, theta, None), jax.random.PRNGKey(0))
    assert g.dtype == jnp.float32
