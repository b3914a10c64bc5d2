"""The one experiment driver: RunContext.sweep owns the seeds × methods loop and the row schema,
ablo.results.by_method the per-method table; RunResult.record() is a run's part of every row."""

import math

from ablo.experiments import RunContext
from ablo.results import by_method


def test_sweep_runs_every_case_and_method_and_puts_the_identifiers_first(tmp_path):
    calls = []

    def train(case, spec, est):
        calls.append((case["seed"], spec, est.name))
        return {"score": case["seed"] * 10 + len(calls)}, [{"step": 1, "x": 0.5}, {"step": 2, "x": 0.25}]

    rows, curves = RunContext(tmp_path).sweep([{"seed": 3}, {"seed": 4}], ["fom", "ufom:q=0.5"], train)
    assert calls == [(3, "fom", "fom"), (3, "ufom:q=0.5", "ufom"), (4, "fom", "fom"), (4, "ufom:q=0.5", "ufom")]
    assert [list(r)[:3] for r in rows] == [["method", "estimator", "seed"]] * 4
    assert [(r["method"], r["seed"], r["score"]) for r in rows] == [("fom", 3, 31), ("ufom:q=0.5", 3, 32),
                                                                     ("fom", 4, 43), ("ufom:q=0.5", 4, 44)]
    assert len(curves) == 8 and curves[0] == {"method": "fom", "seed": 3, "step": 1, "x": 0.5}


def test_by_method_means_spreads_and_keeps_missing_and_nan_visible():
    rows = [{"method": "a", "acc": 1.0, "f1": None}, {"method": "b", "acc": 4.0, "f1": math.nan},
            {"method": "a", "acc": 3.0, "f1": None}]
    table = by_method(rows, ["acc", "f1"], spread=("acc",))
    assert [t["method"] for t in table] == ["a", "b"] and [t["seeds"] for t in table] == [2, 1]
    assert table[0]["acc"] == 2.0 and table[0]["acc_std"] == math.sqrt(2.0) and table[0]["f1"] is None
    assert table[1]["acc"] == 4.0 and "acc_std" not in table[1] and math.isnan(table[1]["f1"])
