"""Adaptive UFOM (Likhosherstov et al. 2021 §4.5, eq. 22-24): UFOM whose q follows the optimal q* of eq. 21,
computed each step from running estimates of D² and V² along the SGD trajectory.

When the exact branch is drawn (ξ = 1) the statistics are updated (eq. 23-24)

    D²_sm ← β D²_sm + (1 − β) ‖G_FO − G_exact‖²,    V²_sm ← β V²_sm + (1 − β) ‖G_exact‖²,

and k_upd += 1; with ξ = 0 they are kept. The bias-corrected estimates (eq. 22, with the D²/10
modification of Likhosherstov et al. 2021 §5.2 as ``d2_scale`` = 0.1) are

    D²_k = d2_scale · D²_sm / (1 − β^k_upd),    V²_k = V²_sm / (1 − β^k_upd),

and the next step draws ξ ~ Bernoulli(q) with q = max(q*(D²_k, V²_k), q_min), or q = 1 when
condition (20) fails. Before any update (k_upd = 0) eq. 22 is 0/0: q = 1 then, so the first step
is exact and the statistics exist from step two on. The cost model defaults to Proposition 1 with
C1 = C2 = 1 (function calls) and C_rnd from the exact branch's own counts (``theory.cost_model``):
C_det = r + 1, C_rnd = ((r − 1)/2 + 1) r for ``Recompute``, C_rnd ≤ 2r for a two-level
``Checkpointed`` branch, so q* follows the branch actually used.

``cheap`` debiases another estimator instead of FOM (``Debiased`` with adaptive q): then
‖G_cheap − G_exact‖² plays the role of D², and C_det, C_rnd default to C1·(gradient evaluations)
+ C2·(HVPs) of ``cheap.expected_cost(r)`` and ``exact.expected_cost(r)``; both may be set.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from ..checks import check_number
from ..cost import batch_total, expected
from ..theory import cost_model, q_star_array
from .base import Estimator
from .debiased import check_estimator, check_exact, debiased_step, resolve, ufom_expected_cost, ufom_step
from .unrolled import Recompute


class AdaptiveState(NamedTuple):
    """Smoothed ‖G_cheap − G_exact‖², ‖G_exact‖², number of updates, the q of the last step, and the
    cheap estimator's state (``()`` for FOM)."""

    d2_sm: jax.Array
    v2_sm: jax.Array
    k_upd: jax.Array
    q: jax.Array
    cheap: Any = ()


@dataclass(frozen=True)
class AdaptiveUFOM(Estimator):
    """UFOM with q adapted online (Likhosherstov et al. 2021 eq. 22-24). Defaults: β = 0.99, q_min = 0.05,
    d2_scale = 0.1 (§5.2), ε = 0, unit costs C1 = C2 = 1. β, q_min, d2_scale and ε may be traced;
    the costs are static. See the module docstring for the update of D², V² and q.

    Args:
        beta: β ∈ (0, 1), the smoothing constant of the running D², V² estimates.
        q_min: the floor q_min ∈ (0, 1] of q.
        d2_scale: the factor applied to D² (0.1 in Likhosherstov et al. 2021 §5.2).
        eps: ε ∈ [0, 0.5], the margin of condition (20).
        C1: the unit cost of a gradient evaluation in the cost model (Proposition 1).
        C2: the unit cost of an HVP.
        C_det: the cost of the cheap branch; None derives it from C1, C2 and the counts.
        C_rnd: the cost of the exact branch; None derives it from C1, C2 and the exact
            estimator's own counts.
        exact: the exact estimator (default ``Recompute``).
        cheap: None for FOM (Adaptive UFOM proper), or another estimator to debias with an
            adaptive q.

    Example:
        ```python
        est = ablo.AdaptiveUFOM(q_min=0.05)
        state = est.init(problem, theta, task)   # carries D², V² from call to call
        g, state, cost = ablo.hypergradient(problem, est, theta, task, state=state, key=key)
        ```
    """

    beta: float = 0.99
    q_min: float = 0.05
    d2_scale: float = 0.1
    eps: float = 0.0
    C1: float = 1.0
    C2: float = 1.0
    C_det: Optional[float] = None
    C_rnd: Optional[float] = None
    exact: Estimator = field(default_factory=Recompute)
    cheap: Optional[Estimator] = None
    name: ClassVar[str] = "adaptive-ufom"
    random_branch: ClassVar[bool] = True
    needs_key: ClassVar[bool] = True
    traced: ClassVar[tuple] = ("beta", "q_min", "d2_scale", "eps")
    not_in_solve: ClassVar[str] = ("its q comes from statistics carried from call to call (eq. 22-24); use the explicit "
                                  "API (ablo.hypergradient_batch with state), or ablo.UFOM with a q you compute "
                                  "yourself (q may be traced)")

    def __post_init__(self):
        check_number("beta (smoothing constant)", self.beta, 0, 1, lo_open=True)
        check_number("q_min", self.q_min, 0, 1, lo_open=True, hi_open=False)
        check_number("d2_scale", self.d2_scale, 0, float("inf"), lo_open=True, hi_open=False)
        check_number("eps", self.eps, 0, 0.5)
        for name in ("C1", "C2", "C_det", "C_rnd"):
            v = getattr(self, name)
            if v is not None:
                check_number(name, v, 0, float("inf"), lo_open=True, hi_open=False)
        if self.cheap is None:
            check_exact(self.exact)
        else:
            check_estimator("cheap", self.cheap)
            check_estimator("exact", self.exact)

    def check(self, problem):
        self.exact.check(problem)
        if self.cheap is not None:
            self.cheap.check(problem)

    def costs(self, r: int):
        """(C_det, C_rnd): the given values, else Proposition 1's with unit costs C1, C2 and the
        exact branch's own counts (the cheap and exact estimators' expected costs with ``cheap``)."""
        if self.cheap is None:
            c_det, c_rnd = cost_model(r, self.C1, self.C2, exact=self.exact)
        else:
            weigh = lambda c: self.C1 * float(c.grad_evals) + self.C2 * float(c.hvps)
            with jax.ensure_compile_time_eval():  # static counts, also under jit
                c_det, c_rnd = weigh(self.cheap.expected_cost(r)), weigh(self.exact.expected_cost(r))
        return (c_det if self.C_det is None else self.C_det), (c_rnd if self.C_rnd is None else self.C_rnd)

    def expected_cost(self, r, q=None):
        """The expected cost of one call at exact-branch probability q (default ``q_min``, the
        floor: q itself is drawn from the running D², V² estimates, and the first call has q = 1)."""
        q = self.q_min if q is None else q
        if self.cheap is None:
            return ufom_expected_cost(self.exact, r, q)
        return expected(self.cheap.expected_cost(r), self.exact.expected_cost(r), q)

    def init(self, problem, theta, task):
        """Zero statistics, k_upd = 0 (so the first step is exact, q = 1), the cheap state."""
        z = jnp.zeros((), dtype=jnp.result_type(float))
        cheap = () if self.cheap is None else self.cheap.init(problem, theta, task)
        return AdaptiveState(z, z, jnp.zeros((), jnp.int32), jnp.ones_like(z), cheap)

    def estimates(self, state: AdaptiveState):
        """Bias-corrected (D²_k, V²_k) of eq. 22 with the d2_scale modification (0 before any update)."""
        corr = 1.0 - self.beta ** state.k_upd.astype(state.d2_sm.dtype)
        safe = jnp.where(state.k_upd > 0, corr, 1.0)
        return self.d2_scale * state.d2_sm / safe, state.v2_sm / safe

    def q_of(self, state: AdaptiveState, r: int) -> jax.Array:
        """q = max(q*, q_min), 1 when (20) fails, 1 before any update."""
        d2, v2 = self.estimates(state)
        c_det, c_rnd = self.costs(r)
        q = jnp.maximum(q_star_array(d2, v2, c_det, c_rnd, self.eps), self.q_min)
        return jnp.where(state.k_upd > 0, q, 1.0).astype(state.d2_sm.dtype)

    def update(self, state: AdaptiveState, d2, v2, xi) -> AdaptiveState:
        """Eq. 23-24 when ξ = 1; unchanged when ξ = 0."""
        dt, b = state.d2_sm.dtype, self.beta
        return state._replace(
            d2_sm=jnp.where(xi, b * state.d2_sm + (1 - b) * d2, state.d2_sm).astype(dt),
            v2_sm=jnp.where(xi, b * state.v2_sm + (1 - b) * v2, state.v2_sm).astype(dt),
            k_upd=state.k_upd + jnp.asarray(xi, jnp.int32))

    def _draw(self, problem, theta, task, cheap_state, q, key):
        """-> (G, ‖G_cheap − G_exact‖², ‖G_exact‖², ξ, cheap state, Cost); the norms are 0 when ξ = 0."""
        if self.cheap is None:
            g, g_ch, g_ex, xi, c = ufom_step(problem, theta, task, self.exact, q, key)
        else:
            g, g_ch, g_ex, xi, cheap_state, c = debiased_step(problem, theta, task, self.cheap, cheap_state,
                                                              self.exact, q, key)
        return g, optax.tree.norm(optax.tree.sub(g_ch, g_ex), squared=True), optax.tree.norm(g_ex, squared=True), xi, cheap_state, c

    def estimate(self, problem, theta, task, state, key):
        """One draw of UFOM (or Debiased) at q = max(q*, q_min) from the current statistics (eq. 21-22),
        then the statistics updated when ξ = 1 (eq. 23-24)."""
        self.check(problem)
        q = self.q_of(state, problem.steps)
        g, d2, v2, xi, cheap_state, c = self._draw(problem, theta, task, state.cheap, q, key)
        return g, self.update(state, d2, v2, xi)._replace(q=q, cheap=cheap_state), c

    def estimate_batch(self, problem, theta, tasks, state, key):
        """One q for the whole meta-batch; the statistics are then updated (eq. 23-24) once for each
        task whose ξ = 1, in task order. The tasks run under ``vmap``; the exact branch runs only
        for the tasks that drew it (``base.branch``)."""
        self.check(problem)
        q = self.q_of(state, problem.steps)
        n = jax.tree_util.tree_leaves(tasks)[0].shape[0]
        keys = jax.random.split(key, n)
        g, d2, v2, xi, cheap, c = jax.vmap(self._draw, in_axes=(None, None, 0, None, None, 0))(
            problem, theta, tasks, state.cheap, q, keys)
        new, _ = jax.lax.scan(lambda s, x: (self.update(s, *x), None), state, (d2, v2, xi))
        reduce = lambda x: x.mean(0) if jnp.issubdtype(x.dtype, jnp.inexact) else x[0]
        new = new._replace(q=q, cheap=jax.tree.map(reduce, cheap))
        return jax.tree.map(lambda x: x.mean(0), g), new, batch_total(c)

    def describe_state(self, state):
        d2, v2 = self.estimates(state)
        return {"q": float(state.q), "D2": float(d2), "V2": float(v2), "k_upd": int(state.k_upd)}


def make_adaptive(cheap=None, exact="recompute", **options) -> AdaptiveUFOM:
    """Registry factory: ``cheap``/``exact`` may be registered names; options that are not
    AdaptiveUFOM fields (e.g. K) go to the cheap estimator."""
    own = {f.name for f in fields(AdaptiveUFOM)}
    mine = {k: v for k, v in options.items() if k in own}
    rest = {k: v for k, v in options.items() if k not in own}
    if rest and cheap is None:
        raise ValueError(f"unknown options {sorted(rest)} for adaptive-ufom; valid: {sorted(own)}")
    return AdaptiveUFOM(exact=resolve(exact), cheap=None if cheap is None else resolve(cheap, **rest), **mine)
