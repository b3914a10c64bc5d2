"""The newsgroups experiment (paper 004 §A.2) on its tiny generated configuration: the files and
fields it writes, the time curves, and its pieces (data generator, estimator names, bad input)."""

import csv
import json
import math

import numpy as np
import pytest

from ablo.experiments import get, null_progress
from ablo.experiments.newsgroups import make_estimator, synthetic_corpus

METHODS = ["stocbio", "reverse"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    exp = get("newsgroups")
    d = tmp_path_factory.mktemp("newsgroups")
    summary = exp.run({**exp.tiny, "methods": METHODS, "seeds": [0]}, d, null_progress)
    return d, summary, exp.tiny


def test_writes_summary_curves_plot_and_table(out):
    d, summary, _ = out
    for name in ("summary.json", "curves.csv", "test_vs_time.png", "results.md"):
        assert (d / name).stat().st_size > 0, name
    doc = json.loads((d / "summary.json").read_text())
    assert doc["experiment"] == "newsgroups"
    assert doc["config"]["methods"] == METHODS
    assert [r["method"] for r in doc["results"]] == METHODS
    for row in doc["results"]:
        for key in ("test_loss", "test_acc", "seconds", "function_calls", "samples", "steps", "seed"):
            assert row[key] is not None, key
        assert 0 <= row["test_acc"] <= 1 and math.isfinite(row["test_loss"]) and row["seconds"] > 0
    text = (d / "results.md").read_text()
    assert "generated" in text and all(m in text for m in METHODS)


def test_rows_count_steps_calls_and_samples(out):
    _, summary, tiny = out
    rows = {r["method"]: r for r in summary["results"]}
    T, Q = tiny["inner_steps"], tiny["Q"]
    for r in rows.values():
        assert not r["diverged"] and r["steps"] == tiny["outer_steps"]
    # stocBiO: T + 1 gradients and Q + 1 HVPs per outer step, batches of `batch` examples
    assert rows["stocbio"]["function_calls"] == tiny["outer_steps"] * (T + 1 + Q + 1)
    assert rows["stocbio"]["samples"] == tiny["outer_steps"] * (T * tiny["batch"] + (Q + 2) * tiny["batch"])
    assert rows["reverse"]["samples"] == 0  # full data, no sampling


def test_curves_start_at_uniform_prediction_and_run_forward_in_time(out):
    d, summary, _ = out
    with open(d / "curves.csv") as f:
        points = list(csv.DictReader(f))
    for m in METHODS:
        mine = [p for p in points if p["method"] == m]
        assert float(mine[0]["seconds"]) == 0.0
        assert float(mine[0]["test_loss"]) == pytest.approx(math.log(20), rel=1e-5)  # W_0 = 0
        times = [float(p["seconds"]) for p in mine]
        assert times == sorted(times) and len(mine) >= 2
        last = next(r for r in summary["results"] if r["method"] == m)
        assert float(mine[-1]["test_loss"]) == pytest.approx(last["test_loss"])
        assert float(mine[-1]["test_loss"]) < math.log(20)  # the warm-started inner iterate learned


def test_synthetic_corpus_is_tfidf_like():
    data = synthetic_corpus(50, 20, vocabulary=100, length=30, seed=1)
    x, y = data["train"]
    assert x.shape == (50, 100) and data["test"][0].shape == (20, 100)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    assert x.min() >= 0 and set(np.unique(y)) <= set(range(20))


def test_stocbio_batch_in_the_name_and_bad_config():
    from ablo.experiments.newsgroups import DEFAULTS

    assert make_estimator("stocbio-200", DEFAULTS).batch == 200
    assert make_estimator("stocbio", DEFAULTS).batch == DEFAULTS["batch"]
    with pytest.raises(ValueError, match="unknown estimator"):
        make_estimator("nope", DEFAULTS)
    with pytest.raises(ValueError, match="seconds"):
        get("newsgroups").run({"seconds": 0}, "/nonexistent", null_progress)
