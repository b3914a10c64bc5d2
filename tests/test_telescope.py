"""Randomized telescopes (Beatson & Adams 2019): each draw's Δ's are K-RMD differences, the mean over
keys is the exact hypergradient (float64, within 4 standard errors), costs follow the drawn length."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ablo
from ablo.estimators import AdaptiveTelescope, Reverse, Telescope, Truncated, parse
from ablo.estimators.telescope import default_probs, doubling, sweep

import _problems as P

R = 4
KEYS = 2000


def truncated(problem, theta, task, lengths):
    """G_K for every K of ``lengths``, one jitted call."""
    f = jax.jit(lambda: [P.flat(Truncated(K=k).estimate(problem, theta, task, (), None)[0]) for k in lengths])
    return f()


def setup(optimizer="momentum"):
    return P.problem(optimizer, steps=R), P.make_theta(), P.make_task(jax.random.PRNGKey(0))


def draws(est, problem, theta, task, state=()):
    f = jax.jit(jax.vmap(lambda k: est.estimate(problem, theta, task, state, k)))
    g, _, c = f(jax.random.split(jax.random.PRNGKey(7), KEYS))
    return jax.vmap(P.flat)(g), c


def assert_unbiased(samples, target):
    se = samples.std(0) / np.sqrt(samples.shape[0])
    assert np.all(se > 0)  # the estimator is random: a zero spread would make the check vacuous
    z = np.abs(samples.mean(0) - target) / se
    assert z.max() < 4, z


def test_each_branch_is_a_sum_of_k_rmd_differences():
    problem, theta, task = setup()
    lengths = (0, 2, R)
    p = jnp.asarray(default_probs(lengths, R))
    G = truncated(problem, theta, task, lengths)
    deltas = [G[0]] + [b - a for a, b in zip(G, G[1:])]
    for i in range(len(lengths)):
        est, norms, c = jax.jit(lambda: sweep(problem, theta, task, lengths, i, p, "single"))()
        np.testing.assert_allclose(P.flat(est) * p[i], deltas[i], atol=1e-14)
        np.testing.assert_allclose(norms[:i + 1], [np.sum(d ** 2) for d in deltas[:i + 1]], rtol=1e-10)
        assert float(c.hvps) == lengths[i] and float(c.states) == max(lengths[i], 1)
        est, _, _ = jax.jit(lambda: sweep(problem, theta, task, lengths, i, p, "roulette"))()
        survival = np.cumsum(np.asarray(p)[::-1])[::-1]
        np.testing.assert_allclose(P.flat(est), sum(d / s for d, s in zip(deltas[:i + 1], survival)), atol=1e-14)


@pytest.mark.parametrize("form,lengths,probs", [("single", None, None), ("roulette", None, None),
                                                ("single", (0, 2, R), (0.5, 0.3, 0.2))])
def test_mean_is_the_exact_hypergradient(form, lengths, probs):
    problem, theta, task = setup()
    exact = P.flat(jax.jit(lambda: Reverse().estimate(problem, theta, task, (), None)[0])())
    est = Telescope(lengths=lengths, probs=probs, form=form)
    g, c = draws(est, problem, theta, task)
    assert_unbiased(g, exact)
    # the cost record follows the drawn length; its mean is expected_cost
    e = est.expected_cost(R)
    assert abs(float(c.hvps.mean()) - float(e.hvps)) < 4 * float(c.hvps.std()) / np.sqrt(KEYS)
    assert float(c.hvps.max()) == R and float(e.states) == R


def test_adaptive_is_unbiased_given_its_state_and_tracks_the_deltas():
    problem, theta, task = setup("gd")
    exact = P.flat(jax.jit(lambda: Reverse().estimate(problem, theta, task, (), None)[0])())
    est = AdaptiveTelescope(p_min=0.05)
    state = est.init(problem, theta, task)
    step = jax.jit(lambda s, k: est.estimate(problem, theta, task, s, k))
    for i in range(30):
        _, state, _ = step(state, jax.random.PRNGKey(i))
    assert int(state.k_upd[0]) == 30 and int(state.k_upd[-1]) >= 1
    lengths = doubling(R)
    G = truncated(problem, theta, task, lengths)
    d2 = np.array([np.sum(G[0] ** 2)] + [np.sum((b - a) ** 2) for a, b in zip(G, G[1:])])
    # θ is fixed, so the smoothed ‖Δ_i‖² are the true ones (bias-corrected)
    corr = 1 - est.beta ** np.asarray(state.k_upd)
    np.testing.assert_allclose(np.asarray(state.d2_sm) / corr, d2, rtol=1e-8)
    w = np.sqrt(d2 / (R + 1 + np.asarray(lengths)))
    p = np.maximum(w / w.sum(), 0.05)
    np.testing.assert_allclose(est.probs_of(state, R), p / p.sum(), rtol=1e-8)
    g, _ = draws(est, problem, theta, task, state)
    assert_unbiased(g, exact)


def test_specs_and_bad_settings():
    est = parse("telescope:lengths=1/4/8,form=roulette,probs=0.5/0.25/0.25")
    assert est.lengths == (1, 4, 8) and est.form == "roulette" and est.probs == (0.5, 0.25, 0.25)
    problem, theta, task = setup()
    with pytest.raises(ValueError, match="must end at r = 4"):
        Telescope(lengths=(1, 2)).estimate(problem, theta, task, (), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="strictly increasing"):
        Telescope(lengths=(4, 2, 8))
    with pytest.raises(ValueError, match="sum to 1"):
        Telescope(lengths=(4, 8), probs=(0.5, 0.6))
    with pytest.raises(ValueError, match="one probability per length"):
        Telescope(lengths=(4, 8), probs=(0.2, 0.3, 0.5))
    with pytest.raises(ValueError, match="form"):
        Telescope(form="many")
    assert "telescope" in ablo.estimators.REGISTRY and "adaptive-telescope" in ablo.estimators.REGISTRY


def test_meta_batch_is_the_mean_of_the_per_task_estimates_with_the_default_keys():
    """estimate_batch: the same mean and the same total cost as the per-task estimates drawn with
    the split keys (what each task runs under its vmap: tests/test_telescope_vmap.py)."""
    problem, theta, _ = setup()
    tasks = jax.vmap(P.make_task)(jax.random.split(jax.random.PRNGKey(3), 3))
    est, key = Telescope(), jax.random.PRNGKey(11)
    g, _, c = est.estimate_batch(problem, theta, tasks, (), key)
    per = [est.estimate(problem, theta, jax.tree_util.tree_map(lambda x: x[i], tasks), (), k)
           for i, k in enumerate(jax.random.split(key, 3))]
    np.testing.assert_allclose(P.flat(g), np.mean([P.flat(p[0]) for p in per], 0), rtol=1e-10, atol=1e-12)
    assert float(c.hvps) == sum(float(p[2].hvps) for p in per)
