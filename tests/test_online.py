"""ablo.online: online step-size tuning on Wu et al. 2018's noisy quadratic shows the short-horizon bias
of truncated reverse mode, which UFOM-style window debiasing and PES remove; compare() reports
what it says on a problem with a known answer; the noisy quadratic's step-size schedule is the noisy
GD it says, with an exact reverse hypergradient; calls_to_target counts the calls an outer Adam loop
spends to reach a target, on one compiled program."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ablo.estimators import ES, UFOM, Reverse
from ablo.online import calls_to_target, compare, online, short_horizon_problem


def noisy_gd(steps, r=20, dim=10, noise=0.1, seed=0):
    """L(φ_r) of φ ← φ − α_t (hφ + √h ζ_t) from φ_0 = 1, written out in NumPy (α_t per step)."""
    h = np.logspace(-2, 0, dim)
    zeta = noise * np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (r, dim)))
    phi = np.ones(dim)
    for t in range(r):
        phi = phi - steps[t] * (h * phi + np.sqrt(h) * zeta[t])
    return 0.5 * np.sum(h * phi ** 2)


def test_step_size_schedule_is_the_noisy_gd_it_states():
    one, four = short_horizon_problem(r=20, noise=0.1), short_horizon_problem(r=20, noise=0.1, pieces=4)
    assert float(one.objective(jnp.asarray(-1.3), None)) == pytest.approx(noisy_gd([np.exp(-1.3)] * 20), rel=1e-12)
    theta = np.array([-2.0, -1.5, -1.0, -0.5])  # 20 steps in 4 pieces of 5
    assert float(four.objective(jnp.asarray(theta), None)) == pytest.approx(noisy_gd(np.exp(np.repeat(theta, 5))),
                                                                          rel=1e-12)
    # uneven pieces: step t uses θ[⌊3t/20⌋]
    three = short_horizon_problem(r=20, noise=0.1, pieces=3)
    steps = [np.exp(theta[t * 3 // 20]) for t in range(20)]
    assert float(three.objective(jnp.asarray(theta[:3]), None)) == pytest.approx(noisy_gd(steps), rel=1e-12)
    with pytest.raises(ValueError, match=r"theta must hold one log step size per piece, 4 in all"):
        four.objective(jnp.zeros(3), None)
    with pytest.raises(ValueError, match="pieces must be <= r = 20"):
        short_horizon_problem(r=20, pieces=21)
    with pytest.raises(ValueError, match="pieces must be an integer >= 1"):
        short_horizon_problem(r=20, pieces=0)


def test_schedule_reverse_hypergradient_matches_finite_differences():
    p = short_horizon_problem(r=20, noise=0.1, pieces=4)
    theta = jnp.array([-2.0, -1.5, -1.0, -0.5])
    g = np.asarray(Reverse().estimate(p, theta, None, (), jax.random.PRNGKey(0))[0])
    eps, e = 1e-6, np.eye(4)
    fd = [(p.objective(theta + eps * e[i], None) - p.objective(theta - eps * e[i], None)) / (2 * eps) for i in range(4)]
    assert np.all(np.abs(g) > 1e-3)  # every piece moves the loss
    np.testing.assert_allclose(g, np.asarray(fd), rtol=1e-7, atol=1e-12)


def adam_objectives(p, theta, lr, steps):
    """M^(r) after each of ``steps`` Adam steps on the exact hypergradient (plain Python loop)."""
    opt = optax.adam(lr)
    state, out = opt.init(theta), []
    for _ in range(steps):
        updates, state = opt.update(jax.grad(lambda t: p.objective(t, None))(theta), state, theta)
        theta = optax.apply_updates(theta, updates)
        out.append(float(p.objective(theta, None)))
    return np.array(out)


def test_calls_to_target_counts_the_calls_up_to_the_first_step_at_the_target():
    p, theta = short_horizon_problem(r=20, noise=0.1, pieces=4), jnp.full(4, -2.0)
    per_step = 2 * 20 + 1  # reverse: r + 1 gradients and r HVPs (V does not depend on θ)
    m = adam_objectives(p, theta, 0.1, 12)
    target = float(0.5 * (m[4] + m[5]))  # crossed at the 6th step
    assert np.all(np.diff(m) < 0)
    f = jax.jit(lambda k, target, budget: calls_to_target(p, theta, None, Reverse(), k, target=target,
                                                           budget_calls=budget, optimizer=optax.adam(0.1)))
    hit = f(jax.random.PRNGKey(0), target, 100.0 * per_step)
    assert float(hit.calls) == 6 * per_step and int(hit.steps) == 6 and float(hit.objective) == pytest.approx(m[5])
    short = f(jax.random.PRNGKey(1), target, 5.5 * per_step)  # the budget runs out after the 6th step's calls
    assert float(short.calls) == np.inf and int(short.steps) == 6
    spent = f(jax.random.PRNGKey(2), -np.inf, 12.0 * per_step)  # no target: exactly the budget's 12 steps
    assert float(spent.calls) == np.inf and int(spent.steps) == 12 and float(spent.objective) == pytest.approx(m[11])
    assert f._cache_size() == 1  # keys, targets and budgets are arguments of one program


def test_calls_to_target_with_a_random_estimator_charges_its_drawn_costs():
    p, theta = short_horizon_problem(r=20, noise=0.1), jnp.asarray(-2.0)
    target = float(adam_objectives(p, theta, 0.1, 8)[-1])
    runs = [calls_to_target(p, theta, None, UFOM(q=0.3, exact=Reverse()), jax.random.PRNGKey(k), target=target,
                            budget_calls=5000.0, optimizer=optax.adam(0.1)) for k in range(4)]
    assert all(float(r.objective) <= target for r in runs)
    # each step costs FOM's r + 1 = 21 calls, plus the r = 20 HVPs of the reverse branch when it is drawn
    for r in runs:
        extra = float(r.calls) - 21 * int(r.steps)
        assert extra % 20 == 0 and 0 <= extra <= 20 * int(r.steps)
    assert len({float(r.calls) for r in runs}) > 1  # different keys, different draws


def test_calls_to_target_refuses_a_bad_budget():
    p = short_horizon_problem(r=20)
    with pytest.raises(ValueError, match="budget_calls must be a number > 0"):
        calls_to_target(p, jnp.asarray(-2.0), None, Reverse(), jax.random.PRNGKey(0), target=0.0, budget_calls=0,
                        optimizer=optax.adam(0.1))


def test_truncated_online_tuning_stalls_short_of_the_unbiased_ones():
    p = short_horizon_problem(r=20, noise=0.1)
    grid = jnp.linspace(-3.0, 1.0, 21)
    best = float(grid[jnp.argmin(jax.vmap(lambda t: p.objective(t, None))(grid))])
    final = {}
    for m in ("truncated", "ufom", "pes"):
        thetas = online(p, jnp.asarray(-2.0), None, m, 1, 200, 0.1, jax.random.PRNGKey(0), q=0.2, sigma=0.05)
        final[m] = float(thetas[-20:].mean())
    # greedy one-step windows choose too small a step (Wu et al. 2018); the unbiased ones get near the best
    assert final["truncated"] < best - 0.5
    for m in ("ufom", "pes"):
        assert abs(final[m] - best) < 0.4 < abs(final["truncated"] - best), final
        assert p.objective(final[m], None) < p.objective(final["truncated"], None)


def test_online_refuses_bad_windows():
    p = short_horizon_problem(r=20)
    with pytest.raises(ValueError, match="dividing r = 20"):
        online(p, jnp.asarray(-2.0), None, "truncated", 3, 5, 0.1, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="method"):
        online(p, jnp.asarray(-2.0), None, "adam", 2, 5, 0.1, jax.random.PRNGKey(0))


def test_compare_reports_zero_variance_for_exact_and_es_variance_for_es():
    p = short_horizon_problem(dim=4, r=6, noise=0.1)
    rows = compare(p, jnp.asarray(-1.0), None, {"exact": Reverse(), "ufom": UFOM(q=0.5, exact=Reverse()),
                                                "es": ES(sigma=1e-4, pairs=1)}, jax.random.PRNGKey(0), n=400)
    exact, ufom, es = rows
    assert exact["variance"] < 1e-20 and exact["expected_calls"] == 6 + 1 + 6 + 1
    g2 = float(jax.grad(lambda t: p.objective(t, None))(-1.0)) ** 2
    assert abs(es["variance"] / (2 * g2) - 1) < 0.25  # (dim θ + 1)‖∇f‖²/N with dim θ = 1, N = 1
    assert es["relative_variance"] == pytest.approx(es["variance"] / g2) and abs(es["relative_variance"] / 2 - 1) < 0.25
    for r in rows:
        assert r["bias"] <= 4 * r["bias_se"] + 1e-12 and r["temp_bytes"] > 0
        assert r["variance_x_calls"] == pytest.approx(r["variance"] * r["expected_calls"])
        assert r["relative_bias"] == pytest.approx(r["bias"] / g2 ** 0.5)
    assert ufom["variance"] > 0
