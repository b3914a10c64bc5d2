"""``ablo run unbiased --tiny``: every method has a comparison row on both problems (or the reason it
does not apply), the online rows and the files are written."""

import json
import math

from ablo.experiments import get
from _cli_run import ablo


def test_unbiased_tiny(tmp_path):
    code, out, err = ablo("run", "unbiased", "--tiny", "--out", tmp_path / "run")
    assert code == 0, err
    d = tmp_path / "run"
    doc = json.loads((d / "summary.json").read_text())
    assert doc["experiment"] == "unbiased" and doc["config"]["smoke"] is True
    methods = get("unbiased").tiny["methods"]
    rows = [r for r in doc["results"] if r["problem"] in ("lr", "weights")]
    assert {(r["problem"], r["method"]) for r in rows} == {(p, m) for p in ("lr", "weights") for m in methods}
    for r in rows:
        if "skipped" in r:  # reversible cannot reverse the lr problem's noisy GD
            assert r["method"] == "reversible" and r["problem"] == "lr" and "noisy-gd" in r["skipped"]
            continue
        assert math.isfinite(r["variance"]) and r["expected_calls"] > 0 and r["temp_bytes"] > 0
    exact = [r for r in rows if r["method"] == "reversible" and "skipped" not in r]
    assert len(exact) == 1 and exact[0]["variance"] < 1e-20 and exact[0]["bias"] < 1e-8
    online = [r for r in doc["results"] if r["problem"] == "lr (online)"]
    assert [r["method"] for r in online] == ["truncated", "ufom", "pes", "grid optimum of M^(r)"]
    assert "Smoke run" in (d / "results.md").read_text()
    assert (d / "comparison.csv").exists() and (d / "online.csv").exists() and list(d.glob("*.png"))
