"""Experiments by name. Each module registers ``run(config: dict, out_dir, progress) -> dict``
(the summary document it wrote) with its default config; the CLI looks them up here."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Dict

@dataclass(frozen=True)
class Experiment:
    name: str
    run: Callable  # run(config: dict, out_dir: pathlib.Path, progress) -> dict
    defaults: dict = field(default_factory=dict)
    summary: str = ""


EXPERIMENTS: Dict[str, Experiment] = {}
#: modules that register experiments, imported lazily (their dependencies are extras)
MODULES: list = []


def register(exp: Experiment) -> Experiment:
    EXPERIMENTS[exp.name] = exp
    return exp


def load_all() -> Dict[str, Experiment]:
    for m in MODULES:
        importlib.import_module(f"{__name__}.{m}")
    return EXPERIMENTS


def get(name: str) -> Experiment:
    exps = load_all()
    if name not in exps:
        raise ValueError(f"unknown experiment {name!r}; choose one of: {', '.join(sorted(exps))}")
    return exps[name]
