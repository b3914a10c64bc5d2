"""Reptile (Nichol et al. 2018; a baseline in Likhosherstov et al. 2020, UFO-BLO, §5): the
direction θ − φ_r, not a hypergradient. MAML-form problems (``ablo.meta.maml``) only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional

import jax
import optax

from ..cost import cost
from ..problem import BilevelProblem
from .base import Estimator, with_finite_flag


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

    Only meaningful when φ_0 = θ (MAML form, :func:`ablo.meta.maml`). ``check(problem)`` cannot see θ, so
    ``init`` and ``estimate`` compare the structure and shapes of φ_0 = V(θ, T) with θ's (a
    shape-only trace, free at run time) and raise ValueError when they differ, e.g. for
    :func:`ablo.meta.anil` (φ = head only) or a constant V.

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
        g = optax.tree.sub(theta, phi_r)
        return g, state, with_finite_flag(g, self.expected_cost(problem.steps))

    def expected_cost(self, r):
        """r inner gradient evaluations, nothing else."""
        return cost(grad_evals=r, states=1)
