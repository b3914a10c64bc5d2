"""The toy problem of Shaban et al. 2019 §4.1 (the ``toy2d`` experiment): λ, w ∈ R²,

    f(ŵ) = ‖ŵ‖² + 10‖sin ŵ‖²,    g(w, λ) = ½ (w − λ)ᵀ G (w − λ),   G = diag(1, ½),

ŵ = w_T after T GD steps on g with step γ; the closed form of ŵ, the bound of Prop. 3.1 eq. (10)
on the K-RMD error, the outer descent of Figs. 3-4 and the descent ratio of Fig. 2. ``cfg`` is
the experiment's config (steps, inner_lr, w0, lambda0, first_step_norm, outer_steps,
penalty_center).

The ``toy2d`` experiment's protocol:

    f(ŵ) = ‖ŵ‖² + 10‖sin ŵ‖²,    g(w, λ) = ½ (w − λ)ᵀ G (w − λ),   G = diag(1, ½),

ŵ = w_T after T = 100 GD steps on g with γ = 0.1 from w_0 = (2, 2). g is β = 1 smooth and
α = ½ strongly convex, B_t = γG, so Prop. 3.1 eq. (10) bounds the K-RMD error

    ‖h_{T−K} − d_λ f‖ ≤ (1 − γα)^K / (γα) · ‖∇_ŵ f‖ · M_B,   M_B = ‖γG‖ = γ.

Four parts, all with ablo's ``Truncated(K)`` against the exact ``Reverse``:

1. ``bound``: measured error and the bound at λ = (1, 1) for K = 1..T (Shaban et al. 2019 Fig. 1);
2. ``f``: outer GD on f from λ_0 with η_τ = η_0/√τ, η_0 chosen so that the first step has norm
   0.6 (Shaban et al. 2019 footnote 4), for each K in ``Ks`` and each other method (Fig. 4);
3. ``f_tilde``: the same on f̃ = f + 5‖λ − (1, 0)‖², where ∇_λ f̃ ≠ 0 and 1-RMD converges to a
   biased point (Theorem 3.3; Fig. 3);
4. ``descent_ratio``: h_{T−K}ᵀ d_λ / ‖d_λ‖² at each λ_τ of the K = 1 trajectory, for each K of
   the truncated methods and K = T, on f and on f̃ (Fig. 2). Lemma 3.2 (∇_λ f = 0, g strongly
   convex) keeps it positive on f, h_{T−K} being a sufficient descent direction; on f̃ it may
   turn negative. At K = T it is 1 (h_0 = d_λ).

The outer loop is a ``lax.scan`` over τ (deterministic: no tasks, the seed only feeds the
estimators' keys). Rows: one per objective and method (and K); fields in docs/results-format.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import outer
from ..estimators import Reverse, Truncated
from ..inner import gd
from ..problem import BilevelProblem, constant_init

G = jnp.array([1.0, 0.5])  # diagonal of G
ALPHA = 0.5  # strong convexity of g (smallest eigenvalue of G)


def f_outer(theta, phi, task):
    """f(ŵ) = ‖ŵ‖² + 10‖sin ŵ‖²; ∇_λ f = 0."""
    return jnp.sum(phi ** 2) + 10.0 * jnp.sum(jnp.sin(phi) ** 2)


def g_inner(theta, phi, task):
    """g(w, λ) = ½ (w − λ)ᵀ G (w − λ)."""
    return 0.5 * jnp.sum(G * (phi - theta) ** 2)


def make_problem(cfg, penalty: float = 0.0) -> BilevelProblem:
    """The toy problem; ``penalty`` > 0 adds penalty·‖λ − penalty_center‖² to the outer loss (f̃)."""
    center = jnp.asarray(cfg.penalty_center, float)
    outer = f_outer if penalty == 0 else (lambda th, w, task: f_outer(th, w, task) + penalty * jnp.sum((th - center) ** 2))
    return BilevelProblem(g_inner, outer, gd(cfg.inner_lr), cfg.steps, constant_init(jnp.asarray(cfg.w0, float)))


def w_hat(cfg, lam) -> jax.Array:
    """ŵ = C w_0 + (I − C) λ with C = (I − γG)^T (Shaban et al. 2019 §4.1), in closed form."""
    C = (1.0 - cfg.inner_lr * G) ** cfg.steps
    return C * jnp.asarray(cfg.w0, float) + (1.0 - C) * lam


def prop31_bound(cfg, K, lam) -> jax.Array:
    """Eq. (10): (1 − γα)^K/(γα) ‖∇_ŵ f‖ M_B with M_B = γ‖G‖ = γ."""
    gamma = cfg.inner_lr
    grad_f = jax.grad(f_outer, argnums=1)(None, w_hat(cfg, lam), None)
    return (1.0 - gamma * ALPHA) ** K / (gamma * ALPHA) * jnp.linalg.norm(grad_f) * gamma * float(jnp.max(G))


def truncation_errors(cfg, lam, advance=lambda n=1: None) -> tuple[np.ndarray, np.ndarray]:
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
        if not (np.isfinite(errors[-1]) and np.isfinite(bounds[-1])):
            raise outer.Diverged(f"toy2d bound check at K = {K}: the K-RMD error ({errors[-1]:.4g}) or the bound "
                                 f"({bounds[-1]:.4g}) is not finite; lower inner_lr or steps", K, f"truncated-{K}")
        advance()
    return np.array(errors), np.array(bounds)


def descend(problem, estimator, cfg, key, label: str):
    """Outer GD λ_{τ+1} = λ_τ − η_0/√τ · h(λ_τ), τ = 1..outer_steps, η_0 = first_step_norm/‖h(λ_1)‖,
    as ``outer.scan`` of ``outer.make_step`` (optax SGD with that schedule). Returns (trajectory
    (steps+1, 2), true gradient norms ‖d_λ‖ along it, the run's Cost record
    (:func:`ablo.outer.cost_record`)); Diverged if a step is not finite."""
    lam0 = jnp.asarray(cfg.lambda0, float)
    h0, _, _ = estimator.estimate(problem, lam0, None, estimator.init(problem, lam0, None), key)
    eta0 = cfg.first_step_norm / float(jnp.linalg.norm(h0))
    if not np.isfinite(eta0):
        raise outer.Diverged(f"{label}: the first hypergradient has norm {float(jnp.linalg.norm(h0)):.4g}, so the "
                             "first outer step cannot be scaled; lower inner_lr or steps", 1, label)
    sgd = optax.chain(optax.scale_by_schedule(lambda k: eta0 / jnp.sqrt(k + 1.0)), optax.scale(-1.0))
    step = outer.make_step(problem, estimator, sgd, lambda k: jnp.zeros(()), log_losses=False)  # no tasks
    exact = lambda lam: Reverse().estimate(problem, lam, None, (), key)[0]

    @jax.jit
    def loop(state):
        state, m = outer.scan(step, state, key, cfg.outer_steps)
        gnorm = jax.vmap(lambda lam: jnp.linalg.norm(exact(lam)))(m["theta"])
        return state, m, gnorm

    state, m, gnorm = loop(outer.init(problem, estimator, sgd, lam0, jnp.zeros(())))
    outer.raise_if_diverged(m, label)
    traj = np.concatenate([np.asarray(lam0)[None], np.asarray(m["theta"])])
    return traj, np.append(float(jnp.linalg.norm(exact(lam0))), np.asarray(gnorm)), outer.cost_record(state.cost)


def descent_ratios(problem, lams, Ks, key) -> np.ndarray:
    """Shaban et al. 2019 Fig. 2: r_K(λ) = h_{T−K}(λ)ᵀ d_λ / ‖d_λ‖² for each K in ``Ks`` (rows) at each λ
    of ``lams`` (n, 2) (columns), h_{T−K} the K-RMD estimate and d_λ the exact hypergradient
    (reverse mode) of ``problem``'s outer objective. r_K > 0: −h_{T−K} descends; r_T = 1. NaN
    where d_λ = 0. Cost: one jit per K of the estimator vmapped over the n points."""
    lams = jnp.asarray(lams)
    per_point = lambda est: jax.jit(jax.vmap(lambda lam: est.estimate(problem, lam, None, (), key)[0]))(lams)
    exact = per_point(Reverse())
    sq = jnp.sum(exact ** 2, axis=1)
    safe = jnp.where(sq > 0, sq, 1.0)
    return np.array([np.asarray(jnp.where(sq > 0, jnp.sum(per_point(Truncated(int(K))) * exact, axis=1) / safe, jnp.nan))
                     for K in Ks])
