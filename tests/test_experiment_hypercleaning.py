"""The hypercleaning experiment (paper 001 §4.2.1, paper 000 §5.2) on scikit-learn digits."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ablo import FOM, Reverse
from ablo.experiments import get, null_progress
from ablo.experiments import hypercleaning as hc


def small_cfg(**kw):
    return hc.resolve({**hc.DEFAULTS, **hc.TINY, **kw})


def test_corruption_is_exactly_the_requested_fraction_and_classes_are_balanced():
    cfg = small_cfg(n_train=300, n_val=200, corrupt=0.5)
    d = hc.make_data(cfg, seed=3)
    x, y, xv, yv = d["task"]
    changed = np.asarray(y != d["clean_y"])
    assert changed.sum() == 150
    np.testing.assert_array_equal(changed, np.asarray(d["corrupted"]))
    counts = np.bincount(np.concatenate([np.asarray(d["clean_y"]), np.asarray(yv)]), minlength=10)
    assert counts.max() - counts.min() <= 1
    assert x.shape == (300, 64) and xv.shape == (200, 64)


def test_f1_of_the_threshold_rule_matches_a_hand_count():
    theta = jnp.array([-5.0, -4.0, -2.9, 0.0, -3.5, 1.0])
    corrupted = jnp.array([True, True, True, False, False, False])
    # predicted corrupted: 0, 1, 4 -> tp 2, fp 1, fn 1 -> F1 = 2·2 / (3 + 3)
    assert float(hc.f1_corrupted(theta, corrupted)) == pytest.approx(4 / 6)


def test_fom_is_blind_here_but_the_exact_hypergradient_downweights_corrupted_examples():
    cfg = small_cfg(n_train=300, n_val=300, steps=30)
    d = hc.make_data(cfg, seed=0)
    problem = hc.make_problem(hc.init_model(None, 64, None, jnp.float64), 30, 1.0, 1e-3)
    theta = jnp.zeros(300)
    key = jax.random.PRNGKey(0)
    g_fom, _, _ = FOM().estimate(problem, theta, d["task"], (), key)
    g, _, _ = Reverse().estimate(problem, theta, d["task"], (), key)
    assert float(jnp.max(jnp.abs(g_fom))) == 0.0
    bad = d["corrupted"]
    # raising the weight of a corrupted example raises the validation loss: larger hypergradient
    assert float(g[bad].mean()) > 0 > float(g[~bad].mean())


def test_k_rmd_runs_cover_every_k_and_k_equal_r_is_full_reverse():
    cfg = small_cfg(steps=10, Ks=[1, 5, 10])
    labels = [(m, K, type(e).__name__) for m, K, e in hc.runs(cfg)]
    assert labels == [("truncated", 1, "Truncated"), ("truncated", 5, "Truncated"), ("reverse", 10, "Reverse")]


@pytest.mark.parametrize("bad, match", [(dict(model="cnn"), "model"), (dict(Ks=[1, 99]), "Ks"),
                                        (dict(corrupt=1.5), "corrupt")])
def test_bad_config_names_the_key(bad, match):
    with pytest.raises(ValueError, match=match):
        small_cfg(**bad)


def test_tiny_linear_run_writes_summary_curves_table_and_plot(tmp_path):
    exp = get("hypercleaning")
    summary = exp.run({**exp.defaults, **exp.tiny}, tmp_path, null_progress)
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert doc["experiment"] == "hypercleaning" and doc["results"] == json.loads(json.dumps(summary["results"]))
    assert [(r["method"], r["K"]) for r in doc["results"]] == [("truncated", 1), ("reverse", 5)]
    for r in doc["results"]:
        assert set(hc.ROW_KEYS) <= set(r)
        assert r["steps"] == exp.tiny["outer_steps"] and 0 <= r["test_acc"] <= 100 and 0 <= r["f1"] <= 1
    # K-RMD costs r + 1 gradients + K HVPs per step (the start W_0 = 0 does not depend on θ: no JVP)
    r = exp.tiny["steps"]
    assert [row["function_calls"] for row in doc["results"]] == [3 * (r + 1 + K) for K in (1, 5)]
    rows = list(csv.DictReader(open(tmp_path / "curves.csv")))
    assert {row["K"] for row in rows} == {"1", "5"} and all(row["test_acc"] for row in rows)
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert "001 Table 2" in (tmp_path / "results.md").read_text()


def test_tiny_mlp_run_spends_equal_budgets(tmp_path):
    exp = get("hypercleaning")
    cfg = {**exp.defaults, **exp.tiny, "model": "mlp", "methods": ["fom", "recompute"], "outer_steps": None,
           "budget_calls": 200}
    doc = exp.run(cfg, tmp_path, null_progress)
    r = exp.tiny["steps"]
    per_step = {"fom": r + 2, "recompute": r + 1 + r * (r - 1) // 2 + r + 1}
    for row in doc["results"]:
        assert 200 <= row["function_calls"] < 200 + per_step[row["method"]]
    assert "000 Table 1" in (tmp_path / "results.md").read_text()


def test_parametrised_method_names_set_k_and_q():
    assert hc.estimator("truncated-7").K == 7 and hc.estimator("ufom-0.25").q == 0.25
    with pytest.raises(ValueError, match="unknown estimator"):
        hc.estimator("nope")
