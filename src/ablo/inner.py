"""Differentiable inner optimizers Ξ_j (Shaban et al. 2019 §2.2, "general dynamics").

An inner optimizer is three pure functions in the optax manner:

* ``init(φ0) -> s``  the optimizer state (φ plus any slots) at step 0,
* ``update(g, s, θ, t) -> s``  one step, given g = ∂L_in/∂φ at ``params(s)`` and the
  0-based step index t = j − 1,
* ``params(s) -> φ``.

``update`` may read θ, so step sizes can be hyperparameters. A step size ``lr`` is a number,
a schedule ``lr(t)`` (any optax schedule), or a function ``lr(θ, t)`` of the hyperparameters.
Numbers (``lr``, momentum's β, Adam's b1/b2/eps) may also be arrays or traced values, so a sweep
over them under ``vmap``, or a loop under one ``jit``, compiles once: build the optimizer (and
the problem) inside the traced function.
Every estimator differentiates through ``update`` with ``jax.vjp``/``jax.jvp``, so each of them
works for each optimizer here, and for any optax ``GradientTransformation`` via
:func:`from_optax`.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import optax

from .checks import check_number

StepSize = Union[float, Callable[..., Any]]


class InnerOptimizer(NamedTuple):
    """Inner dynamics Ξ as three pure functions (see the module docstring): ``init(φ_0) -> s``,
    ``update(g, s, θ, t) -> s`` with g = ∂L_in/∂φ at ``params(s)``, ``params(s) -> φ``."""

    init: Callable[[Any], Any]
    update: Callable[[Any, Any, Any, Any], Any]
    params: Callable[[Any], Any]
    name: str = "inner"


def _step_size(lr: StepSize) -> Callable[[Any, Any], Any]:
    """Normalise ``lr`` to a function of (θ, t). A number or an array (possibly traced, e.g. a sweep
    over step sizes under ``vmap``) is a constant step size."""
    if not callable(lr):
        value = check_number("lr", lr, 0.0, math.inf, lo_open=True,
                             hint="; lr must be a finite number > 0, a schedule lr(t) or a function lr(theta, t)")
        return lambda theta, t: value
    try:
        n = len([p for p in inspect.signature(lr).parameters.values()
                 if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
    except (TypeError, ValueError):  # builtins without a signature: treat as a schedule
        n = 1
    if n == 1:
        return lambda theta, t: lr(t)
    if n == 2:
        return lr
    raise ValueError(f"lr must take (t) or (theta, t); {lr!r} takes {n} positional arguments")


def _tmap(f, *trees):
    return jax.tree_util.tree_map(f, *trees)


def gd(lr: StepSize) -> InnerOptimizer:
    """Gradient descent φ_j = φ_{j−1} − α_j ∂L_in/∂φ (Likhosherstov et al. 2021 eq. 3).

    Args:
        lr: the step size α_j: a number > 0 (or an array, possibly traced), a schedule
            ``lr(t)`` of the 0-based step t (any optax schedule), or a function ``lr(θ, t)``
            (a step size that is a hyperparameter).

    Returns:
        An ``InnerOptimizer`` (``init``, ``update``, ``params``) to pass as
        ``BilevelProblem(optimizer=...)``.

    Example:
        ```python
        ablo.gd(0.1)                                   # constant step size
        ablo.gd(optax.exponential_decay(0.1, 10, 0.5)) # a schedule of t
        ablo.gd(lambda theta, t: jnp.exp(theta["log_lr"]))  # a learned step size
        ```
    """
    alpha = _step_size(lr)

    def update(g, phi, theta, t):
        a = alpha(theta, t)
        return _tmap(lambda p, gi: p - a * gi, phi, g)

    return InnerOptimizer(lambda phi: phi, update, lambda phi: phi, "gd")


def momentum(lr: StepSize, beta: float = 0.9, nesterov: bool = False) -> InnerOptimizer:
    """Heavy-ball momentum: v_j = β v_{j−1} + g, φ_j = φ_{j−1} − α_j v_j (Nesterov optional).

    Args:
        lr: the step size α_j: a number > 0 (or an array, possibly traced), a schedule
            ``lr(t)`` of the 0-based step t (any optax schedule), or a function ``lr(θ, t)``
            (a step size that is a hyperparameter).
        beta: β ∈ [0, 1], the momentum coefficient.
        nesterov: use the Nesterov direction β v_j + g instead of v_j.

    Returns:
        An ``InnerOptimizer`` (``init``, ``update``, ``params``) to pass as
        ``BilevelProblem(optimizer=...)``.
    """
    beta = check_number("beta", beta, 0.0, 1.0)
    alpha = _step_size(lr)

    def init(phi):
        return (phi, _tmap(jnp.zeros_like, phi))

    def update(g, s, theta, t):
        phi, v = s
        a = alpha(theta, t)
        v = _tmap(lambda vi, gi: beta * vi + gi, v, g)
        d = _tmap(lambda vi, gi: beta * vi + gi, v, g) if nesterov else v
        return (_tmap(lambda p, di: p - a * di, phi, d), v)

    return InnerOptimizer(init, update, lambda s: s[0], "momentum")


def adam(lr: StepSize, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, eps_root: float = 1e-16) -> InnerOptimizer:
    """Adam with bias correction. ``eps_root`` inside the square root keeps the update
    differentiable where a gradient coordinate is exactly zero (as optax advises for
    differentiating through Adam).

    Args:
        lr: the step size α_j: a number > 0 (or an array, possibly traced), a schedule
            ``lr(t)`` of the 0-based step t (any optax schedule), or a function ``lr(θ, t)``
            (a step size that is a hyperparameter).
        b1: β_1 ∈ [0, 1], the first moment's decay.
        b2: β_2 ∈ [0, 1], the second moment's decay.
        eps: ε >= 0 added to the denominator.
        eps_root: ε >= 0 added inside the square root.

    Returns:
        An ``InnerOptimizer`` (``init``, ``update``, ``params``) to pass as
        ``BilevelProblem(optimizer=...)``.
    """
    b1, b2 = check_number("b1", b1, 0.0, 1.0), check_number("b2", b2, 0.0, 1.0)
    eps, eps_root = check_number("eps", eps, 0.0, math.inf), check_number("eps_root", eps_root, 0.0, math.inf)
    alpha = _step_size(lr)

    def init(phi):
        z = _tmap(jnp.zeros_like, phi)
        return (phi, z, z)

    def update(g, s, theta, t):
        phi, m, v = s
        a = alpha(theta, t)
        m = _tmap(lambda mi, gi: b1 * mi + (1 - b1) * gi, m, g)
        v = _tmap(lambda vi, gi: b2 * vi + (1 - b2) * gi * gi, v, g)
        c1 = 1 - b1 ** (t + 1.0)
        c2 = 1 - b2 ** (t + 1.0)
        phi = _tmap(lambda p, mi, vi: p - a * (mi / c1) / (jnp.sqrt(vi / c2 + eps_root) + eps), phi, m, v)
        return (phi, m, v)

    return InnerOptimizer(init, update, lambda s: s[0], "adam")


def from_optax(tx: optax.GradientTransformation) -> InnerOptimizer:
    """Any optax transformation as inner dynamics (its step sizes cannot read θ).

    Args:
        tx: an ``optax.GradientTransformation``, e.g. ``optax.sgd(0.1, momentum=0.9)``.

    Returns:
        An ``InnerOptimizer`` (``init``, ``update``, ``params``) to pass as
        ``BilevelProblem(optimizer=...)``.
    """
    if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
        raise ValueError(f"from_optax needs an optax GradientTransformation; got {type(tx).__name__}")

    def init(phi):
        return (phi, tx.init(phi))

    def update(g, s, theta, t):
        phi, opt_state = s
        updates, opt_state = tx.update(g, opt_state, phi)
        return (optax.apply_updates(phi, updates), opt_state)

    return InnerOptimizer(init, update, lambda s: s[0], "optax")


OPTIMIZERS = {"gd": gd, "momentum": momentum, "adam": adam}
