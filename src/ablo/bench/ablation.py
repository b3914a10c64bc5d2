"""What ablo's product rewrite (``ablo.products``) buys, apart from what each algorithm costs.

ablo's inner gradient and its reverse sweeps' HVPs go through ``ablo.products`` (merge products
sharing a large operand, read narrow products' large operand along its rows). A hand-written JAX
program does not, so "ablo / hand-written JAX" mixes the algorithm with that rewrite. This script
times, in one single-threaded process, alternating, for reverse and FOM on each problem:

* ``standard``: the hand-written reference as a JAX user writes it (``ablo.bench.references``);
* ``standard+rewrite``: the same program with its gradient's products rewritten as ablo's are;
* ``ablo, no rewrite``: ablo's estimator on ``BilevelProblem(rewrite_products=False)``;
* ``ablo``: ablo's estimator as shipped.

"ablo / standard+rewrite" and "ablo, no rewrite / standard" are the algorithm's own ratio;
"standard+rewrite / standard" is what the rewrite does to a program that is not ablo's.

    python -m ablo.bench ablation --out benchmarks/results/products-ablation --mnist-dir DATA
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import jax
import numpy as np

from ..atomic import atomic_write
from ..results import write_csv, write_markdown
from . import references
from .problems import CHECK_R, build, estimator, make_data
from .worker import compare, flat, timed

METHODS = {"reverse": references.reverse, "fom": references.fom}


def programs(problem, theta, task, method: str, r: int, lr: float) -> dict:
    """name -> compiled zero-argument call returning the hypergradient (data as arguments)."""
    est = estimator(method, r)
    out = {}
    for name, rewrite in (("standard", False), ("standard+rewrite", True)):
        f = METHODS[method](problem, lr, r, rewrite=rewrite)
        c = jax.jit(f).lower(theta, task).compile()
        out[name] = (lambda c=c: c(theta, task))
    for name, prob in (("ablo, no rewrite", dataclasses.replace(problem, rewrite_products=False)),
                       ("ablo", problem)):
        state = est.init(prob, theta, task)
        # (estimate, cost): the cost carries whether φ_r is finite, so XLA keeps FOM's loop even
        # where the estimate does not read φ_r (hypercleaning), as the reference's flag does
        fn = jax.jit(lambda th, tk, st, k, prob=prob: est.estimate(prob, th, tk, st, k)[::2])
        c = fn.lower(theta, task, state, jax.random.PRNGKey(0)).compile()
        out[name] = (lambda c=c, st=state: c(theta, task, st, jax.random.PRNGKey(0)))
    return out


def grad_of(result):
    """The hypergradient of a program's result (FOM's reference also returns a finiteness flag)."""
    return result[0] if isinstance(result, tuple) else result


def time_alternating(calls: dict, repeats: int) -> dict:
    """name -> CPU seconds of each repeat, the programs called in turn every repeat."""
    for f in calls.values():
        jax.block_until_ready(f())
    times = {k: [] for k in calls}
    for _ in range(repeats):
        for k, f in calls.items():
            times[k].append(timed(f))
    return times


def main(argv: list) -> None:
    """The ``ablation`` command; ``python -m ablo.bench`` runs it single-threaded (``worker.ENV``)."""
    ap = argparse.ArgumentParser(prog="python -m ablo.bench ablation", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--problems", default="hypercleaning,mlp")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--mnist-dir", default=None)
    ap.add_argument("--size", default="full", help="full, or smoke (tiny shapes, for a quick check)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in args.problems.split(","):
        data = make_data(p, args.size, mnist_dir=args.mnist_dir)
        r = CHECK_R[p]
        problem, theta, task = build(p, data, r)
        for method in METHODS:
            calls = programs(problem, theta, task, method, r, float(data["lr"]))
            grads = {k: flat(grad_of(f())) for k, f in calls.items()}
            bad = [k for k, g in grads.items() if not np.isfinite(g).all()]
            if bad:  # the time of a NaN result is not a figure
                raise SystemExit(f"{p} {method}: {', '.join(bad)} returned NaN/inf; nothing timed")
            times = time_alternating(calls, args.repeats)
            ratio = lambda a, b: statistics.median(x / y for x, y in zip(times[a], times[b]))
            row = {"problem": p, "method": method, "r": r}
            row.update({f"{k} s": statistics.median(v) for k, v in times.items()})
            row.update({"ablo / standard": ratio("ablo", "standard"),
                        "ablo / standard+rewrite": ratio("ablo", "standard+rewrite"),
                        "ablo no rewrite / standard": ratio("ablo, no rewrite", "standard"),
                        "standard+rewrite / standard": ratio("standard+rewrite", "standard"),
                        "ablo / ablo no rewrite": ratio("ablo", "ablo, no rewrite")})
            cos = [compare(g, grads["standard"])["cos"] for g in grads.values()]
            # None where the hypergradient is zero (FOM on hypercleaning: L_out does not read θ)
            row["min cos vs standard"] = min(cos) if None not in cos else None
            rows.append(row)
            print(json.dumps(row))
    atomic_write(out / "products_ablation.json",
                 json.dumps({"rows": rows, "repeats": args.repeats, "size": args.size, "jax": jax.__version__}, indent=1))
    write_csv(out / "products_ablation.csv", rows)
    write_markdown(out / "products_ablation.md", "ablo's product rewrite against the algorithm", rows,
                   notes=f"CPU seconds of one single-threaded process, medians of {args.repeats} alternating "
                         "repeats; ratios are medians of per-repeat ratios. jax " + jax.__version__)
