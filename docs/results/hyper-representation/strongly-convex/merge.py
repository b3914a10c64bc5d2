"""Merge the equal-calls runs of ``ablo run hyper-representation`` (run.sh: one per method, run side by
side; or one run of several methods) into one results.csv, curves.csv, curves_calls.png,
curves_seconds.png and summary.json in ``--out`` (default: here), and print the table of results.md:
accuracy at equal function calls (each run's end) and at equal outer-step time (each curve read at the
shortest run's seconds, linearly interpolated between its evaluation points).

    PYTHONPATH=src python docs/results/hyper-representation/strongly-convex/merge.py runs/hr-sc/*/
"""

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from ablo.experiments.plots import plot_curves
from ablo.results import write_csv


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", help="run folders (each with summary.json, results.csv, curves.csv)")
    ap.add_argument("--out", default=str(Path(__file__).parent))
    args = ap.parse_args()
    dirs = [Path(d) for d in args.runs if (Path(d) / "summary.json").is_file()]
    out = Path(args.out)
    rows, curves, configs = [], [], {}
    for d in dirs:
        rows += read(d / "results.csv")
        curves += read(d / "curves.csv")
        configs[d.name] = json.loads((d / "summary.json").read_text())["config"]
    num = lambda v: None if v in ("", None) else float(v)
    for c in curves:
        for k in ("hyper_iterations", "function_calls", "seconds", "test_acc"):
            c[k] = num(c.get(k))
    t_eq = min(float(r["seconds"]) for r in rows)
    for r in rows:
        pts = [c for c in curves if c["method"] == r["method"] and c["seconds"] is not None]
        r["test_acc_at_equal_seconds"] = float(np.interp(t_eq, [c["seconds"] for c in pts],
                                                         [c["test_acc"] for c in pts]))
        r["equal_seconds"] = t_eq
    write_csv(out / "results.csv", rows)
    write_csv(out / "curves.csv", curves)
    ways, tasks = (next(iter(configs.values()))[k] for k in ("ways", "curve_tasks"))
    for x, name in (("function_calls", "curves_calls.png"), ("seconds", "curves_seconds.png")):
        plot_curves(curves, out / name, x=x, ys=("test_acc",), order=[r["method"] for r in rows],
                    chance={"test_acc": 100.0 / ways}, title=f"Omniglot {ways}-way, equal function calls",
                    axis={"seconds": "outer-step seconds (compilation and evaluation excluded)"})
    (out / "summary.json").write_text(json.dumps({"experiment": "hyper-representation", "configs": configs,
                                                  "results": rows}, indent=1))
    print("| method | test acc (%) ± 95% | hyper-iterations | function calls | outer-step seconds | "
          f"curve acc at {t_eq:.0f} s ({tasks} tasks) | mean CG residual |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        res = r.get("solver_residual") or ""
        print(f"| {r['method']} | {float(r['test_acc']):.1f} ± {float(r['test_acc_ci95']):.1f} | {r['hyper_iterations']} | "
              f"{float(r['function_calls']):.0f} | {float(r['seconds']):.0f} | {r['test_acc_at_equal_seconds']:.1f} | "
              f"{res and f'{float(res):.3g}'} |")


if __name__ == "__main__":
    main()
