"""Memory claims from the compiled program (XLA's memory analysis), across several r. Each
(estimator, r, optimizer) is compiled once per test process: the tests share their measurements."""

import functools

import jax
import jax.numpy as jnp
import pytest

import ablo

P = 4096  # inner parameters: one state is 32 KiB in float64


def inner_loss(theta, phi, task):
    return 0.5 * jnp.sum(jnp.exp(theta) * phi ** 2) - jnp.sum(task * jnp.tanh(phi))


def outer_loss(theta, phi, task):
    return jnp.sum((phi - 1.0) ** 2)


OPTIMIZERS = {"gd": lambda: ablo.gd(0.1), "adam": lambda: ablo.adam(0.01)}


@functools.lru_cache(maxsize=None)
def temp_bytes(est, r, opt="gd"):
    p = ablo.BilevelProblem(inner_loss, outer_loss, OPTIMIZERS[opt](), r, init=lambda th, t: jnp.zeros(P))
    theta, task = jnp.zeros(P), jnp.ones(P)
    f = jax.jit(lambda th, t, k: est.estimate(p, th, t, (), k))
    return f.lower(theta, task, jax.random.PRNGKey(0)).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("est", [ablo.FOM(), ablo.UFOM(q=0.1), ablo.Recompute(), ablo.Truncated(K=5),
                                 ablo.Binomial(s=4), ablo.UFOM(q=0.1, exact=ablo.Binomial(s=4))], ids=lambda e: e.name)
def test_constant_memory_estimators_do_not_grow_with_r(est):
    small, large = temp_bytes(est, 10), temp_bytes(est, 1000)
    assert large <= 1.05 * small, (small, large)


def test_constant_memory_holds_for_adam_too():
    small, large = temp_bytes(ablo.Recompute(), 10, "adam"), temp_bytes(ablo.Recompute(), 1000, "adam")
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


def test_binomial_memory_grows_with_s_not_r():
    """The slot buffer is the only thing that grows: linear in s (measured: two state-sized copies
    per slot, the forward's stored chain and the backward's buffer), flat in r."""
    at = lambda s, r: temp_bytes(ablo.Binomial(s=s), r)
    assert at(4, 1000) <= 1.05 * at(4, 10)
    per_slot = [(at(8, 1000) - at(4, 1000)) / 4, (at(16, 1000) - at(8, 1000)) / 8]
    state = P * 8
    assert per_slot[0] == pytest.approx(per_slot[1], rel=0.1)
    assert state <= per_slot[1] <= 2.2 * state, per_slot[1] / state


def test_forward_mode_memory_is_flat_in_r():
    """FMD carries the state and its dim θ tangents, no history (Shaban et al. 2019 eq. 7)."""
    n = 16
    p = lambda r: ablo.BilevelProblem(lambda th, ph, t: 0.5 * jnp.sum(jnp.exp(jnp.tile(th, P // n)) * ph ** 2)
                                      - jnp.sum(t * jnp.tanh(ph)), outer_loss, ablo.gd(0.1), r,
                                      init=lambda th, t: jnp.zeros(P))
    f = lambda r: jax.jit(lambda th, t: ablo.Forward().estimate(p(r), th, t, (), None)).lower(
        jnp.zeros(n), jnp.ones(P)).compile().memory_analysis().temp_size_in_bytes
    small, large = f(10), f(1000)
    assert large <= 1.05 * small, (small, large)
    assert small >= n * P * 8  # the tangents themselves are there
