"""A diverging inner loop stops the run with a message naming the step, the method and the cause,
after saving the last good state; or its steps are skipped and counted."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ablo
from ablo import checkpoint as ckpt
from ablo.outer import Budget, Checkpointing, Diverged, Options, run

# Inner GD on the quartic φ⁴/4 with φ_0 = θ diverges once |θ| is large (φ ← φ − αφ³); the outer
# loss pulls φ_r towards 50, so outer SGD walks θ into the diverging region within a few steps.
PROBLEM = ablo.BilevelProblem(lambda th, phi, c: 0.25 * jnp.sum(phi ** 4),
                              lambda th, phi, c: 0.5 * jnp.sum((phi - c) ** 2), ablo.gd(0.1), steps=10)
OPT = optax.sgd(0.05)
THETA0 = jnp.ones(2)


def sampler(key):
    return jnp.full((2,), 50.0)


def go(steps, **kw):
    return run(PROBLEM, ablo.FOM(), OPT, THETA0, sampler, key=jax.random.PRNGKey(0), budget=Budget(steps=steps), **kw)


def test_divergence_names_step_method_cause_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(Diverged) as info:
        go(50, options=Options(checkpoint=Checkpointing(tmp_path, every=1)))
    e = info.value
    assert isinstance(e, ablo.NonFiniteHypergradient)
    assert 1 < e.step < 50 and e.method == "fom"
    msg = str(e)
    assert f"outer step {e.step}" in msg and "fom" in msg and "inner step size" in msg and str(e.checkpoint) in msg
    like = ckpt.Snapshot(THETA0, OPT.init(THETA0), (), None)
    saved = ckpt.load(tmp_path, like)
    assert saved.step == e.step - 1 and len(saved.log) == e.step - 1
    good = go(e.step - 1)
    assert np.all(np.isfinite(saved.theta)) and np.array_equal(saved.theta, good.theta)


def test_divergence_without_checkpoint_dir_still_explains():
    with pytest.raises(Diverged, match="inner step size") as info:
        go(50)
    assert info.value.checkpoint is None and "saved" not in str(info.value)


def test_skip_mode_counts_and_keeps_the_last_good_theta():
    steps = 12
    with pytest.raises(Diverged) as info:
        go(steps)
    bad = info.value.step
    res = go(steps, options=Options(on_nonfinite="skip"))
    assert res.steps == steps and res.skipped == steps - (bad - 1)
    assert np.array_equal(res.theta, go(bad - 1).theta)
    assert [e["skipped"] for e in res.log] == [max(0, k + 1 - (bad - 1)) for k in range(steps)]
    per_step = PROBLEM.steps + 2  # skipped steps are still charged: their calls were spent
    assert res.function_calls == steps * per_step
