"""Experiment ``counterexample``: the problem of paper 000 Theorem 2 / §5.1 (Figure 1a-c), on which
outer SGD with FOM stalls at a non-stationary point while UFOM (q = 0.1) converges.

Two equally likely tasks, s = p = 1, V(θ) = θ, L_in = L_out = f_i(φ), r = 10 GD steps of size
α = 0.1, a = (0.5, 1.5), b_1 = 0, p_i = (1 − α a_i)^r,
b_2 = 2√(2D) / |(a_1 p_1² + a_2 p_2²) p_2 / (a_1 p_1 + a_2 p_2) − p_2²| with D = 0.06,
A = |b_1/a_1 − b_2/a_2| + 1, and with z = |φ − b_i/a_i| (SPEC §2)

    f = a z²/2                                              z ≤ A
    f = −a(z−A)³/6 + a(z−A)²/2 + aAz − aA²/2                A < z ≤ A+1
    f = (a/2 + aA) z − a/6 − aA²/2 − aA/2                   z > A+1.

``methods`` are registered estimator names ("fom", "ufom" with ``q``, also "adaptive-ufom").
Outer SGD θ_k = θ_{k−1} − γ_k G(θ_{k−1}, T_k), γ_k = 10/(k+1), k = 1..10,000, one task per step,
θ_0 ~ U(−10, 30). The whole run is one jitted ``lax.scan`` vmapped over seeds.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..estimators import get as get_estimator
from ..inner import gd
from ..problem import BilevelProblem
from ..results import save_figure, write_csv, write_markdown, write_summary
from . import Experiment, register


def piecewise_f(phi, task):
    """f_i(φ) of paper 000 Theorem 2 (convex, twice differentiable, bounded gradient); task = (a, b, A)."""
    a, b, A = task
    d = phi - b / a
    z = jnp.abs(d)
    u = z - A
    mid = -a * u ** 3 / 6 + a * u ** 2 / 2 + a * A * z - a * A ** 2 / 2
    far = (a / 2 + a * A) * z - a / 6 - a * A ** 2 / 2 - a * A / 2
    return jnp.where(z <= A, a * d * d / 2, jnp.where(z <= A + 1, mid, far))


def counterexample_constants(alpha=0.1, r=10, a=(0.5, 1.5), D=0.06):
    """(b, A) of the construction: b = (0, b_2) from D, A = |b_1/a_1 − b_2/a_2| + 1."""
    a = np.asarray(a, float)
    p = (1 - alpha * a) ** r
    b2 = 2 * np.sqrt(2 * D) / abs((a[0] * p[0] ** 2 + a[1] * p[1] ** 2) * p[1] / (a[0] * p[0] + a[1] * p[1])
                                  - p[1] ** 2)
    b = np.array([0.0, b2])
    return b, float(abs(b[0] / a[0] - b[1] / a[1]) + 1)


def make_problem(alpha: float, r: int):
    """The two-task problem: V(θ) = θ, L_in = L_out = f_i(φ), r GD steps of size α; tasks stacked."""
    loss = lambda theta, phi, task: piecewise_f(phi, task)
    return BilevelProblem(loss, loss, gd(float(alpha)), int(r))


def stack_tasks(a, b, A):
    a = jnp.asarray(a, float)
    return a, jnp.asarray(b, float), jnp.full_like(a, float(A))


def exact_grad_fn(problem, tasks):
    """Jitted, vectorised θ ↦ (∂M/∂θ, M) with M(θ) = mean_i M(θ; T_i) (autodiff through the
    unrolled loop: exact), for θ of any shape."""
    M = lambda th: jnp.mean(jax.vmap(lambda t: problem.objective(th, t))(tasks))
    vec = lambda f: jax.jit(lambda x: jnp.vectorize(f)(jnp.asarray(x, float)))
    return vec(jax.grad(M)), vec(M)


def sgd_runs(problem, estimator, tasks, theta0, keys, steps: int, gamma):
    """Outer SGD (paper 000 Alg. 1, one task per step) for a batch of seeds, as one jitted scan.
    ``theta0``, ``keys``: one per seed; ``gamma(k)`` the step size at k = 1..steps.
    Returns (θ_k for k = 1..steps, cumulative function calls), each (seeds, steps)."""
    n_tasks = tasks[0].shape[0]
    task0 = jax.tree_util.tree_map(lambda x: x[0], tasks)

    def one(theta0, key):
        def body(carry, k):
            theta, state, key = carry
            key, kt, ke = jax.random.split(key, 3)
            task = jax.tree_util.tree_map(lambda x: x[jax.random.randint(kt, (), 0, n_tasks)], tasks)
            g, state, c = estimator.estimate(problem, theta, task, state, ke)
            theta = theta - gamma(k) * g
            return (theta, state, key), (theta, c.function_calls)

        init = (theta0, estimator.init(problem, theta0, task0), key)
        _, (thetas, calls) = jax.lax.scan(body, init, jnp.arange(1, steps + 1))
        return thetas, jnp.cumsum(calls)

    return jax.jit(jax.vmap(one))(theta0, keys)


def roots(fn, lo=-50.0, hi=50.0, n=20001, refine=3):
    """Sign changes of a vectorised scalar function on [lo, hi], each refined by ``refine`` passes
    of an n-point grid over its bracket (same shape each time: one compilation)."""
    out = []
    grid = np.linspace(lo, hi, n)
    g = np.asarray(fn(grid))
    for i in np.where(np.sign(g[:-1]) * np.sign(g[1:]) < 0)[0]:
        a, b = grid[i], grid[i + 1]
        for _ in range(refine):
            sub = np.linspace(a, b, n)
            gs = np.asarray(fn(sub))
            j = int(np.argmax(np.sign(gs[:-1]) * np.sign(gs[1:]) <= 0))
            a, b = sub[j], sub[j + 1]
        out.append(0.5 * (a + b))
    return out


def mean_fom_fn(problem, tasks):
    """Jitted θ-vector ↦ E_T[G_FO(θ, T)]: its zeros are where FOM's SGD settles."""
    fom = get_estimator("fom")
    return jax.jit(jax.vmap(lambda th: jnp.mean(jax.vmap(lambda t: fom.estimate(problem, th, t, (), None)[0])(tasks))))


def run(config: dict, out_dir: Path, progress) -> dict:
    cfg = {**DEFAULTS, **config}
    out_dir = Path(out_dir)
    b, A = counterexample_constants(cfg["alpha"], cfg["r"], cfg["a"], cfg["D"])
    problem = make_problem(cfg["alpha"], cfg["r"])
    tasks = stack_tasks(cfg["a"], b, A)
    grad_M, M = exact_grad_fn(problem, tasks)
    steps, seeds = int(cfg["outer_steps"]), list(cfg["seeds"])
    lo, hi = cfg["theta0_range"]
    gamma = lambda k: cfg["gamma0"] / (k + 1.0)
    rows, curves, trajectories = [], [], {}
    with progress("counterexample", len(cfg["methods"])) as advance:
        for method in cfg["methods"]:
            est = get_estimator(method, q=float(cfg["q"])) if method == "ufom" else get_estimator(method)
            q = {"fom": 0.0, "ufom": float(cfg["q"])}.get(method)
            keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
            theta0 = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 1), (), minval=lo, maxval=hi))(keys)
            t0 = time.perf_counter()
            thetas, calls = sgd_runs(problem, est, tasks, theta0, keys, steps, gamma)
            thetas = np.asarray(thetas)
            seconds = time.perf_counter() - t0
            idx = np.unique(np.geomspace(1, steps, int(cfg["curve_points"])).astype(int) - 1)
            grads = np.abs(np.asarray(grad_M(thetas[:, idx])))
            trajectories[method] = (np.asarray(theta0), thetas, idx, grads)
            for i, seed in enumerate(seeds):
                rows.append({"method": method, "seed": seed, "q": q, "theta0": float(theta0[i]),
                             "final_theta": float(thetas[i, -1]), "final_abs_grad": float(grads[i, -1]),
                             "function_calls": float(calls[i, -1]), "seconds": seconds / len(seeds)})
                curves += [{"method": method, "seed": seed, "step": int(k + 1), "theta": float(thetas[i, k]),
                            "abs_grad": float(grads[i, j])} for j, k in enumerate(idx)]
            advance()
    fixed, stat = roots(mean_fom_fn(problem, tasks)), roots(grad_M)
    fixed_grad = np.abs(np.asarray(grad_M(np.asarray(fixed)))).tolist()
    stationary = {"fom_fixed_points": [{"theta": x, "abs_grad_M": g} for x, g in zip(fixed, fixed_grad)],
                  "stationary_points": stat}
    write_csv(out_dir / "curves.csv", curves)
    _write_figures(out_dir, tasks, M, trajectories, fixed, stat)
    table = []
    for method in cfg["methods"]:
        g = [r["final_abs_grad"] for r in rows if r["method"] == method]
        t = [r["final_theta"] for r in rows if r["method"] == method]
        table.append({"method": method, "seeds": len(g), "mean final theta": float(np.mean(t)),
                      "mean final abs grad": float(np.mean(g)), "min": float(np.min(g)), "max": float(np.max(g))})
    notes = (f"b_2 = {b[1]:.5f}, A = {A:.5f}. FOM's fixed point(s) E[G_FO] = 0 at θ = "
             + ", ".join(f"{x:.4f} (|∂M/∂θ| = {g:.4f})" for x, g in zip(fixed, fixed_grad))
             + f". {steps} outer SGD steps, γ_k = {cfg['gamma0']}/(k+1).")
    write_markdown(out_dir / "results.md", "Counterexample (paper 000 §5.1, Theorem 2)", table, notes=notes)
    config_out = {**cfg, "b": b.tolist(), "A": A, **stationary}
    write_summary(out_dir, "counterexample", config_out, rows)
    return {"experiment": "counterexample", "config": config_out, "results": rows}


def _write_figures(out_dir, tasks, M, trajectories, fixed, stat):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"fom": "tab:red", "ufom": "tab:blue"}
    # (a) the two tasks' inner losses
    phi = np.linspace(-40, 60, 1000)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    f = jax.jit(jax.vmap(lambda t: piecewise_f(jnp.asarray(phi), t)))(tasks)
    for i, fi in enumerate(np.asarray(f)):
        ax.plot(phi, fi, label=f"f_{i + 1}")
    ax.set(xlabel="φ", ylabel="f_i(φ)", title="(a) task losses")
    ax.legend()
    save_figure(fig, out_dir / "fig_tasks.png")
    # (b) landscape M(θ) with final iterates and FOM's fixed point
    grid = np.linspace(-10, 30, 801)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(grid, np.asarray(M(grid)), "k-", lw=1, label="M(θ)")
    for method, (_, thetas, _, _) in trajectories.items():
        fin = thetas[:, -1]
        ax.plot(fin, np.asarray(M(fin)), "o", color=colors.get(method), ms=6,
                alpha=0.7, label=f"{method} final θ")
    for x in fixed:
        ax.axvline(x, color="tab:red", ls=":", lw=1)
    for x in stat:
        ax.axvline(x, color="tab:blue", ls=":", lw=1)
    ax.set(xlabel="θ", ylabel="M(θ)", title="(b) M(θ); dotted: FOM fixed point (red), ∂M/∂θ = 0 (blue)")
    ax.legend(fontsize=8)
    save_figure(fig, out_dir / "fig_landscape.png")
    # trajectories and (c) |∂M/∂θ| over steps
    for name, col, ylabel, title, log in (("fig_theta.png", 1, "θ_k", "θ trajectories", False),
                                          ("fig_grad.png", 3, "|∂M/∂θ(θ_k)|", "(c) exact gradient norm", True)):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for method, tr in trajectories.items():
            idx = tr[2]
            ys = tr[1][:, idx] if col == 1 else tr[3]
            for i, y in enumerate(ys):
                ax.plot(idx + 1, y, color=colors.get(method), alpha=0.5, lw=0.8, label=method if i == 0 else None)
        if col == 1:
            for xs, c in ((fixed, "tab:red"), (stat, "tab:blue")):
                for x in xs:
                    ax.axhline(x, color=c, ls=":", lw=1)
        ax.set(xscale="log", xlabel="outer step k", ylabel=ylabel, title=title)
        if log:
            ax.set_yscale("log")
        ax.legend()
        save_figure(fig, out_dir / name)


DEFAULTS = {"methods": ["fom", "ufom"], "q": 0.1, "seeds": list(range(10)), "outer_steps": 10_000,
            "alpha": 0.1, "r": 10, "a": [0.5, 1.5], "D": 0.06, "gamma0": 10.0, "theta0_range": [-10.0, 30.0],
            "curve_points": 300}

register(Experiment("counterexample", run, DEFAULTS,
                    tiny={"seeds": [0, 1], "outer_steps": 50, "curve_points": 10},
                    summary="paper 000 §5.1 / Theorem 2: FOM stalls, UFOM (q = 0.1) converges (Fig. 1a-c)"))
