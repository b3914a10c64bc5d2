"""Exact hypergradients by reversing the inner dynamics (Maclaurin, Duvenaud & Adams 2015, "Gradient-based
hyperparameter optimization through reversible learning").

Heavy-ball momentum (``ablo.momentum``; ``ablo.gd`` is β = 0) with any step size α_t(θ),

    v_{t+1} = β v_t + g(φ_t),   φ_{t+1} = φ_t − α_t v_{t+1},

is run in fixed point: φ and v are int64 arrays X with value X·2^−F (``frac_bits`` F), and every
float quantity added to them (g, α_t·v) is rounded to that grid before the addition. Additions of a
value the reverse pass can recompute are then undone exactly:

    φ_t = φ_{t+1} + fix(α_t v_{t+1}),   v_{t+1} − fix(g(φ_t)) = β v_t.

Only the multiplication by β = n/d (the nearest fraction with d ≤ ``max_denominator``) destroys
information. As in Maclaurin et al.'s exact representation, it is done as X ← ⌊X/d⌋·n with the
remainder ρ = X mod d ∈ [0, d) pushed onto a per-parameter information buffer, and undone as
X ← (X/n)·d + ρ. The buffer packs k = max{j : d^j ≤ 2^63} remainders into one 64-bit word by
mixed-radix arithmetic (w ← w·d + ρ; read back in reverse as ⌊w/d^e⌋ mod d, leaving the buffer
read-only in the backward pass), so it holds

    ⌈r/k⌉ words per parameter = 64⌈r/k⌉/r ≈ 64/k bits per step  (β = 9/10: k = 18, ≈ 3.6 bits),

against 64 bits per step for a stored state (``Reverse``). An entropy coder could approach the
log₂(1/β) bits really lost (0.15 bits for β = 0.9; MacKay et al. 2018); this packing does not.
With β = 0 (GD) nothing of v_t survives the step, and the buffer keeps every v_t whole: 64 bits
per step, no saving over storing φ_t — the honest limit of reversibility for GD.

The backward pass reverses the dynamics step by step (one gradient evaluation each) and feeds the
recovered s_t to the shared mixed-mode VJP (``base.step_vjp``), so the result is reverse mode's
at states within 2^−F of the float trajectory. Memory: the buffer (``buffer_bytes``), plus one
state whatever r. Requires ``jax_enable_x64`` (int64 arithmetic) and |φ|, |v| < 2^(62−F); an
overflow turns the estimate into NaN (``Cost.nonfinite``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from ..cost import cost
from .base import finish, step_vjp
from .unrolled import ExactUnrolled
from ..checks import is_int


class Dynamics(NamedTuple):
    """The inner optimizer as reversible dynamics: β = n/d, remainders per buffer word k, and
    whether the optimizer state carries v (momentum) or is φ alone (GD)."""

    n: int
    d: int
    k: int
    momentum: bool


def per_word(d: int) -> int:
    """k = max{j : d^j ≤ 2^63}: remainders in [0, d) that one int64 word holds; 1 for a whole word (d = 0)."""
    if d == 0:
        return 1
    k = 0
    while d ** (k + 1) <= 2 ** 63:
        k += 1
    return k


class ReversibleAux(NamedTuple):
    """What the forward half leaves for the backward half: φ_r and v_r in fixed point, the buffer
    (words × dim φ int64), and whether the fixed-point range overflowed."""

    P: jax.Array
    V: jax.Array
    buffer: jax.Array
    overflow: jax.Array


@dataclass(frozen=True)
class Reversible(ExactUnrolled):
    """Exact reverse mode for ``ablo.gd`` and heavy-ball ``ablo.momentum`` by running the dynamics
    backwards in fixed point with an information buffer (Maclaurin et al. 2015). ``frac_bits`` F:
    the fixed-point resolution 2^−F; β is used as the fraction n/d with d ≤ ``max_denominator``
    (9/10 for 0.9). Cost: r + 1 gradient evaluations forward, r more and r HVPs backward;
    memory one state plus ``buffer_bytes``."""

    frac_bits: int = 44
    max_denominator: int = 1024
    name: ClassVar[str] = "reversible"

    def __post_init__(self):
        for field, lo, hi in (("frac_bits", 8, 60), ("max_denominator", 1, 2 ** 16)):
            v = getattr(self, field)
            if not is_int(v) or not lo <= v <= hi:
                raise ValueError(f"{field} must be an integer in [{lo}, {hi}]; got {v!r}")

    # --- the dynamics ----------------------------------------------------------------------------
    def dynamics(self, problem, theta, task) -> Dynamics:
        """Read β off the optimizer by probing its update (v' = β·1 from v = 1, g = 0) and refuse
        anything but GD and heavy-ball momentum."""
        if not jax.config.jax_enable_x64:
            raise ValueError("reversible needs 64-bit integers for its fixed-point arithmetic: enable "
                             "jax.config.update('jax_enable_x64', True)")
        opt = problem.optimizer
        if opt.name not in ("gd", "momentum"):
            raise ValueError(f"reversible supports the inner optimizers ablo.gd and ablo.momentum (heavy-ball); "
                             f"got {opt.name!r}")
        if opt.name == "gd":
            return Dynamics(0, 0, 1, False)
        shapes = jax.eval_shape(lambda th: problem.init(th, task), theta)
        zeros = lambda t: jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), t)
        ones = lambda t: jax.tree.map(lambda x: np.ones(x.shape, x.dtype), t)
        th0 = zeros(jax.eval_shape(lambda th: th, theta))
        with jax.ensure_compile_time_eval():
            phi_a, v_a = opt.update(zeros(shapes), (zeros(shapes), ones(shapes)), th0, 0)
            phi_b, _ = opt.update(ones(shapes), (zeros(shapes), zeros(shapes)), th0, 0)
            beta = float(jax.flatten_util.ravel_pytree(v_a)[0][0])
            a_beta = float(jax.flatten_util.ravel_pytree(phi_a)[0][0])
            a = float(jax.flatten_util.ravel_pytree(phi_b)[0][0])
        if a != 0 and not math.isclose(a_beta, beta * a, rel_tol=1e-9, abs_tol=1e-300):
            raise ValueError("reversible supports heavy-ball momentum (v = beta v + g, phi = phi - lr v); this "
                             "optimizer's update is not of that form (Nesterov?)")
        frac = Fraction(beta).limit_denominator(self.max_denominator)
        if abs(float(frac) - beta) > 1e-12 * max(beta, 1e-300):
            raise ValueError(f"momentum beta={beta!r} is not a fraction n/d with d <= max_denominator="
                             f"{self.max_denominator} (nearest {frac}); raise max_denominator (more buffer bits "
                             f"per step) or choose such a beta")
        if frac.numerator == 0:
            return Dynamics(0, 0, 1, True)
        return Dynamics(frac.numerator, frac.denominator, per_word(frac.denominator), True)

    def words(self, r: int, dyn: Dynamics) -> int:
        """Buffer words per parameter: ⌈r/k⌉."""
        return -(-r // dyn.k)

    def buffer_bytes(self, problem, theta, task) -> int:
        """The information buffer's size in bytes: 8⌈r/k⌉ · dim φ."""
        dyn = self.dynamics(problem, theta, task)
        dim = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(jax.eval_shape(problem.init, theta, task)))
        return 8 * self.words(problem.steps, dyn) * dim

    def bits_per_step(self, problem, theta, task) -> float:
        """Buffer bits per inner step and parameter: 64⌈r/k⌉/r (≈ 64/k; 64 for GD)."""
        dyn = self.dynamics(problem, theta, task)
        return 64 * self.words(problem.steps, dyn) / problem.steps

    def check(self, problem):
        if problem.optimizer.name not in ("gd", "momentum"):
            raise ValueError(f"reversible supports the inner optimizers ablo.gd and ablo.momentum (heavy-ball); "
                             f"got {problem.optimizer.name!r}")

    def _pieces(self, problem, theta, task):
        """(dyn, φ_0 ravelled, unravel, α_t(θ), fix, val, state(P, V))."""
        dyn = self.dynamics(problem, theta, task)
        s0 = problem.initial_state(theta, task)
        phi0, unravel = jax.flatten_util.ravel_pytree(problem.optimizer.params(s0))
        scale = 2.0 ** self.frac_bits
        fix = lambda x: jnp.round(x * scale).astype(jnp.int64)
        val = lambda X: (X.astype(jnp.float64) / scale).astype(phi0.dtype)
        g1 = unravel(jnp.ones_like(phi0))
        zero_state = problem.optimizer.init(unravel(jnp.zeros_like(phi0)))
        alpha = lambda t: -jax.flatten_util.ravel_pytree(
            problem.optimizer.params(problem.optimizer.update(g1, zero_state, theta, t)))[0][0]
        state = (lambda P, V: (unravel(val(P)), unravel(val(V)))) if dyn.momentum else (lambda P, V: unravel(val(P)))
        grad = lambda P: jax.flatten_util.ravel_pytree(problem.inner_grad(theta, unravel(val(P)), task))[0]
        return dyn, s0, phi0, fix, val, alpha, state, grad

    def forward(self, problem, theta, task):
        """Run the r steps in fixed point, pushing the bits the β-multiplication drops."""
        dyn, s0, phi0, fix, val, alpha, state, grad = self._pieces(problem, theta, task)
        v0 = jax.flatten_util.ravel_pytree(s0[1])[0] if dyn.momentum else jnp.zeros_like(phi0)
        limit = 2.0 ** (62 - self.frac_bits)
        buffer = jnp.zeros((self.words(problem.steps, dyn), phi0.shape[0]), jnp.int64)

        def body(t, carry):
            P, V, buf, over = carry
            g = grad(P)
            w = t // dyn.k
            if dyn.n == 0:
                buf, V = buf.at[w].set(V), jnp.zeros_like(V)
            else:
                rho = jnp.remainder(V, dyn.d)
                buf, V = buf.at[w].set(buf[w] * dyn.d + rho), (V - rho) // dyn.d * dyn.n
            vf = val(V) + g
            V = V + fix(g)
            step = alpha(t) * val(V)
            over = over | jnp.any(jnp.abs(vf) >= limit) | jnp.any(jnp.abs(val(P) - step) >= limit)
            return P - fix(step), V, buf, over

        init = (fix(phi0), fix(v0), buffer, jnp.any(jnp.abs(phi0) >= limit))
        P, V, buf, over = jax.lax.fori_loop(0, problem.steps, body, init)
        return state(P, V), ReversibleAux(P, V, buf, over)

    def backward(self, problem, theta, task, aux, b_theta, b_s):
        """Undo the steps from r down to 1, recovering s_{t} exactly, and sweep eq. 6 back over them."""
        dyn, s0, phi0, fix, val, alpha, state, grad = self._pieces(problem, theta, task)

        r, buf = problem.steps, aux.buffer
        powers = jnp.asarray([dyn.d ** e for e in range(dyn.k)] if dyn.n else [1], jnp.int64)

        def body(i, carry):
            t = r - 1 - i
            P, V, b_theta, b_s = carry
            P = P + fix(alpha(t) * val(V))
            V = V - fix(grad(P))
            w = t // dyn.k
            if dyn.n == 0:
                V = buf[w]
            else:  # word w holds m = min(k, r − wk) remainders, the one of step wk + j at d^(m−1−j)
                m = jnp.minimum(dyn.k, r - w * dyn.k)
                V = V // dyn.n * dyn.d + jnp.remainder(buf[w] // powers[m - 1 - (t - w * dyn.k)], dyn.d)
            b_theta, b_s = step_vjp(problem, theta, state(P, V), t, task, b_theta, b_s)
            return P, V, b_theta, b_s

        _, _, b_theta, b_s = jax.lax.fori_loop(0, r, body, (aux.P, aux.V, b_theta, b_s))
        g = finish(problem, theta, task, b_theta, b_s)
        return jax.tree.map(lambda x: jnp.where(aux.overflow, jnp.nan, x), g)

    def backward_cost(self, r):
        """r gradient evaluations to reverse the steps, r HVPs, one JVP of V; one state (plus the buffer)."""
        return cost(grad_evals=r, hvps=r, jvps=1, states=1)
