"""Merge the per-method runs of /work/runs/hr-sc.sh (one ``ablo run hyper-representation`` per method,
run side by side) into one results.csv, curves.csv, curves.png and summary.json here, and print the
table of results.md: accuracy at equal function calls (each run's end) and at equal outer-step time
(each curve read at the shortest run's seconds, linearly interpolated).

    PYTHONPATH=src python docs/results/hyper-representation/strongly-convex/merge.py /work/runs/hr-sc/*/
"""

import csv
import json
import sys
from pathlib import Path

import numpy as np

from ablo.experiments import hyper_representation as hr
from ablo.config import build
from ablo.results import write_csv


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def main():
    dirs = [Path(d) for d in sys.argv[1:] if (Path(d) / "summary.json").is_file()]
    out = Path(__file__).parent
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
    cfg = build(hr.Config, {k: v for k, v in next(iter(configs.values())).items() if k in hr.Config.__dataclass_fields__})
    hr.plot_curves(curves, out / "curves.png", cfg)
    (out / "summary.json").write_text(json.dumps({"experiment": "hyper-representation", "configs": configs,
                                                  "results": rows}, indent=1))
    print("| method | test acc (%) ± 95% | hyper-iterations | function calls | outer-step seconds | "
          f"curve acc at {t_eq:.0f} s (60 tasks) | mean CG residual |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        res = r.get("solver_residual_mean") or ""
        print(f"| {r['method']} | {float(r['test_acc']):.1f} ± {float(r['test_acc_ci95']):.1f} | {r['hyper_iterations']} | "
              f"{float(r['function_calls']):.0f} | {float(r['seconds']):.0f} | {r['test_acc_at_equal_seconds']:.1f} | "
              f"{res and f'{float(res):.3g}'} |")


if __name__ == "__main__":
    main()
