"""Hand-written JAX programs of each benchmarked algorithm, in one layout (ablo's: ``x @ W``,
W stored (in, out)): ablo's estimator of the same name is timed against it in the same process
(``suite``). A speed claim's 1.00 is the fastest plain program over layouts and ``jax.checkpoint``
policies (``anchors``); these cover the algorithms the anchors do not.

Each is written the way a JAX user would write it without ablo, from the problem's two losses,
φ_0 = V(θ) and a GD step φ ← φ − α ∇_φ L_in(θ, φ) (both benchmark problems use plain GD):

=============  ==========================================================================
method         reference
=============  ==========================================================================
reverse        ``jax.grad`` through a ``lax.scan`` of the r steps (the standard form: it
               keeps every step's residuals)
checkpointed   the same with the scan cut into ⌈r/c⌉ ``jax.checkpoint``-ed segments of
               c = ⌈r/⌈√r⌉⌉ steps: the two-level scheme (≈ 2r + 1 gradient evaluations and r
               HVPs, ⌈√r⌉ checkpoints + one segment's residuals), checkpointed's ideal
recompute      ``fori_loop`` over t = r−1..0: re-run t steps from φ_0, ``jax.vjp`` of step t
truncated      a ``fori_loop`` of r − K steps, then ``jax.grad`` through a ``lax.scan`` of the
               last K (Shaban et al. 2019 eq. 8, V's Jacobian applied at the truncation point)
fom, ufom      a ``fori_loop`` of r GD steps, then one outer gradient (+ V's VJP); it also
               returns whether φ_r is finite, as the estimator does (see ``fom``)
aid-cg         a ``fori_loop`` of r steps, ``jax.scipy.sparse.linalg.cg`` on forward-over-
               reverse HVPs (N iterations, tolerance 0), one mixed VJP
forward        ``jax.jvp`` of the ``fori_loop`` under ``vmap`` over the dim θ basis vectors
=============  ==========================================================================

A method with no entry (e.g. a new schedule) is referred to ``reverse``'s standard form, and the
report says so.
"""

from __future__ import annotations

import math

import jax
import jax.flatten_util
import jax.numpy as jnp
from jax import lax

from ..products import optimize_products



def gd_step(problem, lr: float, rewrite: bool = False):
    """(θ, φ, task) -> φ − α ∇_φ L_in(θ, φ, task); ``rewrite``: the gradient's products rewritten
    as ablo's inner gradient rewrites them (``ablo.products``), to separate what that buys from
    what an estimator's algorithm costs (``ablation``)."""
    grad = jax.grad(problem.inner_loss, argnums=1)
    grad = optimize_products(grad) if rewrite else grad

    def step(th, phi, task):
        return jax.tree.map(lambda p, gi: p - lr * gi, phi, grad(th, phi, task))

    return step


def _scan(step, th, phi, task, n: int):
    return lax.scan(lambda p, _: (step(th, p, task), None), phi, None, length=n)[0] if n else phi


def _loop(step, th, phi, task, n: int):
    return lax.fori_loop(0, n, lambda _, p: step(th, p, task), phi)


def _plus_v_vjp(problem, th, task, g_theta, g_phi0):
    """g_θ + (∂φ_0/∂θ)ᵀ g_φ0."""
    _, vjp = jax.vjp(lambda t: problem.init(t, task), th)
    return jax.tree.map(jnp.add, g_theta, vjp(g_phi0)[0])


def reverse(problem, lr, r, rewrite: bool = False):
    step = gd_step(problem, lr, rewrite)

    def objective(th, task):
        return problem.outer_loss(th, _scan(step, th, problem.init(th, task), task, r), task)

    return jax.grad(objective)


def checkpointed(problem, lr, r):
    step = gd_step(problem, lr)
    c = -(-r // max(1, math.ceil(math.sqrt(r))))  # segment length, as ablo's default M = ⌈√r⌉
    full, rest = divmod(r, c)

    def objective(th, task):
        segment = jax.checkpoint(lambda p, n: _scan(step, th, p, task, n), static_argnums=(1,))
        phi = lax.scan(lambda p, _: (segment(p, c), None), problem.init(th, task), None, length=full)[0]
        phi = segment(phi, rest) if rest else phi
        return problem.outer_loss(th, phi, task)

    return jax.grad(objective)


def recompute(problem, lr, r):
    step = gd_step(problem, lr)

    def hypergradient(th, task):
        phi0 = problem.init(th, task)
        g_theta, g_phi = jax.grad(problem.outer_loss, argnums=(0, 1))(th, _loop(step, th, phi0, task, r), task)

        def back(i, carry):
            g_theta, g_phi = carry
            t = r - 1 - i
            phi_t = lax.fori_loop(0, t, lambda _, p: step(th, p, task), phi0)
            _, vjp = jax.vjp(lambda a, p: step(a, p, task), th, phi_t)
            d_theta, g_phi = vjp(g_phi)
            return jax.tree.map(jnp.add, g_theta, d_theta), g_phi

        g_theta, g_phi = lax.fori_loop(0, r, back, (g_theta, g_phi))
        return _plus_v_vjp(problem, th, task, g_theta, g_phi)

    return hypergradient


def truncated(problem, lr, r, K):
    step = gd_step(problem, lr)

    def hypergradient(th, task):
        phi_cut = _loop(step, th, problem.init(th, task), task, r - K)

        def objective(a):
            v = problem.init(a, task)  # φ_{r−K} with V's Jacobian: v + (φ_{r−K} − v) held constant
            phi = jax.tree.map(lambda x, y: x + lax.stop_gradient(y - x), v, phi_cut)
            return problem.outer_loss(a, _scan(step, a, phi, task, K), task)

        return jax.grad(objective)(th)

    return hypergradient


def fom(problem, lr, r, rewrite: bool = False):
    step = gd_step(problem, lr, rewrite)

    def hypergradient(th, task):
        phi_r = _loop(step, th, problem.init(th, task), task, r)
        g_theta, g_phi = jax.grad(problem.outer_loss, argnums=(0, 1))(th, phi_r, task)
        # and whether φ_r is finite, as ablo's estimate reports: where ∂L_out/∂θ = 0 and V is constant
        # (hypercleaning) the hypergradient does not read φ_r, and XLA would drop the whole loop
        return _plus_v_vjp(problem, th, task, g_theta, g_phi), _finite(phi_r)

    return hypergradient


def _finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


def aid_cg(problem, lr, r, iters):
    step = gd_step(problem, lr)
    grad_in = jax.grad(problem.inner_loss, argnums=1)

    def hypergradient(th, task):
        phi = _loop(step, th, problem.init(th, task), task, r)
        f_theta, f_phi = jax.grad(problem.outer_loss, argnums=(0, 1))(th, phi, task)
        hvp = lambda v: jax.jvp(lambda p: grad_in(th, p, task), (phi,), (v,))[1]
        v, _ = jax.scipy.sparse.linalg.cg(hvp, f_phi, maxiter=iters, tol=0.0)
        _, vjp = jax.vjp(lambda a: grad_in(a, phi, task), th)
        return jax.tree.map(jnp.subtract, f_theta, vjp(v)[0])

    return hypergradient


def forward(problem, lr, r):
    step = gd_step(problem, lr)

    def hypergradient(th, task):
        flat, unravel = jax.flatten_util.ravel_pytree(th)
        phi_of = lambda f: _loop(step, unravel(f), problem.init(unravel(f), task), task, r)
        phi_r = phi_of(flat)
        g_theta, g_phi = jax.grad(problem.outer_loss, argnums=(0, 1))(th, phi_r, task)
        g_phi_flat = jax.flatten_util.ravel_pytree(g_phi)[0]
        column = lambda e: jax.flatten_util.ravel_pytree(jax.jvp(phi_of, (flat,), (e,))[1])[0] @ g_phi_flat
        return jax.tree.map(jnp.add, g_theta, unravel(jax.vmap(column)(jnp.eye(flat.shape[0], dtype=flat.dtype))))

    return hypergradient


def program(method: str, problem, lr: float, r: int, aid_iters: int):
    """-> (name of the reference, ``f(θ, task) -> hypergradient``) for ``method``."""
    from .problems import estimator

    if method in ("fom", "ufom"):
        return "fom", fom(problem, lr, r)
    if method == "truncated":
        return "truncated", truncated(problem, lr, r, int(estimator("truncated", r).K))
    if method == "aid-cg":
        return "aid-cg", aid_cg(problem, lr, r, aid_iters)
    if method in ("checkpointed", "recompute", "forward"):
        return method, globals()[method](problem, lr, r)
    return "reverse", reverse(problem, lr, r)  # reverse, reverse-residuals (the same algorithm) and the rest
