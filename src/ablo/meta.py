"""Meta-learning presets: MAML, ANIL and Reptile (Likhosherstov et al. 2021, §5.3; Ji et al. 2021, §5).

Task convention. A few-shot task is a dict ``{"support": (x_s, y_s), "query": (x_q, y_q)}``
(Likhosherstov et al. 2021, §5.3: D_tr^T and D_test^T); a meta-batch stacks every array on axis 0. The inner
loop fits the support set, the outer loss scores the adapted parameters on the query set.

* :func:`maml` — V(θ, T) = θ (Finn et al. 2017), so θ is an initialization:
  L_in(θ, φ, T) = loss(apply(φ, x_s), y_s),  L_out(θ, φ, T) = loss(apply(φ, x_q), y_q).
  Every estimator applies; **first-order MAML is the FOM estimator on this problem**
  (Likhosherstov et al. 2021, Alg. 3: G_FO = ∂L_out/∂φ at φ_r, the Jacobians of the inner steps dropped), UFOM
  debiases it (Alg. 4).
* :func:`anil` — "almost no inner loop" (Raghu et al. 2019; Ji et al. 2021, §5): θ = {"body", "head"},
  only the head is adapted, φ_0 = V(θ) = θ["head"], the body's features of x are computed inside
  both losses, so ∂L/∂θ["body"] reaches the body directly and through φ_r.
* :class:`Reptile` — Nichol et al. 2018 (a baseline in Likhosherstov et al. 2020, UFO-BLO, §5): the direction θ − φ_r, not a
  hypergradient of M; an optax ``sgd(ε)`` step on it is Reptile's θ ← θ + ε(φ_r − θ).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional

import jax
import jax.numpy as jnp

from .cost import cost
from .estimators.base import Estimator, tree_sub, with_finite_flag
from .inner import InnerOptimizer, gd
from .problem import BilevelProblem


def _inner_optimizer(optimizer, inner_lr) -> InnerOptimizer:
    """``optimizer(inner_lr)`` for a factory such as ``ablo.gd`` (default), ``ablo.momentum``, ``ablo.adam``."""
    factory = gd if optimizer is None else optimizer
    if isinstance(factory, tuple) or not callable(factory):
        raise ValueError("optimizer must be None (plain GD) or a factory lr -> inner optimizer such as ablo.adam or "
                         "lambda lr: ablo.from_optax(optax.sgd(lr)) — pass ablo.adam, not ablo.adam(0.1); "
                         f"got {optimizer!r}")
    return factory(inner_lr)


def _check_callable(**fns) -> None:
    for name, fn in fns.items():
        if not callable(fn):
            raise ValueError(f"{name} must be a function; got {fn!r}")


def maml(apply: Callable, loss: Callable, inner_lr, steps: int, optimizer: Optional[Callable] = None) -> BilevelProblem:
    """The MAML problem (Likhosherstov et al. 2021, §5.3): ``apply(params, x) -> predictions``,
    ``loss(predictions, y) -> scalar``, ``steps`` = r inner steps of ``optimizer(inner_lr)``
    (default ``ablo.gd``; ``inner_lr`` may be a number, a schedule ``lr(t)`` or ``lr(θ, t)``).
    θ and φ are the network's parameters; tasks follow the module's support/query convention.
    Use ``FOM()`` for first-order MAML, ``Reverse()``/``Recompute()`` for exact MAML."""
    _check_callable(apply=apply, loss=loss)

    def inner_loss(theta, phi, task):
        x, y = task["support"]
        return loss(apply(phi, x), y)

    def outer_loss(theta, phi, task):
        x, y = task["query"]
        return loss(apply(phi, x), y)

    return BilevelProblem(inner_loss, outer_loss, _inner_optimizer(optimizer, inner_lr), steps)


def _head(theta, task):
    """ANIL's V(θ, T) = θ["head"]."""
    return theta["head"]


def anil(features: Callable, head: Callable, loss: Callable, inner_lr, steps: int,
         optimizer: Optional[Callable] = None) -> BilevelProblem:
    """The ANIL problem (Ji et al. 2021, §5): θ = {"body": ..., "head": ...}, φ = the head only,
    φ_0 = θ["head"],

        L_in(θ, φ, T) = loss(head(φ, features(θ["body"], x_s)), y_s),  L_out likewise on (x_q, y_q).

    ``features(body, x) -> z`` and ``head(head_params, z) -> predictions``. The features are
    recomputed inside each loss evaluation (one body forward pass per inner step), which keeps
    the problem a pure function of (θ, φ, T) for every estimator."""
    _check_callable(features=features, head=head, loss=loss)

    def split_loss(part):
        def f(theta, phi, task):
            x, y = task[part]
            return loss(head(phi, features(theta["body"], x)), y)
        return f

    return BilevelProblem(split_loss("support"), split_loss("query"), _inner_optimizer(optimizer, inner_lr), steps,
                          init=_head)


def merge_support_query(task):
    """{"support": D_tr ∪ D_test, "query": D_test}: for :class:`Reptile`'s ``task_map`` when the inner
    run should see all of a task's data (Reptile needs no train/test split)."""
    (xs, ys), (xq, yq) = task["support"], task["query"]
    return {"support": (jnp.concatenate([xs, xq]), jnp.concatenate([ys, yq])), "query": (xq, yq)}


def _signature(tree):
    return jax.tree_util.tree_structure(tree), [getattr(x, "shape", ()) for x in jax.tree_util.tree_leaves(tree)]


@dataclass(frozen=True)
class Reptile(Estimator):
    """Reptile (Nichol et al. 2018; a baseline in Likhosherstov et al. 2020, UFO-BLO, §5, and in
    Likhosherstov et al. 2021, Table 2):

        G = θ − φ_r,   φ_r = r inner steps from φ_0 = V(θ) on ``task_map(T)`` (default T itself),

    so an outer ``optax.sgd(ε)`` step is Reptile's θ ← θ + ε(φ_r − θ) and a meta-batch averages
    the directions (batched Reptile). It is *not* an estimate of ∂M/∂θ. Cost: r gradient
    evaluations, no outer gradient, no HVP, one state held.

    Only meaningful when φ_0 = θ (MAML form, :func:`maml`). ``check(problem)`` cannot see θ, so
    ``init`` and ``estimate`` compare the structure and shapes of φ_0 = V(θ, T) with θ's (a
    shape-only trace, free at run time) and raise ValueError when they differ, e.g. for
    ``anil`` (φ = head only) or a constant V.

    Args:
        task_map: ``task -> task`` applied before the inner run (e.g. ``merge_support_query``
            to train on support and query together); None: the task itself.

    Example:
        ```python
        problem = ablo.meta.maml(apply, loss, inner_lr=0.01, steps=5)
        g, _, cost = ablo.hypergradient(problem, ablo.Reptile(), theta, task)   # g = θ − φ_r
        ```
    """

    task_map: Optional[Callable[[Any], Any]] = None
    name: ClassVar[str] = "reptile"
    not_in_solve: ClassVar[str] = ("its direction θ − φ_r is not a derivative of any outer loss; use ablo.hypergradient "
                                  "or ablo.outer.run")

    def __post_init__(self):
        if self.task_map is not None and not callable(self.task_map):
            raise ValueError(f"task_map must be None or a function task -> task; got {self.task_map!r}")

    def _task(self, task):
        return task if self.task_map is None else self.task_map(task)

    def validate(self, problem: BilevelProblem, theta, task) -> None:
        """ValueError unless φ_0 = V(θ, T) has θ's pytree structure and leaf shapes."""
        phi0 = jax.eval_shape(problem.init, theta, self._task(task))
        if _signature(phi0) != _signature(theta):
            raise ValueError("reptile needs a MAML-form problem whose inner start V(theta, task) has the structure "
                             f"and shapes of theta (e.g. ablo.meta.maml); got phi_0 {_signature(phi0)} but theta "
                             f"{_signature(theta)}")

    def init(self, problem, theta, task):
        """No state (``()``), after :meth:`validate`."""
        self.validate(problem, theta, task)
        return ()

    def estimate(self, problem, theta, task, state, key):
        """(θ − φ_r, state, Cost(r gradient evaluations, 1 state)) for one task; ``key`` unused."""
        self.validate(problem, theta, task)
        phi_r = problem.optimizer.params(problem.run(theta, self._task(task)))
        g = tree_sub(theta, phi_r)
        return g, state, with_finite_flag(g, self.expected_cost(problem.steps))

    def expected_cost(self, r):
        """r inner gradient evaluations, nothing else."""
        return cost(grad_evals=r, states=1)
