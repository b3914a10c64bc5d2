"""Memory claims from the compiled program (XLA's memory analysis), across several r."""

import jax
import jax.numpy as jnp
import pytest

import ablo

P = 4096  # inner parameters: one state is 32 KiB in float64


def inner_loss(theta, phi, task):
    return 0.5 * jnp.sum(jnp.exp(theta) * phi ** 2) - jnp.sum(task * jnp.tanh(phi))


def outer_loss(theta, phi, task):
    return jnp.sum((phi - 1.0) ** 2)


def temp_bytes(est, r, opt=None):
    p = ablo.BilevelProblem(inner_loss, outer_loss, opt or ablo.gd(0.1), r, init=lambda th, t: jnp.zeros(P))
    theta, task = jnp.zeros(P), jnp.ones(P)
    f = jax.jit(lambda th, t, k: est.estimate(p, th, t, (), k))
    return f.lower(theta, task, jax.random.PRNGKey(0)).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("est", [ablo.FOM(), ablo.UFOM(q=0.1), ablo.Recompute(), ablo.Truncated(K=5),
                                 ], ids=lambda e: e.name)
def test_constant_memory_estimators_do_not_grow_with_r(est):
    small, large = temp_bytes(est, 10), temp_bytes(est, 1000)
    assert large <= 1.05 * small, (small, large)


def test_constant_memory_holds_for_adam_too():
    small, large = temp_bytes(ablo.Recompute(), 10, ablo.adam(0.01)), temp_bytes(ablo.Recompute(), 1000, ablo.adam(0.01))
    assert large <= 1.05 * small


def test_reverse_memory_grows_linearly_in_r():
    t = {r: temp_bytes(ablo.Reverse(), r) for r in (10, 100, 1000)}
    state = P * 8
    per_step = (t[1000] - t[100]) / 900
    assert 0.9 * state <= per_step <= 3 * state, (t, per_step / state)
    assert (t[1000] - t[100]) / (t[100] - t[10]) == pytest.approx(10, rel=0.1)


def test_two_level_checkpointed_memory_grows_as_m_plus_r_over_m():
    """m − 1 checkpoints plus a buffer of max(L, c − 1) states (c = ⌈r/M⌉): about M + r/M."""
    held = lambda M, r: float(ablo.Checkpointed(M=M).backward_cost(r).states)
    t = {(M, r): temp_bytes(ablo.Checkpointed(M=M), r) for M, r in ((4, 1000), (32, 1000), (100, 1000), (32, 100))}
    state = P * 8
    # from M = 32 (62 states) to M = 4 (253) and to M = 100 (109) at r = 1000: one state per held state
    for M in (4, 100):
        grow = (t[M, 1000] - t[32, 1000]) / (held(M, 1000) - held(32, 1000))
        assert grow == pytest.approx(state, rel=0.25), (M, grow / state)
    # at fixed M the checkpoints and the buffer grow with r: 28 states at r = 100, 62 at r = 1000
    assert (t[32, 1000] - t[32, 100]) / (held(32, 1000) - held(32, 100)) == pytest.approx(state, rel=0.25)
