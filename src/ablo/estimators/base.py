"""The estimator interface and the pieces of Algorithms 2-4 (Likhosherstov et al. 2021) that every
estimator shares.

An estimator is a small immutable value (like an optimistix adjoint or an optax
transformation) with two pure functions:

* ``init(problem, θ, task) -> state``
* ``estimate(problem, θ, task, state, key) -> (hypergradient, state, Cost)``

Both are jit-compatible and vmap-able over tasks. ``estimate_batch`` averages over a
meta-batch of tasks. Most estimators split ``estimate`` into its two passes,
``forward_pass`` (the inner loop, giving s_r and what the backward needs) and
``backward_pass`` (the rest): ``ablo.solve`` runs the first in its forward and the second in
its backward pass, so ``jax.grad`` through the inner loop costs what ``estimate`` costs.
A random branch (UFOM's ξ, a telescope's truncation length) is taken with :func:`switch` (or
:func:`branch`, its two-way case), whose batching rule runs each task's drawn branch only.

Notation (Shaban et al. 2019 eq. 6): with s_j = Ξ(θ, s_{j−1}), the reverse pass carries
b_θ (``h_t``) and the state cotangent b_s (``α_t``):
    b_θ ← b_θ + (∂Ξ/∂θ)ᵀ b_s,   b_s ← (∂Ξ/∂s)ᵀ b_s,
one VJP of the step = one HVP in the counts of Proposition 1. It starts from
b_θ = ∂L_out/∂θ, b_s = (∂φ/∂s)ᵀ ∂L_out/∂φ at s_r, and ends with b_θ + (∂s_0/∂θ)ᵀ b_s.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, ClassVar, Tuple

import jax
import jax.extend
import jax.numpy as jnp
import optax

from ..cost import Cost, batch_total, cost, is_nonfinite
from ..problem import BilevelProblem






def add_cotangents(a, b):
    """a + b for cotangent pytrees whose integer leaves (e.g. an optax step count) carry float0."""
    return jax.tree.map(lambda x, y: x if x.dtype == jax.dtypes.float0 else x + y, a, b)



def outer_cotangents(problem: BilevelProblem, theta, s_r, task):
    """b_θ = ∂L_out/∂θ and b_s = (∂φ/∂s)ᵀ ∂L_out/∂φ at the last state: one gradient evaluation."""
    phi_r, lift = jax.vjp(problem.optimizer.params, s_r)
    b_theta, b_phi = jax.grad(problem.outer_loss, argnums=(0, 1))(theta, phi_r, task)
    (b_s,) = lift(b_phi)
    return b_theta, b_s


def step_vjp(problem: BilevelProblem, theta, s_prev, t, task, b_theta, b_s):
    """One reverse step of eq. 6 at s_prev = s_t, in mixed mode (Kemaev et al. 2025, MixFlow-MG):
    one gradient evaluation and one HVP.

    With the step split as s_{t+1} = update(g, s_t, θ, t), g = ∂L_in/∂φ at φ = params(s_t):

    * the VJP of ``update`` (first order, no second derivatives) sends b_s to
      (v, b_s', b_θ') = (∂update/∂(g, s, θ))ᵀ b_s;
    * the second-order part uses the symmetry of ∇²L_in: (∂g/∂φ)ᵀ v = ∇²_φφ L v and
      (∂g/∂θ)ᵀ v = ∇²_θφ L v = ∂/∂ε ∇_θ L(θ, φ + εv), so both are one forward-over-reverse product
      ``jvp(grad_(θ,φ) L_in)`` along (0, v), which keeps no tape of the gradient's own backward pass
      (reverse-over-reverse, ``vjp`` of a step that calls ``grad``, does).

    For GD this is b_s ← b_s − α H b_s, b_θ += −α ∇²_θφ L b_s (+ the step size's own term).
    Returns (b_θ + (∂Ξ/∂θ)ᵀ b_s, (∂Ξ/∂s)ᵀ b_s)."""
    opt = problem.optimizer
    phi, lift = jax.vjp(opt.params, s_prev)
    g = problem.inner_grad(theta, phi, task)
    _, update_vjp = jax.vjp(lambda g_, s_, th: opt.update(g_, s_, th, t), g, s_prev, theta)
    v, d_s, d_theta = update_vjp(b_s)
    h_theta, h_phi = problem.inner_hvp(theta, phi, v, task, mixed=True)
    (h_s,) = lift(h_phi)
    return optax.tree.add(b_theta, optax.tree.add(d_theta, h_theta)), add_cotangents(d_s, h_s)


def finish(problem: BilevelProblem, theta, task, b_theta, b_s0):
    """b_θ + (∂s_0/∂θ)ᵀ b_s: the Jacobian-vector product of V (Alg. 2, last line)."""
    _, vjp = jax.vjp(lambda th: problem.initial_state(th, task), theta)
    (d_theta,) = vjp(b_s0)
    return optax.tree.add(b_theta, d_theta)


def v_jvps(problem: BilevelProblem, theta, task) -> int:
    """1 when the start φ_0 = V(θ, T) depends on θ, else 0: the number of JVPs of V that
    ``finish`` is charged (Likhosherstov et al. 2021 §5 counts gradient evaluations and HVPs; the product with a
    constant V is identically zero and costs nothing). Static: ``constant_init`` marks itself,
    any other ``init`` is traced once (shapes only) and its outputs checked for a data path
    from θ."""
    if getattr(problem.init, "theta_independent", False):
        return 0
    spec = lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
    closed = jax.make_jaxpr(problem.init)(*jax.tree.map(spec, (theta, task)))
    depends = set(closed.jaxpr.invars[:len(jax.tree_util.tree_leaves(theta))])
    is_var = lambda v: isinstance(v, jax.extend.core.Var)
    for eqn in closed.jaxpr.eqns:  # sub-jaxprs (loops, conds) conservatively: any input reaches all outputs
        if any(is_var(v) and v in depends for v in eqn.invars):
            depends.update(eqn.outvars)
    return int(any(is_var(v) and v in depends for v in closed.jaxpr.outvars))


def charge_v(c: Cost, problem: BilevelProblem, theta, task) -> Cost:
    """``c`` with its JVPs of V dropped when V does not depend on θ (``v_jvps``)."""
    return c._replace(jvps=c.jvps * v_jvps(problem, theta, task))


def reverse_over(problem, theta, task, states, first_t: int, b_theta, b_s):
    """Reverse sweep over stored states s_{first_t}, ..., s_{first_t+K−1} (stacked on axis 0)."""
    n = jax.tree_util.tree_leaves(states)[0].shape[0]

    def body(carry, x):
        s_prev, t = x
        return step_vjp(problem, theta, s_prev, t, task, *carry), None

    (b_theta, b_s), _ = jax.lax.scan(body, (b_theta, b_s), (states, first_t + jnp.arange(n)), reverse=True)
    return b_theta, b_s


def run_storing(problem, theta, task, s, start, count: int):
    """Run ``count`` steps start..start+count−1 from s (``start`` may be traced), returning the
    final state and the stacked inputs s_start..s_{start+count−1}."""
    def body(s, t):
        return problem.step(theta, s, t, task), s

    return jax.lax.scan(body, s, start + jnp.arange(count))


def switch(index, branches, operand):
    """``lax.switch(index, branches, operand)`` that stays a switch under ``vmap``.

    ``lax.switch`` on a batched index becomes a ``select`` that runs every branch for every
    task. Here the batching rule (``jax.custom_batching.custom_vmap``) maps over the batch with
    one ``switch`` per task (``lax.map``), so each task runs only the branch it drew and the work
    done is the work a cost record reports. An unbatched index keeps one ``switch`` of the
    batched branches; a batched index over an unbatched operand (``vmap`` over keys only) runs
    each branch that some task drew once and gives its value to those tasks (a branch is a
    function of the operand), so the work done is at most the cost records' sum and no undrawn
    branch runs. Nested ``vmap`` recurses (a map of maps); forward mode (``jvp``,
    ``jax.hessian``) is the switch of the branches' JVPs (which evaluate the branch again).
    Reverse mode through it is not supported (a hypergradient is not differentiated by ``grad``;
    ``jax.hessian`` through ``ablo.solve`` is forward-over-reverse). The branches must not close
    over traced values: pass them in ``operand``."""
    branches = tuple(branches)

    @jax.custom_batching.custom_vmap
    def batched(index, operand):
        return jax.lax.switch(index, branches, operand)

    @batched.def_vmap
    def rule(axis_size, in_batched, index, operand):
        index_batched, operand_batched = in_batched
        if index_batched and not any(jax.tree_util.tree_leaves(operand_batched)):
            index = jnp.clip(index, 0, len(branches) - 1)
            outs = [switch(jnp.any(index == i).astype(jnp.int32), (skipped(b), b), operand)
                    for i, b in enumerate(branches)]
            out = jax.tree.map(lambda *xs: jnp.stack(xs)[index], *outs)
            return out, jax.tree.map(lambda _: True, out)
        spread = lambda x, b: x if b else jnp.broadcast_to(x, (axis_size, *jnp.shape(x)))
        operand = jax.tree.map(spread, operand, operand_batched)
        if index_batched:
            out = jax.lax.map(lambda a: switch(a[0], branches, a[1]), (index, operand))
        else:
            out = jax.lax.switch(index, [jax.vmap(b) for b in branches], operand)
        return out, jax.tree.map(lambda _: True, out)

    @jax.custom_jvp
    def f(index, operand):
        return batched(index, operand)

    @f.defjvp
    def f_jvp(primals, tangents):
        index, operand = primals
        leaves, treedef = jax.tree_util.tree_flatten(operand)
        real = [jnp.issubdtype(jnp.result_type(x), jnp.inexact) for x in leaves]
        dots = [t for t, k in zip(jax.tree_util.tree_leaves(tangents[1]), real) if k]

        def pushed(side):  # (leaves, tangents of the real leaves) -> the tangent of side's output
            def g(xs_ts):
                xs, ts = xs_ts

                def h(*reals):
                    it = iter(reals)
                    return side(treedef.unflatten([next(it) if k else x for x, k in zip(xs, real)]))

                return jax.jvp(h, tuple(x for x, k in zip(xs, real) if k), tuple(ts))[1]
            return g

        # the primal on its own, so that it is not batched along the tangents (jacfwd)
        return switch(index, branches, operand), switch(index, [pushed(b) for b in branches], (leaves, dots))

    return f(index, operand)


def skipped(side):
    """A branch of ``side``'s output shapes that computes nothing: zeros."""
    return lambda operand: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(side, operand))


def branch(pred, expensive, cheap, operand):
    """``lax.cond(pred, expensive, cheap, operand)`` that stays a branch under ``vmap``: the
    :func:`switch` of (cheap, expensive) at 0/1, so ``expensive`` runs only for the tasks whose
    ``pred`` is true. The same rules: no reverse mode, no traced values closed over."""
    return switch(jnp.asarray(pred).astype(jnp.int32), (cheap, expensive), operand)


def with_finite_flag(grad, c: Cost, *more) -> Cost:
    """Set ``c.nonfinite`` when the estimate, or any of ``more`` (e.g. the last inner state,
    which FOM's estimate may not see), holds NaN or ±inf."""
    return c._replace(nonfinite=jnp.logical_or(c.nonfinite, is_nonfinite((grad, more))))


def _flatten(est):
    """Children: the fields named in ``traced`` and the fields holding estimators; the rest is static."""
    names = [f.name for f in dataclasses.fields(est)]
    data = tuple(n for n in names if n in est.traced or isinstance(getattr(est, n), Estimator))
    meta = tuple((n, getattr(est, n)) for n in names if n not in data)
    return [getattr(est, n) for n in data], (data, meta)


def _unflatten(cls, aux, children):
    """Rebuild without ``__init__``: JAX unflattens with placeholders (None, object()) that
    ``__post_init__``'s validation would reject; validation runs when the user builds the value."""
    data, meta = aux
    est = object.__new__(cls)
    for name, value in (*meta, *zip(data, children)):
        object.__setattr__(est, name, value)
    return est


@dataclass(frozen=True)
class Estimator:
    """Base class. Subclasses set ``name`` and implement ``estimate``.

    Every estimator is a pytree: the numeric settings named in ``traced`` (e.g. UFOM's q) and
    nested estimators are its children, everything else (K, M, solvers, names) is static. So
    an estimator can be an argument of a jitted function, built from traced values, or
    vmapped over: a sweep over q compiles once, while K or M select another compilation.

    The base class takes no parameters; each subclass's fields are its settings. Call one with
    ``ablo.hypergradient`` (or ``estimate(problem, θ, task, state, key)``, which returns
    ``(hypergradient, new state, Cost)``), or pass it to ``ablo.solve``.
    """

    name: ClassVar[str] = "estimator"
    #: True when the estimate draws a random branch (UFOM's ξ, taken with :func:`branch`).
    random_branch: ClassVar[bool] = False
    #: True when the estimate draws from its key (a random branch, mini-batches): the entry points
    #: refuse to run it without one (a fixed default key would be a fixed draw, silently biased).
    needs_key: ClassVar[bool] = False
    #: Numeric fields that may be traced arrays (pytree children); all other fields are static.
    traced: ClassVar[Tuple[str, ...]] = ()
    #: Non-empty when the estimator cannot run inside ``ablo.solve`` (e.g. it needs its state
    #: carried from one call to the next): the reason, shown in solve's ValueError.
    not_in_solve: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_node(cls, _flatten, functools.partial(_unflatten, cls))

    def init(self, problem: BilevelProblem, theta, task) -> Any:
        """The estimator state before the first call (``()`` for stateless estimators)."""
        return ()

    def estimate(self, problem: BilevelProblem, theta, task, state, key) -> Tuple[Any, Any, Cost]:
        """(hypergradient estimate of ∂M^(r)/∂θ for ``task``, new state, Cost); ``key`` feeds any
        randomness. Pure and jit-able; subclasses implement it (or, as :class:`TwoPass`,
        ``forward_pass`` and ``backward_pass``)."""
        raise NotImplementedError

    def forward_pass(self, problem: BilevelProblem, theta, task, state, key) -> Tuple[Any, Any]:
        """(s_r, residuals): the inner loop of ``estimate`` and what its backward pass needs.
        This default (for an estimator that implements ``estimate`` only) is the problem's own
        inner run, with no residuals."""
        return problem.run(theta, task), None

    def backward_pass(self, problem: BilevelProblem, theta, task, state, key, s_r, residuals) -> Tuple[Any, Any, Cost]:
        """The rest of ``estimate`` after ``forward_pass``: (hypergradient, new state, Cost of both
        passes). This default calls ``estimate`` whole (its inner loop runs again) and adds the
        r gradient evaluations of the default forward pass."""
        g, state, c = self.estimate(problem, theta, task, state, key)
        return g, state, c + cost(grad_evals=problem.steps)

    def __call__(self, problem, theta, task, state, key):
        return self.estimate(problem, theta, task, state, key)

    def expected_cost(self, r: int) -> Cost:
        """The expected cost of one ``estimate`` call (one task) with r inner steps, from the
        estimator's own counts; JVPs of V counted as if V depends on θ (``v_jvps``)."""
        raise NotImplementedError(f"{type(self).__name__} has no cost model")

    def describe_state(self, state) -> dict:
        """Scalars worth logging per outer step (e.g. {"q": ...}); host-side, after the step."""
        return {}

    def check(self, problem: BilevelProblem) -> None:
        """Raise ValueError when this estimator's settings do not fit ``problem``."""

    def exact_at(self, steps: int) -> bool:
        """True when the estimate is the exact ∂M^(r)/∂θ of a problem with r = ``steps`` inner steps."""
        return False

    def estimate_batch(self, problem, theta, tasks, state, key):
        """Mean hypergradient over a meta-batch (tasks stacked on axis 0), total cost.

        The default treats ``state`` as shared: each task sees the same state, and the new
        state is the mean of the per-task new states (first element for integer leaves)."""
        n = jax.tree_util.tree_leaves(tasks)[0].shape[0]
        keys = jax.random.split(key, n)
        g, s, c = jax.vmap(self.estimate, in_axes=(None, None, 0, None, 0))(problem, theta, tasks, state, keys)
        reduce = lambda x: x.mean(0) if jnp.issubdtype(x.dtype, jnp.inexact) else x[0]
        return jax.tree.map(lambda x: x.mean(0), g), jax.tree.map(reduce, s), batch_total(c)


class TwoPass(Estimator):
    """An estimator written as its two passes: ``estimate`` is ``backward_pass`` after
    ``forward_pass``, one code path for the explicit API and for ``ablo.solve`` (which runs the
    forward pass in its forward and the backward pass, with the outer loss ⟨φ̄, φ⟩, in its
    backward, so a call through ``jax.grad`` costs what ``estimate`` costs)."""

    def forward_pass(self, problem, theta, task, state, key):
        """(s_r, residuals): the inner loop and what ``backward_pass`` needs; subclasses implement it."""
        raise NotImplementedError

    def backward_pass(self, problem, theta, task, state, key, s_r, residuals):
        """(hypergradient, new state, Cost of both passes) from the forward pass's s_r and
        residuals, reading the outer loss from ``problem``; subclasses implement it."""
        raise NotImplementedError

    def estimate(self, problem, theta, task, state, key):
        """``backward_pass`` after ``forward_pass``: (hypergradient, new state, Cost)."""
        self.check(problem)
        s_r, residuals = self.forward_pass(problem, theta, task, state, key)
        return self.backward_pass(problem, theta, task, state, key, s_r, residuals)


def zero_cost() -> Cost:
    """A Cost of zeros (nothing spent)."""
    return cost()
