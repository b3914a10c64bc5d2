"""The newsgroups experiment (Ji et al. 2021 §A.2) through ``ablo run --tiny`` on generated documents:
the files and fields it writes, the time curves, its config, and divergence."""

import csv
import json
import math

import numpy as np
import pytest

from ablo.experiments import get
from ablo.config import ConfigError
from ablo.problems.newsgroups import synthetic_corpus
from _cli_run import ablo, one_error_line


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    d = tmp_path_factory.mktemp("newsgroups") / "run"
    code, stdout, err = ablo("run", "newsgroups", "--tiny", "--out", d)
    assert code == 0, err
    return d, json.loads((d / "summary.json").read_text()), get("newsgroups").make_config(tiny=True)


def test_writes_summary_curves_plot_and_table(out):
    d, doc, cfg = out
    for name in ("summary.json", "curves.csv", "test_vs_time.png", "results.md", "manifest.json"):
        assert (d / name).stat().st_size > 0, name
    assert doc["experiment"] == "newsgroups" and doc["config"]["methods"] == list(cfg.methods)
    assert [r["method"] for r in doc["results"]] == list(cfg.methods)
    for row in doc["results"]:
        for key in ("test_loss", "test_acc", "seconds", "function_calls", "steps", "seed", "compile_seconds"):
            assert row[key] is not None, key
        assert 0 <= row["test_acc"] <= 1 and math.isfinite(row["test_loss"]) and row["seconds"] > 0
        assert row["steps"] == cfg.outer_steps
    text = (d / "results.md").read_text()
    assert "Smoke run" in text and "not 20 Newsgroups" in text and "not quoted" in text
    assert "stocBiO converges fastest" not in text  # the paper's figure only beside the paper's data
    assert doc["config"]["data"].startswith("generated")


def test_function_calls_per_step(out):
    _, doc, cfg = out
    rows = {r["method"]: r for r in doc["results"]}
    T, Q = cfg.inner_steps, 3
    # stocBiO: T + 1 gradients and Q + 1 HVPs per outer step
    assert rows["stocbio:Q=3,batch=50"]["function_calls"] == cfg.outer_steps * (T + 1 + Q + 1)
    # ITD-BiO: reverse mode through T warm-started steps, no extra inner run: T + 1 gradients, T HVPs; its start
    # (the carried iterate) does not depend on θ, so no JVP of V is charged
    assert rows["itd-bio"]["function_calls"] == cfg.outer_steps * (T + 1 + T)


def test_curves_start_at_uniform_prediction_and_run_forward_in_time(out):
    d, doc, cfg = out
    with open(d / "curves.csv") as f:
        points = list(csv.DictReader(f))
    for m in cfg.methods:
        mine = [p for p in points if p["method"] == m]
        assert float(mine[0]["seconds"]) == 0.0 and int(mine[0]["step"]) == 0
        assert float(mine[0]["test_loss"]) == pytest.approx(math.log(20), rel=1e-5)  # W_0 = 0
        times = [float(p["seconds"]) for p in mine]
        assert times == sorted(times) and [int(p["step"]) for p in mine] == [0, 2, 3]  # eval_every 2, and the end
        last = next(r for r in doc["results"] if r["method"] == m)
        assert float(mine[-1]["test_loss"]) == pytest.approx(last["test_loss"])
        assert float(mine[-1]["test_loss"]) < math.log(20)  # the warm-started inner iterate learned


def test_synthetic_corpus_is_tfidf_like():
    data = synthetic_corpus(50, 20, vocabulary=100, length=30, seed=1)
    x, y = data["train"]
    assert x.shape == (50, 100) and data["test"][0].shape == (20, 100)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    assert x.min() >= 0 and set(np.unique(y)) <= set(range(20))


def test_config_refuses_keys_unused_with_the_data_given(tmp_path):
    exp = get("newsgroups")
    with pytest.raises(ConfigError, match="vocabulary is not used here"):
        exp.make_config({"data_dir": str(tmp_path), "vocabulary": "100"})
    with pytest.raises(ConfigError, match="max_features is not used here"):
        exp.make_config({"max_features": "100"})
    with pytest.raises(ConfigError, match="seconds"):
        exp.make_config({"seconds": "0"})
    with pytest.raises(ConfigError, match="methods"):
        exp.make_config({"methods": "stocbio:Q=1.5"})


def test_divergence_stops_with_one_line(tmp_path):
    code, _, err = ablo("run", "newsgroups", "--tiny", "--out", tmp_path / "a", "--set", "outer_lr=1e30")
    line = one_error_line(err)
    assert code == 2 and "outer step" in line and "newsgroups stocbio" in line and "not finite" in line
    assert list((tmp_path / "a" / "checkpoints").rglob("checkpoint.npz"))  # the last good state survives


def test_inner_step_above_two_over_L_is_refused(tmp_path):
    code, _, err = ablo("run", "newsgroups", "--tiny", "--out", tmp_path / "a", "--set", "inner_lr=1e6")
    line = one_error_line(err)
    assert code == 2 and "inner_lr = 1e+06" in line and "L = " in line
