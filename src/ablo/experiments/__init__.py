"""Experiments by name.

Each module in this package registers an :class:`Experiment` on import. ``run(config,
out_dir, progress)`` builds its problems from ``config`` (its ``defaults`` updated with the
user's overrides), writes summary.json / CSV / PNG / Markdown into ``out_dir`` through
:mod:`ablo.results`, and returns the summary document. ``tiny`` is a config override that
runs in seconds (used by the tests).

Standard config keys (an experiment uses those that apply): ``methods`` (estimator names),
``seeds`` (list of ints), ``data_dir`` (None = bundled/generated data), ``budget_calls``
(function-call budget per run), ``outer_steps``.

``progress(description, total)`` returns a context manager that yields ``advance(n=1)``.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable, Dict


@dataclass(frozen=True)
class Experiment:
    name: str
    run: Callable  # run(config: dict, out_dir: pathlib.Path, progress) -> dict
    defaults: dict = field(default_factory=dict)
    tiny: dict = field(default_factory=dict)
    summary: str = ""


EXPERIMENTS: Dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    EXPERIMENTS[exp.name] = exp
    return exp


@contextlib.contextmanager
def null_progress(description: str, total: int):
    yield lambda n=1: None


def load_all() -> Dict[str, Experiment]:
    """Import every experiment module of this package (their dependencies are extras)."""
    for m in pkgutil.iter_modules(__path__):
        if not m.name.startswith("_"):
            importlib.import_module(f"{__name__}.{m.name}")
    return EXPERIMENTS


def get(name: str) -> Experiment:
    exps = load_all()
    if name not in exps:
        raise ValueError(f"unknown experiment {name!r}; choose one of: {', '.join(sorted(exps))}")
    return exps[name]
