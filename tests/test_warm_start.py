"""WarmStart / ITD-BiO / AID-BiO (Ji et al. 2021 Alg. 1): the inner loop of outer step k starts at
y_{k-1}^T, which the estimator state carries, not the task."""

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ablo import estimators, outer
from ablo.estimators import FOM, Estimator, Reverse, Truncated
from ablo.estimators.implicit import AID
from ablo.estimators.warm_start import WarmStart
from ablo.inner import gd
from ablo.problem import BilevelProblem, constant_init

C = jnp.array([1.0, -2.0, 0.5])


def still_problem():
    """g = ½ e^{θ_0} ‖φ − c‖², f = ‖φ‖² + ‖θ − 1‖²: φ* = c for every θ, and φ_0 = c, so the inner
    iterate never moves while θ does."""
    inner = lambda th, phi, t: 0.5 * jnp.exp(th[0]) * jnp.sum((phi - C) ** 2)
    outer_ = lambda th, phi, t: jnp.sum(phi ** 2) + jnp.sum((th - 1.0) ** 2) + th[1] * jnp.sum(phi)
    return BilevelProblem(inner, outer_, gd(0.3), 6, constant_init(C))


def moving_problem():
    """g = ½‖φ − θ‖² + 0.1‖φ‖²: φ* moves with θ, φ_0 = 0."""
    inner = lambda th, phi, t: 0.5 * jnp.sum((phi - th) ** 2) + 0.1 * jnp.sum(phi ** 2)
    outer_ = lambda th, phi, t: jnp.sum(jnp.sin(phi) ** 2) + 0.1 * jnp.sum(th ** 2)
    return BilevelProblem(inner, outer_, gd(0.2), 4, constant_init(jnp.zeros(3)))


def trajectory(problem, est, steps=5):
    opt = optax.sgd(0.1)
    step = outer.make_step(problem, est, opt, lambda k: jnp.zeros(()), log_losses=False)
    state = outer.init(problem, est, opt, jnp.array([0.2, -0.3, 0.7]), jnp.zeros(()))
    return jax.jit(lambda s: outer.scan(step, s, jax.random.PRNGKey(0), steps))(state)


def test_registered_names_are_the_papers_methods():
    itd, aid = estimators.parse("itd-bio"), estimators.parse("aid-bio")
    assert isinstance(itd, WarmStart) and itd.base == Reverse() and itd.name == "itd-bio"
    assert isinstance(aid, AID) and aid.warm_start and aid.name == "aid-cg"


def test_itd_bio_equals_reverse_when_the_inner_solution_does_not_move():
    p = still_problem()
    s_itd, m_itd = trajectory(p, estimators.parse("itd-bio"))
    s_rev, m_rev = trajectory(p, Reverse())
    np.testing.assert_allclose(m_itd["theta"], m_rev["theta"], rtol=1e-12, atol=1e-14)
    assert float(jnp.linalg.norm(m_rev["theta"][-1] - m_rev["theta"][0])) > 1e-2  # θ did move
    np.testing.assert_allclose(s_itd.estimator_state.phi, C, atol=1e-12)  # and φ stayed at c
    np.testing.assert_array_equal(m_itd["function_calls"], m_rev["function_calls"])  # no extra inner run


def test_second_step_starts_from_the_first_steps_iterate():
    p, est = moving_problem(), estimators.parse("itd-bio")
    theta, task, key = jnp.array([0.5, -1.0, 2.0]), None, jax.random.PRNGKey(0)
    g1, state, _ = est.estimate(p, theta, task, est.init(p, theta, task), key)
    phi1 = p.run(theta, task)
    np.testing.assert_allclose(state.phi, phi1, rtol=1e-12)
    theta2 = theta - 0.3 * g1
    g2, state2, _ = est.estimate(p, theta2, task, state, key)
    warm = BilevelProblem(p.inner_loss, p.outer_loss, p.optimizer, p.steps, constant_init(phi1))
    g2_ref, _, _ = Reverse().estimate(warm, theta2, task, (), key)
    np.testing.assert_allclose(g2, g2_ref, rtol=1e-12)
    assert not np.allclose(g2, Reverse().estimate(p, theta2, task, (), key)[0])  # the cold start differs
    np.testing.assert_allclose(state2.phi, warm.run(theta2, task), rtol=1e-12)


@dataclass(frozen=True)
class EstimateOnly(Estimator):
    """An estimator written as ``estimate`` alone (no forward/backward passes of its own)."""

    name: ClassVar[str] = "estimate-only"

    def estimate(self, problem, theta, task, state, key):
        return FOM().estimate(problem, theta, task, state, key)


@pytest.mark.parametrize("base, extra", [(Truncated(K=2), 0), (FOM(), 0), (EstimateOnly(), 4)],
                         ids=["truncated", "fom", "estimate-only"])
def test_the_next_start_is_the_bases_own_inner_run_or_one_more(base, extra):
    p, theta, key = moving_problem(), jnp.array([0.5, -1.0, 2.0]), jax.random.PRNGKey(0)
    assert p.steps == 4
    est = WarmStart(base)
    g, state, c = est.estimate(p, theta, None, est.init(p, theta, None), key)
    g_ref, _, c_ref = base.estimate(p, theta, None, base.init(p, theta, None), key)
    np.testing.assert_allclose(g, g_ref, rtol=1e-12)  # first call: the problem's own start
    assert float(c.grad_evals) == float(c_ref.grad_evals) + extra
    np.testing.assert_allclose(state.phi, p.run(theta, None), rtol=1e-12)


def test_bad_base():
    with pytest.raises(ValueError, match="base must be an estimator"):
        WarmStart("reverse")
    with pytest.raises(ValueError, match="aid-bio"):
        WarmStart(estimators.parse("aid-cg"))
