"""Cost records against the estimators' own expected costs (``expected_cost(r)``), the UFOM cost
model taken from its exact branch (Likhosherstov et al. 2021 Prop. 1, eq. 19-21), and the JVP of V charged only
when V depends on θ (Likhosherstov et al. 2021 §5 budgets count gradient evaluations and HVPs)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ablo
from ablo import theory
from ablo.estimators import AdaptiveUFOM, get
from ablo.estimators.base import v_jvps
from _problems import flat, inner_loss, make_task, make_theta, outer_loss, problem

R = 9


def counts(c):
    return tuple(float(x) for x in (c.grad_evals, c.hvps, c.jvps, c.states, c.samples))


@pytest.mark.parametrize("est", [ablo.Reverse(), ablo.Recompute(), ablo.Checkpointed(), ablo.Checkpointed(M=2),
                                 ablo.Binomial(s=2), ablo.Truncated(K=3), ablo.FOM(), get("stocbio", Q=3, batch=5),
                                 get("reptile")], ids=lambda e: e.name)
def test_deterministic_cost_records_equal_expected_cost(est):
    p = problem("gd", R)
    theta, task = make_theta(), make_task(jax.random.PRNGKey(0))
    if est.name == "stocbio":
        import test_stochastic as st

        p, task, theta = st.problem(R), st.make_task(), jnp.zeros(st.D_THETA)
    if est.name == "reptile":
        p = ablo.BilevelProblem(lambda th, ph, t: jnp.sum((ph["w"] - t[1][:3]) ** 2), outer_loss, ablo.gd(0.1), R,
                                init=lambda th, t: th)
        theta = {"w": jnp.ones(3), "b": jnp.asarray(0.0)}
    run = jax.jit(lambda th, k: est.estimate(p, th, task, est.init(p, th, task), k)[2])
    assert counts(run(theta, jax.random.PRNGKey(1))) == counts(est.expected_cost(R))


def test_forward_and_aid_expected_costs():
    p = problem("adam", R)
    theta, task = make_theta(), make_task(jax.random.PRNGKey(0))
    n = flat(theta).shape[0]
    c = jax.jit(lambda th: ablo.Forward().estimate(p, th, task, (), None)[2])(theta)
    assert counts(c) == counts(ablo.Forward().expected_cost(R, n))
    aid = get("aid-cg", maxiter=4)
    _, _, c = aid.estimate(p, theta, task, aid.init(p, theta, task), None)
    bound = aid.expected_cost(R)
    assert float(c.grad_evals) == float(bound.grad_evals) and 1 <= float(c.hvps) <= float(bound.hvps) == 4 + 1 + 1


@pytest.mark.parametrize("exact", [ablo.Recompute(), ablo.Checkpointed(), ablo.Binomial(s=2), ablo.Reverse()],
                         ids=lambda e: e.name)
def test_ufom_expected_cost_is_the_mean_of_its_records(exact):
    q = 0.3
    p = problem("gd", R)
    theta, task = make_theta(), make_task(jax.random.PRNGKey(0))
    ufom = ablo.UFOM(q=q, exact=exact)
    keys = jax.random.split(jax.random.PRNGKey(4), 2000)
    _, _, c = jax.jit(jax.vmap(lambda k: ufom.estimate(p, theta, task, (), k)))(keys)
    xi = np.asarray(c.hvps) > 0
    back = exact.backward_cost(R)
    np.testing.assert_array_equal(np.asarray(c.grad_evals), R + 1 + xi * float(back.grad_evals))
    e = ufom.expected_cost(R)
    assert float(e.grad_evals) == pytest.approx(R + 1 + q * float(back.grad_evals), rel=1e-6)
    assert float(e.hvps) == pytest.approx(q * R, rel=1e-6)
    # the record's mean is the expectation, up to the sampling error of ξ
    se = np.sqrt(q * (1 - q) / len(keys)) * float(back.grad_evals + back.hvps)
    assert abs(float(np.mean(c.grad_evals + c.hvps)) - float(e.grad_evals + e.hvps)) < 4 * se + 1e-9


def test_ufom_cost_model_comes_from_the_exact_branch():
    r = 100
    rec, two = theory.cost_model(r, exact=ablo.Recompute()), theory.cost_model(r, exact=ablo.Checkpointed())
    assert rec == theory.cost_model(r) == (r + 1, (r - 1) / 2 * r + r)  # Proposition 1 verbatim
    assert two == (r + 1, 9 * 9 + r)  # M = 10: nine segments of 10 recomputed 9 steps each
    # with the same D², V², a cheaper exact branch is worth drawing more often
    d2, v2 = 0.01, 1.0
    q_rec, q_two = theory.q_star(d2, v2, *rec), theory.q_star(d2, v2, *two)
    assert q_two > q_rec
    # and Adaptive UFOM uses it
    assert AdaptiveUFOM(exact=ablo.Checkpointed()).costs(r) == two
    assert AdaptiveUFOM(exact=ablo.Recompute()).costs(r) == rec


def test_jvp_of_a_constant_start_is_not_charged():
    r = 6
    task = make_task(jax.random.PRNGKey(0))
    theta = make_theta()
    phi0 = {"w": jnp.ones(3), "b": jnp.asarray(0.0)}
    made = lambda init: ablo.BilevelProblem(inner_loss, outer_loss, ablo.gd(0.1), r, init=init)
    const, traced = made(ablo.constant_init(phi0)), made(lambda th, t: {"w": jnp.zeros(3) + t[1].mean(), "b": 0.0})
    assert v_jvps(const, theta, task) == v_jvps(traced, theta, task) == 0
    assert v_jvps(problem("gd", r), theta, task) == 1
    through_loop = made(lambda th, t: jax.lax.fori_loop(0, 2, lambda i, w: {"w": w["w"] + th["shift"], "b": w["b"]},
                                                         phi0))
    assert v_jvps(through_loop, theta, task) == 1
    for p in (const, traced):
        _, _, c = jax.jit(lambda th: ablo.FOM().estimate(p, th, task, (), None))(theta)
        assert (float(c.grad_evals), float(c.jvps), float(c.function_calls)) == (r + 1, 0, r + 1)
        c = jax.jit(lambda th: ablo.Reverse().estimate(p, th, task, (), None)[2])(theta)
        assert (float(c.grad_evals), float(c.hvps), float(c.jvps)) == (r + 1, r, 0)
        ufom = ablo.UFOM(q=1.0, exact=ablo.Binomial(s=2))
        c = jax.jit(lambda th: ufom.estimate(p, th, task, (), jax.random.PRNGKey(0))[2])(theta)
        assert float(c.jvps) == 0
        n = flat(theta).shape[0]
        c = jax.jit(lambda th: ablo.Forward().estimate(p, th, task, (), None)[2])(theta)
        assert float(c.jvps) == r * n
