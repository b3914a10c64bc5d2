"""What a hypergradient estimate cost: a small pytree of counts that jit and vmap can carry.

Counting follows paper 000, Proposition 1: one *gradient evaluation* is one evaluation of
∂L/∂φ (inner or outer loss); one *HVP* is one reverse pass through an inner step, which
gives the pair [(∂²L_in/∂θ∂φ)ᵀb, (∂²L_in/∂φ²)ᵀb] at the price of one Hessian-vector product
(for momentum and Adam the same VJP through the whole step); one *JVP* is a
Jacobian-vector product of V or, in forward mode, one tangent pushed through one step.
``states`` is the largest number of inner states held in memory at once, ``samples`` the
number of data samples drawn (stochastic estimators), ``nonfinite`` whether the estimate
contains NaN or ±inf.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Cost(NamedTuple):
    grad_evals: jax.Array
    hvps: jax.Array
    jvps: jax.Array
    states: jax.Array
    samples: jax.Array
    nonfinite: jax.Array

    @property
    def function_calls(self) -> jax.Array:
        """Gradient evaluations plus Hessian/Jacobian-vector products (paper 000 §5 budgets)."""
        return self.grad_evals + self.hvps + self.jvps

    def __add__(self, other: "Cost") -> "Cost":  # type: ignore[override]
        """Costs of two calls run one after the other: counts add, memory is the max."""
        return Cost(
            self.grad_evals + other.grad_evals,
            self.hvps + other.hvps,
            self.jvps + other.jvps,
            jnp.maximum(self.states, other.states),
            self.samples + other.samples,
            jnp.logical_or(self.nonfinite, other.nonfinite),
        )

    def as_dict(self) -> dict:
        d = {k: float(v) for k, v in self._asdict().items() if k != "nonfinite"}
        d["nonfinite"] = bool(self.nonfinite)
        d["function_calls"] = float(self.function_calls)
        return d


def cost(grad_evals=0, hvps=0, jvps=0, states=0, samples=0, nonfinite=False) -> Cost:
    """Build a Cost; counts are float32 so expected (fractional) counts fit too."""
    f = lambda x: jnp.asarray(x, jnp.float32)
    return Cost(f(grad_evals), f(hvps), f(jvps), f(states), f(samples), jnp.asarray(nonfinite, bool))


def expected(always: Cost, sometimes: Cost, q) -> Cost:
    """Expected cost of running ``always`` and, with probability q, also ``sometimes``
    (paper 000 Prop. 1: C_det + q C_rnd); memory is the max (both are held when drawn)."""
    grad_evals, hvps, jvps, _, samples = (a + q * b for a, b in zip(always[:5], sometimes[:5]))
    return Cost(grad_evals, hvps, jvps, jnp.maximum(always.states, sometimes.states), samples,
                jnp.logical_or(always.nonfinite, sometimes.nonfinite))


def batch_total(c: Cost) -> Cost:
    """Reduce a Cost with a leading task axis (from vmap) to the cost of the whole batch."""
    return Cost(
        c.grad_evals.sum(0), c.hvps.sum(0), c.jvps.sum(0), c.states.sum(0), c.samples.sum(0), c.nonfinite.any(0)
    )


def is_nonfinite(tree) -> jax.Array:
    """True when any leaf of ``tree`` holds NaN or ±inf."""
    leaves = [jnp.logical_not(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.any(jnp.stack(leaves)) if leaves else jnp.asarray(False)
