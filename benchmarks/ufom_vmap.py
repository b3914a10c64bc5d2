"""UFOM(q = 0.1) over a meta-batch: ``jit(vmap(grad(...)))`` through ``ablo.solve`` against the same
call with ``lax.map`` over the tasks (32 tasks, r = 60, CPU time, medians of alternating repeats).

Under ``vmap`` a ``lax.cond`` on a batched ξ would run the exact branch for every task; ablo's
batching rule (``ablo.estimators.base.branch``) runs it only for the tasks that drew it, so the
vmapped call should cost about what the sequential one costs. Writes
``benchmarks/results/ufom_vmap.json``.

    PYTHONPATH=src python benchmarks/ufom_vmap.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import ablo
from ablo.atomic import atomic_write

N_TASKS, R, Q, DIM, N_EX = 32, 60, 0.1, 20, 50


def make():
    inner = lambda th, ph, t: 0.5 * jnp.mean((jnp.tanh(t[0] @ ph) - t[1]) ** 2) + 0.5 * jnp.sum(jnp.exp(th) * ph ** 2)
    outer = lambda th, ph, t: jnp.mean((jnp.tanh(t[0] @ ph) - t[1]) ** 2)
    problem = ablo.BilevelProblem(inner, outer, ablo.gd(0.3), R, init=lambda th, t: jnp.zeros(DIM))
    k = jax.random.split(jax.random.PRNGKey(0), 2)
    x = jax.random.normal(k[0], (N_TASKS, N_EX, DIM))
    tasks = (x, jnp.sin(x.sum(-1)) + 0.1 * jax.random.normal(k[1], (N_TASKS, N_EX)))
    return problem, jnp.zeros(DIM), tasks


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    problem, theta, tasks = make()
    solver = ablo.solve(problem, ablo.UFOM(q=Q), with_cost=True)
    one = lambda th, t, k: jax.grad(lambda th_, m: problem.outer_loss(th_, solver(th_, t, k, m), t), argnums=(0, 1))(
        th, ablo.cost_meter())
    calls = {
        "vmap": jax.jit(lambda th, ts, ks: jax.vmap(one, in_axes=(None, 0, 0))(th, ts, ks)),
        "lax.map": jax.jit(lambda th, ts, ks: jax.lax.map(lambda a: one(th, *a), (ts, ks))),
    }
    times = {name: [] for name in calls}
    drawn = {}
    for rep in range(args.repeats + 1):  # the first round compiles and is not timed
        keys = jax.random.split(jax.random.PRNGKey(100 + rep), N_TASKS)
        for name, f in calls.items():
            start = time.process_time()
            g, c = jax.block_until_ready(f(theta, tasks, keys))
            if rep:
                times[name].append(time.process_time() - start)
            drawn[name] = int(np.sum(np.asarray(c.hvps) > 0))
        assert drawn["vmap"] == drawn["lax.map"]  # the same keys draw the same tasks
    med = {name: float(np.median(t)) for name, t in times.items()}
    result = {"tasks": N_TASKS, "r": R, "q": Q, "repeats": args.repeats, "clock": "CPU time (process_time)",
              "device": jax.devices()[0].device_kind, "median_s": med, "ratio_vmap_over_map": med["vmap"] / med["lax.map"],
              "times_s": times}
    out = pathlib.Path(__file__).parent / "results" / "ufom_vmap.json"
    atomic_write(out, json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("median_s", "ratio_vmap_over_map")}))


if __name__ == "__main__":
    main()
