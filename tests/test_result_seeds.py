"""Pre-registration of the committed results: every summary.json under docs/results records the seeds
its settings were chosen on (``tuned_seeds``) and the seeds it reports, and the two are disjoint, so no
number the docs quote comes from a seed its configuration was tuned on."""

import json
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
SUMMARIES = sorted(p for p in RESULTS.rglob("summary.json"))
#: Runs made before the tuned_seeds field, awaiting their rerun on fresh seeds (strict: a rerun that
#: passes must leave this list)
PENDING: set = set()


def _seeds(summary: dict) -> tuple:
    """(tuned, reported) from a run's config, or from a merged summary's top level."""
    for where in (summary.get("config") or {}, summary):
        if "tuned_seeds" in where:
            reported = where.get("seeds", where.get("reported_seeds"))
            if reported is None and where.get("seed") is not None:
                reported = [where["seed"]]
            if reported is not None:
                return list(where["tuned_seeds"]), list(reported)
    return None, None


def test_there_are_committed_summaries():
    assert len(SUMMARIES) >= 20


def _case(path: Path):
    name = str(path.relative_to(RESULTS).parent)
    pending = pytest.mark.xfail(strict=True, reason="made before tuned_seeds was recorded; rerun pending")
    return pytest.param(path, id=name, marks=[pending] if name in PENDING else [])


@pytest.mark.parametrize("path", [_case(p) for p in SUMMARIES])
def test_reported_seeds_are_not_tuning_seeds(path):
    tuned, reported = _seeds(json.loads(path.read_text()))
    assert tuned is not None, f"{path}: records no tuned_seeds (rerun it with the current release)"
    assert reported, f"{path}: records no reported seeds"
    assert not set(tuned) & set(reported), f"{path}: reports seeds {sorted(set(tuned) & set(reported))} it was tuned on"
