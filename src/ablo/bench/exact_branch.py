"""UFOM's exact branch on the synthetic-q experiment: the same experiment run once per
branch (``ablo run synthetic-q --set exact=<branch>``), q* of eq. 21 from that branch's own backward
cost, and the expected function calls each run needs to reach the experiment's target gradient
norm. Writes ``ufom_exact_branch.{json,csv,md}`` and ``ufom_exact_branch.png`` (the convergence
curves at α = ``alpha_curve``, each branch at its own q*) to ``--out``.

    python -m ablo.bench exact-branch --out bench-out/ufom-branch                # 4 runs, ~3 min each
    python -m ablo.bench exact-branch --out /tmp/ufom --set outer_steps=200 seeds=0,1  # quick look

The table: exact branch → states it holds (φ here is a scalar, so its memory is this count) → its
backward cost C_rnd (gradient evaluations + HVPs, C1 = C2 = 1) → q* → UFOM's expected function calls
per outer step at q* (ablo's counts: C_det = r + 1 gradients, V's JVP, and q*·(C_rnd + 1)) → the
measured expected calls to the target at q*, at q = 1, and at the best q of the experiment's grid.
Every branch computes the same exact hypergradient, and the runs share their seeds, so at a given
q the trajectories are identical and only the counted calls differ.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

from .. import estimators
from ..atomic import atomic_write
from ..experiments import get
from ..results import save_figure, write_csv, write_markdown
from ..runfolder import RunFolder

BRANCHES = ("recompute", "binomial", "checkpointed", "reverse")
COLUMNS = ["exact", "states", "C_rnd", "q_star", "ufom_calls_per_step", "calls_to_target_qstar", "calls_to_target_q1",
           "q_grid", "calls_to_target_q_grid"]


def run_branch(branch: str, out: Path, settings: list) -> Path:
    """``ablo run synthetic-q`` with UFOM's exact branch ``branch`` into ``out/<branch>``; a finished
    run there is reused only if it was made with these settings (RunFolder's resume check refuses
    one made with others, naming the keys)."""
    folder = out / branch
    if (folder / "summary.json").exists():
        cfg = get("synthetic-q").make_config({**dict(s.split("=", 1) for s in settings), "exact": branch})
        with RunFolder(folder, "synthetic-q", cfg, resume=True):
            pass
    else:
        cmd = [sys.executable, "-m", "ablo", "run", "synthetic-q", "--out", str(folder), "--set", f"exact={branch}"]
        for s in settings:
            cmd += ["--set", s]
        subprocess.run(cmd, check=True)
    return folder


def row_of(branch: str, folder: Path) -> dict:
    """The table row of one branch's run, at α = alpha_curve."""
    doc = json.loads((folder / "summary.json").read_text())
    cfg = doc["config"]
    at = next(r for r in doc["results"] if abs(r["alpha"] - cfg["alpha_curve"]) < 1e-12)
    est = estimators.parse(branch)
    r = cfg["r"]
    ufom = estimators.UFOM(q=at["q_theory"], exact=est).expected_cost(r)
    return {"exact": branch, "alpha": at["alpha"], "D2": at["D2"], "V2": at["V2"],
            "states": int(est.backward_cost(r).states), "C_rnd": cfg["C_rnd"], "q_star": at["q_theory"],
            "ufom_calls_per_step": float(ufom.function_calls), "calls_to_target_qstar": at["calls_to_target_qstar"],
            "calls_to_target_q1": at["calls_to_target_q1"], "q_grid": at["q_grid"],
            "calls_to_target_q_grid": at["calls_to_target_q_grid"], "target": cfg["target"], "r": r,
            "seeds": len(cfg["seeds"]), "outer_steps": cfg["outer_steps"]}


def plot(rows: list, folders: dict, path: Path) -> None:
    """Convergence at α = alpha_curve: RMS gradient norm against expected calls, each branch at its q*."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        with open(folders[row["exact"]] / "curves.csv") as f:
            pts = [(float(x["function_calls"]), float(x["rms_grad"])) for x in csv.DictReader(f) if x["q_label"] == "q*"]
        ax.plot(*zip(*pts), label=f"{row['exact']} (q* = {row['q_star']:.3f})")
    ax.axhline(rows[0]["target"], color="gray", ls=":", lw=1, label="target")
    ax.set(xscale="log", yscale="log", xlabel="expected function calls", ylabel="sqrt E|∂M/∂θ(θ_k)|²",
           title=f"synthetic-q, α = {rows[0]['alpha']:.3g}: UFOM by exact branch")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def main(argv: list) -> None:
    """The ``exact-branch`` command."""
    ap = argparse.ArgumentParser(prog="python -m ablo.bench exact-branch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (one run folder per branch, and the table)")
    ap.add_argument("--branches", default=",".join(BRANCHES), help="comma-separated exact-branch specs")
    ap.add_argument("--set", nargs="*", default=[], help="further synthetic-q settings, key=value")
    a = ap.parse_args(argv)
    out = Path(a.out)
    folders = {b: run_branch(b, out, a.set) for b in a.branches.split(",")}
    rows = [row_of(b, f) for b, f in folders.items()]
    atomic_write(out / "ufom_exact_branch.json", json.dumps(rows, indent=1))
    write_csv(out / "ufom_exact_branch.csv", rows)
    r0 = rows[0]
    write_markdown(out / "ufom_exact_branch.md", "UFOM's exact branch on synthetic-q", rows, COLUMNS,
                   notes=f"α = {r0['alpha']:.4g}, D² = {r0['D2']:.4g}, V² = {r0['V2']:.4g}, r = {r0['r']}, "
                         f"{r0['seeds']} seeds, {r0['outer_steps']} outer steps, target {r0['target']}; calls: "
                         "expected function calls (mean over seeds) to sqrt(E|dM/dθ|²) <= target.")
    plot(rows, folders, out / "ufom_exact_branch.png")
    print((out / "ufom_exact_branch.md").read_text())
