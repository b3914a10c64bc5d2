"""``ablo.solve``: the inner loop as a differentiable JAX function whose θ-derivative is an estimator's.

    φ_r = solve(problem, estimator)(θ, T, key),    jax.grad(θ ↦ L(θ, φ_r))  =  ∂L/∂θ + Ĝ(φ̄),

where φ̄ = ∂L/∂φ_r is the cotangent JAX hands to the backward pass and Ĝ(φ̄) is the estimator's
hypergradient for the *linear* outer loss ⟨φ̄, φ⟩ (a ``jax.custom_vjp``). Every estimator is
linear in the outer loss's gradients (b_θ, b_φ) (Shaban et al. 2019 eq. 6-8; Likhosherstov et al. 2021 Alg. 2-4), so
for any outer loss L — any JAX code of θ and φ_r, the problem's ``outer_loss`` is not used —
this equals the estimator's hypergradient of L:

* exact (Reverse, Recompute, Checkpointed): the reverse sweep of eq. 6 seeded with
  b_s = (∂φ/∂s)ᵀφ̄, b_θ = 0, on the forward pass's stored states or checkpoints;
* FOM (Likhosherstov et al. 2021, Alg. 3): φ̄ passes through ∂V/∂θ only, Ĝ = (∂s_0/∂θ)ᵀ b_s;
* every other estimator (Truncated, Forward, UFOM and Debiased drawing ξ from ``key``
  (Likhosherstov et al. 2021, Alg. 4 eq. 12-13), AID/HOAG, StocBiO): its ``estimate`` on the problem with outer loss
  ⟨φ̄, φ⟩, which re-runs its own inner loop in the backward pass (r extra gradient evaluations).

JAX adds ∂L/∂θ itself. The result works under the caller's ``jit``, ``vmap`` (over tasks, keys,
or estimators whose q is an array) and ``grad``. The derivative in ``task`` and ``key`` is zero
(they are data). θ, φ and the task must be pytrees of arrays; for Equinox/Flax models split
the arrays from the rest first (``eqx.partition``, ``nnx.split``; see examples/).

State. ``solve`` calls are stateless: every call starts from ``estimator.init`` (AID and
StocBiO without warm starts, HOAG at its first tolerance). Estimators whose state carries
information from call to call (Adaptive UFOM's statistics, BSA's and TTSA's step counters and
inner iterate, Reptile) raise a ValueError: use :func:`ablo.hypergradient_batch` with ``state``.

Cost. ``with_cost=True`` adds a fourth argument, a :func:`cost_meter` (a ``Cost`` of zeros):
the gradient of the loss with respect to it is the Cost of the backward passes that computed
the hypergradient (inner runs, HVPs, JVPs; the outer loss's own gradient is JAX's), summed over
calls and over a ``vmap``, like :func:`ablo.cost.batch_total`; ``nonfinite`` > 0 flags NaN/inf.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from .cost import Cost, cost
from .estimators.base import Estimator, finish, tree_map, with_finite_flag
from .estimators.first_order import FOM
from .estimators.unrolled import ExactUnrolled
from .linear_solvers import tree_vdot
from .problem import BilevelProblem


def cost_meter() -> Cost:
    """A Cost of float32 zeros to differentiate against: see ``solve(..., with_cost=True)``.

    Returns:
        ``Cost(0, 0, 0, 0, 0, 0)`` in float32; the gradient of a loss with respect to it is the
        Cost record of the hypergradients that loss's backward pass computed.
    """
    z = jnp.zeros((), jnp.float32)
    return Cost(z, z, z, z, z, z)


def _forward(problem: BilevelProblem, estimator: Estimator, theta, task):
    """(s_r, what the backward pass needs): the exact estimators' own forward half, else the plain run."""
    if isinstance(estimator, ExactUnrolled):
        return estimator.forward(problem, theta, task)
    return problem.run(theta, task), None


def _backward(problem: BilevelProblem, estimator: Estimator, theta, task, key, s_r, aux, phi_bar):
    """(Ĝ(φ̄), Cost) of the forward and backward passes."""
    r = problem.steps
    if isinstance(estimator, (ExactUnrolled, FOM)):
        _, lift = jax.vjp(problem.optimizer.params, s_r)
        (b_s,) = lift(phi_bar)
        zero = tree_map(jnp.zeros_like, theta)
        if isinstance(estimator, FOM):
            g, c = finish(problem, theta, task, zero, b_s), cost(grad_evals=r, jvps=1, states=1)
        else:
            g, c = estimator.backward(problem, theta, task, aux, zero, b_s), estimator.backward_cost(r)
            c = c._replace(grad_evals=c.grad_evals + r)
        return g, with_finite_flag(g, c, s_r)
    linear = dataclasses.replace(problem, outer_loss=lambda th, phi, t: tree_vdot(phi_bar, phi))
    g, _, c = estimator.estimate(linear, theta, task, estimator.init(linear, theta, task), key)
    return g, c + cost(grad_evals=r, states=1)


def _split(tree):
    """(array leaves, rebuild): custom_vjp takes arrays only; other leaves are held as constants."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    is_array = [isinstance(x, (jax.Array, np.ndarray)) for x in leaves]

    def rebuild(arrays):
        it = iter(arrays)
        return jax.tree_util.tree_unflatten(treedef, [next(it) if a else x for x, a in zip(leaves, is_array)])

    return [x for x, a in zip(leaves, is_array) if a], rebuild


def solve(problem: BilevelProblem, estimator: Estimator, with_cost: bool = False):
    """The inner loop of ``problem`` as a function ``(θ, task, key=None) -> φ_r`` whose derivative
    in θ is ``estimator``'s hypergradient (see the module docstring for how and at what cost).

    With ``with_cost=True`` the function is ``(θ, task, key, meter) -> φ_r``; differentiate the
    loss with respect to ``meter = cost_meter()`` too, and that gradient is the Cost record::

        solver = ablo.solve(problem, ablo.UFOM(q=0.1), with_cost=True)
        loss = lambda θ, m: val_loss(θ, solver(θ, task, key, m))
        g, c = jax.grad(loss, argnums=(0, 1))(θ, ablo.cost_meter())

    ``key`` (default ``PRNGKey(0)``) feeds the random estimators (UFOM's ξ, stocBiO's batches).
    Cost of the forward call: r gradient evaluations (stored states for Reverse, checkpoints for
    Checkpointed); the backward pass costs what the estimator costs.

    Args:
        problem: the bilevel problem; its ``outer_loss`` is not used (the loss is the caller's).
        estimator: any estimator whose state does not carry from call to call (Adaptive UFOM,
            BSA, TTSA and Reptile are refused with a ValueError: use
            ``ablo.hypergradient_batch`` with ``state``).
        with_cost: add a fourth argument, a ``cost_meter``, whose gradient is the Cost record.

    Returns:
        ``solver(θ, task, key=None) -> φ_r`` (``solver(θ, task, key, meter)`` with
        ``with_cost=True``), a JAX function usable under ``jit``, ``vmap`` and ``grad``.

    Example:
        ```python
        solver = ablo.solve(problem, ablo.UFOM(q=0.1))
        val_loss = lambda theta, key: outer_loss(theta, solver(theta, task, key), task)
        g = jax.grad(val_loss)(theta, jax.random.PRNGKey(1))   # UFOM's hypergradient
        ```
    """
    if not isinstance(problem, BilevelProblem):
        raise ValueError(f"problem must be an ablo.BilevelProblem; got {type(problem).__name__}")
    if not isinstance(estimator, Estimator):
        raise ValueError(f"estimator must be an ablo estimator (e.g. ablo.Reverse()); got {type(estimator).__name__}")
    if estimator.not_in_solve:
        raise ValueError(f"estimator {estimator.name!r} cannot run inside ablo.solve, which keeps no state between "
                         f"calls: {estimator.not_in_solve}")
    if not isinstance(with_cost, bool):
        raise ValueError(f"with_cost must be True or False; got {with_cost!r}")
    estimator.check(problem)

    def solver(theta, task, key=None, meter=None):
        if with_cost and meter is None:
            raise ValueError("solve(..., with_cost=True) takes a fourth argument: meter = ablo.cost_meter(), to "
                             "differentiate against")
        key = jax.random.PRNGKey(0) if key is None else key
        meter = cost_meter() if meter is None else meter
        task_arrays, task_of = _split(task)

        @jax.custom_vjp
        def phi_r(theta, task_arrays, key, meter):
            return _fwd(theta, task_arrays, key, meter)[0]

        def _fwd(theta, task_arrays, key, meter):
            task = task_of(task_arrays)
            s_r, aux = _forward(problem, estimator, theta, task)
            return problem.optimizer.params(s_r), (theta, task_arrays, key, s_r, aux)

        def _bwd(res, phi_bar):
            theta, task_arrays, key, s_r, aux = res
            g, c = _backward(problem, estimator, theta, task_of(task_arrays), key, s_r, aux, phi_bar)
            # + 0·(a value of φ̄): under vmap the record is then batched like φ̄, and JAX sums it over
            # the batch as it sums every cotangent of an unbatched input (a constant would not be).
            zero = 0.0 * jnp.isnan(jax.tree_util.tree_leaves(phi_bar)[0]).any()
            return g, None, None, Cost(*(jnp.asarray(x, jnp.float32) + zero for x in c))

        phi_r.defvjp(_fwd, _bwd)
        return phi_r(theta, task_arrays, key, meter)

    if not with_cost:
        return lambda theta, task, key=None: solver(theta, task, key)
    return solver
