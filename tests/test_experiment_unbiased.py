"""``ablo run unbiased --tiny``: every method has a comparison row on every problem (or the reason it
does not apply), MLP hypercleaning with dim θ = n, the random estimators' variances finite, the exact
ones unbiased in float64, the online rows and the files written."""

import json
import math

from ablo.experiments import get
from _cli_run import ablo

PROBLEMS = ("lr", "weights", "synthetic-q", "hypercleaning")


def test_unbiased_tiny(tmp_path):
    code, out, err = ablo("run", "unbiased", "--tiny", "--out", tmp_path / "run")
    assert code == 0, err
    d = tmp_path / "run"
    doc = json.loads((d / "summary.json").read_text())
    assert doc["experiment"] == "unbiased" and doc["config"]["smoke"] is True
    exp = get("unbiased")
    methods, cfg = exp.tiny["methods"], exp.make_config(tiny=True)
    rows = [r for r in doc["results"] if r["problem"] in PROBLEMS]
    assert [(r["problem"], r["method"]) for r in rows] == [(p, m) for p in PROBLEMS for m in methods]
    for r in rows:
        if "skipped" in r:  # reversible cannot reverse the lr problem's noisy GD
            assert r["method"] == "reversible" and r["problem"] == "lr" and "noisy-gd" in r["skipped"]
            continue
        assert math.isfinite(r["variance"]) and r["expected_calls"] > 0 and r["temp_bytes"] > 0
    dims = {r["problem"]: r["dim_theta"] for r in rows if "skipped" not in r}
    assert dims == {"lr": 1, "synthetic-q": 1, "weights": cfg.n_examples, "hypercleaning": cfg.n_train}
    random = [r for r in rows if r["problem"] == "hypercleaning" and r["method"] != "reversible"]
    assert len(random) == 3 and all(0 < r["variance"] < math.inf for r in random)
    exact = [r for r in rows if r["method"] == "reversible" and "skipped" not in r]
    assert [r["problem"] for r in exact] == ["weights", "synthetic-q", "hypercleaning"]
    assert all(r["variance"] < 1e-20 and r["bias"] < 1e-8 for r in exact)
    online = [r for r in doc["results"] if r["problem"] == "lr (online)"]
    assert [r["method"] for r in online] == ["truncated", "ufom", "pes", "grid optimum of M^(r)"]
    text = (d / "results.md").read_text()
    assert "Smoke run" in text and "| hypercleaning | telescope |" in text
    assert (d / "comparison.csv").exists() and (d / "online.csv").exists() and list(d.glob("*.png"))
