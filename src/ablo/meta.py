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
* :class:`Reptile` (an estimator, defined in ``ablo.estimators.reptile``) — Nichol et al. 2018 (a baseline in Likhosherstov et al. 2020, UFO-BLO, §5): the direction θ − φ_r, not a
  hypergradient of M; an optax ``sgd(ε)`` step on it is Reptile's θ ← θ + ε(φ_r − θ).
"""

from __future__ import annotations

from typing import Callable, Optional

import jax.numpy as jnp

from .estimators.reptile import Reptile
from .inner import InnerOptimizer, gd
from .problem import BilevelProblem

__all__ = ["maml", "anil", "merge_support_query", "Reptile"]


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
