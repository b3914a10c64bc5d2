"""``ablo.solve``: the inner loop as a differentiable JAX function whose θ-derivative is an estimator's.

    φ_r = solve(problem, estimator)(θ, T, key),    jax.grad(θ ↦ L(θ, φ_r))  =  ∂L/∂θ + Ĝ(φ̄),

where φ̄ = ∂L/∂φ_r is the cotangent JAX hands to the backward pass and Ĝ(φ̄) is the estimator's
hypergradient for the *linear* outer loss ⟨φ̄, φ⟩ (a ``jax.custom_vjp``). Every estimator is
linear in the outer loss's gradients (b_θ, b_φ) (Shaban et al. 2019 eq. 6-8; Likhosherstov et al.
2021 Alg. 2-4), so for any outer loss L — any JAX code of θ and φ_r, the problem's ``outer_loss``
is not used — this equals the estimator's hypergradient of L.

The forward pass is the estimator's own ``forward_pass`` (its inner loop: stored states for
Reverse, checkpoints for Checkpointed, the exact branch's forward for UFOM, the tangents for
Forward, the mini-batch SGD for stocBiO) and the backward pass its ``backward_pass`` on the
problem with outer loss ⟨φ̄, φ⟩: nothing is run twice, and the cost record of a call equals
``ablo.hypergradient``'s for the same θ, task and key, field by field (stocBiO's estimate differs:
its outer gradient is then the loss's own, computed by JAX, not one drawn on a mini-batch). UFOM's random branch
runs, under the caller's ``vmap``, only for the tasks that drew it.

What is differentiated.

* θ: any pytree. Its floating-point array leaves are differentiated; other leaves (integer
  arrays, functions, an Equinox module's static parts) are held as they are, so
  ``eqx.filter_grad`` over a whole module works.
* Values the problem's functions close over (a step size traced by an outer ``jax.grad``, data
  traced by ``jit``): hoisted with ``jax.closure_convert`` and differentiated like θ (exactly,
  for the exact estimators). Data passed through ``task`` instead stays out of the derivative.
* ``task`` and ``key``: data, not differentiated. A task traced by ``jax.grad``/``jvp`` (it
  would receive a gradient no estimator computes here) raises a ValueError.
* Forward mode (``jax.jvp``) through ``solve`` is not defined (a ``custom_vjp``); use
  ``ablo.objective(problem)`` or the ``Forward`` estimator. ``jax.hessian`` (forward over
  reverse) works; reverse over reverse works where the estimator's backward pass is itself
  reverse-differentiable (``Reverse``), and otherwise raises, naming ``jax.hessian``.

State. ``solve`` calls are stateless: every call starts from ``estimator.init`` (AID and
stocBiO without warm starts, HOAG at its first tolerance). Estimators whose state carries
information from call to call (Adaptive UFOM's statistics, BSA's and TTSA's step counters and
inner iterate, Reptile) raise a ValueError: use :func:`ablo.hypergradient_batch` with ``state``.

Cost. ``with_cost=True`` adds a fourth argument, a :func:`cost_meter` (a ``Cost`` of zeros):
the gradient of the loss with respect to it is the Cost of the calls that computed the
hypergradient (the estimator's whole record: its inner loop, the outer gradient JAX computes,
HVPs, JVPs), summed over calls and over a ``vmap`` like :func:`ablo.cost.batch_total`;
``nonfinite`` > 0 flags NaN/inf.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax._src.interpreters.ad import JVPTracer, LinearizeTracer

from .checks import check_key
from .cost import Cost
from .estimators.base import Estimator
from .linear_solvers import tree_vdot
from .problem import BilevelProblem

_JVP_ADVICE = ("ablo.solve defines reverse mode only (a jax.custom_vjp), so jax.jvp / jax.jacfwd / jax.linearize "
               "cannot go through it: for forward mode use ablo.objective(problem) (plain autodiff through the "
               "unrolled loop), or the Forward estimator (forward-mode hypergradient) with jax.grad; jax.hessian "
               "(forward over reverse) works")


def cost_meter() -> Cost:
    """A Cost of float32 zeros to differentiate against: see ``solve(..., with_cost=True)``.

    Returns:
        ``Cost(0, 0, 0, 0, 0, 0)`` in float32; the gradient of a loss with respect to it is the
        Cost record of the hypergradients that loss's backward pass computed.
    """
    z = jnp.zeros((), jnp.float32)
    return Cost(z, z, z, z, z, z)


def _is_float(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray)) and jnp.issubdtype(x.dtype, jnp.inexact)


def _is_none(x) -> bool:
    return x is None


def _is_array(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray))


def _differentiated(x) -> bool:
    """True when ``x`` carries a tangent of an enclosing jvp/grad (at any depth of nested traces)."""
    while isinstance(x, jax.core.Tracer):
        if isinstance(x, (JVPTracer, LinearizeTracer)):
            return True
        x = getattr(x, "val", None)
    return False


@dataclasses.dataclass(frozen=True)
class _Lifted:
    """The problem as the custom_vjp sees it: θ' = (θ's float leaves, hoisted closure values) is
    what is differentiated, task' = the task with its arrays only (non-array leaves None, so that
    an estimator can still read its parts, e.g. stocBiO's ``task["train"]``) what is not (θ's
    other leaves are held as they are); every function rebuilds θ and the task and hands the hoisted values back to the
    closures."""

    problem: BilevelProblem
    theta_leaves: tuple  # (leaf or None, is_float) per leaf of θ
    theta_tree: object
    task_leaves: tuple
    task_tree: object
    hoisted: tuple  # the traced values the problem's functions close over

    def theta(self, theta_p):
        floats = iter(theta_p[0])
        return jax.tree_util.tree_unflatten(self.theta_tree, [next(floats) if f else x for x, f in self.theta_leaves])

    def task(self, task_p):
        arrays = jax.tree_util.tree_leaves(task_p, is_leaf=_is_none)
        return jax.tree_util.tree_unflatten(self.task_tree, [y if a else x for y, (x, a) in zip(arrays, self.task_leaves)])

    def call(self, fn, theta_p, *args):
        """``fn(*args)`` with the hoisted values of its closure replaced by θ's copies (``theta_p[1]``)."""
        if not self.hoisted:
            return fn(*args)
        converted, found = jax.closure_convert(fn, *args)
        index = {id(h): i for i, h in enumerate(self.hoisted)}
        missing = [c for c in found if id(c) not in index]
        if missing:
            raise ValueError("ablo.solve: a function of the problem closes over a traced value it did not show when "
                             "solve was called; build the problem's functions before calling the solver")
        return converted(*args, *[theta_p[1][index[id(c)]] for c in found])

    def lifted_problem(self, phi_bar=None) -> BilevelProblem:
        p, opt = self.problem, self.problem.optimizer

        def inner_loss(theta_p, phi, task_p):
            return self.call(p.inner_loss, theta_p, self.theta(theta_p), phi, self.task(task_p))

        def init(theta_p, task_p):
            return self.call(p.init, theta_p, self.theta(theta_p), self.task(task_p))

        def update(g, s, theta_p, t):
            return self.call(opt.update, theta_p, g, s, self.theta(theta_p), t)

        def outer_loss(theta_p, phi, task_p):
            return tree_vdot(phi_bar, phi)

        return dataclasses.replace(p, inner_loss=inner_loss, init=init, outer_loss=outer_loss,
                                   optimizer=opt._replace(update=update))


def solve(problem: BilevelProblem, estimator: Estimator, with_cost: bool = False):
    """The inner loop of ``problem`` as a function ``(θ, task, key=None) -> φ_r`` whose derivative
    in θ is ``estimator``'s hypergradient (see the module docstring for what is differentiated and
    at what cost).

    With ``with_cost=True`` the function is ``(θ, task, key, meter) -> φ_r``; differentiate the
    loss with respect to ``meter = cost_meter()`` too, and that gradient is the Cost record::

        solver = ablo.solve(problem, ablo.UFOM(q=0.1), with_cost=True)
        loss = lambda θ, m: val_loss(θ, solver(θ, task, key, m))
        g, c = jax.grad(loss, argnums=(0, 1))(θ, ablo.cost_meter())

    ``key`` feeds the random estimators (UFOM's ξ, stocBiO's batches), which require one; the
    deterministic ones need none. Over a meta-batch, ``jax.vmap`` the solver over tasks and keys
    (``jax.random.split(key, n)``): UFOM's exact branch then runs only for the tasks that drew it.
    Cost of the forward call: r gradient evaluations (stored states for Reverse, checkpoints for
    Checkpointed); the backward pass costs what the estimator costs.

    Args:
        problem: the bilevel problem; its ``outer_loss`` is not used (the loss is the caller's).
        estimator: any estimator whose state does not carry from call to call (Adaptive UFOM,
            BSA, TTSA and Reptile are refused with a ValueError: use
            ``ablo.hypergradient_batch`` with ``state``).
        with_cost: add a fourth argument, a ``cost_meter``, whose gradient is the Cost record.

    Returns:
        ``solver(θ, task, key=None) -> φ_r`` (``solver(θ, task, key, meter)`` with ``with_cost=True``;
        the key required by the random estimators), a JAX function usable under ``jit``, ``vmap``
        and ``grad``.

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
        check_key(key, estimator.name if estimator.needs_key else "")
        problem.validate(theta, task)
        key = jax.random.PRNGKey(0) if key is None else key  # deterministic estimators never read it
        meter = cost_meter() if meter is None else meter
        if any(_differentiated(x) for x in jax.tree_util.tree_leaves(task)):
            raise ValueError("ablo.solve does not differentiate with respect to task (it is data): the derivative "
                             "would be a silent zero. Put the values to differentiate in theta, or close over them "
                             "in the problem's functions (they are then differentiated like theta)")
        lifted, theta_p, task_p = _lift(problem, theta, task)
        try:
            return _phi_r(lifted, estimator)(theta_p, task_p, key, meter)
        except TypeError as e:
            if "forward-mode" in str(e) or "jvp" in str(e):
                raise TypeError(_JVP_ADVICE) from None
            raise

    if not with_cost:
        return lambda theta, task, key=None: solver(theta, task, key)
    return solver


def _lift(problem, theta, task):
    """(_Lifted, θ', task'): see :class:`_Lifted`."""
    t_leaves, t_tree = jax.tree_util.tree_flatten(theta)
    k_leaves, k_tree = jax.tree_util.tree_flatten(task, is_leaf=_is_none)
    theta_floats = [x for x in t_leaves if _is_float(x)]
    task_arrays = jax.tree_util.tree_unflatten(k_tree, [x if _is_array(x) else None for x in k_leaves])
    lifted = _Lifted(problem, tuple((None if _is_float(x) else x, _is_float(x)) for x in t_leaves), t_tree,
                     tuple((None if _is_array(x) else x, _is_array(x)) for x in k_leaves), k_tree, ())
    # the traced values the problem's functions close over, found by closure-converting one inner step
    one_step = lambda th, tk: problem.run(lifted.theta((th, ())), lifted.task(tk), 0, 1)
    _, hoisted = jax.closure_convert(one_step, theta_floats, task_arrays)
    lifted = dataclasses.replace(lifted, hoisted=tuple(hoisted))
    return lifted, (theta_floats, list(hoisted)), task_arrays


def _phi_r(lifted: _Lifted, estimator: Estimator):
    """The custom_vjp function (θ', task', key, meter) -> φ_r."""

    @jax.custom_vjp
    def phi_r(theta_p, task_p, key, meter):
        return fwd(theta_p, task_p, key, meter)[0]

    def forward(theta_p, task_p, key):
        p = lifted.lifted_problem(None)
        state = estimator.init(p, theta_p, task_p)
        return (state, *estimator.forward_pass(p, theta_p, task_p, state, key))

    def fwd(theta_p, task_p, key, meter):
        if _under_reverse_mode(theta_p):
            _check_reverse_differentiable(forward, estimator, theta_p, task_p, key)
        state, s_r, residuals = forward(theta_p, task_p, key)
        return lifted.problem.optimizer.params(s_r), (theta_p, task_p, key, state, s_r, residuals)

    def backward(theta_p, task_p, key, state, s_r, residuals, phi_bar):
        p = lifted.lifted_problem(phi_bar)
        return estimator.backward_pass(p, theta_p, task_p, state, key, s_r, residuals)[::2]

    def bwd(res, phi_bar):
        theta_p, task_p, key, state, s_r, residuals = res
        if _under_reverse_mode((phi_bar, theta_p)):
            _check_reverse_differentiable(backward, estimator, theta_p, task_p, key, state, s_r, residuals, phi_bar)
        g, c = backward(theta_p, task_p, key, state, s_r, residuals, phi_bar)
        # + 0·(a value of φ̄): under vmap the record is then batched like φ̄, and JAX sums it over
        # the batch as it sums every cotangent of an unbatched input (a constant would not be).
        zero = 0.0 * jnp.isnan(jax.tree_util.tree_leaves(phi_bar)[0]).any()
        g = jax.tree.map(lambda gi, th: gi.astype(th.dtype), g, theta_p)
        return g, None, None, Cost(*(jnp.asarray(x, jnp.float32) + zero for x in c))

    phi_r.defvjp(fwd, bwd)
    return phi_r


def _under_reverse_mode(tree) -> bool:
    """True when an enclosing ``jax.grad``/``vjp`` is differentiating ``tree``."""
    return any(isinstance(x, LinearizeTracer) for x in jax.tree_util.tree_leaves(tree))


def _check_reverse_differentiable(fn, estimator, *args):
    """Raise, naming jax.hessian, when reverse mode cannot differentiate ``fn`` (the estimator's
    forward or backward pass), tried on abstract values (nothing runs)."""
    spec = lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)) if _is_array(x) else x
    abstract = jax.tree.map(spec, args)
    floats = lambda out: [x for x in jax.tree_util.tree_leaves(out) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    scalar = lambda *a: sum(jnp.sum(x).astype(float) for x in floats(fn(*a)))
    try:
        jax.eval_shape(jax.grad(lambda th, *rest: scalar(th, *rest)), *abstract)
    except (ValueError, NotImplementedError) as e:
        if any(m in str(e) for m in ("Reverse-mode differentiation does not work", "Linearization failed",
                                     "custom_vmap_call")):
            raise ValueError(f"reverse over reverse (jax.grad of jax.grad) through ablo.solve with {estimator.name!r}: "
                             "its passes run loops with traced bounds or a random branch, which reverse mode "
                             "cannot differentiate. Use jax.hessian (forward over reverse) or jax.jacfwd of the gradient, "
                             "or the Reverse estimator") from None
        raise
