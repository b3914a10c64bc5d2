"""AID-BiO's assumptions on the dense-layer inner problem (Ji et al. 2021 §5.1), measured in feature space.

At θ_0 of the hyper-representation experiment with ``adapted=1`` (the four conv blocks are θ's
embedding, the dense layer w is the inner variable), each task's support and query images are
embedded once; the embedding outputs X_S, X_Q and the centre c are then the outer variable
ϑ = (X_S, X_Q, c) of a small bilevel problem

    g(w; ϑ) = Σ_S CE(X_S w) + ρ‖w − c‖²   (strongly convex: ∇²g ⪰ 2ρ I),   f(w; ϑ) = mean_Q CE(X_Q w),

run as in the experiment: T = 10 GD steps of γ = 0.1 from w_0 = c. (∂f/∂θ_body = J_embedᵀ ∂f/∂X: a
cosine in ϑ-space is what the conv blocks receive, before the same Jacobian.) Per task and ρ:

  * inner suboptimality before the implicit step: ‖y_T − y*‖ / ‖y_0 − y*‖ from c and from the warm
    start AID-BiO/ITD-BiO use with a meta-batch of 4 (the mean of 3 other tasks' y_T), y* by 5000 GD
    steps (checked by ‖∇g(y*)‖);
  * the Hessian's extreme eigenvalues at y_T (exact, 325 x 325) and the true relative residual of 10 CG steps;
  * cosines of AID-BiO's hypergradient (CG 10 at y_T) with the exact reverse hypergradient of the T
    steps actually run (ITD) and with the hypergradient of the limit problem f(y*(ϑ), ϑ) (implicit at y*,
    exact solve).

    PYTHONPATH=src python docs/results/hyper-representation/strongly-convex/diagnose_head.py
"""

import argparse
import json
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
import jax.flatten_util  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ablo import estimators  # noqa: E402
from ablo.estimators.implicit import implicit_parts, mixed_product  # noqa: E402
from ablo.experiments import hyper_representation as hr  # noqa: E402
from ablo.experiments._episodes import episode_sampler  # noqa: E402
from ablo.inner import gd  # noqa: E402
from ablo.linear_solvers import CG  # noqa: E402
from ablo.models import cross_entropy  # noqa: E402
from ablo.problem import BilevelProblem  # noqa: E402
from ablo.results import write_csv  # noqa: E402

flat = lambda t: jax.flatten_util.ravel_pytree(t)[0]
cos = lambda a, b: float(flat(a) @ flat(b) / (jnp.linalg.norm(flat(a)) * jnp.linalg.norm(flat(b))))


def embed(body, x):
    for p in body:
        x = hr.conv_block(p, x)
    return x.reshape(x.shape[0], -1)


def head_problem(rho, steps, lr):
    def inner(th, w, task):
        logits = th["xs"] @ w["w"] + w["b"]
        return (cross_entropy(logits, task["ys"]) * task["ys"].shape[0]
                + rho * sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree_util.tree_leaves(w),
                                                                  jax.tree_util.tree_leaves(th["c"]))))

    def outer(th, w, task):
        return cross_entropy(th["xq"] @ w["w"] + w["b"], task["yq"])

    return BilevelProblem(inner, outer, gd(lr), steps, init=lambda th, task: th["c"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="/work/shared/data/omniglot")
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--rhos", default="0.01,0.1,1,3")
    ap.add_argument("--long", type=int, default=5000)
    ap.add_argument("--out", default=str(Path(__file__).parent))
    args = ap.parse_args()
    cfg = hr.Config(data_dir=args.data_dir, adapted=1, learn_rho=False)
    images = hr.load_characters(cfg)
    train, _, _ = hr.split_characters(images.shape[0], cfg.split, cfg.split_seed)
    sample = episode_sampler(images[train], cfg.ways, cfg.shots, cfg.queries)
    theta = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), hr.init_theta(jax.random.PRNGKey(cfg.seed), cfg))
    tasks = [sample(k) for k in jax.random.split(jax.random.PRNGKey(123), args.tasks)]
    emb = jax.jit(lambda x: embed(theta["body"], x.astype(jnp.float64)))
    varthetas = [{"xs": emb(t["support"][0]), "xq": emb(t["query"][0]), "c": theta["centre"][0]} for t in tasks]
    labels = [{"ys": t["support"][1], "yq": t["query"][1]} for t in tasks]
    rows = []
    for rho in [float(r) for r in args.rhos.split(",")]:
        prob = head_problem(rho, cfg.steps, cfg.inner_lr)
        long = head_problem(rho, args.long, cfg.inner_lr)
        yT = [prob.optimizer.params(prob.run(th, lab)) for th, lab in zip(varthetas, labels)]
        aid, rev = estimators.parse("aid-cg:warm_start=false"), estimators.parse("reverse")
        for i, (th, lab) in enumerate(zip(varthetas, labels)):
            others = [y for j, y in enumerate(yT) if j != i][:3]
            warm0 = jax.tree_util.tree_map(lambda *a: sum(a) / len(a), *others)
            y_warm = prob.optimizer.params(prob.run(th, lab, s=prob.optimizer.init(warm0)))
            y_star = long.optimizer.params(long.run(th, lab))
            dist = lambda a: float(jnp.linalg.norm(flat(a) - flat(y_star)))
            _, f_phi, matvec = implicit_parts(prob, th, yT[i], lab, lab)
            w_flat, unravel = jax.flatten_util.ravel_pytree(yT[i])
            H = jax.hessian(lambda p: prob.inner_loss(th, unravel(p), lab))(w_flat)
            ev = np.linalg.eigvalsh(np.asarray(H))
            v10, _ = CG(tol=1e-12, maxiter=10)(matvec, f_phi)
            res10 = float(jnp.linalg.norm(flat(f_phi) - flat(matvec(v10))) / jnp.linalg.norm(flat(f_phi)))
            key = jax.random.PRNGKey(0)
            g_aid = aid.estimate(prob, th, lab, aid.init(prob, th, lab), key)[0]
            g_rev = rev.estimate(prob, th, lab, rev.init(prob, th, lab), key)[0]
            # limit problem: implicit gradient at y* with an exact solve
            fs_theta, fs_phi, mv_star = implicit_parts(prob, th, y_star, lab, lab)
            ws, unr = jax.flatten_util.ravel_pytree(y_star)
            Hs = jax.hessian(lambda p: prob.inner_loss(th, unr(p), lab))(ws)
            v_star = unr(jnp.linalg.solve(Hs, flat(fs_phi)))
            g_lim = jax.tree_util.tree_map(jnp.subtract, fs_theta, mixed_product(prob, th, y_star, lab, v_star))
            rows.append({"rho": rho, "task": i,
                         "y_T_dist_rel": dist(yT[i]) / dist(th["c"]), "y_T_warm_dist_rel": dist(y_warm) / dist(warm0),
                         "y_T_warm_dist_over_cold_start_dist": dist(y_warm) / dist(th["c"]),
                         "y_star_grad_norm": float(jnp.linalg.norm(flat(prob.inner_grad(th, y_star, lab)))),
                         "hess_min": float(ev[0]), "hess_max": float(ev[-1]), "gamma_hess_max": cfg.inner_lr * float(ev[-1]),
                         "cg10_true_rel_residual": res10,
                         "cos_aid_rev": cos(g_aid, g_rev), "cos_aid_lim": cos(g_aid, g_lim), "cos_rev_lim": cos(g_rev, g_lim),
                         "cos_aid_rev_x": cos({"a": g_aid["xs"], "b": g_aid["xq"]}, {"a": g_rev["xs"], "b": g_rev["xq"]}),
                         "cos_aid_lim_x": cos({"a": g_aid["xs"], "b": g_aid["xq"]}, {"a": g_lim["xs"], "b": g_lim["xq"]}),
                         "norm_aid_over_lim": float(jnp.linalg.norm(flat(g_aid)) / jnp.linalg.norm(flat(g_lim))),
                         "norm_rev_over_lim": float(jnp.linalg.norm(flat(g_rev)) / jnp.linalg.norm(flat(g_lim)))})
            print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    write_csv(out / "diagnostics_head.csv", rows)
    keys = [k for k in rows[0] if k not in ("rho", "task")]
    med = [{"rho": r, "tasks": args.tasks, **{k: float(np.median([x[k] for x in rows if x["rho"] == r])) for k in keys}}
           for r in dict.fromkeys(x["rho"] for x in rows)]
    (out / "diagnostics_head.json").write_text(json.dumps({"median_over_tasks": med, "args": vars(args)}, indent=1))
    for m in med:
        print(json.dumps(m))


if __name__ == "__main__":
    main()
