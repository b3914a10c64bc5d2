"""The inner loss's curvature at the start of the inner loop, and the step-size check it allows.

Gradient descent on an L-smooth loss is stable only for α < 2/L, L the largest eigenvalue of
the Hessian ∇²_φ L_in. :func:`top_eigenvalue` estimates L at φ_0 = V(θ, T) by power iteration
on Hessian-vector products (forward-over-reverse, no Hessian formed); :func:`check_step_size`
refuses α ≥ 2/L before any training, with the numbers and a safe α. For losses that are not
quadratic L moves along the loop, so this is a necessary check at the start, not a guarantee.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree


class StepSizeError(ValueError):
    """The inner step size is at or above 2/L: the inner loop would diverge."""


def top_eigenvalue(problem, theta, task, *, iterations: int = 30, key=None) -> float:
    """Largest-magnitude eigenvalue of ∇²_φ L_in(θ, φ_0, T) at φ_0 = V(θ, T), by ``iterations``
    power-iteration HVPs (cost: that many HVPs). Returns a Python float."""
    if isinstance(iterations, (bool, np.bool_)) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1; got {iterations!r}")
    flat, unravel = ravel_pytree(problem.init(theta, task))
    key = jax.random.PRNGKey(0) if key is None else key

    @jax.jit  # θ, φ_0 and the task are arguments: as closed-over constants XLA would fold a dataset at compile time
    def power(v, theta, flat, task):
        def body(_, carry):
            v, _ = carry
            w = ravel_pytree(problem.inner_hvp(theta, unravel(flat), unravel(v), task))[0]
            lam = jnp.vdot(v, w)
            return w / jnp.maximum(jnp.linalg.norm(w), jnp.finfo(w.dtype).tiny), lam

        v = v / jnp.linalg.norm(v)
        return jax.lax.fori_loop(0, iterations, body, (v, jnp.zeros((), v.dtype)))[1]

    return float(power(jax.random.normal(key, flat.shape, flat.dtype), theta, flat, task))


def check_step_size(problem, theta, task, lr: float, *, name: str = "inner_lr", iterations: int = 30) -> float:
    """Raise :class:`StepSizeError` when ``lr`` ≥ 2/L (L by :func:`top_eigenvalue`); returns L.
    The message names ``name``, ``lr``, L, 2/L and suggests 1/L."""
    L = top_eigenvalue(problem, theta, task, iterations=iterations)
    if L > 0 and lr >= 2.0 / L:
        raise StepSizeError(f"{name} = {lr:g} is at or above 2/L = {2.0 / L:.4g} (L = {L:.4g}, the top eigenvalue of "
                            f"the inner Hessian at phi_0): the inner loop diverges; use {name} <= {1.0 / L:.3g} (1/L)")
    return L
