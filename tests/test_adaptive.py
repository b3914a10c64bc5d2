"""Adaptive UFOM (Likhosherstov et al. 2021 eq. 22-24) against hand-computed sequences; debiasing any cheap estimator."""

import functools
import math
import sys
from pathlib import Path

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import ablo
from ablo.estimators import AdaptiveUFOM, Debiased, Recompute, Reverse, Truncated, get

sys.path.insert(0, str(Path(__file__).parent))
import _problems  # noqa: E402

R = 10  # C_det = 11, C_rnd = 55 with unit costs


def hand_q(D2, V2, C_det=11.0, C_rnd=55.0, q_min=0.05):
    """eq. 20-21 at ε = 0 solved by hand: (V² − D²) C_rnd q² − D² C_rnd q − 2 D² C_det = 0."""
    if not D2 < C_rnd * V2 / (2 * (C_det + C_rnd)):
        return 1.0
    a, b, c = C_rnd * (V2 - D2), -D2 * C_rnd, -2 * D2 * C_det
    return max((-b + math.sqrt(b * b - 4 * a * c)) / (2 * a), q_min)


def test_update_sequence_matches_hand_computation():
    est = AdaptiveUFOM(beta=0.9, q_min=0.05, d2_scale=0.1)
    state = est.init(None, None, None)
    assert float(est.q_of(state, R)) == 1.0  # no statistics yet: exact step
    seq = [(4.0, 100.0, True), (9.0, 50.0, False), (1.0, 80.0, True), (2.0, 60.0, True), (30.0, 40.0, True)]
    d_sm = v_sm = 0.0
    k = 0
    for d, v, xi in seq:
        state = est.update(state, d, v, jnp.asarray(xi))
        if xi:
            d_sm, v_sm, k = 0.9 * d_sm + 0.1 * d, 0.9 * v_sm + 0.1 * v, k + 1
        D2, V2 = 0.1 * d_sm / (1 - 0.9 ** k), v_sm / (1 - 0.9 ** k)
        got_D2, got_V2 = est.estimates(state)
        assert int(state.k_upd) == k
        assert float(got_D2) == pytest.approx(D2, rel=1e-12)
        assert float(got_V2) == pytest.approx(V2, rel=1e-12)
        assert float(est.q_of(state, R)) == pytest.approx(hand_q(D2, V2), rel=1e-10)
    # first update: D2 = 0.1·4 = 0.4, V2 = 100 (bias correction undoes the (1 − β) factor)
    s1 = est.update(est.init(None, None, None), 4.0, 100.0, jnp.asarray(True))
    assert [float(x) for x in est.estimates(s1)] == pytest.approx([0.4, 100.0])


def test_q_floor_and_condition_20():
    est = AdaptiveUFOM()
    tiny_bias = est.update(est.init(None, None, None), 1e-12, 100.0, jnp.asarray(True))
    assert float(est.q_of(tiny_bias, R)) == pytest.approx(0.05)  # q* ≈ 0 -> q_min
    big_bias = est.update(est.init(None, None, None), 1e4, 1.0, jnp.asarray(True))
    assert float(est.q_of(big_bias, R)) == 1.0  # (20) fails


@functools.lru_cache(maxsize=None)
def _setup(steps=6):
    """One problem object per r, so jitted estimators compiled for it are reused across tests."""
    prob = _problems.problem("gd", steps)
    theta = _problems.make_theta()
    tasks = jax.vmap(_problems.make_task)(jax.random.split(jax.random.PRNGKey(3), 4))
    return prob, theta, tasks


def _sq(tree):
    return sum(float(jnp.sum(x ** 2)) for x in jax.tree_util.tree_leaves(tree))


def test_first_step_is_exact_and_updates_statistics():
    prob, theta, tasks = _setup()
    task = jax.tree_util.tree_map(lambda x: x[0], tasks)
    est = AdaptiveUFOM()
    state = est.init(prob, theta, task)
    g, state, c = jax.jit(lambda th, s, k: est.estimate(prob, th, task, s, k))(theta, state, jax.random.PRNGKey(0))
    g_ex, _, _ = ablo.hypergradient(prob, Reverse(), theta, task)
    g_fo, _, _ = ablo.hypergradient(prob, ablo.FOM(), theta, task)
    assert _sq(jax.tree_util.tree_map(jnp.subtract, g, g_ex)) < 1e-20
    D2, V2 = est.estimates(state)
    assert int(state.k_upd) == 1 and float(state.q) == 1.0
    assert float(D2) == pytest.approx(0.1 * _sq(jax.tree_util.tree_map(jnp.subtract, g_fo, g_ex)), rel=1e-9)
    assert float(V2) == pytest.approx(_sq(g_ex), rel=1e-9)
    assert set(est.describe_state(state)) >= {"q", "D2", "V2"}


def test_batch_updates_from_every_drawn_task_in_order():
    prob, theta, tasks = _setup()
    est = AdaptiveUFOM(beta=0.8)
    state = est.init(prob, theta, None)
    g, state, c = jax.jit(lambda th, s, k: est.estimate_batch(prob, th, tasks, s, k))(theta, state,
                                                                                       jax.random.PRNGKey(1))
    # q = 1 on the first batch: every task exact, and the statistics see each of the 4 tasks in turn
    expect = est.init(prob, theta, None)
    g_mean = None
    for i in range(4):
        task = jax.tree_util.tree_map(lambda x: x[i], tasks)
        g_ex, _, _ = ablo.hypergradient(prob, Reverse(), theta, task)
        g_fo, _, _ = ablo.hypergradient(prob, ablo.FOM(), theta, task)
        expect = est.update(expect, _sq(jax.tree_util.tree_map(jnp.subtract, g_fo, g_ex)), _sq(g_ex), True)
        g_mean = g_ex if g_mean is None else jax.tree_util.tree_map(jnp.add, g_mean, g_ex)
    assert int(state.k_upd) == 4
    np.testing.assert_allclose([float(state.d2_sm), float(state.v2_sm)], [float(expect.d2_sm), float(expect.v2_sm)],
                               rtol=1e-9)
    assert _sq(jax.tree_util.tree_map(lambda a, b: a - b / 4, g, g_mean)) < 1e-20
    assert float(c.function_calls) == pytest.approx(4 * (7 + 15 + 6 + 2))  # 4 × UFOM's exact branch at r = 6


def test_state_is_stable_through_a_jitted_scan():
    prob, theta, tasks = _setup()
    est = AdaptiveUFOM()
    task = jax.tree_util.tree_map(lambda x: x[0], tasks)

    def body(state, key):
        _, state, c = est.estimate(prob, theta, task, state, key)
        return state, (state.q, c.function_calls)

    state, (qs, calls) = jax.jit(lambda s: jax.lax.scan(body, s, jax.random.split(jax.random.PRNGKey(0), 5)))(
        est.init(prob, theta, task))
    assert float(qs[0]) == 1.0 and int(state.k_upd) >= 1
    assert np.all((np.asarray(qs) >= 0.05) & (np.asarray(qs) <= 1.0))


def test_debiased_truncated_is_unbiased():
    prob, theta, tasks = _setup(steps=5)
    task = jax.tree_util.tree_map(lambda x: x[0], tasks)
    est = Debiased(cheap=Truncated(K=1), q=0.3)
    g_ex, _, _ = ablo.hypergradient(prob, Reverse(), theta, task)
    g_tr, _, _ = ablo.hypergradient(prob, Truncated(K=1), theta, task)
    n = 4000
    draws = jax.jit(jax.vmap(lambda k: est.estimate(prob, theta, task, (), k)[0]))(jax.random.split(
        jax.random.PRNGKey(7), n))
    flat = lambda t: np.asarray(jax.flatten_util.ravel_pytree(t)[0])
    samples = np.asarray(jax.vmap(lambda t: jax.flatten_util.ravel_pytree(t)[0])(draws))
    mean, se = samples.mean(0), samples.std(0, ddof=1) / np.sqrt(n)
    assert np.max(np.abs(flat(g_ex) - flat(g_tr))) > 10 * np.max(se)  # the cheap one is visibly biased
    assert np.all(np.abs(mean - flat(g_ex)) <= 4 * se + 1e-12)


def test_debiased_cost_is_cheap_plus_drawn_exact():
    prob, theta, tasks = _setup(steps=5)
    task = jax.tree_util.tree_map(lambda x: x[0], tasks)
    est = Debiased(cheap=Truncated(K=2), q=0.5)
    f = jax.jit(lambda k: est.estimate(prob, theta, task, (), k))
    seen = set()
    for i in range(40):
        _, _, c = f(jax.random.PRNGKey(i))
        seen.add(float(c.function_calls))
    cheap = 5 + 1 + 2 + 1  # r + 1 gradients, K HVPs, one V-JVP
    exact = 5 + 1 + 10 + 5 + 1  # Recompute: r + 1 + r(r−1)/2 gradients, r HVPs, one JVP
    assert seen == {cheap, cheap + exact}


def test_adaptive_over_a_cheap_estimator_and_registry():
    prob, theta, tasks = _setup()
    est = get("adaptive-ufom", cheap="truncated", K=2, beta=0.9)
    assert isinstance(est.cheap, Truncated) and est.cheap.K == 2 and est.beta == 0.9
    g, state, _ = est.estimate_batch(prob, theta, tasks, est.init(prob, theta, None), jax.random.PRNGKey(0))
    assert int(state.k_upd) == 4
    d = get("debiased", cheap="truncated", K=3, q=0.2)
    assert isinstance(d, Debiased) and d.cheap.K == 3 and d.q == 0.2 and isinstance(d.exact, Recompute)


@pytest.mark.parametrize("make,name", [
    (lambda: AdaptiveUFOM(beta=1.0), "beta"),
    (lambda: AdaptiveUFOM(q_min=0.0), "q_min"),
    (lambda: AdaptiveUFOM(eps=0.5), "eps"),
    (lambda: AdaptiveUFOM(C1=-1.0), "C1"),
    (lambda: AdaptiveUFOM(exact=ablo.FOM()), "exact"),
    (lambda: Debiased(q=0.0), "q"),
    (lambda: Debiased(cheap="nope"), "cheap"),
    (lambda: get("adaptive-ufom", K=3), "unknown options"),
])
def test_bad_settings_raise(make, name):
    with pytest.raises(ValueError, match=name):
        make()
