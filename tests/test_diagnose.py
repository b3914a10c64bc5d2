"""diagnose(): bias of cheap estimators against the exact hypergradient, D², V², q*."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ablo
from ablo.diagnose import diagnose, format_diagnosis
from ablo.theory import bias_variance, cost_model, q_star

sys.path.insert(0, str(Path(__file__).parent))
import _problems  # noqa: E402

R = 6


@pytest.fixture(scope="module")
def result():
    prob = _problems.problem("gd", R)
    tasks = jax.vmap(_problems.make_task)(jax.random.split(jax.random.PRNGKey(2), 5))
    return prob, tasks, diagnose(prob, _problems.make_theta(), tasks, jax.random.PRNGKey(0), n_samples=4,
                                 Ks=[1, R], repeats=2)


def test_reports_fom_and_truncations(result):
    _, _, res = result
    assert set(res["estimators"]) == {"fom", "truncated-1", f"truncated-{R}"}
    assert res["n_samples"] == 4
    full = res["estimators"][f"truncated-{R}"]  # K = r is exact
    assert full["cosine"] == pytest.approx(1.0, abs=1e-9) and full["relative_error"] < 1e-9
    assert res["estimators"]["fom"]["relative_error"] > 1e-3
    assert res["estimators"]["truncated-1"]["function_calls"] == R + 1 + 1 + 1


def test_d2_v2_and_q_star_match_direct_computation(result):
    prob, tasks, res = result
    theta = _problems.make_theta()
    flat = lambda g: np.asarray(jax.flatten_util.ravel_pytree(g)[0])
    fo, ex = [], []
    for i in range(4):
        t = jax.tree_util.tree_map(lambda x: x[i], tasks)
        fo.append(flat(ablo.hypergradient(prob, ablo.FOM(), theta, t)[0]))
        ex.append(flat(ablo.hypergradient(prob, ablo.Reverse(), theta, t)[0]))
    D2, V2 = bias_variance(np.stack(fo), np.stack(ex))
    assert (res["D2"], res["V2"]) == pytest.approx((D2, V2), rel=1e-9)
    assert res["estimators"]["fom"]["relative_error"] == pytest.approx(np.sqrt(D2 / V2), rel=1e-9)
    assert res["C1"] > 0 and res["C2"] > 0
    assert (res["C_det"], res["C_rnd"]) == pytest.approx(cost_model(R, res["C1"], res["C2"]))
    assert res["q_star"] == pytest.approx(q_star(D2, V2, res["C_det"], res["C_rnd"]))
    assert res["q_star_function_calls"] == pytest.approx(q_star(D2, V2, *cost_model(R)))


def test_branch_sets_c_rnd_and_q_star():
    """branch=Checkpointed(): C_rnd is the two-level branch's backward cost (counting calls), not
    recomputation's, and q* follows it."""
    prob = _problems.problem("gd", R)
    tasks = jax.vmap(_problems.make_task)(jax.random.split(jax.random.PRNGKey(2), 5))
    res = diagnose(prob, _problems.make_theta(), tasks, jax.random.PRNGKey(0), n_samples=4, Ks=[1], repeats=2,
                   branch=ablo.Checkpointed())
    back = ablo.Checkpointed().backward_cost(R)
    assert res["branch"] == "checkpointed" and "exact branch checkpointed" in format_diagnosis(res)
    assert (res["C_det"], res["C_rnd"]) == pytest.approx(cost_model(R, res["C1"], res["C2"], exact=ablo.Checkpointed()))
    assert res["C_rnd"] == pytest.approx(res["C1"] * back.grad_evals + res["C2"] * back.hvps)
    cd, cr = cost_model(R, exact=ablo.Checkpointed())
    assert cr < cost_model(R)[1]
    assert res["q_star_function_calls"] == pytest.approx(q_star(res["D2"], res["V2"], cd, cr))
    with pytest.raises(ValueError, match="exact"):
        diagnose(prob, _problems.make_theta(), tasks, jax.random.PRNGKey(0), n_samples=2, branch=ablo.FOM())


def test_sampler_input_and_markdown():
    prob = _problems.problem("gd", 4)
    res = diagnose(prob, _problems.make_theta(), _problems.make_task, jax.random.PRNGKey(1), n_samples=3, repeats=2)
    assert res["n_samples"] == 3 and "fom" in res["estimators"] and "truncated-1" in res["estimators"]
    text = format_diagnosis(res)
    assert "| fom |" in text and "q* =" in text
    # the product-rewrite decision is visible: on by default on the CPU backend only
    assert res["rewrite_products"] is (jax.default_backend() == "cpu") and res["backend"] == jax.default_backend()
    assert ("Matrix products rewritten" if res["rewrite_products"] else "Matrix products as JAX emits them") in text


def test_bad_tasks_raise():
    prob = _problems.problem("gd", 4)
    with pytest.raises(ValueError, match="n_samples"):
        diagnose(prob, _problems.make_theta(), _problems.make_task, jax.random.PRNGKey(1), n_samples=0)
    with pytest.raises(ValueError, match="tasks"):
        diagnose(prob, _problems.make_theta(), jnp.asarray(1.0), jax.random.PRNGKey(1))
