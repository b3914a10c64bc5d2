"""Is AID-BiO run within its assumptions in the hyper-representation experiment?

For each inner-problem setup at θ_0 (and, with ``--train N``, after N outer steps of exact reverse on
that setup), over ``--tasks`` training tasks: the inner iterate y_T after T GD steps from the centres
(inner suboptimality ‖∇_y g(y_T)‖ / ‖∇_y g(y_0)‖, and the same from the warm start that AID-BiO uses
with a meta-batch: the mean of other tasks' y_T), the extreme eigenvalues of ∇²_y g at y_T (power
iteration; λ_min < 0: not convex), the true relative residual of 10 CG steps, and the cosine of
AID-BiO's hypergradient (CG, 10 steps, at y_T) with

  * ``rev``: the exact reverse hypergradient of the T-step objective that is actually run (ITD);
  * ``lim``: the hypergradient of the limit problem Φ(θ) = f(θ, y*(θ)), by AID at y from
    ``--long`` GD steps and CG to a relative residual of 1e-6 (500 steps at most).

Writes diagnostics.csv and diagnostics.json next to this file (or --out). Usage (from the repo root):

    PYTHONPATH=src python docs/results/hyper-representation/strongly-convex/diagnose.py
"""

import argparse
import csv
import dataclasses
import json
from pathlib import Path

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from ablo import estimators, outer
from ablo.problems.hyper_representation import episode_sampler
from ablo.experiments import hyper_representation as hr
from ablo.linear_solvers import CG
from ablo.results import write_csv

SETUPS = {  # name: config overrides
    "docs default: blocks 3-4 + dense, rho 0.01 learned": dict(),
    "dense only, rho 0.01 fixed": dict(adapted=1, learn_rho=False, rho0=0.01),
    "dense only, rho 0.1 fixed": dict(adapted=1, learn_rho=False, rho0=0.1),
    "dense only, rho 1 fixed": dict(adapted=1, learn_rho=False, rho0=1.0),
}

flat = lambda t: jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(t)])


def cos(a, b):
    a, b = flat(a), flat(b)
    return a @ b / (jnp.linalg.norm(a) * jnp.linalg.norm(b) + 1e-30)


def eig_extremes(matvec, like, key, iters=40):
    """(λ_max, λ_min) of a symmetric operator by power iteration (λ_min via λ_max·I − A)."""
    unravel = jax.flatten_util.ravel_pytree(like)[1]
    mv = lambda x: flat(matvec(unravel(x)))
    v = jax.random.normal(key, flat(like).shape)

    def power(op, v):
        def body(_, c):
            v, _ = c
            w = op(v)
            lam = v @ w
            return w / jnp.linalg.norm(w), lam
        v, lam = jax.lax.fori_loop(0, iters, body, (v / jnp.linalg.norm(v), 0.0))
        return v @ op(v)

    lmax = power(mv, v)
    shifted = power(lambda x: lmax * x - mv(x), v)
    return lmax, lmax - shifted


def diagnose(cfg, theta, tasks, long_steps):
    """The per-task diagnostics (module docstring), all tasks in one compiled function."""
    problem = hr.make_problem(cfg)
    long = dataclasses.replace(problem, steps=long_steps)
    aid = estimators.parse("aid-cg:warm_start=false")
    rev = estimators.parse("reverse")
    key = jax.random.PRNGKey(0)

    def one(theta, task, warm0, k):
        gnorm = lambda phi: jnp.linalg.norm(flat(problem.inner_grad(theta, phi, task)))
        yT = problem.optimizer.params(problem.run(theta, task))
        ywarmT = problem.optimizer.params(problem.run(theta, task, s=problem.optimizer.init(warm0)))
        _, f_phi, matvec = estimators.implicit.implicit_parts(problem, theta, yT, task, task)
        lmax, lmin = eig_extremes(matvec, yT, k)
        v10, _ = CG(tol=1e-10, maxiter=10)(matvec, f_phi)
        true_res = jnp.linalg.norm(flat(f_phi) - flat(matvec(v10))) / jnp.linalg.norm(flat(f_phi))
        g_aid = aid.estimate(problem, theta, task, aid.init(problem, theta, task), key)[0]
        g_rev = rev.estimate(problem, theta, task, rev.init(problem, theta, task), key)[0]
        y_long = long.optimizer.params(long.run(theta, task))
        lf_theta, lf_phi, lmatvec = estimators.implicit.implicit_parts(problem, theta, y_long, task, task)
        v_lim, linfo = CG(tol=1e-6, maxiter=500)(lmatvec, lf_phi)
        g_lim = jax.tree_util.tree_map(jnp.subtract, lf_theta,
                                       estimators.implicit.mixed_product(problem, theta, y_long, task, v_lim))
        g0 = gnorm(theta["centre"])
        return {"grad_rel_y_T": gnorm(yT) / g0, "grad_rel_y_T_warm": gnorm(ywarmT) / g0,
                "grad_rel_y_long": gnorm(y_long) / g0,
                "dist_y_T_over_dist_y0_to_y_long": jnp.linalg.norm(flat(yT) - flat(y_long))
                / jnp.linalg.norm(flat(theta["centre"]) - flat(y_long)),
                "hess_max": lmax, "hess_min": lmin, "cg10_true_rel_residual": true_res,
                "cg_lim_iters": linfo.matvecs.astype(float),
                "cos_aid_rev": cos(g_aid, g_rev), "cos_aid_lim": cos(g_aid, g_lim), "cos_rev_lim": cos(g_rev, g_lim),
                "norm_aid_over_rev": jnp.linalg.norm(flat(g_aid)) / jnp.linalg.norm(flat(g_rev)),
                "norm_lim_over_rev": jnp.linalg.norm(flat(g_lim)) / jnp.linalg.norm(flat(g_rev)),
                "cos_aid_rev_body": cos(g_aid["body"], g_rev["body"])}

    @jax.jit
    def run_all(theta, tasks, keys):
        ys = jax.lax.map(lambda t: problem.optimizer.params(problem.run(theta, t)), tasks)
        n = keys.shape[0]
        # the warm start of AID-BiO with a meta-batch of 4: the mean of 3 other tasks' y_T
        warm = [jax.tree_util.tree_map(lambda y: (y.sum(0) - y[i]) / (n - 1), ys) for i in range(n)]
        warm = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *warm)
        return jax.lax.map(lambda a: one(theta, *a), (tasks, warm, keys))

    out = run_all(theta, tasks, jax.random.split(jax.random.PRNGKey(1), len(jax.tree_util.tree_leaves(tasks)[0])))
    n = len(next(iter(out.values())))
    return [{"task": i, **{k: float(v[i]) for k, v in out.items()}} for i in range(n)]


def summarise(out: list, path: Path, args) -> None:
    """diagnostics.csv (every task) and diagnostics.json (medians over tasks per setup and θ)."""
    write_csv(path / "diagnostics.csv", out)
    keys = [k for k in out[0] if k not in ("setup", "theta", "task")]
    summary = []
    for name in dict.fromkeys(r["setup"] for r in out):
        for label in dict.fromkeys(r["theta"] for r in out if r["setup"] == name):
            rs = [r for r in out if r["setup"] == name and r["theta"] == label]
            summary.append({"setup": name, "theta": label, "tasks": len(rs),
                            **{k: float(np.median([float(r[k]) for r in rs])) for k in keys}})
    (path / "diagnostics.json").write_text(json.dumps({"median_over_tasks": summary, "args": args}, indent=1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="/work/shared/data/omniglot")
    ap.add_argument("--setups", default=",".join(map(str, range(len(SETUPS)))), help="indices into SETUPS")
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--train", type=int, default=0, help="outer steps of reverse before a second θ")
    ap.add_argument("--long", type=int, default=1000, help="GD steps for the limit problem's y*")
    ap.add_argument("--out", default=str(Path(__file__).parent))
    ap.add_argument("--merge", nargs="*", help="diagnostics.csv files of separate runs to merge into --out")
    args = ap.parse_args()
    if args.merge:
        out = []
        for f in args.merge:
            with open(f) as fh:
                out += list(csv.DictReader(fh))
        summarise(out, Path(args.out), {"merged": args.merge})
        return
    out = []
    images = None
    for name in [list(SETUPS)[int(i)] for i in args.setups.split(",")]:
        cfg = hr.Config(data_dir=args.data_dir, **SETUPS[name])
        if images is None:
            images = hr.load_characters(cfg)
            train, _, _ = hr.split_characters(images.shape[0], cfg.split, cfg.split_seed)
            sample = episode_sampler(images[train], cfg.ways, cfg.shots, cfg.queries)
            tasks = jax.vmap(sample)(jax.random.split(jax.random.PRNGKey(123), args.tasks))
        theta0 = hr.init_theta(jax.random.PRNGKey(cfg.seed), cfg)
        thetas = [("theta_0", theta0)]
        if args.train:
            res = outer.run(hr.make_problem(cfg), estimators.parse("reverse"), optax.adam(cfg.outer_lr), theta0,
                            sample, key=jax.random.PRNGKey(cfg.seed), budget=outer.Budget(steps=args.train),
                            options=outer.Options(cfg.meta_batch, progress=outer.Progress(losses=False)))
            thetas.append((f"theta after {args.train} reverse steps", res.theta))
        for label, theta in thetas:
            for r in diagnose(cfg, theta, tasks, args.long):
                out.append({"setup": name, "theta": label, **r})
                print(json.dumps(out[-1]), flush=True)
        summarise(out, Path(args.out), vars(args))  # after each setup: a partial run keeps its rows


if __name__ == "__main__":
    main()
