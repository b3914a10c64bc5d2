"""ablo.online: online step-size tuning on Wu et al. 2018's noisy quadratic shows the short-horizon bias
of truncated reverse mode, which UFOM-style window debiasing and PES remove; compare() reports
what it says on a problem with a known answer."""

import jax
import jax.numpy as jnp
import pytest

from ablo.estimators import ES, UFOM, Reverse
from ablo.online import compare, online, short_horizon_problem


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
    assert ufom["variance"] > 0
