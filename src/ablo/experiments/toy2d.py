"""The toy problem of paper 001 §4.1: λ, w ∈ R²,

    f(ŵ) = ‖ŵ‖² + 10‖sin ŵ‖²,    g(w, λ) = ½ (w − λ)ᵀ G (w − λ),   G = diag(1, ½),

ŵ = w_T after T = 100 GD steps on g with γ = 0.1 from w_0 = (2, 2). g is β = 1 smooth and
α = ½ strongly convex, B_t = γG, so Prop. 3.1 eq. (10) bounds the K-RMD error

    ‖h_{T−K} − d_λ f‖ ≤ (1 − γα)^K / (γα) · ‖∇_ŵ f‖ · M_B,   M_B = ‖γG‖ = γ.

Three parts, all with ablo's ``Truncated(K)`` against the exact ``Reverse``:

1. ``bound``: measured error and the bound at λ = (1, 1) for K = 1..T (paper 001 Fig. 1);
2. ``f``: outer GD on f from λ_0 with η_τ = η_0/√τ, η_0 chosen so that the first step has norm
   0.6 (paper 001 footnote 4), for each K in ``Ks`` and each other method (Fig. 4);
3. ``f_tilde``: the same on f̃ = f + 5‖λ − (1, 0)‖², where ∇_λ f̃ ≠ 0 and 1-RMD converges to a
   biased point (Theorem 3.3; Fig. 3).

The outer loop is a ``lax.scan`` over τ (deterministic: no tasks, the seed only feeds the
estimators' keys). Rows: one per objective and method (and K); fields in docs/results-format.md.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from . import Experiment, register
from .. import estimators
from ..estimators import Reverse, Truncated
from ..inner import gd
from ..problem import BilevelProblem, constant_init
from ..results import save_figure, write_csv, write_markdown, write_summary

NAME = "toy2d"
G = jnp.array([1.0, 0.5])  # diagonal of G
ALPHA = 0.5  # strong convexity of g (smallest eigenvalue of G)

DEFAULTS = dict(methods=["truncated", "reverse"], Ks=[1, 2, 5, 10, 25], steps=100, inner_lr=0.1,
                w0=[2.0, 2.0], lambda_bound=[1.0, 1.0], lambda0=[1.0, 1.0], outer_steps=1000,
                first_step_norm=0.6, penalty=5.0, penalty_center=[1.0, 0.0], seeds=[0])
TINY = dict(steps=6, Ks=[1, 3], outer_steps=30)


def f_outer(theta, phi, task):
    """f(ŵ) = ‖ŵ‖² + 10‖sin ŵ‖²; ∇_λ f = 0."""
    return jnp.sum(phi ** 2) + 10.0 * jnp.sum(jnp.sin(phi) ** 2)


def g_inner(theta, phi, task):
    """g(w, λ) = ½ (w − λ)ᵀ G (w − λ)."""
    return 0.5 * jnp.sum(G * (phi - theta) ** 2)


def make_problem(cfg: dict, penalty: float = 0.0) -> BilevelProblem:
    """The toy problem; ``penalty`` > 0 adds penalty·‖λ − penalty_center‖² to the outer loss (f̃)."""
    center = jnp.asarray(cfg["penalty_center"], float)
    outer = f_outer if penalty == 0 else (lambda th, w, task: f_outer(th, w, task) + penalty * jnp.sum((th - center) ** 2))
    return BilevelProblem(g_inner, outer, gd(float(cfg["inner_lr"])), int(cfg["steps"]),
                          constant_init(jnp.asarray(cfg["w0"], float)))


def w_hat(cfg: dict, lam) -> jax.Array:
    """ŵ = C w_0 + (I − C) λ with C = (I − γG)^T (paper 001 §4.1), in closed form."""
    C = (1.0 - float(cfg["inner_lr"]) * G) ** int(cfg["steps"])
    return C * jnp.asarray(cfg["w0"], float) + (1.0 - C) * lam


def prop31_bound(cfg: dict, K, lam) -> jax.Array:
    """Eq. (10): (1 − γα)^K/(γα) ‖∇_ŵ f‖ M_B with M_B = γ‖G‖ = γ."""
    gamma = float(cfg["inner_lr"])
    grad_f = jax.grad(f_outer, argnums=1)(None, w_hat(cfg, lam), None)
    return (1.0 - gamma * ALPHA) ** K / (gamma * ALPHA) * jnp.linalg.norm(grad_f) * gamma * float(jnp.max(G))


def truncation_errors(cfg: dict, lam, advance=lambda n=1: None) -> tuple[np.ndarray, np.ndarray]:
    """(measured ‖h_{T−K} − d_λ f‖, bound (10)) for K = 1..T at λ (K-RMD against Reverse)."""
    problem = make_problem(cfg)
    lam = jnp.asarray(lam, float)
    key = jax.random.PRNGKey(0)
    exact, _, _ = Reverse().estimate(problem, lam, None, (), key)
    errors, bounds = [], []
    for K in range(1, problem.steps + 1):
        h, _, _ = jax.jit(Truncated(K).estimate, static_argnums=0)(problem, lam, None, (), key)
        errors.append(float(jnp.linalg.norm(h - exact)))
        bounds.append(float(prop31_bound(cfg, K, lam)))
        advance()
    return np.array(errors), np.array(bounds)


def descend(problem, estimator, cfg: dict, key):
    """Outer GD λ_{τ+1} = λ_τ − η_0/√τ · h(λ_τ), τ = 1..outer_steps, η_0 = first_step_norm/‖h(λ_1)‖.
    Returns (trajectory (steps+1, 2), true gradient norms ‖d_λ‖ along it, function calls)."""
    lam0 = jnp.asarray(cfg["lambda0"], float)
    exact = Reverse()

    def estimate(lam, state, k):
        return estimator.estimate(problem, lam, None, state, k)

    @jax.jit
    def loop(lam0, key):
        state = estimator.init(problem, lam0, None)
        h0, _, _ = estimate(lam0, state, key)
        eta0 = float(cfg["first_step_norm"]) / jnp.linalg.norm(h0)

        def body(carry, tau):
            lam, state, calls = carry
            h, state, c = estimate(lam, state, jax.random.fold_in(key, tau))
            true = exact.estimate(problem, lam, None, (), key)[0]
            lam = lam - eta0 / jnp.sqrt(tau) * h
            return (lam, state, calls + c.function_calls), (lam, jnp.linalg.norm(true))

        (lam, _, calls), (traj, gnorm) = jax.lax.scan(body, (lam0, state, jnp.zeros((), jnp.float32)),
                                                        jnp.arange(1, int(cfg["outer_steps"]) + 1, dtype=float))
        final_true = jnp.linalg.norm(exact.estimate(problem, lam, None, (), key)[0])
        return jnp.concatenate([lam0[None], traj]), jnp.append(gnorm, final_true), calls

    return loop(lam0, key)


def method_list(cfg: dict) -> list[tuple[str, int | None]]:
    """(method, K) pairs: ``truncated`` expands over ``Ks``; other registered names run as they are."""
    out = []
    for m in cfg["methods"]:
        if m not in estimators.REGISTRY:
            raise ValueError(f"unknown method {m!r} for toy2d; choose estimators from: {', '.join(sorted(estimators.REGISTRY))}")
        if m == "truncated":
            for K in cfg["Ks"]:
                if isinstance(K, bool) or not isinstance(K, int) or not 1 <= K <= int(cfg["steps"]):
                    raise ValueError(f"Ks must be integers in [1, steps] = [1, {cfg['steps']}]; got {K!r}")
                out.append((m, K))
        else:
            out.append((m, None))
    if not out:
        raise ValueError("methods is empty; give at least one estimator (e.g. truncated, reverse)")
    return out


def run(config: dict, out_dir: Path, progress) -> dict:
    cfg = {**DEFAULTS, **config}
    out_dir = Path(out_dir)
    for k in ("steps", "outer_steps"):
        if isinstance(cfg[k], bool) or not isinstance(cfg[k], int) or cfg[k] < 1:
            raise ValueError(f"{k} must be a positive integer; got {cfg[k]!r}")
    methods = method_list(cfg)
    seed = int((cfg.get("seeds") or [0])[0])

    with progress("toy2d: K-RMD error vs Prop. 3.1 bound", int(cfg["steps"])) as advance:
        errors, bounds = truncation_errors(cfg, cfg["lambda_bound"], advance)
    bound_rows = [{"K": K, "error": e, "bound": b} for K, (e, b) in enumerate(zip(errors, bounds), start=1)]
    write_csv(out_dir / "bound.csv", bound_rows)

    rows, curves, trajs = [], [], {}
    objectives = {"f": 0.0, "f_tilde": float(cfg["penalty"])}
    with progress("toy2d: outer trajectories", len(objectives) * len(methods)) as advance:
        for obj, penalty in objectives.items():
            problem = make_problem(cfg, penalty)
            exact_final = None
            for m, K in sorted(methods, key=lambda mk: mk[0] != "reverse"):  # the exact one first
                est = Truncated(K) if m == "truncated" else estimators.get(m)
                t0 = time.perf_counter()
                traj, gnorm, calls = jax.device_get(descend(problem, est, cfg, jax.random.PRNGKey(seed)))
                seconds = time.perf_counter() - t0
                label = f"{m}" if K is None else f"{m} K={K}"
                trajs[(obj, label)] = traj
                final = traj[-1]
                if m == "reverse":
                    exact_final = final
                row = {"objective": obj, "method": m, "K": K, "seed": seed, "lambda_1": float(final[0]),
                       "lambda_2": float(final[1]),
                       "outer_value": float(problem.outer_loss(jnp.asarray(final), w_hat(cfg, jnp.asarray(final)), None)),
                       "true_grad_norm": float(gnorm[-1]), "function_calls": float(calls), "seconds": seconds}
                rows.append(row)
                curves += [{"objective": obj, "method": m, "K": K, "step": i, "lambda_1": float(a), "lambda_2": float(b),
                            "true_grad_norm": float(gn)} for i, ((a, b), gn) in enumerate(zip(traj, gnorm))]
                advance()
            for row in rows:
                if row["objective"] == obj:
                    row["distance_to_exact"] = (None if exact_final is None else
                                                float(np.hypot(row["lambda_1"] - exact_final[0],
                                                               row["lambda_2"] - exact_final[1])))
    write_csv(out_dir / "trajectories.csv", curves)
    _figures(out_dir, cfg, errors, bounds, trajs)

    summary = write_summary(out_dir, NAME, {**cfg, "bound_holds": bool(np.all(errors <= bounds)),
                                            "max_error_over_bound": float(np.max(errors / bounds))}, rows)
    notes = (f"Prop. 3.1 eq. (10) at λ = {tuple(cfg['lambda_bound'])}, K = 1..{cfg['steps']}: measured K-RMD error "
             f"≤ bound for every K: {bool(np.all(errors <= bounds))} (max error/bound {np.max(errors / bounds):.3g}); "
             f"see bound.png / bound.csv. Outer GD from λ_0 = {tuple(cfg['lambda0'])}, {cfg['outer_steps']} steps, "
             f"η_τ = η_0/√τ with a first step of norm {cfg['first_step_norm']}. true_grad_norm is ‖d_λ‖ (exact) at "
             "the final λ: near 0 for the exact method; on f_tilde, 1-RMD stops where it is not (Theorem 3.3).")
    cols = ["objective", "method", "K", "lambda_1", "lambda_2", "outer_value", "true_grad_norm", "distance_to_exact",
            "function_calls", "seconds"]
    write_markdown(out_dir / "results.md", "toy2d (paper 001 §4.1)", rows, cols, notes)
    return json.loads(summary.read_text())


def _figures(out_dir: Path, cfg: dict, errors, bounds, trajs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Ks = np.arange(1, len(errors) + 1)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.semilogy(Ks, bounds, "--", label="Prop. 3.1 bound (eq. 10)")
    pos = errors > 0  # K = T is exact: error 0, off a log scale
    ax.semilogy(Ks[pos], errors[pos], label=r"$\|h_{T-K} - d_\lambda f\|$")
    ax.set(xlabel="K", ylabel="error", title=f"K-RMD error at λ = {tuple(cfg['lambda_bound'])}")
    ax.legend()
    save_figure(fig, out_dir / "bound.png")

    for obj in ("f", "f_tilde"):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        lo, hi = -0.5, 1.5
        xs = np.linspace(lo, hi, 200)
        X, Y = np.meshgrid(xs, xs)
        pen = 0.0 if obj == "f" else float(cfg["penalty"])
        lam = jnp.stack([X.ravel(), Y.ravel()], 1)
        Z = np.asarray(jax.vmap(lambda l: f_outer(None, w_hat(cfg, l), None)
                                + pen * jnp.sum((l - jnp.asarray(cfg["penalty_center"])) ** 2))(lam)).reshape(X.shape)
        a1.contour(X, Y, Z, 30, cmap="Greys", linewidths=0.6)
        for (o, label), t in trajs.items():
            if o == obj:
                a1.plot(t[:, 0], t[:, 1], ".-", ms=2, lw=0.8, label=label)
                ref = trajs.get((obj, "reverse"), t)[-1]
                a2.semilogy(np.maximum(np.linalg.norm(t - ref, axis=1), 1e-16), label=label)
        a1.set(xlabel="λ1", ylabel="λ2", title=f"outer trajectories on {obj}")
        a1.legend(fontsize=7)
        a2.set(xlabel="outer step τ", ylabel="‖λ_τ − λ_exact‖", title="distance to the exact method's final λ")
        save_figure(fig, out_dir / f"trajectories_{obj}.png")


register(Experiment(NAME, run, DEFAULTS, TINY,
                    "toy 2-D problem (001 §4.1): Prop. 3.1 bound vs K-RMD error, K-RMD trajectories, "
                    "biased 1-RMD on f + 5||λ-(1,0)||²"))
