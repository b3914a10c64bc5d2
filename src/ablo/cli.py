"""The ``ablo`` command: list, run, compare, diagnose, demo, bench.

``ablo run EXPERIMENT`` merges, in increasing priority, the experiment's ``defaults``, its
``tiny`` overrides (``--tiny``), ``--set key=value`` and ``--key value`` pairs for any config key
(values parsed as JSON, else comma lists, else strings), and the named options (``--method``,
``--seed(s)``, ``--data-dir``, ``--budget-calls``, ``--steps`` = outer steps, ``--resume``,
``--devices``). Errors in names and values end in one line on stderr and exit code 2.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Approximate bi-level optimization: run the papers' experiments and compare estimators.")


class CLIError(ValueError):
    """A user error reported as one line."""


# --- progress bars ---------------------------------------------------------------------------
def rich_progress():
    """A ``progress(description, total)`` factory drawing rich progress bars on stderr; use as a
    context manager around a run."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=False)

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
def parse_value(text: str):
    """JSON if it parses ('3', '0.1', 'true', 'null', '[1, 2]'), else a comma list of such, else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if "," in text:
        return [parse_value(t.strip()) for t in text.split(",") if t.strip()]
    return text


def parse_overrides(pairs: List[str], extra: List[str]) -> dict:
    """``--set k=v`` pairs and leftover ``--k v`` / ``--k=v`` / ``--flag`` arguments as a dict."""
    out = {}
    for p in pairs:
        if "=" not in p:
            raise CLIError(f"--set expects key=value; got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = parse_value(v)
    i = 0
    while i < len(extra):
        a = extra[i]
        if not a.startswith("--") or len(a) < 3:
            raise CLIError(f"unexpected argument {a!r}; config keys are given as --key value or --set key=value")
        key = a[2:]
        if "=" in key:
            key, v = key.split("=", 1)
            out[key] = parse_value(v)
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            out[key] = parse_value(extra[i + 1])
            i += 1
        else:
            out[key] = True
        i += 1
    return {k.replace("-", "_"): v for k, v in out.items()}


def build_config(exp, methods, seed, seeds, data_dir, budget_calls, steps, sets, extra, tiny, resume, devices,
                 data_dir_from_env: bool = False) -> dict:
    """The experiment's config from the command line (see the module docstring). A ``data_dir`` that
    came from ABLO_DATA_DIR (``data_dir_from_env``) is a global default: ignored by experiments that
    take no data, where --data-dir itself is an error."""
    from . import estimators

    cfg = dict(exp.defaults)
    if tiny:
        cfg.update(exp.tiny)
    overrides = parse_overrides(sets, extra)
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise CLIError(f"unknown config key(s) {', '.join(unknown)} for {exp.name}; valid keys: {', '.join(sorted(cfg))}")
    cfg.update(overrides)
    if methods:
        check_methods(exp, methods)
        cfg["methods"] = list(methods)
    if seed is not None and seeds is not None:
        raise CLIError("give --seed or --seeds, not both")
    if seed is not None:
        cfg["seeds"] = [seed]
    if seeds is not None:
        try:
            cfg["seeds"] = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise CLIError(f"--seeds must be a comma-separated list of integers like 0,1,2; got {seeds!r}") from None
        if not cfg["seeds"]:
            raise CLIError("--seeds is empty")
    if data_dir is not None and not (data_dir_from_env and "data_dir" not in exp.defaults):
        if not Path(data_dir).exists():
            raise CLIError(f"data directory {data_dir} does not exist (from --data-dir or ABLO_DATA_DIR)")
        cfg["data_dir"] = str(data_dir)
    if budget_calls is not None:
        if not budget_calls > 0:
            raise CLIError(f"--budget-calls must be > 0; got {budget_calls}")
        cfg["budget_calls"] = budget_calls
    if steps is not None:
        if steps < 1:
            raise CLIError(f"--steps (outer steps) must be >= 1; got {steps}")
        cfg["outer_steps"] = steps
    if resume:
        cfg["resume"] = True
    if devices is not None:
        if devices < 1:
            raise CLIError(f"--devices must be >= 1; got {devices}")
        cfg["devices"] = devices
    for key, option in (("seeds", "--seed(s)"), ("budget_calls", "--budget-calls"), ("outer_steps", "--steps"),
                        ("resume", "--resume"), ("devices", "--devices"), ("data_dir", "--data-dir")):
        if key in cfg and key not in exp.defaults:
            raise CLIError(f"{exp.name} does not take {option}; its config keys: {', '.join(sorted(exp.defaults))}")
    return cfg


def check_methods(exp, methods) -> None:
    """Names must be registered estimators or the experiment's own (its defaults' methods), or a
    parametrised variant ``NAME-<number>`` of one of those, which the experiment itself checks."""
    from . import estimators

    known = set(estimators.REGISTRY) | set(exp.defaults.get("methods") or [])
    for m in methods:
        base, _, suffix = m.rpartition("-")
        if m not in known and not (base in known and suffix.replace(".", "", 1).isdigit()):
            own = sorted(set(exp.defaults.get("methods") or []) - set(estimators.REGISTRY))
            extra = f"; {exp.name} also accepts: {', '.join(own)}" if own else ""
            raise CLIError(f"unknown method {m!r}; estimators: {', '.join(sorted(estimators.REGISTRY))}{extra}")


def run_experiment(exp, cfg: dict, out: Path) -> dict:
    """Run with progress bars, then print results.md on stdout."""
    bars, progress = rich_progress()
    out.mkdir(parents=True, exist_ok=True)
    with bars:
        summary = exp.run(cfg, out, progress)
    md = out / "results.md"
    typer.echo(md.read_text() if md.is_file() else json.dumps(summary.get("results", []), indent=1))
    typer.echo(f"results in {out}/ (summary.json, CSV, PNG, results.md)")
    return summary


# --- compare ---------------------------------------------------------------------------------
#: Row fields that identify a setting (besides any string field); every other number is a metric.
ID_KEYS = ("method", "K", "objective", "model", "ways", "shots", "p", "corrupt", "q", "alpha")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


#: Config keys never used to tell settings apart (runs split over seeds or methods still pool).
POOLED_CONFIG = ("seeds", "methods", "resume", "devices", "out")


def _scalar(v) -> bool:
    return v is None or isinstance(v, (str, int, float)) or (
        isinstance(v, list) and all(x is None or isinstance(x, (str, int, float)) for x in v))


def aggregate(docs: List[dict]) -> dict:
    """{experiment: [row per setting]}: mean ± std (sample std) over the rows (seeds) of each
    setting, ``n`` rows, and the papers' figures for it (``paper_*``). A setting is the row's
    identifying fields plus the config values that differ between the runs of an experiment."""
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
    for doc in docs:
        exp, cfg = doc.get("experiment", "?"), doc.get("config", {})
        setting = tuple((f"config.{k}", json.dumps(cfg.get(k)) if isinstance(cfg.get(k), list) else cfg.get(k))
                        for k in varying[exp])
        for row in doc.get("results", []):
            ident = tuple((k, v) for k, v in row.items()
                          if k != "seed" and (k in ID_KEYS or isinstance(v, str)) and not isinstance(v, (list, dict)))
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
            out[k] = (f"{vals.mean():.4g} ± {vals.std(ddof=1):.2g}" if len(vals) > 1 else f"{vals.mean():.4g}")
        out.update(reference(exp, g["config"], g["rows"][0]))
        tables.setdefault(exp, []).append(out)
    return tables


def compare_table(paths: List[Path]) -> str:
    """Markdown: one table per experiment over the summary.json files in ``paths``."""
    from .results import markdown_table, read_summary

    tables = aggregate([read_summary(p) for p in paths])
    parts = []
    for exp, rows in tables.items():
        parts.append(f"## {exp}\n\n" + markdown_table(rows))
    note = "mean ± sample std over seeds (n rows); paper_* columns: the papers' reported figures (SPEC §2), in the papers' units."
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
    t = Table(title="estimators (--method NAME)")
    t.add_column("name")
    t.add_column("summary")
    for name, factory in sorted(estimators.REGISTRY.items()):
        t.add_row(name, getattr(factory, "summary", ""))
    console.print(t)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(ctx: typer.Context,
        experiment: str = typer.Argument(..., help="experiment name (see `ablo list`)"),
        method: Optional[List[str]] = typer.Option(None, "--method", "-m", help="estimator name, repeatable"),
        seed: Optional[int] = typer.Option(None, help="one seed"),
        seeds: Optional[str] = typer.Option(None, help="comma-separated seeds, e.g. 0,1,2"),
        data_dir: Optional[Path] = typer.Option(None, envvar="ABLO_DATA_DIR", help="dataset directory"),
        budget_calls: Optional[float] = typer.Option(None, help="function-call budget per run"),
        steps: Optional[int] = typer.Option(None, help="outer steps per run (config key outer_steps)"),
        set_: Optional[List[str]] = typer.Option(None, "--set", help="config override key=value, repeatable"),
        tiny: bool = typer.Option(False, help="the experiment's seconds-long configuration"),
        out: Optional[Path] = typer.Option(None, help="output directory (default runs/EXPERIMENT)"),
        resume: bool = typer.Option(False, help="resume from the checkpoints in --out"),
        devices: Optional[int] = typer.Option(None, help="shard each meta-batch over N devices")):
    """Run one experiment; any other --key value sets that config key (e.g. --model mlp)."""
    from .experiments import get

    exp = get(experiment)
    # click's ParameterSource (typer may vendor click: compare by name)
    from_env = getattr(ctx.get_parameter_source("data_dir"), "name", None) == "ENVIRONMENT"
    cfg = build_config(exp, method, seed, seeds, data_dir, budget_calls, steps, set_ or [], list(ctx.args), tiny,
                       resume, devices, data_dir_from_env=from_env)
    run_experiment(exp, cfg, out or Path("runs") / experiment)


@app.command()
def compare(dirs: List[Path] = typer.Argument(..., help="run directories (or summary.json files)")):
    """Mean ± std over seeds per experiment and method, with the papers' figures beside ours."""
    typer.echo(compare_table(dirs))


@app.command()
def diagnose(steps: int = typer.Option(20, help="inner steps r of the example problem"),
             samples: int = typer.Option(16, help="tasks sampled"),
             seed: int = typer.Option(0)):
    """Bias of FOM and K-RMD against the exact hypergradient, D², V² and the recommended q* (paper
    000 §4.4) on a built-in MAML linear-regression problem."""
    from .diagnose import diagnose as run_diagnosis
    from .diagnose import format_diagnosis

    if steps < 2 or samples < 2:
        raise CLIError(f"--steps and --samples must be >= 2; got {steps} and {samples}")
    import jax

    problem, theta, sampler = example_problem(steps)
    typer.echo(format_diagnosis(run_diagnosis(problem, theta, sampler, jax.random.PRNGKey(seed), n_samples=samples)))


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), help="output directory"),
         budget_calls: Optional[float] = typer.Option(None, help="function-call budget per method")):
    """The README's main job: hypercleaning on scikit-learn's digits, exact vs FOM vs UFOM vs
    Adaptive UFOM at an equal function-call budget (a few minutes on two cores)."""
    from .experiments import demo as demo_exp

    cfg = dict(demo_exp.DEFAULTS)
    if budget_calls is not None:
        cfg["budget_calls"] = budget_calls
    run_experiment(demo_exp.EXPERIMENT, cfg, out)


@app.command()
def bench(out: Path = typer.Option(Path("bench-out"), help="output directory (results.json, results.md, plots)"),
          smoke: bool = typer.Option(False, help="tiny sizes, r in {3, 6}, one round"),
          rounds: int = typer.Option(2, help="interleaved processes per configuration at the check r"),
          problems: str = typer.Option("hypercleaning,mlp", help="comma-separated problems")):
    """Time and temp memory of ablo's estimators against hand-written JAX programs of the same
    algorithms (issue 12). The side-by-side run against jaxopt and PyTorch libraries is
    ``python benchmarks/bench_estimators.py``."""
    from . import bench as bench_mod

    if rounds < 1:
        raise CLIError(f"--rounds must be >= 1; got {rounds}")
    names = [p.strip() for p in problems.split(",") if p.strip()]
    bench_mod.run_suite(out, problems=names, size="smoke" if smoke else "full", rounds=1 if smoke else rounds)
    typer.echo((out / "results.md").read_text())


# --- entry point -------------------------------------------------------------------------------
def _fail(message: str, code: int = 2):
    lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
    print(f"ablo: error: {' '.join(lines) if lines else 'failed'}", file=sys.stderr)
    sys.exit(code)


def main(argv: Optional[List[str]] = None) -> None:
    """Console entry point: user errors (bad names, values, options) become one line on stderr and
    exit code 2; click's own usage errors too, with a pointer to --help."""
    from .api import NonFiniteHypergradient

    args = sys.argv[1:] if argv is None else list(argv)
    try:
        code = app(args=args, prog_name="ablo", standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        print("ablo: interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as e:  # click's usage errors (typer vendors click)
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help(), err=True)
            sys.exit(2)
        command = ctx.command_path if ctx is not None else "ablo"
        _fail(f"{getattr(e, 'format_message', e.__str__)()} (see '{command} --help')", getattr(e, "exit_code", 2) or 2)
    except (ValueError, OSError, NonFiniteHypergradient) as e:
        _fail(str(e) or type(e).__name__)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
