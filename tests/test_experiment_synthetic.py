"""Tiny runs of the synthetic experiments (paper 000 §5.1) write the documented summary.json."""

import json
import math

import pytest

from ablo.experiments import get, null_progress


def _run(name, tmp_path):
    exp = get(name)
    summary = exp.run(dict(exp.tiny), tmp_path, null_progress)
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert doc["experiment"] == name and isinstance(doc["config"], dict)
    assert len(doc["results"]) == len(summary["results"]) > 0
    assert (tmp_path / "results.md").exists() and (tmp_path / "curves.csv").exists()
    assert list(tmp_path.glob("*.png"))
    return doc


def test_counterexample_tiny(tmp_path):
    doc = _run("counterexample", tmp_path)
    rows = doc["results"]
    seeds = get("counterexample").tiny["seeds"]
    assert {(r["method"], r["seed"]) for r in rows} == {(m, s) for m in ("fom", "ufom") for s in seeds}
    for r in rows:
        assert math.isfinite(r["final_theta"]) and r["final_abs_grad"] >= 0
    b2 = doc["config"]["b"][1]
    assert b2 == pytest.approx(17.39527, abs=1e-5) and doc["config"]["A"] == pytest.approx(12.59685, abs=1e-5)
    # FOM's fixed point is where the construction puts it: |dM/dθ| there exceeds sqrt(D) (Theorem 2)
    assert all(p["abs_grad_M"] > math.sqrt(doc["config"]["D"]) for p in doc["config"]["fom_fixed_points"])


def test_synthetic_q_tiny(tmp_path):
    doc = _run("synthetic-q", tmp_path)
    rows = doc["results"]
    assert len(rows) == len(doc["config"]["alphas"])
    for r in rows:
        assert 0 < r["q_theory"] <= 1 and r["D2"] >= 0 and r["V2"] > 0
        assert r["q_grid"] is None or 0 < r["q_grid"] <= 1
    curve = [r for r in rows if r["alpha"] == pytest.approx(doc["config"]["alpha_curve"])]
    assert len(curve) == 1
    for k in ("calls_to_target_q0", "calls_to_target_qstar", "calls_to_target_q1"):
        assert k in curve[0] and (curve[0][k] is None or curve[0][k] > 0)
    # D² grows with the inner step size α while V² shrinks (paper 000 Fig. 1d)
    assert rows[-1]["D2"] > rows[0]["D2"] and rows[-1]["V2"] < rows[0]["V2"]
