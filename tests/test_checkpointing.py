"""Cost records of the checkpointing schedules against their closed forms: two-level
``Checkpointed(M)`` (Shaban et al. 2019 Table 1) and binomial ``Binomial(s)`` (revolve, Griewank & Walther
2000). Exactness against finite differences and Reverse is in test_exact.py."""

from math import comb

import jax
import numpy as np
import pytest

import ablo
from ablo.estimators.revolve import ADVANCE, REVERSE, _splits, forward_steps, repetitions, schedule
from _problems import make_task, make_theta, problem


@pytest.mark.parametrize("r, s", [(1, 1), (2, 1), (7, 1), (7, 3), (30, 2), (100, 7), (257, 4), (1000, 10)])
def test_binomial_schedule_is_the_closed_form_and_the_dp_optimum(r, s):
    table = schedule(r, s)
    adv = table[table[:, 0] == ADVANCE]
    F, _ = _splits(r, s)
    assert int((adv[:, 2] - adv[:, 1]).sum()) == forward_steps(r, s) == F[r, s]
    # every step reversed exactly once, from r − 1 down to 0
    np.testing.assert_array_equal(table[table[:, 0] == REVERSE][:, 1], np.arange(r)[::-1])
    # t sweeps reverse at most C(s + 1 + t, t) steps (s stored states + s_0)
    t = repetitions(r, s)
    assert comb(s + 1 + t, t) >= r and (t == 0 or comb(s + t, t - 1) < r)


def test_binomial_at_log2_r_slots_costs_r_log_r():
    r = 1000
    s = int(np.ceil(np.log2(r)))
    assert ablo.Binomial().slots(r) == s == 10
    c = ablo.Binomial().backward_cost(r)
    assert float(c.grad_evals) + r + 1 == forward_steps(r, s) + 2 == 3547
    assert float(c.states) == s and float(c.hvps) == r


@pytest.mark.parametrize("r, s", [(1, 1), (6, 2), (9, 3), (12, 20)])
def test_binomial_cost_record_equals_the_closed_form(r, s):
    p = problem("momentum", r)
    theta, task = make_theta(), make_task(jax.random.PRNGKey(0))
    _, _, c = ablo.Binomial(s=s).estimate(p, theta, task, (), None)
    used = min(s, max(r - 1, 1))
    assert (float(c.grad_evals), float(c.hvps), float(c.jvps), float(c.states)) == (
        forward_steps(r, used) + 2, r, 1, used)
    if s >= r - 1:  # every state stored: as cheap as Reverse
        assert float(c.grad_evals) == r + 1


@pytest.mark.parametrize("r", [1, 2, 3, 10, 99, 100, 101, 1000])
@pytest.mark.parametrize("M", [None, 1, 3, 7, 40, 2000])
def test_two_level_checkpointed_costs_at_most_2r_plus_1(r, M):
    est = ablo.Checkpointed(M=M)
    m, c = est.layout(r)
    total = float(est.backward_cost(r).grad_evals) + r + 1
    assert total == r + 1 + (m - 1) * (c - 1) <= 2 * r + 1
    assert (m - 1) * c < r <= m * c  # the last segment has 1..c steps


def test_two_level_checkpointed_cost_record():
    r = 10
    p = problem("adam", r)
    _, _, c = ablo.Checkpointed().estimate(p, make_theta(), make_task(jax.random.PRNGKey(1)), (), None)
    # M = ⌈√10⌉ = 4: segments of 3, 3, 3, 1 steps; 3 · 2 recomputed steps; 3 checkpoints + 2 buffered
    assert (float(c.grad_evals), float(c.hvps), float(c.states)) == (r + 1 + 6, r, 5)
