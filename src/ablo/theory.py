"""The theory of UFOM's q (Likhosherstov et al. 2021 §4): bias bound, cost model, optimal q.

* D_bound (eq. 15): D² ≤ D_bound², with D_bound = (1 + M1) L1 L2 Σ_j α_j Π_{j'≥j} (1 + α_{j'} L2).
* Cost model (Proposition 1): C_det = C1 (r + 1), C_rnd = (C1 (r − 1)/2 + C2) r, so one UFOM call
  costs C_det + q C_rnd in expectation; C1 is one gradient ∂L/∂φ, C2 one HVP. That C_rnd is the
  backward half of ``Recompute``; with another exact branch, C_rnd = C1·(its recomputed gradient
  evaluations) + C2·(its HVPs), read from the branch's ``backward_cost(r)``.
* Expected time to a given precision (eq. 19): T(q) ∝ ((1/q − 1) D² + V²)^{2/(1−2ε)} (C_det + C_rnd q).
* Setting dT/dq = 0 and multiplying by q² gives the quadratic (eq. 21)
      C_rnd (V² − D²) q² + (2ε+1)/(2ε−1) D² C_rnd q + 2/(2ε−1) D² C_det = 0;
  its value at q = 0 is negative and its value at q = 1 is C_rnd V² − (2/(1−2ε)) D² (C_det + C_rnd),
  which is positive exactly when condition (20) holds,
      D² < C_rnd V² / ((2/(1−2ε)) (C_det + C_rnd)),
  and then q* is its unique root in (0, 1) (Likhosherstov et al. 2021 Appendix F, re-derived here). Otherwise the
  exact estimator (q = 1) is best. D² = 0 gives q* = 0: FOM is then exact.
* D² and V² (eq. 14, 16) estimated from samples of (G_FO, G_exact) pairs.

Everything here is plain numerics; ``q_star_array`` is also jit-traceable (Adaptive UFOM uses it).
"""

from __future__ import annotations

import time
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from .checks import is_int


def _check_nonneg(name: str, x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number >= 0; got {x!r}") from None
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {x!r}")
    return v


def _check_pos(name: str, x) -> float:
    v = _check_nonneg(name, x)
    if v == 0:
        raise ValueError(f"{name} must be > 0; got {x!r}")
    return v


def _check_eps(eps) -> float:
    v = _check_nonneg("eps", eps)
    if not v < 0.5:
        raise ValueError(f"eps must be in [0, 0.5); got {eps!r}")
    return v


def _check_steps(r) -> int:
    if not is_int(r) or r < 1:
        raise ValueError(f"r (inner steps) must be an integer >= 1; got {r!r}")
    return int(r)


def d_bound(M1: float, L1: float, L2: float, alphas, r: Optional[int] = None) -> float:
    """D_bound of eq. 15 for inner step sizes ``alphas`` = (α_1, ..., α_r), or one constant α with ``r``
    (Assumption 1's M1, L1, L2)."""
    M1, L1, L2 = _check_nonneg("M1", M1), _check_nonneg("L1", L1), _check_nonneg("L2", L2)
    if np.ndim(alphas) == 0 and r is not None:
        alphas = np.full(_check_steps(r), alphas, dtype=float)
    a = np.atleast_1d(np.asarray(alphas, dtype=float))
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"alphas must be a non-empty sequence of positive step sizes (alpha_1..alpha_r); got {alphas!r}")
    tail = np.cumprod((1.0 + a * L2)[::-1])[::-1]  # Π_{j'=j}^r (1 + α_j' L2)
    return float((1.0 + M1) * L1 * L2 * np.sum(a * tail))


def cost_model(r: int, C1: float = 1.0, C2: float = 1.0, exact=None) -> Tuple[float, float]:
    """(C_det, C_rnd) of Proposition 1 / eq. 19: C_det = C1 (r+1), and C_rnd = (C1 (r−1)/2 + C2) r
    for the recomputing exact branch, or C1·g + C2·h from ``exact.backward_cost(r)`` (g gradient
    evaluations, h HVPs) for any other unrolled exact estimator (e.g. ``Binomial``, ``Checkpointed``)."""
    r = _check_steps(r)
    C1, C2 = _check_pos("C1", C1), _check_pos("C2", C2)
    if exact is None:
        return C1 * (r + 1), (C1 * (r - 1) / 2 + C2) * r
    with jax.ensure_compile_time_eval():  # static counts, also when called under jit
        back = exact.backward_cost(r)
        return C1 * (r + 1), C1 * float(back.grad_evals) + C2 * float(back.hvps)


def expected_time(q, D2: float, V2: float, C_det: float, C_rnd: float, eps: float = 0.0):
    """Eq. 19 (up to a constant factor): ((1/q − 1) D² + V²)^{2/(1−2ε)} (C_det + C_rnd q), q ∈ (0, 1]."""
    D2, V2 = _check_nonneg("D2", D2), _check_nonneg("V2", V2)
    C_det, C_rnd, eps = _check_pos("C_det", C_det), _check_pos("C_rnd", C_rnd), _check_eps(eps)
    qa = np.asarray(q, dtype=float)
    if np.any(~(qa > 0)) or np.any(qa > 1):
        raise ValueError(f"q must be in (0, 1]; got {q!r}")
    return ((1.0 / qa - 1.0) * D2 + V2) ** (2.0 / (1.0 - 2.0 * eps)) * (C_det + C_rnd * qa)


def condition_20(D2: float, V2: float, C_det: float, C_rnd: float, eps: float = 0.0) -> bool:
    """True when UFOM with some q < 1 beats the exact estimator: D² < C_rnd V² (1−2ε) / (2 (C_det + C_rnd))."""
    D2, V2 = _check_nonneg("D2", D2), _check_nonneg("V2", V2)
    C_det, C_rnd, eps = _check_pos("C_det", C_det), _check_pos("C_rnd", C_rnd), _check_eps(eps)
    return bool(D2 * 2.0 / (1.0 - 2.0 * eps) * (C_det + C_rnd) < C_rnd * V2)


def _q_star(D2, V2, C_det, C_rnd, eps, xp):
    p = 2.0 / (1.0 - 2.0 * eps)
    holds = D2 * p * (C_det + C_rnd) < C_rnd * V2
    a = xp.where(holds, C_rnd * (V2 - D2), 1.0)  # a > 0 whenever (20) holds
    b = (1.0 - p) * D2 * C_rnd  # (2ε+1)/(2ε−1) = 1 − p < 0: no cancellation in −b + √·
    c = -p * D2 * C_det
    root = (-b + xp.sqrt(xp.maximum(b * b - 4.0 * a * c, 0.0))) / (2.0 * a)
    return xp.where(holds, xp.clip(root, 0.0, 1.0), 1.0)


def q_star_array(D2, V2, C_det, C_rnd, eps=0.0):
    """jit-traceable q* (no validation): the root in [0, 1) of eq. 21 when (20) holds, else 1."""
    return _q_star(D2, V2, C_det, C_rnd, eps, jnp)


def q_star(D2: float, V2: float, C_det: float, C_rnd: float, eps: float = 0.0) -> float:
    """Optimal q (eq. 21) minimising the expected time (19); 1 when condition (20) fails."""
    D2, V2 = _check_nonneg("D2", D2), _check_nonneg("V2", V2)
    C_det, C_rnd, eps = _check_pos("C_det", C_det), _check_pos("C_rnd", C_rnd), _check_eps(eps)
    return float(_q_star(D2, V2, C_det, C_rnd, eps, np))


def bias_variance(g_fo, g_exact) -> Tuple[float, float]:
    """Sample estimates (D², V²) = (mean_n ‖G_FO,n − G_exact,n‖², mean_n ‖G_exact,n‖²) of eq. 14 and 16
    at one θ; the pytrees carry the samples (tasks) on axis 0. Take the max over θ for the sup."""
    lf, le = jax.tree_util.tree_leaves(g_fo), jax.tree_util.tree_leaves(g_exact)
    if not le or [x.shape for x in lf] != [x.shape for x in le]:
        raise ValueError("g_fo and g_exact must be pytrees of the same structure and shapes, samples on axis 0")
    n = np.shape(le[0])[0] if np.ndim(le[0]) else 0
    if n < 1:
        raise ValueError("g_fo/g_exact must hold at least one sample on axis 0")
    sq = lambda leaves: sum(np.sum(np.reshape(np.asarray(x, float) ** 2, (n, -1)), axis=1) for x in leaves)
    d = sq([np.asarray(a) - np.asarray(b) for a, b in zip(lf, le)])
    return float(np.mean(d)), float(np.mean(sq(le)))


def _median_seconds(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def measure_unit_costs(problem, theta, task, repeats: int = 21) -> Tuple[float, float]:
    """(C1, C2) in seconds on the user's problem: the median over ``repeats`` timed calls of the jitted
    gradient ∂L_in/∂φ, and of the jitted HVP pair [(∂²L_in/∂θ∂φ)ᵀb, (∂²L_in/∂φ²)ᵀb] (Proposition 1),
    both at φ_0 = V(θ, T)."""
    if not is_int(repeats) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1; got {repeats!r}")
    phi = problem.init(theta, task)
    # the gradient and the HVP pair as the estimators evaluate them (problem.inner_grad/inner_hvp)
    g = jax.jit(problem.inner_grad)
    b = problem.inner_grad(theta, phi, task)
    hvp = jax.jit(lambda theta, phi, task, b: problem.inner_hvp(theta, phi, b, task, mixed=True))

    return _median_seconds(g, (theta, phi, task), repeats), _median_seconds(hvp, (theta, phi, task, b), repeats)
