"""A bilevel problem (Likhosherstov et al. 2021 eq. 2-4):

    M^(r)(θ) = E_T L_out(θ, φ_r, T),   φ_0 = V(θ, T),   s_j = Ξ_j(θ, s_{j−1}, T),  j = 1..r,

where s is the inner optimizer's state and φ = params(s). θ, φ and T are arbitrary pytrees.
The problem holds pure functions only; it knows nothing of data loading or estimators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from .inner import InnerOptimizer
from .products import optimize_products


def identity_init(theta, task):
    """MAML-style start φ_0 = V(θ, T) = θ (the default ``init`` of a ``BilevelProblem``).

    Args:
        theta: θ.
        task: the task (unused).

    Returns:
        θ itself.
    """
    return theta


def constant_init(phi0) -> Callable:
    """Start every inner run from the fixed pytree ``phi0`` (V independent of θ: estimators then
    charge no JVP of V).

    Args:
        phi0: φ_0, a pytree shaped like the φ the losses take.

    Returns:
        ``init(θ, task) -> phi0``, to pass as ``BilevelProblem(..., init=...)``.
    """
    def init(theta, task):
        return phi0

    init.theta_independent = True
    return init


@dataclass(frozen=True, eq=False)
class BilevelProblem:
    """A bilevel problem: min_θ E_T L_out(θ, φ_r, T) where φ_r is r steps of ``optimizer`` on
    ``inner_loss`` from φ_0 = V(θ, T) = ``init(θ, task)``. θ, φ and the task are any pytrees.
    Pure functions only: the same problem serves every estimator.

    Args:
        inner_loss: ``(θ, φ, task) -> scalar``, L_in, the loss the inner loop descends in φ.
        outer_loss: ``(θ, φ, task) -> scalar``, L_out, evaluated at φ_r.
        optimizer: the inner dynamics Ξ: ``ablo.gd``, ``ablo.momentum``,
            ``ablo.adam`` or ``ablo.from_optax``.
        steps: r, the number of inner steps (an integer >= 1).
        init: V, ``(θ, task) -> φ_0``; default ``identity_init`` (φ_0 = θ, MAML form);
            ``constant_init`` for a start that does not depend on θ.
        rewrite_products: rewrite the matrix products of the inner gradient and HVPs for XLA's
            CPU backend (``ablo.products``); False keeps them as JAX emits them.

    Raises:
        ValueError: a bad argument, named in the message (e.g. ``steps`` < 1).

    Example:
        ```python
        problem = ablo.BilevelProblem(
            inner_loss=lambda theta, phi, task: jnp.mean(jax.nn.sigmoid(theta) * (task[0] @ phi - task[1]) ** 2),
            outer_loss=lambda theta, phi, task: jnp.mean((task[2] @ phi - task[3]) ** 2),
            optimizer=ablo.gd(0.1), steps=100, init=ablo.constant_init(jnp.zeros(5)))
        ```
    """

    inner_loss: Callable[[Any, Any, Any], jax.Array]
    outer_loss: Callable[[Any, Any, Any], jax.Array]
    optimizer: InnerOptimizer
    steps: int
    init: Callable[[Any, Any], Any] = field(default=identity_init)
    #: Rewrite the matrix products of the inner gradient and of the reverse sweeps' HVPs for XLA's
    #: CPU backend (``ablo.products``: merge products sharing a large operand, read narrow ones
    #: along the large operand's rows); False keeps them as JAX emits them. None (default): on
    #: where it was measured, the CPU backend (``jax.default_backend() == "cpu"``), off elsewhere;
    #: the field holds the resolved value (``ablo.diagnose`` reports it).
    rewrite_products: Optional[bool] = None

    def __post_init__(self):
        if isinstance(self.steps, (bool, np.bool_)) or not isinstance(self.steps, (int, np.integer)) or self.steps < 1:
            raise ValueError(f"steps (r) must be an integer >= 1; got {self.steps!r}")
        object.__setattr__(self, "steps", int(self.steps))
        if self.rewrite_products is None:
            object.__setattr__(self, "rewrite_products", jax.default_backend() == "cpu")
        if not all(callable(getattr(self.optimizer, f, None)) for f in ("init", "update", "params")):
            raise ValueError(f"optimizer must be an inner optimizer (ablo.gd, momentum, adam or from_optax); "
                             f"got {self.optimizer!r}")
        if not isinstance(self.rewrite_products, bool):
            raise ValueError(f"rewrite_products must be True or False; got {self.rewrite_products!r}")
        for name in ("inner_loss", "outer_loss", "init"):
            if not callable(getattr(self, name)):
                raise ValueError(f"{name} must be a function; got {getattr(self, name)!r}")

    # --- the pieces every estimator composes -------------------------------------------------
    def initial_state(self, theta, task):
        """s_0 = init_opt(V(θ, T))."""
        return self.optimizer.init(self.init(theta, task))

    def step(self, theta, s, t, task):
        """s_{t+1} = Ξ(θ, s_t, T): one inner gradient evaluation and one optimizer update."""
        return self.optimizer.update(self.inner_grad(theta, self.optimizer.params(s), task), s, theta, t)

    def inner_grad(self, theta, phi, task):
        """∂L_in/∂φ at (θ, φ): one gradient evaluation."""
        return self.products(jax.grad(self.inner_loss, argnums=1))(theta, phi, task)

    def inner_hvp(self, theta, phi, v, task, mixed: bool = False):
        """∇²_φφ L_in v, or with ``mixed`` the pair (∇²_θφ L_in v, ∇²_φφ L_in v): one forward-over-
        reverse product (by the Hessian's symmetry, ∂/∂ε ∇ L_in(θ, φ + εv)), products rewritten
        like the gradient's (the estimators' HVP, and the one ``theory`` times as C2)."""
        grads = jax.grad(self.inner_loss, argnums=(0, 1) if mixed else 1)
        hvp = lambda th, ph, v_, tk: jax.jvp(lambda p: grads(th, p, tk), (ph,), (v_,))[1]
        return self.products(hvp)(theta, phi, v, task)

    def products(self, fun: Callable) -> Callable:
        """``fun`` with its matrix products rewritten (``ablo.products``) unless
        ``rewrite_products`` is False."""
        return optimize_products(fun) if self.rewrite_products else fun

    def run(self, theta, task, start: int = 0, stop: Optional[int] = None, s=None):
        """s_stop from s_start (default: from s_0 through all r steps), never storing states."""
        stop = self.steps if stop is None else stop
        s = self.initial_state(theta, task) if s is None else s
        return jax.lax.fori_loop(start, stop, lambda t, s: self.step(theta, s, t, task), s)

    def objective(self, theta, task):
        """M^(r)(θ; T) = L_out(θ, φ_r, T), differentiable by plain autodiff through the stored loop (public as
        ``ablo.objective(problem)``; its gradient is the exact hypergradient at O(r) memory)."""
        s, _ = jax.lax.scan(lambda s, t: (self.step(theta, s, t, task), None), self.initial_state(theta, task),
                            jnp.arange(self.steps))
        return self.outer_loss(theta, self.optimizer.params(s), task)

    def validate(self, theta, task) -> None:
        """Raise a ValueError naming the mismatch when θ, φ_0 and the losses do not fit together
        (array leaves are abstract; other leaves, e.g. an Equinox module's functions, pass as they are)."""
        try:
            phi0 = _eval_shape(self.init, theta, task)
        except Exception as e:  # noqa: BLE001 - reported with context
            raise ValueError(f"init(theta, task) failed on the given theta/task pytrees: {e}") from None
        for name in ("inner_loss", "outer_loss"):
            fn = getattr(self, name)
            try:
                out = _eval_shape(fn, theta, phi0, task)
            except Exception as e:  # noqa: BLE001
                raise ValueError(
                    f"{name}(theta, phi, task) failed on theta {_describe(theta)} and phi {_describe(phi0)}: {e}. "
                    "Check that theta and phi are the pytrees the losses expect.") from None
            if getattr(out, "shape", None) != ():
                raise ValueError(f"{name} must return a scalar; got shape {getattr(out, 'shape', type(out))}")
            try:
                g = _eval_shape(jax.grad(fn, argnums=1), theta, phi0, task)
            except Exception as e:  # noqa: BLE001
                raise ValueError(f"{name} is not differentiable in phi: {e}") from None
            if jax.tree_util.tree_structure(g) != jax.tree_util.tree_structure(phi0):
                raise ValueError(f"the gradient of {name} in phi has structure {jax.tree_util.tree_structure(g)}, "
                                 f"but phi_0 = init(theta, task) has {jax.tree_util.tree_structure(phi0)}")


def _eval_shape(fn, *trees):
    """``jax.eval_shape(fn, *trees)`` with the non-array leaves held as they are."""
    leaves, treedef = jax.tree_util.tree_flatten(trees)
    is_array = [isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct, np.generic, float, int, complex))
                for x in leaves]

    def call(arrays):
        it = iter(arrays)
        return fn(*jax.tree_util.tree_unflatten(treedef, [next(it) if a else x for x, a in zip(leaves, is_array)]))

    return jax.eval_shape(call, [x for x, a in zip(leaves, is_array) if a])


def _describe(tree) -> str:
    return str(jax.tree_util.tree_map(lambda x: getattr(x, "shape", type(x).__name__), tree))
