"""Reversible learning (Maclaurin et al. 2015): equal to reverse mode to 1e-8 in float64 for GD,
momentum and a step-size schedule; temp memory flat in r apart from the information buffer, whose
size is 8⌈r/k⌉ bytes per parameter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ablo
from ablo.estimators import UFOM, Reverse, Reversible

import _problems as P

OPTIMIZERS = {
    "gd": lambda: ablo.gd(P.learned_lr),
    "momentum": lambda: ablo.momentum(lambda th, t: 0.1 * jax.nn.sigmoid(th["lr"]), beta=0.9),
    "schedule": lambda: ablo.momentum(lambda t: 0.2 / (1.0 + 0.05 * t), beta=0.5),
}


def problem(opt, r):
    return ablo.BilevelProblem(P.inner_loss, P.outer_loss, OPTIMIZERS[opt](), r, init=P.init)


def estimate(est, prob, theta, task):
    return jax.jit(lambda: est.estimate(prob, theta, task, (), jax.random.PRNGKey(0)))()


#: Each optimizer once in the default run, both r among them; every pair with ``-m slow``.
@pytest.mark.parametrize("r, opt", [(r, o) if r == (7, 150)[i % 2] else pytest.param(r, o, marks=pytest.mark.slow)
                                    for r in (7, 150) for i, o in enumerate(sorted(OPTIMIZERS))])
def test_equals_reverse_mode(opt, r):
    prob, theta, task = problem(opt, r), P.make_theta(), P.make_task(jax.random.PRNGKey(0))
    exact, _, _ = estimate(Reverse(), prob, theta, task)
    g, _, c = estimate(Reversible(), prob, theta, task)
    np.testing.assert_allclose(P.flat(g), P.flat(exact), rtol=0, atol=1e-8)
    assert float(c.grad_evals) == 2 * r + 1 and float(c.hvps) == r and float(c.states) == 1


def test_is_an_exact_branch_for_ufom():
    prob, theta, task = problem("momentum", 9), P.make_theta(), P.make_task(jax.random.PRNGKey(0))
    exact, _, _ = estimate(Reverse(), prob, theta, task)
    g, _, _ = estimate(UFOM(q=1.0, exact=Reversible()), prob, theta, task)
    np.testing.assert_allclose(P.flat(g), P.flat(exact), rtol=0, atol=1e-8)


def temp_and_buffer(opt, r):
    prob, theta, task = problem(opt, r), P.make_theta(), P.make_task(jax.random.PRNGKey(0))
    est = Reversible()
    f = jax.jit(lambda th, tk: est.estimate(prob, th, tk, (), None)[0])
    temp = f.lower(theta, task).compile().memory_analysis().temp_size_in_bytes
    _, aux = jax.eval_shape(lambda: est.forward(prob, theta, task))
    assert aux.buffer.size * aux.buffer.dtype.itemsize == est.buffer_bytes(prob, theta, task)
    return temp, est.buffer_bytes(prob, theta, task), est.bits_per_step(prob, theta, task)


@pytest.mark.parametrize("opt,k", [("gd", 1), ("momentum", 18)])  # β = 9/10: 10^18 ≤ 2^63 < 10^19
def test_temp_memory_is_flat_in_r_apart_from_the_buffer(opt, k):
    dim_phi = 4  # w (3) and b
    small, large = temp_and_buffer(opt, 10), temp_and_buffer(opt, 1000)
    for (temp, buf, bits), r in ((small, 10), (large, 1000)):
        assert buf == 8 * -(-r // k) * dim_phi
        assert bits == 64 * -(-r // k) / r
    assert large[1] > 10 * small[1]  # the buffer does grow with r ...
    rest_small, rest_large = small[0] - small[1], large[0] - large[1]
    assert rest_large <= 1.05 * rest_small, (small, large)  # ... nothing else does


def test_refuses_what_it_cannot_reverse():
    theta, task = P.make_theta(), P.make_task(jax.random.PRNGKey(0))
    for opt, match in ((ablo.adam(0.01), "gd and ablo.momentum"),
                       (ablo.momentum(0.1, beta=0.9, nesterov=True), "heavy-ball"),
                       (ablo.momentum(0.1, beta=0.123456789), "max_denominator")):
        prob = ablo.BilevelProblem(P.inner_loss, P.outer_loss, opt, 3, init=P.init)
        with pytest.raises(ValueError, match=match):
            Reversible().estimate(prob, theta, task, (), None)
    with pytest.raises(ValueError, match="frac_bits"):
        Reversible(frac_bits=70)


def test_overflow_of_the_fixed_point_range_is_flagged():
    prob = ablo.BilevelProblem(P.inner_loss, P.outer_loss, ablo.gd(0.1), 3,
                               init=lambda th, task: {"w": 100.0 * jnp.ones(3), "b": jnp.asarray(0.0)})
    g, _, c = estimate(Reversible(frac_bits=60), prob, P.make_theta(), P.make_task(jax.random.PRNGKey(0)))
    assert bool(c.nonfinite) and np.isnan(P.flat(g)).all()
