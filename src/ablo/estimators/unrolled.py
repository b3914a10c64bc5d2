"""Exact and truncated hypergradients through the unrolled inner loop (Likhosherstov et al. 2021 Alg. 2 and
§3; Shaban et al. 2019 eq. 6-8 and Table 1).

All reverse-mode members share one backward recursion (``base.step_vjp``) and differ only in
how they get the state s_{j−1} that step j's VJP needs:

=====================  ===================  ==========================  ================
estimator              s_{j−1} from          gradient evaluations         states held
=====================  ===================  ==========================  ================
``Reverse``            stored array          r + 1                        r
``Recompute``          re-run from s_0       r + 1 + r(r−1)/2             1
``Checkpointed(M)``    segment buffer        r + 1 + (m−1)(c−1) ≤ 2r + 1  ≈ M + r/M (c = ⌈r/M⌉)
``Truncated(K)``       stored last K         r + 1                        K
``Binomial(s)``        revolve schedule      F(r, s) + 2 (``revolve``)    s
=====================  ===================  ==========================  ================

Each does r HVPs (K for ``Truncated``) and one JVP of V. ``Forward`` is forward mode
(eq. 7): it pushes dim θ tangents through every step and holds a dim θ × dim φ Jacobian.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.flatten_util
import jax.numpy as jnp
import optax
import numpy as np

from ..cost import cost
from .base import (TwoPass, charge_v, finish, outer_cotangents, reverse_over, run_storing, step_vjp, v_jvps, with_finite_flag)
from ..checks import is_int


class ExactUnrolled(TwoPass):
    """An exact reverse-mode estimator split into a forward and a backward half, so that
    UFOM can share the forward pass with FOM (Likhosherstov et al. 2021 Alg. 4)."""

    def forward(self, problem, theta, task):
        """-> (s_r, aux for backward, gradient evaluations spent)."""
        raise NotImplementedError

    def backward(self, problem, theta, task, aux, b_theta, b_s):
        """-> exact hypergradient."""
        raise NotImplementedError

    def backward_cost(self, r: int):
        """Cost of the backward half (static: it depends on r only)."""
        raise NotImplementedError

    def exact_at(self, steps):
        return True

    def expected_cost(self, r):
        """The forward half's r steps and the outer gradient, plus ``backward_cost(r)``."""
        c = self.backward_cost(r)
        return c._replace(grad_evals=c.grad_evals + r + 1)

    def forward_pass(self, problem, theta, task, state, key):
        """The forward half."""
        return self.forward(problem, theta, task)

    def backward_pass(self, problem, theta, task, state, key, s_r, aux):
        """Outer gradient, backward half: the exact hypergradient and its Cost."""
        b_theta, b_s = outer_cotangents(problem, theta, s_r, task)
        g = self.backward(problem, theta, task, aux, b_theta, b_s)
        c = self.expected_cost(problem.steps)
        return g, state, with_finite_flag(g, charge_v(c, problem, theta, task), s_r)


@dataclass(frozen=True)
class Reverse(ExactUnrolled):
    """RMD: store s_0..s_{r−1}, then sweep back (Likhosherstov et al. 2021 Alg. 2; Shaban et al. 2019 eq. 6).
    Time O(r), memory O(r).

    ``store="states"`` (default) keeps the r states only and recomputes each step's gradient
    inside its mixed-mode VJP (``base.step_vjp``); ``store="residuals"`` is plain ``jax.vjp``
    through a ``lax.scan`` of the steps, which keeps every step's residuals (the activations of
    the inner loss and of its gradient). Measured (``benchmarks/bench_estimators.py``, float32,
    temp memory from XLA, CPU time against ``jax.grad`` through the scan in the same process;
    docs/benchmarks.md):

    =========================================  ===============  =====================  ================
    problem                                    jax.grad/scan    store="states"         "residuals"
    =========================================  ===============  =====================  ================
    5000×784 linear (hypercleaning), r=100     42.7 MiB         3.9 MiB, 0.56×         42.7 MiB, 0.78×
    MLP 784-512-512-10 tanh, 1000 ex., r=50    1154 MiB         148 MiB, 1.03×         1154 MiB, 0.99×
    =========================================  ===============  =====================  ================

    "states" redoes each step's forward pass in its backward sweep (XLA counts 1.17× the flops on
    both problems) for 8-11× less memory, r states being its floor; on the linear model it is
    still faster than the standard form because its step's gradient and HVP go through the
    problem's product rewrite (``ablo.products``; 1.10× with ``rewrite_products=False``).
    "residuals" is the standard form's program with a rewritten step gradient.

    Args:
        store: "states" (default) or "residuals", what the forward pass keeps (see above).

    Example:
        ```python
        g, state, cost = ablo.hypergradient(problem, ablo.Reverse(), theta, task)
        ```
    """

    store: str = "states"
    name: ClassVar[str] = "reverse"

    def __post_init__(self):
        if self.store not in ("states", "residuals"):
            raise ValueError(f"store must be 'states' or 'residuals'; got {self.store!r}")

    def forward(self, problem, theta, task):
        if self.store == "residuals":
            return jax.vjp(lambda th: problem.run(th, task), theta)
        return run_storing(problem, theta, task, problem.initial_state(theta, task), 0, problem.steps)

    def backward(self, problem, theta, task, aux, b_theta, b_s):
        if self.store == "residuals":
            (d_theta,) = aux(b_s)
            return optax.tree.add(b_theta, d_theta)
        b_theta, b_s = reverse_over(problem, theta, task, aux, 0, b_theta, b_s)
        return finish(problem, theta, task, b_theta, b_s)

    def backward_cost(self, r):
        return cost(hvps=r, jvps=1, states=r)


@dataclass(frozen=True)
class Recompute(ExactUnrolled):
    """Exact with O(1) memory: each s_{j−1} is recomputed from s_0 in the backward pass
    (Likhosherstov et al. 2021 §3; Alg. 4 with q = 1). Time O(r²): r(r−1)/2 extra gradient evaluations.

    Takes no parameters.

    Example:
        ```python
        g, state, cost = ablo.hypergradient(problem, ablo.Recompute(), theta, task)
        ```
    """

    name: ClassVar[str] = "recompute"

    def forward(self, problem, theta, task):
        return problem.run(theta, task), None

    def backward(self, problem, theta, task, aux, b_theta, b_s):
        r = problem.steps

        def body(i, carry):
            t = r - 1 - i
            s_prev = problem.run(theta, task, 0, t)
            return step_vjp(problem, theta, s_prev, t, task, *carry)

        b_theta, b_s = jax.lax.fori_loop(0, r, body, (b_theta, b_s))
        return finish(problem, theta, task, b_theta, b_s)

    def backward_cost(self, r):
        return cost(grad_evals=r * (r - 1) // 2, hvps=r, jvps=1, states=1)


@dataclass(frozen=True)
class Checkpointed(ExactUnrolled):
    """Exact, two-level checkpointing (Shaban et al. 2019 Table 1, "checkpointing every √r steps"):
    the loop is cut into m segments of c = ⌈r/M⌉ steps (the last one L = r − (m−1)c ≤ c steps).
    The forward pass keeps the m − 1 states at the starts of the full segments and stores the
    last segment's L states; the backward pass sweeps the last segment back, then for each
    earlier segment recomputes its c − 1 inner states from its checkpoint into a buffer and
    sweeps the buffer back.

    Cost: r + 1 + (m − 1)(c − 1) ≤ 2r + 1 gradient evaluations, r HVPs, one JVP of V;
    memory m − 1 + max(L, c − 1) ≈ M + r/M states. ``M=None`` takes ⌈√r⌉ (≈ 2√r states).
    Everything runs in ``lax.scan``, so compile time does not depend on r.

    Args:
        M: the number of checkpoints (an integer >= 1), or None for ⌈√r⌉.

    Example:
        ```python
        g, state, cost = ablo.hypergradient(problem, ablo.Checkpointed(M=8), theta, task)
        ```
    """

    M: int | None = None
    name: ClassVar[str] = "checkpointed"

    def __post_init__(self):
        if self.M is not None and (not is_int(self.M) or self.M < 1):
            raise ValueError(f"M (number of checkpoints) must be an integer >= 1; got {self.M!r}")

    def layout(self, r: int):
        """(segments m, segment length c); the last segment has r − (m − 1)c steps."""
        M = self.M if self.M is not None else max(1, int(np.ceil(np.sqrt(r))))
        c = -(-r // min(M, r))
        return -(-r // c), c

    def forward(self, problem, theta, task):
        r = problem.steps
        m, c = self.layout(r)

        def segment(s, i):
            return problem.run(theta, task, i * c, (i + 1) * c, s), s

        s_top, checkpoints = jax.lax.scan(segment, problem.initial_state(theta, task), jnp.arange(m - 1))
        s_r, top = run_storing(problem, theta, task, s_top, (m - 1) * c, r - (m - 1) * c)
        return s_r, (checkpoints, top)

    def backward(self, problem, theta, task, aux, b_theta, b_s):
        r = problem.steps
        m, c = self.layout(r)
        checkpoints, top = aux
        carry = reverse_over(problem, theta, task, top, (m - 1) * c, b_theta, b_s)

        def segment(carry, x):
            s_k, start = x

            def body(s, t):
                s = problem.step(theta, s, t, task)
                return s, s

            _, buffer = jax.lax.scan(body, s_k, start + jnp.arange(c - 1))  # s_{start+1..start+c−1}
            carry = reverse_over(problem, theta, task, buffer, start + 1, *carry)
            return step_vjp(problem, theta, s_k, start, task, *carry), None

        (b_theta, b_s), _ = jax.lax.scan(segment, carry, (checkpoints, c * jnp.arange(m - 1)), reverse=True)
        return finish(problem, theta, task, b_theta, b_s)

    def backward_cost(self, r):
        m, c = self.layout(r)
        return cost(grad_evals=(m - 1) * (c - 1), hvps=r, jvps=1, states=m - 1 + max(r - (m - 1) * c, c - 1))


@dataclass(frozen=True)
class Truncated(TwoPass):
    """K-step truncated reverse mode, K-RMD (Shaban et al. 2019 eq. 8): back-propagate through the last
    K steps only and close with V's Jacobian at the truncation point, so K = r is exact and
    K = 0 is FOM (with V constant this is eq. 8 verbatim). Memory O(K), time O(r + K).

    Args:
        K: the number of last inner steps back-propagated through, an integer in [0, r] (r: exact).

    Example:
        ```python
        g, state, cost = ablo.hypergradient(problem, ablo.Truncated(K=5), theta, task)
        ```
    """

    K: int = 1
    name: ClassVar[str] = "truncated"

    def check(self, problem):
        if not is_int(self.K) or not 0 <= self.K <= problem.steps:
            raise ValueError(f"K (truncation depth) must be an integer in [0, r] = [0, {problem.steps}]; got {self.K!r}")

    def exact_at(self, steps):
        return self.K >= steps

    def forward_pass(self, problem, theta, task, state, key):
        """r − K steps, then K steps storing their inputs."""
        r, K = problem.steps, int(self.K)
        return run_storing(problem, theta, task, problem.run(theta, task, 0, r - K), r - K, K)

    def backward_pass(self, problem, theta, task, state, key, s_r, states):
        """K-RMD of eq. 8: reverse through the last K steps, close with V's Jacobian."""
        r, K = problem.steps, int(self.K)
        b_theta, b_s = outer_cotangents(problem, theta, s_r, task)
        if K > 0:
            b_theta, b_s = reverse_over(problem, theta, task, states, r - K, b_theta, b_s)
        g = finish(problem, theta, task, b_theta, b_s)
        c = self.expected_cost(r)
        return g, state, with_finite_flag(g, charge_v(c, problem, theta, task), s_r)

    def expected_cost(self, r):
        return cost(grad_evals=r + 1, hvps=self.K, jvps=1, states=max(self.K, 1))


@dataclass(frozen=True)
class Forward(TwoPass):
    """Forward mode, FMD (Shaban et al. 2019 eq. 7): Z_j = Z_{j−1}A_j + B_j, the Jacobian ds_j/dθ, carried
    along the inner loop as dim θ tangents of the state (``jax.jvp`` of each step under ``vmap``
    over the directions, inside the ``lax.scan``), from Z_0 = ∂s_0/∂θ; then
    d_θ = ∂_θL_out + Z_r ∂_sL_out. No history is kept: memory is the state and its dim θ tangents
    whatever r. Cost: r + 1 gradient evaluations, (r + 1)·dim θ JVPs (one tangent pushed through
    one step; dim θ fewer when V does not depend on θ), dim θ + 1 states. Preferable when θ is
    small.

    Takes no parameters.

    Example:
        ```python
        g, state, cost = ablo.hypergradient(problem, ablo.Forward(), theta, task)
        ```
    """

    name: ClassVar[str] = "forward"

    def forward_pass(self, problem, theta, task, state, key):
        """FMD of eq. 7: (s_r, Z_r), Z carried through the loop as dim θ tangents."""
        flat, unravel = jax.flatten_util.ravel_pytree(theta)
        n = flat.shape[0]
        basis = jax.vmap(unravel)(jnp.eye(n, dtype=flat.dtype))
        # tangents of the real leaves only; integer leaves (an optax step count) ride along as aux
        leaves, treedef = jax.tree_util.tree_flatten(problem.initial_state(theta, task))
        real = [jnp.issubdtype(jnp.result_type(x), jnp.inexact) for x in leaves]
        split = lambda s: tuple(zip(*[(x, None) if k else (None, x) for x, k in zip(jax.tree_util.tree_leaves(s), real)]))
        join = lambda xs, ys: treedef.unflatten([x if k else y for x, y, k in zip(xs, ys, real)])
        push = lambda f, *primals: jax.vmap(lambda *tangents: jax.jvp(f, primals, tangents, has_aux=True),
                                            out_axes=(None, 0, None))
        s0, Z, ints = push(lambda th: split(problem.initial_state(th, task)), theta)(basis)

        def body(carry, t):
            s, Z, ints = carry
            return push(lambda th, s_: split(problem.step(th, join(s_, ints), t, task)), theta, s)(basis, Z), None

        (s_r, Z, ints), _ = jax.lax.scan(body, (s0, Z, ints), jnp.arange(problem.steps))
        return join(s_r, ints), [z for z, k in zip(Z, real) if k]

    def backward_pass(self, problem, theta, task, state, key, s_r, Z):
        """d_θ = ∂_θL_out + Z_r ∂_sL_out."""
        flat, unravel = jax.flatten_util.ravel_pytree(theta)
        n = flat.shape[0]
        real = [jnp.issubdtype(jnp.result_type(x), jnp.inexact) for x in jax.tree_util.tree_leaves(s_r)]
        b_theta, b_s = outer_cotangents(problem, theta, s_r, task)
        b_real = [b for b, k in zip(jax.tree_util.tree_leaves(b_s), real) if k]
        along = jax.vmap(lambda z: sum(jnp.vdot(b, zi) for b, zi in zip(b_real, z)))(Z)
        g = optax.tree.add(b_theta, unravel(along.astype(flat.dtype)))
        c = self.expected_cost(problem.steps, n)
        return g, state, with_finite_flag(g, c._replace(jvps=c.jvps - n * (1 - v_jvps(problem, theta, task))), s_r)

    def expected_cost(self, r, dim_theta: int = 1):
        """Counts for dim θ = ``dim_theta`` (the JVPs scale with it)."""
        return cost(grad_evals=r + 1, jvps=(r + 1) * dim_theta, states=dim_theta + 1)
