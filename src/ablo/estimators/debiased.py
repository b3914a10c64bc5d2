"""The unbiased first-order method, UFOM (Likhosherstov et al. 2021 Alg. 4, eq. 12-13):

    G_UFO = G_FO + (ξ/q)(G_exact − G_FO),   ξ ~ Bernoulli(q),   E_ξ[G_UFO] = G_exact.

``Debiased`` applies the same construction to any cheap estimator in place of G_FO (K-RMD,
implicit differentiation, ...): G = G_cheap + (ξ/q)(G_exact − G_cheap), again unbiased for the
exact hypergradient, at cheap's cost plus ξ times exact's (no forward pass is shared).

The exact branch is any unrolled exact estimator and shares the forward pass with FOM:
``Recompute`` (1 state), ``Binomial(s)`` (s states), ``Checkpointed(M)`` (≈ M + r/M states) or
``Reverse`` (r states; allowed, but it gives up the memory UFOM exists to save). Expected cost
(Proposition 1 generalised): C_det + q·C_rnd with C_det = r + 1 gradient evaluations (FOM) and
C_rnd = the exact branch's own ``backward_cost(r)`` (for ``Recompute`` r(r−1)/2 gradient
evaluations and r HVPs, Prop. 1 verbatim; for a two-level branch ≤ r gradient evaluations and r
HVPs). ``expected_cost(r)`` returns it; the cost record reports the counts of the branch taken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax

from ..checks import check_number
from ..cost import cost, expected
from .base import Estimator, TwoPass, branch, v_jvps, with_finite_flag
from .first_order import first_order
from .unrolled import ExactUnrolled, Recompute, Truncated


def check_q(q) -> None:
    """ValueError unless q ∈ (0, 1]; q may be an array (all values checked) or traced (unchecked)."""
    check_number("q (probability of the exact branch)", q, 0, 1, lo_open=True, hi_open=False,
                 hint=". q = 1 is the exact estimator; use FOM for q = 0.")


def check_exact(exact) -> None:
    """ValueError unless ``exact`` is an exact unrolled estimator (Recompute, Checkpointed, Binomial, Reverse)."""
    if not isinstance(exact, ExactUnrolled):
        raise ValueError(f"exact must be an unrolled exact estimator (Recompute(), Binomial(s), Checkpointed(M) "
                         f"or Reverse()); got {exact!r}")


def ufom_step(problem, theta, task, exact: ExactUnrolled, q, key):
    """One draw of eq. 12-13 for a (possibly traced) q. Returns (G_UFO, G_FO, G_exact or G_FO,
    ξ, Cost): the last two let adaptive schemes update their statistics (eq. 23-24)."""
    s_r, aux = exact.forward(problem, theta, task)
    return ufom_backward(problem, theta, task, exact, q, key, s_r, aux)


def ufom_backward(problem, theta, task, exact: ExactUnrolled, q, key, s_r, aux):
    """:func:`ufom_step` after the exact branch's forward half (s_r, aux). The exact backward half
    runs with :func:`~ablo.estimators.base.branch`: only when ξ = 1, under ``vmap`` too."""
    g_fo, (b_theta, b_s) = first_order(problem, theta, task, s_r)
    xi = jax.random.bernoulli(key, q)
    r = problem.steps
    c_ex = exact.backward_cost(r)

    def exact_branch(args):
        theta, task, aux, b_theta, b_s, g_fo, q = args
        g_ex = exact.backward(problem, theta, task, aux, b_theta, b_s)
        return optax.tree.cast_like(optax.tree.add(g_fo, optax.tree.scale(1.0 / q, optax.tree.sub(g_ex, g_fo))), g_fo), g_ex  # 1/q may be f64

    g, g_ex = branch(xi, exact_branch, lambda args: (args[5], args[5]), (theta, task, aux, b_theta, b_s, g_fo, q))
    x = xi.astype(jnp.float32)
    # FOM's r + 1 gradients and V-JVP always; the exact backward's counts only when ξ = 1.
    # The forward of the exact branch (checkpoints) is held either way.
    c = cost(grad_evals=r + 1 + x * c_ex.grad_evals, hvps=x * c_ex.hvps,
             jvps=(1 + x * c_ex.jvps) * v_jvps(problem, theta, task), states=c_ex.states)
    return g, g_fo, g_ex, xi, with_finite_flag(g, c, s_r)


@dataclass(frozen=True)
class UFOM(TwoPass):
    """UFOM with a fixed q ∈ (0, 1] (Likhosherstov et al. 2021 Alg. 4). q may be a traced array (a sweep over q
    compiles once).

    G_UFO = G_FO + (ξ/q)(G_exact − G_FO) with ξ ~ Bernoulli(q): E[G_UFO] = G_exact, at the expected
    cost of FOM plus q times the exact branch's backward pass.

    Args:
        q: the probability q ∈ (0, 1] of computing the exact branch (may be a traced array).
        exact: the exact estimator of the branch: ``Recompute`` (default, O(1) memory),
            ``Reverse``, ``Checkpointed`` or ``Binomial``.

    Example:
        ```python
        est = ablo.UFOM(q=0.2, exact=ablo.Checkpointed(M=8))
        g, state, cost = ablo.hypergradient(problem, est, theta, task, key=jax.random.PRNGKey(1))
        ```
    """

    q: float = 0.1
    exact: ExactUnrolled = field(default_factory=Recompute)
    name: ClassVar[str] = "ufom"
    random_branch: ClassVar[bool] = True
    needs_key: ClassVar[bool] = True
    traced: ClassVar[tuple] = ("q",)

    def __post_init__(self):
        check_q(self.q)
        check_exact(self.exact)

    def check(self, problem):
        self.exact.check(problem)

    def describe_state(self, state):
        return {"q": float(self.q)}

    def forward_pass(self, problem, theta, task, state, key):
        """The exact branch's forward half, shared with FOM."""
        return self.exact.forward(problem, theta, task)

    def backward_pass(self, problem, theta, task, state, key, s_r, aux):
        """One draw of eq. 12-13: G_FO + (ξ/q)(G_exact − G_FO), ξ ~ Bernoulli(q)."""
        g, _, _, _, c = ufom_backward(problem, theta, task, self.exact, self.q, key, s_r, aux)
        return g, state, c

    def expected_cost(self, r):
        """FOM's r + 1 gradient evaluations and JVP, plus q times the exact branch's backward half."""
        return ufom_expected_cost(self.exact, r, self.q)


def ufom_expected_cost(exact: ExactUnrolled, r: int, q):
    """C_det + q C_rnd (Likhosherstov et al. 2021 Prop. 1) with C_rnd = ``exact.backward_cost(r)``."""
    return expected(cost(grad_evals=r + 1, jvps=1, states=1), exact.backward_cost(r), q)


def check_estimator(name: str, est) -> None:
    """ValueError naming ``name`` unless ``est`` is an estimator."""
    if not isinstance(est, Estimator):
        raise ValueError(f"{name} must be an estimator (e.g. Truncated(K=5), Recompute()); got {est!r}")


def debiased_step(problem, theta, task, cheap: Estimator, cheap_state, exact: Estimator, q, key):
    """One draw of G_cheap + (ξ/q)(G_exact − G_cheap) for a (possibly traced) q. Returns
    (G, G_cheap, G_exact or G_cheap, ξ, cheap's new state, Cost). ``exact`` is run from a fresh
    state (it must be stateless, as all exact estimators are) and only when ξ = 1."""
    s_r, residuals = cheap.forward_pass(problem, theta, task, cheap_state, jax.random.split(key, 3)[0])
    return debiased_backward(problem, theta, task, cheap, cheap_state, exact, q, key, s_r, residuals)


def debiased_backward(problem, theta, task, cheap: Estimator, cheap_state, exact: Estimator, q, key, s_r, residuals):
    """:func:`debiased_step` after the cheap estimator's forward pass; the exact estimator runs
    whole with :func:`~ablo.estimators.base.branch`, only when ξ = 1 (under ``vmap`` too)."""
    k_cheap, k_xi, k_exact = jax.random.split(key, 3)
    g_ch, cheap_state, c = cheap.backward_pass(problem, theta, task, cheap_state, k_cheap, s_r, residuals)
    xi = jax.random.bernoulli(k_xi, q)

    def exact_branch(args):
        theta, task, g_ch, q, k_exact = args
        g_ex, _, c_ex = exact.estimate(problem, theta, task, exact.init(problem, theta, task), k_exact)
        return (optax.tree.cast_like(optax.tree.add(g_ch, optax.tree.scale(1.0 / q, optax.tree.sub(g_ex, g_ch))), g_ch),
                optax.tree.cast_like(g_ex, g_ch), c_ex)

    def cheap_branch(args):
        _, _, c_ex = jax.eval_shape(exact_branch, args)
        return args[2], args[2], jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), c_ex)

    g, g_ex, c_ex = branch(xi, exact_branch, cheap_branch, (theta, task, g_ch, q, k_exact))
    return g, g_ch, g_ex, xi, cheap_state, with_finite_flag(g, c + c_ex)


@dataclass(frozen=True)
class Debiased(TwoPass):
    """Any cheap estimator debiased by an exact one with probability q (beyond Likhosherstov et al. 2021: its
    Alg. 4 with G_FO replaced by G_cheap). E[G] = E[G_exact]; expected cost = cheap's + q·exact's.
    The state is the cheap estimator's state (e.g. an AID warm start). q may be traced.

    Args:
        cheap: the cheap, biased estimator (default ``Truncated(K=1)``; e.g. ``ablo.aid_cg()``).
        q: the probability q ∈ (0, 1] of computing the exact estimate.
        exact: the exact estimator (default ``Recompute``).

    Example:
        ```python
        est = ablo.Debiased(cheap=ablo.aid_cg(), q=0.1)   # or ablo.estimators.get("debiased", cheap="aid-cg")
        ```
    """

    cheap: Estimator = field(default_factory=lambda: Truncated(K=1))
    q: float = 0.1
    exact: Estimator = field(default_factory=Recompute)
    name: ClassVar[str] = "debiased"
    random_branch: ClassVar[bool] = True
    needs_key: ClassVar[bool] = True
    traced: ClassVar[tuple] = ("q",)

    def __post_init__(self):
        check_q(self.q)
        check_estimator("cheap", self.cheap)
        check_estimator("exact", self.exact)

    def check(self, problem):
        self.cheap.check(problem)
        self.exact.check(problem)

    def init(self, problem, theta, task):
        """The cheap estimator's state."""
        return self.cheap.init(problem, theta, task)

    def describe_state(self, state):
        return {"q": float(self.q), **self.cheap.describe_state(state)}

    def forward_pass(self, problem, theta, task, state, key):
        """The cheap estimator's forward pass."""
        return self.cheap.forward_pass(problem, theta, task, state, jax.random.split(key, 3)[0])

    def backward_pass(self, problem, theta, task, state, key, s_r, residuals):
        """One draw of G_cheap + (ξ/q)(G_exact − G_cheap); the exact branch runs only when ξ = 1."""
        g, _, _, _, state, c = debiased_backward(problem, theta, task, self.cheap, state, self.exact, self.q, key,
                                                 s_r, residuals)
        return g, state, c

    def expected_cost(self, r):
        """cheap's expected cost plus q times a whole exact run (nothing is shared)."""
        return expected(self.cheap.expected_cost(r), self.exact.expected_cost(r), self.q)


def resolve(est, **options) -> Estimator:
    """An estimator given as itself or as a registered name (built with ``options``)."""
    if isinstance(est, str):
        from . import get

        return get(est, **options)
    if options:
        raise ValueError(f"options {sorted(options)} apply only when the estimator is given by name; got {est!r}")
    return est


def make_debiased(cheap="truncated", q=0.1, exact="recompute", **cheap_options) -> Debiased:
    """Registry factory: ``cheap``/``exact`` may be registered names; other options (e.g. K) build cheap."""
    return Debiased(cheap=resolve(cheap, **cheap_options), q=q, exact=resolve(exact))
