"""The driver: every configuration (problem, library, method, r) in a fresh subprocess per
round, rounds interleaved so that repeats of different configurations spread over the machine's
load, medians over rounds, results written as JSON, Markdown and PNG plots."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..results import write_csv
from .problems import AID_ITERS, CHECK_R, LR, SIZES, available_methods, estimator, make_data
from .worker import compare, single_threaded

#: r values of the sweep (time and memory against r) per size.
SWEEP = {"full": (10, 30, 100, 300, 1000), "smoke": (3, 6)}
#: A configuration is timed when it counts at most max(MAX_CALLS_PER_STEP·(r + 1), MAX_CALLS)
#: function calls; the others (recompute beyond r = 30, forward with dim θ tangents, one-level
#: checkpointing at large r) are compiled for their temp memory only.
MAX_CALLS_PER_STEP, MAX_CALLS = 8, 600
#: Repeats (alternating estimator/reference calls) per process at the check r.
CHECK_PAIRS = 3


def planned_calls(method: str, r: int, theta_dim: int) -> float:
    """Function calls the estimator will count at r (gradient evaluations + HVPs + JVPs)."""
    est = estimator(method, r)
    if hasattr(est, "backward_cost"):
        return float(est.backward_cost(r).function_calls) + r + 1
    if method == "forward":
        return (r + 1) * (theta_dim + 1)
    return 3.0 * (r + 1)  # fom, ufom, truncated, aid-cg: O(r)


def sweep(problem: str, rs, size: str) -> tuple:
    """The r values run on ``problem``: ``rs``, or by default ``SWEEP[size]`` on hypercleaning and
    the check r alone on mlp."""
    return tuple(rs) if rs is not None else (SWEEP[size] if problem == "hypercleaning" else (CHECK_R[problem],))


def check_r(problem: str, rs, size: str) -> int:
    """The r of ``problem``'s checks: ``CHECK_R`` if it is run, else the largest r run."""
    s = sweep(problem, rs, size)
    return CHECK_R[problem] if CHECK_R[problem] in s else max(s)


def plan(problems, methods, rs, size: str, rounds: int) -> list:
    """ablo configurations as (spec, rounds). ``rs``: the sweep's r values (None: ``SWEEP[size]``
    for hypercleaning and the check r alone for mlp). The check r of each problem (``CHECK_R``, or
    the largest r) gets ``rounds`` rounds of ``CHECK_PAIRS`` pairs; other r one round of one pair,
    after a warm-up call up to r = 30. Only configurations within ``MAX_CALLS_PER_STEP``, ``MAX_CALLS`` are timed
    (the rest are compiled, for temp memory): recompute beyond small r, forward with dim θ = n
    tangents, one-level checkpointing at large r."""
    jobs = []
    for p in problems:
        check, n = check_r(p, rs, size), SIZES[size][p]["n"]
        for r in sweep(p, rs, size):
            for m in methods:
                at_check = r == check
                run = size == "smoke" or planned_calls(m, r, n) <= max(MAX_CALLS_PER_STEP * (r + 1), MAX_CALLS)
                jobs.append(({"problem": p, "method": m, "r": r, "run": run, "check": at_check,
                              "warmup": at_check or r <= 30 or size == "smoke", "pairs": CHECK_PAIRS if at_check else 1},
                             rounds if at_check and run else 1))
    return jobs


def call(cmd: list, timeout: float = 3600, env: dict | None = None) -> dict:
    """Run one worker command (environment: ours made single-threaded, then ``env``); its last stdout line is its
    JSON result."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**single_threaded(os.environ), **(env or {})})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(lines[-1])


def job_name(spec: dict) -> str:
    form = spec.get("variant", "").replace(".", "_")
    return f"{spec['problem']}-{spec.get('library', 'ablo')}{'-' + form if form else ''}-{spec['method']}-r{spec['r']}"


def run_rounds(jobs: list, out_dir: Path, log=print, parallel: int = 1) -> list:
    """Run every job once per round, rounds interleaved, ``parallel`` worker processes at a time
    (times are per-process CPU time); -> one merged record per job.

    A job is ``(spec, rounds)`` for ablo or ``(spec, rounds, cmd)`` for a peer; ``spec`` gets
    ``data`` (the problem's .npz) and ``grad_out`` (where the worker saves its hypergradient)."""
    from concurrent.futures import ThreadPoolExecutor

    records = [dict(spec, runs=[]) for spec, *_ in jobs]

    def one(k, job, rec):
        spec, rounds, *cmd = job
        name = job_name(spec)
        spec = dict(spec, data=str(out_dir / f"{spec['problem']}.npz"),
                    grad_out=str(out_dir / "grads" / f"{name}.npy") if k == 0 else None)
        argv = (cmd[0] if cmd else [sys.executable, "-m", "ablo.bench", "worker"]) + [json.dumps(spec)]
        res = call(argv)
        if "error" in res:
            rec["error"] = res["error"]
            log(f"  {name}: ERROR {res['error']}")
            return
        rec["runs"].append(res)
        log(f"  round {k + 1} {name}: " + ", ".join(
            f"{a}={res[a]:.4g}" for a in ("time_s", "ref_s", "ratio", "temp_mb", "ref_temp_mb", "peak_rss_mb")
            if isinstance(res.get(a), (int, float))))

    with ThreadPoolExecutor(max(1, parallel)) as pool:
        for k in range(max(j[1] for j in jobs)):
            todo = [(job, rec) for job, rec in zip(jobs, records) if k < job[1] and "error" not in rec]
            list(pool.map(lambda jr: one(k, *jr), todo))
    return [merge(rec, out_dir) for rec in records]


def merge(rec: dict, out_dir: Path) -> dict:
    """Medians over rounds (of each process's medians), and the hypergradient file of round 1."""
    runs = rec.pop("runs")
    out = {k: v for k, v in rec.items() if k not in ("data", "grad_out")}
    numeric = sorted({k for x in runs for k, v in x.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    for key in numeric:
        out[key] = statistics.median(x[key] for x in runs if isinstance(x.get(key), (int, float)))
    for key in ("ref", "cost"):
        if runs and key in runs[0]:
            out[key] = runs[0][key]
    times = [x["time_s"] for x in runs if "time_s" in x]
    out["rounds_run"] = len(times)
    if len(times) > 1:
        out["spread"] = (max(times) - min(times)) / statistics.median(times)
    out["round_ratios"] = [x["ratio"] for x in runs if "ratio" in x]
    grad = out_dir / "grads" / f"{job_name(rec)}.npy"
    out["grad_file"] = str(grad) if grad.exists() else None
    return out


def analyse(rows: list) -> list:
    """Add the agreement of every hypergradient with ablo's exact (reverse) one at the same r, and
    of every peer's with ablo's of the same method."""
    ablo = {(r["problem"], r["method"], r["r"]): r for r in rows if r.get("library", "ablo") == "ablo"}
    for row in rows:
        if not row.get("grad_file"):
            continue
        g = np.load(row["grad_file"])
        row["nonfinite"] = int(np.size(g) - np.isfinite(g).sum())
        exact = ablo.get((row["problem"], "reverse", row["r"]), {}).get("grad_file")
        if exact:
            row["vs_exact"] = compare(g, np.load(exact))
        own = ablo.get((row["problem"], row["method"], row["r"]), {}).get("grad_file")
        if row.get("library", "ablo") != "ablo" and own:
            row["vs_ablo_same"] = compare(g, np.load(own))
    return rows


def peer_ratios(rows: list) -> list:
    """For each peer row: its CPU time against ablo's same (problem, method, r) and against the
    hand-written JAX reference timed in ablo's process, its peak RSS against ablo's."""
    ablo = {(r["problem"], r["method"], r["r"]): r for r in rows if r.get("library", "ablo") == "ablo"}
    out = []
    for p in rows:
        a = ablo.get((p["problem"], p["method"], p["r"]))
        if p.get("library", "ablo") == "ablo" or a is None or "time_s" not in p or "time_s" not in a:
            continue
        out.append({"problem": p["problem"], "peer": p["library"], "variant": p.get("variant", ""),
                    "method": p["method"], "r": p["r"], "peer_s": p["time_s"], "vs_ablo": p["time_s"] / a["time_s"],
                    "vs_jax_ref": p["time_s"] / a["ref_s"] if "ref_s" in a else None,
                    "peak_rss_ratio": p["peak_rss_mb"] / a["peak_rss_mb"] if "peak_rss_mb" in a else None,
                    "cos_same": p.get("vs_ablo_same", {}).get("cos"), "nonfinite": p.get("nonfinite", 0)})
    return out


def run_suite(out_dir, problems=("hypercleaning", "mlp"), methods=None, rs=None, size: str = "full",
              rounds: int = 3, peers: list = (), log=print, parallel: int = 1, mnist_dir=None) -> dict:
    """Write each problem's data, run ablo's configurations (``plan``) and ``peers`` (jobs of the
    form ``(spec, rounds, cmd)``) interleaved, and write results.json, results.md and the plots
    to ``out_dir`` (and results.csv: one row per configuration, its scalar fields)."""
    from . import report

    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}; got {size!r}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1; got {rounds}")
    out_dir = Path(out_dir)
    data = {p: make_data(p, size, mnist_dir=mnist_dir) for p in problems}  # validates names first
    (out_dir / "grads").mkdir(parents=True, exist_ok=True)
    for p, arrays in data.items():
        np.savez(out_dir / f"{p}.npz", **arrays)
    methods = available_methods() if methods is None else list(methods)
    jobs = plan(problems, methods, rs, size, rounds) + list(peers)
    t0 = time.perf_counter()
    rows = analyse(run_rounds(jobs, out_dir, log, parallel))
    ratios = peer_ratios(rows)
    summary = {"experiment": "bench",
               "config": {"problems": list(problems), "methods": methods, "rs": None if rs is None else list(rs),
                          "size": size, "rounds": rounds, "sizes": {p: SIZES[size][p] for p in problems},
                          "lr": LR, "aid_iters": AID_ITERS, "parallel": parallel,
                          "mnist": mnist_dir is not None, "seconds": time.perf_counter() - t0},
               "machine": report.machine(), "results": rows, "peer_ratios": ratios,
               "checks": report.checks(rows)}
    summary["plots"] = report.plots(rows, out_dir)
    _write(summary, out_dir)
    return summary


def _write(summary: dict, out_dir: Path) -> None:
    """results.json, results.md and results.csv, each written atomically."""
    from . import report

    atomic_write(out_dir / "results.json", json.dumps(summary, indent=1))
    atomic_write(out_dir / "results.md", report.markdown(summary))
    rows = summary["results"]
    write_csv(out_dir / "results.csv", [{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in rows])


def rerender(out_dir) -> dict:
    """Redo a finished run's analysis, checks and tables from its results.json and gradient files
    with this version's rules (the timings are not touched), recording the rerender in the
    summary. -> the new summary."""
    from . import report

    out_dir = Path(out_dir)
    summary = json.loads((out_dir / "results.json").read_text())
    # grad files are named by configuration inside out_dir/grads; rows whose file is gone keep
    # their recorded comparisons, and every row keeps its recorded path
    local = [dict(r, grad_file=str(out_dir / "grads" / Path(r["grad_file"]).name)) if r.get("grad_file") else r
             for r in summary["results"]]
    local = [dict(r, grad_file=None) if r.get("grad_file") and not Path(r["grad_file"]).exists() else r
             for r in local]
    rows = [dict(a, grad_file=r.get("grad_file")) for a, r in zip(analyse(local), summary["results"])]
    summary.update(results=rows, peer_ratios=peer_ratios(rows), checks=report.checks(rows))
    summary.setdefault("rerendered", []).append(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    _write(summary, out_dir)
    return summary


def main(argv: list) -> None:
    """The ``suite`` command: ablo's estimators against their hand-written references and, unless
    ``--no-peers``, against the peer libraries (``peers``), in one run."""
    import argparse

    from . import peers as peer_mod

    ap = argparse.ArgumentParser(prog="python -m ablo.bench suite", description=main.__doc__)
    ap.add_argument("--out", default="bench-out", help="output directory (results.json, results.md, plots)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, r in {3, 6}, 1 round")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved processes per configuration at the check r")
    ap.add_argument("--rs", default=None, help="comma-separated r values of the sweep (default 10,30,100,300,1000 "
                                                "on hypercleaning, 50 on mlp)")
    ap.add_argument("--problems", default="hypercleaning,mlp")
    ap.add_argument("--methods", default=None, help="comma-separated (default: every registered one benchmarked)")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--peers", default=None, help="comma-separated peer libraries to run (default: all)")
    ap.add_argument("--parallel", type=int, default=1, help="worker processes at a time (CPU time is per process)")
    ap.add_argument("--venv", default="/tmp/peers-venv", help="venv of the PyTorch peers (made on first use)")
    ap.add_argument("--mnist-dir", default=None, help="MNIST for the mlp problem (default: synthetic data)")
    ap.add_argument("--rerender", metavar="DIR", default=None,
                    help="redo a finished run's checks and tables in DIR with this version's rules (no timing)")
    a = ap.parse_args(argv)
    if a.rerender:
        if not (Path(a.rerender) / "results.json").is_file():
            raise SystemExit(f"--rerender: no results.json in {a.rerender}; give the --out folder of a finished run")
        rerender(a.rerender)
        print((Path(a.rerender) / "results.md").read_text())
        return
    if a.rounds < 1:
        raise SystemExit(f"--rounds must be >= 1; got {a.rounds}")
    rs = tuple(int(x) for x in a.rs.split(",")) if a.rs else None
    size = "smoke" if a.smoke else "full"
    rounds = 1 if a.smoke else a.rounds
    problems = tuple(a.problems.split(","))
    installed, jobs = {}, []
    if not a.no_peers:
        venv_python, installed = peer_mod.torch_venv(Path(a.venv), create=not a.smoke)
        jobs = peer_mod.peer_jobs(problems, rounds, venv_python, installed, lambda p: check_r(p, rs, size),
                                  pairs=1 if a.smoke else 3, only=a.peers.split(",") if a.peers else None)
    summary = run_suite(a.out, problems=problems, methods=a.methods.split(",") if a.methods else None, rs=rs,
                        size=size, rounds=rounds, peers=jobs, parallel=a.parallel, mnist_dir=a.mnist_dir)
    summary["peer_install"] = peer_mod.install_summary(installed)
    atomic_write(Path(a.out) / "results.json", json.dumps(summary, indent=1))
    print((Path(a.out) / "results.md").read_text())
    print("peer installs:", json.dumps(summary["peer_install"], indent=1))
