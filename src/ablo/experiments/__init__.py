"""Experiments by name: spec → typed config → problem → estimator → outer loop → results.

Each module in this package registers an :class:`Experiment` on import: its name, its config
class (a frozen :class:`~ablo.config.ExperimentConfig` whose fields declare type,
range and help), ``tiny`` (overrides for a seconds-long smoke run, used by the tests) and
``run(config, ctx) -> Result``. ``run`` builds its problems from the config, estimators from
the config's specs (:func:`ablo.estimators.parse`), trains with :mod:`ablo.outer` (``run``, or
``make_step`` under ``lax.scan``/``vmap``), draws its figures with :mod:`.plots` and ends with
:meth:`RunContext.finish`, which writes summary.json, the CSV files and results.md once and
returns the :class:`Result` in memory. :meth:`RunContext.sweep` is the seeds × methods loop with
its one row schema, :meth:`RunContext.train` one run of the outer loop, and
:func:`ablo.results.by_method` the per-method table of results.md.

:func:`execute` is the one way to run an experiment (the CLI uses it): it claims the out folder
(:class:`~ablo.runfolder.RunFolder`: manifest, lock, no mixing or silent replacing) and hands
``run`` a :class:`RunContext` with the folder's path, the progress factory and the resume flag.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import pkgutil
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from .. import outer
from ..results import jsonable, write_csv, write_markdown, write_summary
from ..runfolder import RunFolder, checkpoint_dir
from ..config import ExperimentConfig, build, estimator


@contextlib.contextmanager
def null_progress(description: str, total):
    """A progress factory that draws nothing."""
    yield lambda n=1: None


@dataclass(frozen=True)
class Result(MappingABC):
    """What a run returns, in memory, and what its summary.json holds: the experiment's name, its
    config as run (every automatic value resolved, with how), one row per method and seed. Read
    as the summary document (``result["results"]``)."""

    experiment: str
    config: Mapping
    results: Sequence[Mapping]

    def __getitem__(self, key: str):
        if key not in ("experiment", "config", "results"):
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(("experiment", "config", "results"))

    def __len__(self) -> int:
        return 3


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: ``run(config, ctx) -> Result``; ``config`` its
    ExperimentConfig class; ``tiny`` the smoke-run overrides; ``summary`` one line for ``ablo list``."""

    name: str
    run: Callable[[Any, "RunContext"], Result]
    config: type
    tiny: Mapping = field(default_factory=dict)
    summary: str = ""

    def make_config(self, overrides: Optional[Mapping[str, Any]] = None, tiny: bool = False) -> ExperimentConfig:
        """The typed config from the defaults, ``tiny`` and ``overrides`` (text or values)."""
        return build(self.config, overrides, self.tiny if tiny else None)


@dataclass
class RunContext:
    """What an experiment's ``run`` gets besides its config: the out folder, a progress factory
    ``progress(description, total)``, whether to resume, and ``note`` for one-line messages."""

    out: Path
    progress: Callable = null_progress
    resume: bool = False
    note: Callable[[str], None] = lambda message: None

    def train(self, label: str, problem, estimator, optimizer, theta0, sampler, *, key, budget,
              options: outer.Options = outer.Options(), checkpoint_every: Optional[int] = None):
        """:func:`ablo.outer.run` of the run called ``label`` with this run's checkpoint folder (saved every
        ``checkpoint_every`` steps and at the end), resume flag and progress bar; notes where a resume
        starts and why a run stopped before its budget. ``RunResult.record()`` is the run's part of a row."""
        def resumed(step: int) -> None:
            self.note(f"{label}: resuming from outer step {step}" if step else f"{label}: no checkpoint, starting at step 0")

        options = dataclasses.replace(
            options, checkpoint=outer.Checkpointing(checkpoint_dir(self.out, label), checkpoint_every, self.resume, resumed),
            progress=dataclasses.replace(options.progress, bar=self.progress, label=label))
        result = outer.run(problem, estimator, optimizer, theta0, sampler, key=key, budget=budget, options=options)
        if result.stopped:
            self.note(result.stopped)
        return result

    def sweep(self, cases: Sequence[Mapping], methods: Sequence[str], train: Callable) -> tuple:
        """The loop every outer-loop experiment runs: for each case (``{"seed": s}``, or with more
        identifiers such as ``{"p": 0.1, "seed": s}``) and each method spec, parsed once into an
        estimator, ``train(case, spec, estimator) -> (row, curve)``. Returns (rows, curves): each row
        ``{"method": spec, "estimator": name, **case, **row}``, each curve point ``{"method": spec,
        **case, **point}``: one row schema for every experiment."""
        estimators = {spec: estimator(spec) for spec in methods}
        rows, curves = [], []
        for case in cases:
            for spec, est in estimators.items():
                row, curve = train(case, spec, est)
                rows.append({"method": spec, "estimator": est.name, **case, **row})
                curves += [{"method": spec, **case, **point} for point in curve]
        return rows, curves

    def finish(self, experiment: str, config: Mapping, rows: Sequence[Mapping], *, title: str,
               table: Optional[Sequence[Mapping]] = None, columns: Optional[Sequence[str]] = None, notes: str = "",
               csv: Optional[Mapping[str, Sequence[Mapping]]] = None) -> Result:
        """Write the run's files once (each atomically): ``csv`` ({file name: rows}), results.md (``title``,
        ``table`` (default ``rows``) with ``columns``, ``notes``) and summary.json; return the :class:`Result`."""
        for name, csv_rows in (csv or {}).items():
            write_csv(self.out / name, csv_rows)
        write_markdown(self.out / "results.md", title, rows if table is None else table, columns, notes)
        result = Result(experiment, jsonable(dict(config)), jsonable(list(rows)))
        write_summary(self.out, experiment, result.config, result.results)
        return result


EXPERIMENTS: Dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    EXPERIMENTS[exp.name] = exp
    return exp


def load_all() -> Dict[str, Experiment]:
    """Import every experiment module of this package."""
    for m in pkgutil.iter_modules(__path__):
        if not m.name.startswith("_") and m.name != "config":
            importlib.import_module(f"{__name__}.{m.name}")
    return EXPERIMENTS


def get(name: str) -> Experiment:
    exps = load_all()
    if name not in exps:
        raise ValueError(f"unknown experiment {name!r}; choose one of: {', '.join(sorted(exps))}")
    return exps[name]


def execute(exp: Experiment, cfg: ExperimentConfig, out, *, resume: bool = False, overwrite: bool = False,
            progress: Callable = null_progress, note: Callable[[str], None] = lambda m: None) -> Result:
    """Run ``exp`` with ``cfg`` into the folder ``out`` (claimed by a RunFolder for the run)."""
    with RunFolder(out, exp.name, cfg, getattr(cfg, "data_dir", None), resume=resume, overwrite=overwrite) as folder:
        return exp.run(cfg, RunContext(folder.path, progress, resume, note))
