"""Inner steps run in lax loops: the compiled program does not grow with r."""

import re

import jax
import jax.numpy as jnp
import pytest

import ablo
from _problems import make_task, make_theta, problem

ESTIMATORS = [ablo.Reverse(), ablo.Recompute(), ablo.Checkpointed(M=4), ablo.Binomial(s=3), ablo.Truncated(K=3), ablo.Forward(),
              ablo.FOM(), ablo.UFOM(q=0.2)]


def program_size(est, r):
    p = problem("adam", r)
    theta, task = make_theta(), make_task(jax.random.PRNGKey(0))
    text = jax.jit(lambda th, k: est.estimate(p, th, task, (), k)).lower(theta, jax.random.PRNGKey(0)).compile().as_text()
    # count instructions (lines with an assignment) of the optimized HLO
    return len([ln for ln in text.splitlines() if re.match(r"\s*(ROOT )?%?[\w.\-]+ = ", ln)])


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: e.name)
def test_compiled_program_size_is_independent_of_r(est):
    # at r = 10 some of Checkpointed's loops run once or twice and XLA folds them: smaller, never larger
    big = program_size(est, 1000)
    assert program_size(est, 30) == big and program_size(est, 10) <= big
