"""Bad input gets a ValueError naming the parameter; a diverging inner loop never passes silently."""

import jax
import jax.numpy as jnp
import pytest

import ablo
from _problems import init, inner_loss, make_task, make_theta, outer_loss, problem


@pytest.mark.parametrize("q", [0, -0.1, 1.5, float("nan"), "0.5", True])
def test_q_outside_unit_interval(q):
    with pytest.raises(ValueError, match=r"q .*\(0, 1\]"):
        ablo.UFOM(q=q)


@pytest.mark.parametrize("r", [0, -3, 2.5, True])
def test_r_below_one(r):
    with pytest.raises(ValueError, match=r"steps \(r\) must be an integer >= 1"):
        ablo.BilevelProblem(inner_loss, outer_loss, ablo.gd(0.1), r)


@pytest.mark.parametrize("K", [-1, 6, 1.5])
def test_k_outside_range(K):
    with pytest.raises(ValueError, match=r"K .*\[0, r\] = \[0, 5\]"):
        ablo.hypergradient(problem("gd", 5), ablo.Truncated(K=K), make_theta(), make_task(jax.random.PRNGKey(0)))


@pytest.mark.parametrize("M", [0, -2, 1.5])
def test_m_below_one(M):
    with pytest.raises(ValueError, match=r"M .*>= 1"):
        ablo.Checkpointed(M=M)


def test_exact_branch_must_be_an_unrolled_exact_estimator():
    with pytest.raises(ValueError, match="exact must be"):
        ablo.UFOM(q=0.5, exact=ablo.FOM())
    ablo.UFOM(q=0.5, exact=ablo.Reverse())  # O(r) memory, but the user's choice


@pytest.mark.parametrize("lr", [0, -0.1])
def test_step_size(lr):
    with pytest.raises(ValueError, match="lr must be"):
        ablo.gd(lr)


def test_mismatched_pytrees_name_the_loss():
    p = problem("gd", 3)
    bad_theta = {"log_reg": jnp.zeros(5), "shift": jnp.zeros(5)}  # missing "lr", wrong sizes
    with pytest.raises(ValueError, match="theta"):
        ablo.hypergradient(p, ablo.FOM(), bad_theta, make_task(jax.random.PRNGKey(0)))


def test_phi_structure_mismatch():
    p = ablo.BilevelProblem(inner_loss, outer_loss, ablo.gd(0.1), 3, init=lambda th, t: jnp.zeros(3))
    with pytest.raises(ValueError, match="inner_loss"):
        ablo.hypergradient(p, ablo.FOM(), make_theta(), make_task(jax.random.PRNGKey(0)))


def test_non_scalar_loss():
    p = ablo.BilevelProblem(lambda th, ph, t: ph["w"] ** 2, outer_loss, ablo.gd(0.1), 3, init=init)
    with pytest.raises(ValueError, match="inner_loss must return a scalar"):
        ablo.hypergradient(p, ablo.FOM(), make_theta(), make_task(jax.random.PRNGKey(0)))


def diverging():
    quad = lambda th, ph, t: 0.5 * jnp.sum(jnp.exp(th) * ph ** 2)
    return ablo.BilevelProblem(quad, lambda th, ph, t: jnp.sum(ph ** 2), ablo.gd(50.0), 400,
                               init=lambda th, t: jnp.ones(3))


@pytest.mark.parametrize("est", [ablo.FOM(), ablo.Reverse(), ablo.UFOM(q=0.5)], ids=lambda e: e.name)
def test_nonfinite_hypergradient_raises_with_advice(est):
    with pytest.raises(ablo.NonFiniteHypergradient, match="lower the inner step size"):
        ablo.hypergradient(diverging(), est, jnp.zeros(3), None, key=jax.random.PRNGKey(0), on_nonfinite="raise")


def test_nonfinite_is_flagged_by_default():
    # FOM's estimate itself stays finite here (V is constant); the diverged inner state is caught
    g, _, c = ablo.hypergradient(diverging(), ablo.FOM(), jnp.zeros(3), None)
    assert bool(c.nonfinite)
    g, _, c = ablo.hypergradient(diverging(), ablo.Reverse(), jnp.zeros(3), None, on_nonfinite="flag")
    assert bool(c.nonfinite) and not bool(jnp.all(jnp.isfinite(g)))
    _, _, c = ablo.hypergradient(problem("gd", 3), ablo.FOM(), make_theta(), make_task(jax.random.PRNGKey(0)),
                                 on_nonfinite="flag")
    assert not bool(c.nonfinite)


def test_huge_integer_q_is_a_value_error():
    with pytest.raises(ValueError, match=r"q .*\(0, 1\]"):
        ablo.UFOM(q=10 ** 400)
