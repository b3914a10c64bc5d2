"""The stochastic-hypercleaning experiment (Ji et al. 2021 §A.2) through ``ablo run --tiny`` on
digits: files, fields and curves, the shared hypercleaning problem, label corruption, config."""

import csv
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ablo import estimators
from ablo.estimators import StocBiO
from ablo.experiments import get
from ablo.config import ConfigError
from ablo.experiments._wallclock import outer_step_size
from ablo.problems.stochastic_hypercleaning import corrupt, make_problem, unit_rows
from ablo.models import linear_init
from ablo.problems import hypercleaning
from _cli_run import ablo, one_error_line


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    d = tmp_path_factory.mktemp("shc") / "run"
    code, _, err = ablo("run", "stochastic-hypercleaning", "--tiny", "--out", d)
    assert code == 0, err
    return d, json.loads((d / "summary.json").read_text()), get("stochastic-hypercleaning").make_config(tiny=True)


def test_writes_summary_curves_plots_and_table(out):
    d, doc, cfg = out
    for name in ("summary.json", "curves.csv", "test_vs_time_p0.4.png", "results.md"):
        assert (d / name).stat().st_size > 0, name
    assert doc["experiment"] == "stochastic-hypercleaning"
    assert [(r["method"], r["p"], r["seed"]) for r in doc["results"]] == [(m, 0.4, 0) for m in cfg.methods]
    for row in doc["results"]:
        for key in ("test_loss", "test_acc", "seconds", "function_calls", "steps", "compile_seconds"):
            assert row[key] is not None, key
        assert row["steps"] == cfg.outer_steps and row["seconds"] > 0 and row["function_calls"] > 0
    hoag = next(r for r in doc["results"] if r["method"].startswith("hoag"))
    assert 0 <= hoag["cg_cap_hits"] <= cfg.outer_steps and 0 < hoag["tol"] <= 1e-3  # HOAG's schedule reported
    text = (d / "results.md").read_text()
    assert "digits" in text and "not MNIST" in text and "Smoke run" in text and "not quoted" in text


def test_curves_start_at_uniform_prediction(out):
    d, _, cfg = out
    with open(d / "curves.csv") as f:
        points = list(csv.DictReader(f))
    for m in cfg.methods:
        mine = [p for p in points if p["method"] == m]
        assert float(mine[0]["seconds"]) == 0.0 and float(mine[0]["p"]) == 0.4
        assert float(mine[0]["test_loss"]) == pytest.approx(math.log(10), rel=1e-5)  # φ_0 = 0
        assert [float(p["seconds"]) for p in mine] == sorted(float(p["seconds"]) for p in mine)
    hoag = [p for p in points if p["method"] == "hoag:maxiter=3"]
    assert float(hoag[-1]["test_loss"]) < math.log(10)


def test_defaults_run_the_papers_corruption_rates_hoag_schedule_and_ttsa_time_scales():
    cfg = get("stochastic-hypercleaning").make_config()
    assert {0.1, 0.2} <= set(cfg.corruptions)  # Ji et al. 2021 Fig. 4 (a), (b)
    parsed = {estimators.parse(m).name: estimators.parse(m) for m in cfg.methods}
    assert float(parsed["hoag"].tolerance(0)) == pytest.approx(1e-3) and parsed["hoag"].maxiter >= 1000

    def steps(est):  # Adam on a constant gradient moves by its step size α_k
        tx, x = optax.adam(outer_step_size(est, 0.1)), jnp.zeros(())
        opt, out = tx.init(x), []
        for _ in range(4):
            u, opt = tx.update(jnp.ones(()), opt, x)
            out.append(-float(u))
        return np.array(out)

    np.testing.assert_allclose(steps(parsed["ttsa"]), 0.1 * np.arange(1, 5.0) ** -0.6, rtol=1e-4)
    np.testing.assert_allclose(steps(parsed["stocbio"]), 0.1, rtol=1e-4)


def test_problem_is_the_shared_hypercleaning_problem_on_split_tasks():
    rng = np.random.default_rng(0)
    x, y = jnp.asarray(rng.random((12, 5)), jnp.float32), jnp.asarray(rng.integers(0, 10, 12))
    xv, yv = jnp.asarray(rng.random((7, 5)), jnp.float32), jnp.asarray(rng.integers(0, 10, 7))
    lam = jnp.asarray(rng.normal(size=12), jnp.float32)
    split = {"train": {"x": x, "y": y, "idx": jnp.arange(12)}, "val": {"x_val": xv, "y_val": yv}}
    flat = {"x": x, "y": y, "idx": jnp.arange(12), "x_val": xv, "y_val": yv}
    ours = make_problem(3, 1.0, 1e-3, 5)
    ref = hypercleaning.make_problem(steps=3, inner_lr=1.0, l2=1e-3, phi0=linear_init(5, 10))
    phi = jax.tree_util.tree_map(lambda a: a + 0.1, linear_init(5, 10))
    np.testing.assert_allclose(ours.inner_loss(lam, phi, split), ref.inner_loss(lam, phi, flat), rtol=1e-6)
    np.testing.assert_allclose(ours.outer_loss(lam, phi, split), ref.outer_loss(lam, phi, flat), rtol=1e-6)
    # stocBiO draws its mini-batches from the parts, the indices travelling with their examples
    est = StocBiO(Q=2, batch=4)
    state = est.init(ours, lam, split)
    g, _, c = jax.jit(lambda lam: est.estimate(ours, lam, split, state, jax.random.PRNGKey(0)))(lam)
    assert g.shape == lam.shape and bool(jnp.all(jnp.isfinite(g))) and float(c.samples) > 0
    assert 0 < int(jnp.sum(g != 0)) <= 3 * 4 + 4  # only the examples drawn for the inner steps and D_G move


def test_corruption_rate_and_wrong_labels():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 20_000).astype(np.int32)
    noisy = corrupt(y, 0.4, np.random.default_rng(1))
    assert abs(np.mean(noisy != y) - 0.4) < 0.02
    assert noisy.min() >= 0 and noisy.max() <= 9
    np.testing.assert_array_equal(corrupt(y, 0.0, np.random.default_rng(2)), y)
    assert np.all(corrupt(y, 1.0, np.random.default_rng(3)) != y)


def test_unit_rows():
    x = np.random.default_rng(0).random((5, 7))
    np.testing.assert_allclose(np.linalg.norm(unit_rows(x), axis=1), 1.0, rtol=1e-6)


def test_config(tmp_path):
    exp = get("stochastic-hypercleaning")
    with pytest.raises(ConfigError, match="corruptions"):
        exp.make_config({"corruptions": "1.5"})
    with pytest.raises(ConfigError, match="n_train is not used here"):
        exp.make_config({"n_train": "100"})
    with pytest.raises(ConfigError, match="digits_train is not used here"):
        exp.make_config({"data_dir": str(tmp_path), "digits_train": "100"})
    with pytest.raises(ConfigError, match="digits_train"):
        exp.make_config({"digits_train": "1500", "digits_val": "400"})


def test_only_smoke_runs_are_called_smoke_runs():
    from ablo.experiments._notes import smoke_note

    exp = get("stochastic-hypercleaning")
    assert smoke_note(exp.make_config(tiny=True)).startswith("**Smoke run**")
    assert smoke_note(exp.make_config({"corruptions": "0.4", "seconds": "30"})) == ""  # tiny's values, not --tiny


def test_inner_step_above_two_over_L_is_refused(tmp_path):
    code, _, err = ablo("run", "stochastic-hypercleaning", "--tiny", "--out", tmp_path / "a", "--set", "inner_lr=1000")
    line = one_error_line(err)
    assert code == 2 and "inner_lr = 1000" in line and "L = " in line
