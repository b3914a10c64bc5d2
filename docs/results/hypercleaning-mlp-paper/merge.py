"""Merge the two run folders of the Table 1 protocol run (parts/a: seeds 100-102, parts/b: seeds
103, 104; one command each, see results.md) into this folder's summary.json, curves.csv, curves.png
and results.md, written by the hypercleaning experiment's own report. Run from anywhere:
``python docs/results/hypercleaning-mlp-paper/merge.py``."""

import csv
import dataclasses
import json
from pathlib import Path

from ablo.experiments import RunContext
from ablo.experiments.hypercleaning import Config, report
from ablo.experiments._notes import paired_differences

HERE = Path(__file__).resolve().parent
PARTS = [HERE / "parts" / p for p in ("a", "b")]


def number(v):
    return None if v == "" else float(v)


def main():
    summaries = [json.loads((p / "summary.json").read_text()) for p in PARTS]
    given = summaries[0]["config"]
    fields = {f.name for f in dataclasses.fields(Config)}
    seeds = tuple(s for summary in summaries for s in summary["config"]["seeds"])
    # the config as this release resolves it (the runs' code left defaults such as l2 as null)
    cfg = Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items() if k in fields},
                 ).resolved().as_dict()
    rows = [r for summary in summaries for r in summary["results"]]
    cfg.update(seeds=list(seeds), inner_lr=[r["inner_lr"] for r in rows if r["method"] == rows[0]["method"]],
               inner_lr_resolved="auto: α = 1/L, L the top eigenvalue of the inner Hessian at φ_0 (one value per "
                                 "seed, in the order of seeds)",
               dataset={k: v for k, v in given["dataset"].items() if k != "dir"})  # no machine paths
    curves = []
    for p in PARTS:
        with open(p / "curves.csv", newline="") as f:
            for r in csv.DictReader(f):
                curves.append({k: v if k in ("method", "estimator") else number(v) for k, v in r.items()})
    report(cfg, rows, curves, RunContext(out=HERE))
    # Table 1's three columns, each method against reverse, paired by seed (95% Student-t intervals)
    lines = ["", "## Paired differences (each method − reverse, 95% interval over the seeds)", "",
             "| column | method | mean difference | 95% interval | seeds |", "|---|---|---|---|---|"]
    for key in ("train_clean_acc", "test_acc", "test_ce"):
        for method, ref, mean, ci, n in paired_differences(rows, key):
            lines.append(f"| {key} | {method} − {ref} | {mean:+.3g} | [{ci[0]:+.3g}, {ci[1]:+.3g}] | {n} |")
    with open(HERE / "results.md", "a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
