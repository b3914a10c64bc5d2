"""Zeroth-order hypergradients: antithetic evolution strategies and Persistent ES.

**ES** (Gaussian smoothing; Nesterov & Spokoiny 2017, Salimans et al. 2017, Maheswaranathan et al.
2019). With f(θ) = M^(r)(θ; T) and f_σ(θ) = E_ε f(θ + σε), ε ~ N(0, I),

    Ĝ = 1/(2Nσ) Σ_{k=1}^N [f(θ + σε_k) − f(θ − σε_k)] ε_k,      E Ĝ = ∇f_σ(θ)  (Stein's lemma),

unbiased for the smoothed objective; ∇f_σ = ∇f + (σ²/2)∇(Δf) + O(σ⁴) for smooth f, so the exact
hypergradient is the limit σ → 0. The inner loop runs forward only (2N runs of r steps, one
state held): O(1) memory in r and in N. As σ → 0 each pair gives (∇f·ε)ε, whose trace variance
is E[(∇f·ε)²‖ε‖²] − ‖∇f‖² = (d + 1)‖∇f‖² with d = dim θ, so

    E‖Ĝ − ∇f_σ‖² ≈ (d + 1)‖∇f‖² / N        (``es_variance``),

linear in dim θ: the reason Likhosherstov et al. 2021 (§2) set ES aside for large θ.

**PES** (Persistent ES, Vicol, Metz & Sohl-Dickstein 2021). The r inner steps are cut into windows
of K; each call runs one window for N antithetic particle pairs, each with its own fresh
perturbation ε_w ~ N(0, σ²I) (θ ± ε_w for the + and − particle), carries the particles' states
and the perturbation sums ξ = Σ_{v ≤ w} ε_v from call to call, and returns

    Ĝ_w = 1/(2Nσ²) Σ_i ξ_i [L_out(θ + ε_{i,w}, φ⁺_{i,t_w}) − L_out(θ − ε_{i,w}, φ⁻_{i,t_w})],

unbiased for ∇_θ E L_out at the window's end t_w = wK, the whole history from φ_0 = V(θ + ε_1)
smoothed (σ → 0: the exact hypergradient of the t_w-step problem). Truncated reverse mode
(K-RMD over the window) drops the history instead, and is biased. After the window that reaches r
the particles restart from V. K = r (default) is ES with σ-scaled noise, one window per call.
Memory: the 2N particles' states, whatever r. The variance grows with the number of windows w
(ξ has variance wσ²) and, as ES's, with dim θ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Optional

import jax
import jax.flatten_util
import jax.numpy as jnp

from ..checks import check_number, is_int
from ..cost import cost
from .base import Estimator, with_finite_flag


def check_pairs(pairs) -> None:
    """ValueError unless ``pairs`` is an integer >= 1."""
    if not is_int(pairs) or pairs < 1:
        raise ValueError(f"pairs (antithetic pairs per estimate) must be an integer >= 1; got {pairs!r}")


def es_variance(dim_theta: int, grad_sq_norm, pairs: int):
    """E‖Ĝ − ∇f_σ‖² of antithetic ES as σ → 0: (dim θ + 1)‖∇f‖² / N."""
    return (dim_theta + 1) * grad_sq_norm / pairs


@dataclass(frozen=True)
class ES(Estimator):
    """Antithetic Gaussian smoothing over θ with N = ``pairs`` pairs at scale ``sigma`` (may be
    traced): unbiased for ∇f_σ, the exact hypergradient as σ → 0; 2N forward runs, O(1) memory."""

    sigma: float = 1e-3
    pairs: int = 8
    name: ClassVar[str] = "es"
    not_in_solve: ClassVar[str] = ("its estimate runs the inner loop itself (it is not split into the forward and "
                                  "backward passes solve reuses), so solve would pay the forward run twice; use "
                                  "ablo.hypergradient or ablo.hypergradient_batch")
    needs_key: ClassVar[bool] = True
    traced: ClassVar[tuple] = ("sigma",)

    def __post_init__(self):
        check_number("sigma (smoothing scale)", self.sigma, 0, float("inf"), lo_open=True)
        check_pairs(self.pairs)

    def estimate(self, problem, theta, task, state, key):
        """1/(2Nσ) Σ_k [f(θ + σε_k) − f(θ − σε_k)] ε_k, the pairs in a ``lax.scan`` (one run held)."""
        flat, unravel = jax.flatten_util.ravel_pytree(theta)

        def f(v):
            th = unravel(v)
            return problem.outer_loss(th, problem.optimizer.params(problem.run(th, task)), task)

        def pair(acc, k):
            eps = jax.random.normal(k, flat.shape, flat.dtype)
            return acc + (f(flat + self.sigma * eps) - f(flat - self.sigma * eps)) * eps, None

        acc, _ = jax.lax.scan(pair, jnp.zeros_like(flat), jax.random.split(key, self.pairs))
        g = unravel((acc / (2 * self.pairs * self.sigma)).astype(flat.dtype))
        return g, state, with_finite_flag(g, self.expected_cost(problem.steps))

    def expected_cost(self, r):
        """2N·r inner gradient evaluations (the 2N outer losses are values, not gradients); one state."""
        return cost(grad_evals=2 * self.pairs * r, states=1)

    def variance(self, dim_theta: int, grad_sq_norm):
        """``es_variance`` for this N."""
        return es_variance(dim_theta, grad_sq_norm, self.pairs)


class PESState(NamedTuple):
    """The + and − particles' inner states (N stacked), their perturbation sums ξ (N × dim θ) and
    the step t at which the next window starts (0: restart from V)."""

    plus: Any
    minus: Any
    xi: jax.Array
    t: jax.Array


@dataclass(frozen=True)
class PES(Estimator):
    """Persistent ES over windows of ``K`` inner steps (default r: one window, plain ES), N =
    ``pairs`` antithetic particle pairs, per-window noise N(0, σ²I) (Vicol et al. 2021). Each call
    advances every particle one window and returns the estimate for the window's end; K must divide r."""

    sigma: float = 1e-3
    pairs: int = 8
    K: Optional[int] = None
    name: ClassVar[str] = "pes"
    needs_key: ClassVar[bool] = True
    traced: ClassVar[tuple] = ("sigma",)
    not_in_solve: ClassVar[str] = ("its particles and perturbation sums are carried from call to call (one window per "
                                  "call); use the explicit API with state, or es for a whole run per call")

    def __post_init__(self):
        check_number("sigma (smoothing scale)", self.sigma, 0, float("inf"), lo_open=True)
        check_pairs(self.pairs)
        if self.K is not None and (not is_int(self.K) or self.K < 1):
            raise ValueError(f"K (window length) must be an integer >= 1; got {self.K!r}")

    def window(self, r: int) -> int:
        """The window length K for r inner steps (r when K is None); ValueError unless K divides r."""
        K = r if self.K is None else int(self.K)
        if r % K:
            raise ValueError(f"K (window length) must divide r = {r} so every window ends on a step; got K={K}")
        return K

    def check(self, problem):
        self.window(problem.steps)

    def init(self, problem, theta, task):
        """Particles at V(θ) (replaced at the first window), ξ = 0, t = 0."""
        s0 = problem.initial_state(theta, task)
        stack = jax.tree.map(lambda x: jnp.broadcast_to(x, (self.pairs,) + jnp.shape(x)), s0)
        n = jax.flatten_util.ravel_pytree(theta)[0].shape[0]
        dt = jax.flatten_util.ravel_pytree(theta)[0].dtype
        return PESState(stack, stack, jnp.zeros((self.pairs, n), dt), jnp.zeros((), jnp.int32))

    def estimate(self, problem, theta, task, state, key):
        """One window for every particle; the PES estimate at its end; the particles carried on."""
        r, K = problem.steps, self.window(problem.steps)
        flat, unravel = jax.flatten_util.ravel_pytree(theta)
        eps = self.sigma * jax.random.normal(key, (self.pairs,) + flat.shape, flat.dtype)
        restart = state.t == 0

        def particle(v, s, t):
            th = unravel(v)
            s = jax.tree_util.tree_map(lambda a, b: jnp.where(restart, a, b), problem.initial_state(th, task), s)
            s = problem.run(th, task, t, t + K, s)
            return s, problem.outer_loss(th, problem.optimizer.params(s), task)

        run = jax.vmap(particle, in_axes=(0, 0, None))
        plus, l_plus = run(flat + eps, state.plus, state.t)
        minus, l_minus = run(flat - eps, state.minus, state.t)
        xi = jnp.where(restart, 0.0, state.xi) + eps
        g = unravel(((l_plus - l_minus) @ xi / (2 * self.pairs * self.sigma ** 2)).astype(flat.dtype))
        t = jnp.where(state.t + K >= r, 0, state.t + K).astype(jnp.int32)
        c = cost(grad_evals=2 * self.pairs * K, states=2 * self.pairs)
        return g, PESState(plus, minus, xi, t), with_finite_flag(g, c)

    def expected_cost(self, r):
        """2N·K inner gradient evaluations per call (one window); 2N states held."""
        K = self.window(r)
        return cost(grad_evals=2 * self.pairs * K, states=2 * self.pairs)

    def describe_state(self, state):
        return {"t": int(state.t)}
