"""The stochastic-hypercleaning experiment (paper 004 §A.2) on its tiny digits configuration:
files, fields and curves, label corruption, bad input."""

import csv
import json
import math

import numpy as np
import pytest

from ablo.experiments import get, null_progress
from ablo.experiments.stochastic_hypercleaning import corrupt, unit_rows

METHODS = ["ttsa", "hoag"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    exp = get("stochastic-hypercleaning")
    d = tmp_path_factory.mktemp("shc")
    summary = exp.run({**exp.tiny, "methods": METHODS, "corruptions": [0.4], "seeds": [0]}, d, null_progress)
    return d, summary, exp.tiny


def test_writes_summary_curves_plots_and_table(out):
    d, summary, tiny = out
    for name in ("summary.json", "curves.csv", "test_vs_time_p0.4.png", "results.md"):
        assert (d / name).stat().st_size > 0, name
    doc = json.loads((d / "summary.json").read_text())
    assert doc["experiment"] == "stochastic-hypercleaning"
    assert [(r["method"], r["p"], r["seed"]) for r in doc["results"]] == [(m, 0.4, 0) for m in METHODS]
    for row in doc["results"]:
        for key in ("test_loss", "test_acc", "seconds", "function_calls", "samples", "steps"):
            assert row[key] is not None, key
        assert not row["diverged"] and row["steps"] == tiny["outer_steps"] and row["seconds"] > 0
    rows = {r["method"]: r for r in doc["results"]}
    assert rows["ttsa"]["samples"] >= 3 * tiny["outer_steps"]  # single samples: inner, D_F, D_G per step
    assert rows["hoag"]["samples"] == 0
    assert "digits" in (d / "results.md").read_text()


def test_curves_start_at_uniform_prediction(out):
    d, _, _ = out
    with open(d / "curves.csv") as f:
        points = list(csv.DictReader(f))
    for m in METHODS:
        mine = [p for p in points if p["method"] == m]
        assert float(mine[0]["seconds"]) == 0.0 and float(mine[0]["p"]) == 0.4
        assert float(mine[0]["test_loss"]) == pytest.approx(math.log(10), rel=1e-5)  # φ_0 = 0
        assert [float(p["seconds"]) for p in mine] == sorted(float(p["seconds"]) for p in mine)
    hoag = [p for p in points if p["method"] == "hoag"]
    assert float(hoag[-1]["test_loss"]) < math.log(10)


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


def test_bad_corruption_rate():
    with pytest.raises(ValueError, match="corruptions"):
        get("stochastic-hypercleaning").run({"corruptions": [1.5]}, "/nonexistent", null_progress)
