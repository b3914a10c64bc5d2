"""Few-shot budget test: exact (``recompute``) against FOM at equal function calls, at equal outer
steps, and exact with a larger budget than FOM, paired by seed, from the runs of run.sh (one
``ablo run fewshot`` per method and seed; see results.md), committed under runs/.

Reads RUNS/{exact-calls,fom-calls,fom-steps}-s{seed}/summary.json and curves.csv; writes
comparisons.csv, curves.csv, curves.png, summary.json and results.md here (or --out).

    python docs/results/fewshot-budget/analyse.py
"""

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from scipy import stats

RUNS = ("exact-calls", "fom-calls", "fom-steps")


def load(runs: Path, seeds):
    """{(run, seed): {"final": summary row, "curve": [rows]}} for the runs that finished."""
    out = {}
    for run in RUNS:
        for s in seeds:
            d = runs / f"{run}-s{s}"
            if not (d / "summary.json").is_file():
                continue
            row = json.loads((d / "summary.json").read_text())["results"][0]
            with open(d / "curves.csv") as f:
                curve = [{k: float(v) for k, v in r.items() if k in ("step", "function_calls", "test_acc")}
                         for r in csv.DictReader(f)]
            out[run, s] = {"final": row, "curve": curve}
    return out


def at(curve, key, value):
    """The curve point whose ``key`` is the first at or beyond ``value``."""
    pts = [c for c in curve if c[key] >= value - 1e-9]
    return min(pts, key=lambda c: c[key]) if pts else None


def paired(a, b):
    """mean, 95% t-interval half-width, and the per-seed differences a − b."""
    d = np.asarray(a) - np.asarray(b)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return float(d.mean()), float(half), [float(x) for x in d]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default=str(Path(__file__).parent / "runs"))
    ap.add_argument("--seeds", default="2,3,4")
    ap.add_argument("--calls", default="15000,30000,45000", help="equal-calls budgets (exact's curve points)")
    ap.add_argument("--out", default=str(Path(__file__).parent))
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    calls = [float(c) for c in args.calls.split(",")]
    data = load(Path(args.runs), seeds)
    seeds = [s for s in seeds if all((r, s) in data for r in RUNS)]  # seeds whose three runs finished
    comps = []

    def add(kind, label, a_name, b_name, pairs):
        if len(pairs) < 2:
            return
        mean, half, diffs = paired([p[0] for p in pairs], [p[1] for p in pairs])
        comps.append({"comparison": kind, "at": label, "a": a_name, "b": b_name, "seeds": len(pairs),
                      "a_mean": float(np.mean([p[0] for p in pairs])), "b_mean": float(np.mean([p[1] for p in pairs])),
                      "diff_mean": mean, "diff_ci95": half, "diffs": " ".join(f"{x:+.2f}" for x in diffs),
                      "a_higher_on": sum(x > 0 for x in diffs)})

    for c in calls:  # equal function calls, curve points (same curve tasks for both methods of a seed)
        pairs = [(at(data["exact-calls", s]["curve"], "function_calls", c)["test_acc"],
                  at(data["fom-calls", s]["curve"], "function_calls", c)["test_acc"]) for s in seeds]
        add("equal calls", f"{c:g} calls (curve tasks)", "exact", "FOM", pairs)
    for c in calls:  # equal outer steps: exact's step count at each budget
        pts = [at(data["exact-calls", s]["curve"], "function_calls", c) for s in seeds]
        steps = [int(p["step"]) for p in pts]
        fom = [at(data["fom-steps", s]["curve"], "step", st) for s, st in zip(seeds, steps)]
        add("equal outer steps", f"{steps[0]} steps (curve tasks; FOM at {int(fom[0]['step'])})", "exact", "FOM",
            [(p["test_acc"], f["test_acc"]) for p, f in zip(pts, fom)])
    fin = lambda run, s: data[run, s]["final"]["test_acc"]
    add("equal calls", f"{calls[-1]:g} calls (final, eval tasks)", "exact", "FOM",
        [(fin("exact-calls", s), fin("fom-calls", s)) for s in seeds])
    add("equal outer steps", f"{data['exact-calls', seeds[0]]['final']['steps']} steps (final, eval tasks)", "exact",
        "FOM", [(fin("exact-calls", s), fin("fom-steps", s)) for s in seeds])
    for mult_c in calls[1:]:  # exact with k times FOM's budget
        pairs = [(at(data["exact-calls", s]["curve"], "function_calls", mult_c)["test_acc"],
                  at(data["fom-calls", s]["curve"], "function_calls", calls[0])["test_acc"]) for s in seeds]
        add("exact with a larger budget", f"exact {mult_c:g} vs FOM {calls[0]:g} calls (curve tasks)", "exact", "FOM",
            pairs)
    out = Path(args.out)
    fields = list(comps[0])
    with open(out / "comparisons.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerows(comps)
    curves = [{"run": r, "seed": s, **c} for (r, s), v in sorted(data.items()) for c in v["curve"] if s in seeds]
    with open(out / "curves.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["run", "seed", "step", "function_calls", "test_acc"])
        w.writeheader()
        w.writerows(curves)
    finals = [{"run": r, "seed": s, **{k: v["final"][k] for k in ("test_acc", "test_acc_ci95", "steps",
                                                                   "function_calls", "seconds")}}
              for (r, s), v in sorted(data.items()) if s in seeds]
    (out / "summary.json").write_text(json.dumps({"experiment": "fewshot-budget", "reported_seeds": seeds,
                                                  "tuned_seeds": [0, 1], "finals": finals, "comparisons": comps},
                                                 indent=1))
    plot(curves, seeds, out / "curves.png")
    print(json.dumps(comps, indent=1))


def plot(curves, seeds, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    style = {"exact-calls": ("C1", "exact (recompute)"), "fom-calls": ("C0", "FOM"),
             "fom-steps": ("C2", "FOM, exact's step counts")}
    for ax, x, runs in ((axes[0], "function_calls", ("exact-calls", "fom-calls")),
                        (axes[1], "step", ("exact-calls", "fom-steps"))):
        for run in runs:
            color, name = style[run]
            for s in seeds:
                pts = [c for c in curves if c["run"] == run and c["seed"] == s]
                ax.plot([c[x] for c in pts], [c["test_acc"] for c in pts], marker="o", color=color, ms=3, lw=1,
                        alpha=0.8, ls=("-", "--", ":")[seeds.index(s) % 3],
                        label=f"{name}, seed {s}" if ax is axes[0] or run == "fom-steps" else None)
        ax.set(xlabel={"function_calls": "function calls (gradients + HVPs + JVPs)", "step": "outer steps"}[x],
               ylabel="test accuracy (%), 300 held-out tasks per point")
        ax.grid(alpha=0.3)
    axes[0].set_title("equal function calls")
    axes[1].set_title("equal outer steps (exact's first 135 steps)")
    fig.legend(loc="lower center", ncol=3, fontsize=7, bbox_to_anchor=(0.5, -0.08))
    fig.suptitle("Few-shot Omniglot 1-shot 20-way, 14x14, seeds " + ", ".join(map(str, seeds)), fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main()
