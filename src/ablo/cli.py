"""The ``ablo`` command: list, run, compare, diagnose, demo, bench.

``ablo run EXPERIMENT`` merges, in increasing priority, the experiment's ``defaults``, its
``tiny`` overrides (``--tiny``), ``--set key=value`` and ``--key value`` pairs for any config key
(values parsed as JSON, else comma lists, else strings), and the named options (``--method``,
``--seed(s)``, ``--data-dir``, ``--budget-calls``, ``--steps`` = outer steps, ``--resume``,
``--devices``), each given at most once. SIGTERM, like Ctrl-C, saves a checkpoint and prints
the command that resumes. Without ``--data-dir`` a run reads its dataset from the ``ablo data fetch`` cache
when it has been fetched there (:func:`ablo.config.build`; ``--data-dir none`` refuses
it). User errors (:func:`user_errors`: names, values, files, folders) end in one line on stderr
and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import UserError, did_you_mean
from .checks import is_int

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Approximate bi-level optimization: run the papers' experiments and compare estimators.")


class CLIError(UserError, ValueError):
    """A user error in the command line itself (a name, an option, a value)."""


# --- progress bars ---------------------------------------------------------------------------
def rich_progress(transient: bool = False):
    """A ``progress(description, total)`` factory drawing rich progress bars on stderr; use as a
    context manager around a run. ``transient`` bars vanish when done."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=transient)

    @contextlib.contextmanager
    def progress(description: str, total):
        task = bars.add_task(description, total=total)
        try:
            yield lambda n=1: bars.advance(task, n)
        finally:
            t = bars.tasks[task] if task < len(bars.tasks) else None
            if t is not None and t.total is None:
                bars.update(task, total=t.completed)

    return bars, progress


# --- config ------------------------------------------------------------------------------------
def parse_overrides(pairs: List[str], extra: List[str]) -> dict:
    """``--set k=v`` pairs and leftover ``--k v`` / ``--k=v`` arguments as {key: text}; the
    experiment's typed config parses the texts."""
    out: dict = {}

    def put(key: str, value: str, origin: str) -> None:
        key = key.strip().replace("-", "_")
        if not key:
            raise CLIError(f"{origin}: empty key")
        if key in out:
            raise CLIError(f"config key {key} given twice")
        out[key] = value

    for p in pairs:
        if "=" not in p:
            raise CLIError(f"--set expects key=value; got {p!r}")
        k, v = p.split("=", 1)
        put(k, v, "--set")
    i = 0
    while i < len(extra):
        a = extra[i]
        if not a.startswith("--") or len(a) < 3:
            raise CLIError(f"unexpected argument {a!r}; config keys are given as --key value or --set key=value")
        key = a[2:]
        if "=" in key:
            key, v = key.split("=", 1)
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            v = extra[i + 1]
            i += 1
        else:
            raise CLIError(f"{a} needs a value (--{key} VALUE or --set {key}=VALUE)")
        put(key, v, a)
        i += 1
    return out


OVERWRITE_HELP = ("remove the files the previous ablo run in --out wrote, as its manifest.json lists them (results, "
                  "plots, checkpoints), then run; every other file there stays byte-identical, and a folder whose "
                  "manifest.json is not an ablo manifest is never touched. If the new run stops before writing "
                  "anything, the old files are put back")


#: Named options of ``ablo run`` and the config key each one sets.
NAMED = {"methods": "--method", "seeds": "--seed(s)", "data_dir": "--data-dir", "budget_calls": "--budget-calls",
         "outer_steps": "--steps", "devices": "--devices"}


def build_config(exp, methods, seed, seeds, data_dir, budget_calls, steps, sets, extra, tiny, devices):
    """The experiment's typed config from the command line: defaults, ``--tiny``, ``--set``/``--KEY``
    and the named options, all parsed and checked by the experiment's config class (which also
    defaults data_dir to the fetched dataset)."""
    import dataclasses

    from .config import parse_value

    keys = {f.name for f in dataclasses.fields(exp.config)}
    overrides = parse_overrides(sets, extra)
    for key in overrides:
        if key not in keys:
            raise CLIError(f"unknown config key {key!r} of {exp.name}{did_you_mean(key, keys)} "
                           f"(`ablo config {exp.name}` lists them)")
    named = {}
    if seed is not None and seeds is not None:
        raise CLIError("give --seed or --seeds, not both")
    if methods:
        for spec in methods:
            check_estimator_name(spec)
        named["methods"] = list(methods)
    if seed is not None:
        named["seeds" if "seeds" in keys else "seed"] = [seed] if "seeds" in keys else seed
    if seeds is not None:
        if "seeds" not in keys:
            raise CLIError(f"{exp.name} runs one seed: give --seed N, not --seeds")
        named["seeds"] = seeds
    if data_dir is not None:
        named["data_dir"] = str(data_dir)
    if budget_calls is not None:
        named["budget_calls"] = budget_calls
    if steps is not None:
        named["outer_steps"] = steps
    if devices is not None:
        named["devices"] = devices
    for key, value in named.items():
        if key not in keys:
            option = NAMED.get(key, "--seed")
            raise CLIError(f"{exp.name} does not take {option}; its config keys: {', '.join(sorted(keys))}")
        if key in overrides:
            raise CLIError(f"config key {key} given twice (as {NAMED.get(key, key)} and as --{key}/--set)")
        overrides[key] = value
    given = parse_value(exp.config, "data_dir", overrides["data_dir"]) if "data_dir" in overrides else None
    if given is not None and not Path(given).exists():
        raise CLIError(f"data_dir: {given} does not exist (from --data-dir or --set; none: the built-in data)")
    cfg = exp.make_config(overrides, tiny=tiny)
    check_integer_bounds(cfg)
    return cfg


#: The largest seed: JAX's PRNGKey keeps 32 bits (2**32 would silently be seed 0).
MAX_SEED = 2 ** 32 - 1
#: The largest other integer (steps, sizes, counts): JAX's default 32-bit integers.
MAX_INT = 2 ** 31 - 1


def check_integer_bounds(cfg) -> None:
    """Refuse integers that JAX would silently wrap: seeds above :data:`MAX_SEED`, any other
    integer config value above :data:`MAX_INT`."""
    import dataclasses

    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        values = value if isinstance(value, (list, tuple)) else [value]
        top = MAX_SEED if "seed" in f.name else MAX_INT
        for v in values:
            if is_int(v) and abs(v) > top:
                raise CLIError(f"{f.name}: {v} is out of range; allowed: at most {top}"
                               + (" (JAX keys hold 32-bit seeds)" if top == MAX_SEED else ""))


def check_estimator_name(spec: str) -> None:
    """CLIError with the closest registered name when ``spec`` names no estimator (its values are
    checked by the config)."""
    from . import estimators

    name = spec.split(":", 1)[0]
    if name not in estimators.REGISTRY and name.rsplit("-", 1)[0] not in estimators.REGISTRY:  # NAME, NAME-VALUE
        raise CLIError(f"--method {spec}: unknown estimator {name!r}{did_you_mean(name, estimators.REGISTRY)}; "
                       f"`ablo list` names them")


def run_experiment(exp, cfg, out, resume: bool = False, overwrite: bool = False) -> dict:
    """Run with progress bars into ``out``, then print results.md on stdout. Ctrl-C or SIGTERM:
    the run checkpoints, one line says how to resume, exit code 130 (143 for SIGTERM)."""
    from .experiments import execute

    bars, progress = rich_progress()
    note = lambda message: bars.console.print(f"ablo: {message}")
    with sigterm_as_interrupt() as terminated:
        try:
            with bars:
                summary = execute(exp, cfg, out, resume=resume, overwrite=overwrite, progress=progress, note=note)
        except KeyboardInterrupt as e:  # typer would swallow it silently
            _interrupted(e, terminated())
    md = Path(out) / "results.md"
    typer.echo(md.read_text() if md.is_file() else json.dumps(summary.get("results", []), indent=1))
    typer.echo(f"results in {out}/ (summary.json, CSV, PNG, results.md)")
    return summary


# --- compare ---------------------------------------------------------------------------------
#: Row fields that identify a setting (besides any string field); every other number is a metric.
ID_KEYS = ("method", "K", "objective", "model", "ways", "shots", "p", "corrupt", "q", "alpha")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_nonfinite(v) -> bool:
    """A metric that is not a finite number: null (how summary.json stores NaN and ±inf), or a
    NaN/inf float of a hand-edited file."""
    return v is None or (isinstance(v, float) and not math.isfinite(v))


#: Config keys never used to tell settings apart (runs split over seeds or methods still pool).
POOLED_CONFIG = ("seeds", "methods", "resume", "devices", "out")


def _scalar(v) -> bool:
    return v is None or isinstance(v, (str, int, float)) or (
        isinstance(v, list) and all(x is None or isinstance(x, (str, int, float)) for x in v))


def aggregate(docs: List[dict], sources: Optional[List[str]] = None) -> dict:
    """{experiment: [row per setting]}: mean ± std (sample std) over the rows (seeds) of each
    setting, ``n`` rows, and the papers' figures for it (``paper_*``). A metric that is not
    finite in some rows (NaN, stored as null) is averaged over the finite ones and says so:
    "0.8 (n = 1; 1 NaN)". A setting is the row's
    identifying fields plus the config values that differ between the runs of an experiment.
    Two rows of one setting with the same seed are refused (they would be pooled as two seeds);
    ``sources`` names each doc's file in that message."""
    import numpy as np

    from .experiments._paper import reference

    configs: dict = {}
    for doc in docs:
        configs.setdefault(doc.get("experiment", "?"), []).append(doc.get("config", {}))
    varying = {exp: sorted(k for k in {k for c in cs for k in c} if k not in POOLED_CONFIG
                           and all(_scalar(c.get(k)) for c in cs)
                           and len({json.dumps(c.get(k)) for c in cs}) > 1)
               for exp, cs in configs.items()}
    groups: dict = {}
    seen: dict = {}  # (experiment, setting, seed) -> index of the first doc holding it
    for i, doc in enumerate(docs):
        exp, cfg = doc.get("experiment", "?"), doc.get("config", {})
        source = sources[i] if sources else f"run {i + 1}"
        setting = tuple((f"config.{k}", json.dumps(cfg.get(k)) if isinstance(cfg.get(k), list) else cfg.get(k))
                        for k in varying[exp])
        for row in doc.get("results", []):
            ident = tuple((k, v) for k, v in row.items()
                          if k != "seed" and (k in ID_KEYS or isinstance(v, str)) and not isinstance(v, (list, dict)))
            if row.get("seed") is not None:
                first = seen.setdefault((exp, setting + ident, json.dumps(row["seed"])), i)
                if first != i:
                    first = sources[first] if sources else f"run {first + 1}"
                    label = ", ".join(f"{k}={v}" for k, v in setting + ident)
                    raise CLIError(f"seed {row['seed']} of {exp} ({label}) appears twice, in {first} and {source}: "
                                   f"pooling it would count one seed as two; compare runs of distinct seeds")
            g = groups.setdefault((exp, setting + ident), {"rows": [], "config": cfg})
            g["rows"].append(row)
    tables: dict = {}
    for (exp, ident), g in groups.items():
        out = dict(ident)
        out["n"] = len(g["rows"])
        keys = dict.fromkeys(k for r in g["rows"] for k, v in r.items()
                             if k not in out and k != "seed" and _is_number(v))
        for k in keys:
            vals = np.array([r[k] for r in g["rows"] if _is_number(r.get(k))], float)
            bad = sum(1 for r in g["rows"] if _is_nonfinite(r.get(k)))
            text = f"{vals.mean():.4g} ± {vals.std(ddof=1):.2g}" if len(vals) > 1 else f"{vals.mean():.4g}"
            out[k] = f"{text} (n = {len(vals)}; {bad} NaN)" if bad else text
        out.update(reference(exp, g["config"], g["rows"][0]))
        tables.setdefault(exp, []).append(out)
    return tables


def compare_table(paths: List[Path]) -> str:
    """Markdown: one table per experiment over the summary.json files in ``paths``."""
    from .results import markdown_table, read_summary

    docs = []
    for p in paths:
        try:
            docs.append(read_summary(p))
        except ValueError as e:  # no summary.json, not JSON
            raise CLIError(str(e)) from None
        doc = docs[-1]
        if not isinstance(doc, dict) or not isinstance(doc.get("results"), list) or not isinstance(
                doc.get("experiment"), str) or not all(isinstance(r, dict) for r in doc["results"]):
            raise CLIError(f"{p}: not an ablo summary (it needs an experiment name and a list of result rows)")
    tables = aggregate(docs, [str(p) for p in paths])
    parts = []
    for exp, rows in tables.items():
        parts.append(f"## {exp}\n\n" + markdown_table(rows))
    note = "mean ± sample std over seeds (n rows)" + (
        "; paper_* columns: the papers' reported figures, in the papers' units"
        if any(k.startswith("paper_") for rows in tables.values() for r in rows for k in r) else "") + "."
    return "\n".join(parts) + "\n" + note


# --- the diagnose example ------------------------------------------------------------------
def example_problem(steps: int, dim: int = 5, n: int = 10):
    """MAML linear regression (V(θ) = θ): task = a random linear map w, inner GD on the support
    mean squared error, outer loss on a query set. Returns (problem, θ_0, sampler)."""
    import jax
    import jax.numpy as jnp

    from .inner import gd
    from .problem import BilevelProblem

    def mse(phi, x, y):
        return jnp.mean((x @ phi - y) ** 2)

    def sampler(key):
        k1, k2, k3 = jax.random.split(key, 3)
        w = 1.0 + jax.random.normal(k1, (dim,))
        x, xq = jax.random.normal(k2, (n, dim)), jax.random.normal(k3, (n, dim))
        return (x, x @ w, xq, xq @ w)

    problem = BilevelProblem(lambda th, phi, t: mse(phi, t[0], t[1]), lambda th, phi, t: mse(phi, t[2], t[3]),
                             gd(0.05), steps)
    return problem, jnp.zeros(dim), sampler


# --- commands ----------------------------------------------------------------------------------
@app.command("list")
def list_cmd():
    """Experiments and estimators by name."""
    from rich.console import Console
    from rich.table import Table

    from . import estimators
    from .experiments import load_all

    console = Console()
    t = Table(title="experiments (ablo run NAME)")
    t.add_column("name")
    t.add_column("summary")
    for name, exp in sorted(load_all().items()):
        t.add_row(name, exp.summary)
    console.print(t)
    t = Table(title="estimators (--method NAME, NAME-VALUE or NAME:key=value,...)")
    t.add_column("name")
    t.add_column("summary")
    for name, entry in sorted(estimators.REGISTRY.items()):
        t.add_row(name + (f"[-{entry.shorthand}]" if entry.shorthand else ""), entry.summary)
    console.print(t)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(ctx: typer.Context,
        experiment: str = typer.Argument(..., help="experiment name (see `ablo list`)"),
        method: Optional[List[str]] = typer.Option(None, "--method", "-m",
                                                   help="estimator spec NAME or NAME:key=value,..., repeatable"),
        seed: Optional[int] = typer.Option(None, help="one seed"),
        seeds: Optional[str] = typer.Option(None, help="comma-separated seeds, e.g. 0,1,2"),
        data_dir: Optional[Path] = typer.Option(
            None, help="dataset directory; default: the dataset's folder in the `ablo data fetch` cache if it "
                       "was fetched, else the built-in data; none: the built-in data"),
        budget_calls: Optional[float] = typer.Option(None, help="function-call budget per run"),
        steps: Optional[int] = typer.Option(None, help="outer steps per run (config key outer_steps)"),
        set_: Optional[List[str]] = typer.Option(None, "--set", help="config override key=value, repeatable"),
        tiny: bool = typer.Option(False, help="the experiment's seconds-long smoke configuration"),
        out: Optional[str] = typer.Option(None, help="output folder (default runs/EXPERIMENT)"),
        resume: bool = typer.Option(False, help="continue the run in --out from its checkpoints (same config)"),
        overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
        devices: Optional[int] = typer.Option(None, help="shard each meta-batch over N devices")):
    """Run one experiment; any other --key value sets that config key (e.g. --model mlp).
    `ablo run EXPERIMENT --help` (or `ablo config EXPERIMENT`) lists its keys with their types,
    ranges and help. SIGTERM (a scheduler's stop, `timeout`) and Ctrl-C both save a checkpoint
    and print the command that resumes."""
    from .config import cached_data_dir

    exp = experiment_named(experiment)
    cfg = build_config(exp, method, seed, seeds, data_dir, budget_calls, steps, set_ or [], list(ctx.args), tiny,
                       devices)
    if getattr(cfg, "data_dir", None) is not None and cfg.data_dir == cached_data_dir(exp.config):
        typer.echo(f"ablo: reading {exp.config.DATASET} from the data cache {cfg.data_dir} "
                   f"(--data-dir none: the built-in data)", err=True)
    out = out if out is not None else str(Path("runs") / experiment)
    if resume and Path(out).is_dir():
        from .runfolder import version_change

        change = version_change(out)
        if change:
            typer.echo(f"ablo: note: {change}", err=True)
    try:
        run_experiment(exp, cfg, out, resume, overwrite)
    except KeyboardInterrupt as e:  # click would turn it into a silent Abort
        _interrupted(e)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be, so that a run stopped by a
    scheduler checkpoints like one stopped by hand."""


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main
    thread; yields a function telling whether one arrived. The previous handler is restored."""
    got = []

    def handler(signum, frame):
        got.append(signum)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield lambda: bool(got)
    finally:
        signal.signal(signal.SIGTERM, previous)


def experiment_named(name: str):
    """The registered experiment ``name``; CLIError with the closest name when there is none."""
    from .experiments import load_all

    exps = load_all()
    if name not in exps:
        raise CLIError(f"unknown experiment {name!r}{did_you_mean(name, exps)}; choose one of: "
                       f"{', '.join(sorted(exps))}")
    return exps[name]


@app.command("config")
def config_cmd(experiment: str = typer.Argument(..., help="experiment name (see `ablo list`)")):
    """The experiment's config keys: type, default, range and help."""
    typer.echo(config_keys(experiment_named(experiment)))


def config_keys(exp) -> str:
    """The experiment's config keys, one entry each: name = default [range], then its help."""
    import dataclasses

    lines = []
    for f in dataclasses.fields(exp.config):
        m = f.metadata
        bounds = [f"{'>' if m.get('low_open') else '>='} {m['low']}" if m.get("low") is not None else "",
                  f"{'<' if m.get('high_open') else '<='} {m['high']}" if m.get("high") is not None else "",
                  f"one of {', '.join(map(str, m['choices']))}" if m.get("choices") else ""]
        extra = "; ".join(b for b in bounds if b)
        lines.append(f"{f.name} = {f.default!r}{f'  [{extra}]' if extra else ''}\n    {m.get('help', '')}")
        if f.name == "data_dir" and exp.config.DATASET:
            lines.append(f"    default when not given: the fetched {exp.config.DATASET} "
                         f"(`ablo data fetch {exp.config.DATASET}`) if it is in the cache, except in --tiny runs")
    return "\n".join(lines)


@app.command()
def compare(dirs: List[Path] = typer.Argument(..., help="run directories (or summary.json files)")):
    """Mean ± std over seeds per experiment and method, with the papers' figures beside ours."""
    typer.echo(compare_table(dirs))


data_app = typer.Typer(no_args_is_help=True, help="Download the real datasets the experiments can read.")
app.add_typer(data_app, name="data")


@data_app.command("fetch")
def data_fetch(datasets: List[str] = typer.Argument(..., help="mnist, omniglot, 20newsgroups (one or more) or all"),
               data_dir: Optional[Path] = typer.Option(
                   None, help="data directory (default: $ABLO_DATA_DIR, else $XDG_CACHE_HOME/ablo or ~/.cache/ablo)")):
    """Download datasets into DATA_DIR/<name>/, checked by SHA-256.

    Sources: MNIST from the mirror of yann.lecun.com's IDX files that torchvision uses, Omniglot's
    two zip archives from github.com/brendenlake/omniglot, 20 Newsgroups "bydate" from the URL
    scikit-learn uses. A file already there with the right digest is not fetched again (one that
    differs is, and the reason is printed); a failed download leaves nothing behind, not even an
    empty folder. Every dataset named is tried, and each one's fate is printed.
    """
    from .data import fetch as fetch_mod

    names = list(fetch_mod.SOURCES) if list(datasets) == ["all"] else list(dict.fromkeys(datasets))
    unknown = [n for n in names if n not in fetch_mod.SOURCES]
    if unknown:
        raise CLIError(f"unknown dataset {unknown[0]!r}{did_you_mean(unknown[0], fetch_mod.SOURCES)}; choose from "
                       f"{', '.join(fetch_mod.SOURCES)} or all")
    root = data_dir if data_dir is not None else fetch_mod.default_data_dir()
    bars, progress = rich_progress(transient=True)
    folders, failed = {}, {}
    with bars:
        for n in names:  # every dataset asked for is tried; each one's fate is reported
            try:
                folders[n] = fetch_mod.fetch(n, root, sources=fetch_mod.SOURCES, progress=progress,
                                             note=lambda m: bars.console.print(f"ablo: {m}"))
            except fetch_mod.FetchError as e:
                failed[n] = str(e)
    for n in names:
        typer.echo(f"{n}: {folders[n]}" if n in folders else f"{n}: not fetched ({failed[n]})")
    if folders and Path(root).expanduser().resolve() == fetch_mod.default_data_dir().resolve():
        typer.echo("ablo run reads it from there by default (no --data-dir needed; --data-dir none: the built-in data)")
    elif folders:
        typer.echo(f"read by: ablo run EXPERIMENT --data-dir {root}  (or export ABLO_DATA_DIR={root} to make it "
                   f"the default)")
    if failed:
        first = next(iter(failed.values()))
        raise CLIError(first if len(names) == 1 else f"{len(failed)} of {len(names)} datasets not fetched "
                       f"({', '.join(failed)}); the first failure: {first}")


@app.command()
def diagnose(steps: int = typer.Option(20, help="inner steps r of the example problem"),
             samples: int = typer.Option(16, help="tasks sampled"),
             seed: int = typer.Option(0),
             branch: str = typer.Option("recompute", help="UFOM's exact branch whose cost sets C_rnd and q* "
                                        "(an unrolled exact estimator spec, e.g. checkpointed, binomial:s=4)")):
    """Bias of FOM and K-RMD, D², V² and the recommended q on an example problem.

    On a built-in MAML linear-regression problem: the cheap estimators against the exact
    hypergradient, and q* of Likhosherstov et al. 2021, §4.4, for UFOM with the given exact branch."""
    from . import estimators
    from .diagnose import diagnose as run_diagnosis
    from .diagnose import format_diagnosis
    from .estimators.debiased import check_exact

    if steps < 2 or samples < 2:
        raise CLIError(f"--steps and --samples must be >= 2; got {steps} and {samples}")
    import jax

    problem, theta, sampler = example_problem(steps)
    try:
        exact_branch = estimators.parse(branch)
        check_exact(exact_branch)
    except ValueError as e:
        raise CLIError(f"--branch {branch}: {e}") from None
    report = run_diagnosis(problem, theta, sampler, jax.random.PRNGKey(seed), n_samples=samples,
                           branch=exact_branch)
    typer.echo(format_diagnosis(report))


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), help="output directory"),
         budget_calls: Optional[float] = typer.Option(None, help="function-call budget per method"),
         overwrite: bool = typer.Option(False, help=OVERWRITE_HELP)):
    """The README's main job: hypercleaning on scikit-learn's digits, exact vs FOM vs UFOM vs
    Adaptive UFOM at an equal function-call budget (a few minutes on two cores)."""
    from .experiments import get

    exp = get("demo")
    run_experiment(exp, exp.make_config({} if budget_calls is None else {"budget_calls": budget_calls}), out,
                   overwrite=overwrite)


@app.command()
def bench(out: Path = typer.Option(Path("bench-out"), help="output directory (results.json, results.md, plots)"),
          smoke: bool = typer.Option(False, help="tiny sizes, r in {3, 6}, one round"),
          rounds: int = typer.Option(2, help="interleaved processes per configuration at the check r"),
          problems: str = typer.Option("hypercleaning,mlp", help="comma-separated problems")):
    """Time and temp memory of ablo's estimators against hand-written JAX programs of the same
    algorithms. Against the fastest plain JAX (every layout and jax.checkpoint policy) and against
    jaxopt and PyTorch libraries: python -m ablo.bench --help."""
    from . import bench as bench_mod

    if rounds < 1:
        raise CLIError(f"--rounds must be >= 1; got {rounds}")
    from .bench.problems import SIZES

    names = [p.strip() for p in problems.split(",") if p.strip()]
    known = SIZES["smoke" if smoke else "full"]
    for name in names or [""]:
        if name not in known:
            raise CLIError(f"--problems: problem must be one of {', '.join(sorted(known))}; got {name!r}"
                           f"{did_you_mean(name, known)}")
    bench_mod.run_suite(out, problems=names, size="smoke" if smoke else "full", rounds=1 if smoke else rounds)
    typer.echo((out / "results.md").read_text())


# --- entry point -------------------------------------------------------------------------------
def _print_version(value: bool):
    if value:
        from . import __version__

        typer.echo(f"ablo {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="print the version and exit")):
    """Approximate bi-level optimization: run the papers' experiments and compare estimators."""


def _fail(message: str, code: int = 2):
    lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
    print(f"ablo: error: {' '.join(lines) if lines else 'failed'}", file=sys.stderr)
    sys.exit(code)


def _interrupted(e: BaseException, terminated: bool = False):
    step = getattr(e, "step", None)
    where = f" after outer step {step}" if step is not None else ""
    saved = "" if getattr(e, "checkpoint", True) is not None else " (no checkpoint was saved)"
    what = "terminated (SIGTERM)" if terminated or isinstance(e, Terminated) else "interrupted"
    print(f"ablo: {what}{where}{saved}; run the same command with --resume to continue", file=sys.stderr)
    sys.exit(143 if what != "interrupted" else 130)


def user_errors() -> tuple:
    """The exception types that are the user's to fix, printed as one line with exit code 2:
    :class:`~ablo.errors.UserError` and the library's own classes of bad input (a config, a step
    size, a checkpoint, a diverging run) and the operating system's refusals (a missing file, a
    full disk). Anything else is a bug and keeps its traceback."""
    from .api import NonFiniteHypergradient
    from .checkpoint import CheckpointError
    from .curvature import StepSizeError
    from .config import ConfigError

    return UserError, ConfigError, StepSizeError, CheckpointError, NonFiniteHypergradient, OSError


def refuse_repeated_options(args: List[str]) -> None:
    """A one-value option given twice (``--seed 1 --seed 2``) is refused, like ``--set k=1 --set
    k=2``: click would keep the last one silently."""
    command = typer.main.get_command(app)
    words = list(args)
    while hasattr(command, "commands") and words:  # a group: descend into the subcommand named
        command, words = command.commands.get(words[0]), words[1:]
        if command is None:
            return  # click names the unknown command
    single = {name: opt for opt in command.params if opt.param_type_name == "option" and not opt.multiple
              and not opt.is_flag and not getattr(opt, "count", False) for name in opt.opts + opt.secondary_opts}
    seen: dict = {}
    for i, word in enumerate(words):
        if word == "--":
            break
        name, _, inline = word.partition("=")
        if name in single:
            value = inline if inline or "=" in word else (words[i + 1] if i + 1 < len(words) else "")
            seen.setdefault(single[name].opts[0], []).append(value)
    for name, values in seen.items():
        if len(values) > 1:
            raise CLIError(f"{name} given {len(values)} times ({', '.join(map(repr, values))}); give it once")


def experiment_help(args: List[str]) -> bool:
    """``ablo run EXPERIMENT --help``: the command's help, then the experiment's own config keys.
    True when it printed them (the caller is done)."""
    if len(args) < 3 or args[0] != "run" or not {"--help", "-h"} & set(args[2:]) or args[1].startswith("-"):
        return False
    exp = experiment_named(args[1])
    app(args=["run", "--help"], prog_name="ablo", standalone_mode=False)
    typer.echo(f"\nconfig keys of {exp.name} (--KEY VALUE or --set KEY=VALUE):\n{config_keys(exp)}")
    return True


def main(argv: Optional[List[str]] = None) -> None:
    """Console entry point: user errors (bad names, values, options, files; :func:`user_errors`)
    become one line on stderr and exit code 2; click's own usage errors too, with a pointer to
    --help. Other exceptions are bugs and keep their traceback. With the environment variable
    ABLO_TRACEBACK=1 a user error is raised with its traceback too (to report a bug)."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        refuse_repeated_options(args)
        code = 0 if experiment_help(args) else app(args=args, prog_name="ablo", standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort) as e:
        _interrupted(e)
    except typer.TyperException as e:  # click's usage errors (typer vendors click)
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError":  # its message is the help (rich mode has printed it already)
            if e.format_message().strip():
                typer.echo(e.format_message(), err=True)
            sys.exit(2)
        command = ctx.command_path if ctx is not None else "ablo"
        _fail(f"{getattr(e, 'format_message', e.__str__)()} (see '{command} --help')", getattr(e, "exit_code", 2) or 2)
    except user_errors() as e:
        if os.environ.get("ABLO_TRACEBACK", "") not in ("", "0"):
            raise
        _fail(str(e) or type(e).__name__)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
