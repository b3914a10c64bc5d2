"""Inner steps run in lax loops: the program does not grow with r.

The check reads the program JAX emits (the lowered StableHLO, before XLA's optimization): at r = 10
and r = 1000 it is the same text once numbers, shapes and constant tables are abstracted (r enters
as loop bounds, and revolve's schedule as a table of data). A Python loop over the inner steps, or
code that branches on r, would make the two differ. Lowering only traces, so this costs seconds
where compiling the optimized programs at several r took minutes.
"""

import re

import jax
import pytest

import ablo
from _problems import make_task, make_theta, problem

ESTIMATORS = [ablo.Reverse(), ablo.Recompute(), ablo.Checkpointed(M=4), ablo.Binomial(s=3), ablo.Truncated(K=3), ablo.Forward(),
              ablo.FOM(), ablo.UFOM(q=0.2)]


def program(est, r) -> str:
    """The lowered program of one estimate at r inner steps, constants, shapes and numbers abstracted."""
    p = problem("adam", r)
    theta, task = make_theta(), make_task(jax.random.PRNGKey(0))
    text = jax.jit(lambda th, k: est.estimate(p, th, task, (), k)).lower(theta, jax.random.PRNGKey(0)).as_text()
    text = re.sub(r"dense<[^>]*>", "dense<C>", text)  # constant arrays (revolve's schedule table)
    return re.sub(r"\d+", "N", text)


def test_program_abstraction_keeps_the_operations():
    """The abstraction leaves the operations: a different estimator is a different program."""
    reverse = program(ablo.Reverse(), 10)
    assert "stablehlo.while" in reverse and reverse != program(ablo.FOM(), 10)


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: e.name)
def test_program_is_independent_of_r(est):
    small, big = program(est, 10), program(est, 1000)
    assert small == big, f"{est.name}: the program at r = 1000 differs from r = 10's ({len(big)} vs {len(small)} chars)"
