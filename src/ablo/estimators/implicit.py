"""Implicit differentiation, AID-BiO (Ji et al. 2021 Alg. 1, eq. 3) and HOAG (Pedregosa 2016; Ji et al. 2021 §A.2).

With x = θ, y = φ, g = L_in, f = L_out and y_k^T the inner iterate after T = r steps:

    ∇̂Φ(x_k) = ∇_x f(x_k, y_k^T) − ∇_x∇_y g(x_k, y_k^T) v_k^N,   ∇²_y g(x_k, y_k^T) v = ∇_y f(x_k, y_k^T),

v_k^N from a linear solver (``ablo.linear_solvers``: CG, Neumann, FixedPoint) handed in as a
value. Warm starts (Alg. 1 lines 3 and 7.1): y_k^0 = y_{k−1}^T and v_k^0 = v_{k−1}^N, both held
in the estimator state (a new inner optimizer state is built around y_{k−1}^T, so momentum or
Adam slots restart; the problem's start V(θ, T) is used only by ``init``, for the first call).
A warm start of v costs one matvec (r_0 = b − A v^0). Without warm starts every call starts
from ``problem.initial_state`` and v^0 = 0.

What AID assumes. By Proposition 1 the estimate tends to ∇Φ(x) for Φ(x) = f(x, y*(x)) as
y^T → y*(x) = argmin_y g(x, y) and v → v*: it is the gradient of the *limit* problem, not of the
r-step objective M^(r). The start V(θ) of the inner loop only matters through y^T: when V
depends on θ (MAML-style ``identity_init``, V = θ) the implicit gradient ignores the path
through V — it differentiates the fixed point, which is then meaningful only if g is strongly
convex in φ and the inner loop has converged. Use the unrolled estimators for the r-step
objective.

Cost per call: T + 1 gradient evaluations (T inner steps, one outer gradient giving ∇_x f and
∇_y f), the solver's matvecs plus 1 HVPs (each ∇²_y g·v is one HVP; the mixed product
∇_x∇_y g·v — Ji et al. 2021's JV(g) — is counted as one HVP too, as Likhosherstov et al. 2021 counts one reverse pass
through ∇_φ L_in), one inner state held. Memory does not grow with T or the solver's
iterations (``lax`` loops).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from ..cost import cost
from ..linear_solvers import CG, FixedPoint, Neumann
from .base import TwoPass, with_finite_flag
from ..checks import check_above_zero, check_int, is_real



class ImplicitState(NamedTuple):
    """Warm starts y_{k−1}^T (``phi``) and v_{k−1}^N (``v``), the outer step k, and the last
    solve's matvec count and residual (for logging)."""

    phi: object
    v: object
    step: jax.Array
    matvecs: jax.Array
    residual: jax.Array


def implicit_parts(problem, theta, phi, outer_task, inner_task):
    """(∇_x f, ∇_y f, matvec v ↦ ∇²_y g v) at (θ, φ): one gradient evaluation. The outer gradient
    reads ``outer_task``; the second derivatives of g read ``inner_task`` (the same task for
    deterministic AID, independent mini-batches for stocBiO, eq. 6)."""
    f_theta, f_phi = jax.grad(problem.outer_loss, argnums=(0, 1))(theta, phi, outer_task)
    _, matvec = jax.linearize(lambda p: problem.inner_grad(theta, p, inner_task), phi)
    return f_theta, f_phi, matvec


def mixed_product(problem, theta, phi, task, v):
    """∇_x∇_y g(θ, φ) v = (∂∇_φ g/∂θ)ᵀ v: one reverse pass through ∇_φ g (one HVP)."""
    _, vjp = jax.vjp(lambda th: problem.inner_grad(th, phi, task), theta)
    return vjp(v)[0]


@dataclass(frozen=True)
class AID(TwoPass):
    """AID-BiO (Ji et al. 2021 Alg. 1) with a linear solver value, e.g.
    ``AID(CG(tol=1e-10, maxiter=10), warm_start=True)``. ``warm_start`` switches both warm
    starts (y and v).

    Args:
        solver: the linear solver of ∇²_φ L_in v = ∇_φ L_out: ``ablo.CG``, ``ablo.Neumann`` or
            ``ablo.FixedPoint``.
        warm_start: start the inner loop from the last call's φ_r and the solver from the last
            call's v (the state); False starts both from scratch.

    Example:
        ```python
        est = ablo.AID(ablo.CG(tol=1e-10, maxiter=10))   # = ablo.aid_cg()
        state = est.init(problem, theta, task)
        g, state, cost = ablo.hypergradient(problem, est, theta, task, state=state)
        ```
    """

    solver: object = field(default_factory=CG)
    warm_start: bool = True

    @property
    def name(self) -> str:
        """The registered name, "aid-cg", "aid-neumann" or "aid-fp"."""
        return f"aid-{getattr(self.solver, 'kind', 'custom')}"

    def __post_init__(self):
        if not callable(self.solver) or not callable(getattr(self.solver, "max_matvecs", None)):
            raise ValueError(f"solver must be a linear solver value such as CG(), Neumann() or FixedPoint(): a "
                             f"callable (matvec, b, x0) -> (x, SolveInfo) with a method max_matvecs(warm_start) "
                             f"giving its most products A v per solve; got {self.solver!r}")
        if not isinstance(self.warm_start, bool):
            raise ValueError(f"warm_start must be True or False; got {self.warm_start!r}")

    def init(self, problem, theta, task):
        """The first warm starts: y_0 = params(s_0) = V(θ, T), v_0 = 0, step 0."""
        phi = problem.optimizer.params(problem.initial_state(theta, task))
        zero = jnp.zeros((), jnp.result_type(float))
        return ImplicitState(phi, jax.tree.map(jnp.zeros_like, phi), jnp.asarray(0, jnp.int32),
                             jnp.asarray(0, jnp.int32), zero)

    def describe_state(self, state):
        return {"solver_matvecs": float(state.matvecs), "solver_residual": float(state.residual)}

    def solve(self, matvec, b, x0, step):
        """Solve ∇²_φ L_in v = ∇_φ L_out with the solver value from ``x0`` (the warm start v)."""
        return self.solver(matvec, b, x0)

    def forward_pass(self, problem, theta, task, state, key):
        """r inner steps from y_{k−1} (the warm start) or from the problem's start."""
        s0 = problem.optimizer.init(state.phi) if self.warm_start else problem.initial_state(theta, task)
        return problem.run(theta, task, 0, problem.steps, s0), None

    def backward_pass(self, problem, theta, task, state, key, s_r, residuals):
        """Alg. 1 of Ji et al. 2021 after the inner steps: v from the linear solver (eq. 3),
        hypergradient ∇_θ L_out − ∇²_θφ L_in v. Cost: r + 1 gradients, solver matvecs + 1 HVPs;
        the state carries y_k, v and the solver's report."""
        T = problem.steps
        phi = problem.optimizer.params(s_r)
        f_theta, f_phi, matvec = implicit_parts(problem, theta, phi, task, task)
        v, info = self.solve(matvec, f_phi, state.v if self.warm_start else None, state.step)
        g = optax.tree.sub(f_theta, mixed_product(problem, theta, phi, task, v))
        c = cost(grad_evals=T + 1, hvps=info.matvecs + 1, states=1)
        return g, self.next_state(state, phi, v, info, f_phi), with_finite_flag(g, c)

    def next_state(self, state, phi, v, info, b):
        """The state after one call: warm starts y_k^T, v_k^N, step k + 1, the solve's report
        (``b`` = ∇_φ L_out, the right-hand side, is unused here; HOAG reads it)."""
        return state._replace(phi=phi, v=v, step=state.step + 1, matvecs=info.matvecs,
                              residual=info.residual.astype(state.residual.dtype))

    def expected_cost(self, r):
        """An upper bound: r + 1 gradient evaluations and the solver's matvec cap + 1 HVPs (CG
        stops early at its tolerance; the cost record holds the matvecs actually run)."""
        cap = self.solver.max_matvecs(warm_start=self.warm_start)
        return cost(grad_evals=r + 1, hvps=cap + 1, states=1)


class HOAGState(NamedTuple):
    """:class:`ImplicitState` plus ``cap_hits``: the outer steps whose CG stopped at ``maxiter``
    before reaching that step's tolerance (HOAG's safety cap; 0 when the schedule ruled)."""

    phi: object
    v: object
    step: jax.Array
    matvecs: jax.Array
    residual: jax.Array
    cap_hits: jax.Array


#: HOAG's tolerance sequences ε_k (Pedregosa 2016, §3 and its code's ``tolerance_decrease``),
#: all summable: Σ_k ε_k < ∞ is the condition of its convergence theorem (Theorem 2).
SCHEDULES = ("exponential", "quadratic", "cubic")


@dataclass(frozen=True)
class HOAG(AID):
    """HOAG (Pedregosa 2016, Alg. 1; Ji et al. 2021 §A.2 baseline): AID-CG with warm starts of y and v
    whose CG runs at outer step k to the relative tolerance

        ε_k = max(tol · decay^k, floor)   (``schedule="exponential"``, HOAG's default),
        ε_k = max(tol / (k+1)^2, floor)   ("quadratic"),   ε_k = max(tol / (k+1)^3, floor)   ("cubic"),

    ‖∇²_y g v − ∇_y f‖ ≤ ε_k ‖∇_y f‖. Defaults are those of Pedregosa's code (fabianp/hoag:
    ``epsilon_tol_init=1e-3``, ``exponential_decrease_factor=0.9``): a summable sequence, so early
    outer steps are cheap and later ones accurate. k lives in the estimator state (pure, traced:
    one compiled step serves every k). CG runs until ε_k; ``maxiter`` is only a safety cap, and
    every outer step that hits it before ε_k is counted in the state (``cap_hits``, reported by
    ``describe_state``). ``floor`` (default: 10 × the machine epsilon of ∇_y f's dtype, 1.2e-6
    in float32) keeps ε_k where a relative residual can still be certified in that precision.
    Simplification: Pedregosa also stops the inner solver at ε_k and adapts the outer step size;
    here the inner loop runs the problem's r steps (warm-started) and the outer step size is the
    outer optimizer's. Cost per call as AID-CG: r + 1 gradients, CG matvecs + 2 HVPs.

    Args:
        solver: ignored: HOAG builds ``CG(tol, maxiter)`` and tightens its tolerance per step.
        warm_start: as for ``AID``.
        tol: ε_0, the initial relative tolerance.
        decay: the factor ∈ (0, 1) of the exponential schedule.
        schedule: "exponential", "quadratic" or "cubic".
        maxiter: the safety cap on CG iterations.
        floor: the smallest tolerance; None for 10 × the machine epsilon.

    Example:
        ```python
        est = ablo.HOAG(tol=1e-3, decay=0.9)
        state = est.init(problem, theta, task)   # holds k, the warm starts and the cap hits
        g, state, cost = ablo.hypergradient(problem, est, theta, task, state=state)
        ```
    """

    tol: float = 1e-3
    decay: float = 0.9
    schedule: str = "exponential"
    maxiter: int = 10_000
    floor: Optional[float] = None
    solver: object = None
    name: ClassVar[str] = "hoag"

    def __post_init__(self):
        check_above_zero("tol", self.tol, " (initial CG tolerance ε_0 of HOAG)")
        if not is_real(self.decay) or not 0 < self.decay < 1:
            raise ValueError(f"decay must be in (0, 1) (ε_k = tol * decay^k, summable); got {self.decay!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}; got {self.schedule!r}")
        check_int("maxiter", self.maxiter, 1)
        if self.floor is not None:
            check_above_zero("floor", self.floor, " (smallest CG tolerance; none = 10 machine epsilons)")
        object.__setattr__(self, "solver", CG(tol=self.tol, maxiter=self.maxiter))
        super().__post_init__()

    def init(self, problem, theta, task):
        """AID's first warm starts (y_0 = V(θ, T), v_0 = 0, k = 0) and no cap hits."""
        return HOAGState(*super().init(problem, theta, task), jnp.asarray(0, jnp.int32))

    def tolerance(self, step, dtype=None):
        """ε_k of the schedule at outer step k (traced k is fine), floored."""
        dtype = jnp.result_type(float) if dtype is None else dtype
        k = jnp.asarray(step, dtype)
        eps = {"exponential": lambda: self.tol * jnp.asarray(self.decay, dtype) ** k,
               "quadratic": lambda: self.tol / (k + 1) ** 2, "cubic": lambda: self.tol / (k + 1) ** 3}[self.schedule]()
        floor = 10 * jnp.finfo(dtype).eps if self.floor is None else self.floor
        return jnp.maximum(eps, jnp.asarray(floor, dtype))

    def solve(self, matvec, b, x0, step):
        """CG from the warm start to the tolerance ε_k of outer step ``step`` (cap ``maxiter``)."""
        return self.solver(matvec, b, x0, tol=self.tolerance(step, _dtype(b)))

    def next_state(self, state, phi, v, info, b):
        """AID's next state; a solve that ended above ε_k·‖b‖ (stopped by ``maxiter``) adds a cap hit."""
        capped = info.residual > self.tolerance(state.step, _dtype(b)) * optax.tree.norm(b)
        return super().next_state(state, phi, v, info, b)._replace(cap_hits=state.cap_hits + capped.astype(jnp.int32))

    def describe_state(self, state):
        """AID's solver report plus the tolerance ε_k of the next call and the cap hits so far."""
        return {**super().describe_state(state), "tol": float(self.tolerance(state.step)),
                "cg_cap_hits": float(state.cap_hits)}


def _dtype(tree):
    return jnp.result_type(*jax.tree_util.tree_leaves(tree))


def aid_cg(tol: float = 1e-10, maxiter: int = 10, warm_start: bool = True) -> AID:
    """AID-CG (Ji et al. 2021 Alg. 1): N = maxiter CG steps or relative residual ≤ tol.

    Args:
        tol: the relative residual at which CG stops.
        maxiter: the most CG iterations.
        warm_start: warm-start the inner loop and v (see ``AID``).

    Returns:
        ``AID(CG(tol, maxiter), warm_start)``.
    """
    return AID(CG(tol=tol, maxiter=maxiter), warm_start)


def aid_neumann(eta: float = 0.5, Q: int = 10, warm_start: bool = True) -> AID:
    """AID with the truncated Neumann series of eq. 5 (deterministic, full-batch Hessian).

    Args:
        eta: the Neumann step η (must be < 2/L for the series to converge).
        Q: the number of terms (HVPs).
        warm_start: warm-start the inner loop and v (see ``AID``).

    Returns:
        ``AID(Neumann(eta, Q), warm_start)``.
    """
    return AID(Neumann(eta=eta, Q=Q), warm_start)


def aid_fp(eta: float = 0.5, N: int = 10, warm_start: bool = True) -> AID:
    """AID-FP (Grazzi et al. 2020; Ji et al. 2021 §A.2): N fixed-point steps v ← v − η(∇²_y g v − ∇_y f).

    Args:
        eta: the step η (must be < 2/L).
        N: the number of fixed-point steps.
        warm_start: warm-start the inner loop and v (see ``AID``).

    Returns:
        ``AID(FixedPoint(eta, N), warm_start)``.
    """
    return AID(FixedPoint(eta=eta, N=N), warm_start)
