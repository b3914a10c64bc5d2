"""``ablo run unbiased --tiny``: every method has a comparison row on every problem (or the reason it
does not apply), the step-size schedule with dim θ = 4 and MLP hypercleaning with dim θ = n, the random
estimators' variances finite, the exact ones unbiased in float64, calls to target on the problems the
config names (its target between M(θ_0) and M(θ_T)), the online rows and the files written."""

import json
import math

from ablo.experiments import get
from ablo.experiments.unbiased import wins
from _cli_run import ablo

PROBLEMS = ("lr", "schedule", "weights", "synthetic-q", "hypercleaning")


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
        if "skipped" in r:  # reversible cannot reverse the noisy GD of lr and schedule
            assert r["method"] == "reversible" and r["problem"] in ("lr", "schedule") and "noisy-gd" in r["skipped"]
            assert "calls_to_target" not in r
            continue
        assert math.isfinite(r["variance"]) and r["expected_calls"] > 0 and r["temp_bytes"] > 0
        if r["problem"] in cfg.target_problems:
            calls = [math.inf if r[k] is None else r[k] for k in ("calls_min", "calls_to_target", "calls_max")]
            assert 0 <= r["reached"] <= 1 and 0 < calls[0] <= calls[1] <= calls[2]  # JSON null: not reached
            assert math.isfinite(calls[1]) == (r["reached"] >= 0.5)
        else:
            assert "calls_to_target" not in r
    dims = {r["problem"]: r["dim_theta"] for r in rows if "skipped" not in r}
    assert dims == {"lr": 1, "schedule": 4, "synthetic-q": 1, "weights": cfg.n_examples, "hypercleaning": cfg.n_train}
    random = [r for r in rows if r["problem"] == "hypercleaning" and r["method"] != "reversible"]
    assert len(random) == 3 and all(0 < r["variance"] < math.inf for r in random)
    targets = [r for r in doc["results"] if r["problem"].endswith(" (target)")]
    assert [r["problem"] for r in targets] == [f"{p} (target)" for p in cfg.target_problems] == ["schedule (target)"]
    assert all(r["M_thetaT"] < r["target"] < r["M_theta0"] for r in targets)
    exact = [r for r in rows if r["method"] == "reversible" and "skipped" not in r]
    assert [r["problem"] for r in exact] == ["weights", "synthetic-q", "hypercleaning"]
    assert all(r["variance"] < 1e-20 and r["bias"] < 1e-8 for r in exact)
    online = [r for r in doc["results"] if r["problem"] == "lr (online)"]
    assert [r["method"] for r in online] == ["truncated", "ufom", "pes", "grid optimum of M^(r)"]
    text = (d / "results.md").read_text()
    assert "Smoke run" in text and "| hypercleaning | telescope |" in text and "the target is M* = M(θ_0)" in text
    assert "- **schedule** (dim θ = 4): lowest variance × calls" in text and "fewest calls to the target" in text
    for name in ("comparison.csv", "targets.csv", "online.csv"):
        assert (d / name).exists()
    assert list(d.glob("*.png"))


def test_wins_reads_the_winners_off_the_rows():
    row = lambda method, vxc, calls=None, **kw: dict(problem="p", method=method, dim_theta=3, variance_x_calls=vxc,
                                                     **({} if calls is None else {"calls_to_target": calls}), **kw)
    rows = [row("reverse", 1e-30, 900.0), row("ufom:q=0.2", 2.0, 1200.0), row("telescope", 0.5, math.inf),
            row("es:sigma=0.01", 1.0, 800.0), row("fom", 0.0, math.inf, relative_bias=1.0),
            row("reversible", 0.0, skipped="no")]
    assert wins(rows) == ("- **p** (dim θ = 3): lowest variance × calls among the random estimators: telescope "
                          "(best of ES/PES ranks 2 of 3); relative bias ‖EĜ − G‖/‖G‖ of fom 1; fewest calls to the "
                          "target: es:sigma=0.01 (800).\n\n")
    rows[0]["calls_to_target"] = 700.0
    assert wins(rows).endswith("fewest calls to the target: reverse (700), of the random estimators es:sigma=0.01 "
                               "(800).\n\n")
    unreached = [row("ufom", 2.0, math.inf), row("pes", 1.0, math.inf)]
    assert wins(unreached).endswith("(best of ES/PES ranks 1 of 2); no method reached the target in most repeats.\n\n")
