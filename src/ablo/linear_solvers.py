"""Matrix-free solvers for A x = b with A symmetric positive definite (A = ∇²_φ L_in in AID,
Ji, Yang & Liang 2021, eq. 3-4), over pytree vectors.

A solver is a small frozen value called as ``solve(matvec, b, x0=None) -> (x, SolveInfo)``:
``matvec(v) = A v``; ``x0`` a warm start (``None``: start from 0, which saves the matvec
A x0); ``solve.max_matvecs(warm_start)`` is the most products A v one call may spend (what a
cost model charges). ``SolveInfo.matvecs`` counts the products A v used (the HVPs of a cost record) and
``SolveInfo.residual`` is a residual norm (see each solver). All loops are ``lax`` loops, so
memory and compile time do not grow with the iteration count.

* ``CG(tol, maxiter)``: conjugate gradient (Ji et al. 2021, Alg. 1, AID) until ‖b − A x‖ ≤ tol ‖b‖.
* ``Neumann(eta, Q)``: x = x0 + η Σ_{q=0}^{Q} (I − ηA)^q (b − A x0), the truncated Neumann
  series of A⁻¹ = η Σ_q (I − ηA)^q (Ji et al. 2021, eq. 5 with a fixed A, Alg. 3).
* ``FixedPoint(eta, N)``: N steps of x ← x − η (A x − b) (AID-FP, Grazzi et al. 2020).

Neumann and FixedPoint contract the error by ρ = max_i |1 − η λ_i(A)| per matvec
(= 1 − ημ when η ≤ 1/L): they converge for 0 < η < 2/L. From x0 = 0, Neumann(η, Q) and
FixedPoint(η, Q + 1) are the same polynomial in A; both spend Q matvecs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from .checks import check_above_zero, check_int



class SolveInfo(NamedTuple):
    """What a solve spent and reached.

    Attributes:
        matvecs: products A v computed (int32); each is one HVP in a cost record.
        residual: a residual norm at exit (each solver says which).
    """

    matvecs: jax.Array
    residual: jax.Array


def tree_vdot(a, b) -> jax.Array:
    """Σ over leaves of ⟨a, b⟩ (real part): the inner product of two pytrees of one structure."""
    return jnp.real(optax.tree.vdot(a, b))



def _axpy(alpha, x, y):
    """α x + y."""
    return jax.tree.map(lambda xi, yi: alpha * xi + yi, x, y)


def _info(matvecs, residual) -> SolveInfo:
    return SolveInfo(jnp.asarray(matvecs, jnp.int32), jnp.asarray(residual))


@dataclass(frozen=True)
class CG:
    """Conjugate gradient. Stops when ‖r‖ ≤ tol·‖b‖ (relative residual, the CG recurrence's
    r_k) or after ``maxiter`` iterations; ``residual`` is ‖r‖ at exit. A warm start costs one
    matvec (r_0 = b − A x0). ``tol`` may be overridden per call (HOAG's decreasing tolerance).

    Args:
        tol: the relative residual ‖r‖/‖b‖ at which to stop (> 0).
        maxiter: the most iterations (matvecs besides the warm start's).
    """

    tol: float = 1e-10
    maxiter: int = 10
    kind: ClassVar[str] = "cg"

    def __post_init__(self):
        check_above_zero("tol", self.tol, " (relative residual tolerance of CG)")
        check_int("maxiter", self.maxiter, 1)

    def __call__(self, matvec: Callable[[Any], Any], b, x0=None, tol: Optional[jax.Array] = None):
        tol = self.tol if tol is None else tol
        if x0 is None:
            x, r, n0 = jax.tree.map(jnp.zeros_like, b), b, 0
        else:
            x, r, n0 = x0, jax.tree.map(jnp.subtract, b, matvec(x0)), 1
        rs = tree_vdot(r, r)
        bound = (tol * optax.tree.norm(b)) ** 2

        def cond(c):
            return (c[4] < self.maxiter) & (c[3] > bound)

        def body(c):
            x, r, p, rs, k = c
            Ap = matvec(p)
            alpha = rs / tree_vdot(p, Ap)
            x = _axpy(alpha, p, x)
            r = _axpy(-alpha, Ap, r)
            rs_new = tree_vdot(r, r)
            return x, r, _axpy(rs_new / rs, p, r), rs_new, k + 1

        x, _, _, rs, k = jax.lax.while_loop(cond, body, (x, r, r, rs, jnp.asarray(0, jnp.int32)))
        return x, _info(n0 + k, jnp.sqrt(rs))

    def max_matvecs(self, warm_start: bool) -> int:
        """``maxiter`` products, plus one for the residual of a warm start (CG may stop earlier)."""
        return self.maxiter + int(warm_start)


@dataclass(frozen=True)
class Neumann:
    """x = x0 + η Σ_{q=0}^{Q} p_q with p_0 = b − A x0, p_{q+1} = (I − ηA) p_q: Q matvecs (+1 for
    a warm start). ``residual`` is ‖p_Q‖ = ‖b − A x_prev‖ for the partial sum x_prev without its
    last term (computed for free; it bounds the residual of x when η < 2/L).

    Args:
        eta: the step η (> 0; the series converges for η < 2/L).
        Q: the number of terms after the first (matvecs).
    """

    eta: float = 0.5
    Q: int = 10
    kind: ClassVar[str] = "neumann"

    def __post_init__(self):
        check_above_zero("eta", self.eta, " (Neumann step; it must also be < 2/L for convergence)")
        check_int("Q", self.Q, 0)

    def __call__(self, matvec, b, x0=None):
        if x0 is None:
            p, n0 = b, 0
        else:
            p, n0 = jax.tree.map(jnp.subtract, b, matvec(x0)), 1

        def body(_, c):
            p, acc = c
            p = _axpy(-self.eta, matvec(p), p)
            return p, jax.tree.map(jnp.add, acc, p)

        p, acc = jax.lax.fori_loop(0, self.Q, body, (p, p))
        x = jax.tree.map(lambda a: self.eta * a, acc)
        x = x if x0 is None else jax.tree.map(jnp.add, x0, x)
        return x, _info(n0 + self.Q, optax.tree.norm(p))

    def max_matvecs(self, warm_start: bool) -> int:
        """Q products, plus one for the residual of a warm start."""
        return self.Q + int(warm_start)


@dataclass(frozen=True)
class FixedPoint:
    """N steps of x ← x − η (A x − b). From x0 = 0 the first step is x = ηb (no matvec), so
    N − 1 matvecs; from a warm start N. ``residual`` is ‖A x − b‖ at the last iterate whose
    residual was computed (the one before the final step; ‖b‖ if none), free of charge.

    Args:
        eta: the step η (> 0; converges for η < 2/L).
        N: the number of steps.
    """

    eta: float = 0.5
    N: int = 10
    kind: ClassVar[str] = "fp"

    def __post_init__(self):
        check_above_zero("eta", self.eta, " (fixed-point step; it must also be < 2/L for convergence)")
        check_int("N", self.N, 1)

    def __call__(self, matvec, b, x0=None):
        if x0 is None:
            x, start, res = jax.tree.map(lambda bi: self.eta * bi, b), 1, optax.tree.norm(b)
        else:
            x, start, res = x0, 0, optax.tree.norm(b)

        def body(_, c):
            x, _ = c
            r = jax.tree.map(jnp.subtract, matvec(x), b)
            return _axpy(-self.eta, r, x), optax.tree.norm(r)

        x, res = jax.lax.fori_loop(start, self.N, body, (x, res))
        return x, _info(self.N - start, res)

    def max_matvecs(self, warm_start: bool) -> int:
        """N products from a warm start, N − 1 from zero (the first step is ηb)."""
        return self.N - int(not warm_start)


SOLVERS = {"cg": CG, "neumann": Neumann, "fp": FixedPoint}
