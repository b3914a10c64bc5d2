"""What a hypergradient estimate cost: a small pytree of counts that jit and vmap can carry.

Counting follows Likhosherstov et al. (ICML 2021, "Debiasing a first-order heuristic for
approximate bi-level optimization", https://arxiv.org/abs/2106.02487), Proposition 1: one *gradient evaluation* is one evaluation of
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
    """The cost of one hypergradient estimate (or, summed, of many), as float32 scalars.

    Every estimator returns one beside its estimate, so that methods are compared at equal cost
    rather than equal steps. For r inner steps, exact reverse mode costs ``grad_evals`` = r + 1,
    ``hvps`` = r, ``states`` = r + 1; the first-order method (FOM) r + 1, 0, 1. Under ``vmap``
    each field gains a task axis; :func:`batch_total` sums it. Adding two costs (``a + b``) gives
    the cost of running both calls one after the other.

    Attributes:
        grad_evals: evaluations of a gradient ∂L/∂φ of the inner or the outer loss (one per
            inner step of a GD-like optimizer, plus one for the outer loss).
        hvps: Hessian-vector products: reverse passes through one inner step, each giving
            [(∂²L_in/∂θ∂φ)ᵀb, (∂²L_in/∂φ²)ᵀb] at the price of one HVP. Fractional values are
            expected counts (UFOM with probability q adds q·r).
        jvps: Jacobian-vector products of the initialisation V(θ), or tangents pushed through one
            step in forward mode.
        states: the largest number of inner states φ_j held in memory at once (the memory cost:
            r + 1 for reverse mode, 1 for FOM and recomputation, M + 1 with M checkpoints).
        samples: data samples drawn (mini-batch estimators such as stocBiO); 0 otherwise.
        nonfinite: True when the estimate holds NaN or ±inf.
    """

    grad_evals: jax.Array
    hvps: jax.Array
    jvps: jax.Array
    states: jax.Array
    samples: jax.Array
    nonfinite: jax.Array

    @property
    def function_calls(self) -> jax.Array:
        """Gradient evaluations + HVPs + JVPs: the unit in which budgets are set (Likhosherstov et
        al. 2021, §5: an HVP costs about as much as a gradient)."""
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
        """The fields as Python numbers (floats, ``nonfinite`` a bool) plus ``function_calls``,
        for JSON records. Moves the values to the host (not for use under ``jit``)."""
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
    (Likhosherstov et al. 2021 Prop. 1: C_det + q C_rnd); memory is the max (both are held when drawn)."""
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


def zero() -> Cost:
    """The cost of nothing: the start of a running total."""
    return cost()


def accumulate(total: Cost, residual: Cost, step: Cost) -> tuple:
    """``(total + step, residual)`` by compensated (Kahan) summation of the counts, so that a
    running total carried in float32 through a long run stays exact to float32 rounding of the
    whole sum, not of each addition (plain float32 sums of integer counts stop being exact past
    2²⁴ ≈ 16.8 million). ``residual`` carries the low-order part lost so far (start from
    :func:`zero`); ``states`` is the max and ``nonfinite`` the or, as in ``total + step``."""
    def kahan(t, c, x):
        y = x - c
        s = t + y
        return s, (s - t) - y

    sums = [kahan(t, c, x) for t, c, x in zip(total[:3], residual[:3], step[:3])]
    samples = kahan(total.samples, residual.samples, step.samples)
    new_total = Cost(*(s for s, _ in sums), jnp.maximum(total.states, step.states), samples[0],
                     jnp.logical_or(total.nonfinite, step.nonfinite))
    new_residual = Cost(*(c for _, c in sums), residual.states, samples[1], residual.nonfinite)
    return new_total, new_residual
