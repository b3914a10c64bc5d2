"""Gather the per-seed runs of Ji et al. 2021 §5.2's setting (run.sh: one ``ablo run hyper-representation``
per seed into seedN/) into results.csv, curves.csv, curves_calls.png, curves_seconds.png and summary.json
here, and print results.md's tables: test accuracy at equal function calls (each run's end) and at equal
outer-step seconds (per seed, each curve read at the shortest run's seconds, linearly interpolated between
its evaluation points; curve tasks only), each with the paired difference from AID-BiO over the seeds and
its 95% Student-t interval.

    PYTHONPATH=src python docs/results/hyper-representation/ji-setting/analyse.py
"""

import csv
import json
from pathlib import Path

import numpy as np

from ablo.experiments._notes import paired_differences
from ablo.experiments.plots import plot_curves
from ablo.results import write_csv

HERE = Path(__file__).parent
REFERENCE = "AID-BiO (CG)"


def main():
    rows, curves, configs = [], [], {}
    for d in sorted(HERE.glob("seed*/")):
        summary = json.loads((d / "summary.json").read_text())
        seed = summary["config"]["seed"]
        configs[seed] = summary["config"]
        with open(d / "curves.csv") as f:
            pts = [{**c, "seed": seed, **{k: float(c[k]) for k in ("function_calls", "seconds", "test_acc")}}
                   for c in csv.DictReader(f)]
        runs = summary["results"]
        t_eq = min(r["seconds"] for r in runs)  # the shortest run's outer-step seconds
        for r in runs:
            mine = [c for c in pts if c["method"] == r["method"]]
            at = float(np.interp(t_eq, [c["seconds"] for c in mine], [c["test_acc"] for c in mine]))
            rows.append({"seed": seed, "method": r["method"], "spec": r["spec"], "hyper_iterations": r["hyper_iterations"],
                         "function_calls": r["function_calls"], "test_acc": r["test_acc"],
                         "test_acc_ci95": r["test_acc_ci95"], "val_acc": r["val_acc"], "seconds": r["seconds"],
                         "solver_residual": r.get("solver_residual"), "equal_seconds": t_eq,
                         "curve_acc_at_equal_seconds": at})
        curves += pts
    order = [REFERENCE] + [m for m in dict.fromkeys(r["method"] for r in rows) if m != REFERENCE]
    rows.sort(key=lambda r: (order.index(r["method"]), r["seed"]))
    write_csv(HERE / "results.csv", rows)
    write_csv(HERE / "curves.csv", curves)
    cfg = next(iter(configs.values()))
    title = (f"Omniglot {cfg['ways']}-way {cfg['shots']}-shot, w = the dense layer, ρ = {cfg['rho0']} fixed; test "
             f"accuracy on {cfg['curve_tasks']} test tasks, mean and min-max over seeds {sorted(configs)}")
    for x, name in (("function_calls", "curves_calls.png"), ("seconds", "curves_seconds.png")):
        plot_curves(curves, HERE / name, x=x, ys=("test_acc",), order=order, title=title,
                    chance={"test_acc": 100.0 / cfg["ways"]},
                    axis={"seconds": "outer-step seconds (compilation and evaluation excluded)"})
    diffs = {key: [{"method": m, "minus": ref, "mean": mean, "ci95": ci, "seeds": n}
                   for m, ref, mean, ci, n in paired_differences(rows, key)]
             for key in ("test_acc", "curve_acc_at_equal_seconds")}
    (HERE / "summary.json").write_text(json.dumps({"experiment": "hyper-representation", "seeds": sorted(configs),
                                                   "tuned_seeds": cfg["tuned_seeds"], "configs": configs,
                                                   "results": rows, "paired_differences": diffs}, indent=1))
    print("| method | test acc (%), mean over seeds | per seed | hyper-iterations | outer-step s | mean CG residual |")
    print("|---|---|---|---|---|---|")
    for m in order:
        mine = [r for r in rows if r["method"] == m]
        res = [r["solver_residual"] for r in mine if r["solver_residual"] is not None]
        join = lambda key, fmt: " / ".join(format(r[key], fmt) for r in mine)
        print(f"| {m} | {np.mean([r['test_acc'] for r in mine]):.1f} | {join('test_acc', '.1f')} | "
              f"{join('hyper_iterations', 'd')} | {join('seconds', '.0f')} | "
              f"{format(np.mean(res), '.2g') if res else ''} |")
    for key, ds in diffs.items():
        print(f"\n{key}, paired by seed:")
        for d in ds:
            ci = "no interval" if d["ci95"] is None else f"[{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]"
            print(f"- {d['method']} − {d['minus']}: {d['mean']:+.2f}, 95% interval {ci} over {d['seeds']} seeds")


if __name__ == "__main__":
    main()
