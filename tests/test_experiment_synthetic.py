"""The synthetic experiments of Likhosherstov et al. 2021 §5.1 (counterexample, synthetic-q) through ``ablo run``:
--tiny runs write the documented files, divergence and a too-large inner step stop with one line
and exit 2."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from ablo import estimators
from ablo.experiments import counterexample, get
from _cli_run import ablo, one_error_line


def tiny_run(name, tmp_path, *extra):
    code, out, err = ablo("run", name, "--tiny", "--out", tmp_path / "run", *extra)
    assert code == 0, err
    d = tmp_path / "run"
    doc = json.loads((d / "summary.json").read_text())
    assert doc["experiment"] == name and isinstance(doc["config"], dict) and doc["results"]
    text = (d / "results.md").read_text()
    assert "Smoke run" in text and "Smoke run" in out and doc["config"]["smoke"] is True
    assert (d / "curves.csv").exists() and list(d.glob("*.png"))
    return doc


def test_counterexample_tiny(tmp_path):
    doc = tiny_run("counterexample", tmp_path)
    rows = doc["results"]
    seeds = get("counterexample").tiny["seeds"]
    assert {(r["method"], r["seed"]) for r in rows} == {(m, s) for m in ("fom", "ufom:q=0.1") for s in seeds}
    for r in rows:
        assert math.isfinite(r["final_theta"]) and r["final_abs_grad"] >= 0
        assert r["q"] == (0.0 if r["method"] == "fom" else 0.1)
    fom = [r for r in rows if r["method"] == "fom"]
    assert all(r["function_calls"] == 50 * (10 + 2) for r in fom)  # r + 1 gradients and V's JVP per step
    b2 = doc["config"]["b"][1]
    assert b2 == pytest.approx(17.39527, abs=1e-5) and doc["config"]["A"] == pytest.approx(12.59685, abs=1e-5)
    # FOM's fixed point is where the construction puts it: |dM/dθ| there exceeds sqrt(D) (Theorem 2)
    assert all(p["abs_grad_M"] > math.sqrt(doc["config"]["D"]) for p in doc["config"]["fom_fixed_points"])


def test_counterexample_sgd_is_seeded_and_follows_the_schedule():
    cfg = get("counterexample").make_config({"outer_steps": 3, "seeds": [10]})
    b, A = counterexample.counterexample_constants()
    problem, tasks = counterexample.make_problem(0.1, 10), counterexample.stack_tasks((0.5, 1.5), b, A)
    import jax

    keys = jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)])
    theta0 = jnp.array([5.0, 20.0])
    thetas, calls = counterexample.descend(problem, estimators.parse("fom"), tasks, theta0, keys, cfg, "t")
    assert thetas.shape == calls.shape == (2, 3)
    # θ_1 = θ_0 − γ_0/2 · G_FO(θ_0, T) for one of the two tasks
    fom = estimators.parse("fom")
    g = [float(fom.estimate(problem, theta0[0], tuple(x[i] for x in tasks), (), None)[0]) for i in range(2)]
    assert min(abs(thetas[0, 0] - (5.0 - 10.0 / 2 * gi)) for gi in g) < 1e-9
    np.testing.assert_array_equal(calls[:, -1], 3 * 12)


def test_synthetic_q_tiny(tmp_path):
    doc = tiny_run("synthetic-q", tmp_path)
    rows = doc["results"]
    assert len(rows) == len(doc["config"]["alphas"])
    for r in rows:
        assert 0 < r["q_theory"] <= 1 and r["D2"] >= 0 and r["V2"] > 0
        assert r["q_grid"] is None or 0 < r["q_grid"] <= 1
    curve = [r for r in rows if r["alpha"] == pytest.approx(doc["config"]["alpha_curve"])]
    assert len(curve) == 1
    for k in ("calls_to_target_q0", "calls_to_target_qstar", "calls_to_target_q1"):
        assert k in curve[0] and (curve[0][k] is None or curve[0][k] > 0)
    # D² grows with the inner step size α while V² shrinks (Likhosherstov et al. 2021 Fig. 1d)
    assert rows[-1]["D2"] > rows[0]["D2"] and rows[-1]["V2"] < rows[0]["V2"]


@pytest.mark.parametrize("name, label", [("counterexample", "counterexample fom"), ("synthetic-q", "synthetic-q ufom:q=0.1")])
def test_divergence_stops_with_one_line(name, label, tmp_path):
    code, _, err = ablo("run", name, "--tiny", "--out", tmp_path / "a", "--set", "gamma0=1e300")
    line = one_error_line(err)
    assert code == 2 and "outer step" in line and label in line and "not finite" in line


@pytest.mark.parametrize("name, setting, alpha", [("counterexample", "alpha=1.5", "1.5"),
                                                  ("synthetic-q", "alpha_range=0.01,2", "2")])
def test_inner_step_above_two_over_L_is_refused(name, setting, alpha, tmp_path):
    code, _, err = ablo("run", name, "--tiny", "--out", tmp_path / "a", "--set", setting)
    line = one_error_line(err)
    assert code == 2 and f"alpha = {alpha}" in line and "L = 1.5" in line


def test_synthetic_q_exact_branch_sets_q_star_and_the_counts(tmp_path):
    """exact=checkpointed: C_rnd is the two-level branch's backward cost, q* follows it, and the
    q = 1 curve is charged r + 2 + C_rnd + 1 function calls per step."""
    import csv

    from ablo import Checkpointed, theory

    doc = tiny_run("synthetic-q", tmp_path, "--set", "exact=checkpointed")
    cfg = doc["config"]
    r = cfg["r"]
    back = Checkpointed().backward_cost(r)
    c_det, c_rnd = theory.cost_model(r, exact=Checkpointed())
    assert cfg["exact"] == "checkpointed" and cfg["C_rnd"] == c_rnd == back.grad_evals + back.hvps
    assert c_rnd < theory.cost_model(r)[1]  # cheaper than recomputation's r(r−1)/2 + r
    below_one = 0
    for row in doc["results"]:
        assert row["exact"] == "checkpointed"
        assert row["q_theory"] == pytest.approx(theory.q_star(row["D2"], row["V2"], c_det, c_rnd), rel=1e-12)
        q_recompute = theory.q_star(row["D2"], row["V2"], *theory.cost_model(r))
        if q_recompute < 1:  # a cheaper exact branch is drawn more often
            below_one += 1
            assert row["q_theory"] > q_recompute
    assert below_one > 0
    with open(tmp_path / "run" / "curves.csv") as f:
        q1 = [x for x in csv.DictReader(f) if x["q_label"] == "q=1"]
    assert q1 and all(float(x["function_calls"]) == pytest.approx(int(x["step"]) * (r + 2 + c_rnd + 1)) for x in q1)


def test_synthetic_q_refuses_an_exact_branch_that_is_not_unrolled(tmp_path):
    code, _, err = ablo("run", "synthetic-q", "--tiny", "--out", tmp_path / "a", "--set", "exact=fom")
    line = one_error_line(err)
    assert code == 2 and "exact" in line and "unrolled exact estimator" in line
