"""The experiments give the same numbers on the same seeds as before they moved onto one
driver: --tiny runs at explicit seeds against tests/fixtures/tiny_numbers.json, recorded with
the code before the move (tests/_tiny_numbers.py lists the runs)."""

import json
from pathlib import Path

import pytest

from _tiny_numbers import CASES, close, run_case

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "tiny_numbers.json").read_text())
QUICK = ("counterexample",)


@pytest.mark.parametrize("case", [c if c in QUICK else pytest.param(c, marks=pytest.mark.slow) for c in CASES])
def test_tiny_run_reproduces_the_numbers_recorded_before_the_move(case):
    if case not in RECORDED:
        pytest.skip(f"no numbers recorded for {case}")
    got, want = run_case(case), RECORDED[case]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for key, value in w.items():
            assert key in g, (case, key)
            assert close(g[key], value), (case, g.get("method"), key, g[key], value)
